"""The dashboard against a real two-node cluster: /metrics as traffic flows, and the page in headless Chromium.

The browser test needs Debian's chromium (``.ci/run`` installs it). Where it
is missing the test is skipped, unless GORILIX_REQUIRE_BROWSER=1 (CI sets it)
makes that a failure. The screenshot goes to $GORILIX_ARTIFACTS (CI keeps
it), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families

from gorilix.launcher import NodeProcess, _same_code_env, free_port
from gorilix.node_handle import HEARTBEAT_EVERY, HEARTBEAT_MISSES
from gorilix.remote import RemoteNode

pytestmark = pytest.mark.slow

#: Gossip timings that find a dead node in a second or two (the CLI tests' FAST).
FAST = ["--probe-interval", "0.2", "--probe-timeout", "0.1", "--push-interval", "0.05",
        "--pull-interval", "2", "--suspicion-mult", "3", "--leave-timeout", "1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Chromium on a machine with no network and no screen, as root (the flags the machine's notes give).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Dashboard:
    """A `gorilix dashboard` process started by a test, and the address it printed."""

    proc: subprocess.Popen[str]
    url: str  # with the token, as printed

    @property
    def base(self) -> str:
        return self.url.split("#")[0].rstrip("/")

    @property
    def token(self) -> str:
        return self.url.split("#token=")[1]

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.base + path, data=body, method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())


@pytest.fixture
def cluster(gorilix_node: Callable[..., NodeProcess]) -> tuple[NodeProcess, NodeProcess]:
    n1 = gorilix_node(*FAST)
    n2 = gorilix_node(*FAST, "--seed", n1.address)
    with RemoteNode(n1.address) as remote:
        wait_for(lambda: sum(m["status"] == "alive" for m in remote.members()) == 2, 15.0, "both nodes alive")
    return n1, n2


@pytest.fixture
def dashboard(cluster: tuple[NodeProcess, NodeProcess]) -> Iterator[Dashboard]:
    """`gorilix dashboard --allow-drills` of the first node; it ends when the test closes its stdin."""
    command = [sys.executable, "-m", "gorilix", "dashboard", "--node", cluster[0].address,
               "--bind", f"127.0.0.1:{free_port()}", "--allow-drills", "--watch-stdin"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_same_code_env())
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        wait_for(lambda: any("#token=" in line for line in lines) or proc.poll() is not None, 30.0, "the dashboard")
        url = next((line.split(" at ", 1)[1].strip() for line in lines if "#token=" in line), None)
        assert url is not None, f"the dashboard did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield Dashboard(proc, url)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            assert proc.wait(timeout=10) == 0  # it ends, cleanly, when its stdin closes
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_metrics_counters_move_as_traffic_flows(cluster: tuple[NodeProcess, NodeProcess],
                                                dashboard: Dashboard) -> None:
    n1 = cluster[0].name
    node = (("node", n1),)
    # both members alive, and both polled (the second is found in the member table, then polled)
    before = wait_for(lambda: (s := _samples(dashboard.get("/metrics"))).get(("gorilix_members", (("status", "alive"),)))
                   == 2.0 and s.get(("gorilix_node_up", (("node", cluster[1].name),))) == 1.0
                   and ("gorilix_asks_total", node) in s and s, 10.0, "both members alive and polled")
    with RemoteNode(cluster[0].address) as remote:
        echo = remote.spawn("gorilix.bench_actors:Echo")
        for i in range(320):
            assert remote.ask_ref(echo, i) == i
    after = wait_for(lambda: (s := _samples(dashboard.get("/metrics")))[("gorilix_asks_total", node)]
                  >= before[("gorilix_asks_total", node)] + 320 and s, 10.0, "the asks counted")
    assert after[("gorilix_messages_routed_total", node)] >= before[("gorilix_messages_routed_total", node)] + 640
    assert after[("gorilix_replies_total", node)] >= before[("gorilix_replies_total", node)] + 320
    # one ask in 16 is timed: 320 asks give at least 20 samples, each in a bucket
    timed = after[("gorilix_ask_latency_seconds_count", node)] - before[("gorilix_ask_latency_seconds_count", node)]
    assert timed >= 320 // 16
    assert after[("gorilix_ask_latency_seconds_bucket", (("le", "+Inf"), *node))] == \
        after[("gorilix_ask_latency_seconds_count", node)]
    assert after[("gorilix_gossip_packets_sent_total", node)] > before[("gorilix_gossip_packets_sent_total", node)]
    assert sum(v for (name, labels), v in after.items()
               if name == "gorilix_worker_actors" and dict(labels)["node"] == n1) >= 1


def test_a_drill_through_the_api_and_one_at_a_worker_the_node_lacks(cluster: tuple[NodeProcess, NodeProcess],
                                                                     dashboard: Dashboard) -> None:
    n1 = cluster[0].name
    status, answer = dashboard.post("/api/kill-worker", json.dumps({"node": n1, "worker": 9}).encode())
    assert status == 404 and "has no worker 9: its workers are 0, 1" in answer["error"], answer
    status, answer = dashboard.post("/api/kill-worker", json.dumps({"node": n1, "worker": 1}).encode())
    assert status == 200, answer
    worker = next(w for w in answer["state"]["nodes"][n1]["workers"] if w["id"] == 1)
    assert worker["alive"] is False  # (answered once the node handled the death: the respawn is not ready yet)
    assert f"drill: killed worker 1 of {n1} (pid {answer['pid']})" in [e["text"] for e in answer["state"]["timeline"]]


def _browser_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("GORILIX_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is missing (GORILIX_REQUIRE_BROWSER=1): apt-get install chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return CHROMIUM


def _artifact(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("GORILIX_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def test_the_page_in_a_real_browser_shows_members_a_drill_and_a_dead_node(
        cluster: tuple[NodeProcess, NodeProcess], dashboard: Dashboard, tmp_path: Path) -> None:
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    n1, n2 = cluster
    with RemoteNode(n1.address) as remote:  # something to show in the charts and the trees
        for i in range(4):
            remote.spawn("gorilix.bench_actors:Echo", name=f"echo-{i}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dashboard.url)
            # the member table shows both nodes alive
            for node in (n1, n2):
                page.wait_for_selector(f'#members tr[data-member="{node.name}"][data-status="alive"]', timeout=10_000)
            assert page.url.find("token=") < 0, "the token stays out of the address bar"

            # the drill button: the worker shows dead, then back (a new pid) within 2 s
            row = f'#nodes section[data-node="{n1.name}"] tr[data-worker="0"]'
            page.wait_for_selector(f'{row}[data-alive="true"]', timeout=10_000)
            old_pid = page.get_attribute(row, "data-pid")
            clicked = time.monotonic()
            page.click(f'button.kill[data-node="{n1.name}"][data-worker="0"]')
            page.wait_for_selector(f'{row}[data-alive="false"]', timeout=2_000)
            page.wait_for_function(
                """([row, old]) => { const r = document.querySelector(row);
                     return r && r.dataset.alive === "true" && r.dataset.pid !== old; }""",
                arg=[row, old_pid], timeout=max(1, int((2.0 - (time.monotonic() - clicked)) * 1000)))
            back_after = time.monotonic() - clicked
            print(f"the page showed worker 0 dead, then back as a new pid, {back_after * 1000:.0f} ms after the click")
            assert back_after <= 2.0
            page.wait_for_selector("#timeline li", timeout=2_000)
            assert "drill: killed worker 0" in page.inner_text("#timeline")

            # SIGKILL of a whole node: the page marks it dead
            n2.proc.send_signal(signal.SIGKILL)
            page.wait_for_selector(f'#members tr[data-member="{n2.name}"][data-status="dead"]', timeout=20_000)
            # its workers are what it said last: unknown now, and no kill button for them
            page.wait_for_selector(f'#nodes section[data-node="{n2.name}"] tr[data-alive="unknown"]', timeout=5_000)
            assert page.query_selector(f'button.kill[data-node="{n2.name}"]') is None
            page.wait_for_timeout(1500)  # (a little more history in the charts for the screenshot)
            page.screenshot(path=str(_artifact(tmp_path, "dashboard.png")), full_page=True)
            assert errors == [], f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def test_gorilix_node_dashboard_starts_one_beside_the_node_and_it_ends_with_the_node_however_it_ends(
        gorilix_node: Callable[..., NodeProcess]) -> None:
    import psutil

    port = free_port()
    node = gorilix_node("--dashboard", f"127.0.0.1:{port}")
    wait_for(lambda: any(f"dashboard of {node.name} at http://127.0.0.1:{port}/" in line for line in node.lines), 20.0,
          "the dashboard's address")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as response:
        assert json.loads(response.read())["node"] == node.name  # (loopback, no drills: no token)
    [dashboard] = [p for p in psutil.Process(node.pid).children() if "dashboard" in " ".join(p.cmdline())]
    node.proc.send_signal(signal.SIGKILL)  # the CLI process dies without a word: its pipe closes
    wait_for(lambda: not dashboard.is_running() or dashboard.status() == psutil.STATUS_ZOMBIE, 5.0,
          "the dashboard gone with its node")


def test_a_member_named_with_255_characters_of_html_is_text_that_fits_the_window(
        cluster: tuple[NodeProcess, NodeProcess], dashboard: Dashboard) -> None:
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    name = '<img src=x onerror="window.PWNED=1">' + "x" * 219  # (a node name may be 255 characters)
    hostile = NodeProcess(name, free_port(), seeds=[cluster[0].address], workers=1, args=FAST)
    try:
        hostile.wait_ready(30.0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                dialogs: list[str] = []
                page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
                page.goto(dashboard.url)
                page.wait_for_function("n => [...document.querySelectorAll('#nodes section')].some("
                                       "s => s.dataset.node === n)", arg=name, timeout=15_000)
                page.wait_for_timeout(1500)  # (a tick or two in the charts' legends)
                assert page.evaluate("document.querySelectorAll('img').length") == 0
                assert page.evaluate("window.PWNED") is None and dialogs == []
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
                    "a long name widens the page past the window"
            finally:
                browser.close()
    finally:
        hostile.reap()


def test_the_home_node_killed_and_started_again_at_its_address_is_polled_again(
        cluster: tuple[NodeProcess, NodeProcess], dashboard: Dashboard) -> None:
    n1, n2 = cluster

    def node() -> dict[str, Any]:
        return dict(json.loads(dashboard.get("/api/state"))["nodes"][n1.name])

    old = wait_for(lambda: (v := node())["reachable"] and v, 10.0, "the home node polled")
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait(10)
    wait_for(lambda: not node()["reachable"], 10.0, "the killed node shown unreachable")
    time.sleep(HEARTBEAT_EVERY * (HEARTBEAT_MISSES + 1))  # (down long enough for the dashboard's client to give up)
    again = NodeProcess(n1.name, n1.port, seeds=[n2.address], workers=2, args=FAST)
    try:
        again.wait_ready(30.0)
        back = wait_for(lambda: (v := node())["reachable"] and v, 15.0, "the node started again polled again")
        assert {w["pid"] for w in back["workers"]}.isdisjoint(w["pid"] for w in old["workers"])
    finally:
        again.reap()
