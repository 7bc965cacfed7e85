"""Control requests about single actors: attaching processes, spawning, exits, names, monitors and links, topics."""

from __future__ import annotations

from typing import Any

from gorilix.control.base import DEFER, hosted_by, log, show_id, worker_slot
from gorilix.node_core import DeadLetterReason, NodeCore
from gorilix.node_events import Request
from gorilix.registry import ActorRecord
from gorilix.transport.describe import shown
from gorilix.transport.errors import GorilixError, InvalidArgument, SpawnError, error_from_wire
from gorilix.transport.frames import ID_MAX
from gorilix.transport.routing import ID_SHIFT, client_identity, is_client_id
from gorilix.workers.protocol import (
    AttachWorker,
    DeadLetter,
    Demonitor,
    Exited,
    HandedOff,
    Link,
    Monitor,
    Register,
    Restarted,
    SpawnAt,
    Spawned,
    SpawnFailed,
    Unlink,
)
from gorilix.workers.spec import NAME_MAX, ActorSpec, check_topic, valid_name


def _r_attach_worker(core: NodeCore, req: Request, report: AttachWorker) -> None:
    worker = core.slots.get(report.slot)
    if worker is None or not worker.alive or worker.identity != req.source:
        raise core.refuse("attach_worker", f"{req.source!r} is not the socket of worker {report.slot!r}")
    log.info("worker %d ready (pid %d)", report.slot, report.pid)
    core.worker_attached(report.slot)


def _h_attach_client(core: NodeCore, req: Request, client_id: int) -> None:
    """Route answers for ``client_id`` to the sender, which must be the socket named after it.

    Client ids are in a range no actor id reaches, and a client's socket is
    named after its id (routing id ``c<id>``), so a client can attach its
    own id and nothing else: not an actor's, not another client's.
    """
    if not is_client_id(client_id):
        raise core.refuse("attach_client", f"{show_id(client_id)} is not a client id (clients use ids in [2**62, 2**63), "
                                            "which no actor has); a client attaches only its own id")
    if req.source != client_identity(client_id):
        raise core.refuse("attach_client", f"{client_id:#x} is not the id of this socket ({req.source!r}); a client "
                                            f"attaches only the id its routing id names")
    owner = core.table.lookup(client_id)
    if (owner is not None and owner != req.source) or client_id in core.registry.actors:
        raise core.refuse("attach_client", f"{client_id:#x} is already taken")
    core.table.bind(client_id, req.source)


def _h_detach_client(core: NodeCore, req: Request, client_id: int) -> None:
    """Forget the route of the sender's own client id (nothing to do if it has none)."""
    if not is_client_id(client_id) or req.source != client_identity(client_id):
        raise core.refuse("detach_client", f"{show_id(client_id)} is not the id of this socket ({req.source!r}); "
                                            "a client detaches only its own")
    if core.table.lookup(client_id) == req.source:
        core.table.unbind(client_id)


def _h_spawn(core: NodeCore, req: Request, spec_fields: list[Any], worker: int | None,
             sup_id: int | None = None, key: str | None = None) -> Any:
    spec = ActorSpec.from_wire(spec_fields)
    _check_name(core, "spawn", spec)
    if key is not None and type(key) is not str:
        raise core.invalid(f"spawn: key={shown(key)} must be a str (a child's id in its supervisor) or None")
    if worker is not None and worker not in core.slots:
        raise SpawnError(f"no worker {worker} on node {core.name}; it has workers 0..{core.size - 1}")
    if spec.name is not None and spec.name in core.registry.names:
        raise SpawnError(f"name {spec.name!r} is already registered on node {core.name}")
    sup = core.lifecycle.supervisors.get(sup_id if sup_id is not None else core.lifecycle.root.id)
    if sup is None:
        raise SpawnError(f"supervisor {sup_id:#x} is stopped; cannot add a child to it")
    if key is not None and sup.find(key) is not None:
        raise SpawnError(f"supervisor {sup.name!r} already has a child {key!r}; remove it first")
    record = ActorRecord(core.allocate_id(), spec, None)
    core.lifecycle.adopt(record, sup.id, key)  # (first: it may refuse a key, and nothing is applied yet)
    core.registry.add(record)
    if spec.name is not None:
        core.registry.register_name(spec.name, record.id)
    core.pending_spawns[record.id] = req
    core.place(record, worker)
    return DEFER


