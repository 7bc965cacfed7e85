"""ActorSystem.connect: the same API against a node that runs already, and detaching from it."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import process_running, wait_for

from gorilix import (
    AccessDenied,
    ActorSystem,
    ClusterError,
    GorilixError,
    InvalidArgument,
    NodeUnreachable,
    NotRunning,
)
from gorilix.cluster import bridge
from gorilix.launcher import NodeProcess, free_port
from gorilix.remote import RemoteNode
from gorilix.system import ClusterConfig

ECHO = "gorilix.bench_actors:Echo"  # importable by any node's workers
SLEEPER = "gorilix.bench_actors:CpuWorker"


def test_connect_gives_the_same_api_and_closing_detaches(gorilix_node: Callable[..., NodeProcess]) -> None:
    node = gorilix_node()
    with ActorSystem.connect(node.address) as system:
        assert system.name == node.name and system.address == node.address and system.running
        assert len(system.workers()) == 2 and all(w.alive for w in system.workers())
        echo = system.spawn(ECHO, name="echo")
        assert echo.ask("hi") == "hi"
        assert system.whereis("echo") == echo
        assert asyncio.run(echo.ask_async("async")) == "async"
        assert {m.name for m in system.get_cluster().members()} == {node.name}
        [pid] = [w.pid for w in system.workers() if w.id == 1]
        assert system.kill_worker(1) == pid
        wait_for(lambda: system.workers()[1].alive and system.workers()[1].pid != pid, 10, "worker 1 back")
    assert not system.running
    with pytest.raises(NotRunning):
        echo.ask("after")  # no system of this program reaches that node any more
    assert node.proc.poll() is None  # detached: the node goes on, and so does its actor
    with ActorSystem.connect(node.address) as again:
        assert again.whereis("echo").ask("still here") == "still here"
        again.stop()  # stop() of an attached system detaches too
    assert node.proc.poll() is None


def test_several_programs_parts_attach_to_one_node_at_once(gorilix_node: Callable[..., NodeProcess]) -> None:
    node = gorilix_node()
    first = ActorSystem.connect(node.address)
    second = RemoteNode(node.address)  # the CLI's client: the same code
    try:
        ref = first.spawn(ECHO)
        assert second.ask_ref(ref, 1) == 1 and ref.ask(2) == 2
        second.close()
        assert ref.ask(3) == 3  # the other attachment is untouched
    finally:
        second.close()
        first.close()



def test_a_program_may_attach_to_the_node_it_started(make_system: Callable[..., ActorSystem]) -> None:
    owner = make_system(1)
    owner.set_cluster_provider(bridge.ClusterProvider())
    cluster = owner.enable_clustering(ClusterConfig(node_name=owner.name, bind_port=free_port()))
    me = cluster.local_member()
    with ActorSystem.connect(f"127.0.0.1:{me.port}") as tool:  # as the CLI, through the TCP port
        assert tool.name == owner.name and tool.stats()["node"] == owner.name
        echo = tool.spawn(ECHO)
        assert echo.ask("via the owner") == "via the owner"  # refs of the node go through the system that owns it
    assert owner.running and echo.ask("still") == "still"
    with pytest.raises(GorilixError, match="already running"):
        ActorSystem(owner.name, workers=1)


def test_a_node_with_a_secret_needs_it(gorilix_node: Callable[..., NodeProcess], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32).hex().encode() + b"\n")
    secret.chmod(0o600)
    node = gorilix_node("--secret-file", str(secret))
    with ActorSystem.connect(node.address, secret_file=secret) as system:
        ref = system.spawn(ECHO)
        assert ref.ask("sealed") == "sealed"
        assert asyncio.run(ref.ask_async("curve too")) == "curve too"  # the asyncio socket gets the keys too
    # Refused at the handshake, and said so at once: a timeout would be NodeUnreachable, not AccessDenied.
    with pytest.raises(AccessDenied, match="refused the handshake: its secret is not the per-user secret") as info:
        ActorSystem.connect(node.address, timeout=60.0)  # (no secret given: the per-user one, not the node's)
    assert info.value.cause == "refused" and isinstance(info.value, NodeUnreachable)
    with pytest.raises(AccessDenied, match="its secret is not the secret= given"):
        ActorSystem.connect(node.address, secret=os.urandom(32), timeout=60.0)
    with pytest.raises(AccessDenied, match="has a secret, and insecure=True connects without one"):
        ActorSystem.connect(node.address, insecure=True, timeout=60.0)


def test_a_program_and_the_cli_share_one_secret_file(make_system: Callable[..., ActorSystem], tmp_path: Path) -> None:
    """`gorilix secret new PATH` once; then ClusterConfig(secret_file=PATH), --secret-file PATH and connect agree."""
    from gorilix.cli import main

    path = tmp_path / "secret"
    assert main(["secret", "new", str(path)], standalone_mode=False) == 0
    owner = make_system(1)
    owner.set_cluster_provider(bridge.ClusterProvider())
    config = ClusterConfig(node_name=owner.name, bind_port=free_port(), secret_file=path)
    assert config.secret_key == path.read_bytes().rstrip(b"\n") and "secret_file" not in config.to_wire()
    owner.enable_clustering(config)
    address = f"127.0.0.1:{config.bind_port}"
    with RemoteNode(address, secret_file=str(path)) as remote:  # the CLI's client, as `--secret-file PATH`
        assert remote.status()["node"] == owner.name
    with pytest.raises(AccessDenied, match="refused the handshake"):
        ActorSystem.connect(address, timeout=60.0)  # (the per-user secret is another one)


def test_a_cluster_config_takes_a_secret_file_or_a_key(tmp_path: Path) -> None:
    from dataclasses import replace

    path = tmp_path / "secret"
    path.write_bytes(b"k" * 32 + b"\n")
    config = ClusterConfig(node_name="n", secret_file=str(path))
    assert config.secret_key == b"k" * 32 and config.secret_file == str(path)
    assert replace(config, seeds=["127.0.0.1:1"]).secret_key == b"k" * 32  # (replace passes both: they agree)
    with pytest.raises(ClusterError, match="not both"):
        ClusterConfig(node_name="n", secret_file=path, secret_key=b"x" * 32)
    with pytest.raises(ClusterError, match="cannot read secret file"):
        ClusterConfig(node_name="n", secret_file=tmp_path / "missing")
    with pytest.raises(ClusterError, match="a dict of ClusterConfig fields"):
        ClusterConfig.from_wire({"node_name": "n", "secret_file": str(path)})  # (a node is sent no path)


def test_bad_arguments_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    for address in ("", None, 7946):
        with pytest.raises(InvalidArgument, match="node address"):
            ActorSystem.connect(address)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not both"):
        ActorSystem.connect("127.0.0.1:1", secret_file="x", secret=b"y" * 16)
    short = tmp_path / "short"
    short.write_bytes(b"tiny")
    with pytest.raises(GorilixError, match="needs at least 16"):
        ActorSystem.connect("127.0.0.1:1", secret_file=short)
    with pytest.raises(NodeUnreachable, match="no answer from a node at 127.0.0.1:"):
        ActorSystem.connect(f"127.0.0.1:{free_port()}", timeout=0.5)


def test_an_attached_program_learns_at_once_that_its_node_died(gorilix_node: Callable[..., NodeProcess]) -> None:
    node = gorilix_node()
    system = ActorSystem.connect(node.address)
    try:
        hog = system.spawn(SLEEPER)
        hog.tell(10**12)  # keeps its worker busy: an ask to it waits for an answer that never comes
        outcome: list[Any] = []

        def wait_long() -> None:
            started = time.monotonic()
            try:
                hog.ask("never", timeout=60.0)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append((exc, time.monotonic() - started))

        waiter = threading.Thread(target=wait_long, daemon=True)
        waiter.start()
        time.sleep(0.3)
        os.kill(node.pid, signal.SIGKILL)  # the `gorilix node` command: its node process follows within 1 s
        waiter.join(15.0)
        assert outcome, "the ask still waits"
        error, took = outcome[0]
        assert isinstance(error, NotRunning) and "stopped answering" in str(error), error
        assert "connect again" in str(error)
        assert took < 10.0
        assert not system.running
        with pytest.raises(NotRunning):
            system.workers()
    finally:
        system.close()
    wait_for(lambda: not process_running(node.pid), 5, "the node gone")


def test_refs_of_an_attached_node_go_to_it_even_beside_a_clustered_node_of_ours(
        make_system: Callable[..., ActorSystem], gorilix_node: Callable[..., NodeProcess]) -> None:
    # (make_system first: it is torn down last, once the gorilix node is reaped, and checks none is left)
    # With a clustered node of its own, a program sent refs of every other node through it, also
    # those of a node outside its cluster that it had attached to: "node not found".
    owner = make_system(1)
    owner.set_cluster_provider(bridge.ClusterProvider())
    owner.enable_clustering(ClusterConfig(node_name=owner.name, bind_port=free_port()))
    outside = gorilix_node()
    with ActorSystem.connect(outside.address) as attached:
        ref = attached.spawn(ECHO)
        assert ref.ask("direct") == "direct"
        with pytest.raises(ClusterError, match="leaves the cluster from its own program"):
            attached.leave_cluster()  # it would close the port this program reaches the node by
        assert ref.ask("still attached") == "still attached"


def test_two_nodes_of_one_name_cannot_share_a_program(gorilix_node: Callable[..., NodeProcess]) -> None:
    # Refs name only their node: with two attached nodes of one name, refs of one went to the other.
    first = gorilix_node()
    twin = NodeProcess(first.name, free_port(), workers=1)
    try:
        twin.wait_ready(30.0)
        with ActorSystem.connect(first.address):
            with pytest.raises(GorilixError, match="another node named"):
                ActorSystem.connect(twin.address)
    finally:
        twin.reap()
