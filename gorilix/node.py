"""The node: one thread that owns the router, the registry and the worker pool.

It is a plain poll loop over the ROUTER socket and the workers' process
sentinels, not an asyncio loop: forwarding is the hot path of every
cross-worker message, and a bare ``zmq.Poller`` loop costs a fraction of an
asyncio turn per message. It reads only the route frame of a message it
forwards; payloads pass through untouched. It never runs user code, so user
code cannot block it.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from gorilix.registry import ActorRecord, Registry
from transport import codec
from transport.errors import (
    ActorNotFound,
    ClusterError,
    DecodeError,
    GorilixError,
    NotRunning,
    SpawnError,
    WorkerDied,
    error_from_wire,
    error_to_wire,
)
from transport.frames import (
    ASK,
    CONTROL_ID,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    REPLY,
    TELL,
    Route,
    pack_env,
    pack_route,
    split_messages,
    unpack_env,
    unpack_route,
)
from transport.routing import ForwardingTable
from transport.sockets import ID_SHIFT, configure_internal, ipc_endpoint, ipc_path
from workers.pool import WorkerPool
from workers.spec import TEMPORARY, ActorSpec

log = logging.getLogger("gorilix.node")

#: Multiparts taken from the router before looking at sentinels again.
RECV_BURST = 1000
#: A worker that dies this many times in a row before it is ready stops the node.
MAX_EARLY_DEATHS = 3


class Status(enum.Enum):
    INIT = "init"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class _Defer:
    """A control handler's marker: the answer comes later."""


DEFER = _Defer()


