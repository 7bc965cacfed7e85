"""Outbox: everything a worker sends, buffered and flushed once per loop turn.

Consecutive tells to the same actor travel as one multipart (a batch). Asks
and replies sent outside a batch (from an asyncio task's step) go out at once.
Messages to an actor of this worker never touch the socket: they go to the
:class:`LocalDelivery` as bytes, so both paths give the same semantics (a
copy, the same types, the same SerializationError).
"""

from __future__ import annotations

from typing import Any, Protocol

import zmq

from gorilix.transport import codec
from gorilix.transport.frames import CONTROL_ID, TELL, message_frames, pack_env, pack_route
from gorilix.transport.sockets import send_frames
from gorilix.workers.protocol import WorkerReport

#: Messages buffered before a flush is forced mid-turn.
FLUSH_AT = 1024
#: Most tells packed in one multipart.
MAX_BATCH = 512
#: Distinct senders whose tell envelope is kept packed.
TELL_ENVS_KEPT = 4096


class LocalDelivery(Protocol):
    """Where messages for this worker's own actors (and answers to its own asks) go."""

    def deliver_local(self, dst_id: int, kind: int, src_id: int, corr: int, payload: bytes) -> bool:
        """Take a message sent to ``dst_id`` on this node; False when it is not for this worker."""
        ...


class Outbox:
    """The sending side of one worker's socket to its node."""

    def __init__(self, node: str, self_id: int) -> None:
        self.node = node
        self.self_id = self_id  # the worker itself, as a sender
        self.sock: zmq.Socket[bytes] | None = None  # set once the worker connected
        self.local: LocalDelivery | None = None
        #: True while the worker reads its socket or runs its scheduler: flush at the end of that.
        self.batching = False
        self._out: list[list[bytes]] = []
        self._out_key: tuple[str, int] | None = None
        self._out_count = 0
        self._tell_envs: dict[int, bytes] = {}

    @property
    def pending(self) -> bool:
        return bool(self._out)

    def send(self, dst_node: str, dst_id: int, kind: int, src_id: int, corr: int, payload: bytes) -> None:
        if dst_node == self.node and self.local is not None and self.local.deliver_local(
            dst_id, kind, src_id, corr, payload
        ):
            return
        if kind == TELL:
            key = (dst_node, dst_id)
            if key == self._out_key and len(self._out[-1]) < 2 * MAX_BATCH:
                self._out[-1] += (self._tell_env(src_id), payload)
            else:
                self._out.append([pack_route(dst_node, dst_id), self._tell_env(src_id), payload])
                self._out_key = key
        else:
            self._out.append(message_frames(dst_node, dst_id, kind, self.node, src_id, payload, corr))
            self._out_key = None
        self._out_count += 1
        if self._out_count >= FLUSH_AT or (kind != TELL and not self.batching):
            self.flush()  # asks and replies from a task step go out now

    def notify(self, op: str, *args: Any) -> None:
        """Send the node a control request any client may (subscribe, publish), ordered with the rest."""
        self.send(self.node, CONTROL_ID, TELL, self.self_id, 0, codec.encode([op, *args]))

    def report(self, report: WorkerReport) -> None:
        """Tell the node what it must know of this worker (gorilix.workers.protocol), ordered with the rest."""
        self.send(self.node, CONTROL_ID, TELL, self.self_id, 0, codec.encode(report.to_wire()))

    def _tell_env(self, src_id: int) -> bytes:
        """A tell's envelope depends only on its sender: pack it once, not per message."""
        env = self._tell_envs.get(src_id)
        if env is None:
            if len(self._tell_envs) >= TELL_ENVS_KEPT:  # many short-lived senders: start over
                self._tell_envs.clear()
            env = self._tell_envs[src_id] = pack_env(TELL, self.node, src_id, 0)
        return env

    def flush(self) -> None:
        out = self._out
        if out and self.sock is not None:
            self._out = []
            self._out_key = None
            self._out_count = 0
            sock = self.sock
            for frames in out:
                send_frames(sock, frames)
