"""Three nodes on this machine: find a service on another node, ask it, watch it leave.

This process is the "frontend" node; it starts "inventory" and "billing" as
two more processes (node.py) that join through it. Then it

* finds the "stock" service on inventory with ``whereis(name, node=...)``
  and reserves stock through GenServer calls;
* asks billing's "invoices" service for an invoice, passing a ref of a local
  actor inside the message, and billing tells that actor back;
* spawns an actor on inventory with ``spawn(..., node=...)``;
* publishes to a topic that journals on the other two nodes subscribe to;
* monitors billing's service, then makes billing leave gracefully while a
  request to it is in flight: the request fails at once with NodeDown, the
  monitor fires, and both remaining nodes list billing as "left".

Run it with:

    python examples/cluster/run.py
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from node import FAST
from services import Journal, Pricer, Watcher

from gorilix import ActorSystem, ClusterError, GorilixError, NodeDown
from gorilix.cluster import bridge
from gorilix.launcher import free_port
from gorilix.system import ClusterConfig

NODE_SCRIPT = Path(__file__).with_name("node.py")


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
    return value


class Child:
    """A node.py process; its output is echoed here and kept for waiting on."""

    def __init__(self, name: str, seed: str) -> None:
        self.name = name
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), name, str(free_port()), seed],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"    {line.rstrip()}", flush=True)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name} did not print {text!r} within {timeout:g} s") from None
            if text in line:
                return line

    def reap(self) -> None:
        """Whatever happened: make sure the process is gone and waited for."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def statuses(system: ActorSystem) -> dict[str, str]:
    return {m.name: m.status.value for m in system.get_cluster().members()}


def main() -> int:
    started = time.monotonic()
    children: list[Child] = []
    with ActorSystem("frontend", workers=1) as system:
        try:
            system.set_cluster_provider(bridge.ClusterProvider())
            cluster = system.enable_clustering(ClusterConfig(
                node_name="frontend", bind_addr="127.0.0.1", bind_port=free_port(), **FAST))
            me = cluster.local_member()
            seed = f"{me.address}:{me.port}"
            print(f"frontend: gossip and router on {seed}; starting inventory and billing")
            inventory, billing = Child("inventory", seed), Child("billing", seed)
            children += [inventory, billing]
            for child in children:
                child.wait_for_line("ready", 20)
            everyone = {"frontend": "alive", "inventory": "alive", "billing": "alive"}
            wait_until(lambda: statuses(system) == everyone, 10, "three members alive")
            print("frontend: members:")
            for m in sorted(cluster.members(), key=lambda m: m.name):
                print(f"  {m.name:<10} {m.address}:{m.port}  {m.status.value}  "
                      f"router {m.meta['router']}, {m.meta['workers']} worker(s)")

            # A named service on another node, found by name and called.
            stock = system.whereis("stock", node="inventory")
            print(f"frontend: whereis('stock', node='inventory') -> {stock}")
            print(f"  reserve 3 widgets -> {stock.call(('reserve', 'widget', 3))}")
            print(f"  reserve 5 gadgets -> {stock.call(('reserve', 'gadget', 5))}")

            # A ref inside a message: billing tells our local journal directly.
            notices = system.spawn(Journal, name="notices")
            invoices = system.whereis("invoices", node="billing")
            number = invoices.ask(("invoice", "order-1", 29.97, notices))
            notice = wait_until(lambda: notices.ask(("read",)), 5, "invoice notice")[0]
            print(f"frontend: billing issued {number}; our local journal was told {notice}")

            # An actor spawned on another node answers from that node's worker.
            pricer = system.spawn(Pricer, 1.2, node="inventory")
            quote = pricer.ask(("price", 9.99))
            print(f"frontend: spawned {pricer} on inventory; it quotes {quote['price']} "
                  f"from pid {quote['pid']}")

            # A topic reaches subscribers on every node.
            system.publish("orders", {"order": "order-1", "invoice": number})
            for node in ("inventory", "billing"):
                journal = system.whereis("journal", node=node)
                got = wait_until(lambda j=journal: j.ask(("read",)), 5, f"topic at {node}")
                print(f"frontend: journal on {node} got {got[0]} from the 'orders' topic")

            # Monitor billing's service, leave billing with a request in flight.
            watcher = system.spawn(Watcher)
            watcher.ask(("watch", invoices))
            outcome: list[str] = []

            def slow_request() -> None:
                began = time.monotonic()
                try:
                    invoices.ask(("slow", 8.0), timeout=10.0)
                    outcome.append("answered")
                except NodeDown as exc:
                    outcome.append(f"NodeDown after {time.monotonic() - began:.1f} s: {exc}")
                except GorilixError as exc:  # not expected: reported, and the run fails
                    outcome.append(f"{type(exc).__name__}: {exc}")

            asker = threading.Thread(target=slow_request)
            asker.start()
            time.sleep(0.3)  # let the request reach billing
            print("frontend: asking billing to leave (SIGTERM) while a request to it is in flight")
            billing.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: statuses(system).get("billing") == "left", 10, "billing left")
            asker.join(10)
            print(f"frontend: billing is {statuses(system)['billing']!r} here; "
                  f"the in-flight request: {outcome[0] if outcome else 'still waiting'}")
            ref, reason = wait_until(lambda: watcher.ask(("downs",)), 5, "Down for invoices")[0]
            print(f"frontend: the monitor fired: Down({ref}, {reason!r}); "
                  f"same actor as the invoices ref: {ref == invoices}")
            inventory.wait_for_line("sees billing: leave (left)", 10)
            print("frontend: inventory lists billing as left too")
            try:
                system.whereis("invoices", node="billing")
            except ClusterError as exc:
                print(f"frontend: whereis on billing now raises ClusterError: {exc}")
            print(f"frontend: billing exited with code {billing.proc.wait(10)}")
            ok = bool(outcome) and outcome[0].startswith("NodeDown")
            print(f"done in {time.monotonic() - started:.1f} s: the cluster saw billing leave, "
                  f"failed its in-flight request{'' if ok else ' (NOT)'} and fired the monitor")
            return 0 if ok else 1
        finally:
            for child in children:
                child.reap()


if __name__ == "__main__":
    sys.exit(main())
