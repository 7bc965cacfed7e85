"""Control requests of operators and tools: status, load, kill-worker drills and their recovery timing, reload, stop."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any

from gorilix.control.base import DEFER, invalid
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError, GorilixError
from gorilix.workers.ref import MAX_TIMEOUT

if TYPE_CHECKING:
    from gorilix.node import Node


def _h_reload(node: Node, source: bytes, src_id: int, corr: int, module: str) -> Any:
    if not isinstance(module, str) or not module or module in node._reloads:
        raise GorilixError(f"cannot reload {shown(module)}: not a module name, or a reload of it is running")
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


def _signal(node: Node, op: str, sig: object) -> int:
    """``sig`` if it is a signal of this system, as ``ActorSystem.kill_worker`` checks; else InvalidArgument.

    Checked here because ``os.kill`` does not: it raises OSError for a number
    that is no signal, and cuts a very large one short (``1 << 40`` acts as
    signal 0, which kills nothing).
    """
    if type(sig) is not int or sig not in signal.valid_signals():
        raise invalid(node, f"{op}: sig={shown(sig)} is not a signal of this system; pass one such as "
                            f"{int(signal.SIGKILL)} (SIGKILL) or {int(signal.SIGTERM)} (SIGTERM)")
    return sig


def _slot(node: Node, op: str, slot: object) -> int:
    """``slot`` if it names one of the node's workers; else InvalidArgument."""
    if type(slot) is not int or slot not in node.pool.workers:
        raise invalid(node, f"{op}: worker={shown(slot)} is not a worker of node {node.name}; "
                            f"it has workers 0..{node.pool.size - 1}")
    return slot


def _kill(node: Node, slot: int, sig: int) -> int:
    """Send ``sig`` (checked by :func:`_signal`) to worker ``slot``; returns its pid."""
    try:
        return node.pool.kill(slot, sig)
    except LookupError as exc:
        raise GorilixError(f"cannot kill worker {slot} of node {node.name}: {exc}") from None
    except OSError as exc:  # it died meanwhile (ESRCH), or is not ours to signal (EPERM)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        raise GorilixError(
            f"cannot send {name} to worker {slot} of node {node.name}: {exc.strerror or exc}; "
            "if it just died, the node restarts it (see `gorilix status`)"
        ) from None


def _h_kill_worker(node: Node, source: bytes, src_id: int, corr: int, slot: int, sig: int) -> Any:
    sig = _signal(node, "kill_worker", sig)
    pid = _kill(node, _slot(node, "kill_worker", slot), sig)
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
        "malformed": node.malformed, "refused": node.refused, "dead_letters": node.dead_letter_count,
        "bad_meta": node.bad_meta,  # members dropped for gossip metadata a node cannot use
        "forwarded": node.forwarded,
        "parked": sum(len(q) for q in node.table.parked.values()),
        # Datagrams sent, received, malformed, dropped (a bad seal, a replay): the gossip's own counters.
        "gossip": node.cluster.stats() if node.cluster is not None else None,
    }


def _h_hello(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {"node": node.name, "workers": node.pool.size, "clustered": node.links is not None, "pid": os.getpid()}


def _h_members(node: Node, source: bytes, src_id: int, corr: int) -> list[dict[str, Any]]:
    if node.members_view is None:
        raise ClusterError("clustering not enabled")
    return list(node.members_view())


def _h_status(node: Node, source: bytes, src_id: int, corr: int) -> dict[str, Any]:
    return {
        "node": node.name, "workers": _h_workers(node, source, src_id, corr),
        "stats": _h_stats(node, source, src_id, corr), "dead_letters": node.dead_letter_count,
        "recent_dead_letters": list(node.recent_dead_letters)[-10:],
        "links": _links(node),
    }


def _links(node: Node) -> list[dict[str, Any]]:
    """This node's links to its peers: a link that is not ready (a refused handshake) keeps what is sent to it."""
    if node.links is None:
        return []
    return [{"node": name, "endpoint": link.endpoint, "ready": link.ready, "pending": len(link.pending),
             "refusals": link.refusals} for name, link in sorted(node.links.peers.items())]


def _h_kill_worker_wait(node: Node, source: bytes, src_id: int, corr: int, slot: int | None, sig: int,
                        timeout: float) -> Any:
    """Kill a worker and answer once every actor it hosted runs again.

    Every argument is checked before anything is killed or queued, so a
    refused request leaves neither a dead worker nor a job nobody answers.
    """
    op = "kill_worker_wait"
    if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT:  # (nan is refused too)
        raise invalid(node, f"{op}: timeout={shown(timeout)} must be a number of seconds > 0, at most "
                            f"{MAX_TIMEOUT:g} (how long the worker's actors may take to come back)")
    sig = _signal(node, op, sig)
    if slot is None:
        live = node._live_slots()
        if not live:
            raise GorilixError(f"node {node.name} has no live worker to kill")
        slot = random.choice(live)
    slot = _slot(node, op, slot)
    lost = {r.id for r in node.registry.on_slot(slot)}
    _kill(node, slot, sig)
    job = {"asker": (src_id, corr, node._asker_node), "slot": slot, "lost": lost,
           "started": time.monotonic(), "pid": node.pool.workers[slot].pid, "count": len(lost)}
    node.schedule(float(timeout), _recovery_timeout, node, job)
    node._recoveries.append(job)
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
    "reload": _h_reload,
    "reloaded": _h_reloaded,
    "load": _h_load,
    "workers": _h_workers,
    "kill_worker": _h_kill_worker,
    "dead_letters": _h_dead_letters,
    "stats": _h_stats,
    "hello": _h_hello,
    "members": _h_members,
    "status": _h_status,
    "kill_worker_wait": _h_kill_worker_wait,
    "stop": _h_stop,
}
