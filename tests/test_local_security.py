"""Secure by default on one machine: without the user's secret, nothing on the machine gets in.

A node started without a secret uses the per-user secret (Erlang's cookie):
CURVE on its TCP port, sealed gossip on its UDP port. Its ipc socket lives
in the user's private runtime directory. So another process without the
secret, or another user, can neither stop it, nor kill a worker, nor reload,
nor plant a member; the user's own tools find the secret and just work.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import wait_for

from gorilix import ActorSystem
from gorilix.cluster import wire
from gorilix.launcher import NodeProcess, free_port
from gorilix.transport.errors import AskTimeout
from gorilix.transport.routing import client_ids
from gorilix.workers.client import ClientPort

ECHO = "gorilix.bench_actors:Echo"
NOBODY = 65534  # another user of the machine (the suite runs as root, which may become anyone)
_ids = client_ids()


def raw_control(endpoint: str, op: str, *args: Any, keys_secret: bytes | None = None, timeout: float = 3.0) -> Any:
    """``op`` sent to a node's control endpoint by a client socket of our own, with no secret (or another one)."""
    from gorilix.cluster.security import CLIENT_NAME, SERVER_NAME, ClusterKeys, configure_client

    configure = None
    if keys_secret is not None:
        keys = ClusterKeys(keys_secret)
        configure = lambda sock: configure_client(sock, keys, CLIENT_NAME, SERVER_NAME)  # noqa: E731
    zctx: zmq.Context[Any] = zmq.Context()
    port = ClientPort(zctx, endpoint, "", next(_ids), configure)
    try:
        return port.control(op, *args, timeout=timeout)
    finally:
        port.close()
        zctx.destroy(linger=0)


def assert_untouched(node: NodeProcess, pids: list[int]) -> None:
    """The node runs, with the same workers (none killed), and answers its user."""
    assert node.proc.poll() is None, node.errors
    with ActorSystem.connect(node.address) as system:  # (the user's own client: the per-user secret)
        assert [w.pid for w in system.workers()] == pids
        assert system.spawn(ECHO).ask("still mine") == "still mine"


def worker_pids(node: NodeProcess) -> list[int]:
    with ActorSystem.connect(node.address) as system:
        return [w.pid for w in system.workers()]


# -- the TCP port ---------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, os.urandom(32)], ids=["no secret", "another secret"])
def test_a_process_without_the_secret_cannot_kill_a_worker_reload_or_stop_a_node(
        gorilix_node: Callable[..., NodeProcess], secret: bytes | None) -> None:
    node = gorilix_node()
    pids = worker_pids(node)
    endpoint = f"tcp://{node.address}"
    for op, args in (("kill_worker", (0, 9)), ("reload", ("gorilix.bench_actors",)), ("stop", ())):
        with pytest.raises(AskTimeout):  # the handshake fails: the request never reaches the node
            raw_control(endpoint, op, *args, keys_secret=secret, timeout=2.0)
    assert_untouched(node, pids)


def test_the_users_own_tools_find_the_per_user_secret_and_are_told_what_is_wrong(
        gorilix_node: Callable[..., NodeProcess]) -> None:
    from gorilix import AccessDenied
    from gorilix.cluster.keyfile import default_secret_path

    node = gorilix_node()
    assert f"CURVE + sealed gossip (the per-user secret {default_secret_path()})" in node.wait_ready()
    with pytest.raises(AccessDenied, match="has a secret, and insecure=True connects without one") as info:
        ActorSystem.connect(node.address, insecure=True, timeout=60.0)  # refused at once, not timed out
    assert info.value.cause == "node_has_secret" and str(default_secret_path()) in str(info.value)
    with ActorSystem.connect(node.address) as system:
        assert system.spawn(ECHO).ask("found it") == "found it"


