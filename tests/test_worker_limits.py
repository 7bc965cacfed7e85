"""Greedy workers: a worker past max_worker_memory is restarted, and its actors come back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from actors import Echo, Hog
from conftest import wait_for

from gorilix import ActorSystem, InvalidArgument
from gorilix.system import parse_memory


@pytest.mark.parametrize(("value", "size"), [
    (1, 1), (4096, 4096), ("512", 512), ("2GiB", 2 * 2**30), ("500MB", 500 * 10**6), ("1.5 gb", 1_500_000_000),
    (" 64 KiB ", 64 * 2**10), (None, None),
])
def test_a_memory_size_is_read_as_bytes(value: object, size: int | None) -> None:
    assert parse_memory("max_worker_memory", value) == size


@pytest.mark.parametrize("value", [0, -5, "0", "lots", "2 GiB extra", "5 XB", 1.5, True, b"2GB", [1]])
def test_a_bad_memory_size_is_refused_naming_it(value: object) -> None:
    with pytest.raises(InvalidArgument, match="max_worker_memory"):
        parse_memory("max_worker_memory", value)


def test_a_worker_past_max_worker_memory_is_restarted(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1, max_worker_memory="250MiB", log_level="CRITICAL")
    hog = system.spawn(Hog)
    neighbour = system.spawn(Echo)
    pid = system.workers()[0].pid
    assert hog.ask(100, timeout=10.0) == 100  # (well under the limit: nothing happens)
    time.sleep(1.5)
    assert system.stats()["memory_restarts"] == 0 and system.workers()[0].pid == pid
    hog.ask(200, timeout=10.0)  # now past it
    wait_for(lambda: system.stats()["memory_restarts"] == 1, 10, "the greedy worker restarted")
    wait_for(lambda: system.workers()[0].alive and system.workers()[0].pid != pid, 10, "a new worker")
    assert hog.ask(10, timeout=10.0) == 10  # re-created, as after a crash: its memory is gone
    assert neighbour.ask("still here", timeout=10.0) == "still here"
    assert system.workers()[0].rss_bytes < 250 * 2**20


def test_a_bad_max_worker_memory_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidArgument, match="max_worker_memory"):
        ActorSystem("limits", workers=1, max_worker_memory="lots")
