"""``gorilix demo``: the main job on localhost, with nothing to set up.

One node and its workers: CPU-bound actors spread across the cores (with the
speedup over one core), then a worker SIGKILLed and its actors answering
again through the same refs.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable

from gorilix.bench_actors import CpuWorker, Echo, cpu_task
from gorilix.system import ActorSystem, default_worker_count
from transport.errors import GorilixError

Echoer = Callable[[str], None]


def _calibrate(seconds: float) -> int:
    n = 50_000
    start = time.perf_counter()
    cpu_task(n)
    return max(1, int(n * seconds / max(time.perf_counter() - start, 1e-6)))


def run_demo(workers: int | None = None, echo: Echoer = print) -> int:
    """Run the demo; returns the process exit code (0: every check held)."""
    count = workers or max(2, default_worker_count())
    started = time.perf_counter()
    echo(f"gorilix demo: one node, {count} worker processes on this machine")
    with ActorSystem(f"demo-{uuid.uuid4().hex[:6]}", workers=count) as system:
        pids = [w.pid for w in system.workers()]
        echo(f"  node up in {time.perf_counter() - started:.2f} s, workers {pids}")

        echo("1) CPU-bound actors across cores")
        n = _calibrate(0.02)
        items = [n] * (12 * count)
        single = system.spawn_pool(CpuWorker, size=1)
        pool = system.spawn_pool(CpuWorker, size=count)
        t0 = time.perf_counter()
        expected = single.map(items, timeout=120.0)
        one = time.perf_counter() - t0
        echo(f"   {len(items)} tasks on 1 actor:        {one:.2f} s")
        t0 = time.perf_counter()
        results = pool.map(items, timeout=120.0)
        many = time.perf_counter() - t0
        echo(f"   {len(items)} tasks on {count} actors/{count} cores: {many:.2f} s  -> speedup {one / many:.2f}x")
        ok = results == expected

        echo("2) failover: SIGKILL a worker, its actors answer again through the same refs")
        victims = [system.spawn(Echo, worker=0, name=f"echo-{i}") for i in range(10)]
        for i, ref in enumerate(victims):
            ref.ask(i)
        pid = system.kill_worker(0, signal.SIGKILL)
        t0 = time.perf_counter()
        answers = []
        for i, ref in enumerate(victims):
            answers.append(_ask_until_answered(ref, i, deadline=t0 + 30.0))
        recovered = (time.perf_counter() - t0) * 1e3
        ok = ok and answers == list(range(10))
        echo(f"   killed worker 0 (pid {pid}); all 10 actors answered again after {recovered:.0f} ms")
        back = _wait_respawn(system, deadline=time.monotonic() + 30.0)
        echo(f"   worker 0 respawned as pid {back}; named actor echo-3 -> {system.whereis('echo-3')}")

    total = time.perf_counter() - started
    echo(f"summary: speedup {one / many:.2f}x on {count} cores, failover {recovered:.0f} ms, "
         f"{'all checks passed' if ok else 'A CHECK FAILED'} in {total:.1f} s")
    return 0 if ok else 1


def _ask_until_answered(ref, message: int, deadline: float) -> int:  # type: ignore[no-untyped-def]
    while True:
        try:
            return ref.ask(message, timeout=2.0)
        except GorilixError:
            if time.perf_counter() > deadline:
                raise


def _wait_respawn(system: ActorSystem, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        info = system.workers()[0]
        if info.alive:
            return info.pid
        time.sleep(0.02)
    raise GorilixError("worker 0 did not come back within 30 s")
