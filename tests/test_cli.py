"""The `gorilix` command with click's CliRunner: options, env vars, output, every bad-input path."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import gorilix.launcher
import gorilix.remote
from gorilix.cli import main
from gorilix.cluster.config import OPTION_HELP, ClusterConfig
from gorilix.launcher import (
    LaunchError,
    NodeOptions,
    build_config,
    free_port,
    load_app,
    read_secret,
)
from gorilix.remote import NodeUnreachable
from gorilix.workers.ref import ActorRef

CLUSTER_OPTIONS = [f for f in dataclasses.fields(ClusterConfig) if OPTION_HELP in f.metadata]
COMMANDS = ["node", "members", "status", "kill-worker", "chaos", "send", "ask", "reload", "secret", "demo", "bench"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("GORILIX_NODE", "GORILIX_SECRET_FILE", "GORILIX_NAME", "GORILIX_BIND", "GORILIX_SEEDS",
                 "GORILIX_SEED", "GORILIX_WORKERS", "GORILIX_APP", "GORILIX_INSECURE", "GORILIX_LOG_LEVEL",
                 "GORILIX_RETRY_JOIN"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def one_line_error(result: Result, code: int = 2) -> str:
    """The run failed with ``code`` and exactly one line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    path.chmod(0o600)
    return path


# -- help and the command list --------------------------------------------------------


