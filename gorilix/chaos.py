"""The library side of ``gorilix chaos``: kill random workers of a node, measure the damage.

While the drill runs, a probe (an ``Echo`` actor spawned on the node, asked
in a loop from a thread of this process with a short timeout) counts the asks
answered and the asks that failed, and the longest time it went without an
answer. Every kill reports how long until the killed worker's actors answered
again (the node measures it: ``RemoteNode.kill_worker``).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gorilix.remote import NodeUnreachable, RemoteNode
from gorilix.transport.errors import GorilixError

PROBE_ACTOR = "gorilix.bench_actors:Echo"


@dataclass
class ChaosReport:
    node: str
    every_s: float
    duration_s: float = 0.0
    kills: int = 0
    recovery_ms: list[float] = field(default_factory=list)
    failed_kills: list[str] = field(default_factory=list)
    asks_answered: int = 0
    asks_failed: int = 0
    longest_outage_ms: float = 0.0
    aborted: str | None = None

    @property
    def recoveries(self) -> int:
        return len(self.recovery_ms)

    @property
    def slowest_ms(self) -> float | None:
        return max(self.recovery_ms) if self.recovery_ms else None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.recovery_ms) if self.recovery_ms else None

    @property
    def ok(self) -> bool:
        return self.aborted is None and not self.failed_kills and self.recoveries == self.kills

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(recoveries=self.recoveries, slowest_ms=self.slowest_ms, median_ms=self.median_ms,
                   ok=self.ok)
        return out

    def lines(self) -> list[str]:
        """The report as ``gorilix chaos`` prints it."""
        total = self.asks_answered + self.asks_failed
        share = f" ({self.asks_failed / total:.1%} failed)" if total else ""
        out = [
            f"chaos on node {self.node}: {self.duration_s:.1f} s, a kill every {self.every_s:g} s",
            f"  kills               {self.kills}",
            f"  recoveries          {self.recoveries}",
        ]
        if self.recovery_ms:
            out.append(f"  recovery            median {self.median_ms:.0f} ms, slowest {self.slowest_ms:.0f} ms")
        out += [
            f"  probe asks          {self.asks_answered} answered, {self.asks_failed} failed{share}",
            f"  longest probe gap   {self.longest_outage_ms:.0f} ms without an answer",
        ]
        out += [f"  failed kill         {reason}" for reason in self.failed_kills]
        if self.aborted:
            out.append(f"  ABORTED             {self.aborted}")
        return out


class _Probe(threading.Thread):
    """Asks an Echo actor on the node in a loop; its own socket, its own thread."""

    def __init__(self, address: str, access: dict[str, Any], timeout: float, pace: float) -> None:
        super().__init__(name="gorilix-chaos-probe", daemon=True)
        self.remote = RemoteNode(address, **access)  # connected here, so errors reach the caller
        try:
            self.ref = self.remote.spawn(PROBE_ACTOR)
        except BaseException:
            self.remote.close()
            raise
        self.timeout = timeout
        self.pace = pace
        self.answered = 0
        self.failed = 0
        self.longest_gap = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        last_answer = time.monotonic()
        i = 0
        while not self.halt.is_set():
            i += 1
            try:
                ok = self.remote.ask_ref(self.ref, i, timeout=self.timeout) == i
            except GorilixError:
                ok = False
            now = time.monotonic()
            if ok:
                self.answered += 1
                self.longest_gap = max(self.longest_gap, now - last_answer)
                last_answer = now
            else:
                self.failed += 1
            self.halt.wait(self.pace)

    def close(self) -> None:
        self.halt.set()
        self.join(self.timeout + 2.0)
        try:
            # RemoteNode has no stop(ref) yet; the port it holds does.
            self.remote.stop_ref(self.ref)
        except GorilixError:
            pass
        self.remote.close()


def run_chaos(
    address: str, every: float, duration: float, *, secret: bytes | None = None,
    secret_file: str | None = None, insecure: bool = False, sig: int = signal.SIGKILL, probe_timeout: float = 1.0, probe_pace: float = 0.02,
    recovery_timeout: float = 30.0, connect_timeout: float = 5.0,
    on_progress: Callable[[float], None] | None = None,
    on_kill: Callable[[dict[str, Any]], None] | None = None,
) -> ChaosReport:
    """Kill a random worker of the node at ``address`` every ``every`` seconds for ``duration``.

    ``on_progress(elapsed_seconds)`` is called about ten times a second and
    ``on_kill(result)`` after each kill (the dict ``RemoteNode.kill_worker``
    returns, or ``{"error": message}``). The secret is found as
    :class:`RemoteNode` finds it. Raises NodeUnreachable if the node
    does not answer at the start; if it stops answering later, the report
    says so in ``aborted``.
    """
    if every <= 0 or duration <= 0:
        raise GorilixError(f"every={every!r} and duration={duration!r} must be positive seconds")
    access: dict[str, Any] = {"secret": secret, "secret_file": secret_file, "insecure": insecure}
    with RemoteNode(address, timeout=connect_timeout, **access) as remote:
        report = ChaosReport(node=remote.name, every_s=every)
        probe = _Probe(address, access, probe_timeout, probe_pace)
        started = time.monotonic()
        probe.start()
        try:
            next_kill = started + min(every, duration / 2)
            while True:
                now = time.monotonic()
                if now - started >= duration:
                    break
                if now >= next_kill:
                    try:
                        result = remote.kill_worker(None, sig, timeout=recovery_timeout)
                    except NodeUnreachable as exc:
                        report.kills += 1
                        report.aborted = str(exc)
                        break
                    except GorilixError as exc:
                        report.kills += 1
                        report.failed_kills.append(str(exc))
                        result = {"error": str(exc)}
                    else:
                        report.kills += 1
                        report.recovery_ms.append(float(result["recovered_ms"]))
                    if on_kill is not None:
                        on_kill(result)
                    next_kill = max(next_kill + every, time.monotonic())
                    continue
                if on_progress is not None:
                    on_progress(now - started)
                time.sleep(max(0.0, min(0.1, next_kill - now, started + duration - now)))
            if on_progress is not None:
                on_progress(min(time.monotonic() - started, duration))
        finally:
            report.duration_s = time.monotonic() - started
            probe.close()
        report.asks_answered = probe.answered
        report.asks_failed = probe.failed
        report.longest_outage_ms = probe.longest_gap * 1e3
    return report
