"""Futures for single items of a pool: what ``PoolRef.submit`` returns, and the loop that settles them.

One daemon thread per process runs an asyncio loop for submissions. On it,
each pool that had an item submitted keeps one open fan-out
(gorilix.workers.fanout): submitted items queue there, idle actors pull
them (two in flight each at most), deaths are retried as in ``map``, and
each answer settles its item's future. So a thousand submissions cost no
thread each, and a slow actor gets fewer of them.

A :class:`PoolFuture` is a ``concurrent.futures.Future`` (``result(timeout)``,
``add_done_callback``, ``concurrent.futures.wait`` and ``as_completed``
work as with ``ProcessPoolExecutor``), and it can be awaited from any event
loop. Cancelling one whose item was not answered yet settles it at once;
the item may still run (as with Ray's actor tasks).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Container, Generator, Iterator
from typing import Any

from gorilix.transport.errors import GorilixError
from gorilix.workers.client import ClientPort
from gorilix.workers.fanout import Fanout
from gorilix.workers.ref import ActorRef

log = logging.getLogger("gorilix.submit")

_NO_LIMIT = float("inf")


class PoolFuture(concurrent.futures.Future[Any]):
    """The answer to one submitted item: a ``concurrent.futures.Future`` that can also be awaited."""

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


class _SubmitLoop:
    """The process's submission loop, on a daemon thread started with the first submission."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                holder: list[asyncio.AbstractEventLoop] = []

                def run() -> None:
                    loop = asyncio.new_event_loop()
                    holder.append(loop)
                    ready.set()
                    loop.run_forever()

                threading.Thread(target=run, name="gorilix-submit", daemon=True).start()
                ready.wait()
                self._loop = holder[0]
            return self._loop


_submit_loop = _SubmitLoop()


class Submissions:
    """One pool's submitted items and their futures; :meth:`submit` may be called from any thread."""

    def __init__(self, refs: list[ActorRef], gone: Container[ActorRef], port: Callable[[], ClientPort], retries: int,
                 retryable: Callable[[BaseException], bool]) -> None:
        """``refs`` and ``gone`` are the pool's own (read as they change: see gorilix.workers.fanout);
        ``port()`` gives the submission thread's port to the pool's node (called on that thread)."""
        self._refs = refs
        self._gone = gone
        self._port = port
        self._retries = retries
        self._retryable = retryable
        self._loop = _submit_loop.get()
        # The rest belongs to the submission loop's thread.
        self._queue: collections.deque[Any] = collections.deque()
        self._futures: dict[int, PoolFuture] = {}
        self._added = 0
        self._fanout: Fanout | None = None
        self._more: asyncio.Event | None = None

    def submit(self, item: Any) -> PoolFuture:
        future = PoolFuture()
        self._loop.call_soon_threadsafe(self._add, item, future)
        return future

    def _add(self, item: Any, future: PoolFuture) -> None:
        if future.done():  # (cancelled before it was queued)
            return
        self._queue.append(item)
        self._futures[self._added] = future
        self._added += 1
        if self._fanout is None:
            self._start()
        elif self._fanout.exhausted:
            self._fanout.more(self._drain())
        assert self._more is not None
        self._more.set()

    def _drain(self) -> Iterator[Any]:
        queue = self._queue
        while queue:
            yield queue.popleft()

    def _start(self) -> None:
        self._fanout = Fanout(self._refs, self._drain(), retries=self._retries, retryable=self._retryable,
                              return_exceptions=True, ordered=False, label=None, gone=self._gone)
        self._more = asyncio.Event()
        self._loop.create_task(self._run(self._fanout, self._more))

    async def _run(self, fanout: Fanout, more: asyncio.Event) -> None:
        """Settle each future as its answer comes; if the fan-out ends (the system stopped), fail the rest."""
        futures = self._futures
        try:
            asker = self._port().asker(self._loop)
            async for start, answers, failure in asker.fan_out(fanout, _NO_LIMIT, each=True, more=more):
                for index, answer in enumerate(answers, start):
                    _settle(futures.pop(index), answer, None)
                if failure is not None:
                    _settle(futures.pop(start + len(answers)), None, failure)
        except BaseException as exc:  # NotRunning when the system stops, or a bug of ours: no future waits forever
            error = exc if isinstance(exc, GorilixError) else GorilixError(f"the pool's submissions failed: {exc!r}")
            if not isinstance(exc, GorilixError):
                log.exception("submissions of a pool failed")
            self._fail_all(error)
            if not isinstance(exc, Exception):
                raise

    def _fail_all(self, error: BaseException) -> None:
        """Fail every future still waiting, and start afresh (a later submission opens a new fan-out)."""
        for future in self._futures.values():
            _settle(future, None, error)
        self._futures.clear()
        self._queue.clear()
        self._added = 0
        self._fanout = None


def _settle(future: PoolFuture, answer: Any, error: BaseException | None) -> None:
    """Settle ``future`` unless it is done already (cancelled, perhaps at this very moment by another thread)."""
    try:
        if error is None:
            future.set_result(answer)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass
