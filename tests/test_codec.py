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
# An actor id is a uint64: ActorRef refuses anything else (InvalidArgument).
refs = st.builds(ActorRef, st.text(max_size=10), st.integers(0, UINT_MAX), st.none() | st.text(max_size=10))

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


TUPLE = msgpack.ExtType(EXT_TUPLE, b"")
MESSAGE = msgpack.ExtType(EXT_MESSAGE, b"")


def test_message_name_and_fields_travel_on_the_wire() -> None:
    """[marker, name, [fields]]: one array, unpacked in the same msgpack call as the rest."""
    assert msgpack.unpackb(encode(Point(3, 4)), raw=False) == [MESSAGE, f"{__name__}.Point", [3, 4]]


def test_encode_is_plain_msgpack_for_plain_values() -> None:
    value = {"a": [1, -2, 3.5, None, True], "b": b"\x00"}
    assert encode(value) == msgpack.packb(value, use_bin_type=True)


def test_tuple_is_a_marked_array_on_the_wire() -> None:
    assert msgpack.unpackb(encode((1, 2)), raw=False) == [TUPLE, 1, 2]
    assert msgpack.unpackb(encode(((),)), raw=False) == [TUPLE, [TUPLE]]


@pytest.mark.parametrize("data", [
    msgpack.packb(TUPLE), msgpack.packb({"k": MESSAGE}), msgpack.packb([1, TUPLE]),  # a marker out of place
    msgpack.packb([msgpack.ExtType(EXT_TUPLE, b"\x91\x01")]),  # a marker that carries bytes
    msgpack.packb([MESSAGE, "m"]), msgpack.packb([MESSAGE, 5, []]), msgpack.packb([MESSAGE, "m", 7]),
])
def test_misplaced_or_malformed_markers_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


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
    return msgpack.packb([MESSAGE, name, values])


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
    codec.register_extension(127, Token, lambda t: [t.value, [1]], lambda plain: Token(plain[0]))
    back = roundtrip([Token("hi")])
    assert type(back[0]) is Token and back[0].value == "hi"


def test_a_registered_payload_holds_plain_values_only(scratch_registry: None) -> None:
    """A payload is unpacked by a call of its own: an extension in it could nest those calls without end."""
    codec.register_extension(100, Token, lambda t: [t.value, (1,)], lambda plain: Token(plain[0]))
    with pytest.raises(SerializationError, match="registered type's payload"):
        encode([Token("hi")])
    assert encode([1, (2,)]) == wire([1, (2,)])  # the codec is fine afterwards
    nested = msgpack.packb(["n", 1, TUPLE])
    with pytest.raises(DecodeError, match="payload holds an extension"):
        decode(msgpack.packb(msgpack.ExtType(100, nested)))
    with pytest.raises(DecodeError, match="payload holds an extension"):
        decode(msgpack.packb([msgpack.ExtType(EXT_ACTOR_REF, nested)]))


def test_a_registered_types_bad_payload_is_a_decode_error(scratch_registry: None) -> None:
    def from_plain(plain: Any) -> Token:
        if type(plain) is not str:
            raise TypeError(f"a token is a str, not {type(plain).__name__}")
        return Token(plain)

    codec.register_extension(100, Token, lambda t: t.value, from_plain)
    assert decode(encode(Token("ok"))).value == "ok"
    with pytest.raises(DecodeError, match="a token is a str"):
        decode(msgpack.packb(msgpack.ExtType(100, msgpack.packb(5))))


def test_a_chain_of_refs_and_tuples_from_a_peer_is_refused_without_a_crash() -> None:
    """A ref whose payload holds a tuple holding a ref...: refused at the first payload, never recursing."""
    data = msgpack.packb(0)
    for _ in range(3000):
        data = b"\x92" + msgpack.packb(TUPLE) + data  # (data,)
        data = msgpack.packb(msgpack.ExtType(EXT_ACTOR_REF, b"\x93" + data + b"\x01\xc0"))  # [data, 1, None]
    with pytest.raises(DecodeError, match="payload holds an extension"):
        decode(data)
    with pytest.raises(DecodeError, match="payload holds an extension"):
        decode(b"\x92" + msgpack.packb(TUPLE) + data)


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


# --- depth: one limit, MAX_DEPTH, for the encoder and the decoder ---


def depth_of(value: Any) -> int:
    """The codec's measure, written plainly: every list, tuple, dict, message and ref is a level."""
    kind = type(value)
    if kind in (list, tuple):
        return 1 + max(map(depth_of, value), default=0)
    if kind is dict:
        return 1 + max((max(depth_of(k), depth_of(v)) for k, v in value.items()), default=0)
    if hasattr(kind, "__gorilix_fields__"):  # a @message class
        return 1 + max((depth_of(getattr(value, name)) for name in kind.__gorilix_fields__), default=0)
    if kind is ActorRef:
        return 1
    return 0


