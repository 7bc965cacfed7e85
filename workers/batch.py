"""A batch: one ask that carries a chunk of a pool's items, and its one answer.

A pool's map sends its items in chunks (as ``multiprocessing.Pool`` does),
so that a tiny item costs a slice of a message, not a whole round trip. The
actor still receives one item per ``receive``: the worker runs the chunk's
items in turn, a slice at a time (other actors of the worker run between
slices), and answers once for all of them.

While a chunk runs, every :data:`PART_EVERY` seconds the answers so far go
to the sender as a ``PART`` (a list of answers, the ask stays open), so a
worker's death costs the sender that much work at most, whatever the size
of the chunk. The answer (``REPLY``) is ``[answers, failure]``: the answers
of the items after the parts, in order, then the error record
(``error_to_wire``) of the item after them, or None. A chunk stops early
when an item crashes its actor (``failure`` says why) or the actor stops
itself (no failure); the sender asks the items not run again.

Both wrappings add levels to the items' own (``codec.MAX_DEPTH``), and are
allowed them: an item that may travel alone may travel in a chunk.
"""

from __future__ import annotations

from typing import Any

from gorilix.transport import codec
from gorilix.transport.errors import (
    DecodeError,
    GorilixError,
    SerializationError,
    error_from_wire,
    error_to_wire,
)

#: Levels the chunk's list adds to its items'.
REQUEST_LEVELS = codec.MAX_DEPTH + 1
#: Levels ``[answers, failure]`` adds to the answers' (a client decodes every answer with this allowance).
ANSWER_LEVELS = codec.MAX_DEPTH + 2
#: Levels a part's list adds to the answers'.
PART_LEVELS = codec.MAX_DEPTH + 1
#: Seconds between a running chunk's parts.
PART_EVERY = 0.05


class Batch:
    """A chunk being run in a worker: its items, the answers of those run so far, and how many were sent."""

    __slots__ = ("items", "answers", "sent", "sent_at", "stride")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.answers: list[Any] = []
        self.stride = 1  # items run between two readings of the clock (the scheduler adapts it)
        self.sent = 0  # answers already sent in parts
        self.sent_at = 0.0  # when the last part went (perf_counter; 0: when the first slice began)

    def __repr__(self) -> str:
        return f"<Batch {len(self.answers)} of {len(self.items)} run, {self.sent} sent>"

    def take_part(self) -> list[Any]:
        """The answers not sent yet, marked sent."""
        part = self.answers[self.sent:]
        self.sent = len(self.answers)
        return part


class Part:
    """A part as the sender reads it: answers of a chunk's next items (its ask stays open), or why it cannot be read."""

    __slots__ = ("answers", "error")

    def __init__(self, answers: Any, error: BaseException | None = None) -> None:
        self.answers = answers
        self.error = error


def encode_part(answers: list[Any]) -> bytes:
    """A part's payload (parts are sent only when their answers can travel: see :func:`encode_answer`)."""
    return codec.encode(answers, PART_LEVELS)


def encode_request(items: list[Any]) -> bytes:
    """A chunk's payload; SerializationError if an item cannot travel."""
    return codec.encode(items, REQUEST_LEVELS)


def decode_request(payload: bytes) -> Batch:
    """A chunk from the wire: a non-empty list, or DecodeError."""
    items = codec.decode(payload, REQUEST_LEVELS)
    if type(items) is not list or not items:
        raise DecodeError(f"a batch must be a non-empty list of items, got {type(items).__name__}")
    return Batch(items)


def encode_answer(answers: list[Any], failure: BaseException | None) -> bytes:
    """The answer to a chunk; an answer that cannot travel becomes the failure of its item.

    The answers before it still go back, and those after it are not (the
    sender asks them again), so one bad answer costs no other item its own.
    """
    record = None if failure is None else error_to_wire(failure)
    try:
        return codec.encode([answers, record], ANSWER_LEVELS)
    except Exception:  # SerializationError, or a registered type's to_plain that broke
        pass
    for index, answer in enumerate(answers):
        try:
            codec.encode(answer)
        except Exception as exc:
            error = SerializationError(f"the answer cannot be sent: {exc}")
            return codec.encode([answers[:index], error_to_wire(error)], ANSWER_LEVELS)
    error = SerializationError("the answers cannot be sent together")  # (each can alone: they nest too deep)
    return codec.encode([[], error_to_wire(error)], ANSWER_LEVELS)


def decode_part(value: Any, size: int) -> list[Any]:
    """The answers of a part of a chunk with ``size`` items unanswered; DecodeError if malformed."""
    if type(value) is not list or not 0 < len(value) < size:
        raise DecodeError(f"malformed part of the answer to a batch with {size} items unanswered")
    return value


def decode_answer(value: Any, size: int) -> tuple[list[Any], GorilixError | None]:
    """The answers and the failure of a chunk with ``size`` items unanswered (``value`` as decoded); DecodeError if malformed."""
    if type(value) is not list or len(value) != 2 or type(value[0]) is not list or len(value[0]) > size:
        raise DecodeError(f"malformed answer to a batch of {size} items")
    answers, record = value
    if record is None:
        if not answers:
            raise DecodeError(f"malformed answer to a batch of {size} items: neither answers nor a failure")
        return answers, None
    if len(answers) == size:
        raise DecodeError(f"malformed answer to a batch of {size} items: a failure after the last one")
    return answers, error_from_wire(record)
