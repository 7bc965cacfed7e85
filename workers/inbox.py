"""Inbox: what reaches a worker, from its socket or from its own actors, delivered where it belongs.

Actor messages go to their cell's mailbox (through the scheduler), answers
to the worker's pending asks, and the node's control ops to the
:class:`CellControl`. Bad input is dropped and counted, never raised: a
sender whose ask cannot be delivered learns why at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from gorilix.transport import codec
from gorilix.transport.errors import (
    ActorNotFound,
    DecodeError,
    GorilixError,
    MailboxFull,
    UnknownMessageType,
    error_from_wire,
    error_to_wire,
)
from gorilix.transport.frames import (
    ASK,
    BATCH,
    CONTROL_ID,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    PART,
    REPLY,
    STOP,
    TELL,
    TELL_ACK,
    split_messages,
    unpack_env,
    unpack_route,
)
from gorilix.workers.asks import PendingAsks
from gorilix.workers.batch import decode_request, encode_answer
from gorilix.workers.cell import COUNTED, ActorCell, Message
from gorilix.workers.outbox import Outbox
from gorilix.workers.protocol import (
    DeadLetter,
    ExitSignal,
    Handoff,
    Reload,
    Restart,
    Shutdown,
    Spawn,
    StopActor,
    Suspend,
    op_from_wire,
)
from gorilix.workers.ref import ActorRef
from gorilix.workers.scheduler import Scheduler
from gorilix.workers.spec import ActorSpec
from gorilix.workers.tally import NoTally, Tally


class CellControl(Protocol):
    """What the inbox asks of the keeper of the cells' lives: the node's control ops, and a stop."""

    def spawn_for_node(self, actor_id: int, spec: ActorSpec) -> None: ...
    def stop_actor(self, actor_id: int, reason: str) -> None: ...
    def suspend(self, actor_id: int, reason: str) -> None: ...
    def restart(self, actor_id: int, reason: str) -> None: ...
    def exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None: ...
    def reload(self, module_name: str) -> None: ...
    def shutdown(self) -> None: ...
    def hand_off(self, actor_id: int) -> None: ...
    def stop_cell(self, cell: ActorCell, reason: str) -> None: ...


class Inbox:
    """Delivers incoming messages; implements the outbox's :class:`LocalDelivery`."""

    def __init__(
        self, node: str, slot: int, self_id: int, cells: dict[int, ActorCell],
        scheduler: Scheduler, asks: PendingAsks, outbox: Outbox, control: CellControl,
    ) -> None:
        self.node = node
        self.slot = slot
        self.self_id = self_id
        self.cells = cells
        self.scheduler = scheduler
        self.asks = asks
        self.outbox = outbox
        self.control = control
        self.malformed = 0
        self.dead_letters = 0

    @property
    def tally(self) -> Tally | NoTally:
        """Where the tells the node counted are settled (the scheduler's: it settles those it runs)."""
        return self.scheduler.tally

    # -- from the socket ------------------------------------------------------

    def dispatch(self, frames: list[bytes]) -> None:
        """One multipart from the node: a batch of messages to one actor, or a control op."""
        try:
            route = unpack_route(frames[0])
        except (DecodeError, IndexError):
            self.malformed += 1
            return
        dst_id = route.dst_id
        # The node counts each message of a multipart that is neither an ask nor a reply (tells,
        # stops): each is settled in the tally exactly once, when handed to the actor or refused.
        counted = dst_id != CONTROL_ID and not route.flags & (FLAG_ASK | FLAG_REPLY)
        try:
            # The common case, one message, skips the general pairing (same checks: 3 frames pass them).
            pairs = ((frames[1], frames[2]),) if len(frames) == 3 else split_messages(frames)
        except (DecodeError, IndexError):
            self.malformed += 1
            if counted:
                self.tally.settle_many(dst_id, (len(frames) - 1) // 2)
            return
        for env_frame, payload in pairs:
            try:
                kind, src_node, src_id, corr = unpack_env(env_frame)
            except DecodeError:
                self.malformed += 1
                if counted:
                    self.tally.settle(dst_id)
                continue
            try:
                value = codec.decode(payload) if kind != BATCH else decode_request(payload)
            except DecodeError as exc:
                self.undecodable(dst_id, kind, src_node, src_id, corr, exc)
                if counted:
                    self.tally.settle(dst_id)
                continue
            if dst_id == CONTROL_ID:
                self._control(value)
            elif not counted:
                self.deliver(dst_id, (kind, src_node, src_id, corr, value))
            elif not self.deliver(dst_id, (kind, src_node, src_id, COUNTED, value)):
                self.tally.settle(dst_id)  # refused (or a stop carried out at once): settled here

    def _control(self, value: Any) -> None:
        """An op from the node (gorilix.workers.protocol), parsed whole first: a bad one is counted, not run."""
        try:
            op = op_from_wire(value)
        except DecodeError:
            self.malformed += 1
            return
        control = self.control
        match op:
            case Spawn(actor_id, spec):
                control.spawn_for_node(actor_id, spec)
            case StopActor(actor_id, reason):
                control.stop_actor(actor_id, reason)
            case Suspend(actor_id, reason):
                control.suspend(actor_id, reason)
            case Restart(actor_id, reason):
                control.restart(actor_id, reason)
            case ExitSignal(actor_id, (node, from_id, from_name), reason):
                control.exit_signal(actor_id, ActorRef(node, from_id, from_name), reason)
            case Reload(module):
                control.reload(module)
            case Shutdown():
                control.shutdown()
            case Handoff(actor_id):
                control.hand_off(actor_id)

    # -- from this worker's own actors ---------------------------------------

    def deliver_local(self, dst_id: int, kind: int, src_id: int, corr: int, payload: bytes) -> bool:
        if kind == REPLY or kind == FAIL:
            if dst_id not in self.cells and dst_id != self.self_id:
                return False
            try:
                answer = codec.decode(payload)
            except DecodeError as exc:  # our own bytes: only a message whose __post_init__ raises
                self.asks.fail(corr, exc)
                return True
            self.settle(corr, kind, answer)
            return True
        if dst_id not in self.cells:
            return False
        try:
            value = codec.decode(payload) if kind != BATCH else decode_request(payload)
        except DecodeError as exc:
            self.undecodable(dst_id, kind, self.node, src_id, corr, exc)
            return True
        self.deliver(dst_id, (kind, self.node, src_id, corr, value))
        return True

    # -- delivery -------------------------------------------------------------

    def deliver(self, dst_id: int, message: Message) -> bool:
        """Hand ``message`` to its actor's mailbox; False when it was not queued (answered, refused, or run now)."""
        kind = message[0]
        if kind == REPLY or kind == FAIL:
            self.settle(message[3], kind, message[4])
            return False
        if kind == PART:  # (only a client asks a batch of items: an actor is sent none of their parts)
            self.malformed += 1
            return False
        cell = self.cells.get(dst_id)
        if cell is None or not cell.alive:
            self.undeliverable(dst_id, message, ActorNotFound(f"no actor {self.node}/{dst_id:#x}"))
            return False
        if kind == STOP and cell.down:
            self.control.stop_cell(cell, "shutdown")  # nothing runs there until a restart: stop now
            return False
        limit = cell.spec.mailbox_size
        if limit is not None and len(cell.mailbox) >= limit and kind != STOP:
            self.undeliverable(dst_id, message, MailboxFull(
                f"mailbox of {cell.ref} is full ({limit} message{'s' if limit != 1 else ''})"))
            return False
        self.scheduler.enqueue(cell, message)
        return True

    def settle(self, corr: int, kind: int, value: Any) -> None:
        """An answer to one of this worker's asks."""
        if kind == REPLY:
            self.asks.settle(corr, value)
        else:
            self.asks.fail(corr, error_from_wire(value))

    def undeliverable(self, dst_id: int, message: Message, error: GorilixError) -> None:
        """An ask fails back to its sender (a chunk with the answers of its items run so far); else a dead letter."""
        kind, src_node, src_id, corr, value = message
        if kind == ASK or kind == TELL_ACK:
            self.outbox.send(src_node, src_id, FAIL, self.self_id, corr, codec.encode(error_to_wire(error)))
        elif kind == BATCH:
            self.outbox.send(src_node, src_id, REPLY, self.self_id, corr, encode_answer(value.take_part(), error))
        else:
            self.dead_letters += 1
            self.outbox.report(DeadLetter(dst_id, f"{type(error).__name__}: {error}"))

    def undecodable(
        self, dst_id: int, kind: int, src_node: str, src_id: int, corr: int, error: DecodeError
    ) -> None:
        """A payload this worker cannot decode is dropped; whoever waits on it learns why now.

        A malformed or too deep payload is counted in ``malformed``. One that
        names a message class this process lacks is sound: its ask fails at
        once and a tell counts as a dead letter, both naming the class.
        """
        unknown = isinstance(error, UnknownMessageType) and dst_id != CONTROL_ID
        if not unknown:
            self.malformed += 1
        if kind == REPLY or kind == FAIL:  # the answer to one of our asks
            self.asks.fail(corr, error)
        elif unknown:
            where = f"actor {self.node}/{dst_id:#x} on worker {self.slot}"
            error = UnknownMessageType(f"{error}; it was sent to {where}")
            if kind == ASK or kind == BATCH or kind == TELL_ACK:
                self.outbox.send(src_node, src_id, FAIL, self.self_id, corr, codec.encode(error_to_wire(error)))
            elif kind == TELL:
                self.dead_letters += 1
                self.outbox.report(DeadLetter(dst_id, f"{type(error).__name__}: {error}"))
            else:  # (a part, which no actor takes, or a stop with a payload no stop has)
                self.malformed += 1
