"""The node's sockets to other nodes and to remote tools.

One external ROUTER takes what other nodes and tools (the CLI) send to this
node over TCP; one DEALER per peer node carries what this node sends to it.
With a cluster secret, all of them use CURVE, and the external ROUTER admits
only keys derived from the secret for known members or for tools.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from gorilix.cluster.refusals import RefusalCounts
from gorilix.cluster.security import (
    CLIENT_NAME,
    SERVER_NAME,
    ClusterKeys,
    configure_client,
    configure_server,
)
from gorilix.transport.errors import ClusterError

log = logging.getLogger("gorilix.cluster")

#: Bounds for links that cross the network: a slow or hostile peer cannot
#: make this node buffer without limit.
EXTERNAL_HWM = 100_000
MAX_MESSAGE = 64 * 1024 * 1024


#: What a link's monitor reports: how each CURVE handshake ended.
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_HANDSHAKE_FAILED = _HANDSHAKE_EVENTS & ~zmq.EVENT_HANDSHAKE_SUCCEEDED
#: What the external socket's monitor reports: handshakes that failed before any key was checked.
_FAILED_BEFORE_KEY_CHECK = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
#: The source such a failure is counted under: ZeroMQ does not say where it came from.
UNKNOWN_SOURCE = "unknown (ZeroMQ does not say)"
#: Re-opening a refused link waits this long, doubling per refusal up to the maximum.
REPAIR_FIRST, REPAIR_MAX = 0.1, 5.0


#: Messages a link keeps while its handshake is pending; past this, sends fail.
MAX_PENDING = 10_000

#: Messages for a node that has talked to us but that we cannot link to yet: it
#: joined through another member, and the gossip that tells us its address has
#: not reached us. They wait this long, this many per node, for this many nodes.
HOLD_FOR = 10.0
MAX_HELD = 1_000
MAX_HELD_NODES = 64


#: At most one warning this often about links refused past the bound.
REFUSED_WARN_EVERY = 60.0


def default_max_links() -> int:
    """How many peer links a node opens at most: a quarter of its file descriptors, less a reserve.

    Each link is a DEALER socket (its own descriptor, one more per TCP connection, and two more
    for the handshake monitor with CURVE). Past the process's limit on descriptors the node could
    open nothing at all (a worker's pipe, a client's socket), so a flood of members, or a cluster
    too large for ``ulimit -n``, gets links refused and counted instead (192 with the usual 1,024).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, (soft - 256) // 4)


@dataclass
class Held:
    """What waits for a link to a node we know only by its messages."""

    since: float
    frames: deque[list[bytes]] = field(default_factory=deque)


