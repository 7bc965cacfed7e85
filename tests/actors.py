"""Actor classes the tests spawn (workers import them by module path)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from gorilix import Actor, ActorRef, AskTimeout, GenServer, message


@message
class Point:
    x: int
    y: int


class Echo(Actor):
    def receive(self, msg: Any) -> Any:
        return msg


class Greeter(Actor):
    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting

    def receive(self, msg: Any) -> Any:
        return f"{self.greeting}, {msg}!"


class Counter(Actor):
    def __init__(self) -> None:
        self.count = 0

    def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.count
        self.count += 1
        return None


class WhoAmI(Actor):
    def receive(self, msg: Any) -> Any:
        return {"pid": os.getpid(), "ref": self.ref}


class Recorder(Actor):
    """Keeps what it is told; ("get",) returns the list."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def receive(self, msg: Any) -> Any:
        if msg == ("get",):
            return self.seen
        self.seen.append(msg)
        return None


class SeqChecker(Actor):
    """Counts ("seq", sender, i) messages and checks each sender's order."""

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}
        self.count = 0
        self.in_order = True

    def receive(self, msg: Any) -> Any:
        if msg == "report":
            return {"count": self.count, "in_order": self.in_order}
        _, sender, i = msg
        if self.next.get(sender, 0) != i:
            self.in_order = False
        self.next[sender] = i + 1
        self.count += 1
        return None


class Pinger(Actor):
    """("send", target, n): tells target n sequence-numbered messages."""

    def receive(self, msg: Any) -> Any:
        _, target, n = msg
        me = self.ref.id
        for i in range(n):
            target.tell(("seq", me, i))
        return n


class Relay(Actor):
    """Asks another actor on the caller's behalf (an async handler)."""

    async def receive(self, msg: Any) -> Any:
        target, payload = msg
        answer = await target.ask_async(payload, timeout=5.0)
        return ("relayed", answer)


class Sleeper(Actor):
    async def receive(self, msg: Any) -> Any:
        await asyncio.sleep(msg)
        return msg


class Impatient(Actor):
    """Asks a Sleeper three ways from inside a worker: times out, gives up (cancels), then waits."""

    async def receive(self, msg: Any) -> Any:
        sleeper = msg
        outcomes = []
        try:
            await sleeper.ask_async(0.5, timeout=0.05)
        except AskTimeout as exc:
            outcomes.append(("timeout", str(exc)))
        try:
            await asyncio.wait_for(sleeper.ask_async(0.3, timeout=5.0), 0.05)
        except TimeoutError as exc:
            outcomes.append(("gave up", type(exc).__name__))
        outcomes.append(("answer", await sleeper.ask_async(0.01, timeout=5.0)))
        return outcomes


class Crasher(Actor):
    def __init__(self) -> None:
        self.handled = 0

    def receive(self, msg: Any) -> Any:
        if msg == "boom":
            raise ValueError("kaboom")
        if msg == "pid":
            return os.getpid()
        self.handled += 1
        return self.handled


class Parent(Actor):
    def receive(self, msg: Any) -> Any:
        if msg == "child":
            return self.spawn(Echo)
        if isinstance(msg, tuple) and msg[0] == "children":
            return [self.spawn(Echo) for _ in range(msg[1])]
        if msg == "bad-child":
            try:
                self.spawn(BadInit)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                return type(exc).__name__
        return None


class SenderProbe(Actor):
    async def receive(self, msg: Any) -> Any:
        if isinstance(msg, ActorRef):
            return await msg.ask_async("who")
        return self.sender


class Stopper(Actor):
    def __init__(self, log: ActorRef | None = None) -> None:
        self.log = log

    def receive(self, msg: Any) -> Any:
        if msg == "stop":
            self.stop()
            return "stopping"
        return msg

    def on_stop(self, reason: str) -> None:
        if self.log is not None:
            self.log.tell(("stopped", reason))


