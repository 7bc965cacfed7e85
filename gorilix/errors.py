"""The errors Gorilix raises; all derive from :class:`GorilixError`."""

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
    NodeUnreachable,
    NotRunning,
    SerializationError,
    SpawnError,
    UnknownMessageType,
    WorkerDied,
)

__all__ = [
    "ActorError",
    "ActorNotFound",
    "AskTimeout",
    "ClusterError",
    "DecodeError",
    "GorilixError",
    "InvalidArgument",
    "MailboxFull",
    "NodeDown",
    "NodeUnreachable",
    "NotRunning",
    "SerializationError",
    "SpawnError",
    "UnknownMessageType",
    "WorkerDied",
]
