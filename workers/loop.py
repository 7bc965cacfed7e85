"""The worker's loop: a plain ZeroMQ poll, with asyncio entered only when it has work.

A worker of plain ``def receive`` actors reads its socket, runs the handlers
and sends the answers without asyncio in between: one ``zmq_poll`` per
burst, as a raw ZeroMQ peer does. The callbacks asyncio code schedules (an
async handler's next step once its ask is answered, say) run from this loop
too, straight after what woke them. asyncio's own loop turns only for what
it alone watches: its timers, and its file descriptors (its wake-up pipe for
other threads, an async actor's own sockets), whose selector's descriptor
the poll waits on.

Between turns the asyncio loop is still this thread's running loop, so
``asyncio.get_running_loop()`` and ``create_task`` work in plain handlers too.
"""

from __future__ import annotations

import heapq
import logging
import math
import selectors
from asyncio import Handle, SelectorEventLoop, TimerHandle, events
from collections import deque
from collections.abc import Callable
from contextvars import Context, copy_context
from typing import Any, TypeVarTuple, Unpack

import zmq
from zmq.backend import zmq_poll

from gorilix.transport.sockets import has_input, recv_frames
from gorilix.workers.asks import PendingAsks
from gorilix.workers.inbox import Inbox
from gorilix.workers.outbox import Outbox
from gorilix.workers.scheduler import Scheduler

log = logging.getLogger("gorilix.worker")

_Ts = TypeVarTuple("_Ts")

#: Multiparts read from the socket before the scheduler runs.
RECV_BURST = 512
#: Longest wait, in milliseconds, when asyncio's selector has no descriptor to wait on.
NO_SELECTOR_FD_WAIT_MS = 10

_POLLIN = int(zmq.POLLIN)


