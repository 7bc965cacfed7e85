"""A thread's connection to its node: the port refs use outside any worker.

A ZeroMQ socket must never be shared between threads, so each thread that
touches the system gets its own ``ClientPort`` (the node process keeps one per
thread). Asks block on this socket alone, so threads never wait on each other.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.backend import zmq_poll

from gorilix.transport import codec
from gorilix.transport.errors import (
    AskTimeout,
    DecodeError,
    NotRunning,
    UnknownMessageType,
    error_from_wire,
)
from gorilix.transport.frames import (
    ASK,
    CONTROL_ID,
    FAIL,
    REPLY,
    STOP,
    TELL,
    message_frames,
    split_messages,
    unpack_env,
)
from gorilix.transport.sockets import configure_internal, recv_frames, send_frames
from gorilix.workers.ref import ActorRef

#: Milliseconds a detaching client's socket may take to deliver its last word to the node.
DETACH_LINGER = 200
#: A timeout of ``math.inf`` (``timeout=None`` at the ref) waits without a limit.
_NO_LIMIT = float("inf")
_POLLIN = int(zmq.POLLIN)


class ClientPort:
    def __init__(
        self, zctx: zmq.Context[Any], endpoint: str, node_name: str, client_id: int,
        configure: Callable[[zmq.Socket[bytes]], None] | None = None,
        new_id: Callable[[], int] | None = None, ended: Any = None,
    ) -> None:
        """``node_name`` "" addresses whichever node the endpoint reaches (remote tools).

        ``new_id`` hands out client ids; with it, ``ask_async`` from asyncio
        code gets a socket of its own event loop instead of a thread.
        ``ended`` (a local node's end notice: ``fileno()``, ``error()``) becomes
        readable when the node is gone; a waiting call then raises ``error()`` at once.
        """
        self._zctx = zctx
        self._endpoint = endpoint
        self._configure = configure
        self._new_id = new_id
        self._askers: list[AsyncAsker] = []
        self.node = node_name
        self.id = client_id
        self._corr = itertools.count(1)
        #: Asks of streams (imap) this thread has not finished: another call on the thread that reads
        #: one of their answers keeps it here for them, instead of dropping it as a stranger's.
        self._stream_corrs: set[int] = set()
        self._stash: dict[int, tuple[int, bool, Any]] = {}
        self.malformed = 0
        self.sock: zmq.Socket[bytes] = zctx.socket(zmq.DEALER)
        configure_internal(self.sock)
        self.sock.setsockopt(zmq.ROUTING_ID, b"c%d" % client_id)
        # What a wait polls, built once (Socket.poll and Poller.poll build theirs per call).
        self._poll_items: list[tuple[Any, int]] = [(self.sock, _POLLIN)]
        self._ended = ended
        if ended is not None:
            self._poll_items.append((ended, _POLLIN))
        if configure is not None:
            configure(self.sock)
        self.sock.connect(endpoint)
        self._send(node_name, CONTROL_ID, TELL, 0, codec.encode(["attach_client", client_id]))

    def close(self, linger: int = 0) -> None:
        for asker in self._askers:
            asker.close()
        self._askers.clear()
        self.sock.close(linger=linger)

    def detach(self) -> None:
        """Tell the node to forget this client's route, then close (the node goes on)."""
        try:
            self._send(self.node, CONTROL_ID, TELL, 0, codec.encode(["detach_client", self.id]))
        except zmq.ZMQError:
            pass  # (closed already, or the node is gone: nothing to forget)
        self.close(linger=DETACH_LINGER)

    def _send(self, dst_node: str, dst_id: int, kind: int, corr: int, payload: bytes) -> None:
        send_frames(self.sock, client_frames(self.node, self.id, dst_node, dst_id, kind, corr, payload))

    # -- Port ---------------------------------------------------------------

    def tell(self, ref: ActorRef, message: Any) -> None:
        self._send(ref.node, ref.id, TELL, 0, codec.encode(message))

    def stop_actor(self, ref: ActorRef) -> None:
        self._send(ref.node, ref.id, STOP, 0, codec.encode(None))

    def ask(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        payload = codec.encode(message)
        corr = next(self._corr)
        self._send(ref.node, ref.id, ASK, corr, payload)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline, (corr,))
            if answer is None:
                raise AskTimeout(f"{ref} did not answer within {timeout:g} s")
            got_corr, ok, value = answer
            if got_corr == corr:
                if ok:
                    return value
                raise value

    async def ask_async(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        if self._new_id is None:  # no ids to hand out: a blocking ask on an executor thread
            return await loop.run_in_executor(None, ref.ask, message, timeout)
        return await self._asker(loop).ask(ref, message, timeout)

    def _asker(self, loop: asyncio.AbstractEventLoop) -> AsyncAsker:
        for asker in list(self._askers):
            if asker.loop is loop and asker.usable:
                return asker
            if not asker.usable:  # its loop has ended (asyncio.run returned)
                asker.close()
                self._askers.remove(asker)
        assert self._new_id is not None
        asker = AsyncAsker(self._zctx, self._endpoint, self.node, self._new_id(), ended=self._ended,
                           configure=self._configure)
        self._askers.append(asker)
        return asker

    def control(self, op: str, *args: Any, timeout: float = 10.0) -> Any:
        """Ask the node itself (spawn, names, worker table, ...)."""
        return self.ask(ActorRef(self.node, CONTROL_ID, "node"), [op, *args], timeout)

    def ask_each(
        self, refs: Sequence[ActorRef], items: Sequence[Any], timeout: float, window: int = 2, *,
        retries: int = 0, retryable: Callable[[BaseException], bool] = lambda error: False,
        return_exceptions: bool = False, settled: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Ask ``items`` of ``refs`` and return the answers in item order.

        Work is pulled: each actor has at most ``window`` items in flight and
        gets the next one when it answers, so a slow actor gets fewer items.
        An item whose ask fails with an error ``retryable`` accepts (its
        actor's worker died, say: the ref comes back, re-created) is asked
        again, first in line, at most ``retries`` times. Otherwise the first
        failure is raised once every ask in flight has settled, with a note
        naming the item's index; with ``return_exceptions`` each failure
        takes its item's place in the results instead. ``settled()`` is
        called each time an item is done (answered, or failed for good).
        """
        payloads = [codec.encode(item) for item in items]
        results: list[Any] = [None] * len(payloads)
        pending: dict[int, tuple[int, int]] = {}
        again: collections.deque[int] = collections.deque()  # items to ask once more, before the rest
        tries = [0] * len(payloads)
        next_item = 0
        error: BaseException | None = None

        def send_next(actor: int) -> None:
            nonlocal next_item
            if again:
                index = again.popleft()
            elif next_item < len(payloads):
                index = next_item
                next_item += 1
            else:
                return
            corr = next(self._corr)
            ref = refs[actor]
            self._send(ref.node, ref.id, ASK, corr, payloads[index])
            pending[corr] = (index, actor)

        for actor in range(len(refs)):
            for _ in range(window):
                send_next(actor)
        deadline = time.monotonic() + timeout
        while pending:
            answer = self._receive(deadline, pending)
            if answer is None:
                raise AskTimeout(f"{len(pending)} of {len(payloads)} items unanswered after {timeout:g} s")
            corr, ok, value = answer
            slot = pending.pop(corr, None)
            if slot is None:
                continue
            index, actor = slot
            if not ok and error is None and tries[index] < retries and retryable(value):
                tries[index] += 1
                again.append(index)
                send_next(actor)
                continue
            if settled is not None:
                settled()
            if ok:
                results[index] = value
            elif return_exceptions:
                results[index] = _named_item(value, index, tries[index])
            elif error is None:
                error = _named_item(value, index, tries[index])
            if error is None:
                send_next(actor)
        if error is not None:
            raise error
        return results

    def ask_stream(
        self, refs: Sequence[ActorRef], items: Iterator[Any], timeout: float, *, ordered: bool,
        window: int = 2, retries: int = 0, retryable: Callable[[BaseException], bool] = lambda error: False,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Ask each of ``items`` (read lazily) of ``refs``; yield the answers as :meth:`ask_each` settles them.

        ``ordered``: in item order (answers that come early wait, a bounded
        number of them); else as they come. At most ``window`` items per
        actor are in flight, and no item is read from ``items`` while
        ``4 * window * len(refs)`` are in flight or waiting to be yielded, so
        memory stays flat however many items there are. ``timeout`` bounds
        the wait for each next answer. Deaths are retried as in
        :meth:`ask_each`; the first other failure is raised in its turn, with a
        note naming its index, unless ``return_exceptions``.
        """
        bound = 4 * window * len(refs)
        pending: dict[int, tuple[int, int, bytes]] = {}  # corr -> (index, actor, payload)
        again: collections.deque[tuple[int, bytes]] = collections.deque()
        tries: dict[int, int] = {}
        done: dict[int, tuple[bool, Any]] = {}  # ordered: settled, waiting for their turn
        busy = [0] * len(refs)
        read = 0  # items read from ``items``
        turn = 0  # ordered: the next index to yield
        exhausted = False

        def send(actor: int) -> bool:
            nonlocal read, exhausted
            if again:
                index, payload = again.popleft()
            else:
                if exhausted or len(pending) + len(done) >= bound:
                    return False
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    return False
                index, payload = read, codec.encode(item)
                read += 1
            corr = next(self._corr)
            ref = refs[actor]
            self._send(ref.node, ref.id, ASK, corr, payload)
            pending[corr] = (index, actor, payload)
            self._stream_corrs.add(corr)
            busy[actor] += 1
            return True

        def fill() -> None:
            for actor in range(len(refs)):
                while busy[actor] < window and send(actor):
                    pass

        def settle(index: int, ok: bool, value: Any) -> Any:
            retried = tries.pop(index, 0)
            if ok:
                return value
            if return_exceptions:
                return _named_item(value, index, retried)
            raise _named_item(value, index, retried)

        try:
            fill()
            while pending or done:
                if ordered and turn in done:
                    ok, value = done.pop(turn)
                    turn += 1
                    yield settle(turn - 1, ok, value)
                    fill()
                    continue
                answer = self._stashed(pending) or self._receive(time.monotonic() + timeout, pending)
                if answer is None:
                    raise AskTimeout(f"no answer within {timeout:g} s ({len(pending)} items in flight)")
                corr, ok, value = answer
                slot = pending.pop(corr, None)
                if slot is None:
                    continue  # (an answer to an ask of an earlier stream this thread gave up on)
                self._stream_corrs.discard(corr)
                index, actor, payload = slot
                busy[actor] -= 1
                if not ok and tries.get(index, 0) < retries and retryable(value):
                    tries[index] = tries.get(index, 0) + 1
                    again.append((index, payload))
                elif ordered:
                    done[index] = (ok, value)
                else:
                    yield settle(index, ok, value)
                fill()
        finally:  # ended, or given up on: its asks still in flight are nobody's now
            self._stream_corrs.difference_update(pending)
            for corr in pending:
                self._stash.pop(corr, None)

    def _stashed(self, pending: dict[int, Any]) -> tuple[int, bool, Any] | None:
        """An answer to one of ``pending`` that another call on this thread read and kept."""
        if self._stash:
            for corr in pending:
                answer = self._stash.pop(corr, None)
                if answer is not None:
                    return answer
        return None

    def receive_tells(self, timeout: float) -> list[Any]:
        """What was told to this client (a subscriber's membership events), waiting up to ``timeout`` s.

        [] when nothing came. Answers to asks are not expected on such a port
        and are dropped; a payload that does not decode is counted.
        """
        ready = zmq_poll(self._poll_items, max(0, int(timeout * 1000)))
        if not ready:
            return []
        if ready[0][0] is not self.sock and self._ended is not None:  # (the socket comes first when both are)
            raise self._ended.error()
        values, bad = parse_tells(recv_frames(self.sock))
        self.malformed += bad
        return values

    def _receive(self, deadline: float, mine: Container[int] = ()) -> tuple[int, bool, Any] | None:
        """Next answer as (corr, ok, value), or None at the deadline.

        An answer to an unfinished stream's ask that is not ``mine`` is kept
        for that stream (see :attr:`_stream_corrs`), not returned.
        """
        while True:
            remaining = deadline - time.monotonic()
            wait_ms = -1 if remaining == _NO_LIMIT else max(1, int(remaining * 1000))  # -1: no limit
            try:
                ready = zmq_poll(self._poll_items, wait_ms) if remaining > 0 else []
            except zmq.ZMQError:  # the socket was closed under us: the system stopped meanwhile
                if self._ended is not None and self._ended.reason is not None:
                    raise self._ended.error() from None
                raise NotRunning("the system was stopped while this call waited") from None
            if not ready:
                return None
            if ready[0][0] is not self.sock and self._ended is not None:
                raise self._ended.error()  # the end notice alone: answers that arrived first were read first
            answers, bad = parse_answers(recv_frames(self.sock))
            self.malformed += bad
            if answers:
                answer = answers[0]  # answers never travel batched
                if answer[0] in self._stream_corrs and answer[0] not in mine:
                    self._stash[answer[0]] = answer
                    continue
                return answer


def _named_item(error: BaseException, index: int, retried: int) -> BaseException:
    """``error`` with a note naming the item of a pool's map (or stream) it failed, and its retries."""
    error.add_note(f"(item {index} of the map, after {retried} retries)" if retried else f"(item {index} of the map)")
    return error


def client_frames(
    node: str, client_id: int, dst_node: str, dst_id: int, kind: int, corr: int, payload: bytes
) -> list[bytes]:
    """A client's multipart: only an ask carries the client's id, for the reply to find it."""
    return message_frames(dst_node, dst_id, kind, node, client_id if kind == ASK else 0, payload, corr)


def parse_answers(frames: list[bytes]) -> tuple[list[tuple[int, bool, Any]], int]:
    """Replies and failures in a multipart as (corr, ok, value), and how many parts were malformed.

    An answer whose payload cannot be decoded fails its ask at once with the
    DecodeError (an UnknownMessageType names the class to import), rather
    than leaving the asker to its timeout.
    """
    try:
        # The common case, one answer, skips the general pairing (same checks: 3 frames pass them).
        pairs = ((frames[1], frames[2]),) if len(frames) == 3 else split_messages(frames)
    except DecodeError:
        return [], 1
    answers: list[tuple[int, bool, Any]] = []
    bad = 0
    for env_frame, payload in pairs:
        try:
            env = unpack_env(env_frame)
        except DecodeError:
            bad += 1
            continue
        if env.kind != REPLY and env.kind != FAIL:
            continue  # a tell to a client has nowhere to go
        try:
            value = codec.decode(payload)
        except DecodeError as exc:
            if not isinstance(exc, UnknownMessageType):
                bad += 1
            answers.append((env.corr, False, exc))
            continue
        if env.kind == REPLY:
            answers.append((env.corr, True, value))
        else:
            answers.append((env.corr, False, error_from_wire(value)))
    return answers, bad


def parse_tells(frames: list[bytes]) -> tuple[list[Any], int]:
    """The told values in a multipart, and how many parts were malformed (anything else is skipped)."""
    try:
        pairs = split_messages(frames)
    except DecodeError:
        return [], 1
    values: list[Any] = []
    bad = 0
    for env_frame, payload in pairs:
        try:
            if unpack_env(env_frame).kind == TELL:
                values.append(codec.decode(payload))
        except DecodeError:
            bad += 1
    return values, bad


class AsyncAsker:
    """Asks from one asyncio event loop, as many at once as the caller awaits.

    Its socket belongs to that loop (ZeroMQ's asyncio integration); a reader
    task hands each answer to the future waiting for it.
    """

    def __init__(self, zctx: zmq.Context[Any], endpoint: str, node_name: str, client_id: int,
                 ended: Any = None, configure: Callable[[zmq.Socket[bytes]], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.node = node_name
        self.id = client_id
        self.malformed = 0
        self._corr = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._actx = zmq.asyncio.Context.shadow(zctx)
        self.sock = self._actx.socket(zmq.DEALER)
        configure_internal(self.sock)
        self.sock.setsockopt(zmq.ROUTING_ID, b"c%d" % client_id)
        if configure is not None:
            configure(cast("zmq.Socket[bytes]", self.sock))  # (the options are the same on an asyncio socket)
        self.sock.connect(endpoint)
        self._send(node_name, CONTROL_ID, TELL, 0, codec.encode(["attach_client", client_id]))
        self._reader = self.loop.create_task(self._read())
        # As ClientPort does: when the local node's loop ends, asks waiting here fail at once.
        self._ended = ended
        self._watching = ended is not None
        self._ended_fd = -1
        if ended is not None:
            self._ended_fd = ended.fileno()  # (kept: the notice may be closed before the loop unwatches it)
            self.loop.add_reader(self._ended_fd, self._node_ended)

    def _node_ended(self) -> None:
        self._unwatch()
        if self._ended is None or self._ended.reason is None:  # (the fd was not the notice's any more)
            return
        self._fail_waiting(self._ended.error())

    def _fail_waiting(self, error: BaseException) -> None:
        for future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(error)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.loop.remove_reader(self._ended_fd)

    def _send(self, dst_node: str, dst_id: int, kind: int, corr: int, payload: bytes) -> None:
        # Queued at once (a future we need not await): internal sockets have no high-water mark.
        self.sock.send_multipart(client_frames(self.node, self.id, dst_node, dst_id, kind, corr, payload))

    async def ask(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        if self._ended is not None and self._ended.reason is not None:
            raise self._ended.error()
        payload = codec.encode(message)
        corr = next(self._corr)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._waiting[corr] = future
        self._send(ref.node, ref.id, ASK, corr, payload)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AskTimeout(f"{ref} did not answer within {timeout:g} s") from None
        finally:
            self._waiting.pop(corr, None)

    async def _read(self) -> None:
        while True:
            answers, bad = parse_answers(await self.sock.recv_multipart())
            self.malformed += bad
            for corr, ok, value in answers:
                future = self._waiting.get(corr)
                if future is None or future.done():
                    continue  # a late answer to an ask that timed out
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    @property
    def usable(self) -> bool:
        return not self.loop.is_closed() and not self._reader.done()

    def close(self, error: BaseException | None = None) -> None:
        """Fail the asks still waiting here (with ``error``, or NotRunning), then close; from any thread."""
        if error is None:
            reason = self._ended.reason if self._ended is not None else None
            error = self._ended.error() if reason is not None else NotRunning(
                "the system was stopped while this ask waited")
        if not self.loop.is_closed() and not self._reader.done():
            try:
                self.loop.call_soon_threadsafe(self._close_on_loop, error)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self.sock.close(linger=0)

    def _close_on_loop(self, error: BaseException) -> None:
        self._unwatch()
        self._fail_waiting(error)
        self._reader.cancel()
        self.sock.close(linger=0)
