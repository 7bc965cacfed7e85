"""The dashboard without nodes: the tracker's decisions, /metrics' families, and what the server refuses."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import wait_for
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from gorilix.cluster.config import is_loopback
from gorilix.cluster.security import dashboard_token
from gorilix.dashboard import DashboardError, DashboardOptions, token_for
from gorilix.dashboard import server as server_module
from gorilix.dashboard.collect import MAX_POLLED, Access, Collector, Poller
from gorilix.dashboard.metrics import ClusterMetrics, node_metrics
from gorilix.dashboard.server import MAX_CONNECTIONS, MAX_HEADERS, DashboardServer
from gorilix.dashboard.tracker import HISTORY, NodeAnswer, Tracker, rates
from gorilix.transport.errors import NotRunning


def _worker(slot: int, pid: int, alive: bool = True, cpu: float = 10.0) -> dict[str, Any]:
    return {"id": slot, "pid": pid, "alive": alive, "actors": 3, "cpu_percent": cpu, "rss_bytes": 1 << 20,
            "mailbox": 2, "msgs_per_s": 5.0, "restarts": 0, "queued_bytes": 0, "stuck": None}


def _answer(name: str, taken: float, *, workers: list[dict[str, Any]] | None = None,
            members: list[dict[str, Any]] | None = None, **stats: Any) -> NodeAnswer:
    return NodeAnswer(name, taken, {"workers": workers if workers is not None else [_worker(0, 100)],
                                    "stats": {"forwarded": 0, **stats}}, [], members)


def _member(name: str, status: str, port: int = 7946) -> dict[str, Any]:
    return {"name": name, "address": "127.0.0.1", "port": port, "status": status, "incarnation": 1, "workers": 1}


# -- the tracker ------------------------------------------------------------------------------


def test_rates_are_counter_growth_per_second_between_two_answers() -> None:
    before = _answer("n1", 10.0, forwarded=100, asks=40, tells=50, dead_letters=1, worker_deaths=0, restarts=2)
    after = _answer("n1", 12.0, forwarded=300, asks=100, tells=130, dead_letters=5, worker_deaths=1, restarts=6)
    point = rates(before, after)
    assert point["msgs_per_s"] == 100.0 and point["asks_per_s"] == 30.0 and point["tells_per_s"] == 40.0
    assert point["dead_letters_per_s"] == 2.0 and point["deaths"] == 1 and point["restarts"] == 4
    assert point["cpu"] == {"0": 10.0}


def test_a_restarted_node_counts_from_zero_again_never_a_negative_rate() -> None:
    point = rates(_answer("n1", 10.0, forwarded=5000), _answer("n1", 11.0, forwarded=30))
    assert point["msgs_per_s"] == 30.0


def test_member_changes_and_worker_deaths_go_on_the_timeline_once() -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 1.0, members=[_member("n1", "alive"), _member("n2", "alive")]))
    tracker.tick(1.5)
    tracker.answered(_answer("n1", 2.0, members=[_member("n1", "alive"), _member("n2", "suspect")],
                             workers=[_worker(0, 100, alive=False)]))
    tracker.tick(2.5)
    tracker.tick(3.0)  # nothing new: nothing said again
    tracker.answered(_answer("n1", 3.5, members=[_member("n1", "alive"), _member("n2", "dead")],
                             workers=[_worker(0, 200)]))
    tracker.tick(4.0)
    texts = [e["text"] for e in tracker.timeline]
    assert texts == ["n1: alive", "n2: alive", "worker 0 of n1 died (pid 100)", "n2: alive -> suspect",
                     "worker 0 of n1 back as pid 200", "n2: suspect -> dead"]
    assert [m["status"] for m in tracker.state()["members"]] == ["alive", "dead"]


def test_a_worker_replaced_between_two_polls_is_still_seen() -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 1.0, workers=[_worker(0, 100)]))
    tracker.answered(_answer("n1", 2.0, workers=[_worker(0, 101)]))
    assert [e["text"] for e in tracker.timeline] == ["worker 0 of n1 restarted: pid 100 -> 101"]


def test_the_member_table_falls_back_to_another_node_while_home_does_not_answer() -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 1.0, members=[_member("n1", "alive"), _member("n2", "alive")]))
    tracker.answered(_answer("n2", 1.0, members=[_member("n1", "alive"), _member("n2", "alive")]))
    tracker.tick(1.0)
    assert tracker.viewed_from == "n1"
    tracker.failed("n1", 2.0, "did not answer")
    tracker.failed("n1", 3.0, "did not answer")  # said once
    tracker.answered(_answer("n2", 3.0, members=[_member("n1", "dead"), _member("n2", "alive")]))
    tracker.tick(3.0)
    state = tracker.state()
    assert state["viewed_from"] == "n2" and state["members"][0]["status"] == "dead"
    assert state["nodes"]["n1"]["reachable"] is False and state["nodes"]["n1"]["error"] == "did not answer"
    assert [e["text"] for e in tracker.timeline].count("n1 does not answer: did not answer") == 1


def test_an_answer_older_than_the_one_kept_is_ignored() -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 5.0, forwarded=50))
    tracker.answered(_answer("n1", 4.0, forwarded=10))
    assert tracker.state()["nodes"]["n1"]["stats"]["forwarded"] == 50


def test_history_keeps_the_last_ten_minutes_and_answers_what_came_after_since() -> None:
    tracker = Tracker(home="n1")
    for second in range(HISTORY + 50):
        tracker.answered(_answer("n1", float(second), forwarded=second * 10))
        tracker.tick(second + 0.5)
    state = tracker.state()
    assert len(state["history"]) == HISTORY and state["history"][0]["seq"] == 51
    assert [p["seq"] for p in tracker.state(since=state["seq"] - 2)["history"]] == [state["seq"] - 1, state["seq"]]
    assert state["history"][-1]["nodes"]["n1"]["msgs_per_s"] == 10.0


def test_a_tick_without_a_new_answer_leaves_a_gap_for_that_node() -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 1.0))
    assert "n1" in tracker.tick(1.5)["nodes"]
    assert tracker.tick(2.5)["nodes"] == {}


# -- /metrics -----------------------------------------------------------------------------


def _stats(**more: Any) -> dict[str, Any]:
    return {"forwarded": 10, "asks": 4, "tells": 2, "replies": 4, "worker_deaths": 1, "actors": 7,
            "queue_refusals": 0, "malformed": 0, "dead_letters_by_reason": {"no_actor": 2, "lost_in_death": 3},
            "restarts_by_supervisor": {"root": 5},
            "gossip": {"sent": 9, "received": 8, "malformed": 1, "dropped": 2, "suspicions": 0},
            "ask_latency": {"bounds": [0.001, 0.01], "counts": [3, 1, 1], "sum": 0.5, "count": 5,
                            "sample_every": 16}, **more}


def test_metrics_parse_with_prometheus_clients_own_parser() -> None:
    nodes = {"n1": {"reachable": True, "stats": _stats(), "workers": [_worker(0, 100), _worker(1, 101)]},
             "n2": {"reachable": False, "stats": _stats(), "workers": [_worker(0, 200)]}}
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    class Fixed:
        def collect(self) -> Iterator[Any]:
            return node_metrics(nodes)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("gorilix_node_up", (("node", "n1"),))] == 1.0
    assert samples[("gorilix_node_up", (("node", "n2"),))] == 0.0
    assert ("gorilix_messages_routed_total", (("node", "n2"),)) not in samples  # (not repeated while it is down)
    assert samples[("gorilix_messages_routed_total", (("node", "n1"),))] == 10.0
    assert samples[("gorilix_dead_letters_total", (("node", "n1"), ("reason", "lost_in_death")))] == 3.0
    assert samples[("gorilix_supervisor_restarts_total", (("node", "n1"), ("supervisor", "root")))] == 5.0
    assert samples[("gorilix_gossip_packets_dropped_total", (("node", "n1"), ("reason", "refused")))] == 2.0
    assert samples[("gorilix_worker_cpu_percent", (("node", "n1"), ("worker", "1")))] == 10.0
    # the histogram: cumulative buckets, +Inf equal to the count
    assert samples[("gorilix_ask_latency_seconds_bucket", (("le", "0.001"), ("node", "n1")))] == 3.0
    assert samples[("gorilix_ask_latency_seconds_bucket", (("le", "0.01"), ("node", "n1")))] == 4.0
    assert samples[("gorilix_ask_latency_seconds_bucket", (("le", "+Inf"), ("node", "n1")))] == 5.0
    assert samples[("gorilix_ask_latency_seconds_count", (("node", "n1"),))] == 5.0


# -- the token ------------------------------------------------------------------------------


def test_no_token_on_loopback_without_drills_and_one_from_the_secret_otherwise(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o600)
    assert token_for(DashboardOptions(node="x:1", bind="127.0.0.1:8270")) is None
    token = token_for(DashboardOptions(node="x:1", bind="0.0.0.0:8270", secret_file=str(secret)))
    assert token == dashboard_token(b"s" * 32) and b"s" * 32 not in bytes.fromhex(str(token))
    assert token_for(DashboardOptions(node="x:1", bind="127.0.0.1:8270", allow_drills=True,
                                      secret_file=str(secret))) == token
    assert dashboard_token(b"t" * 32) != token


def test_a_dashboard_off_loopback_without_a_secret_is_refused() -> None:
    with pytest.raises(DashboardError, match="needs the cluster's secret"):
        token_for(DashboardOptions(node="x:1", bind="0.0.0.0:8270", insecure=True))
    with pytest.raises(DashboardError, match="--allow-drills"):
        token_for(DashboardOptions(node="x:1", bind="127.0.0.1:8270", insecure=True, allow_drills=True))


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")


# -- the server ---------------------------------------------------------------------------------


class _NoNodes(Collector):
    """A collector that polls nothing: the tests feed its tracker; its drill kills a pretend worker."""

    def __init__(self, drills: bool) -> None:
        super().__init__("127.0.0.1:1", Access(), Tracker(home="n1", drills=drills))
        self.killed: list[tuple[str, int]] = []

    def kill_worker(self, node: str, worker: int) -> int:
        if node != "n1":
            raise LookupError(f"no node {node!r} known to this dashboard")
        self.killed.append((node, worker))
        return 4242


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[DashboardServer] = []

    def start(token: str | None = None, drills: bool = False) -> tuple[DashboardServer, _NoNodes]:
        collector = _NoNodes(drills)
        collector.tracker.answered(_answer("n1", 1.0, members=[_member("n1", "alive")]))
        collector.tracker.tick(1.0)
        server = DashboardServer(("127.0.0.1", 0), collector, token,
                                 files={"index.html": b"<html>page</html>", "dashboard.js": b"'use strict';"})
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server, collector

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _request(server: DashboardServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_page_and_its_state_without_a_token_on_loopback(serve: Any) -> None:
    server, _ = serve()
    status, headers, body = _request(server, "GET", "/")
    assert status == 200 and body == b"<html>page</html>" and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, body = _request(server, "GET", "/api/state?since=0")
    state = json.loads(body)
    assert status == 200 and state["node"] == "n1" and state["members"][0]["name"] == "n1"
    assert _request(server, "GET", "/static/dashboard.js")[0] == 200
    for path in ("/static/../__init__.py", "/static/nothing.js", "/etc/passwd", "/static/%2e%2e/server.py"):
        assert _request(server, "GET", path)[0] == 404, path
    assert _request(server, "GET", "/api/state?since=x")[0] == 400


def test_a_page_of_another_site_resolving_to_loopback_is_refused(serve: Any) -> None:
    server, _ = serve()
    status, _, body = _request(server, "GET", "/api/state", headers={"Host": "evil.example:8270"})
    assert status == 421 and "Host" in json.loads(body)["error"]
    assert _request(server, "GET", "/", headers={"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_with_a_token_every_api_and_metrics_request_needs_it(serve: Any) -> None:
    server, _ = serve(token="abc123")
    assert server.url().endswith("/#token=abc123")
    for path in ("/api/state", "/metrics"):
        status, _, body = _request(server, "GET", path)
        assert status == 401 and "token" in json.loads(body)["error"]
        assert _request(server, "GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert _request(server, "GET", path, headers={"Authorization": "Bearer abc123"})[0] == 200
    assert _request(server, "GET", "/metrics?token=abc123")[0] == 200
    assert _request(server, "GET", "/")[0] == 200  # (the page itself holds nothing: it asks for the token)


def test_the_drill_needs_drills_on_json_and_a_known_worker(serve: Any) -> None:
    off, _ = serve()
    json_type = {"Content-Type": "application/json"}
    status, _, body = _request(off, "POST", "/api/kill-worker", b'{"node": "n1", "worker": 0}', json_type)
    assert status == 403 and "--allow-drills" in json.loads(body)["error"]
    server, collector = serve(drills=True)
    assert _request(server, "POST", "/api/kill-worker", b'{"node": "n1", "worker": 0}',
                    {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    for bad in (b"not json", b"[1]", b'{"node": "n1", "worker": "0"}', b'{"node": "n1", "worker": -1}',
                b'{"node": 5, "worker": 0}', b"{}"):
        assert _request(server, "POST", "/api/kill-worker", bad, json_type)[0] == 400, bad
    assert _request(server, "POST", "/api/kill-worker", b"x" * 5000, json_type)[0] == 400
    assert _request(server, "POST", "/api/kill-worker", b'{"node": "n9", "worker": 0}', json_type)[0] == 404
    assert collector.killed == []
    status, _, body = _request(server, "POST", "/api/kill-worker", b'{"node": "n1", "worker": 1}', json_type)
    answer = json.loads(body)
    assert status == 200 and answer["pid"] == 4242 and answer["state"]["node"] == "n1"
    assert collector.killed == [("n1", 1)]
    assert _request(server, "POST", "/api/state", b"{}", json_type)[0] == 404


def _raw(server: DashboardServer, data: bytes) -> tuple[bytes, bytes]:
    """Send ``data`` as is; the status line and the body of the answer (the connection is closed after)."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def test_what_the_standard_library_refuses_is_answered_as_one_json_line_too(serve: Any, capfd: Any) -> None:
    server, _ = serve(token="abc123", drills=True)
    host = b"Host: 127.0.0.1\r\n"
    for request, status in [
        (b"OPTIONS /api/kill-worker HTTP/1.1\r\n" + host + b"Origin: http://evil.example\r\n\r\n", b"501"),
        (b"PUT /api/state HTTP/1.1\r\n" + host + b"\r\n", b"501"),
        (b"GET /a b HTTP/1.1\r\n" + host + b"\r\n", b"400"),
        (b"GET / HTTP/2.0\r\n" + host + b"\r\n", b"505"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + host + b"\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + host + b"X: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + host + b"".join(b"X%d: y\r\n" % i for i in range(101)) + b"\r\n", b"431"),
    ]:
        line, body = _raw(server, request)
        assert line.split(b" ")[1] == status, (request[:40], line)
        assert b"<" not in line and body.count(b"\n") == 0 and "error" in json.loads(body), (request[:40], body)
        assert b"Access-Control" not in body
    # a client that resets its connection mid-request is no traceback on stderr
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert _request(server, "GET", "/")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def _handler_threads() -> int:
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


