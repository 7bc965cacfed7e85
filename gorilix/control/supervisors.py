"""Control requests of the supervisor API: start supervisors, add and remove children, list them; and
the whole tree as a dashboard shows it (``supervision``)."""

from __future__ import annotations

from typing import Any

from gorilix.control.actors import _h_spawn  # a child is spawned like any actor, then supervised
from gorilix.node_core import NodeCore
from gorilix.node_events import Request
from gorilix.supervision import Child, Strategy, SupervisorState
from gorilix.transport.errors import GorilixError


def _h_spawn_supervisor(core: NodeCore, req: Request, name: str,
                        strategy: list[Any], parent: int | None, restart: str) -> int:
    try:
        parsed = Strategy.from_wire(strategy)
    except (TypeError, ValueError) as exc:
        raise GorilixError(f"bad supervision strategy: {exc}") from None
    owner = core.lifecycle.root.id if parent is None else parent
    sup = core.lifecycle.supervisors.get(owner)
    if sup is None:
        raise GorilixError(f"parent supervisor {parent} is stopped")
    if sup.find(str(name)) is not None:
        raise GorilixError(f"supervisor {sup.name!r} already has a child {name!r}")
    return core.lifecycle.new_supervisor(str(name), parsed, owner, restart).id


def _h_add_child(core: NodeCore, req: Request, sup_id: int, key: str,
                 spec_fields: list[Any], worker: int | None) -> Any:
    return _h_spawn(core, req, spec_fields, worker, sup_id, str(key))


def _h_remove_child(core: NodeCore, req: Request, sup_id: int, key: str) -> bool:
    sup = core.lifecycle.supervisors.get(sup_id)
    child = None if sup is None else sup.find(str(key))
    if sup is None or child is None:
        return False
    if child.is_supervisor:
        core.lifecycle.stop_supervisor(child.id, "shutdown")
        return True
    sup.remove(child.id)
    record = core.registry.actors.get(child.id)
    if record is not None:
        core.lifecycle.exited([(record, "shutdown", False)], final=True)
    return True


def _h_children(core: NodeCore, req: Request, sup_id: int) -> list[Any]:
    rows = []
    for key, child_id, is_sup in core.lifecycle.children(sup_id):
        record = core.registry.actors.get(child_id)
        rows.append([key, core.name, child_id, record.spec.name if record else None, is_sup])
    return rows


def _h_stop_supervisor(core: NodeCore, req: Request, sup_id: int) -> bool:
    if sup_id == core.lifecycle.root.id:
        raise GorilixError("the root supervisor stops with the node: call system.stop()")
    exists = sup_id in core.lifecycle.supervisors
    core.lifecycle.stop_supervisor(sup_id, "shutdown")
    return exists


#: Children listed per supervisor by ``supervision``, at most (those restarted most, then in start order).
MAX_CHILDREN_SHOWN = 50


def _h_supervision(core: NodeCore, req: Request) -> list[dict[str, Any]]:
    """Every supervisor of the node, the root first and parents before children, with its restarts,
    its breaker and its most restarted children: what a dashboard draws of the tree."""
    # (a supervisor's parent exists when it is made, and a restarted one is the same entry: in order)
    return [_supervisor_row(core, sup) for sup in core.lifecycle.supervisors.values()]


def _supervisor_row(core: NodeCore, sup: SupervisorState) -> dict[str, Any]:
    strategy = sup.strategy
    breaker = None
    if sup.breaker is not None:
        seen = sup.breaker.statistics()
        breaker = {"state": seen.state.value, "trips": seen.trips, "failures": seen.failures_in_window}
    return {
        "id": sup.id, "name": sup.name, "parent": sup.parent, "strategy": strategy.kind,
        "max_restarts": strategy.max_restarts, "within_seconds": float(strategy.within_seconds),
        "restarts": sup.restarts, "breaker": breaker, "children_total": sup.child_count(),
        "children": [_child_row(core, child) for child in sup.most_restarted(MAX_CHILDREN_SHOWN)],
    }


def _child_row(core: NodeCore, child: Child) -> dict[str, Any]:
    lifecycle = core.lifecycle
    if child.is_supervisor:
        class_path, worker, running = None, None, child.id in lifecycle.supervisors
    else:
        record = core.registry.actors.get(child.id)
        class_path = None if record is None else record.spec.class_path
        worker = None if record is None or not lifecycle.is_running(child.id) else core.worker_of(record)
        running = worker is not None  # (its incarnation has not ended, and a live worker runs it)
    return {"key": child.key, "id": child.id, "class": class_path, "supervisor": child.is_supervisor,
            "restarts": child.restarts, "worker": worker, "running": running}


HANDLERS: dict[str, Any] = {
    "spawn_supervisor": _h_spawn_supervisor,
    "add_child": _h_add_child,
    "remove_child": _h_remove_child,
    "children": _h_children,
    "stop_supervisor": _h_stop_supervisor,
    "supervision": _h_supervision,
}
