"""The worker process: one asyncio loop, one DEALER to the node, many actors.

Incoming multiparts are drained from the socket in bursts and turned into
mailbox entries; outgoing messages are buffered and flushed once per loop
turn, consecutive tells to the same actor travelling as one multipart.
Messages between two actors of this worker never touch the socket, but are
still encoded and decoded so that both paths give the same semantics (a
copy, the same types, the same SerializationError).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import logging
import multiprocessing
import os
import sys
import threading
import traceback
from typing import Any, cast

import zmq

from gorilix.transport import codec
from gorilix.transport.errors import (
    ActorError,
    ActorNotFound,
    AskTimeout,
    DecodeError,
    GorilixError,
    MailboxFull,
    SerializationError,
    SpawnError,
    UnknownMessageType,
    error_from_wire,
    error_to_wire,
    qualified_name,
)
from gorilix.transport.frames import (
    ASK,
    CONTROL_ID,
    FAIL,
    FLAG_ASK,
    FLAG_REPLY,
    REPLY,
    STOP,
    TELL,
    pack_env,
    pack_route,
    split_messages,
    unpack_env,
    unpack_route,
)
from gorilix.transport.sockets import (
    ID_SHIFT,
    configure_internal,
    has_input,
    recv_frames,
    send_frames,
)
from gorilix.workers.actor import Actor
from gorilix.workers.config import WorkerConfig
from gorilix.workers.messages import Exit, is_abnormal
from gorilix.workers.ref import ActorRef, install_resolver
from gorilix.workers.scheduler import ActorCell, Message, Scheduler, current
from gorilix.workers.spec import ActorSpec, decode_args, make_spec, resolve_class

log = logging.getLogger("gorilix.worker")

#: Messages buffered before a flush is forced mid-turn.
FLUSH_AT = 1024
#: Most tells packed in one multipart.
MAX_BATCH = 512
#: Multiparts read from the socket before yielding to the scheduler.
RECV_BURST = 512
#: Seconds between load reports to the node.
LOAD_EVERY = 1.0


class WorkerRuntime:
    """The port of every ref used inside this worker, and the actors' host."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.node = config.node_name
        self.slot = config.slot
        self.self_id = config.id_prefix << ID_SHIFT
        self.cells: dict[int, ActorCell] = {}
        self._ids = itertools.count(self.self_id + 1)
        self._corr = itertools.count(1)
        self._asks: dict[int, tuple[asyncio.Future[Any], asyncio.TimerHandle]] = {}
        self._out: list[list[bytes]] = []
        self._out_key: tuple[str, int] | None = None
        self._tell_envs: dict[int, bytes] = {}
        self._out_count = 0
        self._flush_scheduled = False
        self._classes: dict[str, type[Any]] = {}
        self._thread_id = 0
        self._batching = False  # inside a drain or a scheduler run: flush at its end
        self.malformed = 0
        self.dead_letters = 0
        self.handled = 0  # messages handed to actors (for the node's message rates)
        self.loop: asyncio.AbstractEventLoop
        self.sock: zmq.Socket[bytes]
        self.scheduler: Scheduler

    # -- process life -------------------------------------------------------

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._thread_id = threading.get_ident()
        self.scheduler = Scheduler(self, self.loop)
        ctx = zmq.Context()
        self.sock = ctx.socket(zmq.DEALER)
        configure_internal(self.sock)
        self.sock.setsockopt(zmq.ROUTING_ID, self.config.identity)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)  # we may boot before the node's router binds: retry soon
        self.sock.connect(self.config.endpoint)
        install_resolver(lambda ref: self)
        self.loop.add_reader(cast(int, self.sock.getsockopt(zmq.FD)), self._on_readable)
        parent = multiprocessing.parent_process()
        if parent is not None:
            self.loop.add_reader(parent.sentinel, self._on_parent_gone)
        self.notify("attach_worker", self.slot, self.config.incarnation, os.getpid())
        self.flush()
        self.loop.call_later(LOAD_EVERY, self._report_load)
        try:
            self.loop.run_forever()
        finally:
            install_resolver(None)
            self.sock.close(linger=0)
            ctx.term()

    def _report_load(self) -> None:
        """Mailbox depths and counters, for `gorilix status` (cheap: once a second)."""
        self.loop.call_later(LOAD_EVERY, self._report_load)  # first: a failure here must not end the reports
        queued = sum(len(c.mailbox) for c in self.cells.values())
        deepest = max((len(c.mailbox) for c in self.cells.values()), default=0)
        self.notify("load", queued, deepest, self.handled, self.malformed, self.dead_letters)

    def _on_parent_gone(self) -> None:
        log.warning("node process is gone; worker %d exits", self.slot)
        self.loop.stop()

    def _shutdown(self) -> None:
        for cell in list(self.cells.values()):
            self.stop_cell(cell, "shutdown")
        self.flush()
        self.loop.stop()

    # -- receiving ----------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self.sock
        scheduler = self.scheduler
        scheduler.holding = self._batching = True
        try:
            for _ in range(RECV_BURST):
                if not has_input(sock):  # cheaper than the zmq.Again an empty recv raises
                    break
                self._dispatch(recv_frames(sock))
            else:
                self.loop.call_soon(self._on_readable)
        finally:
            scheduler.holding = self._batching = False
        if scheduler.ready:
            scheduler.run()  # at once: saves a loop turn on every hop
        else:
            self.flush()

    def _dispatch(self, frames: list[bytes]) -> None:
        try:
            route = unpack_route(frames[0])
            pairs = split_messages(frames)
        except (DecodeError, IndexError):
            self.malformed += 1
            return
        for env_frame, payload in pairs:
            try:
                env = unpack_env(env_frame)
            except DecodeError:
                self.malformed += 1
                continue
            try:
                value = codec.decode(payload)
            except DecodeError as exc:
                self._undecodable(route.dst_id, env.kind, env.src_node, env.src_id, env.corr, exc)
                continue
            if route.dst_id == CONTROL_ID:
                self._control(value)
            else:
                self._deliver(route.dst_id, (env.kind, env.src_node, env.src_id, env.corr, value))

    def _undecodable(
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
            self._fail_ask(corr, error)
        elif unknown:
            where = f"actor {self.node}/{dst_id:#x} on worker {self.slot}"
            error = UnknownMessageType(f"{error}; it was sent to {where}")
            if kind == ASK:
                self._send(src_node, src_id, FAIL, self.self_id, corr, codec.encode(error_to_wire(error)))
            elif kind == TELL:
                self.dead_letters += 1
                self.notify("dead_letter", dst_id, f"{type(error).__name__}: {error}")

    def _deliver(self, dst_id: int, message: Message) -> None:
        kind = message[0]
        if kind == REPLY or kind == FAIL:
            self._settle(message[3], kind, message[4])
            return
        cell = self.cells.get(dst_id)
        if cell is None or not cell.alive:
            self._undeliverable(dst_id, message, ActorNotFound(f"no actor {self.node}/{dst_id:#x}"))
            return
        if kind == STOP and cell.down:
            self.stop_cell(cell, "shutdown")  # nothing runs there until a restart: stop now
            return
        limit = cell.spec.mailbox_size
        if limit is not None and len(cell.mailbox) >= limit and kind != STOP:
            self._undeliverable(
                dst_id, message, MailboxFull(f"mailbox of {cell.ref} is full ({limit} messages)")
            )
            return
        self.scheduler.enqueue(cell, message)

    def _settle(self, corr: int, kind: int, value: Any) -> None:
        if kind != REPLY:
            self._fail_ask(corr, error_from_wire(value))
            return
        pending = self._asks.pop(corr, None)
        if pending is None:
            return
        future, timer = pending
        timer.cancel()
        if not future.done():  # done: the asker was cancelled
            future.set_result(value)

    def _fail_ask(self, corr: int, error: BaseException) -> None:
        pending = self._asks.pop(corr, None)
        if pending is None:
            return
        future, timer = pending
        timer.cancel()
        if not future.done():
            future.set_exception(error)

    def _undeliverable(self, dst_id: int, message: Message, error: GorilixError) -> None:
        kind, src_node, src_id, corr, _ = message
        if kind == ASK:
            self._send(src_node, src_id, FAIL, self.self_id, corr, codec.encode(error_to_wire(error)))
        else:
            self.dead_letters += 1
            self.notify("dead_letter", dst_id, f"{type(error).__name__}: {error}")

    def _control(self, op: Any) -> None:
        try:
            name = op[0]
            if name == "spawn":
                _, actor_id, spec_fields = op
                self._spawn_for_node(actor_id, ActorSpec.from_wire(spec_fields))
            elif name == "stop_actor":
                cell = self.cells.get(op[1])
                if cell is not None:
                    self.stop_cell(cell, str(op[2]))
            elif name == "suspend":
                cell = self.cells.get(op[1])
                if cell is not None:
                    self.go_down(cell, str(op[2]), abnormal=False, report=False)
            elif name == "restart":
                self._restart(op[1], str(op[2]))
            elif name == "exit_signal":
                _, actor_id, (node, from_id, from_name), reason = op
                self._exit_signal(actor_id, ActorRef(node, from_id, from_name), str(reason))
            elif name == "reload":
                self._reload(str(op[1]))
            elif name == "shutdown":
                self._shutdown()
            else:
                self.malformed += 1
        except (DecodeError, TypeError, ValueError, IndexError):
            self.malformed += 1

    # -- sending ------------------------------------------------------------

    def _send(self, dst_node: str, dst_id: int, kind: int, src_id: int, corr: int, payload: bytes) -> None:
        if dst_node == self.node:
            if kind == REPLY or kind == FAIL:
                if dst_id in self.cells or dst_id == self.self_id:
                    try:
                        answer = codec.decode(payload)
                    except DecodeError as exc:  # our own bytes: only a message whose __post_init__ raises
                        self._fail_ask(corr, exc)
                        return
                    self._settle(corr, kind, answer)
                    return
            else:
                cell = self.cells.get(dst_id)
                if cell is not None:
                    try:
                        value = codec.decode(payload)
                    except DecodeError as exc:
                        self._undecodable(dst_id, kind, self.node, src_id, corr, exc)
                        return
                    self._deliver(dst_id, (kind, self.node, src_id, corr, value))
                    return
        if kind == TELL:
            key = (dst_node, dst_id)
            if key == self._out_key and len(self._out[-1]) < 2 * MAX_BATCH:
                self._out[-1] += (self._tell_env(src_id), payload)
            else:
                self._out.append([pack_route(dst_node, dst_id), self._tell_env(src_id), payload])
                self._out_key = key
        else:
            flags = FLAG_ASK if kind == ASK else FLAG_REPLY if kind in (REPLY, FAIL) else 0
            self._out.append(
                [pack_route(dst_node, dst_id, flags, src_id, corr),
                 pack_env(kind, self.node, src_id, corr), payload]
            )
            self._out_key = None
        self._out_count += 1
        if self._out_count >= FLUSH_AT or (kind != TELL and not self._batching):
            self.flush()  # asks and replies from a task step go out now
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def _tell_env(self, src_id: int) -> bytes:
        """A tell's envelope depends only on its sender: pack it once, not per message."""
        env = self._tell_envs.get(src_id)
        if env is None:
            if len(self._tell_envs) >= 4096:  # many short-lived senders: start over
                self._tell_envs.clear()
            env = self._tell_envs[src_id] = pack_env(TELL, self.node, src_id, 0)
        return env

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out:
            self._out = []
            self._out_key = None
            self._out_count = 0
            sock = self.sock
            for frames in out:
                send_frames(sock, frames)
            if has_input(sock):  # the FD is edge-triggered: sending can swallow the edge
                self.loop.call_soon(self._on_readable)

    def notify(self, op: str, *args: Any) -> None:
        """Tell the node something (ordered with every other message we send)."""
        self._send(self.node, CONTROL_ID, TELL, self.self_id, 0, codec.encode([op, *args]))

    def _current_src(self) -> int:
        ctx = current.get()
        return ctx[0].id if ctx is not None else self.self_id

    def current_sender(self) -> ActorRef | None:
        ctx = current.get()
        if ctx is None or ctx[1] is None:
            return None
        _, src_node, src_id, _, _ = ctx[1]
        return ActorRef(src_node, src_id) if src_id else None

    # -- the Port interface used by ActorRef --------------------------------

    def tell(self, ref: ActorRef, message: Any) -> None:
        payload = codec.encode(message)
        if threading.get_ident() != self._thread_id:
            self.loop.call_soon_threadsafe(self._send, ref.node, ref.id, TELL, 0, 0, payload)
            return
        self._send(ref.node, ref.id, TELL, self._current_src(), 0, payload)

    def stop_actor(self, ref: ActorRef) -> None:
        if threading.get_ident() != self._thread_id:
            self.loop.call_soon_threadsafe(self.stop_actor, ref)
            return
        self._send(ref.node, ref.id, STOP, self._current_src(), 0, codec.encode(None))

    def ask(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        if threading.get_ident() == self._thread_id:
            raise GorilixError(
                f"ask() would block the worker's event loop (asking {ref} from inside an actor); "
                "make receive `async def` and use `await ref.ask_async(...)`"
            )
        future = asyncio.run_coroutine_threadsafe(self._ask_from_thread(ref, message, timeout), self.loop)
        return future.result()

    def ask_async(self, ref: ActorRef, message: Any, timeout: float) -> asyncio.Future[Any]:
        """Send now; the future settles with the answer, an error, or AskTimeout."""
        payload = codec.encode(message)
        corr = next(self._corr)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._asks[corr] = (future, self.loop.call_later(timeout, self._expire, corr, ref, timeout))
        self._send(ref.node, ref.id, ASK, self._current_src(), corr, payload)
        return future

    async def _ask_from_thread(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        return await self.ask_async(ref, message, timeout)

    def _expire(self, corr: int, ref: ActorRef, timeout: float) -> None:
        pending = self._asks.pop(corr, None)
        if pending is not None and not pending[0].done():
            pending[0].set_exception(AskTimeout(f"{ref} did not answer within {timeout:g} s"))

    # -- actor lifecycle ----------------------------------------------------

    def spawn_from_actor(
        self, actor_class: type | str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        name: str | None, worker: int | None, restart: str, mailbox_size: int | None,
    ) -> ActorRef:
        spec = make_spec(actor_class, args, kwargs, name=name, restart=restart,
                         mailbox_size=mailbox_size, base=Actor)
        actor_id = next(self._ids)
        if worker is not None and worker != self.slot:
            self.notify("spawn_at", actor_id, spec.to_wire(), worker)
            return ActorRef(self.node, actor_id, spec.name)
        cell = self._create_cell(actor_id, spec)
        self.notify("register", actor_id, spec.to_wire())
        self._start_cell(cell)
        return cell.ref

    def _spawn_for_node(self, actor_id: int, spec: ActorSpec) -> None:
        try:
            cell = self._create_cell(actor_id, spec)
        except SpawnError as exc:
            self.notify("spawn_failed", actor_id, error_to_wire(exc))
            return
        self.notify("spawned", actor_id)
        self._start_cell(cell)

    def _create_cell(self, actor_id: int, spec: ActorSpec) -> ActorCell:
        cell = ActorCell(self, actor_id, spec)
        cell.instance = self._instantiate(cell)
        self.cells[actor_id] = cell
        return cell

    def _instantiate(self, cell: ActorCell) -> Actor:
        spec = cell.spec
        cls: type[Actor] | None = self._classes.get(spec.class_path)
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
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
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
            if asyncio.iscoroutine(result):
                cell.busy = True
                self.loop.create_task(self._finish_start(cell, result))
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self.on_crash(cell, None, exc)
        finally:
            current.reset(token)

    async def _finish_start(self, cell: ActorCell, coro: Any) -> None:
        try:
            await coro
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            cell.busy = False
            self.on_crash(cell, None, exc)
        else:
            cell.busy = False
        self.scheduler.wake(cell)
        self.flush()

    def on_result(self, cell: ActorCell, message: Message, result: Any) -> None:
        kind, src_node, src_id, corr, _ = message
        if kind != ASK:
            return
        try:
            payload = codec.encode(result)
        except Exception as exc:  # SerializationError, or a registered type's to_plain that broke
            # The asker learns it now, and nothing half-built was queued to send.
            error = SerializationError(f"the answer of {cell.ref} cannot be sent: {exc}")
            log.error("%s", error)
            self._send(src_node, src_id, FAIL, cell.id, corr, codec.encode(error_to_wire(error)))
            return
        self._send(src_node, src_id, REPLY, cell.id, corr, payload)

    def on_crash(self, cell: ActorCell, message: Message | None, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        label = f"{cell.spec.class_path.replace(':', '.')} {cell.ref}"
        log.error("actor %s crashed:\n%s", label, text)
        # Report the exit before answering the asker: the node acts on it (restarts,
        # Down, links) before the asker can learn of the crash and send again.
        self.go_down(cell, f"crashed: {qualified_name(type(exc))}: {exc}", abnormal=True)
        if message is not None and message[0] == ASK:
            error = ActorError(qualified_name(type(exc)), str(exc), text, label)
            self._send(message[1], message[2], FAIL, cell.id, message[3], codec.encode(error_to_wire(error)))

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
            self.notify("exited", cell.id, reason, abnormal, False)

    def _restart(self, actor_id: int, reason: str) -> None:
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
            self.notify("exited", cell.id, f"restart failed: {exc}", True, False)
            return
        cell.down = False
        cell.restarts += 1
        self.notify("restarted", cell.id)
        self._start_cell(cell)
        self.scheduler.wake(cell)

    def _exit_signal(self, actor_id: int, source: ActorRef, reason: str) -> None:
        cell = self.cells.get(actor_id)
        if cell is None or cell.down or cell.instance is None:
            return
        if cell.instance.trap_exits:
            self._deliver(actor_id, (TELL, source.node, source.id, 0, Exit(source, reason)))
        elif is_abnormal(reason):
            self.go_down(cell, f"linked actor {source} exited: {reason}", abnormal=True)

    def _reload(self, module_name: str) -> None:
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
            self.notify("reloaded", module_name, 0, f"{qualified_name(type(exc))}: {exc}")
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
        self.notify("reloaded", module_name, moved, None)

    def request_stop(self, cell: ActorCell, reason: str) -> None:
        ctx = current.get()
        if ctx is not None and ctx[0] is cell:
            cell.stop_reason = reason  # after the current message
        else:
            self.go_down(cell, reason, abnormal=False)

    def stop_cell(self, cell: ActorCell, reason: str) -> None:
        """Stop for good: queued asks fail, the node forgets the actor."""
        if not cell.alive:
            return
        cell.alive = False
        self.cells.pop(cell.id, None)
        self._cancel_timers(cell)
        gone = ActorNotFound(f"actor {cell.ref} stopped ({reason})")
        while cell.mailbox:
            self._undeliverable(cell.id, cell.mailbox.popleft(), gone)
        if cell.instance is not None:
            self._call_on_stop(cell, reason)
            cell.instance = None
        self.notify("exited", cell.id, reason, is_abnormal(reason), True)

    def _cancel_timers(self, cell: ActorCell) -> None:
        if cell.timers:
            for timer in cell.timers:
                timer.cancel()
            cell.timers = None

    def _call_on_stop(self, cell: ActorCell, reason: str) -> None:
        token = current.set((cell, None))
        try:
            result = cell.instance.on_stop(reason)  # type: ignore[union-attr]
            if asyncio.iscoroutine(result):
                self.loop.create_task(result)
        except Exception:
            log.exception("on_stop of %s raised", cell.ref)
        finally:
            current.reset(token)

    def publish(self, topic: str, message: Any) -> None:
        self.notify("publish", topic, codec.encode(message))

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
                    self._undecodable(cell.id, TELL, self.node, cell.id, 0, exc)
                    return
                self._deliver(cell.id, (TELL, self.node, cell.id, 0, value))

        handle = self.loop.call_later(delay, fire)
        if cell.timers is None:
            cell.timers = set()
        cell.timers.add(handle)
        return handle



def _drop_cached_bytecode(module: Any) -> None:
    """A .pyc is trusted by source mtime and size: a quick same-size edit would be missed."""
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return
    try:
        os.remove(importlib.util.cache_from_source(source))
    except (OSError, NotImplementedError, ValueError):
        pass
