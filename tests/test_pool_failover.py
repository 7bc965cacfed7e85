"""A pool's map finishes through worker deaths; the user's own exceptions are retried only when asked."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import pytest
from actors import FailsOnce, Spin

from gorilix import ActorError, ActorSystem, InvalidArgument, WorkerDied


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_map_finishes_with_every_result_while_a_worker_is_killed_every_half_second(
        make_system: Callable[..., ActorSystem]) -> None:
    # One SIGKILL 0.5 s into a map raised WorkerDied, though the pool's actors came back at once.
    system = make_system(2)
    pool = system.spawn_pool(Spin, 10.0, size=4)
    done = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not done.wait(0.5):
            victim = len(kills) % 2
            try:
                system.kill_worker(victim, signal.SIGKILL)
            except Exception:  # (between a death and its respawn: the next round tries again)
                continue
            kills.append(victim)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        results = pool.map(range(2000), timeout=150.0)  # (retries=3, the default)
    finally:
        done.set()
        thread.join(10.0)
    assert results == [n * n for n in range(2000)]
    assert len(kills) >= 5, f"only {len(kills)} workers were killed during the map"


def test_a_map_without_retries_fails_at_a_death_and_names_the_item(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1)
    pool = system.spawn_pool(Spin, 200.0, size=1)
    killer = threading.Timer(0.3, system.kill_worker, (0, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(WorkerDied) as info:
            pool.map(range(20), timeout=30.0, retries=0)
    finally:
        killer.cancel()
    assert any(note.startswith("(item ") for note in info.value.__notes__)


def test_the_users_exceptions_are_not_retried_unless_retry_on_names_them(system: ActorSystem) -> None:
    pool = system.spawn_pool(FailsOnce, size=1)
    with pytest.raises(ActorError, match="ValueError.*not yet: 5") as info:
        pool.map(range(1, 12))
    assert "(item 4 of the map)" in info.value.__notes__
    fresh = system.spawn_pool(FailsOnce, size=1)
    assert fresh.map(range(1, 12), retry_on=(ValueError,)) == [n * n for n in range(1, 12)]


def test_return_exceptions_puts_each_failure_in_its_place(system: ActorSystem) -> None:
    pool = system.spawn_pool(FailsOnce, size=1)
    results = pool.map(range(1, 12), return_exceptions=True)
    assert [type(r) for r in results[:5]] == [int, int, int, int, ActorError]
    assert results[9].remote_type == "ValueError" and results[10] == 121
    assert results[:4] == [1, 4, 9, 16]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retries": -1}, "retries=-1"), ({"retries": 1.5}, "retries=1.5"), ({"retries": True}, "retries=True"),
    ({"retry_on": ValueError}, "retry_on="), ({"retry_on": ("ValueError",)}, "retry_on="),
])
def test_bad_retry_settings_are_refused(system: ActorSystem, kwargs: dict[str, object], message: str) -> None:
    pool = system.spawn_pool(FailsOnce, size=1)
    with pytest.raises(InvalidArgument, match=message):
        pool.map([1, 2], **kwargs)  # type: ignore[arg-type]
