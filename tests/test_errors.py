"""The error hierarchy and the error record that travels in FAIL replies."""

from __future__ import annotations

import inspect
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gorilix.transport import errors
from gorilix.transport.codec import decode, encode
from gorilix.transport.errors import (
    ActorError,
    ActorNotFound,
    AskTimeout,
    ClusterError,
    DecodeError,
    GorilixError,
    InvalidArgument,
    MailboxFull,
    NodeDown,
    NotRunning,
    SerializationError,
    SpawnError,
    WorkerDied,
    error_from_wire,
    error_to_wire,
    qualified_name,
)

deterministic = settings(derandomize=True, database=None, deadline=None, max_examples=300)

ALL_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, BaseException) and not issubclass(cls, Warning) and cls.__module__ == errors.__name__
]
#: Raised only where it happens, never sent: a client that lacks a node's secret (its fields say which case).
LOCAL_ERRORS = {errors.AccessDenied}
SIMPLE_ERRORS = [cls for cls in ALL_ERRORS if cls is not ActorError and cls not in LOCAL_ERRORS]


class Custom(Exception):
    class Inner(ValueError):
        pass


class UserGorilixError(GorilixError):
    """A subclass the wire does not know."""


def over_the_wire(exc: BaseException) -> GorilixError:
    """What the peer rebuilds: record -> codec bytes -> record -> exception."""
    return error_from_wire(decode(encode(error_to_wire(exc))))


def test_the_module_defines_the_expected_classes() -> None:
    assert set(ALL_ERRORS) == {
        GorilixError, SerializationError, DecodeError, SpawnError, ActorNotFound,
        AskTimeout, MailboxFull, WorkerDied, NotRunning, ClusterError, NodeDown, ActorError,
        InvalidArgument, errors.UnknownMessageType, errors.NodeUnreachable, errors.AccessDenied,
    }
    assert issubclass(errors.InsecureWarning, UserWarning)  # (a warning, not an error: warnings.warn takes it)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_derives_from_gorilix_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, GorilixError)
    assert issubclass(cls, Exception)


def test_stdlib_bases_so_users_can_catch_familiar_types() -> None:
    assert issubclass(AskTimeout, TimeoutError)
    assert issubclass(SerializationError, TypeError)
    assert not issubclass(DecodeError, TypeError)
    # A bad argument is a ValueError, as the stdlib's own checks are (``except ValueError`` keeps working).
    assert issubclass(InvalidArgument, ValueError)


