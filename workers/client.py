"""A thread's connection to its node: the port refs use outside any worker.

A ZeroMQ socket must never be shared between threads, so each thread that
touches the system gets its own ``ClientPort`` (the node process keeps one per
thread). Asks block on this socket alone, so threads never wait on each other.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Container, Iterator
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
    ASKS,
    CONTROL_ID,
    FAIL,
    PART,
    REPLY,
    STOP,
    TELL,
    message_frames,
    split_messages,
    unpack_env,
)
from gorilix.transport.sockets import configure_internal, recv_frames, send_frames
from gorilix.workers.batch import ANSWER_LEVELS, Part
from gorilix.workers.fanout import Chunk, Fanout, Run
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
        self._stash: dict[int, list[tuple[int, bool, Any]]] = {}
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

    def ask(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Any:
        """``kind``: ASK, or TELL_ACK for a tell that is answered once taken (``ref.tell(m, ack=True)``)."""
        payload = codec.encode(message)
        corr = next(self._corr)
        self._send(ref.node, ref.id, kind, corr, payload)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline, (corr,))
            if answer is None:
                raise AskTimeout(f"{ref} did not answer within {timeout:g} s")
            got_corr, ok, value = answer
            if got_corr == corr and type(value) is not Part:  # (a part answers a batch, never an ask)
                if ok:
                    return value
                raise value

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def ask_async(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Any:
        loop = asyncio.get_running_loop()
        if self._new_id is None:  # no ids to hand out: a blocking ask on an executor thread
            return await loop.run_in_executor(None, self.ask, ref, message, timeout, kind)
        return await self.asker(loop).ask(ref, message, timeout, kind)

    def asker(self, loop: asyncio.AbstractEventLoop) -> AsyncAsker:
        """This port's asker for ``loop`` (made on first use, from that loop's thread)."""
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

    def fan_out(self, fanout: Fanout, timeout: float, *, each: bool) -> Iterator[Run]:
        """Drive ``fanout`` (a pool's map or stream) on this thread's socket; yield its runs as they come out.

        ``timeout`` bounds the wait for each next answer when ``each``, else the
        whole call. The asks of a fan-out that is given up on (not iterated to
        its end) are nobody's: their answers are dropped when they come.
        """
        pending: dict[int, Chunk] = {}
        streams = self._stream_corrs
        deadline = time.monotonic() + timeout
        try:
            while True:
                for chunk in fanout.take():
                    corr = next(self._corr)
                    ref = fanout.refs[chunk.actor]
                    self._send(ref.node, ref.id, chunk.kind, corr, chunk.payload)
                    pending[corr] = chunk
                    streams.add(corr)
                runs = fanout.runs()
                if runs:
                    yield from runs
                    continue
                if not pending:
                    return
                if each:
                    deadline = time.monotonic() + timeout
                answer = self._stashed(pending) or self._receive(deadline, pending)
                if answer is None:
                    raise _fan_out_timeout(timeout, len(pending), each)
                corr, ok, value = answer
                if _hand_over(fanout, pending, corr, ok, value):
                    streams.discard(corr)
        finally:
            streams.difference_update(pending)
            for corr in pending:
                self._stash.pop(corr, None)

    def _stashed(self, pending: dict[int, Any]) -> tuple[int, bool, Any] | None:
        """An answer to one of ``pending`` that another call on this thread read and kept."""
        if self._stash:
            for corr in pending:
                kept = self._stash.get(corr)
                if kept:
                    answer = kept.pop(0)
                    if not kept:
                        del self._stash[corr]
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
                    self._stash.setdefault(answer[0], []).append(answer)
                    continue
                return answer


def _hand_over(fanout: Fanout, pending: dict[int, Chunk], corr: int, ok: bool, value: Any) -> bool:
    """Give ``fanout`` an answer, or a part, to one of its ``pending`` asks; True once that ask is done."""
    if type(value) is Part:  # the ask stays open
        running = pending.get(corr)
        if running is not None:
            fanout.settle_part(running, value.answers, value.error)
        return False
    asked = pending.pop(corr, None)
    if asked is None:
        return False  # (an answer to an ask of an earlier fan-out this port gave up on)
    fanout.settle(asked, ok, value)
    return True


def _fan_out_timeout(timeout: float, asks: int, each: bool) -> AskTimeout:
    if each:
        return AskTimeout(f"no answer within {timeout:g} s ({asks} asks of the map in flight)")
    return AskTimeout(f"the map did not finish within {timeout:g} s ({asks} asks in flight)")


def client_frames(
    node: str, client_id: int, dst_node: str, dst_id: int, kind: int, corr: int, payload: bytes
) -> list[bytes]:
    """A client's multipart: only an ask carries the client's id, for the reply to find it."""
    return message_frames(dst_node, dst_id, kind, node, client_id if kind in ASKS else 0, payload, corr)


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
        kind = env.kind
        if kind != REPLY and kind != FAIL and kind != PART:
            continue  # a tell to a client has nowhere to go
        try:
            value = codec.decode(payload, ANSWER_LEVELS)  # (a batch's answers come wrapped)
        except DecodeError as exc:
            if not isinstance(exc, UnknownMessageType):
                bad += 1
            answers.append((env.corr, True, Part(None, exc)) if kind == PART else (env.corr, False, exc))
            continue
        if kind == REPLY:
            answers.append((env.corr, True, value))
        elif kind == PART:
            answers.append((env.corr, True, Part(value)))
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
        #: The asks of fan-outs (a pool's map) in flight: their answers and parts go to their fan-out's queue.
        self._streams: dict[int, asyncio.Queue[tuple[int, bool, Any]]] = {}
        self._idle: set[asyncio.Event] = set()  # the ``more`` events of fan-outs that wait for items
        self._closed_by: BaseException | None = None
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
        for corr, queue in list(self._streams.items()):
            queue.put_nowait((corr, False, error))

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.loop.remove_reader(self._ended_fd)

    def _send(self, dst_node: str, dst_id: int, kind: int, corr: int, payload: bytes) -> None:
        # Queued at once (a future we need not await): internal sockets have no high-water mark.
        self.sock.send_multipart(client_frames(self.node, self.id, dst_node, dst_id, kind, corr, payload))

    async def ask(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Any:
        if self._ended is not None and self._ended.reason is not None:
            raise self._ended.error()
        payload = codec.encode(message)
        corr = next(self._corr)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._waiting[corr] = future
        self._send(ref.node, ref.id, kind, corr, payload)
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
                stream = self._streams.get(corr)
                if stream is not None:
                    stream.put_nowait((corr, ok, value))
                    continue
                future = self._waiting.get(corr)
                if future is None or future.done():
                    continue  # a late answer to an ask that timed out
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def fan_out(self, fanout: Fanout, timeout: float, *, each: bool,
                      more: asyncio.Event | None = None) -> AsyncIterator[Run]:
        """:meth:`ClientPort.fan_out` for this event loop: yield ``fanout``'s runs as they come out.

        With ``more`` (set when ``fanout`` was given more items), it waits for
        items too, and ends only when cancelled.
        """
        if self._ended is not None and self._ended.reason is not None:
            raise self._ended.error()
        answers: asyncio.Queue[tuple[int, bool, Any]] = asyncio.Queue()
        pending: dict[int, Chunk] = {}
        deadline = self.loop.time() + timeout
        if more is not None:
            self._idle.add(more)
        try:
            while True:
                if self._closed_by is not None:
                    raise self._closed_by
                if more is not None:
                    more.clear()
                for chunk in fanout.take():
                    corr = next(self._corr)
                    ref = fanout.refs[chunk.actor]
                    self._send(ref.node, ref.id, chunk.kind, corr, chunk.payload)
                    pending[corr] = chunk
                    self._streams[corr] = answers
                runs = fanout.runs()
                if runs:
                    for run in runs:
                        yield run
                    continue
                if not pending:
                    if more is None:
                        return
                    await more.wait()
                    continue
                if each:
                    deadline = self.loop.time() + timeout
                corr, ok, value = await self._next_answer(answers, deadline, timeout, len(pending), each, more)
                if corr == 0:
                    continue  # (more items came)
                if _hand_over(fanout, pending, corr, ok, value):
                    self._streams.pop(corr, None)
        finally:
            self._idle.discard(more)  # type: ignore[arg-type]
            for corr in pending:
                self._streams.pop(corr, None)

    async def _next_answer(self, answers: asyncio.Queue[tuple[int, bool, Any]], deadline: float, timeout: float,
                           asks: int, each: bool, more: asyncio.Event | None) -> tuple[int, bool, Any]:
        """The next answer of a fan-out, or (0, True, None) when ``more`` is set first; AskTimeout at the deadline."""
        remaining = deadline - self.loop.time()
        if more is None:
            try:
                return await asyncio.wait_for(answers.get(), None if remaining == _NO_LIMIT else max(0.0, remaining))
            except TimeoutError:
                raise _fan_out_timeout(timeout, asks, each) from None
        getting = asyncio.ensure_future(answers.get())
        waits: set[asyncio.Future[Any]] = {getting}
        if more is not None:
            waits.add(asyncio.ensure_future(more.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=None if remaining == _NO_LIMIT else max(0.0, remaining),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                if not waiting.done():
                    waiting.cancel()
        if getting in done:
            return getting.result()
        if getting.done() and not getting.cancelled():  # (both came at once: keep the answer)
            return getting.result()
        if done:
            return 0, True, None
        raise _fan_out_timeout(timeout, asks, each)

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
        self._closed_by = error
        for more in self._idle:  # fan-outs waiting for items: they end now, with ``error``
            more.set()
        self._fail_waiting(error)
        self._reader.cancel()
        self.sock.close(linger=0)
