"""Asks between two workers while the program holds the GIL: with the node's short time slices, and without.

    GORILIX_RUNTIME_DIR=$(mktemp -d) python tests/isolation_slices.py [ROUNDS] [IDLE_ACTORS]

Each round starts a fresh `ActorSystem(workers=2)` with short slices on
(the default) and one with them off (`GORILIX_SHORT_SLICE=0`), in turn, so
the machine's own noise falls on both. In each, `IDLE_ACTORS` idle actors
(default 0; `gorilix bench` runs this step with 20,000) sit on the probe's
worker, then `gorilix bench`'s isolation step runs: 5 s of asks with the
program idle, then 5 s while its main thread holds the GIL in one C call.
Prints each run's figures, then the medians of the rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from gorilix import ActorSystem
from gorilix.bench import _isolation
from gorilix.bench_actors import Driver
from gorilix.workers import timeslice

HOLD = 5.0


def one_run(idle_actors: int) -> dict[str, float]:
    """This process's run (the caller set the environment): the isolation figures, after a short warm-up."""
    with ActorSystem(workers=2) as system:
        if idle_actors:
            system.spawn(Driver, worker=0).ask(("spawn_loop", idle_actors), timeout=120.0)
        _isolation(system, 1.0)
        return _isolation(system, HOLD)


def main(rounds: int, idle_actors: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"short slices": [], "default slices": []}
    for r in range(rounds):
        for label, value in (("short slices", "1"), ("default slices", "0")):
            env = {**os.environ, timeslice.ENV_VAR: value}
            done = subprocess.run([sys.executable, __file__, "--one", str(idle_actors)], env=env, check=True,
                                  capture_output=True, text=True, timeout=300)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results[label].append(figures)
            print(f"round {r + 1} {label:>14}: during the hold max {figures['during_max_ms']:5.1f} ms, "
                  f"p99 {figures['during_p99_ms']:.2f} ms, median {figures['during_median_us']:.0f} us; "
                  f"idle max {figures['idle_max_ms']:5.1f} ms", flush=True)
    for label, runs in results.items():
        print(f"{label}: median of {rounds} rounds: max "
              f"{statistics.median(f['during_max_ms'] for f in runs):.1f} ms (worst "
              f"{max(f['during_max_ms'] for f in runs):.1f}), p99 "
              f"{statistics.median(f['during_p99_ms'] for f in runs):.2f} ms, median "
              f"{statistics.median(f['during_median_us'] for f in runs):.0f} us, idle max "
              f"{statistics.median(f['idle_max_ms'] for f in runs):.1f} ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one_run(int(sys.argv[2]))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
