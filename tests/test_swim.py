"""Exact behaviour of the SWIM engine on 2-5 members, a fake clock and a hand-run network.

The network here delivers every datagram at once and in order, and ticks
each engine exactly at its deadline, so times in these tests are exact
consequences of the configuration, not of scheduling luck.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gorilix.cluster import swim, wire
from gorilix.cluster.swim import (
    EventKind,
    Member,
    MemberStatus,
    SwimConfig,
    SwimEngine,
    suspicion_timeout,
)
from gorilix.transport.errors import ClusterError

deterministic = settings(derandomize=True, database=None, deadline=None, max_examples=300)

HOST = "10.0.0.1"
Address = tuple[str, int]
Fake = Callable[[list[Any], Address], list[bytes]]


def packet(*messages: list[Any]) -> bytes:
    """A datagram in the engine's wire format (see the swim module docstring)."""
    return msgpack.packb([swim.PROTOCOL_VERSION, *messages], use_bin_type=True)


class Net:
    """Zero-delay, in-order network of engines (and scripted fake peers) on a fake clock."""

    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.engines: dict[Address, SwimEngine] = {}
        self.down: set[Address] = set()  # crashed: nothing delivered, no ticks
        self.blocked: set[tuple[Address, Address]] = set()  # (source, destination) links that drop all
        self.fakes: dict[Address, Fake] = {}
        self.trace: list[tuple[float, Address, Address, list[Any]]] = []
        self.largest = 0  # bytes of the largest datagram sent
        self.events: list[tuple[float, str, EventKind, str, int]] = []

    def clock(self) -> float:
        return self.now

    def add(self, name: str, port: int, *, meta: dict[str, Any] | None = None,
            config: SwimConfig | None = None, host: str = HOST,
            meta_check: Callable[[dict[str, Any]], str | None] | None = None) -> SwimEngine:
        engine = SwimEngine(name, host, port, meta, config or SwimConfig(),
                            clock=self.clock, rng=random.Random(self.rng.getrandbits(32)),
                            meta_check=meta_check)
        self.engines[(host, port)] = engine
        self.pump()
        return engine

    def pump(self) -> None:
        """Deliver everything in flight, at this instant, until the network is quiet."""
        busy = True
        while busy:
            busy = False
            for source, engine in list(self.engines.items()):
                for event in engine.take_events():
                    self.events.append((self.now, engine.name, event.kind, event.member.name,
                                        event.member.incarnation))
                for destination, data in engine.take_outbox():
                    busy = True
                    self.largest = max(self.largest, len(data))
                    self.trace.append((self.now, source, destination,
                                       msgpack.unpackb(data, raw=False, strict_map_key=False)))
                    if source in self.down or destination in self.down:
                        continue
                    if (source, destination) in self.blocked:
                        continue
                    fake = self.fakes.get(destination)
                    if fake is not None:
                        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
                        for reply in fake(decoded[1:], source):
                            engine.receive(reply, destination)
                    elif destination in self.engines:
                        self.engines[destination].receive(data, source)

    def run(self, duration: float, until: Callable[[], bool] | None = None) -> float:
        """Advance the clock, ticking engines at their deadlines; stop early when ``until()``."""
        end = self.now + duration
        while True:
            self.pump()
            if until is not None and until():
                return self.now
            live = [e for a, e in self.engines.items() if a not in self.down]
            deadline = min((e.next_deadline() for e in live), default=math.inf)
            if deadline > end:
                self.now = end
                self.pump()
                return self.now
            self.now = max(self.now, deadline)
            for engine in live:
                if engine.next_deadline() <= self.now:
                    engine.tick()

    # -- views --------------------------------------------------------------

    def view(self, observer: SwimEngine, name: str) -> Member | None:
        return next((m for m in observer.members() if m.name == name), None)

    def seen(self, observer: str, kind: EventKind, about: str) -> list[float]:
        return [t for t, obs, k, name, _ in self.events if obs == observer and k is kind and name == about]

    def sent(self, source: Address, destination: Address | None, kind: int) -> list[tuple[float, list[Any]]]:
        """(time, main message) of datagrams whose first message is of ``kind``."""
        return [(t, decoded[1]) for t, s, d, decoded in self.trace
                if s == source and (destination is None or d == destination) and decoded[1][0] == kind]


def addr(port: int) -> Address:
    return (HOST, port)


def answer_pings(engine: SwimEngine) -> None:
    """Ack the engine's pings as their targets would: a member it heard of is admitted once it answered."""
    for destination, data in engine.take_outbox():
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if decoded[1][0] == swim.PING:
            engine.receive(packet([swim.ACK, decoded[1][1]]), destination)


def cluster(net: Net, *names: str, config: SwimConfig | None = None) -> list[SwimEngine]:
    """Start members on ports 7001.. and join each through the first."""
    engines = [net.add(name, 7001 + i, config=config) for i, name in enumerate(names)]
    for engine in engines[1:]:
        engine.join([addr(7001)])
        net.pump()
    net.run(2.0)
    for engine in engines:
        assert {m.name for m in engine.members()} == set(names), engine.name
    return engines


# ---------------------------------------------------------------- formulas


def test_formulas_match_the_documented_ones() -> None:
    assert swim.retransmit_limit(4, 1000) == 16
    assert swim.retransmit_limit(4, 3) == 4
    # suspicion_mult * max(1, log10(n)) * probe_interval, then x max_mult, shrinking to it
    assert suspicion_timeout(4, 6, 1000, 1.0, 3, 0) == pytest.approx(72.0)
    assert suspicion_timeout(4, 6, 1000, 1.0, 3, 3) == pytest.approx(12.0)
    assert suspicion_timeout(4, 6, 1000, 1.0, 3, 1) == pytest.approx(72 - 60 * math.log(2) / math.log(4))
    assert suspicion_timeout(4, 6, 5, 1.0, 3, 0) == pytest.approx(24.0)  # log10(5) < 1
    assert suspicion_timeout(4, 6, 5, 1.0, 0, 0) == pytest.approx(4.0)  # nobody to confirm
    assert swim.pull_interval_for(30.0, 32) == 30.0
    assert swim.pull_interval_for(30.0, 1000) == 180.0


