"""The ``gorilix`` command: parsing and presentation only; the work is in the library.

Exit codes: 0 success; 1 the operation ran and failed (an actor raised, an
ask timed out, a drill found a problem); 2 bad input (a bad option or
address, a port in use, an app that does not import, bad JSON, an
unreachable node); 3 (``gorilix node`` only) the node failed while it ran,
left the cluster and stopped its workers: restarting it may help, unlike 2.
Every error is one line on stderr.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from gorilix.cluster.config import MIN_SECONDS, OPTION_HELP, ClusterConfig

DEFAULT_NODE = "127.0.0.1:7946"
#: Signals that end a worker (workers ignore SIGINT: the node decides when they stop).
KILL_SIGNALS = ("KILL", "TERM", "QUIT", "ABRT", "SEGV", "HUP")


class CliError(click.ClickException):
    """Bad input (an option, an address, a port in use, an unreachable node): exit 2."""

    exit_code = 2


class OperationFailed(CliError):
    """The operation ran and failed (an actor raised, an ask timed out): exit 1."""

    exit_code = 1


class NodeFailedExit(CliError):
    """``gorilix node``: the node failed while it ran, and left the cluster: exit 3.

    The same number as :data:`gorilix.launcher.EXIT_NODE_FAILED` (the launcher
    is imported only when a command needs it).
    """

    exit_code = 3


def _from_environment(ctx: click.Context) -> dict[str, str]:
    """Each flag of ``ctx``'s command whose value came from the environment -> the variable it came from."""
    flags: dict[str, str] = {}
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.name:
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
            continue
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        if not names and ctx.auto_envvar_prefix is not None:  # (where click looks when no envvar is given)
            names = [f"{ctx.auto_envvar_prefix}_{param.name.upper()}"]
        variable = next((name for name in names if os.environ.get(name)), None)  # (click skips empty ones too)
        if variable is not None:
            flags.update(dict.fromkeys(param.opts, variable))
    return flags


def error_line(exc: click.ClickException) -> str:
    """The one line an error prints: a flag whose bad value came from the environment is named by its variable.

    ``GORILIX_ASK_TIMEOUT=abc`` gives "Invalid value for GORILIX_ASK_TIMEOUT (--timeout): ...", for every
    option of every command and whichever code raised the error (click's own checks, a command, the launcher).
    """
    if isinstance(exc, click.BadParameter) and exc.param_hint is None and isinstance(exc.param, click.Option):
        # click's hint lists the option's variables wherever the value came from; name the one used, below.
        exc.param_hint = " / ".join(f"'{opt}'" for opt in exc.param.opts)
    message = exc.format_message()
    ctx: click.Context | None = getattr(exc, "ctx", None)
    if ctx is not None:
        for flag, variable in _from_environment(ctx).items():
            message = re.sub(rf"'?(?<![\w-]){re.escape(flag)}(?![\w-])'?", f"{variable} ({flag})", message, count=1)
    message = " ".join(message.split())
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return message


