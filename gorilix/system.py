"""ActorSystem: the blocking facade over one node, safe from any thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gorilix import logs
from gorilix.cluster.bridge import Cluster
from gorilix.cluster.config import ClusterConfig, read_secret_file
from gorilix.cluster.keyfile import default_secret, default_secret_location, default_secret_path
from gorilix.node_handle import AttachedNode, NodeHandle
from gorilix.submit import PoolFuture, Submissions
from gorilix.supervision import Strategy
from gorilix.supervisor import SupervisorRef
from gorilix.transport import codec
from gorilix.transport.describe import shown
from gorilix.transport.errors import (
    AccessDenied,
    ActorError,
    ClusterError,
    GorilixError,
    InvalidArgument,
    NodeDown,
    NotRunning,
    SpawnError,
    WorkerDied,
    qualified_name,
)
from gorilix.transport.frames import CONTROL_ID, NODE_NAME_MAX
from gorilix.transport.routing import client_ids
from gorilix.workers import boot
from gorilix.workers.actor import Actor
from gorilix.workers.client import ClientPort
from gorilix.workers.fanout import Fanout, Run, default_chunksize
from gorilix.workers.ref import ActorRef, check_timeout, install_resolver
from gorilix.workers.spec import (
    NAME_MAX,
    PERMANENT,
    RESTART_TYPES,
    check_topic,
    check_worker,
    make_spec,
    valid_name,
)

log = logging.getLogger("gorilix.system")

#: A pool's stream reads no further ahead than this many chunks per actor (in flight or waiting their turn).
STREAM_CHUNKS_PER_ACTOR = 8

#: The systems of this process by node name: one that started its node, or any number attached to it.
_systems: dict[str, list[ActorSystem]] = {}
_systems_lock = threading.Lock()


def default_worker_count() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _resolve(ref: ActorRef) -> ClientPort:
    """The port a ref outside any actor sends through.

    A system of the ref's own node (the one this program started, else its
    first attachment to it); else a clustered node of this program, which
    routes on to its peers; else any.
    """
    systems = _systems.get(ref.node)
    if systems:
        return systems[0]._client()
    with _systems_lock:
        running = [system for group in _systems.values() for system in group]
    clustered = [system for system in running if not system._attached and system._cluster is not None]
    if clustered:
        return clustered[-1]._client()
    if not running:
        raise NotRunning(f"cannot message {ref}: no ActorSystem is running in this process")
    return running[-1]._client()


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: int
    pid: int | None
    alive: bool
    actors: int
    cpu_percent: float
    rss_bytes: int
    restarts: int
    mailbox: int = 0  # messages queued in its actors' mailboxes (last report, once a second)
    deepest_mailbox: int = 0
    msgs_per_s: float = 0.0  # messages its actors handled per second (last report)
    #: None, or how long it has been stuck in one message and in what: {"seconds", "actor", "class",
    #: "message", "silent"} ("silent": its watchdog is silent too, a call that holds the GIL).
    stuck: dict[str, Any] | None = None
    #: Bytes the node sent it that it has not read yet; past ``max_queued`` the node refuses more for it.
    queued_bytes: int = 0


_WORKER_FIELDS = frozenset(WorkerInfo.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """What could not be delivered: ``count`` all told, the ``recent`` ones, and how many of them were lost in deaths.

    A tell lost in a worker's death counts in ``lost_in_deaths`` and in
    ``count``; its entry in ``recent`` has ``"lost_in_death": True`` and a
    ``"count"`` of that actor's tells lost in that death.
    """

    count: int
    recent: list[dict[str, Any]]
    lost_in_deaths: int = 0


def _iterate(op: str, items: Iterable[Any]) -> Iterator[Any]:
    try:
        return iter(items)
    except TypeError:
        raise InvalidArgument(f"{op} needs an iterable of items, got {shown(items)}") from None


def _retryable(op: str, retries: object, retry_on: object) -> Callable[[BaseException], bool]:
    """Which failures of a pool's item are worth asking again: a death of its worker or node, and ``retry_on``."""
    if type(retries) is not int or retries < 0:
        raise InvalidArgument(f"{op}: retries={shown(retries)} must be an int >= 0")
    if not isinstance(retry_on, tuple) or not all(
            isinstance(cls, type) and issubclass(cls, BaseException) for cls in retry_on):
        raise InvalidArgument(f"{op}: retry_on={shown(retry_on)} must be a tuple of exception classes")
    remote_names = {qualified_name(cls) for cls in retry_on}

    def retryable(error: BaseException) -> bool:
        if isinstance(error, (WorkerDied, NodeDown, *retry_on)):
            return True
        return isinstance(error, ActorError) and error.remote_type in remote_names

    return retryable


_MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_memory(op: str, value: object) -> int | None:
    """A memory size as bytes: an int, or a str such as "2GiB", "500MB", "1.5GB" (None stays None)."""
    if value is None:
        return None
    if type(value) is int and value > 0:
        return value
    if type(value) is str:
        found = _MEMORY.fullmatch(value)
        if found is not None and found.group(2).upper() in _MEMORY_UNITS:
            size = int(float(found.group(1)) * _MEMORY_UNITS[found.group(2).upper()])
            if size > 0:
                return size
    raise InvalidArgument(f"{op}={shown(value)} must be a positive number of bytes or a size such as "
                          "\"2GiB\" or \"500MB\" (or None for no limit)")


def _check_chunksize(op: str, chunksize: object, default: int) -> int:
    if chunksize is None:
        return default
    if type(chunksize) is not int or not 1 <= chunksize <= sys.maxsize:
        raise InvalidArgument(f"{op}: chunksize={shown(chunksize)} must be an int from 1 to {sys.maxsize} "
                              "(or None to pick one)")
    return chunksize


