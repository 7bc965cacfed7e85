"""What follows an actor's exit: supervisors decide, monitors and links fire.

The node's core reports every exit here (a crash, a stop, a worker death)
and this class carries out the supervisors' decisions through the core:
restart a cell in place, re-create an actor on a live worker, or forget it.
Part of the core's state machine: no sockets, no clock of its own.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gorilix.registry import ActorRecord, Registry
from gorilix.supervision import (
    ROOT_STRATEGY,
    Child,
    Escalate,
    ExitIncident,
    Remove,
    Restart,
    Strategy,
    SupervisorState,
)
from gorilix.transport.errors import GorilixError
from gorilix.watches import Watches
from gorilix.workers.messages import Down
from gorilix.workers.ref import ActorRef
from gorilix.workers.spec import PERMANENT

log = logging.getLogger("gorilix.supervisor")

Exit = tuple[ActorRecord, str, bool]  # record, reason, abnormal

#: A dead worker's actors go to their supervisors this many at a time ...
EXIT_SLICE = 250
#: ... with this many seconds between two slices, for the node's other traffic.
EXIT_PAUSE = 0.001


@dataclass(slots=True)
class LostWorker:
    """A dead worker's actors on their way to their supervisors, a slice at a time (:meth:`Lifecycle.worker_lost`)."""

    reason: str
    ids: deque[int]  # not handed over yet, in start order
    incidents: dict[int, ExitIncident] = field(default_factory=dict)  # supervisor id -> this death's incident


class LifecycleOwner(Protocol):
    """What the lifecycle needs of the node's core (:class:`gorilix.node_core.NodeCore`): its book and its sends."""

    name: str
    registry: Registry
    rng: random.Random

    def now(self) -> float: ...
    def allocate_id(self) -> int: ...
    def schedule(self, delay: float, fn: Callable[..., Any], *args: Any) -> None: ...
    def tell(self, dst_id: int, value: Any) -> None: ...
    def exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None: ...
    def send_node(self, node: str, op: list[Any]) -> None: ...
    def linked(self, node: str) -> bool: ...
    def place(self, record: ActorRecord, slot: int | None = None) -> None: ...
    def place_soon(self, record: ActorRecord) -> None: ...
    def restart_in_place(self, record: ActorRecord, reason: str) -> bool: ...
    def suspend(self, record: ActorRecord, reason: str) -> None: ...
    def forget(self, record: ActorRecord, reason: str) -> None: ...


