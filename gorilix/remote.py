"""RemoteNode: reach a running node at HOST:PORT from another process (the CLI).

It talks to the node's router over TCP like any peer would (CURVE with keys
derived from the secret when the cluster has one) and asks the node's
control endpoint; named actors are reached through the same socket.
"""

from __future__ import annotations

import random
import signal
from typing import Any

import zmq

from gorilix.cluster.config import parse_hostport
from gorilix.cluster.security import CLIENT_NAME, SERVER_NAME, ClusterKeys, configure_client
from gorilix.transport.errors import AskTimeout, GorilixError
from gorilix.transport.frames import CONTROL_ID
from gorilix.workers.client import ClientPort
from gorilix.workers.ref import ActorRef


class NodeUnreachable(GorilixError):
    """No node answered at that address."""


class RemoteNode:
    def __init__(self, address: str, secret: bytes | None = None, timeout: float = 5.0) -> None:
        host, port = parse_hostport(address, 7946, "node address")
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self._zctx: zmq.Context[Any] = zmq.Context()
        keys = ClusterKeys(secret) if secret is not None else None

        def configure(sock: zmq.Socket[bytes]) -> None:
            if keys is not None:
                configure_client(sock, keys, CLIENT_NAME, SERVER_NAME)

        client_id = random.randrange(1 << 62, 1 << 63)  # far from any id a node hands out
        self._port = ClientPort(self._zctx, f"tcp://{host}:{port}", "", client_id, configure)
        try:
            hello = self.control("hello")
        except BaseException:
            self.close()
            raise
        self.name: str = hello["node"]
        self.workers: int = hello["workers"]

    def close(self) -> None:
        self._port.close()
        self._zctx.destroy(linger=0)

    def __enter__(self) -> RemoteNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def control(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        limit = self.timeout if timeout is None else timeout
        try:
            return self._port.ask(ActorRef(getattr(self, "name", ""), CONTROL_ID, "node"), [op, *args], limit)
        except AskTimeout:
            raise NodeUnreachable(
                f"no answer from a node at {self.address} within {limit:g} s: is it running, "
                "is the port right, and does the secret match?"
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
        self._port.tell(self._named(name), message)

    def ask(self, name: str, message: Any, timeout: float = 5.0) -> Any:
        return self._port.ask(self._named(name), message, timeout)

    def ask_ref(self, ref: ActorRef, message: Any, timeout: float = 5.0) -> Any:
        return self._port.ask(ref, message, timeout)

    def tell_ref(self, ref: ActorRef, message: Any) -> None:
        self._port.tell(ref, message)

    def stop_ref(self, ref: ActorRef) -> None:
        """Stop an actor for good (its supervisor does not restart it)."""
        self._port.stop_actor(ref)

    def spawn(self, class_path: str, *args: Any, name: str | None = None) -> ActorRef:
        from gorilix.workers.spec import make_spec

        spec = make_spec(class_path, args, {}, name=name)
        node, actor_id, actor_name = self.control("spawn", spec.to_wire(), None, timeout=30.0)
        return ActorRef(node, actor_id, actor_name)

    def reload(self, module: str, timeout: float = 30.0) -> dict[str, Any]:
        return dict(self.control("reload", module, timeout=timeout))
