"""The app the CLI end-to-end tests start nodes with: `gorilix node --app cli_app:setup`.

``setup`` runs in the node process once the node has joined; the actor
classes live here so the workers import them by module path.
"""

from __future__ import annotations

import os
from typing import Any

from gorilix import Actor, ActorRef, ActorSystem, GenServer
from gorilix.bench_actors import Sink  # counts what it is told; asked "count", answers the count


class NamedEcho(Actor):
    """Answers with the message, the node and the worker's pid."""

    def receive(self, message: Any) -> Any:
        return {"echo": message, "node": self.ref.node, "pid": os.getpid()}


class Store(GenServer):
    """A key-value GenServer that matches on tuples, as many do; says which handler got what."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def handle_call(self, request: Any) -> Any:
        match request:
            case ("read", key) if type(request) is tuple:
                return self.data.get(key)
            case ("write", key, value) if type(request) is tuple:
                self.data[key] = value
                return "ok"
        return {"call": request, "type": type(request).__name__}

    def handle_cast(self, request: Any) -> None:
        if type(request) is tuple and len(request) == 3 and request[0] == "write":
            self.data[request[1]] = request[2]

    def handle_info(self, message: Any) -> Any:
        return {"info": message, "type": type(message).__name__}


def setup(system: ActorSystem) -> None:
    system.spawn(NamedEcho, name="echo")
    system.spawn(Sink, name="counter")
    system.spawn(Store, name="store")


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