class Lifecycle:
    def __init__(self, core: LifecycleOwner) -> None:
        self.core = core
        self.supervisors: dict[int, SupervisorState] = {}
        self.watches = Watches()
        self.remote_watches: dict[tuple[str, int], set[int]] = {}  # (node, actor) -> local watchers
        self.remote_watchers: dict[int, set[tuple[str, int]]] = {}  # local actor -> (node, watcher)
        self._down: set[int] = set()  # actors whose incarnation ended, waiting for a decision
        self.remote_links: dict[int, set[tuple[str, int]]] = {}  # local actor -> (node, actor)
        self.lost: deque[LostWorker] = deque()  # dead workers whose actors are being handed over
        #: Restarts every supervisor carried out, in all: it never goes down (a supervisor's own count goes
        #: with it when it stops), so a dashboard's rate of restarts is never thrown by a stopped one.
        self.restarts = 0
        self.root = self.new_supervisor("root", ROOT_STRATEGY, None)

    # -- the tree -----------------------------------------------------------

    def new_supervisor(self, name: str, strategy: Strategy, parent: int | None,
                       restart: str = PERMANENT) -> SupervisorState:
        sup = SupervisorState(self.core.allocate_id(), name, strategy, parent, clock=self.core.now, rng=self.core.rng)
        if parent is not None:
            owner = self._supervisor(parent)
            owner.add(Child(sup.id, name, restart, is_supervisor=True))
        self.supervisors[sup.id] = sup
        return sup

    def _supervisor(self, sup_id: int) -> SupervisorState:
        sup = self.supervisors.get(sup_id)
        if sup is None:
            raise GorilixError(f"no supervisor {sup_id:#x} on node {self.core.name}; it was stopped")
        return sup

    def adopt(self, record: ActorRecord, sup_id: int | None = None, key: str | None = None) -> None:
        """Make ``sup_id`` (default: the root) the supervisor of ``record``."""
        sup = self.root if sup_id is None else self._supervisor(sup_id)
        record.supervisor = sup.id
        record.key = key if key is not None else f"{record.id:#x}"
        sup.add(Child(record.id, record.key, record.spec.restart))

    def children(self, sup_id: int) -> list[tuple[str, int, bool]]:
        return [(c.key, c.id, c.is_supervisor) for c in self._supervisor(sup_id).children]

    def answer(self, sup_id: int, request: Any) -> Any:
        """A message to a supervisor's own ref: it answers what OTP's supervisors answer."""
        sup = self._supervisor(sup_id)
        if request == "which_children":
            return [(child.key, ActorRef(self.core.name, child.id, self._child_name(child)))
                    for child in sup.children]
        if request == "count_children":
            children = sup.children
            nested = sum(1 for c in children if c.is_supervisor)
            return {"specs": len(children), "active": sum(1 for c in children if self.is_running(c.id)),
                    "supervisors": nested, "workers": len(children) - nested}
        raise GorilixError(
            f"supervisor {sup.name!r} answers 'which_children' and 'count_children', not {request!r}; "
            "manage it with its SupervisorRef (add_child, remove_child, stop)"
        )

    def _child_name(self, child: Child) -> str | None:
        if child.is_supervisor:
            return child.key
        record = self.core.registry.actors.get(child.id)
        return None if record is None else record.spec.name

    # -- exits --------------------------------------------------------------

    def exited(self, exits: list[Exit], final: bool) -> None:
        """Actors' incarnations ended; ``final``: they are gone for good already."""
        for record, reason, abnormal in exits:
            self._signal(record, reason, abnormal)
            self._down.add(record.id)
        if final:
            for record, reason, _ in exits:
                sup = self.supervisors.get(record.supervisor)
                if sup is not None:
                    sup.remove(record.id)
                self.core.forget(record, reason)
            return
        for sup_id, items in self._by_supervisor(exits).items():
            sup = self.supervisors.get(sup_id)
            if sup is None:  # its supervisor is gone: nothing will restart it
                self._orphans(items)
                continue
            for decision in sup.on_exits(items):
                self._execute(sup, decision)

    def worker_lost(self, ids: list[int], reason: str) -> None:
        """A worker died with actors ``ids`` (in start order, each on no worker now): hand them to their supervisors.

        Not in one step: a worker that hosted 500,000 actors stalled the node
        for seconds when every monitor, link and supervisor decision came at
        once. :data:`EXIT_SLICE` exits at a time, with the node's other
        traffic in between; each supervisor still sees the death as one
        incident (:class:`gorilix.supervision.ExitIncident`), with the
        decisions it would make for all its lost children at once.
        """
        if not ids:
            return
        self.lost.append(LostWorker(reason, deque(ids)))
        if len(self.lost) == 1:
            self.core.schedule(0.0, self._hand_over)

    def handing_over(self) -> int:
        """How many actors of dead workers wait for their supervisors' decisions."""
        return sum(len(job.ids) for job in self.lost)

    def _hand_over(self) -> None:
        """One slice of :meth:`worker_lost`, then the next in turn (whatever this one raised: never stuck)."""
        try:
            self._hand_over_slice()
        finally:
            if self.lost:
                self.core.schedule(EXIT_PAUSE, self._hand_over)

    def _hand_over_slice(self) -> None:
        """The death's incidents are decided once its last actor is handed over."""
        job = self.lost[0]
        actors = self.core.registry.actors
        exits: list[Exit] = []
        for _ in range(min(EXIT_SLICE, len(job.ids))):
            record = actors.get(job.ids.popleft())
            if record is None or record.slot is not None:  # stopped meanwhile, or already brought back
                continue
            self._signal(record, job.reason, True)
            self._down.add(record.id)
            exits.append((record, job.reason, True))
        for sup_id, items in self._by_supervisor(exits).items():
            sup = self.supervisors.get(sup_id)
            if sup is None:
                self._orphans(items)
                continue
            incident = job.incidents.get(sup_id)
            if incident is None or incident.supervisor is not sup:
                incident = job.incidents[sup_id] = sup.incident()
            for decision in incident.add(items):
                self._execute(sup, decision)
        if not job.ids:
            self.lost.popleft()
            for sup_id, incident in job.incidents.items():
                sup = self.supervisors.get(sup_id)
                if sup is incident.supervisor:  # (else stopped meanwhile: its children went with it)
                    for decision in incident.finish():
                        self._execute(sup, decision)

    @staticmethod
    def _by_supervisor(exits: list[Exit]) -> dict[int, list[tuple[int, str, bool]]]:
        by_supervisor: dict[int, list[tuple[int, str, bool]]] = {}
        for record, reason, abnormal in exits:
            by_supervisor.setdefault(record.supervisor, []).append((record.id, reason, abnormal))
        return by_supervisor

    def _orphans(self, items: list[tuple[int, str, bool]]) -> None:
        """Exits whose supervisor is gone: nothing will restart them."""
        for actor_id, reason, _ in items:
            orphan = self.core.registry.actors.get(actor_id)
            if orphan is not None:
                self.core.forget(orphan, reason)

    def restarted(self, actor_id: int) -> None:
        record = self.core.registry.actors.get(actor_id)
        if record is not None:
            sup = self.supervisors.get(record.supervisor)
            if sup is not None:
                sup.restarted(actor_id)

    def _execute(self, sup: SupervisorState, decision: Restart | Remove | Escalate) -> None:
        if isinstance(decision, Remove):
            if decision.id in self.supervisors:
                self.stop_supervisor(decision.id, decision.reason)
            else:
                record = self.core.registry.actors.get(decision.id)
                if record is not None:
                    if decision.id not in self._down:  # a sibling that was still running
                        self._signal(record, "shutdown", False)
                    self.core.forget(record, decision.reason)
        elif isinstance(decision, Restart):
            for child_id in decision.ids:  # siblings still running end now, as in OTP
                self._shut(child_id)
            if decision.delay > 0:
                self.core.schedule(decision.delay, self._restart, sup.id, decision.ids, decision.reason)
            else:
                self._restart(sup.id, decision.ids, decision.reason)
        else:
            self._escalate(sup, decision.reason)

    def _restart(self, sup_id: int, ids: tuple[int, ...], reason: str) -> None:
        """Re-create the children ``ids`` of ``sup_id``, each counted as a restart it carried out."""
        sup = self.supervisors.get(sup_id)
        if sup is None:
            return
        for child_id in ids:
            nested = self.supervisors.get(child_id)
            if nested is not None:
                self._count_restart(sup, child_id)
                nested.reset()
                self._restart(nested.id, tuple(c.id for c in nested.children), f"shutdown: {reason}")
                continue
            record = self.core.registry.actors.get(child_id)
            if record is None or child_id not in self._down:
                # Gone, or brought back already: an earlier decision's timer restarted it (its worker died
                # during the backoff of a crash, and each exit got a timer). Restarting it again would
                # end a healthy incarnation, or place a second one while the first is being created.
                continue
            self._down.discard(child_id)
            self._count_restart(sup, child_id)
            if not self.core.restart_in_place(record, reason):
                self.core.place_soon(record)  # (in batches: a worker with 500,000 actors must not stall the node)

    def _count_restart(self, sup: SupervisorState, child_id: int) -> None:
        child = sup.get(child_id)
        if child is not None:  # (removed meanwhile: its restart is no longer this supervisor's)
            sup.restarted_child(child)
            self.restarts += 1

    def _shut(self, child_id: int) -> None:
        """End a running child's incarnation ("shutdown") ahead of its restart or removal."""
        nested = self.supervisors.get(child_id)
        if nested is not None:
            for child in nested.children:
                self._shut(child.id)
            self._signal_exit(nested.id, nested.name, "shutdown")
            return
        record = self.core.registry.actors.get(child_id)
        if record is None or child_id in self._down:
            return
        self._down.add(child_id)
        self._signal(record, "shutdown", False)
        self.core.suspend(record, "shutdown")

    def _escalate(self, sup: SupervisorState, reason: str) -> None:
        log.error("%s", reason)
        for child in sup.children:  # a supervisor that gives up stops its children first
            self._shut(child.id)
        if sup.parent is None or sup.parent not in self.supervisors:
            self.stop_supervisor(sup.id, reason)
            return
        self._signal_exit(sup.id, sup.name, reason)  # it failed: its monitors and links hear of it
        parent = self.supervisors[sup.parent]
        for decision in parent.on_exits([(sup.id, reason, True)]):
            self._execute(parent, decision)

    def stop_supervisor(self, sup_id: int, reason: str) -> None:
        """Stop a subtree for good, last-started child first; ``reason`` goes to its monitors."""
        sup = self.supervisors.pop(sup_id, None)
        if sup is None:
            return
        for child in reversed(list(sup.children)):
            if child.is_supervisor:
                self.stop_supervisor(child.id, "shutdown")
            else:
                record = self.core.registry.actors.get(child.id)
                if record is not None:
                    self._signal(record, "shutdown", False)
                    self.core.forget(record, "shutdown")
        if sup.parent is not None and sup.parent in self.supervisors:
            self.supervisors[sup.parent].remove(sup.id)
        self._signal_exit(sup.id, sup.name, reason)
        self.forget(sup.id)

    # -- monitors and links -------------------------------------------------

    def _signal(self, record: ActorRecord, reason: str, abnormal: bool) -> None:
        self._signal_exit(record.id, record.spec.name, reason)

    def _signal_exit(self, actor_id: int, name: str | None, reason: str) -> None:
        """Tell monitors and links that an actor (or a supervisor) ``actor_id`` ended."""
        watchers, linked = self.watches.exited(actor_id)
        remote_watchers = self.remote_watchers.pop(actor_id, ())
        remote_links = self.remote_links.pop(actor_id, ())
        if not (watchers or linked or remote_watchers or remote_links):  # (most actors: a worker's death is many)
            return
        ref = ActorRef(self.core.name, actor_id, name)
        for watcher in watchers:
            self.core.tell(watcher, Down(ref, reason))
        for other in linked:
            # Normal exits too: the worker hands them to actors that trap exits.
            self.core.exit_signal(other, ref, reason)
        for node, watcher in remote_watchers:
            self.core.send_node(node, ["rdown", actor_id, name, reason, watcher])
        for node, other in remote_links:
            self.core.send_node(node, ["rexit", other, actor_id, name, reason])

    def monitor(self, watcher: int, node: str, watched: int) -> None:
        if node != self.core.name:
            if not self.core.linked(node):
                self.core.tell(watcher, Down(ActorRef(node, watched), f"node not found: {node}"))
                return
            self.remote_watches.setdefault((node, watched), set()).add(watcher)
            self.core.send_node(node, ["rmonitor", watcher, watched])
            return
        if not self.exists(watched):
            self.core.tell(watcher, Down(ActorRef(node, watched), "noproc"))
            return
        self.watches.monitor(watcher, watched)

    def demonitor(self, watcher: int, node: str, watched: int) -> None:
        if node != self.core.name:
            self.remote_watches.get((node, watched), set()).discard(watcher)
            return
        self.watches.demonitor(watcher, watched)

    def remote_monitor(self, node: str, watcher: int, watched: int) -> None:
        """An actor on ``node`` monitors our ``watched``."""
        if not self.exists(watched):
            self.core.send_node(node, ["rdown", watched, None, "noproc", watcher])
            return
        self.remote_watchers.setdefault(watched, set()).add((node, watcher))

    def remote_down(self, node: str, watched: int, name: str | None, reason: str, watcher: int) -> None:
        watchers = self.remote_watches.get((node, watched))
        if not watchers or watcher not in watchers:
            return  # demonitored meanwhile
        watchers.discard(watcher)
        if not watchers:
            del self.remote_watches[(node, watched)]
        self.core.tell(watcher, Down(ActorRef(node, watched, name), reason))

    def node_down(self, node: str, reason: str) -> None:
        """Every local monitor of an actor on ``node`` fires."""
        for key in [k for k in self.remote_watches if k[0] == node]:
            for watcher in self.remote_watches.pop(key):
                self.core.tell(watcher, Down(ActorRef(node, key[1]), f"node {node} down: {reason}"))
        for actor_id, watchers in list(self.remote_watchers.items()):
            watchers -= {w for w in watchers if w[0] == node}
            if not watchers:
                del self.remote_watchers[actor_id]
        for actor_id, links in list(self.remote_links.items()):
            for peer, other in [link for link in links if link[0] == node]:
                links.discard((peer, other))
                self.core.exit_signal(actor_id, ActorRef(node, other), f"node {node} down: {reason}")

    def link(self, a: int, node: str, b: int) -> None:
        if node != self.core.name:
            if not self.core.linked(node):
                self.core.exit_signal(a, ActorRef(node, b), f"node not found: {node}")
                return
            self.remote_links.setdefault(a, set()).add((node, b))
            self.core.send_node(node, ["rlink", b, a])
            return
        if not self.exists(b):
            self.core.exit_signal(a, ActorRef(node, b), "noproc")
            return
        self.watches.link(a, b)

    def unlink(self, a: int, node: str, b: int) -> None:
        if node != self.core.name:
            self.remote_links.get(a, set()).discard((node, b))
            self.core.send_node(node, ["runlink", b, a])
            return
        self.watches.unlink(a, b)

    def remote_link(self, node: str, local: int, remote: int) -> None:
        """An actor on ``node`` linked to our ``local``: the link holds both ways."""
        if not self.exists(local):
            self.core.send_node(node, ["rexit", remote, local, None, "noproc"])
            return
        self.remote_links.setdefault(local, set()).add((node, remote))

    def remote_unlink(self, node: str, local: int, remote: int) -> None:
        self.remote_links.get(local, set()).discard((node, remote))

    def remote_exit(self, node: str, local: int, remote: int, name: str | None, reason: str) -> None:
        """A linked actor on ``node`` exited: signal our side of the link."""
        links = self.remote_links.get(local)
        if not links or (node, remote) not in links:
            return  # unlinked meanwhile
        links.discard((node, remote))
        self.core.exit_signal(local, ActorRef(node, remote, name), reason)

    def is_running(self, actor_id: int) -> bool:
        """A supervisor, or an actor whose incarnation has not ended (it may be moving workers)."""
        if actor_id in self.supervisors:
            return True
        return actor_id in self.core.registry.actors and actor_id not in self._down

    def exists(self, actor_id: int) -> bool:
        """An actor or a supervisor of this node (both can be monitored and linked)."""
        return actor_id in self.core.registry.actors or actor_id in self.supervisors

    def forget(self, actor_id: int) -> None:
        self._down.discard(actor_id)
        self.remote_links.pop(actor_id, None)
        self.watches.exited(actor_id)
        self.watches.forget(actor_id)

