"""The Actor base class: what user code subclasses and calls from inside.

The worker attaches the actor's cell before ``__init__`` runs, so ``self.ref``
and ``self.spawn`` work from the constructor on. User ``__init__`` methods
need not call ``super().__init__()``.
"""

from __future__ import annotations

import asyncio
import math
import numbers
from typing import Any, Protocol

from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument
from gorilix.workers.protocol import Demonitor, Link, Monitor, Unlink, WorkerReport
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import PERMANENT, check_topic, check_worker


class ActorContext(Protocol):
    """What an actor asks of the worker that hosts it: its place there (the cell).

    Declared here, on the actor's side, so that this module imports nothing of
    the worker's machinery (which imports it to create actors).
    """

    @property
    def id(self) -> int: ...
    @property
    def ref(self) -> ActorRef: ...
    def sender(self) -> ActorRef | None: ...
    def spawn(
        self, actor_class: type | str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        name: str | None, worker: int | None, restart: str, mailbox_size: int | None,
    ) -> ActorRef: ...
    def stop(self, reason: str) -> None: ...
    def notify(self, op: str, *args: Any) -> None: ...
    def report(self, report: WorkerReport) -> None: ...
    def publish(self, topic: str, message: Any) -> None: ...
    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle: ...


class Actor:
    """Base class of every actor.

    Override :meth:`receive` (plain or ``async def``); its return value
    answers an ask. An exception in it crashes the actor: an asker gets
    ``ActorError`` and the actor is re-created according to its restart type.
    """

    _gx_cell: ActorContext

    #: When True, a linked actor's exit arrives as an ``Exit`` message
    #: instead of crashing this actor.
    trap_exits: bool = False

    def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ask. May be ``async def``.

        Messages come one at a time, in order per sender. An exception
        crashes this incarnation: its supervisor decides what follows, and an
        asker gets ActorError.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define receive(message)")

    def on_start(self) -> Any:
        """Called once the actor is in place, before its first message."""

    def on_stop(self, reason: str) -> Any:
        """Called when this incarnation ends: a stop, a crash, or a restart."""

    def on_code_change(self) -> Any:
        """Called after a hot reload moved this actor to the new code."""

    @property
    def ref(self) -> ActorRef:
        """This actor's own ref."""
        return self._gx_cell.ref

    @property
    def sender(self) -> ActorRef | None:
        """Who sent the message being handled (None if sent from outside any actor)."""
        return self._gx_cell.sender()

    def spawn(
        self,
        actor_class: type[Actor] | str,
        *args: Any,
        name: str | None = None,
        worker: int | None = None,
        restart: str = PERMANENT,
        mailbox_size: int | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a child and return its ref at once.

        By default the child lives on this worker (fast, like Erlang's local
        spawn); pass ``worker=`` to place it on another one.
        """
        check_worker(worker)
        return self._gx_cell.spawn(
            actor_class, args, kwargs, name=name, worker=worker, restart=restart,
            mailbox_size=mailbox_size,
        )

    def stop(self) -> None:
        """End this incarnation after the current message, with reason "normal".

        As in OTP, a PERMANENT actor is then restarted by its supervisor; a
        TRANSIENT or TEMPORARY one stops for good and its queued asks fail.
        """
        self._gx_cell.stop("normal")

    def monitor(self, ref: ActorRef) -> None:
        """Get ``Down(ref, reason)`` when ``ref``'s actor exits (once per monitor)."""
        _check_ref("monitor", ref)
        self._gx_cell.report(Monitor(self._gx_cell.id, ref.node, ref.id))

    def demonitor(self, ref: ActorRef) -> None:
        """Stop watching ``ref``: no ``Down`` comes for it from now on."""
        _check_ref("demonitor", ref)
        self._gx_cell.report(Demonitor(self._gx_cell.id, ref.node, ref.id))

    def link(self, ref: ActorRef) -> None:
        """Tie both lifetimes: if either crashes, the other crashes too (unless it traps exits)."""
        _check_ref("link", ref)
        self._gx_cell.report(Link(self._gx_cell.id, ref.node, ref.id))

    def unlink(self, ref: ActorRef) -> None:
        """Undo ``link(ref)``, both ways: neither exit reaches the other any more."""
        _check_ref("unlink", ref)
        self._gx_cell.report(Unlink(self._gx_cell.id, ref.node, ref.id))

    def subscribe(self, topic: str) -> None:
        """Receive every message published to ``topic``."""
        self._gx_cell.notify("subscribe", check_topic("subscribe", topic), self._gx_cell.id)

    def unsubscribe(self, topic: str) -> None:
        """Stop getting ``topic``'s published messages."""
        self._gx_cell.notify("unsubscribe", check_topic("unsubscribe", topic), self._gx_cell.id)

    def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` to every subscriber of ``topic``."""
        self._gx_cell.publish(check_topic("publish", topic), message)

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Deliver ``message`` to this actor after ``delay`` seconds; cancellable."""
        seconds = math.nan
        if isinstance(delay, numbers.Real) and not isinstance(delay, bool):
            try:
                seconds = float(delay)
            except OverflowError:  # an int beyond any float
                seconds = math.inf
        if not 0 <= seconds < math.inf:  # also refuses nan
            raise InvalidArgument(f"send_after: delay={shown(delay)} must be a finite number of seconds >= 0")
        return self._gx_cell.send_after(seconds, message)


def _check_ref(op: str, ref: object) -> None:
    if not isinstance(ref, ActorRef):
        raise InvalidArgument(f"{op} needs an ActorRef, got {shown(ref)}")