def _answers(runs: Iterator[Run], return_exceptions: bool) -> Iterator[Any]:
    """A stream's answers, one by one; a failure is raised in its turn, or yielded with ``return_exceptions``."""
    try:
        for _, answers, failure in runs:
            yield from answers
            if failure is not None:
                if not return_exceptions:
                    raise failure
                yield failure
    finally:  # ended or given up on: the asks in flight are dropped now, not when the garbage is collected
        runs.close()  # type: ignore[attr-defined]


class _Gathered:
    """A map's answers, gathered from its runs in item order; the first failure, unless ``return_exceptions``."""

    def __init__(self, return_exceptions: bool) -> None:
        self._return_exceptions = return_exceptions
        self._results: list[Any] = []
        self._error: BaseException | None = None

    def add(self, run: Run) -> int:
        """Take one run; how many items it settled."""
        _, answers, failure = run
        self._results += answers
        if failure is not None:
            if self._return_exceptions:
                self._results.append(failure)
            else:
                self._error = failure  # (the map drains what is in flight, then ends)
        return len(answers) + (failure is not None)

    def results(self) -> list[Any]:
        if self._error is not None:
            raise self._error
        return self._results


async def _answers_async(ref: ActorRef, fanout: Fanout, limit: float, return_exceptions: bool) -> AsyncIterator[Any]:
    """A stream's answers on the running event loop, as :func:`_answers` yields them."""
    runs = _resolve(ref).asker(asyncio.get_running_loop()).fan_out(fanout, limit, each=True)
    try:
        async for _, answers, failure in runs:
            for answer in answers:
                yield answer
            if failure is not None:
                if not return_exceptions:
                    raise failure
                yield failure
    finally:
        await runs.aclose()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """click's progress bar on standard error, with the rate; yields what to call with each count of items done."""
    import click  # (only when asked: `import gorilix` stays light)

    began = time.monotonic()
    done = 0

    def rate(_: object) -> str:
        elapsed = time.monotonic() - began
        return f"{done / elapsed:,.0f} items/s" if elapsed > 0 and done else ""

    with click.progressbar(length=total, label="map", show_pos=True, item_show_func=rate,
                           file=sys.stderr) as bar:
        def step(count: int) -> None:
            nonlocal done
            done += count
            bar.update(count)

        yield step