def test_every_command_is_listed_and_has_help(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
        sub = runner.invoke(main, [command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Usage: main " in sub.output or "Usage: " in sub.output


def test_client_help_shows_defaults_and_env_vars(runner: CliRunner) -> None:
    out = runner.invoke(main, ["members", "--help"], terminal_width=200).output
    assert "default: 127.0.0.1:7946" in out
    assert "GORILIX_NODE" in out and "GORILIX_SECRET_FILE" in out
    out = runner.invoke(main, ["node", "--help"], terminal_width=200).output
    for var in ("GORILIX_NAME", "GORILIX_BIND", "GORILIX_ADVERTISE", "GORILIX_SEEDS", "GORILIX_WORKERS",
                "GORILIX_APP", "GORILIX_SECRET_FILE", "GORILIX_INSECURE", "GORILIX_LOG_LEVEL", "GORILIX_RETRY_JOIN"):
        assert var in out, var
    for f in CLUSTER_OPTIONS:  # ClusterConfig's fields, with their defaults
        assert f"--{f.name.replace('_', '-')}" in out and f"GORILIX_{f.name.upper()}" in out, f.name
        assert f"default: {f.default}" in out or f.default is None, f.name
    assert "default: half of --probe-interval" in " ".join(out.split())


def test_node_cluster_options_are_cluster_config_fields(
    runner: CliRunner, captured: list[tuple[NodeOptions, bool]]
) -> None:
    # The names stay stable (scripts and docs use them); each is a ClusterConfig field, its default the field's.
    assert [f.name for f in CLUSTER_OPTIONS] == [
        "gossip_nodes", "push_interval", "pull_interval", "probe_interval", "probe_timeout", "indirect_checks",
        "suspicion_mult", "retransmit_mult", "join_timeout", "leave_timeout", "reconnect_interval"]
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    for f in CLUSTER_OPTIONS:
        assert f"`--{f.name.replace('_', '-')}`" in docs and f"`GORILIX_{f.name.upper()}`" in docs, f.name
    result = runner.invoke(main, ["node", "--probe-interval", "0.4"], env={
        "GORILIX_GOSSIP_NODES": "5", "GORILIX_RETRANSMIT_MULT": "6", "GORILIX_INDIRECT_CHECKS": "2"})
    assert result.exit_code == 0, result.output
    opts, _ = captured[0]
    config = build_config(opts)
    assert (config.gossip_nodes, config.retransmit_mult, config.indirect_checks) == (5, 6, 2)
    assert (config.probe_interval, config.probe_timeout) == (0.4, 0.2)  # as ClusterConfig(probe_interval=0.4)
    assert config.push_interval == ClusterConfig.push_interval == 0.2  # the rest: ClusterConfig's defaults


# -- gorilix node: options and env vars (run_node replaced) -----------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[NodeOptions, bool]]:
    calls: list[tuple[NodeOptions, bool]] = []

    def fake_run_node(opts: NodeOptions, say: Any = print, watch_stdin: bool = False, warn: Any = None) -> int:
        calls.append((opts, watch_stdin))
        return 0

    monkeypatch.setattr(gorilix.launcher, "run_node", fake_run_node)
    return calls


def test_node_defaults(runner: CliRunner, captured: list[tuple[NodeOptions, bool]]) -> None:
    result = runner.invoke(main, ["node"])
    assert result.exit_code == 0, result.output
    opts, watch = captured[0]
    assert opts.name is None and opts.node_name == f"{socket.gethostname()}-7946"  # unique on this host
    assert opts.bind == "127.0.0.1:7946"
    assert opts.workers is None and opts.seeds == () and opts.secret is None
    assert opts.insecure is False and opts.log_level == "WARNING" and watch is False


def test_node_options(runner: CliRunner, captured: list[tuple[NodeOptions, bool]], secret_file: Path) -> None:
    result = runner.invoke(main, [
        "node", "--name", "n1", "--bind", "0.0.0.0:7000", "--advertise", "10.0.0.5:7000",
        "--seed", "10.0.0.6:7000", "--seed", "10.0.0.7", "--workers", "3", "--app", "myapp:setup",
        "--secret-file", str(secret_file), "--log-level", "info", "--probe-interval", "0.2",
        "--suspicion-mult", "3", "--push-interval", "0.05",
    ])
    assert result.exit_code == 0, result.output
    opts, _ = captured[0]
    assert (opts.name, opts.bind, opts.advertise) == ("n1", "0.0.0.0:7000", "10.0.0.5:7000")
    assert opts.seeds == ("10.0.0.6:7000", "10.0.0.7")
    assert opts.workers == 3 and opts.app == "myapp:setup"
    assert opts.secret == b"0123456789abcdef0123456789abcdef"  # trailing newline stripped
    assert opts.log_level.upper() == "INFO"
    assert (opts.cluster["probe_interval"], opts.cluster["suspicion_mult"], opts.cluster["push_interval"]) == (
        0.2, 3, 0.05)


def test_node_reads_every_option_from_the_environment(
    runner: CliRunner, captured: list[tuple[NodeOptions, bool]], secret_file: Path
) -> None:
    env = {
        "GORILIX_NAME": "envnode", "GORILIX_BIND": "127.0.0.1:7100", "GORILIX_ADVERTISE": "127.0.0.1:7100",
        "GORILIX_SEEDS": "127.0.0.1:7101 127.0.0.1:7102", "GORILIX_WORKERS": "2", "GORILIX_APP": "m:f",
        "GORILIX_SECRET_FILE": str(secret_file), "GORILIX_INSECURE": "1", "GORILIX_LOG_LEVEL": "DEBUG",
        "GORILIX_RETRY_JOIN": "1",
    }
    result = runner.invoke(main, ["node"], env=env)
    assert result.exit_code == 0, result.output
    opts, _ = captured[0]
    assert opts.name == "envnode" and opts.bind == "127.0.0.1:7100" and opts.advertise == "127.0.0.1:7100"
    assert opts.seeds == ("127.0.0.1:7101", "127.0.0.1:7102")
    assert opts.workers == 2 and opts.app == "m:f" and opts.insecure is True and opts.retry_join is True
    assert opts.secret is not None and opts.log_level.upper() == "DEBUG"
    # the command line wins over the environment
    runner.invoke(main, ["node", "--name", "cli"], env=env)
    assert captured[1][0].name == "cli"


def test_node_warns_about_a_readable_secret_file(
    runner: CliRunner, captured: list[tuple[NodeOptions, bool]], secret_file: Path
) -> None:
    secret_file.chmod(0o644)
    result = runner.invoke(main, ["node", "--secret-file", str(secret_file)])
    assert result.exit_code == 0
    assert "every user can read" in result.stderr
    secret_file.chmod(0o640)  # readable by the service's group: fine
    assert runner.invoke(main, ["node", "--secret-file", str(secret_file)]).stderr == ""


# -- gorilix node: bad input is one line and exit 2, nothing started --------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--bind", "127.0.0.1:99999"], "port 99999 is out of range"),
    (["--bind", "127.0.0.1:http"], "port 'http' is not a number"),
    (["--bind", "no-such-host.invalid:7946"], "bad --bind 'no-such-host.invalid:7946': cannot resolve"),
    (["--bind", "[::1:7946"], "missing ']'"),
    (["--bind", "0.0.0.0:7946"], "refusing to bind 0.0.0.0 without a secret: anyone on the network could join "
                                 "and run code here; give --secret-file (make one with `gorilix secret new PATH`), "
                                 "or --insecure"),
    (["--seed", "127.0.0.1:x"], "bad --seed"),
    (["--advertise", "127.0.0.1:70000"], "bad --advertise"),
    (["--advertise", "0.0.0.0:7946"], "bad --advertise '0.0.0.0:7946': 0.0.0.0 means every interface, an address "
                                      "no other node can reach; give the address the others reach"),
    (["--advertise", "0.0.0.0"], "bad --advertise '0.0.0.0': 0.0.0.0 means every interface"),
    (["--name", ""], "bad --name '': a node needs a name"),
    (["--name", " "], "bad --name ' '"),
    (["--workers", "0"], "--workers"),
    (["--max-worker-memory", "lots"], "--max-worker-memory"),
    (["--max-worker-memory", "0"], "'0' must be a positive number of bytes"),
    (["--max-queued", "lots"], "Invalid value for '--max-queued': 'lots' must be a positive number of bytes or a "
                               "size such as \"2GiB\" or \"500MB\" (or none for no limit)"),
    (["--max-worker-memory", "lots"], "(or none for no limit)"),
    (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range"),
    (["--probe-interval", "0.4", "--probe-timeout", "0.5"], "--probe-timeout (0.5 s) must be shorter than "
                                                           "--probe-interval (0.4 s)"),
    (["--gossip-nodes", "0"], "Invalid value for '--gossip-nodes': 0 is not in the range x>=1"),  # (no variable: it was a flag)
    (["--bind", "0.0.0.0:7946", "--insecure"], "--bind 0.0.0.0:7946 needs --advertise HOST:PORT, the address other "
                                               "nodes and tools reach this one at"),
    (["--max-queued", "0"], "--max-queued"),
    (["--log-level", "LOUD"], "--log-level"),
    (["--app", "no_colon_here"], "expected MODULE:FUNCTION"),
    (["--app", "no_such_module_xyz:setup"], "cannot import app module 'no_such_module_xyz'"),
    (["--app", "cli_app:missing"], "app module 'cli_app' has no attribute 'missing'"),
    (["--app", "cli_app:Sink.count"], "has no attribute"),
    (["--no-such-option"], "No such option"),
])
def test_node_bad_input(runner: CliRunner, args: list[str], expected: str) -> None:
    line = one_line_error(runner.invoke(main, ["node", "--bind", f"127.0.0.1:{free_port()}", *args]))
    assert expected in line


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["ask", "greeter", '"hi"'], {"GORILIX_ASK_TIMEOUT": "abc"},
     "Invalid value for GORILIX_ASK_TIMEOUT (--timeout): 'abc' is not a valid float"),
    (["members"], {"GORILIX_NODE": "abc:def"}, "bad GORILIX_NODE (--node) 'abc:def': port 'def' is not a number"),
    (["members"], {"GORILIX_MEMBERS_JSON": "maybe"}, "Invalid value for GORILIX_MEMBERS_JSON (--json): 'maybe'"),
    (["members", "--secret-file", "s"], {"GORILIX_INSECURE": "1"},
     "give --secret-file or GORILIX_INSECURE (--insecure), not both"),
    (["node"], {"GORILIX_WORKERS": "0"}, "Invalid value for GORILIX_WORKERS (--workers): 0 is not in the range"),
    (["node"], {"GORILIX_MAX_QUEUED": "lots"}, "Invalid value for GORILIX_MAX_QUEUED (--max-queued): 'lots' must be"),
    (["node"], {"GORILIX_SEEDS": "127.0.0.1:x"}, "bad GORILIX_SEEDS (--seed) '127.0.0.1:x'"),
    (["node"], {"GORILIX_SEED": "127.0.0.1:x"}, "bad GORILIX_SEED (--seed) '127.0.0.1:x'"),
    (["node"], {"GORILIX_ADVERTISE": "0.0.0.0:7946"}, "bad GORILIX_ADVERTISE (--advertise) '0.0.0.0:7946'"),
])
def test_a_bad_value_from_the_environment_is_named_by_its_variable(
    runner: CliRunner, args: list[str], env: dict[str, str], expected: str
) -> None:
    if args[0] == "node":
        env = {"GORILIX_BIND": f"127.0.0.1:{free_port()}", **env}
    assert expected in one_line_error(runner.invoke(main, args, env=env))


