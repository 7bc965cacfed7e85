"""The node process's side of clustering: the gossip engine, and what the node loop needs of it.

It runs in the node process only (:mod:`gorilix.cluster.bridge` is the
program's side). It builds the SWIM driver from a :class:`ClusterConfig`
and announces the router's address in the node's metadata; the gossip thread
hands membership events to the node loop through a PUSH socket that never
blocks, so the loop keeps all node state to itself. Joins and leaves take
time, and the node loop never waits: it starts them here and polls them
from a timer (:class:`JoinJob`).

The gossip engine drops every member whose metadata a node could not use
(:func:`gorilix.cluster.wire.node_meta_problem`), so nothing downstream
ever sees it. When the node loop ends, however it ends, a graceful leave is
announced from the gossip thread at once: the others list the node as
``left``, not ``dead``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import zmq

from gorilix.cluster.config import ClusterConfig
from gorilix.cluster.driver import SwimDriver
from gorilix.cluster.security import ClusterKeys
from gorilix.cluster.swim import Member, MemberEvent, SwimConfig
from gorilix.cluster.wire import node_meta_problem
from gorilix.transport import codec
from gorilix.transport.errors import ClusterError

log = logging.getLogger("gorilix.cluster")

#: Once one seed has answered, how long a join still waits for the others.
JOIN_GRACE = 0.5
#: Membership events that may wait for the node loop; past this it is not reading them (stuck or
#: gone) and they are dropped: the gossip thread must never block on the node.
EVENTS_HWM = 100_000
#: At most one warning this often about membership events the node could not take.
DROP_WARN_EVERY = 30.0


def member_row(member: Member) -> dict[str, Any]:
    """A member as plain data: what ``members`` answers, and what the program's Cluster rebuilds."""
    return {"name": member.name, "address": member.address, "port": member.port, "status": member.status.value,
            "incarnation": member.incarnation, "meta": dict(member.meta), "since": member.status_since,
            "workers": member.meta.get("workers"), "load": member.meta.get("load")}


