"""The msgpack codec: exact round trips, refusals, and hostile input."""

from __future__ import annotations

import dataclasses
import enum
import math
import struct
from typing import Any, NamedTuple

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gorilix.transport import codec
from gorilix.transport.codec import EXT_MESSAGE, EXT_TUPLE, EXT_USER_BASE, decode, encode, message
from gorilix.transport.errors import DecodeError, SerializationError
from gorilix.workers.ref import EXT_ACTOR_REF, ActorRef

# Same examples on every run, no example database on disk, no timing flakiness.
deterministic = settings(derandomize=True, database=None, deadline=None, max_examples=300)

INT_MIN = -(2**63)
UINT_MAX = 2**64 - 1


# --- messages used by the tests (module level: they travel by module path) ---


@message
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@message
@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    corners: tuple[tuple[int, int], ...]
    layers: list[tuple[str, list[float]]]


@message
@dataclasses.dataclass
class Box:
    """Carries any value, so messages nest inside arbitrary structures and vice versa."""

    label: str
    body: Any
    pair: tuple[Any, Any]


@message
class Plain:
    """A plain class: ``message`` makes it a dataclass first."""

    a: int
    b: tuple[int, ...]


@dataclasses.dataclass
class Unregistered:
    x: int


class SubPoint(Point):
    """Subclass of a registered message: not registered itself."""


class Colour(enum.IntEnum):
    RED = 1


class Pair(NamedTuple):
    a: int
    b: int


# --- exact structural equality (types must match, floats bit for bit) ---


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if dataclasses.is_dataclass(a):
        return all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if type(a) is ActorRef:
        return (a.node, a.id, a.name) == (b.node, b.id, b.name)
    return bool(a == b)


def roundtrip(value: Any) -> Any:
    return decode(encode(value))


def test_same_helper_is_strict() -> None:
    # The assertions below rely on `same` telling these apart.
    assert not same((1, 2), [1, 2])
    assert not same(True, 1)
    assert not same(1, 1.0)
    assert not same(0.0, -0.0)
    assert same(math.nan, math.nan)
    assert not same({1: 2, 3: 4}, {3: 4, 1: 2})
    assert not same(Point(1, 2), Point(1, 3))


# --- strategies ---

int64s = st.integers(min_value=INT_MIN, max_value=UINT_MAX)
scalars = st.none() | st.booleans() | int64s | st.floats() | st.text() | st.binary()
points = st.builds(Point, int64s, int64s)
refs = st.builds(ActorRef, st.text(max_size=10), int64s, st.none() | st.text(max_size=10))

hashable = st.recursive(
    scalars | points | refs,
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashable, inner, max_size=4)
        | st.builds(Box, st.text(max_size=5), inner, st.tuples(inner, inner))
    )


values = st.recursive(scalars | points | refs, _containers, max_leaves=20)

shapes = st.builds(
    Shape,
    st.text(),
    st.lists(points, max_size=3),
    st.lists(st.tuples(int64s, int64s), max_size=3).map(tuple),
    st.lists(st.tuples(st.text(max_size=3), st.lists(st.floats(), max_size=3)), max_size=3),
)


# --- round trips ---


@deterministic
@given(st.none() | st.booleans())
def test_none_and_bool_roundtrip(value: Any) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(int64s)
def test_ints_roundtrip_over_int64_and_uint64(value: int) -> None:
    assert same(roundtrip(value), value)


@pytest.mark.parametrize("value", [INT_MIN, -1, 0, 2**63 - 1, 2**63, UINT_MAX])
def test_int_range_edges_roundtrip(value: int) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(st.floats())
def test_floats_roundtrip_bit_for_bit(value: float) -> None:
    assert same(roundtrip(value), value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308])
def test_special_floats_roundtrip(value: float) -> None:
    back = roundtrip(value)
    assert type(back) is float
    if math.isnan(value):
        assert math.isnan(back)
    else:
        assert back == value and math.copysign(1, back) == math.copysign(1, value)


@deterministic
@given(st.text())
def test_str_roundtrip(value: str) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(st.binary())
def test_bytes_roundtrip_stays_bytes(value: bytes) -> None:
    assert same(roundtrip(value), value)


