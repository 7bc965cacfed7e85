"""The error hierarchy, shared by every layer because errors travel on the wire.

``gorilix`` re-exports these names; users catch ``gorilix.GorilixError``.
An error raised in one process and reported in another keeps its fields: it
is carried as a small record (code, remote type, message, traceback).
"""

from __future__ import annotations

from typing import Any


class GorilixError(Exception):
    """Root of every error Gorilix raises on purpose."""


class SerializationError(GorilixError, TypeError):
    """A value cannot travel on the wire (nothing was sent)."""


class DecodeError(GorilixError):
    """Bytes from a socket are not a valid Gorilix frame or value."""


class UnknownMessageType(DecodeError):
    """A message names a @message class that the receiving process has not imported.

    The frame itself is sound: the receiver fails the ask at once (or counts a
    tell as a dead letter) instead of dropping it, and names the class.
    """


class SpawnError(GorilixError):
    """An actor could not be created; the message says why."""


class ActorNotFound(GorilixError):
    """No actor lives at that address (never existed, or stopped)."""


class AskTimeout(GorilixError, TimeoutError):
    """An ask got no answer in time."""


class MailboxFull(GorilixError):
    """The actor's bounded mailbox is full; the message was not queued."""


class WorkerDied(GorilixError):
    """The worker process hosting the actor died while the ask was in flight."""


class NotRunning(GorilixError):
    """The actor system is stopped or was never started in this process."""


class ClusterError(GorilixError):
    """A clustering operation failed (not enabled, node not found, join failed)."""


class NodeDown(ClusterError):
    """The node hosting the actor left or was declared dead while the ask was in flight."""


class NodeUnreachable(GorilixError):
    """No node answered at that address (not running, a wrong port, or a secret that does not match)."""


class InvalidArgument(GorilixError, ValueError):
    """A caller passed a bad argument (wrong type or value); nothing was sent."""


class ActorError(GorilixError):
    """An exception raised inside an actor, reported to the asker.

    ``remote_type`` is the qualified name of the original exception class,
    ``remote_message`` its message and ``remote_traceback`` the formatted
    traceback from the worker process.
    """

    def __init__(
        self, remote_type: str, remote_message: str, remote_traceback: str = "", actor: str = ""
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.actor = actor
        where = f" in actor {actor}" if actor else ""
        super().__init__(f"{remote_type}{where}: {remote_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.remote_type, self.remote_message, self.remote_traceback, self.actor),
        )


# Wire codes for errors that cross process boundaries. Codes are stable: they
# are part of the protocol, so never renumber one.
_CODES: dict[type[BaseException], int] = {
    GorilixError: 0,
    ActorError: 1,
    ActorNotFound: 2,
    AskTimeout: 3,
    MailboxFull: 4,
    SpawnError: 5,
    WorkerDied: 6,
    SerializationError: 7,
    NotRunning: 8,
    ClusterError: 9,
    DecodeError: 10,
    NodeDown: 11,
    InvalidArgument: 12,
    UnknownMessageType: 13,
    NodeUnreachable: 14,
}
_TYPES: dict[int, type[GorilixError]] = {code: cls for cls, code in _CODES.items() if issubclass(cls, GorilixError)}


def error_to_wire(exc: BaseException) -> list[Any]:
    """Turn an exception into the record that travels in an error reply."""
    if isinstance(exc, ActorError):
        return [1, exc.remote_type, exc.remote_message, exc.remote_traceback, exc.actor]
    code = _CODES.get(type(exc))
    if code is not None:
        return [code, type(exc).__name__, str(exc), "", ""]
    return [1, qualified_name(type(exc)), str(exc), "", ""]


def error_from_wire(record: Any) -> GorilixError:
    """Rebuild the exception a peer reported; unknown records become GorilixError."""
    try:
        code, type_name, message, traceback_text, actor = record
        cls = _TYPES.get(int(code), GorilixError)
    except (TypeError, ValueError, OverflowError):
        return DecodeError(f"malformed error record: {record!r:.200}")
    if cls is ActorError:
        return ActorError(str(type_name), str(message), str(traceback_text), str(actor))
    return cls(str(message))


def qualified_name(cls: type) -> str:
    module = cls.__module__
    if module in ("builtins", "__main__", "__mp_main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
