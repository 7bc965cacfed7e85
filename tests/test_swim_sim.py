"""Cluster-wide properties of the SWIM engine, on the simulator (tests/swim_sim.py).

The 1,000-member tests are the point: detection, dissemination in O(log n)
rounds and no false positives are statistical properties that only show at
scale. Every run is deterministic by seed, so the bounds asserted here hold
exactly for these seeds rather than "usually".
"""

from __future__ import annotations

import math

import pytest
from swim_sim import (
    Simulation,
    false_positives,
    false_suspicions,
    measure_detection,
    measure_dissemination,
    measure_traffic,
    name_of,
)

from gorilix.cluster.swim import EventKind, MemberStatus, SwimConfig, suspicion_timeout

N = 1000
LOSS = 0.05
DELAY = (0.001, 0.020)


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[tuple[float, int, EventKind, str, int]]:
        sim = Simulation(60, seed=seed, loss=0.1, delay=DELAY)
        sim.run(3.0)
        sim.crash(7)
        sim.run(20.0)
        return [tuple(e) for e in sim.events]  # type: ignore[misc]

    first = run(3)
    assert first == run(3)
    assert first != run(4)
    assert any(e[2] is EventKind.DEAD and e[3] == name_of(7) for e in first)


def test_members_join_one_by_one_through_a_seed() -> None:
    sim = Simulation(1, seed=5, loss=0.05, delay=DELAY, bootstrap=False)
    seed_address = sim.addresses[0]
    for _ in range(39):
        i = sim.add()
        sim.do(i, lambda engine: engine.join([seed_address]))
        sim.run(0.25)
    sim.run(15.0)
    names = {name_of(i) for i in range(40)}
    for engine in sim.engines:
        view = {m.name: m.status for m in engine.members()}
        assert set(view) == names, engine.name
        assert all(status is MemberStatus.ALIVE for status in view.values()), engine.name
    assert false_positives(sim) == 0
    assert sum(e.stats.malformed for e in sim.engines) == 0


def test_small_cluster_detects_a_crash_and_spreads_an_update() -> None:
    sim = Simulation(100, seed=11, loss=LOSS, delay=DELAY)
    sim.run(3.0)
    spread = measure_dissemination(sim, origin=3)
    assert spread.reached == 99 and spread.rounds is not None
    assert spread.rounds <= 2 * math.log2(100)
    found = measure_detection(sim, victim=42)
    assert found.observers == 99 and found.all is not None
    assert false_positives(sim) == 0


def test_leave_at_scale_is_never_counted_as_a_failure() -> None:
    sim = Simulation(100, seed=12, loss=LOSS, delay=DELAY)
    sim.run(2.0)
    sim.do(9, lambda engine: engine.leave())
    sim.run(3.0)
    sim.crash(9)  # the process exits after its goodbye
    sim.run(20.0)
    for i in sim.live():
        assert sim.status_of(i, name_of(9)) is MemberStatus.LEFT
    assert not [e for e in sim.events if e.name == name_of(9) and e.kind is EventKind.DEAD]


@pytest.mark.slow
def test_crashed_member_is_marked_dead_by_every_other_member() -> None:
    sim = Simulation(N, seed=21, loss=LOSS, delay=DELAY)
    sim.run(2.0)
    found = measure_detection(sim, victim=123, limit=120.0)
    assert found.observers == N - 1 and found.all is not None and found.first is not None
    # Nobody can time out before the minimum suspicion timeout (12 s for n = 1000),
    # and the crash is caught within the Lifeguard maximum plus a probe round.
    minimum = suspicion_timeout(4, 6, N, 1.0, 3, 3)
    assert minimum == pytest.approx(12.0)
    assert minimum <= found.first <= found.all <= suspicion_timeout(4, 6, N, 1.0, 3, 0) + 5.0
    # Confirmations from independent probers shrank the timer close to the minimum.
    assert found.all <= minimum + 6.0
    assert false_positives(sim) == 0


@pytest.mark.slow
def test_dissemination_reaches_everyone_in_log_n_rounds() -> None:
    sim = Simulation(N, seed=22, loss=LOSS, delay=DELAY)
    sim.run(2.0)
    spread = measure_dissemination(sim, origin=5)
    assert spread.reached == N - 1
    assert spread.rounds is not None
    assert spread.rounds <= math.log2(N)  # c = 1: about 4 rounds observed for this seed
    # The curve is epidemic: it at least triples early on, then saturates.
    assert spread.curve[1] >= 3 * spread.curve[0]


@pytest.mark.slow
def test_no_false_positives_at_five_percent_loss() -> None:
    config = SwimConfig()
    sim = Simulation(N, seed=23, loss=LOSS, delay=DELAY, config=config)
    messages, size = measure_traffic(sim, periods=30)
    assert false_positives(sim) == 0
    # The run was long and lossy enough to put the refutation path to work.
    assert false_suspicions(sim) > 0
    # Every false suspicion that is over was refuted (none ended in DEAD, above); some
    # may still be under way when the run stops.
    pending = {(m.name, m.incarnation) for e in sim.engines for m in e.members() if m.status is MemberStatus.SUSPECT}
    assert sum(e.stats.refutations for e in sim.engines) >= false_suspicions(sim) - len(pending) > 0
    for i in (0, 500, 999):
        statuses = {m.status for m in sim.engines[i].members()}
        assert statuses <= {MemberStatus.ALIVE, MemberStatus.SUSPECT}
    # Overhead stays O(1) per member per period, whatever n is.
    assert messages < 25 and size < 2000
    assert sum(e.stats.malformed for e in sim.engines) == 0
