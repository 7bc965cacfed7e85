"""Control requests of the supervisor API: start supervisors, add and remove children, list them."""

from __future__ import annotations

from typing import Any

from gorilix.control.actors import _h_spawn  # a child is spawned like any actor, then supervised
from gorilix.node_core import NodeCore
from gorilix.node_events import Request
from gorilix.supervision import Strategy
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


HANDLERS: dict[str, Any] = {
    "spawn_supervisor": _h_spawn_supervisor,
    "add_child": _h_add_child,
    "remove_child": _h_remove_child,
    "children": _h_children,
    "stop_supervisor": _h_stop_supervisor,
}
