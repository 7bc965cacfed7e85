"""The node's decisions, on a virtual clock with simulated workers (tests/node_sim.py): no process, no socket."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from node_sim import CLIENT, NODE, NodeSim

from gorilix.backoff import Backoff
from gorilix.lifecycle import EXIT_SLICE
from gorilix.node_core import MAX_EARLY_DEATHS, PLACE_BATCH, PLACE_WINDOW
from gorilix.node_events import LinkPeer, MemberChanged, Ready, Reply, StartWorker, Tell, ToWorker
from gorilix.supervision import ONE_FOR_ALL, ONE_FOR_ONE, Strategy
from gorilix.transport.errors import (
    ActorNotFound,
    GorilixError,
    NodeDown,
    NotRunning,
    SpawnError,
    WorkerDied,
)
from gorilix.transport.frames import STOP, pack_env
from gorilix.transport.routing import ID_SHIFT, client_identity
from gorilix.workers.health import Health
from gorilix.workers.messages import ClusterEvent, Down
from gorilix.workers.protocol import (
    Exited,
    ExitSignal,
    Handoff,
    Link,
    Monitor,
    Register,
    Restart,
    Spawn,
    Spawned,
    Suspend,
)
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import make_spec

ECHO = "actors:Echo"
BROKEN = "actors:BadInit"


@pytest.fixture
def sim() -> Iterator[NodeSim]:
    sim = NodeSim(2)
    yield sim
    sim.check_invariants()


def _replies(sim: NodeSim, corr: int, since: int = 0) -> list[Reply]:
    return [e for e in sim.of_type(Reply, since) if e.corr == corr]


# -- starting -----------------------------------------------------------------------


def test_the_node_is_ready_once_every_worker_attached() -> None:
    sim = NodeSim(3)
    assert sim.of_type(Ready) == [Ready()]
    assert sim.core.live_slots() == [0, 1, 2]


def test_actors_spread_over_the_least_loaded_workers(sim: NodeSim) -> None:
    actors = [sim.spawn(ECHO) for _ in range(4)]
    assert sorted(sim.core.registry.actors[a].slot for a in actors) == [0, 0, 1, 1]
    assert all(sim.core.table.lookup(a) == sim.workers[sim.core.registry.actors[a].slot].identity for a in actors)


def test_a_spawn_that_fails_is_answered_with_the_reason_and_leaves_nothing(sim: NodeSim) -> None:
    sim.failing.add(BROKEN)
    corr = sim.ask("spawn", ["actors:BadInit", b"\x92\x90\x80", None, "permanent", None], None)
    reply = sim.answer(corr)
    assert reply is not None and not reply.ok and "refuses to start" in str(reply.value)
    assert sim.core.registry.actors == {}
    assert sim.core.lifecycle.root.children == []


# -- a worker dies ------------------------------------------------------------------


def test_a_worker_death_fails_its_asks_parks_its_messages_and_recreates_its_actors(sim: NodeSim) -> None:
    a = sim.spawn(ECHO, worker=0)
    b = sim.spawn(ECHO, worker=1)
    assert sim.route(sim.message(a, "in flight", ask=True, corr=41)) == "sent"
    sim.auto_attach = False  # the respawned worker 0 boots slowly
    mark = len(sim.effects)
    sim.kill(0)

    [died] = _replies(sim, 41, mark)
    assert not died.ok and type(died.value) is WorkerDied
    assert "worker 0" in str(died.value) and "killed by SIGKILL" in str(died.value)
    assert StartWorker(0) in sim.effects[mark:]
    # The root supervisor re-created it at once, on the one live worker; b never moved.
    assert sim.core.registry.actors[a].slot == 1 and sim.core.registry.actors[a].placed
    assert sim.core.registry.actors[b].slot == 1
    assert sim.workers[1].ops[-1] == Spawn(a, sim.core.registry.actors[a].spec)
    sim.attach(0)
    assert sim.core.live_slots() == [0, 1]


# -- balance after a failover ------------------------------------------------------------


def _per_worker(sim: NodeSim) -> dict[int, int]:
    return {slot: sim.core.registry.count(slot) for slot in sim.core.live_slots()}


def test_a_respawned_worker_gets_its_share_of_the_movable_actors_back(sim: NodeSim) -> None:
    # After one kill_worker(0), a pool's members stayed on the survivor and the respawned worker sat idle.
    pool = [sim.spawn(ECHO, worker=n % 2, movable=True) for n in range(4)]
    fixed = sim.spawn(ECHO, worker=0)
    mark = len(sim.effects)
    sim.kill(0)  # its three actors are re-created on worker 1 at once; worker 0 attaches again after
    handoffs = [e.op.actor_id for e in sim.of_type(ToWorker, mark) if type(e.op) is Handoff]
    assert len(handoffs) == 2 and set(handoffs) <= set(pool)
    assert _per_worker(sim) == {0: 2, 1: 3}
    assert sim.core.moved == 2 and sim.core.moving == {}
    assert sim.core.registry.actors[fixed].slot == 1  # not movable: it stays where it was re-created
    sim.check_invariants()


def test_only_movable_actors_move(sim: NodeSim) -> None:
    plain = [sim.spawn(ECHO, worker=1) for _ in range(4)]
    sim.kill(1)
    sim.kill(1)
    assert sim.core.moved == 0
    assert all(sim.core.registry.actors[a].slot == 0 for a in plain)


def test_a_move_parks_what_comes_and_sends_it_on_in_order_after_the_handoff() -> None:
    sim = NodeSim(2)
    members = [sim.spawn(ECHO, worker=1, movable=True) for _ in range(4)]
    sim.auto_attach = False
    sim.auto_handoff = False  # the worker is still handling what reached the actor before
    sim.kill(0)
    sim.attach(0)
    moving = dict(sim.core.moving)
    assert len(moving) == 2 and set(moving.values()) == {0} and set(moving) <= set(members)
    actor = next(iter(moving))
    assert sim.route(sim.message(actor, "first")) == "parked"
    assert sim.route(sim.message(actor, "ask", ask=True, corr=9)) == "parked"
    mark = len(sim.effects)
    sim.hand_off(1, actor)
    assert sim.workers[0].ops[-1] == Spawn(actor, sim.core.registry.actors[actor].spec)
    assert sim.forwarded(mark) == ["first", "ask"]
    assert sim.core.registry.actors[actor].slot == 0 and sim.core.registry.actors[actor].placed
    assert actor not in sim.core.moving and sim.core.moved == 1
    sim.check_invariants()


def test_a_move_ends_as_a_recreation_when_the_worker_it_leaves_dies() -> None:
    sim = NodeSim(2)
    members = [sim.spawn(ECHO, worker=1, movable=True) for _ in range(4)]
    sim.auto_attach = False
    sim.auto_handoff = False
    sim.kill(0)
    sim.attach(0)
    assert len(sim.core.moving) == 2
    sim.kill(1)  # before it handed them off
    assert sim.core.moving == {}
    assert all(sim.core.registry.actors[a].slot == 0 for a in members)
    sim.check_invariants()


def test_a_handoff_for_an_actor_stopped_meanwhile_is_ignored() -> None:
    sim = NodeSim(2)
    [sim.spawn(ECHO, worker=1, movable=True) for _ in range(4)]
    sim.auto_attach = False
    sim.auto_handoff = False
    sim.kill(0)
    sim.attach(0)
    actor = next(iter(sim.core.moving))
    sim.report(1, Exited(actor, "normal", False, True))  # it stopped itself before its turn reached the handoff
    assert actor not in sim.core.moving and actor not in sim.core.registry.actors
    sim.hand_off(1, actor)  # (a late report: nothing to place)
    assert actor not in sim.core.registry.actors and sim.core.moved == 0
    sim.check_invariants()


# -- tells lost in a worker's death ------------------------------------------------------


def test_the_tells_a_dead_worker_never_settled_are_dead_letters_per_actor() -> None:
    sim = NodeSim(2)
    a, b, c = (sim.spawn(ECHO, worker=1) for _ in range(3))
    account = sim.core.ledger.accounts[sim.workers[1].identity]
    for actor, count in ((a, 50), (b, 7), (c, 3)):  # what the router forwarded (it counts on its hot path)
        account.owed[actor] = count
    tally = sim.host.tallies[1]
    tally.settled.update({a: 20, c: 3})  # what the worker handed to receive
    sim.advance(1.0)
    assert account.owed == {a: 30, b: 7}  # settled ones are taken off as the node looks
    tally.settled.update({a: 10})  # (settled after the last look, before the death: not lost)
    sim.kill(1)
    letters = [letter for letter in sim.core.recent_dead_letters if letter.get("lost_in_death")]
    assert {(letter["to"], letter["count"]) for letter in letters} == {
        (f"{NODE}/{a:#x}", 20), (f"{NODE}/{b:#x}", 7)}
    assert sim.core.lost_in_deaths == sim.core.dead_letter_count == 27
    assert "worker 1 died (killed by SIGKILL)" in letters[0]["reason"]
    assert sim.workers[1].identity in sim.core.ledger.accounts  # the respawned worker's own, fresh
    assert sim.core.ledger.accounts[sim.workers[1].identity].owed == {}
    sim.check_invariants()


def test_a_count_from_a_tally_that_turned_over_says_it_is_a_bound() -> None:
    sim = NodeSim(1)
    a = sim.spawn(ECHO)
    sim.core.ledger.accounts[sim.workers[0].identity].owed[a] = 5
    sim.host.tallies[0].overrun = 3  # (the node fell behind the worker's ring)
    sim.kill(0)
    assert "at most 5 tells lost" in sim.core.recent_dead_letters[-1]["reason"]


# -- a memory limit per worker -------------------------------------------------------------


def test_a_worker_past_its_memory_limit_is_restarted_and_its_actors_come_back() -> None:
    # An actor that grew without bound reached 1.58 GB, and nothing stopped it.
    sim = NodeSim(2, max_worker_memory=200 * 2**20)
    greedy = sim.spawn(ECHO, worker=1)
    sim.host.rss = {0: 50 * 2**20, 1: 150 * 2**20}
    sim.advance(1.5)
    assert sim.host.signals == [] and sim.core.memory_restarts == 0
    sim.host.rss[1] = 250 * 2**20
    sim.advance(1.0)
    assert sim.host.signals == [(1, signal.SIGKILL)] and sim.core.memory_restarts == 1
    sim.host.rss[1] = 0  # (the respawned worker starts small)
    sim.kill(1, "killed by SIGKILL")
    assert sim.core.registry.actors[greedy].placed  # re-created, as after a crash
    sim.advance(3.0)
    assert sim.core.memory_restarts == 1  # and not again
    sim.check_invariants()


def test_without_a_memory_limit_nothing_is_measured() -> None:
    sim = NodeSim(1)
    sim.host.rss = {0: 10 * 2**40}
    sim.advance(5.0)
    timers = [fn for _, _, fn, _ in sim.core._timers]
    assert sim.host.signals == [] and sim.core._check_memory not in timers


# -- mass failover ------------------------------------------------------------------------


def test_the_actors_of_a_dead_worker_are_recreated_in_batches_with_other_work_between() -> None:
    # Killing a worker of 500,000 actors stalled the node for about 24 s: asks to actors on the
    # healthy worker timed out. Now a batch of PLACE_BATCH goes out per turn of the node's loop.
    sim = NodeSim(2)
    actors = [sim.spawn(ECHO, worker=0) for _ in range(2 * PLACE_BATCH + 500)]
    sim.auto_attach = False
    mark = len(sim.effects)
    sim.kill(0)
    placed = [e.op.actor_id for e in sim.of_type(ToWorker, mark) if type(e.op) is Spawn]
    # The first batch, as many as the one live worker may be creating at once; the rest waits for
    # later turns (and for its answers).
    assert len(placed) == min(PLACE_BATCH, PLACE_WINDOW)
    assert sim.core.next_deadline() > sim.clock.now  # (so the driver serves its sockets in between)
    waiting = [a for a in actors if a not in set(placed)]
    assert len(waiting) == len(actors) - len(placed) and all(sim.core.table.is_held(a) for a in waiting)  # (park)
    corr = sim.ask("workers")  # other requests are answered between the batches
    assert sim.answer(corr) is not None
    sim.attach(0)  # the respawned worker is back before the last batches: it takes them
    sim.advance(0.1)
    where = [sim.core.registry.actors[a].slot for a in actors]
    assert where.count(0) > 0 and where.count(1) >= PLACE_BATCH
    assert all(sim.core.registry.actors[a].placed for a in actors)
    sim.check_invariants()


def test_a_kill_is_answered_before_the_dead_workers_actors_are_decided_which_come_in_slices() -> None:
    # Killing a worker of 500,000 actors stalled the node for about 24 s and kill_worker timed out:
    # every monitor, link and supervisor decision for them came in one step, and the kill was
    # answered only after it. Now the answer comes with the death, and the rest in slices.
    sim = NodeSim(2)
    watcher = sim.spawn(ECHO, worker=1)
    other = sim.spawn(ECHO, worker=1)
    lost = [sim.spawn(ECHO, worker=0) for _ in range(3 * EXIT_SLICE + 10)]
    for actor in lost:
        sim.report(1, Monitor(watcher, NODE, actor))
    corr = sim.ask("kill_worker", 0, int(signal.SIGKILL))
    mark = len(sim.effects)
    sim.kill(0)

    reply = sim.answer(corr)
    assert reply is not None and reply.ok
    assert sim.effects.index(reply) < mark + 10  # (with the death's own effects, before any decision)
    assert len(sim.told(watcher, mark)) == EXIT_SLICE  # one slice handed over: the rest waits its turn
    assert sim.core.lifecycle.handing_over() == len(lost) - EXIT_SLICE
    assert sim.core.next_deadline() > sim.clock.now  # (so the driver serves its sockets in between)
    waiting = [a for a in lost if not sim.core.registry.actors[a].placed]
    # (at most a window on each of the two workers, the respawned one back at once here)
    assert len(waiting) >= len(lost) - 2 * PLACE_WINDOW and all(sim.core.table.is_held(a) for a in waiting)
    assert sim.route(sim.message(other, "between slices", ask=True, corr=77)) == "sent"
    assert sim.answer(sim.ask("workers")) is not None  # control requests are answered in between too

    sim.advance(0.1)
    downs = sim.told(watcher, mark)
    assert sorted(d.ref.id for d in downs) == lost and {d.reason for d in downs} == {"worker 0 died (killed by SIGKILL)"}
    assert sim.core.lifecycle.handing_over() == 0 and sim.core.recovering == set()
    assert all(sim.core.registry.actors[a].placed for a in lost)
    sim.check_invariants()


def test_a_death_handed_over_in_slices_is_still_one_incident_per_supervisor() -> None:
    # The same decisions as when a worker's actors were decided in one step: one incident per
    # supervisor, and a one_for_all sibling on a live worker restarted once, after every exit is in.
    sim = NodeSim(2)
    one = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=1, within_seconds=10.0, backoff=Backoff.none()))
    alls = _supervisor(sim, Strategy(ONE_FOR_ALL, max_restarts=1, within_seconds=10.0, backoff=Backoff.none()),
                       name="alls")
    first = sim.spawn(ECHO, sup=one, key="first", worker=0)
    sibling = sim.spawn(ECHO, sup=alls, key="sibling", worker=1)
    early = sim.spawn(ECHO, sup=alls, key="early", worker=0)
    fillers = [sim.spawn(ECHO, worker=0) for _ in range(2 * EXIT_SLICE)]
    late = sim.spawn(ECHO, sup=alls, key="late", worker=0)
    last = sim.spawn(ECHO, sup=one, key="last", worker=0)  # (slices after its sibling "first")
    mark = len(sim.workers[1].ops)
    sim.kill(0)
    assert Suspend(sibling, "shutdown") not in sim.workers[1].ops[mark:]  # one_for_all decides once all are in
    sim.advance(0.1)
    assert one in sim.core.lifecycle.supervisors and alls in sim.core.lifecycle.supervisors  # within max_restarts=1
    ops = sim.workers[1].ops[mark:]
    assert ops.count(Suspend(sibling, "shutdown")) == 1
    assert [op.actor_id for op in ops if type(op) is Restart] == [sibling]  # (restarted in place, once)
    assert all(sim.core.registry.actors[a].placed for a in [first, last, early, late, sibling, *fillers])
    sim.check_invariants()


# -- stuck workers -------------------------------------------------------------------------


def test_a_worker_stuck_in_one_message_is_shown_and_restarted_past_hang_timeout() -> None:
    # An actor that blocked froze its worker for ever: the others there timed out and nothing said why.
    sim = NodeSim(2, hang_timeout=5.0)
    blocker = sim.spawn(ECHO, worker=1)
    now = sim.clock.now
    sim.host.health[1] = Health(now, now, blocker, "actors:Echo", "tuple 'block'")
    sim.advance(0.5)
    assert sim.core.stuck(1) is None  # (half a second in one message is not stuck)
    sim.advance(2.0)
    sim.host.health[1] = sim.host.health[1]._replace(beat=sim.clock.now)  # (its watchdog writes on)
    stuck = sim.core.stuck(1)
    assert stuck is not None and stuck["class"] == "actors:Echo" and stuck["message"] == "tuple 'block'"
    assert stuck["actor"] == f"{NODE}/{blocker:#x}" and 2.4 <= stuck["seconds"] <= 2.6 and not stuck["silent"]
    assert sim.host.signals == []  # shown, not restarted: hang_timeout is 5 s
    sim.host.health[1] = sim.host.health[1]._replace(beat=sim.clock.now)  # (its watchdog still writes)
    sim.advance(3.0)
    assert sim.host.signals == [(1, signal.SIGKILL)] and sim.core.hang_restarts == 1


def test_a_worker_whose_watchdog_is_silent_is_stuck_too() -> None:
    # A C call that holds the GIL stops the watchdog as well: the beat stops.
    sim = NodeSim(1, hang_timeout=3.0)
    sim.host.health[0] = Health(sim.clock.now, 0.0, 0, "", "")
    sim.advance(2.0)
    stuck = sim.core.stuck(0)
    assert stuck is not None and stuck["silent"] and stuck["actor"] is None
    sim.advance(1.5)
    assert sim.host.signals == [(0, signal.SIGKILL)] and sim.core.hang_restarts == 1


@pytest.mark.parametrize("why", ["hang", "memory"])
def test_what_comes_for_a_worker_the_node_killed_parks_and_reaches_its_actor_recreated(why: str) -> None:
    # An ask sent after the node killed a stuck worker, and before it saw the death, went on to the
    # dying process and failed with WorkerDied, though the node knew the worker was done for.
    sim = NodeSim(2, hang_timeout=3.0) if why == "hang" else NodeSim(2, max_worker_memory=200 * 2**20)
    a = sim.spawn(ECHO, worker=1)
    asked = sim.route(sim.message(a, "before", ask=True, corr=8))  # (on its way to the worker: lost with it)
    if why == "hang":
        sim.host.health[1] = Health(sim.clock.now, 0.0, 0, "", "")  # a C call that holds its GIL
        sim.advance(3.5)
    else:
        sim.host.rss = {0: 0, 1: 250 * 2**20}
        sim.advance(1.5)
    assert sim.host.signals == [(1, signal.SIGKILL)]
    assert sim.route(sim.message(a, "after", ask=True, corr=9)) == "parked"  # (its death not seen yet)
    assert sim.route(sim.message(a, "told")) == "parked"
    sim.check_invariants()
    mark = len(sim.effects)
    sim.kill(1, "killed by SIGKILL")
    assert asked == "sent" and [r.corr for r in sim.of_type(Reply, mark) if not r.ok] == [8]
    assert sim.core.registry.actors[a].slot == 0 and sim.forwarded(mark) == ["after", "told"]
    sim.check_invariants()


def test_a_worker_the_node_killed_takes_no_new_actor() -> None:
    # Until its death was seen, a worker killed for hanging stayed among the live ones: a spawn could go to it.
    sim = NodeSim(2, hang_timeout=3.0)
    sim.spawn(ECHO, worker=0)  # (worker 1 is the least loaded)
    sim.host.health[1] = Health(sim.clock.now, 0.0, 0, "", "")
    sim.advance(3.5)
    assert sim.host.signals == [(1, signal.SIGKILL)] and sim.core.live_slots() == [0]
    assert sim.core.registry.actors[sim.spawn(ECHO)].slot == 0
    sim.check_invariants()


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGCONT, signal.SIGUSR1])
def test_a_signal_from_kill_worker_leaves_the_hang_check_on(sig: signal.Signals) -> None:
    # kill_worker(slot, SIGSTOP) marked the worker killed, and the hang and memory checks skipped it
    # until it restarted: a worker stopped, or one that handles the signal, was never restarted.
    sim = NodeSim(2, hang_timeout=3.0)
    corr = sim.ask("kill_worker", 1, int(sig))
    assert sim.answer(corr) is not None
    sim.host.health[1] = Health(sim.clock.now, 0.0, 0, "", "")
    sim.advance(3.5)
    assert sim.host.signals == [(1, sig), (1, signal.SIGKILL)] and sim.core.hang_restarts == 1


def test_a_worker_sigkilled_by_kill_worker_is_not_killed_again_by_the_hang_check() -> None:
    sim = NodeSim(2, hang_timeout=3.0)
    sim.host.health[1] = Health(sim.clock.now, 0.0, 0, "", "")
    sim.advance(2.0)
    sim.ask("kill_worker", 1, int(signal.SIGKILL))  # (its death not seen yet)
    sim.advance(2.0)
    assert sim.host.signals == [(1, signal.SIGKILL)] and sim.core.hang_restarts == 0
    assert sim.core.live_slots() == [0]


def test_without_hang_timeout_a_stuck_worker_is_only_shown() -> None:
    sim = NodeSim(1)
    sim.host.health[0] = Health(sim.clock.now, sim.clock.now, 7, "actors:Echo", "int")
    sim.advance(100.0)
    assert sim.core.stuck(0) is not None and sim.host.signals == []


def test_messages_to_an_actor_being_recreated_park_and_are_sent_on_in_order() -> None:
    sim = NodeSim(1)
    a = sim.spawn(ECHO)
    sim.auto_attach = False
    sim.kill(0)  # its only worker: the actor waits for the respawned one
    assert sim.core.registry.actors[a].slot is None
    for n in range(3):
        assert sim.route(sim.message(a, n)) == "parked"
    assert sim.route(sim.message(a, "ask", ask=True, corr=7)) == "parked"
    mark = len(sim.effects)
    sim.attach(0)
    assert sim.forwarded(mark) == [0, 1, 2, "ask"]
    assert sim.core.registry.actors[a].placed and not sim.core.table.is_held(a)
    sim.check_invariants()


def test_past_the_parking_limit_asks_fail_and_tells_are_dead_letters() -> None:
    sim = NodeSim(1, max_parked=2)
    a = sim.spawn(ECHO)
    sim.auto_attach = False
    sim.kill(0)
    assert [sim.route(sim.message(a, n)) for n in range(3)] == ["parked", "parked", "undeliverable"]
    assert sim.route(sim.message(a, "ask", ask=True, corr=9)) == "undeliverable"
    [reply] = _replies(sim, 9)
    assert not reply.ok and type(reply.value) is GorilixError and "already has 2 messages waiting" in str(reply.value)
    assert sim.core.dead_letter_count == sim.core.dead_letters_by_reason["parked_overflow"] == 1


def test_a_worker_that_keeps_dying_before_it_is_ready_fails_the_node() -> None:
    sim = NodeSim(1, attach=False)
    for death in range(1, MAX_EARLY_DEATHS + 1):
        sim.kill(0, "exit code 7")
        assert len(sim.failed()) == (death == MAX_EARLY_DEATHS)
    [failed] = sim.failed()
    assert type(failed.error) is NotRunning and "died 3 times before it was ready" in str(failed.error)
    assert sim.of_type(StartWorker)[-1] == StartWorker(0) and len(sim.of_type(StartWorker)) == MAX_EARLY_DEATHS - 1


def test_a_worker_that_attaches_between_deaths_never_fails_the_node(sim: NodeSim) -> None:
    for _ in range(2 * MAX_EARLY_DEATHS):
        sim.kill(0)
    assert sim.failed() == []
    assert sim.core.slots[0].restarts == 2 * MAX_EARLY_DEATHS


def test_a_kill_is_answered_once_its_death_is_handled(sim: NodeSim) -> None:
    a = sim.spawn(ECHO, worker=0)
    pid = sim.host.pids[0]
    corr = sim.ask("kill_worker", 0, int(signal.SIGKILL))
    assert sim.answer(corr) is None and sim.host.signals == [(0, int(signal.SIGKILL))]
    sim.kill(0)
    reply = sim.answer(corr)
    assert reply is not None and reply.ok and reply.value == pid
    assert sim.core.registry.actors[a].placed  # what the caller sends next finds it running


def test_kill_and_wait_measures_the_recovery_on_the_node_clock() -> None:
    sim = NodeSim(1)
    actors = [sim.spawn(ECHO) for _ in range(3)]
    sim.auto_attach = False
    corr = sim.ask("kill_worker_wait", 0, int(signal.SIGKILL), 5.0)
    sim.kill(0)
    sim.advance(0.25)
    assert sim.answer(corr) is None
    sim.attach(0)
    reply = sim.answer(corr)
    assert reply is not None and reply.ok
    assert reply.value["actors"] == 3 and reply.value["recovered_ms"] == pytest.approx(250.0)
    assert all(sim.core.registry.actors[a].placed for a in actors)
    sim.advance(10.0)  # its timeout must not answer a second time
    assert len(_replies(sim, corr)) == 1


def test_kill_and_wait_fails_when_the_actors_are_not_back_in_time() -> None:
    sim = NodeSim(1)
    sim.spawn(ECHO)
    sim.auto_attach = False
    corr = sim.ask("kill_worker_wait", 0, int(signal.SIGKILL), 2.0)
    sim.kill(0)
    sim.advance(1.9)
    assert sim.answer(corr) is None
    sim.advance(0.2)
    reply = sim.answer(corr)
    assert reply is not None and not reply.ok and "1 of 1 actors of worker 0 were not back in time" in str(reply.value)


# -- supervisors --------------------------------------------------------------------


def _supervisor(sim: NodeSim, strategy: Strategy, name: str = "svc", restart: str = "temporary") -> int:
    """A supervisor under the root; temporary by default, so that when it gives up, it stops for good."""
    corr = sim.ask("spawn_supervisor", name, strategy.to_wire(), None, restart)
    reply = sim.answer(corr)
    assert reply is not None and reply.ok, reply
    return int(reply.value)


def test_restarts_wait_for_their_backoff_on_the_node_clock(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=10, within_seconds=60.0,
                                    backoff=Backoff.linear(base=1.0, max=10.0)))
    child = sim.spawn(ECHO, sup=sup, key="c")
    slot = sim.core.registry.actors[child].slot
    assert slot is not None
    for attempt, delay in [(1, 1.0), (2, 2.0), (3, 3.0)]:
        sim.crash(child)
        def restarts() -> int:
            return sum(1 for op in sim.workers[slot].ops if type(op) is Restart and op.actor_id == child)

        assert restarts() == attempt - 1, "restarted before its backoff"
        sim.advance(delay - 0.01)
        assert restarts() == attempt - 1
        sim.advance(0.02)
        assert restarts() == attempt


def test_a_supervisor_past_its_restart_intensity_gives_up_and_its_monitors_hear_it(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=2, within_seconds=10.0, backoff=Backoff.none()))
    child = sim.spawn(ECHO, sup=sup, key="c")
    watcher = sim.spawn(ECHO)
    watcher_slot = sim.core.registry.actors[watcher].slot
    sim.report(watcher_slot, Monitor(watcher, NODE, child))
    sim.report(watcher_slot, Monitor(watcher, NODE, sup))
    for _ in range(3):
        sim.crash(child)
    assert child not in sim.core.registry.actors
    assert sup not in sim.core.lifecycle.supervisors  # temporary: the root does not restart it
    downs = sim.told(watcher)
    assert [type(d) for d in downs] == [Down, Down]
    assert downs[0].ref.id == child and "RuntimeError: boom" in downs[0].reason
    assert downs[1].ref.id == sup and "3 restarts within 10 s (limit 2)" in downs[1].reason


def test_restarts_counted_in_a_window_that_moves_with_the_clock(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=2, within_seconds=10.0, backoff=Backoff.none()))
    child = sim.spawn(ECHO, sup=sup, key="c")
    for _ in range(6):  # one crash every 6 s: never 3 within 10 s
        sim.crash(child)
        sim.advance(6.0)
    assert sup in sim.core.lifecycle.supervisors and sim.core.registry.actors[child].placed


def test_one_for_all_restarts_the_siblings_of_a_crashed_child(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ALL, max_restarts=5, within_seconds=10.0, backoff=Backoff.none()))
    first = sim.spawn(ECHO, sup=sup, key="first")
    second = sim.spawn(ECHO, sup=sup, key="second")
    mark = {slot: len(w.ops) for slot, w in sim.workers.items()}
    sim.crash(first)
    ops = [op for slot, w in sim.workers.items() for op in w.ops[mark[slot]:]]
    assert Suspend(second, "shutdown") in ops
    assert {op.actor_id for op in ops if type(op) is Restart} == {first, second}


def test_a_child_on_a_dead_worker_is_recreated_elsewhere_as_one_incident(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=1, within_seconds=10.0, backoff=Backoff.none()))
    children = [sim.spawn(ECHO, sup=sup, key=f"c{n}", worker=0) for n in range(3)]
    sim.kill(0)  # three children lost at once: one incident, within the limit of 1
    assert sup in sim.core.lifecycle.supervisors
    assert all(sim.core.registry.actors[c].placed for c in children)


def test_a_permanent_supervisor_that_gives_up_is_restarted_by_its_parent_with_its_children(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=1, within_seconds=10.0, backoff=Backoff.none()),
                      restart="permanent")
    child = sim.spawn(ECHO, sup=sup, key="c")
    sim.crash(child)
    sim.crash(child)  # past its limit: the root restarts the whole subtree (after the root's own backoff)
    sim.advance(10.0)
    assert sup in sim.core.lifecycle.supervisors and sim.core.registry.actors[child].placed
    assert sim.core.lifecycle.children(sup) == [("c", child, False)]


def test_a_restart_that_fails_goes_back_to_the_supervisor(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=1, within_seconds=10.0, backoff=Backoff.none()))
    child = sim.spawn(ECHO, sup=sup, key="c", worker=0)
    sim.failing.add(ECHO)  # from now on, it fails to start
    sim.kill(0)
    assert child not in sim.core.registry.actors  # restart failed, then the limit was reached
    assert sup not in sim.core.lifecycle.supervisors


# -- monitors and links -------------------------------------------------------------


def test_a_monitor_fires_once_with_the_reason_and_a_dead_actor_is_noproc(sim: NodeSim) -> None:
    watcher = sim.spawn(ECHO, worker=0)
    target = sim.spawn(ECHO, worker=1, restart="temporary")
    sim.report(0, Monitor(watcher, NODE, target))
    sim.crash(target, "ValueError: bad")
    sim.crash(watcher)  # (restarted by the root: monitors belong to one incarnation)
    [down] = [m for m in sim.told(watcher) if type(m) is Down]
    assert down.ref == ActorRef(NODE, target) and down.reason == "ValueError: bad"
    mark = len(sim.effects)
    sim.report(0, Monitor(watcher, NODE, target))
    assert sim.told(watcher, mark) == [Down(ActorRef(NODE, target), "noproc")]


def test_a_link_carries_an_exit_to_the_other_side(sim: NodeSim) -> None:
    a = sim.spawn(ECHO, worker=0)
    b = sim.spawn(ECHO, worker=1)
    sim.report(0, Link(a, NODE, b))
    sim.crash(b, "KeyError: 'x'")
    [signal_op] = [op for op in sim.workers[0].ops if type(op) is ExitSignal]
    assert signal_op == ExitSignal(a, (NODE, b, None), "KeyError: 'x'")


def test_a_worker_cannot_monitor_for_an_actor_it_does_not_host(sim: NodeSim) -> None:
    a = sim.spawn(ECHO, worker=0)
    b = sim.spawn(ECHO, worker=1)
    refused = sim.core.refused
    sim.report(1, Monitor(a, NODE, b))  # a lives on worker 0
    assert sim.core.refused == refused + 1
    sim.crash(b)
    assert sim.told(a) == []


# -- peers --------------------------------------------------------------------------


def _clustered(sim: NodeSim, peer: str = "peer") -> None:
    sim.host.clustered = True
    sim.member("join", peer, "alive", {"router": "tcp://10.0.0.9:7946", "workers": 1})
    assert LinkPeer(peer, "tcp://10.0.0.9:7946") in sim.effects
    sim.host.links.add(peer)


def test_a_peer_down_fails_asks_to_it_fires_monitors_and_links(sim: NodeSim) -> None:
    _clustered(sim)
    watcher = sim.spawn(ECHO, worker=0)
    linked = sim.spawn(ECHO, worker=1)
    sim.report(0, Monitor(watcher, "peer", 77))
    sim.report(1, Link(linked, "peer", 78))
    assert ("peer", ["rmonitor", watcher, 77]) in sim.to_nodes() and ("peer", ["rlink", 78, linked]) in sim.to_nodes()
    sim.core.table.ask_forwarded(b"n:peer", CLIENT, 5)  # a client's ask in flight to the peer
    sim.member("dead", "peer", "dead")

    [reply] = _replies(sim, 5)
    assert not reply.ok and type(reply.value) is NodeDown and "node peer is down (dead)" in str(reply.value)
    assert sim.told(watcher) == [Down(ActorRef("peer", 77), "node peer down: dead")]
    assert ExitSignal(linked, ("peer", 78, None), "node peer down: dead") in sim.workers[1].ops
    assert sim.core.gone_nodes == {"peer": "dead"}
    mark = len(sim.effects)
    sim.call(sim.core.remote_failed, "peer", sim.message(watcher, "x", ask=True, corr=6))
    [later] = [e for e in sim.of_type(Reply, mark) if e.corr == 6]
    assert type(later.value) is NodeDown  # not "node not found": it is known to be down


def test_a_peer_that_left_is_down_with_its_reason_and_comes_back_when_alive(sim: NodeSim) -> None:
    _clustered(sim)
    sim.member("leave", "peer", "left")
    assert sim.core.gone_nodes == {"peer": "left the cluster"}
    sim.member("alive", "peer", "alive", {"router": "tcp://10.0.0.9:7946", "workers": 1})
    assert sim.core.gone_nodes == {}


def test_a_monitor_of_an_unknown_node_fires_at_once(sim: NodeSim) -> None:
    watcher = sim.spawn(ECHO)
    slot = sim.core.registry.actors[watcher].slot
    sim.report(slot, Monitor(watcher, "nowhere", 5))
    assert sim.told(watcher) == [Down(ActorRef("nowhere", 5), "node not found: nowhere")]


def test_membership_reaches_subscribers_and_bad_metadata_links_nothing(sim: NodeSim) -> None:
    sim.host.clustered = True
    subscriber = sim.spawn(ECHO)
    sim.ask("cluster_subscribe", subscriber)
    sim.member("join", "odd", "alive", {"router": "tcp://a b:1"})
    assert sim.core.bad_meta == 1 and sim.of_type(LinkPeer) == []
    [event] = sim.told(subscriber)
    assert type(event) is ClusterEvent and event.name == "odd" and event.kind == "join"


def test_remote_monitors_and_links_come_only_over_the_peers_own_link(sim: NodeSim) -> None:
    _clustered(sim)
    local = sim.spawn(ECHO)
    for source in (client_identity(CLIENT), b"n:other"):
        refused = sim.core.refused
        sim.ask("rmonitor", 9, local, node="peer", source=source)
        assert sim.core.refused == refused + 1
    sim.host.external.add(b"n:peer")
    sim.ask("rmonitor", 9, local, node="peer", source=b"n:peer")
    sim.crash(local)
    assert ("peer", ["rdown", local, None, "RuntimeError: boom", 9]) in sim.to_nodes()


# -- what nobody can receive --------------------------------------------------------


def test_an_actor_stopped_for_good_fails_what_was_parked_for_it() -> None:
    sim = NodeSim(1)
    a = sim.spawn(ECHO, restart="temporary")
    sim.auto_attach = False
    sim.kill(0)  # temporary: not re-created
    assert a not in sim.core.registry.actors
    assert sim.route(sim.message(a, "q", ask=True, corr=3)) == "undeliverable"
    [reply] = _replies(sim, 3)
    assert type(reply.value) is ActorNotFound


def test_a_bad_control_request_is_counted_and_answered_never_fatal(sim: NodeSim) -> None:
    malformed = sim.core.malformed
    corr = sim.ask("spawn", "not a spec", None)
    reply = sim.answer(corr)
    assert reply is not None and not reply.ok and isinstance(reply.value, GorilixError)
    sim.ask("no such op")
    sim.ask(42)
    assert sim.core.malformed == malformed + 3
    assert sim.spawn(ECHO)  # and it goes on


def test_an_unknown_control_request_is_answered_at_once_not_left_to_time_out(sim: NodeSim) -> None:
    """A client newer than its node (a dashboard asking for `supervision`) hears why, instead of waiting."""
    reply = sim.answer(sim.ask("no such op", 1))
    assert reply is not None and not reply.ok and type(reply.value) is GorilixError
    assert "no control request 'no such op'" in str(reply.value) and "version" in str(reply.value)


def test_a_timer_that_raises_is_logged_and_dropped(sim: NodeSim) -> None:
    calls: list[str] = []
    sim.core.schedule(1.0, lambda: 1 // 0)
    sim.core.schedule(2.0, calls.append, "later")
    sim.advance(3.0)
    assert calls == ["later"]


def test_a_spawn_named_twice_is_refused(sim: NodeSim) -> None:
    sim.spawn(ECHO, name="one")
    corr = sim.ask("spawn", ["actors:Echo", b"\x92\x90\x80", "one", "permanent", None], None)
    reply = sim.answer(corr)
    assert reply is not None and type(reply.value) is SpawnError and "already registered" in str(reply.value)
    assert len([e for e in sim.of_type(ToWorker) if type(e.op) is Spawn]) == 1


def test_a_node_tell_goes_out_as_an_effect_not_a_socket_call(sim: NodeSim) -> None:
    actor = sim.spawn(ECHO)
    sim.core.tell(actor, "hello")
    [tell] = sim.core.take_effects()
    assert type(tell) is Tell and tell.dst_id == actor and tell.message == "hello"


def test_a_report_from_anyone_but_a_worker_is_refused_ask_or_tell(sim: NodeSim) -> None:
    # A client's ask of "load" was answered None, as if the node had taken it.
    refused = sim.core.refused
    corr = sim.ask("load", 1, 2, 3, 4, 5)
    reply = sim.answer(corr)
    assert reply is not None and not reply.ok and "only this node's workers send it" in str(reply.value)
    assert sim.core.refused == refused + 1 and sim.core.worker_load == {}


def test_an_ask_after_a_stop_in_the_same_batch_to_a_supervisor_is_failed_not_dropped(sim: NodeSim) -> None:
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=1, within_seconds=1.0, backoff=Backoff.none()))
    stop = sim.message(sup, None)
    ask = sim.message(sup, "which_children", ask=True, corr=12)
    stop[2] = pack_env(STOP, NODE, CLIENT, 0)
    sim.call(sim.core.to_supervisor, sup, [*stop, *ask[2:]])
    assert sup not in sim.core.lifecycle.supervisors
    [reply] = _replies(sim, 12)
    assert not reply.ok and type(reply.value) is ActorNotFound and "stopped" in str(reply.value)


# -- peers that left --------------------------------------------------------------------


def test_a_peer_that_left_is_remembered_as_gone_even_if_never_linked() -> None:
    # A program can talk to each of its nodes directly, so a node may never have linked to a peer
    # that then leaves. It was not remembered as gone, and a message for it waited out a 10 s hold
    # for a link, then failed with "node not found" (an ask timed out first).
    sim = NodeSim(1)
    sim.host.clustered = True
    sim.feed(MemberChanged("leave", "b", "left", {}, "127.0.0.1", 7947, 0.0))
    assert sim.core.gone_nodes == {"b": "left the cluster"}


def test_a_death_of_many_actors_lists_those_that_lost_most_and_counts_all() -> None:
    sim = NodeSim(2)
    actors = [sim.spawn(ECHO, worker=1) for _ in range(150)]
    account = sim.core.ledger.accounts[sim.workers[1].identity]
    for n, actor in enumerate(actors, start=1):
        account.owed[actor] = n
    sim.kill(1)
    letters = [letter for letter in sim.core.recent_dead_letters if letter.get("lost_in_death")]
    assert len(letters) == 100  # (the recent list's length; the rest are counted, not listed)
    assert letters[-1]["count"] == 150 and min(letter["count"] for letter in letters) == 51
    assert sim.core.lost_in_deaths == sim.core.dead_letter_count == sum(range(1, 151))


# -- what the node killed itself: attacks on the hold (review) -------------------------------------------


def _stuck_and_killed(sim: NodeSim, slot: int = 1) -> None:
    sim.host.health[slot] = Health(sim.clock.now, 0.0, 0, "", "")  # a C call that holds its GIL
    sim.advance(3.5)
    assert sim.host.signals == [(slot, signal.SIGKILL)]
    sim.check_invariants()  # (its actors are placed on a live worker, and held)


def test_a_spawned_report_of_the_killed_worker_read_after_the_kill_sends_nothing_on_to_it() -> None:
    # Its Spawned was in the node's socket when the node killed it: binding the actor there sent what had
    # parked for it on to the dying process (an ask failed with WorkerDied, a tell was lost in the death).
    sim = NodeSim(2, hang_timeout=3.0)
    reacts = sim._worker_reacts
    late: list[Spawn] = []

    def spawned_later(effect: ToWorker) -> None:
        if effect.slot == 1 and type(effect.op) is Spawn:
            sim.workers[1].ops.append(effect.op)
            late.append(effect.op)
        else:
            reacts(effect)

    sim._worker_reacts = spawned_later  # type: ignore[method-assign]
    corr = sim.ask("spawn", make_spec(ECHO, (), {}).to_wire(), 1)
    (op,) = late
    a = op.actor_id
    assert sim.route(sim.message(a, "before", ask=True, corr=8)) == "parked"  # (being created)
    _stuck_and_killed(sim)
    assert sim.route(sim.message(a, "after", ask=True, corr=9)) == "parked"
    mark = len(sim.effects)
    sim.workers[1].running.add(a)
    sim.report(1, Spawned(a))  # (sent before it got stuck, read only now)
    assert sim.forwarded(mark) == [] and sim.core.table.lookup(a) is None
    sim.check_invariants()
    sim._worker_reacts = reacts  # type: ignore[method-assign]
    sim.kill(1)
    assert [r for r in sim.of_type(Reply, mark) if r.dst_id == CLIENT and not r.ok] == []
    assert sim.core.registry.actors[a].slot == 0 and sim.forwarded(mark) == ["before", "after"]
    reply = sim.answer(corr)
    assert reply is not None and reply.ok and reply.value[1] == a
    sim.check_invariants()


def test_an_ask_to_a_killed_workers_own_id_fails_once_it_dies() -> None:
    # The worker's own id (its prefix) was held with its actors; what parked for it was dropped, uncounted,
    # at its death: an ask hung until its asker's timeout.
    sim = NodeSim(2, hang_timeout=3.0)
    own = sim.workers[1].prefix << ID_SHIFT
    _stuck_and_killed(sim)
    assert sim.route(sim.message(own, "who?", ask=True, corr=5)) == "parked"
    assert sim.route(sim.message(own, "told")) == "parked"
    mark, letters = len(sim.effects), sim.core.dead_letter_count
    sim.kill(1)
    assert [r.corr for r in sim.of_type(Reply, mark) if not r.ok] == [5]
    assert sim.core.dead_letter_count == letters + 1
    sim.check_invariants()


def test_what_parked_for_a_temporary_actor_of_a_killed_worker_fails_when_it_is_not_restarted() -> None:
    sim = NodeSim(2, hang_timeout=3.0)
    a = sim.spawn(ECHO, worker=1, restart="temporary")
    _stuck_and_killed(sim)
    assert sim.route(sim.message(a, "after", ask=True, corr=9)) == "parked"
    assert sim.route(sim.message(a, "told")) == "parked"
    mark, letters = len(sim.effects), sim.core.dead_letter_count
    sim.kill(1)
    sim.advance(1.0)
    assert a not in sim.core.registry.actors
    assert [r.corr for r in sim.of_type(Reply, mark) if not r.ok] == [9]
    assert sim.core.dead_letter_count == letters + 1
    sim.check_invariants()


def test_past_max_parked_what_comes_for_a_killed_workers_actor_is_refused_and_counted() -> None:
    sim = NodeSim(2, hang_timeout=3.0, max_parked=2)
    a = sim.spawn(ECHO, worker=1)
    _stuck_and_killed(sim)
    assert [sim.route(sim.message(a, i)) for i in range(3)] == ["parked", "parked", "undeliverable"]
    assert sim.route(sim.message(a, "ask", ask=True, corr=4)) == "undeliverable"
    assert sim.core.dead_letters_by_reason["parked_overflow"] == 1
    mark = len(sim.effects)
    sim.kill(1)
    assert sim.forwarded(mark) == [0, 1]
    sim.check_invariants()


def test_a_handoff_from_the_killed_worker_read_after_the_kill_moves_the_actor_on() -> None:
    sim = NodeSim(2, hang_timeout=3.0)
    sim.auto_handoff = False
    movers = [sim.spawn(ECHO, worker=1, movable=True) for _ in range(4)]
    sim.call(sim.core.rebalance)
    handing = [op.actor_id for op in sim.workers[1].ops if type(op) is Handoff]
    assert handing
    a = handing[0]
    _stuck_and_killed(sim)
    assert sim.route(sim.message(a, "after", ask=True, corr=9)) == "parked"
    mark = len(sim.effects)
    sim.hand_off(1, a)  # (its HandedOff was in the node's socket already)
    sim.kill(1)
    assert sim.core.registry.actors[a].slot == 0 and sim.forwarded(mark) == ["after"]
    assert all(sim.core.registry.actors[m].slot == 0 for m in movers)
    sim.check_invariants()


def test_an_actor_the_killed_worker_registers_after_the_kill_is_held_and_recreated() -> None:
    # An actor spawned by an actor of the worker, reported before the worker got stuck and read after the
    # node killed it: it was bound to the dying process, so what was sent to it went there and was lost.
    sim = NodeSim(2, hang_timeout=3.0)
    child = (sim.workers[1].prefix << ID_SHIFT) + 1
    _stuck_and_killed(sim)
    sim.workers[1].running.add(child)
    sim.report(1, Register(child, make_spec(ECHO, (), {})))
    assert sim.core.table.lookup(child) is None
    sim.check_invariants()
    assert sim.route(sim.message(child, "after", ask=True, corr=9)) == "parked"
    mark = len(sim.effects)
    sim.kill(1)
    assert [r for r in sim.of_type(Reply, mark) if r.dst_id == CLIENT and not r.ok] == []
    assert sim.core.registry.actors[child].slot == 0 and sim.forwarded(mark) == ["after"]
    sim.check_invariants()
