"""WorkerConfig: what a worker process is told when it starts (it travels in the spawn pipe)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerConfig:
    node_name: str
    slot: int
    incarnation: int
    id_prefix: int
    endpoint: str
    log_level: int = logging.WARNING
    #: Secret to this worker and its node (it travels in the spawn pipe): another
    #: process of the same user cannot connect first under a name it can guess
    #: (slot and incarnation) and take the restarted worker's place.
    token: str = field(default_factory=lambda: os.urandom(8).hex())  # (secrets' own source, without its imports)
    #: The user's program as multiprocessing describes it (sys.path, working directory, main
    #: module): the node process never imports it, but its workers must, to find actor classes.
    program: dict[str, Any] = field(default_factory=dict)
    #: Descriptors a forked worker inherited and must close (its node's lifeline, earlier workers' pipes).
    close_fds: tuple[int, ...] = ()
    #: The board its watchdog writes and its node reads (gorilix.workers.health); "" for none.
    health_path: str = ""

    @property
    def identity(self) -> bytes:
        return b"w%d.%d.%s" % (self.slot, self.incarnation, self.token.encode())
