"""Socket set-up shared by every endpoint, and the address space of ids."""

from __future__ import annotations

import os
import tempfile
import uuid

import zmq

#: Actor ids are ``prefix << ID_SHIFT | counter``: the node hands each worker
#: incarnation its own prefix, so workers create ids without asking anyone.
ID_SHIFT = 40


def configure_internal(sock: zmq.Socket[bytes]) -> None:
    """Options for node-local links (ipc): never drop, never block on close."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def ipc_endpoint(node_name: str) -> str:
    """A fresh ipc:// address for one node's router (unix socket path < 100 bytes)."""
    safe = "".join(c if c.isalnum() else "-" for c in node_name)[:24]
    path = os.path.join(tempfile.gettempdir(), f"gorilix-{safe}-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
    return f"ipc://{path}"


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None
