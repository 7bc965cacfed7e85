"""The node's sockets to other nodes and to remote tools.

One external ROUTER takes what other nodes and tools (the CLI) send to this
node over TCP; one DEALER per peer node carries what this node sends to it.
With a cluster secret, all of them use CURVE, and the external ROUTER admits
only keys derived from the secret for known members or for tools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from gorilix.cluster.security import (
    CLIENT_NAME,
    SERVER_NAME,
    ClusterKeys,
    configure_client,
    configure_server,
)
from transport.errors import ClusterError

log = logging.getLogger("gorilix.cluster")

#: Bounds for links that cross the network: a slow or hostile peer cannot
#: make this node buffer without limit.
EXTERNAL_HWM = 100_000
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class PeerLink:
    name: str
    endpoint: str
    sock: zmq.Socket[bytes]

    @property
    def key(self) -> bytes:
        """The identity this peer uses when it sends to us (for in-flight asks)."""
        return b"n:" + self.name.encode()


class _KeyCheck:
    """ZAP callback: admit CURVE keys derived for members and tools."""

    def __init__(self, keys: ClusterKeys) -> None:
        self.keys = keys
        self.allowed = {keys.public_key(CLIENT_NAME)}
        #: Names the gossip engine knows right now. A peer that just joined may
        #: connect before its join event reaches the node thread, but never
        #: before our gossip engine has heard of it.
        self.member_names: Callable[[], list[str]] | None = None

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        if self.member_names is not None:
            self.allowed.update(self.keys.public_key(name) for name in self.member_names())
        return key in self.allowed


class PeerLinks:
    def __init__(self, node_name: str, zctx: zmq.Context[Any], endpoint: str, keys: ClusterKeys | None) -> None:
        self.node_name = node_name
        self.zctx = zctx
        self.keys = keys
        self.peers: dict[str, PeerLink] = {}
        self._auth: ThreadAuthenticator | None = None
        self._check: _KeyCheck | None = None
        self.external: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
        self.external.setsockopt(zmq.LINGER, 0)
        self.external.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.external.setsockopt(zmq.SNDHWM, EXTERNAL_HWM)
        self.external.setsockopt(zmq.RCVHWM, EXTERNAL_HWM)
        self.external.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if keys is not None:
            self._check = _KeyCheck(keys)
            self.allow(node_name)
            self._auth = ThreadAuthenticator(zctx, log=logging.getLogger("gorilix.cluster.auth"))
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self._check)
            configure_server(self.external, keys, SERVER_NAME)
        try:
            self.external.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ClusterError(
                f"cannot bind tcp {endpoint.removeprefix('tcp://')}: {exc.strerror}; "
                "is another node running there? pick another bind address or port"
            ) from exc
        self.endpoint = self.external.getsockopt_string(zmq.LAST_ENDPOINT)
        self.identities: set[bytes] = set()  # who has sent to us on the external socket

    def follow_members(self, member_names: Callable[[], list[str]]) -> None:
        """Let the allow-list consult the gossip engine's member table."""
        if self._check is not None:
            self._check.member_names = member_names

    def allow(self, name: str) -> None:
        """Admit ``name``'s derived key (a member we learnt of)."""
        if self._check is not None and self.keys is not None:
            self._check.allowed.add(self.keys.public_key(name))

    def connect(self, name: str, endpoint: str) -> PeerLink:
        link = self.peers.get(name)
        if link is not None and link.endpoint == endpoint:
            return link
        if link is not None:
            self.disconnect(name)
        sock = self.zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, EXTERNAL_HWM)
        sock.setsockopt(zmq.ROUTING_ID, b"n:" + self.node_name.encode())
        if self.keys is not None:
            self.allow(name)
            configure_client(sock, self.keys, self.node_name, SERVER_NAME)
        sock.connect(endpoint)
        link = PeerLink(name, endpoint, sock)
        self.peers[name] = link
        log.info("%s: linked to %s at %s", self.node_name, name, endpoint)
        return link

    def disconnect(self, name: str) -> PeerLink | None:
        link = self.peers.pop(name, None)
        if link is not None:
            link.sock.close(linger=0)
        return link

    def send(self, node: str, frames: list[bytes]) -> bool:
        link = self.peers.get(node)
        if link is None:
            return False
        try:
            link.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        for name in list(self.peers):
            self.disconnect(name)
        self.external.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