def test_without_a_per_user_secret_connect_says_where_it_looked(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from gorilix import AccessDenied
    from gorilix.transport.runtime import RUNTIME_ENV

    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "empty"))
    with pytest.raises(AccessDenied, match="no per-user secret at .*empty/secret") as info:
        ActorSystem.connect("127.0.0.1:7946", timeout=60.0)
    assert info.value.cause == "missing"
    assert "secret_file=" in str(info.value) and "insecure=True" in str(info.value)
    assert "--secret-file" in info.value.advice(cli=True) and "--insecure" in info.value.advice(cli=True)


def test_an_insecure_node_is_loud_and_open(gorilix_node: Callable[..., NodeProcess]) -> None:
    from gorilix import AccessDenied

    node = gorilix_node("--insecure")
    assert "NO SECRET (--insecure)" in node.wait_ready()
    wait_for(lambda: any("warning: --insecure" in line for line in node.errors), 10, "the warning line")
    with pytest.raises(AccessDenied, match="runs without a secret .*connect with insecure=True"):
        ActorSystem.connect(node.address, timeout=60.0)  # (our per-user secret is of no use there)
    with ActorSystem.connect(node.address, insecure=True) as system:
        assert system.spawn(ECHO).ask("open") == "open"


def test_the_cli_uses_the_per_user_secret_and_says_what_to_do_without_it(
        gorilix_node: Callable[..., NodeProcess]) -> None:
    node = gorilix_node()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GORILIX_") or k == "GORILIX_RUNTIME_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])

    def gx(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gorilix", *args, "--node", node.address], env=env,
                              capture_output=True, text=True, timeout=60)

    pids = worker_pids(node)
    done = gx("status", "--json")
    assert done.returncode == 0, done.stderr
    for command in (["kill-worker", "0"], ["reload", "gorilix.bench_actors"]):
        done = gx(*command, "--insecure", "--connect-timeout", "60")
        assert done.returncode == 2, done
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("Error: the node at") and "has a secret, and --insecure connects without one" in line
    assert_untouched(node, pids)


# -- another user of the machine ----------------------------------------------------------


def as_another_user(fn: Callable[[], str]) -> str:
    """``fn()`` in a forked child that has become user nobody; returns what it returned (or its error)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = fn()
        except BaseException as exc:
            outcome = f"raised {type(exc).__name__}: {exc}"
        os.write(write, outcome.encode()[:4000])
        os._exit(0)
    os.close(write)
    try:
        chunks = []
        while chunk := os.read(read, 4096):
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def attempt(endpoint: str, op: str, *args: Any) -> Callable[[], str]:
    def run() -> str:
        try:
            raw_control(endpoint, op, *args, timeout=2.0)
        except AskTimeout:
            return "no answer"
        return "done"
    return run


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_another_user_can_neither_read_the_secret_nor_control_a_node(
        gorilix_node: Callable[..., NodeProcess]) -> None:
    pwd.getpwuid(NOBODY)
    node = gorilix_node()
    pids = worker_pids(node)
    for op, args in (("kill_worker", (0, 9)), ("reload", ("gorilix.bench_actors",)), ("stop", ())):
        assert as_another_user(attempt(f"tcp://{node.address}", op, *args)) == "no answer"
    assert_untouched(node, pids)

    from gorilix.cluster.keyfile import default_secret_path

    path = default_secret_path()

    def read_secret() -> str:
        try:
            path.read_bytes()
        except PermissionError:
            return "refused"
        return "read it"

    assert as_another_user(read_secret) == "refused"


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_another_user_cannot_reach_a_programs_node_over_ipc_whatever_the_umask(
        make_system: Callable[..., ActorSystem]) -> None:
    old = os.umask(0)  # a careless umask: the node's socket file would be open to all
    try:
        system = make_system(1)
    finally:
        os.umask(old)
    endpoint = system._node.endpoint
    pids = [w.pid for w in system.workers()]
    for op, args in (("kill_worker", (0, 9)), ("reload", ("gorilix.bench_actors",)), ("stop", ())):
        assert as_another_user(attempt(endpoint, op, *args)) == "no answer"
    assert system.running and [w.pid for w in system.workers()] == pids
    folder = os.path.dirname(endpoint.removeprefix("ipc://"))  # (the user's runtime directory)
    info = os.stat(folder)
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


# -- the gossip port ----------------------------------------------------------------------


def test_unsealed_gossip_plants_no_member(gorilix_node: Callable[..., NodeProcess]) -> None:
    node = gorilix_node()
    fake_port = free_port()
    meta = {"router": f"tcp://127.0.0.1:{fake_port}", "workers": 1, "load": 0.0, "curve": None}
    alive = wire.array_header(2) + wire.VERSION_BYTES + msgpack.packb(
        [wire.ALIVE, "planted", 1, "127.0.0.1", fake_port, meta])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(5):
            udp.sendto(alive, ("127.0.0.1", node.port))

    def dropped() -> int:
        with ActorSystem.connect(node.address) as system:
            return int(system.stats()["gossip"]["dropped"])

    wait_for(lambda: dropped() >= 5, 10, "the unsealed datagrams dropped and counted")
    with ActorSystem.connect(node.address) as system:
        assert {m.name for m in system.get_cluster().members()} == {node.name}


# -- the runtime directory and the per-user secret ------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of this test's own (not made yet)."""
    from gorilix.transport.runtime import RUNTIME_ENV

    folder = tmp_path / "runtime"
    monkeypatch.setenv(RUNTIME_ENV, str(folder))
    return folder


