"""Asks between two workers while the program holds the GIL: the node's scheduling requests on, and each off.

    GORILIX_RUNTIME_DIR=$(mktemp -d) python tests/isolation_ab.py [ROUNDS] [IDLE_ACTORS]

Each round starts a fresh `ActorSystem(workers=2)` in each setting, in turn,
so the machine's own noise falls on all of them: as shipped (short time
slices and a session of its own, gorilix.workers.timeslice), in the
program's session (`GORILIX_OWN_SESSION=0`), and with the kernel's default
slice (`GORILIX_SHORT_SLICE=0`). In each, `IDLE_ACTORS` idle actors (default
0; `gorilix bench` runs this step with 20,000) sit on the probe's worker,
then `gorilix bench`'s isolation step runs: 5 s of asks with the program
idle, then 5 s while its main thread holds the GIL in one C call. Prints
each run's figures, with how many asks took over 2 ms (about one wait for
the scheduler's tick), then the medians of the rounds.
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
SETTINGS = {
    "as shipped": {},
    "program's session": {timeslice.SESSION_ENV_VAR: "0"},
    "default slices": {timeslice.ENV_VAR: "0"},
}


def one_run(idle_actors: int) -> dict[str, float]:
    """This process's run (the caller set the environment): the isolation figures, after a short warm-up."""
    with ActorSystem(workers=2) as system:
        if idle_actors:
            system.spawn(Driver, worker=0).ask(("spawn_loop", idle_actors), timeout=120.0)
        _isolation(system, 1.0)
        return _isolation(system, HOLD)


def main(rounds: int, idle_actors: int) -> None:
    results: dict[str, list[dict[str, float]]] = {label: [] for label in SETTINGS}
    for r in range(rounds):
        for label, changes in SETTINGS.items():
            env = {**os.environ, **changes}
            done = subprocess.run([sys.executable, __file__, "--one", str(idle_actors)], env=env, check=True,
                                  capture_output=True, text=True, timeout=300)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results[label].append(figures)
            print(f"round {r + 1} {label:>17}: during the hold max {figures['during_max_ms']:5.1f} ms, "
                  f"{figures['during_over_2ms']:4.0f} over 2 ms, p99 {figures['during_p99_ms']:.2f} ms, "
                  f"median {figures['during_median_us']:.0f} us; idle max {figures['idle_max_ms']:5.1f} ms, "
                  f"{figures['idle_over_2ms']:4.0f} over 2 ms", flush=True)
    for label, runs in results.items():
        print(f"{label}: median of {rounds} rounds: max "
              f"{statistics.median(f['during_max_ms'] for f in runs):.1f} ms (worst "
              f"{max(f['during_max_ms'] for f in runs):.1f}), "
              f"{statistics.median(f['during_over_2ms'] for f in runs):.0f} over 2 ms, p99 "
              f"{statistics.median(f['during_p99_ms'] for f in runs):.2f} ms, median "
              f"{statistics.median(f['during_median_us'] for f in runs):.0f} us, idle max "
              f"{statistics.median(f['idle_max_ms'] for f in runs):.1f} ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one_run(int(sys.argv[2]))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
