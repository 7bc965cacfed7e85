"""Keys derived from the cluster secret: gossip sealing and CURVE key pairs.

Every node that knows the secret derives the same keys, so nothing but the
secret has to be distributed. Gossip datagrams are sealed with AES-GCM (a
datagram without the key is dropped unread). Each carries the sender's
clock inside the seal: one older or newer than ``REPLAY_WINDOW`` by ours,
or one seen before, is dropped too, so a captured datagram cannot be played
back later. And each is bound to the member it is for (its name, or the
address it advertises, as associated data that the receiver supplies from
what it knows of itself), so one captured on its way to one member does not
open at any other. Router links use ZeroMQ CURVE,
where each node's key pair is derived from the secret and its name, and a
server accepts only keys it can derive for known members or for tools
(the CLI) that hold the secret.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable

import zmq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85

from gorilix.transport.errors import ClusterError

#: The key-pair name tools such as the CLI use to reach a node.
CLIENT_NAME = "gorilix-client"
#: Every node's router serves with the same key pair, so a client needs only
#: the secret (not the node's name) to reach any node; clients are checked
#: one by one against the allow-list.
SERVER_NAME = "gorilix-router"
_NONCE = 12
#: The seal's format. G3 binds the destination; a datagram of another version is dropped and counted.
_VERSION = b"G3"
#: What a datagram is bound to (the byte after the version): the receiver's name, or an address of its.
_TO_NAME = b"n"
_TO_ADDRESS = b"a"
_HEADER = len(_VERSION) + 1 + _NONCE
_NAME_LEN = struct.Struct(">H")  # the sender's name, inside the seal, so the receiver can answer it by name
#: Sealed gossip stamped further than this from our clock (either way) is dropped:
#: it bounds how long a captured datagram could be replayed, and how far apart
#: the members' clocks may drift (keep them in sync with NTP).
REPLAY_WINDOW = 120.0
_STAMP = struct.Struct(">d")  # the sender's wall clock, seconds
#: Nonces remembered to refuse replays within the window (oldest forgotten first).
MAX_SEEN = 200_000
_MIN_SEALED = _HEADER + 16 + _STAMP.size + _NAME_LEN.size  # 16: the GCM tag
#: A sender's name, learnt from a datagram that opened, seals what goes back to its address for this
#: long (answers go out at once); after that, or for an address never heard from, the address is bound.
LEARNT_FOR = 30.0
#: Addresses whose sender's name is remembered (oldest forgotten first).
MAX_LEARNT = 10_000
_WILDCARDS = ("", "0.0.0.0", "::", "*")


def _address_label(address: tuple[str, int]) -> bytes:
    return f"{address[0]}:{address[1]}".encode()


#: HKDF's salt: the same since the first version, so every key derived from a secret stays the same.
_SALT = b"gorilix-cluster-v1"


def _derive(secret: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret``, for ``label``: cryptography's, with our fixed salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=label.encode()).derive(secret)


def dashboard_token(secret: bytes) -> str:
    """The token a dashboard's page sends (``gorilix dashboard --print-token``): derived, so the page never holds
    the secret, and one token per secret, so whoever has the secret can find it again."""
    return _derive(secret, "gorilix dashboard token", 18).hex()


class ClusterKeys:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < 16:
            raise ClusterError("secret_key must be bytes, at least 16 of them (32 random bytes is good)")
        self._secret = bytes(secret)
        self._gossip = AESGCM(_derive(self._secret, "gossip"))
        self._pairs: dict[str, tuple[bytes, bytes]] = {}
        self._clock = clock
        self._seen: dict[bytes, float] = {}  # nonce -> when it can be forgotten, oldest first
        self._name: bytes | None = None  # who we are in the gossip (gossip_as)
        self._addresses: list[bytes] = []  # where the others send to us, as bound into seals
        self._learnt: dict[tuple[str, int], tuple[str, float]] = {}  # source -> (its name, when), oldest first
        self.unopened = 0  # datagrams that did not open: another secret, another member's, tampered, or bad
        self.other_version = 0  # of those, the ones in another format version (an older or newer gorilix)
        self.stale = 0  # sealed datagrams dropped for a stamp outside the window
        self.replayed = 0  # sealed datagrams dropped because they came before
        self.last_skew = 0.0  # the last stale datagram's stamp minus our clock, seconds
        self.last_refusal = ""  # why open() refused the last datagram it refused

    # -- gossip (one thread: the gossip driver's) ----------------------------

    def gossip_as(self, name: str, addresses: Iterable[tuple[str, int]]) -> None:
        """Who this node is in sealed gossip: its name, and the addresses others send to it at.

        ``addresses`` are the advertised gossip address and the bound one (a
        wildcard bind such as 0.0.0.0 is skipped: nobody sends to it).
        """
        self._name = name.encode()
        self._addresses = list(dict.fromkeys(_address_label(a) for a in addresses if a[0] not in _WILDCARDS))

    def seal(self, packet: bytes, to: tuple[str, int]) -> bytes:
        """Seal ``packet`` for the member at ``to``, and for it alone.

        It is bound to that member's name when a datagram from ``to`` told us
        the name lately (an answer), else to the address itself (which is the
        one the member advertises, or a seed's as configured).
        """
        if self._name is None:
            raise ClusterError("sealed gossip needs to know who it comes from: call gossip_as() first")
        to = (to[0], to[1])
        now = self._clock()
        learnt = self._learnt.get(to)
        if learnt is not None and now - learnt[1] <= LEARNT_FOR:
            kind, destination = _TO_NAME, learnt[0].encode()
        else:
            kind, destination = _TO_ADDRESS, _address_label(to)
        header = _VERSION + kind
        nonce = os.urandom(_NONCE)
        body = _STAMP.pack(now) + _NAME_LEN.pack(len(self._name)) + self._name + packet
        return header + nonce + self._gossip.encrypt(nonce, body, header + destination)

    def open(self, datagram: bytes, source: tuple[str, int]) -> bytes | None:
        """The packet, or None (counted) if not sealed with our secret for us, out of the window, or a replay.

        ``source`` is where the datagram came from: an answer to it is sealed
        for the sender's name (see :meth:`seal`).
        """
        if len(datagram) < _MIN_SEALED or not datagram.startswith(_VERSION):
            self.unopened += 1
            self.last_refusal = "not sealed gossip of this version"
            if datagram[:1] == _VERSION[:1] and datagram[:2] != _VERSION:  # G1, G2...
                self.other_version += 1
                self.last_refusal = "sealed by another version of gorilix"
            return None
        header = datagram[:len(_VERSION) + 1]
        kind = header[len(_VERSION):]
        # The destination is not sent: we supply what we are, so a datagram for another member fails to open.
        if kind == _TO_NAME:
            destinations = [self._name] if self._name is not None else []
        elif kind == _TO_ADDRESS:
            destinations = self._addresses
        else:
            destinations = []
        nonce = datagram[len(header):_HEADER]
        plain = None
        for destination in destinations:
            try:
                plain = self._gossip.decrypt(nonce, datagram[_HEADER:], header + destination)
                break
            except InvalidTag:
                continue
        if plain is None or len(plain) < _STAMP.size + _NAME_LEN.size:
            self.unopened += 1
            self.last_refusal = "a bad seal: another secret, sealed for another member, or tampered with"
            return None
        (stamp,) = _STAMP.unpack_from(plain)
        (length,) = _NAME_LEN.unpack_from(plain, _STAMP.size)
        start = _STAMP.size + _NAME_LEN.size
        try:
            sender = plain[start:start + length].decode() if len(plain) >= start + length else ""
        except UnicodeDecodeError:
            sender = ""
        if not sender:
            self.unopened += 1
            self.last_refusal = "no sender inside the seal"
            return None
        now = self._clock()
        if not abs(stamp - now) <= REPLAY_WINDOW:  # NaN fails too
            self.stale += 1
            self.last_skew = stamp - now
            self.last_refusal = "stale: its clock is off by more than the replay window"
            return None
        seen = self._seen
        while seen:  # forget nonces that could no longer pass the window check
            oldest = next(iter(seen))
            if seen[oldest] > now and len(seen) < MAX_SEEN:
                break
            del seen[oldest]
        if nonce in seen:
            self.replayed += 1
            self.last_refusal = "a replay of a datagram seen before"
            return None
        # A stamp can be up to a window ahead of its first arrival and is
        # accepted until a window after itself: remember it that long.
        seen[nonce] = now + 2 * REPLAY_WINDOW
        source = (source[0], source[1])
        learnt = self._learnt
        learnt.pop(source, None)
        learnt[source] = (sender, now)
        if len(learnt) > MAX_LEARNT:
            del learnt[next(iter(learnt))]
        return plain[start + length:]

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
