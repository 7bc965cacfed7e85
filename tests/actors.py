"""Actor classes the tests spawn (workers import them by module path)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from gorilix import Actor, ActorRef, message


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
