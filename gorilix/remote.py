"""RemoteNode: what the CLI does with a running node at HOST:PORT.

It is a thin layer over :meth:`ActorSystem.connect`, the client code every
program uses: it reaches the node's router over TCP (CURVE with keys derived
from the secret: the one given, or the per-user secret), asks the node's control endpoint,
and reaches named actors through the same sockets.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from gorilix.system import ActorSystem
from gorilix.transport.errors import AccessDenied, AskTimeout, GorilixError, NodeUnreachable
from gorilix.workers.messages import Call, Cast
from gorilix.workers.ref import ActorRef


class RemoteNode:
    def __init__(self, address: str, secret: bytes | None = None, timeout: float = 5.0, *,
                 secret_file: str | os.PathLike[str] | None = None, insecure: bool = False,
                 connect_timeout: float | None = None) -> None:
        """The secret as :meth:`ActorSystem.connect` takes it: ``secret_file`` or ``secret``, else the
        per-user secret of this machine; ``insecure`` for a node that runs without one.

        ``timeout`` bounds each control request, and connecting too unless
        ``connect_timeout`` is given. Raises AccessDenied at once when the node
        refuses the handshake, NodeUnreachable when nothing answers in time.
        """
        self.timeout = timeout
        self.system = ActorSystem.connect(address, secret=secret, secret_file=secret_file, insecure=insecure,
                                          timeout=timeout if connect_timeout is None else connect_timeout)
        self.address = self.system.address
        self.name: str = self.system.name
        self.workers: int = self.system._node.size

    def close(self) -> None:
        self.system.close()

    def __enter__(self) -> RemoteNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def control(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        limit = self.timeout if timeout is None else timeout
        try:
            return self.system._control(op, *args, timeout=limit)
        except AskTimeout:
            raise NodeUnreachable(
                f"node {self.name} at {self.address} accepted the connection, then did not answer {op!r} "
                f"within {limit:g} s: it may be overloaded or stuck, or it stopped"
            ) from None

    # -- what the CLI shows and does ----------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return list(self.control("members"))

    def status(self) -> dict[str, Any]:
        return dict(self.control("status"))

    def kill_worker(self, worker: int | None, sig: int = signal.SIGKILL, timeout: float = 30.0) -> dict[str, Any]:
        """Kill a worker (None: a random live one); returns when its actors are back."""
        return dict(self.control("kill_worker_wait", worker, int(sig), timeout, timeout=timeout + 5))

    def whereis(self, name: str) -> ActorRef | None:
        found = self.control("whereis", name)
        return None if found is None else ActorRef(*found)

    def _named(self, name: str) -> ActorRef:
        ref = self.whereis(name)
        if ref is None:
            raise GorilixError(f"no actor named {name!r} on node {self.name}")
        return ref

    def tell(self, name: str, message: Any) -> None:
        self.system._client().tell(self._named(name), message)

    def ask(self, name: str, message: Any, timeout: float = 5.0) -> Any:
        return self.system._client().ask(self._named(name), message, timeout)

    def ask_ref(self, ref: ActorRef, message: Any, timeout: float = 5.0) -> Any:
        return self.system._client().ask(ref, message, timeout)

    def tell_ref(self, ref: ActorRef, message: Any) -> None:
        self.system._client().tell(ref, message)

    def call_ref(self, ref: ActorRef, request: Any, timeout: float = 5.0) -> Any:
        """GenServer: ``handle_call(request)`` and its reply (what ``ref.call`` does in a program)."""
        return self.system._client().ask(ref, Call(request), timeout)

    def cast_ref(self, ref: ActorRef, request: Any) -> None:
        """GenServer: ``handle_cast(request)`` (what ``ref.cast`` does in a program)."""
        self.system._client().tell(ref, Cast(request))

    def stop_ref(self, ref: ActorRef) -> None:
        """Stop an actor for good (its supervisor does not restart it)."""
        self.system._client().stop_actor(ref)

    def spawn(self, class_path: str, *args: Any, name: str | None = None) -> ActorRef:
        return self.system.spawn(class_path, *args, name=name)

    def reload(self, module: str, timeout: float = 30.0) -> dict[str, Any]:
        return dict(self.control("reload", module, timeout=timeout))


__all__ = ["AccessDenied", "NodeUnreachable", "RemoteNode"]
