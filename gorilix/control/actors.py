"""Control requests about single actors: attaching processes, spawning, exits, names, monitors and links, topics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gorilix.control.base import DEFER, hosted_by, invalid, log, refuse, show_id, worker_slot
from gorilix.control.tools import check_recoveries
from gorilix.registry import ActorRecord
from gorilix.transport.describe import shown
from gorilix.transport.errors import GorilixError, InvalidArgument, SpawnError, error_from_wire
from gorilix.transport.frames import unpack_route
from gorilix.transport.routing import client_identity, is_client_id
from gorilix.transport.sockets import ID_SHIFT
from gorilix.workers.spec import ActorSpec, check_topic

if TYPE_CHECKING:
    from gorilix.node import Node


def _h_attach_worker(node: Node, source: bytes, src_id: int, corr: int, slot: int, incarnation: int, pid: int) -> None:
    worker = node.pool.workers.get(slot)
    if worker is None or worker.identity != source:
        raise refuse(node, "attach_worker", f"{source!r} is not the socket of worker {slot!r}")
    worker.ready = True
    node._early_deaths[slot] = 0
    node.table.bind(worker.config.id_prefix << ID_SHIFT, source)
    log.info("worker %d ready (pid %d)", slot, pid)
    homeless, node._homeless = node._homeless, []
    for actor_id in homeless:
        record = node.registry.actors.get(actor_id)
        if record is not None:
            node.place(record)
    if len(node._live_slots()) == node.pool.size:
        node._all_workers_ready()


def _h_attach_client(node: Node, source: bytes, src_id: int, corr: int, client_id: int) -> None:
    """Route answers for ``client_id`` to the sender, which must be the socket named after it.

    Client ids are in a range no actor id reaches, and a client's socket is
    named after its id (routing id ``c<id>``), so a client can attach its
    own id and nothing else: not an actor's, not another client's.
    """
    if not is_client_id(client_id):
        raise refuse(node, "attach_client", f"{show_id(client_id)} is not a client id (clients use ids in [2**62, 2**63), "
                                            "which no actor has); a client attaches only its own id")
    if source != client_identity(client_id):
        raise refuse(node, "attach_client", f"{client_id:#x} is not the id of this socket ({source!r}); a client "
                                            f"attaches only the id its routing id names")
    owner = node.table.lookup(client_id)
    if (owner is not None and owner != source) or client_id in node.registry.actors:
        raise refuse(node, "attach_client", f"{client_id:#x} is already taken")
    node.table.bind(client_id, source)


def _h_detach_client(node: Node, source: bytes, src_id: int, corr: int, client_id: int) -> None:
    """Forget the route of the sender's own client id (nothing to do if it has none)."""
    if not is_client_id(client_id) or source != client_identity(client_id):
        raise refuse(node, "detach_client", f"{show_id(client_id)} is not the id of this socket ({source!r}); "
                                            "a client detaches only its own")
    if node.table.lookup(client_id) == source:
        node.table.unbind(client_id)


def _h_spawn(node: Node, source: bytes, src_id: int, corr: int, spec_fields: list[Any], worker: int | None,
             sup_id: int | None = None, key: str | None = None) -> Any:
    spec = ActorSpec.from_wire(spec_fields)
    if worker is not None and worker not in node.pool.workers:
        raise SpawnError(f"no worker {worker} on node {node.name}; it has workers 0..{node.pool.size - 1}")
    if spec.name is not None and spec.name in node.registry.names:
        raise SpawnError(f"name {spec.name!r} is already registered on node {node.name}")
    sup = node.lifecycle.supervisors.get(sup_id if sup_id is not None else node.lifecycle.root.id)
    if sup is None:
        raise SpawnError(f"supervisor {sup_id:#x} is stopped; cannot add a child to it")
    if key is not None and sup.find(key) is not None:
        raise SpawnError(f"supervisor {sup.name!r} already has a child {key!r}; remove it first")
    record = ActorRecord(node.allocate_id(), spec, None)
    node.registry.add(record)
    node.lifecycle.adopt(record, sup.id, key)
    if spec.name is not None:
        node.registry.register_name(spec.name, record.id)
    node._pending_spawns[record.id] = (node._asker_node, src_id, corr)
    node.place(record, worker)
    return DEFER