def test_str_and_bytes_use_distinct_msgpack_types() -> None:
    assert encode("ab") == msgpack.packb("ab", use_bin_type=True)
    assert encode(b"ab") == msgpack.packb(b"ab", use_bin_type=True)
    assert encode("ab") != encode(b"ab")


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    value = [(1, [2, (3, ())]), {"k": (4,), (5, (6,)): [7]}, ()]
    back = roundtrip(value)
    assert same(back, value)
    assert type(back[0]) is tuple and type(back[0][1]) is list and type(back[0][1][1]) is tuple
    assert (5, (6,)) in back[1]


def test_dict_keys_of_every_kind() -> None:
    value = {None: 0, True: 1, 7: 2, 1.5: 3, "s": 4, b"b": 5, (1, "t"): 6, Point(1, 2): 7}
    back = roundtrip(value)
    assert same(back, value)
    assert back[Point(1, 2)] == 7 and back[(1, "t")] == 6 and back[b"b"] == 5


@deterministic
@given(st.lists(values, max_size=4).map(tuple))
def test_tuples_roundtrip(value: tuple[Any, ...]) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(st.dictionaries(hashable, values, max_size=5))
def test_dicts_with_non_str_keys_roundtrip(value: dict[Any, Any]) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(values)
def test_any_supported_value_roundtrips(value: Any) -> None:
    assert same(roundtrip(value), value)


@deterministic
@given(shapes)
def test_registered_message_with_nested_tuples_and_lists(value: Shape) -> None:
    back = roundtrip(value)
    assert type(back) is Shape
    assert same(back, value)
    assert all(type(c) is tuple for c in back.corners)
    assert all(type(layer) is tuple and type(layer[1]) is list for layer in back.layers)


def test_plain_class_becomes_a_sendable_dataclass() -> None:
    assert dataclasses.is_dataclass(Plain)
    back = roundtrip([Plain(1, (2, 3))])
    assert type(back[0]) is Plain
    assert back[0].a == 1 and back[0].b == (2, 3)


def test_message_name_and_fields_travel_on_the_wire() -> None:
    ext = msgpack.unpackb(encode(Point(3, 4)), raw=False)
    assert ext.code == EXT_MESSAGE
    assert msgpack.unpackb(ext.data, raw=False) == [f"{__name__}.Point", [3, 4]]


def test_encode_is_plain_msgpack_for_plain_values() -> None:
    value = {"a": [1, -2, 3.5, None, True], "b": b"\x00"}
    assert encode(value) == msgpack.packb(value, use_bin_type=True)


def test_tuple_is_an_extension_type_on_the_wire() -> None:
    ext = msgpack.unpackb(encode((1, 2)), raw=False)
    assert ext == msgpack.ExtType(EXT_TUPLE, msgpack.packb([1, 2]))


# --- refusals ---


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "builtins.set"),
        (frozenset({1}), "builtins.frozenset"),
        (object(), "builtins.object"),
        (int, "builtins.type"),
        (Unregistered(1), f"{__name__}.Unregistered"),
        (SubPoint(1, 2), f"{__name__}.SubPoint"),
        (Colour.RED, f"{__name__}.Colour"),
        (Pair(1, 2), f"{__name__}.Pair"),
        (2**64, "builtins.int"),
        (-(2**63) - 1, "builtins.int"),
        (2**200, "builtins.int"),
    ],
)
def test_unsupported_values_raise_serialization_error_naming_the_type(
    value: Any, type_name: str
) -> None:
    with pytest.raises(SerializationError, match=f"type {type_name}:"):
        encode(value)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda bad: [1, bad],
        lambda bad: (1, bad),
        lambda bad: {"k": bad},
        lambda bad: {(1,): (2, (bad,))},
        lambda bad: Box("x", [bad], (1, 2)),
        lambda bad: Box("x", None, ((bad,), 2)),
    ],
)
def test_unsupported_value_deep_inside_is_refused(wrap: Any) -> None:
    with pytest.raises(SerializationError, match="builtins.set"):
        encode(wrap({1}))
    with pytest.raises(SerializationError, match="builtins.int"):
        encode(wrap(2**64))


def test_unencodable_str_raises_serialization_error() -> None:
    with pytest.raises(SerializationError):
        encode("\ud800")


def test_serialization_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode({1})


@pytest.mark.parametrize("bad", [{1}, (1, {2}), [1, 2, 3, (4, 2**70)], "\udc00"])
def test_failed_encode_leaves_the_codec_clean(bad: Any) -> None:
    good = {"x": [1, (2, 3)], "y": "z"}
    expected = encode(good)
    with pytest.raises(SerializationError):
        encode(bad)
    assert encode(good) == expected
    assert same(decode(encode(good)), good)


# --- hostile input ---


