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
    assert a.send("b", [b"early"]) is True  # kept by the link until a handshake succeeds
    wait_for(lambda: a.repair() == ["b"], 5, "b refusing a's handshake, and a re-opening the link")
    assert a.send("b", [b"meanwhile"]) is True
    b.allow("a")  # b hears of a
    inbox: list[list[bytes]] = []

    def delivered() -> bool:
        a.repair()
        inbox.extend(_received(b))
        return len(inbox) >= 2

    wait_for(delivered, 10, "the kept messages over the repaired link")
    assert inbox == [[b"n:a", b"early"], [b"n:a", b"meanwhile"]]  # nothing lost, in order
    link = a.peers["b"]
    assert link.ready and not link.failed and link.refusals == 0 and not a.waiting()
    assert a.send("b", [b"later"]) is True
    wait_for(lambda: inbox.extend(_received(b)) or [b"n:a", b"later"] in inbox, 5, "a direct send")
    assert a.repair() == []  # a healthy link is left alone


def test_repeated_refusals_back_off(pair: tuple[PeerLinks, PeerLinks]) -> None:
    a, b = pair
    a.connect("b", b.endpoint)
    waits = []
    for _ in range(3):
        wait_for(lambda: a.repair() == ["b"], 10, "a refusal, and the link re-opened")
        fresh = a.peers["b"]
        waits.append((fresh.refusals, fresh.repair_at))
    assert [r for r, _ in waits] == [1, 2, 3]
    assert waits[0][1] < waits[1][1] < waits[2][1]  # each attempt waits longer than the last


def test_a_peer_restarted_before_it_knows_us_is_linked_again() -> None:
    """ZeroMQ reconnects by itself when a peer restarts; the new process may refuse us at first."""
    keys = ClusterKeys(os.urandom(32))
    contexts: list[zmq.Context[zmq.Socket[bytes]]] = [zmq.Context() for _ in range(3)]
    a = PeerLinks("a", contexts[0], "tcp://127.0.0.1:0", keys)
    b = PeerLinks("b", contexts[1], "tcp://127.0.0.1:0", keys)
    restarted: PeerLinks | None = None
    try:
        b.allow("a")
        a.connect("b", b.endpoint)
        a.send("b", [b"first"])
        wait_for(lambda: a.repair() == [] and a.peers["b"].ready and _received(b), 5, "a healthy link")
        b.close()  # b dies; a new b comes up on the same address, not knowing a yet
        # Ending b's context waits until its listener is gone: ZeroMQ closes sockets in its I/O
        # thread, and a bind at once could still find the port in use.
        contexts[1].destroy(linger=0)
        restarted = PeerLinks("b", contexts[2], b.endpoint, keys)
        wait_for(lambda: (a.repair(), not a.peers["b"].ready)[1], 10, "the reconnection refused")
        assert a.send("b", [b"kept"]) is True
        restarted.allow("a")
        wait_for(lambda: (a.repair(), [b"n:a", b"kept"] in _received(restarted))[1], 10, "the link working again")
    finally:
        a.close()
        if restarted is not None:
            restarted.close()
        for ctx in contexts:
            ctx.destroy(linger=0)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_links_past_the_bound_are_refused_and_counted_and_fds_stay_bounded() -> None:
    """A flood of members (issue 11 saw 986 peer sockets) cannot open links past max_links."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    links = PeerLinks("a", ctx, "tcp://127.0.0.1:0", None, max_links=8)
    try:
        before = _fds()
        for i in range(500):  # made-up members at addresses where nothing listens
            links.connect(f"fake-{i}", f"tcp://127.0.0.1:{1 + i}")
        assert len(links.peers) == 8 and links.refused == 492
        assert _fds() - before <= 8 * 4  # a socket, its connection, (with CURVE) a monitor pair
        assert links.route("fake-600", [b"x"]) is False  # on demand too: no directory, nothing held
        links.directory = lambda name: "tcp://127.0.0.1:9"
        assert links.route("fake-601", [b"x"]) is False and links.refused == 493
        links.forget("fake-0")  # a member gone frees its place
        assert links.connect("real", "tcp://127.0.0.1:9") is not None
    finally:
        links.close()
        ctx.destroy(linger=0)


def test_the_default_bound_keeps_links_to_a_quarter_of_the_descriptors() -> None:
    import resource

    from gorilix.cluster.links import default_max_links

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_links() == max(64, (soft - 256) // 4)
