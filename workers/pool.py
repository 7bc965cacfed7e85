"""The pool of worker processes: spawn, watch, reap and respawn.

It does no I/O loop of its own: the node polls the process sentinels it
exposes (a sentinel becomes readable the instant a process ends, so a death
is learnt at once) and calls :meth:`WorkerPool.reap`.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from gorilix.workers.boot import worker_main
from gorilix.workers.config import WorkerConfig
from gorilix.workers.health import Health, create_board, read_board, remove_board
from gorilix.workers.lineage import end_group
from gorilix.workers.tally import TallyReader, create_tally, remove_tally, tally_path

if TYPE_CHECKING:  # psutil loads on the first stats call: the node starts its workers sooner
    import psutil

log = logging.getLogger("gorilix.pool")


@dataclass
class WorkerProcess:
    config: WorkerConfig
    process: BaseProcess
    started_at: float
    ready: bool = False
    stats: psutil.Process | None = field(default=None, repr=False)

    @property
    def slot(self) -> int:
        return self.config.slot

    @property
    def identity(self) -> bytes:
        return self.config.identity

    @property
    def pid(self) -> int | None:
        try:
            return self.process.pid
        except ValueError:  # closed: it was reaped
            return None

    exitcode: int | None = None

    @property
    def alive(self) -> bool:
        if self.exitcode is not None:
            return False
        try:
            self.exitcode = self.process.exitcode
        except ValueError:  # closed: it was reaped
            return False
        return self.exitcode is None


class WorkerPool:
    """Worker processes by slot; a slot keeps its number across respawns."""

    def __init__(
        self, node_name: str, endpoint: str, size: int, *, log_level: int = logging.WARNING,
        start_method: str = "spawn", program: dict[str, Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a node needs at least one worker, got workers={size}")
        self.node_name = node_name
        self.endpoint = endpoint
        self.size = size
        self.log_level = log_level
        self.program = program or {}
        self._mp: Any = multiprocessing.get_context(start_method)
        # Each incarnation is an id prefix; start at random so a restarted node
        # (same name) does not hand out the ids of its previous life.
        self._incarnations = itertools.count(random.randrange(1, 1 << 21))
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts: dict[int, int] = dict.fromkeys(range(size), 0)

    def start(self, slot: int, *, fork: bool = False, close_in_child: tuple[int, ...] = ()) -> WorkerProcess:
        """Start the worker of ``slot``.

        ``fork``: fork this process instead of starting a fresh interpreter,
        which spares the worker the interpreter's start and every import this
        process made. Only safe while this process has one thread and no
        ZeroMQ context (the node process at its start); the worker closes the
        descriptors it inherits (``close_in_child`` names more, where the
        system cannot list them).
        """
        if fork and threading.active_count() > 1:  # (a fork copies one thread: a lock another held stays held)
            fork = False
        # A fork inherits every descriptor open here (the lifeline, the pipes of the workers forked
        # before it, whose ends it would keep open): the worker closes them. A fresh one inherits none.
        inherited = tuple(sorted({*_open_descriptors(), *close_in_child} - {0, 1, 2})) if fork else ()
        incarnation = next(self._incarnations)
        board = board_path(self.endpoint, slot)
        create_board(board)
        create_tally(tally_path(board))
        config = WorkerConfig(
            node_name=self.node_name, slot=slot, incarnation=incarnation,
            id_prefix=incarnation, endpoint=self.endpoint, log_level=self.log_level,
            program=self.program, close_fds=inherited, health_path=board,
        )
        mp = multiprocessing.get_context("fork") if fork else self._mp
        process = mp.Process(
            target=worker_main, args=(config,), name=f"gorilix-worker-{slot}", daemon=True
        )
        process.start()
        worker = WorkerProcess(config, process, time.monotonic())
        self.workers[slot] = worker
        return worker

    def start_all(self, *, fork: bool = False, close_in_child: tuple[int, ...] = ()) -> None:
        for slot in range(self.size):
            self.start(slot, fork=fork, close_in_child=close_in_child)

    def sentinels(self) -> dict[int, int]:
        """Process sentinel fd -> slot, for the node's poller."""
        return {w.process.sentinel: slot for slot, w in self.workers.items() if w.alive}

    def by_identity(self, identity: bytes) -> WorkerProcess | None:
        for worker in self.workers.values():
            if worker.identity == identity:
                return worker
        return None

    def reap(self, slot: int) -> int | None:
        """Collect a dead worker; returns its exit code (negative: the signal)."""
        worker = self.workers[slot]
        if worker.pid is not None:
            end_group(worker.pid)  # what its actors started (it is dead, not reaped: its pid is still its own)
        remove_board(worker.config.health_path)  # (unlinked: the node's map of its tally reads on)
        remove_tally(tally_path(worker.config.health_path))
        worker.process.join(timeout=1.0)
        code = worker.process.exitcode
        if code is not None:
            worker.process.close()
        self.restarts[slot] += 1
        return code

    def kill(self, slot: int, sig: int = signal.SIGKILL) -> int:
        worker = self.workers.get(slot)
        if worker is None or not worker.alive or worker.pid is None:
            raise LookupError(f"worker {slot} is not running")
        os.kill(worker.pid, sig)
        return worker.pid

    def stop_all(self, timeout: float = 3.0) -> list[int]:
        """Join every worker (the node already asked them to stop); kill laggards.

        Returns the pids that had to be killed.
        """
        deadline = time.monotonic() + timeout
        killed = []
        running = [w for w in self.workers.values() if w.alive]
        for worker in running:
            if not worker.ready:  # never attached: it cannot have heard "shutdown"
                worker.process.terminate()
        for worker in running:
            if wait([worker.process.sentinel], max(0.0, deadline - time.monotonic())):  # exited, not yet reaped
                end_group(worker.pid or 0)
                worker.process.join(0.5)
        for worker in running:
            if worker.alive:
                log.warning("worker %d (pid %s) did not stop within %.1f s; terminating it",
                            worker.slot, worker.pid, timeout)
                worker.process.terminate()
                worker.process.join(1.0)
            if worker.alive:
                killed.append(worker.pid or 0)
                worker.process.kill()
                wait([worker.process.sentinel], 1.0)
                end_group(worker.pid or 0)
                worker.process.join(1.0)
            if not worker.alive:
                worker.process.close()
        for worker in running:
            remove_board(worker.config.health_path)
            remove_tally(tally_path(worker.config.health_path))
        if killed:
            log.warning("killed workers that did not stop in %.1f s: %s", timeout, killed)
        return killed

    def health(self, slot: int) -> Health | None:
        """What the worker of ``slot`` runs now and since when (gorilix.workers.health), if it is alive."""
        worker = self.workers.get(slot)
        if worker is None or not worker.alive or not worker.config.health_path:
            return None
        return read_board(worker.config.health_path)

    def tally(self, slot: int) -> TallyReader | None:
        """A reader of the tally of the worker just started in ``slot`` (gorilix.workers.tally), if it has one."""
        worker = self.workers.get(slot)
        if worker is None or not worker.config.health_path:
            return None
        try:
            return TallyReader(tally_path(worker.config.health_path))
        except (OSError, ValueError):  # (gone already, or not the size written: count nothing for it)
            return None

    def stats(self, slot: int) -> tuple[float, int]:
        """(cpu percent since the last call, rss bytes) of a live worker."""
        worker = self.workers[slot]
        if not worker.alive or worker.pid is None:
            return 0.0, 0
        import psutil

        try:
            if worker.stats is None or worker.stats.pid != worker.pid:
                worker.stats = psutil.Process(worker.pid)
            with worker.stats.oneshot():
                return worker.stats.cpu_percent(None), worker.stats.memory_info().rss
        except psutil.Error:
            return 0.0, 0


def _open_descriptors() -> list[int]:
    """The descriptors open in this process now, where the system lists them (/proc); else none."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    open_now = []
    for name in names:
        fd = int(name)
        try:
            os.fstat(fd)  # (the listing's own descriptor is closed by now, and may be reused next)
        except OSError:
            continue
        open_now.append(fd)
    return open_now


def board_path(endpoint: str, slot: int) -> str:
    """Where the board of worker ``slot`` lives: beside the node's ipc socket, named after it."""
    return f"{endpoint.removeprefix('ipc://').removesuffix('.sock')}.w{slot}.health"
