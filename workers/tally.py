"""What a worker took in: the node reads it to count the tells a death loses and the bytes a worker owes.

A tell is delivered at most once. When a worker dies, the tells in its
mailboxes and on their way to it are gone, and only the node can count them:
it knows what it forwarded to each actor, and this file (memory-mapped, one
per worker, written only by the worker's own thread) says what the worker
handed to its actors. Nothing here is a message the worker sends, so it
holds up to the instant the worker died, whatever killed it.

The layout is a header of two counters and a ring:

- ``settled``: how many tells the node forwarded that this worker has
  *settled*: handed to the actor's ``receive`` (or refused with a dead
  letter it reports itself, or dropped as malformed);
- ``read``: how many bytes the worker has read from its socket, so the node
  knows how much it has sent that still waits in the pipe;
- the ring holds the actor id of the last :data:`RING` settled tells, in
  order, so the node learns *whose* tells were settled since it last looked.

The worker writes the ring entry first, then the counter; the node reads the
counter, then the entries below it, so it never reads an entry not yet
written. The node reads the ring every few milliseconds; one that falls more
than :data:`RING` entries behind learns how many it missed (``overrun``) and
says its count is a bound, not exact.
"""

from __future__ import annotations

import collections
import mmap
import os

#: Settled tells the ring remembers (8 bytes each). The node reads it every
#: few ms, so it covers far more than any worker settles meanwhile.
RING = 1 << 18
_MASK = RING - 1
_HEADER = 2  # words: settled, read
SIZE = (_HEADER + RING) * 8


def tally_path(board: str) -> str:
    """The tally beside a worker's health board (gorilix.workers.pool names both); "" for none."""
    return f"{board.removesuffix('.health')}.tally" if board else ""


def create_tally(path: str) -> None:
    """Node side: a fresh tally of zeros (a sparse file: pages cost memory only once written)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, SIZE)
    finally:
        os.close(fd)


def remove_tally(path: str) -> None:
    if not path:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _map(path: str, access: int) -> memoryview:
    fd = os.open(path, os.O_RDWR if access == mmap.ACCESS_WRITE else os.O_RDONLY)
    try:
        return memoryview(mmap.mmap(fd, SIZE, access=access)).cast("Q")
    finally:
        os.close(fd)


class Tally:
    """Worker side: counts what it settles and reads. Cheap: two stores a tell, one a read."""

    __slots__ = ("_words", "settled", "read")

    def __init__(self, path: str) -> None:
        self._words = _map(path, mmap.ACCESS_WRITE)
        self.settled = 0
        self.read = 0

    def settle(self, actor_id: int) -> None:
        """One tell the node forwarded to ``actor_id`` is settled (taken by ``receive``, or refused)."""
        words = self._words
        settled = self.settled
        words[_HEADER + (settled & _MASK)] = actor_id
        self.settled = settled = settled + 1
        words[0] = settled

    def settle_many(self, actor_id: int, count: int) -> None:
        for _ in range(count):
            self.settle(actor_id)

    def took(self, nbytes: int) -> None:
        """``nbytes`` more were read from the node's socket."""
        self.read = read = self.read + nbytes
        self._words[1] = read


class NoTally:
    """A worker without a tally file (no ipc endpoint to put it beside): it counts nothing."""

    __slots__ = ()
    settled = read = 0

    def settle(self, actor_id: int) -> None:
        pass

    def settle_many(self, actor_id: int, count: int) -> None:
        pass

    def took(self, nbytes: int) -> None:
        pass


class TallyReader:
    """Node side: the tells a worker settled since the last look, by actor, and the bytes it read."""

    def __init__(self, path: str) -> None:
        self._words = _map(path, mmap.ACCESS_READ)
        self.seen = 0  # settled tells taken so far
        self.overrun = 0  # settled tells that slid out of the ring before they were taken

    def read(self) -> int:
        """Bytes the worker has read from its socket, all told."""
        return int(self._words[1])

    def take(self) -> collections.Counter[int]:
        """How many tells each actor settled since the last take (the ring's entries, read once)."""
        words = self._words
        settled = int(words[0])
        first = self.seen
        if settled - first > RING:  # the ring turned over before we looked: those are not known by actor
            self.overrun += settled - RING - first
            first = settled - RING
        self.seen = settled
        counts: collections.Counter[int] = collections.Counter()
        if settled == first:
            return counts
        start, end = first & _MASK, settled & _MASK
        if start < end:
            counts.update(words[_HEADER + start:_HEADER + end])
        else:  # (wrapped round the end of the ring)
            counts.update(words[_HEADER + start:])
            counts.update(words[_HEADER:_HEADER + end])
        return counts
