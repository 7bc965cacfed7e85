"""Control requests of operators and tools: status, load, kill-worker drills and their recovery timing, reload, stop."""

from __future__ import annotations

import heapq
import os
import signal
from typing import Any

from gorilix.control.base import DEFER
from gorilix.node_core import Job, NodeCore
from gorilix.node_events import Request
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError, GorilixError
from gorilix.workers.protocol import Load, Reload, Reloaded
from gorilix.workers.ref import MAX_TIMEOUT


def _h_reload(core: NodeCore, req: Request, module: str) -> Any:
    if not isinstance(module, str) or not module or module in core.reloads:
        raise GorilixError(f"cannot reload {shown(module)}: not a module name, or a reload of it is running")
    live = core.live_slots()
    if not live:
        return {"module": module, "workers": 0, "moved": 0, "errors": []}
    core.reloads[module] = Job(req, {"waiting": set(live), "moved": 0, "errors": [], "workers": len(live)})
    for slot in live:
        core.to_worker(slot, Reload(module))
    return DEFER


def _r_reloaded(core: NodeCore, req: Request, report: Reloaded) -> None:
    job = core.reloads.get(report.module)
    slot = core.slot_of(req.source)
    if job is None or slot not in job.data["waiting"]:
        return
    job.data["waiting"].discard(slot)
    job.data["moved"] += report.moved
    if report.error:
        job.data["errors"].append(f"worker {slot}: {report.error}")
    core.finish_reload(report.module)


def _r_load(core: NodeCore, req: Request, report: Load) -> None:
    slot = core.slot_of(req.source)
    if slot is None:
        return
    now = core.now()
    pid = core.slots[slot].pid
    last = core.worker_load.get(slot)
    rate = 0.0
    if last is not None and last["pid"] == pid and now > last["at"]:
        rate = max(0, report.handled - last["handled"]) / (now - last["at"])
    core.worker_load[slot] = {"queued": report.queued, "deepest": report.deepest, "handled": report.handled,
                              "msgs_per_s": rate, "at": now, "pid": pid, "malformed": report.malformed}


def _h_workers(core: NodeCore, req: Request) -> list[dict[str, Any]]:
    rows = []
    for slot, worker in core.slots.items():
        cpu, rss = core.host.worker_usage(slot) if worker.alive else (0.0, 0)
        rows.append({
            "id": slot, "pid": worker.pid,
            "alive": worker.alive and worker.ready,
            "actors": core.registry.count(slot), "cpu_percent": cpu, "rss_bytes": rss,
            "restarts": worker.restarts,
            "stuck": core.stuck(slot),  # (None, or how long and in what: a blocked actor freezes its worker)
            "queued_bytes": _queued(core, worker.identity) if worker.alive else 0,
            **_load_of(core, slot, worker.pid),
        })
    return rows


def _queued(core: NodeCore, identity: bytes) -> int:
    """Bytes sent to a worker and not yet read by it (gorilix.ledger); the node refuses more past max_queued."""
    account = core.ledger.accounts.get(identity)
    return 0 if account is None else max(0, account.backlog())


def _load_of(core: NodeCore, slot: int, pid: int | None) -> dict[str, Any]:
    load = core.worker_load.get(slot)
    if load is None or load["pid"] != pid:
        return {"mailbox": 0, "deepest_mailbox": 0, "msgs_per_s": 0.0}
    return {"mailbox": load["queued"], "deepest_mailbox": load["deepest"],
            "msgs_per_s": round(load["msgs_per_s"], 1)}


def _signal(core: NodeCore, op: str, sig: object) -> int:
    """``sig`` if it is a signal of this system, as ``ActorSystem.kill_worker`` checks; else InvalidArgument.

    Checked here because ``os.kill`` does not: it raises OSError for a number
    that is no signal, and cuts a very large one short (``1 << 40`` acts as
    signal 0, which kills nothing).
    """
    if type(sig) is not int or sig not in signal.valid_signals():
        raise core.invalid(f"{op}: sig={shown(sig)} is not a signal of this system; pass one such as "
                            f"{int(signal.SIGKILL)} (SIGKILL) or {int(signal.SIGTERM)} (SIGTERM)")
    return sig