def test_node_secret_file_errors(runner: CliRunner, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"tooshort\n")
    assert "holds 8 bytes; a secret needs at least 16" in one_line_error(
        runner.invoke(main, ["node", "--secret-file", str(short)]))
    assert "cannot read secret file" in one_line_error(
        runner.invoke(main, ["node", "--secret-file", str(tmp_path / "missing")]))


def test_node_port_in_use_fails_before_any_worker_starts(runner: CliRunner) -> None:
    import psutil

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        line = one_line_error(runner.invoke(main, ["node", "--bind", f"127.0.0.1:{port}", "--workers", "1"]))
    assert f"cannot bind udp 127.0.0.1:{port}" in line and "another node" in line
    assert not [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        line = one_line_error(runner.invoke(main, ["node", "--bind", f"127.0.0.1:{port}", "--workers", "1"]))
    assert f"cannot bind tcp 127.0.0.1:{port}" in line


def test_node_app_that_fails_stops_its_workers(runner: CliRunner) -> None:
    import psutil

    result = runner.invoke(main, ["node", "--name", "broken-app", "--bind", f"127.0.0.1:{free_port()}",
                                  "--workers", "1", "--app", "cli_app:broken"])
    line = one_line_error(result)
    assert "RuntimeError: setup failed on purpose" in line
    assert not [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())]


def test_node_seed_that_does_not_answer(runner: CliRunner) -> None:
    result = runner.invoke(main, ["node", "--name", "lonely", "--bind", f"127.0.0.1:{free_port()}", "--workers",
                                  "1", "--seed", f"127.0.0.1:{free_port()}"], env={"GORILIX_JOIN_TIMEOUT": "0.5"})
    assert "failed to join cluster: no seed answered" in one_line_error(result)