class Timer(Actor):
    def __init__(self, log: ActorRef) -> None:
        self.log = log
        self.cancelled: Any = None

    def receive(self, msg: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "after":
            self.send_after(msg[1], ("fired", msg[2]))
            return None
        if isinstance(msg, tuple) and msg[0] == "cancel":
            handle = self.send_after(msg[1], ("fired", "cancelled"))
            handle.cancel()
            return None
        self.log.tell(msg)
        return None


class ThreadUser(Actor):
    """Tells and asks from a thread of the worker process that is not its loop's (as a library's callback may)."""

    async def receive(self, msg: Any) -> Any:
        target = msg
        await asyncio.to_thread(target.tell, ("from a thread", "tell"))
        return await asyncio.to_thread(target.ask, ("from a thread", "ask"), 5.0)


class LoopUser(Actor):
    """A plain receive that schedules on asyncio's running loop: a timer and a task."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def receive(self, msg: Any) -> Any:
        if msg == "get":
            return sorted(self.seen)
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, self.seen.append, "timer")
        loop.create_task(self._note())
        return "scheduled"

    async def _note(self) -> None:
        self.seen.append("task")


class BadInit(Actor):
    def __init__(self) -> None:
        raise RuntimeError("cannot start")


class UnsendableReply(Actor):
    def receive(self, msg: Any) -> Any:
        if msg == "set":
            return {1, 2}
        try:
            msg.tell(object())
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return type(exc).__name__
        return None


class BlockingAsk(Actor):
    def receive(self, msg: Any) -> Any:
        try:
            msg.ask("hi")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return f"{type(exc).__name__}: {exc}"
        return None


class Square(Actor):
    """A pure-Python CPU task for pools."""

    def receive(self, n: int) -> int:
        total = 0
        for i in range(n % 1000 * 10):
            total += i
        return n * n


class NotAnActor:
    pass


class AskTwice(Actor):
    """Asks a Stopper "stop" and then something else, back to back."""

    async def receive(self, target: ActorRef) -> Any:
        first, second = await asyncio.gather(
            target.ask_async("stop"), target.ask_async("after"), return_exceptions=True
        )
        return [first, type(second).__name__, str(second)]


class Stateful(Actor):
    """A counter that can crash or stop itself; reports on_stop to an optional log."""

    def __init__(self, label: str = "", log: ActorRef | None = None) -> None:
        self.label = label
        self.log = log
        self.count = 0

    def receive(self, msg: Any) -> Any:
        if msg == "inc":
            self.count += 1
            return self.count
        if msg == "get":
            return self.count
        if msg == "crash":
            raise RuntimeError(f"{self.label} crashed on purpose")
        if msg == "stop":
            self.stop()
            return "stopping"
        if msg == "pid":
            return os.getpid()
        return msg

    def on_stop(self, reason: str) -> None:
        if self.log is not None:
            self.log.tell((self.label, reason))


class Watcher(Actor):
    """("watch", ref) monitors ref; ("link", ref) links; keeps Down/Exit messages."""

    def __init__(self, trap: bool = False) -> None:
        self.trap_exits = trap
        self.seen: list[Any] = []

    def receive(self, msg: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "watch":
            self.monitor(msg[1])
            return "watching"
        if isinstance(msg, tuple) and msg[0] == "unwatch":
            self.demonitor(msg[1])
            return "unwatched"
        if isinstance(msg, tuple) and msg[0] == "link":
            self.link(msg[1])
            return "linked"
        if msg == "get":
            return self.seen
        if msg == "crash":
            raise RuntimeError("watcher crashed on purpose")
        self.seen.append(msg)
        return None


class KeyValue(GenServer):
    def __init__(self, log: ActorRef | None = None) -> None:
        self.data: dict[str, Any] = {}
        self.log = log
        self.infos: list[Any] = []

    def handle_call(self, request: Any) -> Any:
        if request == "boom":
            raise KeyError("no such key: boom")
        if request == "infos":
            return self.infos
        return self.data.get(request)

    def handle_cast(self, request: Any) -> None:
        key, value = request
        self.data[key] = value

    def handle_info(self, message: Any) -> None:
        self.infos.append(message)

    def on_stop(self, reason: str) -> None:
        if self.log is not None:
            self.log.tell(("kv stopped", reason))


class AsyncKeyValue(GenServer):
    async def handle_call(self, request: Any) -> Any:
        await asyncio.sleep(0)
        return ("async", request)


class Subscriber(Actor):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.seen: list[Any] = []

    def on_start(self) -> None:
        self.subscribe(self.topic)

    def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.seen
        if isinstance(msg, tuple) and msg[0] == "publish":
            self.publish(msg[1], msg[2])
            return None
        self.seen.append(msg)
        return None


class SlowCounter(Actor):
    """A number: sleep that long, then count it; "get": the count.

    With ``started`` (a path), the file is created as each sleep begins, so a
    test knows the actor is inside a message and its mailbox is empty.
    """

    def __init__(self, started: str | None = None) -> None:
        self.count = 0
        self.started = started

    async def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.count
        if self.started is not None:
            Path(self.started).touch()
        await asyncio.sleep(msg)
        self.count += 1
        return self.count


class Stamp(Actor):
    """Sleeps, then answers with when it started (CLOCK_MONOTONIC is machine-wide)."""

    async def receive(self, msg: Any) -> Any:
        started = time.monotonic()
        await asyncio.sleep(msg)
        return started


class Misuser(Actor):
    """Calls an Actor method with the given arguments; answers ("ok", result) or "Type: message"."""

    async def receive(self, msg: Any) -> Any:
        if not isinstance(msg, tuple):
            return None  # a timer that fired
        op, *args = msg
        try:
            if op == "ask_async":
                target, payload, timeout = args
                return ("ok", await target.ask_async(payload, timeout=timeout))
            if op == "send_after":
                self.send_after(args[0], "tick")
                return ("ok", None)
            if op == "spawn":
                return ("ok", self.spawn(Echo, worker=args[0]))
            getattr(self, op)(*args)  # monitor, demonitor, link, unlink
            return ("ok", None)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return f"{type(exc).__name__}: {exc}"


def nest(levels: int) -> Any:
    """``levels`` tuples around an empty one: a linked list's shape, ``levels + 1`` deep."""
    value: Any = ()
    for _ in range(levels):
        value = (value,)
    return value


class DeepAnswer(Actor):
    """Answers an int n with nest(n), built here in the worker."""

    def receive(self, msg: Any) -> Any:
        return nest(msg)


class AnswersWorkerOnlyMessage(Actor):
    """Answers with a @message class that only this worker process has registered."""

    def receive(self, msg: Any) -> Any:
        ghost = type("Ghost", (), {
            "__annotations__": {"x": int}, "__module__": "gorilix_tests_worker_only",
            "__qualname__": "Ghost",
        })
        return message(ghost)(msg)


class AsyncDeepAnswer(Actor):
    """DeepAnswer from an async receive (its answer is sent when the task ends)."""

    async def receive(self, msg: Any) -> Any:
        await asyncio.sleep(0)
        return nest(msg)


class Spin(Actor):
    """About ``ms`` milliseconds of pure-Python work per item, then the item squared."""

    def __init__(self, ms: float = 10.0) -> None:
        self.seconds = ms / 1000

    def receive(self, n: int) -> int:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return n * n


_FAILED_ONCE: set[tuple[int, int]] = set()  # (actor id, item): kept by the worker across the actor's restarts


class FailsOnce(Actor):
    """Raises ValueError the first time it sees a multiple of 5 (a crash: it restarts), answers its square after."""

    def receive(self, n: int) -> int:
        if n % 5 == 0 and (self.ref.id, n) not in _FAILED_ONCE:
            _FAILED_ONCE.add((self.ref.id, n))
            raise ValueError(f"not yet: {n}")
        return n * n


class KillsItsWorker(Actor):
    """Squares items, but SIGKILLs its own worker process at item ``poison`` (a poison item for pools)."""

    def __init__(self, poison: int) -> None:
        self.poison = poison

    def receive(self, n: int) -> int:
        if n == self.poison:
            os.kill(os.getpid(), signal.SIGKILL)
        return n * n


class AsyncSquare(Actor):
    async def receive(self, n: int) -> int:
        await asyncio.sleep(0)
        return n * n


class Tiny(Actor):
    """The smallest task there is: what a pool costs per item is all that is left."""

    def receive(self, n: int) -> int:
        return n * n


class Forwarder(Actor):
    """Tells ``(its id, message)`` to ``sink`` for each message, and answers the message: a move loses none of them."""

    def __init__(self, sink: ActorRef) -> None:
        self.sink = sink

    def receive(self, msg: Any) -> Any:
        self.sink.tell((self.ref.id, msg))
        return msg


class SlowOn(Actor):
    """About ``slow_ms`` of work per item on node ``slow``, ``fast_ms`` elsewhere; answers (its node, the square)."""

    def __init__(self, slow: str, slow_ms: float, fast_ms: float) -> None:
        self.seconds = (slow_ms if self.ref.node == slow else fast_ms) / 1000

    def receive(self, n: int) -> tuple[str, int]:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return self.ref.node, n * n


class Starter(Actor):
    """Starts a process that sleeps for a minute and answers its pid (``own_session``: it leaves the worker's group)."""

    def receive(self, own_session: bool) -> int:
        import subprocess
        import sys

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 start_new_session=own_session)
        return child.pid


