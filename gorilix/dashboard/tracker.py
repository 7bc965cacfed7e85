"""What the dashboard shows, as pure data: fed each node's answers, it keeps the history and the timeline.

No sockets and no clock of its own (times are passed in), so its decisions
(rates, deaths per tick, what goes on the timeline) are tested without
processes. :mod:`.collect` feeds it from the nodes; :mod:`.server` reads it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Ticks of history kept: ten minutes at one a second.
HISTORY = 600
#: Timeline events kept.
TIMELINE = 200
#: Member statuses, in the order of their colours on the page.
STATUSES = ("alive", "suspect", "dead", "left")
#: The numbers of a worker row and of a node's stats that the charts and /metrics read.
WORKER_NUMBERS = ("pid", "actors", "cpu_percent", "rss_bytes", "mailbox", "queued_bytes", "restarts")
STATS_NUMBERS = ("forwarded", "asks", "tells", "replies", "dead_letters", "worker_deaths", "restarts", "queue_refusals",
                 "malformed", "actors")
STATS_MAPS = ("dead_letters_by_reason", "restarts_by_supervisor")
GOSSIP_NUMBERS = ("sent", "received", "malformed", "dropped", "suspicions")


@dataclass
class NodeAnswer:
    """One node's answer to one poll: its status (workers, stats), supervision and member table."""

    name: str
    taken: float  # when the answer came (Unix seconds)
    status: dict[str, Any]
    supervisors: list[dict[str, Any]]
    members: list[dict[str, Any]] | None  # None: clustering is off on that node


@dataclass
class NodeView:
    """What the dashboard last knew of one node."""

    name: str
    answer: NodeAnswer | None = None
    previous: NodeAnswer | None = None  # the answer before, for rates
    error: str | None = None  # why its last poll failed, or None
    new_answer: bool = False  # an answer came since the last tick

    def as_json(self) -> dict[str, Any]:
        answer = self.answer
        return {
            "reachable": self.error is None and answer is not None,
            "error": self.error,
            "updated": None if answer is None else answer.taken,
            "workers": [] if answer is None else answer.status.get("workers", []),
            "stats": {} if answer is None else answer.status.get("stats", {}),
            "supervisors": [] if answer is None else answer.supervisors,
        }


