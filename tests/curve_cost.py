"""What CURVE costs a cross-node ask on loopback: the per-user secret (the default) against --insecure.

    GORILIX_RUNTIME_DIR=$(mktemp -d) python tests/curve_cost.py [curve|insecure ...]

The program is node A (one worker); a `gorilix node` B (one worker) joins it;
the program asks an Echo actor on B through A (program -> A over ipc -> B
over TCP, CURVE or plain -> B's worker, and back). Per round: the median of
2,000 asks one at a time, and the rate of 10 bursts of 500 asks in flight.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import warnings

from gorilix import ActorSystem
from gorilix.cluster import bridge
from gorilix.launcher import NodeProcess, free_port
from gorilix.system import ClusterConfig

ECHO = "gorilix.bench_actors:Echo"


def measure(insecure: bool, rounds: int = 3, asks: int = 2000) -> dict[str, list[float]]:
    warnings.simplefilter("ignore")
    port = free_port()
    with ActorSystem(f"bench-a-{int(insecure)}", workers=1) as a:
        a.set_cluster_provider(bridge.ClusterProvider())
        a.enable_clustering(ClusterConfig(node_name=a.name, bind_port=port, insecure=insecure))
        args = ("--insecure",) if insecure else ()
        with NodeProcess(f"bench-b-{int(insecure)}", free_port(), seeds=[f"127.0.0.1:{port}"], workers=1,
                         args=args) as b:
            b.wait_ready(30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(m.name == b.name and m.status.value == "alive" for m in a.get_cluster().members()):
                    break
                time.sleep(0.05)
            ref = a.spawn(ECHO, node=b.name)
            for i in range(200):
                ref.ask(i)
            rtts: list[float] = []
            rates: list[float] = []
            for _ in range(rounds):
                samples = []
                for i in range(asks):
                    t = time.perf_counter()
                    ref.ask(i)
                    samples.append(time.perf_counter() - t)
                rtts.append(statistics.median(samples) * 1e6)

                async def burst() -> float:
                    t = time.perf_counter()
                    for _ in range(10):
                        await asyncio.gather(*(ref.ask_async(i) for i in range(500)))
                    return 5000 / (time.perf_counter() - t)
                rates.append(asyncio.run(burst()))
    return {"rtt_us": rtts, "asks_per_s": rates}


if __name__ == "__main__":
    for mode in sys.argv[1:] or ["curve", "insecure", "curve", "insecure"]:
        r = measure(mode == "insecure")
        print(mode, "median RTT us per round:", [f"{x:.0f}" for x in r["rtt_us"]],
              "pipelined asks/s:", [f"{x:,.0f}" for x in r["asks_per_s"]], flush=True)