@deterministic
@given(st.binary())
def test_garbage_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@deterministic
@given(st.integers(min_value=0, max_value=127), st.binary(max_size=40))
def test_garbage_extensions_decode_or_raise_decode_error(code: int, data: bytes) -> None:
    try:
        decode(msgpack.packb([1, msgpack.ExtType(code, data)]))
    except DecodeError:
        pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, UINT_MAX) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers(0, 9), inner, max_size=3),
    max_leaves=10,
)


@deterministic
@given(st.sampled_from([EXT_TUPLE, EXT_MESSAGE, EXT_ACTOR_REF]), msgpack_values)
def test_well_formed_msgpack_in_known_extensions_decodes_or_raises_decode_error(
    code: int, inner: Any
) -> None:
    try:
        decode(msgpack.packb(msgpack.ExtType(code, msgpack.packb(inner, use_bin_type=True))))
    except DecodeError:
        pass


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xd9\x05ab"])
def test_truncated_or_invalid_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def _message_payload(name: Any, values: Any) -> bytes:
    return msgpack.packb(msgpack.ExtType(EXT_MESSAGE, msgpack.packb([name, values])))


def test_unknown_message_type_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="nowhere.Missing"):
        decode(_message_payload("nowhere.Missing", [1, 2]))


def test_message_with_wrong_field_count_raises_decode_error() -> None:
    assert decode(_message_payload(f"{__name__}.Point", [1, 2])) == Point(1, 2)
    with pytest.raises(DecodeError, match="expected 2 fields, got 3"):
        decode(_message_payload(f"{__name__}.Point", [1, 2, 3]))


def test_unknown_extension_code_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown extension type 99"):
        decode(msgpack.packb(msgpack.ExtType(99, b"")))


# --- extension registry ---


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(codec, "_encoders", dict(codec._encoders))
    monkeypatch.setattr(codec, "_decoders", dict(codec._decoders))


class Token:
    def __init__(self, value: str) -> None:
        self.value = value


@pytest.mark.parametrize("code", [-1, 0, EXT_TUPLE, EXT_MESSAGE, EXT_USER_BASE - 1, 128])
def test_register_extension_rejects_codes_outside_the_user_range(
    scratch_registry: None, code: int
) -> None:
    with pytest.raises(ValueError, match="outside"):
        codec.register_extension(code, Token, lambda t: b"", lambda b: Token(""))
    with pytest.raises(SerializationError):
        encode(Token("x"))


def test_register_extension_rejects_a_taken_code(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="already taken"):
        codec.register_extension(EXT_ACTOR_REF, Token, lambda t: b"", lambda b: Token(""))
    assert same(roundtrip(ActorRef("n", 1)), ActorRef("n", 1))


def test_register_extension_accepts_the_top_user_code(scratch_registry: None) -> None:
    codec.register_extension(
        127,
        Token,
        lambda t: codec.encode_nested([t.value, (1,)]),
        lambda b: Token(decode(b)[0]),
    )
    back = roundtrip([Token("hi")])
    assert type(back[0]) is Token and back[0].value == "hi"


# --- ActorRef (workers registers its extension on import) ---


@deterministic
@given(refs)
def test_actor_ref_roundtrips_with_node_id_and_name(ref: ActorRef) -> None:
    back = roundtrip(ref)
    assert type(back) is ActorRef
    assert (back.node, back.id, back.name) == (ref.node, ref.id, ref.name)
    assert back == ref and hash(back) == hash(ref)


def test_actor_ref_equality_ignores_name_and_works_as_key() -> None:
    ref = ActorRef("node-a", 0x1_0000000001, "counter")
    back = roundtrip({ref: (ref, [ref])})
    (key, (first, [second])) = next(iter(back.items()))
    assert key == ref == ActorRef("node-a", 0x1_0000000001) and key.name == "counter"
    assert hash(key) == hash(ActorRef("node-a", 0x1_0000000001, "other"))
    assert key != ActorRef("node-b", 0x1_0000000001) and key != ActorRef("node-a", 2)
    assert first == second == ref
    assert back[ActorRef("node-a", 0x1_0000000001)] == (ref, [ref])


@pytest.mark.parametrize(
    "fields", [[1, 2, None], ["n", "1", None], ["n", 1, 5], ["n", True, None], ["n", 1]]
)
def test_malformed_actor_ref_raises_decode_error(fields: list[Any]) -> None:
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(EXT_ACTOR_REF, msgpack.packb(fields))))
