"""Sealed gossip: only the secret opens it, and a datagram is good once, within the clock window."""

from __future__ import annotations

import os

import pytest

from gorilix.cluster import security
from gorilix.cluster.security import REPLAY_WINDOW, ClusterKeys


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SECRET = os.urandom(32)


def test_a_sealed_datagram_opens_once() -> None:
    clock = Clock()
    sender, receiver = ClusterKeys(SECRET, clock), ClusterKeys(SECRET, clock)
    sealed = sender.seal(b"ping")
    assert b"ping" not in sealed  # encrypted, not only signed
    assert receiver.open(sealed) == b"ping"
    assert receiver.open(sealed) is None  # played back
    assert receiver.replayed == 1 and receiver.stale == 0
    assert receiver.open(sender.seal(b"ping")) == b"ping"  # the same content, sealed anew, is fine


def test_other_secrets_and_tampering_are_refused() -> None:
    clock = Clock()
    sealed = ClusterKeys(SECRET, clock).seal(b"ping")
    assert ClusterKeys(os.urandom(32), clock).open(sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    receiver = ClusterKeys(SECRET, clock)
    assert receiver.open(tampered) is None
    assert receiver.open(b"G1" + sealed[2:]) is None  # another version of the format
    assert receiver.open(sealed[:20]) is None
    assert receiver.stale == receiver.replayed == 0  # refused before any clock or replay check


@pytest.mark.parametrize("skew", [-REPLAY_WINDOW - 1, REPLAY_WINDOW + 1])
def test_a_datagram_stamped_outside_the_window_is_dropped(skew: float) -> None:
    sender_clock, receiver_clock = Clock(), Clock()
    sender, receiver = ClusterKeys(SECRET, sender_clock), ClusterKeys(SECRET, receiver_clock)
    sender_clock.now += skew  # a sender whose clock is off, or a datagram captured long ago
    assert receiver.open(sender.seal(b"ping")) is None
    assert receiver.stale == 1 and receiver.last_skew == pytest.approx(skew)
    sender_clock.now -= skew - (REPLAY_WINDOW - 1) * (1 if skew > 0 else -1)  # just inside
    assert receiver.open(sender.seal(b"ping")) == b"ping"


def test_a_captured_datagram_cannot_be_replayed_later() -> None:
    clock = Clock()
    sender, receiver = ClusterKeys(SECRET, clock), ClusterKeys(SECRET, clock)
    sealed = sender.seal(b"leave")
    assert receiver.open(sealed) == b"leave"
    start = clock.now
    for later in (REPLAY_WINDOW / 2, REPLAY_WINDOW - 1, 10 * REPLAY_WINDOW):
        clock.now = start + later
        assert receiver.open(sealed) is None  # remembered while the stamp is valid, too old after
    assert receiver.replayed == 2 and receiver.stale == 1


def test_the_replay_memory_forgets_expired_nonces_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sender, receiver = ClusterKeys(SECRET, clock), ClusterKeys(SECRET, clock)
    for _ in range(3):
        assert receiver.open(sender.seal(b"x")) == b"x"
    clock.now += 2 * REPLAY_WINDOW + 1
    assert receiver.open(sender.seal(b"y")) == b"y"
    assert len(receiver._seen) == 1  # the expired nonces were forgotten
    monkeypatch.setattr(security, "MAX_SEEN", 5)
    for _ in range(20):  # a flood within the window: the oldest nonces make room
        assert receiver.open(sender.seal(b"z")) == b"z"
        assert len(receiver._seen) <= 5
