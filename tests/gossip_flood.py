"""Flood a real node's gossip port with made-up members; print what it costs the node.

The drill of issue 11, item 8: a node without a secret (loopback, so no seal)
and a second, real member; an outsider sends the first node datagrams full of
made-up members announced alive (fresh names, addresses where nobody answers,
a quarter at the outsider's own address). The script prints the node's
member table, gossip counters, open descriptors and RSS before, during and
after the flood, then kills the real member and times how long the flooded
node takes to declare it dead (against the same without a flood).

    python tests/gossip_flood.py              # --seconds, --rate (fakes a second)

Only 127.0.0.1 is ever sent to. Every process it starts is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil

if importlib.util.find_spec("gorilix") is None:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gorilix import ActorSystem  # noqa: E402
from gorilix.cluster import bridge  # noqa: E402
from gorilix.cluster.wire import ALIVE, PROTOCOL_VERSION  # noqa: E402
from gorilix.launcher import free_port  # noqa: E402
from gorilix.system import ClusterConfig  # noqa: E402

TIMINGS = {"probe_interval": 0.2, "probe_timeout": 0.1, "push_interval": 0.05, "pull_interval": 2.0,
           "suspicion_mult": 3, "join_timeout": 10.0, "leave_timeout": 1.0}
PEER = """
import sys, time
from gorilix import ActorSystem
from gorilix.cluster import bridge
from gorilix.system import ClusterConfig
timings = eval(sys.argv[3])
with ActorSystem("peer", workers=1) as system:
    system.set_cluster_provider(bridge.ClusterProvider())
    system.enable_clustering(ClusterConfig(node_name="peer", bind_addr="127.0.0.1", bind_port=int(sys.argv[1]),
                                           seeds=[sys.argv[2]], **timings))
    print("joined", flush=True)
    time.sleep(3600)
"""


def node_figures(system: ActorSystem) -> dict[str, Any]:
    node = psutil.Process(system._node.pid)
    gossip = system.stats().get("gossip") or {}
    members = system.get_cluster().members()
    return {"members": len(members), "alive": sum(1 for m in members if m.status.value == "alive"),
            "fds": node.num_fds(), "rss_mb": round(node.memory_info().rss / 2**20, 1),
            **{k: gossip.get(k, 0) for k in ("received", "refused_rate", "unverified", "refused_full",
                                              "links_refused")}}


def flood(port: int, seconds: float, rate: int, per_datagram: int = 20) -> int:
    """Send made-up members to 127.0.0.1:port for ``seconds``; returns how many."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            messages = []
            for _ in range(per_datagram):
                address = me if sent % 4 == 0 else ("127.0.0.1", 20_000 + sent % 20_000)
                meta = {"router": f"tcp://127.0.0.1:{address[1]}", "workers": 1}
                messages.append([ALIVE, f"fake-{os.getpid()}-{sent}", 0, address[0], address[1], meta])
                sent += 1
            sock.sendto(msgpack.packb([PROTOCOL_VERSION, *messages], use_bin_type=True), ("127.0.0.1", port))
            behind = start + sent / rate - time.monotonic()
            if behind > 0:
                time.sleep(behind)
    return sent


def detection(system: ActorSystem, peer: subprocess.Popen[str], limit: float = 60.0) -> float | None:
    start = time.monotonic()
    peer.send_signal(signal.SIGKILL)
    peer.wait()
    cluster = system.get_cluster()
    while time.monotonic() - start < limit:
        if any(m.name == "peer" and m.status.value == "dead" for m in cluster.members()):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def run(seconds: float, rate: int, flooded: bool) -> None:
    port = free_port()
    system = ActorSystem("victim", workers=1)
    peer = None
    try:
        system.set_cluster_provider(bridge.ClusterProvider())
        system.enable_clustering(ClusterConfig(node_name="victim", bind_addr="127.0.0.1", bind_port=port,
                                               **TIMINGS))  # type: ignore[arg-type]
        peer = subprocess.Popen([sys.executable, "-c", PEER, str(free_port()), f"127.0.0.1:{port}",
                                 repr(TIMINGS)], stdout=subprocess.PIPE, text=True)
        assert peer.stdout is not None and peer.stdout.readline().strip() == "joined"
        while not any(m.name == "peer" for m in system.get_cluster().members()):
            time.sleep(0.05)
        print(f"{'flooded' if flooded else 'quiet'} node:")
        print("  before      ", node_figures(system))
        if flooded:
            sent = flood(port, seconds, rate)
            print(f"  flood       {sent} made-up members in {seconds:g} s")
            print("  after it    ", node_figures(system))
            time.sleep(30.0)
            print("  30 s later  ", node_figures(system))
        found = detection(system, peer)
        print(f"  a real member SIGKILLed: declared dead after {found:.2f} s" if found is not None
              else "  a real member SIGKILLed: NOT declared dead within 60 s")
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait()
        system.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the flood lasts")
    parser.add_argument("--rate", type=int, default=2000, help="made-up members a second")
    args = parser.parse_args(argv)
    run(args.seconds, args.rate, flooded=False)
    run(args.seconds, args.rate, flooded=True)


if __name__ == "__main__":
    main()
