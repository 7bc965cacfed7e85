"""Links between nodes (CURVE on loopback): a refused handshake is repaired, not left dead."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import zmq
from conftest import wait_for

from gorilix.cluster.links import PeerLinks
from gorilix.cluster.security import ClusterKeys


@pytest.fixture
def pair() -> Iterator[tuple[PeerLinks, PeerLinks]]:
    """Nodes "a" and "b" with one secret, each with its own context (one ZAP handler per context)."""
    keys = ClusterKeys(os.urandom(32))
    contexts: list[zmq.Context[zmq.Socket[bytes]]] = [zmq.Context(), zmq.Context()]
    a = PeerLinks("a", contexts[0], "tcp://127.0.0.1:0", keys)
    b = PeerLinks("b", contexts[1], "tcp://127.0.0.1:0", keys)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        for ctx in contexts:
            ctx.destroy(linger=0)


def _received(links: PeerLinks) -> list[list[bytes]]:
    got = []
    while links.external.poll(0):
        got.append(links.external.recv_multipart())
    return got


def test_a_link_refused_by_a_peer_that_did_not_know_us_is_repaired(pair: tuple[PeerLinks, PeerLinks]) -> None:
    a, b = pair
    # a learnt of b first (gossip reaches members in any order); b does not admit a's key yet.
    a.connect("b", b.endpoint)
    wait_for(lambda: a.peers["b"].refused(), 5, "b refusing a's handshake")
    assert a.send("b", [b"lost"]) is True  # queued on a connection ZeroMQ will never retry
    b.allow("a")
    inbox: list[list[bytes]] = []
    # Even once b has heard of a, nothing arrives on the refused link (bounded wait: 0.5 s).
    if b.external.poll(500):
        inbox.extend(_received(b))
    assert inbox == []
    # The repaired link carries messages; what was queued on the refused one is lost.

    def delivered() -> bool:
        a.repair()
        a.send("b", [b"hello"])
        inbox.extend(_received(b))
        return [b"n:a", b"hello"] in inbox

    wait_for(delivered, 10, "a message over the repaired link")
    assert [b"n:a", b"lost"] not in inbox
    assert a.peers["b"].refused() is False and a.peers["b"].refusals == 0
    assert a.repair() == []  # a healthy link is left alone


def test_repeated_refusals_back_off(pair: tuple[PeerLinks, PeerLinks]) -> None:
    a, b = pair
    a.connect("b", b.endpoint)
    waits = []
    for _ in range(3):
        link = a.peers["b"]
        wait_for(lambda link=link: link.refused(), 5, "a refusal")
        wait_for(lambda: a.repair() == ["b"], 10, "the link re-opened")
        fresh = a.peers["b"]
        waits.append((fresh.refusals, fresh.repair_at))
    assert [r for r, _ in waits] == [1, 2, 3]
    assert waits[0][1] < waits[1][1] < waits[2][1]  # each attempt waits longer than the last
