"""Keys derived from the cluster secret: gossip sealing and CURVE key pairs.

Every node that knows the secret derives the same keys, so nothing but the
secret has to be distributed. Gossip datagrams are sealed with AES-GCM (a
datagram without the key is dropped unread). Each carries the sender's
clock inside the seal: one older or newer than ``REPLAY_WINDOW`` by ours,
or one seen before, is dropped too, so a captured datagram cannot be played
back later. Router links use ZeroMQ CURVE,
where each node's key pair is derived from the secret and its name, and a
server accepts only keys it can derive for known members or for tools
(the CLI) that hold the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

import zmq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from zmq.utils import z85

from gorilix.transport.errors import ClusterError

#: The key-pair name tools such as the CLI use to reach a node.
CLIENT_NAME = "gorilix-client"
#: Every node's router serves with the same key pair, so a client needs only
#: the secret (not the node's name) to reach any node; clients are checked
#: one by one against the allow-list.
SERVER_NAME = "gorilix-router"
_NONCE = 12
_VERSION = b"G2"
#: Sealed gossip stamped further than this from our clock (either way) is dropped:
#: it bounds how long a captured datagram could be replayed, and how far apart
#: the members' clocks may drift (keep them in sync with NTP).
REPLAY_WINDOW = 120.0
_STAMP = struct.Struct(">d")  # the sender's wall clock, seconds
#: Nonces remembered to refuse replays within the window (oldest forgotten first).
MAX_SEEN = 200_000


def _derive(secret: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869), extract and one expand step."""
    prk = hmac.new(b"gorilix-cluster-v1", secret, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + label.encode() + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


class ClusterKeys:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < 16:
            raise ClusterError("secret_key must be bytes, at least 16 of them (32 random bytes is good)")
        self._secret = bytes(secret)
        self._gossip = AESGCM(_derive(self._secret, "gossip"))
        self._pairs: dict[str, tuple[bytes, bytes]] = {}
        self._clock = clock
        self._seen: dict[bytes, float] = {}  # nonce -> when it can be forgotten, oldest first
        self.stale = 0  # sealed datagrams dropped for a stamp outside the window
        self.replayed = 0  # sealed datagrams dropped because they came before
        self.last_skew = 0.0  # the last stale datagram's stamp minus our clock, seconds

    # -- gossip (one thread: the gossip driver's) ----------------------------

    def seal(self, packet: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._gossip.encrypt(nonce, _STAMP.pack(self._clock()) + packet, _VERSION)

    def open(self, datagram: bytes) -> bytes | None:
        """The plaintext, or None if not sealed with our secret, out of the window, or a replay."""
        if len(datagram) < 2 + _NONCE + 16 + _STAMP.size or not datagram.startswith(_VERSION):
            return None
        nonce = datagram[2:2 + _NONCE]
        try:
            plain = self._gossip.decrypt(nonce, datagram[2 + _NONCE:], _VERSION)
        except InvalidTag:
            return None
        if len(plain) < _STAMP.size:
            return None
        (stamp,) = _STAMP.unpack_from(plain)
        now = self._clock()
        if not abs(stamp - now) <= REPLAY_WINDOW:  # NaN fails too
            self.stale += 1
            self.last_skew = stamp - now
            return None
        seen = self._seen
        while seen:  # forget nonces that could no longer pass the window check
            oldest = next(iter(seen))
            if seen[oldest] > now and len(seen) < MAX_SEEN:
                break
            del seen[oldest]
        if nonce in seen:
            self.replayed += 1
            return None
        # A stamp can be up to a window ahead of its first arrival and is
        # accepted until a window after itself: remember it that long.
        seen[nonce] = now + 2 * REPLAY_WINDOW
        return plain[_STAMP.size:]

    # -- CURVE --------------------------------------------------------------

    def curve_pair(self, name: str) -> tuple[bytes, bytes]:
        """(public, secret) Z85 keys for ``name``."""
        pair = self._pairs.get(name)
        if pair is None:
            secret = z85.encode(_derive(self._secret, f"curve:{name}"))
            pair = (zmq.curve_public(secret), secret)
            self._pairs[name] = pair
        return pair

    def public_key(self, name: str) -> bytes:
        return self.curve_pair(name)[0]


def configure_server(sock: zmq.Socket[bytes], keys: ClusterKeys, name: str) -> None:
    public, secret = keys.curve_pair(name)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def configure_client(sock: zmq.Socket[bytes], keys: ClusterKeys, name: str, server: str) -> None:
    public, secret = keys.curve_pair(name)
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.public_key(server))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