# -------------------------------------------------------------------- join


def test_join_via_seed_and_gossip_to_the_rest() -> None:
    net = Net()
    a = net.add("a", 7001, meta={"router": "tcp://10.0.0.1:7001"})
    b = net.add("b", 7002)
    b.join([addr(7001)])
    net.pump()  # one push-pull each way, no timer needed
    assert b.joined_count() == 1
    assert {m.name: m.status for m in a.members()} == {"a": MemberStatus.ALIVE, "b": MemberStatus.ALIVE}
    assert {m.name: m.status for m in b.members()} == {"a": MemberStatus.ALIVE, "b": MemberStatus.ALIVE}
    assert net.view(b, "a").meta == {"router": "tcp://10.0.0.1:7001"}
    assert net.seen("a", EventKind.JOIN, "b") == [0.0]
    assert net.seen("b", EventKind.JOIN, "a") == [0.0]

    c = net.add("c", 7003)
    c.join([addr(7001)])
    net.run(1.0)  # a gossips c's arrival to b
    assert net.view(b, "c") is not None and net.view(b, "c").status is MemberStatus.ALIVE
    assert net.seen("b", EventKind.JOIN, "c")
    assert all(e.stats.malformed == 0 for e in (a, b, c))


def test_join_retries_a_seed_that_is_not_up_yet() -> None:
    net = Net()
    a = net.add("a", 7001)
    net.down.add(addr(7001))
    b = net.add("b", 7002)
    b.join([addr(7001)])
    net.run(2.5)
    assert b.joined_count() == 0 and len(b.members()) == 1
    requests = net.sent(addr(7002), addr(7001), swim.PUSH_PULL)
    assert [t for t, _ in requests] == [0.0, 1.0, 2.0]  # every join_retry
    net.down.discard(addr(7001))
    net.run(1.0)
    assert b.joined_count() == 1
    assert {m.name for m in a.members()} == {"a", "b"}
    net.run(5.0)
    assert len(net.sent(addr(7002), addr(7001), swim.PUSH_PULL)) == 4  # retries stop once joined


def test_join_ignores_a_seed_list_naming_ourselves() -> None:
    net = Net()
    a = net.add("a", 7001)
    a.join([addr(7001)])
    net.run(3.0)
    assert a.joined_count() == 0 and net.trace == []


# ----------------------------------------------------------------- probing


def test_ping_ack_once_per_probe_interval() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    start = net.now
    probes = a.stats.probes
    net.run(10.0)
    assert a.stats.probes - probes == 10  # one probe per probe_interval
    pings = [(t, m) for t, m in net.sent(addr(7001), addr(7002), swim.PING) if t >= start]
    acks = [(t, m) for t, m in net.sent(addr(7002), addr(7001), swim.ACK) if t >= start]
    assert len(pings) == 10
    assert [m[1] for _, m in pings] == [m[1] for _, m in acks]  # every ping acked, same seq
    assert all(m[2] == "b" for _, m in pings)  # the ping names its target
    assert [t for t, _ in pings] == pytest.approx([pings[0][0] + i for i in range(10)])
    assert a.stats.indirect_probes == 0 and a.health == 0
    assert not [e for e in net.events if e[2] is not EventKind.JOIN]


def test_ping_for_another_name_is_not_answered() -> None:
    """A member restarted under another name at the same address must not ack for the old one."""
    net = Net()
    a = net.add("a", 7001)
    a.receive(packet([swim.PING, 5, "old-name"]), addr(7009))
    assert a.take_outbox() == [] and a.stats.malformed == 0
    a.receive(packet([swim.PING, 6, "a"]), addr(7009))
    (destination, data), = a.take_outbox()
    assert destination == addr(7009)
    assert msgpack.unpackb(data)[1] == [swim.ACK, 6]


def test_indirect_probe_through_a_third_member_when_the_direct_path_is_lossy() -> None:
    net = Net()
    a, b, c = cluster(net, "a", "b", "c")
    net.blocked |= {(addr(7001), addr(7002)), (addr(7002), addr(7001))}
    net.run(20.0)
    assert a.stats.indirect_probes > 0
    assert not net.seen("a", EventKind.SUSPECT, "b") and not net.seen("b", EventKind.SUSPECT, "a")
    assert net.view(a, "b").status is MemberStatus.ALIVE and a.health == 0
    # The ping-req carried the probe's sequence number and c answered with it.
    requests = net.sent(addr(7001), addr(7003), swim.PING_REQ)
    forwarded = {m[1] for _, m in net.sent(addr(7003), addr(7001), swim.ACK)}
    assert requests and all(m[2] == "b" and (m[3], m[4]) == addr(7002) for _, m in requests)
    assert {m[1] for _, m in requests} <= forwarded


def test_helper_sends_a_nack_after_the_probe_timeout() -> None:
    net = Net()
    a, b, c = cluster(net, "a", "b", "c")
    net.down.add(addr(7002))
    net.run(5.0, until=lambda: bool(net.sent(addr(7003), addr(7001), swim.NACK)))
    (t_req, req), = [r for r in net.sent(addr(7001), addr(7003), swim.PING_REQ)]
    (t_nack, nack), = net.sent(addr(7003), addr(7001), swim.NACK)
    assert nack[1] == req[1]
    assert t_nack - t_req == pytest.approx(SwimConfig().probe_timeout)
    net.run(0.6)
    assert a.health == 0  # the helper answered: the target is the problem, not us


# --------------------------------------------------------- suspicion, death