def test_node_retry_join_keeps_running_when_no_seed_answers() -> None:
    from gorilix.launcher import NodeOptions, start_node

    opts = NodeOptions(name="patient", bind=f"127.0.0.1:{free_port()}", workers=1, retry_join=True,
                       seeds=(f"127.0.0.1:{free_port()}",), cluster={"join_timeout": 0.3})
    node = start_node(opts)
    try:
        assert node.joined is None
        assert [m.name for m in node.cluster.members()] == ["patient"]
    finally:
        node.stop()


# -- the library helpers behind `node` ----------------------------------------------------


def test_read_secret_and_load_app(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"x" * 16 + b"\r\n")
    assert read_secret(path) == b"x" * 16
    import cli_app

    assert load_app("cli_app:setup") is cli_app.setup
    with pytest.raises(LaunchError, match="is not callable"):
        load_app("cli_app:__doc__")


# -- client commands against a fake node (presentation) --------------------------------


class FakeRemote:
    """Stands in for RemoteNode; records what the CLI asked."""

    instances: list[FakeRemote] = []

    def __init__(self, address: str, secret: bytes | None = None, timeout: float = 5.0, *,
                 secret_file: str | None = None, insecure: bool = False, connect_timeout: float | None = None) -> None:
        self.address, self.secret, self.timeout = address, secret, timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.secret_file, self.insecure = secret_file, insecure
        self.name = "n1"
        self.workers = 2
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False
        self._status_calls = 0
        FakeRemote.instances.append(self)

    def close(self) -> None:
        self.closed = True

    def members(self) -> list[dict[str, Any]]:
        return [
            {"name": "n2", "address": "127.0.0.1", "port": 7947, "status": "dead", "incarnation": 1,
             "meta": {"workers": 1}, "workers": 1, "load": None},
            {"name": "n1", "address": "127.0.0.1", "port": 7946, "status": "alive", "incarnation": 0,
             "meta": {"workers": 2}, "workers": 2, "load": 0.5},
        ]

    def status(self) -> dict[str, Any]:
        self._status_calls += 1
        respawned = self._status_calls > 1
        return {
            "node": "n1",
            "workers": [
                {"id": 0, "pid": 200 if respawned else 100, "alive": True, "actors": 3, "cpu_percent": 1.5,
                 "rss_bytes": 30 * 2**20, "restarts": 1 if respawned else 0},
                {"id": 1, "pid": 101, "alive": True, "actors": 0, "cpu_percent": 0.0, "rss_bytes": 2**20,
                 "restarts": 0, "stuck": {"seconds": 3.2, "actor": "n1/0x2a", "class": "app:Blocker",
                                          "message": "tuple 'block'", "silent": False}},
            ],
            "stats": {"node": "n1", "actors": 3, "names": 1, "dead_letters": 0, "parked": 0, "malformed": 0,
                      "moved": 2, "dead_letters_by_reason": {"no_actor": 4, "queue_full": 0},
                      "restarts_by_supervisor": {"root": 0, "db": 3},
                      "ask_latency": {"bounds": [0.001, 0.01], "counts": [90, 9, 1], "sum": 0.2, "count": 100,
                                      "sample_every": 16}},
            "dead_letters": 0, "recent_dead_letters": [],
        }

    def kill_worker(self, worker: int | None, sig: int = signal.SIGKILL, timeout: float = 30.0) -> dict[str, Any]:
        self.calls.append(("kill_worker", worker, sig, timeout))
        return {"worker": 0 if worker is None else worker, "pid": 100, "actors": 3, "recovered_ms": 42.4}

    def whereis(self, name: str) -> ActorRef | None:
        return ActorRef("n1", 7, name) if name == "echo" else None

    def tell_ref(self, ref: ActorRef, message: Any) -> None:
        self.calls.append(("tell", ref.name, message))

    def ask_ref(self, ref: ActorRef, message: Any, timeout: float = 5.0) -> Any:
        self.calls.append(("ask", ref.name, message, timeout))
        return {"echo": message, "raw": b"\xff", "pair": (1, 2)}

    def call_ref(self, ref: ActorRef, request: Any, timeout: float = 5.0) -> Any:
        self.calls.append(("call", ref.name, request, timeout))
        return "called"

    def cast_ref(self, ref: ActorRef, request: Any) -> None:
        self.calls.append(("cast", ref.name, request))

    def reload(self, module: str, timeout: float = 30.0) -> dict[str, Any]:
        return {"module": module, "workers": 2, "moved": 4, "errors": []}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeRemote]]:
    FakeRemote.instances = []
    monkeypatch.setattr(gorilix.remote, "RemoteNode", FakeRemote)
    yield FakeRemote
    assert all(r.closed for r in FakeRemote.instances)