class Hog(Actor):
    """Keeps ``mb`` more megabytes of touched memory per message; answers how many it holds."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def receive(self, mb: int) -> int:
        self.blobs.append(b"x" * (mb * 2**20))
        return len(self.blobs) * mb


class Blocker(Actor):
    """("block", s): sleeps s seconds in receive (its worker is stuck); ("hold",): a C call that holds the GIL."""

    def receive(self, msg: Any) -> Any:
        if msg[0] == "block":
            time.sleep(msg[1])
        elif msg[0] == "hold":
            return sum(range(10**11))  # (minutes of C, never giving up the GIL)
        return msg


class TallySink(Actor):
    """Counts each tell it takes in a file it maps, so the count outlives a SIGKILL of its worker.

    ``spin``: seconds each tell takes (a busy wait), so tells queue up behind it.
    """

    def __init__(self, path: str, spin: float = 0.0) -> None:
        import mmap

        fd = os.open(path, os.O_RDWR)
        try:
            self.words = memoryview(mmap.mmap(fd, 8)).cast("Q")
        finally:
            os.close(fd)
        self.spin = spin

    def receive(self, msg: Any) -> Any:
        if msg == "count":
            return int(self.words[0])
        end = time.perf_counter() + self.spin
        while time.perf_counter() < end:
            pass
        self.words[0] += 1
        return None


class AckedTellInside(Actor):
    """Tries ``ref.tell(x, ack=True)`` inside receive, which must refuse (it would block the worker)."""

    def receive(self, msg: Any) -> Any:
        try:
            msg.tell("hi", ack=True)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return f"{type(exc).__name__}: {exc}"
        return None


class Flooder(Actor):
    """(target, count, size): tells ``target`` count messages of size bytes, from this actor's worker."""

    def receive(self, msg: Any) -> Any:
        target, count, size = msg
        payload = b"x" * size
        for _ in range(count):
            target.tell(payload)
        return count


class AckedRelay(Actor):
    """(target, message): an acknowledged tell to target from inside an actor, awaited."""

    async def receive(self, msg: Any) -> Any:
        target, message = msg
        await target.tell_async(message, timeout=10.0)
        return "taken"
