"""The router's forwarding table (pure data: no sockets)."""

from __future__ import annotations

import pytest

from gorilix.transport.routing import (
    ASK_LATENCY_BOUNDS,
    ASK_SAMPLE_EVERY,
    CLIENT_ID_END,
    CLIENT_ID_MIN,
    MAX_TIMED_ASKS,
    ForwardingTable,
    LatencyHistogram,
    ParkResult,
    client_identity,
    client_ids,
    is_client_id,
)
from gorilix.transport.sockets import ID_SHIFT

W0 = b"worker-0"
W1 = b"worker-1"
PEER = b"node-b"


def frames(n: int) -> list[bytes]:
    return [b"route-%d" % n, b"env-%d" % n, b"payload-%d" % n]


@pytest.fixture
def table() -> ForwardingTable:
    return ForwardingTable(max_parked_per_actor=3)


# --- bind / lookup ---


def test_lookup_of_unknown_actor_is_none(table: ForwardingTable) -> None:
    assert table.lookup(1) is None
    assert not table.is_held(1)
    assert table.actors_at(W0) == 0


def test_bind_then_lookup(table: ForwardingTable) -> None:
    assert table.bind(1, W0) == []
    assert table.bind(2, W0) == []
    assert table.bind(3, W1) == []
    assert (table.lookup(1), table.lookup(2), table.lookup(3)) == (W0, W0, W1)
    assert table.actors_at(W0) == 2 and table.actors_at(W1) == 1


