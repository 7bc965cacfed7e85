"""The node process: what ``ActorSystem(...)`` starts, one per system.

It owns the router, the registry, the supervisors, the worker pool and, once
clustering is on, the gossip engine and the peer links. It imports no user
module and runs no user code, so nothing the user's program does (a busy
loop, a C call that holds its GIL for a minute) can delay routing,
supervision or gossip. Its workers import the user's program instead, as
multiprocessing children do.

It talks to the process that started it over one socket pair
(:mod:`gorilix.node_handle` holds the other end), with msgpack records:

- the parent sends one start record (name, workers, the program's paths);
- the node answers ``ready`` (its router's endpoint) or ``failed``;
- the parent may later send ``stop``, when its control channel fails;
- the node sends ``ended`` (why) just before it exits.

The socket pair is also the lifeline: the node stops, within a second and
with its workers, when the parent's end closes, however the parent ended
(SIGKILL too). A change of parent pid is the second sign, for a parent whose
forked children still hold its end. A program that stops its system leaves
the cluster gracefully; one that dies takes its node with it as a crash
would, without a leave, so its peers find it dead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from gorilix.ledger import DEFAULT_MAX_QUEUED
from gorilix.transport import codec
from gorilix.transport.errors import DecodeError, GorilixError, NotRunning
from gorilix.transport.sockets import ipc_endpoint, remove_stale_ipc_files
from gorilix.workers import timeslice
from gorilix.workers.boot import program_from_wire
from gorilix.workers.lineage import become_subreaper, end_adopted, reap_adopted
from gorilix.workers.pool import WorkerPool

log = logging.getLogger("gorilix.node")

#: How often the main thread looks at the lifeline and the parent pid.
WATCH_EVERY = 0.1
#: How long workers get to stop when the program that started the node is gone.
ORPHAN_GRACE = 0.5
#: Every this many watches, the node reaps the processes it adopted that ended.
REAP_EVERY = 20
#: At most this long for the gossip engine to spread a leave once the node loop ended.
LEAVE_LINGER_MAX = 2.0


def main() -> None:
    """Entry point: ``python -c ... FD`` with FD the node's end of the socket pair."""
    conn = Connection(int(sys.argv[1]))
    try:
        start = codec.decode(conn.recv_bytes())
    except (EOFError, OSError, DecodeError):
        os._exit(2)  # the parent went away before it said what to start
    os._exit(run(conn, start))


def run(conn: Connection, start: dict[str, Any]) -> int:
    """Start the node, report ready, watch the parent until the loop ends; returns the exit code."""
    name = start["name"]
    parent = int(start["parent"])
    logging.basicConfig(
        level=int(start["log_level"]), stream=sys.stderr,
        format=f"%(asctime)s node {name.replace('%', '%%')} %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (Ctrl-C, where it reaches us): the program decides
    become_subreaper()  # what actors start and leave behind comes back to the node (gorilix.workers.lineage)
    # Before any thread or worker starts: they inherit both (gorilix.workers.timeslice).
    if timeslice.wanted(timeslice.SESSION_ENV_VAR):
        own = timeslice.start_own_session()
        log.debug("node %s: %s", name, "a session of its own" if own else "in the program's session")
    if timeslice.wanted():
        granted = timeslice.request_short_slice()
        log.debug("node %s: time slice %s", name, "the kernel's default" if granted is None else f"{granted} ns")
    # The workers boot while the node's own modules load; ZeroMQ connects them once the router binds.
    try:  # (the socket goes in the user's private runtime directory, which may be refused: say why)
        remove_stale_ipc_files()
        endpoint = ipc_endpoint(name)
    except GorilixError as exc:
        _send(conn, {"failed": f"node {name} failed to start: {exc}"})
        return 1
    pool = WorkerPool(name, endpoint, int(start["workers"]), log_level=int(start["log_level"]),
                      program=program_from_wire(start["program"]))
    try:
        # Forked: this process has one thread and no ZeroMQ context yet, and a fork spares each worker
        # a fresh interpreter's start. Workers respawned later start fresh (the node has threads then).
        pool.start_all(fork=True, close_in_child=(conn.fileno(),))
        from gorilix.node import Node  # (after the workers started: see above)

        limit, hang = start.get("max_worker_memory"), start.get("hang_timeout")
        queued = start.get("max_queued", DEFAULT_MAX_QUEUED)
        node = Node(name, pool.size, log_level=int(start["log_level"]), max_parked=int(start["max_parked"]),
                    max_worker_memory=int(limit) if limit is not None else None,
                    hang_timeout=float(hang) if hang is not None else None, pool=pool,
                    max_queued=int(queued) if queued is not None else None)
    except Exception as exc:  # (a bind the OS refuses, say): said to the parent, which raises it
        log.exception("node %s failed to start", name)
        pool.stop_all(timeout=0.5)
        _send(conn, {"failed": f"node {name} failed to start: {type(exc).__name__}: {exc}"})
        return 1
    signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    try:
        node.start(float(start["start_timeout"]))
    except NotRunning as exc:
        _send(conn, {"failed": str(exc)})
        return 1
    _send(conn, {"ready": True, "endpoint": node.endpoint, "workers": node.pool.size, "pid": os.getpid()})
    watched = 0
    while not node.join(WATCH_EVERY):  # (wakes the moment the loop ends)
        watched += 1
        if watched % REAP_EVERY == 0:
            try:
                reap_adopted({pid for w in list(pool.workers.values()) if (pid := w.pid) is not None})
            except Exception:  # (housekeeping: never the end of the node)
                log.exception("reaping the processes the node adopted failed")
        word = _word_from_parent(conn, parent)
        if word == "stop":
            node.request_stop()
        elif word == "gone":
            log.info("node %s: the program that started it is gone; stopping", name)
            node.go_silent()  # a crash of the program is a crash of the node: peers find it dead
            node.request_stop(grace=ORPHAN_GRACE)
            node.join(ORPHAN_GRACE + 1.0)
            break
    node.wait_cluster_closed(LEAVE_LINGER_MAX)
    end_adopted()  # (the workers are gone: what is left was started by actors)
    failed = node.failure is not None
    _send(conn, {"ended": node.ended.reason or "was stopped", "failed": failed})
    logging.shutdown()
    return 1 if failed else 0


def _word_from_parent(conn: Connection, parent: int) -> str | None:
    """ "stop" when the parent asked, "gone" once it has ended, else None (never waits)."""
    try:
        if conn.poll(0):
            record = codec.decode(conn.recv_bytes())
            if isinstance(record, dict) and "stop" in record:
                return "stop"
    except (EOFError, OSError):
        return "gone"
    except DecodeError:
        pass  # (our own parent wrote it; nothing to do with a record we cannot read)
    return "gone" if os.getppid() != parent else None


def _send(conn: Connection, record: dict[str, Any]) -> None:
    try:
        conn.send_bytes(codec.encode(record))
    except OSError:  # the parent is gone: nobody to tell
        pass