def test_suspicion_then_dead_at_the_computed_timeout() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    net.run(1.0)
    net.down.add(addr(7002))
    net.run(30.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "b")))
    (t_suspect,) = net.seen("a", EventKind.SUSPECT, "b")
    (t_dead,) = net.seen("a", EventKind.DEAD, "b")
    # Suspected at the end of the probe period of the failed probe (its first ping; the
    # second, at the probe timeout, is the retry that goes with the helpers' ping-reqs)...
    pings = [(t, m[1]) for t, m in net.sent(addr(7001), addr(7002), swim.PING) if t < t_suspect]
    t_ping, seq = pings[-1]
    assert [t for t, s in pings if s == seq] == [t_ping - 0.5, t_ping]
    assert t_suspect - (t_ping - 0.5) == pytest.approx(1.0)
    # ... and dead after suspicion_mult * max(1, log10(2)) * probe_interval: with two
    # members nobody can confirm, so the timer starts at its minimum.
    assert t_dead - t_suspect == pytest.approx(suspicion_timeout(4, 6, 2, 1.0, 0, 0)) == pytest.approx(4.0)
    assert net.view(a, "b").status is MemberStatus.DEAD
    assert net.view(a, "b").status_since == t_dead


class FakePeers:
    """Scripted members: alive ones ack pings and nack ping-reqs for the dead one."""

    def __init__(self, net: Net, alive: dict[str, int], dead: dict[str, int]) -> None:
        self.alive = alive
        for port in alive.values():
            net.fakes[addr(port)] = self.answer
        for port in dead.values():
            net.fakes[addr(port)] = lambda messages, source: []

    def answer(self, messages: list[Any], source: Address) -> list[bytes]:
        first = messages[0]
        if first[0] == swim.PING:
            return [packet([swim.ACK, first[1]])]
        if first[0] == swim.PING_REQ and first[2] not in self.alive:
            return [packet([swim.NACK, first[1]])]
        return []


@pytest.mark.parametrize("confirmers", [[], ["b"], ["b", "b"], ["b", "c"]])
def test_suspicion_timeout_shrinks_with_independent_confirmations(confirmers: list[str]) -> None:
    net = Net()
    a = net.add("a", 7001)
    FakePeers(net, alive={"b": 7002, "c": 7003}, dead={"d": 7004})
    a.preload([Member(name, HOST, port, 0, MemberStatus.ALIVE, {}, 0.0)
               for name, port in (("b", 7002), ("c", 7003), ("d", 7004))])
    net.run(10.0, until=lambda: bool(net.seen("a", EventKind.SUSPECT, "d")))
    (t0,) = net.seen("a", EventKind.SUSPECT, "d")
    for name in confirmers:
        net.run(0.5)
        a.receive(packet([swim.SUSPECT, "d", 0, name]), addr(7002))
    net.run(60.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "d")))
    (t_dead,) = net.seen("a", EventKind.DEAD, "d")
    # n = 4: minimum 4 s, maximum 24 s, k = min(indirect_checks, n - 2) = 2 confirmations
    # expected; a's own repeated probes of d do not confirm its own suspicion.
    expected = suspicion_timeout(4, 6, 4, 1.0, 2, len(set(confirmers)))
    assert t_dead - t0 == pytest.approx(expected)
    assert expected == pytest.approx({0: 24.0, 1: 24 - 20 * math.log(2) / math.log(3), 2: 4.0}[len(set(confirmers))])
    assert a.health == 0  # helpers nacked: our own health is fine
    assert net.view(a, "b").status is MemberStatus.ALIVE


def test_refutation_bumps_the_incarnation() -> None:
    net = Net()
    a, b, c = cluster(net, "a", "b", "c")
    cut = {(addr(7002), addr(p)) for p in (7001, 7003)} | {(addr(p), addr(7002)) for p in (7001, 7003)}
    net.blocked |= cut
    suspected = lambda: bool(net.seen("a", EventKind.SUSPECT, "b") or net.seen("c", EventKind.SUSPECT, "b"))  # noqa: E731
    net.run(10.0, until=suspected)
    net.blocked -= cut
    net.run(10.0)
    assert b.stats.refutations >= 1
    inc = b.local_member().incarnation
    assert inc >= 1
    for observer in (a, c):
        m = net.view(observer, "b")
        assert m.status is MemberStatus.ALIVE and m.incarnation == inc
    assert net.seen("a", EventKind.ALIVE, "b") or net.seen("c", EventKind.ALIVE, "b")
    assert not [e for e in net.events if e[2] is EventKind.DEAD]


def test_a_direct_accusation_is_refuted_at_once() -> None:
    net = Net()
    a = net.add("a", 7001)
    for kind in (swim.SUSPECT, swim.DEAD):
        before = a.local_member().incarnation
        a.receive(packet([kind, "a", before, "x"]), addr(7009))
        assert a.local_member().incarnation == before + 1
    a.receive(packet([swim.LEAVE, "a", 2]), addr(7009))  # an old life's goodbye is no goodbye
    assert a.local_member().incarnation == 3 and a.local_member().status is MemberStatus.ALIVE
    a.receive(packet([swim.SUSPECT, "a", 1, "x"]), addr(7009))  # stale: below our incarnation
    assert a.local_member().incarnation == 3 and a.stats.refutations == 3


# ------------------------------------------------------------ leave, forget


def test_leave_is_left_for_the_others_not_dead() -> None:
    net = Net()
    a, b, c = cluster(net, "a", "b", "c")
    c.leave()
    assert c.local_member().status is MemberStatus.LEFT
    net.run(2.0)
    probes = c.stats.probes
    for observer in (a, b):
        assert net.view(observer, "c").status is MemberStatus.LEFT
        assert len(net.seen(observer.name, EventKind.LEAVE, "c")) == 1
    net.down.add(addr(7003))  # the process goes away after its goodbye
    net.run(20.0)
    assert c.stats.probes == probes  # a leaving member stops probing
    for observer in (a, b):
        assert net.view(observer, "c").status is MemberStatus.LEFT
    assert not [e for e in net.events if e[3] == "c" and e[2] in (EventKind.DEAD, EventKind.SUSPECT)]
    since = net.view(a, "c").status_since
    net.run(since + 30.0 - net.now - 0.01)
    assert net.view(a, "c") is not None
    net.run(0.02)
    assert net.view(a, "c") is None
    assert {m.name for m in a.members()} == {"a", "b"}