class GorilixCommand(click.Command):
    """A command whose errors remember their context (for :func:`error_line`), as click's usage errors do."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if getattr(exc, "ctx", None) is None:
                exc.ctx = ctx  # type: ignore[attr-defined]  # (a CliError raised by the command's code)
            raise


class GorilixGroup(click.Group):
    """A click group whose errors are always one line (usage errors included)."""

    command_class = GorilixCommand
    group_class = type  # (subgroups are GorilixGroups too, so their commands are GorilixCommands)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {error_line(exc)}", err=True)
            code = exc.exit_code
        except click.Abort:
            click.echo("Aborted!", err=True)
            code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _fail(message: str, code: int = 2) -> NoReturn:
    raise OperationFailed(message) if code == 1 else CliError(message)


def _dump(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, bytes | bytearray):
            try:
                return bytes(obj).decode()
            except UnicodeDecodeError:
                return {"base64": base64.b64encode(bytes(obj)).decode()}
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=repr)
        return str(obj)

    return json.dumps(value, indent=2, default=default)


def _secret(path: str | None) -> bytes | None:
    if path is None:
        return None
    from gorilix.launcher import LaunchError, read_secret

    try:
        return read_secret(path)
    except LaunchError as exc:
        _fail(str(exc))


# -- options shared by the commands that reach a node ------------------------------


#: Seconds a client command waits for its node's first answer, unless --timeout (or --connect-timeout) says.
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Target:
    """The node a client command talks to, and how: what :func:`node_options` parses."""

    address: str
    secret_file: str | None
    insecure: bool
    connect_timeout: float  # seconds to wait for the node's first answer
    timeout: float  # seconds to wait for the request itself


def node_options(*, waits: str, default: float = CONNECT_TIMEOUT) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--node, --secret-file, --insecure and --timeout, handed to the command as one :class:`Target`.

    ``--timeout`` bounds connecting and the request; ``waits`` says what the
    request waits for and ``default`` how long, by default (connecting waits
    CONNECT_TIMEOUT then). The hidden ``--connect-timeout``, the old name,
    still sets the connecting part alone.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(node_address: str, secret_file: str | None, insecure: bool, timeout: float | None,
                    connect_timeout: float | None, **kwargs: Any) -> Any:
            connect = next(t for t in (connect_timeout, timeout, CONNECT_TIMEOUT) if t is not None)
            target = Target(node_address, secret_file, insecure, connect, default if timeout is None else timeout)
            return fn(target, **kwargs)

        shown = f"{default:g}" if default == CONNECT_TIMEOUT else f"{CONNECT_TIMEOUT:g} to connect, then {default:g}"
        command = click.option("--connect-timeout", type=click.FloatRange(min=0.01), default=None, hidden=True,
                               envvar="GORILIX_CONNECT_TIMEOUT", show_envvar=True,
                               help="Seconds to wait for the node's first answer (--timeout sets it too).")(command)
        command = click.option("--timeout", type=click.FloatRange(min=0.01), default=None, metavar="SECONDS",
                               envvar=[f"GORILIX_{fn.__name__.upper()}_TIMEOUT", "GORILIX_TIMEOUT"],
                               show_envvar=True,
                               help=f"Seconds to wait for the node to answer when connecting, and {waits}.  "
                                    f"[default: {shown}]")(command)
        command = click.option("--insecure", is_flag=True, envvar="GORILIX_INSECURE", show_envvar=True,
                               help="Connect without any secret, to a node started with --insecure.")(command)
        command = click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
                               envvar="GORILIX_SECRET_FILE", show_envvar=True,
                               help="File holding the node's secret (its --secret-file).  [default: the per-user "
                                    "secret that nodes started without one use]")(command)
        command = click.option("--node", "node_address", metavar="HOST:PORT", default=DEFAULT_NODE,
                               envvar="GORILIX_NODE", show_envvar=True, show_default=True,
                               help="The node to talk to (its --bind or --advertise address).")(command)
        return command

    return decorate


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An option for each ClusterConfig field marked for ``gorilix node`` (``push_interval``: ``--push-interval``,
    ``GORILIX_PUSH_INTERVAL``), with the field's help and default (``probe_timeout``'s None: half the interval)."""
    for f in reversed([f for f in dataclasses.fields(ClusterConfig) if OPTION_HELP in f.metadata]):
        integer = f.type in ("int", int)  # (annotations are strings here)
        extra = "  [default: half of --probe-interval]" if f.default is None else ""  # (probe_timeout)
        fn = click.option(f"--{f.name.replace('_', '-')}", f.name, default=f.default,
                          type=click.IntRange(min=1) if integer else click.FloatRange(min=MIN_SECONDS),
                          metavar="N" if integer else "SECONDS", envvar=f"GORILIX_{f.name.upper()}",
                          show_envvar=True, help=f.metadata[OPTION_HELP] + extra)(fn)
    return fn


@contextlib.contextmanager
def reach(target: Target) -> Iterator[Any]:
    """A RemoteNode for a command; every expected failure becomes a one-line CliError.

    The secret is ``--secret-file``'s, else the per-user secret; ``--insecure`` connects with none.
    A refused handshake (AccessDenied) says which secret to pass; silence says nothing answered.
    """
    from gorilix.cluster.config import parse_hostport, resolve
    from gorilix.remote import AccessDenied, NodeUnreachable, RemoteNode
    from gorilix.transport.errors import AskTimeout, ClusterError, GorilixError

    address, secret_file, insecure = target.address, target.secret_file, target.insecure
    if insecure and secret_file is not None:
        raise click.UsageError("give --secret-file or --insecure, not both (--insecure connects without a secret)")
    _secret(secret_file)  # (a bad file is one line, before anything is sent)
    try:
        host, _ = parse_hostport(address, 7946, "--node")
        resolve(host)
    except ClusterError as exc:
        message = str(exc)
        _fail(message if message.startswith("bad") else f"bad --node {address!r}: {message}")
    try:
        remote = RemoteNode(address, timeout=target.timeout, connect_timeout=target.connect_timeout,
                            secret_file=secret_file, insecure=insecure)
    except AccessDenied as exc:
        _fail(exc.advice(cli=True))
    except NodeUnreachable as exc:
        _fail(str(exc))
    except ClusterError as exc:  # (the per-user secret or its directory refused: the message says why)
        _fail(str(exc))
    try:
        yield remote
    except NodeUnreachable as exc:
        _fail(str(exc), 1)
    except AskTimeout as exc:
        _fail(f"timed out: {exc}", 1)
    except GorilixError as exc:
        _fail(" ".join(str(exc).split()), 1)
    finally:
        remote.close()


