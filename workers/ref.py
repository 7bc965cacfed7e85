"""ActorRef: the address of an actor, usable from any thread or process.

A ref is plain data (node name, actor id, registered name) and travels inside
messages. Sending through it goes to the *port* of the current context: the
worker runtime inside a worker process, or the calling thread's client socket
in the node process. The layer that owns the process installs the resolver.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gorilix.transport import codec
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument, MailboxFull, NotRunning, WorkerDied
from gorilix.transport.frames import ASK, ID_MAX, NODE_NAME_MAX, TELL_ACK

EXT_ACTOR_REF = codec.EXT_USER_BASE

#: The longest finite timeout, in seconds (about 11.6 days). Longer waits pass
#: None: every clock a wait goes through (ZeroMQ's poll in milliseconds,
#: threading's locks) holds this much on every platform.
MAX_TIMEOUT = 1_000_000.0


def check_timeout(timeout: object, what: str = "timeout") -> float:
    """Seconds to wait for ``timeout``; ``math.inf`` for None or inf (no limit).

    Anything else that is not a number of seconds > 0, up to MAX_TIMEOUT,
    raises InvalidArgument, so a caller learns of it before a message is sent.
    """
    if type(timeout) is float and 0 < timeout <= MAX_TIMEOUT:  # the common case (the default 5.0), first
        return timeout
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        problem = "is not a number of seconds"
    else:
        try:
            seconds = float(timeout)
        except OverflowError:  # an int beyond any float: too long, or (negative) not > 0
            seconds = -1.0 if isinstance(timeout, int) and timeout < 0 else MAX_TIMEOUT * 2
        if seconds == math.inf:
            return math.inf
        if seconds != seconds:
            problem = "is not a number of seconds"
        elif seconds <= 0:
            problem = "must be more than 0 seconds"
        elif seconds > MAX_TIMEOUT:
            problem = f"is longer than the limit of {MAX_TIMEOUT:g} s"
        else:
            return seconds
    raise InvalidArgument(
        f"{what}={shown(timeout)} {problem}; pass a number of seconds > 0, or None to wait without a limit"
    )


class Port(Protocol):
    """What a ref needs from the process it is used in.

    A ``timeout`` a port gets was checked by :func:`check_timeout`: seconds
    > 0, or ``math.inf`` for no limit.
    """

    def tell(self, ref: ActorRef, message: Any) -> None: ...
    def ask(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Any: ...
    def ask_async(self, ref: ActorRef, message: Any, timeout: float, kind: int = ASK) -> Awaitable[Any]: ...
    def pause(self, seconds: float) -> Awaitable[None]: ...
    def stop_actor(self, ref: ActorRef) -> None: ...


_resolver: Callable[[ActorRef], Port] | None = None

#: Seconds before an acknowledged tell is sent again after a loss (doubling, up to the second).
ACK_RETRY_FIRST = 0.01
ACK_RETRY_MAX = 0.5


def install_resolver(resolver: Callable[[ActorRef], Port] | None) -> None:
    """Set how refs find their port in this process (None: no system here)."""
    global _resolver
    _resolver = resolver


def port_for(ref: ActorRef) -> Port:
    if _resolver is None:
        raise NotRunning(
            f"cannot message {ref}: no ActorSystem is running in this process; "
            "start one with `with ActorSystem(...) as system:`"
        )
    return _resolver(ref)


# The envelopes of ref.call and ref.cast live beside them; gorilix.workers.messages
# re-exports them with the other system messages. Its Down and Exit carry refs, so
# it imports this module, and this module never imports it.


@codec.message
@dataclass(frozen=True, slots=True)
class Call:
    """A GenServer request that expects a reply (``ref.call``)."""

    request: Any


@codec.message
@dataclass(frozen=True, slots=True)
class Cast:
    """A GenServer request without a reply (``ref.cast``)."""

    request: Any


class ActorRef:
    """A handle on an actor; stays valid across restarts and worker deaths."""

    __slots__ = ("node", "id", "name")

    def __init__(self, node: str, id: int, name: str | None = None) -> None:
        # Checked here, where a mistake is made, rather than when a message
        # through the ref cannot be framed (or, for ``None``, vanishes).
        if type(node) is not str or len(node) > NODE_NAME_MAX:
            raise InvalidArgument(
                f"ActorRef node must be a str of at most {NODE_NAME_MAX} characters (a node's name), "
                f"got {shown(node)}; refs come from spawn() and whereis()"
            )
        if type(id) is not int or not 0 <= id <= ID_MAX:
            raise InvalidArgument(
                f"ActorRef id must be an int in 0..2**64-1, got {shown(id)}; refs come from spawn() and whereis()"
            )
        if name is not None and type(name) is not str:
            raise InvalidArgument(f"ActorRef name must be a str or None, got {shown(name)}")
        self.node = node
        self.id = id
        self.name = name

    def tell(self, message: Any, *, ack: bool = False, timeout: float | None = 5.0) -> None:
        """Send without waiting (at most once, in order per sender).

        ``ack=True``: wait until the actor's ``receive`` has taken the message
        (returned or raised), sending it again if it was lost with its worker
        or refused by a full mailbox, until ``timeout`` (seconds; None: no
        limit). That is at-least-once delivery: a worker that dies after
        ``receive`` took it, before the answer left, gets it twice. Raises the
        last error (``WorkerDied``, ``MailboxFull``, ``AskTimeout``, ...) once
        ``timeout`` has passed, or at once an error that sending again cannot
        mend (``ActorNotFound``, ``NodeDown``). Blocks like ``ask``: not from
        inside an actor.
        """
        if not ack:
            port_for(self).tell(self, message)
            return
        limit = check_timeout(timeout)
        deadline = time.monotonic() + limit
        pause = ACK_RETRY_FIRST
        while True:
            try:
                port_for(self).ask(self, message, max(0.0, deadline - time.monotonic()), TELL_ACK)
                return
            except (WorkerDied, MailboxFull):  # lost with its worker, or refused: it did not reach receive
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(pause, left))  # (the actor is being re-created, or its worker catches up)
                pause = min(pause * 2, ACK_RETRY_MAX)

    async def tell_async(self, message: Any, *, timeout: float | None = 5.0) -> None:
        """``tell(message, ack=True)`` awaited: from asyncio code, or inside an actor (``async def receive``).

        At least once: sent again after a loss, until ``timeout``; see :meth:`tell`.
        """
        limit = check_timeout(timeout)
        deadline = time.monotonic() + limit
        pause = ACK_RETRY_FIRST
        while True:
            try:
                await port_for(self).ask_async(self, message, max(0.0, deadline - time.monotonic()), TELL_ACK)
                return
            except (WorkerDied, MailboxFull):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                await port_for(self).pause(min(pause, left))  # (the node process never loads asyncio)
                pause = min(pause * 2, ACK_RETRY_MAX)

    def ask(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Send and block for the answer (not from inside an actor: use ask_async).

        ``timeout`` is in seconds; None (or ``math.inf``) waits without a limit.
        """
        limit = check_timeout(timeout)
        return port_for(self).ask(self, message, limit)

    async def ask_async(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Send and await the answer (a coroutine, so ``asyncio.create_task`` takes it)."""
        limit = check_timeout(timeout)
        return await port_for(self).ask_async(self, message, limit)

    def stop(self) -> None:
        """Stop the actor for good once the messages sent before this are handled.

        Its supervisor does not restart it (reason "shutdown"), whatever its
        restart type; queued asks fail with ActorNotFound.
        """
        port_for(self).stop_actor(self)

    def call(self, request: Any, timeout: float | None = 5.0) -> Any:
        """GenServer: ``handle_call(request)`` and wait for its reply."""
        return self.ask(Call(request), timeout)

    async def call_async(self, request: Any, timeout: float | None = 5.0) -> Any:
        """GenServer: ``handle_call(request)``, awaited (from asyncio code, or inside an actor)."""
        return await self.ask_async(Call(request), timeout)

    def cast(self, request: Any) -> None:
        """GenServer: ``handle_cast(request)`` without waiting."""
        self.tell(Cast(request))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and self.id == other.id and self.node == other.node

    def __hash__(self) -> int:
        return hash((self.node, self.id))

    def __lt__(self, other: ActorRef) -> bool:
        if not isinstance(other, ActorRef):
            return NotImplemented
        return (self.node, self.id) < (other.node, other.id)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<ActorRef{label} {self.node}/{self.id:#x}>"


def _ref_to_plain(ref: ActorRef) -> list[Any]:
    return [ref.node, ref.id, ref.name]


def _ref_from_plain(fields: Any) -> ActorRef:
    # From a peer: a bad ref raises TypeError or ValueError (InvalidArgument is one),
    # which the codec turns into a DecodeError that receivers drop and count.
    if type(fields) is not list or len(fields) != 3:
        raise ValueError(f"a ref is [node, id, name], got {type(fields).__name__}")
    node, actor_id, name = fields
    return ActorRef(node, actor_id, name)


codec.register_extension(EXT_ACTOR_REF, ActorRef, _ref_to_plain, _ref_from_plain)
