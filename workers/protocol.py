"""The node<->worker protocol: one frozen dataclass per control message, dispatched by type on both sides.

On the wire each is a control message ``[op, *fields]`` (msgpack, through
the codec) to actor id 0 of the other end, as clients' requests are, so one
control endpoint serves workers, clients and peers. What a worker sends is
checked field by field when it arrives (:func:`report_from_wire`): the node
trusts no worker further than its own socket, and a report that does not
parse is dropped and counted, never half-applied.

Node -> worker (:data:`WorkerOp`): :class:`Spawn`, :class:`StopActor`,
:class:`Suspend`, :class:`Restart`, :class:`ExitSignal`, :class:`Reload`,
:class:`Shutdown`. Worker -> node (:data:`WorkerReport`): every other class
here. A worker also sends requests any client may (``subscribe``,
``unsubscribe``, ``publish``): those are the control API's, not this
protocol's.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any, ClassVar

from gorilix.transport.errors import DecodeError
from gorilix.workers.spec import ActorSpec

_NONE = type(None)


def _check(cls: type, values: list[Any]) -> tuple[Any, ...]:
    """``values`` if they have the types ``cls.TYPES`` names (exact types: a bool is no int); else DecodeError."""
    types: tuple[Any, ...] = cls.TYPES  # type: ignore[attr-defined]
    if len(values) != len(types):
        raise DecodeError(f"{cls.OP}: {len(values)} fields, expected {len(types)}")  # type: ignore[attr-defined]
    for value, kind, field in zip(values, types, fields(cls), strict=True):  # type: ignore[arg-type]
        if type(value) not in (kind if type(kind) is tuple else (kind,)):
            raise DecodeError(f"{cls.OP}: {field.name} has type {type(value).__name__}")  # type: ignore[attr-defined]
    return tuple(values)


class _Op:
    """Wire form ``[OP, *fields]``; ``TYPES`` are the exact types of the fields, in order."""

    __slots__ = ()
    OP: ClassVar[str]
    TYPES: ClassVar[tuple[Any, ...]]

    def to_wire(self) -> list[Any]:
        return [self.OP, *astuple(self)]  # type: ignore[call-overload]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Any:
        return cls(*_check(cls, values))


# -- node -> worker -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn(_Op):
    """Create actor ``actor_id`` from ``spec`` on this worker; answered by Spawned or SpawnFailed."""

    OP = "spawn"
    actor_id: int
    spec: ActorSpec

    def to_wire(self) -> list[Any]:
        return [self.OP, self.actor_id, self.spec.to_wire()]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Spawn:
        if len(values) != 2 or type(values[0]) is not int or type(values[1]) is not list:
            raise DecodeError("spawn: expected [actor_id, spec]")
        try:
            spec = ActorSpec.from_wire(values[1])
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"spawn: bad spec: {exc}") from None
        return cls(values[0], spec)


@dataclass(frozen=True, slots=True)
class _ActorOp(_Op):
    """An op about one actor, with the reason it is given."""

    TYPES = (int, str)
    actor_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class StopActor(_ActorOp):
    """Stop the actor for good (its on_stop runs); answered by a final Exited."""

    OP = "stop_actor"


@dataclass(frozen=True, slots=True)
class Suspend(_ActorOp):
    """End the actor's incarnation without reporting it: its supervisor restarts it (a sibling's restart)."""

    OP = "suspend"


@dataclass(frozen=True, slots=True)
class Restart(_ActorOp):
    """Start a new incarnation of the actor in its cell (its mailbox kept); answered by Restarted or Exited."""

    OP = "restart"


@dataclass(frozen=True, slots=True)
class ExitSignal(_Op):
    """An actor linked to ``actor_id`` ended: ``source`` is ``[node, id, name]`` of the one that did."""

    OP = "exit_signal"
    actor_id: int
    source: tuple[str, int, str | None]
    reason: str

    def to_wire(self) -> list[Any]:
        return [self.OP, self.actor_id, list(self.source), self.reason]

    @classmethod
    def from_fields(cls, values: list[Any]) -> ExitSignal:
        if (len(values) != 3 or type(values[0]) is not int or type(values[1]) is not list or len(values[1]) != 3
                or type(values[2]) is not str):
            raise DecodeError("exit_signal: expected [actor_id, [node, id, name], reason]")
        node, source_id, name = values[1]
        if type(node) is not str or type(source_id) is not int or type(name) not in (str, _NONE):
            raise DecodeError("exit_signal: bad source")
        return cls(values[0], (node, source_id, name), values[2])


@dataclass(frozen=True, slots=True)
class Reload(_Op):
    """Re-import ``module`` and move live actors of its classes to the new code; answered by Reloaded."""

    OP = "reload"
    TYPES = (str,)
    module: str


@dataclass(frozen=True, slots=True)
class Shutdown(_Op):
    """Stop every actor and exit."""

    OP = "shutdown"
    TYPES = ()


@dataclass(frozen=True, slots=True)
class Handoff(_Op):
    """Give the actor up once what was sent to it before is handled (it moves to another worker); answered by HandedOff."""

    OP = "handoff"
    TYPES = (int,)
    actor_id: int


WorkerOp = Spawn | StopActor | Suspend | Restart | ExitSignal | Reload | Shutdown | Handoff
WORKER_OPS: dict[str, type[Any]] = {cls.OP: cls for cls in (Spawn, StopActor, Suspend, Restart, ExitSignal,
                                                              Reload, Shutdown, Handoff)}


# -- worker -> node -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachWorker(_Op):
    """The worker of ``slot`` is up (its socket is the one this came on)."""

    OP = "attach_worker"
    TYPES = (int, int, int)
    slot: int
    incarnation: int
    pid: int


@dataclass(frozen=True, slots=True)
class Spawned(_Op):
    OP = "spawned"
    TYPES = (int,)
    actor_id: int


@dataclass(frozen=True, slots=True)
class SpawnFailed(_Op):
    """``error`` is ``transport.errors.error_to_wire`` of why (``error_from_wire`` reads any value safely)."""

    OP = "spawn_failed"
    TYPES = (int, list)
    actor_id: int
    error: list[Any]


@dataclass(frozen=True, slots=True)
class Exited(_Op):
    """The actor's incarnation ended; ``final``: it is gone for good (stopped), else its supervisor decides."""

    OP = "exited"
    TYPES = (int, str, bool, bool)
    actor_id: int
    reason: str
    abnormal: bool
    final: bool