def _slot(core: NodeCore, op: str, slot: object) -> int:
    """``slot`` if it names one of the node's workers; else InvalidArgument."""
    if type(slot) is not int or slot not in core.slots:
        raise core.invalid(f"{op}: worker={shown(slot)} is not a worker of node {core.name}; "
                            f"it has workers 0..{core.size - 1}")
    return slot


def _kill(core: NodeCore, slot: int, sig: int) -> int:
    """Send ``sig`` (checked by :func:`_signal`) to worker ``slot``; returns its pid."""
    try:
        pid = core.host.kill_worker(slot, sig)
        # A worker killed while it boots (a drill repeated before the respawn attached) must not
        # count towards the deaths that fail the node as a broken environment.
        core.slots[slot].killed = True
        if sig == signal.SIGKILL:  # certainly dying: what comes next parks for the actors re-created
            core.give_up(slot)
        return pid
    except LookupError as exc:
        raise GorilixError(f"cannot kill worker {slot} of node {core.name}: {exc}") from None
    except OSError as exc:  # it died meanwhile (ESRCH), or is not ours to signal (EPERM)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        raise GorilixError(
            f"cannot send {name} to worker {slot} of node {core.name}: {exc.strerror or exc}; "
            "if it just died, the node restarts it (see `gorilix status`)"
        ) from None


