"""ActorRef: the address of an actor, usable from any thread or process.

A ref is plain data (node name, actor id, registered name) and travels inside
messages. Sending through it goes to the *port* of the current context: the
worker runtime inside a worker process, or the calling thread's client socket
in the node process. The layer that owns the process installs the resolver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gorilix.transport import codec
from gorilix.transport.errors import NotRunning

EXT_ACTOR_REF = codec.EXT_USER_BASE


class Port(Protocol):
    """What a ref needs from the process it is used in."""

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


class ActorRef:
    """A handle on an actor; stays valid across restarts and worker deaths."""

    __slots__ = ("node", "id", "name")

    def __init__(self, node: str, id: int, name: str | None = None) -> None:
        self.node = node
        self.id = id
        self.name = name

    def tell(self, message: Any) -> None:
        """Send without waiting (at most once, in order per sender)."""
        port_for(self).tell(self, message)

    def ask(self, message: Any, timeout: float = 5.0) -> Any:
        """Send and block for the answer (not from inside an actor: use ask_async)."""
        return port_for(self).ask(self, message, timeout)

    async def ask_async(self, message: Any, timeout: float = 5.0) -> Any:
        """Send and await the answer (a coroutine, so ``asyncio.create_task`` takes it)."""
        return await port_for(self).ask_async(self, message, timeout)

    def stop(self) -> None:
        """Stop the actor for good once the messages sent before this are handled.

        Its supervisor does not restart it (reason "shutdown"), whatever its
        restart type; queued asks fail with ActorNotFound.
        """
        port_for(self).stop_actor(self)

    def call(self, request: Any, timeout: float = 5.0) -> Any:
        """GenServer: ``handle_call(request)`` and wait for its reply."""
        return self.ask(_wrap_call(request), timeout)

    async def call_async(self, request: Any, timeout: float = 5.0) -> Any:
        return await self.ask_async(_wrap_call(request), timeout)

    def cast(self, request: Any) -> None:
        """GenServer: ``handle_cast(request)`` without waiting."""
        from gorilix.workers.messages import Cast

        self.tell(Cast(request))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and self.id == other.id and self.node == other.node

    def __hash__(self) -> int:
        return hash((self.node, self.id))

    def __lt__(self, other: ActorRef) -> bool:
        return (self.node, self.id) < (other.node, other.id)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<ActorRef{label} {self.node}/{self.id:#x}>"


def _wrap_call(request: Any) -> Any:
    from gorilix.workers.messages import Call  # messages import this module

    return Call(request)


def _ref_to_bytes(ref: ActorRef) -> bytes:
    return codec.encode_nested([ref.node, ref.id, ref.name])


def _ref_from_bytes(data: bytes) -> ActorRef:
    node, actor_id, name = codec.decode(data)
    if type(node) is not str or type(actor_id) is not int or not (name is None or type(name) is str):
        raise codec.DecodeError("malformed ActorRef")
    return ActorRef(node, actor_id, name)


codec.register_extension(EXT_ACTOR_REF, ActorRef, _ref_to_bytes, _ref_from_bytes)