class WorkerEventLoop(SelectorEventLoop):
    """An asyncio loop whose scheduled callbacks the worker loop runs itself.

    ``call_soon`` (a task's next step, a settled future's callbacks) queues
    here, and :meth:`run_ready` runs the queue without a turn of asyncio's
    own loop: an async actor's ask that is answered resumes at once. asyncio
    itself turns (:meth:`turn`) only for what it alone knows: a due timer
    (``next_timer()``) or a readable descriptor (``selector_fd``), such as
    its wake-up pipe for other threads.
    """

    def __init__(self) -> None:
        selector = selectors.DefaultSelector()
        super().__init__(selector)
        fileno = getattr(selector, "fileno", None)  # epoll, kqueue, devpoll: one descriptor for them all
        self.selector_fd: int | None = fileno() if fileno is not None else None
        self._timers: list[TimerHandle] = []  # a heap, as asyncio's own
        self._soon: deque[tuple[Handle, Callable[..., object], tuple[Any, ...], Context]] = deque()

    @property
    def soon(self) -> bool:
        """Whether callbacks wait for :meth:`run_ready`."""
        return bool(self._soon)

    def call_soon(
        self, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts, context: Context | None = None
    ) -> Handle:
        if context is None:
            context = copy_context()
        handle = Handle(callback, args, self, context)
        self._soon.append((handle, callback, args, context))
        return handle

    def run_ready(self) -> None:
        """Run the callbacks queued so far, in order (those they queue wait for the next call)."""
        soon = self._soon
        for _ in range(len(soon)):
            handle, callback, args, context = soon.popleft()
            if handle.cancelled():
                continue
            try:
                context.run(callback, *args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio's own Handle does: report, go on
                self.call_exception_handler(
                    {"message": f"Exception in callback {callback!r}", "exception": exc, "handle": handle}
                )

    def call_at(
        self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
        context: Context | None = None,
    ) -> TimerHandle:
        timer = super().call_at(when, callback, *args, context=context)
        heapq.heappush(self._timers, timer)
        return timer

    def next_timer(self) -> float | None:
        """When the first live timer is due (loop time), or None."""
        timers = self._timers
        while timers and timers[0].cancelled():
            heapq.heappop(timers)
        return timers[0].when() if timers else None

    def turn(self) -> None:
        """One iteration of asyncio's loop: due timers and ready descriptors (then :meth:`run_ready`)."""
        started = self.time()
        super().call_soon(self.stop)  # into asyncio's own queue: the iteration does not wait for I/O
        outside = events._get_running_loop()  # this loop, between turns of a worker's loop
        events._set_running_loop(None)  # run_forever refuses to start while a loop is set as running
        try:
            self.run_forever()
        finally:
            events._set_running_loop(outside)
        timers = self._timers
        while timers and (timers[0].cancelled() or timers[0].when() <= started):
            heapq.heappop(timers)


class WorkerLoop:
    """Serves one worker: its socket, its scheduler, its asyncio loop and its asks' deadlines."""

    def __init__(self, loop: WorkerEventLoop, sock: zmq.Socket[bytes], inbox: Inbox, parent_fd: int | None) -> None:
        """``parent_fd``: readable once the node process is gone (None: not watched)."""
        self.loop, self.sock, self.inbox, self.parent_fd = loop, sock, inbox, parent_fd
        # The inbox's partners, which the loop drives too.
        self.scheduler: Scheduler = inbox.scheduler
        self.outbox: Outbox = inbox.outbox
        self.asks: PendingAsks = inbox.asks
        self.running = False
        self._items: list[tuple[Any, int]] = [(sock, _POLLIN)]
        if loop.selector_fd is not None:
            self._items.append((loop.selector_fd, _POLLIN))
        if parent_fd is not None:
            self._items.append((parent_fd, _POLLIN))

    def stop(self) -> None:
        """End ``serve`` after the current step."""
        self.running = False

    def serve(self) -> None:
        """Until ``stop``, or until the node process is gone."""
        self.running = True
        events._set_running_loop(self.loop)
        try:
            while self.running:
                ready = zmq_poll(self._items, self._wait_ms())
                try:
                    self._step(ready)
                except Exception:  # a bug of ours must not end the worker (as in an asyncio callback)
                    log.exception("worker loop step failed")
        finally:
            events._set_running_loop(None)

    def _step(self, ready: list[tuple[Any, int]]) -> None:
        """Serve what the poll found ready, then whatever that made ready in turn."""
        loop = self.loop
        asyncio_ready = False
        for item, _ in ready:
            if item is self.sock:
                self._drain()
            elif item == self.parent_fd:
                log.warning("node process is gone; worker %d exits", self.inbox.slot)
                self.running = False
                return
            else:
                asyncio_ready = True
        if asyncio_ready or self._timer_due(loop.next_timer()):
            loop.turn()
        if loop.soon:
            loop.run_ready()
        deadline = self.asks.next_deadline()
        if deadline is not None and deadline <= loop.time():
            self.asks.expire(loop.time())
        if self.scheduler.ready:
            self._run_scheduler()
        self.outbox.flush()

    def _drain(self) -> None:
        """Read and dispatch what is queued (the poll said something is), in one batch."""
        sock = self.sock
        dispatch = self.inbox.dispatch
        took = self.inbox.tally.took  # (what the node sent that no longer waits in the pipe)
        self.outbox.batching = True
        try:
            for _ in range(RECV_BURST):
                try:
                    frames = recv_frames(sock)
                except zmq.Again:  # (the poll said there was a message: never, but not worth a traceback)
                    break
                took(sum(map(len, frames)))
                dispatch(frames)
                if not has_input(sock):
                    break
        finally:
            self.outbox.batching = False
        if self.scheduler.ready:  # at once: the answers go out before asyncio's turn
            self._run_scheduler()
            self.outbox.flush()

    def _run_scheduler(self) -> None:
        """One scheduler round, its messages sent as one batch."""
        self.outbox.batching = True
        try:
            self.scheduler.run()
        finally:
            self.outbox.batching = False

    def _timer_due(self, when: float | None) -> bool:
        return when is not None and when <= self.loop.time()

    def _wait_ms(self) -> int:
        """How long the poll may wait: 0 with work at hand, else until the next deadline (-1: none)."""
        loop = self.loop
        if self.scheduler.ready or loop.soon or self.outbox.pending:
            return 0
        deadline = loop.next_timer()
        asks = self.asks.next_deadline()
        if asks is not None and (deadline is None or asks < deadline):
            deadline = asks
        wait = -1 if deadline is None else max(0, math.ceil((deadline - loop.time()) * 1000))
        if loop.selector_fd is None:
            wait = NO_SELECTOR_FD_WAIT_MS if wait < 0 else min(wait, NO_SELECTOR_FD_WAIT_MS)
        return wait
