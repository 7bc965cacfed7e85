"""Raw pyzmq baseline for the benchmark: what the hardware does with no framework.

The benchmark compares gorilix against this floor, so the topology mirrors
ours (sender -> one routing hop -> receiver, msgpack payloads) with nothing
else in the way:

    process A: DEALER  <-->  process R: ROUTER hop  <-->  process B: DEALER

R gets ``[X, dst, payload]`` from identity X and sends ``[dst, X, payload]``,
so the receiver knows the sender. A ``dst`` of ``b""`` addresses R itself
(used only for the start handshake).

Run ``python -m gorilix.baseline [--quick] [--endpoint tcp://127.0.0.1:0]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import msgpack
import zmq

__all__ = ["measure_ask_rtt", "measure_tell_throughput", "run_baseline"]

# Longest any process waits for a peer before it gives up with RuntimeError.
_TIMEOUT_S = 30.0
_TIMEOUT_MS = int(_TIMEOUT_S * 1000)
# Parent-side backstop per message, on top of _TIMEOUT_S: ~100x the expected cost.
_BUDGET_PER_MESSAGE_S = 1e-3
# How long a process gets to exit after being told to before it is terminated.
_JOIN_S = 5.0

_A = b"A"
_B = b"B"
_R = b""  # the "destination" that means the router itself
_HELLO = b"hello"
_READY = b"ready"
_EXIT = "exit"


# --------------------------------------------------------------------------
# Child processes (top-level so the spawn context can import them)
# --------------------------------------------------------------------------


def _child_main(body: Callable[..., None], conn: Connection, *args: Any) -> None:
    """Run one role and report a failure to the parent instead of dying silently."""
    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        body(conn, *args)
    except Exception as exc:
        with suppress(OSError):
            conn.send(("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc())))
        raise SystemExit(1) from None
    finally:
        conn.close()


def _socket(
    ctx: zmq.Context[zmq.Socket[bytes]], kind: int, identity: bytes | None = None
) -> zmq.Socket[bytes]:
    """A socket that never blocks on close and never drops on a full queue."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
        # A bounded wait, so a dead peer turns into an error rather than a hang.
        sock.setsockopt(zmq.RCVTIMEO, _TIMEOUT_MS)
    return sock


def _recv(sock: zmq.Socket[bytes], waiting_for: str) -> list[bytes]:
    """Receive one multipart, or explain what never arrived."""
    try:
        return sock.recv_multipart()
    except zmq.Again:
        raise RuntimeError(f"no {waiting_for} within {_TIMEOUT_S:g} s") from None


def _wait_for_exit(conn: Connection) -> None:
    """Keep sockets open until the parent says the run is over.

    With LINGER 0, closing drops whatever is still queued, so a process may only
    close once its last message is known to have arrived; the parent knows that
    (A has its result), we don't.
    """
    with suppress(EOFError, OSError):
        if conn.poll(_TIMEOUT_S):
            conn.recv()