def test_dead_members_are_forgotten_after_forget_after() -> None:
    net = Net()
    a, b = cluster(net, "a", "b", config=SwimConfig(forget_after=12.0))
    net.down.add(addr(7002))
    net.run(30.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "b")))
    since = net.view(a, "b").status_since
    net.run(since + 12.0 - net.now - 0.01)
    assert net.view(a, "b").status is MemberStatus.DEAD
    net.run(0.02)
    assert net.view(a, "b") is None and len(a.members()) == 1


# ------------------------------------------------------------------- rejoin


def test_restart_under_the_same_name_and_address_rejoins() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    net.down.add(addr(7002))
    net.run(30.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "b")))
    old = net.view(a, "b").incarnation
    net.down.discard(addr(7002))
    b2 = net.add("b", 7002)  # a fresh process: incarnation 0 again
    b2.join([addr(7001)])
    start = net.now
    net.run(1.0, until=lambda: net.view(a, "b").status is MemberStatus.ALIVE)
    # b2 learned from a's state that it was declared dead and refuted with a higher incarnation.
    assert net.now - start <= SwimConfig().gossip_interval
    assert net.view(a, "b").incarnation > old == 0
    assert net.seen("a", EventKind.JOIN, "b")[-1] == net.now
    assert b2.stats.refutations == 1


def test_restart_at_a_new_address_rejoins_at_once() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    net.down.add(addr(7002))
    net.run(30.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "b")))
    b2 = net.add("b", 7012)
    b2.join([addr(7001)])
    net.pump()  # no timer: the join itself carries the news
    m = net.view(a, "b")
    assert m.status is MemberStatus.ALIVE and (m.address, m.port) == addr(7012)
    assert net.seen("a", EventKind.JOIN, "b")[-1] == net.now
    net.run(10.0)
    assert net.view(a, "b").port == 7012 and net.view(a, "b").status is MemberStatus.ALIVE


def test_restart_at_the_same_address_before_it_was_found_dead_rejoins_at_once() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    b2 = net.add("b", 7002)  # killed and restarted at once: a still lists the old life alive
    b2.join([addr(7001)])
    net.pump()
    assert b2.name_conflict is None and b2.joined_count() == 1
    assert {m.name for m in b2.members()} == {"a", "b"}
    net.run(10.0)
    assert net.view(a, "b").status is MemberStatus.ALIVE and net.view(a, "b").port == 7002
    assert a.stats.name_conflicts == 0


# ------------------------------------------------------------ name conflicts


def test_a_join_under_a_name_a_live_member_holds_elsewhere_is_refused() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    b2 = net.add("b", 7012)  # a second node that took the same name
    b2.join([addr(7001)])
    ports = set()
    for _ in range(30):  # the entry used to flip between the two, each refuting the other
        net.run(1.0)
        ports.add(net.view(a, "b").port)
    assert ports == {7002}
    assert net.view(a, "b").status is MemberStatus.ALIVE
    assert b2.name_conflict is not None
    assert (b2.name_conflict.held_at, b2.name_conflict.seed) == (addr(7002), addr(7001))
    assert "'b' is taken" in b2.name_conflict.message(addr(7012))
    assert b2.joined_count() == 0 and {m.name for m in b2.members()} == {"b"}  # nothing of the answer applied
    assert len(net.sent(addr(7012), addr(7001), swim.PUSH_PULL)) == 1  # and the join stopped
    assert a.stats.name_conflicts >= 1 and b.stats.refutations == 0
    assert net.seen("a", EventKind.UPDATE, "b") == []


def test_a_join_under_the_seeds_own_name_is_refused_not_ignored() -> None:
    net = Net()
    a = net.add("host", 7001)
    a2 = net.add("host", 7002)  # two nodes on one host, both named after it
    a2.join([addr(7001)])
    net.pump()
    assert a2.name_conflict is not None and a2.name_conflict.held_at == addr(7001)
    assert [m.name for m in a.members()] == ["host"] and net.view(a, "host").port == 7001
    assert a.stats.name_conflicts >= 1
    net.run(5.0)
    assert len(net.sent(addr(7002), addr(7001), swim.PUSH_PULL)) == 1


def test_gossip_of_a_live_members_name_at_another_address_is_refused() -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    inc = net.view(a, "b").incarnation
    a.receive(packet([swim.ALIVE, "b", inc + 5, HOST, 7099, {}]), addr(7099))
    m = net.view(a, "b")
    assert (m.port, m.incarnation) == (7002, inc)
    assert a.stats.name_conflicts == 1
    # Once it is dead, the name may move: a restart elsewhere.
    net.down.add(addr(7002))
    net.run(30.0, until=lambda: bool(net.seen("a", EventKind.DEAD, "b")))
    a.receive(packet([swim.ALIVE, "b", inc + 5, HOST, 7099, {}]), addr(7099))
    assert net.view(a, "b").port == 7099 and net.view(a, "b").status is MemberStatus.ALIVE


def test_a_name_conflict_is_one_warning_naming_both_addresses(caplog: pytest.LogCaptureFixture) -> None:
    net = Net()
    a, b = cluster(net, "a", "b")
    with caplog.at_level("WARNING", logger="gorilix.cluster.swim"):
        for port in range(7100, 7110):
            a.receive(packet([swim.ALIVE, "b", 9, HOST, port, {}]), addr(port))
        a.receive(packet([swim.ALIVE, "a", 9, HOST, 7200, {}]), addr(7200))  # our own name, elsewhere
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "'b'" in warnings[0] and f"{HOST}:7100" in warnings[0] and f"{HOST}:7002" in warnings[0]
    assert a.stats.name_conflicts == 11
    net.now += swim.CONFLICT_WARN_EVERY
    with caplog.at_level("WARNING", logger="gorilix.cluster.swim"):
        a.receive(packet([swim.PUSH_PULL, 77, True, "a"]), addr(7300))  # another "a" joins through us
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "our own name" in warnings[1] and f"{HOST}:7300" in warnings[1]


