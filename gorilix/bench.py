"""``gorilix bench``: this machine's figures, each next to a raw pyzmq baseline.

Everything is measured in one run, so ratios compare like with like on a
shared, noisy machine. Absolute numbers are for orientation only.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil

from gorilix.baseline import run_baseline
from gorilix.bench_actors import (
    Blocks,
    CpuWorker,
    Crashy,
    Driver,
    Echo,
    LatencyProbe,
    Sink,
    Square,
    cpu_task,
    square,
)
from gorilix.supervision import ONE_FOR_ONE, Strategy
from gorilix.supervisor import ChildSpec
from gorilix.system import ActorSystem, default_worker_count
from gorilix.transport.errors import GorilixError
from gorilix.transport.routing import ASK_SAMPLE_EVERY, ForwardingTable
from gorilix.workers.timeslice import SHORT_SLICE_NS, current_slice

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _calibrate(target_seconds: float) -> int:
    """How many cpu_task iterations take about ``target_seconds`` here."""
    n = 20_000
    while True:
        start = time.perf_counter()
        cpu_task(n)
        took = time.perf_counter() - start
        if took > 0.02:
            return max(1, int(n * target_seconds / took))
        n *= 2


def _ask_rtt_main(system: ActorSystem, rounds: int) -> float:
    echo = system.spawn(Echo, worker=0)
    for i in range(100):
        echo.ask(i)
    start = time.perf_counter()
    for i in range(rounds):
        echo.ask(i)
    return (time.perf_counter() - start) / rounds * 1e6


def _ask_rtt_actors(system: ActorSystem, rounds: int) -> float:
    echo = system.spawn(Echo, worker=1 % len(system.workers()))
    driver = system.spawn(Driver, worker=0)
    driver.ask(("ask_loop", echo, 100))
    return driver.ask(("ask_loop", echo, rounds), timeout=120.0) / rounds * 1e6


def _tell_rate(system: ActorSystem, count: int, same_worker: bool) -> float:
    sink = system.spawn(Sink, worker=0 if same_worker else 1 % len(system.workers()))
    driver = system.spawn(Driver, worker=0)
    driver.ask(("tell_loop", sink, 1000), timeout=60.0)
    elapsed, _ = driver.ask(("tell_loop", sink, count), timeout=120.0)
    return count / elapsed


def _pool_speedups(system: ActorSystem, items: list[int], rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Our pool and multiprocessing.Pool, 1 worker vs all, the same work, in alternating rounds.

    Each run is short (well under a second), so one noisy moment would move a
    single measurement a lot: the medians of ``rounds`` are reported.
    """
    workers = len(system.workers())
    single = system.spawn_pool(CpuWorker, size=1)
    full = system.spawn_pool(CpuWorker, size=workers)
    single.map(items[:2], timeout=120.0)
    full.map(items[:workers], timeout=120.0)
    ctx = multiprocessing.get_context("spawn")
    ours: dict[str, list[float]] = {"one_s": [], "all_s": [], "speedup": []}
    theirs: dict[str, list[float]] = {"one_s": [], "all_s": [], "speedup": []}
    with ctx.Pool(1) as mp_single, ctx.Pool(workers) as mp_full:
        mp_single.map(cpu_task, items[:2], chunksize=1)
        mp_full.map(cpu_task, items[:workers], chunksize=1)
        for _ in range(rounds):
            for into, run_one, run_all in (
                (ours, lambda: single.map(items, timeout=600.0, chunksize=1),
                 lambda: full.map(items, timeout=600.0, chunksize=1)),
                (theirs, lambda: mp_single.map(cpu_task, items, chunksize=1),
                 lambda: mp_full.map(cpu_task, items, chunksize=1)),
            ):
                start = time.perf_counter()
                run_one()
                one = time.perf_counter() - start
                start = time.perf_counter()
                run_all()
                many = time.perf_counter() - start
                into["one_s"].append(one)
                into["all_s"].append(many)
                into["speedup"].append(one / many)
    median = statistics.median
    return ({k: median(v) for k, v in ours.items()}, {k: median(v) for k, v in theirs.items()})