def _check_name(core: NodeCore, op: str, spec: ActorSpec) -> None:
    """InvalidArgument (counted) unless the spec's name is one an actor can be registered under, or None.

    Checked before anything is applied: the spec's wire form checks only
    that the name is a str, and a name the registry refuses afterwards
    would leave the actor in the book, never placed.
    """
    if spec.name is not None and not valid_name(spec.name):
        raise core.invalid(f"{op}: name={shown(spec.name)} must be a non-empty str of at most {NAME_MAX} "
                           "characters, or None")


def _new_id_of(core: NodeCore, req: Request, op: str, actor_id: object) -> int:
    """Check ``actor_id`` is new and made by the worker that sent ``op`` (its prefix); returns that worker's slot."""
    slot = worker_slot(core, req, op)
    prefix = core.slots[slot].id_prefix
    if type(actor_id) is not int or actor_id >> ID_SHIFT != prefix:
        raise core.refuse(op, f"{show_id(actor_id)} is not an id worker {slot} makes (its prefix is {prefix:#x})")
    if actor_id in core.registry.actors or core.table.lookup(actor_id) is not None:
        raise core.refuse(op, f"actor id {actor_id:#x} is already taken")
    return slot


def _r_spawn_at(core: NodeCore, req: Request, report: SpawnAt) -> None:
    actor_id, spec, worker = report.actor_id, report.spec, report.worker
    _new_id_of(core, req, "spawn_at", actor_id)
    _check_name(core, "spawn_at", spec)
    if spec.name is not None and spec.name in core.registry.names:
        # As for a local spawn: the newcomer does not run under a taken name.
        log.error("spawn of %s refused: name %r is already registered", spec.class_path, spec.name)
        return
    record = ActorRecord(actor_id, spec, None)
    core.lifecycle.adopt(record)
    core.registry.add(record)
    if spec.name is not None:
        core.registry.register_name(spec.name, actor_id)
    core.place(record, worker if worker in core.slots else None)


def _r_register(core: NodeCore, req: Request, report: Register) -> None:
    actor_id, spec = report.actor_id, report.spec
    slot = _new_id_of(core, req, "register", actor_id)
    # Read after that worker was sent SIGKILL (NodeCore.give_up): what comes parks, as for its other
    # actors, and the actor is re-created once the death is seen.
    given_up = core.slots[slot].given_up
    record = ActorRecord(actor_id, spec, slot, placed=not given_up, started=True)
    core.lifecycle.adopt(record)
    core.registry.add(record)
    if given_up:
        core.table.hold(actor_id)
    else:
        core.table.bind(actor_id, req.source)
    if spec.name is not None:
        if not valid_name(spec.name):  # it runs already: it stops, as under a taken name
            core.malformed += 1
            core.lifecycle.exited([(record, f"name {shown(spec.name)} is not one an actor can have", True)],
                                  final=True)
        elif spec.name in core.registry.names:
            # As Erlang's register would: the newcomer does not get to run under a taken name.
            core.lifecycle.exited([(record, f"name {spec.name!r} is already registered", True)], final=True)
        else:
            core.registry.register_name(spec.name, actor_id)


def _r_spawned(core: NodeCore, req: Request, report: Spawned) -> None:
    core.actor_started(worker_slot(core, req, "spawned"), report.actor_id)


def _r_handed_off(core: NodeCore, req: Request, report: HandedOff) -> None:
    core.handed_off(worker_slot(core, req, "handed_off"), report.actor_id)


def _r_spawn_failed(core: NodeCore, req: Request, report: SpawnFailed) -> None:
    slot = worker_slot(core, req, "spawn_failed")
    core.actor_failed_to_start(slot, report.actor_id, error_from_wire(report.error))


def _r_exited(core: NodeCore, req: Request, report: Exited) -> None:
    slot = worker_slot(core, req, "exited")
    record = core.registry.actors.get(report.actor_id)
    if record is None or record.slot != slot:
        return  # already forgotten, or a stale report from a worker it left
    core.lifecycle.exited([(record, report.reason, report.abnormal)], final=report.final)


def _r_restarted(core: NodeCore, req: Request, report: Restarted) -> None:
    slot = worker_slot(core, req, "restarted")
    record = core.registry.actors.get(report.actor_id)
    if record is not None and record.slot == slot:
        core.lifecycle.restarted(report.actor_id)


# Monitors and links are made by an actor for itself (Actor.monitor, Actor.link): its worker sends them.

