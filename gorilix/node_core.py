"""The node's decisions as a state machine: typed events in, effects out, on an injected clock.

What happens when a worker dies (its asks fail, its actors park their
messages and go to their supervisors, the worker comes back), where an actor
is placed, what a monitor or a link hears, what a peer's death fails: all of
it is decided here, with no socket, process or real clock, so it is tested
on a virtual clock the way the SWIM engine is (tests/node_sim.py).

The driver (:mod:`gorilix.node`) feeds events to :meth:`NodeCore.handle`,
calls :meth:`tick` when :meth:`next_deadline` comes, routes plain messages
itself from :attr:`table`, and carries out what :meth:`take_effects` returns.
The few facts the core needs answered at once (is a peer linked, did a
signal reach a worker) it asks through :class:`NodeHost`.

Control handlers (:mod:`gorilix.control`) get this object and its public
methods: that is the whole interface they have to the node. Not thread-safe:
the driver calls it from its loop only.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gorilix.cluster.wire import node_meta_problem
from gorilix.ledger import DEFAULT_MAX_QUEUED, Account, Ledger
from gorilix.lifecycle import Lifecycle
from gorilix.node_events import (
    ControlRequest,
    Effect,
    FailNode,
    Forward,
    Frames,
    LinkPeer,
    MemberChanged,
    NodeEvent,
    NodeHost,
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
from gorilix.registry import ActorRecord, Registry
from gorilix.transport import codec
from gorilix.transport.describe import shown
from gorilix.transport.errors import (
    ActorNotFound,
    ClusterError,
    DecodeError,
    GorilixError,
    InvalidArgument,
    NodeDown,
    NotRunning,
    SpawnError,
    WorkerDied,
)
from gorilix.transport.frames import (
    ASK,
    ASKS,
    BATCH,
    FAIL,
    REPLY,
    STOP,
    TELL,
    TELL_ACK,
    Envelope,
    split_messages,
    unpack_env,
    unpack_route,
)
from gorilix.transport.routing import ID_SHIFT, ForwardingTable
from gorilix.workers.health import BEAT
from gorilix.workers.messages import ClusterEvent
from gorilix.workers.protocol import (
    WORKER_REPORTS,
    ExitSignal,
    Handoff,
    Restart,
    Spawn,
    StopActor,
    Suspend,
    WorkerOp,
    report_from_wire,
)
from gorilix.workers.ref import ActorRef

#: Seconds between two looks at the workers' memory, when it is limited.
MEMORY_CHECK_EVERY = 1.0
#: Actors re-created after a worker death are placed this many at a time ...
PLACE_BATCH = 250
#: ... with this many seconds between batches, for the node's other traffic ...
PLACE_PAUSE = 0.001
#: ... and at most this many being created on one worker at a time: the next wait for its answers, so
#: that a worker busy re-creating actors still answers other messages within milliseconds.
PLACE_WINDOW = 32
#: A worker is shown as stuck once one message has run (or its watchdog has been silent) this long.
STUCK_AFTER = 1.0
#: Seconds between two looks for workers stuck past hang_timeout (at most; half the timeout if shorter).
HANG_CHECK_EVERY = 0.5

log = logging.getLogger("gorilix.node")

#: A worker that dies this many times in a row before it is ready stops the node.
MAX_EARLY_DEATHS = 3
#: Peers remembered as down (for NodeDown instead of "node not found").
MAX_GONE_NODES = 1024
#: The same failure (where, exception type) is logged with its traceback at most this often.
ERROR_LOG_EVERY = 60.0
#: Dead letters kept for ``dead_letters()`` and ``gorilix status``.
RECENT_DEAD_LETTERS = 100
#: Seconds between two looks at what the workers settled (gorilix.ledger).
SETTLE_EVERY = 0.05

#: Why messages became dead letters, as ``stats`` counts them (``dead_letters_by_reason``): lost in a
#: worker's death; refused past max_queued or by a full mailbox; no such actor (stopped, never existed);
#: more than max_parked waiting for an actor being re-created; their node down or unknown; anything else.
DeadLetterReason = Literal["lost_in_death", "queue_full", "no_actor", "parked_overflow", "node_down", "other"]
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)

#: A control handler: (core, request, *args) -> the answer, or DEFER; for a worker's report,
#: (core, request, report) with the report parsed (gorilix.workers.protocol).
Handler = Callable[..., Any]


class _Defer:
    """A control handler's marker: the answer comes later."""


#: Returned by a handler that answers the ask later itself.
DEFER = _Defer()


@dataclass(slots=True)
class WorkerSlot:
    """One worker slot as the core sees it: which process holds it now, and whether it attached."""

    slot: int
    identity: bytes = b""
    pid: int | None = None
    id_prefix: int = 0
    ready: bool = False  # attached: it takes actors
    alive: bool = False  # its process runs
    restarts: int = 0
    early_deaths: int = 0  # deaths in a row before it was ready
    killed: bool = False  # this incarnation was sent a signal on request (kill_worker): its death is no early one
    #: This incarnation was sent SIGKILL (by the node itself, stuck or past its memory limit, or by kill_worker):
    #: it takes no new actor, the hang and memory checks leave it, what comes for its actors parks, and what it
    #: still reports of new actors (read after the kill) routes nothing to it (see give_up).
    given_up: bool = False


@dataclass(slots=True)
class Job:
    """A request answered later (a spawn, a kill, a reload, a recovery), with what it waits for."""

    request: Request
    data: dict[str, Any] = field(default_factory=dict)