def _new_id_of(node: Node, source: bytes, op: str, actor_id: object) -> int:
    """Check ``actor_id`` is new and made by the worker that sent ``op`` (its prefix); returns that worker's slot."""
    slot = worker_slot(node, source, op)
    prefix = node.pool.workers[slot].config.id_prefix
    if type(actor_id) is not int or actor_id >> ID_SHIFT != prefix:
        raise refuse(node, op, f"{show_id(actor_id)} is not an id worker {slot} makes (its prefix is {prefix:#x})")
    if actor_id in node.registry.actors or node.table.lookup(actor_id) is not None:
        raise refuse(node, op, f"actor id {actor_id:#x} is already taken")
    return slot


def _h_spawn_at(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any], worker: int) -> None:
    _new_id_of(node, source, "spawn_at", actor_id)
    spec = ActorSpec.from_wire(spec_fields)
    if spec.name is not None and spec.name in node.registry.names:
        # As for a local spawn: the newcomer does not run under a taken name.
        log.error("spawn of %s refused: name %r is already registered", spec.class_path, spec.name)
        return
    record = ActorRecord(actor_id, spec, None)
    node.registry.add(record)
    node.lifecycle.adopt(record)
    if spec.name is not None:
        node.registry.register_name(spec.name, actor_id)
    node.place(record, worker if worker in node.pool.workers else None)


def _h_register(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any]) -> None:
    slot = _new_id_of(node, source, "register", actor_id)
    spec = ActorSpec.from_wire(spec_fields)
    record = ActorRecord(actor_id, spec, slot, placed=True, started=True)
    node.registry.add(record)
    node.lifecycle.adopt(record)
    node.table.bind(actor_id, source)
    if spec.name is not None:
        if spec.name in node.registry.names:
            # As Erlang's register would: the newcomer does not get to run under a taken name.
            node.lifecycle.exited([(record, f"name {spec.name!r} is already registered", True)], final=True)
        else:
            node.registry.register_name(spec.name, actor_id)


def _h_spawned(node: Node, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
    slot = worker_slot(node, source, "spawned")
    record = node.registry.actors.get(actor_id)
    if record is None:  # stopped meanwhile: the worker will report it
        return
    if record.slot != slot:  # a stale report from a worker it was taken from
        return
    node.registry.move(actor_id, slot, placed=True)
    for parked in node.table.bind(actor_id, source):
        # Each on its own: one that fails (a bug of ours) must cost neither the
        # messages parked behind it nor the spawn's answer below.
        try:
            node._forward(parked[0], unpack_route(parked[1]), parked)
        except Exception as exc:
            node._dropped(f"a message parked for {node.name}/{actor_id:#x}", exc)
    asker = node._pending_spawns.pop(actor_id, None)
    if asker is not None:
        node._reply(asker[1], asker[2], [node.name, actor_id, record.spec.name], dst_node=asker[0])
    else:
        node.lifecycle.restarted(actor_id)  # re-created after its worker died
    if node._recoveries:
        check_recoveries(node)


def _h_spawn_failed(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, error: Any) -> None:
    slot = worker_slot(node, source, "spawn_failed")
    exc = error_from_wire(error)
    record = node.registry.actors.get(actor_id)
    if record is None or record.slot != slot:
        return
    asker = node._pending_spawns.pop(actor_id, None)
    if asker is not None or not record.started:  # a first start: nothing to restart
        sup = node.lifecycle.supervisors.get(record.supervisor)
        if sup is not None:
            sup.remove(actor_id)
        node.forget(record, f"failed to start: {exc}")
        if asker is not None:
            node._reply(asker[1], asker[2], exc, ok=False, dst_node=asker[0])
        return
    log.error("re-creating %s failed: %s", record.spec.class_path, exc)
    node.registry.move(actor_id, None)
    node.lifecycle.exited([(record, f"restart failed: {exc}", True)], final=False)


def _h_exited(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, reason: str,
              abnormal: bool, final: bool) -> None:
    slot = worker_slot(node, source, "exited")
    record = node.registry.actors.get(actor_id)
    if record is None or record.slot != slot:
        return  # already forgotten, or a stale report from a worker it left
    node.lifecycle.exited([(record, str(reason), bool(abnormal))], final=bool(final))


def _h_restarted(node: Node, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
    slot = worker_slot(node, source, "restarted")
    record = node.registry.actors.get(actor_id)
    if record is not None and record.slot == slot:
        node.lifecycle.restarted(actor_id)


# Monitors and links are made by an actor for itself (Actor.monitor, Actor.link): its worker sends them.

def _h_monitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, where: str, watched: int) -> None:
    hosted_by(node, source, "monitor", watcher)
    node.lifecycle.monitor(watcher, where, watched)


def _h_demonitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, where: str, watched: int) -> None:
    hosted_by(node, source, "demonitor", watcher)
    node.lifecycle.demonitor(watcher, where, watched)


