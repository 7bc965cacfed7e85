"""The UDP driver of the SWIM engine: its own thread, nothing else in it.

A busy main thread or a slow handler cannot delay probes and acks here (and
the engine's local health score stretches its timeouts when this thread
itself is late). Other threads talk to it through a command queue and read
membership through thread-safe snapshots.

Nothing here waits on another thread: membership events go to a callback
that must not block (the bridge's never does), so the thread keeps answering
probes whatever the node does, and a leave is announced and spread from here
(:meth:`SwimDriver.leave`) even when the node that asked for it is gone.
"""

from __future__ import annotations

import logging
import queue
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from gorilix.cluster.refusals import RefusalCounts
from gorilix.cluster.security import REPLAY_WINDOW, ClusterKeys
from gorilix.cluster.swim import Member, MemberEvent, SwimConfig, SwimEngine
from gorilix.transport.errors import ClusterError

log = logging.getLogger("gorilix.cluster")

#: Largest datagram read; anything bigger is truncated by the kernel and fails to parse.
MAX_DATAGRAM = 65_535
#: At most one warning this often about members whose clocks are too far off.
STALE_WARN_EVERY = 30.0


class SwimDriver:
    def __init__(
        self, name: str, bind: tuple[str, int], advertise: tuple[str, int], meta: dict[str, Any],
        config: SwimConfig, keys: ClusterKeys | None, on_events: Callable[[list[MemberEvent]], None],
        refresh_meta: Callable[[], dict[str, Any]] | None = None, refresh_every: float = 5.0,
        meta_check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.name = name
        self.keys = keys
        self.on_events = on_events
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bind)
        except OSError as exc:
            self.sock.close()
            raise ClusterError(
                f"cannot bind udp {bind[0]}:{bind[1]}: {exc.strerror}; is another node running? "
                "pick another bind address or port"
            ) from None
        self.sock.setblocking(False)
        self.bound = self.sock.getsockname()
        host, port = advertise
        self.engine = SwimEngine(
            name, host, port or self.bound[1], meta, config, clock=time.monotonic, rng=random.Random(),
            meta_check=meta_check,
        )
        if keys is not None:  # seals are bound to their receiver: we open those for our name or addresses
            keys.gossip_as(name, [(host, port or self.bound[1]), self.bound,
                                  *_interface_addresses(self.bound)])
        self.dropped = 0  # datagrams that failed authentication (or came too late, or twice)
        self.refusals = RefusalCounts(name, "gossip", log)  # the same, per source address
        self._stale_seen = 0
        self._stale_warned_at = -STALE_WARN_EVERY
        self._meta = dict(meta)
        self._refresh_meta = refresh_meta
        self._refresh_every = refresh_every
        self._next_refresh = time.monotonic() + refresh_every
        self._lock = threading.Lock()  # guards the engine
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._stop_at = float("inf")  # monotonic time at which the thread ends by itself (after a leave)
        self._thread = threading.Thread(target=self._run, name=f"gorilix-swim-{name}", daemon=True)

    # -- from other threads -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[[SwimEngine], Any]) -> None:
        """Run ``fn(engine)`` on the driver thread, soon."""
        self._commands.put(lambda: fn(self.engine))
        self._wake_w.send(b"\0")

    def members(self) -> list[Member]:
        with self._lock:
            return self.engine.members()

    def member(self, name: str) -> Member | None:
        with self._lock:
            return self.engine.member(name)

    def local_member(self) -> Member:
        with self._lock:
            return self.engine.local_member()

    def joined_count(self) -> int:
        with self._lock:
            return self.engine.joined_count()

    def name_conflict(self) -> str | None:
        """Why the last join was refused for our name (a seed lists it at another address), or None."""
        with self._lock:
            conflict = self.engine.name_conflict
            me = self.engine.local_member()
        return None if conflict is None else conflict.message((me.address, me.port))

    def leave(self, linger: float) -> None:
        """Announce a graceful leave, gossip ``linger`` seconds more so it spreads, then end the thread.

        Returns at once; :meth:`join` waits for the end. Safe to call twice.
        """
        def begin(engine: SwimEngine) -> None:
            engine.leave()
            self._stop_at = min(self._stop_at, time.monotonic() + linger)

        try:
            self.call(begin)
        except OSError:  # stopped already: nothing left to announce with
            pass

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (after :meth:`leave` or :meth:`stop`); True if it has."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._thread.join(timeout)
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set() and time.monotonic() < self._stop_at:
                with self._lock:
                    deadline = min(self.engine.next_deadline(), self._stop_at)
                timeout = max(0.0, min(0.5, deadline - time.monotonic()))
                for key, _ in selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                    else:
                        self._read()
                self._step()
        except Exception:
            log.exception("gossip driver of %s failed", self.name)
        finally:
            selector.close()

    def _read(self) -> None:
        for _ in range(256):
            try:
                data, source = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.keys is not None:
                opened = self.keys.open(data, (source[0], source[1]))
                if opened is None:
                    self.dropped += 1
                    stale = self.keys.stale != self._stale_seen
                    # (a stale datagram has a warning of its own, which says to fix the clocks)
                    self.refusals.count(f"{source[0]}:{source[1]}", self.keys.last_refusal, warn=not stale)
                    if stale:
                        self._warn_stale(source)
                    continue
                data = opened
            with self._lock:
                self.engine.receive(data, (source[0], source[1]))

    def _warn_stale(self, source: tuple[str, int]) -> None:
        """A member whose clock is off by more than the replay window is cut off: say why, now and then."""
        assert self.keys is not None
        self._stale_seen = self.keys.stale
        now = time.monotonic()
        if now < self._stale_warned_at + STALE_WARN_EVERY:
            return
        self._stale_warned_at = now
        skew = self.keys.last_skew
        log.warning(
            "dropped sealed gossip from %s:%d: its clock is %.0f s %s ours, more than the %.0f s allowed; "
            "synchronise the members' clocks (NTP)", source[0], source[1], abs(skew),
            "ahead of" if skew > 0 else "behind", REPLAY_WINDOW)

    def _step(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                command()
        if self._refresh_meta is not None and time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + self._refresh_every
            meta = self._refresh_meta()
            if meta != self._meta:
                self._meta = meta
                with self._lock:
                    if self.engine.local_member().status.value == "alive":
                        self.engine.update_meta(meta)
        with self._lock:
            self.engine.tick()
            outbox = self.engine.take_outbox()
            events = self.engine.take_events()
        for address, packet in outbox:
            if self.keys is not None:
                packet = self.keys.seal(packet, address)
            try:
                self.sock.sendto(packet, address)
            except OSError as exc:
                log.debug("gossip to %s failed: %s", address, exc)
        if events:
            try:
                self.on_events(events)
            except Exception:
                log.exception("membership event handler failed")


def _interface_addresses(bound: tuple[str, int]) -> list[tuple[str, int]]:
    """With a wildcard bind, every address of this host at the bound port: a seed
    bound to 0.0.0.0 is reached at whichever of them its members were given."""
    host, port = bound[0], bound[1]
    if host not in ("0.0.0.0", "::", ""):
        return []
    families = (socket.AF_INET,) if host == "0.0.0.0" else (socket.AF_INET, socket.AF_INET6)
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:  # no /proc or /sys here: the advertised address still works
        return []
    return [(a.address.split("%")[0], port) for addrs in interfaces.values() for a in addrs
            if a.family in families]
