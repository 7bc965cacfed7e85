"""WorkerPort: what a ref does when used inside a worker (the ``Port`` of ``gorilix.workers.ref``).

From an actor, a tell or an ask goes into the worker's outbox with the actor
as its sender. From another thread of the worker process (one an actor
started), it is handed to the worker's loop, which owns the socket.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from gorilix.transport import codec
from gorilix.transport.errors import GorilixError
from gorilix.transport.frames import ASK, STOP, TELL
from gorilix.workers.asks import PendingAsks
from gorilix.workers.cell import current
from gorilix.workers.outbox import Outbox
from gorilix.workers.ref import ActorRef


class WorkerPort:
    def __init__(self, loop: asyncio.AbstractEventLoop, outbox: Outbox, asks: PendingAsks) -> None:
        """Built on the thread that runs ``loop``: that thread is the worker's own."""
        self.loop = loop
        self.outbox = outbox
        self.asks = asks
        self._thread_id = threading.get_ident()

    def _current_src(self) -> int:
        """The sender of what is sent now: the actor being run, or the worker itself."""
        ctx = current.get()
        return ctx[0].id if ctx is not None else self.outbox.self_id

    def tell(self, ref: ActorRef, message: Any) -> None:
        payload = codec.encode(message)
        if threading.get_ident() != self._thread_id:
            self.loop.call_soon_threadsafe(self.outbox.send, ref.node, ref.id, TELL, 0, 0, payload)
            return
        self.outbox.send(ref.node, ref.id, TELL, self._current_src(), 0, payload)

    def stop_actor(self, ref: ActorRef) -> None:
        if threading.get_ident() != self._thread_id:
            self.loop.call_soon_threadsafe(self.stop_actor, ref)
            return
        self.outbox.send(ref.node, ref.id, STOP, self._current_src(), 0, codec.encode(None))

    def ask(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Any:
        if threading.get_ident() == self._thread_id:
            what, instead = ("ask()", "ask_async(...)") if kind == ASK else ("tell(ack=True)", "tell_async(...)")
            raise GorilixError(
                f"{what} would block the worker's event loop (waiting on {ref} from inside an actor); "
                f"make receive `async def` and use `await ref.{instead}`"
            )
        future = asyncio.run_coroutine_threadsafe(self._ask_from_thread(ref, message, timeout, kind), self.loop)
        return future.result()

    def ask_async(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> asyncio.Future[Any]:
        """Send now; the future settles with the answer, an error, or AskTimeout."""
        payload = codec.encode(message)
        corr, future = self.asks.open(ref, timeout)
        self.outbox.send(ref.node, ref.id, kind, self._current_src(), corr, payload)
        return future

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _ask_from_thread(self, ref: ActorRef, message: Any, timeout: float, kind: int) -> Any:
        return await self.ask_async(ref, message, timeout, kind)
