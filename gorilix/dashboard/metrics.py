"""``/metrics``: the nodes' counters in Prometheus' text format, read from the tracker at each scrape.

A custom prometheus-client collector rather than Counter objects of our
own: the nodes keep the counts, so a dashboard restarted mid-run shows the
same totals, and a node that does not answer is left out (``gorilix_node_up
0``) instead of repeating stale numbers, as the Prometheus docs ask of
exporters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gorilix.dashboard.tracker import STATUSES, Tracker

#: (metric, help, the stats key it reads) for the per-node counters.
NODE_COUNTERS = (
    ("gorilix_messages_routed", "Messages the node forwarded (asks, tells and replies).", "forwarded"),
    ("gorilix_asks", "Asks the node forwarded.", "asks"),
    ("gorilix_tells", "Tells (and stops) the node forwarded.", "tells"),
    ("gorilix_replies", "Replies the node forwarded.", "replies"),
    ("gorilix_worker_deaths", "Worker processes of the node that died or were killed.", "worker_deaths"),
    ("gorilix_queue_refusals", "Messages refused past max_queued for their worker or peer.", "queue_refusals"),
    ("gorilix_malformed_frames", "Malformed frames the node dropped.", "malformed"),
)

#: (metric, help, the key of a worker row) for the per-worker gauges.
WORKER_GAUGES = (
    ("gorilix_worker_alive", "1 if the worker runs and is ready.", "alive"),
    ("gorilix_worker_actors", "Actors the worker hosts.", "actors"),
    ("gorilix_worker_mailbox_depth", "Messages waiting in the worker's mailboxes.", "mailbox"),
    ("gorilix_worker_rss_bytes", "The worker's resident memory.", "rss_bytes"),
    ("gorilix_worker_cpu_percent", "The worker's CPU use (100 = one core).", "cpu_percent"),
    ("gorilix_worker_queued_bytes", "Bytes sent to the worker and not yet read by it.", "queued_bytes"),
)


class ClusterMetrics(Collector):
    """Each scrape reads the latest answer of every node the dashboard polls (under its lock)."""

    def __init__(self, tracker: Tracker, lock: Any) -> None:
        self._tracker = tracker
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            nodes = {name: view.as_json() for name, view in self._tracker.nodes.items()}
            members = list(self._tracker.members)
        yield from node_metrics(nodes)
        by_status = GaugeMetricFamily("gorilix_members", "Cluster members by status, as the dashboard's member "
                                      "table shows them.", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], sum(1 for m in members if m.get("status") == status))
        yield by_status


def node_metrics(nodes: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """The metric families for ``nodes`` (name -> what ``/api/state`` shows of it)."""
    up = GaugeMetricFamily("gorilix_node_up", "1 if the node answered the dashboard's last poll.", labels=["node"])
    answering = {name: node for name, node in nodes.items() if node["reachable"]}
    for name in nodes:
        up.add_metric([name], 1.0 if name in answering else 0.0)
    yield up
    stats = {name: node["stats"] for name, node in answering.items()}
    for metric, doc, key in NODE_COUNTERS:
        family = CounterMetricFamily(metric, doc, labels=["node"])
        for name, s in stats.items():
            if key in s:
                family.add_metric([name], float(s[key] or 0))
        yield family
    actors = GaugeMetricFamily("gorilix_actors", "Actors on the node.", labels=["node"])
    for name, s in stats.items():
        actors.add_metric([name], float(s.get("actors") or 0))
    yield actors
    yield _by_label(stats, "gorilix_dead_letters", "Messages that could not be delivered, by reason.",
                    "dead_letters_by_reason", "reason")
    yield _by_label(stats, "gorilix_supervisor_restarts", "Children a supervisor re-created after a failure.",
                    "restarts_by_supervisor", "supervisor")
    yield from _gossip(stats)
    yield from _workers(answering)
    yield from _ask_latency(stats)


def _by_label(stats: dict[str, dict[str, Any]], metric: str, doc: str, key: str, label: str) -> Metric:
    """A counter per node and per key of the node's ``stats[key]`` mapping (dead letters by reason, ...)."""
    family = CounterMetricFamily(metric, doc, labels=["node", label])
    for name, s in stats.items():
        for value, count in sorted((s.get(key) or {}).items()):
            family.add_metric([name, str(value)], float(count))
    return family


def _gossip(stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    sent = CounterMetricFamily("gorilix_gossip_packets_sent", "Gossip datagrams the node sent.", labels=["node"])
    received = CounterMetricFamily("gorilix_gossip_packets_received", "Gossip datagrams the node received.",
                                   labels=["node"])
    dropped = CounterMetricFamily("gorilix_gossip_packets_dropped", "Gossip datagrams the node dropped: "
                                  "malformed, or refused (a bad seal, stale or replayed).", labels=["node", "reason"])
    suspicions = CounterMetricFamily("gorilix_gossip_suspicions", "Suspicions the node raised about members.",
                                     labels=["node"])
    for name, s in stats.items():
        gossip = s.get("gossip")
        if not gossip:  # clustering is off there
            continue
        sent.add_metric([name], float(gossip.get("sent") or 0))
        received.add_metric([name], float(gossip.get("received") or 0))
        dropped.add_metric([name, "malformed"], float(gossip.get("malformed") or 0))
        dropped.add_metric([name, "refused"], float(gossip.get("dropped") or 0))
        suspicions.add_metric([name], float(gossip.get("suspicions") or 0))
    yield from (sent, received, dropped, suspicions)


def _workers(nodes: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for metric, doc, key in WORKER_GAUGES:
        family = GaugeMetricFamily(metric, doc, labels=["node", "worker"])
        for name, node in nodes.items():
            for worker in node["workers"]:
                family.add_metric([name, str(worker["id"])], float(worker.get(key) or 0))
        yield family
    restarts = CounterMetricFamily("gorilix_worker_restarts", "Times the worker process was started again.",
                                   labels=["node", "worker"])
    for name, node in nodes.items():
        for worker in node["workers"]:
            restarts.add_metric([name, str(worker["id"])], float(worker.get("restarts") or 0))
    yield restarts


def _ask_latency(stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    family = HistogramMetricFamily(
        "gorilix_ask_latency_seconds",
        "Asks the node forwarded to a local worker, from forwarding to the reply passing back (a sample of "
        "one ask in sample_every).", labels=["node"])
    for name, s in stats.items():
        latency = s.get("ask_latency")
        if not latency:
            continue
        bounds, counts = latency["bounds"], latency["counts"]
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, map(float, bounds)), "+Inf"], counts, strict=True):
            cumulative += int(count)
            buckets.append((bound, float(cumulative)))
        family.add_metric([name], buckets, float(latency["sum"]))
    yield family
