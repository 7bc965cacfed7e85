"""A two-node cluster with the dashboard, and traffic to watch: open the page, press a kill button.

    python examples/dashboard_tour.py             # runs until Ctrl-C
    python examples/dashboard_tour.py --seconds 60

It starts two `gorilix node` processes on free ports, the first with
`--dashboard --dashboard-drills`, and prints the page's address. Then it
keeps them busy from this process (a client of both): asks to echo actors,
tells to a sink, CPU work on the second node, and a crash every few seconds
in a supervisor with a circuit breaker, so every chart and tree on the page
moves. The actors are gorilix.bench_actors', which every node can import.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time

from gorilix import ActorSystem
from gorilix.breaker import BreakerConfig
from gorilix.launcher import NodeProcess, free_port
from gorilix.supervisor import ONE_FOR_ONE, ChildSpec, Strategy


def load(client: ActorSystem, cruncher: ActorSystem, stop: threading.Event, counts: dict[str, int]) -> None:
    """Asks, tells, CPU work and a crash every 3 s, until ``stop``; an ask a drill fails is counted, not fatal."""
    echoes = [client.spawn("gorilix.bench_actors:Echo", name=f"echo-{i}") for i in range(4)]
    sink = client.spawn("gorilix.bench_actors:Sink", name="sink")
    payments = client.spawn_supervisor("payments", Strategy(
        ONE_FOR_ONE, max_restarts=None, circuit_breaker=BreakerConfig(trip_threshold=3, failure_window=10.0,
                                                                      reset_timeout=5.0)))
    jobs = [payments.add_child(ChildSpec(id=f"job-{i}", actor_class="gorilix.bench_actors:Crashy"))
            for i in range(3)]
    crunchers = [cruncher.spawn("gorilix.bench_actors:CpuWorker") for _ in range(2)]
    next_crash = time.monotonic() + 2.0
    for i in itertools.count():
        if stop.is_set():
            return
        try:
            echoes[i % len(echoes)].ask(i, timeout=2.0)
            sink.tell(i)
            counts["asks"] += 1
            counts["tells"] += 1
            if i % 50 == 0:
                crunchers[i % 2].tell(20_000)
            if time.monotonic() >= next_crash:  # (a tell: a job held by the open breaker must not stall the load)
                next_crash = time.monotonic() + 3.0
                jobs[i % len(jobs)].tell("crash")
                counts["crashes"] += 1
        except Exception:  # a drill killed the worker under an ask: it is retried with the next
            counts["failed"] += 1
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    parser.add_argument("--port", type=int, default=8270, help="the dashboard's port (default 8270)")
    options = parser.parse_args()

    dashboard = f"127.0.0.1:{options.port}"
    with NodeProcess("tour-1", free_port(), workers=2, args=["--dashboard", dashboard, "--dashboard-drills"]) as first:
        first.wait_ready()
        with NodeProcess("tour-2", free_port(), seeds=[first.address], workers=2) as second:
            second.wait_ready()
            deadline = time.monotonic() + 15.0
            while not any("#token=" in line for line in first.lines) and time.monotonic() < deadline:
                time.sleep(0.05)
            url = next((line.split(" at ", 1)[1] for line in first.lines if "#token=" in line), None)
            print(f"the dashboard: {url or 'did not start (see the output above)'}")
            print("open it, watch the charts, press a kill button; Ctrl-C stops the tour")
            counts = {"asks": 0, "tells": 0, "crashes": 0, "failed": 0}
            stop = threading.Event()
            with ActorSystem.connect(first.address) as client, ActorSystem.connect(second.address) as cruncher:
                thread = threading.Thread(target=load, args=(client, cruncher, stop, counts), daemon=True)
                thread.start()
                try:
                    thread.join(options.seconds)
                except KeyboardInterrupt:
                    pass
                stop.set()
                thread.join(10.0)
            print(f"tour over: {counts['asks']} asks, {counts['tells']} tells, {counts['crashes']} crashes "
                  f"sent to the children of 'payments', {counts['failed']} requests failed by drills")
            assert url is not None and counts["asks"] > 0


if __name__ == "__main__":
    main()