class ClusterService:
    """This node's gossip: started by the node loop's ``enable_cluster``, stopped when the node leaves or ends."""

    def __init__(self, config: ClusterConfig, zctx: zmq.Context[Any], events_endpoint: str,
                 router_endpoint: str, workers: int, keys: ClusterKeys | None) -> None:
        self.config = config
        self._zctx = zctx
        self._events_endpoint = events_endpoint
        self._push: zmq.Socket[bytes] | None = None  # the gossip thread's own
        self._left = False
        self._node_gone = False
        self.dropped_events = 0  # events the node loop could not take
        self._drop_warned_at = -DROP_WARN_EVERY
        bound_port = int(router_endpoint.rsplit(":", 1)[1])
        host, port = config.advertised(bound_port)
        udp_port = config.gossip_port if config.gossip_port is not None else bound_port
        # Others gossip to the advertised port: the same number as the router's, unless gossip_port says otherwise.
        gossip_seen_at = udp_port if config.gossip_port is not None or not config.advertise_addr else port
        base = {
            "router": f"tcp://{host}:{port}",
            "workers": workers,
            "curve": keys.public_key(config.node_name).decode() if keys is not None else None,
        }

        def current_meta() -> dict[str, Any]:
            # The 1-minute load average, rounded so small wobbles do not cause gossip.
            return {**base, "load": round(os.getloadavg()[0], 1)}

        meta = current_meta()
        problem = node_meta_problem(meta)
        if problem is not None:  # every member would drop us
            raise ClusterError(f"cannot announce node {config.node_name}: {problem}; check advertise_addr")
        swim = SwimConfig(
            probe_interval=config.probe_interval, probe_timeout=config.probe_wait,
            indirect_checks=config.indirect_checks, suspicion_mult=config.suspicion_mult,
            retransmit_mult=config.retransmit_mult, gossip_nodes=config.gossip_nodes,
            gossip_interval=config.push_interval, pull_interval=config.pull_interval,
            reconnect_interval=config.reconnect_interval,
        )
        self.driver = SwimDriver(
            config.node_name, (config.bind_addr, udp_port), (host, gossip_seen_at),
            meta, swim, keys, self._deliver, refresh_meta=current_meta, meta_check=node_meta_problem,
        )

    def start(self) -> None:
        self.driver.start()

    # -- what the node loop asks ---------------------------------------------

    def member_rows(self) -> list[dict[str, Any]]:
        return [member_row(m) for m in self.driver.members()]

    def router_of(self, name: str) -> str | None:
        """The router endpoint of a live member, for a link on demand."""
        member = self.driver.member(name)
        if member is None or member.status.value not in ("alive", "suspect"):
            return None
        router = member.meta.get("router") if isinstance(member.meta, dict) else None
        return router if isinstance(router, str) and router.startswith("tcp://") else None

    def live_names(self) -> list[str]:
        return [m.name for m in self.driver.members() if m.status.value in ("alive", "suspect")]

    def stats(self) -> dict[str, int]:
        """Gossip counters for ``stats`` and ``gorilix status``: what came in, and what was dropped."""
        counters = dataclasses.asdict(self.driver.engine.stats)
        return {**counters, "dropped": self.driver.dropped, "events_dropped": self.dropped_events}

    def refusals(self) -> dict[str, Any]:
        """Gossip that did not open (a bad seal, stale, a replay), per source address: top few and others."""
        return self.driver.refusals.snapshot()

    @property
    def bad_meta(self) -> int:
        return self.driver.engine.stats.bad_meta

    def begin_join(self, seeds: list[str], timeout: float | None) -> JoinJob:
        """Start contacting ``seeds``; the node loop polls the job. Raises ClusterError for a bad seed."""
        if self._left:
            raise ClusterError("this node left the cluster; start a new system to join again")
        try:
            addresses = self.config.seed_addresses(seeds)
        except ClusterError as exc:
            raise ClusterError(f"failed to join cluster: {exc}") from None
        me = self.driver.local_member()
        addresses = [a for a in addresses if a != (me.address, me.port)]  # a shared seed list names us too
        limit = self.config.join_timeout if timeout is None else timeout
        job = JoinJob(self, seeds, addresses, limit, time.monotonic() + limit)
        if addresses:
            self.driver.call(job.begin)
        return job

    def begin_leave(self, limit: float) -> None:
        """Have the gossip thread announce our leave and end after it spread; returns at once. Safe twice."""
        if not self._left:
            self._left = True
            self.driver.leave(min(limit, self.linger()))

    def gossip_stopped(self) -> bool:
        """The gossip thread has ended (after a leave spread, or a stop)."""
        return self.driver.join(0)

    def linger(self) -> float:
        """How long a leave is gossiped before the gossip thread stops: a few rounds."""
        return max(3 * self.config.push_interval, 0.2)

    def node_ended(self) -> None:
        """The node loop ended (stopped or failed): stop feeding it and leave. Runs on the node thread, never waits."""
        self._node_gone = True
        if not self._left:
            log.info("node %s ended: leaving the cluster", self.config.node_name)
        self.begin_leave(self.config.leave_timeout)

    def go_silent(self) -> None:
        """Stop gossiping at once, with no leave: the program behind this node died, so peers find it dead."""
        self._left = True
        self._node_gone = True
        self.driver.stop(timeout=0.5)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait (bounded) for the gossip thread to end after a leave, then stop it; True if it ended by itself."""
        ended = self.driver.join(timeout)
        self.driver.stop(timeout=min(timeout, 1.0))
        if self._push is not None and not self.driver.join(0):
            return ended  # (the gossip thread still owns its socket)
        if self._push is not None:
            self._push.close(linger=0)
            self._push = None
        return ended

    # -- the gossip thread --------------------------------------------------

    def _deliver(self, events: list[MemberEvent]) -> None:
        """Runs on the gossip thread: hand each change to the node loop, never waiting for it."""
        if self._node_gone:
            return
        push = self._push
        if push is None:
            push = self._zctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDHWM, EVENTS_HWM)
            push.connect(self._events_endpoint)
            self._push = push
        now = time.time()
        for event in events:
            m = event.member
            data = codec.encode([event.kind.value, m.name, m.status.value, m.meta, m.address, m.port, now])
            try:
                push.send(data, zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # Again: the node loop is gone or not reading
                self.dropped_events += 1
                if now >= self._drop_warned_at + DROP_WARN_EVERY:
                    self._drop_warned_at = now
                    log.warning("node %s is not taking membership events (%s); %d dropped so far",
                                self.config.node_name, exc, self.dropped_events)


@dataclass
class JoinJob:
    """One join in progress: how many seeds answered, polled by the node loop until it is done."""

    service: ClusterService
    seeds: list[str]
    addresses: list[tuple[str, int]]
    limit: float
    deadline: float
    started: bool = False  # the gossip thread has begun it: answers counted from here are to this join

    def begin(self, engine: Any) -> None:
        """On the gossip thread."""
        engine.join(self.addresses)
        self.started = True

    def poll(self, now: float) -> int | None:
        """Seeds that answered once the join is over, None while it goes on; ClusterError if none did."""
        wanted = set(self.addresses)
        if not wanted:
            return 0
        if not self.started:
            return None if now < self.deadline else self._none_answered()
        driver = self.service.driver
        conflict = driver.name_conflict()
        if conflict is not None:
            raise ClusterError(f"failed to join cluster: {conflict}")
        # A seed that answered our push, or that reached us first (it joined through us while we
        # were still retrying): either way it is up and we are in its cluster.
        known = sum(1 for m in driver.members()
                    if (m.address, m.port) in wanted and m.status.value in ("alive", "suspect"))
        answered = max(driver.joined_count(), known)
        if answered >= len(wanted):
            return answered
        if answered and self.deadline - now > JOIN_GRACE:
            self.deadline = now + JOIN_GRACE  # one seed is enough; a dead one must not stall us
        if now < self.deadline:
            return None
        if answered:
            return answered
        return self._none_answered()

    def _none_answered(self) -> int:
        raise ClusterError(
            f"failed to join cluster: no seed answered within {self.limit:g} s ({', '.join(self.seeds)}); "
            "check the addresses, the firewall (UDP and TCP) and the secret"
        )
