"""Everything an actor starts ends with its worker, and everything a worker leaves behind ends with the node.

An actor may start processes of its own (``subprocess``, ``os.fork``). Left
alone, they outlive the worker that started them (re-parented to init when
it dies) and the node, and run on after ``system.stop()``. Two kernel
features, Linux's, tie them to the node instead:

- **Process groups.** Each worker leads a process group of its own, which
  what its actors start joins. When a worker dies, the node kills its group
  before it reaps the worker (a dead worker's pid, and with it the group's
  id, cannot be reused until then), and so for a worker that stopped.
- **A subreaper.** The node is its descendants' "child subreaper": a process
  that left its worker's group (``start_new_session=True``) and lost its
  parent is re-parented to the node, not to init. The node reaps those that
  end, and kills those still running when it ends.

Elsewhere (no ``prctl``) the groups still work; the subreaper does not.
- **A guard per worker.** A node killed by SIGKILL takes its workers with it
  (the kernel's parent-death signal), with no chance to clean up. So each
  worker forks, before it loads any user code, a small guard in its group
  that waits on a pipe only the worker holds; when the worker is gone,
  however it went, the pipe closes and the guard kills the group, itself
  last.

What left its worker's group and outlives the node killed by SIGKILL is the
one thing nothing here reaches.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Container

log = logging.getLogger("gorilix.node")

#: prctl(2) option: orphaned descendants are re-parented to this process, not to init.
PR_SET_CHILD_SUBREAPER = 36


def lead_own_group() -> bool:
    """In a worker: start a process group of its own, which what its actors start joins; False if it could not."""
    try:
        os.setpgid(0, 0)
    except OSError:  # (the platform says no: the node's cleanup is then partial)
        return False
    return True


def guard_own_group() -> None:
    """In a worker that leads its group, before any user code: fork the guard (see the module's docstring)."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return
    if pid == 0:  # the guard: nothing of the worker runs here, only this
        try:
            os.close(write_end)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            while os.read(read_end, 1):  # (returns b"" once the worker, and its end of the pipe, is gone)
                pass
        except BaseException:  # (a guard that fails must not take its worker's group with it)
            os._exit(1)
        os.killpg(0, signal.SIGKILL)  # (this guard too)
        os._exit(0)
    os.close(read_end)
    # A child an actor forks (without exec) must not keep the guard waiting: only the worker holds the pipe.
    os.register_at_fork(after_in_child=lambda: _close(write_end))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def end_group(pgid: int) -> None:
    """SIGKILL every process still in group ``pgid`` (a dead worker's, before it is reaped)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left in it (or not ours)
        pass


def become_subreaper() -> bool:
    """In the node: adopt orphaned descendants (Linux); False where the kernel cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_adopted(workers: Container[int]) -> int:
    """Collect adopted descendants that ended (never a worker: the pool reaps those); how many."""
    import psutil

    reaped = 0
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return 0
    for child in children:
        if child.pid in workers:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE and os.waitpid(child.pid, os.WNOHANG)[0]:
                reaped += 1
        except (psutil.Error, ChildProcessError):
            pass
    return reaped


def end_adopted() -> list[int]:
    """In the node as it ends: SIGKILL every descendant still running and reap its children; their pids."""
    import psutil

    try:
        descendants = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for process in descendants:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(descendants, timeout=2.0)  # (reaps those that are this process's children)
    if descendants:
        log.info("ended %d processes left by actors: %s", len(descendants), [p.pid for p in descendants])
    return [p.pid for p in descendants]
