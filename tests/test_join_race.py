"""A node that has just joined is answered at once, by members that have not heard of it yet.

A joiner learns the whole member table from its seed's push-pull; the other
members learn of the joiner by gossip, a few rounds later. Requests in that
window must be answered (held until the link exists), and a member that
asks a node the instant its gossip engine learns of it must reach it (the
link opens on demand). Default gossip timings, so the window is as wide as
users see it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from actors import Echo
from conftest import wait_for

from gorilix import ActorRef, ActorSystem
from gorilix.cluster import bridge, links
from gorilix.cluster.links import PeerLinks
from gorilix.launcher import free_port
from gorilix.system import ClusterConfig
from gorilix.transport.frames import CONTROL_ID

SECRETS = [pytest.param(None, id="plain"), pytest.param(os.urandom(32), id="curve")]
REPEATS = 20
#: Faster failure detection than the defaults, so a stopped joiner does not linger;
#: gossip (push_interval) keeps its default, which is what makes the window wide.
TIMINGS = {"probe_interval": 0.2, "probe_timeout": 0.1, "suspicion_mult": 3, "leave_timeout": 0.5}


@pytest.fixture
def member() -> Iterator[Callable[..., ActorSystem]]:
    systems: list[ActorSystem] = []

    def make(secret: bytes | None, seeds: list[str] | None = None) -> ActorSystem:
        name = f"m-{uuid.uuid4().hex[:6]}"
        system = ActorSystem(name, workers=1)
        systems.append(system)
        system.spawn(Echo, name="echo")
        system.set_cluster_provider(bridge.ClusterProvider())
        system.enable_clustering(ClusterConfig(
            node_name=name, bind_addr="127.0.0.1", bind_port=free_port(), seeds=seeds or [],
            secret_key=secret, **TIMINGS))
        return system

    try:
        yield make
    finally:
        for system in reversed(systems):
            system.stop()


def address(system: ActorSystem) -> str:
    return f"127.0.0.1:{system.get_cluster().local_member().port}"


def alive(system: ActorSystem) -> set[str]:
    return {m.name for m in system.get_cluster().members() if m.status.value == "alive"}


def echo_on(asker: ActorSystem, node: str) -> ActorRef:
    """From ``asker``, find ``node``'s echo actor through that node's control endpoint, then ask it; 1 s each.

    Through the asker's own client: these systems share this process, and a
    plain ``ref.ask`` would reach ``node``'s system directly, not over the network.
    """
    client = asker._client()
    found = client.ask(ActorRef(node, CONTROL_ID, "node"), ["whereis", "echo"], 1.0)
    assert found is not None, f"{asker.name}: {node} has no echo actor"
    ref = ActorRef(*found)
    assert client.ask(ref, ("hi", asker.name), 1.0) == ("hi", asker.name)
    return ref


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("secret", SECRETS)
def test_a_joiner_asks_every_other_node_at_once(member: Callable[..., ActorSystem],
                                                secret: bytes | None) -> None:
    seed = member(secret)
    others = [member(secret, [address(seed)]) for _ in range(2)]
    names = {seed.name, *(o.name for o in others)}
    wait_for(lambda: all(names <= alive(s) for s in (seed, *others)), 15, "three members alive everywhere")
    for _ in range(REPEATS):
        joiner = member(secret, [address(seed)])
        for other in others:  # they have not heard of the joiner yet
            echo_on(joiner, other.name)
        assert joiner.whereis("echo", node=others[0].name) is not None
        joiner.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("secret", SECRETS)
def test_a_member_asks_a_node_the_instant_it_learns_of_it(member: Callable[..., ActorSystem],
                                                          secret: bytes | None) -> None:
    seed = member(secret)
    watcher = member(secret, [address(seed)])
    wait_for(lambda: {seed.name, watcher.name} <= alive(watcher), 15, "two members alive")
    node: Any = watcher._node  # in this process: its loop can be made to lag, deterministically
    for _ in range(REPEATS):
        # The watcher's node loop does not read membership events for a while, so
        # its gossip engine knows the joiner but no event has opened a link to it:
        # the same instant, held open.
        node._drain_events = lambda: None
        try:
            joiner = member(secret, [address(seed)])
            wait_for(lambda j=joiner: j.name in alive(watcher), 15, "the joiner seen alive")
            echo_on(watcher, joiner.name)
        finally:
            del node._drain_events  # back to the class's method; the events wait in their socket
        joiner.stop()


# -- PeerLinks.route, on real sockets on loopback, without a cluster --------------------


@pytest.fixture
def two_links() -> Iterator[tuple[PeerLinks, PeerLinks]]:
    zctx: zmq.Context[Any] = zmq.Context()
    a = PeerLinks("a", zctx, "tcp://127.0.0.1:0", None)
    b = PeerLinks("b", zctx, "tcp://127.0.0.1:0", None)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        zctx.term()


def received(links_: PeerLinks, count: int) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    while len(got) < count and links_.external.poll(5000):
        got.append(links_.external.recv_multipart()[1:])
    return got


def test_route_opens_a_link_the_gossip_engine_knows_of(two_links: tuple[PeerLinks, PeerLinks]) -> None:
    a, b = two_links
    assert not a.route("b", [b"lost"])  # no link, no directory, never heard from: undeliverable
    a.follow_directory({"b": b.endpoint}.get)
    assert a.route("b", [b"one"]) and a.route("b", [b"two"])
    assert "b" in a.peers
    assert received(b, 2) == [[b"one"], [b"two"]]


def test_route_holds_for_a_node_that_talked_to_us_until_it_is_linked(
        two_links: tuple[PeerLinks, PeerLinks]) -> None:
    a, b = two_links
    a.identities.add(b"n:b")  # b sent us a request; gossip has not said where b is
    assert a.route("b", [b"reply 1"]) and a.route("b", [b"reply 2"])
    assert "b" not in a.peers and len(a.held["b"].frames) == 2
    a.connect("b", b.endpoint)  # the gossip event arrives
    assert a.route("b", [b"after"])
    assert received(b, 3) == [[b"reply 1"], [b"reply 2"], [b"after"]]
    assert not a.held


def test_held_messages_are_bounded_and_expire(two_links: tuple[PeerLinks, PeerLinks],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = two_links
    monkeypatch.setattr(links, "MAX_HELD", 3)
    monkeypatch.setattr(links, "MAX_HELD_NODES", 2)
    for name in ("x", "y", "z"):
        a.identities.add(b"n:" + name.encode())
    assert all(a.route("x", [bytes([i])]) for i in range(3))
    assert not a.route("x", [b"one too many"])
    assert a.route("y", [b"y"])
    assert not a.route("z", [b"a third unknown node"])
    first, last = a.held["x"].since, a.held["y"].since
    assert a.expire_held(first + links.HOLD_FOR / 2) == []
    expired = dict(a.expire_held(last + links.HOLD_FOR))
    assert expired == {"x": [[b"\x00"], [b"\x01"], [b"\x02"]], "y": [[b"y"]]}
    assert not a.held
    assert a.forget("x") == [] and b"n:x" not in a.identities
    assert not a.route("x", [b"gone"])  # forgotten: no longer held for


def test_an_endpoint_zeromq_refuses_is_never_fatal(two_links: tuple[PeerLinks, PeerLinks]) -> None:
    a, _ = two_links
    a.follow_directory({"b": "tcp://a b:1"}.get)  # the engine checks endpoints; this layer does not rely on it
    assert not a.route("b", [b"nowhere to go"])
    a.identities.add(b"n:b")
    assert a.route("b", [b"held instead"]) and "b" not in a.peers