def _h_link(node: Node, source: bytes, src_id: int, corr: int, a: int, where: str, b: int) -> None:
    hosted_by(node, source, "link", a)
    node.lifecycle.link(a, where, b)


def _h_unlink(node: Node, source: bytes, src_id: int, corr: int, a: int, where: str, b: int) -> None:
    hosted_by(node, source, "unlink", a)
    node.lifecycle.unlink(a, where, b)


def topic_of(node: Node, op: str, topic: object) -> str:
    """The topic a request names: a non-empty str, as the facade checks (5 is not the topic "5").

    Anything else is an InvalidArgument for the asker, counted in ``malformed``.
    """
    try:
        return check_topic(op, topic)
    except InvalidArgument as exc:
        raise invalid(node, str(exc)) from None


def _h_subscribe(node: Node, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
    topic = topic_of(node, "subscribe", topic)
    if type(actor_id) is not int or actor_id not in node.registry.actors:
        raise GorilixError(f"cannot subscribe {node.name}/{show_id(actor_id)} to {shown(topic)}: no such actor")
    node.lifecycle.watches.subscribe(topic, actor_id)
    return True


def _h_unsubscribe(node: Node, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
    return node.lifecycle.watches.unsubscribe(topic_of(node, "unsubscribe", topic), actor_id)


def _h_publish(node: Node, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
    topic = topic_of(node, "publish", topic)
    if type(payload) is not bytes:
        raise invalid(node, "publish: payload must be codec bytes (gorilix.transport.codec.encode of the message)")
    reached = publish_here(node, topic, payload)
    if node.links is not None and node._asker_node == node.name:
        for peer in list(node.links.peers):
            node.send_node_control(peer, ["publish_local", topic, payload])
    elif not reached:
        node._dead_letter(0, node.name, src_id, GorilixError(f"no subscriber for topic {shown(topic)}"))
    return reached


def publish_here(node: Node, topic: str, payload: bytes) -> int:
    subscribers = node.lifecycle.watches.subscribers(topic)
    for actor_id in subscribers:
        node._tell_bytes(actor_id, payload)
    return len(subscribers)


def _h_dead_letter(node: Node, source: bytes, src_id: int, corr: int, dst_id: int, reason: str) -> None:
    slot = worker_slot(node, source, "dead_letter")
    node._dead_letter(dst_id, node.name, 0, GorilixError(f"{reason} at worker {slot}"))


def _h_whereis(node: Node, source: bytes, src_id: int, corr: int, name: str) -> Any:
    actor_id = node.registry.names.get(name)
    return None if actor_id is None else [node.name, actor_id, name]


def _h_register_name(node: Node, source: bytes, src_id: int, corr: int, name: str, actor_id: int) -> bool:
    node.registry.register_name(name, actor_id)
    return True


def _h_unregister_name(node: Node, source: bytes, src_id: int, corr: int, name: str) -> bool:
    return node.registry.unregister_name(name)


HANDLERS: dict[str, Any] = {
    "attach_worker": _h_attach_worker,
    "attach_client": _h_attach_client,
    "detach_client": _h_detach_client,
    "spawn": _h_spawn,
    "spawn_at": _h_spawn_at,
    "register": _h_register,
    "spawned": _h_spawned,
    "spawn_failed": _h_spawn_failed,
    "exited": _h_exited,
    "restarted": _h_restarted,
    "monitor": _h_monitor,
    "demonitor": _h_demonitor,
    "link": _h_link,
    "unlink": _h_unlink,
    "subscribe": _h_subscribe,
    "unsubscribe": _h_unsubscribe,
    "publish": _h_publish,
    "dead_letter": _h_dead_letter,
    "whereis": _h_whereis,
    "register_name": _h_register_name,
    "unregister_name": _h_unregister_name,
}
