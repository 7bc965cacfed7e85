"""Frame layout: route and envelope headers, and splitting a multipart."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gorilix.transport.errors import DecodeError
from gorilix.transport.frames import (
    ASK,
    ASKS,
    BATCH,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    ID_MAX,
    KINDS,
    MAX_FRAMES,
    NODE_NAME_MAX,
    PART,
    REPLY,
    STOP,
    TELL,
    TELL_ACK,
    Envelope,
    Route,
    message_frames,
    pack_env,
    pack_route,
    split_messages,
    unpack_env,
    unpack_route,
)

deterministic = settings(derandomize=True, database=None, deadline=None, max_examples=300)

#: Every id a frame may carry (a msgpack uint64), and every int msgpack can carry.
ids = st.integers(min_value=0, max_value=ID_MAX)
any_ints = st.integers(min_value=-(2**63), max_value=ID_MAX)
node_names = st.text(max_size=40)


def test_kinds_and_flags_are_distinct() -> None:
    assert KINDS == {TELL, ASK, REPLY, FAIL, STOP, BATCH, PART, TELL_ACK}
    assert len(KINDS) == 8
    assert ASKS == {ASK, BATCH, TELL_ACK}
    assert FLAG_ASK & FLAG_REPLY == 0


def test_a_batch_is_marked_as_an_ask_for_the_router_and_a_part_is_not_a_reply() -> None:
    # The router fails the asks in flight to a worker that dies: a batch must be one of them,
    # and a part must not cross its ask off (the batch's reply does).
    assert unpack_route(message_frames("n", 7, BATCH, "n", 9, b"\x90", 3)[0]).flags == FLAG_ASK
    assert unpack_route(message_frames("n", 9, PART, "n", 7, b"\x90", 3)[0]).flags == 0


# --- route frame ---


@deterministic
@given(node_names, ids, ids, ids, ids)
def test_route_roundtrip(dst_node: str, dst_id: int, flags: int, src_id: int, corr: int) -> None:
    route = unpack_route(pack_route(dst_node, dst_id, flags, src_id, corr))
    assert type(route) is Route
    assert route == (dst_node, dst_id, flags, src_id, corr)
    assert (route.dst_node, route.dst_id, route.flags, route.src_id, route.corr) == (
        dst_node, dst_id, flags, src_id, corr,
    )


def test_route_defaults() -> None:
    assert unpack_route(pack_route("b", 42)) == Route("b", 42, 0, 0, 0)
    assert unpack_route(pack_route("", 0, FLAG_ASK, 7, 9)) == Route("", 0, FLAG_ASK, 7, 9)


# --- limits: ids are uint64, node names at most NODE_NAME_MAX characters ---
#
# A peer's negative sender id used to reach the actor, whose ``self.sender``
# then raised (an ActorRef refuses it); the frame is now refused as it is read.

ROUTE_IDS = ["dst_id", "flags", "src_id", "corr"]
NEGATIVE = [-1, -(2**63)]
# Names past the limit, counted in characters (not bytes): a multi-byte one too.
LONG_NAMES = ["n" * (NODE_NAME_MAX + 1), "\u00e9" * (NODE_NAME_MAX + 1), "n" * 100_000]
# Names at the limit: 255 characters of up to four bytes each are fine.
LIMIT_NAMES = ["n" * NODE_NAME_MAX, "\u00e9" * NODE_NAME_MAX, "\U0001f600" * NODE_NAME_MAX, ""]


@pytest.mark.parametrize("bad", NEGATIVE)
@pytest.mark.parametrize("index", range(1, 5))
def test_route_with_a_negative_id_is_rejected(index: int, bad: int) -> None:
    fields = list(GOOD_ROUTE)
    fields[index] = bad
    with pytest.raises(DecodeError, match=rf"{ROUTE_IDS[index - 1]}={bad} is out of range 0\.\.2\*\*64-1"):
        unpack_route(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii", "two-byte", "huge"])
def test_route_with_an_overlong_node_name_is_rejected(name: str) -> None:
    with pytest.raises(DecodeError, match=f"dst_node of {len(name)} characters is longer than {NODE_NAME_MAX}"):
        unpack_route(pack_route(name, 1))


@pytest.mark.parametrize("name", LIMIT_NAMES, ids=["ascii", "two-byte", "four-byte", "empty"])
def test_route_at_the_limits_is_accepted(name: str) -> None:
    route = unpack_route(pack_route(name, ID_MAX, ID_MAX, ID_MAX, ID_MAX))
    assert route == Route(name, ID_MAX, ID_MAX, ID_MAX, ID_MAX)
    assert unpack_route(pack_route(name, 0)) == Route(name, 0, 0, 0, 0)


near_the_limit = node_names | st.text(min_size=NODE_NAME_MAX - 2, max_size=NODE_NAME_MAX + 2)


@deterministic
@given(near_the_limit, any_ints, any_ints, any_ints, any_ints)
def test_route_is_accepted_exactly_within_the_limits(
    dst_node: str, dst_id: int, flags: int, src_id: int, corr: int
) -> None:
    frame = pack_route(dst_node, dst_id, flags, src_id, corr)
    within = len(dst_node) <= NODE_NAME_MAX and min(dst_id, flags, src_id, corr) >= 0
    try:
        route = unpack_route(frame)
    except DecodeError:
        assert not within
        return
    assert within
    assert route == (dst_node, dst_id, flags, src_id, corr)


WRONG_TYPED = [None, True, 1.0, b"node", "7", [1], {"a": 1}, 5]
GOOD_ROUTE: list[Any] = ["node", 1, 0, 2, 3]


def _wrong_fields(good: list[Any], indexes: range) -> list[tuple[int, Any]]:
    """Every (index, value) where value has another type than good[index]."""
    return [(i, bad) for i in indexes for bad in WRONG_TYPED if type(bad) is not type(good[i])]


@pytest.mark.parametrize(("index", "bad"), _wrong_fields(GOOD_ROUTE, range(5)))
def test_route_with_a_wrong_field_type_is_rejected(index: int, bad: Any) -> None:
    fields = list(GOOD_ROUTE)
    fields[index] = bad
    with pytest.raises(DecodeError, match="wrong field types"):
        unpack_route(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        msgpack.packb(["node", 1, 0, 2]),
        msgpack.packb(["node", 1, 0, 2, 3, 4]),
        msgpack.packb(["node", 1, 0, 2, 3]) + b"\x00",
        msgpack.packb(["node", 1, 0, 2, 3])[:-1],
        msgpack.packb(7),
        msgpack.packb("abcde"),
        msgpack.packb(b"abcde", use_bin_type=True),
        msgpack.packb({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}),
        msgpack.packb({1: 1, 2: 2, 3: 3, 4: 4, 5: 5}),
        msgpack.packb({"node": 0, 1: 0, 2: 0, 3: 0, 4: 0}),  # a map whose keys look like a route
    ],
)
def test_malformed_route_frame_is_rejected(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack_route(frame)


@deterministic
@given(st.binary())
def test_route_garbage_gives_only_decode_error(frame: bytes) -> None:
    try:
        route = unpack_route(frame)
    except DecodeError:
        return
    assert type(route.dst_node) is str and type(route.dst_id) is int


# Arbitrary, well-formed msgpack values: harder garbage than random bytes.
any_values = st.recursive(
    st.none() | st.booleans() | any_ints | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=5),
    max_leaves=10,
)


@deterministic
@given(st.lists(any_values, min_size=5, max_size=5) | any_values)
def test_route_of_wrong_shape_gives_only_decode_error(value: Any) -> None:
    try:
        route = unpack_route(msgpack.packb(value, use_bin_type=True))
    except DecodeError:
        return
    assert [type(field) for field in route] == [str, int, int, int, int]
    assert list(route) == value
    assert len(route.dst_node) <= NODE_NAME_MAX
    assert all(0 <= field <= ID_MAX for field in route[1:])


# --- envelope frame ---


@deterministic
@given(st.sampled_from(sorted(KINDS)), node_names, ids, ids)
def test_envelope_roundtrip(kind: int, src_node: str, src_id: int, corr: int) -> None:
    env = unpack_env(pack_env(kind, src_node, src_id, corr))
    assert type(env) is Envelope
    assert (env.kind, env.src_node, env.src_id, env.corr) == (kind, src_node, src_id, corr)


def test_envelope_default_corr() -> None:
    assert unpack_env(pack_env(TELL, "a", 5)) == Envelope(TELL, "a", 5, 0)


@pytest.mark.parametrize("bad", NEGATIVE)
@pytest.mark.parametrize("index", [2, 3])
def test_envelope_with_a_negative_id_is_rejected(index: int, bad: int) -> None:
    fields = list(GOOD_ENV)
    fields[index] = bad
    name = {2: "src_id", 3: "corr"}[index]
    with pytest.raises(DecodeError, match=rf"{name}={bad} is out of range 0\.\.2\*\*64-1"):
        unpack_env(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii", "two-byte", "huge"])
def test_envelope_with_an_overlong_node_name_is_rejected(name: str) -> None:
    with pytest.raises(DecodeError, match=f"src_node of {len(name)} characters is longer than {NODE_NAME_MAX}"):
        unpack_env(pack_env(TELL, name, 1))


@pytest.mark.parametrize("name", LIMIT_NAMES, ids=["ascii", "two-byte", "four-byte", "empty"])
def test_envelope_at_the_limits_is_accepted(name: str) -> None:
    assert unpack_env(pack_env(REPLY, name, ID_MAX, ID_MAX)) == Envelope(REPLY, name, ID_MAX, ID_MAX)
    assert unpack_env(pack_env(TELL, name, 0)) == Envelope(TELL, name, 0, 0)


@deterministic
@given(st.sampled_from(sorted(KINDS)), near_the_limit, any_ints, any_ints)
def test_envelope_is_accepted_exactly_within_the_limits(kind: int, src_node: str, src_id: int, corr: int) -> None:
    frame = pack_env(kind, src_node, src_id, corr)
    within = len(src_node) <= NODE_NAME_MAX and min(src_id, corr) >= 0
    try:
        env = unpack_env(frame)
    except DecodeError:
        assert not within
        return
    assert within
    assert env == (kind, src_node, src_id, corr)


@pytest.mark.parametrize("kind", [-1, 8, 99, 2**63])
def test_envelope_with_unknown_kind_is_rejected(kind: int) -> None:
    with pytest.raises(DecodeError):
        unpack_env(pack_env(kind, "a", 1, 0))


GOOD_ENV: list[Any] = [ASK, "node", 1, 2]


@pytest.mark.parametrize(("index", "bad"), _wrong_fields(GOOD_ENV, range(1, 4)))
def test_envelope_with_a_wrong_field_type_is_rejected(index: int, bad: Any) -> None:
    fields = list(GOOD_ENV)
    fields[index] = bad
    with pytest.raises(DecodeError, match="wrong field types"):
        unpack_env(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("bad", [None, "1", b"\x01", 1.5])
def test_envelope_with_a_wrong_kind_type_is_rejected(bad: Any) -> None:
    with pytest.raises(DecodeError, match="wrong field types"):
        unpack_env(msgpack.packb([bad, "node", 1, 2], use_bin_type=True))


@pytest.mark.parametrize("bad", [True, False, 1.0, 0.0])
def test_envelope_with_bool_or_float_kind_is_rejected(bad: Any) -> None:
    with pytest.raises(DecodeError):
        unpack_env(msgpack.packb([bad, "node", 1, 2], use_bin_type=True))


@pytest.mark.parametrize("bad", [[1], {"a": 1}])
def test_envelope_with_unhashable_kind_is_rejected(bad: Any) -> None:
    with pytest.raises(DecodeError):
        unpack_env(msgpack.packb([bad, "node", 1, 2], use_bin_type=True))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        msgpack.packb([TELL, "node", 1]),
        msgpack.packb([TELL, "node", 1, 2, 3]),
        msgpack.packb([TELL, "node", 1, 2]) + b"\x00",
        msgpack.packb([TELL, "node", 1, 2])[:-1],
        msgpack.packb(None),
        msgpack.packb("abcd"),
        msgpack.packb(b"\x00\x01\x02\x03", use_bin_type=True),
        msgpack.packb({"a": 1, "b": 2, "c": 3, "d": 4}),
        msgpack.packb({TELL: 0, "node": 0, 2: 0, 3: 0}),  # a map whose keys look like an envelope
    ],
)
def test_malformed_envelope_frame_is_rejected(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack_env(frame)


@deterministic
@given(st.binary())
def test_envelope_garbage_gives_only_decode_error(frame: bytes) -> None:
    try:
        env = unpack_env(frame)
    except DecodeError:
        return
    assert env.kind in KINDS and type(env.src_node) is str
    assert len(env.src_node) <= NODE_NAME_MAX and 0 <= env.src_id <= ID_MAX and 0 <= env.corr <= ID_MAX


# --- splitting a multipart ---


def test_split_one_message() -> None:
    assert split_messages([b"route", b"env", b"payload"]) == [(b"env", b"payload")]


def test_split_a_batch_keeps_order_and_skips_the_route() -> None:
    frames = [b"route"] + [bytes([i]) for i in range(10)]
    assert split_messages(frames) == [(bytes([i]), bytes([i + 1])) for i in range(0, 10, 2)]


def test_split_accepts_the_largest_batch() -> None:
    frames = [b"r"] + [b"%d" % i for i in range(MAX_FRAMES - 1)]
    assert len(frames) == MAX_FRAMES
    pairs = split_messages(frames)
    assert len(pairs) == (MAX_FRAMES - 1) // 2
    assert pairs[0] == (b"0", b"1") and pairs[-1] == (frames[-2], frames[-1])


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"route"],
        [b"route", b"env"],
        [b"route", b"env", b"payload", b"env2"],
        [b"r"] + [b"x"] * (MAX_FRAMES + 1),
        [b"r"] + [b"x"] * (10 * MAX_FRAMES),
    ],
    ids=["empty", "route-only", "one-odd", "three-odd", "too-many", "far-too-many"],
)
def test_split_rejects_bad_frame_counts(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError, match=f"{len(frames)} frames"):
        split_messages(frames)


@deterministic
@given(st.lists(st.binary(max_size=3), max_size=40))
def test_split_either_pairs_everything_or_rejects(frames: list[bytes]) -> None:
    try:
        pairs = split_messages(frames)
    except DecodeError:
        assert len(frames) < 3 or len(frames) % 2 == 0
        return
    assert [frame for pair in pairs for frame in pair] == frames[1:]


@pytest.mark.parametrize(("kind", "flags"), [(TELL, 0), (STOP, 0), (ASK, FLAG_ASK), (REPLY, FLAG_REPLY),
                                             (FAIL, FLAG_REPLY)])
def test_message_frames_mark_the_route_by_the_kind(kind: int, flags: int) -> None:
    route, env, payload = message_frames("n2", 7, kind, "n1", 9, b"body", corr=3)
    assert unpack_route(route) == Route("n2", 7, flags, 9, 3)
    assert unpack_env(env) == Envelope(kind, "n1", 9, 3)
    assert payload == b"body"
