"""The node's control endpoint: one handler per request a worker, a client or a peer sends.

Kept apart from the routing loop in :mod:`gorilix.node`: these run on the node thread when a message reaches actor id 0.
Each handler gets the sender's identity, its actor id and the ask's
correlation id, then the request's arguments; what it returns answers an
ask, unless it returns :data:`DEFER` and answers later itself.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from typing import TYPE_CHECKING, Any

import zmq

from gorilix.cluster.links import PeerLinks
from gorilix.registry import ActorRecord
from gorilix.supervision import Strategy
from transport.errors import ClusterError, GorilixError, SpawnError, error_from_wire
from transport.frames import unpack_route
from transport.sockets import ID_SHIFT
from workers.spec import ActorSpec

if TYPE_CHECKING:
    from gorilix.node import Node


log = logging.getLogger("gorilix.node")


class _Defer:
    """A control handler's marker: the answer comes later."""


DEFER = _Defer()


def _h_attach_worker(node: Node, source: bytes, src_id: int, corr: int, slot: int, incarnation: int, pid: int) -> None:
    worker = node.pool.workers.get(slot)
    if worker is None or worker.identity != source:
        raise GorilixError(f"unknown worker {source!r} attached")
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
    node.table.bind(client_id, source)


def _h_detach_client(node: Node, source: bytes, src_id: int, corr: int, client_id: int) -> None:
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


def _h_spawn_at(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any], worker: int) -> None:
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
    spec = ActorSpec.from_wire(spec_fields)
    slot = node._identity_slot.get(source)
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
    record = node.registry.actors.get(actor_id)
    if record is None:  # stopped meanwhile: the worker will report it
        return
    node.registry.move(actor_id, node._identity_slot.get(source), placed=True)
    for parked in node.table.bind(actor_id, source):
        node._forward(parked[0], unpack_route(parked[1]), parked)
    asker = node._pending_spawns.pop(actor_id, None)
    if asker is not None:
        node._reply(asker[1], asker[2], [node.name, actor_id, record.spec.name], dst_node=asker[0])
    else:
        node.lifecycle.restarted(actor_id)  # re-created after its worker died
    if node._recoveries:
        check_recoveries(node)


def _h_spawn_failed(node: Node, source: bytes, src_id: int, corr: int, actor_id: int, error: Any) -> None:
    exc = error_from_wire(error)
    record = node.registry.actors.get(actor_id)
    if record is None:
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
    record = node.registry.actors.get(actor_id)
    if record is None or record.slot != node._identity_slot.get(source):
        return  # already forgotten, or a stale report from a worker it left
    node.lifecycle.exited([(record, str(reason), bool(abnormal))], final=bool(final))


def _h_restarted(node: Node, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
    node.lifecycle.restarted(actor_id)

# monitors, links and topics (from actors)


def _h_monitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, where: str, watched: int) -> None:
    node.lifecycle.monitor(watcher, where, watched)


def _h_demonitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, where: str, watched: int) -> None:
    node.lifecycle.demonitor(watcher, where, watched)


def _h_link(node: Node, source: bytes, src_id: int, corr: int, a: int, where: str, b: int) -> None:
    node.lifecycle.link(a, where, b)


def _h_unlink(node: Node, source: bytes, src_id: int, corr: int, a: int, where: str, b: int) -> None:
    node.lifecycle.unlink(a, where, b)