# -------------------------------------------------------------------- meta


def test_meta_update_is_gossiped() -> None:
    net = Net()
    a, b, c = cluster(net, "a", "b", "c")
    a.update_meta({"router": "tcp://10.0.0.1:7001", "load": 0.5, "workers": [1, 2]})
    assert a.local_member().incarnation == 1
    net.run(1.0)
    for observer in (b, c):
        m = net.view(observer, "a")
        assert m.meta == {"router": "tcp://10.0.0.1:7001", "load": 0.5, "workers": [1, 2]}
        assert m.incarnation == 1
        assert len(net.seen(observer.name, EventKind.UPDATE, "a")) == 1
    assert net.seen("a", EventKind.UPDATE, "a")


def test_bad_meta_is_refused_at_the_caller() -> None:
    net = Net()
    a = net.add("a", 7001)
    with pytest.raises(ClusterError, match="meta must hold only"):
        a.update_meta({"f": object()})
    with pytest.raises(ClusterError, match="meta keys must be str, got the key 1"):
        a.update_meta({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ClusterError, match="meta encodes to .* bytes; the limit is"):
        a.update_meta({"big": "x" * 600})
    assert a.local_member().incarnation == 0 and a.local_member().meta == {}


# A Gorilix node's metadata (what the cluster provider announces and checks, wire.node_meta_problem).
NODE_META = {"router": "tcp://10.0.0.9:7009", "workers": 2, "load": 0.5, "curve": None}
BAD_NODE_META = {
    "router with a space": ("router", "tcp://a b:1"),
    "router port 0": ("router", "tcp://10.0.0.9:0"),
    "router port too big": ("router", "tcp://10.0.0.9:65536"),
    "router port with a sign": ("router", "tcp://10.0.0.9:+5"),
    "router port with a leading zero": ("router", "tcp://10.0.0.9:07009"),
    "router with a source address": ("router", "tcp://10.0.0.9:5;10.0.0.8:6"),
    "router over ipc": ("router", "ipc:///tmp/gorilix"),
    "router a host name": ("router", "tcp://example.com:7009"),
    "router not an address": ("router", "tcp://999.0.0.9:7009"),
    "router unspecified": ("router", "tcp://0.0.0.0:7009"),
    "router not a str": ("router", 7009),
    "router too long": ("router", "tcp://" + "1" * 300),
    "workers a str": ("workers", "many"),
    "workers a bool": ("workers", True),
    "workers zero": ("workers", 0),
    "workers huge": ("workers", 1 << 40),
    "load negative": ("load", -1.0),
    "load nan": ("load", math.nan),
    "load infinite": ("load", math.inf),
    "load a str": ("load", "high"),
    "curve not a key": ("curve", "short"),
    "curve bytes": ("curve", b"x" * 40),
}


def node_meta(**changes: Any) -> dict[str, Any]:
    return {**NODE_META, **changes}


def test_node_meta_check_accepts_what_nodes_announce() -> None:
    assert wire.node_meta_problem(NODE_META) is None
    assert wire.node_meta_problem({}) is None  # a gossip-only member: nothing to check
    assert wire.node_meta_problem(node_meta(load=0, workers=64, curve="rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")) is None
    assert wire.node_meta_problem(node_meta(future_field=[1, "x"])) is None  # unknown fields pass


@pytest.mark.parametrize("name", list(BAD_NODE_META))
def test_node_meta_check_names_the_bad_field(name: str) -> None:
    field, value = BAD_NODE_META[name]
    problem = wire.node_meta_problem(node_meta(**{field: value}))
    assert problem is not None and problem.startswith(f"{field} ")


def _checked(name: str, port: int) -> SwimEngine:
    engine = SwimEngine(name, HOST, port, node_meta(router=f"tcp://{HOST}:{port}"), clock=lambda: 0.0,
                        rng=random.Random(1), meta_check=wire.node_meta_problem)
    engine.take_events()
    return engine


@pytest.mark.parametrize("name", list(BAD_NODE_META))
def test_an_alive_with_bad_node_meta_is_dropped_and_counted_the_rest_applies(name: str) -> None:
    field, value = BAD_NODE_META[name]
    engine = _checked("a", 7001)
    evil = [swim.ALIVE, "evil", 1, HOST, 7009, node_meta(**{field: value})]
    good = [swim.ALIVE, "b", 0, HOST, 7002, node_meta(router=f"tcp://{HOST}:7002")]
    engine.receive(packet(evil, good), addr(7002))
    answer_pings(engine)
    assert engine.stats.bad_meta == 1 and engine.stats.malformed == 0
    assert {m.name for m in engine.members()} == {"a", "b"}
    assert [(e.kind, e.member.name) for e in engine.take_events()] == [(EventKind.JOIN, "b")]


def test_bad_node_meta_in_a_state_record_is_skipped_and_counted() -> None:
    engine = _checked("a", 7001)
    records = [["evil", HOST, 7009, 0, 0, node_meta(router="tcp://a b:1")],
               ["b", HOST, 7002, 0, 0, node_meta(router=f"tcp://{HOST}:7002")],
               ["bad-suspect", HOST, 7008, 0, 1, node_meta(workers="x")]]
    engine.receive(packet([swim.STATE, 1, False, "b", 0, 1, records]), addr(7002))
    answer_pings(engine)
    assert engine.stats.bad_meta == 2 and engine.stats.malformed == 0
    assert {m.name for m in engine.members()} == {"a", "b"}


def test_a_bad_update_keeps_the_good_meta_and_is_not_gossiped() -> None:
    net = Net()
    check = wire.node_meta_problem
    a = net.add("a", 7001, meta=node_meta(router="tcp://10.0.0.1:7001"), meta_check=check)
    b = net.add("b", 7002, meta=node_meta(router="tcp://10.0.0.1:7002"), meta_check=check)
    b.join([addr(7001)])
    net.run(2.0)
    # A forged rumour: b alive at a higher incarnation with an endpoint ZeroMQ would refuse.
    a.receive(packet([swim.ALIVE, "b", 5, HOST, 7002, node_meta(router="tcp://a b:1")]), addr(7009))
    a.receive(packet([swim.ALIVE, "ghost", 0, HOST, 7003, node_meta(router="tcp://a b:1")]), addr(7009))
    net.run(5.0)
    assert a.stats.bad_meta == 2
    assert net.view(a, "b").meta["router"] == "tcp://10.0.0.1:7002" and net.view(a, "b").incarnation == 0
    assert b.stats.bad_meta == 0 and b.stats.refutations == 0  # a passed nothing of it on
    assert {m.name for m in b.members()} == {"a", "b"}


def test_own_meta_that_peers_would_refuse_is_a_caller_error() -> None:
    with pytest.raises(ClusterError, match="router"):
        SwimEngine("a", HOST, 7001, node_meta(router="tcp://a b:1"), clock=lambda: 0.0,
                   rng=random.Random(1), meta_check=wire.node_meta_problem)
    engine = _checked("a", 7001)
    with pytest.raises(ClusterError, match="workers"):
        engine.update_meta(node_meta(workers=0))
    assert engine.local_member().meta["workers"] == 2 and engine.local_member().incarnation == 0


def test_without_a_meta_check_the_engine_carries_any_plain_meta() -> None:
    engine = SwimEngine("a", HOST, 7001, clock=lambda: 0.0, rng=random.Random(1))
    engine.receive(packet([swim.ALIVE, "b", 0, HOST, 7002, {"router": "tcp://a b:1"}]), addr(7002))
    answer_pings(engine)
    assert engine.stats.bad_meta == 0 and len(engine.members()) == 2


def test_members_are_snapshots() -> None:
    net = Net()
    a = net.add("a", 7001, meta={"k": 1})
    a.members()[0].meta["k"] = 2
    a.local_member().meta["k"] = 3
    assert a.local_member().meta == {"k": 1}


def test_push_pull_repairs_what_gossip_missed() -> None:
    net = Net()
    config = SwimConfig(pull_interval=5.0)
    a, b = cluster(net, "a", "b", config=config)
    net.blocked.add((addr(7001), addr(7002)))  # b never hears a's gossip about c
    from_c = (addr(7003), addr(7002))
    net.blocked.add(from_c)  # nor c's own announcement of itself
    c = net.add("c", 7003, config=config)
    c.join([addr(7001)])
    net.run(2.0)  # c's announcement has used up its retransmissions
    assert net.view(b, "c") is None
    net.blocked.discard(from_c)
    net.run(60.0, until=lambda: net.view(b, "c") is not None)
    assert net.view(b, "c").status is MemberStatus.ALIVE
    assert c.stats.pushpulls + b.stats.pushpulls >= 2


# ------------------------------------------------------------------ health


def test_health_rises_when_acks_are_missing_and_scales_the_timeouts() -> None:
    net = Net()
    engines = cluster(net, "a", "b", "c", "d", "e")
    a = engines[0]
    start = net.now
    deaf = {(addr(p), addr(7001)) for p in range(7002, 7006)}
    net.blocked |= deaf  # a hears nothing: no acks, no nacks
    net.run(25.0)
    assert a.health == SwimConfig().awareness_max - 1
    pings = [(t, dec[1][1]) for t, s, _, dec in net.trace
             if s == addr(7001) and t >= start and dec[1][0] == swim.PING]
    pings = list({seq: (t, seq) for t, seq in reversed(pings)}.values())[::-1]  # each probe's first ping
    requests: dict[int, list[float]] = {}
    for t, s, _, dec in net.trace:
        if s == addr(7001) and t >= start and dec[1][0] == swim.PING_REQ:
            requests.setdefault(dec[1][1], []).append(t)
    # Each failed probe adds one per helper that did not nack (one if there was
    # no helper); probe timeout and period are scaled by 1 + health at the start.
    health = 0
    checked_timeouts = 0
    assert len(pings) >= 4
    for (t, seq), (t_next, _) in zip(pings[:-1], pings[1:], strict=True):
        assert t_next - t == pytest.approx(1.0 * (1 + health))
        sent = requests.get(seq, [])
        if sent:
            assert sent[0] - t == pytest.approx(0.5 * (1 + health))
            checked_timeouts += 1
        health = min(health + max(1, len(sent)), 7)
    assert checked_timeouts >= 2
    net.blocked -= deaf
    net.run(90.0)
    assert a.health == 0
    assert all(m.status is MemberStatus.ALIVE for m in a.members())


def test_health_is_capped() -> None:
    net = Net()
    a, b = cluster(net, "a", "b", config=SwimConfig(awareness_max=3, forget_after=1000.0))
    net.blocked.add((addr(7002), addr(7001)))
    net.run(60.0)
    assert a.health == 2


# --------------------------------------------------------------- hostility


@deterministic
@given(st.binary(max_size=2000))
def test_random_bytes_are_counted_never_raised(data: bytes) -> None:
    engine = SwimEngine("a", HOST, 7001, clock=lambda: 0.0, rng=random.Random(1))
    engine.receive(data, addr(7002))
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
        plausible = type(decoded) is list and decoded[:1] == [1] and len(decoded) > 1
    except Exception:
        plausible = False
    assert engine.stats.received == 1
    if not plausible:
        assert engine.stats.malformed == 1


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@deterministic
@given(st.lists(st.tuples(st.integers(0, 12), st.lists(msgpack_values, max_size=6)), min_size=1, max_size=4))
def test_structured_garbage_never_raises(messages: list[tuple[int, list[Any]]]) -> None:
    engine = SwimEngine("a", HOST, 7001, clock=lambda: 0.0, rng=random.Random(1))
    engine.receive(packet(*[[kind, *fields] for kind, fields in messages]), addr(7002))
    engine.tick()
    engine.take_outbox()
    assert engine.stats.received == 1
    assert engine.local_member().status is MemberStatus.ALIVE


GOOD_ALIVE = [swim.ALIVE, "b", 0, HOST, 7002, {}]
MALFORMED = {
    "not msgpack": b"\xc1\xc1\xc1",
    "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
    "not an array": msgpack.packb({"a": 1}),
    "wrong version": msgpack.packb([swim.PROTOCOL_VERSION + 1, [swim.ACK, 1]]),
    "no message": msgpack.packb([1]),
    "empty message": packet([]),
    "unknown type": packet([99, 1]),
    "bool as seq": packet([swim.ACK, True]),
    "negative seq": packet([swim.ACK, -1]),
    "float incarnation": packet([swim.ALIVE, "b", 1.0, HOST, 7002, {}]),
    "port zero": packet([swim.ALIVE, "b", 0, HOST, 0, {}]),
    "port too big": packet([swim.ALIVE, "b", 0, HOST, 70000, {}]),
    "empty name": packet([swim.ALIVE, "", 0, HOST, 7002, {}]),
    "long name": packet([swim.ALIVE, "b" * 300, 0, HOST, 7002, {}]),
    "meta not a dict": packet([swim.ALIVE, "b", 0, HOST, 7002, [1]]),
    "meta with ext": packet([swim.ALIVE, "b", 0, HOST, 7002, {"x": msgpack.ExtType(5, b"zz")}]),
    "meta int key": packet([swim.ALIVE, "b", 0, HOST, 7002, {1: 2}]),
    "too deep": packet([swim.ALIVE, "b", 0, HOST, 7002, {"x": [[[[[[[[[[1]]]]]]]]]]}]),
    "extra field": packet([swim.ACK, 1, 2]),
    "bad state record": packet([swim.STATE, 1, True, "b", 0, 1, [["c", HOST, 7003, 0, 7, {}]]]),
    "state not a list": packet([swim.STATE, 1, True, "b", 0, 1, {"c": 1}]),
    "state part out of range": packet([swim.STATE, 1, True, "b", 1, 1, [["c", HOST, 7003, 0, 0, {}]]]),
    "state of the old protocol": packet([swim.STATE, 1, True, "b", [["c", HOST, 7003, 0, 0, {}]]]),
    "good then bad": packet(GOOD_ALIVE, [swim.SUSPECT, "b", 0]),
    "trailing bytes": packet(GOOD_ALIVE) + b"\x00",
    "truncated": packet(GOOD_ALIVE)[:-3],
    "binary name": packet([swim.ALIVE, b"b", 0, HOST, 7002, {}]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_datagram_is_dropped_whole_and_counted(name: str) -> None:
    engine = SwimEngine("a", HOST, 7001, clock=lambda: 0.0, rng=random.Random(1))
    engine.take_events()
    engine.receive(MALFORMED[name], addr(7002))
    assert engine.stats.malformed == 1
    assert len(engine.members()) == 1 and engine.take_outbox() == [] and engine.take_events() == []


def test_bad_source_or_type_is_counted() -> None:
    engine = SwimEngine("a", HOST, 7001, clock=lambda: 0.0, rng=random.Random(1))
    engine.receive(packet(GOOD_ALIVE), ["10.0.0.2", 7002])  # type: ignore[arg-type]
    engine.receive("text", addr(7002))  # type: ignore[arg-type]
    assert engine.stats.malformed == 2 and len(engine.members()) == 1
    engine.receive(packet(GOOD_ALIVE), addr(7002))
    answer_pings(engine)
    assert engine.stats.malformed == 2 and len(engine.members()) == 2


def test_caller_errors_are_clear() -> None:
    clock = lambda: 0.0  # noqa: E731
    with pytest.raises(ClusterError, match="port"):
        SwimEngine("a", HOST, 0, clock=clock, rng=random.Random(1))
    with pytest.raises(ClusterError, match="probe_timeout"):
        SwimEngine("a", HOST, 7001, config=SwimConfig(probe_timeout=2.0), clock=clock, rng=random.Random(1))
    engine = SwimEngine("a", HOST, 7001, clock=clock, rng=random.Random(1))
    with pytest.raises(ClusterError, match="seed"):
        engine.join(["10.0.0.2:7002"])  # type: ignore[list-item]
    engine.leave()
    with pytest.raises(RuntimeError):
        engine.join([addr(7002)])
    with pytest.raises(RuntimeError):
        engine.update_meta({})


def _engine(name: Any = "a", address: Any = HOST, port: Any = 7001, meta: Any = None) -> SwimEngine:
    return SwimEngine(name, address, port, meta, clock=lambda: 0.0, rng=random.Random(1))


CALLER_MISTAKES: list[tuple[str, Callable[[], Any], str]] = [
    ("name-empty", lambda: _engine(name=""), "name must be a non-empty str of at most 255 characters, got ''"),
    ("name-int", lambda: _engine(name=5), "name must be .*, got 5"),
    ("name-too-long", lambda: _engine(name="n" * 256), "name must be .*, got 'nnnn"),
    ("address-bytes", lambda: _engine(address=b"10.0.0.1"), "address must be .*, got b'10.0.0.1'"),
    ("port-unprintable", lambda: _engine(port=10**5000), "port must be an int in 1..65535, got an int of 16610 bits"),
    ("meta-list", lambda: _engine(meta=[("k", 1)]), r"meta must be a dict \(or None\), got \[\('k', 1\)\]"),
    ("meta-key", lambda: _engine(meta={("k",): 1}), r"meta keys must be str, got the key \('k',\)"),
    ("meta-object", lambda: _engine(meta={"k": object()}), "meta must hold only None, bool, int"),
    ("meta-big-int", lambda: _engine(meta={"k": 10**30}), "meta must hold only None, bool, int"),
    ("meta-too-big", lambda: _engine(meta={"k": "x" * 600}), "meta encodes to .* bytes; the limit is"),
    ("seed-port", lambda: _engine().join([("10.0.0.2", 10**5000)]), "seed port must be an int in 1..65535"),
    ("seed-address", lambda: _engine().join([(None, 7002)]), "seed address must be a non-empty str"),
    ("config", lambda: SwimEngine("a", HOST, 7001, config={}, clock=lambda: 0.0, rng=random.Random(1)),  # type: ignore[arg-type]
     "config must be a SwimConfig, got {}"),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in CALLER_MISTAKES], ids=[c[0] for c in CALLER_MISTAKES])
def test_a_callers_mistake_is_a_cluster_error(make: Callable[[], Any], fragment: str) -> None:
    # These were raw ValueError or TypeError (and a port too long to print
    # raised a ValueError from the message itself).
    with pytest.raises(ClusterError, match=fragment) as info:
        make()
    assert not isinstance(info.value, ValueError | TypeError)


def test_datagrams_never_exceed_max_packet() -> None:
    net = Net()
    config = SwimConfig(max_packet=600, pull_interval=2.0)
    engines = cluster(net, "a", "b", "c", "d", "e", config=config)
    for i, engine in enumerate(engines):
        engine.update_meta({"pad": "x" * 200, "i": i})
    for i in range(3):  # more members with big meta: a full state needs several datagrams
        net.fakes[addr(8000 + i)] = lambda messages, source: (
            [packet([swim.ACK, messages[0][1]])] if messages[0][0] == swim.PING else [])
        engines[0].receive(packet([swim.ALIVE, f"ghost{i}", 0, HOST, 8000 + i, {"pad": "y" * 150}]), addr(8000 + i))
    pushpulls = sum(e.stats.pushpulls for e in engines)
    net.run(6.0)
    assert sum(e.stats.pushpulls for e in engines) > pushpulls
    split = [dec[1] for _, _, _, dec in net.trace if dec[1][0] == swim.STATE and dec[1][5] > 1]
    assert split and all(len(state[6]) < 8 for state in split)  # a full state in several numbered parts
    assert 500 < net.largest <= 600
    for engine in engines:
        assert {"ghost0", "ghost1", "ghost2"} <= {m.name for m in engine.members()}
        assert net.view(engine, "e").meta == {"pad": "x" * 200, "i": 4}


# ------------------------------------------------------------ partitions


def _statuses(engine: SwimEngine) -> dict[str, str]:
    return {m.name: m.status.value for m in engine.members()}


@pytest.mark.parametrize("forgotten", [False, True])
def test_a_healed_partition_merges_again(forgotten: bool) -> None:
    """Each side declares the other dead (and maybe forgets it); reconnects merge them after the heal."""
    net = Net()
    config = SwimConfig(reconnect_interval=10.0, forget_after=30.0 if forgotten else 600.0)
    a, b, c = cluster(net, "a", "b", "c", config=config)
    cut = {(addr(7003), addr(p)) for p in (7001, 7002)} | {(addr(p), addr(7003)) for p in (7001, 7002)}
    net.blocked |= cut
    if forgotten:
        net.run(120.0)
        assert _statuses(a) == _statuses(b) == {"a": "alive", "b": "alive"}  # c forgotten
    else:
        verdicts = lambda: (_statuses(a) == _statuses(b) == {"a": "alive", "b": "alive", "c": "dead"}  # noqa: E731
                            and _statuses(c) == {"a": "dead", "b": "dead", "c": "alive"})
        net.run(300.0, until=verdicts)
        assert verdicts()
    cut_ended = net.now
    net.blocked -= cut
    merged = lambda: all(_statuses(e) == dict.fromkeys("abc", "alive") for e in (a, b, c))  # noqa: E731
    healed = net.run(60.0, until=merged)
    assert merged()
    # One reconnect attempt (every reconnect_interval, from either side) is enough.
    assert healed - cut_ended <= config.reconnect_interval + 2 * config.probe_interval
    if not forgotten:  # the dead verdicts were refuted: both sides bumped their incarnation
        assert a.stats.refutations + b.stats.refutations >= 1 and c.stats.refutations >= 1
    # Healed, nobody is retried any more: only the periodic exchanges (every pull_interval, 30 s) remain.
    quiet_from = net.run(30.0)
    net.run(120.0)
    for port in (7001, 7002, 7003):
        started = [t for t, _ in net.sent(addr(port), None, swim.PUSH_PULL) if t > quiet_from]
        assert len(started) <= 120 // 30 + 1, (port, started)


def test_reconnect_tries_dead_members_not_left_ones_and_gives_up_in_time() -> None:
    net = Net()
    config = SwimConfig(reconnect_interval=5.0, reconnect_timeout=60.0)
    a, b, c = cluster(net, "a", "b", "c", config=config)
    c.leave()
    net.run(1.0)
    net.down.add(addr(7002))  # b crashes
    net.run(30.0, until=lambda: _statuses(a).get("b") == "dead")
    died = net.now
    net.run(120.0)
    tries_b = [t for t, _ in net.sent(addr(7001), addr(7002), swim.PUSH_PULL) if t > died]
    tries_c = [t for t, _ in net.sent(addr(7001), addr(7003), swim.PUSH_PULL) if t > died]
    assert tries_c == []  # a graceful leave is not a partition
    assert len(tries_b) >= 10  # about every 5 s ...
    assert max(tries_b) <= died + config.reconnect_timeout + config.reconnect_interval  # ... for 60 s, then no more
