"""The benchmark's own actors (gorilix.bench_actors) at their edges: a figure must not crash on them."""

from __future__ import annotations

from collections.abc import Callable

from gorilix import ActorSystem
from gorilix.bench_actors import Driver


def test_a_spawn_loop_of_no_actors_answers(make_system: Callable[..., ActorSystem]) -> None:
    # It asked the last child it spawned whether it was ready, and with none crashed with an IndexError.
    system = make_system(1)
    driver = system.spawn(Driver)
    _elapsed, count = driver.ask(("spawn_loop", 0), timeout=30.0)
    assert count == 0
    _elapsed, count = driver.ask(("spawn_loop", 3), timeout=30.0)
    assert count == 3
