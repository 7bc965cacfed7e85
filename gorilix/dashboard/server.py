"""The dashboard's web server: the page, ``/api/state``, the drill button's ``/api/kill-worker`` and ``/metrics``.

The standard library's threaded HTTP server: a browser or a scraper costs
this process a thread, never the node. Every request is checked before it
is answered (the token where one is needed, the Host header against DNS
rebinding, the drill's body), and a bad one gets a one-line JSON error.
Connections are bounded (:data:`MAX_CONNECTIONS`, each request's headers,
a silent client's time), so holding many open or sending endless headers
cannot exhaust the process.
"""

from __future__ import annotations

import hmac
import http.client
import io
import json
import logging
import mimetypes
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from gorilix.cluster.config import is_loopback
from gorilix.dashboard.collect import Collector
from gorilix.dashboard.metrics import ClusterMetrics
from gorilix.transport.errors import GorilixError, InvalidArgument

log = logging.getLogger(__name__)

#: The largest drill request read (it is a node name and a worker number).
MAX_BODY = 4096
#: Connections served at once (each is a thread). Past it the one that has waited longest for a request
#: is closed to make room (a browser just opens another), or, when every one is busy, the new one is
#: refused with 503: a client holding hundreds of half-sent requests cannot lock the page out.
MAX_CONNECTIONS = 64
#: Bytes of one request's headers (a browser sends a few KiB; the standard library alone allows 100
#: lines of 64 KiB, which many connections turn into gigabytes).
MAX_HEADERS = 64 * 1024
#: Seconds a client may stay silent, between requests or within one, before its connection is closed.
IDLE_TIMEOUT = 30.0
#: Connections the kernel queues until they are accepted (the standard library's 5 drops the SYNs of a
#: burst, which then wait a second for their retry).
BACKLOG = 128


def static_files() -> dict[str, bytes]:
    """The page's files, read once at start (name -> content); the server serves these names only."""
    folder = resources.files("gorilix.dashboard") / "static"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and not entry.name.startswith((".", "README"))}


class _HeadersReader(io.BufferedReader):
    """A connection's reader that counts the bytes of a request's headers while ``left`` is set: past it,
    LineTooLong, which the standard library answers with 431."""

    left: int | None = None

    def readline(self, size: int | None = -1, /) -> bytes:
        if self.left is None:
            return super().readline(size)
        wanted = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        line = super().readline(wanted)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong(f"request headers (at most {MAX_HEADERS} bytes)")
        return line


