"""Tells lost in a worker's death are counted per actor; an acknowledged tell is delivered at least once.

The node counts the tells it forwards to each actor; the worker's tally says
which it handed to ``receive``. A sink counts what it takes in a file that
outlives its worker, so the test knows exactly how many tells arrived.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from actors import AckedRelay, AckedTellInside, Echo, KeyValue, TallySink
from conftest import wait_for

from gorilix import ActorNotFound, ActorRef, ActorSystem, GorilixError, InvalidArgument
from gorilix.workers.messages import Cast


def _counter_file(tmp_path: Path) -> tuple[str, memoryview]:
    import mmap

    path = str(tmp_path / "taken")
    with open(path, "wb") as file:
        file.write(bytes(8))
    fd = os.open(path, os.O_RDWR)
    try:
        return path, memoryview(mmap.mmap(fd, 8)).cast("Q")
    finally:
        os.close(fd)


def test_tells_lost_in_a_worker_death_are_counted_per_actor(
        make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    system = make_system(2, log_level="CRITICAL")
    path, taken = _counter_file(tmp_path)
    sink = system.spawn(TallySink, path, 0.0002, worker=1)
    sent = 20_000
    for _ in range(sent):  # (far faster than the sink takes them: most wait in its mailbox)
        sink.tell("x")
    wait_for(lambda: taken[0] >= 500, 20, "the sink under way")
    system.kill_worker(1, signal.SIGKILL)
    wait_for(lambda: sink.ask("count", timeout=10.0) is not None, 20, "the sink re-created")
    time.sleep(0.2)  # (its tells are all taken or lost: the ones sent before the kill)
    letters = system.dead_letters()
    arrived = int(taken[0])
    assert arrived < sent  # the kill did lose tells, so the count below is of something
    # Exact up to the one tell the sink's receive may have been in when killed: handed over, never counted.
    assert sent - arrived - 1 <= letters.lost_in_deaths <= sent - arrived
    assert letters.count == letters.lost_in_deaths  # nothing else went astray
    lost = [letter for letter in letters.recent if letter.get("lost_in_death")]
    assert [letter["to"] for letter in lost] == [f"{system.name}/{sink.id:#x}"]
    assert lost[0]["count"] == letters.lost_in_deaths and "worker 1 died" in lost[0]["reason"]
    assert system.stats()["lost_in_deaths"] == letters.lost_in_deaths


def test_a_death_with_nothing_queued_loses_nothing(make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    system = make_system(2, log_level="CRITICAL")
    path, taken = _counter_file(tmp_path)
    sink = system.spawn(TallySink, path, worker=1)
    for _ in range(1000):
        sink.tell("x")
    assert sink.ask("count", timeout=10.0) == 1000  # (all taken: the ask came after them)
    system.kill_worker(1, signal.SIGKILL)
    time.sleep(0.3)
    assert system.dead_letters().lost_in_deaths == 0 and system.dead_letters().count == 0


# -- acknowledged tells: at least once ------------------------------------------------------


def test_an_acknowledged_tell_returns_once_receive_took_it(
        make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    system = make_system(2, log_level="CRITICAL")
    path, taken = _counter_file(tmp_path)
    sink = system.spawn(TallySink, path, 0.05)  # (slow: a plain tell would return long before)
    sink.tell("x", ack=True, timeout=10.0)
    assert taken[0] == 1
    kv = system.spawn(KeyValue)
    kv.tell(Cast(("k", "v")), ack=True)  # a cast stays a cast: handle_cast, no reply expected of it
    assert kv.call("k") == "v"


def test_acknowledged_tells_survive_worker_deaths(make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    system = make_system(2, log_level="CRITICAL")
    path, taken = _counter_file(tmp_path)
    sink = system.spawn(TallySink, path, 0.001, worker=1)
    sent, errors = 0, []

    def send() -> None:
        nonlocal sent
        for _ in range(400):
            try:
                sink.tell("x", ack=True, timeout=20.0)
                sent += 1
            except GorilixError as exc:  # (none expected: a loss is sent again)
                errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        for _ in range(3):
            wait_for(lambda: system.workers()[1].alive, 20, "worker 1 back")
            time.sleep(0.1)
            system.kill_worker(1, signal.SIGKILL)
    finally:
        thread.join(60)
    assert errors == [] and sent == 400
    assert taken[0] >= 400  # every one taken at least once (one taken as its worker died is taken again)
    assert taken[0] <= 400 + 3  # and at most once more per death
    assert system.dead_letters().lost_in_deaths == 0  # nothing acknowledged is counted as lost


def test_an_acknowledged_tell_fails_at_once_when_resending_cannot_help(
        make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1, log_level="CRITICAL")
    echo = system.spawn(Echo)
    echo.stop()
    wait_for(lambda: _gone(echo), 10, "the actor stopped")
    started = time.monotonic()
    with pytest.raises(ActorNotFound):
        echo.tell("x", ack=True, timeout=30.0)
    assert time.monotonic() - started < 10.0  # (not the whole timeout: a stopped actor does not come back)
    inside = system.spawn(AckedTellInside)
    said = inside.ask(echo, timeout=10.0)
    assert "tell(ack=True) would block" in said and "await ref.tell_async(...)" in said
    with pytest.raises(InvalidArgument, match="timeout"):
        echo.tell("x", ack=True, timeout=-1)


def _gone(ref: ActorRef) -> bool:
    try:
        ref.ask("ping", timeout=5.0)
    except ActorNotFound:
        return True
    return False


def test_an_acknowledged_tell_is_awaited_from_an_actor_and_from_asyncio(
        make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    import asyncio

    system = make_system(2, log_level="CRITICAL")
    path, taken = _counter_file(tmp_path)
    sink = system.spawn(TallySink, path, 0.05, worker=1)
    relay = system.spawn(AckedRelay, worker=0)
    assert relay.ask((sink, "x"), timeout=10.0) == "taken" and taken[0] == 1  # (taken before the answer)
    asyncio.run(sink.tell_async("y"))
    assert taken[0] == 2
