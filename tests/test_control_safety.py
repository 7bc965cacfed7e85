"""The node's control endpoint checks what it is given: nobody takes over another's id, route or actor.

A client (a user thread's or a tool's socket) may attach only its own client
id and detach only that; the requests only workers send (an actor started,
exited, spawned another...) are refused from anyone else; and the requests
peers send are refused unless they come over that peer's own link. Each
refusal answers the asker with a GorilixError and is counted in stats.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from actors import Counter, Crasher, Echo
from conftest import wait_for

from gorilix import Actor, ActorRef, ActorSystem, GorilixError, InvalidArgument
from gorilix.transport import codec
from gorilix.transport.errors import error_to_wire
from gorilix.transport.frames import CONTROL_ID, TELL
from gorilix.transport.routing import client_ids
from gorilix.transport.sockets import send_frames
from gorilix.workers.client import ClientPort, client_frames
from gorilix.workers.spec import make_spec

_ids = client_ids()


def client_id() -> int:
    return next(_ids)


@pytest.fixture
def clients(system: ActorSystem) -> Iterator[Callable[[], ClientPort]]:
    """Extra client sockets on the system's node (as another thread or program would open); all closed after."""
    zctx: zmq.Context[Any] = zmq.Context()
    ports: list[ClientPort] = []

    def connect() -> ClientPort:
        port = ClientPort(zctx, system._node.endpoint, system.name, client_id())
        ports.append(port)
        return port

    try:
        yield connect
    finally:
        for port in ports:
            port.close()
        zctx.destroy(linger=0)


def counted(actor: Any) -> int:
    """Ask a Crasher to count one more message: its count says whether it is still the same incarnation."""
    return int(actor.ask("count", timeout=5.0))


def test_a_client_cannot_attach_an_actors_id(system: ActorSystem, clients: Callable[[], ClientPort]) -> None:
    victim = system.spawn(Crasher)
    assert counted(victim) == 1
    thief = clients()
    with pytest.raises(GorilixError, match=f"attach_client refused: {victim.id:#x}"):
        thief.control("attach_client", victim.id)
    assert counted(victim) == 2  # its asks still reach it (before the fix they reached the thief, and timed out)
    assert system.stats()["refused"] == 1


@pytest.mark.parametrize("op", ["attach_client", "detach_client"])
def test_a_client_cannot_take_or_drop_another_clients_id(
    system: ActorSystem, clients: Callable[[], ClientPort], op: str
) -> None:
    echo = system.spawn(Echo)
    owner, thief = clients(), clients()
    assert owner.ask(echo, "mine", 5.0) == "mine"
    with pytest.raises(GorilixError, match=f"{op} refused: {owner.id:#x}"):
        thief.control(op, owner.id)
    assert owner.ask(echo, "still mine", 5.0) == "still mine"
    assert thief.ask(echo, "mine too", 5.0) == "mine too"


def test_a_client_attaches_only_the_id_its_socket_is_named_after(
    system: ActorSystem, clients: Callable[[], ClientPort]
) -> None:
    port = clients()
    assert port.control("attach_client", port.id) is None  # its own, again: fine
    with pytest.raises(GorilixError, match="attach_client refused"):
        port.control("attach_client", client_id())  # a fresh id, but its socket is named after another
    with pytest.raises(GorilixError, match="attach_client refused"):
        port.control("attach_client", 12345)  # not a client id at all
    assert port.ask(system.spawn(Echo), "ok", 5.0) == "ok"
    assert system.stats()["refused"] == 2


def _worker_only(op: str, actor_id: int) -> list[Any]:
    spec = make_spec(Echo, (), {}).to_wire()
    forged: dict[str, list[Any]] = {
        "register": [actor_id, spec],
        "spawned": [actor_id],
        "spawn_at": [actor_id, spec, 0],
        "spawn_failed": [actor_id, error_to_wire(GorilixError("forged"))],
        "exited": [actor_id, "forged", True, True],
        "restarted": [actor_id],
        "dead_letter": [actor_id, "forged"],
        "attach_worker": [0, 0, 0],
    }
    return forged[op]


@pytest.mark.parametrize(
    "op", ["register", "spawned", "spawn_at", "spawn_failed", "exited", "restarted", "dead_letter", "attach_worker"]
)
def test_what_only_workers_report_is_refused_from_a_client(
    system: ActorSystem, clients: Callable[[], ClientPort], op: str
) -> None:
    victim = system.spawn(Crasher)
    assert counted(victim) == 1
    with pytest.raises(GorilixError, match=f"{op} refused"):
        clients().control(op, *_worker_only(op, victim.id))
    assert counted(victim) == 2  # same route, same incarnation
    assert system.stats()["refused"] == 1