def _parse_json(text: str, as_tuple: bool = False, what: str = "JSON") -> Any:
    """The message a command sends: ``text`` as JSON; with ``as_tuple``, a top-level array as a tuple."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{text!r} is not JSON ({exc.msg} at column {exc.colno}); "
                                 "quote strings twice, e.g. '\"hello\"'", param_hint=what) from None
    if not as_tuple:
        return value
    if not isinstance(value, list):
        raise click.BadParameter(f"--tuple takes a JSON array, e.g. '[\"read\", \"key\"]', not {text!r}",
                                 param_hint=what)
    return tuple(value)


#: What ``send --help`` and ``ask --help`` say of NAME, JSON and its quoting.
MESSAGE_HELP = """NAME is the name the actor was registered under (spawn(..., name=NAME)).
JSON is one JSON value, which the actor receives as Python: give it in single
quotes, so the shell passes it as it is, and quote a string again inside them,
as JSON wants: '"World"' is the str "World" (World alone is not JSON). A
number (42, 1.5), true, false and null need no quotes. An array arrives as a
list; with --tuple a top-level array arrives as a tuple, for actors that match
on tuples such as ("read", key) (arrays inside it stay lists)."""


def _named(remote: Any, name: str) -> Any:
    ref = remote.whereis(name)
    if ref is None:
        _fail(f"no actor named {name!r} on node {remote.name}")
    return ref


class Size(click.ParamType):
    """A number of bytes (``2GiB``, ``500MB``, ``1048576``), or ``none`` for no limit."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        from gorilix.errors import InvalidArgument
        from gorilix.system import parse_memory

        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            return parse_memory("size", str(value).strip())
        except InvalidArgument:
            self.fail(f"{value!r} must be a positive number of bytes or a size such as \"2GiB\" or \"500MB\" "
                      "(or none for no limit)", param, ctx)


class SignalName(click.ParamType):
    name = "SIGNAL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).upper().removeprefix("SIG")
        if text not in KILL_SIGNALS:
            self.fail(f"{value!r} is not one of {', '.join(KILL_SIGNALS)} (workers ignore SIGINT)", param, ctx)
        return int(getattr(signal, f"SIG{text}"))


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _latency_bound(histogram: dict[str, Any], quantile: float) -> str:
    """The bucket bound under which ``quantile`` of a latency histogram's samples fall (e.g. '<= 1 ms')."""
    wanted, seen = quantile * histogram["count"], 0
    for bound, count in zip([*histogram["bounds"], None], histogram["counts"], strict=True):
        seen += count
        if seen >= wanted:
            return "over the last bound" if bound is None else f"<= {bound * 1000:g} ms"
    return "unknown"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


# -- the group --------------------------------------------------------------------


@click.group(cls=GorilixGroup, context_settings={
    "help_option_names": ["-h", "--help"], "auto_envvar_prefix": "GORILIX", "show_default": True,
})
@click.version_option(package_name="gorilix")
def main() -> None:
    """Gorilix: an actor host for Python.

    Start nodes with `gorilix node`, inspect them with `members` and
    `status`, drill failover with `kill-worker` and `chaos`. Every option
    can also come from a GORILIX_* environment variable (shown in each
    command's --help). Exit codes: 0 ok, 1 the operation failed, 2 bad input,
    3 a node failed while it ran.
    """


# -- gorilix node -----------------------------------------------------------------


@main.command()
@click.option("--name", envvar="GORILIX_NAME", show_envvar=True, default=None,
              help="Node name, unique in the cluster.  [default: this machine's host name and the bind port, e.g. myhost-7946]")
@click.option("--bind", metavar="HOST:PORT", default="127.0.0.1:7946", envvar="GORILIX_BIND",
              show_envvar=True, help="Address to listen on: TCP (router) and UDP (gossip), same port.")
@click.option("--advertise", metavar="HOST:PORT", default=None, envvar="GORILIX_ADVERTISE",
              show_envvar=True, help="Address other nodes reach this one at (needed with --bind 0.0.0.0, "
                                     "or behind NAT).")
@click.option("--seed", "seeds", metavar="HOST:PORT", multiple=True,
              envvar=["GORILIX_SEEDS", "GORILIX_SEED"], show_envvar=True,
              help="A member to join through; repeat for more (env: space-separated).")
@click.option("--retry-join", is_flag=True, envvar="GORILIX_RETRY_JOIN", show_envvar=True,
              help="If no seed answers yet, keep running and retry every second (nodes may boot in "
                   "any order); without it the node exits 2.")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar="GORILIX_WORKERS",
              show_envvar=True, help="Worker processes.  [default: one per core]")
@click.option("--max-worker-memory", type=Size(), default=None, envvar="GORILIX_MAX_WORKER_MEMORY",
              show_envvar=True, help="Restart a worker whose memory (RSS) goes past SIZE (bytes, or e.g. 2GiB, "
                                     "500MB); its actors are re-created.  [default: no limit]")
