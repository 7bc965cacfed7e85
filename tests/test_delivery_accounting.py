"""Tells lost in a worker's death are counted, per actor, where the node sees them lost.

The node counts the tells it forwards to each actor; the worker's tally says
which it handed to ``receive``. A sink counts what it takes in a file that
outlives its worker, so the test knows exactly how many tells arrived.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from actors import TallySink
from conftest import wait_for

from gorilix import ActorSystem


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
