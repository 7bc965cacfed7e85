"""The one msgpack codec, with fixed options, used for every byte on the wire.

Supported values: None, bool, int (64-bit), float, str, bytes, list, tuple
(kept as a tuple), dict, dataclasses registered with :func:`message`, and any
type an upper layer registers with :func:`register_extension` (``ActorRef``).
Anything else raises :class:`SerializationError` naming the type, before a
byte is sent. Nothing is ever unpickled.

**One pass, no nesting.** A tuple travels as an array whose first item is a
one-byte marker extension, ``[TUPLE, *items]``, and a ``@message`` object as
``[MESSAGE, name, [fields]]``: msgpack packs and unpacks the whole frame in
one call, and a ``list_hook`` turns marked arrays back into tuples and
messages, innermost first. (Packing each tuple as an extension whose payload
is packed again cost one nested msgpack call per level, each with about
44 KB of parse stack on the C stack: 200 nested tuples, 4 KB on the wire,
overflowed it and killed whoever decoded them.) A type registered by an
upper layer (``ActorRef``) travels as an extension whose payload is a plain
value (no extension inside), so reading it is one flat call too.

**Depth.** A value nests at most :data:`MAX_DEPTH` levels: each list, tuple,
dict, message and registered-type value is one (``[[1]]`` is two; a chain
of ``(value, next)`` tuples is one per link). The encoder refuses a deeper
value with SerializationError before a byte is sent; the decoder refuses a
deeper frame with DecodeError, which its receiver drops and counts. The
check is free for almost every frame: a value cannot have more levels than
its encoding has bytes that open one, and those are counted at C speed; only
a frame with more than MAX_DEPTH of them is measured, by a walk that never
recurses. msgpack's own bounds stand behind ours (511 levels when packing,
1,024 when unpacking), far inside the C stack of any thread. A frame that
wraps values of the full depth (a pool's batch of items, and its answers)
is allowed the few levels of its wrapping with ``levels=``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from itertools import chain
from typing import Any, TypeVar

import msgpack

from gorilix.transport.errors import DecodeError, SerializationError, UnknownMessageType

#: Extension codes: the markers of marked arrays, then the layers above's types.
EXT_TUPLE = 1
EXT_MESSAGE = 2
#: Codes from here up belong to the layers above (``workers`` registers ActorRef).
EXT_USER_BASE = 16

#: The deepest a value may nest, counting every list, tuple, dict, message and ref.
MAX_DEPTH = 100

T = TypeVar("T")

_TUPLE = msgpack.ExtType(EXT_TUPLE, b"")
_MESSAGE = msgpack.ExtType(EXT_MESSAGE, b"")

# type -> (code, to_plain); code -> from_plain. Plain: what msgpack carries without extensions.
_encoders: dict[type, tuple[int, Callable[[Any], Any]]] = {}
_decoders: dict[int, Callable[[Any], Any]] = {}
_messages_by_name: dict[str, type] = {}
_message_layouts: dict[type, tuple[str, tuple[str, ...]]] = {}  # class -> (wire name, fields)

# Bytes that open a level on the wire: fixmap, fixarray, array 16/32, map 16/32,
# and every extension header. Any other byte is deleted by translate().
_OPENERS = {*range(0x80, 0xA0), *range(0xDC, 0xE0), 0xC7, 0xC8, 0xC9, *range(0xD4, 0xD9)}
_NOT_OPENERS = bytes(sorted(set(range(256)) - _OPENERS))
#: msgpack decodes extension -1 (its Timestamp) itself, without ext_hook: these
#: headers (fixext 4, fixext 8, ext 8 of 12 bytes) are how a peer could send one.
_TIMESTAMP_HEADERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")
#: Frames up to this long count their opening bytes before anything else.
_COUNT_UP_TO = 8192
_LEVELS = frozenset({list, tuple, dict})
_SEQUENCES = frozenset({list, tuple})


def _message_name(cls: type) -> str:
    module = "__main__" if cls.__module__ == "__mp_main__" else cls.__module__
    return f"{module}.{cls.__qualname__}"


# -- encoding -------------------------------------------------------------------


def _default(obj: Any) -> Any:
    cls = type(obj)
    if cls is tuple:
        return [_TUPLE, *obj]
    layout = _message_layouts.get(cls)
    if layout is not None:
        name, names = layout
        return [_MESSAGE, name, [getattr(obj, n) for n in names]]
    entry = _encoders.get(cls)
    if entry is not None:
        code, to_plain = entry
        return msgpack.ExtType(code, _pack_payload(to_plain(obj)))
    raise SerializationError(
        f"cannot send a value of type {cls.__module__}.{cls.__qualname__}: messages may hold "
        "None, bool, int, float, str, bytes, list, tuple, dict, ActorRef and "
        "dataclasses decorated with @gorilix.message"
    )


def _plain_default(obj: Any) -> Any:
    raise SerializationError(
        f"a registered type's payload may hold only plain values (not a {type(obj).__qualname__})"
    )


class _Packers(threading.local):
    """This thread's packers (a Packer is not re-entrant, and a new one costs a buffer)."""

    def __init__(self) -> None:
        self.value = msgpack.Packer(use_bin_type=True, strict_types=True, default=_default)
        self.payload = msgpack.Packer(use_bin_type=True, strict_types=True, default=_plain_default)


