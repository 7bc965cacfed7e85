"""Values nested too deeply, and message classes a process cannot decode.

A value nested a few hundred levels deep used to crash whoever decoded it
(each level of tuple, @message or ActorRef cost the decoder tens of KB of C
stack): the worker, the asker's own process, or the node. Now the codec
refuses a value deeper than ``codec.MAX_DEPTH`` at the sender, and a
receiver drops and counts a deeper frame. A message class the receiving
process has not imported fails the ask at once, naming the class.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq
from actors import (
    AnswersWorkerOnlyMessage,
    AsyncDeepAnswer,
    DeepAnswer,
    Echo,
    Greeter,
    Recorder,
    nest,
)
from conftest import wait_for

from gorilix import Actor, ActorSystem, DecodeError, SerializationError, SpawnError, message
from gorilix.transport import codec
from gorilix.transport.frames import ASK, CONTROL_ID, TELL
from gorilix.workers.client import client_frames


@message
class OnlyHere:
    """Registered in the test process only: no worker imports this module."""

    value: int


def wire_nest(levels: int) -> bytes:
    """The bytes of ``nest(levels)``, built without the codec (as a hostile peer would)."""
    marker = msgpack.packb(msgpack.ExtType(codec.EXT_TUPLE, b""))
    data = b"\x91" + marker  # ()
    for _ in range(levels):
        data = b"\x92" + marker + data  # (data,)
    return data


def worker_pids(system: ActorSystem) -> dict[int, tuple[int | None, int]]:
    return {w.id: (w.pid, w.restarts) for w in system.workers()}


def raw_socket(system: ActorSystem) -> zmq.Socket[bytes]:
    """A DEALER of our own on the node's router: sends what the codec would refuse to build."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(system._node.endpoint)
    return sock


# -- too deep ------------------------------------------------------------------


def test_an_ask_deeper_than_the_limit_fails_at_the_sender_and_the_worker_lives(
    system: ActorSystem,
) -> None:
    echo = system.spawn(Echo, worker=0)
    before = worker_pids(system)
    with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels") as info:
        echo.ask(nest(250), timeout=30.0)  # at once: nothing was sent, so nothing to wait for
    assert "flatten" in str(info.value)
    with pytest.raises(SerializationError, match="levels"):
        echo.tell(nest(250))
    assert echo.ask("still here") == "still here"
    deepest = nest(codec.MAX_DEPTH - 1)  # MAX_DEPTH levels: the deepest value that travels
    assert echo.ask(deepest) == deepest
    assert worker_pids(system) == before


@pytest.mark.parametrize("answering", [DeepAnswer, AsyncDeepAnswer])
def test_an_actor_answering_too_deep_fails_the_ask_at_once_and_keeps_answering(
    system: ActorSystem, answering: type[Actor]
) -> None:
    deep = system.spawn(answering, worker=1)
    before = worker_pids(system)
    with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels") as info:
        deep.ask(250, timeout=30.0)
    assert str(deep.id) in str(info.value) or f"{deep.id:#x}" in str(info.value)  # names the actor
    for _ in range(3):  # the same actor, on the same worker, answers what follows (nothing stuck)
        assert deep.ask(3) == nest(3)
        with pytest.raises(SerializationError):
            deep.ask(codec.MAX_DEPTH, timeout=30.0)
    assert deep.ask(codec.MAX_DEPTH - 1) == nest(codec.MAX_DEPTH - 1)
    assert worker_pids(system) == before


def test_a_too_deep_frame_from_the_network_is_dropped_and_the_worker_lives(
    system: ActorSystem,
) -> None:
    recorder = system.spawn(Recorder, worker=0)
    before = worker_pids(system)
    sock = raw_socket(system)
    try:
        for payload in (wire_nest(250), wire_nest(codec.MAX_DEPTH), codec.encode("after")):
            sock.send_multipart(client_frames("", 0, recorder.node, recorder.id, TELL, 0, payload))
        wait_for(lambda: recorder.ask(("get",)) == ["after"], what="the tell sent after the deep ones")
    finally:
        sock.close()
    assert worker_pids(system) == before


def test_a_too_deep_control_request_is_dropped_and_the_node_lives(system: ActorSystem) -> None:
    client = system._client()
    with pytest.raises(SerializationError, match="levels"):
        client.control("whereis", nest(250))  # the client's control channel refuses to send it
    malformed = system.stats()["malformed"]
    sock = raw_socket(system)
    try:
        op = b"\x92" + msgpack.packb("whereis") + wire_nest(250)  # ["whereis", nest(250)]
        sock.send_multipart(client_frames("", 0, system.name, CONTROL_ID, ASK, 1, op))
        sock.send_multipart(client_frames("", 0, system.name, CONTROL_ID, TELL, 0, op))
        wait_for(lambda: system.stats()["malformed"] >= malformed + 2, what="both requests counted")
    finally:
        sock.close()
    assert system.whereis("nobody") is None
    assert system.spawn(Echo).ask("alive") == "alive"


# -- message classes a process has not imported ----------------------------------


def test_an_ask_with_a_class_the_worker_lacks_fails_at_once_naming_it(system: ActorSystem) -> None:
    echo = system.spawn(Echo)
    with pytest.raises(DecodeError, match=r"OnlyHere is not registered") as info:
        echo.ask(OnlyHere(1), timeout=30.0)
    text = str(info.value)
    assert f"{OnlyHere.__module__}.OnlyHere" in text
    assert "import its module in the actor's module" in text
    assert type(info.value).__name__ == "UnknownMessageType"
    assert echo.ask("next") == "next"


def test_a_tell_with_a_class_the_worker_lacks_counts_a_dead_letter(system: ActorSystem) -> None:
    echo = system.spawn(Echo)
    before = system.dead_letters().count
    echo.tell(OnlyHere(2))
    found = wait_for(lambda: (d := system.dead_letters()).count > before and d, what="a dead letter")
    reason = next(str(letter["reason"]) for letter in found.recent if "OnlyHere" in str(letter.get("reason")))
    assert reason.count("worker 0") == 1, reason  # (it said "on worker 0 at worker 0")
    assert echo.ask("next") == "next"


def test_an_answer_of_a_class_the_asker_lacks_fails_the_ask_at_once(system: ActorSystem) -> None:
    actor = system.spawn(AnswersWorkerOnlyMessage)
    with pytest.raises(DecodeError, match="gorilix_tests_worker_only.Ghost is not registered"):
        actor.ask(7, timeout=30.0)
    assert system.spawn(Echo).ask("next") == "next"


def test_spawn_arguments_of_a_class_the_worker_lacks_fail_the_spawn_at_once(
    system: ActorSystem,
) -> None:
    with pytest.raises(SpawnError, match=r"OnlyHere is not registered"):
        system.spawn(Greeter, OnlyHere(3))
    assert system.spawn(Greeter, "Hi").ask("you") == "Hi, you!"