@click.option("--max-queued", type=Size(), default="64MiB", envvar="GORILIX_MAX_QUEUED", show_envvar=True,
              help="Bytes the node lets wait for one worker, sent and not yet read; past it, the worker's new "
                   "tells are dead letters and its asks fail with MailboxFull ('none': no limit).  "
                   "[default: 64MiB]")
@click.option("--hang-timeout", type=click.FloatRange(min=1.0), default=None, metavar="SECONDS",
              envvar="GORILIX_HANG_TIMEOUT", show_envvar=True,
              help="Restart a worker stuck in one message longer than this; its actors are re-created.  "
                   "[default: never]")
@click.option("--app", metavar="MODULE:FUNCTION", default=None, envvar="GORILIX_APP", show_envvar=True,
              help="Called with the ActorSystem once the node has joined; spawn your actors there.")
@click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
              envvar="GORILIX_SECRET_FILE", show_envvar=True,
              help="File holding the cluster secret (>= 16 bytes; `gorilix secret new PATH` makes one): sealed "
                   "gossip and CURVE links.  [default: the per-user secret, made on first use; loopback only]")
@click.option("--insecure", is_flag=True, envvar="GORILIX_INSECURE", show_envvar=True,
              help="Run with no secret at all: any process that reaches the port controls the node, and a "
                   "non-loopback --bind is allowed (trusted networks only).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="WARNING", envvar="GORILIX_LOG_LEVEL", show_envvar=True, help="Log level (stderr).")
@click.option("--dashboard", metavar="HOST:PORT", default=None, envvar="GORILIX_DASHBOARD", show_envvar=True,
              help="Also serve a live dashboard of this node there (`gorilix dashboard`, in a process of its own; "
                   "e.g. 127.0.0.1:8270).")
@click.option("--dashboard-drills", is_flag=True, envvar="GORILIX_DASHBOARD_DRILLS", show_envvar=True,
              help="Give that dashboard a kill button per worker (its --allow-drills).")
@cluster_options
@click.option("--watch-stdin", is_flag=True, hidden=True,
              help="Also stop gracefully when stdin closes (for a parent that starts nodes).")
def node(name: str | None, bind: str, advertise: str | None, seeds: tuple[str, ...], retry_join: bool,
         workers: int | None, max_worker_memory: int | None, max_queued: int | None, hang_timeout: float | None,
         app: str | None,
         secret_file: str | None,
         insecure: bool, log_level: str, dashboard: str | None, dashboard_drills: bool, watch_stdin: bool,
         **cluster: Any) -> None:
    """Start a node and run it until SIGINT or SIGTERM.

    It prints one "ready" line when it is up, then one line per membership
    change. On SIGINT, SIGTERM or a `stop` request it leaves the cluster,
    stops its workers and exits 0. If the node fails while it runs (its
    workers keep dying as they start) it leaves too, and exits 3.

    \b
      gorilix node --name n1 --bind 127.0.0.1:7946
      gorilix node --name n2 --bind 127.0.0.1:7947 --seed 127.0.0.1:7946 --app myapp:setup
    """
    import logging

    from gorilix.launcher import (
        LaunchError,
        NodeFailed,
        NodeOptions,
        run_node,
        secret_file_is_private,
    )
    from gorilix.transport.errors import InsecureWarning

    if dashboard_drills and dashboard is None:
        raise click.UsageError("--dashboard-drills needs --dashboard HOST:PORT")
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = _secret(secret_file)
    if secret_file is not None and not secret_file_is_private(secret_file):
        click.echo(f"warning: every user can read {secret_file}; chmod o-rwx it", err=True)
    if insecure and secret is None:  # (run_node says so in the CLI's words, once the node is up)
        warnings.filterwarnings("ignore", category=InsecureWarning)
    options = NodeOptions(
        name=name, bind=bind, advertise=advertise, seeds=seeds, retry_join=retry_join, workers=workers,
        app=app, secret=secret, secret_file=secret_file, insecure=insecure, log_level=log_level,
        dashboard=dashboard, dashboard_drills=dashboard_drills,
        cluster={key: value for key, value in cluster.items() if value is not None},
        max_worker_memory=max_worker_memory, hang_timeout=hang_timeout, max_queued=max_queued,
    )
    try:
        code = run_node(options, say=click.echo, watch_stdin=watch_stdin, warn=lambda line: click.echo(line, err=True))
    except LaunchError as exc:
        _fail(str(exc))
    except NodeFailed as exc:
        raise NodeFailedExit(str(exc)) from None
    sys.exit(code)


# -- inspecting a node ----------------------------------------------------------------


@main.command()
@node_options(waits="for the member table")
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_MEMBERS_JSON", help="Print a JSON array (name, address, port, status, meta, ...).")
def members(target: Target, as_json: bool) -> None:
    """The cluster's members as one node sees them.

    Dead and left members stay listed with that status for at least 30 s.
    """
    with reach(target) as remote:
        rows = remote.members()
        me = remote.name
    if as_json:
        click.echo(_dump(rows))
        return
    rows = sorted(rows, key=lambda r: r["name"])
    click.echo(_table(
        ["NAME", "ADDRESS", "PORT", "STATUS", "WORKERS", "LOAD"],
        [[r["name"] + (" *" if r["name"] == me else ""), r["address"], r["port"], r["status"],
          r.get("workers"), r.get("load")] for r in rows],
    ))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    click.echo(f"{len(rows)} members ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
               f"* = {me}, the node asked")


@main.command()
@node_options(waits="for the status")
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_STATUS_JSON", help="Print a JSON object with node, workers and stats.")
def status(target: Target, as_json: bool) -> None:
    """A node's workers (pid, actors, CPU, memory, restarts) and counters."""
    with reach(target) as remote:
        info = remote.status()
    if as_json:
        click.echo(_dump(info))
        return
    workers = info.get("workers", [])
    click.echo(f"node {info.get('node')}: {sum(1 for w in workers if w['alive'])}/{len(workers)} workers alive")
    click.echo(_table(
        ["WORKER", "PID", "ALIVE", "ACTORS", "CPU%", "RSS", "RESTARTS", "MAILBOX", "MAX BOX", "MSG/S", "UNREAD"],
        [[w["id"], w["pid"], "yes" if w["alive"] else "NO", w["actors"], f"{w['cpu_percent']:.1f}",
          _mib(w["rss_bytes"]), w["restarts"], w.get("mailbox", 0), w.get("deepest_mailbox", 0),
          f"{w.get('msgs_per_s', 0.0):,.0f}", _mib(w.get("queued_bytes", 0))] for w in workers],
    ))
    for w in workers:
        stuck = w.get("stuck")
        if stuck:
            where = (f"in actor {stuck['actor']} ({stuck['class']}) handling {stuck['message']}" if stuck["actor"]
                     else "in a call that holds its GIL (its watchdog is silent)")
            click.echo(f"worker {w['id']} STUCK for {stuck['seconds']:.1f} s {where}")
    live = [w["actors"] for w in workers if w["alive"]]
    if len(live) > 1:
        spread = max(live) - min(live)
        click.echo(f"balance: {', '.join(str(n) for n in live)} actors on the live workers (spread {spread}; "
                   f"{(info.get('stats') or {}).get('moved', 0)} moved to balance them)")
    stats = dict(info.get("stats") or {})
    stats.pop("node", None)
    gossip = stats.pop("gossip", None)
    by_reason = stats.pop("dead_letters_by_reason", None) or {}
    restarts = stats.pop("restarts_by_supervisor", None) or {}
    latency = stats.pop("ask_latency", None)
    labels = {"actors": "actors", "names": "named actors", "dead_letters": "dead letters",
              "parked": "messages waiting for a restarting actor", "malformed": "malformed frames dropped",
              "refused": "control requests refused", "bad_meta": "members dropped for bad gossip metadata",
              "moved": "actors moved to balance the workers",
              "recovering": "actors of dead workers not running again yet",
              "memory_restarts": "workers restarted past max_worker_memory",
              "hang_restarts": "workers restarted stuck past hang_timeout",
              "lost_in_deaths": "tells lost in workers' deaths (among the dead letters)",
              "queue_refusals": "messages refused past max_queued"}
    parts = [f"{labels.get(k, k.replace('_', ' '))} {v}" for k, v in stats.items()]
    if parts:
        click.echo("; ".join(parts))
    if any(by_reason.values()):
        click.echo("dead letters by reason: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in by_reason.items() if v))
    if any(restarts.values()):
        click.echo("restarts by supervisor: " + ", ".join(f"{k} {v}" for k, v in restarts.items() if v))
    if latency and latency.get("count"):
        quantiles = ", ".join(f"p{q} {_latency_bound(latency, q / 100)}" for q in (50, 99))
        click.echo(f"ask latency at this node (1 ask in {latency['sample_every']} timed, {latency['count']} so far): "
                   f"{quantiles}")
    if gossip:
        click.echo(f"gossip: {gossip['sent']} datagrams sent, {gossip['received']} received, "
                   f"{gossip['malformed']} malformed and {gossip['dropped']} refused (bad seal, stale or replayed), "
                   f"{gossip['suspicions']} suspicions raised")
    for kind, seen in ((gossip or {}).get("refusals") or {}).items():  # per source: a bad seal, a refused handshake
        if seen["total"]:
            by = [f"{source} {n}" for source, n in seen["by_source"].items()] + [f"others {seen['others']}"] * bool(seen["others"])
            click.echo(f"refused {kind}: {seen['total']} ({', '.join(by)})")
    for link in info.get("links") or []:
        state = "ready" if link["ready"] else f"NOT READY ({link['refusals']} refused handshakes, {link['pending']} kept)"
        click.echo(f"link to {link['node']} at {link['endpoint']}: {state}")
    for letter in info.get("recent_dead_letters") or []:
        click.echo(f"dead letter: {json.dumps(letter, default=str)}")


# -- failover drills -------------------------------------------------------------------


@main.command("kill-worker")
@node_options(waits="for the worker's actors to answer again", default=30.0)
@click.argument("worker_id", type=click.IntRange(min=0), required=False)
@click.option("--random", "pick_random", is_flag=True, envvar="GORILIX_KILL_WORKER_RANDOM", help="Kill a random live worker.")
@click.option("--signal", "sig", envvar="GORILIX_KILL_WORKER_SIGNAL", type=SignalName(), default="KILL",
              help=f"Signal to send: {', '.join(KILL_SIGNALS)}.")
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_KILL_WORKER_JSON", help="Print the result as JSON.")
def kill_worker(target: Target, worker_id: int | None, pick_random: bool, sig: int, as_json: bool) -> None:
    """Kill one worker of a node (a failover drill) and time the recovery.

    Reports how long until every actor the worker hosted answered again (on
    another worker, or on the respawned one) and the respawned worker's pid.
    """
    if (worker_id is None) == (not pick_random):
        raise click.UsageError("give either a WORKER_ID or --random")
    with reach(target) as remote:
        if worker_id is not None and worker_id >= remote.workers:
            raise click.BadParameter(f"node {remote.name} has workers 0..{remote.workers - 1}, not {worker_id}",
                                     param_hint="WORKER_ID")
        result = remote.kill_worker(worker_id, sig, timeout=target.timeout)
        slot = result["worker"]
        deadline = time.monotonic() + target.timeout
        respawned = None
        while time.monotonic() < deadline:
            row = remote.status()["workers"][slot]
            if row["alive"] and row["pid"] != result["pid"]:
                respawned = row
                break
            time.sleep(0.05)
        node_name = remote.name
    if as_json:
        click.echo(_dump({**result, "node": node_name, "signal": signal.Signals(sig).name,
                          "respawned_pid": respawned and respawned["pid"],
                          "restarts": respawned and respawned["restarts"]}))
    else:
        click.echo(f"killed worker {slot} (pid {result['pid']}) of node {node_name} with "
                   f"{signal.Signals(sig).name}; its {result['actors']} actors answered again after "
                   f"{result['recovered_ms']:.0f} ms")
        if respawned:
            click.echo(f"worker {slot} respawned as pid {respawned['pid']} (restarts: {respawned['restarts']})")
    if respawned is None:
        _fail(f"worker {slot} was not respawned within {target.timeout:g} s", 1)


@main.command()
@node_options(waits="for each kill's actors to answer again", default=30.0)
@click.option("--every", type=click.FloatRange(min=0.05), default=2.0, metavar="SECONDS",
              help="Seconds between kills.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=20.0, metavar="SECONDS",
              help="Seconds the drill runs.")
@click.option("--signal", "sig", envvar="GORILIX_CHAOS_SIGNAL", type=SignalName(), default="KILL", help="Signal each kill sends.")
@click.option("--probe-timeout", type=click.FloatRange(min=0.01), default=1.0,
              help="Seconds the probe waits for each answer before counting a failure.")
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_CHAOS_JSON", help="Print the report as JSON.")
def chaos(target: Target, every: float, duration: float, sig: int, probe_timeout: float, as_json: bool) -> None:
    """Kill a random worker again and again while a probe actor is asked in a loop.

    Then print a report: kills, recoveries, slowest recovery, and how many of
    the probe's asks were answered or failed. Exits 1 if a kill did not
    recover.
    """
    from gorilix.chaos import run_chaos
    from gorilix.remote import NodeUnreachable
    from gorilix.transport.errors import GorilixError

    last: list[str] = []
    steps = max(1, int(duration * 10))
    bar: Any
    with reach(target) as remote:
        node_name = remote.name  # checks the address, the secret and the node before the drill
    with click.progressbar(length=steps, label=f"chaos on {node_name}", file=sys.stderr,
                           item_show_func=lambda _: last[-1] if last else None) as bar:
        done = [0]

        def progress(elapsed: float) -> None:
            now = min(steps, int(elapsed * 10))
            if now > done[0]:
                bar.update(now - done[0])
                done[0] = now

        def killed(result: dict[str, Any]) -> None:
            if "error" in result:
                last.append(f"kill failed: {result['error']}"[:60])
            else:
                last.append(f"worker {result['worker']} back in {result['recovered_ms']:.0f} ms")

        try:
            report = run_chaos(target.address, every, duration, secret_file=target.secret_file, insecure=target.insecure,
                               sig=sig, probe_timeout=probe_timeout, connect_timeout=target.connect_timeout,
                               recovery_timeout=target.timeout,
                               on_progress=progress, on_kill=killed)
        except NodeUnreachable as exc:
            _fail(str(exc))
        except GorilixError as exc:
            _fail(str(exc), 1)
    if as_json:
        click.echo(_dump(report.to_dict()))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(1)


# -- messaging ------------------------------------------------------------------------


@main.command(help=f"""Send JSON to the actor registered as NAME (fire and forget).

{MESSAGE_HELP} With --cast, a GenServer gets it in handle_cast; without it, in
handle_info (another actor: in receive).

\b
  gorilix send greeter '"hello"'
  gorilix send --node 127.0.0.1:7946 counter 42
  gorilix send greeter '{{"op": "reset", "keep": [1, 2]}}'
  gorilix send --cast --tuple store '["write", "key", 7]'
""")
@node_options(waits="for the node to look NAME up")
@click.argument("name")
@click.argument("message", metavar="JSON")
@click.option("--cast", "as_cast", is_flag=True, envvar="GORILIX_SEND_CAST", help="Send it as a GenServer cast: handle_cast(message).")
@click.option("--tuple", "as_tuple", is_flag=True, envvar="GORILIX_SEND_TUPLE", help="Send a top-level JSON array as a tuple.")
def send(target: Target, name: str, message: str, as_cast: bool, as_tuple: bool) -> None:
    value = _parse_json(message, as_tuple)
    with reach(target) as remote:
        ref = _named(remote, name)
        if as_cast:  # (the ref-taking calls: RemoteNode.tell would look the name up a second time)
            remote.cast_ref(ref, value)
        else:
            remote.tell_ref(ref, value)
        click.echo(f"sent to {name} on node {remote.name}{' (a cast)' if as_cast else ''}")


@main.command(help=f"""Ask the actor registered as NAME with JSON; print its reply as JSON.

{MESSAGE_HELP} With --call, a GenServer gets it in handle_call and its return
value is the reply; without it, in handle_info (another actor: in receive).
In the reply, tuples become arrays, refs their text, bytes a string or
{{"base64": ...}}.

\b
  gorilix ask greeter '"World"'
  gorilix ask --node 127.0.0.1:7946 --timeout 10 counter '"count"'
  gorilix ask store '{{"op": "get", "key": "k"}}'
  gorilix ask --call --tuple store '["read", "key"]'
""")
@node_options(waits="for the reply")
@click.argument("name")
@click.argument("message", metavar="JSON")
@click.option("--call", "as_call", is_flag=True, envvar="GORILIX_ASK_CALL", help="Ask it as a GenServer call: handle_call(message) replies.")
@click.option("--tuple", "as_tuple", is_flag=True, envvar="GORILIX_ASK_TUPLE", help="Send a top-level JSON array as a tuple.")
def ask(target: Target, name: str, message: str, as_call: bool, as_tuple: bool) -> None:
    value = _parse_json(message, as_tuple)
    with reach(target) as remote:
        ref = _named(remote, name)
        if as_call:
            reply = remote.call_ref(ref, value, timeout=target.timeout)
        else:
            reply = remote.ask_ref(ref, value, timeout=target.timeout)
    click.echo(_dump(reply))


@main.command()
@node_options(waits="for the reload to finish", default=30.0)
@click.argument("module")
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_RELOAD_JSON", help="Print the result as JSON.")
def reload(target: Target, module: str, as_json: bool) -> None:
    """Hot-reload MODULE in every worker of the node; live actors move to the new code."""
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", module):
        raise click.BadParameter(f"{module!r} is not a module path like myapp.actors", param_hint="MODULE")
    with reach(target) as remote:
        result = remote.reload(module, timeout=target.timeout)
        node_name = remote.name
    if as_json:
        click.echo(_dump(result))
    else:
        click.echo(f"reloaded {result.get('module', module)} on node {node_name}: "
                   f"{result.get('workers', 0)} workers, {result.get('moved', 0)} actors moved to the new code")
        for error in result.get("errors") or []:
            click.echo(f"  error: {error}", err=True)
    if result.get("errors"):
        sys.exit(1)


# -- secrets ---------------------------------------------------------------------------


@main.group()
def secret() -> None:
    """Cluster secrets: one file format for `--secret-file` and `ClusterConfig(secret_file=...)`."""


@secret.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
def secret_new(path: str) -> None:
    """Write a new secret to PATH (32 random bytes in base64), mode 0600; never over an existing file.

    \b
      gorilix secret new /etc/gorilix/secret
      gorilix node --secret-file /etc/gorilix/secret ...
    """
    from gorilix.cluster.keyfile import write_secret_file

    try:
        write_secret_file(path)
    except FileExistsError:
        _fail(f"{path} exists already; remove it first, or pick another PATH")
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}")
    click.echo(f"wrote a new secret to {path} (mode 0600); give the same file to every node and client: "
               f"--secret-file {path}, or ClusterConfig(secret_file=...) and ActorSystem.connect(..., secret_file=...)")


# -- watching a cluster -----------------------------------------------------------------


@main.command()
@node_options(waits="for each poll (at most one interval)")
@click.option("--bind", metavar="HOST:PORT", default="127.0.0.1:8270", envvar="GORILIX_DASHBOARD_BIND",
              show_envvar=True, show_default=True,
              help="Address the page is served on. Off loopback, the page asks for a token derived from the "
                   "cluster secret.")
@click.option("--allow-drills", is_flag=True, envvar="GORILIX_ALLOW_DRILLS", show_envvar=True,
              help="Show a kill button per worker (a failover drill); the page needs the token then, "
                   "even on loopback.")
@click.option("--print-token", is_flag=True,
              help="Print the page's token (derived from the secret; never the secret) and exit.")
@click.option("--watch-stdin", is_flag=True, hidden=True, help="Also stop when stdin closes (for a parent "
              "that starts the dashboard).")
def dashboard(target: Target, bind: str, allow_drills: bool, print_token: bool, watch_stdin: bool) -> None:
    """Serve a live web page of the cluster, and Prometheus metrics at /metrics.

    A process of its own, a client of the nodes: it polls every member node
    once a second, so no browser can slow routing. It prints the page's
    address (with the token, when one is needed) and runs until SIGINT or SIGTERM.

    \b
      gorilix dashboard --node 127.0.0.1:7946
      gorilix dashboard --node 10.0.0.5:7946 --bind 0.0.0.0:8270 --secret-file /etc/gorilix/secret
    """
    from gorilix.cluster.security import dashboard_token
    from gorilix.dashboard import DashboardOptions, cluster_secret, run_dashboard
    from gorilix.transport.errors import GorilixError

    if target.insecure and target.secret_file is not None:
        raise click.UsageError("give --secret-file or --insecure, not both (--insecure connects without a secret)")
    if print_token:
        try:
            secret = cluster_secret(target.secret_file)
        except GorilixError as exc:
            _fail(str(exc))
        if secret is None:
            _fail("no secret to derive a token from: pass --secret-file, or start a node first (it makes the "
                  "per-user secret)")
        click.echo(dashboard_token(secret))
        return
    options = DashboardOptions(node=target.address, bind=bind, secret_file=target.secret_file,
                               insecure=target.insecure, allow_drills=allow_drills,
                               connect_timeout=target.connect_timeout)
    import logging

    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run_dashboard(options, say=click.echo, watch_stdin=watch_stdin)
    except GorilixError as exc:
        _fail(" ".join(str(exc).split()))
    sys.exit(code)


# -- on this machine -------------------------------------------------------------------


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers of the demo's main node.  [default: one per core, at least 2]")
def demo(workers: int | None) -> None:
    """A three-node cluster on localhost: spread, message, kill, recover.

    Needs no set-up: this process is one node and starts two `gorilix node`
    processes beside it; they are always stopped at the end.
    """
    from gorilix.demo import run_demo

    sys.exit(run_demo(workers=workers, echo=click.echo))


@main.command()
@click.option("--json", "as_json", is_flag=True, envvar="GORILIX_BENCH_JSON", help="Print the figures as JSON (progress goes to stderr).")
@click.option("--quick", is_flag=True, help="Fewer rounds (a smoke run, not a measurement).")
@click.option("--check", is_flag=True, help="Exit 1 when a figure misses its target (each is marked MISSED).")
@click.option("--failover-actors", type=click.IntRange(min=0), default=None,
              help="Actors on the worker killed in the mass failover step (0: leave the step out).  "
                   "[default: 20,000; 2,000 with --quick]")
def bench(as_json: bool, quick: bool, check: bool, failover_actors: int | None) -> None:
    """Measure latency, throughput, speedup, spawn rate and failover on this machine.

    The report starts with the machine and the versions it ran on, and marks
    each figure that misses its target; --check exits 1 if one does.
    """
    from gorilix.bench import format_report, missed, run_bench

    step = re.compile(r"\[(\d+)/(\d+)\]\s*(.*)")
    with click.progressbar(length=9, label="bench", file=sys.stderr, show_pos=True,
                           item_show_func=lambda text: text) as bar:
        done = [0]

        def say(line: str) -> None:
            found = step.match(line)
            if found is None:
                return
            n, total, text = int(found[1]), int(found[2]), found[3]
            bar.length = total
            bar.update(n - 1 - done[0], text[:50])
            done[0] = n - 1

        report = run_bench(quick=quick, progress=False, say=say, failover_actors=failover_actors)
        bar.update((bar.length or 0) - done[0], "done")
    report["missed"] = missed(report)
    if as_json:
        click.echo(_dump(report))
    else:
        click.echo(format_report(report))
    if check and report["missed"]:
        click.echo(f"missed: {', '.join(report['missed'])}", err=True)
        sys.exit(1)


# Every option shows its environment variable in --help (explicit or GORILIX_<COMMAND>_<OPTION>).
for _command in main.commands.values():
    for _param in _command.params:
        if isinstance(_param, click.Option):
            _param.show_envvar = True
