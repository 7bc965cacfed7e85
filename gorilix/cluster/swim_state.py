"""The SWIM engine's bookkeeping: member sets, the gossip queue, suspicions, probes.

Plain data structures with no I/O and no clock of their own; the engine
(:mod:`gorilix.cluster.swim`) passes time and randomness in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from gorilix.cluster.wire import MIN_UPDATE


class IndexedSet:
    """Names with O(1) add, remove and uniform random pick.

    Picking ping-req helpers and gossip targets happens several times a
    second; in a 1,000-member cluster that must not cost a scan of the list.
    """

    __slots__ = ("items", "_pos", "_owned")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._pos: dict[str, int] = {}
        self._owned = True  # False: items and _pos are shared with copies, copied before a change

    def copy(self) -> IndexedSet:
        """A copy that shares this set's storage until either of them changes (O(1))."""
        twin = IndexedSet()
        twin.items, twin._pos = self.items, self._pos
        self._owned = twin._owned = False
        return twin

    def _own(self) -> None:
        if not self._owned:
            self.items, self._pos, self._owned = list(self.items), dict(self._pos), True

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return name in self._pos

    def add(self, name: str) -> None:
        if name not in self._pos:
            self._own()
            self._pos[name] = len(self.items)
            self.items.append(name)

    def extend(self, names: list[str]) -> None:
        """Add names known to be absent, in bulk (the preload of a large member list)."""
        self._own()
        start = len(self.items)
        self._pos.update(zip(names, range(start, start + len(names)), strict=True))
        self.items.extend(names)

    def discard(self, name: str) -> None:
        if name not in self._pos:
            return
        self._own()
        index = self._pos.pop(name)
        last = self.items.pop()
        if last != name:
            self.items[index] = last
            self._pos[last] = index

    def sample(self, rng: random.Random, k: int, accept: Callable[[str], bool] | None = None) -> list[str]:
        """Up to ``k`` distinct names that ``accept`` allows, uniformly at random."""
        items = self.items
        n = len(items)
        if k <= 0 or n == 0:
            return []
        if n <= 4 * k + 8:
            pool = [x for x in items if accept is None or accept(x)]
            if len(pool) <= k:
                rng.shuffle(pool)
                return pool
            return rng.sample(pool, k)
        picked: list[str] = []
        for _ in range(8 * k + 16):
            name = items[int(rng.random() * n)]
            if name not in picked and (accept is None or accept(name)):
                picked.append(name)
                if len(picked) == k:
                    break
        return picked


class ProbeOrder:
    """A shuffled round of names to probe, drawn one at a time (a lazy Fisher-Yates shuffle).

    Shuffling the whole list at each round's start cost O(n) at once: in the simulator that was
    n^2 at bootstrap (25 million draws for 5,000 members). Drawing as we go gives the same
    uniform order for O(1) a draw.
    """

    __slots__ = ("_names", "_next")

    def __init__(self, names: list[str]) -> None:
        self._names = names  # this round's names; the first _next of them are drawn
        self._next = 0

    def __len__(self) -> int:
        return len(self._names) - self._next  # names left in this round

    def add(self, name: str) -> None:
        """A newcomer: it is drawn in this round, at a random place among those left."""
        self._names.append(name)

    def draw(self, rng: random.Random) -> str:
        names, i = self._names, self._next
        j = i + int(rng.random() * (len(names) - i))
        names[i], names[j] = names[j], names[i]
        self._next = i + 1
        return names[i]


class Broadcast:
    __slots__ = ("name", "data", "transmits", "key")

    def __init__(self, name: str, data: bytes, key: int) -> None:
        self.name = name
        self.data = data
        self.transmits = 0
        self.key = key


class BroadcastQueue:
    """Updates waiting to be piggybacked: fewest transmissions first, newest first.

    Kept in one bucket per transmit count, so filling a datagram touches only
    the updates it takes, not the whole queue. A newer update about a member
    replaces the queued one: there is no point spreading stale news.
    """

    __slots__ = ("_buckets", "_by_name", "_next")

    def __init__(self) -> None:
        self._buckets: list[dict[int, Broadcast]] = [{}]
        self._by_name: dict[str, Broadcast] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._by_name)

    def fresh(self, below: int) -> bool:
        """Whether some update has been sent fewer than ``below`` times."""
        buckets = self._buckets
        return any(buckets[i] for i in range(min(below, len(buckets))))

    def queue(self, name: str, data: bytes) -> None:
        old = self._by_name.get(name)
        if old is not None:
            self._buckets[old.transmits].pop(old.key, None)
        self._next += 1
        item = Broadcast(name, data, self._next)
        self._by_name[name] = item
        self._buckets[0][item.key] = item

    def take(self, budget: int, limit: int) -> list[bytes]:
        """Updates that fit in ``budget`` bytes; each taken one counts a transmission."""
        out: list[bytes] = []
        picked: list[Broadcast] = []
        misses = 0
        done = False
        for bucket in self._buckets:
            if not bucket:
                continue
            for item in reversed(bucket.values()):
                size = len(item.data)
                if size <= budget:
                    out.append(item.data)
                    picked.append(item)
                    budget -= size
                    if budget < MIN_UPDATE:
                        done = True
                        break
                else:
                    misses += 1
                    if misses >= 16:
                        done = True
                        break
            if done:
                break
        buckets = self._buckets
        for item in picked:
            del buckets[item.transmits][item.key]
            item.transmits += 1
            if item.transmits >= limit:
                if self._by_name.get(item.name) is item:
                    del self._by_name[item.name]
                continue
            if item.transmits == len(buckets):
                buckets.append({})
            buckets[item.transmits][item.key] = item
        return out


class Suspicion:
    """One member's suspicion timer; see :func:`suspicion_timeout`."""

    __slots__ = ("start", "k", "low", "high", "confirmers", "confirmations", "deadline")

    def __init__(self, source: str, start: float, k: int, low: float, high: float) -> None:
        self.start = start
        self.k = k
        self.low = low
        self.high = high
        # The member that raised the suspicion is not a confirmation of it.
        self.confirmers = {source}
        self.confirmations = 0
        self.deadline = start + (low if k < 1 else high)

    def confirm(self, source: str) -> bool:
        """Count an independent confirmation; True if it shortened the timer."""
        if self.confirmations >= self.k or source in self.confirmers:
            return False
        self.confirmers.add(source)
        self.confirmations += 1
        frac = math.log(self.confirmations + 1) / math.log(self.k + 1)
        self.deadline = self.start + max(self.low, self.high - frac * (self.high - self.low))
        return True


class Candidate:
    """A member heard of but not met: what the news said, and our pings to it so far."""

    __slots__ = ("name", "incarnation", "address", "port", "meta", "seq", "attempts")

    def __init__(self, name: str, incarnation: int, address: str, port: int, meta: dict[str, Any]) -> None:
        self.name = name
        self.incarnation = incarnation
        self.address = address
        self.port = port
        self.meta = meta
        self.seq: int | None = None  # of our ping in flight
        self.attempts = 0


class Probe:
    __slots__ = ("seq", "target", "acked", "expected_nacks", "nacks")

    def __init__(self, seq: int, target: str) -> None:
        self.seq = seq
        self.target = target
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0