def _h_kill_worker(core: NodeCore, req: Request, slot: int, sig: int) -> Any:
    sig = _signal(core, "kill_worker", sig)
    pid = _kill(core, _slot(core, "kill_worker", slot), sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        # Answer once the death is handled, so whatever the caller sends
        # next already finds the worker's actors held for re-creation.
        core.pending_kills.setdefault(slot, []).append((req, pid))
        return DEFER
    return pid


def _h_dead_letters(core: NodeCore, req: Request) -> dict[str, Any]:
    return {"count": core.dead_letter_count, "recent": list(core.recent_dead_letters),
            "lost_in_deaths": core.lost_in_deaths}


#: Supervisors listed in ``stats``' restarts_by_supervisor, at most (those with most restarts).
MAX_SUPERVISORS_IN_STATS = 100


def _h_stats(core: NodeCore, req: Request) -> dict[str, Any]:
    table = core.table
    forwarded = core.host.forwarded()
    return {
        "node": core.name, "actors": len(core.registry.actors), "names": len(core.registry.names),
        "malformed": core.malformed, "refused": core.refused, "dead_letters": core.dead_letter_count,
        "lost_in_deaths": core.lost_in_deaths,  # tells lost in workers' deaths (counted in dead_letters too)
        "queue_refusals": core.queue_refusals,  # tells and asks refused: past max_queued for their worker
        "bad_meta": core.bad_meta + core.host.gossip_bad_meta(),  # members dropped for metadata a node cannot use
        "forwarded": forwarded,
        # Of the forwarded: asks (to a worker or a peer node), replies, and the rest (tells and stops).
        "asks": table.asks, "replies": table.replies,
        "tells": max(0, forwarded - table.asks - table.replies),
        "worker_deaths": core.worker_deaths,  # workers that died or were killed (not stopped with the node)
        "dead_letters_by_reason": dict(core.dead_letters_by_reason),  # (adds up to dead_letters)
        "restarts": core.lifecycle.restarts,  # restarts all supervisors carried out, cumulative
        "restarts_by_supervisor": restarts_by_supervisor(core),
        # From forwarding an ask to a worker here until its reply passes back, one ask in sample_every.
        "ask_latency": {**table.ask_latency.to_dict(), "sample_every": table.sample_every},
        "parked": sum(len(q) for q in core.table.parked.values()),
        "moved": core.moved,  # movable actors moved to balance the workers
        "recovering": len(core.recovering),  # actors of dead workers not running again yet
        "memory_restarts": core.memory_restarts,  # workers restarted past max_worker_memory
        "hang_restarts": core.hang_restarts,  # workers restarted stuck past hang_timeout
        # Datagrams sent, received, malformed, dropped (a bad seal, a replay): the gossip's own counters.
        "gossip": core.host.gossip_stats(),
    }


def restarts_by_supervisor(core: NodeCore) -> dict[str, int]:
    """Restarts each supervisor carried out, by name (two of one name are added up), most first;
    at most :data:`MAX_SUPERVISORS_IN_STATS`. A supervisor stopped for good is no longer listed."""
    by_name: dict[str, int] = {}
    for sup in core.lifecycle.supervisors.values():
        by_name[sup.name] = by_name.get(sup.name, 0) + sup.restarts
    most = heapq.nlargest(MAX_SUPERVISORS_IN_STATS, by_name.items(), key=lambda item: item[1])
    return dict(most)


def _h_recovering(core: NodeCore, req: Request) -> int:
    """How many actors of dead workers do not run again yet (cheap, unlike stats: for polling in a drill)."""
    return len(core.recovering)


def _h_hello(core: NodeCore, req: Request) -> dict[str, Any]:
    return {"node": core.name, "workers": core.size, "clustered": core.host.clustered, "pid": os.getpid()}


def _h_members(core: NodeCore, req: Request) -> list[dict[str, Any]]:
    members = core.host.members()
    if members is None:
        raise ClusterError("clustering not enabled")
    return members


def _h_status(core: NodeCore, req: Request) -> dict[str, Any]:
    return {
        "node": core.name, "workers": _h_workers(core, req),
        "stats": _h_stats(core, req), "dead_letters": core.dead_letter_count,
        "recent_dead_letters": list(core.recent_dead_letters)[-10:],
        "links": core.host.links_status(),
    }


def _h_kill_worker_wait(core: NodeCore, req: Request, slot: int | None, sig: int, timeout: float) -> Any:
    """Kill a worker and answer once every actor it hosted runs again.

    Every argument is checked before anything is killed or queued, so a
    refused request leaves neither a dead worker nor a job nobody answers.
    """
    op = "kill_worker_wait"
    if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT:  # (nan is refused too)
        raise core.invalid(f"{op}: timeout={shown(timeout)} must be a number of seconds > 0, at most "
                           f"{MAX_TIMEOUT:g} (how long the worker's actors may take to come back)")
    sig = _signal(core, op, sig)
    if slot is None:
        live = core.live_slots()
        if not live:
            raise GorilixError(f"node {core.name} has no live worker to kill")
        slot = core.rng.choice(live)
    slot = _slot(core, op, slot)
    lost = {r.id for r in core.registry.on_slot(slot)}
    pid = _kill(core, slot, sig)
    job = Job(req, {"slot": slot, "lost": lost, "started": core.now(), "pid": pid, "count": len(lost)})
    core.schedule(float(timeout), core.recovery_timeout, job)
    core.recoveries.append(job)
    core.check_recoveries()
    return DEFER


def _h_stop(core: NodeCore, req: Request) -> bool:
    core.stop()
    return True


#: Workers' reports, by type (gorilix.workers.protocol).
REPORTS: dict[type[Any], Any] = {Reloaded: _r_reloaded, Load: _r_load}

HANDLERS: dict[str, Any] = {
    "reload": _h_reload,
    "workers": _h_workers,
    "kill_worker": _h_kill_worker,
    "dead_letters": _h_dead_letters,
    "stats": _h_stats,
    "recovering": _h_recovering,
    "hello": _h_hello,
    "members": _h_members,
    "status": _h_status,
    "kill_worker_wait": _h_kill_worker_wait,
    "stop": _h_stop,
}
