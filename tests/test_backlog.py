"""Bounded memory under a stuck receiver: the node refuses past ``max_queued`` instead of queueing without end.

A worker stopped by SIGSTOP reads nothing. Before the limit, 200,000 tells
of 1 KB to an actor there grew the node by 544 MB and the worker by 708 MB.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator

import psutil
import pytest
from actors import Echo, Flooder, Relay
from conftest import wait_for

from gorilix import ActorError, ActorRef, ActorSystem, GorilixError, InvalidArgument, MailboxFull
from gorilix.cluster import bridge
from gorilix.launcher import free_port
from gorilix.system import ClusterConfig

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


# -- a peer node that reads nothing ------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[ActorSystem, ActorSystem]]:
    """Two clustered systems on loopback; the first refuses past 4 MiB unread by a peer."""
    systems: list[ActorSystem] = []
    try:
        for limit in ("4MiB", None):
            name = f"peer-{uuid.uuid4().hex[:6]}"
            system = ActorSystem(name, workers=1, max_queued=limit, log_level="CRITICAL")
            systems.append(system)
            system.set_cluster_provider(bridge.ClusterProvider())
            seeds = [f"127.0.0.1:{systems[0].get_cluster().local_member().port}"] if len(systems) == 2 else []
            system.enable_clustering(ClusterConfig(node_name=name, bind_addr="127.0.0.1", bind_port=free_port(),
                                                   seeds=seeds))
        yield systems[0], systems[1]
    finally:
        for system in systems:
            try:
                os.kill(system._node.pid, signal.SIGCONT)
            except OSError:
                pass
            system.stop()


def test_a_stopped_peer_node_costs_the_sender_at_most_max_queued(pair: tuple[ActorSystem, ActorSystem]) -> None:
    sender, stuck = pair
    far = stuck.spawn(Echo)
    wait_for(lambda: _answers(far), 20, "the peer reachable")
    flooder = sender.spawn(Flooder)  # (its tells go through the sender's node: this program's would go direct)
    before = _node_rss(sender)
    os.kill(stuck._node.pid, signal.SIGSTOP)
    assert flooder.ask((far, 30_000, 1024), timeout=30.0) == 30_000  # 30 MB, far past the 4 MiB limit
    wait_for(lambda: sender.stats()["queue_refusals"] > 0, 20, "the sending node refusing")
    relay = sender.spawn(Relay)
    with pytest.raises(ActorError, match=f"MailboxFull .*: node {stuck.name} has .* past max_queued"):
        relay.ask((far, "hello"), timeout=10.0)  # (the relay's ask failed with MailboxFull, and it crashed)
    grown = _node_rss(sender) - before
    os.kill(stuck._node.pid, signal.SIGCONT)
    assert grown < 40 * 2**20, f"the sending node grew by {grown / 2**20:.0f} MiB"
    assert sender.dead_letters().count > 0
    # Once the peer reads again and says so, the sender sends to it again.
    wait_for(lambda: _answers(far), 30, "the peer answering again")


def _answers(ref: ActorRef) -> bool:
    try:
        return bool(ref.ask("ping", timeout=2.0) == "ping")
    except GorilixError:
        return False
