"""Supervision trees: ``from gorilix import supervisor``.

A supervisor lives in the node (it survives any worker's death) and restarts
its children, which may live on any worker, by its strategy. Refs stay valid
across restarts. Supervisors nest; the node's root supervisor adopts every
actor spawned without one.

    strategy = supervisor.Strategy(supervisor.ONE_FOR_ONE, max_restarts=3, within_seconds=5.0)
    sup = system.spawn_supervisor("root", strategy)
    ref = sup.add_child(supervisor.ChildSpec(id="greeter", actor_class=Greeter))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gorilix.backoff import Backoff
from gorilix.breaker import BreakerConfig, CircuitBreaker, CircuitState
from gorilix.supervision import ONE_FOR_ALL, ONE_FOR_ONE, REST_FOR_ONE, Strategy
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument
from gorilix.workers.actor import Actor
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import (
    NAME_MAX,
    PERMANENT,
    TEMPORARY,
    TRANSIENT,
    check_worker,
    make_spec,
    valid_name,
)

__all__ = [
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PERMANENT",
    "REST_FOR_ONE",
    "TEMPORARY",
    "TRANSIENT",
    "Backoff",
    "BreakerConfig",
    "ChildSpec",
    "CircuitBreaker",
    "CircuitState",
    "Strategy",
    "SupervisorRef",
]


@dataclass(frozen=True)
class ChildSpec:
    """How to start (and restart) one child."""

    id: str
    actor_class: type[Actor] | str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: str = PERMANENT
    worker: int | None = None
    name: str | None = None
    mailbox_size: int | None = None

    def __post_init__(self) -> None:
        # The rest (actor_class, restart, worker, name, mailbox_size) is checked
        # by add_child, as spawn checks it, and raises SpawnError.
        _check_child_id("ChildSpec id", self.id)
        if not isinstance(self.args, tuple | list):
            raise InvalidArgument(f"ChildSpec args={shown(self.args)} must be a tuple of spawn arguments")
        if not isinstance(self.kwargs, dict) or not all(type(k) is str for k in self.kwargs):
            raise InvalidArgument(f"ChildSpec kwargs={shown(self.kwargs)} must be a dict with str keys")


def _check_child_id(what: str, key: object) -> None:
    if not valid_name(key):
        raise InvalidArgument(f"{what} must be a non-empty str of at most {NAME_MAX} characters, got {shown(key)}")


class SupervisorSystem(Protocol):
    """What a SupervisorRef uses of its ActorSystem (an ActorSystem is one).

    The node's name, its control channel and the start of a nested
    supervisor. A Protocol rather than ActorSystem, which imports this
    module: this module does not import it back, even for annotations.
    """

    @property
    def name(self) -> str: ...
    def _control(self, op: str, *args: Any, timeout: float = ...) -> Any: ...
    def _new_supervisor(self, name: str, strategy: Strategy, parent: int | None, restart: str) -> SupervisorRef: ...


class SupervisorRef:
    """A handle on a supervisor in the node; usable from any thread."""

    def __init__(self, system: SupervisorSystem, sup_id: int, name: str) -> None:
        self.system = system
        self.id = sup_id
        self.name = name

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.name!r} {self.system.name}/{self.id:#x}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SupervisorRef) and (self.system, self.id) == (other.system, other.id)

    def __hash__(self) -> int:
        return hash((self.system.name, self.id))

    @property
    def ref(self) -> ActorRef:
        """The supervisor as an actor: monitor or link it, send the ref in messages.

        A monitor gets ``Down(ref, reason)`` when the supervisor stops
        ("shutdown") or gives up (past its restart intensity; its parent then
        restarts it under the same ref). It answers the asks
        ``"which_children"`` (``[(id, ref), ...]``) and ``"count_children"``
        (``{"specs", "active", "supervisors", "workers"}``), as OTP's
        supervisors do; ``ref.stop()`` stops its subtree.
        """
        return ActorRef(self.system.name, self.id, self.name)

    def add_child(self, spec: ChildSpec) -> ActorRef:
        """Start a child under this supervisor and return its ref."""
        if not isinstance(spec, ChildSpec):
            raise InvalidArgument(f"add_child needs a supervisor.ChildSpec, got {shown(spec)}")
        check_worker(spec.worker)  # the node checks that the worker exists
        actor_spec = make_spec(
            spec.actor_class, tuple(spec.args), dict(spec.kwargs), name=spec.name,
            restart=spec.restart, mailbox_size=spec.mailbox_size, base=Actor,
        )
        node, actor_id, name = self.system._control(
            "add_child", self.id, spec.id, actor_spec.to_wire(), spec.worker, timeout=30.0
        )
        return ActorRef(node, actor_id, name)

    def add_supervisor(self, id: str, strategy: Strategy | None = None, restart: str = PERMANENT) -> SupervisorRef:
        """Start a nested supervisor as a child of this one."""
        return self.system._new_supervisor(id, Strategy() if strategy is None else strategy, self.id, restart)

    def remove_child(self, id: str) -> bool:
        """Stop a child for good (no restart); False if there was none by that id."""
        _check_child_id("remove_child: a child id", id)
        return bool(self.system._control("remove_child", self.id, id))

    def children(self) -> list[tuple[str, ActorRef | SupervisorRef]]:
        """``(id, ref)`` for each child, in start order."""
        out: list[tuple[str, ActorRef | SupervisorRef]] = []
        for key, node, child_id, name, is_sup in self.system._control("children", self.id):
            out.append((key, SupervisorRef(self.system, child_id, key) if is_sup else ActorRef(node, child_id, name)))
        return out

    def stop(self) -> bool:
        """Stop this supervisor and its whole subtree, last-started child first."""
        return bool(self.system._control("stop_supervisor", self.id))
