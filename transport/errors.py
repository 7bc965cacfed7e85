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


class AccessDenied(NodeUnreachable):
    """A node is there, but this client lacks its secret: none found, the wrong one, or one too many.

    ``address`` is the node's; ``secret_from`` says where the client's secret
    came from (a file, or None for none); ``cause`` is one of
    ``"missing"`` (no secret given and no per-user secret on this machine),
    ``"refused"`` (the node refused the handshake: another secret),
    ``"node_has_secret"`` (the client connected without one) or
    ``"node_has_none"`` (the node runs without a secret, and the client used one).
    ``str()`` says what to do in library terms; :meth:`advice` in the CLI's.
    """

    def __init__(self, address: str, cause: str, secret_from: str | None, default_path: str | None) -> None:
        self.address, self.cause, self.secret_from, self.default_path = address, cause, secret_from, default_path
        super().__init__(self.advice(cli=False))

    def advice(self, cli: bool) -> str:
        """What went wrong and what to do, naming the options of the library or (``cli``) of the CLI."""
        secret_file, insecure = ("--secret-file", "--insecure") if cli else ("secret_file=", "insecure=True")
        default = self.default_path or "the per-user secret"
        if self.cause == "missing":
            return (f"no secret to reach the node at {self.address}: none given, and no per-user secret at "
                    f"{default} (a node started without a secret writes it there); pass {secret_file} with the "
                    f"node's secret file, or {insecure} if the node runs without a secret")
        if self.cause == "refused":
            return (f"the node at {self.address} refused the handshake: its secret is not {self.secret_from}; pass {secret_file} with the node's secret file (its --secret-file, "
                    "or the per-user secret of the user who started it)")
        if self.cause == "node_has_secret":
            where = f" ({self.default_path})" if self.default_path else ""
            return (f"the node at {self.address} has a secret, and {insecure} connects without one; drop "
                    f"{insecure} to use the per-user secret{where}, or pass {secret_file}")
        return (f"the node at {self.address} runs without a secret (it was started with --insecure or "
                f"insecure=True), and this client used {self.secret_from}; connect with {insecure}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.address, self.cause, self.secret_from, self.default_path))


class InsecureWarning(UserWarning):
    """A node runs with no secret (``insecure=True``, ``--insecure``): whoever reaches its ports controls it."""


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
