"""WorkerRuntime: one worker process put together: a DEALER to the node, many actors, one loop.

Each part has one role, in a module of its own:

- ``loop``: the worker loop (a ZeroMQ poll; asyncio only when it has work);
- ``inbox``: incoming messages and the node's control ops, delivered;
- ``cells`` (with ``cell`` and ``scheduler``): the actors' lives and their mailboxes;
- ``outbox``, ``asks`` and ``port``: what the worker and its actors send, and the asks they wait on.

This module builds them, attaches the worker to its node and reports its
load; ``boot.worker_main`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os

import zmq

from gorilix.transport.sockets import ID_SHIFT, configure_internal
from gorilix.workers.asks import PendingAsks
from gorilix.workers.cells import CellKeeper
from gorilix.workers.config import WorkerConfig
from gorilix.workers.health import Watchdog
from gorilix.workers.loop import WorkerEventLoop, WorkerLoop
from gorilix.workers.outbox import Outbox
from gorilix.workers.port import WorkerPort
from gorilix.workers.protocol import AttachWorker, Load
from gorilix.workers.ref import install_resolver
from gorilix.workers.tally import Tally, tally_path

log = logging.getLogger("gorilix.worker")

#: Seconds between load reports to the node.
LOAD_EVERY = 1.0


class WorkerRuntime:
    """The actors' host in one worker process, from its start to its end."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.node = config.node_name
        self.slot = config.slot
        self.self_id = config.id_prefix << ID_SHIFT
        self._loop: WorkerLoop | None = None

    def _stop(self) -> None:
        """The node said shutdown: end the loop (the keeper stopped every actor)."""
        if self._loop is not None:
            self._loop.stop()

    def run(self) -> None:
        loop = WorkerEventLoop()
        asyncio.set_event_loop(loop)
        ctx = zmq.Context()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        configure_internal(sock)
        sock.setsockopt(zmq.ROUTING_ID, self.config.identity)
        sock.setsockopt(zmq.RECONNECT_IVL, 10)  # we may boot before the node's router binds: retry soon
        sock.connect(self.config.endpoint)
        outbox = Outbox(self.node, self.self_id)
        outbox.sock = sock
        asks = PendingAsks(loop)
        board = self.config.health_path
        keeper = CellKeeper(self.node, self.slot, self.self_id, loop, asks, outbox, on_shutdown=self._stop,
                            tally=Tally(tally_path(board)) if board else None)
        outbox.local = keeper.inbox
        parent = multiprocessing.parent_process()
        worker_loop = self._loop = WorkerLoop(loop, sock, keeper.inbox, parent.sentinel if parent else None)
        port = WorkerPort(loop, outbox, asks)
        install_resolver(lambda ref: port)
        outbox.report(AttachWorker(self.slot, self.config.incarnation, os.getpid()))
        outbox.flush()
        self._report_load_every(LOAD_EVERY, loop, keeper, outbox)
        if self.config.health_path:
            Watchdog(self.config.health_path, keeper.scheduler.now_running).start()
        try:
            worker_loop.serve()
        finally:
            install_resolver(None)
            sock.close(linger=0)
            ctx.term()

    def _report_load_every(
        self, seconds: float, loop: asyncio.AbstractEventLoop, keeper: CellKeeper, outbox: Outbox
    ) -> None:
        """Mailbox depths and counters, for `gorilix status` (cheap: once a second)."""
        inbox = keeper.inbox

        def report() -> None:
            loop.call_later(seconds, report)  # first: a failure here must not end the reports
            queued, deepest = keeper.scheduler.mailbox_load()
            outbox.report(Load(queued, deepest, keeper.scheduler.handled, inbox.malformed, inbox.dead_letters))

        loop.call_later(seconds, report)