def _r_watch(core: NodeCore, req: Request, report: Monitor | Demonitor | Link | Unlink) -> None:
    hosted_by(core, req, report.OP, report.actor_id)
    if not 0 <= report.other <= ID_MAX:  # kept, it would raise when its Down or exit signal is built
        raise core.invalid(f"{report.OP}: {show_id(report.other)} is not an actor id (an int in 0..2**64-1)")
    lifecycle = core.lifecycle
    change = {Monitor: lifecycle.monitor, Demonitor: lifecycle.demonitor, Link: lifecycle.link,
              Unlink: lifecycle.unlink}[type(report)]
    change(report.actor_id, report.node, report.other)


def topic_of(core: NodeCore, op: str, topic: object) -> str:
    """The topic a request names: a non-empty str, as the facade checks (5 is not the topic "5").

    Anything else is an InvalidArgument for the asker, counted in ``malformed``.
    """
    try:
        return check_topic(op, topic)
    except InvalidArgument as exc:
        raise core.invalid(str(exc)) from None


def _h_subscribe(core: NodeCore, req: Request, topic: str, actor_id: int) -> bool:
    topic = topic_of(core, "subscribe", topic)
    if type(actor_id) is not int or actor_id not in core.registry.actors:
        raise GorilixError(f"cannot subscribe {core.name}/{show_id(actor_id)} to {shown(topic)}: no such actor")
    core.lifecycle.watches.subscribe(topic, actor_id)
    return True


def _h_unsubscribe(core: NodeCore, req: Request, topic: str, actor_id: int) -> bool:
    return core.lifecycle.watches.unsubscribe(topic_of(core, "unsubscribe", topic), actor_id)


def _h_publish(core: NodeCore, req: Request, topic: str, payload: bytes) -> int:
    topic = topic_of(core, "publish", topic)
    if type(payload) is not bytes:
        raise core.invalid("publish: payload must be codec bytes (gorilix.transport.codec.encode of the message)")
    reached = publish_here(core, topic, payload)
    if core.host.clustered and req.node == core.name:  # ours to spread: a peer's publish reaches its peers itself
        for peer in core.host.peers():
            core.send_node(peer, ["publish_local", topic, payload])
    elif not reached:
        core.dead_letter(0, core.name, req.src_id, GorilixError(f"no subscriber for topic {shown(topic)}"))
    return reached


def publish_here(core: NodeCore, topic: str, payload: bytes) -> int:
    subscribers = core.lifecycle.watches.subscribers(topic)
    for actor_id in subscribers:
        core.tell_bytes(actor_id, payload)
    return len(subscribers)


def _r_dead_letter(core: NodeCore, req: Request, report: DeadLetter) -> None:
    slot = worker_slot(core, req, "dead_letter")
    where = f"worker {slot}"
    reason = report.reason if where in report.reason else f"{report.reason} at {where}"  # (said once)
    core.dead_letter(report.dst_id, core.name, 0, GorilixError(reason), reason_kind=_worker_reason(report.reason))


def _worker_reason(reason: str) -> DeadLetterReason:
    """Why a worker could not deliver, from its report's "ErrorType: ..." (gorilix.workers.inbox)."""
    if reason.startswith("ActorNotFound:"):  # stopped, or not on that worker
        return "no_actor"
    if reason.startswith("MailboxFull:"):  # the actor's mailbox_size reached
        return "queue_full"
    return "other"


def _h_whereis(core: NodeCore, req: Request, name: str) -> Any:
    actor_id = core.registry.names.get(name)
    return None if actor_id is None else [core.name, actor_id, name]


def _h_register_name(core: NodeCore, req: Request, name: str, actor_id: int) -> bool:
    core.registry.register_name(name, actor_id)
    return True


def _h_unregister_name(core: NodeCore, req: Request, name: str) -> bool:
    return core.registry.unregister_name(name)


HANDLERS: dict[str, Any] = {
    "attach_client": _h_attach_client,
    "detach_client": _h_detach_client,
    "spawn": _h_spawn,
    "subscribe": _h_subscribe,
    "unsubscribe": _h_unsubscribe,
    "publish": _h_publish,
    "whereis": _h_whereis,
    "register_name": _h_register_name,
    "unregister_name": _h_unregister_name,
}

#: Workers' reports, by type (gorilix.workers.protocol): each comes parsed and checked.
REPORTS: dict[type[Any], Any] = {
    AttachWorker: _r_attach_worker,
    SpawnAt: _r_spawn_at,
    Register: _r_register,
    Spawned: _r_spawned,
    SpawnFailed: _r_spawn_failed,
    Exited: _r_exited,
    Restarted: _r_restarted,
    HandedOff: _r_handed_off,
    Monitor: _r_watch,
    Demonitor: _r_watch,
    Link: _r_watch,
    Unlink: _r_watch,
    DeadLetter: _r_dead_letter,
}
