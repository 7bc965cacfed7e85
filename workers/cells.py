"""CellKeeper: the lives of a worker's actors: create, start, crash, restart, stop, reload.

Every decision about an actor's life is the node's (its supervisor's); the
keeper carries the decisions out in this worker and reports what happened
("spawned", "exited", "restarted", ...). It is the :class:`Outcomes` the
scheduler reports handler results to, the :class:`CellControl` the inbox
hands the node's control ops to, and the :class:`CellHost` of every cell.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from gorilix.transport import codec
from gorilix.transport.errors import (
    ActorError,
    ActorNotFound,
    DecodeError,
    SerializationError,
    SpawnError,
    error_to_wire,
    qualified_name,
)
from gorilix.transport.frames import ASK, BATCH, FAIL, PART, REPLY, STOP, TELL, TELL_ACK
from gorilix.workers.actor import Actor
from gorilix.workers.asks import PendingAsks
from gorilix.workers.batch import encode_answer, encode_part
from gorilix.workers.cell import COUNTED, HANDOFF, ActorCell, Message, current
from gorilix.workers.inbox import Inbox
from gorilix.workers.messages import Exit, is_abnormal
from gorilix.workers.outbox import Outbox
from gorilix.workers.protocol import (
    Exited,
    HandedOff,
    Register,
    Reloaded,
    Restarted,
    SpawnAt,
    Spawned,
    SpawnFailed,
    WorkerReport,
)
from gorilix.workers.ref import ActorRef
from gorilix.workers.scheduler import ACTOR_FAILURES, Scheduler, is_coroutine
from gorilix.workers.spec import ActorSpec, decode_args, make_spec, resolve_class
from gorilix.workers.tally import NoTally, Tally

log = logging.getLogger("gorilix.worker")

#: The answer to an acknowledged tell (TELL_ACK): None, encoded once.
_TAKEN = codec.encode(None)


class CellKeeper:
    """The cells of one worker, and the scheduler and inbox that serve them.

    The three refer to each other (the inbox hands control ops here, the
    scheduler reports outcomes here), so the keeper builds the other two.
    """

    def __init__(
        self, node: str, slot: int, self_id: int, loop: asyncio.AbstractEventLoop,
        asks: PendingAsks, outbox: Outbox, on_shutdown: Callable[[], None],
        tally: Tally | NoTally | None = None,
    ) -> None:
        self.node = node
        self.slot = slot
        self.cells: dict[int, ActorCell] = {}
        self.loop = loop
        self.outbox = outbox
        self.scheduler = Scheduler(self, loop, tally)
        self.inbox = Inbox(node, slot, self_id, self.cells, self.scheduler, asks, outbox, self)
        self._on_shutdown = on_shutdown
        self._ids = itertools.count(self_id + 1)
        self._classes: dict[str, type[Actor]] = {}

    # -- CellHost: what actors ask for -----------------------------------------

    def spawn_from_actor(
        self, actor_class: type | str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        name: str | None, worker: int | None, restart: str, mailbox_size: int | None,
    ) -> ActorRef:
        spec = make_spec(actor_class, args, kwargs, name=name, restart=restart,
                         mailbox_size=mailbox_size, base=Actor)
        actor_id = next(self._ids)
        if worker is not None and worker != self.slot:
            self.outbox.report(SpawnAt(actor_id, spec, worker))
            return ActorRef(self.node, actor_id, spec.name)
        cell = self._create_cell(actor_id, spec)
        self.outbox.report(Register(actor_id, spec))
        self._start_cell(cell)
        return cell.ref

    def request_stop(self, cell: ActorCell, reason: str) -> None:
        ctx = current.get()
        if ctx is not None and ctx[0] is cell:
            cell.stop_reason = reason  # after the current message
        else:
            self.go_down(cell, reason, abnormal=False)

    def notify(self, op: str, *args: Any) -> None:
        self.outbox.notify(op, *args)

    def report(self, report: WorkerReport) -> None:
        self.outbox.report(report)

    def publish(self, topic: str, message: Any) -> None:
        self.outbox.notify("publish", topic, codec.encode(message))

    def send_after(self, cell: ActorCell, delay: float, message: Any) -> asyncio.TimerHandle:
        payload = codec.encode(message)
        handle: asyncio.TimerHandle

        def fire() -> None:
            if cell.timers is not None:
                cell.timers.discard(handle)
            if cell.alive:
                try:
                    value = codec.decode(payload)
                except DecodeError as exc:  # our own bytes: only a message whose __post_init__ raises
                    self.inbox.undecodable(cell.id, TELL, self.node, cell.id, 0, exc)
                    return
                self.inbox.deliver(cell.id, (TELL, self.node, cell.id, 0, value))

        handle = self.loop.call_later(delay, fire)
        if cell.timers is None:
            cell.timers = set()
        cell.timers.add(handle)
        return handle

    # -- CellControl: the node's control ops -----------------------------------

    def spawn_for_node(self, actor_id: int, spec: ActorSpec) -> None:
        try:
            cell = self._create_cell(actor_id, spec)
        except SpawnError as exc:
            self.outbox.report(SpawnFailed(actor_id, error_to_wire(exc)))
            return
        self.outbox.report(Spawned(actor_id))
        self._start_cell(cell)

    def stop_actor(self, actor_id: int, reason: str) -> None:
        cell = self.cells.get(actor_id)
        if cell is not None:
            self.stop_cell(cell, reason)

    def suspend(self, actor_id: int, reason: str) -> None:
        cell = self.cells.get(actor_id)
        if cell is not None:
            self.go_down(cell, reason, abnormal=False, report=False)

    def restart(self, actor_id: int, reason: str) -> None:
        cell = self.cells.get(actor_id)
        if cell is None:
            log.warning("restart of unknown actor %#x ignored", actor_id)
            return
        if not cell.down and cell.instance is not None:  # a sibling restarted by its strategy
            self._cancel_timers(cell)
            self._call_on_stop(cell, reason)
        cell.instance = None
        cell.down = True
        try:
            cell.instance = self._instantiate(cell)
        except SpawnError as exc:
            self.outbox.report(Exited(cell.id, f"restart failed: {exc}", True, False))
            return
        cell.down = False
        cell.restarts += 1
        self.outbox.report(Restarted(cell.id))
        self._start_cell(cell)
        self.scheduler.wake(cell)

    def exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None:
        cell = self.cells.get(actor_id)
        if cell is None or cell.down or cell.instance is None:
            return
        if cell.instance.trap_exits:
            self.inbox.deliver(actor_id, (TELL, source.node, source.id, 0, Exit(source, reason)))
        elif is_abnormal(reason):
            self.go_down(cell, f"linked actor {source} exited: {reason}", abnormal=True)

    def reload(self, module_name: str) -> None:
        """Re-import a module and move live actors of its classes to the new code."""
        moved = 0
        module = sys.modules.get(module_name)
        saved = dict(module.__dict__) if module is not None else None
        try:
            importlib.invalidate_caches()
            if module is not None:
                _drop_cached_bytecode(module)
                module = importlib.reload(module)
            else:
                module = importlib.import_module(module_name)
        except Exception as exc:
            if module is not None and saved is not None:  # a half-run module must not serve spawns
                module.__dict__.clear()
                module.__dict__.update(saved)
            log.exception("reload of %s failed", module_name)
            self.outbox.report(Reloaded(module_name, 0, f"{qualified_name(type(exc))}: {exc}"))
            return
        prefix = f"{module_name}:"
        for path in [p for p in self._classes if p.startswith(prefix)]:
            del self._classes[path]
        for cell in list(self.cells.values()):
            if cell.instance is None or not cell.spec.class_path.startswith(prefix):
                continue
            try:
                new_class = resolve_class(cell.spec.class_path, Actor)
            except SpawnError as exc:
                log.error("after reload, %s: %s; it keeps its old code", cell.ref, exc)
                continue
            cell.instance.__class__ = new_class
            moved += 1
            token = current.set((cell, None))
            try:
                cell.instance.on_code_change()
            except Exception as exc:
                self.on_crash(cell, None, exc)
            finally:
                current.reset(token)
        self.outbox.report(Reloaded(module_name, moved, None))

    def hand_off(self, actor_id: int) -> None:
        """Mark where the actor is given up: after what was sent to it before (the node parks what comes after)."""
        cell = self.cells.get(actor_id)
        if cell is not None:
            self.scheduler.enqueue(cell, (STOP, self.node, 0, 0, HANDOFF))  # (past any mailbox limit)

    def handed_off(self, cell: ActorCell) -> None:
        """The actor's turn reached its handoff: it ends here, and what its neighbours sent it since goes to the node."""
        cell.alive = False
        self.cells.pop(cell.id, None)
        self._cancel_timers(cell)
        if cell.instance is not None:
            self._call_on_stop(cell, "moved")
            cell.instance = None
        while cell.mailbox:  # (sent by this worker's own actors after the mark: the node parks them for it)
            kind, _, src_id, corr, value = cell.mailbox.popleft()
            if value is HANDOFF:
                continue
            if corr == COUNTED:  # (the node's, were one after the mark: settled here, counted again on the way)
                self.scheduler.tally.settle(cell.id)
                corr = 0
            try:
                self.outbox.send(self.node, cell.id, kind, src_id, corr, codec.encode(value))
            except Exception as exc:  # (a value it took in: it travels again)
                log.error("a message to %s, which moved, was lost: %s", cell.ref, exc)
        self.outbox.report(HandedOff(cell.id))

    def shutdown(self) -> None:
        for cell in list(self.cells.values()):
            self.stop_cell(cell, "shutdown")
        self.outbox.flush()
        self._on_shutdown()

    def stop_cell(self, cell: ActorCell, reason: str) -> None:
        """Stop for good: queued asks fail, the node forgets the actor."""
        if not cell.alive:
            return
        cell.alive = False
        self.cells.pop(cell.id, None)
        self._cancel_timers(cell)
        gone = ActorNotFound(f"actor {cell.ref} stopped ({reason})")
        while cell.mailbox:
            message = cell.mailbox.popleft()
            if message[3] == COUNTED:
                self.scheduler.tally.settle(cell.id)
            if message[4] is not HANDOFF:
                self.inbox.undeliverable(cell.id, message, gone)
        if cell.instance is not None:
            self._call_on_stop(cell, reason)
            cell.instance = None
        self.outbox.report(Exited(cell.id, reason, is_abnormal(reason), True))

    # -- Outcomes: what handlers did --------------------------------------------

    def on_result(self, cell: ActorCell, message: Message, result: Any) -> None:
        kind, src_node, src_id, corr, _ = message
        if kind != ASK:
            if kind == TELL_ACK:  # taken: its sender may stop waiting
                self.outbox.send(src_node, src_id, REPLY, cell.id, corr, _TAKEN)
            return
        try:
            payload = codec.encode(result)
        except Exception as exc:  # SerializationError, or a registered type's to_plain that broke
            # The asker learns it now, and nothing half-built was queued to send.
            error = SerializationError(f"the answer of {cell.ref} cannot be sent: {exc}")
            log.error("%s", error)
            self.outbox.send(src_node, src_id, FAIL, cell.id, corr, codec.encode(error_to_wire(error)))
            return
        self.outbox.send(src_node, src_id, REPLY, cell.id, corr, payload)

    def on_batch(self, cell: ActorCell, message: Message) -> None:
        """A chunk's items ran (or its actor stopped itself partway): their answers go back as one."""
        _, src_node, src_id, corr, batch = message
        self.outbox.send(src_node, src_id, REPLY, cell.id, corr, encode_answer(batch.take_part(), None))

    def on_part(self, cell: ActorCell, message: Message) -> bool:
        """The answers of a running chunk so far, to its sender; if one cannot travel, the chunk ends there."""
        _, src_node, src_id, corr, batch = message
        sent = batch.sent
        try:
            payload = encode_part(batch.take_part())
        except Exception:  # SerializationError, or a registered type's to_plain that broke
            batch.sent = sent
            self.on_batch(cell, message)  # (which answers up to the bad answer, and fails its item)
            return False
        batch.sent_at = time.perf_counter()
        self.outbox.send(src_node, src_id, PART, cell.id, corr, payload)
        return True

    def on_crash(self, cell: ActorCell, message: Message | None, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        label = f"{cell.spec.class_path.replace(':', '.')} {cell.ref}"
        log.error("actor %s crashed:\n%s", label, text)
        # Report the exit before answering the asker: the node acts on it (restarts,
        # Down, links) before the asker can learn of the crash and send again.
        self.go_down(cell, f"crashed: {qualified_name(type(exc))}: {exc}", abnormal=True)
        if message is not None and message[0] == ASK:
            error = ActorError(qualified_name(type(exc)), str(exc), text, label)
            self.outbox.send(message[1], message[2], FAIL, cell.id, message[3], codec.encode(error_to_wire(error)))
        elif message is not None and message[0] == TELL_ACK:  # taken, even if badly: the crash is its supervisor's
            self.outbox.send(message[1], message[2], REPLY, cell.id, message[3], _TAKEN)
        elif message is not None and message[0] == BATCH:  # the items before it answered, those after it not run
            error = ActorError(qualified_name(type(exc)), str(exc), text, label)
            self.outbox.send(message[1], message[2], REPLY, cell.id, message[3],
                             encode_answer(message[4].take_part(), error))

    def go_down(self, cell: ActorCell, reason: str, abnormal: bool, report: bool = True) -> None:
        """End the current incarnation and let the node's supervisor decide.

        The cell keeps its mailbox (and its ref keeps working): if the actor
        is restarted, the new incarnation handles what waited.
        """
        if not cell.alive or cell.down:
            return
        cell.down = True
        cell.stop_reason = None
        self._cancel_timers(cell)
        if cell.instance is not None:
            self._call_on_stop(cell, reason)
            cell.instance = None
        if report:
            self.outbox.report(Exited(cell.id, reason, abnormal, False))

    # -- creating and ending incarnations ----------------------------------------

    def _create_cell(self, actor_id: int, spec: ActorSpec) -> ActorCell:
        cell = ActorCell(self, self.node, actor_id, spec)
        cell.instance = self._instantiate(cell)
        self.cells[actor_id] = cell
        return cell

    def _instantiate(self, cell: ActorCell) -> Actor:
        spec = cell.spec
        cls = self._classes.get(spec.class_path)
        if cls is None:
            cls = self._classes[spec.class_path] = resolve_class(spec.class_path, Actor)
        try:
            args, kwargs = decode_args(spec)
        except (DecodeError, TypeError, ValueError) as exc:
            raise SpawnError(f"cannot decode the arguments for {spec.class_path}: {exc}") from exc
        # The cell is attached before the user's __init__ runs, so `self.ref`
        # and `self.spawn` work there: hence __new__ and __init__ by hand.
        instance = cls.__new__(cls)  # type: ignore[call-overload]
        instance._gx_cell = cell
        token = current.set((cell, None))
        try:
            instance.__init__(*args, **kwargs)  # type: ignore[misc]
        except ACTOR_FAILURES as exc:
            raise SpawnError(
                f"{spec.class_path}.__init__ raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            current.reset(token)
        return instance

    def _start_cell(self, cell: ActorCell) -> None:
        """Run on_start as the cell's first piece of work."""
        token = current.set((cell, None))
        try:
            result = cell.instance.on_start()  # type: ignore[union-attr]
            if is_coroutine(result):
                cell.busy = True
                self.loop.create_task(self._finish_start(cell, result))
        except ACTOR_FAILURES as exc:
            self.on_crash(cell, None, exc)
        finally:
            current.reset(token)

    async def _finish_start(self, cell: ActorCell, coro: Any) -> None:
        try:
            await coro
        except ACTOR_FAILURES as exc:
            cell.busy = False
            self.on_crash(cell, None, exc)
        else:
            cell.busy = False
        self.scheduler.wake(cell)

    def _cancel_timers(self, cell: ActorCell) -> None:
        if cell.timers:
            for timer in cell.timers:
                timer.cancel()
            cell.timers = None

    def _call_on_stop(self, cell: ActorCell, reason: str) -> None:
        token = current.set((cell, None))
        try:
            result = cell.instance.on_stop(reason)  # type: ignore[union-attr]
            if is_coroutine(result):
                self.loop.create_task(result)
        except Exception:
            log.exception("on_stop of %s raised", cell.ref)
        finally:
            current.reset(token)


def _drop_cached_bytecode(module: Any) -> None:
    """A .pyc is trusted by source mtime and size: a quick same-size edit would be missed."""
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return
    try:
        os.remove(importlib.util.cache_from_source(source))
    except (OSError, NotImplementedError, ValueError):
        pass