def _h_subscribe(node: Node, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
    if actor_id not in node.registry.actors:
        raise GorilixError(f"cannot subscribe {node.name}/{actor_id:#x} to {topic!r}: no such actor")
    node.lifecycle.watches.subscribe(str(topic), actor_id)
    return True


def _h_unsubscribe(node: Node, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
    return node.lifecycle.watches.unsubscribe(str(topic), actor_id)


def _h_publish(node: Node, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
    if type(payload) is not bytes:
        raise GorilixError("publish: payload must be codec bytes")
    reached = _publish_here(node, str(topic), payload)
    if node.links is not None and node._asker_node == node.name:
        for peer in list(node.links.peers):
            node.send_node_control(peer, ["publish_local", str(topic), payload])
    elif not reached:
        node._dead_letter(0, node.name, src_id, GorilixError(f"no subscriber for topic {topic!r}"))
    return reached

# supervisors (from the ActorSystem)


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

# clustering


def _h_enable_cluster(node: Node, source: bytes, src_id: int, corr: int, endpoint: str) -> list[str]:
    if node.links is not None:
        raise ClusterError("clustering is already enabled on this node")
    node.links = PeerLinks(node.name, node.zctx, endpoint, node.cluster_keys)
    node._poller.register(node.links.external, zmq.POLLIN)
    node._events = node.zctx.socket(zmq.PULL)
    node._events.setsockopt(zmq.LINGER, 0)
    events_endpoint = f"inproc://gorilix-events-{id(node):x}"
    node._events.bind(events_endpoint)
    node._poller.register(node._events, zmq.POLLIN)
    return [node.links.endpoint, events_endpoint]


def _h_disable_cluster(node: Node, source: bytes, src_id: int, corr: int) -> bool:
    return node._disable_cluster()


def _h_rmonitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, watched: int) -> None:
    node.lifecycle.remote_monitor(node._asker_node, watcher, watched)


def _h_rdown(node: Node, source: bytes, src_id: int, corr: int, watched: int, name: str | None,
             reason: str, watcher: int) -> None:
    node.lifecycle.remote_down(node._asker_node, watched, name, str(reason), watcher)


def _h_rlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_link(node._asker_node, local, remote)


def _h_runlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_unlink(node._asker_node, local, remote)


def _h_rexit(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int, name: str | None,
             reason: str) -> None:
    node.lifecycle.remote_exit(node._asker_node, local, remote, name, str(reason))


def _h_publish_local(node: Node, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
    return _publish_here(node, str(topic), payload)


def _publish_here(node: Node, topic: str, payload: bytes) -> int:
    subscribers = node.lifecycle.watches.subscribers(topic)
    for actor_id in subscribers:
        node._tell_bytes(actor_id, payload)
    return len(subscribers)

# hot reload


def _h_reload(node: Node, source: bytes, src_id: int, corr: int, module: str) -> Any:
    if not isinstance(module, str) or not module or module in node._reloads:
        raise GorilixError(f"cannot reload {module!r}: not a module name, or a reload of it is running")
    live = node._live_slots()
    if not live:
        return {"module": module, "workers": 0, "moved": 0, "errors": []}
    node._reloads[module] = {"asker": (src_id, corr, node._asker_node), "waiting": set(live), "moved": 0, "errors": [],
                             "workers": len(live)}
    for slot in live:
        node._send_control(node.pool.workers[slot].identity, ["reload", module])
    return DEFER


def _h_reloaded(node: Node, source: bytes, src_id: int, corr: int, module: str, moved: int, error: str | None) -> None:
    job = node._reloads.get(module)
    slot = node._identity_slot.get(source)
    if job is None or slot not in job["waiting"]:
        return
    job["waiting"].discard(slot)
    job["moved"] += int(moved)
    if error:
        job["errors"].append(f"worker {slot}: {error}")
    finish_reload(node, module)


def finish_reload(node: Node, module: str) -> None:
    job = node._reloads[module]
    if job["waiting"]:
        return
    del node._reloads[module]
    asker_id, asker_corr, asker_node = job["asker"]
    if job["errors"]:
        node._reply(asker_id, asker_corr, GorilixError(
            f"reload of {module} failed: {'; '.join(job['errors'])}"), ok=False, dst_node=asker_node)
    else:
        node._reply(asker_id, asker_corr, {"module": module, "workers": job["workers"],
                                           "moved": job["moved"], "errors": []}, dst_node=asker_node)


def _h_dead_letter(node: Node, source: bytes, src_id: int, corr: int, dst_id: int, reason: str) -> None:
    node._dead_letter(dst_id, node.name, 0, GorilixError(f"{reason} at worker {node._identity_slot.get(source)}"))


def _h_whereis(node: Node, source: bytes, src_id: int, corr: int, name: str) -> Any:
    actor_id = node.registry.names.get(name)
    return None if actor_id is None else [node.name, actor_id, name]


def _h_register_name(node: Node, source: bytes, src_id: int, corr: int, name: str, actor_id: int) -> bool:
    node.registry.register_name(name, actor_id)
    return True


def _h_unregister_name(node: Node, source: bytes, src_id: int, corr: int, name: str) -> bool:
    return node.registry.unregister_name(name)


def _h_load(node: Node, source: bytes, src_id: int, corr: int, queued: int, deepest: int, handled: int,
            malformed: int, dead_letters: int) -> None:
    slot = node._identity_slot.get(source)
    if slot is None:
        return
    now = time.monotonic()
    last = node._worker_load.get(slot)
    rate = 0.0
    if last is not None and last["pid"] == node.pool.workers[slot].pid and now > last["at"]:
        rate = max(0, handled - last["handled"]) / (now - last["at"])
    node._worker_load[slot] = {"queued": int(queued), "deepest": int(deepest), "handled": int(handled),
                               "msgs_per_s": rate, "at": now, "pid": node.pool.workers[slot].pid,
                               "malformed": int(malformed)}


def _h_workers(node: Node, source: bytes, src_id: int, corr: int) -> list[dict[str, Any]]:
    rows = []
    for slot in range(node.pool.size):
        worker = node.pool.workers.get(slot)
        cpu, rss = node.pool.stats(slot)
        rows.append({
            "id": slot, "pid": worker.pid if worker else None,
            "alive": bool(worker and worker.alive and worker.ready),
            "actors": node.registry.count(slot), "cpu_percent": cpu, "rss_bytes": rss,
            "restarts": node.pool.restarts[slot],
            **_load_of(node, slot, worker.pid if worker else None),
        })
    return rows


def _load_of(node: Node, slot: int, pid: int | None) -> dict[str, Any]:
    load = node._worker_load.get(slot)
    if load is None or load["pid"] != pid:
        return {"mailbox": 0, "deepest_mailbox": 0, "msgs_per_s": 0.0}
    return {"mailbox": load["queued"], "deepest_mailbox": load["deepest"],
            "msgs_per_s": round(load["msgs_per_s"], 1)}


def _kill(node: Node, slot: int, sig: int) -> int:
    try:
        return node.pool.kill(slot, sig)
    except LookupError as exc:
        raise GorilixError(f"cannot kill worker {slot} of node {node.name}: {exc}") from None


def _h_kill_worker(node: Node, source: bytes, src_id: int, corr: int, slot: int, sig: int) -> Any:
    pid = _kill(node, slot, sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        # Answer once the death is handled, so whatever the caller sends
        # next already finds the worker's actors held for re-creation.
        node._pending_kills.setdefault(slot, []).append((src_id, corr, pid, node._asker_node))
        return DEFER
    return pid


def _h_dead_letters(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {"count": node.dead_letter_count, "recent": list(node.recent_dead_letters)}


def _h_stats(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {
        "node": node.name, "actors": len(node.registry.actors), "names": len(node.registry.names),
        "malformed": node.malformed, "dead_letters": node.dead_letter_count,
        "forwarded": node.forwarded,
        "parked": sum(len(q) for q in node.table.parked.values()),
    }


def _h_hello(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {"node": node.name, "workers": node.pool.size, "clustered": node.links is not None}


def _h_members(node: Node, source: bytes, src_id: int, corr: int) -> list[dict[str, Any]]:
    if node.members_view is None:
        raise ClusterError("clustering not enabled")
    return list(node.members_view())


def _h_status(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {
        "node": node.name, "workers": _h_workers(node, source, src_id, corr),
        "stats": _h_stats(node, source, src_id, corr), "dead_letters": node.dead_letter_count,
        "recent_dead_letters": list(node.recent_dead_letters)[-10:],
    }


def _h_kill_worker_wait(node: Node, source: bytes, src_id: int, corr: int, slot: int | None, sig: int,
                        timeout: float) -> Any:
    """Kill a worker and answer once every actor it hosted runs again."""
    live = node._live_slots()
    if slot is None:
        if not live:
            raise GorilixError(f"node {node.name} has no live worker to kill")
        slot = random.choice(live)
    lost = {r.id for r in node.registry.on_slot(slot)}
    _kill(node, slot, sig)
    job = {"asker": (src_id, corr, node._asker_node), "slot": slot, "lost": lost,
           "started": time.monotonic(), "pid": node.pool.workers[slot].pid, "count": len(lost)}
    node._recoveries.append(job)
    node.schedule(timeout, _recovery_timeout, node, job)
    check_recoveries(node)
    return DEFER


def check_recoveries(node: Node) -> None:
    for job in list(node._recoveries):
        if not job.get("died"):
            continue
        job["lost"] = {i for i in job["lost"] if (r := node.registry.actors.get(i)) is not None and not r.placed}
        if job["lost"]:
            continue
        node._recoveries.remove(job)
        asker_id, asker_corr, asker_node = job["asker"]
        node._reply(asker_id, asker_corr, {
            "worker": job["slot"], "pid": job["pid"], "actors": job["count"],
            "recovered_ms": (time.monotonic() - job["started"]) * 1e3,
        }, dst_node=asker_node)


def _recovery_timeout(node: Node, job: dict[str, Any]) -> None:
    if job in node._recoveries:
        node._recoveries.remove(job)
        asker_id, asker_corr, asker_node = job["asker"]
        node._reply(asker_id, asker_corr, GorilixError(
            f"{len(job['lost'])} of {job['count']} actors of worker {job['slot']} were not back in time"),
            ok=False, dst_node=asker_node)


def _h_stop(node: Node, source: bytes, src_id: int, corr: int) -> bool:
    node._stop_requested.set()
    return True


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
    "spawn_supervisor": _h_spawn_supervisor,
    "add_child": _h_add_child,
    "remove_child": _h_remove_child,
    "children": _h_children,
    "stop_supervisor": _h_stop_supervisor,
    "enable_cluster": _h_enable_cluster,
    "disable_cluster": _h_disable_cluster,
    "rmonitor": _h_rmonitor,
    "rdown": _h_rdown,
    "publish_local": _h_publish_local,
    "rlink": _h_rlink,
    "runlink": _h_runlink,
    "rexit": _h_rexit,
    "reload": _h_reload,
    "reloaded": _h_reloaded,
    "dead_letter": _h_dead_letter,
    "whereis": _h_whereis,
    "register_name": _h_register_name,
    "unregister_name": _h_unregister_name,
    "workers": _h_workers,
    "kill_worker": _h_kill_worker,
    "dead_letters": _h_dead_letters,
    "stats": _h_stats,
    "stop": _h_stop,
    "hello": _h_hello,
    "members": _h_members,
    "status": _h_status,
    "kill_worker_wait": _h_kill_worker_wait,
    "load": _h_load,
}