def wire(value: Any) -> bytes:
    """The codec's wire format built by hand, with no limit (what a hostile peer can send)."""
    packer = msgpack.Packer(use_bin_type=True)
    kind = type(value)
    if kind is list:
        return packer.pack_array_header(len(value)) + b"".join(map(wire, value))
    if kind is dict:
        return packer.pack_map_header(len(value)) + b"".join(wire(k) + wire(v) for k, v in value.items())
    if kind is tuple:
        return packer.pack_array_header(len(value) + 1) + packer.pack(TUPLE) + b"".join(map(wire, value))
    if hasattr(kind, "__gorilix_fields__"):  # a @message class: [marker, name, [fields]]
        fields = [getattr(value, name) for name in kind.__gorilix_fields__]
        return b"\x93" + packer.pack(MESSAGE) + packer.pack(f"{kind.__module__}.{kind.__qualname__}") + wire(fields)
    if kind is ActorRef:
        return packer.pack(msgpack.ExtType(EXT_ACTOR_REF, msgpack.packb([value.node, value.id, value.name])))
    return packer.pack(value)


leaves = scalars | points | refs | st.just([]) | st.just(()) | st.just({})


@st.composite
def chains(draw: st.DrawFn, levels: st.SearchStrategy[int]) -> Any:
    """A value whose deepest path goes through ``levels`` containers of random kinds.

    Every level also holds shallow siblings, so the deepest path is not the
    only one and the levels are not all alike.
    """
    value = draw(leaves)
    for _ in range(draw(levels)):
        side = draw(st.lists(scalars | points, max_size=2))
        kind = draw(st.sampled_from(["list", "tuple", "dict", "key", "box"]))
        if kind == "list":
            at = draw(st.integers(0, len(side)))
            value = [*side[:at], value, *side[at:]]
        elif kind == "tuple":
            value = (value, *side)
        elif kind == "dict":
            value = {draw(st.text(max_size=3)): value, 1: side}
        elif kind == "key" and _hashable(value):  # a chain of tuples and points can be a dict key
            value = {value: draw(scalars)}
        else:
            value = Box(draw(st.text(max_size=3)), value, (draw(scalars), draw(scalars)))
    return value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


near_the_limit = st.integers(codec.MAX_DEPTH - 3, codec.MAX_DEPTH + 3)
any_depth = st.integers(0, codec.MAX_DEPTH + 40) | near_the_limit
depth_settings = settings(derandomize=True, database=None, deadline=None, max_examples=100)


@depth_settings
@given(chains(any_depth))
def test_values_up_to_the_limit_round_trip_and_deeper_ones_are_refused_at_encode(value: Any) -> None:
    if depth_of(value) <= codec.MAX_DEPTH:
        data = encode(value)
        assert data == wire(value)  # the format does not depend on how deep a value is
        assert same(decode(data), value)
    else:
        with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels"):
            encode(value)


@depth_settings
@given(chains(any_depth))
def test_the_decoder_applies_the_same_limit_to_bytes_from_a_peer(value: Any) -> None:
    data = wire(value)
    if depth_of(value) <= codec.MAX_DEPTH:
        assert same(decode(data), value)
    else:
        with pytest.raises(DecodeError, match=f"more than {codec.MAX_DEPTH} levels"):
            decode(data)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: [v],
        lambda v: (v,),
        lambda v: {"k": v},
        lambda v: {(v,): 1} if type(v) is tuple else {"k": v},
        lambda v: Box("b", v, (1, 2)),
    ],
    ids=["list", "tuple", "dict", "dict key", "message"],
)
@pytest.mark.parametrize("bottom", [0, [], (), ActorRef("n", 1), Point(1, 2)], ids=repr)
def test_the_limit_is_exact_for_every_kind_of_level(wrap: Any, bottom: Any) -> None:
    value = bottom
    while depth_of(value) < codec.MAX_DEPTH:
        value = wrap(value)
    assert depth_of(value) == codec.MAX_DEPTH
    assert same(decode(encode(value)), value)
    assert same(decode(wire(value)), value)
    deeper = wrap(value)
    assert depth_of(deeper) == codec.MAX_DEPTH + 1
    with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels"):
        encode(deeper)
    with pytest.raises(DecodeError, match=f"more than {codec.MAX_DEPTH} levels"):
        decode(wire(deeper))


@pytest.mark.parametrize("levels", [101, 200, 250, 330, 1000])
def test_a_linked_list_of_tuples_is_refused_whatever_its_length(levels: int) -> None:
    value: Any = ()
    for i in range(levels):
        value = (i, value)
    with pytest.raises(SerializationError, match="flatten"):
        encode(value)