_packers = _Packers()


def _pack_payload(value: Any) -> bytes:
    """A registered type's payload: plain values only, so that reading it never nests."""
    packer = _packers.payload
    try:
        return packer.pack(value)
    except BaseException as exc:
        packer.reset()
        if isinstance(exc, (TypeError, ValueError, OverflowError)) and not isinstance(exc, SerializationError):
            raise SerializationError(f"cannot encode a registered type's payload: {exc}") from exc
        raise


def _too_deep_to_send(levels: int) -> SerializationError:
    return SerializationError(
        f"cannot send a value that nests more than {levels} levels (each list, tuple, dict, "
        "@message object and ActorRef is a level; the limit is gorilix.transport.codec.MAX_DEPTH): "
        "flatten it, e.g. send a list of items rather than a chain of (value, next) tuples"
    )


def encode(value: Any, levels: int = MAX_DEPTH) -> bytes:
    """Encode one value; raises SerializationError if any part cannot travel or it nests more than ``levels``."""
    packer = _packers.value
    try:
        data = packer.pack(value)
    except BaseException as exc:
        packer.reset()  # whatever was half packed must not start the next value
        if isinstance(exc, SerializationError) or not isinstance(
                exc, (TypeError, ValueError, OverflowError, RecursionError)):
            raise
        if _height(value, levels, shared=True) > levels:  # msgpack's own bound (511 levels) was met first
            raise _too_deep_to_send(levels) from None
        raise SerializationError(f"cannot encode message: {exc}") from exc
    if len(data) > levels and _may_be_too_deep(data, levels) and _height(value, levels) > levels:
        raise _too_deep_to_send(levels)
    if 0xFF in data and any(h in data for h in _TIMESTAMP_HEADERS) and _holds_timestamp(value):
        raise SerializationError("cannot send a msgpack.Timestamp: send a float or int of seconds")
    return data


# -- decoding -------------------------------------------------------------------


def _registered(code: int, data: bytes) -> Any:
    """A registered type's value (``ext_hook`` for a frame that holds no marker)."""
    from_plain = _decoders.get(code)
    if from_plain is None:
        if code == EXT_TUPLE or code == EXT_MESSAGE:  # a marker is always empty: b"\xc7\x00" + code
            raise DecodeError(f"malformed marker: extension {code} carries {len(data)} bytes")
        raise DecodeError(f"unknown extension type {code}")
    plain = _unpack_payload(data)
    try:
        return from_plain(plain)
    except DecodeError:
        raise
    except (TypeError, ValueError) as exc:  # a field of the wrong type or out of range
        raise DecodeError(f"malformed extension {code}: {exc}") from None


class _Reader:
    """One thread's hooks for a frame with markers; ``stray`` counts markers met but not
    consumed as the head of an array, which must be none when the frame is read."""

    __slots__ = ("stray", "on_ext", "on_list")

    def __init__(self) -> None:
        self.stray = 0
        self.on_ext, self.on_list = self.ext_hook, self.list_hook  # bound once, not per frame

    def ext_hook(self, code: int, data: bytes) -> Any:
        if data or (code != EXT_TUPLE and code != EXT_MESSAGE):
            return _registered(code, data)
        self.stray += 1
        return _TUPLE if code == EXT_TUPLE else _MESSAGE

    def list_hook(self, items: list[Any]) -> Any:
        if items:
            head = items[0]
            if head is _TUPLE:
                self.stray -= 1
                return tuple(items[1:])
            if head is _MESSAGE:
                self.stray -= 1
                return _decode_message(items)
        return items


