"""After a failover, a respawned worker gets its share of a pool's actors back, and a move loses no message."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from actors import Forwarder, Recorder, Spin

from gorilix import ActorSystem


def _actors_per_worker(system: ActorSystem) -> list[int]:
    return [w.actors for w in system.workers() if w.alive]


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def test_a_pool_is_balanced_again_after_a_worker_comes_back(make_system: Callable[..., ActorSystem]) -> None:
    # After one kill_worker(0), placement ended [(0, 0), (1, 2)] and the same map went from 1.19 s to 2.01 s.
    system = make_system(2, log_level="CRITICAL")
    pool = system.spawn_pool(Spin, 1.0, size=4)
    assert _actors_per_worker(system) == [2, 2]
    system.kill_worker(0)
    _wait_for(lambda: _actors_per_worker(system) == [2, 2] and system.stats()["moved"] == 2, 10.0,
              f"the pool balanced again (now {_actors_per_worker(system)})")
    assert pool.map(range(40), chunksize=1) == [n * n for n in range(40)]
    plain = system.spawn(Spin, 1.0)  # a new spawn goes to the least loaded worker, as before
    assert plain.ask(3) == 9


def test_actors_that_are_not_movable_stay_where_they_were_recreated(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2, log_level="CRITICAL")
    refs = [system.spawn(Spin, 1.0, worker=0) for _ in range(4)]
    system.kill_worker(0)
    _wait_for(lambda: all(w.alive for w in system.workers()), 10.0, "worker 0 back")
    time.sleep(0.3)
    assert _actors_per_worker(system) == [0, 4] and system.stats()["moved"] == 0
    assert [ref.ask(2) for ref in refs] == [4, 4, 4, 4]


@pytest.mark.timeout(60)
def test_a_move_loses_no_message(make_system: Callable[..., ActorSystem]) -> None:
    # Each member tells the sink what it gets. From the moment kill_worker(0) returns (the dead
    # worker's members re-created on worker 1, worker 0 not back yet) every tell and ask must
    # arrive, through the moves that follow when worker 0 comes back.
    system = make_system(2, log_level="CRITICAL")
    sink = system.spawn(Recorder, worker=1)
    pool = system.spawn_pool(Forwarder, sink, size=4)
    after_kill: set[tuple[int, int]] = set()
    errors: list[BaseException] = []
    counting = threading.Event()
    stop = threading.Event()

    def talk() -> None:
        n = 0
        while not stop.is_set():
            for ref in pool.refs:
                counted = counting.is_set()
                try:
                    ref.tell(n)
                    answer = ref.ask(-n - 1, timeout=10.0)
                except Exception as exc:  # (before the count starts: the kill's own losses)
                    if counted:
                        errors.append(exc)
                    continue
                if counted:
                    after_kill.update({(ref.id, n), (ref.id, answer)})
            n += 1

    thread = threading.Thread(target=talk)
    thread.start()
    try:
        time.sleep(0.2)
        system.kill_worker(0)
        counting.set()
        _wait_for(lambda: system.stats()["moved"] == 2, 10.0, "two members moved back")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(20.0)
    assert errors == []
    seen = set(sink.ask(("get",), timeout=10.0))
    missing = after_kill - seen
    assert len(after_kill) > 100 and not missing, f"{len(missing)} of {len(after_kill)} messages lost"
    assert _actors_per_worker(system) == [2, 3]  # (the sink is not movable)
