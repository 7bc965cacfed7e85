"""Frame layout: what one ZeroMQ multipart message holds.

A sender's multipart is ``[route, env_1, payload_1, env_2, payload_2, ...]``:

- ``route`` is the only frame the router reads: ``[dst_node, dst_id, flags,
  src_id, corr]``. ``flags`` marks an ask or a reply so the router can fail
  asks whose worker dies; ``src_id``/``corr`` identify that ask.
- each ``env`` is ``[kind, src_node, src_id, corr]`` for one message;
- each ``payload`` is the codec's bytes, forwarded untouched.

Several tells to one actor travel as one multipart (a batch), which is what
lets a hop carry more messages per second than one frame per message. Asks
and replies always travel alone, so the route header describes them exactly.
A ``BATCH`` is one ask that carries a list of items (a pool's chunk): its
actor receives each in turn, and one reply carries their answers.
A ROUTER prepends the peer identity; a DEALER sees none.
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

from gorilix.transport.errors import DecodeError

#: Address of a node itself (its control endpoint), or of a worker's control
#: endpoint when the node sends to a worker identity.
CONTROL_ID = 0

# Route flags.
FLAG_ASK = 1
FLAG_REPLY = 2

# Message kinds (env[0]).
TELL = 0
ASK = 1
REPLY = 2
FAIL = 3  # an error reply: payload is transport.errors.error_to_wire(...)
STOP = 4  # ask an actor to stop after the messages before it
#: An ask whose payload is a list of items, received one by one; the reply is
#: ``[answers, failure]``: the answers of the first items, in order, then the
#: error record of the item after them, or None (see gorilix.workers.batch).
BATCH = 5
#: Answers of a batch's first items, sent to its asker before the batch ends
#: (not a reply: the ask stays open), so a death loses little of a long batch.
PART = 6

#: A tell whose sender waits to hear that it was taken: the actor receives it as a tell, and
#: once ``receive`` has returned (or raised) its worker answers None (``ref.tell(m, ack=True)``).
TELL_ACK = 7

KINDS = frozenset({TELL, ASK, REPLY, FAIL, STOP, BATCH, PART, TELL_ACK})
#: The kinds a sender waits an answer to.
ASKS = frozenset({ASK, BATCH, TELL_ACK})

#: Upper bound on frames in one multipart; more is a malformed message.
MAX_FRAMES = 4097

#: Limits of the fields that address an actor (``ActorRef`` checks them): an
#: id is a msgpack uint64, and a node name is as long as gossip allows.
ID_MAX = 2**64 - 1
NODE_NAME_MAX = 255


class Route(NamedTuple):
    dst_node: str
    dst_id: int
    flags: int
    src_id: int
    corr: int


class Envelope(NamedTuple):
    kind: int
    src_node: str
    src_id: int
    corr: int



def pack_route(dst_node: str, dst_id: int, flags: int = 0, src_id: int = 0, corr: int = 0) -> bytes:
    return msgpack.packb((dst_node, dst_id, flags, src_id, corr), use_bin_type=True)


# Per-message hot path. msgpack has no unsigned-only int, so the sign is one
# comparison per field; an int above ID_MAX cannot come out of msgpack at all.
# The tuple msgpack builds (use_list=False) becomes the NamedTuple as is.
_unpackb = msgpack.unpackb
_as_tuple = tuple.__new__


def unpack_route(frame: bytes) -> Route:
    """The route header of a multipart; DecodeError unless every field is in range."""
    try:
        dst_node, dst_id, flags, src_id, corr = fields = _unpackb(frame, raw=False, use_list=False)
    except Exception as exc:
        raise DecodeError(f"malformed route frame ({len(frame)} bytes)") from exc
    if (
        type(dst_node) is str and type(dst_id) is int and type(flags) is int
        and type(src_id) is int and type(corr) is int
        and dst_id >= 0 and flags >= 0 and src_id >= 0 and corr >= 0
        and len(dst_node) <= NODE_NAME_MAX
    ):
        return _as_tuple(Route, fields)  # type: ignore[no-any-return]
    raise DecodeError(f"malformed route frame: {_problem(Route._fields, fields)}")


def pack_env(kind: int, src_node: str, src_id: int, corr: int = 0) -> bytes:
    return msgpack.packb((kind, src_node, src_id, corr), use_bin_type=True)


def unpack_env(frame: bytes) -> Envelope:
    """One message's envelope; DecodeError unless every field is in range and the kind is known."""
    try:
        kind, src_node, src_id, corr = fields = _unpackb(frame, raw=False, use_list=False)
    except Exception as exc:
        raise DecodeError(f"malformed envelope frame ({len(frame)} bytes)") from exc
    if (
        type(kind) is int and kind in KINDS and type(src_node) is str
        and type(src_id) is int and type(corr) is int
        and src_id >= 0 and corr >= 0
        and len(src_node) <= NODE_NAME_MAX
    ):
        return _as_tuple(Envelope, fields)  # type: ignore[no-any-return]
    if type(kind) is int and kind not in KINDS:
        raise DecodeError(f"malformed envelope frame: unknown kind {kind}")
    raise DecodeError(f"malformed envelope frame: {_problem(Envelope._fields, fields)}")


def _problem(names: tuple[str, ...], fields: tuple[object, ...]) -> str:
    """What is wrong with a header that failed the checks (off the hot path)."""
    types = [str if name.endswith("_node") else int for name in names]
    if any(type(value) is not kind for value, kind in zip(fields, types, strict=True)):
        return "wrong field types"
    for name, value in zip(names, fields, strict=True):
        if type(value) is str and len(value) > NODE_NAME_MAX:
            return f"{name} of {len(value)} characters is longer than {NODE_NAME_MAX}"
        if type(value) is int and value < 0:
            return f"{name}={value} is out of range 0..2**64-1"
    return "bad field values"


def message_frames(dst_node: str, dst_id: int, kind: int, src_node: str, src_id: int, payload: bytes,
                   corr: int = 0) -> list[bytes]:
    """One message as its sender's multipart, ``[route, env, payload]`` (no identity slot).

    The route's flags follow from the kind: an ask is marked so that the
    router can fail it if its receiver dies, a reply or a failure so that the
    router can cross it off; ``src_id``/``corr`` name the ask either way.
    """
    flags = FLAG_ASK if kind in ASKS else FLAG_REPLY if kind in (REPLY, FAIL) else 0
    return [pack_route(dst_node, dst_id, flags, src_id, corr), pack_env(kind, src_node, src_id, corr), payload]


def split_messages(frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Pair up ``env, payload`` frames after the route frame."""
    body = frames[1:]
    if not body or len(body) % 2 or len(frames) > MAX_FRAMES:
        raise DecodeError(f"malformed multipart: {len(frames)} frames")
    return list(zip(body[0::2], body[1::2], strict=True))