def test_many_half_sent_requests_neither_lock_the_page_out_nor_cost_a_thread_each(serve: Any) -> None:
    server, _ = serve()
    port = server.server_address[1]
    held = []
    try:
        for _ in range(MAX_CONNECTIONS + 60):  # (slowloris: a request line and a header, then nothing)
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(sock)
        assert _request(server, "GET", "/")[0] == 200
        assert _request(server, "GET", "/api/state")[0] == 200
        wait_for(lambda: _handler_threads() <= MAX_CONNECTIONS, 5.0, "the closed connections' threads gone")
    finally:
        for sock in held:
            sock.close()


def test_request_headers_are_read_up_to_max_headers(serve: Any) -> None:
    server, _ = serve()
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"  # (lines the standard library allows, 65 KiB of them)
    status, body = _raw(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line * (MAX_HEADERS // len(line) + 1))
    assert status.split(b" ")[1] == b"431" and "error" in json.loads(body)
    assert _request(server, "GET", "/", headers={"X-Filler": "a" * 8000})[0] == 200


def test_when_every_connection_is_busy_a_new_one_is_refused_and_a_silent_one_is_cut(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(server_module.Handler, "timeout", 1.0)
    server, _ = serve(token="abc123", drills=True)
    held = []
    try:
        for _ in range(4):  # (a drill whose body never comes: busy, not waiting, so not closed to make room)
            sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
            sock.sendall(b"POST /api/kill-worker HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer abc123\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
            held.append(sock)
        wait_for(lambda: len(server._connections) == 4 and not any(server._connections.values()), 5.0,
                 "four busy connections")
        status, body = _raw(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status.split(b" ")[1] == b"503" and "try again" in json.loads(body)["error"]
        # silent for the timeout: cut, and the page is served again
        wait_for(lambda: _request(server, "GET", "/")[0] == 200, 5.0, "the page served again")
        assert all(sock.recv(100) == b"" for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_the_page_is_served_on_ipv6_loopback_too() -> None:
    collector = _NoNodes(False)
    try:
        server = DashboardServer(("::1", 0), collector, None, files={"index.html": b"<html>v6</html>"})
    except OSError as exc:  # (a machine with IPv6 off)
        pytest.skip(f"no IPv6 loopback here: {exc}")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        assert server.url().startswith("http://[::1]:")
        connection = http.client.HTTPConnection("::1", server.server_address[1], timeout=10)
        connection.request("GET", "/", headers={"Host": f"[::1]:{server.server_address[1]}"})
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"<html>v6</html>"
        connection.close()
    finally:
        server.shutdown()
        server.server_close()


def test_new_members_get_a_poller_and_one_that_moved_is_polled_at_its_new_address() -> None:
    collector = Collector("127.0.0.1:1", Access(timeout=0.2), Tracker(home="n1"))
    try:
        collector.tracker.answered(_answer("n1", 1.0, members=[_member("n1", "alive", 1), _member("n2", "alive", 2),
                                                                 _member("n3", "dead", 3)]))
        collector.tick()
        assert sorted(collector.pollers) == ["n2"]  # (not the dead one; the home one is made by start())
        assert collector.pollers["n2"].address == "127.0.0.1:2"
        collector.tracker.answered(_answer("n1", 2.0, members=[_member("n1", "alive", 1), _member("n2", "alive", 5)]))
        collector.tick()
        assert collector.pollers["n2"].address == "127.0.0.1:5"
    finally:
        collector.stop()


class _Remote:
    """A node's client as the poller uses it: answers, or has ended (its node stopped or restarted)."""

    def __init__(self, name: str, ended: bool = False) -> None:
        self.name = name
        self.ended = ended
        self.closed = False
        self.ops: list[str] = []

    def control(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        self.ops.append(op)
        if self.ended:
            raise NotRunning(f"node {self.name} at 127.0.0.1:2 stopped answering; connect again once it runs")
        return {"status": {"workers": [_worker(0, 100), _worker(1, 101)], "stats": {}}, "supervision": [],
                "members": [], "kill_worker": 100}[op]

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class _Scripted(Access):
    """Hands out the given clients, one per connect."""

    remotes: list[_Remote] = field(default_factory=list)

    def connect(self, address: str) -> Any:
        return self.remotes.pop(0)


def test_a_node_restarted_at_the_same_address_is_connected_again_and_an_impostor_is_refused() -> None:
    ended, fresh, impostor = _Remote("n2", ended=True), _Remote("n2"), _Remote("n9")
    tracker = Tracker(home="n1")
    poller = Poller("n2", "127.0.0.1:2", _Scripted(remotes=[ended, fresh, impostor]), lambda: 1.0, tracker,
                    threading.Lock())
    try:
        poller.poll()  # the old connection saw the node go: it is dropped...
        assert tracker.nodes["n2"].error is not None and ended.closed
        poller.poll()  # ...and the next poll connects again
        assert tracker.nodes["n2"].error is None and tracker.state()["nodes"]["n2"]["reachable"]
        fresh.ended = True
        poller.poll()
        poller.poll()  # another node answers at the address now: not shown as n2
        assert "node n9 answers at 127.0.0.1:2" in str(tracker.nodes["n2"].error) and impostor.closed
    finally:
        poller.stop()


def test_thousands_of_live_members_get_at_most_max_polled_pollers_and_dead_ones_lose_theirs() -> None:
    collector = Collector("127.0.0.1:1", Access(timeout=0.2), Tracker(home="n1"))
    names = [f"m{i:04d}" for i in range(2000)]
    try:  # (a member table may list 10,000, made up ones too: each poller is a thread and a connection)
        collector.tracker.answered(_answer("n1", 1.0, members=[_member("n1", "alive", 1)] + [
            _member(name, "alive", 20000 + i) for i, name in enumerate(names)]))
        collector.tick()
        assert len(collector.pollers) == MAX_POLLED
        state = collector.tracker.state()
        assert state["unpolled"] == len(names) - MAX_POLLED
        assert sum("live members are not polled" in e["text"] for e in state["timeline"]) == 1
        started = list(collector.pollers.values())
        collector.tracker.answered(_answer("n1", 2.0, members=[_member("n1", "alive", 1)] + [
            _member(name, "dead", 20000 + i) for i, name in enumerate(names)]))
        collector.tick()  # all dead: their threads and connections end
        assert collector.pollers == {} and collector.tracker.state()["unpolled"] == 0
        assert all(poller.join(5.0) for poller in started)
        collector.tracker.answered(_answer("n1", 3.0, members=[_member("n1", "alive", 1)]))
        collector.tick()  # no longer listed: their rows go too
        assert set(collector.tracker.state()["nodes"]) <= {"n1"}
    finally:
        collector.stop()


def test_a_drill_on_a_worker_the_node_never_listed_is_refused_without_asking_the_node() -> None:
    remote = _Remote("n1")
    collector = Collector("127.0.0.1:1", _Scripted(remotes=[remote]), Tracker(home="n1", drills=True))
    collector.pollers["n1"] = Poller("n1", "127.0.0.1:1", collector.access, collector.current_interval,
                                     collector.tracker, collector.lock)
    try:
        collector.pollers["n1"].poll()
        for worker in (2, 99, 2**63, 10**100):
            with pytest.raises(LookupError, match="node n1 has no worker .*: its workers are 0, 1"):
                collector.kill_worker("n1", worker)
        assert "kill_worker" not in remote.ops
        assert collector.kill_worker("n1", 1) == 100 and "kill_worker" in remote.ops
    finally:
        collector.stop()


@pytest.mark.parametrize("status", [
    {"workers": [dict(_worker(0, 200), cpu_percent="lots")], "stats": {}},
    {"workers": [dict(_worker(0, 200), rss_bytes=float("nan"))], "stats": {}},
    {"workers": [dict(_worker(0, 200), id="0")], "stats": {}},
    {"workers": {"0": _worker(0, 200)}, "stats": {}},
    {"workers": [], "stats": {"forwarded": "many"}},
    {"workers": [], "stats": {"restarts_by_supervisor": {"root": [1]}}},
    {"workers": [], "stats": {"gossip": {"sent": "x", "refusals": {}}}},
    {"workers": [], "stats": {"ask_latency": {"bounds": [0.1], "counts": [1], "sum": 1.0}}},
    {"workers": [dict(_worker(0, 200), stuck={"seconds": float("inf")})], "stats": {}},
])
def test_a_malformed_answer_is_a_failed_poll_and_stops_nothing_else(status: dict[str, Any]) -> None:
    tracker = Tracker(home="n1")
    tracker.answered(_answer("n1", 1.0, forwarded=10))
    tracker.tick(1.0)
    tracker.answered(NodeAnswer("n2", 1.5, status, [], None))  # (another version of gorilix, or a liar)
    tracker.answered(_answer("n1", 2.0, forwarded=30))
    point = tracker.tick(2.0)
    assert point["nodes"]["n1"]["msgs_per_s"] == 20.0
    state = tracker.state()
    assert state["nodes"]["n2"]["reachable"] is False and "malformed" in state["nodes"]["n2"]["error"]
    json.loads(json.dumps(state), parse_constant=lambda word: pytest.fail(f"{word} in /api/state"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterMetrics(tracker, threading.Lock()))
    assert b'gorilix_node_up{node="n2"} 0.0' in generate_latest(registry)


def test_numbers_an_answer_leaves_out_count_as_zero() -> None:
    tracker = Tracker(home="n1")  # (another version of gorilix may leave a field out, or send None)
    tracker.answered(NodeAnswer("n1", 1.0, {"workers": [dict(_worker(0, 200), cpu_percent=None)],
                                            "stats": {"gossip": {"sent": None}}}, [], None))
    assert tracker.tick(1.0)["nodes"]["n1"]["cpu"] == {"0": 0.0}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterMetrics(tracker, threading.Lock()))
    assert b'gorilix_gossip_packets_sent_total{node="n1"} 0.0' in generate_latest(registry)


def test_an_answer_of_the_wrong_type_is_a_failed_poll_not_a_broken_poller() -> None:
    class Odd(_Remote):
        def control(self, op: str, *args: Any, timeout: float | None = None) -> Any:
            return ["not", "a", "status"] if op == "status" else super().control(op, *args, timeout=timeout)

    tracker = Tracker(home="n1")
    poller = Poller("n2", "127.0.0.1:2", _Scripted(remotes=[Odd("n2")]), lambda: 1.0, tracker, threading.Lock())
    try:
        poller.poll()
        assert "answered 'status' with a list" in str(tracker.nodes["n2"].error)
    finally:
        poller.stop()


def test_print_token_prints_the_token_derived_from_the_secret_never_the_secret(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from gorilix.cli import main

    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 32)
    secret.chmod(0o600)
    result = CliRunner().invoke(main, ["dashboard", "--print-token", "--secret-file", str(secret)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == dashboard_token(b"k" * 32) and "k" * 16 not in result.output
    missing = CliRunner().invoke(main, ["dashboard", "--print-token", "--secret-file", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
