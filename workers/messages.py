"""System messages actors receive or send: lifecycle signals, membership events, GenServer wrappers.

They are ordinary registered message dataclasses, so they cross processes
like any other message and can be matched with ``isinstance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gorilix.transport.codec import message
from gorilix.workers.ref import (  # Call and Cast live beside ref.call and ref.cast, which make them
    ActorRef,
    Call,
    Cast,
)


@message
@dataclass(frozen=True, slots=True)
class Down:
    """A monitored actor exited; ``reason`` says how ("normal", "shutdown", a crash, a worker death)."""

    ref: ActorRef
    reason: str


@message
@dataclass(frozen=True, slots=True)
class Exit:
    """A linked actor exited; delivered only to actors that set ``trap_exits = True``."""

    ref: ActorRef
    reason: str


@message
@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A membership change, as delivered to subscribed actors."""

    kind: str  # "join", "update", "suspect", "alive", "dead", "leave"
    name: str
    address: str
    port: int
    status: str
    meta: dict[str, Any]
    at: float = 0.0  # wall-clock time this node saw the change (0: unknown)


#: Exit reasons that are not failures: they do not restart TRANSIENT actors
#: and do not propagate through links.
NORMAL_REASONS = frozenset({"normal", "shutdown"})


def is_abnormal(reason: str) -> bool:
    return reason not in NORMAL_REASONS


__all__ = ["NORMAL_REASONS", "Call", "Cast", "ClusterEvent", "Down", "Exit", "is_abnormal"]