def _router_main(conn: Connection, endpoint: str) -> None:
    """R: forward ``[X, dst, payload]`` as ``[dst, X, payload]``, and run the handshake."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _socket(ctx, zmq.ROUTER)
        # Unknown destinations raise instead of being dropped silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind(endpoint)
        conn.send(("bound", sock.getsockopt_string(zmq.LAST_ENDPOINT)))

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(conn.fileno(), zmq.POLLIN)
        expected = {_A, _B}
        known: set[bytes] = set()
        while True:
            # Twice the peers' timeout, so their more specific errors are the ones reported.
            events = dict(poller.poll(2 * _TIMEOUT_MS))
            if not events:
                raise RuntimeError(f"router saw no traffic and no exit for {2 * _TIMEOUT_S:g} s")
            if conn.fileno() in events:
                with suppress(EOFError):
                    conn.recv()
                return  # "exit", or the parent is gone: either way we are done
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) != 3:
                    raise RuntimeError(f"router got {len(frames)} frames, expected 3")
                src, dst, payload = frames
                if dst != _R:
                    try:
                        sock.send_multipart([dst, src, payload])
                    except zmq.ZMQError as exc:
                        if exc.errno == zmq.EHOSTUNREACH:
                            raise RuntimeError(f"router: unknown destination {dst!r}") from None
                        raise
                elif payload == _HELLO and src in expected and src not in known:
                    known.add(src)
                    if known == expected:
                        for peer in sorted(known):
                            sock.send_multipart([peer, _R, _READY])
                else:
                    raise RuntimeError(f"router: unexpected control {payload!r} from {src!r}")
    finally:
        ctx.destroy(linger=0)


def _join(sock: zmq.Socket[bytes], endpoint: str, who: str) -> None:
    """Announce ourselves to R and wait until R knows both peers, so nothing is lost."""
    sock.connect(endpoint)
    sock.send_multipart([_R, _HELLO])
    frames = _recv(sock, f"'ready' from the router for {who}")
    if frames != [_R, _READY]:
        raise RuntimeError(f"{who} expected 'ready' from the router, got {frames!r}")


def _receiver_main(conn: Connection, endpoint: str, mode: str, total: int) -> None:
    """B: answer every ping (ask) or count every message and report once (tell)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _socket(ctx, zmq.DEALER, _B)
        _join(sock, endpoint, "B")
        packb, unpackb = msgpack.packb, msgpack.unpackb
        if mode == "ask":
            for _ in range(total):
                src, payload = _recv(sock, "ping from A")
                _, i = unpackb(payload)
                sock.send_multipart([src, packb(["pong", i])])
        else:
            src = _A
            for expected in range(total):
                src, payload = _recv(sock, f"message {expected} of {total} from A")
                _, i = unpackb(payload)
                if i != expected:
                    raise RuntimeError(f"B got message {i}, expected {expected}")
            sock.send_multipart([src, packb(["done", total])])
        _wait_for_exit(conn)
    finally:
        ctx.destroy(linger=0)


def _sender_main(conn: Connection, endpoint: str, mode: str, count: int, warmup: int) -> None:
    """A: drive the run and time it, then hand the figure to the parent."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _socket(ctx, zmq.DEALER, _A)
        _join(sock, endpoint, "A")
        packb, unpackb = msgpack.packb, msgpack.unpackb
        perf_counter = time.perf_counter
        if mode == "ask":
            spent = 0.0
            for i in range(warmup + count):
                start = perf_counter()
                sock.send_multipart([_B, packb(["ping", i])])
                _, payload = _recv(sock, f"reply {i} from B")
                if unpackb(payload)[1] != i:
                    raise RuntimeError(f"A got reply {unpackb(payload)!r} for ping {i}")
                if i >= warmup:
                    spent += perf_counter() - start
            result = spent / count * 1e6
        else:
            start = perf_counter()
            for i in range(count):
                sock.send_multipart([_B, packb(["ping", i])])
            _, payload = _recv(sock, "completion report from B")
            elapsed = perf_counter() - start
            if unpackb(payload) != ["done", count]:
                raise RuntimeError(f"A got report {unpackb(payload)!r}, expected done {count}")
            result = count / elapsed
        conn.send(("result", result))
    finally:
        ctx.destroy(linger=0)


# --------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Child:
    name: str
    process: BaseProcess
    conn: Connection  # the parent's end


def _start(
    ctx: multiprocessing.context.SpawnContext,
    children: list[_Child],
    name: str,
    body: Callable[..., None],
    *args: Any,
) -> _Child:
    """Start one role; record it first so the caller's finally always reaps it."""
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(
        target=_child_main,
        args=(body, child_end, *args),
        name=f"gorilix-baseline-{name}",
        daemon=True,
    )
    child = _Child(name, process, parent_end)
    children.append(child)
    try:
        process.start()
    finally:
        child_end.close()  # so the parent sees EOF when the child goes away
    return child