@pytest.mark.parametrize("cls", SIMPLE_ERRORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("text", ["", "boom", "ünïcode ✓ with\nnewline", "x" * 5000])
def test_roundtrip_keeps_type_and_message(cls: type[GorilixError], text: str) -> None:
    back = over_the_wire(cls(text))
    assert type(back) is cls
    assert str(back) == text


@pytest.mark.parametrize("cls", SIMPLE_ERRORS, ids=lambda c: c.__name__)
def test_record_layout_for_known_errors(cls: type[GorilixError]) -> None:
    code, type_name, text, traceback_text, actor = error_to_wire(cls("msg"))
    assert type(code) is int
    assert (type_name, text, traceback_text, actor) == (cls.__name__, "msg", "", "")


def test_wire_codes_are_distinct_and_stable() -> None:
    codes = {cls: error_to_wire(cls("m"))[0] for cls in SIMPLE_ERRORS}
    codes[ActorError] = error_to_wire(ActorError("T", "m"))[0]
    assert codes == {
        GorilixError: 0, ActorError: 1, ActorNotFound: 2, AskTimeout: 3, MailboxFull: 4,
        SpawnError: 5, WorkerDied: 6, SerializationError: 7, NotRunning: 8,
        ClusterError: 9, DecodeError: 10, NodeDown: 11, InvalidArgument: 12,
        errors.UnknownMessageType: 13, errors.NodeUnreachable: 14,
    }


@deterministic
@given(st.text(), st.text(), st.text(), st.text())
def test_actor_error_roundtrip_keeps_every_field(
    remote_type: str, remote_message: str, tb: str, actor: str
) -> None:
    back = over_the_wire(ActorError(remote_type, remote_message, tb, actor))
    assert type(back) is ActorError
    assert isinstance(back, ActorError)
    assert (back.remote_type, back.remote_message, back.remote_traceback, back.actor) == (
        remote_type, remote_message, tb, actor,
    )


def test_actor_error_message_format() -> None:
    assert str(ActorError("ValueError", "bad", "tb", "worker/7")) == (
        "ValueError in actor worker/7: bad"
    )
    assert str(ActorError("ValueError", "bad")) == "ValueError: bad"
    back = over_the_wire(ActorError("KeyError", "'k'", "Traceback...", "a1"))
    assert str(back) == "KeyError in actor a1: 'k'"


def test_actor_error_pickles_with_its_fields() -> None:
    back = pickle.loads(pickle.dumps(ActorError("T", "m", "tb", "a")))
    assert type(back) is ActorError
    assert (back.remote_type, back.remote_message, back.remote_traceback, back.actor) == (
        "T", "m", "tb", "a",
    )


@pytest.mark.parametrize(
    ("exc", "type_name", "text"),
    [
        (ValueError("bad value"), "ValueError", "bad value"),
        (KeyError("k"), "KeyError", "'k'"),
        (ZeroDivisionError("division by zero"), "ZeroDivisionError", "division by zero"),
        (Custom("c"), f"{__name__}.Custom", "c"),
        (Custom.Inner("i"), f"{__name__}.Custom.Inner", "i"),
        (UserGorilixError("u"), f"{__name__}.UserGorilixError", "u"),
        (KeyboardInterrupt(), "KeyboardInterrupt", ""),
    ],
)
def test_foreign_exception_becomes_actor_error(
    exc: BaseException, type_name: str, text: str
) -> None:
    assert error_to_wire(exc) == [1, type_name, text, "", ""]
    back = over_the_wire(exc)
    assert type(back) is ActorError
    assert back.remote_type == type_name
    assert back.remote_message == text
    assert back.actor == "" and back.remote_traceback == ""


def test_qualified_name() -> None:
    assert qualified_name(ValueError) == "ValueError"
    assert qualified_name(Custom.Inner) == f"{__name__}.Custom.Inner"
    assert qualified_name(ActorError) == "gorilix.transport.errors.ActorError"


def test_unknown_code_becomes_gorilix_error() -> None:
    back = error_from_wire([999, "Future", "from a newer peer", "", ""])
    assert type(back) is GorilixError
    assert str(back) == "from a newer peer"


def test_fields_of_other_types_are_turned_into_text() -> None:
    back = error_from_wire([1, 5, None, b"x", 7])
    assert type(back) is ActorError
    assert (back.remote_type, back.remote_message, back.remote_traceback, back.actor) == (
        "5", "None", "b'x'", "7",
    )


@pytest.mark.parametrize(
    "record",
    [
        None,
        3,
        1.5,
        "",
        "abc",
        [],
        [1, "T", "m", ""],
        [1, "T", "m", "", "", "extra"],
        ["x", "T", "m", "", ""],
        [None, "T", "m", "", ""],
        [[1], "T", "m", "", ""],
        [{}, "T", "m", "", ""],
        [math.nan, "T", "m", "", ""],
        {"a": 1},
    ],
)
def test_malformed_record_gives_decode_error(record: Any) -> None:
    back = error_from_wire(record)
    assert type(back) is DecodeError
    assert "malformed error record" in str(back)


@pytest.mark.parametrize("code", [math.inf, -math.inf])
def test_infinite_code_gives_decode_error(code: float) -> None:
    back = error_from_wire([code, "T", "m", "", ""])
    assert type(back) is DecodeError


# Any value a peer can send.
wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.lists(inner, max_size=6).map(tuple)
    | st.dictionaries(st.text(max_size=3), inner, max_size=6),
    max_leaves=12,
)


@deterministic
@given(wire_values | st.lists(wire_values, min_size=5, max_size=5))
def test_any_record_gives_an_error_instance_and_never_raises(record: Any) -> None:
    assert isinstance(error_from_wire(record), GorilixError)