def test_the_per_user_secret_is_made_once_private_and_in_the_shared_format(runtime: Path) -> None:
    from gorilix.cluster.keyfile import default_secret, read_secret_file

    assert default_secret(create=False) is None and stat.S_IMODE(runtime.stat().st_mode) == 0o700
    secret = default_secret(create=True)
    path = runtime / "secret"
    assert secret is not None and len(secret) == 44 and path.read_bytes() == secret + b"\n"  # base64 of 32 bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret_file(path) == secret  # what --secret-file and secret_file= read
    assert default_secret(create=True) == secret  # made once
    assert [p.name for p in runtime.iterdir()] == ["secret"]  # (no temporary file left)


def test_nodes_that_start_together_share_one_secret(runtime: Path) -> None:
    code = "from gorilix.cluster.keyfile import default_secret; print(default_secret(create=True).decode())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(6)]
    outputs = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(outputs) == 1 and len(outputs.pop()) == 44


@pytest.mark.parametrize("problem", ["open to others", "someone else's", "a symbolic link"])
def test_a_runtime_directory_that_is_not_private_is_refused(runtime: Path, tmp_path: Path, problem: str) -> None:
    from gorilix.cluster.keyfile import default_secret
    from gorilix.transport.errors import ClusterError, GorilixError
    from gorilix.transport.runtime import RuntimeDirError, runtime_dir

    if problem == "open to others":
        runtime.mkdir(0o755)
        runtime.chmod(0o755)
        expected = "mode 0755 lets other users in; chmod 700"
    elif problem == "someone else's":
        if os.geteuid() != 0:
            pytest.skip("giving a directory away needs root")
        runtime.mkdir(0o700)
        os.chown(runtime, NOBODY, NOBODY)
        expected = f"belongs to uid {NOBODY}"
    else:
        (tmp_path / "elsewhere").mkdir(0o700)
        runtime.symlink_to(tmp_path / "elsewhere")
        expected = "it is a symbolic link"
    with pytest.raises(RuntimeDirError, match=expected):
        runtime_dir()
    with pytest.raises(ClusterError, match=expected):
        default_secret(create=True)
    with pytest.raises(GorilixError, match=expected):
        ActorSystem("refused", workers=1)  # (its ipc socket would go there)


def test_a_per_user_secret_others_can_read_is_refused(runtime: Path) -> None:
    from gorilix.cluster.keyfile import default_secret
    from gorilix.transport.errors import ClusterError

    secret = default_secret(create=True)
    (runtime / "secret").chmod(0o644)
    with pytest.raises(ClusterError, match="mode 0644 lets other users in; chmod 600"):
        default_secret(create=False)
    (runtime / "secret").chmod(0o600)
    assert default_secret(create=False) == secret
