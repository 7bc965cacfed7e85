"""The app the CLI end-to-end tests start nodes with: `gorilix node --app cli_app:setup`.

``setup`` runs in the node process once the node has joined; the actor
classes live here so the workers import them by module path.
"""

from __future__ import annotations

import os
from typing import Any

from gorilix import Actor, ActorSystem


class NamedEcho(Actor):
    """Answers with the message, the node and the worker's pid."""

    def receive(self, message: Any) -> Any:
        return {"echo": message, "node": self.ref.node, "pid": os.getpid()}


class Counter(Actor):
    """Counts what it is told; asked "count", answers the count."""

    def __init__(self) -> None:
        self.count = 0

    def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


def setup(system: ActorSystem) -> None:
    system.spawn(NamedEcho, name="echo")
    system.spawn(Counter, name="counter")


def broken(system: ActorSystem) -> None:
    raise RuntimeError("setup failed on purpose")
