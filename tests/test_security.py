"""Sealed gossip: only the secret opens it, only at the member it is for, and once, within the clock window."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_for

from gorilix.cluster import security
from gorilix.cluster.driver import SwimDriver, _interface_addresses
from gorilix.cluster.security import LEARNT_FOR, REPLAY_WINDOW, ClusterKeys
from gorilix.cluster.swim import SwimConfig, SwimEngine
from gorilix.transport.errors import ClusterError


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SECRET = os.urandom(32)
A, B, C = ("10.0.0.1", 7946), ("10.0.0.2", 7946), ("10.0.0.3", 7946)


def member(name: str, address: tuple[str, int], clock: Callable[[], float], secret: bytes = SECRET) -> ClusterKeys:
    keys = ClusterKeys(secret, clock)
    keys.gossip_as(name, [address])
    return keys


def test_a_sealed_datagram_opens_once() -> None:
    clock = Clock()
    sender, receiver = member("a", A, clock), member("b", B, clock)
    sealed = sender.seal(b"ping", B)
    assert b"ping" not in sealed  # encrypted, not only signed
    assert receiver.open(sealed, A) == b"ping"
    assert receiver.open(sealed, A) is None  # played back
    assert receiver.replayed == 1 and receiver.stale == 0
    assert receiver.open(sender.seal(b"ping", B), A) == b"ping"  # the same content, sealed anew, is fine


def test_other_secrets_and_tampering_are_refused() -> None:
    clock = Clock()
    sealed = member("a", A, clock).seal(b"ping", B)
    stranger = member("b", B, clock, os.urandom(32))
    assert stranger.open(sealed, A) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    receiver = member("b", B, clock)
    assert receiver.open(tampered, A) is None
    assert receiver.open(b"G2" + sealed[2:], A) is None  # another version of the format
    assert receiver.open(sealed[:20], A) is None
    assert receiver.open(sealed[:2] + b"x" + sealed[3:], A) is None  # bound to neither a name nor an address
    assert receiver.stale == receiver.replayed == 0  # refused before any clock or replay check
    assert (receiver.unopened, receiver.other_version) == (4, 1)
    assert receiver.open(sealed, A) == b"ping"  # none of that spent the genuine one


def test_an_old_format_datagram_is_dropped_and_counted() -> None:
    """The G2 seal bound no destination: a member still sending it is not heard (upgrade every member)."""
    clock = Clock()
    receiver = member("b", B, clock)
    nonce = os.urandom(12)
    old = b"G2" + nonce + security.AESGCM(security._derive(SECRET, "gossip")).encrypt(
        nonce, security._STAMP.pack(clock()) + b"ping", b"G2")
    assert receiver.open(old, A) is None
    assert (receiver.unopened, receiver.other_version) == (1, 1)


def test_a_datagram_sealed_for_one_member_is_refused_by_another() -> None:
    clock = Clock()
    a, b, c = member("a", A, clock), member("b", B, clock), member("c", C, clock)
    to_b = a.seal(b"alive x", B)  # a has not heard from b: bound to b's address
    assert c.open(to_b, A) is None  # captured on its way to b, played to c
    assert b.open(to_b, A) == b"alive x"
    answer = b.seal(b"ack", A)  # b just heard a's name from a's datagram: bound to the name "a"
    assert c.open(answer, B) is None
    assert a.open(answer, B) == b"ack"
    assert c.unopened == 2 and c.replayed == 0


def test_an_answer_reaches_a_member_by_name_at_any_address() -> None:
    """Behind NAT or on a host with several addresses, a member's datagrams come from an address it does
    not advertise: the answer is bound to its name, so it still opens there."""
    clock = Clock()
    a, b = ClusterKeys(SECRET, clock), member("b", B, clock)
    a.gossip_as("a", [("0.0.0.0", 7946), A])  # a wildcard bind: only the advertised address is a's
    seen_at = ("192.0.2.7", 40000)  # a's datagram, as b receives it through a NAT
    assert b.open(a.seal(b"ping", B), seen_at) == b"ping"
    assert a.open(b.seal(b"ack", seen_at), B) == b"ack"
    clock.now += LEARNT_FOR + 1  # long after: what b sends there is bound to the address again
    assert a.open(b.seal(b"late", seen_at), B) is None


def test_a_seed_bound_to_every_interface_opens_a_join_sent_to_any_of_its_own_addresses() -> None:
    clock = Clock()
    seed_port = 7946
    local = _interface_addresses(("0.0.0.0", seed_port))
    assert ("127.0.0.1", seed_port) in local and _interface_addresses(A) == []
    seed = ClusterKeys(SECRET, clock)
    seed.gossip_as("seed", [("10.0.0.5", seed_port), ("0.0.0.0", seed_port), *local])
    joiner = member("j", B, clock)
    assert seed.open(joiner.seal(b"join", ("127.0.0.1", seed_port)), B) == b"join"
    assert seed.open(joiner.seal(b"join", ("10.0.0.5", seed_port)), B) == b"join"
    # Not an address of the seed's host (nor its advertised one): sealed for someone else.
    assert seed.open(joiner.seal(b"join", ("198.51.100.9", seed_port)), B) is None
    assert seed.open(joiner.seal(b"join", ("127.0.0.1", seed_port + 1)), B) is None


def test_sealing_needs_to_know_who_we_are() -> None:
    with pytest.raises(ClusterError, match="gossip_as"):
        ClusterKeys(SECRET).seal(b"ping", B)


@pytest.mark.parametrize("skew", [-REPLAY_WINDOW - 1, REPLAY_WINDOW + 1])
def test_a_datagram_stamped_outside_the_window_is_dropped(skew: float) -> None:
    sender_clock, receiver_clock = Clock(), Clock()
    sender, receiver = member("a", A, sender_clock), member("b", B, receiver_clock)
    sender_clock.now += skew  # a sender whose clock is off, or a datagram captured long ago
    assert receiver.open(sender.seal(b"ping", B), A) is None
    assert receiver.stale == 1 and receiver.last_skew == pytest.approx(skew)
    sender_clock.now -= skew - (REPLAY_WINDOW - 1) * (1 if skew > 0 else -1)  # just inside
    assert receiver.open(sender.seal(b"ping", B), A) == b"ping"


def test_a_captured_datagram_cannot_be_replayed_later() -> None:
    clock = Clock()
    sender, receiver = member("a", A, clock), member("b", B, clock)
    sealed = sender.seal(b"leave", B)
    assert receiver.open(sealed, A) == b"leave"
    start = clock.now
    for later in (REPLAY_WINDOW / 2, REPLAY_WINDOW - 1, 10 * REPLAY_WINDOW):
        clock.now = start + later
        assert receiver.open(sealed, A) is None  # remembered while the stamp is valid, too old after
    assert receiver.replayed == 2 and receiver.stale == 1


def test_the_replay_memory_forgets_expired_nonces_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sender, receiver = member("a", A, clock), member("b", B, clock)
    for _ in range(3):
        assert receiver.open(sender.seal(b"x", B), A) == b"x"
    clock.now += 2 * REPLAY_WINDOW + 1
    assert receiver.open(sender.seal(b"y", B), A) == b"y"
    assert len(receiver._seen) == 1  # the expired nonces were forgotten
    monkeypatch.setattr(security, "MAX_SEEN", 5)
    for _ in range(20):  # a flood within the window: the oldest nonces make room
        assert receiver.open(sender.seal(b"z", B), A) == b"z"
        assert len(receiver._seen) <= 5


def test_the_names_learnt_for_answers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    receiver = member("b", B, clock)
    monkeypatch.setattr(security, "MAX_LEARNT", 5)
    for port in range(20):
        sender = ClusterKeys(SECRET, clock)
        sender.gossip_as(f"m{port}", [("10.0.1.1", 9000 + port)])
        assert receiver.open(sender.seal(b"x", B), ("10.0.1.1", 9000 + port)) == b"x"
        assert len(receiver._learnt) <= 5


@pytest.fixture
def drivers() -> Iterator[Callable[[str], SwimDriver]]:
    """Gossip drivers on loopback with the same secret; all stopped after."""
    started: list[SwimDriver] = []

    def start(name: str) -> SwimDriver:
        driver = SwimDriver(name, ("127.0.0.1", 0), ("127.0.0.1", 0), {}, SwimConfig(), ClusterKeys(SECRET),
                            lambda events: None)
        started.append(driver)
        driver.start()
        return driver

    try:
        yield start
    finally:
        for driver in started:
            driver.stop()


def test_a_captured_join_replayed_to_other_members_adds_nobody(drivers: Callable[[str], SwimDriver]) -> None:
    seed, member, bystander = drivers("seed"), drivers("member"), drivers("bystander")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        outsider_keys = ClusterKeys(SECRET)
        outsider_keys.gossip_as("outsider", [sock.getsockname()])
        outsider = SwimEngine("outsider", "127.0.0.1", sock.getsockname()[1], {}, SwimConfig(),
                              clock=time.monotonic, rng=random.Random(1))
        outsider.join([seed.bound])
        sealed = [outsider_keys.seal(packet, address) for address, packet in outsider.take_outbox()]
        for datagram in sealed:  # what an eavesdropper captured on its way to the seed...
            for target in (member, bystander):  # ...played to the others
                sock.sendto(datagram, target.bound)
        for datagram in sealed:
            sock.sendto(datagram, seed.bound)

        def outsider_answers() -> bool:
            # The seed admits a member it heard of once it answered a ping: let the outsider's engine do so.
            sock.settimeout(0.05)
            try:
                datagram, source = sock.recvfrom(65_535)
            except TimeoutError:
                pass
            else:
                opened = outsider_keys.open(datagram, source)
                if opened is not None:
                    outsider.receive(opened, source)
                    for address, packet in outsider.take_outbox():
                        sock.sendto(outsider_keys.seal(packet, address), address)
            return seed.member("outsider") is not None

        wait_for(outsider_answers, what="the seed admits the outsider it was sent to")

        def handled(target: SwimDriver) -> bool:
            return target.dropped >= len(sealed) or target.member("outsider") is not None

        wait_for(lambda: handled(member) and handled(bystander), what="the others handle the replay")
        for target in (member, bystander):
            assert target.member("outsider") is None
            assert target.keys is not None and target.keys.unopened == len(sealed)


def _hand_written_hkdf(secret: bytes, label: str, length: int = 32) -> bytes:
    """The derivation of before (RFC 5869 by hand): keys derived now must be the same, or clusters would split."""
    import hashlib
    import hmac

    prk = hmac.new(b"gorilix-cluster-v1", secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + label.encode() + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("label", ["gossip", "curve:gorilix-client", "curve:gorilix-router", "curve:n1"])
def test_keys_are_derived_with_cryptographys_hkdf_and_unchanged_on_the_wire(label: str) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    assert security._derive(secret, label) == _hand_written_hkdf(secret, label)
    assert security._derive(secret, label, 80) == _hand_written_hkdf(secret, label, 80)
    if label == "gossip":  # a fixed vector, so a change of both at once is seen too
        assert security._derive(secret, label).hex() == "af0595731c7847c44ef64970b66d2eaad60f99a475a7e635a87e41f65fb9a08c"
