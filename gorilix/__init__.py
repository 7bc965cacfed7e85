"""Gorilix: an actor host for Python.

The public API. Layers import one way: ``gorilix`` (this package: the
node, the public API, the CLI) -> ``workers`` (worker processes, actors,
scheduling) -> ``transport`` (codec, frames, sockets).
"""

import logging as _logging

from gorilix import supervisor
from gorilix.errors import (
    ActorError,
    ActorNotFound,
    AskTimeout,
    ClusterError,
    DecodeError,
    GorilixError,
    MailboxFull,
    NodeDown,
    NotRunning,
    SerializationError,
    SpawnError,
    WorkerDied,
)
from gorilix.genserver import GenServer
from gorilix.system import ActorSystem, DeadLetters, PoolRef, WorkerInfo
from transport.codec import message
from workers.actor import Actor
from workers.messages import Down, Exit
from workers.ref import ActorRef
from workers.spec import PERMANENT, TEMPORARY, TRANSIENT

__version__ = "0.1.0"

# A library logs; the application decides where it goes (the CLI sets it up).
_logging.getLogger("gorilix").addHandler(_logging.NullHandler())

__all__ = [
    "PERMANENT",
    "TEMPORARY",
    "TRANSIENT",
    "Actor",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorSystem",
    "AskTimeout",
    "ClusterError",
    "DeadLetters",
    "DecodeError",
    "Down",
    "Exit",
    "GenServer",
    "GorilixError",
    "MailboxFull",
    "NodeDown",
    "NotRunning",
    "PoolRef",
    "SerializationError",
    "SpawnError",
    "WorkerDied",
    "WorkerInfo",
    "message",
    "supervisor",
]
