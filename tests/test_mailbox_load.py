"""A worker's load report (queued messages, deepest mailbox) walks the cells that got messages, not every actor.

It walked every actor once a second: 8 ms of the worker's loop with 100,000
idle actors, and every message to that worker waited meanwhile (the
isolation figure in `gorilix bench` met it as one slow ask a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from actors import Sleeper
from conftest import wait_for

from gorilix import ActorSystem
from gorilix.bench_actors import Idle
from gorilix.transport.frames import BATCH, TELL
from gorilix.workers.batch import Batch
from gorilix.workers.cell import ActorCell
from gorilix.workers.scheduler import Scheduler
from gorilix.workers.spec import ActorSpec


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    loop = asyncio.new_event_loop()
    try:
        yield Scheduler(None, loop)  # type: ignore[arg-type]  # (nothing runs: no outcomes)
    finally:
        loop.close()


def _cells(count: int) -> list[ActorCell]:
    spec = ActorSpec("tests.actors:Echo", b"")
    return [ActorCell(None, "n1", actor_id, spec) for actor_id in range(count)]  # type: ignore[arg-type]


def _tell(scheduler: Scheduler, cell: ActorCell) -> None:
    cell.busy = True  # (held out of the ready queue: the messages stay in the mailbox)
    scheduler.enqueue(cell, (TELL, "n2", 1, 0, "x"))


def test_the_report_counts_what_waits_and_walks_only_the_cells_that_got_messages(scheduler: Scheduler) -> None:
    cells = _cells(10_000)
    for _ in range(3):
        _tell(scheduler, cells[5])
    _tell(scheduler, cells[9])
    assert scheduler.loaded == {cells[5], cells[9]}  # (of 10,000 actors)
    assert scheduler.mailbox_load() == (4, 3)

    cells[5].mailbox.clear()  # (its messages ran)
    assert scheduler.mailbox_load() == (1, 1)
    assert scheduler.loaded == {cells[9]}  # forgotten once found empty

    _tell(scheduler, cells[5])  # a message again: walked again
    assert scheduler.mailbox_load() == (2, 1)
    cells[5].mailbox.clear()
    cells[9].mailbox.clear()
    assert scheduler.mailbox_load() == (0, 0) and not scheduler.loaded


def test_a_worker_of_many_idle_actors_reports_its_waiting_messages(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2)
    idle = system.spawn(Idle, worker=1)
    for _ in range(2_000):
        system.spawn(Idle, worker=1)
    idle.ask("ready?")
    slow = system.spawn(Sleeper, worker=1)
    slow.tell(3.0)  # it awaits for 3 s: the worker's loop runs on, and what comes next waits in its mailbox
    for _ in range(40):
        slow.tell(0)
    wait_for(lambda: (system.workers()[1].mailbox, system.workers()[1].deepest_mailbox) == (40, 40), 10,
             "worker 1 reports the 40 messages waiting")
    wait_for(lambda: system.workers()[1].mailbox == 0, 15, "worker 1 reports its mailboxes empty once they ran")


class _Outcomes:
    """What the scheduler reports to, as a test needs it: nothing happens."""

    def on_result(self, cell: ActorCell, message: Any, result: Any) -> None: ...
    def on_batch(self, cell: ActorCell, message: Any) -> None: ...
    def on_part(self, cell: ActorCell, message: Any) -> bool:
        return True
    def on_crash(self, cell: ActorCell, message: Any, exc: BaseException) -> None: ...
    def go_down(self, cell: ActorCell, reason: str, abnormal: bool, report: bool = True) -> None: ...
    def stop_cell(self, cell: ActorCell, reason: str) -> None: ...
    def handed_off(self, cell: ActorCell) -> None: ...


class _Awaits:
    """An actor whose ``receive`` awaits ``gate`` for each item."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    async def receive(self, item: Any) -> Any:
        await self.gate.wait()
        return item


def test_a_chunk_put_back_after_an_async_item_is_counted_with_what_waits_behind_it() -> None:
    # A chunk's item awaited with the mailbox empty, a load report forgot the cell meanwhile, and the chunk went
    # back to the head of its mailbox past enqueue: it and every message behind it went unreported.
    loop = asyncio.new_event_loop()
    try:
        scheduler = Scheduler(_Outcomes(), loop)  # type: ignore[arg-type]
        (cell,) = _cells(1)
        gate = asyncio.Event()
        cell.instance = _Awaits(gate)  # type: ignore[assignment]
        scheduler.enqueue(cell, (BATCH, "n2", 1, 7, Batch([1, 2, 3])))
        scheduler.run()  # its first item awaits: the mailbox is empty meanwhile
        assert cell.busy and not cell.mailbox
        assert scheduler.mailbox_load() == (0, 0)  # (a report while it awaits)
        gate.set()
        loop.run_until_complete(asyncio.sleep(0.01))  # the item ends: the chunk goes back to the head
        assert list(cell.mailbox) and not cell.busy
        cell.busy = True  # (its turn has not come yet: what comes now waits behind the chunk)
        scheduler.enqueue(cell, (TELL, "n2", 1, 0, "x"))
        scheduler.enqueue(cell, (TELL, "n2", 1, 0, "y"))
        assert cell in scheduler.loaded
        assert scheduler.mailbox_load() == (3, 3)
    finally:
        loop.close()
