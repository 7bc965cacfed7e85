"""EndNotice: the pipe a node's clients poll, readable once that node has ended.

Its own small module: the node loop sets it and the clients poll it, and
neither should load the other's code (the clients' asyncio, say) to do so.
"""

from __future__ import annotations

import os

from gorilix.transport.errors import NotRunning


class EndNotice:
    """A pipe that becomes readable, for good, once a node has ended (or can no longer be reached).

    Clients of that node poll it together with their socket, so an ask or a
    control request waiting for an answer fails at once with NotRunning
    instead of waiting for its timeout. Whoever learns of the end first sets it.
    """

    def __init__(self, name: str, then: str = "start a new ActorSystem") -> None:
        self.name = name
        self.then = then  # what to do about it, for the error
        self.reason: str | None = None  # why the loop ended: set once, before the pipe is written
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            try:
                os.write(self._write, b"x")
            except OSError:  # closed: nobody is waiting any more
                pass

    def error(self) -> NotRunning:
        return NotRunning(f"node {self.name} {self.reason}; {self.then}")

    def close(self) -> None:
        """After every client is closed (they poll the read end)."""
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
