"""Bounded memory under a stuck receiver: the node refuses past ``max_queued`` instead of queueing without end.

A worker stopped by SIGSTOP reads nothing. Before the limit, 200,000 tells
of 1 KB to an actor there grew the node by 544 MB and the worker by 708 MB.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
import pytest
from actors import Echo
from conftest import wait_for

from gorilix import ActorSystem, InvalidArgument, MailboxFull

KIB = b"x" * 1024


def _node_rss(system: ActorSystem) -> int:
    return int(psutil.Process(system._node.pid).memory_info().rss)


def test_a_stopped_worker_costs_the_node_at_most_max_queued(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2, max_queued="4MiB", log_level="CRITICAL")
    frozen = system.spawn(Echo, worker=1)
    other = system.spawn(Echo, worker=0)
    assert frozen.ask("warm", timeout=10.0) == "warm"
    pid = system.workers()[1].pid
    before = _node_rss(system)
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(60_000):  # 60 MB, fifteen times the limit
            frozen.tell(KIB)
        wait_for(lambda: system.stats()["queue_refusals"] > 0, 20, "the node refusing")
        with pytest.raises(MailboxFull, match="max_queued"):
            frozen.ask("hello", timeout=10.0)
        assert other.ask("still here", timeout=10.0) == "still here"  # the other worker is not held up
        stats = system.stats()
        letters = system.dead_letters()
        queued = system.workers()[1].queued_bytes
        grown = _node_rss(system) - before
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 3 * 2**20 < queued <= 4 * 2**20 + 64 * 1024  # (the last message past the line may be a whole batch)
    assert letters.count >= stats["queue_refusals"] - 1 > 0  # (the refused ask is no dead letter)
    assert grown < 40 * 2**20, f"the node grew by {grown / 2**20:.0f} MiB"
    # Once it reads again, what waited is taken, and the worker takes new messages.
    wait_for(lambda: system.workers()[1].queued_bytes < 2**20, 20, "the worker catching up")
    assert frozen.ask("back", timeout=10.0) == "back"


def test_without_a_limit_nothing_is_refused(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1, max_queued=None, log_level="CRITICAL")
    echo = system.spawn(Echo)
    for _ in range(5000):
        echo.tell(KIB)
    assert echo.ask("done", timeout=10.0) == "done"
    assert system.stats()["queue_refusals"] == 0


@pytest.mark.parametrize("value", [0, -1, "lots", 1.5, True])
def test_a_bad_max_queued_is_refused_naming_it(value: object) -> None:
    with pytest.raises(InvalidArgument, match="max_queued"):
        ActorSystem("bad", workers=1, max_queued=value)  # type: ignore[arg-type]