class Node:
    def __init__(
        self, name: str, workers: int, *, log_level: int = logging.WARNING,
        max_parked: int = 10_000, start_method: str = "spawn",
    ) -> None:
        self.name = name
        self.status = Status.INIT
        self.endpoint = ipc_endpoint(name)
        self.zctx: zmq.Context[Any] = zmq.Context()
        self.router: zmq.Socket[bytes] = self.zctx.socket(zmq.ROUTER)
        configure_internal(self.router)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.bind(self.endpoint)
        self.table = ForwardingTable(max_parked_per_actor=max_parked)
        self.registry = Registry()
        self.pool = WorkerPool(name, self.endpoint, workers, log_level=log_level, start_method=start_method)
        self._ids = itertools.count(1)
        self._identity_slot: dict[bytes, int] = {}
        self._early_deaths: dict[int, int] = dict.fromkeys(range(workers), 0)
        self._pending_spawns: dict[int, tuple[str, int, int]] = {}  # actor id -> asker
        self._homeless: list[int] = []  # actors waiting for any live worker
        self._pending_kills: dict[int, list[tuple[int, int, int]]] = {}  # slot -> askers
        self._sentinels: dict[int, int] = {}
        self._poller = zmq.Poller()
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gorilix-node-{name}", daemon=True)
        self.malformed = 0
        self.dead_letter_count = 0
        self.recent_dead_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)

    # -- life ---------------------------------------------------------------

    def allocate_id(self) -> int:
        """Ids in the node's own range (prefix 0); thread-safe under the GIL."""
        return next(self._ids)

    def start(self, timeout: float) -> None:
        self.status = Status.STARTING
        self._thread.start()
        if not self._started.wait(timeout):
            self._stop_requested.set()
            self._thread.join(5.0)
            raise NotRunning(f"node {self.name}: workers not ready within {timeout:g} s")
        if self._failure is not None:
            self._thread.join(5.0)
            raise NotRunning(f"node {self.name} failed to start: {self._failure}") from self._failure

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        """Stop without a round trip (used when the control channel fails)."""
        self._stop_requested.set()

    def _run(self) -> None:
        try:
            self._poller.register(self.router, zmq.POLLIN)
            for slot in range(self.pool.size):
                self._start_worker(slot)
            self._loop()
        except BaseException as exc:  # the thread must always clean up
            log.exception("node %s failed", self.name)
            self._failure = exc
            self.status = Status.FAILED
        finally:
            self._shutdown_workers()
            self.router.close(linger=0)
            path = ipc_path(self.endpoint)
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            if self.status != Status.FAILED:
                self.status = Status.STOPPED
            self._started.set()

    def _loop(self) -> None:
        poll = self._poller.poll
        router = self.router
        while not self._stop_requested.is_set():
            for item, _ in poll(100):
                if item is router:
                    self._drain_router()
                else:
                    # Unregister first: the respawned worker may reuse this fd number.
                    self._poller.unregister(item)
                    self._worker_exited(self._sentinels.pop(item))

    def _start_worker(self, slot: int) -> None:
        worker = self.pool.start(slot)
        self._identity_slot[worker.identity] = slot
        self._sentinels[worker.process.sentinel] = slot
        self._poller.register(worker.process.sentinel, zmq.POLLIN)

    def _shutdown_workers(self) -> None:
        self.status = Status.STOPPING if self.status != Status.FAILED else self.status
        for worker in self.pool.workers.values():
            if worker.alive:
                self._send_control(worker.identity, ["shutdown"])
        self.pool.stop_all(timeout=3.0)

    # -- routing ------------------------------------------------------------

    def _drain_router(self) -> None:
        recv = self.router.recv_multipart
        for _ in range(RECV_BURST):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 4:
                self.malformed += 1
                continue
            try:
                route = unpack_route(frames[1])
            except DecodeError:
                self.malformed += 1
                continue
            if route.dst_id == CONTROL_ID:
                self._control_frames(frames)
            else:
                self._forward(frames[0], route, frames)

    def _forward(self, source: bytes, route: Route, frames: list[bytes]) -> None:
        """Send ``frames`` (identity slot included) towards ``route.dst_id``."""
        if route.dst_node != self.name:
            self._undeliverable(frames, ClusterError(f"node not found: {route.dst_node}"))
            return
        dst = route.dst_id
        endpoint = self.table.routes.get(dst)
        if endpoint is not None:
            frames[0] = endpoint
            try:
                self.router.send_multipart(frames)
            except zmq.ZMQError:  # the peer vanished; its sentinel is on the way
                frames[0] = source
                if self._identity_slot.get(endpoint) is not None:
                    self.table.hold(dst)
                    if self.table.park(dst, frames):
                        return
                self._undeliverable(frames, ActorNotFound(f"actor {self.name}/{dst:#x} is unreachable"))
                return
            flags = route.flags
            if flags & FLAG_ASK:
                self.table.ask_forwarded(endpoint, route.src_id, route.corr)
            elif flags & FLAG_REPLY:
                self.table.reply_forwarded(source, dst, route.corr)
            return
        if route.flags & FLAG_REPLY:
            self.table.reply_forwarded(source, dst, route.corr)
        if self.table.is_held(dst):
            if self.table.park(dst, frames):
                return
            self._undeliverable(frames, GorilixError(
                f"actor {self.name}/{dst:#x} is being re-created and already has "
                f"{self.table.max_parked_per_actor} messages waiting"))
            return
        self._undeliverable(frames, ActorNotFound(f"no actor {self.name}/{dst:#x} (it stopped or never existed)"))

    def _undeliverable(self, frames: list[bytes], error: GorilixError) -> None:
        """Fail the asks among ``frames``; count the rest as dead letters."""
        try:
            route = unpack_route(frames[1])
            pairs = split_messages(frames[1:])
        except DecodeError:
            self.malformed += 1
            return
        for env_frame, _ in pairs:
            try:
                env = unpack_env(env_frame)
            except DecodeError:
                self.malformed += 1
                continue
            if env.kind == ASK:
                self._reply(env.src_id, env.corr, error, ok=False)
            elif env.kind not in (REPLY, FAIL):
                self._dead_letter(route.dst_id, env.src_node, env.src_id, error)

    def _dead_letter(self, dst_id: int, src_node: str, src_id: int, error: BaseException) -> None:
        self.dead_letter_count += 1
        self.recent_dead_letters.append({
            "to": f"{self.name}/{dst_id:#x}", "from": f"{src_node}/{src_id:#x}" if src_id else None,
            "reason": str(error), "at": time.time(),
        })

    def _reply(self, dst_id: int, corr: int, value: Any, ok: bool = True) -> None:
        endpoint = self.table.routes.get(dst_id)
        if endpoint is None:
            return
        if ok:
            kind, payload = REPLY, codec.encode(value)
        else:
            kind, payload = FAIL, codec.encode(error_to_wire(value))
        try:
            self.router.send_multipart([
                endpoint, pack_route(self.name, dst_id, FLAG_REPLY, CONTROL_ID, corr),
                pack_env(kind, self.name, CONTROL_ID, corr), payload,
            ])
        except zmq.ZMQError:
            pass

    def _send_control(self, identity: bytes, op: list[Any]) -> None:
        try:
            self.router.send_multipart([
                identity, pack_route(self.name, CONTROL_ID), pack_env(TELL, self.name, CONTROL_ID),
                codec.encode(op),
            ])
        except zmq.ZMQError:
            log.debug("control %s to %r: peer gone", op[0], identity)

    # -- control ------------------------------------------------------------

    def _control_frames(self, frames: list[bytes]) -> None:
        source = frames[0]
        try:
            pairs = split_messages(frames[1:])
        except DecodeError:
            self.malformed += 1
            return
        for env_frame, payload in pairs:
            try:
                env = unpack_env(env_frame)
                op = codec.decode(payload)
                name, args = op[0], op[1:]
                handler = self._handlers[name]
            except (DecodeError, TypeError, IndexError, KeyError):
                self.malformed += 1
                continue
            try:
                result = handler(self, source, env.src_id, env.corr, *args)
            except GorilixError as exc:
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, exc, ok=False)
                else:
                    log.warning("control %s from %r failed: %s", name, source, exc)
                continue
            except (TypeError, ValueError, KeyError, IndexError, DecodeError) as exc:
                self.malformed += 1
                if env.kind == ASK:
                    self._reply(env.src_id, env.corr, GorilixError(f"bad {name} request: {exc}"), ok=False)
                continue
            if env.kind == ASK and result is not DEFER:
                self._reply(env.src_id, env.corr, result)

    def _live_slots(self) -> list[int]:
        return [s for s, w in self.pool.workers.items() if w.ready and w.alive]

    def _place(self, record: ActorRecord, slot: int | None = None) -> None:
        """Send ``record`` to a worker (the given one, or the least loaded)."""
        self.table.hold(record.id)
        live = self._live_slots()
        if slot not in live:  # none asked for, or that worker is restarting
            slot = self.registry.least_loaded(live)
        if slot is None:
            self.registry.move(record.id, None)
            self._homeless.append(record.id)
            return
        self.registry.move(record.id, slot)
        self._send_control(self.pool.workers[slot].identity, ["spawn", record.id, record.spec.to_wire()])

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
                self._place(record)
        if self.status == Status.STARTING and len(self._live_slots()) == self.pool.size:
            self.status = Status.RUNNING
            self._started.set()

    def _h_attach_client(self, source: bytes, src_id: int, corr: int, client_id: int) -> None:
        self.table.bind(client_id, source)

    def _h_detach_client(self, source: bytes, src_id: int, corr: int, client_id: int) -> None:
        self.table.unbind(client_id)

    def _h_spawn(self, source: bytes, src_id: int, corr: int, spec_fields: list[Any], worker: int | None) -> Any:
        spec = ActorSpec.from_wire(spec_fields)
        if worker is not None and worker not in self.pool.workers:
            raise SpawnError(f"no worker {worker} on node {self.name}; it has workers 0..{self.pool.size - 1}")
        if spec.name is not None and spec.name in self.registry.names:
            raise SpawnError(f"name {spec.name!r} is already registered on node {self.name}")
        record = ActorRecord(self.allocate_id(), spec, None)
        self.registry.add(record)
        if spec.name is not None:
            self.registry.register_name(spec.name, record.id)
        self._pending_spawns[record.id] = (source, src_id, corr)
        self._place(record, worker)
        return DEFER

    def _h_spawn_at(self, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any], worker: int) -> None:
        spec = ActorSpec.from_wire(spec_fields)
        record = ActorRecord(actor_id, spec, None)
        self.registry.add(record)
        if spec.name is not None and spec.name not in self.registry.names:
            self.registry.register_name(spec.name, actor_id)
        self._place(record, worker if worker in self.pool.workers else None)

    def _h_register(self, source: bytes, src_id: int, corr: int, actor_id: int, spec_fields: list[Any]) -> None:
        spec = ActorSpec.from_wire(spec_fields)
        slot = self._identity_slot.get(source)
        self.registry.add(ActorRecord(actor_id, spec, slot, placed=True))
        if spec.name is not None:
            if spec.name in self.registry.names:
                log.error("actor %#x asked for name %r, which is taken; it runs unnamed", actor_id, spec.name)
            else:
                self.registry.register_name(spec.name, actor_id)
        self.table.bind(actor_id, source)

    def _h_spawned(self, source: bytes, src_id: int, corr: int, actor_id: int) -> None:
        record = self.registry.actors.get(actor_id)
        if record is None:  # stopped meanwhile: the worker will report it
            return
        self.registry.move(actor_id, self._identity_slot.get(source), placed=True)
        for parked in self.table.bind(actor_id, source):
            self._forward(parked[0], unpack_route(parked[1]), parked)
        asker = self._pending_spawns.pop(actor_id, None)
        if asker is not None:
            self._reply(asker[1], asker[2], [self.name, actor_id, record.spec.name])

    def _h_spawn_failed(self, source: bytes, src_id: int, corr: int, actor_id: int, error: Any) -> None:
        exc = error_from_wire(error)
        record = self.registry.remove(actor_id)
        log.error("spawn of %s failed: %s", record.spec.class_path if record else actor_id, exc)
        for parked in self.table.unbind(actor_id):
            self._undeliverable(parked, ActorNotFound(f"actor {self.name}/{actor_id:#x} failed to start: {exc}"))
        asker = self._pending_spawns.pop(actor_id, None)
        if asker is not None:
            self._reply(asker[1], asker[2], exc, ok=False)

    def _h_stopped(self, source: bytes, src_id: int, corr: int, actor_id: int, reason: str) -> None:
        record = self.registry.actors.get(actor_id)
        if record is not None and record.slot != self._identity_slot.get(source):
            return  # a stale report from a worker the actor already left
        self.registry.remove(actor_id)
        for parked in self.table.unbind(actor_id):
            self._undeliverable(parked, ActorNotFound(f"actor {self.name}/{actor_id:#x} stopped ({reason})"))

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
            })
        return rows

    def _h_kill_worker(self, source: bytes, src_id: int, corr: int, slot: int, sig: int) -> Any:
        try:
            pid = self.pool.kill(slot, sig)
        except LookupError as exc:
            raise GorilixError(f"cannot kill worker {slot} of node {self.name}: {exc}") from None
        if sig in (signal.SIGKILL, signal.SIGTERM):
            # Answer once the death is handled, so whatever the caller sends
            # next already finds the worker's actors held for re-creation.
            self._pending_kills.setdefault(slot, []).append((src_id, corr, pid))
            return DEFER
        return pid

    def _h_dead_letters(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {"count": self.dead_letter_count, "recent": list(self.recent_dead_letters)}

    def _h_stats(self, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
        return {
            "node": self.name, "actors": len(self.registry.actors), "names": len(self.registry.names),
            "malformed": self.malformed, "dead_letters": self.dead_letter_count,
            "parked": sum(len(q) for q in self.table.parked.values()),
        }

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
        "stopped": _h_stopped,
        "dead_letter": _h_dead_letter,
        "whereis": _h_whereis,
        "register_name": _h_register_name,
        "unregister_name": _h_unregister_name,
        "workers": _h_workers,
        "kill_worker": _h_kill_worker,
        "dead_letters": _h_dead_letters,
        "stats": _h_stats,
        "stop": _h_stop,
    }

    # -- worker death -------------------------------------------------------

    def _worker_exited(self, slot: int) -> None:
        worker = self.pool.workers[slot]
        pid = worker.pid
        was_ready = worker.ready
        code = self.pool.reap(slot)
        self._identity_slot.pop(worker.identity, None)
        if self._stop_requested.is_set():
            return
        how = _describe_exit(code)
        actors, asks = self.table.endpoint_lost(worker.identity)
        self.table.unbind(worker.config.id_prefix << ID_SHIFT)
        died = WorkerDied(f"worker {slot} (pid {pid}) of node {self.name} died ({how}) while the ask was in flight")
        for src_id, corr in asks:
            self._reply(src_id, corr, died, ok=False)
        records = self.registry.on_slot(slot)
        log.warning("worker %d (pid %s) died (%s); re-creating %d actors", slot, pid, how, len(records))
        for record in records:
            if record.spec.restart == TEMPORARY:
                self.registry.remove(record.id)
                for parked in self.table.unbind(record.id):
                    self._undeliverable(parked, ActorNotFound(
                        f"temporary actor {self.name}/{record.id:#x} died with worker {slot}"))
            else:
                self._place(record)
        for asker_id, asker_corr, killed_pid in self._pending_kills.pop(slot, []):
            self._reply(asker_id, asker_corr, killed_pid)
        if not was_ready:
            self._early_deaths[slot] += 1
            if self._early_deaths[slot] >= MAX_EARLY_DEATHS:
                raise NotRunning(
                    f"worker {slot} died {MAX_EARLY_DEATHS} times before it was ready ({how}); "
                    "see the worker's output above"
                )
        self._start_worker(slot)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
