"""The node loop: the driver of the node's core, in a thread of the node process.

It owns what the core (:mod:`gorilix.node_core`) must not: the ROUTER socket,
the workers' processes and their sentinels, the peer links, the gossip
service and the real clock. It feeds the core events (a worker started or
exited, a control request, a membership change, a due timer) and carries out
the effects it returns.

It is a plain poll loop, not an asyncio loop: forwarding is the hot path of
every cross-worker message, and a bare ``zmq.Poller`` loop costs a fraction
of an asyncio turn per message. A plain forward reads only the route frame,
looks its destination up in the core's table and sends the frames on, with
no event object; the core is called only for what cannot be delivered. It
runs in a process of its own (:mod:`gorilix.node_main`) that runs no user
code, so user code cannot block it, not even through the GIL.

No input ends the loop: a message, a membership event or a timer that raises
is dropped, counted (``malformed``) and logged with its traceback (it is a
bug of ours, or a check we lack). What does end it (a stop request, workers
that keep dying before they are ready) ends it visibly: :attr:`Node.ended`
becomes readable at once, so every call waiting on this node raises
NotRunning, the cluster is told we left, and only then do the workers stop,
each step bounded in time.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from gorilix.control import HANDLERS, REPORTS
from gorilix.ledger import DEFAULT_MAX_QUEUED
from gorilix.node_core import NodeCore
from gorilix.node_events import (
    ControlRequest,
    Effect,
    FailNode,
    Forward,
    Frames,
    LinkPeer,
    MemberChanged,
    Ready,
    Reply,
    Request,
    StartWorker,
    StopNode,
    Tell,
    ToNode,
    ToWorker,
    WorkerExited,
    WorkerStarted,
)
from gorilix.transport import codec
from gorilix.transport.describe import describe_exit
from gorilix.transport.errors import (
    ActorNotFound,
    ClusterError,
    DecodeError,
    GorilixError,
    MailboxFull,
    NotRunning,
    error_to_wire,
)
from gorilix.transport.frames import (
    ASK,
    CONTROL_ID,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    REPLY,
    TELL,
    Route,
    message_frames,
    unpack_route,
)
from gorilix.transport.sockets import (
    configure_internal,
    has_input,
    ipc_endpoint,
    ipc_path,
    recv_frames,
    remove_stale_ipc_files,
    send_frames,
)
from gorilix.workers.boot import EXIT_NO_MAIN_GUARD, NO_MAIN_GUARD
from gorilix.workers.health import Health
from gorilix.workers.notice import EndNotice
from gorilix.workers.pool import WorkerPool, WorkerProcess
from gorilix.workers.protocol import Shutdown
from gorilix.workers.tally import TallyReader

if TYPE_CHECKING:  # the cluster's modules load once clustering is on (see enable_cluster): a faster start
    from gorilix.cluster.links import PeerLinks
    from gorilix.cluster.service import ClusterService

log = logging.getLogger("gorilix.node")

#: Multiparts taken from the router before looking at sentinels again.
RECV_BURST = 1000
#: Multiparts the router holds from one client or worker before it stops reading from it (the
#: sender's own socket holds the rest). Its sends stay unbounded: gorilix.ledger bounds them by bytes.
INBOUND_HWM = 1000
#: How often links to peers are checked for a refused handshake (LINK_WAIT_CHECK while one is pending).
LINK_REPAIR_EVERY = 0.2
LINK_WAIT_CHECK = 0.01
#: How long stopping workers may take before the laggards are terminated, then killed.
WORKER_STOP_GRACE = 3.0
#: How long after a worker could not be started (an OSError) the node tries again.
WORKER_START_RETRY = 1.0
#: The longest poll between two looks at the stop flag.
POLL_MS = 100


class Status(enum.Enum):
    INIT = "init"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Node:
    """The node's driver; implements :class:`gorilix.node_events.NodeHost` for its core."""

    def __init__(
        self, name: str, workers: int, *, log_level: int = logging.WARNING,
        max_parked: int = 10_000, start_method: str = "spawn", program: dict[str, Any] | None = None,
        pool: WorkerPool | None = None, max_worker_memory: int | None = None, hang_timeout: float | None = None,
        max_queued: int | None = DEFAULT_MAX_QUEUED,
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
        # What a sender faster than the node has sent waits in the sender's own process, not here:
        # past this many multiparts from one client or worker, the node reads no more from it for now.
        self.router.setsockopt(zmq.RCVHWM, INBOUND_HWM)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.bind(self.endpoint)
        self.pool = pool or WorkerPool(name, self.endpoint, workers, log_level=log_level,
                                       start_method=start_method, program=program)
        self.core = NodeCore(name, workers, host=self, handlers=HANDLERS, reports=REPORTS, clock=time.monotonic,
                             max_parked=max_parked, max_worker_memory=max_worker_memory,
                             hang_timeout=hang_timeout, max_queued=max_queued)
        self.table = self.core.table  # the hot path reads it directly
        self.accounts = self.core.ledger.accounts  # (it too)
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
        self.links: PeerLinks | None = None
        self.cluster: ClusterService | None = None  # the gossip service, once clustering is on
        self._events: zmq.Socket[bytes] | None = None
        self._repair_armed = False
        self.forwarded_count = 0

    # -- life ---------------------------------------------------------------

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
        self.core.stopping = True
        if self._failure is not None:
            self.ended.set(f"failed: {self._failure}")
        else:
            self.status = Status.STOPPING
            self.ended.set("was stopped")
        steps: list[tuple[str, Callable[[], Any]]] = [
            *((f"exit hook {hook!r}", hook) for hook in list(self._exit_hooks)),
            ("stopping the workers", self._shutdown_workers),
            ("closing the cluster links", self._close_links),
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

    def _loop(self) -> None:
        poll = self._poller.poll
        router = self.router
        core = self.core
        while not self._stop_requested.is_set():
            deadline = core.next_deadline()
            if deadline <= time.monotonic():
                self._run_effects(core.tick())
                deadline = core.next_deadline()
            timeout = POLL_MS if deadline == math.inf else max(
                0, min(POLL_MS, int((deadline - time.monotonic()) * 1000) + 1))
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

    def _run_effects(self, effects: list[Effect]) -> None:
        """Carry out what the core decided, and what that leads it to decide, each effect on its own."""
        while effects:
            for effect in effects:
                if type(effect) is FailNode:
                    raise effect.error
                try:
                    self._apply(effect)
                except Exception as exc:  # a bug of ours: it must cost neither the other effects nor the loop
                    self.core.dropped(f"a {type(effect).__name__} effect", exc)
            effects = self.core.take_effects()

    def _apply(self, effect: Effect) -> None:
        match effect:
            case Reply(node, dst_id, corr, value, ok):
                self._reply(dst_id, corr, value, ok, node)
            case Tell(dst_id, payload):
                self._tell_bytes(dst_id, payload)
            case ToWorker(_, identity, op):
                self._send_control(identity, op.to_wire())
            case Forward(frames):
                self._forward(frames[0], unpack_route(frames[1]), frames)
            case ToNode(node, op):
                self.send_node_control(node, op)
            case StartWorker(slot):
                try:
                    self._start_worker(slot)
                except OSError as exc:  # out of processes or descriptors, say: try again, not never
                    log.error("node %s: cannot start worker %d (%s); trying again in %g s", self.name, slot, exc,
                              WORKER_START_RETRY)
                    self.core.schedule(WORKER_START_RETRY, self._run_effects, [StartWorker(slot)])
            case LinkPeer(name, router):
                if self.links is not None:
                    self.links.connect(name, router)
            case Ready():
                if self.status == Status.STARTING:
                    self.status = Status.RUNNING
                    self._started.set()
            case StopNode():
                self._stop_requested.set()
            case _:
                raise TypeError(f"not an effect the node carries out: {effect!r}")

    def _start_worker(self, slot: int) -> None:
        self._watch_worker(self.pool.start(slot))

    def _watch_worker(self, worker: WorkerProcess) -> None:
        self._sentinels[worker.process.sentinel] = worker.slot
        self._poller.register(worker.process.sentinel, zmq.POLLIN)
        self._run_effects(self.core.handle(WorkerStarted(worker.slot, worker.identity, worker.pid,
                                                         worker.config.id_prefix)))

    def _worker_exited(self, slot: int) -> None:
        code = self.pool.reap(slot)
        if code == EXIT_NO_MAIN_GUARD:  # no worker of this program can start: say why, once
            raise NotRunning(NO_MAIN_GUARD)
        self.core.stopping = self._stop_requested.is_set()
        self._run_effects(self.core.handle(WorkerExited(slot, describe_exit(code))))

    def _shutdown_workers(self) -> None:
        """Ask every worker to stop, wait (bounded), then terminate and kill the laggards (logged by the pool)."""
        self.status = Status.STOPPING if self.status != Status.FAILED else self.status
        for slot, worker in self.pool.workers.items():
            worker.ready = self.core.slots[slot].ready  # one that never attached cannot hear "shutdown"
            if worker.alive:
                self._send_control(worker.identity, Shutdown().to_wire())
        self.pool.stop_all(timeout=self._stop_grace)

    # -- routing ------------------------------------------------------------

    def _drain_router(self, sock: zmq.Socket[bytes] | None = None) -> None:
        try:
            self._drain_burst(sock)
        finally:
            if self.core.has_effects():  # what could not be delivered: the core decided what follows
                self._run_effects(self.core.take_effects())

    def _drain_burst(self, sock: zmq.Socket[bytes] | None) -> None:
        external = sock is not None
        sock = sock or self.router
        for _ in range(RECV_BURST):
            if not has_input(sock):  # cheaper than the zmq.Again an empty recv raises
                return
            frames = recv_frames(sock)
            if external and self.links is not None:
                self.links.identities.add(frames[0])
                if frames[0][:2] == b"n:":  # a peer node's link: it hears how much we read (Ledger.unreported)
                    unreported = self.core.ledger.unreported
                    unreported[frames[0]] = unreported.get(frames[0], 0) + sum(map(len, frames)) - len(frames[0])
            if len(frames) < 4:
                self.core.malformed += 1
                continue
            try:
                route = unpack_route(frames[1])
            except DecodeError:
                self.core.malformed += 1
                continue
            try:  # (free in Python 3.11 unless something raises)
                if route.dst_id == CONTROL_ID and route.dst_node in (self.name, ""):
                    self._control_frames(frames)
                else:
                    self._forward(frames[0], route, frames)
            except Exception as exc:
                self.core.dropped("a message from an external peer" if external else "a message", exc)

    def _send_to(self, identity: bytes, frames: Frames) -> None:
        """Send through whichever router socket ``identity`` is connected to."""
        links = self.links
        if links is not None and identity in links.identities:
            send_frames(links.external, frames)
        else:
            send_frames(self.router, frames)

    def _forward(self, source: bytes, route: Route, frames: Frames) -> None:
        """Send ``frames`` (identity slot included) towards ``route.dst_id``."""
        if route.dst_node != self.name and route.dst_node:  # "": whichever node this is
            self._forward_remote(source, route, frames)
            return
        dst = route.dst_id
        table = self.table
        endpoint = table.routes.get(dst)
        if endpoint is not None:
            flags = route.flags
            account = self.accounts.get(endpoint)
            if account is not None:  # a worker: refuse past max_queued, and count what it is sent (below)
                limit = self.core.max_queued
                if (limit is not None and account.sent - account.read > limit and not flags & FLAG_REPLY
                        and account.backlog() > limit):
                    self._refuse(f"worker {account.slot} of node {self.name}", account.sent - account.read, route,
                                 frames, limit)
                    return
            self.forwarded_count += 1
            frames[0] = endpoint
            try:
                self._send_to(endpoint, frames)
            except zmq.ZMQError:  # the peer vanished; its sentinel is on the way
                frames[0] = source
                if self.core.slot_of(endpoint) is not None:
                    table.hold(dst)
                    if table.park(dst, frames).parked:  # (counted when it is sent again, not now)
                        return
                self.core.undeliverable(frames, ActorNotFound(f"actor {self.name}/{dst:#x} is unreachable"),
                                        reason_kind="no_actor")
                return
            if account is not None:
                account.sent += sum(map(len, frames)) - len(endpoint)
                if not flags & (FLAG_ASK | FLAG_REPLY):  # tells (and stops): owed until the worker settles them
                    owed = account.owed
                    owed[dst] = owed.get(dst, 0) + (len(frames) - 2) // 2
            if flags & FLAG_ASK:
                origin = source[2:].decode(errors="replace") if source[:2] == b"n:" else None
                table.ask_forwarded(endpoint, route.src_id, route.corr, origin)
            elif flags & FLAG_REPLY:
                table.reply_forwarded(source, dst, route.corr)
            return
        if route.flags & FLAG_REPLY:  # (answered, yet not passed on now: it parks, or is a dead letter)
            table.reply_held(source, dst, route.corr)
        if dst in self.core.lifecycle.supervisors:
            self.core.to_supervisor(dst, frames)
            return
        if table.is_held(dst):
            if table.park(dst, frames).parked:
                return
            self.core.undeliverable(frames, GorilixError(
                f"actor {self.name}/{dst:#x} is being re-created and already has "
                f"{table.max_parked_per_actor} messages waiting"), reason_kind="parked_overflow")
            return
        self.core.undeliverable(frames, ActorNotFound(f"no actor {self.name}/{dst:#x} (it stopped or never existed)"),
                                reason_kind="no_actor")

    def _refuse(self, who: str, backlog: int, route: Route, frames: Frames, limit: int, by: str = "") -> None:
        """Too much waits for ``who`` (a worker, or a peer node): an ask fails with MailboxFull, a batch of
        tells is one dead letter.

        Cheap on purpose: a stuck receiver's senders go on at full speed, and
        the node must refuse as fast as they send or queue their messages in
        its own socket instead.
        """
        count = (len(frames) - 2) // 2
        self.core.queue_refusals += count
        error = MailboxFull(
            f"{who} has {backlog:,} bytes sent to it{by} and not yet read, past max_queued={limit:,} "
            "(it is stuck or swamped); try again later, or raise max_queued")
        if route.flags & FLAG_ASK:
            self.core.undeliverable(frames, error, reason_kind="queue_full")
        else:  # (tells, or a stop, from one sender: no need to read each envelope)
            source = frames[0]
            origin = source[2:].decode(errors="replace") if source[:2] == b"n:" else self.name
            self.core.dead_letter(route.dst_id, origin, route.src_id, error, dst_node=route.dst_node, count=count,
                                  reason_kind="queue_full")

    def _forward_remote(self, source: bytes, route: Route, frames: Frames) -> None:
        if self.links is None:
            self.core.undeliverable(frames, ClusterError("clustering not enabled"))
            return
        if not route.flags & FLAG_REPLY and self._gone_for_good(route.dst_node):
            self.core.remote_failed(route.dst_node, frames)  # (NodeDown, at once)
            return
        limit = self.core.max_queued
        if limit is not None and not route.flags & FLAG_REPLY:
            peer = self.core.ledger.peers.get(route.dst_node)
            if peer is not None and peer.backlog() > limit:
                self._refuse(f"node {route.dst_node}", peer.backlog(), route, frames, limit,
                             by=f" by node {self.name}")
                return
        if not self._send_remote(route.dst_node, frames[1:]):
            if route.flags & FLAG_REPLY:
                self.table.reply_held(source, route.dst_id, route.corr)
            self.core.remote_failed(route.dst_node, frames)
            return
        self.forwarded_count += 1
        if route.flags & FLAG_ASK:  # (timed only on the node whose worker answers it)
            self.table.ask_forwarded(b"n:" + route.dst_node.encode(), route.src_id, route.corr, timed=False)
        elif route.flags & FLAG_REPLY:  # an answer to a peer's asker: its ask was in flight at ``source``
            self.table.reply_forwarded(source, route.dst_id, route.corr)

    def _gone_for_good(self, node: str) -> bool:
        """``node`` left or was declared dead, and gossip has not seen it alive since.

        A message for it fails at once with NodeDown. A late message from it
        (a reply in flight when it left) must not make it look back, which
        would hold what is sent to it for the whole hold and then fail it with
        the wrong error. A reply is not judged this way: a node that asked
        us is there, perhaps restarted under its old name before gossip said so.
        """
        links = self.links
        return (links is not None and node in self.core.gone_nodes and node not in links.peers
                and links.directory is not None and links.directory(node) is None)

    def _send_remote(self, node: str, frames: Frames) -> bool:
        """Frames (no identity slot) to another node: linked now, on demand, or held (PeerLinks.route)."""
        links = self.links
        if links is None:
            return False
        if node in links.peers:  # the common case, first
            if not links.send(node, frames):
                return False
            self.core.ledger.peer(node).sent_on(links.peers.get(node), sum(map(len, frames)))
            return True
        gone = self.core.gone_nodes
        if node in gone and b"n:" + node.encode() not in links.identities:
            return False  # declared gone, and not heard from since: fail fast with NodeDown
        if not links.route(node, frames):
            return False
        if node in links.peers:
            gone.pop(node, None)
        return True

    def _reply(self, dst_id: int, corr: int, value: Any, ok: bool, node: str) -> None:
        """Answer an ask (of this node's control, or one that could not be delivered)."""
        if ok:
            kind, payload = REPLY, codec.encode(value)
        else:
            kind, payload = FAIL, codec.encode(error_to_wire(value))
        frames = [b"", *message_frames(node, dst_id, kind, self.name, CONTROL_ID, payload, corr)]
        if node != self.name:
            if not self._send_remote(node, frames[1:]):
                self.core.undeliverable(frames, ClusterError(f"node not found: {node}"), reason_kind="node_down")
            return
        endpoint = self.table.routes.get(dst_id)
        if endpoint is None:
            return
        frames[0] = endpoint
        account = self.accounts.get(endpoint)
        if account is not None:  # (a reply is never refused: there is one per ask the worker made)
            account.sent += sum(map(len, frames)) - len(endpoint)
        try:
            self._send_to(endpoint, frames)
        except zmq.ZMQError:
            pass

    def _tell_bytes(self, dst_id: int, payload: bytes) -> None:
        frames = [b"", *message_frames(self.name, dst_id, TELL, self.name, CONTROL_ID, payload)]
        self._forward(b"", Route(self.name, dst_id, 0, CONTROL_ID, 0), frames)

    def _send_control(self, identity: bytes, op: list[Any]) -> None:
        frames = message_frames(self.name, CONTROL_ID, TELL, self.name, CONTROL_ID, codec.encode(op))
        account = self.accounts.get(identity)
        if account is not None:  # (never refused: the node's own ops)
            account.sent += sum(map(len, frames))
        try:
            self.router.send_multipart([identity, *frames])
        except zmq.ZMQError:
            log.debug("control %s to %r: peer gone", op[0], identity)

    def send_node_control(self, node: str, op: list[Any]) -> bool:
        """Tell another node's control endpoint something (one-way)."""
        return self._send_remote(node, message_frames(node, CONTROL_ID, TELL, self.name, CONTROL_ID,
                                                      codec.encode(op)))

    def _control_frames(self, frames: Frames) -> None:
        source = frames[0]
        for env, op in self.core.messages(frames):
            if env.kind != TELL and env.kind != ASK:  # (a reply, part or stop addressed to the node: no request)
                self.core.malformed += 1
                continue
            request = Request(source, env.src_node, env.src_id, env.corr, env.kind == ASK)
            self._run_effects(self.core.handle(ControlRequest(request, op)))

    # -- the cluster (NodeHost) ------------------------------------------------------

    @property
    def clustered(self) -> bool:
        return self.links is not None

    def linked(self, node: str) -> bool:
        return self.links is not None and node in self.links.peers

    def from_peer_link(self, source: bytes) -> bool:
        return self.links is not None and source in self.links.identities

    def forget_peer(self, node: str) -> tuple[bool, list[Frames]]:
        self.core.ledger.peers.pop(node, None)  # (a link opened to it again starts afresh)
        self.core.ledger.unreported.pop(b"n:" + node.encode(), None)
        if self.links is None:
            return False, []
        linked = node in self.links.peers
        return linked, self.links.forget(node)

    def peers(self) -> list[str]:
        return [] if self.links is None else list(self.links.peers)

    def kill_worker(self, slot: int, sig: int) -> int:
        return self.pool.kill(slot, sig)

    def worker_usage(self, slot: int) -> tuple[float, int]:
        return self.pool.stats(slot)

    def worker_health(self, slot: int) -> Health | None:
        return self.pool.health(slot)

    def forwarded(self) -> int:
        return self.forwarded_count

    def worker_tally(self, slot: int) -> TallyReader | None:
        return self.pool.tally(slot)

    def cluster_service(self) -> ClusterService | None:
        return self.cluster

    def members(self) -> list[dict[str, Any]] | None:
        return None if self.cluster is None else list(self.cluster.member_rows())

    def gossip_stats(self) -> dict[str, Any] | None:
        if self.cluster is None:
            return None
        refusals = {"gossip": self.cluster.refusals()}
        if self.links is not None:
            refusals["handshake"] = self.links.handshake_refusals.snapshot()
        return {**self.cluster.stats(), "links_refused": 0 if self.links is None else self.links.refused,
                "refusals": refusals}  # per source address: a bad seal, a refused CURVE handshake

    def gossip_bad_meta(self) -> int:
        return 0 if self.cluster is None else self.cluster.bad_meta

    def links_status(self) -> list[dict[str, Any]]:
        """This node's links to its peers: a link that is not ready (a refused handshake) keeps what is sent to it."""
        if self.links is None:
            return []
        return [{"node": name, "endpoint": link.endpoint, "ready": link.ready, "pending": len(link.pending),
                 "refusals": link.refusals} for name, link in sorted(self.links.peers.items())]

    def enable_cluster(self, config_fields: Any) -> dict[str, Any]:
        """Bind the router's TCP port, start the gossip; answers this node's member row."""
        # Loaded here, not at the top: a node that never clusters starts without them (cryptography and all).
        from gorilix.cluster.config import ClusterConfig
        from gorilix.cluster.links import PeerLinks
        from gorilix.cluster.security import ClusterKeys
        from gorilix.cluster.service import ClusterService, member_row

        config = ClusterConfig.from_wire(config_fields)
        if config.node_name != self.name:
            raise ClusterError(
                f"ClusterConfig.node_name {config.node_name!r} must match the ActorSystem's name "
                f"{self.name!r}: refs carry the system's name as their node"
            )
        keys = ClusterKeys(config.secret_key) if config.secret_key is not None else None
        self.links = PeerLinks(self.name, self.zctx, f"tcp://{config.bind_addr}:{config.bind_port}", keys)
        self._poller.register(self.links.external, zmq.POLLIN)
        self._events = self.zctx.socket(zmq.PULL)
        self._events.setsockopt(zmq.LINGER, 0)
        events_endpoint = f"inproc://gorilix-events-{id(self):x}"
        self._events.bind(events_endpoint)
        self._poller.register(self._events, zmq.POLLIN)
        try:
            service = ClusterService(config, self.zctx, events_endpoint, self.links.endpoint, self.pool.size, keys)
        except BaseException:
            self._close_links()
            raise
        self.cluster = service
        self.add_exit_hook(service.node_ended)
        self.links.follow_members(service.live_names)
        self.links.follow_directory(service.router_of)
        service.start()
        if not self._repair_armed:
            self._repair_armed = True
            self.core.schedule(0, self._repair_links)
        return member_row(service.driver.local_member())

    def disable_cluster(self) -> None:
        """After a leave: stop the gossip service, tell the core its peers are gone, close the links."""
        service = self.cluster
        if service is not None:
            service.wait_stopped(0)
            self.remove_exit_hook(service.node_ended)
            self.cluster = None
        self._close_links()

    def _close_links(self) -> None:
        if self.links is None:
            return
        for name in list(self.links.peers):
            self.core.node_down(name, "gone: this node left the cluster")
        self._run_effects(self.core.take_effects())
        self._poller.unregister(self.links.external)
        self.links.close()
        self.links = None
        if self._events is not None:
            self._poller.unregister(self._events)
            self._events.close(linger=0)
            self._events = None

    def _repair_links(self) -> None:
        """Every LINK_REPAIR_EVERY while clustered: re-open links a peer refused (see PeerLinks.repair)."""
        if self.links is None:
            self._repair_armed = False
            return
        from gorilix.cluster.links import HOLD_FOR  # (loaded already: clustering is on)

        self.links.repair()
        self.links.count_failed_handshakes()
        self._report_reads()
        for name, held in self.links.expire_held(time.monotonic()):
            log.debug("node %s: still unknown after %g s; %d message(s) for it dropped",
                      name, HOLD_FOR, len(held))
            self.core.peer_unknown(name, held, ClusterError(
                f"node not found: {name} (it sent us messages, but gossip never said where it is "
                f"within {HOLD_FOR:g} s)"))
        # Briefly faster while a new link waits for its handshake: what it keeps should not wait long.
        self.core.schedule(LINK_WAIT_CHECK if self.links.waiting() else LINK_REPAIR_EVERY, self._repair_links)

    def _report_reads(self) -> None:
        """Tell each peer node how many more of its bytes we read, so it knows what still waits (PeerAccount)."""
        unreported = self.core.ledger.unreported
        if not unreported:
            return
        for identity, more in list(unreported.items()):
            self.send_node_control(identity[2:].decode(errors="replace"), ["peer_read", more])
        unreported.clear()

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
                event = MemberChanged.from_wire(codec.decode(data))
            except DecodeError:
                event = None
            if event is None:
                self.core.malformed += 1
                continue
            try:
                self._run_effects(self.core.handle(event))
            except Exception as exc:
                self.core.dropped("a membership event", exc)