def test_members_table_and_json(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["members"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "PORT", "STATUS", "WORKERS", "LOAD"]
    assert lines[1].split()[:4] == ["n1", "*", "127.0.0.1", "7946"]  # sorted by name, * marks the node asked
    assert "dead" in lines[2]
    assert "2 members (1 alive, 1 dead)" in result.output
    assert fake.instances[0].address == "127.0.0.1:7946"
    rows = json.loads(runner.invoke(main, ["members", "--json"]).output)
    assert {r["name"]: r["status"] for r in rows} == {"n1": "alive", "n2": "dead"}
    assert all({"name", "address", "port", "status", "meta"} <= set(r) for r in rows)


def test_node_address_and_secret_from_the_environment(
    runner: CliRunner, fake: type[FakeRemote], secret_file: Path
) -> None:
    env = {"GORILIX_NODE": "10.1.2.3:7000", "GORILIX_SECRET_FILE": str(secret_file)}
    for command in (["members"], ["status"], ["ask", "echo", "1"], ["send", "echo", "1"], ["reload", "m"]):
        result = runner.invoke(main, command, env=env)
        assert result.exit_code == 0, (command, result.output)
        remote = fake.instances[-1]
        assert remote.address == "10.1.2.3:7000"
        assert remote.secret_file == str(secret_file) and not remote.insecure
    result = runner.invoke(main, ["members", "--node", "10.9.9.9:1"], env=env)
    assert fake.instances[-1].address == "10.9.9.9:1"


def test_status_table_and_json(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "node n1: 2/2 workers alive" in result.output
    assert "30.0 MiB" in result.output and "dead letters 0" in result.output
    assert "balance: 3, 0 actors on the live workers (spread 3; 2 moved to balance them)" in result.output
    assert "worker 1 STUCK for 3.2 s in actor n1/0x2a (app:Blocker) handling tuple 'block'" in result.output
    # the dashboard's counters, as lines (never a raw dict)
    assert "dead letters by reason: no actor 4\n" in result.output
    assert "restarts by supervisor: db 3\n" in result.output
    assert "(1 ask in 16 timed, 100 so far): p50 <= 1 ms, p99 <= 10 ms" in result.output
    assert "{" not in result.output
    info = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert info["node"] == "n1"
    assert {"id", "pid", "alive", "actors", "cpu_percent", "rss_bytes", "restarts"} <= set(info["workers"][0])


def test_kill_worker(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["kill-worker", "0", "--signal", "term"])
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls[0] == ("kill_worker", 0, signal.SIGTERM, 30.0)
    assert "killed worker 0 (pid 100) of node n1 with SIGTERM; its 3 actors answered again after 42 ms" in result.output
    assert "respawned as pid 200 (restarts: 1)" in result.output
    result = runner.invoke(main, ["kill-worker", "--random", "--json", "--signal", "SIGKILL"])
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls[0][1] is None
    out = json.loads(result.output)
    assert out["recovered_ms"] == 42.4 and out["respawned_pid"] == 200 and out["signal"] == "SIGKILL"


@pytest.mark.parametrize(("args", "expected"), [
    ([], "give either a WORKER_ID or --random"),
    (["1", "--random"], "give either a WORKER_ID or --random"),
    (["x"], "WORKER_ID"),
    (["--", "-1"], "WORKER_ID"),
    (["5"], "node n1 has workers 0..1, not 5"),
    (["0", "--signal", "STOP"], "'STOP' is not one of KILL, TERM"),
    (["0", "--signal", "INT"], "workers ignore SIGINT"),
])
def test_kill_worker_bad_input(runner: CliRunner, fake: type[FakeRemote], args: list[str], expected: str) -> None:
    assert expected in one_line_error(runner.invoke(main, ["kill-worker", *args]))


def test_ask_and_send(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["ask", "echo", '{"x": [1, 2]}', "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"echo": {"x": [1, 2]}, "raw": {"base64": "/w=="}, "pair": [1, 2]}
    assert fake.instances[-1].calls == [("ask", "echo", {"x": [1, 2]}, 2.0)]
    result = runner.invoke(main, ["send", "echo", '"hi"'])
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls == [("tell", "echo", "hi")]
    assert "sent to echo on node n1" in result.output


def test_ask_call_and_send_cast_reach_a_genservers_handlers(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["ask", "--call", "echo", '"state"', "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls == [("call", "echo", "state", 2.0)] and json.loads(result.output) == "called"
    result = runner.invoke(main, ["send", "--cast", "echo", '{"n": 1}'])
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls == [("cast", "echo", {"n": 1})]
    assert "sent to echo on node n1 (a cast)" in result.output
    runner.invoke(main, ["ask", "echo", "1"], env={"GORILIX_ASK_CALL": "1"})
    assert fake.instances[-1].calls[0][0] == "call"


def test_tuple_sends_a_top_level_json_array_as_a_tuple(runner: CliRunner, fake: type[FakeRemote]) -> None:
    assert runner.invoke(main, ["ask", "echo", '["read", "k"]']).exit_code == 0
    assert fake.instances[-1].calls[0][2] == ["read", "k"]  # (without --tuple: a list, as JSON says)
    for command, flags in (("ask", []), ("ask", ["--call"]), ("send", []), ("send", ["--cast"])):
        result = runner.invoke(main, [command, *flags, "--tuple", "echo", '["write", "k", [1, 2], {"a": [3]}]'])
        assert result.exit_code == 0, result.output
        sent = fake.instances[-1].calls[0][2]
        assert sent == ("write", "k", [1, 2], {"a": [3]}) and type(sent) is tuple, (command, flags)
    count = len(fake.instances)
    line = one_line_error(runner.invoke(main, ["ask", "--tuple", "echo", '{"read": "k"}']))
    assert "--tuple takes a JSON array" in line and len(fake.instances) == count  # (before connecting)


@pytest.mark.parametrize("command", ["ask", "send"])
def test_help_says_how_to_quote_name_and_json(runner: CliRunner, command: str) -> None:
    out = runner.invoke(main, [command, "--help"], terminal_width=200).output
    assert "NAME is the name the actor was registered under" in out
    assert "'\"World\"' is the str \"World\"" in out and "single quotes" in out
    assert "42" in out and "null" in out and "--tuple" in out
    assert ("--call" if command == "ask" else "--cast") in out
    assert f"gorilix {command} greeter " in out  # examples


@pytest.mark.parametrize("command", ["ask", "send"])
def test_bad_json_and_unknown_names(runner: CliRunner, fake: type[FakeRemote], command: str) -> None:
    line = one_line_error(runner.invoke(main, [command, "echo", "{not json"]))
    assert "is not JSON" in line
    assert not fake.instances  # rejected before connecting
    assert "no actor named 'nobody' on node n1" in one_line_error(runner.invoke(main, [command, "nobody", "1"]))
    assert "Missing argument" in one_line_error(runner.invoke(main, [command, "echo"]))


def test_reload(runner: CliRunner, fake: type[FakeRemote]) -> None:
    result = runner.invoke(main, ["reload", "myapp.actors"])
    assert result.exit_code == 0, result.output
    assert "reloaded myapp.actors on node n1: 2 workers, 4 actors moved" in result.output
    assert "is not a module path" in one_line_error(runner.invoke(main, ["reload", "my app"]))


@pytest.mark.parametrize(("args", "expected"), [
    (["members", "--node", "127.0.0.1:notaport"], "bad --node '127.0.0.1:notaport': port 'notaport' is not a number"),
    (["status", "--node", "no-such-host.invalid:7946"], "bad --node 'no-such-host.invalid:7946': cannot resolve"),
    (["chaos", "--every", "0"], "--every"),
    (["chaos", "--duration", "-1"], "--duration"),
    (["ask", "echo", "1", "--timeout", "0"], "--timeout"),
])
def test_client_bad_input(runner: CliRunner, fake: type[FakeRemote], args: list[str], expected: str) -> None:
    assert expected in one_line_error(runner.invoke(main, args))


def test_client_secret_file_errors(runner: CliRunner, fake: type[FakeRemote], tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 15)
    assert "holds 15 bytes" in one_line_error(runner.invoke(main, ["members", "--secret-file", str(short)]))


def test_unreachable_node_is_one_line_and_exit_2(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    class Unreachable:
        def __init__(self, address: str, secret: bytes | None = None, timeout: float = 5.0,
                     **access: Any) -> None:
            within = access.get("connect_timeout") or timeout
            raise NodeUnreachable(f"no answer from a node at {address} within {within:g} s: is it running, "
                                  "and is the port right?")

    monkeypatch.setattr(gorilix.remote, "RemoteNode", Unreachable)
    for command in (["members"], ["status"], ["kill-worker", "--random"], ["ask", "x", "1"], ["send", "x", "1"],
                    ["reload", "m"], ["chaos", "--duration", "1"]):
        for option in ("--connect-timeout", "--timeout"):
            line = one_line_error(runner.invoke(main, [*command, option, "0.5"]))
            assert "no answer from a node at 127.0.0.1:7946 within 0.5 s" in line, (command, option)


CLIENT_COMMANDS = [["members"], ["status"], ["kill-worker", "0"], ["chaos", "--duration", "1"], ["send", "echo", "1"],
                   ["ask", "echo", "1"], ["reload", "m"]]


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=lambda c: c[0])
def test_every_client_command_takes_timeout(runner: CliRunner, fake: type[FakeRemote], command: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--timeout (or GORILIX_<COMMAND>_TIMEOUT, or GORILIX_TIMEOUT) bounds connecting and the request."""
    import gorilix.chaos
    from gorilix.chaos import ChaosReport

    chaos_calls: list[dict[str, Any]] = []

    def fake_chaos(address: str, every: float, duration: float, **kwargs: Any) -> ChaosReport:
        chaos_calls.append(kwargs)
        return ChaosReport(node="n1", every_s=every, duration_s=duration)

    monkeypatch.setattr(gorilix.chaos, "run_chaos", fake_chaos)

    def timeouts() -> tuple[float, float]:
        """(connecting, the request) as the command used them."""
        remote = fake.instances[-1]
        if command[0] == "chaos":
            return chaos_calls[-1]["connect_timeout"], chaos_calls[-1]["recovery_timeout"]
        if command[0] in ("kill-worker", "ask"):
            return remote.connect_timeout, remote.calls[0][-1]
        return remote.connect_timeout, remote.timeout  # (control requests: RemoteNode's timeout)

    help_text = runner.invoke(main, [command[0], "--help"], terminal_width=200).output
    assert "--timeout SECONDS" in help_text and "GORILIX_TIMEOUT" in help_text
    variable = f"GORILIX_{command[0].upper().replace('-', '_')}_TIMEOUT"
    assert variable in help_text
    slow = command[0] in ("kill-worker", "chaos", "reload")  # (they wait for work: 30 s once connected)
    for args, env, expected in [
        ([], {}, (5.0, 30.0 if slow else 5.0)),
        (["--timeout", "2.5"], {}, (2.5, 2.5)),
        ([], {"GORILIX_TIMEOUT": "3"}, (3.0, 3.0)),
        ([], {"GORILIX_TIMEOUT": "3", variable: "4"}, (4.0, 4.0)),  # (the command's own variable wins)
        (["--timeout", "2"], {variable: "4"}, (2.0, 2.0)),
        (["--connect-timeout", "0.5", "--timeout", "9"], {}, (0.5, 9.0)),  # (the old name: connecting alone)
    ]:
        result = runner.invoke(main, [*command, *args], env=env)
        assert result.exit_code == 0, (args, env, result.output)
        assert timeouts() == expected, (args, env)
    assert "--timeout" in one_line_error(runner.invoke(main, [*command, "--timeout", "0"]))
    assert "GORILIX_TIMEOUT" in one_line_error(runner.invoke(main, command, env={"GORILIX_TIMEOUT": "soon"}))


def test_unreachable_for_real(runner: CliRunner) -> None:
    """A real RemoteNode against a port nobody listens on (no fake)."""
    port = free_port()
    line = one_line_error(runner.invoke(main, ["members", "--node", f"127.0.0.1:{port}", "--connect-timeout", "0.3"]))
    assert f"no answer from a node at 127.0.0.1:{port} within 0.3 s: nothing listens on that port" in line


def test_a_port_that_is_not_a_nodes_is_told_from_a_closed_one(runner: CliRunner) -> None:
    """Something listens, and never speaks ZMTP: the silence says so (the socket monitor saw the TCP connection)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        line = one_line_error(runner.invoke(main, ["status", "--node", f"127.0.0.1:{port}", "--timeout", "0.5"]))
    assert f"no answer from a node at 127.0.0.1:{port} within 0.5 s: something took the TCP connection" in line
    assert "is that the node's port" in line


def test_operation_failures_are_exit_1(runner: CliRunner, fake: type[FakeRemote], monkeypatch: pytest.MonkeyPatch) -> None:
    from gorilix import ActorError, AskTimeout

    def timeout(*args: Any, **kwargs: Any) -> Any:
        raise AskTimeout("<ActorRef 'echo' n1/0x7> did not answer within 0.1 s")

    monkeypatch.setattr(FakeRemote, "ask_ref", timeout)
    line = one_line_error(runner.invoke(main, ["ask", "echo", "1"]), code=1)
    assert "did not answer within 0.1 s" in line

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise ActorError("ValueError", "bad\nvalue", "Traceback (most recent call last): ...", "echo")

    monkeypatch.setattr(FakeRemote, "ask_ref", crash)
    line = one_line_error(runner.invoke(main, ["ask", "echo", "1"]), code=1)
    assert "ValueError in actor echo: bad value" in line


def test_chaos_report(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, fake: type[FakeRemote]) -> None:
    import gorilix.chaos
    from gorilix.chaos import ChaosReport

    def fake_chaos(address: str, every: float, duration: float, **kwargs: Any) -> ChaosReport:
        for t in (0.5, 1.0, 1.5, 2.0):
            kwargs["on_progress"](t)
        kwargs["on_kill"]({"worker": 1, "pid": 5, "actors": 2, "recovered_ms": 12.0})
        return ChaosReport(node="n1", every_s=every, duration_s=duration, kills=2, recovery_ms=[12.0, 30.0],
                           asks_answered=90, asks_failed=3, longest_outage_ms=55.0)

    monkeypatch.setattr(gorilix.chaos, "run_chaos", fake_chaos)
    result = runner.invoke(main, ["chaos", "--every", "1", "--duration", "2"])
    assert result.exit_code == 0, result.output
    for text in ("kills               2", "recoveries          2", "slowest 30 ms",
                 "90 answered, 3 failed"):
        assert text in result.stdout, text
    out = json.loads(runner.invoke(main, ["chaos", "--every", "1", "--duration", "2", "--json"]).stdout)
    assert out["kills"] == 2 and out["slowest_ms"] == 30.0 and out["ok"] is True


def test_bench_progress_and_json(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import gorilix.bench

    seen: dict[str, Any] = {}

    def fake_bench(quick: bool = False, progress: bool = True, say: Any = None,
                   failover_actors: int | None = None) -> dict[str, Any]:
        seen["quick"] = quick
        seen["failover_actors"] = failover_actors
        for n in range(1, 10):
            say(f"[{n}/9] step {n}")
        return {"workers": 2, "quick": quick}

    monkeypatch.setattr(gorilix.bench, "run_bench", fake_bench)
    monkeypatch.setattr(gorilix.bench, "format_report", lambda r: "REPORT")
    result = runner.invoke(main, ["bench", "--quick"])
    assert result.exit_code == 0, result.output
    assert seen["quick"] is True and result.stdout.strip() == "REPORT"
    assert "bench" in result.stderr  # the progress bar's label (stderr, so --json stays clean)
    result = runner.invoke(main, ["bench", "--json"])
    assert json.loads(result.stdout) == {"workers": 2, "quick": False, "missed": []}
    assert seen["failover_actors"] is None  # (the bench's default)
    monkeypatch.setattr(gorilix.bench, "missed", lambda r: ["pool_tiny"])
    result = runner.invoke(main, ["bench", "--check"])
    assert result.exit_code == 1 and "missed: pool_tiny" in result.stderr
    assert runner.invoke(main, ["bench"]).exit_code == 0  # (without --check a miss is only marked)
    result = runner.invoke(main, ["bench", "--failover-actors", "500000"])
    assert result.exit_code == 0, result.output
    assert seen["failover_actors"] == 500_000


def test_other_options_read_gorilix_command_option_variables(runner: CliRunner, fake: type[FakeRemote]) -> None:
    env = {"GORILIX_KILL_WORKER_SIGNAL": "TERM", "GORILIX_KILL_WORKER_JSON": "1"}
    result = runner.invoke(main, ["kill-worker", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert fake.instances[-1].calls[0][2] == signal.SIGTERM
    assert json.loads(result.output)["signal"] == "SIGTERM"
    result = runner.invoke(main, ["ask", "echo", "1"], env={"GORILIX_ASK_TIMEOUT": "0.5"})
    assert fake.instances[-1].calls[0][3] == 0.5
    assert "GORILIX_CHAOS_EVERY" in runner.invoke(main, ["chaos", "--help"], terminal_width=200).output


def test_node_prints_membership_changes_not_load_wobbles() -> None:
    from gorilix.cluster.bridge import ClusterEvent
    from gorilix.launcher import ChangeFilter, describe_event

    worth = ChangeFilter()
    joined = ClusterEvent("join", "n2", "127.0.0.1", 7947, "alive", {"workers": 1, "load": 0.1})
    assert worth(joined)
    assert describe_event(joined).endswith("member n2 joined (127.0.0.1:7947, alive, 1 worker)")
    assert not worth(ClusterEvent("update", "n2", "127.0.0.1", 7947, "alive", {"workers": 1, "load": 0.7}))
    assert worth(ClusterEvent("update", "n2", "127.0.0.1", 7947, "alive", {"workers": 3, "load": 0.7}))
    dead = ClusterEvent("dead", "n2", "127.0.0.1", 7947, "dead", {"workers": 3, "load": 0.7})
    assert worth(dead) and "member n2 is dead" in describe_event(dead)
    # The time printed is when the change was seen, even if the line is printed later.
    seen = ClusterEvent("leave", "n2", "127.0.0.1", 7947, "left", {}, at=time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)))
    assert describe_event(seen).startswith("03:04:05 member n2 left")


def test_secret_new_writes_a_private_secret_in_the_one_format(runner: CliRunner, tmp_path: Path) -> None:
    import stat

    from gorilix.cluster.config import ClusterConfig, read_secret_file

    path = tmp_path / "secret"
    result = runner.invoke(main, ["secret", "new", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote a new secret to {path} (mode 0600)" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = read_secret_file(path)  # what --secret-file reads...
    assert len(secret) == 44 and path.read_bytes() == secret + b"\n"
    assert read_secret(path) == secret
    assert ClusterConfig(node_name="n", secret_file=path).secret_key == secret  # ...and secret_file= too
    assert "exists already" in one_line_error(runner.invoke(main, ["secret", "new", str(path)]))
    assert read_secret_file(path) == secret  # (not overwritten)
    assert "cannot write" in one_line_error(runner.invoke(main, ["secret", "new", str(tmp_path / "no" / "dir")]))
