"""What the node has sent each worker and the worker has not yet taken: tells by actor, and bytes.

Two facts come out of it:

- **what a worker's death loses.** The node counts the tells it forwards to
  each actor; the worker's tally (gorilix.workers.tally) says which it has
  settled. What is still owed when the worker dies was in its mailboxes or
  on its way to it, and is lost: the node reports it per actor as dead
  letters, so at-most-once delivery loses nothing silently.
- **how much waits for a worker.** The node counts the bytes it sends each
  worker; the tally says how many the worker has read. A worker that stops
  reading (stuck in a call, stopped by a signal, swamped) would make the
  node queue without bound; past ``max_queued`` bytes the node refuses new
  tells and asks for it instead (gorilix.node).

The same bound holds for each peer node: the node counts the bytes it sends
a peer, and the peer says every so often how many more it has read
(``peer_read``); past ``max_queued`` bytes not yet read, tells and asks for
that peer are refused too. A peer reports *how many more*, not a total, so
a restart on either side needs no agreement on where counting began.

Pure bookkeeping: the driver and the core feed it, it decides nothing alone.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

#: Bytes the node lets wait for one worker (sent, not yet read) before it refuses more for it.
DEFAULT_MAX_QUEUED = 64 * 2**20


class TallySource(Protocol):
    """A worker's tally as the node reads it (gorilix.workers.tally.TallyReader, or a test's)."""

    overrun: int

    def read(self) -> int: ...
    def take(self) -> collections.Counter[int]: ...


@dataclass(slots=True)
class Account:
    """One worker process's: tells forwarded to each actor and not yet settled, bytes sent and read."""

    slot: int
    tally: TallySource
    owed: dict[int, int] = field(default_factory=dict)
    sent: int = 0  # bytes the node sent this worker
    read: int = 0  # bytes the worker had read, when last looked at

    def backlog(self) -> int:
        """Bytes sent and not yet read, looking afresh (the hot path compares the cached ``read`` first)."""
        self.read = self.tally.read()
        return self.sent - self.read

    def settle(self) -> None:
        """Take the tells the worker settled since the last look off what is owed."""
        owed = self.owed
        for actor_id, count in self.tally.take().items():
            left = owed.get(actor_id, 0) - count
            if left > 0:
                owed[actor_id] = left
            else:
                owed.pop(actor_id, None)

    def lost(self) -> dict[int, int]:
        """After the worker died: tells per actor it never settled (all were lost with it)."""
        self.settle()
        return {actor_id: count for actor_id, count in self.owed.items() if count > 0}

    @property
    def exact(self) -> bool:
        """False when the tally's ring turned over before the node read it: ``lost`` is then an upper bound."""
        return self.tally.overrun == 0


@dataclass(slots=True)
class PeerAccount:
    """One peer node's: bytes sent it over our link, and how many it has said it read."""

    sent: int = 0
    read: int = 0
    link: object = None  # the link these counts are about: a new one starts them afresh

    def backlog(self) -> int:
        return self.sent - self.read

    def sent_on(self, link: object, nbytes: int) -> None:
        if link is not self.link:  # (re-opened: what the old connection carried is no longer waiting)
            self.link, self.sent, self.read = link, 0, 0
        self.sent += nbytes

    def has_read(self, more: int) -> None:
        """The peer read ``more`` bytes of ours (never past what we sent: a peer's word is not trusted further)."""
        self.read = min(self.sent, self.read + more)


class Ledger:
    """Every live worker's :class:`Account`, by the identity of its socket (what the router sends to)."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}
        #: What this node sent each peer node, by name; a new link starts a fresh account.
        self.peers: dict[str, PeerAccount] = {}
        #: Bytes read from each peer node (by its link's identity, ``n:<name>``) since we last told it.
        self.unreported: dict[bytes, int] = {}

    def peer(self, node: str) -> PeerAccount:
        account = self.peers.get(node)
        if account is None:
            account = self.peers[node] = PeerAccount()
        return account

    def open(self, identity: bytes, slot: int, tally: TallySource) -> Account:
        account = self.accounts[identity] = Account(slot, tally)
        return account

    def close(self, identity: bytes) -> Account | None:
        return self.accounts.pop(identity, None)

    def settle_all(self) -> None:
        for account in self.accounts.values():
            account.settle()
