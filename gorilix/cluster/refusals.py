"""What a node refused, by source address: gossip that did not open, CURVE handshakes the ZAP check denied.

A refusal is dropped in silence on the wire (an attacker learns nothing),
so the operator must see it here: ``gorilix status`` and ``stats()`` show
the counts per source, and one warning is logged now and then.

The table is bounded: sources can be spoofed by the million (UDP), so at
most ``keep`` of them are remembered. When it is full, the source with the
fewest refusals (the oldest of those) makes room and its count goes to
``others``. A source refused more often than one time in ``keep`` thus stays
listed, with its exact count from its second refusal on, while one-off
spoofed sources churn through the bottom of the table; every refusal is in
``total``. Thread-safe:
the gossip thread and the ZAP thread count, the node thread reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

#: Sources remembered per kind of refusal; the rest are summed in ``others``.
KEEP = 64
#: Sources shown (``gorilix status``, ``stats()``), most refused first.
SHOW = 10
#: At most one warning this often per kind of refusal (each one is counted).
WARN_EVERY = 60.0


class RefusalCounts:
    """Refusals of one kind (``what``), counted per source address, bounded."""

    def __init__(self, node: str, what: str, log: logging.Logger, *, keep: int = KEEP,
                 warn_every: float = WARN_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.what = what
        self._log = log
        self._keep = keep
        self._warn_every = warn_every
        self._clock = clock
        self._lock = threading.Lock()
        self._by_source: dict[str, int] = {}
        self._others = 0  # refusals of sources that made room for others
        self.total = 0
        self._warned_at = -float("inf")

    def count(self, source: str, why: str, *, warn: bool = True) -> None:
        """One refusal from ``source``; a warning naming it if none was logged lately (and ``warn``)."""
        with self._lock:
            self.total += 1
            table = self._by_source
            if source in table:
                table[source] += 1
            else:
                if len(table) >= self._keep:
                    fewest = min(table, key=table.__getitem__)
                    self._others += table.pop(fewest)
                table[source] = 1
            now = self._clock()
            due = warn and now >= self._warned_at + self._warn_every
            if due:
                self._warned_at = now
            total, sources = self.total, len(table)
        if due:
            self._log.warning("%s: refused %s from %s (%s); %d refused so far, from %d sources or more: "
                              "see gorilix status", self.node, self.what, source, why, total, sources)
        else:
            self._log.debug("%s: refused %s from %s (%s)", self.node, self.what, source, why)

    def snapshot(self, show: int = SHOW) -> dict[str, Any]:
        """``{"total", "by_source": {source: count} (the ``show`` most refused), "others"}``."""
        with self._lock:
            ranked = sorted(self._by_source.items(), key=lambda item: (-item[1], item[0]))
            others = self._others
            total = self.total
        shown = dict(ranked[:show])
        return {"total": total, "by_source": shown, "others": others + sum(n for _, n in ranked[show:])}
