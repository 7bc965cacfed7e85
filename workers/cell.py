"""ActorCell: one actor's place in a worker (instance, mailbox, state), and what it needs of its worker.

A cell is what an ``Actor`` sees as its context: ``self.ref``, ``self.spawn``,
``self.stop`` and the rest go through it to the worker that hosts it, which
the cell knows only as a :class:`CellHost`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Any, Protocol

from gorilix.workers.actor import Actor
from gorilix.workers.protocol import WorkerReport
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import ActorSpec

#: (kind, src_node, src_id, corr, value)
Message = tuple[int, str, int, int, Any]

#: The ``corr`` of a tell (or stop) the node forwarded and counts: the worker settles it in its
#: tally (gorilix.workers.tally) once it is handed to ``receive`` or refused. A tell has no
#: correlation of its own, and one sent by a neighbour in the same worker keeps 0: the node never saw it.
COUNTED = -1

#: The payload of the mailbox entry (a STOP) that marks where an actor moving to another worker is
#: given up: everything before it is handled first. Nothing decoded from the wire is this object.
HANDOFF = object()

#: The cell and message being handled, per task (so async handlers see their own).
current: contextvars.ContextVar[tuple[ActorCell, Message | None] | None] = contextvars.ContextVar(
    "gorilix_current", default=None
)


class CellHost(Protocol):
    """What a cell asks of the worker hosting it, on behalf of its actor."""

    def spawn_from_actor(
        self, actor_class: type | str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        name: str | None, worker: int | None, restart: str, mailbox_size: int | None,
    ) -> ActorRef: ...
    def request_stop(self, cell: ActorCell, reason: str) -> None: ...
    def notify(self, op: str, *args: Any) -> None: ...
    def report(self, report: WorkerReport) -> None: ...
    def publish(self, topic: str, message: Any) -> None: ...
    def send_after(self, cell: ActorCell, delay: float, message: Any) -> asyncio.TimerHandle: ...


class ActorCell:
    """One actor's place in a worker: its instance, mailbox and state (an ``ActorContext``)."""

    __slots__ = (
        "id", "ref", "spec", "host", "instance", "mailbox", "busy", "queued",
        "alive", "down", "stop_reason", "timers", "restarts",
    )

    def __init__(self, host: CellHost, node: str, actor_id: int, spec: ActorSpec) -> None:
        self.id = actor_id
        self.ref = ActorRef(node, actor_id, spec.name)
        self.spec = spec
        self.host = host
        self.instance: Actor | None = None
        self.mailbox: deque[Message] = deque()
        self.busy = False
        self.queued = False
        self.alive = True
        self.down = False  # crashed or stopped itself: waiting for its supervisor
        self.stop_reason: str | None = None
        self.timers: set[asyncio.TimerHandle] | None = None
        self.restarts = 0

    def __repr__(self) -> str:
        return f"<ActorCell {self.spec.class_path} {self.ref}>"

    # -- the ActorContext an actor uses ---------------------------------------

    def sender(self) -> ActorRef | None:
        """Who sent the message being handled in this task (None: no actor, or none at all)."""
        ctx = current.get()
        if ctx is None or ctx[1] is None:
            return None
        _, src_node, src_id, _, _ = ctx[1]
        return ActorRef(src_node, src_id) if src_id else None

    def spawn(
        self, actor_class: type | str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        name: str | None, worker: int | None, restart: str, mailbox_size: int | None,
    ) -> ActorRef:
        return self.host.spawn_from_actor(
            actor_class, args, kwargs, name=name, worker=worker, restart=restart, mailbox_size=mailbox_size
        )

    def stop(self, reason: str) -> None:
        self.host.request_stop(self, reason)

    def notify(self, op: str, *args: Any) -> None:
        self.host.notify(op, *args)

    def report(self, report: WorkerReport) -> None:
        self.host.report(report)

    def publish(self, topic: str, message: Any) -> None:
        self.host.publish(topic, message)

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        return self.host.send_after(self, delay, message)
