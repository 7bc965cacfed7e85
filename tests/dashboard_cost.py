"""What a dashboard polling a node costs that node: its CPU per second, with a dashboard against without.

    GORILIX_RUNTIME_DIR=$(mktemp -d) python tests/dashboard_cost.py [ROUNDS]

A `gorilix node` with two workers and 200 actors runs idle; in each round
the node process's CPU time is read over 15 s without a dashboard, then over
15 s with `gorilix dashboard` polling it once a second (its status, its
supervision trees and its member table). The rounds alternate, so the
machine's own noise falls on both.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from gorilix.launcher import NodeProcess, _same_code_env, free_port
from gorilix.remote import RemoteNode

SECONDS = 15.0


def node_process(node: NodeProcess) -> psutil.Process:
    """The node process under a `gorilix node` command (the command itself is only its client)."""
    return next(p for p in psutil.Process(node.pid).children(recursive=True) if "node_main" in " ".join(p.cmdline()))


def cpu_ms_per_second(process: psutil.Process) -> float:
    before, began = process.cpu_times(), time.monotonic()
    time.sleep(SECONDS)
    after, ended = process.cpu_times(), time.monotonic()
    return ((after.user + after.system) - (before.user + before.system)) / (ended - began) * 1000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with NodeProcess("dashboard-cost", free_port(), workers=2) as node:
        node.wait_ready()
        with RemoteNode(node.address) as remote:
            for _ in range(200):
                remote.spawn("gorilix.bench_actors:Echo")
        process = node_process(node)
        for round_number in range(1, rounds + 1):
            idle = cpu_ms_per_second(process)
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "gorilix", "dashboard", "--node", node.address, "--bind",
                 f"127.0.0.1:{free_port()}", "--watch-stdin"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_same_code_env())
            try:
                time.sleep(3.0)  # (connected, and polling)
                polled = cpu_ms_per_second(process)
            finally:
                assert dashboard.stdin is not None
                dashboard.stdin.close()
                dashboard.wait(10)
            print(f"round {round_number}: the node used {idle:.1f} ms of CPU per second idle, "
                  f"{polled:.1f} ms with a dashboard polling it ({polled - idle:+.1f} ms)")


if __name__ == "__main__":
    main()