@dataclass(frozen=True, slots=True)
class Restarted(_Op):
    OP = "restarted"
    TYPES = (int,)
    actor_id: int


@dataclass(frozen=True, slots=True)
class _WatchOp(_Op):
    """Actor ``actor_id`` (on the worker that sends it) about ``node``/``other``."""

    TYPES = (int, str, int)
    actor_id: int
    node: str
    other: int


@dataclass(frozen=True, slots=True)
class Monitor(_WatchOp):
    OP = "monitor"


@dataclass(frozen=True, slots=True)
class Demonitor(_WatchOp):
    OP = "demonitor"


@dataclass(frozen=True, slots=True)
class Link(_WatchOp):
    OP = "link"


@dataclass(frozen=True, slots=True)
class Unlink(_WatchOp):
    OP = "unlink"


@dataclass(frozen=True, slots=True)
class DeadLetter(_Op):
    """A message for ``dst_id`` could not be delivered inside the worker."""

    OP = "dead_letter"
    TYPES = (int, str)
    dst_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Load(_Op):
    """The worker's counters, every second: queued messages, the deepest mailbox, handled, malformed, dead letters."""

    OP = "load"
    TYPES = (int, int, int, int, int)
    queued: int
    deepest: int
    handled: int
    malformed: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class Reloaded(_Op):
    OP = "reloaded"
    TYPES = (str, int, (str, _NONE))
    module: str
    moved: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Register(_Op):
    """An actor the worker made itself (``self.spawn``, returning a ref at once) runs there already."""

    OP = "register"
    actor_id: int
    spec: ActorSpec

    def to_wire(self) -> list[Any]:
        return [self.OP, self.actor_id, self.spec.to_wire()]

    @classmethod
    def from_fields(cls, values: list[Any]) -> Register:
        spawn = Spawn.from_fields(values)
        return cls(spawn.actor_id, spawn.spec)


@dataclass(frozen=True, slots=True)
class SpawnAt(_Op):
    """An actor the worker made itself, to be placed on ``worker`` (or anywhere, when that is not a worker)."""

    OP = "spawn_at"
    actor_id: int
    spec: ActorSpec
    worker: int | None

    def to_wire(self) -> list[Any]:
        return [self.OP, self.actor_id, self.spec.to_wire(), self.worker]

    @classmethod
    def from_fields(cls, values: list[Any]) -> SpawnAt:
        if len(values) != 3 or type(values[2]) not in (int, _NONE):
            raise DecodeError("spawn_at: expected [actor_id, spec, worker]")
        spawn = Spawn.from_fields(values[:2])
        return cls(spawn.actor_id, spawn.spec, values[2])


@dataclass(frozen=True, slots=True)
class HandedOff(_Op):
    """The actor handled everything sent to it before its Handoff, and is gone from this worker."""

    OP = "handed_off"
    TYPES = (int,)
    actor_id: int


WorkerReport = (AttachWorker | Spawned | SpawnFailed | Exited | Restarted | Monitor | Demonitor | Link | Unlink
                | DeadLetter | Load | Reloaded | Register | SpawnAt | HandedOff)
WORKER_REPORTS: dict[str, type[Any]] = {cls.OP: cls for cls in (
    AttachWorker, Spawned, SpawnFailed, Exited, Restarted, Monitor, Demonitor, Link, Unlink, DeadLetter, Load,
    Reloaded, Register, SpawnAt, HandedOff)}


def op_from_wire(value: object) -> WorkerOp:
    """A node's op as a worker receives it; DecodeError when it is not one."""
    return _from_wire(value, WORKER_OPS)  # type: ignore[no-any-return]


def report_from_wire(value: object) -> WorkerReport:
    """A worker's report as the node receives it; DecodeError when it is not one."""
    return _from_wire(value, WORKER_REPORTS)  # type: ignore[no-any-return]


def _from_wire(value: object, table: dict[str, type[Any]]) -> Any:
    if type(value) is not list or not value or type(value[0]) is not str:
        raise DecodeError("a control message is [op, *fields]")
    cls = table.get(value[0])
    if cls is None:
        raise DecodeError(f"unknown op {value[0][:40]!r}")
    return cls.from_fields(value[1:])
