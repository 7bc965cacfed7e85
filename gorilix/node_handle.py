"""The program's side of its node: start a node process (or attach to a running node), know at once when it ends.

:class:`NodeHandle` starts :mod:`gorilix.node_main` with ``python -P -c`` (not
multiprocessing, which would import the user's ``__main__`` into the node)
and keeps one end of a socket pair to it: the start-up handshake travels on
it, and it becomes readable, for good, when the node process ends. Clients
poll it beside their socket (:class:`NodeEnd`), so a call waiting on a node
that is gone fails at once instead of waiting for its timeout.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from gorilix.cluster.config import parse_hostport
from gorilix.cluster.security import CLIENT_NAME, SERVER_NAME, ClusterKeys, configure_client
from gorilix.ledger import DEFAULT_MAX_QUEUED
from gorilix.transport import codec
from gorilix.transport.describe import describe_exit
from gorilix.transport.errors import (
    AccessDenied,
    AskTimeout,
    DecodeError,
    NodeUnreachable,
    NotRunning,
)
from gorilix.transport.routing import client_ids
from gorilix.workers.boot import describe_program, program_to_wire
from gorilix.workers.client import ClientPort
from gorilix.workers.notice import EndNotice

log = logging.getLogger("gorilix.system")

#: The node process's first lines: ignore Ctrl-C at once (the program decides when its node stops, and
#: a KeyboardInterrupt in the node's imports would only print a traceback), take this program's import
#: path, so the node runs the same gorilix and libraries, then run the node.
_BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import json, sys; sys.path[:0] = json.loads(sys.argv[2]); "
    "from gorilix.node_main import main; main()"
)


def node_sys_path() -> list[str]:
    """This program's import path for its node, less the script's own directory.

    The node imports libraries the program may not have (cryptography, psutil):
    a module of the user's beside the script must not stand in for one of them.
    Where this program found gorilix stays on the path, whatever it is.
    """
    root = str(Path(__file__).resolve().parent.parent)
    paths = list(sys.path)
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    script_dir = os.path.dirname(os.path.abspath(script)) if isinstance(script, str) else None
    if paths and paths[0] in ("", script_dir) and os.path.abspath(paths[0] or ".") != root:
        paths = paths[1:]
    return paths if root in paths else [root, *paths]


#: The largest record read from the node's socket pair (more: it is not one of ours).
MAX_RECORD = 1 << 20


class NodeEnd:
    """Readable once the node process has ended; ``reason`` says why (None while it runs).

    Duck-typed for the clients: ``fileno()`` to poll, ``error()`` to raise.
    """

    def __init__(self, name: str, conn: Connection, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self._conn = conn
        self._process = process
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._reading = False
        self.failed = False

    def fileno(self) -> int:
        return self._conn.fileno()

    def _readable(self) -> bool:
        # A poll object per call (0.4 us): one shared between threads raises "concurrent poll() invocation".
        poll = select.poll()
        poll.register(self._conn.fileno(), select.POLLIN)
        return bool(poll.poll(0))

    @property
    def reason(self) -> str | None:
        # One cheap syscall while the node runs. Once one thread has taken the node's last word off the
        # socket, the socket may look empty to the others: they wait on the lock for the reason instead.
        if self._reason is None and (self._reading or self._readable()):
            with self._lock:
                if self._reason is None:
                    self._reading = True
                    self._read_end()
        return self._reason

    def _read_end(self) -> None:
        try:
            record = codec.decode(self._conn.recv_bytes(MAX_RECORD))
        except (EOFError, OSError, DecodeError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("ended"), str):
            self.failed = bool(record.get("failed"))
            self._reason = record["ended"]
            return
        code = self._process.poll()
        if code is None:
            try:
                code = self._process.wait(1.0)
            except subprocess.TimeoutExpired:
                code = None
        self.failed = True
        self._reason = f"failed: its process ended without a word ({describe_exit(code)})"

    def error(self) -> NotRunning:
        return NotRunning(f"node {self.name} {self.reason}; start a new ActorSystem")

    def close(self) -> None:
        """Read the node's last word if it left one, then close the socket pair; ``reason`` stays set."""
        with self._lock:
            if self._reason is None and self._readable():
                self._read_end()
            if self._reason is None:
                self._reason = "was stopped"
            self._conn.close()


