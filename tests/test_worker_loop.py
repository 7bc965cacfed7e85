"""The worker loop's parts that need no process: ask deadlines, and the asyncio loop run a turn at a time."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from gorilix.transport.errors import AskTimeout
from gorilix.workers.asks import TICK, PendingAsks
from gorilix.workers.loop import WorkerEventLoop
from gorilix.workers.ref import ActorRef

REF = ActorRef("n1", 7, "slow")


@pytest.fixture
def loop() -> Iterator[WorkerEventLoop]:
    loop = WorkerEventLoop()
    try:
        yield loop
    finally:
        loop.close()


def test_an_ask_fails_with_ask_timeout_once_its_deadline_has_passed(loop: WorkerEventLoop) -> None:
    asks = PendingAsks(loop)
    _, future = asks.open(REF, 0.5)
    now = loop.time()
    asks.expire(now + 0.49)
    assert not future.done()
    asks.expire(now + 0.5 + TICK)
    with pytest.raises(AskTimeout, match=r"'slow' n1/0x7> did not answer within 0.5 s"):
        future.result()
    assert len(asks) == 0 and asks.next_deadline() is None


def test_an_answered_ask_is_not_failed_at_its_deadline(loop: WorkerEventLoop) -> None:
    asks = PendingAsks(loop)
    corr, future = asks.open(REF, 0.5)
    asks.settle(corr, "answer")
    asks.expire(loop.time() + 1.0)
    assert future.result() == "answer"
    asks.settle(corr, "late")  # a second answer to the same ask is ignored
    assert future.result() == "answer"


def test_an_ask_without_a_limit_has_no_deadline(loop: WorkerEventLoop) -> None:
    asks = PendingAsks(loop)
    corr, future = asks.open(REF, float("inf"))
    assert asks.next_deadline() is None
    asks.fail(corr, AskTimeout("given up"))
    with pytest.raises(AskTimeout, match="given up"):
        future.result()


def test_an_answer_to_a_cancelled_ask_is_dropped(loop: WorkerEventLoop) -> None:
    asks = PendingAsks(loop)
    corr, future = asks.open(REF, 5.0)
    future.cancel()
    asks.settle(corr, "too late")
    assert future.cancelled() and len(asks) == 0


def test_deadlines_come_due_in_order_of_time(loop: WorkerEventLoop) -> None:
    asks = PendingAsks(loop)
    _, late = asks.open(REF, 2.0)
    _, early = asks.open(REF, 1.0)
    first = asks.next_deadline()
    assert first is not None and first - loop.time() <= 1.0 + TICK
    asks.expire(first)
    assert early.done() and not late.done()
    asks.expire(loop.time() + 2.0 + TICK)
    assert late.done()


def test_a_scheduled_callback_waits_for_run_ready(loop: WorkerEventLoop) -> None:
    ran: list[str] = []
    assert not loop.soon
    loop.call_soon(ran.append, "first")
    assert loop.soon and ran == []
    loop.run_ready()
    assert ran == ["first"] and not loop.soon


def test_a_callback_scheduled_by_a_callback_runs_at_the_next_call(loop: WorkerEventLoop) -> None:
    ran: list[str] = []
    loop.call_soon(lambda: (ran.append("first"), loop.call_soon(ran.append, "second")))
    loop.run_ready()
    assert ran == ["first"] and loop.soon
    loop.run_ready()
    assert ran == ["first", "second"] and not loop.soon


def test_a_cancelled_callback_does_not_run(loop: WorkerEventLoop) -> None:
    ran: list[str] = []
    loop.call_soon(ran.append, "cancelled").cancel()
    loop.call_soon(ran.append, "kept")
    loop.run_ready()
    assert ran == ["kept"]


def test_a_failing_callback_is_reported_and_the_next_still_runs(loop: WorkerEventLoop) -> None:
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    ran: list[str] = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(ran.append, "next")
    loop.run_ready()
    assert ran == ["next"]
    assert [type(c["exception"]) for c in reported] == [ZeroDivisionError]


def test_a_callback_runs_in_the_context_it_was_scheduled_in(loop: WorkerEventLoop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    seen: list[str] = []
    context = contextvars.copy_context()
    context.run(var.set, "inside")
    loop.call_soon(lambda: seen.append(var.get()), context=context)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.run_ready()
    assert seen == ["inside", "outside"]


def test_an_async_handler_resumes_as_soon_as_its_future_is_settled(loop: WorkerEventLoop) -> None:
    waiting: asyncio.Future[str] = loop.create_future()

    async def task() -> str:
        return "got " + await waiting

    running = loop.create_task(task())
    loop.run_ready()
    assert not running.done() and not loop.soon
    waiting.set_result("it")
    assert loop.soon  # the task's wake-up
    loop.run_ready()
    assert running.result() == "got it"


def test_a_turn_runs_what_a_thread_hands_over(loop: WorkerEventLoop) -> None:
    ran: list[str] = []
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(ran.append, "from a thread"))
    thread.start()
    thread.join()
    loop.turn()
    assert ran == ["from a thread"]


def test_the_next_timer_is_the_first_live_one(loop: WorkerEventLoop) -> None:
    assert loop.next_timer() is None
    soon = loop.call_later(5.0, lambda: None)
    later = loop.call_later(50.0, lambda: None)
    assert loop.next_timer() == soon.when()
    soon.cancel()
    assert loop.next_timer() == later.when()
    later.cancel()
    assert loop.next_timer() is None


def test_a_turn_runs_the_timers_due_and_forgets_them(loop: WorkerEventLoop) -> None:
    ran: list[str] = []
    loop.call_at(loop.time() - 1.0, ran.append, "due")
    loop.turn()
    assert ran == ["due"] and loop.next_timer() is None and not loop.soon


def test_the_selector_has_one_descriptor_the_worker_polls() -> None:
    # Without it, wake-ups from other threads would reach the worker only at its next poll timeout.
    loop = WorkerEventLoop()
    try:
        assert isinstance(loop.selector_fd, int)
    finally:
        loop.close()
