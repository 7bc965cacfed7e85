"""Socket set-up shared by every endpoint."""

from __future__ import annotations

import os
import uuid
from typing import Any

import zmq
from zmq.backend import Socket as _CSocket
from zmq.backend import zmq_poll

from gorilix.transport.errors import GorilixError
from gorilix.transport.routing import (
    ID_SHIFT as ID_SHIFT,  # (with the other id ranges; re-exported)
)
from gorilix.transport.runtime import RUNTIME_ENV, runtime_dir

#: The longest unix socket path the kernel takes (sun_path is 108 bytes, with its NUL).
IPC_PATH_MAX = 107


def configure_internal(sock: zmq.Socket[Any]) -> None:
    """Options for node-local links (ipc): never drop, never block on close."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def ipc_endpoint(node_name: str) -> str:
    """A fresh ipc:// address for one node's router, in the user's private runtime directory.

    The directory is this user's alone (mode 0700, see :mod:`gorilix.transport.runtime`):
    no other user of the machine can connect to the socket, whatever the umask.
    """
    safe = "".join(c if c.isalnum() else "-" for c in node_name)[:24]
    path = os.path.join(runtime_dir(), f"gorilix-{safe}-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
    if len(path.encode()) > IPC_PATH_MAX - len(".w999.health"):  # (the workers' boards sit beside it)
        raise GorilixError(f"the node's socket path {path} is too long for a unix socket; set {RUNTIME_ENV} "
                           "to a shorter directory of yours")
    return f"ipc://{path}"


def remove_stale_ipc_files() -> int:
    """Delete socket files (and workers' boards and tallies) left in the runtime directory by nodes that were
    killed (their pid is gone)."""
    removed = 0
    folder = runtime_dir()
    for entry in os.listdir(folder):
        if not (entry.startswith("gorilix-") and entry.endswith((".sock", ".health", ".tally"))):
            continue
        try:
            pid = int(entry.split(".")[0].split("-")[-2])  # (a worker's board: gorilix-NAME-PID-ID.wN.health)
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(folder, entry))
                removed += 1
            except OSError:
                pass
        except PermissionError:
            pass  # alive, someone else's
    return removed


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


# -- the hot path -----------------------------------------------------------
# pyzmq's Python layer (buffer checks, enum flags, a Python getsockopt per
# frame) costs about as much as the C calls underneath; a message crosses
# three sockets per hop, so these call the Cython backend directly. Even
# there, ``Socket.get`` builds a ``SocketOption`` enum per call: a received
# frame carries its RCVMORE flag already, and a zero-timeout ``zmq_poll``
# reads ZMQ_EVENTS without one.

_send = _CSocket.send
_recv = _CSocket.recv
_poll = zmq_poll
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket[Any], frames: list[bytes], flags: int = 0) -> None:
    """``send_multipart`` for a list of bytes (raises zmq.ZMQError as it does)."""
    last = len(frames) - 1
    more = _SNDMORE | flags
    for i in range(last):
        _send(sock, frames[i], more)
    _send(sock, frames[last], flags)


def recv_frames(sock: zmq.Socket[Any], block: bool = False) -> list[bytes]:
    """One multipart as bytes; raises zmq.Again when ``block`` is false and none is queued."""
    frame = _recv(sock, 0 if block else _NOBLOCK, False)
    parts: list[bytes] = [frame.bytes]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        parts.append(frame.bytes)
    return parts


def has_input(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is queued (reads ZMQ_EVENTS, so it also re-arms the edge-triggered ZMQ_FD)."""
    return bool(_poll([(sock, _POLLIN)], 0))