def test_a_client_cannot_link_an_actor_to_another(system: ActorSystem, clients: Callable[[], ClientPort]) -> None:
    keeper, doomed = system.spawn(Crasher), system.spawn(Crasher)
    assert counted(keeper) == 1
    with pytest.raises(GorilixError, match="link refused"):
        clients().control("link", keeper.id, system.name, doomed.id)
    with pytest.raises(GorilixError, match="monitor refused"):
        clients().control("monitor", keeper.id, system.name, doomed.id)
    doomed.tell("boom")
    assert counted(doomed) == 1  # crashed and restarted
    assert counted(keeper) == 2  # no exit signal came its way


def test_a_client_cannot_pose_as_a_peer_node(system: ActorSystem, clients: Callable[[], ClientPort]) -> None:
    victim = system.spawn(Crasher)
    assert counted(victim) == 1
    thief = clients()
    for op in (["rlink", victim.id, 77], ["rexit", victim.id, 77, None, "forged exit"]):
        # The envelope names a node that does not exist; a peer's requests come over its own link.
        send_frames(thief.sock, client_frames("ghost", thief.id, system.name, CONTROL_ID, TELL, 0, codec.encode(op)))
    assert thief.control("hello")["node"] == system.name  # the node has handled both
    assert counted(victim) == 2  # no forged exit signal reached it
    assert system.stats()["refused"] == 2


# -- arguments a raw-protocol caller chooses ---------------------------------------------
#
# The facade checks these before sending; a client speaking the protocol itself
# (system._client().control) reaches the node's handlers with whatever it likes.


@pytest.mark.parametrize("topic", [5, "", None, b"topic", ["a"]], ids=["int", "empty", "none", "bytes", "list"])
def test_a_raw_caller_cannot_use_a_topic_that_is_not_a_str(system: ActorSystem, topic: Any) -> None:
    # The node coerced with str(topic): 5 subscribed the actor to the topic "5".
    counter = system.spawn(Counter)
    client = system._client()
    before = system.stats()["malformed"]
    hello = codec.encode("hello")
    for op, args in [("subscribe", [counter.id]), ("unsubscribe", [counter.id]),
                     ("publish", [hello]), ("publish_local", [hello])]:
        with pytest.raises(InvalidArgument, match=f"^{op}: topic=.* must be a non-empty str$"):
            client.control(op, topic, *args)
    assert system.publish(str(topic) or "-", "anyone?") == 0  # subscribed to nothing
    assert counter.ask("get") == 0
    assert system.stats()["malformed"] == before + 4


def _worker_pids(system: ActorSystem) -> list[int | None]:
    return [w.pid for w in system.workers() if w.alive]


def test_kill_worker_wait_checks_its_timeout_before_killing_anything(thread_system: ActorSystem) -> None:
    system = thread_system
    # The job was queued and the worker killed before the timer refused the
    # timeout: the worker died for nothing, and the job stayed queued for good.
    pids = _worker_pids(system)
    for timeout in [math.nan, math.inf, -1, 0, "5", None, 1e300]:
        with pytest.raises(InvalidArgument, match=r"^kill_worker_wait: timeout=.* must be a number of seconds > 0"):
            system._control("kill_worker_wait", 0, int(signal.SIGKILL), timeout, timeout=5.0)
    assert system._node.node.core.recoveries == []
    assert _worker_pids(system) == pids


@pytest.mark.parametrize("op", ["kill_worker", "kill_worker_wait"])
def test_kill_worker_refuses_what_is_no_signal_or_no_worker(thread_system: ActorSystem, op: str) -> None:
    system = thread_system
    # os.kill cut 1 << 40 short to signal 0 (it answered with the pid and killed
    # nothing), raised OSError for 9999 (answered as a bug of the node's), and
    # took True for SIGHUP.
    pids = _worker_pids(system)
    wait = [5.0] if op == "kill_worker_wait" else []
    for sig in [0, -1, 1 << 40, 2**64 - 1, 9999, True, "9", None]:
        with pytest.raises(InvalidArgument, match=f"^{op}: sig=.* is not a signal of this system"):
            system._control(op, 0, sig, *wait, timeout=5.0)
    for slot in ["0", 2, -1, 1.0]:
        with pytest.raises(InvalidArgument, match=f"^{op}: worker=.* is not a worker of node {system.name}"):
            system._control(op, slot, int(signal.SIGKILL), *wait, timeout=5.0)
    assert system._node.node.core.recoveries == []
    assert _worker_pids(system) == pids
    assert system.stats()["malformed"] == 12


