"""A worker's health, as its node reads it: what it runs now and since when, even while it is stuck.

An actor that blocks synchronously (a long call, a lock, an endless loop)
freezes its whole worker: its loop, its socket and every report it would
send. So the worker does not *tell* its node what it runs: a small file it
shares with its node (memory-mapped, one per worker) holds it. A watchdog
thread in the worker writes the board every :data:`BEAT` seconds: a beat,
the actor whose message runs now, the message's kind, and since when that
message has run. The node reads the board whenever it likes.

A thread runs while the worker's own thread executes Python (the GIL
changes hands every few milliseconds), so the board stays current through
an endless Python loop or a blocking call. Only a C call that holds the
GIL for long stops the watchdog too; then the beat stops, and the node
knows the worker is stuck (in the message last written).

Writes use a sequence number (odd while writing) so a reader never takes
half of one write and half of the next.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

#: Seconds between two writes of the board.
BEAT = 0.1
_CLASS_MAX = 200
_KIND_MAX = 120
#: seq, beat, since, actor id, class path (length, bytes), message kind (length, bytes)
_LAYOUT = struct.Struct(f"<Q d d Q H {_CLASS_MAX}s H {_KIND_MAX}s")
SIZE = _LAYOUT.size


class Health(NamedTuple):
    """One read of a board; times are ``time.monotonic()`` (the same clock in every process)."""

    beat: float  # the watchdog's last write (0: not started yet)
    since: float  # when the running message started (0: none runs)
    actor_id: int
    class_path: str
    kind: str  # what the message is: its type, or its first item when it is a tuple or list headed by a str


def create_board(path: str) -> None:
    """Node side: a fresh, empty board at ``path`` (a worker maps it when it starts)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(SIZE))
    finally:
        os.close(fd)


def read_board(path: str) -> Health | None:
    """Node side: the board's last complete write, or None (no board, or a worker writing all the time)."""
    try:
        with open(path, "rb") as file:
            data = file.read(SIZE)
    except OSError:
        return None
    if len(data) != SIZE:
        return None
    for _ in range(3):
        seq, beat, since, actor_id, class_len, class_raw, kind_len, kind_raw = _LAYOUT.unpack(data)
        if seq % 2 == 0:
            return Health(beat, since, actor_id, class_raw[:class_len].decode(errors="replace"),
                          kind_raw[:kind_len].decode(errors="replace"))
        time.sleep(0.001)
        try:
            with open(path, "rb") as file:
                data = file.read(SIZE)
        except OSError:
            return None
    return None


def remove_board(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def describe(value: Any) -> str:
    """What a message is, in a few words: ``tuple 'get'``, ``Order``, ``int``."""
    if type(value) in (tuple, list) and value and type(value[0]) is str:
        return f"{type(value).__name__} {value[0][:60]!r}"
    return type(value).__qualname__


class Watchdog:
    """Worker side: writes the board every :data:`BEAT` s from a thread of its own.

    ``running()`` tells what the worker's thread runs now: ``(message, step,
    actor id, class path, kind)``, or None between messages. ``message`` is
    compared by identity and ``step`` by value (a chunk's items are steps of
    one message), so a new message restarts the clock. It must be cheap and
    never block: it reads what the scheduler sets.
    """

    def __init__(self, path: str, running: Callable[[], tuple[object, int, int, str, str] | None]) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._running = running
        self._seq = 0
        self._last: tuple[object, int] | None = None
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gorilix-watchdog", daemon=True)

    def start(self) -> None:
        self.write()  # (a beat at once: a worker stuck from its first message is silent from then on)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(BEAT):
            try:
                self.write()
            except Exception:  # (a watchdog that fails must not take the worker down; its beat stops)
                return

    def write(self) -> None:
        now = time.monotonic()
        running = self._running()
        if running is None:
            self._last, self._since = None, 0.0
            actor_id, class_path, kind = 0, "", ""
        else:
            message, step, actor_id, class_path, kind = running
            last = self._last
            if last is None or last[0] is not message or last[1] != step:  # another message: its clock starts
                self._last, self._since = (message, step), now
        class_raw = class_path.encode(errors="replace")[:_CLASS_MAX]
        kind_raw = kind.encode(errors="replace")[:_KIND_MAX]
        self._seq += 1  # odd: writing
        struct.pack_into("<Q", self._map, 0, self._seq)
        _LAYOUT.pack_into(self._map, 0, self._seq, now, self._since, actor_id, len(class_raw), class_raw,
                          len(kind_raw), kind_raw)
        self._seq += 1  # even: done
        struct.pack_into("<Q", self._map, 0, self._seq)
