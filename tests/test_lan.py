"""A cluster on a real (virtual) LAN: three hosts in network namespaces.

Loopback hides mistakes a LAN does not: a node advertising 127.0.0.1 or
0.0.0.0, a bind that only works on loopback, CURVE or sealed gossip that only
works between processes of one host. Here each node runs in its own network
namespace with its own address on a bridge (10.77.0.1-3), binds 0.0.0.0 on
the same port 7946 as the operations guide does, needs the secret (a
non-loopback bind without one is refused), and gets the same seed list as
every other node, started all at once with --retry-join.

Needs root and `ip netns` (iproute2); skipped otherwise. The fixture deletes
the namespaces, and with them every virtual link, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import reap_nodes, wait_for
from test_cli_e2e import DEAD_WITHIN, FAST, TESTS, _env

pytestmark = pytest.mark.slow

PORT = 7946
HOSTS = 3
PREFIX = "gxlan-"
RECONNECT = 1.0  # seconds between attempts to reach members declared dead


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _remove_stale_namespaces() -> None:
    """Namespaces left by a test run that was killed (its pid is in the name)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            pid = name[len(PREFIX):].split("-")[0]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@dataclass
class Lan:
    """A bridge namespace and ``hosts`` host namespaces, one veth each."""

    hosts: int
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:4]}")
    made: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)  # each host's interface on the bridge

    def ns(self, host: int) -> str:
        return f"{PREFIX}{self.tag}-h{host}"

    @staticmethod
    def address(host: int) -> str:
        return f"10.77.0.{host + 1}"

    def create(self) -> None:
        bridge = f"{PREFIX}{self.tag}-br"
        _ip("netns", "add", bridge)
        self.made.append(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        short = uuid.uuid4().hex[:6]  # interface names: 15 characters at most
        for host in range(self.hosts):
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.made.append(ns)
            outer, inner = f"gx{short}b{host}", f"gx{short}h{host}"
            _ip("link", "add", outer, "netns", bridge, "type", "veth", "peer", "name", inner, "netns", ns)
            _ip("-n", bridge, "link", "set", outer, "master", "br0", "up")
            self.ports.append(outer)
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def cable(self, host: int, plugged: bool) -> None:
        """Unplug (or plug back) ``host``'s cable: its port on the bridge goes down."""
        _ip("-n", f"{PREFIX}{self.tag}-br", "link", "set", self.ports[host], "up" if plugged else "down")

    def destroy(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def run(self, host: int, *args: str) -> subprocess.CompletedProcess[str]:
        """The real CLI, run on ``host``."""
        return subprocess.run(["ip", "netns", "exec", self.ns(host), sys.executable, "-m", "gorilix", *args],
                              capture_output=True, text=True, timeout=60, cwd=TESTS, env=_env())


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    _remove_stale_namespaces()
    net = Lan(HOSTS)
    try:
        net.create()
    except RuntimeError as exc:
        net.destroy()
        pytest.skip(f"network namespaces unavailable here: {exc}")
    try:
        yield net
    finally:
        net.destroy()


@dataclass
class LanNode:
    name: str
    host: int
    proc: subprocess.Popen[bytes]
    out: Path

    @property
    def address(self) -> str:
        return f"{Lan.address(self.host)}:{PORT}"


@pytest.fixture
def lan_nodes(lan: Lan, tmp_path: Path) -> Iterator[tuple[Lan, list[LanNode], Path]]:
    """One `gorilix node` per host, all started at once with the same seed list."""
    secret = tmp_path / "secret"
    secret.write_text(os.urandom(32).hex() + "\n")
    secret.chmod(0o600)
    seeds = [arg for host in range(lan.hosts) for arg in ("--seed", f"{Lan.address(host)}:{PORT}")]
    nodes: list[LanNode] = []
    try:
        for host in range(lan.hosts):
            name = f"lan{host}-{lan.tag}"
            out = tmp_path / f"{name}.out"
            cmd = ["ip", "netns", "exec", lan.ns(host), sys.executable, "-m", "gorilix", "node", "--name", name,
                   "--bind", f"0.0.0.0:{PORT}", "--advertise", f"{Lan.address(host)}:{PORT}",
                   "--secret-file", str(secret), "--retry-join", "--workers", "1", "--app", "cli_app:lan",
                   "--reconnect-interval", str(RECONNECT), *seeds, *FAST]
            with out.open("wb") as sink:
                proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=TESTS, env=_env())
            nodes.append(LanNode(name, host, proc, out))
        for node in nodes:
            wait_for(lambda node=node: "ready:" in node.out.read_text() or node.proc.poll() is not None, 30,
                     f"{node.name} ready")
            assert node.proc.poll() is None, node.out.read_text()
        yield lan, nodes, secret
    finally:
        reap_nodes([node.proc for node in nodes])


def _members(lan: Lan, host: int, node: str, secret: Path) -> dict[str, Any]:
    done = lan.run(host, "members", "--node", node, "--secret-file", str(secret), "--json",
                   "--connect-timeout", "2")
    if done.returncode != 0:
        return {}
    return {row["name"]: row for row in json.loads(done.stdout)}


def lan_status(lan: Lan, node: LanNode, secret: Path) -> dict[str, Any]:
    done = lan.run(node.host, "status", "--node", node.address, "--secret-file", str(secret), "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _ask(lan: Lan, host: int, node: str, secret: Path, actor: str, message: Any) -> Any:
    done = lan.run(host, "ask", "--node", node, "--secret-file", str(secret), actor, json.dumps(message))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _converged(lan: Lan, nodes: list[LanNode], secret: Path, expected: dict[str, str]) -> None:
    for node in nodes:
        def seen(node: LanNode = node) -> bool:
            rows = _members(lan, node.host, node.address, secret)
            return {name: row["status"] for name, row in rows.items() if row["status"] != "left"} == expected
        wait_for(seen, DEAD_WITHIN + 10, f"{node.name} sees {expected}")


def test_a_healed_partition_merges_back(lan_nodes: tuple[Lan, list[LanNode], Path]) -> None:
    """Unplug one host until both sides declare each other dead; plug it back: one cluster again."""
    lan, nodes, secret = lan_nodes
    everyone = {node.name: "alive" for node in nodes}
    _converged(lan, nodes, secret, everyone)
    lan.cable(2, plugged=False)
    _converged(lan, nodes[:2], secret, {**everyone, nodes[2].name: "dead"})
    _converged(lan, nodes[2:], secret, {**dict.fromkeys(everyone, "dead"), nodes[2].name: "alive"})
    lan.cable(2, plugged=True)
    _converged(lan, nodes, secret, everyone)
    # Every link is back, CURVE handshakes done, nothing left waiting.
    for node in nodes:
        wait_for(lambda node=node: [(link["ready"], link["pending"]) for link in lan_status(lan, node, secret)["links"]]
                 == [(True, 0), (True, 0)], 10, f"{node.name}'s links ready")
    # And the actors talk across the healed link again.
    assert _ask(lan, 0, nodes[0].address, secret, "probe", "go") == "published"
    wait_for(lambda: nodes[0].name in _ask(lan, 2, nodes[2].address, secret, "probe", "heard"), 20,
             "the healed host heard node 0 and asked it back")


def test_three_hosts_boot_together_talk_and_fail_over(lan_nodes: tuple[Lan, list[LanNode], Path]) -> None:
    lan, nodes, secret = lan_nodes
    names = {node.name for node in nodes}

    # Every node sees every other alive at its advertised LAN address (not 127.0.0.1, not 0.0.0.0).
    for node in nodes:
        def converged(node: LanNode = node) -> bool:
            rows = _members(lan, node.host, node.address, secret)
            return set(rows) == names and all(r["status"] == "alive" for r in rows.values())
        wait_for(converged, 30, f"three members alive at {node.name}")
    rows = _members(lan, 0, nodes[0].address, secret)
    assert {(r["address"], r["port"]) for r in rows.values()} == {(Lan.address(h), PORT) for h in range(HOSTS)}

    # A topic crosses to every host, and each probe asks the publisher back: node-to-node TCP, CURVE.
    assert _ask(lan, 0, nodes[0].address, secret, "probe", "go") == "published"
    for node in nodes[1:]:
        wait_for(lambda node=node: _ask(lan, node.host, node.address, secret, "probe", "heard") == [nodes[0].name],
                 20, f"{node.name} heard node 0 and asked it back")

    # The CLI on one host reaches a node on another; without the secret it gets nothing.
    assert _ask(lan, 0, nodes[2].address, secret, "echo", "hi")["node"] == nodes[2].name
    refused = lan.run(0, "members", "--node", nodes[1].address, "--connect-timeout", "1")
    assert refused.returncode == 2 and "secret" in refused.stderr

    # SIGKILL one host's node: the others mark it dead; SIGTERM another: it leaves and exits 0.
    nodes[2].proc.send_signal(signal.SIGKILL)
    nodes[2].proc.wait(10)
    for node in nodes[:2]:
        wait_for(lambda node=node: _members(lan, node.host, node.address, secret).get(nodes[2].name, {})
                 .get("status") == "dead", DEAD_WITHIN, f"{node.name} marks the killed node dead")
    nodes[1].proc.send_signal(signal.SIGTERM)
    assert nodes[1].proc.wait(20) == 0, nodes[1].out.read_text()
    wait_for(lambda: _members(lan, 0, nodes[0].address, secret).get(nodes[1].name, {}).get("status") == "left",
             10, "node 1 seen as left")