@dataclass
class PeerLink:
    name: str
    endpoint: str
    sock: zmq.Socket[bytes]
    monitor: zmq.Socket[bytes] | None = None  # handshake events (with CURVE only)
    ready: bool = True  # the handshake succeeded (always, without CURVE)
    failed: bool = False  # the latest handshake was refused
    refusals: int = 0  # handshakes refused in a row
    repair_at: float = 0.0  # monotonic time before which a refused link is left alone
    #: Sent before the handshake succeeded. Kept here, not in ZeroMQ's queue, which
    #: is lost with a refused connection; they survive a re-open and go out in order.
    pending: deque[list[bytes]] = field(default_factory=deque)

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=0)

    def poll_handshake(self) -> None:
        """Drain the monitor: how did the latest handshake end?"""
        while self.monitor is not None:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] & _HANDSHAKE_FAILED:
                # Also after a success: ZeroMQ reconnects on its own when the TCP
                # connection breaks (the peer restarted), and that can be refused too.
                self.ready, self.failed = False, True
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.ready, self.failed, self.refusals = True, False, 0

    def flush(self) -> None:
        """Hand what waited for the handshake to ZeroMQ, in order (until its queue is full)."""
        pending = self.pending
        while pending:
            try:
                self.sock.send_multipart(pending[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            pending.popleft()

    @property
    def key(self) -> bytes:
        """The identity this peer uses when it sends to us (for in-flight asks)."""
        return b"n:" + self.name.encode()


class _KeyCheck:
    """ZAP callback: admit CURVE keys derived for members and tools; count the others per source."""

    def __init__(self, keys: ClusterKeys, refusals: RefusalCounts) -> None:
        self.keys = keys
        self.refusals = refusals
        self.address = ""  # of the handshake being checked (the ZAP request's), set by _Gatekeeper
        self.allowed = {keys.public_key(CLIENT_NAME)}
        #: Names the gossip engine knows right now: a peer that just joined may
        #: connect before its join event reaches the node thread. One may even
        #: connect before our gossip engine has heard of it (members learn of
        #: each other in any order): we refuse it, and it re-opens its link
        #: a little later (PeerLinks.repair).
        self.member_names: Callable[[], list[str]] | None = None

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        if self.member_names is not None:
            self.allowed.update(self.keys.public_key(name) for name in self.member_names())
        if key in self.allowed:
            return True
        self.refusals.count(self.address or "?", "a CURVE key not derived from our secret for a member or a tool "
                            "(another secret; or a member that joined a moment ago, which links again)")
        return False


class _Gatekeeper(ThreadAuthenticator):
    """The ZAP thread, telling the key check where each handshake comes from (the callback is not told)."""

    def __init__(self, zctx: zmq.Context[Any], check: _KeyCheck) -> None:
        super().__init__(zctx, log=logging.getLogger("gorilix.cluster.auth"))
        self._check = check

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._check.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)


class PeerLinks:
    def __init__(self, node_name: str, zctx: zmq.Context[Any], endpoint: str, keys: ClusterKeys | None,
                 max_links: int | None = None) -> None:
        self.node_name = node_name
        self.zctx = zctx
        self.keys = keys
        self.peers: dict[str, PeerLink] = {}
        #: Links open at most (see default_max_links); past it a new one is refused and counted.
        self.max_links = default_max_links() if max_links is None else max_links
        self.refused = 0
        self._refused_warned_at = -REFUSED_WARN_EVERY
        self.handshake_refusals = RefusalCounts(node_name, "a CURVE handshake", log)  # by the ZAP check
        self._auth: ThreadAuthenticator | None = None
        self._check: _KeyCheck | None = None
        self.external: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
        self.external.setsockopt(zmq.LINGER, 0)
        self.external.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A peer reconnecting after a partition reuses its routing id while our end of
        # its old connection may still look open (its FIN was lost): the new one wins.
        self.external.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.external.setsockopt(zmq.SNDHWM, EXTERNAL_HWM)
        self.external.setsockopt(zmq.RCVHWM, EXTERNAL_HWM)
        self.external.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if keys is not None:
            self._check = _KeyCheck(keys, self.handshake_refusals)
            self.allow(node_name)
            self._auth = _Gatekeeper(zctx, self._check)
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self._check)
            configure_server(self.external, keys, SERVER_NAME)
        #: Handshakes that fail before the ZAP check sees a key (a client of another secret cannot even
        #: be decrypted): ZeroMQ reports them, but not from where (count_failed_handshakes).
        self._handshake_monitor: zmq.Socket[bytes] | None = (
            self.external.get_monitor_socket(_FAILED_BEFORE_KEY_CHECK) if keys is not None else None)
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
        #: The gossip engine's view: a live member's router endpoint, or None.
        self.directory: Callable[[str], str | None] | None = None
        self.held: dict[str, Held] = {}

    def follow_members(self, member_names: Callable[[], list[str]]) -> None:
        """Let the allow-list consult the gossip engine's member table."""
        if self._check is not None:
            self._check.member_names = member_names

    def follow_directory(self, router_of: Callable[[str], str | None]) -> None:
        """Let links open on demand from the gossip engine's member table (see :meth:`route`)."""
        self.directory = router_of

    def allow(self, name: str) -> None:
        """Admit ``name``'s derived key (a member we learnt of)."""
        if self._check is not None and self.keys is not None:
            self._check.allowed.add(self.keys.public_key(name))

    def connect(self, name: str, endpoint: str) -> PeerLink | None:
        """The link to ``name``, opened now if need be; None (counted in ``refused``) past ``max_links``."""
        link = self.peers.get(name)
        if link is not None and link.endpoint == endpoint:
            return link
        if link is not None:
            self.disconnect(name)
        elif len(self.peers) >= self.max_links:
            self._refuse(name)
            return None
        link = self._open(name, endpoint)
        self.peers[name] = link
        log.info("%s: linked to %s at %s", self.node_name, name, endpoint)
        held = self.held.pop(name, None)
        if held is not None:  # what waited for this link goes first, in order
            link.pending.extendleft(reversed(held.frames))
            if link.ready:
                link.flush()
        return link

    def _refuse(self, name: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now >= self._refused_warned_at + REFUSED_WARN_EVERY:
            self._refused_warned_at = now
            log.warning("%s: not linking to %s: %d links are open, the most this node opens (%d refused so far); "
                        "raise the limit on open files (ulimit -n) for a cluster this large",
                        self.node_name, name, self.max_links, self.refused)
        else:
            log.debug("%s: not linking to %s: %d links are open", self.node_name, name, self.max_links)

    def _open(self, name: str, endpoint: str) -> PeerLink:
        sock = self.zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, EXTERNAL_HWM)
        sock.setsockopt(zmq.ROUTING_ID, b"n:" + self.node_name.encode())
        monitor = None
        if self.keys is not None:
            self.allow(name)
            configure_client(sock, self.keys, self.node_name, SERVER_NAME)
            monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=0)
            raise
        return PeerLink(name, endpoint, sock, monitor, ready=monitor is None)

    def disconnect(self, name: str) -> PeerLink | None:
        link = self.peers.pop(name, None)
        if link is not None:
            link.close()
        return link

    def forget(self, name: str) -> list[list[bytes]]:
        """``name`` is gone: close its link, forget that it talked to us; returns what was held for it."""
        self.disconnect(name)
        self.identities.discard(b"n:" + name.encode())
        held = self.held.pop(name, None)
        return list(held.frames) if held is not None else []

    def route(self, node: str, frames: list[bytes]) -> bool:
        """Send to ``node``: through its link, or one opened now, or held until one can be.

        A member that joined through another one may ask us before gossip
        tells us where it is; its request reached us on our external socket,
        but our reply needs a link of ours. Rather than answering through the
        connection a request came in on (every node would then have to read
        all its links, on the hot path), the reply waits here, bounded in
        count and time, until the link exists. A link is also opened at once
        when the gossip engine already knows the member but the event that
        would open it has not reached the node loop yet. False: undeliverable.
        """
        if node in self.peers:
            return self.send(node, frames)
        endpoint = self.directory(node) if self.directory is not None else None
        if endpoint is not None:
            try:
                linked = self.connect(node, endpoint)
            except zmq.ZMQError as exc:  # the engine's data came from a peer: never trust it
                log.debug("%s: cannot link to %s at %r: %s", self.node_name, node, endpoint, exc)
            else:
                return linked is not None and self.send(node, frames)
        return self.hold(node, frames)

    def hold(self, node: str, frames: list[bytes]) -> bool:
        """Keep ``frames`` for a node that has talked to us and may be linked soon."""
        if b"n:" + node.encode() not in self.identities:
            return False
        held = self.held.get(node)
        if held is None:
            if len(self.held) >= MAX_HELD_NODES:
                return False
            held = self.held[node] = Held(time.monotonic())
        if len(held.frames) >= MAX_HELD:
            return False
        held.frames.append(frames)
        return True

    def expire_held(self, now: float) -> list[tuple[str, list[list[bytes]]]]:
        """Give up on nodes still unlinked after HOLD_FOR; returns what was held for each."""
        expired = [name for name, held in self.held.items() if now - held.since >= HOLD_FOR]
        return [(name, list(self.held.pop(name).frames)) for name in expired]

    def repair(self) -> list[str]:
        """Flush links whose handshake succeeded; re-open refused ones. Returns the re-opened.

        A peer refuses our key while it has not heard of us yet (nodes that
        boot together learn of each other in any order), and ZeroMQ never
        retries a refused handshake: the link would stay dead, silently, for
        as long as both nodes run. What was sent meanwhile waits in the link
        and goes out on the new connection. Each refusal in a row doubles the
        wait before the next attempt.
        """
        repaired = []
        now = time.monotonic()
        for name, link in list(self.peers.items()):
            link.poll_handshake()
            if link.ready:
                if link.pending:
                    link.flush()
                continue
            if not link.failed or now < link.repair_at:
                continue
            link.close()
            fresh = self._open(name, link.endpoint)
            fresh.refusals = link.refusals + 1
            fresh.repair_at = now + min(REPAIR_MAX, REPAIR_FIRST * 2 ** link.refusals)
            fresh.pending = link.pending
            self.peers[name] = fresh
            repaired.append(name)
            log.info("%s: %s refused our handshake (it may not know us yet); linking again", self.node_name, name)
        return repaired

    def waiting(self) -> bool:
        """Whether some link still waits for its handshake (or to hand over what it kept)."""
        return any(not link.ready or link.pending for link in self.peers.values())

    def send(self, node: str, frames: list[bytes]) -> bool:
        link = self.peers.get(node)
        if link is None:
            return False
        if not link.ready:
            link.poll_handshake()  # (a ready link's monitor is read by repair(), off the hot path)
        if link.ready and link.pending:
            link.flush()
        if not link.ready or link.pending:
            if len(link.pending) >= MAX_PENDING:
                return False
            link.pending.append(frames)
            return True
        try:
            link.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def count_failed_handshakes(self) -> None:
        """Count the handshakes that failed before the key check (another secret, or not Gorilix at all).

        libzmq's events for them carry no peer address, so they are counted
        under one source, :data:`UNKNOWN_SOURCE`; those the ZAP check refused
        are counted by address already.
        """
        monitor = self._handshake_monitor
        while monitor is not None:
            try:
                recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # (closed meanwhile)
                return
            self.handshake_refusals.count(UNKNOWN_SOURCE, "a CURVE handshake that failed before the key check: "
                                          "another secret, or a client that does not speak CURVE")

    def close(self) -> None:
        for name in list(self.peers):
            self.disconnect(name)
        if self._handshake_monitor is not None:
            self.external.disable_monitor()
            self._handshake_monitor.close(linger=0)
            self._handshake_monitor = None
        self.external.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
