"""How a worker process starts: the user's program it imports, and its entry point.

The node process imports this module to start workers, so it stays light:
the worker's runtime (asyncio, the scheduler, the actors) loads in the
worker alone, while the node process goes on loading itself.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing.spawn
import os
import signal
from typing import Any

from gorilix.workers.config import WorkerConfig
from gorilix.workers.lineage import guard_own_group, lead_own_group

#: What a worker takes from the user's program: the parts of multiprocessing's preparation data
#: that say where code comes from (not its start method, name or auth key).
PROGRAM_KEYS = ("sys_path", "sys_argv", "dir", "orig_dir", "init_main_from_name", "init_main_from_path")

#: True in a worker process, from its first step: it hosts actors and never starts a node of its own.
IN_WORKER = False
#: Set when the user's program tried to start (or attach) an ActorSystem while a worker imported it:
#: it has no ``if __name__ == "__main__":`` guard, and no worker of it can ever start.
SYSTEM_ON_IMPORT = False
#: A worker's exit code that says so to its node (EX_CONFIG), which then fails at once with
#: :data:`NO_MAIN_GUARD` instead of starting the worker again and again.
EXIT_NO_MAIN_GUARD = 78
NO_MAIN_GUARD = (
    "your program starts its ActorSystem when it is imported, and every worker imports it to find your "
    "actor classes: put the code that creates the system under `if __name__ == \"__main__\":`"
)


def describe_program() -> dict[str, Any]:
    """This process's program, for workers started elsewhere (by the node process) to import as it does."""
    data = multiprocessing.spawn.get_preparation_data("gorilix-worker")
    return {key: data[key] for key in PROGRAM_KEYS if key in data}


#: prctl(2) option: the signal this process gets when the thread that started it ends.
PR_SET_PDEATHSIG = 1


def _die_with_the_node() -> None:
    """Linux: have the kernel kill this worker when its node process dies.

    The worker also watches its node from its event loop, but an actor that
    holds the loop (a long synchronous call) would keep an orphan alive,
    spinning, after a SIGKILL of the node. Elsewhere the loop's watch is all
    there is.
    """
    parent = multiprocessing.parent_process()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # not Linux
        return
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        os._exit(1)


def program_to_wire(program: dict[str, Any]) -> dict[str, Any]:
    """The program's description for msgpack: paths and arguments as bytes (os.fsencode).

    A path or an argument need not be valid UTF-8 (Python keeps such bytes as
    lone surrogates, which msgpack refuses); bytes carry them as they are.
    """
    return {key: _each(value, str, os.fsencode) for key, value in program.items()}


def program_from_wire(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`program_to_wire`."""
    return {key: _each(value, bytes, os.fsdecode) for key, value in data.items()}


def _each(value: Any, kind: type, convert: Any) -> Any:
    """``convert`` applied to ``value``, or to each item of it, where it is a ``kind``."""
    if isinstance(value, list):
        return [_each(item, kind, convert) for item in value]
    return convert(value) if isinstance(value, kind) else value


def worker_main(config: WorkerConfig) -> None:
    """Process entry point (must stay importable for the spawn start method)."""
    global IN_WORKER
    IN_WORKER = True  # first: importing the program below must not start an ActorSystem here
    _die_with_the_node()
    for fd in config.close_fds:  # forked from the node: what is the node's alone
        try:
            os.close(fd)
        except OSError:
            pass
    if lead_own_group():  # what its actors start ends with it (gorilix.workers.lineage)
        guard_own_group()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when we stop
    if config.program:  # before any actor class is looked up: __main__ is the user's script, as in it
        try:
            multiprocessing.spawn.prepare(config.program)
        except BaseException:
            if SYSTEM_ON_IMPORT:  # (the node says why, in one line: no traceback from each worker)
                os._exit(EXIT_NO_MAIN_GUARD)
            raise
    logging.basicConfig(level=config.log_level, force=True,  # (forked: the node's handler is not ours)
                        format=f"%(asctime)s worker {config.slot} %(levelname)s %(name)s: %(message)s")
    # Here, not at the top: see the module's docstring.
    from gorilix.workers.runtime import WorkerRuntime

    WorkerRuntime(config).run()
