"""One member of the cluster example: `python node.py NAME PORT SEED`.

NAME "inventory" hosts the "stock" service, "billing" the "invoices"
service; both run a "journal" subscribed to the "orders" topic. The node
prints one line per membership change it sees. On SIGTERM (or when its
stdin closes, so it never outlives the program that started it) it leaves
the cluster gracefully and exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading

from services import Invoices, Journal, Stock

from gorilix import ActorSystem
from gorilix.cluster import bridge
from gorilix.system import ClusterConfig

# Gossip timings for a demo on one machine: failures and leaves are noticed
# in about a second. The defaults (probe_interval=1.0, ...) suit real networks.
FAST = {
    "probe_interval": 0.2, "probe_timeout": 0.1, "push_interval": 0.05,
    "pull_interval": 2.0, "suspicion_mult": 3, "leave_timeout": 1.0,
}
SERVICES = {"inventory": ("stock", Stock, ({"widget": 10, "gadget": 2},)),
            "billing": ("invoices", Invoices, ())}


def say(name: str, text: str) -> None:
    print(f"[{name}] {text}", flush=True)


def main() -> None:
    name, port, seed = sys.argv[1:4]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ActorSystem(name, workers=1) as system:
        system.set_cluster_provider(bridge.ClusterProvider())
        cluster = system.enable_clustering(ClusterConfig(
            node_name=name, bind_addr="127.0.0.1", bind_port=int(port), seeds=[seed], **FAST,
        ))

        # Runs on the cluster event thread, in this program: keep it short.
        def report(event: bridge.ClusterEvent) -> None:
            if event.name != name:
                say(name, f"sees {event.name}: {event.kind} ({event.status})")

        cluster.on_event(report)
        service, cls, args = SERVICES[name]
        system.spawn(cls, *args, name=service)
        system.spawn(Journal, "orders", name="journal")
        say(name, f"ready: serving {service!r} on 127.0.0.1:{port}")
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
        say(name, "leaving the cluster")
        system.leave_cluster()
    say(name, "stopped")


if __name__ == "__main__":
    main()
