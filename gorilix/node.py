"""The node loop: one thread of the node process that owns the router, the registry and the worker pool.

It is a plain poll loop over the ROUTER socket and the workers' process
sentinels, not an asyncio loop: forwarding is the hot path of every
cross-worker message, and a bare ``zmq.Poller`` loop costs a fraction of an
asyncio turn per message. It reads only the route frame of a message it
forwards; payloads pass through untouched. It runs in a process of its own
(:mod:`gorilix.node_main`) that runs no user code, so user code cannot block
it, not even through the GIL.

No input ends the loop: a message, a membership event or a timer that raises
is dropped, counted (``malformed``) and logged with its traceback (it is a
bug of ours, or a check we lack). What does end it (a stop request, workers
that keep dying before they are ready) ends it visibly: :attr:`Node.ended`
becomes readable at once, so every call waiting on this node raises
NotRunning, the cluster is told we left, and only then do the workers stop,
each step bounded in time.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import zmq

from gorilix.cluster.wire import node_meta_problem
from gorilix.control import DEFER, HANDLERS, check_recoveries, finish_reload
from gorilix.control.supervisors import supervisor_request
from gorilix.lifecycle import Lifecycle
from gorilix.registry import ActorRecord, Registry
from gorilix.transport import codec
from gorilix.transport.describe import describe_exit
from gorilix.transport.errors import (
    ActorNotFound,
    ClusterError,
    DecodeError,
    GorilixError,
    NodeDown,
    NotRunning,
    SpawnError,
    WorkerDied,
    error_to_wire,
)
from gorilix.transport.frames import (
    ASK,
    CONTROL_ID,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    REPLY,
    STOP,
    TELL,
    Envelope,
    Route,
    pack_env,
    pack_route,
    split_messages,
    unpack_env,
    unpack_route,
)
from gorilix.transport.routing import ForwardingTable
from gorilix.transport.sockets import (
    ID_SHIFT,
    configure_internal,
    has_input,
    ipc_endpoint,
    ipc_path,
    recv_frames,
    remove_stale_ipc_files,
    send_frames,
)
from gorilix.workers.messages import ClusterEvent
from gorilix.workers.notice import EndNotice
from gorilix.workers.pool import WorkerPool, WorkerProcess
from gorilix.workers.ref import ActorRef

if TYPE_CHECKING:  # the cluster's modules load once clustering is on (see control.cluster): a faster start
    from gorilix.cluster.links import PeerLinks
    from gorilix.cluster.security import ClusterKeys

log = logging.getLogger("gorilix.node")

#: Multiparts taken from the router before looking at sentinels again.
RECV_BURST = 1000
#: A worker that dies this many times in a row before it is ready stops the node.
MAX_EARLY_DEATHS = 3
#: Peers remembered as down (for NodeDown instead of "node not found").
MAX_GONE_NODES = 1024
#: How often links to peers are checked for a refused handshake (LINK_WAIT_CHECK while one is pending).
LINK_REPAIR_EVERY = 0.2
LINK_WAIT_CHECK = 0.01
#: The same failure (where, exception type) is logged with its traceback at most this often.
ERROR_LOG_EVERY = 60.0
#: How long stopping workers may take before the laggards are terminated, then killed.
WORKER_STOP_GRACE = 3.0


class Status(enum.Enum):
    INIT = "init"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Node:
    def __init__(
        self, name: str, workers: int, *, log_level: int = logging.WARNING,
        max_parked: int = 10_000, start_method: str = "spawn", program: dict[str, Any] | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        """``pool``: workers already started towards ``pool.endpoint`` (they boot while the node loads)."""
        self.name = name
        self.status = Status.INIT
        if pool is None:
            remove_stale_ipc_files()
        self.endpoint = ipc_endpoint(name) if pool is None else pool.endpoint
        self.zctx: zmq.Context[Any] = zmq.Context()
        self.router: zmq.Socket[bytes] = self.zctx.socket(zmq.ROUTER)
        configure_internal(self.router)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.bind(self.endpoint)
        self.table = ForwardingTable(max_parked_per_actor=max_parked)
        self.registry = Registry()
        self.pool = pool or WorkerPool(name, self.endpoint, workers, log_level=log_level,
                                       start_method=start_method, program=program)
        # A restarted node keeps its name, so its ids start somewhere new: an old
        # ref must not reach a new actor that happens to get the same number.
        self._ids = itertools.count(random.randrange(1, 1 << 39))
        self._identity_slot: dict[bytes, int] = {}
        self._early_deaths: dict[int, int] = dict.fromkeys(range(workers), 0)
        self._pending_spawns: dict[int, tuple[str, int, int]] = {}  # actor id -> (node, id, corr) of the asker
        self._asker_node = name  # the node of the control request being handled
        self._homeless: list[int] = []  # actors waiting for any live worker
        self._pending_kills: dict[int, list[tuple[int, int, int, str]]] = {}  # slot -> askers
        self._sentinels: dict[int, int] = {}
        self._poller = zmq.Poller()
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop_requested = threading.Event()
        self._stop_grace = WORKER_STOP_GRACE
        self._thread = threading.Thread(target=self._run, name=f"gorilix-node-{name}", daemon=True)
        #: Readable once the loop has ended (see EndNotice); ``ended.reason`` says why.
        self.ended = EndNotice(name)
        self._exit_hooks: list[Callable[[], None]] = []
        self._errors_logged: dict[tuple[str, ...], float] = {}
        self.malformed = 0
        self.refused = 0  # control requests refused: they named an id, slot or node the sender does not own
        self.dead_letter_count = 0
        self.recent_dead_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._timers: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self._timer_seq = itertools.count()
        self._reloads: dict[str, dict[str, Any]] = {}
        self.lifecycle = Lifecycle(self)
        self.links: PeerLinks | None = None
        self.cluster: Any = None  # the gossip service (gorilix.cluster.service), once clustering is on
        #: Actors and clients of this node told every membership change (a ClusterEvent).
        self.cluster_subscribers: set[int] = set()
        #: Peers declared dead or gone, and why: a message to them fails with NodeDown, not "not found".
        self._gone_nodes: dict[str, str] = {}
        self._repair_armed = False
        self.cluster_keys: ClusterKeys | None = None  # set by enable_cluster, from the config's secret
        self._events: zmq.Socket[bytes] | None = None
        #: Set by enable_cluster: the member table as plain dicts (thread-safe).
        self.members_view: Any = None
        #: Set by enable_cluster: members its gossip engine dropped for unusable metadata.
        self.gossip_bad_meta: Callable[[], int] | None = None
        self._bad_meta = 0  # membership events whose metadata the node could not use (the engine should have)
        self._recoveries: list[dict[str, Any]] = []  # kill-and-wait requests
        self.forwarded = 0
        self._worker_load: dict[int, dict[str, Any]] = {}  # slot -> last load report

    # -- life ---------------------------------------------------------------

    def allocate_id(self) -> int:
        """Ids in the node's own range (prefix 0); thread-safe under the GIL."""
        return next(self._ids)

    def start(self, timeout: float) -> None:
        self.status = Status.STARTING
        self._thread.start()
        if not self._started.wait(timeout):
            self._stop_requested.set()
            self._thread.join(5.0)
            raise NotRunning(f"node {self.name}: workers not ready within {timeout:g} s")
        if self._failure is not None:
            self._thread.join(5.0)
            raise NotRunning(f"node {self.name} failed to start: {self._failure}") from self._failure

    def join(self, timeout: float) -> bool:
        """Wait for the node thread to end; True if it has (or never started)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_stop(self, grace: float | None = None) -> None:
        """Stop without a round trip; ``grace`` shortens how long workers get to stop (the program is gone)."""
        if grace is not None:
            self._stop_grace = min(self._stop_grace, grace)
        self._stop_requested.set()

    @property
    def failure(self) -> BaseException | None:
        """What ended the loop, if it failed (None while it runs, and after a stop)."""
        return self._failure

    @property
    def bad_meta(self) -> int:
        """Members dropped for metadata this node could not use (by the gossip engine, or here)."""
        gossip = self.gossip_bad_meta() if self.gossip_bad_meta is not None else 0
        return self._bad_meta + gossip

    def go_silent(self) -> None:
        """The program that owns this node died: stop gossiping with no leave, as a crash would."""
        if self.cluster is not None:
            self.cluster.go_silent()

    def wait_cluster_closed(self, timeout: float) -> None:
        """After the loop ended: give the gossip engine up to ``timeout`` to spread our leave, then stop it."""
        service = self.cluster
        if service is not None:
            service.wait_stopped(timeout)

    def add_exit_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on the node thread as soon as the loop ends, before the workers stop; it must not block."""
        self._exit_hooks.append(hook)

    def remove_exit_hook(self, hook: Callable[[], None]) -> None:
        if hook in self._exit_hooks:
            self._exit_hooks.remove(hook)

    def _run(self) -> None:
        try:
            self._poller.register(self.router, zmq.POLLIN)
            for slot in range(self.pool.size):
                started = self.pool.workers.get(slot)
                if started is None:
                    self._start_worker(slot)
                else:
                    self._watch_worker(started)
            self._loop()
        except BaseException as exc:  # the thread must always clean up
            if isinstance(exc, NotRunning):  # it gave up on purpose, and says why
                log.error("node %s failed: %s", self.name, exc)
            else:
                log.exception("node %s failed", self.name)
            self._failure = exc
            self.status = Status.FAILED
        finally:
            self._finish()

    def _finish(self) -> None:
        """The loop has ended: say so at once, then leave, stop the workers and close (each step bounded)."""
        if self._failure is not None:
            self.ended.set(f"failed: {self._failure}")
        else:
            self.status = Status.STOPPING
            self.ended.set("was stopped")
        steps: list[tuple[str, Callable[[], Any]]] = [
            *((f"exit hook {hook!r}", hook) for hook in list(self._exit_hooks)),
            ("stopping the workers", self._shutdown_workers),
            ("closing the cluster links", self._disable_cluster),
            ("closing the router", lambda: self.router.close(linger=0)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:  # one failed step must not keep the others (and _started) from running
                log.exception("node %s: %s failed", self.name, what)
        path = ipc_path(self.endpoint)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
        if self.status != Status.FAILED:
            self.status = Status.STOPPED
        self._started.set()

    def schedule(self, delay: float, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the node thread after ``delay`` seconds (finite, >= 0: a ValueError otherwise)."""
        if type(delay) not in (int, float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"a timer needs a finite delay of 0 or more seconds, got {delay!r}")
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn, args))

    def _run_timers(self) -> int:
        """Run due timers; returns the poll timeout in ms until the next one."""
        timers = self._timers
        while timers and timers[0][0] <= time.monotonic():
            _, _, fn, args = heapq.heappop(timers)
            try:
                fn(*args)
            except Exception as exc:
                self._log_error(f"timer {getattr(fn, '__qualname__', fn)!s}", exc)
        if not timers:
            return 100
        return max(0, min(100, int((timers[0][0] - time.monotonic()) * 1000) + 1))

    def _loop(self) -> None:
        poll = self._poller.poll
        router = self.router
        while not self._stop_requested.is_set():
            timeout = self._run_timers() if self._timers else 100
            for item, _ in poll(timeout):
                if item is router:
                    self._drain_router()
                elif self.links is not None and item is self.links.external:
                    self._drain_router(item)
                elif item is self._events:
                    self._drain_events()
                else:
                    # Unregister first: the respawned worker may reuse this fd number.
                    self._poller.unregister(item)
                    self._worker_exited(self._sentinels.pop(item))

    def _all_workers_ready(self) -> None:
        if self.status == Status.STARTING:
            self.status = Status.RUNNING
            self._started.set()

    def _start_worker(self, slot: int) -> None:
        self._watch_worker(self.pool.start(slot))

    def _watch_worker(self, worker: WorkerProcess) -> None:
        self._identity_slot[worker.identity] = worker.slot
        self._sentinels[worker.process.sentinel] = worker.slot
        self._poller.register(worker.process.sentinel, zmq.POLLIN)

    def _shutdown_workers(self) -> None:
        """Ask every worker to stop, wait (bounded), then terminate and kill the laggards (logged by the pool)."""
        self.status = Status.STOPPING if self.status != Status.FAILED else self.status
        for worker in self.pool.workers.values():
            if worker.alive:
                self._send_control(worker.identity, ["shutdown"])
        self.pool.stop_all(timeout=self._stop_grace)

    def _log_error(self, what: str, exc: BaseException) -> None:
        """An exception while handling ``what``: a bug of ours, or a check we lack. Traceback, rate-limited."""
        if self._log_now(what, type(exc).__name__):
            log.error("node %s: %s failed (dropped; the node goes on): %s: %s", self.name, what,
                      type(exc).__name__, exc, exc_info=exc)
        else:
            log.debug("node %s: %s failed again: %s: %s", self.name, what, type(exc).__name__, exc)

    def _log_now(self, *key: str) -> bool:
        """True at most once per ERROR_LOG_EVERY for the same ``key``: repeats go to debug, not the log."""
        now = time.monotonic()
        if now < self._errors_logged.get(key, -math.inf) + ERROR_LOG_EVERY:
            return False
        if len(self._errors_logged) > 1024:  # keys name code paths and members: forget the oldest
            del self._errors_logged[next(iter(self._errors_logged))]
        self._errors_logged[key] = now
        return True

    def _dropped(self, what: str, exc: BaseException) -> None:
        """One input raised while the node handled it: dropped, counted in ``malformed`` and logged."""
        self.malformed += 1
        self._log_error(what, exc)

    # -- routing ------------------------------------------------------------

    def _drain_router(self, sock: zmq.Socket[bytes] | None = None) -> None:
        external = sock is not None
        sock = sock or self.router
        for _ in range(RECV_BURST):
            if not has_input(sock):  # cheaper than the zmq.Again an empty recv raises
                return
            frames = recv_frames(sock)
            if external and self.links is not None:
                self.links.identities.add(frames[0])
            if len(frames) < 4:
                self.malformed += 1
                continue
            try:
                route = unpack_route(frames[1])
            except DecodeError:
                self.malformed += 1
                continue
            try:  # (free in Python 3.11 unless something raises)
                if route.dst_id == CONTROL_ID and route.dst_node in (self.name, ""):
                    self._control_frames(frames)
                else:
                    self._forward(frames[0], route, frames)
            except Exception as exc:
                self._dropped("a message from an external peer" if external else "a message", exc)

    def _send_to(self, identity: bytes, frames: list[bytes]) -> None:
        """Send through whichever router socket ``identity`` is connected to."""
        links = self.links
        if links is not None and identity in links.identities:
            send_frames(links.external, frames)
        else:
            send_frames(self.router, frames)

    def _forward(self, source: bytes, route: Route, frames: list[bytes]) -> None:
        """Send ``frames`` (identity slot included) towards ``route.dst_id``."""
        if route.dst_node != self.name and route.dst_node:  # "": whichever node this is
            self._forward_remote(source, route, frames)
            return
        dst = route.dst_id
        endpoint = self.table.routes.get(dst)
        if endpoint is not None:
            self.forwarded += 1
            frames[0] = endpoint
            try:
                self._send_to(endpoint, frames)
            except zmq.ZMQError:  # the peer vanished; its sentinel is on the way
                frames[0] = source
                if self._identity_slot.get(endpoint) is not None:
                    self.table.hold(dst)
                    if self.table.park(dst, frames).parked:
                        return
                self._undeliverable(frames, ActorNotFound(f"actor {self.name}/{dst:#x} is unreachable"))
                return
            flags = route.flags
            if flags & FLAG_ASK:
                origin = source[2:].decode(errors="replace") if source[:2] == b"n:" else None
                self.table.ask_forwarded(endpoint, route.src_id, route.corr, origin)
            elif flags & FLAG_REPLY:
                self.table.reply_forwarded(source, dst, route.corr)
            return
        if route.flags & FLAG_REPLY:
            self.table.reply_forwarded(source, dst, route.corr)
        if dst in self.lifecycle.supervisors:
            self._to_supervisor(dst, frames)
            return
        if self.table.is_held(dst):
            if self.table.park(dst, frames).parked:
                return
            self._undeliverable(frames, GorilixError(
                f"actor {self.name}/{dst:#x} is being re-created and already has "
                f"{self.table.max_parked_per_actor} messages waiting"))
            return
        self._undeliverable(frames, ActorNotFound(f"no actor {self.name}/{dst:#x} (it stopped or never existed)"))

    def _to_supervisor(self, sup_id: int, frames: list[bytes]) -> None:
        """Messages to a supervisor's ref: requests it answers, or a stop of its subtree."""
        for env, request in self._messages(frames):
            if env.kind == STOP:
                if sup_id != self.lifecycle.root.id:
                    self.lifecycle.stop_supervisor(sup_id, "shutdown")
                continue
            if env.kind not in (TELL, ASK) or sup_id not in self.lifecycle.supervisors:
                continue
            try:
                result = supervisor_request(self, sup_id, request)
            except GorilixError as exc:
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, exc, ok=False, dst_node=env.src_node)
                else:
                    self._dead_letter(sup_id, env.src_node, env.src_id, exc)
                continue
            if env.kind == ASK:
                self._reply(env.src_id, env.corr, result, dst_node=env.src_node)

    def _forward_remote(self, source: bytes, route: Route, frames: list[bytes]) -> None:
        links = self.links
        if links is None:
            self._undeliverable(frames, ClusterError("clustering not enabled"))
            return
        if not self._send_remote(route.dst_node, frames[1:]):
            gone = self._gone_nodes.get(route.dst_node)
            self._undeliverable(frames, ClusterError(f"node not found: {route.dst_node}") if gone is None
                                else NodeDown(f"node {route.dst_node} is down ({gone}); its actors cannot answer"))
            return
        if route.flags & FLAG_ASK:
            self.table.ask_forwarded(b"n:" + route.dst_node.encode(), route.src_id, route.corr)

    def _send_remote(self, node: str, frames: list[bytes]) -> bool:
        """Frames (no identity slot) to another node: linked now, on demand, or held (PeerLinks.route)."""
        links = self.links
        if links is None:
            return False
        if node in links.peers:  # the common case, first
            return links.send(node, frames)
        if node in self._gone_nodes and b"n:" + node.encode() not in links.identities:
            return False  # declared gone, and not heard from since: fail fast with NodeDown
        if not links.route(node, frames):
            return False
        if node in links.peers:
            self._gone_nodes.pop(node, None)
        return True

    def _undeliverable(self, frames: list[bytes], error: GorilixError, fail_asks: bool = True) -> None:
        """Fail the asks among ``frames`` (unless the caller fails them itself); count the rest as dead letters."""
        try:
            route = unpack_route(frames[1])
            pairs = split_messages(frames[1:])
        except DecodeError:
            self.malformed += 1
            return
        for env_frame, _ in pairs:
            try:
                env = unpack_env(env_frame)
            except DecodeError:
                self.malformed += 1
                continue
            if env.kind == ASK:
                if fail_asks:
                    self._reply(env.src_id, env.corr, error, ok=False, dst_node=env.src_node)
            elif env.kind in (REPLY, FAIL):  # the asker is gone or unreachable: nobody to tell but us
                self._dead_letter(route.dst_id, env.src_node, env.src_id, f"reply undeliverable: {error}",
                                  dst_node=route.dst_node)
            else:
                self._dead_letter(route.dst_id, env.src_node, env.src_id, error, dst_node=route.dst_node)

    def _dead_letter(self, dst_id: int, src_node: str, src_id: int, error: BaseException | str,
                     dst_node: str | None = None) -> None:
        self.dead_letter_count += 1
        letter = {
            "to": f"{dst_node or self.name}/{dst_id:#x}", "from": f"{src_node}/{src_id:#x}" if src_id else None,
            "reason": str(error), "at": time.time(),
        }
        self.recent_dead_letters.append(letter)
        log.debug("dead letter to %s from %s: %s", letter["to"], letter["from"], letter["reason"])

    def _reply(self, dst_id: int, corr: int, value: Any, ok: bool = True, dst_node: str | None = None) -> None:
        """Answer an ask (of this node's control, or one that could not be delivered)."""
        node = dst_node or self.name
        if ok:
            kind, payload = REPLY, codec.encode(value)
        else:
            kind, payload = FAIL, codec.encode(error_to_wire(value))
        frames = [
            b"", pack_route(node, dst_id, FLAG_REPLY, CONTROL_ID, corr),
            pack_env(kind, self.name, CONTROL_ID, corr), payload,
        ]
        if node != self.name:
            if not self._send_remote(node, frames[1:]):
                self._undeliverable(frames, ClusterError(f"node not found: {node}"))
            return
        endpoint = self.table.routes.get(dst_id)
        if endpoint is None:
            return
        frames[0] = endpoint
        try:
            self._send_to(endpoint, frames)
        except zmq.ZMQError:
            pass

    def _send_control(self, identity: bytes, op: list[Any]) -> None:
        try:
            self.router.send_multipart([
                identity, pack_route(self.name, CONTROL_ID), pack_env(TELL, self.name, CONTROL_ID),
                codec.encode(op),
            ])
        except zmq.ZMQError:
            log.debug("control %s to %r: peer gone", op[0], identity)

    def send_node_control(self, node: str, op: list[Any]) -> bool:
        """Tell another node's control endpoint something (one-way)."""
        return self._send_remote(node, [
            pack_route(node, CONTROL_ID), pack_env(TELL, self.name, CONTROL_ID), codec.encode(op),
        ])

    # -- control ------------------------------------------------------------

    def _messages(self, frames: list[bytes]) -> Iterator[tuple[Envelope, Any]]:
        """Each (envelope, decoded payload) of a multipart the node itself handles; bad ones are counted."""
        try:
            pairs = split_messages(frames[1:])
        except DecodeError:
            self.malformed += 1
            return
        for env_frame, payload in pairs:
            try:
                yield unpack_env(env_frame), codec.decode(payload)
            except DecodeError:
                self.malformed += 1

    def _control_frames(self, frames: list[bytes]) -> None:
        source = frames[0]
        for env, op in self._messages(frames):
            try:
                name, args = op[0], op[1:]
                handler = HANDLERS[name]
            except (TypeError, IndexError, KeyError):
                self.malformed += 1
                continue
            self._asker_node = env.src_node
            try:
                result = handler(self, source, env.src_id, env.corr, *args)
            except GorilixError as exc:
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, exc, ok=False, dst_node=env.src_node)
                else:
                    log.warning("control %s from %r failed: %s", name, source, exc)
                continue
            except (TypeError, ValueError, KeyError, IndexError, DecodeError) as exc:
                self.malformed += 1
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, GorilixError(f"bad {name} request: {exc}"),
                                ok=False, dst_node=env.src_node)
                continue
            except Exception as exc:  # a bug of ours, or a check the handler lacks: never the end of the node
                self._dropped(f"control {name}", exc)
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, GorilixError(
                        f"node {self.name} could not handle a {name} request ({type(exc).__name__}: {exc}); "
                        "it goes on running, and its log has the traceback"), ok=False, dst_node=env.src_node)
                continue
            if env.kind == ASK and result is not DEFER:
                self._reply(env.src_id, env.corr, result, dst_node=env.src_node)

    def _live_slots(self) -> list[int]:
        return [s for s, w in self.pool.workers.items() if w.ready and w.alive]

    def place(self, record: ActorRecord, slot: int | None = None) -> None:
        """Send ``record`` to a worker (the given one, or the least loaded)."""
        self.table.hold(record.id)
        live = self._live_slots()
        if slot not in live:  # none asked for, or that worker is restarting
            slot = self.registry.least_loaded(live)
        if slot is None:
            self.registry.move(record.id, None)
            self._homeless.append(record.id)
            return
        self.registry.move(record.id, slot)
        self._send_control(self.pool.workers[slot].identity, ["spawn", record.id, record.spec.to_wire()])

    def _worker_of(self, record: ActorRecord) -> bytes | None:
        """The identity of the live worker where ``record`` runs, if it does."""
        if not record.placed or record.slot is None:
            return None
        worker = self.pool.workers.get(record.slot)
        if worker is None or not worker.ready or not worker.alive:
            return None
        return worker.identity

    def restart_in_place(self, record: ActorRecord, reason: str) -> bool:
        identity = self._worker_of(record)
        if identity is None:
            return False
        self._send_control(identity, ["restart", record.id, reason])
        return True

    def suspend(self, record: ActorRecord, reason: str) -> None:
        """End the incarnation of a running actor without reporting it as an exit."""
        identity = self._worker_of(record)
        if identity is not None:
            self._send_control(identity, ["suspend", record.id, reason])

    def forget(self, record: ActorRecord, reason: str) -> None:
        """The actor is gone for good: no route, no name, no restart."""
        self.registry.remove(record.id)
        self.lifecycle.forget(record.id)
        for parked in self.table.unbind(record.id):
            self._undeliverable(parked, ActorNotFound(f"actor {self.name}/{record.id:#x} stopped ({reason})"))
        identity = self._worker_of(record)
        if identity is not None:
            self._send_control(identity, ["stop_actor", record.id, reason])
        asker = self._pending_spawns.pop(record.id, None)
        if asker is not None:
            self._reply(asker[1], asker[2], SpawnError(f"actor stopped before it started: {reason}"),
                        ok=False, dst_node=asker[0])

    def tell(self, dst_id: int, value: Any) -> None:
        """Send a message from the node itself (Down, published messages)."""
        self._tell_bytes(dst_id, codec.encode(value))

    def _tell_bytes(self, dst_id: int, payload: bytes) -> None:
        frames = [b"", pack_route(self.name, dst_id), pack_env(TELL, self.name, CONTROL_ID), payload]
        self._forward(b"", Route(self.name, dst_id, 0, CONTROL_ID, 0), frames)

    def exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None:
        record = self.registry.actors.get(actor_id)
        identity = None if record is None else self._worker_of(record)
        if identity is not None:
            self._send_control(identity, ["exit_signal", actor_id, [source.node, source.id, source.name], reason])

    def repair_links(self) -> None:
        """Every LINK_REPAIR_EVERY while clustered: re-open links a peer refused (see PeerLinks.repair)."""
        if self.links is None:
            self._repair_armed = False
            return
        from gorilix.cluster.links import HOLD_FOR  # (loaded already: clustering is on)

        self.links.repair()
        for name, held in self.links.expire_held(time.monotonic()):
            log.debug("node %s: still unknown after %g s; %d message(s) for it dropped",
                      name, HOLD_FOR, len(held))
            _, asks = self.table.endpoint_lost(b"n:" + name.encode())
            error = ClusterError(f"node not found: {name} (it sent us messages, but gossip never said "
                                 f"where it is within {HOLD_FOR:g} s)")
            for src_id, corr, origin in asks:
                self._reply(src_id, corr, error, ok=False, dst_node=origin)
            for frames in held:
                self._undeliverable([b"", *frames], error, fail_asks=False)
        # Briefly faster while a new link waits for its handshake: what it keeps should not wait long.
        self.schedule(LINK_WAIT_CHECK if self.links.waiting() else LINK_REPAIR_EVERY, self.repair_links)

    def _disable_cluster(self) -> bool:
        if self.links is None:
            return False
        for name in list(self.links.peers):
            self.node_down(name, "gone: this node left the cluster")
        self._poller.unregister(self.links.external)
        self.links.close()
        self.links = None
        if self._events is not None:
            self._poller.unregister(self._events)
            self._events.close(linger=0)
            self._events = None
        return True

    def _drain_events(self) -> None:
        """Membership changes from the gossip thread; one that cannot be used is counted and dropped."""
        for _ in range(RECV_BURST):
            if self._events is None:
                return
            try:
                data = self._events.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._membership_event(data)
            except Exception as exc:
                self._dropped("a membership event", exc)

    def _membership_event(self, data: bytes) -> None:
        try:
            event = codec.decode(data)
        except DecodeError:
            self.malformed += 1
            return
        if (type(event) is not list or len(event) != 7 or not all(type(f) is str for f in event[:3])
                or type(event[3]) is not dict or type(event[4]) is not str or type(event[5]) is not int
                or type(event[6]) is not float):
            self.malformed += 1
            return
        kind, name, status, meta, address, port, at = event
        if self.cluster_subscribers:
            self._tell_subscribers(ClusterEvent(kind, name, address, port, status, dict(meta), at))
        if name == self.name or self.links is None:
            return
        if status == "alive" and kind in ("join", "alive", "update"):
            # The gossip engine drops members with unusable metadata; this is the second line.
            problem = node_meta_problem(meta)
            if problem is not None:
                self._bad_meta += 1
                level = logging.WARNING if self._log_now("bad meta", name) else logging.DEBUG
                log.log(level, "node %s: not linking to member %s: %s", self.name, name, problem)
                return
            router = meta.get("router")
            if router is not None:
                self.links.connect(name, router)
                self._gone_nodes.pop(name, None)
        elif kind in ("dead", "leave"):
            self.node_down(name, "dead" if kind == "dead" else "left the cluster")

    def _tell_subscribers(self, event: ClusterEvent) -> None:
        """A membership change to every subscriber still here (actors, and the program's event clients)."""
        for subscriber in list(self.cluster_subscribers):
            if subscriber in self.registry.actors or self.table.lookup(subscriber) is not None:
                self.tell(subscriber, event)
            else:  # stopped, or a client that went away
                self.cluster_subscribers.discard(subscriber)

    def node_down(self, name: str, reason: str) -> None:
        """A peer is gone: fail what waits on it, tell who watches it."""
        if self.links is None:
            return
        linked = name in self.links.peers
        held = self.links.forget(name)
        if not linked and not held:
            return
        self._gone_nodes.pop(name, None)
        self._gone_nodes[name] = reason
        if len(self._gone_nodes) > MAX_GONE_NODES:  # many restarts under new names: forget the oldest
            del self._gone_nodes[next(iter(self._gone_nodes))]
        level = logging.INFO if "left" in reason else logging.WARNING
        log.log(level, "node %s: %s", name, reason)
        _, asks = self.table.endpoint_lost(b"n:" + name.encode())
        error = NodeDown(f"node {name} is down ({reason}) while the ask was in flight")
        for src_id, corr, origin in asks:
            self._reply(src_id, corr, error, ok=False, dst_node=origin)
        for frames in held:  # its asks were among those just failed
            self._undeliverable([b"", *frames], error, fail_asks=False)
        self.lifecycle.node_down(name, reason)

    # -- worker death -------------------------------------------------------

    def _worker_exited(self, slot: int) -> None:
        worker = self.pool.workers[slot]
        pid = worker.pid
        was_ready = worker.ready
        code = self.pool.reap(slot)
        self._identity_slot.pop(worker.identity, None)
        if self._stop_requested.is_set():
            return
        how = describe_exit(code)
        actors, asks = self.table.endpoint_lost(worker.identity)
        self.table.unbind(worker.config.id_prefix << ID_SHIFT)
        died = WorkerDied(f"worker {slot} (pid {pid}) of node {self.name} died ({how}) while the ask was in flight")
        for src_id, corr, origin in asks:
            self._reply(src_id, corr, died, ok=False, dst_node=origin)
        records = self.registry.on_slot(slot)
        log.warning("worker %d (pid %s) died (%s); its %d actors go to their supervisors", slot, pid, how, len(records))
        for record in records:
            self.registry.move(record.id, None)
            self.table.hold(record.id)
        reason = f"worker {slot} died ({how})"
        self.lifecycle.exited([(record, reason, True) for record in records], final=False)
        for module, job in list(self._reloads.items()):
            job["waiting"].discard(slot)
            finish_reload(self, module)
        for asker_id, asker_corr, killed_pid, asker_node in self._pending_kills.pop(slot, []):
            self._reply(asker_id, asker_corr, killed_pid, dst_node=asker_node)
        for job in self._recoveries:
            if job["slot"] == slot:
                job["died"] = True
        if self._recoveries:
            check_recoveries(self)
        if not was_ready:
            self._early_deaths[slot] += 1
            if self._early_deaths[slot] >= MAX_EARLY_DEATHS:
                raise NotRunning(
                    f"worker {slot} died {MAX_EARLY_DEATHS} times before it was ready ({how}); "
                    "see the worker's output above"
                )
        self._start_worker(slot)

