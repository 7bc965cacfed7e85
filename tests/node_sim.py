"""The node's core on a virtual clock, with simulated workers: no process, no socket, deterministic.

Why: what the node decides when a worker dies, a peer goes down or a
supervisor gives up is a sequence of small steps across many tables (routes,
parked messages, in-flight asks, supervisors, monitors, links), and a test
with real processes sees only its end, slowly and with timing noise. Here a
test feeds the core (:class:`gorilix.node_core.NodeCore`) the events its
driver would, sees every effect it returns, and moves time by hand.

Simulated workers answer the node at once, as real ones do, in the typed
protocol (gorilix.workers.protocol) and through its wire form: a Spawn gets
Spawned (or SpawnFailed for a class the test marks as failing), a Restart
gets Restarted, a StopActor gets a final Exited. A started worker attaches at once unless the test says not to.
"""

from __future__ import annotations

import collections
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from gorilix.control import HANDLERS, REPORTS
from gorilix.node_core import NodeCore
from gorilix.node_events import (
    ControlRequest,
    Effect,
    FailNode,
    Forward,
    Frames,
    MemberChanged,
    NodeEvent,
    Reply,
    Request,
    StartWorker,
    Tell,
    ToNode,
    ToWorker,
    WorkerExited,
    WorkerStarted,
)
from gorilix.transport import codec
from gorilix.transport.errors import ActorNotFound, GorilixError, error_to_wire
from gorilix.transport.frames import (
    ASK,
    FLAG_ASK,
    FLAG_REPLY,
    REPLY,
    TELL,
    pack_env,
    pack_route,
    unpack_route,
)
from gorilix.transport.routing import client_identity
from gorilix.workers.health import Health
from gorilix.workers.protocol import (
    AttachWorker,
    Exited,
    HandedOff,
    Handoff,
    Restart,
    Restarted,
    Spawn,
    Spawned,
    SpawnFailed,
    StopActor,
    Suspend,
    WorkerOp,
    WorkerReport,
    op_from_wire,
)
from gorilix.workers.spec import make_spec

NODE = "sim"
#: The client id the simulated program asks from.
CLIENT = (1 << 62) + 7


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeTally:
    """A worker's tally as a test writes it: the tells it settled, by actor, and the bytes it read."""

    settled: collections.Counter[int] = field(default_factory=collections.Counter)
    bytes_read: int = 0
    overrun: int = 0

    def read(self) -> int:
        return self.bytes_read

    def take(self) -> collections.Counter[int]:
        taken, self.settled = self.settled, collections.Counter()
        return taken