class _Readers(threading.local):
    def __init__(self) -> None:
        self.reader = _Reader()


_readers = _Readers()


def _unpack_payload(data: bytes) -> Any:
    """A registered type's payload, which holds plain values only (no extension: nothing nests)."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_extension)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"undecodable payload of a registered type ({len(data)} bytes): {exc}") from exc
    return value


def _no_extension(code: int, data: bytes) -> Any:
    raise DecodeError(f"a registered type's payload holds an extension ({code}): refused")


def decode(data: bytes, levels: int = MAX_DEPTH) -> Any:
    """Decode bytes from a peer; any malformation, or more than ``levels`` levels, raises DecodeError."""
    try:
        if 0xC7 not in data:  # no ext 8 header, so no marker: no tuple or message to rebuild
            value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_registered)
        else:
            reader = _readers.reader
            outer, reader.stray = reader.stray, 0  # (a message's __post_init__ may decode too)
            try:
                value = msgpack.unpackb(data, raw=False, strict_map_key=False,
                                        ext_hook=reader.on_ext, list_hook=reader.on_list)
            finally:
                stray, reader.stray = reader.stray, outer
            if stray:
                raise DecodeError(f"payload ({len(data)} bytes) has a tuple or message marker out of place")
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"undecodable payload ({len(data)} bytes): {exc}") from exc
    if len(data) > levels and _may_be_too_deep(data, levels) and _height(value, levels) > levels:
        raise DecodeError(f"payload ({len(data)} bytes) nests more than {levels} levels, the codec's limit")
    if 0xFF in data and any(h in data for h in _TIMESTAMP_HEADERS) and _holds_timestamp(value):
        raise DecodeError(f"payload ({len(data)} bytes) holds a msgpack Timestamp, which no message may")
    return value


def _holds_timestamp(value: Any) -> bool:
    """Whether a Timestamp is anywhere in ``value``: level by level, at C speed through lists of plain values.

    (Its headers' bytes occur by chance in many frames: ``0xD6FF`` is a plain
    uint16 inside a list of ints, so the walk must cost little per item.)
    """
    level = [value]
    while level:
        kinds = set(map(type, level))
        if msgpack.Timestamp in kinds:
            return True
        if kinds <= _SEQUENCES:
            level = list(chain.from_iterable(level))
        elif kinds.isdisjoint(_LEVELS) and not any(k in _message_layouts for k in kinds):
            return False  # nothing here holds anything
        else:
            level = _inside(level)
    return False


# -- depth --------------------------------------------------------------------------


def _may_be_too_deep(data: bytes, levels: int) -> bool:
    """False when ``data`` (longer than ``levels``) surely holds a value of at most ``levels`` levels.

    Two bounds at C speed, before any walk in Python: every level opens with
    one byte that could open a level, so a frame with at most ``levels`` of
    them is shallow enough; and a level is at least one array or map on the
    wire, bar a registered value at the bottom (an extension, a leaf there),
    so a frame whose arrays and maps nest less than ``levels`` deep is too.
    """
    if len(data) <= _COUNT_UP_TO and len(data.translate(None, _NOT_OPENERS)) <= levels:
        return False
    return _PARSE_STACK is None or _nests_deeper_than(data, levels - 1)


def _nests_deeper_than(data: bytes, levels: int) -> bool:
    """Whether the arrays and maps of ``data`` nest more than ``levels`` deep.

    msgpack's parse stack holds a fixed number of open arrays and maps: with
    all but ``levels`` of them taken by one-item arrays opened ahead of
    ``data``, skipping it (which builds nothing) overflows iff it nests deeper.
    """
    assert _PARSE_STACK is not None
    unpacker = msgpack.Unpacker(max_buffer_size=_PARSE_STACK + len(data))
    unpacker.feed(b"\x91" * (_PARSE_STACK - levels))
    unpacker.feed(data)
    try:
        unpacker.skip()
    except msgpack.StackError:
        return True
    return False


def _measure_parse_stack() -> int | None:
    """msgpack's parse stack size (1,024 in msgpack 1.x), measured rather than trusted; None if not fixed."""

    def overflows(depth: int) -> bool:
        try:
            msgpack.unpackb(b"\x91" * (depth - 1) + b"\x90")
        except msgpack.StackError:
            return True
        return False

    return 1024 if not overflows(1024) and overflows(1025) else None


