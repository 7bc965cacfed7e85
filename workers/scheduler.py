"""Mailboxes and the scheduler inside one worker.

Each actor is a cell with a FIFO mailbox. The scheduler runs ready cells in
turn, at most ``BATCH`` messages each before moving on, so one busy actor
cannot starve the others on its worker. A cell handles one message at a time:
while an ``async def receive`` is awaiting, its cell is busy and later
messages wait. What a handler's outcome means (reply, crash, stop) is for the
:class:`Outcomes` it reports to; the scheduler only runs handlers.

The scheduler never schedules itself: the worker loop runs it whenever
``ready`` holds a cell, after reading its socket and after each asyncio turn.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from gorilix.transport.frames import STOP
from gorilix.workers.cell import ActorCell, Message, current

#: Types a handler's result commonly has that are certainly not coroutines:
#: checked first, as ``asyncio.iscoroutine`` costs ten times more on a plain value.
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})


def is_coroutine(result: object) -> bool:
    """Whether a handler returned a coroutine to run as a task (``async def``)."""
    return type(result) not in _PLAIN_RESULTS and asyncio.iscoroutine(result)


class Outcomes(Protocol):
    """What the scheduler hands each handler's outcome to (the keeper of the cells' lives)."""

    def on_result(self, cell: ActorCell, message: Message, result: Any) -> None: ...
    def on_crash(self, cell: ActorCell, message: Message | None, exc: BaseException) -> None: ...
    def go_down(self, cell: ActorCell, reason: str, abnormal: bool, report: bool = True) -> None: ...
    def stop_cell(self, cell: ActorCell, reason: str) -> None: ...


class Scheduler:
    """Runs ready cells' messages in turn; coroutine handlers become tasks on ``loop``."""

    BATCH = 64

    def __init__(self, outcomes: Outcomes, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes = outcomes
        self.loop = loop
        self.ready: deque[ActorCell] = deque()
        self.handled = 0  # messages handed to actors (for the node's message rates)

    def enqueue(self, cell: ActorCell, message: Message) -> None:
        cell.mailbox.append(message)
        if not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)

    def wake(self, cell: ActorCell) -> None:
        """Put a cell back in line after it was busy."""
        if cell.alive and cell.mailbox and not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)

    def run(self) -> None:
        """One round over the cells ready now; cells with more to do stay in ``ready``."""
        ready = self.ready
        outcomes = self.outcomes
        for _ in range(len(ready)):
            cell = ready.popleft()
            cell.queued = False
            budget = self.BATCH
            while budget and cell.mailbox and cell.alive and not cell.busy and not cell.down:
                if cell.stop_reason is not None:
                    break
                budget -= 1
                self.invoke(cell, cell.mailbox.popleft())
            self.handled += self.BATCH - budget
            if cell.alive and cell.stop_reason is not None and not cell.busy:
                outcomes.go_down(cell, cell.stop_reason, abnormal=False)
            elif cell.alive and cell.mailbox and not cell.busy and not cell.down:
                cell.queued = True
                ready.append(cell)

    def invoke(self, cell: ActorCell, message: Message) -> None:
        if message[0] == STOP:  # in order: after what its sender sent before
            self.outcomes.stop_cell(cell, "shutdown")
            return
        token = current.set((cell, message))
        try:
            result = cell.instance.receive(message[4])  # type: ignore[union-attr]
            if type(result) not in _PLAIN_RESULTS and asyncio.iscoroutine(result):  # is_coroutine, inline
                cell.busy = True
                self.loop.create_task(self._finish(cell, message, result))
                return
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # the actor's failure, not the worker's
            self.outcomes.on_crash(cell, message, exc)
            return
        finally:
            current.reset(token)
        self.outcomes.on_result(cell, message, result)

    async def _finish(self, cell: ActorCell, message: Message, coro: Any) -> None:
        try:
            result = await coro
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            cell.busy = False
            self.outcomes.on_crash(cell, message, exc)
        else:
            cell.busy = False
            self.outcomes.on_result(cell, message, result)
        if cell.alive and cell.stop_reason is not None:
            self.outcomes.go_down(cell, cell.stop_reason, abnormal=False)
        else:
            self.wake(cell)
