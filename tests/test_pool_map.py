"""A pool's map shows its progress when asked: click's bar on standard error, with the rate."""

from __future__ import annotations

from typing import Any

import click
import pytest
from actors import Square

from gorilix import ActorSystem


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