def test_rebind_moves_the_actor(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.bind(1, W1)
    assert table.lookup(1) == W1
    assert table.actors_at(W0) == 0 and table.actors_at(W1) == 1
    table.bind(1, W1)
    assert table.actors_at(W1) == 1


def test_unbind_forgets_the_actor(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.bind(2, W0)
    assert table.unbind(1) == []
    assert table.lookup(1) is None and table.lookup(2) == W0
    assert table.actors_at(W0) == 1
    assert table.unbind(99) == []


# --- hold / park ---


def test_park_without_hold_is_refused_with_the_frames(table: ForwardingTable) -> None:
    table.bind(1, W0)
    result = table.park(1, frames(0))
    assert result == ParkResult(False, frames(0))
    assert table.park(2, frames(1)).overflow == frames(1)


def test_hold_park_then_bind_delivers_parked_frames_in_order(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.hold(1)
    assert table.is_held(1)
    assert table.lookup(1) is None
    assert table.actors_at(W0) == 0
    for n in range(3):
        assert table.park(1, frames(n)) == ParkResult(True, None)
    assert table.bind(1, W1) == [frames(0), frames(1), frames(2)]
    assert not table.is_held(1)
    assert table.lookup(1) == W1
    # Delivered once: a second bind has nothing left, and parking is over.
    assert table.bind(1, W1) == []
    assert table.park(1, frames(9)).parked is False


def test_hold_of_an_unknown_actor_parks_until_first_bind(table: ForwardingTable) -> None:
    table.hold(7)
    assert table.park(7, frames(0)).parked
    assert table.bind(7, W0) == [frames(0)]


def test_hold_twice_keeps_what_is_parked(table: ForwardingTable) -> None:
    table.hold(1)
    table.park(1, frames(0))
    table.hold(1)
    table.park(1, frames(1))
    assert table.bind(1, W0) == [frames(0), frames(1)]


def test_parking_is_bounded_per_actor(table: ForwardingTable) -> None:
    table.hold(1)
    table.hold(2)
    for n in range(3):
        assert table.park(1, frames(n)).parked
    refused = table.park(1, frames(3))
    assert refused.parked is False
    assert refused.overflow == frames(3)
    assert table.park(1, frames(4)).parked is False
    # The bound is per actor: another held actor still has room.
    assert table.park(2, frames(5)).parked
    assert table.bind(1, W0) == [frames(0), frames(1), frames(2)]
    assert table.bind(2, W0) == [frames(5)]


def test_default_park_bound() -> None:
    table = ForwardingTable()
    table.hold(1)
    limit = table.max_parked_per_actor
    assert limit == 10_000
    assert all(table.park(1, [b"%d" % n]).parked for n in range(limit))
    assert not table.park(1, [b"over"]).parked
    assert len(table.bind(1, W0)) == limit


def test_zero_bound_parks_nothing() -> None:
    table = ForwardingTable(max_parked_per_actor=0)
    table.hold(1)
    assert table.park(1, frames(0)) == ParkResult(False, frames(0))
    assert table.bind(1, W0) == []


def test_unbind_returns_parked_frames_and_ends_the_hold(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.hold(1)
    table.park(1, frames(0))
    table.park(1, frames(1))
    assert table.unbind(1) == [frames(0), frames(1)]
    assert not table.is_held(1)
    assert table.lookup(1) is None
    assert table.park(1, frames(2)).parked is False
    assert table.unbind(1) == []


# --- endpoint loss and in-flight asks ---


def test_endpoint_lost_returns_its_actors_and_inflight_asks(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.bind(2, W0)
    table.bind(3, W1)
    table.ask_forwarded(W0, 10, 100)
    table.ask_forwarded(W0, 11, 101)
    table.ask_forwarded(W0, 12, 102)
    table.ask_forwarded(W1, 13, 103)

    actors, asks = table.endpoint_lost(W0)

    assert actors == {1, 2}
    assert asks == [(10, 100, None), (11, 101, None), (12, 102, None)]
    assert table.lookup(1) is None and table.lookup(2) is None
    assert table.actors_at(W0) == 0
    # The other endpoint is untouched.
    assert table.lookup(3) == W1
    assert table.endpoint_lost(W1) == ({3}, [(13, 103, None)])


def test_replied_asks_are_not_reported(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.ask_forwarded(W0, 10, 100)
    table.ask_forwarded(W0, 10, 101)
    table.ask_forwarded(W0, 11, 100)
    table.reply_forwarded(W0, 10, 100)
    # A reply through another endpoint, or for another corr, clears nothing here.
    table.reply_forwarded(W1, 10, 101)
    table.reply_forwarded(W0, 11, 999)
    table.reply_forwarded(PEER, 1, 1)
    _, asks = table.endpoint_lost(W0)
    assert asks == [(10, 101, None), (11, 100, None)]


def test_endpoint_lost_holds_its_actors(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.bind(2, W0)
    table.endpoint_lost(W0)
    assert table.is_held(1) and table.is_held(2)
    assert table.park(1, frames(0)).parked
    assert table.park(1, frames(1)).parked
    assert table.park(2, frames(2)).parked
    # The actors come back on a respawned worker: parked frames go there.
    assert table.bind(1, W1) == [frames(0), frames(1)]
    assert table.bind(2, W1) == [frames(2)]
    assert table.actors_at(W1) == 2


def test_endpoint_lost_keeps_frames_already_parked(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.hold(1)
    table.park(1, frames(0))
    table.bind(2, W0)
    actors, _ = table.endpoint_lost(W0)
    # Actor 1 was in transit, no longer at W0.
    assert actors == {2}
    assert table.bind(1, W1) == [frames(0)]


def test_endpoint_lost_forgets_the_endpoint(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.ask_forwarded(W0, 10, 100)
    table.endpoint_lost(W0)
    assert table.endpoint_lost(W0) == (set(), [])


def test_moved_actor_is_not_lost_with_its_old_endpoint(table: ForwardingTable) -> None:
    table.bind(1, W0)
    table.bind(1, W1)
    actors, _ = table.endpoint_lost(W0)
    assert actors == set()
    assert table.lookup(1) == W1 and not table.is_held(1)


def test_unknown_endpoint_lost_is_empty(table: ForwardingTable) -> None:
    table.bind(1, W0)
    assert table.endpoint_lost(PEER) == (set(), [])
    assert table.lookup(1) == W0


def test_same_ask_forwarded_twice_is_reported_once(table: ForwardingTable) -> None:
    table.ask_forwarded(PEER, 5, 1)
    table.ask_forwarded(PEER, 5, 1)
    assert table.endpoint_lost(PEER) == (set(), [(5, 1, None)])


# --- counting and timing asks ---


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_histogram_counts_each_duration_in_the_bucket_whose_upper_bound_it_reaches() -> None:
    histogram = LatencyHistogram()
    assert histogram.bounds == ASK_LATENCY_BOUNDS and len(histogram.counts) == len(ASK_LATENCY_BOUNDS) + 1
    for seconds in (0.0, 0.0001, 0.00010001, 0.001, 0.0011, 10.0, 10.5, 1e6):
        histogram.observe(seconds)
    counts = histogram.to_dict()["counts"]
    assert counts[0] == 2  # 0 and the first bound itself (le: a bound is in its own bucket)
    assert counts[1] == 1  # just above it
    assert counts[3] == 1 and counts[4] == 1  # 1 ms exactly, and just above
    assert counts[15] == 1  # 10 s, the last bound
    assert counts[16] == 2  # above every bound: +Inf
    assert sum(counts) == histogram.count == 8
    assert histogram.sum == sum((0.0, 0.0001, 0.00010001, 0.001, 0.0011, 10.0, 10.5, 1e6))


def test_a_histogram_hands_out_copies_and_needs_increasing_bounds() -> None:
    histogram = LatencyHistogram((1.0, 2.0))
    snapshot = histogram.to_dict()
    histogram.observe(1.5)
    assert snapshot == {"bounds": [1.0, 2.0], "counts": [0, 0, 0], "sum": 0.0, "count": 0}
    assert histogram.to_dict() == {"bounds": [1.0, 2.0], "counts": [0, 1, 0], "sum": 1.5, "count": 1}
    for bad in ((), (2.0, 1.0), (1.0, 1.0)):
        with pytest.raises(ValueError, match="increasing"):
            LatencyHistogram(bad)


def test_asks_and_replies_are_counted_and_one_ask_in_16_is_timed_until_its_reply() -> None:
    clock = Clock()
    table = ForwardingTable(clock=clock)
    asks = 3 * ASK_SAMPLE_EVERY
    for corr in range(1, asks + 1):
        table.ask_forwarded(W0, 10, corr)
    assert table.asks == asks and set(table.timed) == {(10, 16), (10, 32), (10, 48)}
    assert table.timed[(10, 16)] == 100.0
    clock.now = 100.003
    for corr in range(1, asks + 1):
        table.reply_forwarded(W0, 10, corr)
    assert table.replies == asks and table.timed == {} and table.inflight[W0] == {}
    latency = table.ask_latency
    assert latency.count == 3 and latency.sum == pytest.approx(0.009)
    assert latency.counts[ASK_LATENCY_BOUNDS.index(0.005)] == 3  # (3 ms: above 2.5 ms, up to 5 ms)


def test_without_a_clock_asks_to_a_peer_or_a_reply_held_nothing_is_timed() -> None:
    untimed = ForwardingTable()  # (no clock: counted, never timed)
    for corr in range(ASK_SAMPLE_EVERY):
        untimed.ask_forwarded(W0, 10, corr)
    assert untimed.asks == ASK_SAMPLE_EVERY and untimed.timed == {}
    table = ForwardingTable(clock=Clock())
    for corr in range(ASK_SAMPLE_EVERY):
        table.ask_forwarded(PEER, 10, corr, timed=False)  # (timed on the node whose worker answers it)
    assert table.asks == ASK_SAMPLE_EVERY and table.timed == {}
    for corr in range(ASK_SAMPLE_EVERY, 2 * ASK_SAMPLE_EVERY):
        table.ask_forwarded(W0, 10, corr)
    assert list(table.timed) == [(10, 2 * ASK_SAMPLE_EVERY - 1)]
    table.reply_held(W0, 10, 2 * ASK_SAMPLE_EVERY - 1)  # its asker is not routed: nothing forwarded
    assert table.timed == {} and table.replies == 0 and table.ask_latency.count == 0


def test_timed_asks_are_forgotten_with_their_endpoint_and_past_their_bound() -> None:
    table = ForwardingTable(clock=Clock())
    for corr in range(ASK_SAMPLE_EVERY):
        table.ask_forwarded(W0, 10, corr)
    assert len(table.timed) == 1
    table.endpoint_lost(W0)
    assert table.timed == {}
    for corr in range((MAX_TIMED_ASKS + 5) * ASK_SAMPLE_EVERY):
        table.ask_forwarded(W1, 11, corr)
    assert len(table.timed) == MAX_TIMED_ASKS
    assert next(iter(table.timed)) == (11, 6 * ASK_SAMPLE_EVERY - 1)  # the oldest went first


# --- client ids ---


def test_client_ids_are_never_actor_ids() -> None:
    ids = client_ids()
    first = next(ids)
    assert is_client_id(first) and next(ids) == first + 1
    assert first < CLIENT_ID_MIN + (CLIENT_ID_END - CLIENT_ID_MIN) // 2  # room to count up
    assert not is_client_id(CLIENT_ID_END) and not is_client_id(CLIENT_ID_MIN - 1)
    assert not is_client_id((1 << 21) << ID_SHIFT | 5)  # a worker's actor
    assert not is_client_id(12345)  # a node's actor (its ids count up from below 2**39)
    for wrong in (float(CLIENT_ID_MIN), str(CLIENT_ID_MIN), True, None, [CLIENT_ID_MIN]):
        assert not is_client_id(wrong)


def test_a_clients_socket_is_named_after_its_id() -> None:
    assert client_identity(CLIENT_ID_MIN) == b"c%d" % CLIENT_ID_MIN
    assert client_identity(CLIENT_ID_MIN) != client_identity(CLIENT_ID_MIN + 1)