class DashboardServer(ThreadingHTTPServer):
    """Serves one collector's state. ``token`` None: no token asked (loopback, no drills)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], collector: Collector, token: str | None,
                 files: dict[str, bytes] | None = None) -> None:
        self.collector = collector
        self.token = token
        self.files = static_files() if files is None else files
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ClusterMetrics(collector.tracker, collector.lock))
        if ":" in address[0]:  # (an IPv6 address: the standard library's server binds IPv4 unless told)
            self.address_family = socket.AF_INET6
        # Open connections -> since when each waits for a request (None: one is being answered).
        self._connections: dict[socket.socket, float | None] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)
        host = address[0]
        # The names a browser may use for us: anything else in Host is a page of another site that
        # resolved its own name to our address (DNS rebinding), and is refused.
        self.hosts = {host, "localhost", "127.0.0.1", "[::1]", "::1"} if is_loopback(host) else None

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, within MAX_CONNECTIONS (see there)."""
        evicted: socket.socket | None = None
        with self._connections_lock:
            full = len(self._connections) >= MAX_CONNECTIONS
            waiting = [(since, conn) for conn, since in self._connections.items() if since is not None] if full else []
            if waiting:
                evicted = min(waiting, key=lambda pair: pair[0])[1]
                del self._connections[evicted]
            if not full or waiting:
                self._connections[request] = time.monotonic()
        if full and not waiting:
            self._refuse(request)
            return
        if evicted is not None:
            try:
                evicted.shutdown(socket.SHUT_RDWR)  # (its thread reads the end of the stream, and ends)
            except OSError:
                pass  # (closed meanwhile)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def waiting(self, connection: socket.socket) -> None:
        """The connection waits for its next request: it may be closed to make room."""
        with self._connections_lock:
            if connection in self._connections:
                self._connections[connection] = time.monotonic()

    def busy(self, connection: socket.socket) -> bool:
        """A request was read on the connection: it is answered, not closed. False if it was closed already."""
        with self._connections_lock:
            if connection not in self._connections:
                return False
            self._connections[connection] = None
            return True

    def _forget(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)

    def _refuse(self, request: socket.socket) -> None:
        body = json.dumps({"error": f"the dashboard is answering {MAX_CONNECTIONS} requests already: "
                                    "try again in a moment"}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.setblocking(False)  # (the accepting thread never waits on a client)
            request.send(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside our handling (reset or cut by the client while its request was
        read): a line in the debug log, not a traceback on stderr for every client that hangs up."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("dashboard connection from %s: %s", client_address[0], error)
        else:
            log.exception("dashboard connection from %s failed", client_address[0])

    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/" + (f"#token={self.token}" if self.token else "")


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "gorilix-dashboard"
    protocol_version = "HTTP/1.1"
    # (the standard library's default, HTTP/0.9, answers a request line it cannot parse without a status line)
    default_request_version = "HTTP/1.0"
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.reader = _HeadersReader(self.rfile.detach())  # type: ignore[attr-defined]
        self.rfile = self.reader

    def handle_one_request(self) -> None:
        self.server.waiting(self.connection)  # (a silent client is cut by the standard library after `timeout`)
        super().handle_one_request()

    def parse_request(self) -> bool:
        """The standard library's, reading at most MAX_HEADERS bytes of headers."""
        self.reader.left = MAX_HEADERS
        try:
            parsed = super().parse_request()
        finally:
            self.reader.left = None
        if parsed and not self.server.busy(self.connection):
            self.close_connection = True  # (closed to make room while its headers came: not answered)
            return False
        return parsed

    # -- dispatch -----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._dispatch({"/api/state": self._state, "/metrics": self._metrics})

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/api/kill-worker": self._kill_worker})

    def _dispatch(self, api: dict[str, Callable[[dict[str, list[str]]], None]]) -> None:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not self._host_allowed():
                self._error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header: open the dashboard by its "
                            "address, as `gorilix dashboard` printed it")
                return
            if url.path in api:
                if self._authorized(query):
                    api[url.path](query)
                else:
                    self._error(HTTPStatus.UNAUTHORIZED, "token required: open the address `gorilix dashboard` "
                                "printed, or give the token it prints with --print-token")
                return
            if self.command == "GET":
                self._static(url.path)
                return
            self._error(HTTPStatus.NOT_FOUND, f"no {self.command} {url.path} here")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the browser went away, or stopped sending
        except Exception as exc:  # a bug must not end the server: answer 500, say it in the log
            log.exception("dashboard request %s %s failed", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    def _host_allowed(self) -> bool:
        allowed = self.server.hosts
        if allowed is None:
            return True  # (off loopback the token guards every request)
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in allowed

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = ""
        header = self.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        elif query.get("token"):
            given = query["token"][0]
        return hmac.compare_digest(given.encode(), token.encode())

    # -- answers --------------------------------------------------------------------

    def _state(self, query: dict[str, list[str]]) -> None:
        try:
            since = int(query.get("since", ["0"])[0])
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "since must be a tick number (the seq of the last state seen)")
            return
        collector = self.server.collector
        with collector.lock:
            state = collector.tracker.state(since)
        self._json(HTTPStatus.OK, state)

    def _metrics(self, query: dict[str, list[str]]) -> None:
        self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))

    def _kill_worker(self, query: dict[str, list[str]]) -> None:
        collector = self.server.collector
        if not collector.tracker.drills:
            self._error(HTTPStatus.FORBIDDEN, "drills are off: start the dashboard with --allow-drills")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            # (a form on another site cannot send this type without the browser asking us first)
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the drill as application/json")
            return
        request = self._body()
        if request is None:
            return
        node, worker = request.get("node"), request.get("worker")
        if not isinstance(node, str) or type(worker) is not int or worker < 0:
            self._error(HTTPStatus.BAD_REQUEST, 'give {"node": "<name>", "worker": <number>}')
            return
        try:
            pid = collector.kill_worker(node, worker)
        except LookupError as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc).strip("'\""))
            return
        except InvalidArgument as exc:  # (no such worker there: the node says which it has)
            self._error(HTTPStatus.NOT_FOUND, " ".join(str(exc).split()))
            return
        except GorilixError as exc:
            self._error(HTTPStatus.BAD_GATEWAY, " ".join(str(exc).split()))
            return
        with collector.lock:
            state = collector.tracker.state(0)
        self._json(HTTPStatus.OK, {"ok": True, "node": node, "worker": worker, "pid": pid, "state": state})

    def _body(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, f"the drill's body must be JSON of at most {MAX_BODY} bytes")
            return None
        try:
            value = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            value = None
        if not isinstance(value, dict):
            self._error(HTTPStatus.BAD_REQUEST, 'the drill\'s body must be a JSON object: {"node": ..., "worker": ...}')
            return None
        return value

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        content = self.server.files.get(name) if path == "/" or path.startswith("/static/") else None
        if content is None:
            self._error(HTTPStatus.NOT_FOUND, f"no page {path} here")
            return
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith(("javascript", "json")):
            kind += "; charset=utf-8"
        self._send(HTTPStatus.OK, kind, content)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, a method we do not serve, headers
        too large) as one JSON line like ours, instead of its HTML page."""
        self.log_error("code %d, message %s", code, message)
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._error(code, message or phrase)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, "application/json", json.dumps(value, default=str).encode())

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # (a refused request's body may be unread: start afresh)
        self._json(status, {"error": message})

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "img-src 'self' data:; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        log.debug("%s %s", self.address_string(), format % args)
