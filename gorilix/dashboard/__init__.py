"""The live dashboard: a process of its own, a client of the nodes, serving a web page and ``/metrics``.

``gorilix dashboard --node HOST:PORT`` (or ``gorilix node --dashboard
HOST:PORT``) runs :func:`run_dashboard`. It polls every member node once a
second (:mod:`.collect`), keeps what the page shows as plain data
(:mod:`.tracker`), and serves it (:mod:`.server`, :mod:`.metrics`). A browser
costs this process, never a node: nothing the page does can slow routing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gorilix.cluster.config import is_loopback, parse_hostport
from gorilix.cluster.keyfile import default_secret, read_secret_file
from gorilix.cluster.security import dashboard_token
from gorilix.dashboard.collect import Access, Collector
from gorilix.dashboard.server import DashboardServer, static_files
from gorilix.dashboard.tracker import Tracker
from gorilix.launcher import on_stdin_eof
from gorilix.transport.errors import ClusterError, GorilixError

log = logging.getLogger(__name__)

#: Where the dashboard listens unless told.
DEFAULT_BIND = "127.0.0.1:8270"


class DashboardError(GorilixError):
    """The dashboard cannot start: its message says why and what to pass."""


@dataclass(frozen=True)
class DashboardOptions:
    node: str  # HOST:PORT of a node (--node)
    bind: str = DEFAULT_BIND
    secret_file: str | None = None
    insecure: bool = False
    allow_drills: bool = False
    interval: float = 1.0
    connect_timeout: float = 5.0


def cluster_secret(secret_file: str | None) -> bytes | None:
    """The secret the page's token derives from: ``secret_file``'s, else the per-user secret (None if there is
    none yet); DashboardError if the file cannot be used."""
    try:
        return read_secret_file(secret_file) if secret_file else default_secret(create=False)
    except ClusterError as exc:
        raise DashboardError(str(exc)) from None


def token_for(options: DashboardOptions) -> str | None:
    """The token the page must send, or None where none is needed (loopback, no drills).

    It is derived from the cluster secret (``--secret-file``, else the
    per-user secret); off loopback or with drills on, a dashboard without a
    secret is refused, since anyone who reaches its port could act on the cluster.
    """
    host, _ = parse_hostport(options.bind, 8270, "--bind")
    if is_loopback(host) and not options.allow_drills:
        return None
    secret = None if options.insecure else cluster_secret(options.secret_file)
    if secret is None:
        why = "--allow-drills" if is_loopback(host) else f"--bind {options.bind} (not loopback)"
        raise DashboardError(
            f"a dashboard with {why} needs the cluster's secret to derive the page's token; pass "
            "--secret-file (or start it as the user whose nodes use the per-user secret), or bind to "
            "127.0.0.1 without --allow-drills")
    return dashboard_token(secret)


def start_dashboard(options: DashboardOptions) -> tuple[DashboardServer, Collector]:
    """Connect to the node, start polling and serving (in threads); raises GorilixError if it cannot."""
    token = token_for(options)
    host, port = parse_hostport(options.bind, 8270, "--bind")
    access = Access(secret_file=options.secret_file, insecure=options.insecure, timeout=options.connect_timeout)
    collector = Collector(options.node, access, Tracker(home=options.node, drills=options.allow_drills,
                                                          interval=options.interval), options.interval)
    try:
        files = static_files()
    except OSError as exc:
        raise DashboardError(f"the dashboard's page is missing from the installed package ({exc}); "
                             "reinstall gorilix") from None
    collector.start()
    try:
        server = DashboardServer((host, port), collector, token, files)
    except OSError as exc:
        collector.stop()
        raise DashboardError(f"cannot listen on {options.bind}: {exc.strerror or exc}; pick another "
                             "--bind port") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="gorilix-dashboard-http",
                     daemon=True).start()
    return server, collector


def run_dashboard(options: DashboardOptions, say: Callable[[str], None] = print,
                  watch_stdin: bool = False) -> int:
    """Serve the dashboard until SIGINT or SIGTERM (or stdin EOF with ``watch_stdin``); returns 0."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server, collector = start_dashboard(options)
        try:
            say(f"dashboard of {collector.tracker.home} at {server.url()}")
            if options.allow_drills:
                say("drills are on: the page has a kill button per worker")
            if watch_stdin:  # (started by `gorilix node --dashboard`: end with it, however it ends)
                on_stdin_eof(stop.set)
            while not stop.wait(0.5):
                pass
        finally:
            server.shutdown()
            server.server_close()
            collector.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
