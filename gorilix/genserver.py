"""GenServer: an actor with separate handlers for calls, casts and the rest.

``ref.call(request)`` reaches :meth:`GenServer.handle_call`, whose return
value is the reply (an exception there reaches the caller as ``ActorError``
and crashes the server, which its supervisor restarts); ``ref.cast(request)``
reaches :meth:`GenServer.handle_cast`; anything else, including ``Down``
messages and timers, reaches :meth:`GenServer.handle_info`. Handlers may be
``async def``. ``on_start`` and ``on_stop(reason)`` are Erlang's init and
terminate.
"""

from __future__ import annotations

import logging
from typing import Any

from gorilix.workers.actor import Actor
from gorilix.workers.messages import Call, Cast

log = logging.getLogger("gorilix.genserver")


class GenServer(Actor):
    def receive(self, message: Any) -> Any:
        """Dispatch: a ``Call`` to ``handle_call``, a ``Cast`` to ``handle_cast``, anything else to ``handle_info``."""
        kind = type(message)
        if kind is Call:
            return self.handle_call(message.request)
        if kind is Cast:
            return self.handle_cast(message.request)
        return self.handle_info(message)

    def handle_call(self, request: Any) -> Any:
        """``ref.call(request)``: the return value is the reply. May be ``async def``."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls (define handle_call)")

    def handle_cast(self, request: Any) -> Any:
        """``ref.cast(request)``: no reply. The default logs a warning: a cast nobody handles is a bug."""
        log.warning("%s ignored a cast it does not handle: %r", self.ref, request)

    def handle_info(self, message: Any) -> Any:
        """Any other message (a plain tell, ``Down``, ``Exit``, a timer's message). The default ignores it."""
        log.debug("%s ignored %r", self.ref, message)
