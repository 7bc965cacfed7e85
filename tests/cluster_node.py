"""A cluster member for the multi-process tests: `python cluster_node.py NAME PORT [SEED...]`.

Environment: GORILIX_TEST_SECRET (hex) for a secret key. It prints one JSON
line when ready, serves a named "inspector" actor, and on SIGTERM leaves the
cluster and exits 0. Dies with the test via stdin EOF.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from gorilix import Actor, ActorRef, ActorSystem
from gorilix.cluster import bridge
from gorilix.system import ClusterConfig

FAST = {
    "probe_interval": 0.2, "probe_timeout": 0.1, "push_interval": 0.05, "pull_interval": 2.0,
    "suspicion_mult": 3, "join_timeout": 5.0, "leave_timeout": 1.0,
}


class Inspector(Actor):
    """Answers with what this node sees (it asks its own node's control endpoint)."""

    async def receive(self, msg: Any) -> Any:
        if msg == "members":
            rows = await ActorRef(self.ref.node, 0, "node").ask_async(["members"])
            return {row["name"]: row["status"] for row in rows}
        if msg == "pid":
            return os.getpid()
        return ("inspector", msg)


def main() -> None:
    name, port, *seeds = sys.argv[1:]
    secret = os.environ.get("GORILIX_TEST_SECRET")
    system = ActorSystem(name, workers=1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        system.set_cluster_provider(bridge.ClusterProvider())
        system.enable_clustering(ClusterConfig(
            node_name=name, bind_addr="127.0.0.1", bind_port=int(port), seeds=seeds,
            secret_key=bytes.fromhex(secret) if secret else None, **FAST,
        ))
        system.spawn(Inspector, name="inspector")
        print(json.dumps({"ready": name, "pid": os.getpid(),
                          "workers": [w.pid for w in system.workers()]}), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
        system.leave_cluster()
    finally:
        system.stop()


if __name__ == "__main__":
    main()