class NodeCore:
    """The node's state and decisions; see the module docstring."""

    def __init__(
        self, name: str, workers: int, *, host: NodeHost, handlers: dict[str, Handler],
        reports: dict[type[Any], Handler],
        clock: Callable[[], float], rng: random.Random | None = None, max_parked: int = 10_000,
        max_worker_memory: int | None = None, hang_timeout: float | None = None,
        max_queued: int | None = DEFAULT_MAX_QUEUED,
    ) -> None:
        """``max_worker_memory``: a worker past this many bytes of RSS is restarted (None: no limit).

        ``max_queued``: past this many bytes sent to a worker and not yet read
        by it, the node refuses new tells (dead letters) and asks (MailboxFull)
        for that worker (None: no limit).

        ``hang_timeout``: a worker stuck in one message (or silent) longer than
        this many seconds is restarted (None: never; it is shown as stuck).
        """
        self.name = name
        self.host = host
        self.size = workers
        self._handlers = handlers
        self._reports = reports
        self._clock = clock
        self.table = ForwardingTable(max_parked_per_actor=max_parked, clock=clock)  # (the clock times sampled asks)
        self.registry = Registry()
        self.slots = {slot: WorkerSlot(slot) for slot in range(workers)}
        # A restarted node keeps its name, so its ids start somewhere new: an old
        # ref must not reach a new actor that happens to get the same number.
        self.rng = rng or random.Random()
        self._ids = itertools.count(self.rng.randrange(1, 1 << 39))
        self._identity_slot: dict[bytes, int] = {}
        self.running = False  # every worker attached once
        self.stopping = False
        self._effects: list[Effect] = []
        self._timers: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._timer_seq = itertools.count()
        self._errors_logged: dict[tuple[str, ...], float] = {}
        #: Spawns answered once the actor runs: actor id -> the request.
        self.pending_spawns: dict[int, Request] = {}
        #: Movable actors being moved to balance the workers: actor id -> the worker it goes to.
        self.moving: dict[int, int] = {}
        self.moved = 0  # moves done
        self.max_worker_memory = max_worker_memory
        self.memory_restarts = 0  # workers restarted for going past max_worker_memory
        if max_worker_memory is not None:
            self.schedule(MEMORY_CHECK_EVERY, self._check_memory)
        self.hang_timeout = hang_timeout
        self.hang_restarts = 0  # workers restarted for being stuck past hang_timeout
        if hang_timeout is not None:
            self.schedule(min(HANG_CHECK_EVERY, hang_timeout / 2), self._check_hangs)
        #: Kills answered once the death is handled: slot -> [(request, pid)].
        self.pending_kills: dict[int, list[tuple[Request, int]]] = {}
        self.reloads: dict[str, Job] = {}  # module -> its job
        self.recoveries: list[Job] = []  # kill-and-wait requests
        self._homeless: list[int] = []  # actors waiting for any live worker
        #: Actors whose worker died and that do not run again yet (gone for good: no longer counted).
        self.recovering: set[int] = set()
        self._to_place: collections.deque[int] = collections.deque()  # re-created actors placed in batches
        self._placing = False  # a batch is scheduled
        self._creating: dict[int, int] = {}  # actor id -> slot: placed by a batch, not running yet
        self._creating_on: collections.Counter[int] = collections.Counter()  # slot -> how many of those
        self.worker_load: dict[int, dict[str, Any]] = {}  # slot -> last load report
        self.malformed = 0
        self.refused = 0  # control requests refused: they named an id, slot or node the sender does not own
        self.bad_meta = 0  # membership events whose metadata the node could not use (the engine should have)
        self.dead_letter_count = 0
        #: dead_letter_count by why (DeadLetterReason); the counts add up to it.
        self.dead_letters_by_reason: dict[DeadLetterReason, int] = dict.fromkeys(DEAD_LETTER_REASONS, 0)
        self.lost_in_deaths = 0  # tells lost in workers' deaths (part of dead_letter_count)
        self.worker_deaths = 0  # worker processes that died or were killed (a stop of the node is none)
        self.queue_refusals = 0  # tells and asks refused because too much waited for their worker
        #: What each worker was sent and has not taken (gorilix.ledger); the router feeds it on its hot path.
        self.ledger = Ledger()
        self.max_queued = max_queued
        self._settling = False  # the look at the tallies is scheduled (while any worker has one)
        self.recent_dead_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_DEAD_LETTERS)
        #: Actors and clients of this node told every membership change (a ClusterEvent).
        self.cluster_subscribers: set[int] = set()
        #: Peers declared dead or gone, and why: a message to them fails with NodeDown, not "not found".
        self.gone_nodes: dict[str, str] = {}
        self.lifecycle = Lifecycle(self)

    # -- the machine ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def handle(self, event: NodeEvent) -> list[Effect]:
        """Apply one event; returns the effects to carry out (and any still waiting)."""
        if type(event) is ControlRequest:
            self._control(event.request, event.op)
        elif type(event) is WorkerExited:
            self._worker_exited(event)
        elif type(event) is WorkerStarted:
            self._worker_started(event)
        elif type(event) is MemberChanged:
            self._member_changed(event)
        else:
            raise TypeError(f"not a node event: {event!r}")
        return self.take_effects()

    def take_effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def has_effects(self) -> bool:
        """Effects wait (after a call outside :meth:`handle`, such as :meth:`undeliverable`)."""
        return bool(self._effects)

    def allocate_id(self) -> int:
        """Ids in the node's own range (prefix 0)."""
        return next(self._ids)

    def schedule(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at ``now() + delay`` (finite, >= 0: a ValueError otherwise), from :meth:`tick`."""
        if type(delay) not in (int, float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"a timer needs a finite delay of 0 or more seconds, got {delay!r}")
        heapq.heappush(self._timers, (self.now() + delay, next(self._timer_seq), fn, args))

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do (inf: nothing scheduled)."""
        return self._timers[0][0] if self._timers else math.inf

    def tick(self) -> list[Effect]:
        """Run every timer due at ``now()``; a timer that raises is logged and dropped, never fatal."""
        timers = self._timers
        now = self.now()
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            try:
                fn(*args)
            except Exception as exc:
                self.log_error(f"timer {getattr(fn, '__qualname__', fn)!s}", exc)
        return self.take_effects()

    # -- what it says and sends -----------------------------------------------------

    def reply(self, request: Request, value: Any) -> None:
        """Answer ``request`` (its node may be "": a client of whichever node it reached, this one)."""
        self._effects.append(Reply(request.node or self.name, request.src_id, request.corr, value))

    def fail(self, request: Request, error: GorilixError) -> None:
        self._effects.append(Reply(request.node or self.name, request.src_id, request.corr, error, ok=False))

    def _fail_ask(self, node: str | None, dst_id: int, corr: int, error: GorilixError) -> None:
        self._effects.append(Reply(node or self.name, dst_id, corr, error, ok=False))

    def tell(self, dst_id: int, value: Any) -> None:
        """Send a message from the node itself (Down, published messages)."""
        self._effects.append(Tell(dst_id, codec.encode(value)))

    def tell_bytes(self, dst_id: int, payload: bytes) -> None:
        self._effects.append(Tell(dst_id, payload))

    def to_worker(self, slot: int, op: WorkerOp) -> None:
        self._effects.append(ToWorker(slot, self.slots[slot].identity, op))

    def send_node(self, node: str, op: list[Any]) -> None:
        """Tell another node's control endpoint something (one-way)."""
        self._effects.append(ToNode(node, op))

    def stop(self) -> None:
        self._effects.append(StopNode())

    # -- bad input and bugs ---------------------------------------------------------

    def refuse(self, op: str, why: str) -> GorilixError:
        """Count and log a refused request; returns the error to raise (an ask is answered with it)."""
        self.refused += 1
        log.warning("control %s refused: %s", op, why)
        return GorilixError(f"{op} refused: {why}")

    def invalid(self, message: str) -> InvalidArgument:
        """Count a request with a bad argument (bad input from a socket, in ``malformed``); returns the error."""
        self.malformed += 1
        return InvalidArgument(message)

    def log_error(self, what: str, exc: BaseException) -> None:
        """An exception while handling ``what``: a bug of ours, or a check we lack. Traceback, rate-limited."""
        if self.log_now(what, type(exc).__name__):
            log.error("node %s: %s failed (dropped; the node goes on): %s: %s", self.name, what,
                      type(exc).__name__, exc, exc_info=exc)
        else:
            log.debug("node %s: %s failed again: %s: %s", self.name, what, type(exc).__name__, exc)

    def log_now(self, *key: str) -> bool:
        """True at most once per ERROR_LOG_EVERY for the same ``key``: repeats go to debug, not the log."""
        now = self.now()
        if now < self._errors_logged.get(key, -math.inf) + ERROR_LOG_EVERY:
            return False
        if len(self._errors_logged) > 1024:  # keys name code paths and members: forget the oldest
            del self._errors_logged[next(iter(self._errors_logged))]
        self._errors_logged[key] = now
        return True

    def dropped(self, what: str, exc: BaseException) -> None:
        """One input raised while the node handled it: dropped, counted in ``malformed`` and logged."""
        self.malformed += 1
        self.log_error(what, exc)

    # -- control requests -----------------------------------------------------------

    def _control(self, request: Request, op: Any) -> None:
        try:
            name = op[0]
            handler = self._handlers[name] if name not in WORKER_REPORTS else None
        except (TypeError, IndexError, KeyError):
            self.malformed += 1
            if request.ask and isinstance(op, list) and op and isinstance(op[0], str):  # answered, not left to time out
                self.fail(request, GorilixError(
                    f"node {self.name} has no control request {shown(op[0])}: it runs another version of Gorilix "
                    "than the client; upgrade them together"))
            return
        if handler is None:  # a worker's report: parsed whole first, so a bad one is never half-applied
            try:
                report = report_from_wire(op)
            except DecodeError as exc:
                self.malformed += 1
                if request.ask:
                    self.fail(request, GorilixError(f"bad {name} request: {exc}"))
                return
            if self.slot_of(request.source) is None:  # (each handler checks what its worker may say)
                error = self.refuse(name, f"only this node's workers send it, and {request.source!r} is not one")
                if request.ask:
                    self.fail(request, error)
                return
            handler, args = self._reports[type(report)], [report]
        else:
            args = op[1:]
        try:
            result = handler(self, request, *args)
        except GorilixError as exc:
            if request.ask:
                self.fail(request, exc)
            else:
                log.warning("control %s from %r failed: %s", name, request.source, exc)
            return
        except (TypeError, ValueError, KeyError, IndexError, DecodeError) as exc:
            self.malformed += 1
            if request.ask:
                self.fail(request, GorilixError(f"bad {name} request: {exc}"))
            return
        except Exception as exc:  # a bug of ours, or a check the handler lacks: never the end of the node
            self.dropped(f"control {name}", exc)
            if request.ask:
                self.fail(request, GorilixError(
                    f"node {self.name} could not handle a {name} request ({type(exc).__name__}: {exc}); "
                    "it goes on running, and its log has the traceback"))
            return
        if request.ask and result is not DEFER:
            self.reply(request, result)

    def messages(self, frames: Frames) -> Iterator[tuple[Envelope, Any]]:
        """Each (envelope, decoded payload) of a multipart the node itself handles; bad ones are counted."""
        try:
            pairs = split_messages(frames[1:])
        except DecodeError:
            self.malformed += 1
            return
        for env_frame, payload in pairs:
            try:
                env = unpack_env(env_frame)
                if env.kind == BATCH:  # (a pool's chunk, sent to the node or a supervisor by mistake)
                    self.fail(Request(frames[0], env.src_node, env.src_id, env.corr, True),
                              InvalidArgument("only an actor takes a batch of items"))
                    continue
                yield env, codec.decode(payload)
            except DecodeError:
                self.malformed += 1

    # -- workers --------------------------------------------------------------------

    def slot_of(self, identity: bytes) -> int | None:
        """The slot of the live worker whose socket is ``identity``."""
        return self._identity_slot.get(identity)

    def live_slots(self) -> list[int]:
        """Workers that take new actors: up, and not sent SIGKILL (their actors come back elsewhere: give_up)."""
        return [s for s, w in self.slots.items() if w.ready and w.alive and not w.given_up]

    def _worker_started(self, event: WorkerStarted) -> None:
        worker = self.slots[event.slot]
        worker.identity, worker.pid, worker.id_prefix = event.identity, event.pid, event.id_prefix
        worker.alive, worker.ready, worker.killed, worker.given_up = True, False, False, False
        self._identity_slot[event.identity] = event.slot
        tally = self.host.worker_tally(event.slot)
        if tally is not None:
            self.ledger.open(event.identity, event.slot, tally)
            if not self._settling:
                self._settling = True
                self.schedule(SETTLE_EVERY, self._settle)

    def worker_attached(self, slot: int) -> None:
        """The worker of ``slot`` is ready: it takes actors, first those that waited for any worker."""
        worker = self.slots[slot]
        worker.ready = True
        worker.early_deaths = 0
        self.table.bind(worker.id_prefix << ID_SHIFT, worker.identity)
        homeless, self._homeless = self._homeless, []
        for actor_id in homeless:
            record = self.registry.actors.get(actor_id)
            if record is not None:
                self.place(record)
        self._place_some()  # (re-created actors that waited for any worker: the next batches follow)
        self._place_later(PLACE_PAUSE)
        if not self.running and len(self.live_slots()) == self.size:
            self.running = True
            self._effects.append(Ready())
        elif self.running:  # back after a death: it takes its share again
            self.rebalance()

    def _worker_exited(self, event: WorkerExited) -> None:
        slot, how = event.slot, event.how
        worker = self.slots[slot]
        was_ready = worker.ready
        worker.alive = worker.ready = False
        worker.restarts += 1
        self._identity_slot.pop(worker.identity, None)
        account = self.ledger.close(worker.identity)
        if self.stopping:
            return
        self.worker_deaths += 1
        if account is not None:
            self._count_lost(account, f"worker {slot} died ({how})")
        _, asks = self.table.endpoint_lost(worker.identity)
        own = self.table.unbind(worker.id_prefix << ID_SHIFT)  # (parked since it was given up: held with the rest)
        died = WorkerDied(f"worker {slot} (pid {worker.pid}) of node {self.name} died ({how}) "
                          "while the ask was in flight")
        for src_id, corr, origin in asks:
            self._fail_ask(origin, src_id, corr, died)
        for parked in own:  # what came for the worker itself is lost with it: failed, or counted
            self.undeliverable(parked, died, reason_kind="lost_in_death")
        # What must hold at once: its actors are on no worker, and what comes for them parks (their
        # routes were held above with the worker's; the others were held when placed or moved).
        lost = self.registry.evacuate(slot)
        log.warning("worker %d (pid %s) died (%s); its %d actors go to their supervisors",
                    slot, worker.pid, how, len(lost))
        self.recovering.update(lost)
        for actor_id in [a for a, s in self._creating.items() if s == slot]:
            del self._creating[actor_id]  # (they are among the lost: placed again in their turn)
        self._creating_on.pop(slot, None)
        for actor_id in [a for a in self.moving if a in self.recovering]:
            del self.moving[actor_id]  # (a move from here ends as a re-creation)
        for request, pid in self.pending_kills.pop(slot, []):
            self.reply(request, pid)  # the kill is done; the recovery is not (see kill_worker)
        # What takes a step per actor (monitors, links, supervisors' decisions, re-creation) comes in slices.
        self.lifecycle.worker_lost(lost, f"worker {slot} died ({how})")
        for module, job in list(self.reloads.items()):
            job.data["waiting"].discard(slot)
            self.finish_reload(module)
        for job in self.recoveries:
            if job.data["slot"] == slot:
                job.data["died"] = True
        self.check_recoveries()
        if not was_ready and not worker.killed:  # a kill asked for says nothing of the environment
            worker.early_deaths += 1
            if worker.early_deaths >= MAX_EARLY_DEATHS:
                self._effects.append(FailNode(NotRunning(
                    f"worker {slot} died {MAX_EARLY_DEATHS} times before it was ready ({how}); "
                    "see the worker's output above")))
                return
        self._effects.append(StartWorker(slot))

    # -- actors ---------------------------------------------------------------------

    def place(self, record: ActorRecord, slot: int | None = None) -> None:
        """Send ``record`` to a worker (the given one, or the least loaded); its messages park meanwhile."""
        self.table.hold(record.id)
        live = self.live_slots()
        if slot not in live:  # none asked for, or that worker is restarting
            slot = self.registry.least_loaded(live)
        if slot is None:
            self.registry.move(record.id, None)
            self._homeless.append(record.id)
            return
        self.registry.move(record.id, slot)
        self.to_worker(slot, Spawn(record.id, record.spec))

    def _check_memory(self) -> None:
        """Restart each worker past ``max_worker_memory`` (as dask's nanny does); its actors come back elsewhere."""
        limit = self.max_worker_memory
        assert limit is not None
        for slot, worker in self.slots.items():
            if not (worker.alive and worker.ready) or worker.given_up:
                continue
            _, rss = self.host.worker_usage(slot)
            if rss <= limit:
                continue
            log.warning("worker %d (pid %s) uses %.0f MiB, past max_worker_memory (%.0f MiB): restarting it; "
                        "its %d actors are re-created", slot, worker.pid, rss / 2**20, limit / 2**20,
                        self.registry.count(slot))
            if not self._restart_worker(slot):
                continue
            self.memory_restarts += 1
        self.schedule(MEMORY_CHECK_EVERY, self._check_memory)

    def stuck(self, slot: int) -> dict[str, Any] | None:
        """How long the live worker of ``slot`` has been stuck in one message, and in what; None if it is not.

        Stuck: one message has run for :data:`STUCK_AFTER` s or more, or the
        worker's watchdog stopped writing (a C call that holds its GIL), for
        that long. Read from its board (gorilix.workers.health).
        """
        worker = self.slots[slot]
        if not (worker.alive and worker.ready):
            return None
        health = self.host.worker_health(slot)
        if health is None or not health.beat:
            return None
        now = self.now()
        running = now - health.since if health.since else 0.0
        silent = now - health.beat - BEAT
        seconds = max(running, silent)
        if seconds < STUCK_AFTER:
            return None
        return {"seconds": round(seconds, 1), "actor": f"{self.name}/{health.actor_id:#x}" if health.actor_id else None,
                "class": health.class_path or None, "message": health.kind or None, "silent": silent >= STUCK_AFTER}

    def _check_hangs(self) -> None:
        """Restart each worker stuck in one message past ``hang_timeout``: its actors come back elsewhere."""
        limit = self.hang_timeout
        assert limit is not None
        for slot, worker in self.slots.items():
            stuck = None if worker.given_up else self.stuck(slot)
            if stuck is None or stuck["seconds"] < limit:
                continue
            where = (f"in actor {stuck['actor']} ({stuck['class']}) handling {stuck['message']}" if stuck["actor"]
                     else "holding its GIL in a call that gives it no turn (no word from its watchdog)")
            log.warning("worker %d (pid %s) stuck for %.1f s %s: restarting it (hang_timeout %g s); "
                        "its %d actors are re-created", slot, worker.pid, stuck["seconds"], where, limit,
                        self.registry.count(slot))
            if not self._restart_worker(slot):
                continue
            self.hang_restarts += 1
        self.schedule(min(HANG_CHECK_EVERY, limit / 2), self._check_hangs)

    def _restart_worker(self, slot: int) -> bool:
        """SIGKILL worker ``slot``, which the node gave up on; False if it was gone already (its death is on the way).

        Its actors' messages park from now on, as after its death: a message
        sent on to a process being killed would be lost (an ask would fail
        with WorkerDied), where a parked one reaches the actor re-created.
        """
        try:
            self.host.kill_worker(slot, signal.SIGKILL)
        except (LookupError, OSError):
            return False
        self.slots[slot].killed = True
        self.give_up(slot)
        return True

    def give_up(self, slot: int) -> None:
        """Worker ``slot`` was sent SIGKILL: what comes for its actors parks until they are re-created elsewhere."""
        worker = self.slots[slot]
        worker.given_up = True
        self.table.hold_endpoint(worker.identity)

    def rebalance(self) -> None:
        """Move movable actors from the busiest live workers to the idlest, until no two differ by more than one.

        A worker that comes back after a death is empty: new spawns go to it
        (the least loaded), and this gives it its share of the movable actors
        (a pool's members) that were re-created elsewhere. A move loses no
        message: what reaches the actor meanwhile waits at the node (see
        :meth:`handed_off`).
        """
        live = self.live_slots()
        load = {slot: self.registry.count(slot) for slot in live}
        for actor_id, target in self.moving.items():  # moves under way count where they go
            record = self.registry.actors.get(actor_id)
            if record is not None and record.slot in load:
                load[record.slot] -= 1
            if target in load:
                load[target] += 1
        candidates = {slot: iter(self.registry.on_slot(slot)) for slot in live}
        while len(live) > 1:
            busiest = max(live, key=lambda s: (load[s], -s))
            idlest = min(live, key=lambda s: (load[s], s))
            if load[busiest] - load[idlest] <= 1:
                return
            record = next((r for r in candidates[busiest] if r.spec.movable and r.placed
                           and r.id not in self.moving and r.id not in self.pending_spawns), None)
            if record is None:  # nothing there can move: balance the others
                live.remove(busiest)
                continue
            self.moving[record.id] = idlest
            load[busiest] -= 1
            load[idlest] += 1
            self.table.hold(record.id)  # what comes now waits at the node; what came before is handled there first
            self.to_worker(busiest, Handoff(record.id))

    def handed_off(self, slot: int, actor_id: int) -> None:
        """The actor left ``slot`` after handling all that reached it there: re-create it where it moves to."""
        target = self.moving.pop(actor_id, None)
        record = self.registry.actors.get(actor_id)
        if target is None or record is None or record.slot != slot:
            return
        self.moved += 1
        self.place(record, target)  # (the least loaded, if that worker went meanwhile)

    def place_soon(self, record: ActorRecord) -> None:
        """Place ``record`` (re-created after its worker died) in a batch soon; its messages park meanwhile.

        Batches of :data:`PLACE_BATCH` with the node's other traffic in
        between: the re-creation of a worker's 500,000 actors stalled every
        other ask for about 24 s when it was one step. Each actor goes to the
        least loaded live worker when its batch comes, so a respawned worker
        that is back by then takes its share; and that worker takes the next
        only while fewer than :data:`PLACE_WINDOW` are being created there (a
        worker fed faster than it creates queues them ahead of every other
        message it gets).
        """
        self.table.hold(record.id)
        self._to_place.append(record.id)
        self._place_later(0.0)

    def _place_later(self, delay: float) -> None:
        if self._to_place and not self._placing:
            self._placing = True
            self.schedule(delay, self._place_batch)

    def _place_batch(self) -> None:
        self._placing = False
        self._place_some()
        if self.live_slots():  # (else the next batch comes when a worker attaches)
            self._place_later(PLACE_PAUSE)

    def _place_some(self) -> None:
        """Up to a batch of the actors waiting in :meth:`place_soon`, each to the least loaded live worker."""
        queue = self._to_place
        actors = self.registry.actors
        for _ in range(PLACE_BATCH):
            if not queue:
                return
            slot = self.registry.least_loaded(self.live_slots())
            if slot is None or self._creating_on[slot] >= PLACE_WINDOW:
                return  # no worker (one comes back), or the least loaded is busy creating: later
            record = actors.get(queue.popleft())
            if record is None or record.slot is not None:  # gone, or placed by another path meanwhile
                continue
            self.place(record, slot)
            self._creating[record.id] = slot
            self._creating_on[slot] += 1

    def _created(self, slot: int, actor_id: int) -> None:
        """An actor placed by a batch runs on ``slot`` now, or will not: room for the next there."""
        if self._creating.get(actor_id) == slot:
            del self._creating[actor_id]
            self._creating_on[slot] -= 1

    def worker_of(self, record: ActorRecord) -> int | None:
        """The slot of the live worker where ``record`` runs, if it does."""
        if not record.placed or record.slot is None:
            return None
        worker = self.slots.get(record.slot)
        if worker is None or not worker.ready or not worker.alive:
            return None
        return record.slot

    def actor_started(self, slot: int, actor_id: int) -> None:
        """The worker of ``slot`` runs ``actor_id`` now: route to it, send on what parked, answer the spawn."""
        self._created(slot, actor_id)
        if self.slots[slot].given_up:  # (read after that worker was sent SIGKILL: re-created once its death is seen)
            return
        record = self.registry.actors.get(actor_id)
        if record is None or record.slot != slot:
            # Stopped while it was being created, or placed elsewhere since: this worker runs an
            # instance nothing routes to or supervises. It must not run on unseen, with the actor's id.
            self.to_worker(slot, StopActor(actor_id, "shutdown" if record is None else "moved"))
            return
        self.registry.move(actor_id, slot, placed=True)
        self._back(actor_id)
        for parked in self.table.bind(actor_id, self.slots[slot].identity):
            self._effects.append(Forward(parked))
        request = self.pending_spawns.pop(actor_id, None)
        if request is not None:
            self.reply(request, [self.name, actor_id, record.spec.name])
        else:
            self.lifecycle.restarted(actor_id)  # re-created after its worker died
        self.check_recoveries()

    def actor_failed_to_start(self, slot: int, actor_id: int, error: GorilixError) -> None:
        self._created(slot, actor_id)
        record = self.registry.actors.get(actor_id)
        if record is None or record.slot != slot:
            return
        request = self.pending_spawns.pop(actor_id, None)
        if request is not None or not record.started:  # a first start: nothing to restart
            sup = self.lifecycle.supervisors.get(record.supervisor)
            if sup is not None:
                sup.remove(actor_id)
            self.forget(record, f"failed to start: {error}")
            if request is not None:
                self.fail(request, error)
            return
        log.error("re-creating %s failed: %s", record.spec.class_path, error)
        self.registry.move(actor_id, None)
        self.lifecycle.exited([(record, f"restart failed: {error}", True)], final=False)

    def restart_in_place(self, record: ActorRecord, reason: str) -> bool:
        slot = self.worker_of(record)
        if slot is None:
            return False
        self.to_worker(slot, Restart(record.id, reason))
        return True

    def suspend(self, record: ActorRecord, reason: str) -> None:
        """End the incarnation of a running actor without reporting it as an exit."""
        slot = self.worker_of(record)
        if slot is not None:
            self.to_worker(slot, Suspend(record.id, reason))

    def forget(self, record: ActorRecord, reason: str) -> None:
        """The actor is gone for good: no route, no name, no restart."""
        self.moving.pop(record.id, None)
        self._back(record.id)
        self.registry.remove(record.id)
        self.lifecycle.forget(record.id)
        for parked in self.table.unbind(record.id):
            self.undeliverable(parked, ActorNotFound(f"actor {self.name}/{record.id:#x} stopped ({reason})"),
                               reason_kind="no_actor")
        slot = self.worker_of(record)
        if slot is not None:
            self.to_worker(slot, StopActor(record.id, reason))
        request = self.pending_spawns.pop(record.id, None)
        if request is not None:
            self.fail(request, SpawnError(f"actor stopped before it started: {reason}"))
        if self.recoveries:  # (it may have been the last one a kill-and-wait waited for)
            self.check_recoveries()

    def to_supervisor(self, sup_id: int, frames: Frames) -> None:
        """Messages to a supervisor's own ref: requests it answers, or a stop of its subtree."""
        lifecycle = self.lifecycle
        for env, message in self.messages(frames):
            if env.kind == STOP:
                if sup_id != lifecycle.root.id:
                    lifecycle.stop_supervisor(sup_id, "shutdown")
                continue
            if env.kind not in (TELL, ASK, TELL_ACK):  # (a reply or part addressed to a supervisor: none is ever due)
                self.malformed += 1
                continue
            request = Request(frames[0], env.src_node, env.src_id, env.corr, env.kind != TELL)
            if sup_id not in lifecycle.supervisors:  # stopped by a STOP earlier in the same batch
                if request.ask:
                    self.fail(request, ActorNotFound(f"supervisor {self.name}/{sup_id:#x} stopped"))
                continue
            try:
                result = lifecycle.answer(sup_id, message)
            except GorilixError as exc:
                if request.ask:
                    self.fail(request, exc)
                else:
                    self.dead_letter(sup_id, env.src_node, env.src_id, exc)
                continue
            if request.ask:
                self.reply(request, None if env.kind == TELL_ACK else result)

    def exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None:
        record = self.registry.actors.get(actor_id)
        slot = None if record is None else self.worker_of(record)
        if slot is not None:
            self.to_worker(slot, ExitSignal(actor_id, (source.node, source.id, source.name), reason))

    def linked(self, node: str) -> bool:
        return self.host.linked(node)

    # -- what cannot be delivered ---------------------------------------------------

    def undeliverable(self, frames: Frames, error: GorilixError, fail_asks: bool = True,
                      reason_kind: DeadLetterReason = "other") -> None:
        """Fail the asks among ``frames`` (unless the caller fails them itself); count the rest as dead letters
        (``reason_kind``: why, as the caller knows it)."""
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
            if env.kind in ASKS:
                if fail_asks:
                    self._fail_ask(env.src_node, env.src_id, env.corr, error)
            elif env.kind in (REPLY, FAIL):  # the asker is gone or unreachable: nobody to tell but us
                self.dead_letter(route.dst_id, env.src_node, env.src_id, f"reply undeliverable: {error}",
                                 dst_node=route.dst_node, reason_kind=reason_kind)
            else:
                self.dead_letter(route.dst_id, env.src_node, env.src_id, error, dst_node=route.dst_node,
                                 reason_kind=reason_kind)

    def dead_letter(self, dst_id: int, src_node: str, src_id: int, error: BaseException | str,
                    dst_node: str | None = None, count: int = 1, reason_kind: DeadLetterReason = "other") -> None:
        """``count`` messages to ``dst_id`` that were not delivered: counted, and kept as one recent entry.

        ``reason_kind``: why, as the caller knows it (``dead_letters_by_reason``);
        "lost_in_death": tells a worker's death lost (counted in ``lost_in_deaths`` too, and marked).
        """
        lost_in_death = reason_kind == "lost_in_death"
        self.dead_letter_count += count
        self.dead_letters_by_reason[reason_kind] += count
        letter = {
            "to": f"{dst_node or self.name}/{dst_id:#x}", "from": f"{src_node}/{src_id:#x}" if src_id else None,
            "reason": str(error), "at": time.time(),  # (wall time, to show; no decision reads it)
        }
        if count != 1 or lost_in_death:
            letter["count"] = count
        if lost_in_death:
            letter["lost_in_death"] = True
            self.lost_in_deaths += count
        self.recent_dead_letters.append(letter)
        log.debug("dead letter to %s from %s: %s", letter["to"], letter["from"], letter["reason"])

    def _settle(self) -> None:
        """Take what each worker settled off what it owes (often enough that its tally's ring never turns over)."""
        self.ledger.settle_all()
        self._settling = bool(self.ledger.accounts)
        if self._settling:
            self.schedule(SETTLE_EVERY, self._settle)

    def _count_lost(self, account: Account, reason: str) -> None:
        """The tells a dead worker never settled: dead letters, one entry per actor, marked lost in a death."""
        lost = account.lost()
        total = sum(lost.values())
        if not total:
            return
        bound = "" if account.exact else "at most "  # (the tally's ring turned over: not known to the letter)
        # An entry each for the actors that lost the most (a death can take 500,000 actors' tells: the
        # rest are counted, not listed); the one that lost most is appended last, so it is kept longest.
        shown = heapq.nlargest(RECENT_DEAD_LETTERS, lost.items(), key=lambda item: item[1])
        rest = total - sum(count for _, count in shown)
        self.dead_letter_count += rest
        self.dead_letters_by_reason["lost_in_death"] += rest
        self.lost_in_deaths += rest
        for actor_id, count in reversed(shown):
            self.dead_letter(actor_id, self.name, 0, f"{bound}{count} tell{'s' if count != 1 else ''} lost: {reason}",
                             count=count, reason_kind="lost_in_death")
        log.warning("node %s: %s%d tells to %d actors were lost: %s (see dead_letters())",
                    self.name, bound, total, len(lost), reason)

    def remote_failed(self, node: str, frames: Frames) -> None:
        """Frames for ``node`` could not be sent: fail them with the error that says why."""
        gone = self.gone_nodes.get(node)
        self.undeliverable(frames, ClusterError(f"node not found: {node}") if gone is None
                           else NodeDown(f"node {node} is down ({gone}); its actors cannot answer"),
                           reason_kind="node_down")

    # -- the cluster ----------------------------------------------------------------

    def _member_changed(self, event: MemberChanged) -> None:
        kind, name, status, meta = event.kind, event.name, event.status, event.meta
        if self.cluster_subscribers:
            self._tell_subscribers(ClusterEvent(kind, name, event.address, event.port, status, dict(meta), event.at))
        if name == self.name or not self.host.clustered:
            return
        if status == "alive" and kind in ("join", "alive", "update"):
            # The gossip engine drops members with unusable metadata; this is the second line.
            problem = node_meta_problem(meta)
            if problem is not None:
                self.bad_meta += 1
                level = logging.WARNING if self.log_now("bad meta", name) else logging.DEBUG
                log.log(level, "node %s: not linking to member %s: %s", self.name, name, problem)
                return
            router = meta.get("router")
            if router is not None:
                self._effects.append(LinkPeer(name, router))
                self.gone_nodes.pop(name, None)
        elif kind in ("dead", "leave"):
            self.node_down(name, "dead" if kind == "dead" else "left the cluster")

    def _tell_subscribers(self, event: ClusterEvent) -> None:
        """A membership change to every subscriber still here (actors, and the program's event clients)."""
        payload = codec.encode(event)
        for subscriber in list(self.cluster_subscribers):
            if subscriber in self.registry.actors or self.table.lookup(subscriber) is not None:
                self.tell_bytes(subscriber, payload)
            else:  # stopped, or a client that went away
                self.cluster_subscribers.discard(subscriber)

    def node_down(self, name: str, reason: str) -> None:
        """A peer is gone: fail what waits on it, tell who watches it."""
        if not self.host.clustered:
            return
        linked, held = self.host.forget_peer(name)
        # Remembered even for a peer never linked to (a program may talk to each of its nodes
        # directly): a message for it then fails at once with NodeDown, not after a hold.
        self.gone_nodes.pop(name, None)
        self.gone_nodes[name] = reason
        if len(self.gone_nodes) > MAX_GONE_NODES:  # many restarts under new names: forget the oldest
            del self.gone_nodes[next(iter(self.gone_nodes))]
        if not linked and not held:
            return
        level = logging.INFO if "left" in reason else logging.WARNING
        log.log(level, "node %s: %s", name, reason)
        _, asks = self.table.endpoint_lost(b"n:" + name.encode())
        error = NodeDown(f"node {name} is down ({reason}) while the ask was in flight")
        for src_id, corr, origin in asks:
            self._fail_ask(origin, src_id, corr, error)
        for frames in held:  # its asks were among those just failed
            self.undeliverable([b"", *frames], error, fail_asks=False, reason_kind="node_down")
        self.lifecycle.node_down(name, reason)

    def peer_unknown(self, name: str, held: list[Frames], error: ClusterError) -> None:
        """Messages came from ``name`` but gossip never said where it is: fail what waited on it."""
        _, asks = self.table.endpoint_lost(b"n:" + name.encode())
        for src_id, corr, origin in asks:
            self._fail_ask(origin, src_id, corr, error)
        for frames in held:
            self.undeliverable([b"", *frames], error, fail_asks=False, reason_kind="node_down")

    # -- jobs answered later --------------------------------------------------------

    def finish_reload(self, module: str) -> None:
        job = self.reloads[module]
        if job.data["waiting"]:
            return
        del self.reloads[module]
        if job.data["errors"]:
            self.fail(job.request, GorilixError(f"reload of {module} failed: {'; '.join(job.data['errors'])}"))
        else:
            self.reply(job.request, {"module": module, "workers": job.data["workers"],
                                     "moved": job.data["moved"], "errors": []})

    def _back(self, actor_id: int) -> None:
        """The actor runs again, or is gone for good: it recovers no more."""
        self.recovering.discard(actor_id)
        for job in self.recoveries:  # (one step per actor: a worker of 500,000 made a scan per actor quadratic)
            if job.data.get("died"):
                job.data["lost"].discard(actor_id)

    def check_recoveries(self) -> None:
        """Answer every kill-and-wait whose worker died and whose actors all run again (or are gone)."""
        for job in list(self.recoveries):
            data = job.data
            if not data.get("died") or data["lost"]:
                continue
            self.recoveries.remove(job)
            self.reply(job.request, {"worker": data["slot"], "pid": data["pid"], "actors": data["count"],
                                     "recovered_ms": (self.now() - data["started"]) * 1e3})

    def recovery_timeout(self, job: Job) -> None:
        if job in self.recoveries:
            self.recoveries.remove(job)
            data = job.data
            self.fail(job.request, GorilixError(
                f"{len(data['lost'])} of {data['count']} actors of worker {data['slot']} were not back in time"))
