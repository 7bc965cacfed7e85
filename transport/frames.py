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

KINDS = frozenset({TELL, ASK, REPLY, FAIL, STOP})

#: Upper bound on frames in one multipart; more is a malformed message.
MAX_FRAMES = 4097


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


def unpack_route(frame: bytes) -> Route:
    try:
        dst_node, dst_id, flags, src_id, corr = msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise DecodeError(f"malformed route frame ({len(frame)} bytes)") from exc
    if not (
        type(dst_node) is str and type(dst_id) is int and type(flags) is int
        and type(src_id) is int and type(corr) is int
    ):
        raise DecodeError("malformed route frame: wrong field types")
    return Route(dst_node, dst_id, flags, src_id, corr)


def pack_env(kind: int, src_node: str, src_id: int, corr: int = 0) -> bytes:
    return msgpack.packb((kind, src_node, src_id, corr), use_bin_type=True)


def unpack_env(frame: bytes) -> Envelope:
    try:
        kind, src_node, src_id, corr = msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise DecodeError(f"malformed envelope frame ({len(frame)} bytes)") from exc
    if type(kind) is not int or kind not in KINDS or type(src_node) is not str or type(src_id) is not int or type(corr) is not int:
        raise DecodeError("malformed envelope frame: wrong field types")
    return Envelope(kind, src_node, src_id, corr)


def split_messages(frames: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Pair up ``env, payload`` frames after the route frame."""
    body = frames[1:]
    if not body or len(body) % 2 or len(frames) > MAX_FRAMES:
        raise DecodeError(f"malformed multipart: {len(frames)} frames")
    return list(zip(body[0::2], body[1::2], strict=True))