def test_a_kill_the_os_refuses_is_a_clear_error(thread_system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    system = thread_system
    # An OSError from os.kill was answered as a bug of the node's ("could not handle").
    target = system.workers()[0].pid
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == target:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(GorilixError, match=f"^cannot send SIGTERM to worker 0 of node {system.name}: "
                                           "Operation not permitted") as info:
        system._control("kill_worker", 0, int(signal.SIGTERM), timeout=5.0)
    assert type(info.value) is GorilixError
    assert _worker_pids(system)[0] == target


# -- messages parked for an actor that is starting ---------------------------------------


class StartsWhenTold(Actor):
    """Its __init__ waits (at most 20 s) for the file ``go`` to exist: messages sent meanwhile park at the node."""

    def __init__(self, go: str) -> None:
        deadline = time.monotonic() + 20.0
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.seen: list[Any] = []

    def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.seen
        self.seen.append(msg)
        return None


def test_a_parked_message_that_fails_costs_neither_the_others_nor_the_spawn_answer(
    thread_system: ActorSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the actor started, the node sent on what was parked for it and then
    # answered the spawn; a raise on one parked message (standing in for a bug
    # of ours: the route of a parked message was parsed when it arrived, so a
    # sender cannot make that fail) dropped the rest and the answer, and the
    # spawn hung until its timeout.
    system = thread_system
    node = system._node.node
    poison = codec.encode("poison")
    forward = node._forward

    def failing_forward(source: bytes, route: Any, frames: list[bytes]) -> None:
        if poison in frames[2:] and node.table.lookup(route.dst_id) is not None:  # sent on, not parked
            raise RuntimeError("a bug on the way out")
        forward(source, route, frames)

    monkeypatch.setattr(node, "_forward", failing_forward)
    go = tmp_path / "go"
    answers: list[Any] = []
    spec = make_spec(StartsWhenTold, (str(go),), {}).to_wire()

    def spawn() -> None:
        try:
            answers.append(system._client().control("spawn", spec, None, timeout=10.0))
        except GorilixError as exc:
            answers.append(exc)

    spawning = threading.Thread(target=spawn, daemon=True)
    spawning.start()
    actor_id = wait_for(lambda: next((r.id for r in list(node.core.registry.actors.values())
                                      if r.spec.class_path.endswith(":StartsWhenTold")), None),
                        what="the actor registered")
    ref = ActorRef(system.name, actor_id)
    for msg in ["a", "poison", "b"]:
        ref.tell(msg)
    wait_for(lambda: len(node.table.parked.get(actor_id, ())) == 3, what="three messages parked")
    malformed = system.stats()["malformed"]
    go.touch()
    spawning.join(15.0)
    assert answers == [[system.name, actor_id, None]]
    assert ref.ask("get") == ["a", "b"]
    assert system.stats()["malformed"] == malformed + 1


def test_a_process_cannot_take_the_name_a_restarted_worker_will_have(
        make_thread_system: Callable[..., ActorSystem]) -> None:
    """A worker's name on the node's socket holds a secret token, not only its slot and incarnation
    (which refs reveal): whoever connects first under the name it can guess takes nothing."""
    system = make_thread_system(1)  # the actor can only come back on the respawned worker
    echo = system.spawn(Echo, worker=0)
    assert echo.ask("before") == "before"
    incarnation = system._node.node.pool.workers[0].config.incarnation
    zctx: zmq.Context[Any] = zmq.Context()
    squatters = []
    try:
        for guess in range(incarnation + 1, incarnation + 4):  # the next incarnations, with no token or a wrong one
            for name in (b"w0.%d" % guess, b"w0.%d.%s" % (guess, b"0" * 16)):
                sock = zctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.ROUTING_ID, name)
                sock.connect(system._node.endpoint)
                squatters.append(sock)
        wait_for(lambda: all(s.poll(0, zmq.POLLOUT) for s in squatters), 5, "squatters connected")
        system.kill_worker(0)
        assert echo.ask("after", timeout=10.0) == "after"  # the real worker came back and was attached
        assert system.workers()[0].alive and system.workers()[0].restarts == 1
        assert not any(s.poll(0) for s in squatters)  # none of them was sent anything
    finally:
        for sock in squatters:
            sock.close()
        zctx.destroy(linger=0)
