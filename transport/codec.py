"""The one msgpack codec, with fixed options, used for every byte on the wire.

Supported values: None, bool, int (64-bit), float, str, bytes, list, tuple
(kept as a tuple), dict, dataclasses registered with :func:`message`, and any
type an upper layer registers with :func:`register_extension` (``ActorRef``).
Anything else raises :class:`SerializationError` naming the type, before a
byte is sent. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from gorilix.transport.errors import DecodeError, SerializationError

EXT_TUPLE = 1
EXT_MESSAGE = 2
#: Codes from here up belong to the layers above (``workers`` registers ActorRef).
EXT_USER_BASE = 16

T = TypeVar("T")

_encoders: dict[type, tuple[int, Callable[[Any], bytes]]] = {}
_decoders: dict[int, Callable[[bytes], Any]] = {}
_messages_by_name: dict[str, type] = {}
_local = threading.local()


def _message_name(cls: type) -> str:
    module = "__main__" if cls.__module__ == "__mp_main__" else cls.__module__
    return f"{module}.{cls.__qualname__}"


def _default(obj: Any) -> msgpack.ExtType:
    cls = type(obj)
    if cls is tuple:
        return msgpack.ExtType(EXT_TUPLE, encode_nested(list(obj)))
    entry = _encoders.get(cls)
    if entry is not None:
        code, to_bytes = entry
        return msgpack.ExtType(code, to_bytes(obj))
    raise SerializationError(
        f"cannot send a value of type {cls.__module__}.{cls.__qualname__}: messages may hold "
        "None, bool, int, float, str, bytes, list, tuple, dict, ActorRef and "
        "dataclasses decorated with @gorilix.message"
    )


def encode_nested(value: Any) -> bytes:
    # The thread's packer is busy with the outer value: a Packer is not re-entrant.
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_default)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_TUPLE:
        return tuple(decode(data))
    decoder = _decoders.get(code)
    if decoder is None:
        raise DecodeError(f"unknown extension type {code}")
    return decoder(data)


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_default)
        _local.packer = packer
    return packer


def encode(value: Any) -> bytes:
    """Encode one value; raises SerializationError if any part cannot travel."""
    packer = _packer()
    try:
        return packer.pack(value)
    except SerializationError:
        packer.reset()
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise SerializationError(f"cannot encode message: {exc}") from exc


def decode(data: bytes) -> Any:
    """Decode bytes from a peer; any malformation raises DecodeError."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"undecodable payload ({len(data)} bytes): {exc}") from exc


def register_extension(
    code: int, cls: type[T], to_bytes: Callable[[T], bytes], from_bytes: Callable[[bytes], T]
) -> None:
    """Teach the codec a new type (upper layers only; codes >= EXT_USER_BASE).

    ``to_bytes`` runs while the codec is mid-value: it must build its bytes
    with :func:`encode_nested`, never :func:`encode`.
    """
    if code < EXT_USER_BASE or code > 127:
        raise ValueError(f"extension code {code} is outside {EXT_USER_BASE}..127")
    known = _decoders.get(code)
    if known is not None and _encoders.get(cls, (None,))[0] != code:
        raise ValueError(f"extension code {code} is already taken")
    _encoders[cls] = (code, to_bytes)
    _decoders[code] = from_bytes


def message(cls: type[T]) -> type[T]:
    """Class decorator: make a dataclass sendable as a message.

    The class travels by its module path and field values, so both ends must
    import the same module. A plain class is turned into a dataclass first.
    """
    if not dataclasses.is_dataclass(cls):
        cls = dataclasses.dataclass(cls)
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init)  # type: ignore[arg-type]
    name = _message_name(cls)

    def to_bytes(obj: Any) -> bytes:
        return encode_nested([name, [getattr(obj, n) for n in names]])

    _encoders[cls] = (EXT_MESSAGE, to_bytes)
    _messages_by_name[name] = cls
    cls.__gorilix_fields__ = names  # type: ignore[attr-defined]
    return cls


def _decode_message(data: bytes) -> Any:
    name, values = decode(data)
    cls = _messages_by_name.get(name)
    if cls is None:
        raise DecodeError(
            f"message type {name} is not registered here; import its module in this process"
        )
    names = cls.__gorilix_fields__  # type: ignore[attr-defined]
    if len(values) != len(names):
        raise DecodeError(f"message {name}: expected {len(names)} fields, got {len(values)}")
    return cls(**dict(zip(names, values, strict=True)))


_decoders[EXT_MESSAGE] = _decode_message
