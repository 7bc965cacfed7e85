"""Gorilix: an actor host for Python.

The public API. Layers import one way: the tools (CLI, demo, bench) -> the
core (this package: the node, the public API) -> ``gorilix.workers`` (worker
processes, actors, scheduling) -> ``gorilix.transport`` (codec, frames,
sockets). The repository keeps ``workers/`` and ``transport/`` as top-level
folders; they install only as subpackages of ``gorilix``.

Names are imported on first use (PEP 562), so a worker process that imports
``gorilix.workers.runtime`` does not pay for the node, the cluster or the CLI.
"""

from __future__ import annotations

import importlib
import logging as _logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs; the application decides where it goes (the CLI sets it up).
_logging.getLogger("gorilix").addHandler(_logging.NullHandler())

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "PERMANENT": "gorilix.workers.spec",
    "TEMPORARY": "gorilix.workers.spec",
    "TRANSIENT": "gorilix.workers.spec",
    "Actor": "gorilix.workers.actor",
    "AccessDenied": "gorilix.errors",
    "ActorError": "gorilix.errors",
    "ActorNotFound": "gorilix.errors",
    "ActorRef": "gorilix.workers.ref",
    "ActorSystem": "gorilix.system",
    "AskTimeout": "gorilix.errors",
    "ClusterError": "gorilix.errors",
    "DeadLetters": "gorilix.system",
    "DecodeError": "gorilix.errors",
    "Down": "gorilix.workers.messages",
    "Exit": "gorilix.workers.messages",
    "GenServer": "gorilix.genserver",
    "GorilixError": "gorilix.errors",
    "InsecureWarning": "gorilix.errors",
    "InvalidArgument": "gorilix.errors",
    "UnknownMessageType": "gorilix.errors",
    "MailboxFull": "gorilix.errors",
    "NodeDown": "gorilix.errors",
    "NodeUnreachable": "gorilix.errors",
    "NotRunning": "gorilix.errors",
    "PoolFuture": "gorilix.submit",
    "PoolRef": "gorilix.system",
    "SerializationError": "gorilix.errors",
    "SpawnError": "gorilix.errors",
    "WorkerDied": "gorilix.errors",
    "WorkerInfo": "gorilix.system",
    "message": "gorilix.transport.codec",
}
#: Public submodules reached as attributes (``gorilix.supervisor.Strategy``).
_SUBMODULES = frozenset({"supervisor"})

__all__ = [
    "AccessDenied",
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
    "InsecureWarning",
    "InvalidArgument",
    "UnknownMessageType",
    "MailboxFull",
    "NodeDown",
    "NodeUnreachable",
    "NotRunning",
    "PoolFuture",
    "PoolRef",
    "SerializationError",
    "SpawnError",
    "WorkerDied",
    "WorkerInfo",
    "message",
    "supervisor",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"gorilix.{name}")
    elif name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value  # later lookups skip this function
        return value
    else:
        raise AttributeError(f"module 'gorilix' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from gorilix import supervisor
    from gorilix.errors import (
        AccessDenied,
        ActorError,
        ActorNotFound,
        AskTimeout,
        ClusterError,
        DecodeError,
        GorilixError,
        InsecureWarning,
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
    from gorilix.genserver import GenServer
    from gorilix.submit import PoolFuture
    from gorilix.system import ActorSystem, DeadLetters, PoolRef, WorkerInfo
    from gorilix.transport.codec import message
    from gorilix.workers.actor import Actor
    from gorilix.workers.messages import Down, Exit
    from gorilix.workers.ref import ActorRef
    from gorilix.workers.spec import PERMANENT, TEMPORARY, TRANSIENT
