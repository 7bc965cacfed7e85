"""Actors and tasks the benchmark and the demo spawn (workers import them by path)."""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any

from gorilix.workers.actor import Actor
from gorilix.workers.ref import ActorRef


def cpu_task(n: int) -> int:
    """Pure-Python CPU work: no I/O, holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def square(n: int) -> int:
    """The tiniest task: the pool's overhead is all there is to measure."""
    return n * n


class Square(Actor):
    def receive(self, n: int) -> int:
        return n * n


class CpuWorker(Actor):
    def receive(self, n: int) -> int:
        return cpu_task(n)


class Sink(Actor):
    """Counts tells; an ask answers with the count (it arrives after them)."""

    def __init__(self) -> None:
        self.count = 0

    def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


class Echo(Actor):
    def receive(self, message: Any) -> Any:
        return message


class Crashy(Actor):
    """Crashes on "crash"; echoes anything else."""

    def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crashed on purpose (benchmark)")
        return message


class Blocks(Actor):
    """("block", seconds) sleeps in receive: its worker reads nothing meanwhile. Anything else: echoed."""

    def receive(self, message: Any) -> Any:
        if type(message) is tuple and message and message[0] == "block":
            time.sleep(message[1])
        return message


class Idle(Actor):
    def receive(self, message: Any) -> Any:
        return None


class Driver(Actor):
    """Runs a measurement loop inside a worker and returns its timing."""

    async def receive(self, message: Any) -> Any:
        op = message[0]
        if op == "ask_loop":
            _, target, rounds = message
            start = time.perf_counter()
            for i in range(rounds):
                await target.ask_async(i)
            return time.perf_counter() - start
        if op == "tell_loop":
            _, target, count = message
            start = time.perf_counter()
            for i in range(count):
                target.tell(i)
            total = await target.ask_async("count", timeout=60.0)
            return [time.perf_counter() - start, total]
        if op == "spawn_loop":
            _, count = message
            start = time.perf_counter()
            children: list[ActorRef] = [self.spawn(Idle) for _ in range(count)]
            elapsed = time.perf_counter() - start
            if children:  # (the last one answers once all were spawned)
                await children[-1].ask_async("ready?", timeout=30.0)
            return [elapsed, len(children)]
        raise ValueError(f"unknown driver op {op!r}")


class LatencyProbe(Actor):
    """Asks a target in a loop, in a task of its own, and keeps (wall-clock end, seconds) of each ask.

    The loop runs beside the actor's mailbox, so "get" and "stop" are
    answered while it goes on. The samples go into two arrays of doubles,
    which the garbage collector never walks: a list of tuples would grow by
    tens of thousands of tracked objects a second, and the full collections
    it sets off in the probe's own worker would show up as the slow asks
    being measured.
    """

    def __init__(self) -> None:
        self.ended: array[float] = array("d")
        self.took: array[float] = array("d")
        self.task: asyncio.Task[None] | None = None

    async def receive(self, message: Any) -> Any:
        if message == "get":
            return list(zip(self.ended, self.took, strict=True))
        if message == "stop":
            if self.task is not None:
                self.task.cancel()
            return len(self.took)
        self.ended, self.took = array("d"), array("d")
        self.task = asyncio.get_running_loop().create_task(self._probe(message))
        return None

    async def _probe(self, target: ActorRef) -> None:
        ended, took = self.ended, self.took
        while True:
            start = time.perf_counter()
            await target.ask_async("probe", timeout=60.0)
            took.append(time.perf_counter() - start)
            ended.append(time.time())