def _above_stdio(fd: int) -> int:
    """``fd`` moved to a number above 2 (close-on-exec, as before), if it is not there already."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class NodeHandle:
    """One node process started by this process, and what its clients need: endpoint, context, end notice."""

    def __init__(self, name: str, workers: int, *, log_level: int, max_parked: int, start_timeout: float,
                 max_worker_memory: int | None = None, hang_timeout: float | None = None,
                 max_queued: int | None = DEFAULT_MAX_QUEUED) -> None:
        self.name = name
        self.configure: Callable[[zmq.Socket[bytes]], None] | None = None  # (ipc: nothing to set up)
        self.clustered = False
        mine, theirs = socket.socketpair()
        # Above 2: a program started with stdin, stdout or stderr closed would otherwise get the pair on
        # 0-2, and the node's log lines would travel down it as if they were records.
        self._conn = Connection(_above_stdio(mine.detach()))
        child_fd = _above_stdio(theirs.detach())
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOT, str(child_fd), json.dumps(node_sys_path())],
                pass_fds=(child_fd,), stdin=subprocess.DEVNULL,
                stderr=None if _is_open(2) else subprocess.DEVNULL,  # the node logs to the program's stderr
            )
        except BaseException:
            self._conn.close()
            raise
        finally:
            os.close(child_fd)
        self.ended = NodeEnd(name, self._conn, self.process)
        try:
            self._conn.send_bytes(codec.encode({
                "name": name, "workers": workers, "log_level": log_level, "max_parked": max_parked,
                "max_worker_memory": max_worker_memory, "hang_timeout": hang_timeout, "max_queued": max_queued,
                "start_timeout": start_timeout, "parent": os.getpid(), "program": program_to_wire(describe_program()),
            }))
            ready = self._wait_ready(start_timeout + 5.0)  # (the node applies start_timeout to its workers)
        except BaseException:
            self.kill()
            self.ended.close()
            raise
        self.endpoint: str = ready["endpoint"]
        self.size: int = ready["workers"]
        self.pid: int = ready["pid"]
        self.zctx: zmq.Context[Any] = zmq.Context()

    def _wait_ready(self, limit: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        while True:
            if self._conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    record = codec.decode(self._conn.recv_bytes(MAX_RECORD))
                except (EOFError, OSError):
                    code = self.process.wait()
                    raise NotRunning(f"node {self.name}: its process ended before it was ready "
                                     f"({describe_exit(code)}); its output above says why") from None
                except DecodeError:
                    continue
                if isinstance(record, dict) and record.get("ready"):
                    return record
                if isinstance(record, dict) and "failed" in record:
                    self.process.wait(5.0)
                    raise NotRunning(str(record["failed"]))  # (it names the node)
            if time.monotonic() >= deadline:
                raise NotRunning(f"node {self.name}: not ready within {limit:g} s")

    @property
    def failure(self) -> NotRunning | None:
        """Why the node failed, once it has (None while it runs, and after a stop)."""
        return self.ended.error() if self.ended.reason is not None and self.ended.failed else None

    def request_stop(self) -> None:
        """Stop without a round trip on the router (when the control channel fails)."""
        try:
            self._conn.send_bytes(codec.encode({"stop": True}))
        except OSError:  # it has ended
            pass

    def join(self, timeout: float) -> bool:
        """Wait for the node process to exit; True if it has."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """Terminate, then kill, the node process (its workers follow it within a second)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        """After every client is closed (they poll the end notice)."""
        zctx = getattr(self, "zctx", None)
        if zctx is not None:
            zctx.destroy(linger=0)
        self.ended.close()



#: What the first hello watches for: how the handshake with the node ended, and, should none end, whether
#: the TCP connection was made (something listens) or refused (nothing does), to say which silence it was.
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED)

#: An attached program asks its node "hello" this often, and sooner after its connection drops.
HEARTBEAT_EVERY = 1.0
#: Heartbeats in a row without an answer before the node counts as gone.
HEARTBEAT_MISSES = 2


