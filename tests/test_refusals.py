"""Refusals counted per source address (a bad seal, a refused CURVE handshake): bounded, and warned of now and then."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from conftest import wait_for

from gorilix.cluster.driver import SwimDriver
from gorilix.cluster.refusals import RefusalCounts
from gorilix.cluster.security import ClusterKeys
from gorilix.cluster.swim import SwimConfig

log = logging.getLogger("test.refusals")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_per_source_most_refused_first() -> None:
    counts = RefusalCounts("n1", "gossip", log, clock=Clock())
    for source, n in (("10.0.0.1:7946", 3), ("10.0.0.2:7946", 5), ("10.0.0.3:7946", 1)):
        for _ in range(n):
            counts.count(source, "a bad seal")
    snap = counts.snapshot()
    assert snap == {"total": 9, "by_source": {"10.0.0.2:7946": 5, "10.0.0.1:7946": 3, "10.0.0.3:7946": 1},
                    "others": 0}
    assert list(snap["by_source"]) == ["10.0.0.2:7946", "10.0.0.1:7946", "10.0.0.3:7946"]
    assert counts.snapshot(show=1) == {"total": 9, "by_source": {"10.0.0.2:7946": 5}, "others": 4}


def test_a_flood_of_spoofed_sources_is_bounded_and_the_persistent_one_stays_listed() -> None:
    counts = RefusalCounts("n1", "gossip", log, keep=16, clock=Clock())
    for i in range(50_000):
        counts.count(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:7946", "a bad seal")  # each once: spoofed
        if i % 10 == 0:
            counts.count("192.168.1.9:7946", "a bad seal")  # the real one, more often than 1 in keep
    snap = counts.snapshot(show=3)
    assert len(counts._by_source) == 16  # the table never grows past keep
    assert next(iter(snap["by_source"])) == "192.168.1.9:7946" and snap["by_source"]["192.168.1.9:7946"] == 5_000
    assert snap["total"] == 55_000 == sum(snap["by_source"].values()) + snap["others"]


def test_one_warning_per_period_naming_the_source(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    counts = RefusalCounts("n1", "a CURVE handshake", log, warn_every=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="test.refusals"):
        for _ in range(100):
            counts.count("10.0.0.7", "another secret")
        clock.now += 60.0
        counts.count("10.0.0.8", "another secret")
        counts.count("10.0.0.9", "stale", warn=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "refused a CURVE handshake from 10.0.0.7 (another secret)" in warnings[0]
    assert "10.0.0.8" in warnings[1] and "102 refused so far" not in warnings[1]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 100


def test_the_gossip_driver_counts_datagrams_of_another_secret_per_source() -> None:
    driver = SwimDriver("n1", ("127.0.0.1", 0), ("127.0.0.1", 0), {}, SwimConfig(), ClusterKeys(os.urandom(32)),
                        lambda events: None)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            other = ClusterKeys(os.urandom(32))
            other.gossip_as("intruder", [sock.getsockname()])
            for _ in range(3):
                sock.sendto(other.seal(b"\x92\x01\x90", driver.bound), driver.bound)
            sock.sendto(b"plain text", driver.bound)
            source = f"127.0.0.1:{sock.getsockname()[1]}"
            driver.start()
            wait_for(lambda: driver.dropped >= 4, 10, "four datagrams dropped")
        assert driver.dropped == 4
        assert driver.refusals.snapshot() == {"total": 4, "by_source": {source: 4}, "others": 0}
    finally:
        driver.stop()
