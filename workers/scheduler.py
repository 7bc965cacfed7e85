"""Mailboxes and the scheduler inside one worker.

Each actor is a cell with a FIFO mailbox. The scheduler runs ready cells in
turn, at most ``BATCH`` messages each before moving on, so one busy actor
cannot starve the others on its worker. A cell handles one message at a time:
while an ``async def receive`` is awaiting, its cell is busy and later
messages wait. What a handler's outcome means (reply, crash, stop) is for the
:class:`Outcomes` it reports to; the scheduler only runs handlers.

The scheduler never schedules itself: the worker loop runs it whenever
``ready`` holds a cell, after reading its socket and after each asyncio turn.

A batch (a pool's chunk of items, gorilix.workers.batch) is run a slice at a
time: items until :data:`BATCH_SLICE` seconds have passed, then the cell's
turn ends and the rest of the chunk waits at the head of its mailbox, so a
chunk of long items cannot starve the worker's other actors either.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter
from typing import Any, Protocol

from gorilix.transport.frames import BATCH, STOP
from gorilix.workers.batch import PART_EVERY, Batch
from gorilix.workers.cell import COUNTED, HANDOFF, ActorCell, Message, current
from gorilix.workers.health import describe
from gorilix.workers.tally import NoTally, Tally

#: Seconds of a chunk's items a cell runs in one turn (at least one item).
BATCH_SLICE = 0.002
#: Most items of a chunk run between two readings of the clock.
MAX_STRIDE = 256

#: Types a handler's result commonly has that are certainly not coroutines:
#: checked first, as ``asyncio.iscoroutine`` costs ten times more on a plain value.
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})


#: What a handler may raise that is the actor's failure, not the worker's: ``asyncio.CancelledError``
#: too (a BaseException), which would otherwise end the worker or leave an async actor busy for ever.
ACTOR_FAILURES = (Exception, SystemExit, KeyboardInterrupt, asyncio.CancelledError)


def is_coroutine(result: object) -> bool:
    """Whether a handler returned a coroutine to run as a task (``async def``)."""
    return type(result) not in _PLAIN_RESULTS and asyncio.iscoroutine(result)


class Outcomes(Protocol):
    """What the scheduler hands each handler's outcome to (the keeper of the cells' lives)."""

    def on_result(self, cell: ActorCell, message: Message, result: Any) -> None: ...
    def on_batch(self, cell: ActorCell, message: Message) -> None: ...
    def on_part(self, cell: ActorCell, message: Message) -> bool: ...
    def on_crash(self, cell: ActorCell, message: Message | None, exc: BaseException) -> None: ...
    def go_down(self, cell: ActorCell, reason: str, abnormal: bool, report: bool = True) -> None: ...
    def stop_cell(self, cell: ActorCell, reason: str) -> None: ...
    def handed_off(self, cell: ActorCell) -> None: ...


class Scheduler:
    """Runs ready cells' messages in turn; coroutine handlers become tasks on ``loop``."""

    BATCH = 64

    def __init__(self, outcomes: Outcomes, loop: asyncio.AbstractEventLoop,
                 tally: Tally | NoTally | None = None) -> None:
        self.outcomes = outcomes
        self.loop = loop
        #: Where a tell the node counted is settled once it is handed to ``receive``.
        self.tally: Tally | NoTally = tally or NoTally()
        self.ready: deque[ActorCell] = deque()
        #: Every cell whose mailbox holds a message, and some whose mailbox emptied since (see mailbox_load):
        #: a load report walks these, not every actor of the worker.
        self.loaded: set[ActorCell] = set()
        self.handled = 0  # messages handed to actors (for the node's message rates)
        #: (cell, message) whose handler runs now, or None: what the worker's watchdog reports (health.py).
        self.running: tuple[ActorCell, Message] | None = None

    def enqueue(self, cell: ActorCell, message: Message) -> None:
        mailbox = cell.mailbox
        if not mailbox:  # (the way into a mailbox, with _batch_goes_on's: a cell with messages is in ``loaded``)
            self.loaded.add(cell)
        mailbox.append(message)
        if not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)

    def wake(self, cell: ActorCell) -> None:
        """Put a cell back in line after it was busy."""
        if cell.alive and cell.mailbox and not cell.queued and not cell.busy and not cell.down:
            cell.queued = True
            self.ready.append(cell)

    def mailbox_load(self) -> tuple[int, int]:
        """Messages waiting in mailboxes, and the deepest mailbox; forgets the cells whose mailbox emptied.

        It walks the cells that got messages since the last call, not every
        actor of the worker: with 100,000 idle actors a walk over them all
        took 8 ms of the worker's loop every second (messages waited
        meanwhile), where this takes microseconds.
        """
        loaded = self.loaded
        queued = deepest = 0
        emptied = []
        for cell in loaded:
            depth = len(cell.mailbox)
            if not depth:
                emptied.append(cell)
            queued += depth
            if depth > deepest:
                deepest = depth
        loaded.difference_update(emptied)
        return queued, deepest

    def run(self) -> None:
        """One round over the cells ready now; cells with more to do stay in ``ready``."""
        ready = self.ready
        outcomes = self.outcomes
        settle = self.tally.settle
        for _ in range(len(ready)):
            cell = ready.popleft()
            cell.queued = False
            budget = self.BATCH
            while budget and cell.mailbox and cell.alive and not cell.busy and not cell.down:
                if cell.stop_reason is not None:
                    break
                budget -= 1
                message = cell.mailbox.popleft()
                if message[3] == COUNTED:
                    settle(cell.id)
                if message[0] == BATCH:
                    self.handled += self.run_batch(cell, message) - 1
                    break  # a slice of a chunk is the cell's turn
                self.invoke(cell, message)
            self.handled += self.BATCH - budget
            if cell.alive and cell.stop_reason is not None and not cell.busy:
                outcomes.go_down(cell, cell.stop_reason, abnormal=False)
            elif cell.alive and cell.mailbox and not cell.busy and not cell.down:
                cell.queued = True
                ready.append(cell)

    def invoke(self, cell: ActorCell, message: Message) -> None:
        if message[0] == STOP:  # in order: after what its sender sent before
            if message[4] is HANDOFF:
                self.outcomes.handed_off(cell)
            else:
                self.outcomes.stop_cell(cell, "shutdown")
            return
        self.running = ctx = (cell, message)
        token = current.set(ctx)
        try:
            result = cell.instance.receive(message[4])  # type: ignore[union-attr]
            if type(result) not in _PLAIN_RESULTS and asyncio.iscoroutine(result):  # is_coroutine, inline
                cell.busy = True
                self.loop.create_task(self._finish(cell, message, result))
                return
        except ACTOR_FAILURES as exc:  # the actor's failure, not the worker's
            self.outcomes.on_crash(cell, message, exc)
            return
        finally:
            current.reset(token)
            self.running = None
        self.outcomes.on_result(cell, message, result)

    def run_batch(self, cell: ActorCell, message: Message) -> int:
        """A slice of a chunk's items; how many ran. The rest goes back to the head of the mailbox.

        The clock is read between runs of ``batch.stride`` items, a stride
        that doubles while a run takes a small part of the slice: tiny items
        cost little more than their calls, long ones are timed one by one.
        """
        batch: Batch = message[4]
        items, answers = batch.items, batch.answers
        append = answers.append
        receive = cell.instance.receive  # type: ignore[union-attr]
        start = index = len(answers)
        began = perf_counter()
        until = began + BATCH_SLICE
        if not batch.sent_at:
            batch.sent_at = began
        self.running = ctx = (cell, message)
        token = current.set(ctx)
        try:
            while index < len(items):
                end = min(len(items), index + batch.stride)
                for item in items[index:end]:
                    result = receive(item)
                    if type(result) not in _PLAIN_RESULTS and asyncio.iscoroutine(result):
                        cell.busy = True
                        self.loop.create_task(self._finish(cell, message, result))
                        return len(answers) - start + 1
                    append(result)
                    if cell.stop_reason is not None:
                        break
                index = len(answers)
                now = perf_counter()
                if cell.stop_reason is not None or now >= until:
                    break
                if now - began < BATCH_SLICE / 16 and batch.stride < MAX_STRIDE:
                    batch.stride *= 2
                began = now
        except ACTOR_FAILURES as exc:  # the actor's failure, not the worker's
            self.outcomes.on_crash(cell, message, exc)
            return len(answers) - start + 1
        finally:
            current.reset(token)
            self.running = None
        self._batch_goes_on(cell, message, batch)
        return len(answers) - start

    def _batch_goes_on(self, cell: ActorCell, message: Message, batch: Batch) -> None:
        """After a slice: answer the chunk, or send a part if one is due and keep it at the head of the mailbox."""
        if len(batch.answers) == len(batch.items) or cell.stop_reason is not None or not cell.alive:
            self.outcomes.on_batch(cell, message)  # (stopped early: the sender asks the rest again)
            return
        if perf_counter() - batch.sent_at >= PART_EVERY and not self.outcomes.on_part(cell, message):
            return  # (an answer could not travel: the chunk was answered up to it)
        if not cell.mailbox:  # (after an async item a load report may have forgotten the cell: see ``loaded``)
            self.loaded.add(cell)
        cell.mailbox.appendleft(message)

    async def _finish(self, cell: ActorCell, message: Message, coro: Any) -> None:
        """An ``async def receive``'s outcome (of a chunk's item: the chunk goes on after it)."""
        try:
            result = await coro
        except ACTOR_FAILURES as exc:
            cell.busy = False
            self.outcomes.on_crash(cell, message, exc)
        else:
            cell.busy = False
            if message[0] == BATCH:
                message[4].answers.append(result)
                self._batch_goes_on(cell, message, message[4])
            else:
                self.outcomes.on_result(cell, message, result)
        if cell.alive and cell.stop_reason is not None:
            self.outcomes.go_down(cell, cell.stop_reason, abnormal=False)
        else:
            self.wake(cell)

    def now_running(self) -> tuple[object, int, int, str, str] | None:
        """What the watchdog writes (health.Watchdog): the message running now, its step, its actor and kind."""
        running = self.running
        if running is None:
            return None
        cell, message = running
        value = message[4]
        if type(value) is Batch:  # a chunk: the clock is per item
            step = len(value.answers)
            kind = "an item of a batch: " + describe(value.items[step]) if step < len(value.items) else "a batch"
        else:
            step, kind = 0, describe(value)
        return message, step, cell.id, cell.spec.class_path, kind