#: The start of a ZeroMQ (ZMTP 3.0) greeting that offers CURVE: signature, version, mechanism.
_CURVE_GREETING = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\0") + bytes(32)


def node_speaks_curve(address: str, timeout: float) -> bool | None:
    """Whether the ZeroMQ socket at ``address`` serves CURVE (it has a secret); None if it cannot be told.

    A ZeroMQ peer sends its full greeting, which names its security
    mechanism, only to a peer that offers the same one; one that does not
    gets the signature (or nothing) and a closed connection.
    """
    host, port = parse_hostport(address, 7946, "node address")
    data = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(_CURVE_GREETING)
            while len(data) < 32:
                chunk = conn.recv(64 - len(data))
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        return None
    except OSError:
        pass  # (a peer that refuses our mechanism may reset the connection rather than close it)
    # (called after a ZeroMQ handshake failed there: a peer that closes at once, before even its
    # signature, refused our mechanism too)
    return len(data) >= 32 and data[12:32].rstrip(b"\0") == b"CURVE"


class AttachedNode:
    """A node this program did not start, reached over TCP (``ActorSystem.connect``).

    It offers what the clients need, as :class:`NodeHandle` does. Nothing
    ties the node's life to ours, so a heartbeat thread watches it: it asks
    ``hello`` every second, and at once when ZeroMQ reports the connection
    dropped. When the node stops answering, or answers as another process
    (it was restarted), ``ended`` is set and every waiting call fails.
    Closing detaches; the node goes on running.
    """

    def __init__(self, address: str, secret: bytes | None, timeout: float, *, secret_from: str | None = None,
                 default_path: str | None = None) -> None:
        """``secret_from`` says where ``secret`` came from and ``default_path`` where the per-user secret
        is, for the message of an :class:`AccessDenied`."""
        host, port = parse_hostport(address, 7946, "node address")
        self.address = f"{host}:{port}"
        self.endpoint = f"tcp://{host}:{port}"
        keys = ClusterKeys(secret) if secret is not None else None
        self.configure: Callable[[zmq.Socket[bytes]], None] | None = None
        if keys is not None:
            self.configure = lambda sock: configure_client(sock, keys, CLIENT_NAME, SERVER_NAME)
        self.zctx: zmq.Context[Any] = zmq.Context()
        self._ids = client_ids()
        try:
            hello = self._first_hello(timeout, secret_from, default_path)
        except BaseException:
            self.zctx.destroy(linger=0)
            raise
        self.name: str = hello["node"]
        self.size: int = hello["workers"]
        self.pid: int | None = hello.get("pid")
        self.clustered: bool = bool(hello.get("clustered"))
        self.ended = EndNotice(self.name, then="connect again once it runs")
        self.failure: NotRunning | None = None
        self._closing = threading.Event()
        self._wake_read, self._wake_write = os.pipe()  # close() wakes the heartbeat at once
        self._watcher = threading.Thread(target=self._watch, name=f"gorilix-heartbeat-{self.name}", daemon=True)
        self._watcher.start()

    def _first_hello(self, timeout: float, secret_from: str | None, default_path: str | None) -> dict[str, Any]:
        """The node's first ``hello``, once the handshake succeeded; AccessDenied at once if it failed.

        A handshake that fails (another secret, or a secret on one side only)
        is told apart from silence by the socket's monitor, so a client with the
        wrong secret learns so at once instead of waiting out ``timeout``.
        """
        monitors: list[zmq.Socket[bytes]] = []

        def configure(sock: zmq.Socket[bytes]) -> None:
            if self.configure is not None:
                self.configure(sock)
            monitors.append(sock.get_monitor_socket(_HANDSHAKE_EVENTS))  # (before connect: no event missed)

        port = ClientPort(self.zctx, self.endpoint, "", next(self._ids), configure)
        monitor = monitors[0]
        try:
            deadline = time.monotonic() + timeout
            tcp = "never"  # then "refused" (nothing listens) or "made" (something listens)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not monitor.poll(max(1, int(left * 1000))):
                    why = {"refused": "nothing listens on that port (connection refused); is the node running, "
                                      "and is the port right?",
                           "made": "something took the TCP connection but did not speak Gorilix's protocol; is "
                                   "that the node's port (its --bind or --advertise)?",
                           "never": "the TCP connection never completed (a host that is down, or a firewall "
                                    "that drops packets?); is the address right?"}[tcp]
                    raise NodeUnreachable(f"no answer from a node at {self.address} within {timeout:g} s: {why}")
                event = recv_monitor_message(monitor)
                kind, value = event["event"], int(event["value"])
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    break
                if kind in (zmq.EVENT_CONNECTED, zmq.EVENT_CONNECT_RETRIED):
                    tcp = "made" if kind == zmq.EVENT_CONNECTED or tcp == "made" else "refused"
                    continue
                mismatch = (kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
                if not mismatch and kind not in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                    continue  # (not a peer of ours, say: wait for an answer that will not come)
                # Another secret, or a secret on one side only? The event does not always say (a node
                # without one may close first, which reads as "no detail"); the node's greeting does.
                curve = self.configure is not None
                node_curve = node_speaks_curve(self.address, max(0.1, deadline - time.monotonic()))
                if node_curve is None:
                    node_curve = curve if not mismatch else not curve
                if curve and node_curve:
                    cause = "refused"
                elif curve:
                    cause = "node_has_none"
                elif node_curve:
                    cause = "node_has_secret"
                else:
                    continue
                raise AccessDenied(self.address, cause, secret_from, default_path)
            return self._hello(port, max(0.1, deadline - time.monotonic()))
        finally:
            port.sock.disable_monitor()
            monitor.close(linger=0)
            port.close()

    def _port(self) -> ClientPort:
        return ClientPort(self.zctx, self.endpoint, "", next(self._ids), self.configure)

    def _hello(self, port: ClientPort, timeout: float, close: bool = False) -> dict[str, Any]:
        try:
            return dict(port.control("hello", timeout=timeout))
        except AskTimeout:
            raise NodeUnreachable(  # (the handshake succeeded: the secret is right, the node is slow or gone)
                f"the node at {self.address} accepted the connection, then did not answer within {timeout:g} s: "
                "it may be overloaded or stuck, or it stopped"
            ) from None
        finally:
            if close:
                port.close()

    def _watch(self) -> None:
        port = self._port()
        monitor = port.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        misses = 0
        try:
            while not self._closing.is_set():
                ready = dict(poller.poll(int(HEARTBEAT_EVERY * 1000)))  # a drop: ask at once
                if self._closing.is_set():
                    return
                if monitor in ready:
                    monitor.recv_multipart()
                try:
                    hello = self._hello(port, HEARTBEAT_EVERY)
                except NodeUnreachable:
                    misses += 1
                    if misses >= HEARTBEAT_MISSES:
                        self._end(f"at {self.address} stopped answering (no answer to "
                                  f"{HEARTBEAT_MISSES} heartbeats)")
                        return
                    continue
                misses = 0
                if hello.get("node") != self.name or hello.get("pid") != self.pid:
                    self._end(f"at {self.address} was restarted (now {hello.get('node')}, pid {hello.get('pid')})")
                    return
        finally:
            port.sock.disable_monitor()
            monitor.close(linger=0)
            port.close()

    def _end(self, reason: str) -> None:
        self.ended.set(reason)
        self.failure = self.ended.error()

    def request_stop(self) -> None:
        """Nothing to do: this program did not start the node, and does not stop it."""

    def join(self, timeout: float) -> bool:
        return True  # (the node is not ours to wait for)

    def kill(self) -> None:
        """Nothing to do: see :meth:`request_stop`."""

    def close(self) -> None:
        """Detach: stop the heartbeat, close the context; the node goes on running. Safe twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        os.write(self._wake_write, b"x")
        self._watcher.join(HEARTBEAT_EVERY + 2.0)
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)
        self.ended.set("was detached from")  # (a call after close fails at once)
        self.zctx.destroy(linger=0)
        self.ended.close()
