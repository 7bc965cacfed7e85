"""Mailboxes and the scheduler inside one worker.

Each actor is a cell with a FIFO mailbox. The scheduler runs ready cells in
turn, at most ``BATCH`` messages each before moving on, so one busy actor
cannot starve the others on its worker. A cell handles one message at a time:
while an ``async def receive`` is awaiting, its cell is busy and later
messages wait. What a handler's outcome means (reply, crash, stop) is the
runtime's business; the scheduler only runs handlers and reports.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import TYPE_CHECKING, Any

from gorilix.transport.frames import STOP
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import ActorSpec

if TYPE_CHECKING:
    from gorilix.workers.actor import Actor
    from gorilix.workers.runtime import WorkerRuntime

#: (kind, src_node, src_id, corr, value)
Message = tuple[int, str, int, int, Any]

#: The cell and message being handled, per task (so async handlers see their own).
current: contextvars.ContextVar[tuple[ActorCell, Message | None] | None] = contextvars.ContextVar(
    "gorilix_current", default=None
)


class ActorCell:
    """One actor's place in a worker: its instance, mailbox and state."""

    __slots__ = (
        "id", "ref", "spec", "runtime", "instance", "mailbox", "busy", "queued",
        "alive", "down", "stop_reason", "timers", "restarts",
    )

    def __init__(self, runtime: WorkerRuntime, actor_id: int, spec: ActorSpec) -> None:
        self.id = actor_id
        self.ref = ActorRef(runtime.node, actor_id, spec.name)
        self.spec = spec
        self.runtime = runtime
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


class Scheduler:
    BATCH = 64

    def __init__(self, runtime: WorkerRuntime, loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self.loop = loop
        self.ready: deque[ActorCell] = deque()
        self._scheduled = False
        #: Set while the runtime drains its socket; it runs the scheduler itself after.
        self.holding = False

    def enqueue(self, cell: ActorCell, message: Message) -> None:
        cell.mailbox.append(message)
        if not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)
            if not self._scheduled and not self.holding:
                self._scheduled = True
                self.loop.call_soon(self.run)

    def wake(self, cell: ActorCell) -> None:
        """Put a cell back in line after it was busy."""
        if cell.alive and cell.mailbox and not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)
            if not self._scheduled and not self.holding:
                self._scheduled = True
                self.loop.call_soon(self.run)

    def run(self) -> None:
        self._scheduled = False
        self.runtime._batching = True
        ready = self.ready
        for _ in range(len(ready)):
            cell = ready.popleft()
            cell.queued = False
            budget = self.BATCH
            while budget and cell.mailbox and cell.alive and not cell.busy and not cell.down:
                if cell.stop_reason is not None:
                    break
                budget -= 1
                self.invoke(cell, cell.mailbox.popleft())
            self.runtime.handled += self.BATCH - budget
            if cell.alive and cell.stop_reason is not None and not cell.busy:
                self.runtime.go_down(cell, cell.stop_reason, abnormal=False)
            elif cell.alive and cell.mailbox and not cell.busy and not cell.down:
                cell.queued = True
                ready.append(cell)
        if ready and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.run)
        self.runtime._batching = False
        self.runtime.flush()

    def invoke(self, cell: ActorCell, message: Message) -> None:
        if message[0] == STOP:  # in order: after what its sender sent before
            self.runtime.stop_cell(cell, "shutdown")
            return
        token = current.set((cell, message))
        try:
            result = cell.instance.receive(message[4])  # type: ignore[union-attr]
            if asyncio.iscoroutine(result):
                cell.busy = True
                self.loop.create_task(self._finish(cell, message, result))
                return
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # the actor's failure, not the worker's
            self.runtime.on_crash(cell, message, exc)
            return
        finally:
            current.reset(token)
        self.runtime.on_result(cell, message, result)

    async def _finish(self, cell: ActorCell, message: Message, coro: Any) -> None:
        try:
            result = await coro
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            cell.busy = False
            self.runtime.on_crash(cell, message, exc)
        else:
            cell.busy = False
            self.runtime.on_result(cell, message, result)
        if cell.alive and cell.stop_reason is not None:
            self.runtime.go_down(cell, cell.stop_reason, abnormal=False)
        else:
            self.wake(cell)
        self.runtime.flush()
