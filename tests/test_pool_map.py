"""A pool's map shows its progress when asked; imap and imap_unordered stream, reading their items lazily."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import click
import pytest
from actors import FailsOnce, Spin, Square

from gorilix import ActorError, ActorSystem


class FakeBar:
    """Stands in for click's bar: records its settings and each step."""

    made: list[FakeBar] = []

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.steps = 0
        self.shown: list[str | None] = []
        FakeBar.made.append(self)

    def __enter__(self) -> FakeBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, steps: int) -> None:
        self.steps += steps
        self.shown.append(self.settings["item_show_func"](None))


def test_progress_steps_once_per_item_and_shows_the_rate(system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeBar.made.clear()
    monkeypatch.setattr(click, "progressbar", FakeBar)
    pool = system.spawn_pool(Square)
    assert pool.map(range(200), progress=True) == [n * n for n in range(200)]
    [bar] = FakeBar.made
    assert bar.settings["length"] == 200 and bar.settings["label"] == "map"
    assert bar.steps == 200
    assert bar.shown[-1] is not None and bar.shown[-1].endswith(" items/s")


def test_no_progress_unless_asked(system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeBar.made.clear()
    monkeypatch.setattr(click, "progressbar", FakeBar)
    pool = system.spawn_pool(Square)
    assert pool.map(range(20)) == [n * n for n in range(20)]
    assert FakeBar.made == []


def test_progress_off_a_terminal_prints_its_label_and_nothing_in_the_results(
        system: ActorSystem, capsys: pytest.CaptureFixture[str]) -> None:
    pool = system.spawn_pool(Square)
    assert pool.map(range(50), progress=True) == [n * n for n in range(50)]
    captured = capsys.readouterr()
    assert "map" in captured.err and captured.out == ""


def test_imap_yields_in_order_and_imap_unordered_as_they_come(system: ActorSystem) -> None:
    pool = system.spawn_pool(Spin, 1.0, size=4)
    assert list(pool.imap(range(300))) == [n * n for n in range(300)]
    unordered = list(pool.imap_unordered(range(300)))
    assert sorted(unordered) == [n * n for n in range(300)]


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_streams_read_their_items_lazily_with_a_bounded_number_ahead(system: ActorSystem, method: str) -> None:
    # A generator of any length must run in flat memory: never more than a few items per actor
    # are read ahead of what the caller took.
    pool = system.spawn_pool(Square, size=2)
    read = 0

    def items() -> Iterator[int]:
        nonlocal read
        for n in range(1_000_000):
            read += 1
            yield n

    ahead = 0
    stream = getattr(pool, method)(items())
    for taken in range(1, 20_001):
        next(stream)
        ahead = max(ahead, read - taken)
    assert ahead <= 4 * 2 * 2, f"{ahead} items read ahead of the caller"
    stream.close()


def test_imap_raises_a_failure_in_its_turn_or_returns_it(system: ActorSystem) -> None:
    pool = system.spawn_pool(FailsOnce, size=1)
    stream = pool.imap(range(1, 12))
    assert [next(stream) for _ in range(4)] == [1, 4, 9, 16]
    with pytest.raises(ActorError, match="not yet: 5") as info:
        next(stream)
    assert "(item 4 of the map)" in info.value.__notes__
    results = list(system.spawn_pool(FailsOnce, size=1).imap(range(1, 12), return_exceptions=True))
    assert [type(r) for r in results].count(ActorError) == 2 and results[10] == 121
    retried = list(system.spawn_pool(FailsOnce, size=1).imap_unordered(range(1, 12), retry_on=(ValueError,)))
    assert sorted(retried) == [n * n for n in range(1, 12)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_imap_goes_on_through_worker_deaths(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2)
    pool = system.spawn_pool(Spin, 5.0, size=4)
    results = []
    for n, value in enumerate(pool.imap(range(1000))):
        results.append(value)
        if n in (100, 400, 700):
            system.kill_worker(n % 2, signal.SIGKILL)
    assert results == [n * n for n in range(1000)]


def test_streams_and_asks_on_one_thread_keep_each_others_answers(system: ActorSystem) -> None:
    # A blocking ask (kill_worker's, say) made while an imap was suspended read the imap's answers
    # and dropped them as a stranger's: the imap then waited for them until its timeout.
    pool = system.spawn_pool(Spin, 2.0, size=2)
    other = system.spawn_pool(Square, size=1)
    first = pool.imap(range(100), timeout=10.0)
    second = other.imap_unordered(range(100), timeout=10.0)
    taken: list[int] = []
    seen: set[int] = set()
    for n in range(100):
        taken.append(next(first))
        seen.add(next(second))
        assert other.refs[0].ask(n) == n * n  # a plain ask in between, on the same thread's socket
    assert taken == [n * n for n in range(100)] and seen == {n * n for n in range(100)}