@dataclass
class Tracker:
    """The dashboard's state: the latest answer of each node, ten minutes of ticks, and the timeline.

    ``home`` is the node the dashboard was pointed at: its member table is
    shown while it answers, else that of another node that does.
    """

    home: str
    drills: bool = False
    interval: float = 1.0
    seq: int = 0
    time: float = 0.0
    nodes: dict[str, NodeView] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)
    viewed_from: str | None = None
    unpolled: int = 0  # live members left unpolled (past the collector's MAX_POLLED)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    timeline: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=TIMELINE))
    _statuses: dict[str, str] = field(default_factory=dict)  # member -> status last shown

    # -- fed by the collector -------------------------------------------------------

    def answered(self, answer: NodeAnswer) -> None:
        """A node answered a poll. An answer older than the one kept (two polls crossed) is ignored, and a
        malformed one counts as a failed poll."""
        problem = answer_problem(answer)
        if problem is not None:
            self.failed(answer.name, answer.taken, f"its answer is malformed ({problem}); is it another "
                        "version of gorilix?")
            return
        view = self.nodes.setdefault(answer.name, NodeView(answer.name))
        if view.answer is not None and answer.taken < view.answer.taken:
            return
        if view.error is not None:
            self.event(answer.taken, "dashboard", answer.name, f"{answer.name} answers again")
        self._worker_events(view.answer, answer)
        view.previous, view.answer, view.error, view.new_answer = view.answer, answer, None, True

    def failed(self, name: str, now: float, error: str) -> None:
        """A node's poll failed (it did not answer, or refused us): said once on the timeline."""
        view = self.nodes.setdefault(name, NodeView(name))
        if view.error is None:
            self.event(now, "dashboard", name, f"{name} does not answer: {error}")
        view.error = error

    def drilled(self, now: float, node: str, worker: int, pid: int) -> None:
        self.event(now, "drill", node, f"drill: killed worker {worker} of {node} (pid {pid})")

    def left_out(self, now: float, count: int, limit: int) -> None:
        """``count`` live members are not polled (the collector polls at most ``limit``): said once."""
        if count and not self.unpolled:
            self.event(now, "dashboard", self.home, f"{count} live members are not polled: a dashboard polls "
                       f"at most {limit} nodes")
        self.unpolled = count

    def forget(self, polled: set[str]) -> None:
        """Drop the nodes neither polled nor listed in the member table any more (the home node stays)."""
        listed = {str(row.get("name")) for row in self.members}
        for name in [n for n in self.nodes if n != self.home and n not in polled and n not in listed]:
            del self.nodes[name]

    def event(self, now: float, kind: str, node: str, text: str, status: str | None = None) -> None:
        self.timeline.append({"seq": self.seq, "time": now, "kind": kind, "node": node, "text": text,
                              "status": status})

    def tick(self, now: float) -> dict[str, Any]:
        """Close a tick at ``now``: the member table, the rates since each node's last answer; returns the tick."""
        self.seq += 1
        self.time = now
        self._update_members(now)
        point: dict[str, Any] = {"seq": self.seq, "time": now, "nodes": {}}
        for view in self.nodes.values():
            if view.new_answer and view.answer is not None:
                point["nodes"][view.name] = rates(view.previous, view.answer)
                view.new_answer = False
        self.history.append(point)
        return point

    # -- read by the server ---------------------------------------------------------

    def state(self, since: int = 0) -> dict[str, Any]:
        """What ``GET /api/state`` answers: the latest of everything, and the ticks after ``since``."""
        return {
            "seq": self.seq, "time": self.time, "node": self.home, "viewed_from": self.viewed_from,
            "drills": self.drills, "interval": self.interval, "members": self.members, "unpolled": self.unpolled,
            "timeline": list(self.timeline),
            "nodes": {name: view.as_json() for name, view in sorted(self.nodes.items())},
            "history": [point for point in self.history if point["seq"] > since],
        }

    def reachable(self) -> list[NodeView]:
        """The nodes whose last poll answered."""
        return [v for v in self.nodes.values() if v.error is None and v.answer is not None]

    # -- what changed -------------------------------------------------------------

    def _update_members(self, now: float) -> None:
        """Show the home node's member table, else that of the node that answered last."""
        candidates = [v for v in self.reachable() if v.answer is not None and v.answer.members is not None]
        if not candidates:
            return
        home = next((v for v in candidates if v.name == self.home), None)
        view = home or max(candidates, key=lambda v: v.answer.taken if v.answer else 0.0)
        assert view.answer is not None and view.answer.members is not None
        if view.name != self.viewed_from and self.viewed_from is not None:
            self.event(now, "dashboard", view.name, f"member table now from {view.name}")
        self.viewed_from = view.name
        self.members = [{key: row.get(key) for key in ("name", "address", "port", "status", "incarnation", "workers")}
                        for row in sorted(view.answer.members, key=lambda r: str(r.get("name")))]
        seen = set()
        for row in self.members:
            name, status = str(row["name"]), str(row["status"])
            seen.add(name)
            before = self._statuses.get(name)
            if before != status:
                text = f"{name}: {status}" if before is None else f"{name}: {before} -> {status}"
                self.event(now, "member", name, text, status)
                self._statuses[name] = status
        for name in [n for n in self._statuses if n not in seen]:
            del self._statuses[name]
            self.event(now, "member", name, f"{name}: no longer listed", "left")

    def _worker_events(self, before: NodeAnswer | None, after: NodeAnswer) -> None:
        """A worker seen dead, back under a new pid, or replaced between two polls: one line each."""
        if before is None:
            return
        old = {w["id"]: w for w in before.status.get("workers", [])}
        for worker in after.status.get("workers", []):
            was = old.get(worker["id"])
            if was is None:
                continue
            where = f"worker {worker['id']} of {after.name}"
            if was["alive"] and not worker["alive"]:
                self.event(after.taken, "worker", after.name, f"{where} died (pid {was['pid']})", "dead")
            elif worker["alive"] and not was["alive"]:
                self.event(after.taken, "worker", after.name, f"{where} back as pid {worker['pid']}", "alive")
            elif worker["alive"] and was["pid"] != worker["pid"]:
                self.event(after.taken, "worker", after.name,
                           f"{where} restarted: pid {was['pid']} -> {worker['pid']}", "alive")