def _pool_throughput(system: ActorSystem, tiny: int, cpu_items: list[int], rounds: int) -> dict[str, float]:
    """Items per second of ``pool.map`` and ``multiprocessing.Pool.map``, each with its default chunk size.

    Two workloads: ``tiny`` items of ``n * n`` (the overhead is all there is)
    and ``cpu_items`` of about 10 ms each. The two pools alternate, round by
    round, and each figure is the median of its rounds.
    """
    workers = len(system.workers())
    squares = system.spawn_pool(Square)
    cpu = system.spawn_pool(CpuWorker)
    numbers = list(range(tiny))
    squares.map(numbers[:1000], timeout=120.0)
    cpu.map(cpu_items[:workers], timeout=120.0)
    samples: dict[str, list[float]] = {k: [] for k in ("tiny", "mp_tiny", "cpu", "mp_cpu")}
    with multiprocessing.get_context("spawn").Pool(workers) as mp_pool:
        mp_pool.map(square, numbers[:1000])
        mp_pool.map(cpu_task, cpu_items[:workers])
        for _ in range(rounds):
            for key, run, count in (
                ("tiny", lambda: squares.map(numbers, timeout=600.0), tiny),
                ("mp_tiny", lambda: mp_pool.map(square, numbers), tiny),
                ("cpu", lambda: cpu.map(cpu_items, timeout=600.0), len(cpu_items)),
                ("mp_cpu", lambda: mp_pool.map(cpu_task, cpu_items), len(cpu_items)),
            ):
                start = time.perf_counter()
                run()
                samples[key].append(count / (time.perf_counter() - start))
    median = statistics.median
    figures = {f"{key}_per_s": median(values) for key, values in samples.items()}
    # Each round's two runs were back to back: the median of per-round ratios.
    figures["tiny_vs_mp"] = median(o / t for o, t in zip(samples["tiny"], samples["mp_tiny"], strict=True))
    figures["cpu_vs_mp"] = median(o / t for o, t in zip(samples["cpu"], samples["mp_cpu"], strict=True))
    return figures


