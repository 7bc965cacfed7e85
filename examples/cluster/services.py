"""The actors of the cluster example, in a module every node can import.

A node re-creates an actor from its class path ("services:Stock"), so a class
that another node spawns or hosts must live in a module importable there,
not in the script that was started (whose ``__main__`` differs per node).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from gorilix import Actor, ActorRef, Down, GenServer


class Stock(GenServer):
    """The inventory service: stock levels, reserved through GenServer calls."""

    def __init__(self, levels: dict[str, int]) -> None:
        self.levels = dict(levels)

    def handle_call(self, request: Any) -> Any:
        op, item, *rest = request
        if op == "level":
            return self.levels.get(item, 0)
        if op == "reserve":
            (quantity,) = rest
            have = self.levels.get(item, 0)
            if quantity > have:
                return {"ok": False, "item": item, "left": have}
            self.levels[item] = have - quantity
            return {"ok": True, "item": item, "left": self.levels[item]}
        raise ValueError(f"unknown request {request!r}")


class Invoices(Actor):
    """The billing service: numbers invoices and tells whoever asked to be told."""

    def __init__(self) -> None:
        self.issued = 0

    async def receive(self, message: Any) -> Any:
        if message[0] == "invoice":
            _, order, amount, notify = message
            self.issued += 1
            number = f"INV-{self.issued:04d}"
            # ``notify`` is a ref that came inside the message, from another node.
            notify.tell(("invoiced", order, number, amount, self.ref.node))
            return number
        if message[0] == "slow":  # a long request, to show what a leave does to it
            await asyncio.sleep(message[1])
            return "done"
        raise ValueError(f"unknown request {message!r}")


class Pricer(Actor):
    """A helper spawned on demand, on whichever node the caller picks."""

    def __init__(self, markup: float) -> None:
        self.markup = markup

    def receive(self, message: Any) -> Any:
        _, base = message
        return {"price": round(base * self.markup, 2), "pid": os.getpid()}


class Journal(Actor):
    """Keeps what it is sent; subscribes to ``topic`` if given. ("read",) returns it all."""

    def __init__(self, topic: str | None = None) -> None:
        self.topic = topic
        self.entries: list[Any] = []

    def on_start(self) -> None:
        if self.topic is not None:
            self.subscribe(self.topic)

    def receive(self, message: Any) -> Any:
        if message == ("read",):
            return self.entries
        self.entries.append(message)
        return None


class Watcher(Actor):
    """Monitors the refs it is given; ("downs",) returns [(ref, reason), ...]."""

    def __init__(self) -> None:
        self.downs: list[tuple[ActorRef, str]] = []

    def receive(self, message: Any) -> Any:
        if isinstance(message, Down):
            self.downs.append((message.ref, message.reason))
            return None
        if message == ("downs",):
            return self.downs
        kind, ref = message
        if kind == "watch" and isinstance(ref, ActorRef):
            self.monitor(ref)
            return True
        raise ValueError(f"unknown request {message!r}")