def hand_built(levels: int, link: bytes) -> bytes:
    """``levels`` copies of ``link`` (bytes that open one level around what follows) around 0."""
    data = msgpack.packb(0)
    for _ in range(levels):
        data = link_around(link, data)
    return data


def link_around(link: bytes, inner: bytes) -> bytes:
    if link == b"tuple":  # (inner,)
        return b"\x92" + msgpack.packb(TUPLE) + inner
    if link == b"message":  # Box("x", inner, (1, 2))
        name = msgpack.packb(f"{__name__}.Box")
        fields = b"\x93" + msgpack.packb("x") + inner + msgpack.packb([TUPLE, 1, 2])
        return b"\x93" + msgpack.packb(MESSAGE) + name + fields
    return link + inner


@pytest.mark.parametrize("link", [b"tuple", b"message", b"\x91", b"\x81\xa1k"], ids=["tuple", "message", "list", "dict"])
@pytest.mark.parametrize("levels", [200, 250, 1000, 5000])
def test_hostile_deep_bytes_raise_decode_error_and_never_crash(link: bytes, levels: int) -> None:
    with pytest.raises(DecodeError):
        decode(hand_built(levels, link))


LINKS = [b"tuple", b"message", b"\x91", b"\x81\xa1k", b"\x92\x01"]


@deterministic
@given(
    st.integers(0, 700).flatmap(lambda n: st.lists(st.sampled_from(LINKS), min_size=n, max_size=n)),
    st.binary(max_size=8),
    st.integers(0, 2000),
)
def test_deep_garbage_raises_only_decode_error(links: list[bytes], noise: bytes, cut: int) -> None:
    data = msgpack.packb(0)
    for link in links:
        data = link_around(link, data)
    for damaged in (data, data[:cut], data[:cut] + noise + data[cut:], noise + data):
        try:
            decode(damaged)
        except DecodeError:
            pass


@depth_settings
@given(st.lists(values, min_size=0, max_size=200), st.binary(max_size=200_000), st.text(max_size=20_000))
def test_wide_and_large_values_round_trip(items: list[Any], blob: bytes, text: str) -> None:
    value = [items, blob, {text: items}, tuple(items)]
    assert same(decode(encode(value)), value)


PADDINGS = [
    list(range(3000)),  # many small items: msgpack measures the plain levels
    [(i, str(i)) for i in range(1500)],  # many small extensions, each bounded by its length
    [[i, [i]] for i in range(2000)],
    {f"k{i}": [i, {"v": i}] for i in range(1500)},
    b"x" * 20_000,  # one big item: walked
    "y" * 20_000,
]


@depth_settings
@given(chains(near_the_limit | st.integers(0, 30)), st.sampled_from(range(len(PADDINGS))), st.integers(0, 3))
def test_big_frames_near_the_limit_are_measured_exactly(value: Any, padding: int, where: int) -> None:
    """Frames past the cheap checks: each extension's height is bounded as it is (un)packed."""
    pad = PADDINGS[padding]
    wrapped = [
        [pad, value],
        (value, pad),
        Box("pad", (pad, [value]), (1, 2)),
        {"pad": pad, "v": (value,)},
    ][where]
    data = wire(wrapped)
    assert len(data) > 8192
    if depth_of(wrapped) <= codec.MAX_DEPTH:
        assert encode(wrapped) == data
        assert same(decode(data), wrapped)
    else:
        with pytest.raises(SerializationError, match="levels"):
            encode(wrapped)
        with pytest.raises(DecodeError, match="levels"):
            decode(data)


def test_the_depth_count_starts_afresh_for_every_value() -> None:
    ref = ActorRef("node", 7, "name")
    value = [("seq", ref, (ref, [ref])), Box("b", ref, (ref, 1))]
    for _ in range(3 * codec.MAX_DEPTH):
        assert same(decode(encode(value)), value)
    deepest: Any = ref
    for _ in range(codec.MAX_DEPTH - 1):
        deepest = (deepest,)
    assert same(decode(encode(deepest)), deepest)


@message
@dataclasses.dataclass
class Unpacks:
    """Decodes another frame while its own frame is being decoded."""

    inner: bytes

    def __post_init__(self) -> None:
        self.decoded = decode(self.inner)


def test_a_frame_decoded_inside_another_does_not_disturb_its_measure() -> None:
    inner = encode([((1, (2,)), list(range(50)))] * 40)  # long enough to be measured itself
    deepest: Any = Unpacks(inner)
    while depth_of(deepest) < codec.MAX_DEPTH:
        deepest = [deepest, list(range(300))]
    assert same(decode(encode(deepest)), deepest)
    with pytest.raises(DecodeError, match="levels"):
        decode(wire([deepest]))


