"""ActorRef: the address of an actor, usable from any thread or process.

A ref is plain data (node name, actor id, registered name) and travels inside
messages. Sending through it goes to the *port* of the current context: the
worker runtime inside a worker process, or the calling thread's client socket
in the node process. The layer that owns the process installs the resolver.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gorilix.transport import codec
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument, NotRunning
from gorilix.transport.frames import ID_MAX, NODE_NAME_MAX

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
    def ask(self, ref: ActorRef, message: Any, timeout: float) -> Any: ...
    def ask_async(self, ref: ActorRef, message: Any, timeout: float) -> Awaitable[Any]: ...
    def stop_actor(self, ref: ActorRef) -> None: ...


_resolver: Callable[[ActorRef], Port] | None = None


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

    def tell(self, message: Any) -> None:
        """Send without waiting (at most once, in order per sender)."""
        port_for(self).tell(self, message)

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