_PARSE_STACK = _measure_parse_stack()


def _height(value: Any, limit: int = MAX_DEPTH, shared: bool = False) -> int:
    """How many levels ``value`` nests, up to ``limit + 1``: level by level, never recursing.

    A decoded value is a tree, no larger than its frame. A value about to be
    sent may share parts, even hold itself: with ``shared``, each level keeps
    one of each object, so ``x = [x, x]`` a hundred times over stays small.
    """
    level = [value]
    for height in range(limit + 1):
        if shared:
            level = list({id(obj): obj for obj in level}.values())
        if not level:
            return height
        kinds = set(map(type, level))
        if kinds <= _SEQUENCES:  # the common case, at C speed
            level = list(chain.from_iterable(level))
            continue
        if kinds.isdisjoint(_LEVELS) and not any(k in _encoders or k in _message_layouts for k in kinds):
            return height  # nothing here opens a level
        level = _inside(level)
    return limit + 1


def _inside(level: list[Any]) -> list[Any]:
    """Everything one level inside the values of ``level``: items, keys and values, fields.

    A registered type's value (a ref) is a level of its own, with nothing inside
    (its payload is flat).
    """
    inside: list[Any] = []
    for obj in level:
        cls = type(obj)
        if cls is list or cls is tuple:
            inside += obj
        elif cls is dict:
            inside += obj
            inside += obj.values()
        elif cls in _message_layouts:
            inside += [getattr(obj, n) for n in _message_layouts[cls][1]]
    return inside


# -- types ------------------------------------------------------------------------


def register_extension(
    code: int, cls: type[T], to_plain: Callable[[T], Any], from_plain: Callable[[Any], T]
) -> None:
    """Teach the codec a new type (upper layers only; codes >= EXT_USER_BASE).

    ``to_plain`` turns a value into plain values (None, bool, int, float,
    str, bytes, list, dict: no tuple, message or registered type), and
    ``from_plain`` turns them back; it may raise TypeError or ValueError on
    a bad payload from a peer, which becomes a DecodeError. A value of the
    type is one level of MAX_DEPTH.
    """
    if code < EXT_USER_BASE or code > 127:
        raise ValueError(f"extension code {code} is outside {EXT_USER_BASE}..127")
    known = _decoders.get(code)
    if known is not None and _encoders.get(cls, (None,))[0] != code:
        raise ValueError(f"extension code {code} is already taken")
    _encoders[cls] = (code, to_plain)
    _decoders[code] = from_plain


def message(cls: type[T]) -> type[T]:
    """Class decorator: make a dataclass sendable as a message.

    The class travels by its module path and field values, so both ends must
    import the same module. A plain class is turned into a dataclass first.
    """
    if not dataclasses.is_dataclass(cls):
        cls = dataclasses.dataclass(cls)
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init)  # type: ignore[arg-type]
    name = _message_name(cls)
    _message_layouts[cls] = (name, names)
    _messages_by_name[name] = cls
    cls.__gorilix_fields__ = names  # type: ignore[attr-defined]
    return cls


def _decode_message(items: list[Any]) -> Any:
    if len(items) != 3 or type(items[1]) is not str or type(items[2]) is not list:
        raise DecodeError("malformed message: expected [marker, name, [fields]]")
    _, name, values = items
    cls = _messages_by_name.get(name)
    if cls is None:
        raise UnknownMessageType(
            f"message type {name[:200]} is not registered in this process; import its module in "
            "the actor's module (or the worker's), or in your program for an answer it receives, "
            "so that the process that decodes it has the class (Gorilix never imports a module "
            "that a peer names)"
        )
    names = cls.__gorilix_fields__  # type: ignore[attr-defined]
    if len(values) != len(names):
        raise DecodeError(f"message {name}: expected {len(names)} fields, got {len(values)}")
    return cls(**dict(zip(names, values, strict=True)))
