"""The library side of ``gorilix node``: start a clustered node from options and run it.

The CLI parses options into :class:`NodeOptions` and calls :func:`run_node`.
Everything that can be wrong with the options (an address, a port in use, a
secret, an app that does not import) is checked before any worker process
starts where it can be, and raised as :class:`LaunchError` with one line that
says what to change. A node that fails half-way stops its workers before the
error leaves :func:`start_node`.

:class:`NodeProcess` runs ``gorilix node`` as a subprocess (the demo uses it)
and always reaps it.

:func:`run_node` runs until a signal, or until the node loop ends by itself:
after a ``stop`` control request it returns 0 like after SIGTERM; after a
failure (workers that keep dying before they are ready) it raises
:class:`NodeFailed`, and ``gorilix node`` exits with :data:`EXIT_NODE_FAILED`.
Either way the node has left the cluster and stopped its workers first: a
node whose loop is gone never lingers, unreachable, as a member.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gorilix.cluster.bridge import Cluster, ClusterEvent, ClusterProvider, ClusterSystem
from gorilix.cluster.config import (
    ClusterConfig,
    is_unspecified,
    parse_hostport,
    read_secret_file,
    resolve,
)
from gorilix.cluster.keyfile import default_secret_path
from gorilix.cluster.swim import JOIN_RETRY
from gorilix.ledger import DEFAULT_MAX_QUEUED
from gorilix.system import ActorSystem, default_worker_count
from gorilix.transport.errors import ClusterError, GorilixError

log = logging.getLogger("gorilix.launcher")

DEFAULT_PORT = 7946
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_PORT}"
#: Exit code of ``gorilix node`` when the node failed while it ran (2 is bad input; restarting may help).
EXIT_NODE_FAILED = 3
#: How often run_node looks whether the node loop is still running.
WATCH_EVERY = 0.1

Say = Callable[[str], None]


class LaunchError(GorilixError):
    """A node could not start from these options; the message says what to change."""


class NodeFailed(GorilixError):
    """The node loop failed while the node ran; it has left the cluster and stopped its workers."""


# -- options ------------------------------------------------------------------


@dataclass
class NodeOptions:
    """Everything ``gorilix node`` takes, already parsed from the command line."""

    name: str | None = None  # None: this machine's host name and the bind port (node_name)
    bind: str = DEFAULT_BIND
    advertise: str | None = None
    seeds: Sequence[str] = ()
    workers: int | None = None  # None: one per core
    max_worker_memory: int | None = None  # bytes; None: no limit
    hang_timeout: float | None = None  # seconds; None: never restart a stuck worker
    max_queued: int | None = DEFAULT_MAX_QUEUED  # bytes waiting for one worker; None: no limit
    app: str | None = None  # "module:function"
    secret: bytes | None = None
    secret_file: str | None = None  # where ``secret`` came from (the dashboard reads it there)
    insecure: bool = False
    dashboard: str | None = None  # HOST:PORT to serve a dashboard of this node on, from a process of its own
    dashboard_drills: bool = False  # that dashboard shows kill buttons
    retry_join: bool = False  # keep running when no seed answers yet; gossip retries every second
    log_level: str = "WARNING"
    #: More ClusterConfig fields (gossip timings and the like, e.g. {"probe_interval": 0.2}); the others keep
    #: ClusterConfig's defaults.
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def node_name(self) -> str:
        """``--name``, or the host name and the bind port: two nodes on one host never share a name."""
        if self.name:
            return self.name
        try:
            port = parse_hostport(self.bind, DEFAULT_PORT, "--bind")[1]
        except ClusterError:
            port = 0  # (build_config reports the bad --bind)
        return f"{socket.gethostname()}-{port or os.getpid()}"


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The cluster secret stored in ``path`` (trailing newline stripped)."""
    try:
        return read_secret_file(path)
    except ClusterError as exc:
        raise LaunchError(str(exc)) from None