@dataclass
class FakeHost:
    """What the driver would answer about sockets and processes (see NodeHost)."""

    clustered: bool = False
    links: set[str] = field(default_factory=set)
    held: dict[str, list[Frames]] = field(default_factory=dict)
    pids: dict[int, int] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)
    external: set[bytes] = field(default_factory=set)
    rss: dict[int, int] = field(default_factory=dict)  # what worker_usage says of each slot's memory
    health: dict[int, Health] = field(default_factory=dict)  # what each slot's board says (worker_health)
    tallies: dict[int, FakeTally] = field(default_factory=dict)  # each slot's tally, made when its worker starts
    forwarded_count: int = 0  # what NodeSim.route sent on, as the driver's hot path counts it

    def worker_tally(self, slot: int) -> FakeTally:
        tally = self.tallies[slot] = FakeTally()
        return tally

    def linked(self, node: str) -> bool:
        return node in self.links

    def from_peer_link(self, source: bytes) -> bool:
        return source in self.external

    def forget_peer(self, node: str) -> tuple[bool, list[Frames]]:
        linked = node in self.links
        self.links.discard(node)
        return linked, self.held.pop(node, [])

    def kill_worker(self, slot: int, sig: int) -> int:
        self.signals.append((slot, sig))
        return self.pids[slot]

    def worker_usage(self, slot: int) -> tuple[float, int]:
        return 0.0, self.rss.get(slot, 0)

    def worker_health(self, slot: int) -> Health | None:
        return self.health.get(slot)

    def forwarded(self) -> int:
        return self.forwarded_count

    def peers(self) -> list[str]:
        return sorted(self.links)

    def enable_cluster(self, config_fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    def cluster_service(self) -> Any:
        return None

    def disable_cluster(self) -> None:
        raise NotImplementedError

    def members(self) -> list[dict[str, Any]] | None:
        return None

    def links_status(self) -> list[dict[str, Any]]:
        return []

    def gossip_stats(self) -> dict[str, Any] | None:
        return None

    def gossip_bad_meta(self) -> int:
        return 0


@dataclass
class SimWorker:
    slot: int
    identity: bytes
    pid: int
    prefix: int
    running: set[int] = field(default_factory=set)  # actor ids with a live incarnation here
    ops: list[WorkerOp] = field(default_factory=list)  # every op the node sent it


class NodeSim:
    """One node's core, its simulated workers and everything it said, on a virtual clock."""

    def __init__(self, workers: int = 2, *, seed: int = 0, max_parked: int = 10_000, attach: bool = True,
                 max_worker_memory: int | None = None, hang_timeout: float | None = None) -> None:
        self.clock = VirtualClock()
        self.host = FakeHost()
        self.core = NodeCore(NODE, workers, host=self.host, handlers=HANDLERS, reports=REPORTS, clock=self.clock,
                             rng=random.Random(seed), max_parked=max_parked, max_worker_memory=max_worker_memory,
                             hang_timeout=hang_timeout)
        self.workers: dict[int, SimWorker] = {}
        self.effects: list[Effect] = []  # everything the core asked for, in order
        self.failing: set[str] = set()  # class paths whose spawn fails
        self.auto_attach = attach
        self.auto_handoff = True  # a worker gives a moving actor up at once (else the test does: hand_off)
        self._pids = itertools.count(100)
        self._prefixes = itertools.count(1)
        self._corrs = itertools.count(1)
        for slot in range(workers):
            self.start_worker(slot)

    # -- feeding the core -------------------------------------------------------------

    def feed(self, event: NodeEvent) -> None:
        self._carry(self.core.handle(event))

    def _carry(self, effects: list[Effect]) -> None:
        """Carry out ``effects`` and what they lead to, and the timers due now, as the driver does."""
        while True:
            while effects:
                for effect in effects:
                    self.effects.append(effect)
                    if type(effect) is StartWorker:
                        self.start_worker(effect.slot)
                    elif type(effect) is ToWorker:
                        self._worker_reacts(effect)
                effects = self.core.take_effects()
            if self.core.next_deadline() > self.clock.now:
                return
            effects = self.core.tick()

    def call(self, method: Any, *args: Any) -> Any:
        """Call one of the core's methods the driver calls outside events, and carry out what follows."""
        result = method(*args)
        self._carry(self.core.take_effects())
        return result

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, running each timer at its own time."""
        end = self.clock.now + seconds
        while self.core.next_deadline() <= end:
            self.clock.now = max(self.clock.now, self.core.next_deadline())
            self._carry(self.core.tick())
        self.clock.now = end

    # -- workers ----------------------------------------------------------------------

    def start_worker(self, slot: int) -> SimWorker:
        prefix = next(self._prefixes)
        worker = SimWorker(slot, b"w%d.%d" % (slot, prefix), next(self._pids), prefix)
        self.workers[slot] = worker
        self.host.pids[slot] = worker.pid
        self._carry(self.core.handle(WorkerStarted(slot, worker.identity, worker.pid, prefix)))
        if self.auto_attach:
            self.attach(slot)
        return worker

    def attach(self, slot: int) -> None:
        worker = self.workers[slot]
        self.report(slot, AttachWorker(slot, worker.prefix, worker.pid))

    def kill(self, slot: int, how: str = "killed by SIGKILL") -> None:
        self.feed(WorkerExited(slot, how))

    def report(self, slot: int, report: WorkerReport) -> None:
        """A report from the worker of ``slot`` (a one-way tell, as workers send them), through its wire form."""
        request = Request(self.workers[slot].identity, NODE, 0, 0, False)
        self.feed(ControlRequest(request, report.to_wire()))

    def _worker_reacts(self, effect: ToWorker) -> None:
        worker = self.workers[effect.slot]
        assert effect.identity == worker.identity, f"{effect} sent to an old incarnation of worker {effect.slot}"
        op = effect.op
        assert op_from_wire(op.to_wire()) == op  # what the worker would read is what the node meant
        worker.ops.append(op)
        if type(op) is Spawn:
            if op.spec.class_path in self.failing:
                error = error_to_wire(RuntimeError(f"{op.spec.class_path} refuses to start"))
                self.report(effect.slot, SpawnFailed(op.actor_id, error))
            else:
                worker.running.add(op.actor_id)
                self.report(effect.slot, Spawned(op.actor_id))
        elif type(op) is Restart:
            worker.running.add(op.actor_id)
            self.report(effect.slot, Restarted(op.actor_id))
        elif type(op) is Suspend:
            worker.running.discard(op.actor_id)
        elif type(op) is StopActor:
            if op.actor_id in worker.running:
                worker.running.discard(op.actor_id)
                self.report(effect.slot, Exited(op.actor_id, op.reason, False, True))
        elif type(op) is Handoff and self.auto_handoff:
            self.hand_off(effect.slot, op.actor_id)

    def hand_off(self, slot: int, actor_id: int) -> None:
        """The worker of ``slot`` handled what reached the actor before its Handoff, and gave it up."""
        self.workers[slot].running.discard(actor_id)
        self.report(slot, HandedOff(actor_id))

    def crash(self, actor_id: int, reason: str = "RuntimeError: boom") -> None:
        """The actor's receive raised: its worker reports the exit (not final: its supervisor decides)."""
        slot = self.core.registry.actors[actor_id].slot
        assert slot is not None
        self.workers[slot].running.discard(actor_id)
        self.report(slot, Exited(actor_id, reason, True, False))

    # -- the program's side -----------------------------------------------------------

    def ask(self, *op: Any, node: str = NODE, source: bytes | None = None) -> int:
        """A control ask from the program's client; returns its corr (see :meth:`answer`)."""
        corr = next(self._corrs)
        self.core.table.bind(CLIENT, client_identity(CLIENT))
        request = Request(source or client_identity(CLIENT), node, CLIENT, corr, True)
        self.feed(ControlRequest(request, list(op)))
        return corr

    def answer(self, corr: int) -> Reply | None:
        """The reply to the client's ask ``corr``, if one was sent."""
        replies = [e for e in self.effects if type(e) is Reply and e.dst_id == CLIENT and e.corr == corr]
        assert len(replies) <= 1, f"ask {corr} answered {len(replies)} times: {replies}"
        return replies[0] if replies else None

    def spawn(self, cls: type | str, *args: Any, worker: int | None = None, name: str | None = None,
              restart: str = "permanent", sup: int | None = None, key: str | None = None,
              movable: bool = False) -> int:
        """Spawn an actor as ``ActorSystem.spawn`` does; returns its id (the spawn must succeed)."""
        spec = make_spec(cls, args, {}, name=name, restart=restart, movable=movable)
        corr = self.ask("spawn", spec.to_wire(), worker, *(() if sup is None else (sup, key)))
        reply = self.answer(corr)
        assert reply is not None and reply.ok, f"spawn of {cls} answered {reply}"
        return int(reply.value[1])

    def message(self, dst_id: int, value: Any, *, ask: bool = False, corr: int = 0) -> Frames:
        """The frames the router holds for one message from the client to ``dst_id`` (identity slot first)."""
        flags = FLAG_ASK if ask else 0
        return [client_identity(CLIENT), pack_route(NODE, dst_id, flags, CLIENT, corr),
                pack_env(ASK if ask else TELL, NODE, CLIENT, corr), codec.encode(value)]

    def reply(self, actor_id: int, corr: int, value: Any) -> Frames:
        """The frames the router holds for the reply of ``actor_id`` (from its worker) to the client's ask ``corr``."""
        slot = self.core.registry.actors[actor_id].slot
        assert slot is not None
        return [self.workers[slot].identity, pack_route(NODE, CLIENT, FLAG_REPLY, actor_id, corr),
                pack_env(REPLY, NODE, actor_id, corr), codec.encode(value)]

    def route(self, frames: Frames) -> str:
        """Route one message as the driver's forward would; says what became of it."""
        route = unpack_route(frames[1])
        table = self.core.table
        endpoint = table.routes.get(route.dst_id)
        if endpoint is not None:
            self.host.forwarded_count += 1
            if route.flags & FLAG_ASK:
                table.ask_forwarded(endpoint, route.src_id, route.corr)
            elif route.flags & FLAG_REPLY:
                table.reply_forwarded(frames[0], route.dst_id, route.corr)
            return "sent"
        if route.flags & FLAG_REPLY:
            table.reply_held(frames[0], route.dst_id, route.corr)
        if table.is_held(route.dst_id):
            if table.park(route.dst_id, frames).parked:
                return "parked"
            self.core.undeliverable(frames, GorilixError(  # (as the driver words it)
                f"actor {NODE}/{route.dst_id:#x} is being re-created and already has "
                f"{table.max_parked_per_actor} messages waiting"), reason_kind="parked_overflow")
        else:
            self.core.undeliverable(frames, ActorNotFound(f"no actor {NODE}/{route.dst_id:#x}"), reason_kind="no_actor")
        self._carry(self.core.take_effects())
        return "undeliverable"

    # -- reading what happened --------------------------------------------------------

    def of_type(self, kind: type, since: int = 0) -> list[Any]:
        return [e for e in self.effects[since:] if type(e) is kind]

    def told(self, dst_id: int, since: int = 0) -> list[Any]:
        """The messages the node itself sent to ``dst_id`` (decoded)."""
        return [e.message for e in self.of_type(Tell, since) if e.dst_id == dst_id]

    def to_nodes(self, since: int = 0) -> list[tuple[str, list[Any]]]:
        return [(e.node, e.op) for e in self.of_type(ToNode, since)]

    def forwarded(self, since: int = 0) -> list[Any]:
        return [codec.decode(e.frames[3]) for e in self.of_type(Forward, since)]

    def failed(self) -> list[FailNode]:
        return self.of_type(FailNode)

    def member(self, kind: str, name: str, status: str, meta: dict[str, Any] | None = None) -> None:
        self.feed(MemberChanged(kind, name, status, meta or {}, "10.0.0.9", 7946, self.clock.now))

    def check_invariants(self) -> None:
        """What must hold between any two events, whatever happened."""
        core = self.core
        assert sum(core.dead_letters_by_reason.values()) == core.dead_letter_count, core.dead_letters_by_reason
        live = {s for s, w in core.slots.items() if w.ready and w.alive}  # (given up or not: until its death is seen)
        for record in core.registry.actors.values():
            if record.placed:
                assert record.slot in live, f"{record} placed on a worker that is not live"
                endpoint = core.table.routes.get(record.id)
                if record.id in core.moving:  # handing off: what comes waits at the node
                    assert endpoint is None and core.table.is_held(record.id), f"{record} moves, yet is routed"
                elif core.slots[record.slot].given_up:  # its worker is being killed: what comes waits at the node
                    assert endpoint is None and core.table.is_held(record.id), f"{record} routed to a killed worker"
                else:
                    assert endpoint == core.slots[record.slot].identity, f"{record} routed to {endpoint!r}"
            else:
                assert record.id in core.table.parked, f"{record} is not placed, yet its messages are not held"
        for actor_id in core.table.routes:
            if actor_id < (1 << 62) and actor_id in core.registry.actors:
                assert core.registry.actors[actor_id].placed
        for slot, worker in self.workers.items():
            if core.slots[slot].alive:
                placed = {r.id for r in core.registry.on_slot(slot) if r.placed}
                assert placed <= worker.running, f"worker {slot} lost {placed - worker.running}"
