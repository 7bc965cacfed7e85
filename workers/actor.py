"""The Actor base class: what user code subclasses and calls from inside.

The worker attaches the actor's cell before ``__init__`` runs, so ``self.ref``
and ``self.spawn`` work from the constructor on. User ``__init__`` methods
need not call ``super().__init__()``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from workers.ref import ActorRef
from workers.spec import PERMANENT

if TYPE_CHECKING:
    from workers.scheduler import ActorCell


class Actor:
    """Base class of every actor.

    Override :meth:`receive` (plain or ``async def``); its return value
    answers an ask. An exception in it crashes the actor: an asker gets
    ``ActorError`` and the actor is re-created according to its restart type.
    """

    _gx_cell: ActorCell

    def receive(self, message: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define receive(message)")

    def on_start(self) -> Any:
        """Called once the actor is in place, before its first message."""

    def on_stop(self, reason: str) -> Any:
        """Called when the actor stops or is about to be replaced after a crash."""

    @property
    def ref(self) -> ActorRef:
        """This actor's own ref."""
        return self._gx_cell.ref

    @property
    def sender(self) -> ActorRef | None:
        """Who sent the message being handled (None if sent from outside any actor)."""
        return self._gx_cell.runtime.current_sender()

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
        return self._gx_cell.runtime.spawn_from_actor(
            actor_class, args, kwargs, name=name, worker=worker, restart=restart,
            mailbox_size=mailbox_size,
        )

    def stop(self) -> None:
        """Stop this actor after the current message; queued asks fail at once."""
        self._gx_cell.runtime.request_stop(self._gx_cell, "normal")

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Deliver ``message`` to this actor after ``delay`` seconds; cancellable."""
        return self._gx_cell.runtime.send_after(self._gx_cell, delay, message)