def secret_file_is_private(path: str | os.PathLike[str]) -> bool:
    """False when every user may read the secret file (group access is the admin's choice)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    return not mode & stat.S_IRWXO


def load_app(spec: str) -> Callable[[ActorSystem], Any]:
    """Import ``module:function``; the current directory is importable, as with ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LaunchError(f"bad --app {spec!r}: expected MODULE:FUNCTION, e.g. myapp.actors:setup")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # Worker processes inherit sys.path, so they can import the app's actors too.
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LaunchError(f"cannot import app module {module_name!r}: {exc}") from None
    except Exception as exc:  # a broken app module: say what broke, in one line
        raise LaunchError(f"app module {module_name!r} failed to import: {type(exc).__name__}: {exc}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise LaunchError(f"app module {module_name!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise LaunchError(f"--app {spec}: {attr!r} is not callable; it should be a function taking the ActorSystem")
    return fn  # type: ignore[no-any-return]


def build_config(opts: NodeOptions) -> ClusterConfig:
    """A validated ClusterConfig; raises LaunchError naming the option that is wrong."""
    if opts.name is not None and not opts.name.strip():
        raise LaunchError(f"bad --name {opts.name!r}: a node needs a name (leave --name out to use the host name)")
    host, port = _hostport(opts.bind, "--bind")
    if opts.advertise:
        advertised_host, advertised_port = _hostport(opts.advertise, "--advertise")
        if is_unspecified(advertised_host):
            raise LaunchError(
                f"bad --advertise {opts.advertise!r}: {advertised_host} means every interface, an address no other "
                f"node can reach; give the address the others reach this machine at, e.g. --advertise "
                f"10.0.0.5:{advertised_port}"
            )
    seeds = []
    for seed in opts.seeds:
        seed_host, seed_port = _hostport(seed, "--seed")
        seeds.append(f"{seed_host}:{seed_port}")
    try:
        config = ClusterConfig(
            node_name=opts.node_name, bind_addr=host, bind_port=port, seeds=seeds,
            advertise_addr=opts.advertise, secret_key=opts.secret, insecure=opts.insecure,
            **opts.cluster,
        )
        config.seed_addresses()  # resolves every seed now, not after the workers started
        if port != 0:
            config.advertised(port)
    except ClusterError as exc:
        message = str(exc)
        if message.startswith("refusing to bind"):  # (said in flags, not in ClusterConfig's fields)
            message = (f"refusing to bind {host} without a secret: anyone on the network could join and run "
                       "code here; give --secret-file (make one with `gorilix secret new PATH`), or --insecure "
                       "on a trusted network")
        else:  # a ClusterConfig field gorilix node offers as an option: its flag
            for name in opts.cluster:
                message = re.sub(rf"\b(ClusterConfig\.)?{name}\b", f"--{name.replace('_', '-')}", message)
        if "needs advertise_addr" in message:
            message = (f"--bind {opts.bind} needs --advertise HOST:PORT, the address other nodes and tools reach "
                       f"this one at (e.g. --advertise 10.0.0.5:{port})")
        raise LaunchError(message) from None
    return config


def _hostport(text: str, option: str) -> tuple[str, int]:
    try:
        host, port = parse_hostport(text, DEFAULT_PORT, option)
        resolve(host)
    except ClusterError as exc:
        message = str(exc)
        if message.startswith("cannot resolve"):
            message = f"bad {option} {text!r}: {message}"
        raise LaunchError(message) from None
    return host, port


def check_port_free(host: str, port: int) -> None:
    """Fail early, before workers start, when TCP or UDP ``port`` cannot be bound."""
    if port == 0:
        return
    address = "0.0.0.0" if is_unspecified(host) else resolve(host)
    for kind, proto in ((socket.SOCK_STREAM, "tcp"), (socket.SOCK_DGRAM, "udp")):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                hint = {
                    errno.EADDRINUSE: "is another node running there? pick another --bind HOST:PORT",
                    errno.EACCES: "ports below 1024 need privileges; pick another --bind port",
                    errno.EADDRNOTAVAIL: "is that an address of this machine? see --advertise",
                }.get(exc.errno or 0, "pick another --bind HOST:PORT")
                raise LaunchError(f"cannot bind {proto} {host}:{port}: {exc.strerror}; {hint}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port number free for both TCP and UDP on ``host`` (a node binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise LaunchError(f"no port free for both TCP and UDP on {host}")


# -- starting and running a node ------------------------------------------------


class _WatchingProvider(ClusterProvider):
    """The SWIM provider, with our event callback attached before the first join."""

    def __init__(self, on_event: Callable[[ClusterEvent], None] | None) -> None:
        self._on_event = on_event

    def start(self, system: ClusterSystem, config: ClusterConfig) -> Cluster:
        cluster = super().start(system, config)
        if self._on_event is not None:
            cluster.on_event(self._on_event)
        return cluster


@dataclass
class RunningNode:
    system: ActorSystem
    cluster: Cluster
    config: ClusterConfig
    joined: int | None = 0  # seeds that answered at start; None: none yet, still trying

    @property
    def address(self) -> str:
        me = self.cluster.local_member()
        return f"{me.address}:{me.port}"

    def ready_line(self) -> str:
        workers = self.system.workers()
        pids = ", ".join(str(w.pid) for w in workers)
        count = f"{len(workers)} worker{'' if len(workers) == 1 else 's'}"
        seeds = ", ".join(self.config.seeds) or "none"
        if self.config.uses_default_secret:
            secure = f"CURVE + sealed gossip (the per-user secret {default_secret_path()})"
        elif self.config.secret_key is not None:
            secure = "CURVE + sealed gossip"
        else:
            secure = "NO SECRET (--insecure)"
        bound = f"{self.config.bind_addr}:{self.cluster.local_member().port}"
        return (f"ready: node {self.system.name} at {self.address} (bound {bound}, tcp+udp), "
                f"{count} (pid{'' if len(workers) == 1 else 's'} {pids}), seeds: {seeds}, {secure}")

    def stop(self) -> None:
        """Leave the cluster (bounded in time), then stop every worker."""
        try:
            self.system.leave_cluster()
        except GorilixError as exc:
            log.warning("leaving the cluster: %s", exc)
        self.system.stop()


def start_node(opts: NodeOptions, on_event: Callable[[ClusterEvent], None] | None = None,
               app: Callable[[ActorSystem], Any] | None = None) -> RunningNode:
    """Start workers, bind, join the seeds and run the app; stop everything on failure."""
    config = build_config(opts)
    setup = app if app is not None else (load_app(opts.app) if opts.app else None)
    check_port_free(config.bind_addr, config.bind_port)
    workers = opts.workers if opts.workers is not None else default_worker_count()
    level = logging.getLevelName(opts.log_level.upper())
    try:
        system = ActorSystem(config.node_name, workers=workers,
                             log_level=level if isinstance(level, int) else logging.WARNING,
                             max_worker_memory=opts.max_worker_memory, hang_timeout=opts.hang_timeout,
                             max_queued=opts.max_queued)
    except GorilixError as exc:
        raise LaunchError(f"cannot start node {config.node_name}: {exc}") from None
    try:
        system.set_cluster_provider(_WatchingProvider(on_event))
        cluster = system.enable_clustering(replace(config, seeds=[]))
        joined = _join(cluster, config, opts.retry_join)
        if setup is not None:
            try:
                setup(system)
            except Exception as exc:
                log.debug("app setup failed", exc_info=True)
                raise LaunchError(f"app {opts.app or setup!r} failed: {type(exc).__name__}: {exc}") from None
    except ClusterError as exc:
        system.stop()
        raise LaunchError(str(exc)) from None
    except BaseException:
        system.stop()
        raise
    return RunningNode(system, cluster, config, joined)


def _join(cluster: Cluster, config: ClusterConfig, retry: bool) -> int | None:
    """How many seeds answered; None when none did yet and ``retry`` keeps the node up.

    The gossip engine goes on contacting the seeds every ``join_retry``
    seconds until one answers, so nodes of a cluster can boot in any order.
    """
    if not config.seeds:
        return 0
    try:
        return cluster.join(list(config.seeds))
    except ClusterError as exc:
        if retry and "no seed answered" in str(exc):  # (a name already taken is no reason to wait)
            return None
        raise


class ChangeFilter:
    """Drops "update" events that only carry a new load figure (they come every few seconds)."""

    QUIET_META = frozenset({"load"})

    def __init__(self) -> None:
        self._meta: dict[str, dict[str, Any]] = {}

    def __call__(self, event: ClusterEvent) -> bool:
        meta = {k: v for k, v in event.meta.items() if k not in self.QUIET_META}
        previous = self._meta.get(event.name)
        self._meta[event.name] = meta
        return not (event.kind == "update" and previous == meta)


def describe_event(event: ClusterEvent) -> str:
    """One line per membership change, as ``gorilix node`` prints it."""
    verbs = {"join": "joined", "leave": "left", "dead": "is dead", "suspect": "is suspect",
             "alive": "is alive again", "update": "updated"}
    workers = event.meta.get("workers")
    extra = f", {workers} worker{'' if workers == 1 else 's'}" if workers is not None else ""
    seen = time.localtime(event.at) if event.at else None  # when it happened, not when it is printed
    return (f"{time.strftime('%H:%M:%S', seen or time.localtime())} member {event.name} {verbs.get(event.kind, event.kind)} "
            f"({event.address}:{event.port}, {event.status}{extra})")


#: What a node with no secret at all says once it is up (``--insecure``, without --secret-file).
INSECURE_WARNING = ("warning: --insecure: this node has no secret; any process that can reach its port can stop it, "
                    "kill its workers and run code in them (drop --insecure to use the per-user secret, or give "
                    "--secret-file)")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def on_stdin_eof(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in a thread) once stdin closes: a parent that started us with a pipe has ended,
    however it ended (SIGKILL too)."""
    def watch() -> None:
        # Raw reads: a daemon thread blocked in sys.stdin's buffered reader would abort the interpreter at exit.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        callback()
    threading.Thread(target=watch, name="gorilix-stdin", daemon=True).start()


def run_node(opts: NodeOptions, say: Say = print, watch_stdin: bool = False, warn: Say = _stderr) -> int:
    """Run a node until SIGINT or SIGTERM (or stdin EOF with ``watch_stdin``, or a stop request); returns 0.

    Raises :class:`NodeFailed` when the node loop fails meanwhile, once the
    node has left the cluster and stopped its workers. Membership changes are
    printed by this (the main) thread, one line each, so a slow terminal never
    holds up the gossip thread.
    """
    events: queue.SimpleQueue[ClusterEvent] = queue.SimpleQueue()
    worth_printing = ChangeFilter()
    stop = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second signal: stop waiting for a graceful leave
            os._exit(128 + signum)
        reason.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        node = start_node(opts, on_event=events.put)
        dashboard = None
        try:
            say(node.ready_line())
            if node.config.secret_key is None and not node.config.uses_default_secret:
                warn(INSECURE_WARNING)
            if opts.dashboard is not None:
                dashboard = start_dashboard_process(opts)
            if node.joined is None:
                say(f"no seed answered yet ({', '.join(node.config.seeds)}); "
                    f"retrying every {JOIN_RETRY:g} s in the background")
            if watch_stdin:
                def stdin_closed() -> None:
                    reason.append("stdin closed")
                    stop.set()
                on_stdin_eof(stdin_closed)
            while not stop.is_set() and node.system.running:
                try:
                    event = events.get(timeout=WATCH_EVERY)
                except queue.Empty:
                    continue
                if worth_printing(event):
                    say(describe_event(event))
            while True:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    break
                if worth_printing(event):
                    say(describe_event(event))
            if node.system.failure is not None:
                why = "failed"  # the node logged why
            elif stop.is_set():
                why = reason[0] if reason else "stop"
            else:
                why = "stop request"  # a `stop` control request ended the loop
            say(f"{why}: node {node.system.name} leaving the cluster")
        finally:
            if dashboard is not None:
                stop_dashboard_process(dashboard)
            node.stop()
        failure = node.system.failure
        if failure is not None:
            raise NodeFailed(f"node {node.system.name} failed: {failure}; it left the cluster and "
                             f"stopped its workers (exit code {EXIT_NODE_FAILED})")
        say(f"node {node.system.name} stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- a node as a subprocess -------------------------------------------------------


def _same_code_env() -> dict[str, str]:
    """This environment, with our own package first on the path: the child runs the same code."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def start_dashboard_process(opts: NodeOptions) -> subprocess.Popen[bytes]:
    """``gorilix dashboard`` of this node, at ``opts.dashboard``: a process of its own, so no browser can slow
    the node; it ends when its stdin (our pipe) closes, so it never outlives us, however we end."""
    host, port = parse_hostport(opts.bind, DEFAULT_PORT, "--bind")
    node = f"127.0.0.1:{port}" if is_unspecified(host) else opts.bind  # (it runs on this machine)
    command = [sys.executable, "-m", "gorilix", "dashboard", "--node", node, "--bind", str(opts.dashboard),
               "--watch-stdin"]
    if opts.secret_file is not None:
        command += ["--secret-file", opts.secret_file]
    elif opts.insecure:
        command += ["--insecure"]
    if opts.dashboard_drills:
        command += ["--allow-drills"]
    return subprocess.Popen(command, stdin=subprocess.PIPE, env=_same_code_env())


def stop_dashboard_process(process: subprocess.Popen[bytes]) -> None:
    """Close its stdin (it stops), and make sure of it."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class NodeProcess:
    """``gorilix node`` in a child process; output is drained so the child never blocks.

    Use as a context manager or call :meth:`reap`: the child is killed and
    waited for, whatever happened.
    """

    def __init__(self, name: str, port: int, seeds: Sequence[str] = (), workers: int = 1,
                 args: Sequence[str] = (), host: str = "127.0.0.1",
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.address = f"{host}:{port}"
        cmd = [sys.executable, "-m", "gorilix", "node", "--name", name, "--bind", self.address,
               "--workers", str(workers), "--watch-stdin", *args]
        for seed in seeds:
            cmd += ["--seed", seed]
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or _same_code_env())
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.lines, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.errors, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream: Any, into: list[str], watch_ready: bool) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if watch_ready and line.startswith("ready:"):
                self._ready.set()
        self._ready.set()  # EOF: wake whoever waits, they check the exit code

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> str:
        """The node's "ready" line; LaunchError with its stderr if it died or took too long."""
        if not self._ready.wait(timeout):
            raise LaunchError(f"node {self.name} not ready within {timeout:g} s")
        for line in self.lines:
            if line.startswith("ready:"):
                return line
        self.proc.wait(5)
        last = self.errors[-1] if self.errors else "no output"
        raise LaunchError(f"node {self.name} exited with code {self.proc.returncode}: {last}")

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the child to exit on its own (after :meth:`terminate`); kill it after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM: the node leaves the cluster, stops its workers and exits 0."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, grace: float = 5.0) -> int | None:
        """Stop the child if it still runs (SIGTERM, then SIGKILL after ``grace``) and wait for it."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10.0)
        for thread in self._threads:
            thread.join(2.0)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()