def _number(value: object) -> bool:
    """A finite int or float (not a bool): what json.dumps writes as valid JSON and float() takes."""
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def answer_problem(answer: NodeAnswer) -> str | None:
    """Why a node's answer cannot be kept, or None: a field that the charts, /metrics or the page's JSON
    read with the wrong type. One node of another version (or one that lies) must not stop the ticks or
    /metrics of every node, nor put NaN, which no browser parses, in /api/state."""
    status = answer.status
    workers, stats = status.get("workers", []), status.get("stats", {})
    if not isinstance(workers, list) or not isinstance(stats, dict) or not isinstance(answer.supervisors, list):
        return "workers and supervisors must be lists, stats a dict"
    for worker in workers:
        if not isinstance(worker, dict) or type(worker.get("id")) is not int or type(worker.get("alive")) is not bool:
            return "each worker needs an int id and a bool alive"
        wrong = [key for key in WORKER_NUMBERS if worker.get(key) is not None and not _number(worker[key])]
        if wrong:
            return f"worker {worker['id']}'s {wrong[0]} is not a number"
    wrong = [key for key in STATS_NUMBERS if stats.get(key) is not None and not _number(stats[key])]
    wrong += [key for key in STATS_MAPS if stats.get(key) is not None and not (
        isinstance(stats[key], dict) and all(_number(v) for v in stats[key].values()))]
    gossip = stats.get("gossip")
    if gossip is not None and not (isinstance(gossip, dict) and all(
            _number(gossip[key]) for key in GOSSIP_NUMBERS if gossip.get(key) is not None)):
        wrong.append("gossip")
    if wrong:
        return f"stats' {wrong[0]} is not a number (or a map of numbers)"
    latency = stats.get("ask_latency")
    if latency is not None and not (
            isinstance(latency, dict) and isinstance(latency.get("bounds"), list)
            and isinstance(latency.get("counts"), list) and len(latency["counts"]) == len(latency["bounds"]) + 1
            and all(map(_number, latency["bounds"] + latency["counts"])) and _number(latency.get("sum"))):
        return "stats' ask_latency is not a histogram"
    if answer.members is not None and not all(isinstance(row, dict) for row in answer.members):
        return "members must be rows"
    if not all(isinstance(sup, dict) for sup in answer.supervisors):
        return "supervisors must be rows"
    if not _plain([status, answer.supervisors, answer.members]):
        return "it holds a value JSON cannot carry (NaN, infinity, or nesting past 32 levels)"
    return None


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain JSON data: no NaN or infinity, no nesting past 32 levels."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return depth < 32 and all(_plain(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return depth < 32 and all(_plain(v, depth + 1) for v in value)
    return True


def rates(before: NodeAnswer | None, after: NodeAnswer) -> dict[str, Any]:
    """One node's point of a tick: its counters' growth per second since its last answer, and each worker's CPU."""
    stats = after.status.get("stats", {})
    cpu = {str(w["id"]): float(w.get("cpu_percent") or 0.0) if w["alive"] else 0.0 for w in after.status.get("workers", [])}
    point: dict[str, Any] = {"msgs_per_s": 0.0, "asks_per_s": 0.0, "tells_per_s": 0.0, "dead_letters_per_s": 0.0,
                             "deaths": 0, "restarts": 0, "cpu": cpu}
    if before is None or after.taken <= before.taken:
        return point
    elapsed = after.taken - before.taken
    old = before.status.get("stats", {})

    def grew(key: str) -> int:
        """How much a counter grew (a restarted node starts again at 0: then its new value)."""
        now, then = int(stats.get(key) or 0), int(old.get(key) or 0)
        return now - then if now >= then else now

    point["msgs_per_s"] = grew("forwarded") / elapsed
    point["asks_per_s"] = grew("asks") / elapsed
    point["tells_per_s"] = grew("tells") / elapsed
    point["dead_letters_per_s"] = grew("dead_letters") / elapsed
    point["deaths"] = grew("worker_deaths")
    point["restarts"] = grew("restarts")
    return point
