"""The app the CLI end-to-end tests start nodes with: `gorilix node --app cli_app:setup`.

``setup`` runs in the node process once the node has joined; the actor
classes live here so the workers import them by module path.
"""

from __future__ import annotations

import os
from typing import Any

from gorilix import Actor, ActorRef, ActorSystem
from gorilix.bench_actors import Sink  # counts what it is told; asked "count", answers the count


class NamedEcho(Actor):
    """Answers with the message, the node and the worker's pid."""

    def receive(self, message: Any) -> Any:
        return {"echo": message, "node": self.ref.node, "pid": os.getpid()}


def setup(system: ActorSystem) -> None:
    system.spawn(NamedEcho, name="echo")
    system.spawn(Sink, name="counter")


class LanProbe(Actor):
    """Crosses the network both ways: a topic to every node, then asks back.

    Told "go", it publishes its own ref on the topic "lan"; every other probe
    that hears it asks that ref "ping" (an ask from node to node) and keeps
    the answer, the name of the node that answered.
    """

    def __init__(self) -> None:
        self.heard: list[str] = []

    def on_start(self) -> None:
        self.subscribe("lan")

    async def receive(self, message: Any) -> Any:
        if message == "go":
            self.publish("lan", self.ref)
            return "published"
        if message == "ping":
            return self.ref.node
        if message == "heard":
            return self.heard
        if isinstance(message, ActorRef) and message != self.ref:
            self.heard.append(await message.ask_async("ping", timeout=10.0))
        return None


def lan(system: ActorSystem) -> None:
    setup(system)
    system.spawn(LanProbe, name="probe")


def broken(system: ActorSystem) -> None:
    raise RuntimeError("setup failed on purpose")
