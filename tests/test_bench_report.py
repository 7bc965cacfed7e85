"""What gorilix bench and gorilix demo report: targets marked, the machine named, a speedup measured fairly."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from gorilix.bench import TARGETS, ask_sampling_cost, format_report, machine, missed
from gorilix.demo import measure_speedup

#: A report as run_bench returns it, every target met.
REPORT: dict[str, Any] = {
    "workers": 2, "quick": False,
    "baseline": {"ask_rtt_us": 100.0, "tell_msgs_per_s": 100_000.0},
    "ask_main_us": 105.0, "ask_actor_us": 110.0, "tell_cross_per_s": 300_000.0, "tell_local_per_s": 600_000.0,
    "spawn": {"in_actor_per_s": 30_000.0, "from_main_per_s": 9_000.0, "bytes_per_idle_actor": 900.0},
    "failover": {"median_ms": 40.0, "max_ms": 60.0, "actors_per_victim": 100},
    "restart": {"median_ms": 1.0, "max_ms": 2.0},
    "pool": {"speedup": 1.9}, "mp_pool": {"speedup": 1.95},
    "throughput": {"tiny_per_s": 4e6, "mp_tiny_per_s": 6e6, "cpu_per_s": 198.0, "mp_cpu_per_s": 200.0,
                   "tiny_vs_mp": 0.66, "cpu_vs_mp": 0.99},
    "isolation": {"during_max_ms": 8.0, "during_p99_ms": 2.0, "during_median_us": 300.0, "idle_median_us": 290.0,
                  "held_s": 5.0, "idle_max_ms": 3.0},
    "stuck": {}, "startup": {"start_s": 0.3, "stop_s": 0.04},
    "ratios": {"ask_main_vs_raw_rtt": 1.05, "ask_actor_vs_raw_rtt": 1.1, "tell_cross_vs_raw_rate": 3.0,
               "tell_local_vs_raw_rate": 6.0, "pool_speedup_vs_mp": 0.97, "pool_tiny_vs_mp": 0.66,
               "pool_cpu_vs_mp": 0.99, "isolation_median_vs_idle": 1.03},
    "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "load": [0.5, 0.5, 0.5], "os": "Linux",
                "python": "3.11.7", "pyzmq": "27.3.0", "libzmq": "4.3.5", "msgpack": "1.2.4", "gorilix": "0.1.0",
                "date": "2026-11-30"},
}


def test_a_report_that_meets_every_target_marks_none() -> None:
    assert missed(REPORT) == []
    text = format_report(REPORT)
    assert "MISSED" not in text and "none missed" in text
    assert "Test CPU, 2 cores, 24.0 GiB" in text and "pyzmq 27.3.0 (libzmq 4.3.5)" in text


def test_each_figure_that_misses_its_target_is_marked() -> None:
    report = copy.deepcopy(REPORT)
    report["ratios"]["pool_tiny_vs_mp"] = 0.44
    report["isolation"]["during_max_ms"] = 17.5
    assert missed(report) == ["pool_tiny", "isolation"]
    lines = format_report(report).splitlines()
    marked = [line for line in lines if line.endswith("<< MISSED")]
    assert len(marked) == 2 and "tiny items" in marked[0] and "holding the GIL" in marked[1]
    assert "MISSED: tiny items >= 0.5x" in lines[-1]


def test_the_isolation_row_says_which_time_slice_and_session_the_node_ran_with() -> None:
    [row] = [line for line in format_report(REPORT).splitlines() if "holding the GIL" in line]
    assert "node time slice the kernel's default" in row  # (an older report: no slice recorded)
    assert "session" not in row  # (nor a session)
    report = copy.deepcopy(REPORT)
    report["isolation"]["node_slice_ns"] = 100_000
    report["isolation"]["node_own_session"] = 1.0
    [row] = [line for line in format_report(report).splitlines() if "holding the GIL" in line]
    assert "node time slice 0.1 ms, its own session" in row
    report["isolation"]["node_own_session"] = 0.0
    [row] = [line for line in format_report(report).splitlines() if "holding the GIL" in line]
    assert "the program's session" in row


def test_a_step_left_out_misses_nothing() -> None:
    assert "mass_failover" not in missed(REPORT)  # (not measured: no mass_failover in the report)
    assert {name for name, _, _ in TARGETS} >= {"pool_tiny", "pool_cpu", "isolation", "mass_failover"}


def test_the_cost_of_timing_asks_is_a_row_with_its_target_when_measured() -> None:
    assert "sampling" not in format_report(REPORT)  # (an older report: no row, nothing missed)
    report = copy.deepcopy(REPORT)
    report["ask_sampling"] = {"on_ns": 420.0, "off_ns": 380.0, "cost_ns": 40.0, "sample_every": 16,
                              "share_of_raw_hop": 40.0 / 100e3}
    [row] = [line for line in format_report(report).splitlines() if "sampling" in line]
    assert "(1 in 16)" in row and "+40.0 ns per ask" in row and "0.04% of the raw hop" in row
    assert missed(report) == []
    report["ask_sampling"]["share_of_raw_hop"] = 0.02
    assert missed(report) == ["ask_sampling"]
    assert format_report(report).splitlines()[-1].endswith("MISSED: ask latency sampling < 1% of the raw hop")


def test_the_cost_of_timing_asks_is_measured_on_against_off() -> None:
    cost = ask_sampling_cost(2000, 3)
    assert cost["sample_every"] == 16 and cost["on_ns"] > 0 and cost["off_ns"] > 0
    assert set(cost) == {"on_ns", "off_ns", "cost_ns", "sample_every"}


def test_the_machine_is_described() -> None:
    m = machine()
    assert m["cores"] >= 1 and m["python"].startswith("3.") and m["libzmq"].count(".") == 2


def test_a_speedup_is_the_median_of_rounds_taking_turns() -> None:
    # gorilix demo once showed 2.31x on 2 workers: one slow single-actor run, compared once.
    one, many = 1.0, 0.5
    durations = iter([one * 1.3, many, one, many, one, many])  # a neighbour slows the first run only
    now = itertools.count()
    ticks: list[float] = []

    def clock() -> float:
        if len(ticks) % 2 == 0:
            ticks.append(float(next(now)))
        else:
            ticks.append(ticks[-1] + next(durations))
        return ticks[-1]

    speedup, ones, manys = measure_speedup(lambda: None, lambda: None, rounds=3, clock=clock)
    assert speedup == 2.0 and ones[0] == 1.3 and len(manys) == 3
