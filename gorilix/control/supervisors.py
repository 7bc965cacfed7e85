"""Control requests of the supervisor API: start supervisors, add and remove children, list them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gorilix.control.actors import _h_spawn  # a child is spawned like any actor, then supervised
from gorilix.supervision import Strategy
from gorilix.transport.errors import GorilixError
from gorilix.workers.ref import ActorRef

if TYPE_CHECKING:
    from gorilix.node import Node


def _h_spawn_supervisor(node: Node, source: bytes, src_id: int, corr: int, name: str,
                        strategy: list[Any], parent: int | None, restart: str) -> int:
    try:
        parsed = Strategy.from_wire(strategy)
    except (TypeError, ValueError) as exc:
        raise GorilixError(f"bad supervision strategy: {exc}") from None
    owner = node.lifecycle.root.id if parent is None else parent
    sup = node.lifecycle.supervisors.get(owner)
    if sup is None:
        raise GorilixError(f"parent supervisor {parent} is stopped")
    if sup.find(str(name)) is not None:
        raise GorilixError(f"supervisor {sup.name!r} already has a child {name!r}")
    return node.lifecycle.new_supervisor(str(name), parsed, owner, restart).id


def _h_add_child(node: Node, source: bytes, src_id: int, corr: int, sup_id: int, key: str,
                 spec_fields: list[Any], worker: int | None) -> Any:
    return _h_spawn(node, source, src_id, corr, spec_fields, worker, sup_id, str(key))


def _h_remove_child(node: Node, source: bytes, src_id: int, corr: int, sup_id: int, key: str) -> bool:
    sup = node.lifecycle.supervisors.get(sup_id)
    child = None if sup is None else sup.find(str(key))
    if sup is None or child is None:
        return False
    if child.is_supervisor:
        node.lifecycle.stop_supervisor(child.id, "shutdown")
        return True
    sup.remove(child.id)
    record = node.registry.actors.get(child.id)
    if record is not None:
        node.lifecycle.exited([(record, "shutdown", False)], final=True)
    return True


def _h_children(node: Node, source: bytes, src_id: int, corr: int, sup_id: int) -> list[Any]:
    rows = []
    for key, child_id, is_sup in node.lifecycle.children(sup_id):
        record = node.registry.actors.get(child_id)
        rows.append([key, node.name, child_id, record.spec.name if record else None, is_sup])
    return rows


def _h_stop_supervisor(node: Node, source: bytes, src_id: int, corr: int, sup_id: int) -> bool:
    if sup_id == node.lifecycle.root.id:
        raise GorilixError("the root supervisor stops with the node: call system.stop()")
    exists = sup_id in node.lifecycle.supervisors
    node.lifecycle.stop_supervisor(sup_id, "shutdown")
    return exists


def supervisor_request(node: Node, sup_id: int, request: Any) -> Any:
    """A message to a supervisor's own ref: it answers what OTP's supervisors answer."""
    sup = node.lifecycle.supervisors[sup_id]
    if request == "which_children":
        return [(child.key, ActorRef(node.name, child.id, _child_name(node, child.id, child.key, child.is_supervisor)))
                for child in sup.children]
    if request == "count_children":
        children = sup.children
        nested = sum(1 for c in children if c.is_supervisor)
        return {"specs": len(children), "active": sum(1 for c in children if node.lifecycle.is_running(c.id)),
                "supervisors": nested, "workers": len(children) - nested}
    raise GorilixError(
        f"supervisor {sup.name!r} answers 'which_children' and 'count_children', not {request!r}; "
        "manage it with its SupervisorRef (add_child, remove_child, stop)"
    )


def _child_name(node: Node, child_id: int, key: str, is_supervisor: bool) -> str | None:
    if is_supervisor:
        return key
    record = node.registry.actors.get(child_id)
    return None if record is None else record.spec.name


HANDLERS: dict[str, Any] = {
    "spawn_supervisor": _h_spawn_supervisor,
    "add_child": _h_add_child,
    "remove_child": _h_remove_child,
    "children": _h_children,
    "stop_supervisor": _h_stop_supervisor,
}