def _spawn_rate(system: ActorSystem, count: int) -> dict[str, float]:
    driver = system.spawn(Driver, worker=0)
    rss_before = system.workers()[0].rss_bytes
    elapsed, spawned = driver.ask(("spawn_loop", count), timeout=120.0)
    rss_after = system.workers()[0].rss_bytes
    start = time.perf_counter()
    main_count = max(50, count // 100)
    for _ in range(main_count):
        system.spawn(Echo)
    main_elapsed = time.perf_counter() - start
    return {
        "in_actor_per_s": spawned / elapsed,
        "from_main_per_s": main_count / main_elapsed,
        "bytes_per_idle_actor": max(0, rss_after - rss_before) / spawned,
    }


def _failover(system: ActorSystem, rounds: int, neighbours: int = 100) -> dict[str, float]:
    """SIGKILL the worker of an actor; time until that ref answers again.

    Each victim worker also hosts ``neighbours`` other actors, re-created
    with the probe.
    """
    times = []
    workers = len(system.workers())
    node_log = logging.getLogger("gorilix.node")
    level = node_log.level
    node_log.setLevel(logging.ERROR)  # the deaths are the point here, not news
    try:
        for i in range(rounds):
            times.append(_one_failover(system, i % workers, neighbours))
    finally:
        node_log.setLevel(level)
    _wait_all_alive(system)
    return {"median_ms": statistics.median(times), "max_ms": max(times), "rounds": rounds,
            "actors_per_victim": neighbours + 1}


def _one_failover(system: ActorSystem, victim: int, neighbours: int) -> float:
    _wait_all_alive(system)
    for _ in range(neighbours):
        system.spawn(Echo, worker=victim)
    probe = system.spawn(Echo, worker=victim)
    probe.ask("warm")
    pid = next(w.pid for w in system.workers() if w.id == victim)
    start = time.perf_counter()
    if system.kill_worker(victim, signal.SIGKILL) != pid:
        raise GorilixError(f"worker {victim} was not pid {pid} any more")
    while True:
        try:
            probe.ask("back?", timeout=2.0)
            return (time.perf_counter() - start) * 1e3
        except GorilixError:
            if time.perf_counter() - start > 30:
                raise


def mass_failover(count: int, pause: float = 0.001, timeout: float = 600.0) -> dict[str, Any]:
    """SIGKILL a worker that hosts ``count`` actors while the program asks an actor on the other one.

    A node of two workers; ``count`` idle actors are spawned on worker 0 (by
    an actor there, in chunks) and an echo actor runs on worker 1. A thread
    of this program asks the echo actor in a loop (``pause`` s between two
    asks) before, during and after ``kill_worker(0)``. Reports how long
    ``kill_worker`` took to return, the time until the node had every actor
    of the dead worker running again (the node's count of actors recovering back to 0),
    the asks that overlapped that recovery (p50, p99, max), and the actors
    per worker afterwards.
    """
    with ActorSystem(f"bench-failover-{uuid.uuid4().hex[:6]}", workers=2, log_level=logging.CRITICAL) as system:
        echo = system.spawn(Echo, worker=1)
        driver = system.spawn(Driver, worker=0)
        made = 0
        while made < count:
            chunk = min(50_000, count - made)
            driver.ask(("spawn_loop", chunk), timeout=timeout)
            made += chunk
        _wait_for(lambda: system.workers()[0].actors >= count + 1, timeout, f"{count} actors on worker 0")
        hosted = system.workers()[0].actors
        samples: list[tuple[float, float]] = []  # (start, seconds) of each ask
        failed: list[str] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    echo.ask("probe", timeout=30.0)
                except GorilixError as exc:
                    failed.append(f"{type(exc).__name__}: {exc}")
                samples.append((start, time.perf_counter() - start))
                time.sleep(pause)

        thread = threading.Thread(target=probe, name="gorilix-bench-probe", daemon=True)
        thread.start()
        try:
            time.sleep(1.0)  # the asks before the kill: the reference
            began = time.perf_counter()
            system.kill_worker(0, signal.SIGKILL)
            returned = time.perf_counter()
            # (not stats(): it counts every parked message, a step per actor of its own)
            _wait_for(lambda: system._control("recovering") == 0, timeout, "the dead worker's actors running again")
            recovered = time.perf_counter()
            _wait_all_alive(system)
            per_worker = {w.id: w.actors for w in system.workers()}
        finally:
            stop.set()
            thread.join(60.0)
    before = [s for t, s in samples if t + s < began]
    overlapped = [(t, s) for t, s in samples if t < recovered and t + s >= began]  # the asks during the recovery
    during = [s for _, s in overlapped]
    slowest = max(overlapped, key=lambda sample: sample[1], default=(began, 0.0))
    return {
        "actors": hosted, "kill_return_ms": (returned - began) * 1e3, "recovery_s": recovered - began,
        "per_worker": per_worker, "asks_during": len(during), "failed_asks": len(failed),
        "before_p50_ms": _quantile(before, 50) * 1e3, "before_p99_ms": _quantile(before, 99) * 1e3,
        "during_p50_ms": _quantile(during, 50) * 1e3, "during_p99_ms": _quantile(during, 99) * 1e3,
        "during_max_ms": slowest[1] * 1e3, "during_max_at_s": slowest[0] - began,  # (when it began, from the kill)
    }


def _quantile(values: list[float], percent: int) -> float:
    """The ``percent``-th percentile (0 for no values, the value itself for one)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise GorilixError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


def _restart_in_worker(system: ActorSystem, rounds: int) -> dict[str, float]:
    """Crash a supervised actor; time from the crash to its next answer."""
    sup = system.spawn_supervisor(f"bench-{uuid.uuid4().hex[:6]}", Strategy(ONE_FOR_ONE, max_restarts=None))
    ref = sup.add_child(ChildSpec(id="crashy", actor_class=Crashy))
    ref.ask("warm")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            ref.ask("crash")
        except GorilixError:
            pass
        ref.ask("back?")
        times.append((time.perf_counter() - start) * 1e3)
    sup.stop()
    return {"median_ms": statistics.median(times), "max_ms": max(times), "rounds": rounds}


def gil_hold_items(seconds: float) -> int:
    """How many items make :func:`hold_the_gil`'s call last ``seconds`` on this core as it is now.

    Sized while nothing else runs, the call lasts at least that long when
    other work shares the core later: sized beside the isolation step's
    probe, whose threads preempt the program, 5 s holds came out at 3 to 4.7 s.
    """
    n = 10**7  # (some 0.1 s)
    took = []
    for _ in range(3):  # the fastest of three
        start = time.perf_counter()
        sum(range(n))
        took.append(time.perf_counter() - start)
    return int(seconds * n / max(min(took), 1e-9))


def hold_the_gil(seconds: float, items: int | None = None) -> tuple[float, float]:
    """One C call that never lets the GIL go, about ``seconds`` long; returns when it ran (wall clock).

    ``sum(range(n))`` stays in C for the whole call: no other thread of this
    process runs meanwhile (what a long NumPy or regex call can do too).
    ``items`` sizes it (:func:`gil_hold_items`), else it is sized here and now.
    """
    count = gil_hold_items(seconds) if items is None else items
    began = time.time()
    sum(range(count))
    return began, time.time()


def _isolation(system: ActorSystem, hold: float) -> dict[str, float]:
    """Asks between two workers, idle and while this (the program's) main thread holds the GIL in one call."""
    items = gil_hold_items(hold)  # (before the probe starts: see there)
    echo = system.spawn(Echo, worker=1 % len(system.workers()))
    probe = system.spawn(LatencyProbe, worker=0)
    probe.tell(echo)
    time.sleep(hold)  # idle: the reference, as long as the hold
    began, ended = hold_the_gil(hold, items)
    time.sleep(0.2)
    probe.ask("stop")
    samples = probe.ask("get", timeout=30.0)
    idle = [s for t, s in samples if t < began]
    # An ask that ended inside the call, or was waiting across it (the first one to end after it).
    during = [s for t, s in samples if began <= t <= ended] + [s for t, s in samples if t > ended][:1]
    node_pid = system._node.pid
    return {
        "held_s": ended - began,
        "idle_median_us": statistics.median(idle) * 1e6,
        "idle_max_ms": max(idle) * 1e3,  # the machine's own noise, for comparison
        "during_median_us": statistics.median(during) * 1e6,
        "during_p99_ms": statistics.quantiles(during, n=100)[98] * 1e3,
        "during_max_ms": max(during) * 1e3,
        "answered_during": sum(1 for t, _ in samples if began <= t <= ended),
        # Asks over 2 ms: about one wait for the scheduler's tick (4 ms with HZ=250) or more.
        "idle_over_2ms": float(sum(1 for s in idle if s > 0.002)),
        "during_over_2ms": float(sum(1 for s in during if s > 0.002)),
        # The node's time slice in ns (its workers inherit it): 100,000 when short, else the kernel's
        # default (0 where the kernel does not say).
        "node_slice_ns": (current_slice(node_pid) or 0) if node_pid else 0,
        # 1 when the node leads a session of its own (and so, where the kernel groups by session, its own
        # scheduling group), 0 when it is in the program's.
        "node_own_session": float(node_pid is not None and os.getsid(node_pid) != os.getsid(0)),
    }


def _stuck_receiver(system: ActorSystem, count: int, how: str) -> dict[str, float]:
    """``count`` tells of 1 KB to an actor whose worker reads nothing: how much the node and the worker grow.

    ``how``: "blocked" (the actor sleeps in ``receive``; the worker's ZeroMQ
    thread still reads into its memory) or "stopped" (SIGSTOP: nothing of it
    runs). The node refuses past ``max_queued`` (docs/actors.md, Bounded memory).
    """
    victim = system.workers()[-1].id
    actor = system.spawn(Blocks, worker=victim)
    actor.ask("warm", timeout=30.0)
    pid = system.workers()[victim].pid
    assert pid is not None
    node, worker = psutil.Process(system._node.pid), psutil.Process(pid)
    node_before, worker_before = node.memory_info().rss, worker.memory_info().rss
    refused_before = system.stats()["queue_refusals"]
    if how == "stopped":
        os.kill(pid, signal.SIGSTOP)
    else:
        actor.tell(("block", 600.0))
    payload = b"x" * 1024
    try:
        for _ in range(count):
            actor.tell(payload)
        deadline = time.monotonic() + 30.0
        while system.stats()["queue_refusals"] == refused_before and time.monotonic() < deadline:
            time.sleep(0.05)  # (the node reads at most 1,000 ahead from us: the last ones come late)
        time.sleep(0.5)
        figures = {"node_grew_mib": (node.memory_info().rss - node_before) / 2**20,
                   "worker_grew_mib": (worker.memory_info().rss - worker_before) / 2**20,
                   "queued_mib": system.workers()[victim].queued_bytes / 2**20,
                   "refused": system.stats()["queue_refusals"] - refused_before, "sent_mib": count / 1024}
    finally:
        if how == "stopped":
            os.kill(pid, signal.SIGCONT)
        system.kill_worker(victim)  # (the blocked actor would sleep on)
    _wait_all_alive(system)
    return figures


def ask_sampling_cost(pairs: int, rounds: int, in_flight: int = 64) -> dict[str, float]:
    """What timing one ask in 16 adds to the router's hot path, per ask: sampling on against off.

    The router's own calls for one ask and its reply (``ask_forwarded``,
    ``reply_forwarded``) on a table with a clock and one without, ``pairs``
    of each per run with ``in_flight`` asks waiting at a time (so sampled
    asks are waiting, as under load); the two alternate, round by round,
    and the cost is the median of the rounds' differences (ns per ask).
    """
    worker = b"w0.1"
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        for clock, into in ((time.monotonic, on), (None, off)):
            table = ForwardingTable(clock=clock)
            ask, reply = table.ask_forwarded, table.reply_forwarded
            start = time.perf_counter()
            for corr in range(in_flight, pairs + in_flight):
                ask(worker, 7, corr)
                reply(worker, 7, corr - in_flight)
            into.append((time.perf_counter() - start) / pairs * 1e9)
    median = statistics.median
    return {"on_ns": median(on), "off_ns": median(off),
            "cost_ns": median(a - b for a, b in zip(on, off, strict=True)), "sample_every": ASK_SAMPLE_EVERY}


def _startup(runs: int) -> dict[str, float]:
    """From ``ActorSystem(workers=2)`` to the first answered ask, and the stop after it."""
    starts, stops = [], []
    for _ in range(runs):
        began = time.perf_counter()
        system = ActorSystem(f"bench-start-{uuid.uuid4().hex[:6]}", workers=2)
        try:
            system.spawn(Echo).ask("first")
            starts.append(time.perf_counter() - began)
        finally:
            began = time.perf_counter()
            system.stop()
            stops.append(time.perf_counter() - began)
    return {"start_s": statistics.median(starts), "stop_s": statistics.median(stops)}


def _wait_all_alive(system: ActorSystem, timeout: float = 30.0) -> None:
    _wait_for(lambda: all(w.alive for w in system.workers()), timeout, "every worker back")


#: Actors on the killed worker in the mass failover step, unless told (``--failover-actors``).
FAILOVER_ACTORS = 20_000


def run_bench(quick: bool = False, progress: bool = True, say: Say | None = None,
              failover_actors: int | None = None) -> dict[str, Any]:
    """Run every measurement once; returns the figures and their ratios.

    ``failover_actors``: actors on the worker killed in the mass failover
    step (default :data:`FAILOVER_ACTORS`, a tenth of it with ``quick``; 0
    leaves the step out).
    """
    out: Say = say or (print if progress else _quiet)
    scale = 10 if quick else 1
    workers = max(2, default_worker_count())
    if failover_actors is None:
        failover_actors = FAILOVER_ACTORS // scale
    steps = 14 if failover_actors else 13
    report: dict[str, Any] = {"workers": workers, "quick": quick}

    def step(n: int, text: str) -> None:
        out(f"[{n}/{steps}] {text}")

    # Ratios compare like with like: see docs/performance.md.

    rounds = 1 if quick else 5
    with ActorSystem(f"bench-{uuid.uuid4().hex[:6]}", workers=workers) as system:
        # The raw hop and ours alternate, so a noisy neighbour hits both alike;
        # each figure is the median of its rounds.
        samples: dict[str, list[float]] = {k: [] for k in ("ask_rtt_us", "tell_msgs_per_s", "main", "actor",
                                                           "cross", "local")}
        for r in range(rounds):
            step(1, f"raw pyzmq baseline (DEALER -> ROUTER hop -> DEALER), round {r + 1}/{rounds}")
            for key, value in run_baseline(quick=quick).items():
                samples[key].append(value)
            step(2, f"ask round trip: main thread -> actor, round {r + 1}/{rounds}")
            samples["main"].append(_ask_rtt_main(system, 3000 // scale))
            step(3, f"ask round trip: actor -> actor on another worker, round {r + 1}/{rounds}")
            samples["actor"].append(_ask_rtt_actors(system, 3000 // scale))
            step(4, f"one-way tells: across workers, and within one worker, round {r + 1}/{rounds}")
            samples["cross"].append(_tell_rate(system, 200_000 // scale, same_worker=False))
            samples["local"].append(_tell_rate(system, 200_000 // scale, same_worker=True))
        median = statistics.median
        report["baseline"] = {"ask_rtt_us": median(samples["ask_rtt_us"]),
                              "tell_msgs_per_s": median(samples["tell_msgs_per_s"])}
        report["ask_main_us"] = median(samples["main"])
        report["ask_actor_us"] = median(samples["actor"])
        report["tell_cross_per_s"] = median(samples["cross"])
        report["tell_local_per_s"] = median(samples["local"])
        report["rounds"] = rounds
        step(5, f"pool map speedup, 1 worker vs all, ours and multiprocessing.Pool alternating ({rounds} rounds)")
        n = _calibrate(0.01)
        items = [n] * (8 * workers if quick else 32 * workers)
        report["pool"], report["mp_pool"] = _pool_speedups(system, items, rounds)
        step(6, f"pool map throughput against multiprocessing.Pool, default chunk sizes ({rounds} rounds)")
        report["throughput"] = _pool_throughput(system, 100_000 // scale, [n] * (100 * workers // scale), rounds)
        step(7, "spawn rate and memory per idle actor")
        report["spawn"] = _spawn_rate(system, 20_000 // scale)
        hold = 1.0 if quick else 5.0
        step(8, f"isolation: asks between workers while the main thread holds the GIL for {hold:g} s")
        report["isolation"] = _isolation(system, hold)
    step(9, "start-up: ActorSystem(workers=2) to the first answered ask")
    report["startup"] = _startup(3 if quick else 7)
    # Crashes and kills are the point here: keep the workers' tracebacks quiet.
    with ActorSystem(f"bench-{uuid.uuid4().hex[:6]}", workers=workers, log_level=logging.CRITICAL) as system:
        rounds = 10 // min(scale, 5)
        step(10, f"failover: SIGKILL a worker, time until its actor answers ({rounds} rounds)")
        report["failover"] = _failover(system, rounds)
        step(11, "restart latency: a supervised actor crashes, time until it answers again")
        report["restart"] = _restart_in_worker(system, 100 // scale)
        tells = 200_000 // scale
        step(12, f"a stuck receiver: {tells:,} tells of 1 KB to an actor whose worker reads nothing")
        report["stuck"] = {how: _stuck_receiver(system, tells, how) for how in ("blocked", "stopped")}
    pairs, rounds = (50_000, 5) if quick else (200_000, 9)
    step(13, f"ask latency sampling on the router's hot path: {pairs:,} asks and replies, on against off ({rounds} rounds)")
    report["ask_sampling"] = ask_sampling_cost(pairs, rounds)
    report["ask_sampling"]["share_of_raw_hop"] = report["ask_sampling"]["cost_ns"] / (
        report["baseline"]["ask_rtt_us"] * 1e3)
    if failover_actors:
        step(14, f"mass failover: SIGKILL a worker of {failover_actors:,} actors, asks to the other meanwhile")
        report["mass_failover"] = mass_failover(failover_actors)
    def paired(ours: str, raw: str) -> float:
        # The median of per-round ratios: a round's raw run and ours ran back to
        # back, so a slow minute on a shared machine cancels out of each ratio.
        pairs = zip(samples[ours], samples[raw], strict=True)
        return median([o / r for o, r in pairs])

    report["machine"] = machine()
    report["ratios"] = {
        "ask_actor_vs_raw_rtt": paired("actor", "ask_rtt_us"),
        "ask_main_vs_raw_rtt": paired("main", "ask_rtt_us"),
        "tell_cross_vs_raw_rate": paired("cross", "tell_msgs_per_s"),
        "tell_local_vs_raw_rate": paired("local", "tell_msgs_per_s"),
        "pool_speedup_vs_mp": report["pool"]["speedup"] / report["mp_pool"]["speedup"],
        "pool_tiny_vs_mp": report["throughput"]["tiny_vs_mp"],
        "pool_cpu_vs_mp": report["throughput"]["cpu_vs_mp"],
        "isolation_median_vs_idle": report["isolation"]["during_median_us"] / report["isolation"]["idle_median_us"],
    }
    if progress:
        out(format_report(report))
    return report


def machine() -> dict[str, Any]:
    """What the figures came from: the processor, cores, memory, load, and the versions that matter."""
    import datetime
    import platform

    import msgpack
    import zmq

    import gorilix

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model, "cores": psutil.cpu_count(logical=True), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load": [round(x, 2) for x in os.getloadavg()], "os": platform.platform(),
        "python": platform.python_version(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)), "gorilix": gorilix.__version__,
        "date": datetime.date.today().isoformat(),
    }


def _scheduling_said(isolation: dict[str, float]) -> str:
    """The node's time slice and session, in the report's words (gorilix.workers.timeslice)."""
    said = ("node time slice 0.1 ms" if isolation.get("node_slice_ns") == SHORT_SLICE_NS
            else "node time slice the kernel's default")
    own = isolation.get("node_own_session")
    if own is not None:  # (older reports did not record it)
        said += ", its own session" if own else ", the program's session"
    return said


#: Each target a figure of the report should meet: (name, what it says, the check).
TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], bool | None]]] = [
    ("ask_main", "ask main -> actor <= 1.1x the raw hop", lambda r: r["ratios"]["ask_main_vs_raw_rtt"] <= 1.1),
    ("ask_actor", "ask actor -> actor <= 1.2x the raw hop", lambda r: r["ratios"]["ask_actor_vs_raw_rtt"] <= 1.2),
    ("tell_cross", "tell across workers >= 1.0x the raw hop", lambda r: r["ratios"]["tell_cross_vs_raw_rate"] >= 1.0),
    ("spawn", "spawn inside an actor >= 20,000 actors/s", lambda r: r["spawn"]["in_actor_per_s"] >= 20_000),
    ("failover", "failover median < 100 ms", lambda r: r["failover"]["median_ms"] < 100),
    ("pool_speedup", "pool speedup >= 95% of multiprocessing.Pool's", lambda r: r["ratios"]["pool_speedup_vs_mp"] >= 0.95),
    ("pool_tiny", "tiny items >= 0.5x multiprocessing.Pool", lambda r: r["ratios"]["pool_tiny_vs_mp"] >= 0.5),
    ("pool_cpu", "~10 ms items >= 0.98x multiprocessing.Pool", lambda r: r["ratios"]["pool_cpu_vs_mp"] >= 0.98),
    ("isolation", "GIL held in the program: max <= 10 ms, median <= 1.1x idle",
     lambda r: r["isolation"]["during_max_ms"] <= 10 and r["ratios"]["isolation_median_vs_idle"] <= 1.1),
    ("ask_sampling", "ask latency sampling < 1% of the raw hop",
     lambda r: r["ask_sampling"]["share_of_raw_hop"] < 0.01),
    ("mass_failover", "mass failover: asks to the healthy worker p99 < 50 ms",
     lambda r: r["mass_failover"]["during_p99_ms"] < 50 if r.get("mass_failover") else None),
]


def _meets(check: Callable[[dict[str, Any]], bool | None], r: dict[str, Any]) -> bool | None:
    """True, False, or None for a figure not in the report (a step left out, or an older report)."""
    try:
        return check(r)
    except KeyError:
        return None


def missed(r: dict[str, Any]) -> list[str]:
    """The names of the targets ``r`` misses (a figure not measured misses nothing)."""
    return [name for name, _, check in TARGETS if _meets(check, r) is False]


def format_header(r: dict[str, Any]) -> str:
    m = r.get("machine") or {}
    return (f"  machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, load {m.get('load')}, "
            f"{m.get('os')}\n  versions: Python {m.get('python')}, pyzmq {m.get('pyzmq')} (libzmq {m.get('libzmq')}), "
            f"msgpack {m.get('msgpack')}, gorilix {m.get('gorilix')}; {m.get('date')}"
            f"{', quick run (not a measurement)' if r.get('quick') else ''}")


def format_report(r: dict[str, Any]) -> str:
    ratios = r["ratios"]
    misses = set(missed(r))

    def mark(target: str) -> str:
        return "  << MISSED" if target in misses else ""

    rows = [
        ("raw hop ask round trip", f"{r['baseline']['ask_rtt_us']:.0f} us", "1.00x (baseline)"),
        ("raw hop one-way, unbatched", f"{r['baseline']['tell_msgs_per_s']:,.0f} msg/s", "1.00x (baseline)"),
        ("ask main -> actor", f"{r['ask_main_us']:.0f} us", f"{ratios['ask_main_vs_raw_rtt']:.2f}x raw (target <= 1.1){mark('ask_main')}"),
        ("ask actor -> actor, 2 workers", f"{r['ask_actor_us']:.0f} us", f"{ratios['ask_actor_vs_raw_rtt']:.2f}x raw (target <= 1.2){mark('ask_actor')}"),
        ("tell across workers", f"{r['tell_cross_per_s']:,.0f} msg/s", f"{ratios['tell_cross_vs_raw_rate']:.2f}x raw (target >= 1.0){mark('tell_cross')}"),
        ("tell within one worker", f"{r['tell_local_per_s']:,.0f} msg/s", f"{ratios['tell_local_vs_raw_rate']:.2f}x raw"),
        ("spawn inside an actor", f"{r['spawn']['in_actor_per_s']:,.0f} actors/s", f"target >= 20,000{mark('spawn')}"),
        ("spawn from the main thread", f"{r['spawn']['from_main_per_s']:,.0f} actors/s", ""),
        ("memory per idle actor", f"{r['spawn']['bytes_per_idle_actor']:,.0f} bytes", "worker RSS delta"),
        ("failover (SIGKILL -> answer)", f"{r['failover']['median_ms']:.1f} ms median, {r['failover']['max_ms']:.1f} max",
         f"{r['failover']['actors_per_victim']} actors on the worker (target < 100 ms){mark('failover')}"),
        ("restart in its worker (crash -> answer)", f"{r['restart']['median_ms']:.2f} ms median, {r['restart']['max_ms']:.2f} max", "supervised, one_for_one"),
        ("pool map speedup", f"{r['pool']['speedup']:.2f}x ({r['workers']} workers)", f"{ratios['pool_speedup_vs_mp']:.0%} of multiprocessing.Pool (target >= 95%){mark('pool_speedup')}"),
        ("multiprocessing.Pool speedup", f"{r['mp_pool']['speedup']:.2f}x", ""),
        ("pool map, tiny items (n * n)", f"{r['throughput']['tiny_per_s']:,.0f} items/s",
         f"{ratios['pool_tiny_vs_mp']:.2f}x multiprocessing.Pool's {r['throughput']['mp_tiny_per_s']:,.0f} (target >= 0.5){mark('pool_tiny')}"),
        ("pool map, ~10 ms items", f"{r['throughput']['cpu_per_s']:,.1f} items/s",
         f"{ratios['pool_cpu_vs_mp']:.2f}x multiprocessing.Pool's {r['throughput']['mp_cpu_per_s']:,.1f} (target >= 0.98){mark('pool_cpu')}"),
        ("ask between workers, main thread holding the GIL",
         f"{r['isolation']['during_max_ms']:.1f} ms max, {r['isolation']['during_p99_ms']:.2f} ms p99, "
         f"{r['isolation']['during_median_us']:.0f} us median",
         f"{ratios['isolation_median_vs_idle']:.2f}x the idle median over {r['isolation']['held_s']:.1f} s, "
         f"idle max {r['isolation']['idle_max_ms']:.1f} ms, {_scheduling_said(r['isolation'])} "
         f"(target: max <= 10 ms, median <= 1.1x){mark('isolation')}"),
        *((f"a stuck receiver ({how}): {s['sent_mib']:.0f} MiB of tells", f"node +{s['node_grew_mib']:.0f} MiB, "
           f"worker +{s['worker_grew_mib']:.0f} MiB", f"{s['queued_mib']:.0f} MiB queued, {s['refused']:,} refused "
           "(max_queued 64 MiB)") for how, s in r["stuck"].items()),
        ("start-up: ActorSystem(workers=2) -> first answer", f"{r['startup']['start_s'] * 1e3:.0f} ms",
         f"stop {r['startup']['stop_s'] * 1e3:.0f} ms"),
    ]
    sampling = r.get("ask_sampling")
    if sampling:
        rows.append((f"ask latency sampling (1 in {sampling['sample_every']}), router hot path",
                     f"{sampling['cost_ns']:+.1f} ns per ask",
                     f"{sampling['share_of_raw_hop']:.2%} of the raw hop; {sampling['off_ns']:.0f} ns per ask "
                     f"and reply without it (target < 1%){mark('ask_sampling')}"))
    mass = r.get("mass_failover")
    if mass:
        spread = ", ".join(f"{count:,}" for _, count in sorted(mass["per_worker"].items()))
        rows += [
            (f"mass failover: asks to the healthy worker, {mass['actors']:,} actors re-created",
             f"{mass['during_p99_ms']:.1f} ms p99, {mass['during_max_ms']:.1f} max, "
             f"{mass['during_p50_ms']:.2f} median", f"{mass['asks_during']:,} asks (target: p99 < 50 ms){mark('mass_failover')}"),
            ("mass failover: kill_worker returns / all re-created",
             f"{mass['kill_return_ms']:.0f} ms / {mass['recovery_s']:.2f} s", f"actors per worker after: {spread}"),
        ]
    width = max(len(a) for a, _, _ in rows)
    value_width = max(len(b) for _, b, _ in rows)
    lines = [format_header(r), *(f"  {a:<{width}}  {b:>{value_width}}  {c}" for a, b, c in rows)]
    met = sum(1 for _, _, check in TARGETS if _meets(check, r) is True)
    lines.append(f"  targets: {met} met" + (
        f", MISSED: {', '.join(text for name, text, _ in TARGETS if name in misses)}" if misses else ", none missed"))
    return "\n".join(lines)