def _expect(children: list[_Child], source: _Child, kind: str, timeout: float) -> Any:
    """Wait for ``source`` to report ``kind``; raise if any child fails, dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        # Snapshot deaths before draining, so a report sent just before exiting still counts.
        dead = [c for c in children if not c.process.is_alive()]
        for child in children:
            while child.conn.poll():
                try:
                    tag, value = child.conn.recv()
                except EOFError:
                    if child not in dead:
                        dead.append(child)
                    break
                if tag == "error":
                    summary, remote_tb = value
                    error = RuntimeError(f"baseline process {child.name} failed: {summary}")
                    error.add_note(f"in process {child.name}:\n{remote_tb}")
                    raise error
                if child is source and tag == kind:
                    return value
                raise RuntimeError(f"baseline process {child.name} sent unexpected {tag!r}")
        if dead:
            child = dead[0]
            child.process.join(1.0)
            raise RuntimeError(
                f"baseline process {child.name} exited (code {child.process.exitcode}) "
                f"before {source.name} reported {kind!r}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"baseline process {source.name} did not report {kind!r} within {timeout:g} s"
            )
        wait([c.conn for c in children] + [c.process.sentinel for c in children], remaining)


def _reap(children: list[_Child]) -> None:
    """Leave no process behind: terminate whatever still runs, kill it if that fails, join."""
    for child in children:
        process = child.process
        child.conn.close()
        if process.pid is None:  # start() itself failed
            continue
        if process.is_alive():
            process.terminate()
            process.join(_JOIN_S)
        if process.is_alive():
            process.kill()
        process.join()


def _bind_address(endpoint: str, tmpdir: str | None) -> str:
    if endpoint == "ipc://":
        assert tmpdir is not None
        return f"ipc://{tmpdir}/router"
    if endpoint.startswith("tcp://"):
        return endpoint
    raise ValueError(
        f"endpoint must be 'ipc://' (a socket file in a private temp dir, always removed) "
        f"or a tcp bind address such as 'tcp://127.0.0.1:0', not {endpoint!r}"
    )


def _run(mode: str, count: int, warmup: int, endpoint: str) -> float:
    """Run A, R and B once in fresh processes and return A's figure."""
    ctx = multiprocessing.get_context("spawn")
    tmpdir = tempfile.mkdtemp(prefix="gorilix-baseline-") if endpoint == "ipc://" else None
    children: list[_Child] = []
    try:
        router = _start(ctx, children, "R", _router_main, _bind_address(endpoint, tmpdir))
        address = _expect(children, router, "bound", _TIMEOUT_S)
        total = count + warmup if mode == "ask" else count
        _start(ctx, children, "B", _receiver_main, address, mode, total)
        sender = _start(ctx, children, "A", _sender_main, address, mode, count, warmup)
        budget = _TIMEOUT_S + (count + warmup) * _BUDGET_PER_MESSAGE_S
        result = float(_expect(children, sender, "result", budget))
        # A has the last reply, so nothing is in flight: everyone may close now.
        for child in children:
            with suppress(OSError):
                child.conn.send(_EXIT)
        for child in children:
            child.process.join(_JOIN_S)
            if child.process.exitcode != 0:
                raise RuntimeError(
                    f"baseline process {child.name} did not exit cleanly "
                    f"(exit code {child.process.exitcode})"
                )
        return result
    finally:
        try:
            _reap(children)
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def measure_ask_rtt(rounds: int = 2000, warmup: int = 200, *, endpoint: str = "ipc://") -> float:
    """Mean A->R->B->R->A round trip in microseconds: the floor for our ask latency.

    Sequential request/reply, timed in A with ``time.perf_counter``; the first
    ``warmup`` rounds are not counted so connection setup and caches don't skew it.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError("rounds must be >= 1 and warmup >= 0")
    return _run("ask", rounds, warmup, endpoint)


def measure_tell_throughput(messages: int = 100_000, *, endpoint: str = "ipc://") -> float:
    """One-way messages per second from A to B through R: the ceiling for our tell rate.

    One multipart per message (no batching, like a tell), timed in A from the
    first send until B reports back that it has received and unpacked them all.
    """
    if messages < 1:
        raise ValueError("messages must be >= 1")
    return _run("tell", messages, 0, endpoint)


def run_baseline(quick: bool = False, *, endpoint: str = "ipc://") -> dict[str, float]:
    """Both baseline figures, as the benchmark reports them; ``quick`` uses ~1/10 the counts."""
    scale = 10 if quick else 1
    return {
        "ask_rtt_us": measure_ask_rtt(2000 // scale, 200 // scale, endpoint=endpoint),
        "tell_msgs_per_s": measure_tell_throughput(100_000 // scale, endpoint=endpoint),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~1/10 of the message counts")
    parser.add_argument(
        "--endpoint", default="ipc://", help="'ipc://' (default) or e.g. 'tcp://127.0.0.1:0'"
    )
    cli = parser.parse_args()
    print(run_baseline(cli.quick, endpoint=cli.endpoint))
