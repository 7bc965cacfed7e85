"""`gorilix` end to end: real `gorilix node` processes on 127.0.0.1, driven by the real CLI.

Every node is started as ``python -m gorilix node ...`` with fast gossip
timings and reaped by its fixture (killed and waited for, its workers checked
gone). Clients run as subprocesses too. Nothing sleeps to synchronize: each
wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import NodeProcess, process_running, reap_nodes, wait_for

from gorilix.launcher import free_port

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
FAST = ["--probe-interval", "0.2", "--probe-timeout", "0.1", "--push-interval", "0.05",
        "--pull-interval", "2", "--suspicion-mult", "3", "--leave-timeout", "1"]
#: An upper bound for failure detection with FAST timings (suspicion starts at
#: 6x its minimum without confirmations), plus slack for a loaded machine.
DEAD_WITHIN = 6 * 3 * 0.2 + 3 * 0.2 + 5.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GORILIX_") or k == "GORILIX_RUNTIME_DIR"}
    # This checkout's code (whatever is installed) and the tests' app module.
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def gx(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI once and return what it did."""
    return subprocess.run([sys.executable, "-m", "gorilix", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=TESTS, env=env or _env())


def gx_json(*args: str) -> Any:
    done = gx(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


class Node(NodeProcess):
    def members(self) -> dict[str, str]:
        done = gx("members", "--node", self.address, "--json", "--connect-timeout", "2")
        if done.returncode != 0:
            return {}
        return {row["name"]: row["status"] for row in json.loads(done.stdout)}

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in gx_json("status", "--node", self.address)["workers"]]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start `gorilix node` processes; each is stopped, waited for and its workers checked gone."""
    nodes: list[Node] = []

    def start(name: str | None = None, seeds: tuple[str, ...] = (), workers: int = 1,
              args: tuple[str, ...] = ("--app", "cli_app:setup"), wait: bool = True,
              port: int | None = None) -> Node:
        name = name or f"cli-{uuid.uuid4().hex[:6]}"
        port = port or free_port()
        out, err = tmp_path / f"{name}-{port}.out", tmp_path / f"{name}-{port}.err"
        cmd = [sys.executable, "-m", "gorilix", "node", "--name", name, "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), *FAST, *args]
        for seed in seeds:
            cmd += ["--seed", seed]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=TESTS, env=_env())
        node = Node(name, port, proc, out, err)
        nodes.append(node)
        if wait:
            wait_for(lambda: "ready:" in node.out.read_text() or proc.poll() is not None, 30,
                     f"node {name} ready")
            assert proc.poll() is None, f"node {name} exited {proc.returncode}: {node.output()}"
        return node

    try:
        yield start
    finally:
        reap_nodes([node.proc for node in nodes])


@pytest.fixture
def trio(start_node: Callable[..., Node]) -> list[Node]:
    """Three nodes joined through the first; every one sees all three alive."""
    first = start_node(workers=2)
    nodes = [first, start_node(seeds=(first.address,)), start_node(seeds=(first.address,))]
    everyone = dict.fromkeys((n.name for n in nodes), "alive")
    for node in nodes:
        wait_for(lambda node=node: node.members() == everyone, 20, f"three members alive at {node.name}")
    return nodes


def test_three_nodes_join_members_and_status(trio: list[Node]) -> None:
    first, second, third = trio
    rows = gx_json("members", "--node", second.address)
    assert len(rows) == 3
    for row in rows:
        assert {"name", "address", "port", "status", "meta"} <= set(row)
        assert row["status"] == "alive" and row["address"] == "127.0.0.1"
    by_name = {row["name"]: row for row in rows}
    assert by_name[first.name]["port"] == first.port
    assert by_name[first.name]["meta"]["workers"] == 2
    table = gx("members", "--node", first.address)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == ["NAME", "ADDRESS", "PORT", "STATUS"]
    assert all(node.name in table.stdout for node in trio) and "3 members (3 alive)" in table.stdout

    status = gx_json("status", "--node", first.address)
    assert status["node"] == first.name
    assert len(status["workers"]) == 2
    for worker in status["workers"]:
        assert {"id", "pid", "alive", "actors", "cpu_percent", "rss_bytes", "restarts"} <= set(worker)
        assert worker["alive"] is True and process_running(worker["pid"]) and worker["rss_bytes"] > 0
    assert sum(w["actors"] for w in status["workers"]) >= 2  # cli_app:setup spawned echo and counter
    assert "stats" in status and "dead_letters" in status
    assert [(link["node"], link["ready"]) for link in status["links"]] == sorted(
        (n.name, True) for n in (second, third))  # without a secret a link is ready once made
    human = gx("status", "--node", first.address)
    assert human.returncode == 0 and f"node {first.name}: 2/2 workers alive" in human.stdout
    assert f"link to {second.name} at tcp://127.0.0.1:{second.port}: ready" in human.stdout
    gossip = status["stats"]["gossip"]  # the gossip runs in the node process: its counters travel with status
    assert gossip["sent"] > 0 and gossip["received"] > 0 and gossip["malformed"] == 0
    assert re.search(r"^gossip: \d+ datagrams sent, \d+ received, 0 malformed and 0 refused", human.stdout, re.M)

    # The node's own output: one ready line, then the membership changes.
    lines = first.out.read_text().splitlines()
    assert lines[0].startswith(f"ready: node {first.name} at {first.address}") and "2 workers" in lines[0]
    wait_for(lambda: all(f"member {n.name} joined" in first.out.read_text() for n in (second, third)), 10,
             "joins printed by the first node")


def test_ask_and_send_a_named_actor(trio: list[Node]) -> None:
    first, second, _ = trio
    done = gx("ask", "--node", second.address, "echo", '{"hello": [1, 2]}')
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["echo"] == {"hello": [1, 2]} and reply["node"] == second.name
    assert reply["pid"] in second.worker_pids()

    env = {**_env(), "GORILIX_NODE": first.address}  # --node from the environment
    for _ in range(3):
        assert gx("send", "counter", '"tick"', env=env).returncode == 0
    wait_for(lambda: gx("ask", "counter", '"count"', env=env).stdout.strip() == "3", 10, "three ticks counted")

    assert "no actor named 'nobody'" in assert_one_line_error(gx("ask", "--node", first.address, "nobody", "1"))
    assert "is not JSON" in assert_one_line_error(gx("send", "--node", first.address, "echo", "{oops"))


def test_ask_call_send_cast_and_tuples_reach_a_genserver(start_node: Callable[..., Node]) -> None:
    node = start_node()

    def ask(*args: str) -> Any:
        done = gx("ask", "--node", node.address, "--timeout", "10", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert ask("store", '"hi"') == {"info": "hi", "type": "str"}  # a plain ask: handle_info
    assert ask("store", '["read", "k"]') == {"info": ["read", "k"], "type": "list"}
    assert ask("--call", "store", '["read", "k"]') == {"call": ["read", "k"], "type": "list"}  # JSON: a list
    assert ask("--call", "--tuple", "store", '["write", "k", [1, 2]]') == "ok"
    assert ask("--call", "--tuple", "store", '["read", "k"]') == [1, 2]
    assert gx("send", "--node", node.address, "--cast", "--tuple", "store", '["write", "k", 7]').returncode == 0
    wait_for(lambda: ask("--call", "--tuple", "store", '["read", "k"]') == 7, 10, "the cast stored 7")
    assert "--tuple takes a JSON array" in assert_one_line_error(
        gx("ask", "--node", node.address, "--tuple", "store", '"read"'))


def test_kill_worker_and_respawn(trio: list[Node]) -> None:
    first = trio[0]
    before = gx_json("status", "--node", first.address)["workers"]
    result = gx_json("kill-worker", "--node", first.address, "0")
    assert result["worker"] == 0 and result["pid"] == before[0]["pid"] and result["signal"] == "SIGKILL"
    assert result["recovered_ms"] >= 0 and result["respawned_pid"] not in (None, before[0]["pid"])
    wait_for(lambda: not process_running(before[0]["pid"]), 5, "killed worker gone")
    after = gx_json("status", "--node", first.address)["workers"]
    assert after[0]["alive"] and after[0]["pid"] == result["respawned_pid"]
    assert after[0]["restarts"] == before[0]["restarts"] + 1
    # The named actors answer again, whichever worker they were on.
    assert json.loads(gx("ask", "--node", first.address, "echo", "1").stdout)["echo"] == 1

    human = gx("kill-worker", "--node", first.address, "--random", "--signal", "TERM")
    assert human.returncode == 0, human.stderr
    assert "with SIGTERM; its" in human.stdout and "respawned as pid" in human.stdout
    assert "has workers 0..1, not 7" in assert_one_line_error(gx("kill-worker", "--node", first.address, "7"))


def test_chaos_drill(trio: list[Node]) -> None:
    first = trio[0]
    done = gx("chaos", "--node", first.address, "--every", "0.5", "--duration", "2.5", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["node"] == first.name
    assert report["kills"] >= 2 and report["recoveries"] == report["kills"] and report["ok"] is True
    assert report["slowest_ms"] >= report["median_ms"] > 0
    assert report["asks_answered"] > 0
    status = gx_json("status", "--node", first.address)
    assert sum(w["restarts"] for w in status["workers"]) >= report["kills"]


def test_reload(trio: list[Node]) -> None:
    done = gx("reload", "--node", trio[1].address, "cli_app")
    assert done.returncode == 0, done.stderr
    assert f"reloaded cli_app on node {trio[1].name}" in done.stdout
    assert json.loads(gx("ask", "--node", trio[1].address, "echo", '"after"').stdout)["echo"] == "after"


def test_sigterm_leaves_gracefully_and_exits_0(start_node: Callable[..., Node]) -> None:
    first = start_node()
    leaver = start_node(seeds=(first.address,), workers=2)
    wait_for(lambda: first.members().get(leaver.name) == "alive", 20, "leaver joined")
    pids = leaver.worker_pids()
    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(20) == 0, leaver.output()
    assert wait_for(lambda: first.members().get(leaver.name) == "left", 10, "leaver marked left") is True
    assert not any(process_running(pid) for pid in pids)
    out = leaver.out.read_text()
    assert "SIGTERM: node" in out and f"node {leaver.name} stopped" in out
    assert "Traceback" not in leaver.err.read_text()


def test_sigint_also_leaves_gracefully(start_node: Callable[..., Node]) -> None:
    node = start_node(args=())
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(20) == 0, node.output()
    assert "SIGINT: node" in node.out.read_text()


def test_sigkill_of_a_node_leaves_no_orphan_worker(start_node: Callable[..., Node]) -> None:
    first = start_node()
    victim = start_node(seeds=(first.address,), workers=2)
    wait_for(lambda: first.members().get(victim.name) == "alive", 20, "victim joined")
    pids = victim.worker_pids()
    assert len(pids) == 2 and all(process_running(pid) for pid in pids)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    wait_for(lambda: not any(process_running(pid) for pid in pids), 10, "the killed node's workers gone")
    wait_for(lambda: first.members().get(victim.name) == "dead", DEAD_WITHIN, "victim marked dead")


def test_retry_join_lets_nodes_boot_in_any_order(start_node: Callable[..., Node]) -> None:
    seed_port = free_port()
    early_port = next(p for p in iter(free_port, None) if p != seed_port)
    early = start_node(seeds=(f"127.0.0.1:{seed_port}",), port=early_port,
                       args=("--retry-join", "--join-timeout", "0.3"))
    wait_for(lambda: "no seed answered yet (127.0.0.1:" in early.out.read_text(), 10, "the retry notice")
    seed = start_node(port=seed_port, args=())
    wait_for(lambda: early.members() == {early.name: "alive", seed.name: "alive"}, 20, "the early node joined")
    wait_for(lambda: seed.members().get(early.name) == "alive", 20, "the seed sees the early node")


def test_a_second_node_under_a_taken_name_is_refused(start_node: Callable[..., Node]) -> None:
    seed = start_node(args=())
    first = start_node(seeds=(seed.address,), args=())
    wait_for(lambda: seed.members().get(first.name) == "alive", 20, "the first node joined")
    for name in (first.name, seed.name):  # a member's name, and the seed's own (two nodes named after one host)
        again = start_node(name=name, seeds=(seed.address,), args=(), wait=False)
        assert again.proc.wait(30) == 2, again.output()
        lines = again.err.read_text().strip().splitlines()
        assert lines[-1].startswith("Error: failed to join cluster: the name"), lines
        holder = first if name == first.name else seed
        assert f"'{name}' is taken" in lines[-1] and f"at {holder.address}" in lines[-1], lines[-1]
        assert "no seed answered" not in lines[-1]
    rows = {r["name"]: r for r in gx_json("members", "--node", seed.address)}
    assert (rows[first.name]["port"], rows[first.name]["status"]) == (first.port, "alive")  # it kept its name
    assert set(rows) == {seed.name, first.name}
    warnings = [line for line in seed.err.read_text().splitlines() if "refused member" in line]
    assert warnings and f"'{first.name}'" in warnings[0] and first.address in warnings[0], warnings
    gossip = gx_json("status", "--node", seed.address)["stats"]["gossip"]
    assert gossip["name_conflicts"] >= 2


def test_secret_file_guards_the_node(start_node: Callable[..., Node], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(os.urandom(24).hex() + "\n")
    secret.chmod(0o600)
    node = start_node(args=("--secret-file", str(secret)))
    assert "CURVE" in node.out.read_text()
    joiner = start_node(seeds=(node.address,), args=("--secret-file", str(secret)))
    rows = gx_json("members", "--node", node.address, "--secret-file", str(secret))
    wait_for(lambda: {r["name"] for r in gx_json("members", "--node", node.address, "--secret-file", str(secret))}
             == {node.name, joiner.name}, 20, "joined with the secret")
    assert rows
    # Without --secret-file the per-user secret is tried, and refused at once (a timeout would say "no answer").
    line = assert_one_line_error(gx("members", "--node", node.address, "--connect-timeout", "60"))
    assert f"the node at {node.address} refused the handshake" in line and "pass --secret-file" in line
    line = assert_one_line_error(gx("members", "--node", node.address, "--insecure", "--connect-timeout", "60"))
    assert "has a secret, and --insecure connects without one" in line


def test_node_bad_input_is_one_line_and_leaves_nothing_running(start_node: Callable[..., Node]) -> None:
    taken = start_node(args=())
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cases = [
        (["--bind", taken.address], f"cannot bind tcp {taken.address}"),
        (["--bind", "127.0.0.1:99999"], "port 99999 is out of range"),
        (["--bind", "10.255.255.1:7946"], "cannot bind tcp 10.255.255.1:7946"),
        (["--app", "no_such_module:setup"], "cannot import app module 'no_such_module'"),
        (["--app", "cli_app:broken"], "RuntimeError: setup failed on purpose"),
        (["--advertise", f"0.0.0.0:{free_port()}"], "bad --advertise"),
        (["--name", ""], "bad --name ''"),
    ]
    for args, expected in cases:
        done = gx("node", "--name", "bad", "--bind", f"127.0.0.1:{free_port()}", "--workers", "1", *args,
                  "--insecure")
        line = assert_one_line_error(done)
        assert expected in line, line
        assert "Traceback" not in done.stderr
    after = {p.pid for p in psutil.Process().children(recursive=True) if process_running(p.pid)}
    assert after <= before
    assert "refusing to bind 0.0.0.0" in assert_one_line_error(gx("node", "--bind", "0.0.0.0:7946"))
    assert "is not JSON" in assert_one_line_error(gx("ask", "--node", taken.address, "echo", "nope"))
    for option in ("--connect-timeout", "--timeout"):
        line = assert_one_line_error(gx("status", "--node", f"127.0.0.1:{free_port()}", option, "0.5"))
        assert "no answer from a node" in line and "within 0.5 s" in line


def test_demo_exits_0() -> None:
    done = gx("demo", "--workers", "2", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in done.stdout
