"""The SWIM cluster provider: bridges an ActorSystem to the gossip engine.

``actor_system.set_cluster_provider(bridge.ClusterProvider())`` then
``enable_clustering(ClusterConfig(...))`` binds the router's TCP port and the
gossip UDP port, starts the gossip thread and joins the seeds.

The gossip engine drops every member whose metadata a node could not use
(:func:`gorilix.cluster.wire.node_meta_problem`: a router endpoint ZeroMQ
would refuse, a worker count that is not one), so nothing downstream (the
node's links, ``members``, event listeners) ever sees it. When the node loop
ends, however it ends, the cluster announces a graceful leave from the gossip
thread at once: the others list the node as ``left``, not ``dead``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from gorilix.cluster.config import ClusterConfig
from gorilix.cluster.driver import SwimDriver
from gorilix.cluster.security import ClusterKeys
from gorilix.cluster.swim import Member, MemberEvent, MemberStatus, SwimConfig
from gorilix.cluster.wire import node_meta_problem
from gorilix.transport import codec
from gorilix.transport.errors import ClusterError, GorilixError
from gorilix.workers.messages import ClusterEvent
from gorilix.workers.ref import ActorRef

if TYPE_CHECKING:
    from gorilix.system import ActorSystem

log = logging.getLogger("gorilix.cluster")

#: Once one seed has answered, how long a join still waits for the others.
JOIN_GRACE = 0.5
#: Membership events that may wait for the node loop; past this it is not reading them (stuck or
#: gone) and they are dropped: the gossip thread must never block on the node.
EVENTS_HWM = 100_000
#: At most one warning this often about membership events the node could not take.
DROP_WARN_EVERY = 30.0


class Cluster:
    """This node's view of the cluster (Go: the Cluster returned by the provider)."""

    def __init__(self, system: ActorSystem, config: ClusterConfig, driver: SwimDriver,
                 events_endpoint: str, router_endpoint: str) -> None:
        self.system = system
        self.config = config
        self.router_endpoint = router_endpoint
        self._driver = driver
        self._events_endpoint = events_endpoint
        self._push: zmq.Socket[bytes] | None = None  # used by the gossip thread only
        self._callbacks: list[Callable[[ClusterEvent], None]] = []
        self._subscribers: set[ActorRef] = set()
        self._left = False
        self._leave_lock = threading.Lock()
        self._node_gone = False  # the node loop has ended: no more events for it
        self.dropped_events = 0  # events the node loop could not take
        self._drop_warned_at = -DROP_WARN_EVERY

    # -- the Go guide's operations -----------------------------------------

    def members(self) -> list[Member]:
        """Every known member (self included); dead and left ones stay listed a while."""
        return self._driver.members()

    def local_member(self) -> Member:
        return self._driver.local_member()

    def member_rows(self) -> list[dict[str, Any]]:
        """The member table as plain data (what `gorilix members --json` prints)."""
        return [
            {"name": m.name, "address": m.address, "port": m.port, "status": m.status.value,
             "incarnation": m.incarnation, "meta": dict(m.meta),
             "workers": m.meta.get("workers"), "load": m.meta.get("load")}
            for m in self.members()
        ]

    def member(self, name: str) -> Member:
        for member in self.members():
            if member.name == name:
                return member
        raise ClusterError(f"node not found: {name}")

    def join(self, seeds: list[str], timeout: float | None = None) -> int:
        """Contact ``seeds`` ("host:port" gossip addresses); returns how many answered."""
        if self._left:
            raise ClusterError("this node left the cluster; start a new system to join again")
        try:
            addresses = self.config.seed_addresses(seeds)
        except ClusterError as exc:
            raise ClusterError(f"failed to join cluster: {exc}") from None
        me = self._driver.local_member()
        addresses = [a for a in addresses if a != (me.address, me.port)]  # a shared seed list names us too
        if not addresses:
            return 0
        started = threading.Event()

        def begin(engine: Any) -> None:
            engine.join(addresses)
            started.set()

        self._driver.call(begin)
        limit = self.config.join_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        started.wait(limit)  # count answers to this join, not to the last one
        answered = 0
        wanted = set(addresses)
        while time.monotonic() < deadline:
            # A seed that answered our push, or that reached us first (it joined through us
            # while we were still retrying): either way it is up and we are in its cluster.
            known = sum(1 for m in self._driver.members()
                        if (m.address, m.port) in wanted and m.status.value in ("alive", "suspect"))
            answered = max(self._driver.joined_count(), known)
            if answered >= len(addresses):
                break
            if answered and deadline - time.monotonic() > JOIN_GRACE:
                deadline = time.monotonic() + JOIN_GRACE  # one seed is enough; a dead one must not stall us
            time.sleep(0.01)
        if answered == 0:
            raise ClusterError(
                f"failed to join cluster: no seed answered within {limit:g} s ({', '.join(seeds)}); "
                "check the addresses, the firewall (UDP and TCP) and the secret"
            )
        return answered

    def leave(self, timeout: float | None = None) -> None:
        """Announce a graceful leave, then stop gossiping (bounded in time); safe to call twice."""
        limit = self.config.leave_timeout if timeout is None else timeout
        self._begin_leave(limit)
        # The gossip thread spreads the leave for a few rounds, then ends by itself.
        if not self._driver.join(min(limit, self._linger()) + limit):
            log.warning("gossip thread of %s still running %.1f s after its leave; stopping it",
                        self.config.node_name, limit)
        self._driver.stop(timeout=limit)
        if self.system.running:  # a node that ended has closed its links already
            try:
                self.system._control("disable_cluster", timeout=limit)
            except GorilixError as exc:
                log.warning("closing cluster links: %s", exc)

    def _linger(self) -> float:
        """How long a leave is gossiped before the gossip thread stops: a few rounds."""
        return max(3 * self.config.push_interval, 0.2)

    def _begin_leave(self, limit: float) -> None:
        """Have the gossip thread announce our leave and end after it spread; returns at once."""
        with self._leave_lock:
            if self._left:
                return
            self._left = True
        self._driver.leave(min(limit, self._linger()))

    def _node_ended(self) -> None:
        """The node loop ended (stopped or failed): stop feeding it and leave. Runs on the node thread, never waits."""
        self._node_gone = True
        if not self._left:
            log.info("node %s ended: leaving the cluster", self.config.node_name)
        self._begin_leave(self.config.leave_timeout)

    # -- events -------------------------------------------------------------

    def on_event(self, callback: Callable[[ClusterEvent], None]) -> None:
        """Call ``callback(event)`` on every membership change (from the gossip thread)."""
        self._callbacks.append(callback)

    def subscribe(self, ref: ActorRef) -> None:
        """Send every membership change to ``ref`` as a ClusterEvent message."""
        self._subscribers.add(ref)

    def unsubscribe(self, ref: ActorRef) -> None:
        self._subscribers.discard(ref)

    def _deliver(self, events: list[MemberEvent]) -> None:
        """Runs on the gossip thread: tell the node first (never waiting for it), then listeners."""
        push = self._push
        if push is None and not self._node_gone:
            push = self.system._node.zctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDHWM, EVENTS_HWM)
            push.connect(self._events_endpoint)
            self._push = push
        now = time.time()
        for event in events:
            member = event.member
            if push is not None and not self._node_gone:
                self._to_node(push, codec.encode([event.kind.value, member.name, member.status.value, member.meta]))
            out = ClusterEvent(event.kind.value, member.name, member.address, member.port,
                               member.status.value, dict(member.meta), now)
            for callback in list(self._callbacks):
                try:
                    callback(out)
                except Exception:
                    log.exception("cluster event callback failed")
            for ref in list(self._subscribers):
                try:
                    ref.tell(out)
                except GorilixError as exc:
                    log.debug("cluster event to %s: %s", ref, exc)

    def _to_node(self, push: zmq.Socket[bytes], data: bytes) -> None:
        try:
            push.send(data, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # Again: the node loop is gone or not reading
            self.dropped_events += 1
            now = time.monotonic()
            if now >= self._drop_warned_at + DROP_WARN_EVERY:
                self._drop_warned_at = now
                log.warning("node %s is not taking membership events (%s); %d dropped so far",
                            self.config.node_name, exc, self.dropped_events)

    def close(self) -> None:
        """After leave(): the gossip thread has ended, so its socket may be closed here."""
        self.system._node.remove_exit_hook(self._node_ended)
        if self._push is not None:
            self._push.close(linger=0)
            self._push = None


class ClusterProvider:
    """Clustering over SWIM gossip (the default and only provider)."""

    def start(self, system: ActorSystem, config: ClusterConfig) -> Cluster:
        if config.node_name != system.name:
            raise ClusterError(
                f"ClusterConfig.node_name {config.node_name!r} must match the ActorSystem's name "
                f"{system.name!r}: refs carry the system's name as their node"
            )
        keys = ClusterKeys(config.secret_key) if config.secret_key is not None else None
        router_bind = f"tcp://{config.bind_addr}:{config.bind_port}"
        system._node.cluster_keys = keys
        router_endpoint, events_endpoint = system._control("enable_cluster", router_bind)
        bound_port = int(router_endpoint.rsplit(":", 1)[1])
        try:
            host, port = config.advertised(bound_port)
            udp_port = config.gossip_port if config.gossip_port is not None else bound_port
            # Others gossip to the advertised port: the same number as the router's,
            # unless gossip_port says otherwise.
            gossip_seen_at = udp_port if config.gossip_port is not None or not config.advertise_addr else port
            base = {
                "router": f"tcp://{host}:{port}",
                "workers": len(system._node.pool.workers),
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
                probe_interval=config.probe_interval, probe_timeout=config.probe_timeout,
                indirect_checks=config.indirect_checks, suspicion_mult=config.suspicion_mult,
                retransmit_mult=config.retransmit_mult, gossip_nodes=config.gossip_nodes,
                gossip_interval=config.push_interval, pull_interval=config.pull_interval,
                reconnect_interval=config.reconnect_interval,
            )
            holder: list[Cluster] = []
            driver = SwimDriver(
                config.node_name, (config.bind_addr, udp_port), (host, gossip_seen_at),
                meta, swim, keys, lambda events: holder[0]._deliver(events) if holder else None,
                refresh_meta=current_meta, meta_check=node_meta_problem,
            )
        except BaseException:
            system._control("disable_cluster")
            raise
        cluster = Cluster(system, config, driver, events_endpoint, router_endpoint)
        holder.append(cluster)
        system._node.members_view = cluster.member_rows
        system._node.gossip_bad_meta = lambda: driver.engine.stats.bad_meta
        system._node.add_exit_hook(cluster._node_ended)
        links = system._node.links
        if links is not None:
            links.follow_members(lambda: [m.name for m in driver.members() if m.status.value in ("alive", "suspect")])

            def router_of(name: str) -> str | None:
                member = driver.member(name)
                if member is None or member.status.value not in ("alive", "suspect"):
                    return None
                router = member.meta.get("router") if isinstance(member.meta, dict) else None
                return router if isinstance(router, str) and router.startswith("tcp://") else None

            links.follow_directory(router_of)
        driver.start()
        return cluster


__all__ = ["Cluster", "ClusterEvent", "ClusterProvider", "MemberStatus"]
