"""What it takes to (re)create an actor anywhere: its class path and arguments.

Arguments travel as codec bytes, so re-creating an actor on another worker
(after a crash or a worker death) gives it fresh copies of the same values.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

from gorilix.transport import codec
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument, SerializationError, SpawnError

PERMANENT = "permanent"  # always restarted
TRANSIENT = "transient"  # restarted only after an abnormal exit
TEMPORARY = "temporary"  # never restarted
RESTART_TYPES = (PERMANENT, TRANSIENT, TEMPORARY)

#: The longest name an actor can be registered under (as long as a node name).
NAME_MAX = 255


def valid_name(name: object) -> bool:
    """A name an actor can be registered under: a non-empty str of at most NAME_MAX characters."""
    return type(name) is str and 0 < len(name) <= NAME_MAX


def check_worker(worker: object, workers: int | None = None, node: str = "") -> None:
    """SpawnError unless ``worker`` is None or a worker number (below ``workers`` when known)."""
    if worker is None:
        return
    if type(worker) is not int or not 0 <= worker < 2**64:
        raise SpawnError(f"worker={shown(worker)} must be a worker number (an int >= 0) or None (any worker)")
    if workers is not None and worker >= workers:  # the node's own words for it
        raise SpawnError(f"no worker {worker} on node {node}; it has workers 0..{workers - 1}")


@dataclass(frozen=True, slots=True)
class ActorSpec:
    class_path: str  # "package.module:QualName"
    args: bytes  # codec bytes of [args, kwargs]
    name: str | None = None
    restart: str = PERMANENT
    mailbox_size: int | None = None
    #: The node may re-create it on another worker to balance them (a pool's member): it keeps no
    #: state it cannot lose, as after a restart.
    movable: bool = False

    def to_wire(self) -> list[Any]:
        return [self.class_path, self.args, self.name, self.restart, self.mailbox_size, self.movable]

    @classmethod
    def from_wire(cls, fields: list[Any]) -> ActorSpec:
        """From its wire form; the form of 0.1.0 (no ``movable``) is read too."""
        if type(fields) is not list or len(fields) not in (5, 6):  # (a ValueError, as unpacking one would raise)
            raise ValueError(f"malformed actor spec: {shown(fields)}")
        class_path, args, name, restart, mailbox_size = fields[:5]
        movable = fields[5] if len(fields) == 6 else False
        if (
            type(class_path) is not str or type(args) is not bytes
            or not (name is None or type(name) is str) or restart not in RESTART_TYPES
            or not (mailbox_size is None or type(mailbox_size) is int) or type(movable) is not bool
        ):
            raise codec.DecodeError("malformed actor spec")
        return cls(class_path, args, name, restart, mailbox_size, movable)


def class_path(cls: type) -> str:
    module = "__main__" if cls.__module__ == "__mp_main__" else cls.__module__
    if "<locals>" in cls.__qualname__:
        raise SpawnError(
            f"{cls.__qualname__} is defined inside a function; workers can only import "
            "classes defined at module level"
        )
    return f"{module}:{cls.__qualname__}"


def make_spec(
    actor_class: type | str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str | None = None,
    restart: str = PERMANENT,
    mailbox_size: int | None = None,
    movable: bool = False,
    base: type | None = None,
) -> ActorSpec:
    """Validate at the caller what can be validated there, and build the spec."""
    if isinstance(actor_class, str):
        path = actor_class
        if ":" not in path:
            raise SpawnError(f"actor class path {shown(path, 200)} must look like 'package.module:Class'")
    else:
        if not isinstance(actor_class, type) or (base is not None and not issubclass(actor_class, base)):
            raise SpawnError(f"{shown(actor_class)} is not an Actor subclass; only Actor subclasses can be spawned")
        path = class_path(actor_class)
    if restart not in RESTART_TYPES:
        raise SpawnError(f"restart={shown(restart)} is not one of {', '.join(RESTART_TYPES)}")
    if mailbox_size is not None and (type(mailbox_size) is not int or not 1 <= mailbox_size <= 2**64 - 1):
        raise SpawnError(f"mailbox_size={shown(mailbox_size)} must be a positive int (at most 2**64-1) or None")
    if name is not None and not valid_name(name):
        raise SpawnError(
            f"name={shown(name)} must be a non-empty str of at most {NAME_MAX} characters, or None"
        )
    try:
        encoded = codec.encode([list(args), kwargs])
    except SerializationError as exc:
        raise SpawnError(f"cannot send the arguments of {path}: {exc}") from exc
    if type(movable) is not bool:
        raise SpawnError(f"movable={shown(movable)} must be True or False")
    return ActorSpec(path, encoded, name, restart, mailbox_size, movable)


def resolve_class(path: str, base: type) -> type[Any]:
    """Import the class a spec names; only ``base`` subclasses are accepted."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise SpawnError(f"malformed actor class path {shown(path, 200)}")
    try:
        if module_name == "__main__":
            # Under the spawn start method the user's main script is imported
            # in every child as __mp_main__.
            module = sys.modules.get("__mp_main__") or sys.modules["__main__"]
        else:
            module = importlib.import_module(module_name)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise SpawnError(
            f"cannot import actor class {path} in the worker: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise SpawnError(f"{path} is not an Actor subclass; only Actor subclasses can be spawned")
    return obj


def decode_args(spec: ActorSpec) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs = codec.decode(spec.args)
    return args, kwargs


def check_topic(op: str, topic: object) -> str:
    """``topic`` as a plain str; InvalidArgument unless it is a non-empty str (5 is not the topic "5")."""
    if isinstance(topic, str) and topic:
        return str.__str__(topic)
    raise InvalidArgument(f"{op}: topic={shown(topic)} must be a non-empty str")