def test_wide_values_just_under_the_limit_round_trip() -> None:
    row = [Point(i, -i) for i in range(50)]
    value: Any = [row] * 300  # 3 levels: list, list, Point
    for _ in range(codec.MAX_DEPTH - 3):
        value = [value, row, (row,)]
    assert depth_of(value) == codec.MAX_DEPTH
    assert same(decode(encode(value)), value)
    assert same(decode(wire(value)), value)


def call_with_stack_left(frames: int, call: Any) -> str:
    """Run ``call`` with about ``frames`` Python frames left before the recursion limit."""
    import sys

    def down(n: int) -> str:
        if n > 0:
            return down(n - 1)
        try:
            call()
        except RecursionError:
            return "leaked RecursionError"
        except (SerializationError, DecodeError):
            return "clean error"
        return "ok"

    here = len(__import__("inspect").stack(0))
    try:
        return down(sys.getrecursionlimit() - here - frames)
    except RecursionError:
        return "no room to test"


def test_encode_and_decode_need_a_few_python_frames_whatever_the_depth() -> None:
    """Nothing recurses in Python: a caller deep in its own stack still gets its value, never a RecursionError."""
    deepest = (0,)
    while depth_of(deepest) < codec.MAX_DEPTH:
        deepest = (deepest, [1])
    data = encode(deepest)
    for frames in (15, 30, 60, 100, 200, 400, 800):
        assert call_with_stack_left(frames, lambda: encode(deepest)) == "ok", frames
        assert call_with_stack_left(frames, lambda: decode(data)) == "ok", frames


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_a_value_that_holds_itself_is_refused_at_once(copies: int) -> None:
    """msgpack stops at its own bound; the depth count then keeps one of each object per level,
    or a list holding itself twice would make each level twice as long as the last."""
    looped: list[Any] = []
    looped.extend([looped] * copies)
    looped_dict: dict[str, Any] = {}
    looped_dict.update({str(i): looped_dict for i in range(copies)})
    for value in (looped, looped_dict, (looped,)):
        with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels"):
            encode(value)


def test_the_limit_holds_in_a_thread_with_a_small_stack() -> None:
    """A worker, node or client may decode on a thread with far less stack than the main one."""
    import threading

    wrappers = [lambda v: (v, 1), lambda v: Box("b", v, (1, 2)), lambda v: [v], lambda v: {"k": v}]
    deepest: Any = ActorRef("n", 1)
    for level in range(codec.MAX_DEPTH - 1):
        deepest = wrappers[level % len(wrappers)](deepest)
    assert depth_of(deepest) == codec.MAX_DEPTH
    data = wire(deepest)
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(same(decode(data), deepest) and encode(deepest) == data)
            outcome.append(type(_raises(lambda: decode(wire((deepest,))))).__name__)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    old = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    assert outcome == [True, "DecodeError"]


def _raises(call: Any) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the caller checks the type
        return exc
    return None


def test_an_unknown_message_type_names_itself_and_what_to_import() -> None:
    from gorilix.transport import errors

    with pytest.raises(errors.UnknownMessageType) as info:
        decode(_message_payload("nowhere.Missing", [1, 2]))
    assert isinstance(info.value, DecodeError)
    assert "nowhere.Missing is not registered" in str(info.value)
    assert "import its module" in str(info.value)
    back = errors.error_from_wire(decode(encode(errors.error_to_wire(info.value))))
    assert type(back) is errors.UnknownMessageType and str(back) == str(info.value)


@pytest.mark.parametrize("inner", ["abc", {"a": 1}, 5, None])
def test_a_tuple_marker_that_carries_a_payload_is_malformed(inner: Any) -> None:
    with pytest.raises(DecodeError, match="marker"):
        decode(msgpack.packb([msgpack.ExtType(EXT_TUPLE, msgpack.packb(inner))]))


@pytest.mark.parametrize("data", [
    b"\xd6\xff\x00\x00\x00\x01",  # Timestamp(1) as fixext 4
    msgpack.packb([1, {"t": msgpack.Timestamp(5, 7)}]),  # fixext 8, inside a map
    msgpack.packb((msgpack.Timestamp(2**40, 1),)),  # ext 8 of 12 bytes
])
def test_a_msgpack_timestamp_from_a_peer_is_a_decode_error(data: bytes) -> None:
    """msgpack decodes extension -1 itself (no ext_hook): it must not reach an actor as a value."""
    with pytest.raises(DecodeError, match="Timestamp"):
        decode(data)
    assert decode(msgpack.packb([-1, b"\xd6\xff", "\xff"])) == [-1, b"\xd6\xff", "\xff"]  # look-alikes pass


def test_a_msgpack_timestamp_is_refused_at_the_sender() -> None:
    with pytest.raises(SerializationError, match="Timestamp"):
        encode(["at", msgpack.Timestamp(1, 0)])
