"""Greedy workers: a worker past max_worker_memory is restarted, and its actors come back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from actors import Blocker, Echo, Hog
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
    hog.tell(200)  # now past it (an ask could be in flight when the worker goes: WorkerDied)
    wait_for(lambda: system.stats()["memory_restarts"] == 1, 10, "the greedy worker restarted")
    wait_for(lambda: system.workers()[0].alive and system.workers()[0].pid != pid, 10, "a new worker")
    assert hog.ask(10, timeout=10.0) == 10  # re-created, as after a crash: its memory is gone
    assert neighbour.ask("still here", timeout=10.0) == "still here"
    assert system.workers()[0].rss_bytes < 250 * 2**20


def test_a_bad_max_worker_memory_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidArgument, match="max_worker_memory"):
        ActorSystem("limits", workers=1, max_worker_memory="lots")


def _stuck(system: ActorSystem) -> dict | None:  # type: ignore[type-arg]
    [row] = system._control("workers")
    return row["stuck"]  # type: ignore[no-any-return]


def test_a_stuck_worker_is_shown_with_its_actor_and_message(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1)
    blocker = system.spawn(Blocker)
    neighbour = system.spawn(Echo)
    assert _stuck(system) is None
    blocker.tell(("block", 3.0))
    wait_for(lambda: _stuck(system) is not None, 5, "the worker shown stuck")
    stuck = _stuck(system)
    assert stuck["class"] == "actors:Blocker" and stuck["message"] == "tuple 'block'"
    assert stuck["actor"] == f"{blocker.node}/{blocker.id:#x}" and stuck["seconds"] >= 1.0 and not stuck["silent"]
    assert neighbour.ask("after", timeout=10.0) == "after"  # (it waited for the blocker)
    wait_for(lambda: _stuck(system) is None, 5, "no longer stuck")


def test_a_worker_stuck_past_hang_timeout_is_restarted(make_system: Callable[..., ActorSystem],
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    system = make_system(1, hang_timeout=1.5)
    blocker = system.spawn(Blocker)
    pid = system.workers()[0].pid
    blocker.tell(("block", 60.0))
    wait_for(lambda: system.stats()["hang_restarts"] == 1, 10, "the stuck worker restarted")
    wait_for(lambda: system.workers()[0].alive and system.workers()[0].pid != pid, 10, "a new worker")
    assert blocker.ask(("ping",), timeout=10.0) == ("ping",)  # re-created
    err = capfd.readouterr().err
    assert "stuck for" in err and "(actors:Blocker) handling tuple 'block'" in err and "hang_timeout 1.5 s" in err


def test_a_worker_that_holds_its_gil_past_hang_timeout_is_restarted(
        make_system: Callable[..., ActorSystem], capfd: pytest.CaptureFixture[str]) -> None:
    system = make_system(1, hang_timeout=1.5)
    blocker = system.spawn(Blocker)
    blocker.tell(("hold",))
    wait_for(lambda: system.stats()["hang_restarts"] == 1, 10, "the worker holding its GIL restarted")
    assert blocker.ask(("ping",), timeout=10.0) == ("ping",)
    assert "stuck for" in capfd.readouterr().err


@pytest.mark.parametrize("value", [0.5, 0, -1, "3", float("nan")])
def test_a_bad_hang_timeout_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="hang_timeout"):
        ActorSystem("hangs", workers=1, hang_timeout=value)  # type: ignore[arg-type]