class PoolRef:
    """A group of identical actors spread over the workers (of one node, or of a cluster's members)."""

    def __init__(self, refs: Sequence[ActorRef]) -> None:
        try:
            members = list(refs)
        except TypeError:
            raise InvalidArgument(f"PoolRef needs a list of ActorRefs, got {shown(refs)}") from None
        if not members:
            raise InvalidArgument("PoolRef needs at least one ActorRef; system.spawn_pool(cls) makes a pool")
        for ref in members:
            if not isinstance(ref, ActorRef):
                raise InvalidArgument(f"PoolRef needs ActorRefs, got {shown(ref)}")
        #: Only ever appended to (a cluster pool's new members): running maps read it as it grows.
        self._members = members
        #: Actors on nodes that are gone: they get nothing more (a cluster pool adds to it).
        self._gone: set[ActorRef] = set()
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._submissions: dict[tuple[int, tuple[type[BaseException], ...]], Submissions] = {}

    @property
    def refs(self) -> list[ActorRef]:
        """The pool's actors on nodes that are not gone (a copy)."""
        return [ref for ref in self._members if ref not in self._gone]

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self) -> Iterator[ActorRef]:
        return iter(self.refs)

    def _next_ref(self) -> ActorRef:
        live = self.refs
        if not live:
            raise NodeDown("every actor of the pool is on a node that is gone")
        return live[next(self._turn) % len(live)]

    def tell(self, message: Any) -> None:
        """Send to the next actor, round robin."""
        self._next_ref().tell(message)

    def ask(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Ask the next actor, round robin (``timeout=None``: no limit)."""
        return self._next_ref().ask(message, timeout)

    def broadcast(self, message: Any) -> None:
        """Tell ``message`` to every member of the pool."""
        for ref in self.refs:
            ref.tell(message)

    def _join(self, refs: list[ActorRef]) -> None:
        """New members (a cluster pool's, on a node that joined): running maps take them at once."""
        self._members.extend(refs)

    def _drop_node(self, node: str) -> None:
        """A member died or left: its actors are gone (if it comes back, it gets new ones)."""
        self._gone.update(ref for ref in list(self._members) if ref.node == node)

    def map(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int | None = None,
            retries: int = 3, retry_on: tuple[type[BaseException], ...] = (), return_exceptions: bool = False,
            progress: bool = False) -> list[Any]:
        """Ask each item of some actor of the pool; answers come back in item order.

        Idle actors pull the next items, so uneven work still spreads evenly.
        Items travel ``chunksize`` at a time (default: about four chunks per
        actor, as ``multiprocessing.Pool.map`` picks); each actor still
        receives one item per ``receive``. ``timeout`` bounds the whole call
        (None: no limit).

        An item in flight when its actor's worker (or node) dies is asked
        again, up to ``retries`` times: the pool's actors come back, and the
        map finishes. So an item may run more than once (at least once):
        items with side effects must be idempotent. An exception raised by
        the actor's code is not retried, unless its class is in ``retry_on``.
        The first failing item's error is raised, with a note naming its
        index; ``return_exceptions=True`` puts each failure in its item's
        place instead. ``progress=True`` shows a progress bar on standard
        error, with the items done and the rate (on a terminal; elsewhere
        only its label).
        """
        limit = check_timeout(timeout)
        fanout, count = self._map_fanout("map", items, chunksize, retries, retry_on, return_exceptions)
        if fanout is None:
            return []
        gathered = _Gathered(return_exceptions)
        with _progress_bar(count) if progress else contextlib.nullcontext() as step:
            for run in _resolve(self._members[0]).fan_out(fanout, limit, each=False):
                done = gathered.add(run)
                if step is not None:
                    step(done)
        return gathered.results()

    async def map_async(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int | None = None,
                        retries: int = 3, retry_on: tuple[type[BaseException], ...] = (),
                        return_exceptions: bool = False) -> list[Any]:
        """:meth:`map` for asyncio code: awaiting it leaves the event loop free while the items run."""
        limit = check_timeout(timeout)
        fanout, _ = self._map_fanout("map_async", items, chunksize, retries, retry_on, return_exceptions)
        if fanout is None:
            return []
        gathered = _Gathered(return_exceptions)
        asker = _resolve(self._members[0]).asker(asyncio.get_running_loop())
        async for run in asker.fan_out(fanout, limit, each=False):
            gathered.add(run)
        return gathered.results()

    def _map_fanout(self, op: str, items: Iterable[Any], chunksize: int | None, retries: int,
                    retry_on: tuple[type[BaseException], ...], return_exceptions: bool) -> tuple[Fanout | None, int]:
        """A map's fan-out over all of ``items`` (None if there are none), and how many items there are."""
        retryable = _retryable(op, retries, retry_on)
        listed = list(_iterate(op, items))
        size = _check_chunksize(op, chunksize, default_chunksize(len(listed), len(self)))
        if not listed:
            return None, 0
        return Fanout(self._members, iter(listed), chunksize=size, retries=retries, retryable=retryable,
                      return_exceptions=return_exceptions, gone=self._gone), len(listed)

    def imap(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int = 1, retries: int = 3,
             retry_on: tuple[type[BaseException], ...] = (), return_exceptions: bool = False) -> Iterator[Any]:
        """Like :meth:`map`, but yields the answers in item order as they come, reading ``items`` lazily.

        A bounded number of items is in flight or waiting for its turn (eight
        chunks per actor), so a generator of any length runs in flat memory.
        ``chunksize`` is 1 unless given, as in ``multiprocessing.Pool.imap``
        (the length of ``items`` is not known); pass a larger one for tiny
        items. ``timeout`` bounds the wait for each next answer (None: no
        limit). Retries, ``retry_on`` and ``return_exceptions`` work as in
        :meth:`map`; without the latter, the first failure is raised in its
        turn and ends the iteration.
        """
        fanout, limit = self._stream_fanout("imap", items, timeout, chunksize, retries, retry_on, return_exceptions,
                                            ordered=True)
        port = _resolve(self._members[0])  # (the calling thread's: iterate on the thread that made it)
        return _answers(port.fan_out(fanout, limit, each=True), return_exceptions)

    def imap_unordered(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int = 1,
                       retries: int = 3, retry_on: tuple[type[BaseException], ...] = (),
                       return_exceptions: bool = False) -> Iterator[Any]:
        """Like :meth:`imap`, but yields each answer as soon as it comes, whatever its item's place."""
        fanout, limit = self._stream_fanout("imap_unordered", items, timeout, chunksize, retries, retry_on,
                                            return_exceptions, ordered=False)
        port = _resolve(self._members[0])
        return _answers(port.fan_out(fanout, limit, each=True), return_exceptions)

    def imap_async(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int = 1,
                   retries: int = 3, retry_on: tuple[type[BaseException], ...] = (),
                   return_exceptions: bool = False) -> AsyncIterator[Any]:
        """:meth:`imap` for asyncio code: ``async for answer in pool.imap_async(items)``."""
        fanout, limit = self._stream_fanout("imap_async", items, timeout, chunksize, retries, retry_on,
                                            return_exceptions, ordered=True)
        return _answers_async(self._members[0], fanout, limit, return_exceptions)

    def imap_unordered_async(self, items: Iterable[Any], timeout: float | None = 60.0, *, chunksize: int = 1,
                             retries: int = 3, retry_on: tuple[type[BaseException], ...] = (),
                             return_exceptions: bool = False) -> AsyncIterator[Any]:
        """:meth:`imap_unordered` for asyncio code."""
        fanout, limit = self._stream_fanout("imap_unordered_async", items, timeout, chunksize, retries, retry_on,
                                            return_exceptions, ordered=False)
        return _answers_async(self._members[0], fanout, limit, return_exceptions)

    def _stream_fanout(self, op: str, items: Iterable[Any], timeout: float | None, chunksize: int, retries: int,
                       retry_on: tuple[type[BaseException], ...], return_exceptions: bool, *,
                       ordered: bool) -> tuple[Fanout, float]:
        """A stream's fan-out, reading ``items`` lazily and a bounded number ahead, and its timeout."""
        limit = check_timeout(timeout)
        retryable = _retryable(op, retries, retry_on)
        size = _check_chunksize(op, chunksize, 1)
        fanout = Fanout(self._members, _iterate(op, items), chunksize=size, retries=retries, retryable=retryable,
                        return_exceptions=return_exceptions, ordered=ordered, gone=self._gone,
                        bound=STREAM_CHUNKS_PER_ACTOR * len(self) * size)
        return fanout, limit

    def submit(self, item: Any, *, retries: int = 3, retry_on: tuple[type[BaseException], ...] = ()) -> PoolFuture:
        """Ask ``item`` of the first idle actor of the pool; returns a future of its answer at once.

        The future is a ``concurrent.futures.Future`` (``result(timeout)``,
        ``concurrent.futures.wait`` and ``as_completed`` work) that can also
        be awaited. Items wait their turn in the pool's queue, at most two in
        flight per actor, so a slow actor gets fewer; deaths are retried as
        in :meth:`map` (an item may run twice). A failure is the future's
        exception.
        """
        retryable = _retryable("submit", retries, retry_on)
        codec.encode(item)  # (SerializationError here, for this item, rather than in the submission loop)
        with self._lock:
            submissions = self._submissions.get((retries, retry_on))
            if submissions is None:
                submissions = self._submissions[(retries, retry_on)] = Submissions(
                    self._members, self._gone, functools.partial(_resolve, self._members[0]), retries, retryable)
        return submissions.submit(item)

    def stop(self) -> None:
        """Stop every member of the pool for good (each after the messages sent to it before)."""
        for ref in self.refs:
            ref.stop()


class _ClusterPool:
    """Keeps a pool spread over the workers of a cluster's members: actors for those that join, none for the dead."""

    def __init__(self, system: ActorSystem, actor_class: type[Actor] | str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], nodes: str | Sequence[str], per_worker: int) -> None:
        if nodes == "all":
            self._wanted: set[str] | None = None
        elif isinstance(nodes, str) or not isinstance(nodes, Sequence) or not nodes or not all(
                type(n) is str and n for n in nodes):
            raise InvalidArgument(f"nodes={shown(nodes)} must be \"all\" or a non-empty list of member names")
        else:
            self._wanted = set(nodes)
        cluster = system.get_cluster()  # (ClusterError when this system is in none)
        self._system, self._spawn = system, functools.partial(system.spawn, actor_class, *args, **kwargs)
        self._per_worker = per_worker
        self._lock = threading.Lock()
        self._placed: set[str] = set()
        alive = {m.name: m.meta for m in cluster.members() if m.status.value == "alive"}
        if self._wanted is not None and self._wanted - set(alive):
            raise ClusterError(f"no alive member named {', '.join(sorted(self._wanted - set(alive)))}; "
                               f"alive: {', '.join(sorted(alive))}")
        refs: list[ActorRef] = []
        for name, meta in sorted(alive.items()):
            if self._wanted is None or name in self._wanted:
                refs += self._spawn_on(name, meta)
                self._placed.add(name)
        self.pool = PoolRef(refs)
        cluster.on_event(self._on_event)

    def _spawn_on(self, name: str, meta: dict[str, Any]) -> list[ActorRef]:
        workers = self._system._node.size if name == self._system.name else meta.get("workers")
        if type(workers) is not int or workers < 1:
            raise ClusterError(f"member {name} does not say how many workers it has")
        return [self._spawn(node=name, worker=w) for w in range(workers) for _ in range(self._per_worker)]

    def _on_event(self, event: Any) -> None:
        """A membership change (a ClusterEvent), on the cluster's event thread."""
        name = event.name
        if self._wanted is not None and name not in self._wanted:
            return
        if event.kind in ("dead", "leave"):
            with self._lock:
                self._placed.discard(name)
            self.pool._drop_node(name)
            return
        if event.status != "alive" or not self._system.running:
            return
        with self._lock:
            if name in self._placed:
                return
            self._placed.add(name)
        try:
            refs = self._spawn_on(name, event.meta)
        except GorilixError as exc:
            with self._lock:
                self._placed.discard(name)  # (a later event tries again)
            log.warning("the pool could not grow onto member %s: %s", name, exc)
            return
        self.pool._join(refs)


class ActorSystem:
    """One node: a node process (router, registry, supervisors) and its ``workers`` worker processes.

    Use it as a context manager, or call :meth:`stop`. Every method may be
    called from any thread.
    """

    def __init__(
        self, name: str = "gorilix", workers: int | None = None, *,
        log_level: int | str = logging.WARNING, start_timeout: float = 60.0,
        max_parked: int = 10_000, max_worker_memory: int | str | None = None, hang_timeout: float | None = None,
        max_queued: int | str | None = "64MiB",
    ) -> None:
        """``max_worker_memory`` (bytes, or a size such as "2GiB" or "500MB"): a worker whose
        memory (RSS) goes past it is restarted, its actors re-created as after a crash (None: no limit).

        ``hang_timeout`` (seconds): a worker stuck in one message longer than
        this (an actor that blocks) is restarted, its actors re-created (None:
        never; ``gorilix status`` shows it stuck all the same).

        ``max_queued`` (bytes, or a size such as "64MiB"): what the node lets
        wait for one worker, sent and not yet read. A worker that stops
        reading (stuck, stopped, swamped) would make the node queue without
        bound; past the limit its new tells become dead letters and its new
        asks fail with MailboxFull (None: no limit)."""
        if type(name) is not str or not 0 < len(name) <= NODE_NAME_MAX:
            raise InvalidArgument(
                f"an ActorSystem name must be a non-empty str of at most {NODE_NAME_MAX} characters, "
                f"got {shown(name)}"
            )
        count = default_worker_count() if workers is None else workers
        if type(count) is not int or count < 1:
            raise InvalidArgument(
                f"workers={shown(workers)}: need a positive int of worker processes, or None for one per core"
            )
        start_limit = _thread_timeout(check_timeout(start_timeout, "start_timeout"))
        if type(max_parked) is not int or max_parked < 1:
            raise InvalidArgument(
                f"max_parked={shown(max_parked)}: need a positive int (messages held per restarting actor)"
            )
        log_level = _check_log_level(log_level)
        memory_limit = parse_memory("max_worker_memory", max_worker_memory)
        queue_limit = parse_memory("max_queued", max_queued)
        if hang_timeout is not None:
            hang_timeout = check_timeout(hang_timeout, "hang_timeout")
            if hang_timeout < 1.0 or hang_timeout == float("inf"):
                raise InvalidArgument(f"hang_timeout={shown(hang_timeout)}: need at least 1 second, or None")
        if boot.IN_WORKER:
            boot.SYSTEM_ON_IMPORT = True  # (if this ends the import of the program, the worker says so)
            raise GorilixError(
                "an ActorSystem cannot start inside a worker process: workers import your program to find "
                "its actor classes, so create the system under `if __name__ == \"__main__\":`"
            )
        logs.install(log_level)
        self._claim_name(name)
        try:
            node = NodeHandle(name, count, log_level=log_level, max_parked=max_parked, start_timeout=start_limit,
                              max_worker_memory=memory_limit, hang_timeout=hang_timeout, max_queued=queue_limit)
        except BaseException:
            self._release_name(name)
            raise
        self._setup(name, node, attached=False)

    @classmethod
    def connect(cls, address: str, *, secret_file: str | os.PathLike[str] | None = None,
                secret: bytes | None = None, insecure: bool = False, timeout: float = 5.0) -> ActorSystem:
        """The same API against a node that runs already (``gorilix node``), at ``"HOST:PORT"``.

        The node's secret comes from ``secret_file`` (or ``secret``); without
        either, from the per-user secret of this machine, which every node the
        user started without a secret uses. ``insecure=True`` connects without
        any secret, to a node started with ``--insecure``. Closing the system,
        or leaving its ``with`` block, detaches this program; the node goes on
        running. Raises AccessDenied at once when the node refuses the secret
        (or there is none), NodeUnreachable when nothing answers within ``timeout``.
        """
        if type(address) is not str or not address:
            raise InvalidArgument(f"connect needs a node address such as '127.0.0.1:7946', got {shown(address)}")
        if secret_file is not None and secret is not None:
            raise InvalidArgument("connect takes secret_file= or secret=, not both")
        if type(insecure) is not bool:
            raise InvalidArgument(f"insecure={shown(insecure)} must be a bool")
        if insecure and (secret_file is not None or secret is not None):
            raise InvalidArgument("insecure=True connects without a secret: pass no secret_file= or secret=")
        secret_from: str | None = None
        default_path: str | None = None
        if secret_file is not None:
            secret = read_secret_file(secret_file)
            secret_from = f"the one in secret file {os.fspath(secret_file)}"
        elif secret is not None:
            secret_from = "the secret= given"
        if secret is not None and type(secret) is not bytes:
            raise InvalidArgument(f"secret={shown(secret)} must be bytes (or use secret_file=)")
        limit = check_timeout(timeout)
        if boot.IN_WORKER:
            boot.SYSTEM_ON_IMPORT = True
            raise GorilixError("connect from inside an actor: use the actor's own refs, it already has a node")
        if insecure:
            default_path = str(default_secret_location())  # (for the message, should the node have a secret)
        elif secret is None:
            default_path = str(default_secret_path())
            secret = default_secret(create=False)
            if secret is None:
                raise AccessDenied(address, "missing", None, default_path)
            secret_from = f"the per-user secret {default_path}"
        node = AttachedNode(address, secret, limit, secret_from=secret_from, default_path=default_path)
        system = cls.__new__(cls)
        try:
            system._attached = True
            system._node = node
            system._claim_name(node.name, attached=True)
        except BaseException:
            node.close()
            raise
        system._setup(node.name, node, attached=True)
        return system

    def _claim_name(self, name: str, attached: bool = False) -> None:
        """One system per node name starts a node in a process; any number may attach to a node.

        The one that started it comes first in its group: refs of its node go through it.
        """
        with _systems_lock:
            group = _systems.get(name, [])
            if attached:
                others = {system._node.pid for system in group}
                if others and self._node.pid not in others:  # refs carry only a node's name
                    raise GorilixError(
                        f"this program already talks to another node named {name!r} (pid {others.pop()}); "
                        "refs name their node, so the nodes a program talks to need distinct names")
                _systems[name] = [*group, self]
                return
            if any(not system._attached for system in group):
                raise GorilixError(f"an ActorSystem named {name!r} is already running in this process")
            _systems[name] = [self, *group]

    def _release_name(self, name: str) -> None:
        with _systems_lock:
            group = [system for system in _systems.get(name, []) if system is not self]
            if group:
                _systems[name] = group
            else:
                _systems.pop(name, None)

    def _setup(self, name: str, node: NodeHandle | AttachedNode, attached: bool) -> None:
        self.name = name
        self._node = node
        self._attached = attached  # connect(): stop() and close() detach, the node goes on
        self._local = threading.local()
        self._clients: list[tuple[threading.Thread, ClientPort]] = []  # each thread's port, with its thread
        self._clients_lock = threading.Lock()
        self._client_ids = client_ids()  # the node attaches a client only in their range (next() is thread-safe)
        self._stopped = False
        self._forked = False  # this process is a fork of the one that made the system
        self._provider: Any = None
        self._cluster: Cluster | None = None
        install_resolver(_resolve)
        atexit.register(_stop_at_exit, weakref.ref(self))

    # -- plumbing -----------------------------------------------------------

    def _client(self) -> ClientPort:
        if self._stopped:
            raise NotRunning(self._stopped_message())
        if self._node.ended.reason is not None:  # the node process ended by itself: it failed, or was told to stop
            raise self._node.ended.error()
        client = getattr(self._local, "client", None)
        if client is None:
            self._detach_ended_threads()
            # A call waiting on this port fails at once when the node loop ends (ended).
            client = ClientPort(self._node.zctx, self._node.endpoint, self.name, next(self._client_ids),
                                self._node.configure, new_id=self._client_ids.__next__, ended=self._node.ended)
            self._local.client = client
            with self._clients_lock:
                self._clients.append((threading.current_thread(), client))
        return client

    def _detach_ended_threads(self) -> None:
        """Close the ports of threads that have ended, and tell the node to forget their routes.

        Done as each new thread makes its port, so a program that starts a
        thread per request holds about as many sockets as it has live threads.
        A port whose thread has ended is used by no one: any thread may close it.
        """
        with self._clients_lock:
            ended = [client for thread, client in self._clients if not thread.is_alive()]
            if not ended:
                return
            self._clients = [(thread, client) for thread, client in self._clients if thread.is_alive()]
        for client in ended:
            client.detach()

    def _new_port(self) -> ClientPort:
        """A client of this node for the calling thread to own and close (not one of the per-thread ports)."""
        if self._stopped or self._node.ended.reason is not None:
            raise NotRunning(self._stopped_message())
        return ClientPort(self._node.zctx, self._node.endpoint, self.name, next(self._client_ids),
                          self._node.configure, ended=self._node.ended)

    def _stopped_message(self) -> str:
        if self._forked:
            return (f"ActorSystem {self.name!r} belongs to the process that made it; this process is a fork "
                    "of it: start or connect a system of its own")
        return f"ActorSystem {self.name!r} is stopped"

    def _control(self, op: str, *args: Any, timeout: float = 10.0) -> Any:
        if self._stopped:
            raise NotRunning(self._stopped_message())
        return self._client().control(op, *args, timeout=timeout)

    def __enter__(self) -> ActorSystem:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running" if self._node.ended.reason is None else "ended"
        return f"<ActorSystem {self.name!r} {state}, {self._node.size} workers, node pid {self._node.pid}>"

    @property
    def address(self) -> str | None:
        """``HOST:PORT`` of the node this system attached to with :meth:`connect` (None for its own node)."""
        return self._node.address if isinstance(self._node, AttachedNode) else None

    @property
    def running(self) -> bool:
        """True until ``stop()`` (or ``close()``), or until the node process ended by itself."""
        return not self._stopped and self._node.ended.reason is None

    @property
    def failure(self) -> BaseException | None:
        """Why the node failed, if it did (every call then raises NotRunning); None while it runs or after a stop."""
        return self._node.failure

    # -- actors -------------------------------------------------------------

    def spawn(
        self, actor_class: type[Actor] | str, *args: Any, name: str | None = None,
        worker: int | None = None, node: str | None = None, restart: str = PERMANENT,
        mailbox_size: int | None = None, movable: bool = False, **kwargs: Any,
    ) -> ActorRef:
        """Create an actor on the least loaded worker (or ``worker=``) and return its ref.

        ``movable=True``: the node may re-create it on another worker to
        balance them after a failover (its ref stays the same, and no message
        is lost, but it starts afresh, as after a restart). A pool's members
        are movable.
        """
        self._check_node(node)
        if node is None or node == self.name:
            check_worker(worker, self._node.size, self.name)
        else:
            check_worker(worker)  # that node checks that it has the worker
        spec = make_spec(actor_class, args, kwargs, name=name, restart=restart,
                         mailbox_size=mailbox_size, movable=movable, base=Actor)
        if node is not None and node != self.name:
            found = self._client().ask(ActorRef(node, CONTROL_ID, "node"), ["spawn", spec.to_wire(), worker], 30.0)
        else:
            found = self._control("spawn", spec.to_wire(), worker, timeout=30.0)
        node_name, actor_id, actor_name = found
        return ActorRef(node_name, actor_id, actor_name)

    def spawn_pool(self, actor_class: type[Actor] | str, *args: Any, size: int | None = None,
                   nodes: str | Sequence[str] | None = None, per_worker: int = 1, **kwargs: Any) -> PoolRef:
        """Spawn a pool: ``per_worker`` actors on each worker (or ``size`` actors, one per worker in turn).

        ``nodes="all"`` (or a list of member names) spreads the pool over the
        workers of every alive member of the cluster: a member that joins
        later (or a listed one that comes back) gets its actors too, and the
        actors of a member that dies are dropped, so maps running then go on
        on the others. The actors are movable (see :meth:`spawn`): after a
        failover, the node moves some back to the respawned worker.
        """
        kwargs.setdefault("movable", True)
        if "worker" in kwargs or "node" in kwargs:
            raise SpawnError("spawn_pool places its actors itself: pass no worker= or node= (nodes= picks members)")
        if kwargs.get("name") is not None:
            raise SpawnError(
                f"spawn_pool cannot give every actor one name (name={shown(kwargs['name'])}); "
                "register one of pool.refs with register_name instead"
            )
        if type(per_worker) is not int or per_worker < 1:
            raise SpawnError(f"per_worker={shown(per_worker)}: a pool needs at least one actor per worker")
        if nodes is not None:
            if size is not None:
                raise SpawnError("spawn_pool takes size= or nodes=, not both (nodes= places per_worker per worker)")
            return _ClusterPool(self, actor_class, args, kwargs, nodes, per_worker).pool
        workers = self._node.size
        count = workers * per_worker if size is None else size
        if type(count) is not int or count < 1:
            raise SpawnError(f"size={shown(size)}: a pool needs at least one actor")
        return PoolRef([self.spawn(actor_class, *args, worker=i % workers, **kwargs) for i in range(count)])

    def whereis(self, name: str, node: str | None = None) -> ActorRef | None:
        """The actor registered under ``name``, or None."""
        _check_name("whereis", name)
        self._check_node(node)
        if node is not None and node != self.name:
            found = self._client().ask(ActorRef(node, CONTROL_ID, "node"), ["whereis", name], 10.0)
        else:
            found = self._control("whereis", name)
        return None if found is None else ActorRef(*found)

    def register_name(self, name: str, ref: ActorRef) -> None:
        """Give the actor ``ref`` the name ``name`` on its node (``whereis(name)`` finds it).

        The name follows the actor through restarts and re-creation, and is
        dropped when the actor stops for good. Raises GorilixError if another
        live actor holds the name.
        """
        _check_name("register_name", name)
        if not isinstance(ref, ActorRef):
            raise InvalidArgument(f"register_name needs an ActorRef, got {shown(ref)}")
        if ref.node != self.name:
            raise InvalidArgument(f"{ref} lives on node {ref.node}; register it there")
        self._control("register_name", name, ref.id)

    def unregister_name(self, name: str) -> bool:
        """Drop the name ``name``; False if no actor had it. The actor itself goes on."""
        _check_name("unregister_name", name)
        return bool(self._control("unregister_name", name))

    # -- supervision, topics, reload ----------------------------------------

    def spawn_supervisor(self, name: str, strategy: Strategy | None = None,
                         restart: str = PERMANENT) -> SupervisorRef:
        """Start a top-level supervisor (a child of the node's root supervisor).

        If it gives up (too many restarts), the root restarts it according to
        ``restart``: PERMANENT (default) brings the subtree back with backoff,
        TEMPORARY leaves it stopped.
        """
        return self._new_supervisor(name, Strategy() if strategy is None else strategy, None, restart)

    def _new_supervisor(self, name: str, strategy: Strategy, parent: int | None, restart: str) -> SupervisorRef:
        if not valid_name(name):
            raise InvalidArgument(
                f"a supervisor needs a non-empty str name of at most {NAME_MAX} characters, got {shown(name)}"
            )
        if not isinstance(strategy, Strategy):
            raise InvalidArgument(f"strategy={shown(strategy)} must be a supervisor.Strategy (or None for the default)")
        if type(restart) is not str or restart not in RESTART_TYPES:
            raise InvalidArgument(f"restart={shown(restart)} is not one of {', '.join(RESTART_TYPES)}")
        sup_id = self._control("spawn_supervisor", name, strategy.to_wire(), parent, restart)
        return SupervisorRef(self, sup_id, name)

    def subscribe(self, topic: str, ref: ActorRef) -> None:
        """Deliver every message published to ``topic`` (a non-empty str) to ``ref``."""
        self._control("subscribe", check_topic("subscribe", topic), self._local_id(ref))

    def unsubscribe(self, topic: str, ref: ActorRef) -> bool:
        """Stop sending ``topic``'s messages to ``ref``; False if it was not subscribed."""
        return bool(self._control("unsubscribe", check_topic("unsubscribe", topic), self._local_id(ref)))

    def publish(self, topic: str, message: Any) -> int:
        """Send ``message`` to every subscriber of ``topic`` on every node.

        Returns how many subscribers of this node got it (other nodes deliver
        to theirs without reporting back).
        """
        return int(self._control("publish", check_topic("publish", topic), codec.encode(message)))

    def reload(self, module: str, timeout: float = 30.0) -> dict[str, Any]:
        """Re-import ``module`` in every worker and move live actors to the new code.

        Each moved actor keeps its attributes and gets ``on_code_change()``;
        messages that arrive meanwhile wait. Returns how many actors moved.
        """
        if type(module) is not str or not module:
            raise InvalidArgument(f"reload needs a module name such as 'myapp.actors', got {shown(module)}")
        return dict(self._control("reload", module, timeout=check_timeout(timeout)))

    def _local_id(self, ref: ActorRef) -> int:
        if not isinstance(ref, ActorRef):
            raise InvalidArgument(f"expected an ActorRef, got {shown(ref)}")
        if ref.node != self.name:
            raise InvalidArgument(f"{ref} lives on node {ref.node}; subscribe it there")
        return ref.id

    # -- workers and health -------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """This node's worker processes now: pid, alive, actors, CPU, memory, restarts, mailboxes, stuck, unread."""
        # (fields a newer node adds are left out: a program may attach to any version)
        return [WorkerInfo(**{k: v for k, v in row.items() if k in _WORKER_FIELDS}) for row in self._control("workers")]

    def kill_worker(self, worker_id: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to a worker process (a failover drill); returns its pid.

        For SIGKILL and SIGTERM it returns once the kill is done: the node has
        seen the death, failed the asks in flight to that worker, and parks
        what comes for its actors. It does not wait for the recovery (the
        actors' re-creation on live workers, which for a worker of 500,000
        actors takes tens of seconds); ``stats()["recovering"]`` counts the
        actors not running again yet.
        """
        workers = self._node.size
        if type(worker_id) is not int or not 0 <= worker_id < workers:
            raise InvalidArgument(
                f"kill_worker: worker_id={shown(worker_id)} must be a worker number 0..{workers - 1} "
                f"of node {self.name}"
            )
        if isinstance(sig, bool) or not isinstance(sig, int) or sig not in signal.valid_signals():
            raise InvalidArgument(
                f"kill_worker: sig={shown(sig)} is not a signal of this system; "
                "pass one such as signal.SIGKILL or signal.SIGTERM"
            )
        return int(self._control("kill_worker", worker_id, int(sig)))

    def dead_letters(self) -> DeadLetters:
        """Messages this node knows were not delivered: how many, the latest 100, and those lost in deaths."""
        found = self._control("dead_letters")
        return DeadLetters(found["count"], found["recent"], found.get("lost_in_deaths", 0))

    def stats(self) -> dict[str, Any]:
        """The node's counters, as ``gorilix status --json`` shows them under ``stats`` (see docs/cli.md)."""
        return dict(self._control("stats"))

    def _check_node(self, node: str | None) -> None:
        if node is not None and type(node) is not str:
            raise InvalidArgument(f"node={shown(node)} must be a node's name (a str), or None for this node")
        if node is not None and node != self.name:
            self._remote(node)

    def _remote(self, node: str) -> None:
        """Check that ``node`` is a live member we can route to."""
        cluster = self.get_cluster()
        for member in cluster.members():
            if member.name == node and member.status.value == "alive":
                return
        raise ClusterError(f"node not found: {node}")

    # -- clustering (the Go guide's API) ------------------------------------

    def set_cluster_provider(self, provider: Any) -> None:
        """What ``enable_clustering`` builds the cluster with (``gorilix.cluster.bridge.ClusterProvider()``)."""
        self._provider = provider

    def enable_clustering(self, config: ClusterConfig) -> Cluster:
        """Bind the router's TCP port and gossip's UDP port, then join ``config.seeds``.

        Raises ClusterError "no cluster provider set" without a provider, and
        "failed to join cluster: ..." when seeds were given and none
        answered (the node stays up; call join_cluster again).
        """
        if not isinstance(config, ClusterConfig):
            raise InvalidArgument(f"enable_clustering needs a ClusterConfig, got {shown(config)}")
        if self._provider is None:
            raise ClusterError("no cluster provider set")
        if self._cluster is not None:
            raise ClusterError("clustering is already enabled")
        self._cluster = self._provider.start(self, config)
        if config.seeds:
            self._cluster.join(list(config.seeds))
        return self._cluster

    def get_cluster(self) -> Cluster:
        """The cluster this node is in: its members, events and leave (ClusterError when not clustered)."""
        if self._cluster is None and self._attached and self._node.clustered:
            # An attached program sees the cluster its node is in (a leave from here makes the node leave).
            rows = {row["name"]: row for row in self._control("members")}
            self._cluster = Cluster(self, ClusterConfig(node_name=self.name), rows[self.name])
        if self._cluster is None:
            raise ClusterError("clustering not enabled")
        return self._cluster

    def join_cluster(self, seeds: list[str]) -> int:
        """Contact more seeds; returns how many answered."""
        if isinstance(seeds, str) or not isinstance(seeds, Iterable):
            raise InvalidArgument(f"join_cluster needs a list of seeds such as ['host:7946'], got {shown(seeds)}")
        seeds = list(seeds)
        for seed in seeds:
            if type(seed) is not str:
                raise InvalidArgument(f"join_cluster needs a list of seeds such as ['host:7946'], got {shown(seed)} in it")
        return self.get_cluster().join(seeds)

    def leave_cluster(self) -> None:
        """Leave gracefully (bounded in time); the node keeps running alone."""
        cluster = self.get_cluster()
        cluster.leave()
        cluster.close()
        self._cluster = None

    # -- stop ---------------------------------------------------------------

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop every actor and worker; safe to call twice (``timeout=None``: no limit).

        A system from :meth:`connect` detaches instead, as :meth:`close` does:
        the node it attached to goes on running.
        """
        limit = check_timeout(timeout)
        if self._stopped:
            return
        if self._attached:
            self.close()
            return
        if self._cluster is not None:
            try:
                self.leave_cluster()
            except GorilixError as exc:
                log.warning("leaving the cluster: %s", exc)
        if self._node.ended.reason is None:  # else the loop has ended already: nothing to ask
            try:
                self._client().control("stop", timeout=min(limit, 5.0))
            except NotRunning:
                pass  # it ended meanwhile
            except GorilixError as exc:
                log.warning("node %s did not answer stop (%s); stopping it directly", self.name, exc)
                self._node.request_stop()  # over the socket pair, which needs no router
        self._stopped = True
        if not self._node.join(_thread_timeout(limit)):
            log.error("node process of %s (pid %s) did not end within %.1f s; killing it",
                      self.name, self._node.pid, limit)
            self._node.kill()
        self._close_clients()

    def close(self) -> None:
        """Detach from a node reached with :meth:`connect` (it goes on running); for a node this
        program started, the same as :meth:`stop`."""
        if not self._attached:
            self.stop()
            return
        if self._stopped:
            return
        self._stopped = True
        if self._cluster is not None:
            self._cluster.close()  # its event thread only: the node stays in the cluster
            self._cluster = None
        if isinstance(self._node, AttachedNode):  # first: calls waiting now fail with this
            self._node.ended.set("was detached from by this program")
        self._close_clients()

    def _close_clients(self) -> None:
        with self._clients_lock:
            for _, client in self._clients:
                client.close()
            self._clients.clear()
        self._node.close()
        self._release_name(self.name)


def _check_name(op: str, name: object) -> None:
    if not valid_name(name):
        raise InvalidArgument(
            f"{op}: a name must be a non-empty str of at most {NAME_MAX} characters, got {shown(name)}"
        )


def _check_log_level(level: object) -> int:
    """A logging level as the node and its workers take it: an int, or a name such as "INFO"."""
    if type(level) is int:
        return level
    if isinstance(level, str):
        number = logging.getLevelNamesMapping().get(level.upper())
        if number is not None:
            return number
    raise InvalidArgument(f"log_level={shown(level)}: need a logging level such as logging.INFO or \"INFO\"")


def _thread_timeout(limit: float) -> float:
    """A checked timeout for threading's waits, which take no inf (no limit: their longest wait)."""
    return min(limit, threading.TIMEOUT_MAX)


def _stop_at_exit(ref: weakref.ref[ActorSystem]) -> None:
    system = ref()
    if system is not None and not system._forked:  # a forked child's exit must not stop its parent's node
        system.stop()


def _after_fork_in_child() -> None:
    """A forked child inherits its parent's systems, sockets and atexit hooks, and owns none of them.

    Each is marked stopped without touching its sockets (they are the
    parent's): a call says so, and the child's exit stops nothing.
    """
    with _systems_lock:
        systems = [system for group in _systems.values() for system in group]
        _systems.clear()
    for system in systems:
        system._forked = True
        system._stopped = True


os.register_at_fork(after_in_child=_after_fork_in_child)
