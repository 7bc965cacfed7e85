"""The node's control endpoint: one handler per request a worker, a client or a peer sends.

Kept apart from the routing loop in :mod:`gorilix.node` (a mixin of
``Node``): these run on the node thread when a message reaches actor id 0.
Each handler gets the sender's identity, its actor id and the ask's
correlation id, then the request's arguments; what it returns answers an
ask, unless it returns :data:`DEFER` and answers later itself.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from typing import Any

import zmq

from gorilix.cluster.links import PeerLinks
from gorilix.registry import ActorRecord
from gorilix.supervision import Strategy
from transport.errors import ClusterError, GorilixError, SpawnError, error_from_wire
from transport.frames import unpack_route
from transport.sockets import ID_SHIFT
from workers.spec import ActorSpec

log = logging.getLogger("gorilix.node")


class _Defer:
    """A control handler's marker: the answer comes later."""


DEFER = _Defer()


class ControlHandlers:
    def _h_attach_worker(self, source: bytes, src_id: int, corr: int, slot: int, incarnation: int, pid: int) -> None:
        worker = self.pool.workers.get(slot)
        if worker is None or worker.identity != source:
            raise GorilixError(f"unknown worker {source!r} attached")
        worker.ready = True
        self._early_deaths[slot] = 0
        self.table.bind(worker.config.id_prefix << ID_SHIFT, source)
        log.info("worker %d ready (pid %d)", slot, pid)
        homeless, self._homeless = self._homeless, []
        for actor_id in homeless:
            record = self.registry.actors.get(actor_id)
            if record is not None:
                self.place(record)
        if len(self._live_slots()) == self.pool.size:
            self._all_workers_ready()

    def _h_attach_client(self, source: bytes, src_id: int, corr: int, client_id: int) -> None:
        self.table.bind(client_id, source)

    def _h_detach_client(self, source: bytes, src_id: int, corr: int, client_id: int) -> None:
        self.table.unbind(client_id)

    def _h_spawn(self, source: bytes, src_id: int, corr: int, spec_fields: list[Any], worker: int | None,
                 sup_id: int | None = None, key: str | None = None) -> Any:
        spec = ActorSpec.from_wire(spec_fields)
        if worker is not None and worker not in self.pool.workers:
            raise SpawnError(f"no worker {worker} on node {self.name}; it has workers 0..{self.pool.size - 1}")
        if spec.name is not None and spec.name in self.registry.names:
            raise SpawnError(f"name {spec.name!r} is already registered on node {self.name}")
        sup = self.lifecycle.supervisors.get(sup_id if sup_id is not None else self.lifecycle.root.id)
        if sup is None:
            raise SpawnError(f"supervisor {sup_id:#x} is stopped; cannot add a child to it")
        if key is not None and sup.find(key) is not None:
            raise SpawnError(f"supervisor {sup.name!r} already has a child {key!r}; remove it first")
        record = ActorRecord(self.allocate_id(), spec, None)
        self.registry.add(record)
        self.lifecycle.adopt(record, sup.id, key)
        if spec.name is not None:
            self.registry.register_name(spec.name, record.id)
        self._pending_spawns[record.id] = (self._asker_node, src_id, corr)
        self.place(record, worker)
        return DEFER

    def _h_spawn_at(self, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any], worker: int) -> None:
        spec = ActorSpec.from_wire(spec_fields)
        if spec.name is not None and spec.name in self.registry.names:
            # As for a local spawn: the newcomer does not run under a taken name.
            log.error("spawn of %s refused: name %r is already registered", spec.class_path, spec.name)
            return
        record = ActorRecord(actor_id, spec, None)
        self.registry.add(record)
        self.lifecycle.adopt(record)
        if spec.name is not None:
            self.registry.register_name(spec.name, actor_id)
        self.place(record, worker if worker in self.pool.workers else None)

    def _h_register(self, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any]) -> None:
        spec = ActorSpec.from_wire(spec_fields)
        slot = self._identity_slot.get(source)
        record = ActorRecord(actor_id, spec, slot, placed=True, started=True)
        self.registry.add(record)
        self.lifecycle.adopt(record)
        self.table.bind(actor_id, source)
        if spec.name is not None:
            if spec.name in self.registry.names:
                # As Erlang's register would: the newcomer does not get to run under a taken name.
                self.lifecycle.exited([(record, f"name {spec.name!r} is already registered", True)], final=True)
            else:
                self.registry.register_name(spec.name, actor_id)

    def _h_spawned(self, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
        record = self.registry.actors.get(actor_id)
        if record is None:  # stopped meanwhile: the worker will report it
            return
        self.registry.move(actor_id, self._identity_slot.get(source), placed=True)
        for parked in self.table.bind(actor_id, source):
            self._forward(parked[0], unpack_route(parked[1]), parked)
        asker = self._pending_spawns.pop(actor_id, None)
        if asker is not None:
            self._reply(asker[1], asker[2], [self.name, actor_id, record.spec.name], dst_node=asker[0])
        else:
            self.lifecycle.restarted(actor_id)  # re-created after its worker died
        if self._recoveries:
            self._check_recoveries()

    def _h_spawn_failed(self, source: bytes, src_id: int, corr: int, actor_id: int, error: Any) -> None:
        exc = error_from_wire(error)
        record = self.registry.actors.get(actor_id)
        if record is None:
            return
        asker = self._pending_spawns.pop(actor_id, None)
        if asker is not None or not record.started:  # a first start: nothing to restart
            sup = self.lifecycle.supervisors.get(record.supervisor)
            if sup is not None:
                sup.remove(actor_id)
            self.forget(record, f"failed to start: {exc}")
            if asker is not None:
                self._reply(asker[1], asker[2], exc, ok=False, dst_node=asker[0])
            return
        log.error("re-creating %s failed: %s", record.spec.class_path, exc)
        self.registry.move(actor_id, None)
        self.lifecycle.exited([(record, f"restart failed: {exc}", True)], final=False)

    def _h_exited(self, source: bytes, src_id: int, corr: int, actor_id: int, reason: str,
                  abnormal: bool, final: bool) -> None:
        record = self.registry.actors.get(actor_id)
        if record is None or record.slot != self._identity_slot.get(source):
            return  # already forgotten, or a stale report from a worker it left
        self.lifecycle.exited([(record, str(reason), bool(abnormal))], final=bool(final))

    def _h_restarted(self, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
        self.lifecycle.restarted(actor_id)

    # monitors, links and topics (from actors)

    def _h_monitor(self, source: bytes, src_id: int, corr: int, watcher: int, node: str, watched: int) -> None:
        self.lifecycle.monitor(watcher, node, watched)

    def _h_demonitor(self, source: bytes, src_id: int, corr: int, watcher: int, node: str, watched: int) -> None:
        self.lifecycle.demonitor(watcher, node, watched)

    def _h_link(self, source: bytes, src_id: int, corr: int, a: int, node: str, b: int) -> None:
        self.lifecycle.link(a, node, b)

    def _h_unlink(self, source: bytes, src_id: int, corr: int, a: int, node: str, b: int) -> None:
        self.lifecycle.unlink(a, node, b)

    def _h_subscribe(self, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
        if actor_id not in self.registry.actors:
            raise GorilixError(f"cannot subscribe {self.name}/{actor_id:#x} to {topic!r}: no such actor")
        self.lifecycle.watches.subscribe(str(topic), actor_id)
        return True

    def _h_unsubscribe(self, source: bytes, src_id: int, corr: int, topic: str, actor_id: int) -> bool:
        return self.lifecycle.watches.unsubscribe(str(topic), actor_id)

    def _h_publish(self, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
        if type(payload) is not bytes:
            raise GorilixError("publish: payload must be codec bytes")
        reached = self._publish_here(str(topic), payload)
        if self.links is not None and self._asker_node == self.name:
            for peer in list(self.links.peers):
                self.send_node_control(peer, ["publish_local", str(topic), payload])
        elif not reached:
            self._dead_letter(0, self.name, src_id, GorilixError(f"no subscriber for topic {topic!r}"))
        return reached

    # supervisors (from the ActorSystem)

    def _h_spawn_supervisor(self, source: bytes, src_id: int, corr: int, name: str,
                            strategy: list[Any], parent: int | None, restart: str) -> int:
        try:
            parsed = Strategy.from_wire(strategy)
        except (TypeError, ValueError) as exc:
            raise GorilixError(f"bad supervision strategy: {exc}") from None
        owner = self.lifecycle.root.id if parent is None else parent
        sup = self.lifecycle.supervisors.get(owner)
        if sup is None:
            raise GorilixError(f"parent supervisor {parent} is stopped")
        if sup.find(str(name)) is not None:
            raise GorilixError(f"supervisor {sup.name!r} already has a child {name!r}")
        return self.lifecycle.new_supervisor(str(name), parsed, owner, restart).id

    def _h_add_child(self, source: bytes, src_id: int, corr: int, sup_id: int, key: str,
                     spec_fields: list[Any], worker: int | None) -> Any:
        return self._h_spawn(source, src_id, corr, spec_fields, worker, sup_id, str(key))

    def _h_remove_child(self, source: bytes, src_id: int, corr: int, sup_id: int, key: str) -> bool:
        sup = self.lifecycle.supervisors.get(sup_id)
        child = None if sup is None else sup.find(str(key))
        if sup is None or child is None:
            return False
        if child.is_supervisor:
            self.lifecycle.stop_supervisor(child.id, "shutdown")
            return True
        sup.remove(child.id)
        record = self.registry.actors.get(child.id)
        if record is not None:
            self.lifecycle.exited([(record, "shutdown", False)], final=True)
        return True

    def _h_children(self, source: bytes, src_id: int, corr: int, sup_id: int) -> list[Any]:
        rows = []
        for key, child_id, is_sup in self.lifecycle.children(sup_id):
            record = self.registry.actors.get(child_id)
            rows.append([key, self.name, child_id, record.spec.name if record else None, is_sup])
        return rows

    def _h_stop_supervisor(self, source: bytes, src_id: int, corr: int, sup_id: int) -> bool:
        if sup_id == self.lifecycle.root.id:
            raise GorilixError("the root supervisor stops with the node: call system.stop()")
        exists = sup_id in self.lifecycle.supervisors
        self.lifecycle.stop_supervisor(sup_id, "shutdown")
        return exists

    # clustering

    def _h_enable_cluster(self, source: bytes, src_id: int, corr: int, endpoint: str) -> list[str]:
        if self.links is not None:
            raise ClusterError("clustering is already enabled on this node")
        self.links = PeerLinks(self.name, self.zctx, endpoint, self.cluster_keys)
        self._poller.register(self.links.external, zmq.POLLIN)
        self._events = self.zctx.socket(zmq.PULL)
        self._events.setsockopt(zmq.LINGER, 0)
        events_endpoint = f"inproc://gorilix-events-{id(self):x}"
        self._events.bind(events_endpoint)
        self._poller.register(self._events, zmq.POLLIN)
        return [self.links.endpoint, events_endpoint]

    def _h_disable_cluster(self, source: bytes, src_id: int, corr: int) -> bool:
        return self._disable_cluster()

    def _h_rmonitor(self, source: bytes, src_id: int, corr: int, watcher: int, watched: int) -> None:
        self.lifecycle.remote_monitor(self._asker_node, watcher, watched)

    def _h_rdown(self, source: bytes, src_id: int, corr: int, watched: int, name: str | None,
                 reason: str, watcher: int) -> None:
        self.lifecycle.remote_down(self._asker_node, watched, name, str(reason), watcher)

    def _h_publish_local(self, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
        return self._publish_here(str(topic), payload)

    def _publish_here(self, topic: str, payload: bytes) -> int:
        subscribers = self.lifecycle.watches.subscribers(topic)
        for actor_id in subscribers:
            self._tell_bytes(actor_id, payload)
        return len(subscribers)

    # hot reload

    def _h_reload(self, source: bytes, src_id: int, corr: int, module: str) -> Any:
        if not isinstance(module, str) or not module or module in self._reloads:
            raise GorilixError(f"cannot reload {module!r}: not a module name, or a reload of it is running")
        live = self._live_slots()
        if not live:
            return {"module": module, "workers": 0, "moved": 0, "errors": []}
        self._reloads[module] = {"asker": (src_id, corr, self._asker_node), "waiting": set(live), "moved": 0, "errors": [],
                                 "workers": len(live)}
        for slot in live:
            self._send_control(self.pool.workers[slot].identity, ["reload", module])
        return DEFER

    def _h_reloaded(self, source: bytes, src_id: int, corr: int, module: str, moved: int, error: str | None) -> None:
        job = self._reloads.get(module)
        slot = self._identity_slot.get(source)
        if job is None or slot not in job["waiting"]:
            return
        job["waiting"].discard(slot)
        job["moved"] += int(moved)
        if error:
            job["errors"].append(f"worker {slot}: {error}")
        self._finish_reload(module)

    def _finish_reload(self, module: str) -> None:
        job = self._reloads[module]
        if job["waiting"]:
            return
        del self._reloads[module]
        asker_id, asker_corr, asker_node = job["asker"]
        if job["errors"]:
            self._reply(asker_id, asker_corr, GorilixError(
                f"reload of {module} failed: {'; '.join(job['errors'])}"), ok=False, dst_node=asker_node)
        else:
            self._reply(asker_id, asker_corr, {"module": module, "workers": job["workers"],
                                               "moved": job["moved"], "errors": []}, dst_node=asker_node)

    def _h_dead_letter(self, source: bytes, src_id: int, corr: int, dst_id: int, reason: str) -> None:
        self._dead_letter(dst_id, self.name, 0, GorilixError(f"{reason} at worker {self._identity_slot.get(source)}"))

    def _h_whereis(self, source: bytes, src_id: int, corr: int, name: str) -> Any:
        actor_id = self.registry.names.get(name)
        return None if actor_id is None else [self.name, actor_id, name]

    def _h_register_name(self, source: bytes, src_id: int, corr: int, name: str, actor_id: int) -> bool:
        self.registry.register_name(name, actor_id)
        return True

    def _h_unregister_name(self, source: bytes, src_id: int, corr: int, name: str) -> bool:
        return self.registry.unregister_name(name)

    def _h_load(self, source: bytes, src_id: int, corr: int, queued: int, deepest: int, handled: int,
                malformed: int, dead_letters: int) -> None:
        slot = self._identity_slot.get(source)
        if slot is None:
            return
        now = time.monotonic()
        last = self._worker_load.get(slot)
        rate = 0.0
        if last is not None and last["pid"] == self.pool.workers[slot].pid and now > last["at"]:
            rate = max(0, handled - last["handled"]) / (now - last["at"])
        self._worker_load[slot] = {"queued": int(queued), "deepest": int(deepest), "handled": int(handled),
                                   "msgs_per_s": rate, "at": now, "pid": self.pool.workers[slot].pid,
                                   "malformed": int(malformed)}

    def _h_workers(self, source: bytes, src_id: int, corr: int) -> list[dict[str, Any]]:
        rows = []
        for slot in range(self.pool.size):
            worker = self.pool.workers.get(slot)
            cpu, rss = self.pool.stats(slot)
            rows.append({
                "id": slot, "pid": worker.pid if worker else None,
                "alive": bool(worker and worker.alive and worker.ready),
                "actors": self.registry.count(slot), "cpu_percent": cpu, "rss_bytes": rss,
                "restarts": self.pool.restarts[slot],
                **self._load_of(slot, worker.pid if worker else None),
            })
        return rows

    def _load_of(self, slot: int, pid: int | None) -> dict[str, Any]:
        load = self._worker_load.get(slot)
        if load is None or load["pid"] != pid:
            return {"mailbox": 0, "deepest_mailbox": 0, "msgs_per_s": 0.0}
        return {"mailbox": load["queued"], "deepest_mailbox": load["deepest"],
                "msgs_per_s": round(load["msgs_per_s"], 1)}

    def _h_kill_worker(self, source: bytes, src_id: int, corr: int, slot: int, sig: int) -> Any:
        try:
            pid = self.pool.kill(slot, sig)
        except LookupError as exc:
            raise GorilixError(f"cannot kill worker {slot} of node {self.name}: {exc}") from None
        if sig in (signal.SIGKILL, signal.SIGTERM):
            # Answer once the death is handled, so whatever the caller sends
            # next already finds the worker's actors held for re-creation.
            self._pending_kills.setdefault(slot, []).append((src_id, corr, pid, self._asker_node))
            return DEFER
        return pid

    def _h_dead_letters(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {"count": self.dead_letter_count, "recent": list(self.recent_dead_letters)}

    def _h_stats(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {
            "node": self.name, "actors": len(self.registry.actors), "names": len(self.registry.names),
            "malformed": self.malformed, "dead_letters": self.dead_letter_count,
            "forwarded": self.forwarded,
            "parked": sum(len(q) for q in self.table.parked.values()),
        }

    def _h_hello(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {"node": self.name, "workers": self.pool.size, "clustered": self.links is not None}

    def _h_members(self, source: bytes, src_id: int, corr: int) -> list[dict[str, Any]]:
        if self.members_view is None:
            raise ClusterError("clustering not enabled")
        return list(self.members_view())

    def _h_status(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {
            "node": self.name, "workers": self._h_workers(source, src_id, corr),
            "stats": self._h_stats(source, src_id, corr), "dead_letters": self.dead_letter_count,
            "recent_dead_letters": list(self.recent_dead_letters)[-10:],
        }

    def _h_kill_worker_wait(self, source: bytes, src_id: int, corr: int, slot: int | None, sig: int,
                            timeout: float) -> Any:
        """Kill a worker and answer once every actor it hosted runs again."""
        live = self._live_slots()
        if slot is None:
            if not live:
                raise GorilixError(f"node {self.name} has no live worker to kill")
            slot = random.choice(live)
        lost = {r.id for r in self.registry.on_slot(slot)}
        pid = self._h_kill_worker(source, src_id, corr, slot, sig)
        if pid is DEFER:  # the kill answer is replaced by ours
            self._pending_kills[slot].pop()
        job = {"asker": (src_id, corr, self._asker_node), "slot": slot, "lost": lost,
               "started": time.monotonic(), "pid": self.pool.workers[slot].pid, "count": len(lost)}
        self._recoveries.append(job)
        self.schedule(timeout, self._recovery_timeout, job)
        self._check_recoveries()
        return DEFER

    def _check_recoveries(self) -> None:
        for job in list(self._recoveries):
            if not job.get("died"):
                continue
            job["lost"] = {i for i in job["lost"] if (r := self.registry.actors.get(i)) is not None and not r.placed}
            if job["lost"]:
                continue
            self._recoveries.remove(job)
            asker_id, asker_corr, asker_node = job["asker"]
            self._reply(asker_id, asker_corr, {
                "worker": job["slot"], "pid": job["pid"], "actors": job["count"],
                "recovered_ms": (time.monotonic() - job["started"]) * 1e3,
            }, dst_node=asker_node)

    def _recovery_timeout(self, job: dict[str, Any]) -> None:
        if job in self._recoveries:
            self._recoveries.remove(job)
            asker_id, asker_corr, asker_node = job["asker"]
            self._reply(asker_id, asker_corr, GorilixError(
                f"{len(job['lost'])} of {job['count']} actors of worker {job['slot']} were not back in time"),
                ok=False, dst_node=asker_node)

    def _h_stop(self, source: bytes, src_id: int, corr: int) -> bool:
        self._stop_requested.set()
        return True

    _handlers = {
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

