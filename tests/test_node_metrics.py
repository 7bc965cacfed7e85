"""What the node tells a dashboard and /metrics: the counters of ``stats`` and the ``supervision`` tree.

Most on a virtual clock with simulated workers (tests/node_sim.py); the last
test runs real processes, to see the driver's hot path feed the same counters.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from actors import Echo, Stateful
from conftest import wait_for
from node_sim import CLIENT, NodeSim

from gorilix import ActorError, ActorSystem
from gorilix.backoff import Backoff
from gorilix.breaker import BreakerConfig
from gorilix.control.supervisors import MAX_CHILDREN_SHOWN
from gorilix.node_core import DEAD_LETTER_REASONS
from gorilix.supervision import ONE_FOR_ALL, ONE_FOR_ONE, Strategy
from gorilix.supervisor import ChildSpec
from gorilix.transport import codec
from gorilix.transport.frames import pack_route
from gorilix.transport.routing import ASK_LATENCY_BOUNDS, ASK_SAMPLE_EVERY
from gorilix.workers.protocol import DeadLetter

ECHO = "actors:Echo"


def _answer(sim: NodeSim, *op: Any) -> Any:
    reply = sim.answer(sim.ask(*op))
    assert reply is not None and reply.ok, reply
    return reply.value


def _stats(sim: NodeSim) -> dict[str, Any]:
    return dict(_answer(sim, "stats"))


def _supervisor(sim: NodeSim, strategy: Strategy, name: str = "svc") -> int:
    return int(_answer(sim, "spawn_supervisor", name, strategy.to_wire(), None, "permanent"))


NO_WAIT = Strategy(ONE_FOR_ONE, max_restarts=100, within_seconds=10.0, backoff=Backoff.none())


# -- asks, replies, tells -----------------------------------------------------------------


def test_asks_replies_and_tells_are_counted_as_the_router_forwards_them() -> None:
    sim = NodeSim(2)
    actor = sim.spawn(ECHO, worker=0)
    assert [sim.route(sim.message(actor, n)) for n in range(3)] == ["sent"] * 3
    for corr in (11, 12):
        assert sim.route(sim.message(actor, "ask", ask=True, corr=corr)) == "sent"
        assert sim.route(sim.reply(actor, corr, "answer")) == "sent"
    stats = _stats(sim)
    assert (stats["forwarded"], stats["asks"], stats["replies"], stats["tells"]) == (7, 2, 2, 3)
    # A reply whose asker is not routed now is not forwarded: not counted, but its ask is answered.
    assert sim.route(sim.message(actor, "ask", ask=True, corr=13)) == "sent"
    sim.core.table.unbind(CLIENT)
    assert sim.route(sim.reply(actor, 13, "late")) == "undeliverable"
    stats = _stats(sim)
    assert (stats["asks"], stats["replies"], stats["tells"]) == (3, 2, 3)
    assert sim.core.table.inflight[sim.workers[0].identity] == {}
    sim.check_invariants()


# -- dead letters by why ---------------------------------------------------------------------


def test_dead_letters_are_counted_by_reason_and_the_counts_add_up() -> None:
    sim = NodeSim(2, max_parked=1)
    kept = sim.spawn(ECHO, worker=0)
    doomed = sim.spawn(ECHO, worker=1)
    # Lost in a death: 4 tells the worker never settled.
    sim.core.ledger.accounts[sim.workers[1].identity].owed[doomed] = 4
    sim.auto_attach = False
    sim.kill(1)  # (doomed is re-created on worker 0)
    # No such actor: 2 tells.
    assert [sim.route(sim.message(12345, n)) for n in range(2)] == ["undeliverable"] * 2
    # Past max_parked for an actor being re-created: 1 parks, 1 does not.
    sim.kill(0)
    assert [sim.route(sim.message(kept, n)) for n in range(2)] == ["parked", "undeliverable"]
    sim.attach(0)
    sim.attach(1)
    # Anything else: a publish that reached nobody.
    _answer(sim, "publish", "nobody-listens", codec.encode("hello"))
    # Its node is down: 1.
    sim.host.clustered = True
    sim.member("dead", "far", "dead")
    remote = [b"", pack_route("far", 7), *sim.message(7, "x")[2:]]
    sim.call(sim.core.remote_failed, "far", remote)
    # A worker's own: a full mailbox (queue_full), no actor there (no_actor), and what it cannot name (other).
    for reason in ("MailboxFull: mailbox of x is full (1 message)", "ActorNotFound: no actor sim/0x1",
                   "UnknownMessageType: no class foo.Bar"):
        sim.report(0, DeadLetter(kept, reason))

    by_reason = _stats(sim)["dead_letters_by_reason"]
    assert by_reason == {"lost_in_death": 4, "queue_full": 1, "no_actor": 3, "parked_overflow": 1,
                         "node_down": 1, "other": 2}
    assert list(by_reason) == list(DEAD_LETTER_REASONS)
    assert sum(by_reason.values()) == _stats(sim)["dead_letters"] == 12
    sim.check_invariants()


# -- worker deaths ---------------------------------------------------------------------------


def test_worker_deaths_count_every_death_but_not_the_stop_of_the_node() -> None:
    sim = NodeSim(2)
    sim.kill(0)
    sim.kill(1, "exited with code 1")
    sim.kill(0)
    assert _stats(sim)["worker_deaths"] == 3
    sim.core.stopping = True
    sim.kill(1, "exited with code 0")  # (the node stops its workers: no death)
    assert sim.core.worker_deaths == 3


# -- restarts ----------------------------------------------------------------------------------


def test_restarts_are_counted_per_child_and_per_supervisor_and_outlive_a_removed_child() -> None:
    sim = NodeSim(2)
    sup = _supervisor(sim, NO_WAIT)
    first = sim.spawn(ECHO, sup=sup, key="first")
    second = sim.spawn(ECHO, sup=sup, key="second")
    for child in (first, first, second):
        sim.crash(child)
    state = sim.core.lifecycle.supervisors[sup]
    assert [(c.key, c.restarts) for c in state.children] == [("first", 2), ("second", 1)]
    assert state.restarts == 3
    assert _answer(sim, "remove_child", sup, "first") is True
    assert state.restarts == 3  # (restarts carried out stay counted)
    assert _stats(sim)["restarts_by_supervisor"] == {"svc": 3, "root": 0}
    assert _stats(sim)["restarts"] == 3
    assert _answer(sim, "stop_supervisor", sup) is True
    assert "svc" not in _stats(sim)["restarts_by_supervisor"]
    assert _stats(sim)["restarts"] == 3  # (the node's total never goes down: a rate of it stays true)


def test_a_restart_is_counted_when_carried_out_not_when_decided() -> None:
    sim = NodeSim(2)
    sup = _supervisor(sim, Strategy(ONE_FOR_ONE, max_restarts=10, within_seconds=60.0,
                                    backoff=Backoff.linear(base=1.0, max=10.0)))
    child = sim.spawn(ECHO, sup=sup, key="c")
    sim.crash(child)
    assert sim.core.lifecycle.supervisors[sup].restarts == 0  # (waiting for its backoff)
    sim.advance(1.0)
    assert sim.core.lifecycle.supervisors[sup].restarts == 1


def test_one_for_all_counts_each_child_it_recreates_and_a_death_counts_each_lost_child() -> None:
    sim = NodeSim(2)
    sup = _supervisor(sim, Strategy(ONE_FOR_ALL, max_restarts=10, within_seconds=10.0, backoff=Backoff.none()))
    a = sim.spawn(ECHO, sup=sup, key="a", worker=0)
    sim.spawn(ECHO, sup=sup, key="b", worker=1)
    sim.crash(a)
    assert sim.core.lifecycle.supervisors[sup].restarts == 2
    loose = [sim.spawn(ECHO, worker=1) for _ in range(3)]  # (under the root)
    sim.kill(1)
    root = sim.core.lifecycle.root
    assert root.restarts == 3 and all(root.get(actor).restarts == 1 for actor in loose)  # type: ignore[union-attr]
    assert sim.core.lifecycle.supervisors[sup].restarts == 4  # b was lost with worker 1: both restarted again
    assert _stats(sim)["restarts_by_supervisor"] == {"svc": 4, "root": 3}
    sim.check_invariants()


def test_a_nested_supervisor_brought_back_by_its_parent_is_a_restart_of_the_parent() -> None:
    sim = NodeSim(2)
    outer = _supervisor(sim, NO_WAIT, name="outer")
    inner = int(_answer(sim, "spawn_supervisor", "inner", Strategy(ONE_FOR_ONE, max_restarts=0).to_wire(),
                        outer, "permanent"))
    child = sim.spawn(ECHO, sup=inner, key="c")
    sim.crash(child)  # past inner's limit of 0: it gives up, and outer restarts it with its child
    lifecycle = sim.core.lifecycle
    assert lifecycle.supervisors[outer].restarts == 1 and lifecycle.supervisors[outer].get(inner).restarts == 1  # type: ignore[union-attr]
    assert lifecycle.supervisors[inner].restarts == 1  # (its child re-created with it)
    assert sim.core.registry.actors[child].placed


# -- the supervision op ---------------------------------------------------------------------------


def test_supervision_lists_each_supervisor_with_its_breaker_and_children() -> None:
    sim = NodeSim(2)
    strategy = Strategy(ONE_FOR_ONE, max_restarts=10, within_seconds=30.0, backoff=Backoff.none(),
                        circuit_breaker=BreakerConfig(trip_threshold=2, failure_window=60.0, reset_timeout=5.0))
    sup = _supervisor(sim, strategy)
    steady = sim.spawn(ECHO, sup=sup, key="steady", worker=1)
    flaky = sim.spawn(ECHO, sup=sup, key="flaky", worker=0)
    nested = int(_answer(sim, "spawn_supervisor", "nested", NO_WAIT.to_wire(), sup, "permanent"))
    sim.crash(flaky)  # restarted at once: one failure, the breaker stays closed
    sim.crash(flaky)  # the second failure trips it: the restart waits for its reset timeout

    rows = _answer(sim, "supervision")
    assert [row["name"] for row in rows] == ["root", "svc", "nested"]  # parents before children
    root, svc, inner = rows
    assert root["parent"] is None and svc["parent"] == root["id"] and inner["parent"] == sup == svc["id"]
    assert root["breaker"] is None and root["max_restarts"] is None
    assert (svc["strategy"], svc["max_restarts"], svc["within_seconds"]) == ("one_for_one", 10, 30.0)
    assert svc["restarts"] == 1 and svc["children_total"] == 3
    assert svc["breaker"] == {"state": "open", "trips": 1, "failures": 2}
    assert svc["children"] == [
        {"key": "flaky", "id": flaky, "class": ECHO, "supervisor": False, "restarts": 1, "worker": None,
         "running": False},  # (down, waiting for the breaker)
        {"key": "steady", "id": steady, "class": ECHO, "supervisor": False, "restarts": 0, "worker": 1,
         "running": True},
        {"key": "nested", "id": nested, "class": None, "supervisor": True, "restarts": 0, "worker": None,
         "running": True},
    ]
    sim.advance(5.0)  # half-open: the restart goes ahead, and its success closes the breaker
    [_, svc, _] = _answer(sim, "supervision")
    assert svc["breaker"]["state"] == "closed" and svc["restarts"] == 2
    assert svc["children"][0]["restarts"] == 2 and svc["children"][0]["running"]
    sim.check_invariants()


def test_supervision_shows_at_most_50_children_most_restarted_first_then_in_start_order() -> None:
    sim = NodeSim(2)
    sup = _supervisor(sim, NO_WAIT)
    children = [sim.spawn(ECHO, sup=sup, key=f"c{n}") for n in range(60)]
    [_, row] = _answer(sim, "supervision")
    assert [c["key"] for c in row["children"]] == [f"c{n}" for n in range(MAX_CHILDREN_SHOWN)]
    for child in (children[55], children[55], children[30], children[59]):
        sim.crash(child)
    [_, row] = _answer(sim, "supervision")
    shown = [(c["key"], c["restarts"]) for c in row["children"]]
    assert len(shown) == MAX_CHILDREN_SHOWN == 50 and row["children_total"] == 60
    assert shown[:4] == [("c55", 2), ("c30", 1), ("c59", 1), ("c0", 0)]
    assert [key for key, _ in shown[3:]] == [f"c{n}" for n in range(60) if n not in (30, 55, 59)][:47]


# -- real processes ---------------------------------------------------------------------------------


def test_a_real_node_counts_asks_times_a_sample_and_reports_deaths_and_restarts(system: ActorSystem) -> None:
    echo = system.spawn(Echo, worker=0)
    for n in range(10 * ASK_SAMPLE_EVERY):
        assert echo.ask(n) == n
    sup = system.spawn_supervisor("metrics-sup", Strategy(ONE_FOR_ONE, max_restarts=10))
    child = sup.add_child(ChildSpec(id="counter", actor_class=Stateful, args=("counter",), worker=1))
    with pytest.raises(ActorError, match="crashed on purpose"):
        child.ask("crash")
    assert child.ask("inc") == 1  # (restarted: a fresh count)
    system.kill_worker(1, signal.SIGKILL)  # (answered once the death is handled)

    stats = system.stats()
    assert stats["asks"] >= 10 * ASK_SAMPLE_EVERY + 2 and stats["replies"] >= stats["asks"] - 1
    assert stats["forwarded"] >= stats["asks"] + stats["replies"] and stats["tells"] >= 0
    latency = stats["ask_latency"]
    assert latency["sample_every"] == ASK_SAMPLE_EVERY and latency["bounds"] == list(ASK_LATENCY_BOUNDS)
    assert latency["count"] >= 10 and sum(latency["counts"]) == latency["count"]
    assert 0 < latency["sum"] < latency["count"] * 1.0  # (each well under a second on an idle node)
    assert stats["worker_deaths"] == 1
    assert sum(stats["dead_letters_by_reason"].values()) == stats["dead_letters"]

    def restarted_twice() -> dict[str, Any] | None:
        rows = {row["name"]: row for row in system._control("supervision")}
        row = rows.get("metrics-sup")
        return row if row and row["restarts"] == 2 and row["children"][0]["running"] else None

    row = wait_for(restarted_twice, 10, "the child re-created after its crash and its worker's death")
    assert row["parent"] == system._control("supervision")[0]["id"] and row["breaker"] is None
    [shown] = row["children"]
    assert shown["worker"] in (0, 1)  # (the live worker with fewer actors when it was re-created)
    assert shown == {"key": "counter", "id": child.id, "class": "actors:Stateful", "supervisor": False,
                     "restarts": 2, "worker": shown["worker"], "running": True}
    assert system.stats()["restarts_by_supervisor"]["metrics-sup"] == 2
