"""Fanout: asking many items of a group of actors (a pool's map), as a state machine with no I/O.

It makes every decision of a pool's map and streams, and its drivers (a
thread's :class:`~gorilix.workers.client.ClientPort`, an event loop's
``AsyncAsker``) only move bytes: they send what :meth:`Fanout.take` hands
out and give each answer back to :meth:`Fanout.settle`.

- **Pulled work.** Each actor has at most ``window`` asks in flight and
  gets more when it answers, so a slow actor (or node) gets fewer items.
- **Chunks.** Items travel ``chunksize`` at a time, as one ``BATCH`` ask
  (gorilix.workers.batch); a chunk of one is a plain ask.
- **Deaths.** A chunk whose ask fails with an error ``retryable`` accepts
  (its worker or node died) is asked again, first in line. An actor takes
  its asks in order, so of the chunks in flight to it at a death only the
  oldest was running: those queued behind it go again free. The parts a
  running chunk sends (gorilix.workers.batch) move its first item on, so a
  death costs only what ran since the last part. A running chunk of several
  items goes again as two halves, free, so that an item that kills its
  worker each time ends up alone; one item may be caught in ``retries``
  deaths. The actors of a pool come back, so the map finishes, and such a
  poison item still ends it, with its death as the failure of that item.
- **Failures.** Any other failure is its item's, with a note naming its
  index. Unless ``return_exceptions``, no item is read after one, and the
  iteration ends at the first failing item in the order it hands answers
  out: item order when ``ordered``, else as they come.
- **Bounded.** Items are read from their iterator only as needed, and at
  most ``bound`` are read but not yet handed out, however long it is.
- **Members come and go.** ``refs`` may grow while the fan-out runs (a
  cluster pool's new members: the list is the pool's own, appended to), and
  the actors that are gone (in ``gone``, or on a node that answered
  NodeDown) get nothing more; what they had goes to the others, free.

Answers come out as runs, ``(start, answers, failure)``: the answers of
items ``start``, ``start + 1``, ..., then the failure of the item after
them, or None.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

from gorilix.transport import codec
from gorilix.transport.errors import DecodeError, NodeDown, WorkerDied
from gorilix.transport.frames import ASK, BATCH
from gorilix.workers.batch import decode_answer, decode_part, encode_request
from gorilix.workers.ref import ActorRef

#: (start, answers, failure of the item after them or None)
Run = tuple[int, list[Any], BaseException | None]


class Chunk:
    """Items ``start, start + 1, ...`` as one ask to one actor, and how often it was asked again."""

    __slots__ = ("start", "items", "kind", "payload", "tries", "actor", "progressed", "queued", "lost")

    def __init__(self, start: int, items: list[Any], tries: int) -> None:
        self.start = start
        self.items = items
        self.kind = ASK if len(items) == 1 else BATCH
        self.payload = _encode(start, items)
        self.tries = tries  # failures its first item was caught in
        self.actor = -1
        self.progressed = False  # a part came: the items and payload are out of step, the first item is new
        self.queued = False  # behind the running chunk of its actor when that one was caught in a death
        self.lost = False  # a part could not be read: which items its answers are of is not known

    def __repr__(self) -> str:
        return f"<Chunk {self.start}..{self.start + len(self.items) - 1} to actor {self.actor}, {self.tries} retries>"


def _encode(start: int, items: list[Any]) -> bytes:
    """One item as itself, several as a batch; SerializationError naming the first item that cannot travel."""
    try:
        return codec.encode(items[0]) if len(items) == 1 else encode_request(items)
    except Exception as exc:  # SerializationError, or a registered type's to_plain that broke
        bad = next((i for i, item in enumerate(items) if not _travels(item)), 0)
        exc.add_note(f"(item {start + bad} of the map)")
        raise


def _travels(item: Any) -> bool:
    try:
        codec.encode(item)
    except Exception:
        return False
    return True


def named(error: BaseException, index: int, retried: int, label: str = "map") -> BaseException:
    """``error`` with a note naming the item it failed, and its retries."""
    error.add_note(f"(item {index} of the {label}, after {retried} retries)" if retried
                   else f"(item {index} of the {label})")
    return error


def default_chunksize(items: int, actors: int) -> int:
    """What ``multiprocessing.Pool.map`` would pick: about four chunks per actor."""
    size, extra = divmod(items, actors * 4)
    return max(1, size + (1 if extra else 0))


class Fanout:
    """One map or stream over ``refs``; see the module's docstring."""

    def __init__(
        self, refs: Sequence[ActorRef], items: Iterator[Any], *, chunksize: int = 1, window: int = 2,
        retries: int = 0, retryable: Callable[[BaseException], bool] = lambda error: False,
        return_exceptions: bool = False, ordered: bool = True, bound: int | None = None, label: str | None = "map",
        gone: Container[ActorRef] = frozenset(),
    ) -> None:
        """``label`` names what the items are of in a failure's note ("item 3 of the map"); None: no note.

        A list ``refs`` is read as it is, not copied: actors appended to it
        join the fan-out. ``gone`` holds the actors on nodes that are gone
        (read as it is too: a cluster pool adds to it).
        """
        self.refs = refs if type(refs) is list else list(refs)
        self._gone = gone
        self._retired: set[int] = set()  # actors on a node that answered NodeDown
        self._label = label
        self._items = items
        self._chunksize = chunksize
        self._window = window
        self._retries = retries
        self._retryable = retryable
        self._return_exceptions = return_exceptions
        self._ordered = ordered
        self._bound = bound
        self._flying: list[collections.deque[Chunk]] = [collections.deque() for _ in self.refs]  # in sent order
        self._again: collections.deque[Chunk] = collections.deque()  # asked again before any new item
        self._read = 0  # items read from ``items``
        self._exhausted = False
        self._outstanding = 0  # read, not yet handed out
        self._held: dict[int, Run] = {}  # ordered: runs waiting for their turn, by start
        self._turn = 0  # ordered: the index of the next item to hand out
        self._out: list[Run] = []
        self._failed_at: int | None = None  # the first failing item known (unless return_exceptions)
        self.ended = False  # a failure was handed out: nothing more is asked or handed out
        self.in_flight = 0

    @property
    def exhausted(self) -> bool:
        """Whether every item was read (a growing stream is then given :meth:`more`)."""
        return self._exhausted

    def more(self, items: Iterator[Any]) -> None:
        """Items to read once the current ones are read (a stream that grows: a pool's submissions)."""
        self._items = itertools.chain(self._items, items) if not self._exhausted else items
        self._exhausted = False

    # -- what to send ---------------------------------------------------------------

    def take(self) -> list[Chunk]:
        """Chunks to send now, each with its ``actor`` (an index into ``refs``) set."""
        sends: list[Chunk] = []
        window, refs = self._window, self.refs
        if len(refs) > len(self._flying):  # (members joined)
            self._flying.extend(collections.deque() for _ in range(len(refs) - len(self._flying)))
        usable = 0
        for actor, flying in enumerate(self._flying):
            if actor in self._retired or refs[actor] in self._gone:
                continue
            usable += 1
            while len(flying) < window:
                chunk = self._next_chunk()
                if chunk is None:
                    return sends
                chunk.actor, chunk.queued = actor, False
                flying.append(chunk)
                self.in_flight += 1
                sends.append(chunk)
        if not usable and not self.in_flight and (self._again or not self._exhausted) and not self.ended:
            nodes = sorted({ref.node for ref in refs})
            raise NodeDown(f"every actor of the pool is on a node that is gone ({', '.join(nodes)}); "
                           "spawn a pool on the members that are alive")
        return sends

    def _next_chunk(self) -> Chunk | None:
        if self.ended:
            return None
        while self._again:
            chunk = self._again.popleft()
            if self._failed_at is None or chunk.start < self._failed_at:
                return chunk
            self._outstanding -= len(chunk.items)  # after the failure: never handed out
        if self._exhausted or self._failed_at is not None:
            return None
        if self._bound is not None and self._outstanding >= self._bound:
            return None
        items = list(itertools.islice(self._items, self._chunksize))
        if len(items) < self._chunksize:
            self._exhausted = True
            if not items:
                return None
        chunk = Chunk(self._read, items, 0)
        self._read += len(items)
        self._outstanding += len(items)
        return chunk

    # -- what came back ---------------------------------------------------------------

    def settle(self, chunk: Chunk, ok: bool, value: Any) -> None:
        """The answer to ``chunk``'s ask: ``ok`` and the reply, or False and the error."""
        flying = self._flying[chunk.actor]
        running = (flying[0] is chunk and not chunk.queued) or chunk.progressed  # (a part came: it ran)
        flying.remove(chunk)
        self.in_flight -= 1
        if self.ended:
            return
        if chunk.lost:  # its answers after a part that could not be read cannot be placed
            if not ok and isinstance(value, NodeDown):
                self._retire(self.refs[chunk.actor].node)
            elif running and not ok and isinstance(value, WorkerDied):
                for other in flying:  # (queued behind it at the same death, as below)
                    other.queued = True
            self._halves(chunk.start, chunk.items)
            return
        failure: BaseException | None
        if not ok:  # the whole chunk's ask failed (its worker died, say)
            answers, failure = [], value
        elif chunk.kind == ASK:
            answers, failure = [value], None
        else:
            try:
                answers, failure = decode_answer(value, len(chunk.items))
            except DecodeError as exc:
                answers, failure = [], exc
        start, done, rest = chunk.start, len(answers), chunk.items[len(answers):]
        tries = chunk.tries if done == 0 and not chunk.progressed else 0  # (of the item that failed)
        death = not ok and isinstance(failure, (WorkerDied, NodeDown))
        if death and failure is not None and self._retries and self._retryable(failure):
            if isinstance(failure, NodeDown):  # its node is gone: its actors get nothing more, others take it, free
                self._retire(self.refs[chunk.actor].node)
                self._again.append(self._whole(chunk))
                return
            if not running:  # queued behind the chunk that ran: free
                self._again.append(self._whole(chunk))
                return
            for other in flying:  # the chunks in flight behind it were queued, at the same death
                other.queued = True
            if len(rest) > 1:  # which item died? Halves, free, until it is one item alone
                self._halves(start, rest)
                return
        if isinstance(failure, DecodeError) and rest and chunk.kind == BATCH:
            self._emit(start, answers, None)  # an answer it cannot read: whose? Halves, until one item's
            self._halves(start + done, rest)
            return
        if failure is not None and tries < self._retries and self._retryable(failure):
            self._emit(start, answers, None)
            again = chunk if not done and not chunk.progressed else Chunk(start + done, rest, 0)
            again.tries = tries + 1
            self._again.append(again)
            return
        if failure is not None:
            if self._label is not None:
                failure = named(failure, start + done, tries, self._label)
            rest = rest[1:]
        self._emit(start, answers, failure)
        if rest:  # not run: the actor stopped partway (or crashed), so they are asked again
            self._again.append(Chunk(start + len(chunk.items) - len(rest), rest, 0))

    @staticmethod
    def _whole(chunk: Chunk) -> Chunk:
        """``chunk`` to ask again as it stands: rebuilt if parts moved its start on (its payload is of before)."""
        if chunk.progressed:
            return Chunk(chunk.start, chunk.items, chunk.tries)
        chunk.queued = False
        return chunk

    def _retire(self, node: str) -> None:
        """``node`` is gone: its actors (those in the pool now; a member that comes back gets new ones) get nothing more."""
        self._retired.update(i for i, ref in enumerate(self.refs) if ref.node == node)

    def _halves(self, start: int, items: list[Any]) -> None:
        """Ask ``items`` again in two chunks, free: a failure none of them can be blamed for narrows down."""
        if len(items) == 1:
            self._again.append(Chunk(start, items, 0))
            return
        half = len(items) // 2
        self._again.append(Chunk(start, items[:half], 0))
        self._again.append(Chunk(start + half, items[half:], 0))

    def settle_part(self, chunk: Chunk, value: Any, error: BaseException | None = None) -> None:
        """Answers of ``chunk``'s next items, while it runs on: its ask stays open.

        A part that cannot be read (``error``, or a malformed ``value``) covers
        items no one knows: the chunk's answers are not counted from there on,
        and when it ends its items from there go again, in halves.
        """
        if self.ended or chunk.lost:
            return
        if error is None:
            try:
                answers = decode_part(value, len(chunk.items))
            except DecodeError as exc:
                error = exc
        if error is not None:
            chunk.lost = True
            return
        self._emit(chunk.start, answers, None)
        chunk.start += len(answers)
        chunk.items = chunk.items[len(answers):]
        chunk.progressed = True
        chunk.queued = False  # (it runs)

    def _emit(self, start: int, answers: list[Any], failure: BaseException | None) -> None:
        if not answers and failure is None:
            return
        if failure is not None and not self._return_exceptions:
            at = start + len(answers)
            if self._failed_at is None or at < self._failed_at:
                self._failed_at = at
        run = (start, answers, failure)
        if not self._ordered:
            self._out.append(run)
            return
        held = self._held
        held[start] = run
        while self._turn in held:
            run = held.pop(self._turn)
            self._out.append(run)
            self._turn += len(run[1]) + (run[2] is not None)

    def runs(self) -> list[Run]:
        """The runs ready to hand out, in order; empty once a failure has been handed out."""
        out = self._out
        if not out or self.ended:
            return []
        self._out = []
        for index, run in enumerate(out):
            self._outstanding -= len(run[1]) + (run[2] is not None)
            if run[2] is not None and not self._return_exceptions:
                self.ended = True
                return out[:index + 1]
        return out

    @property
    def finished(self) -> bool:
        """Nothing in flight, nothing to hand out, nothing left to ask (``take`` was given its turn)."""
        return self.in_flight == 0 and not self._out
