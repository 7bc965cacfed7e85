"""A hostile user and peer against the kinds of a pool's chunks: BATCH (an ask of a list of items) and PART.

A raw DEALER socket, named and attached as a client, writes frames by hand
(:class:`Peer`); whatever it sends, nothing may crash or hang, bad input is
dropped and counted (or answered with a clear error), and the system still
answers a normal ask afterwards. A worker's counters are read by an actor
that runs in it (:class:`Target`), through the peer's own socket, so they
are read after what the peer sent before: the checks need no sleeps.

Each bug these attacks found has its test here, as a regression test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import msgpack
import pytest
import zmq
from actors import Echo
from conftest import wait_for

from gorilix import (
    Actor,
    ActorError,
    ActorNotFound,
    ActorRef,
    ActorSystem,
    DecodeError,
    GorilixError,
    InvalidArgument,
    MailboxFull,
    PoolRef,
    SerializationError,
    UnknownMessageType,
    WorkerDied,
    message,
    supervisor,
)
from gorilix.transport import codec
from gorilix.transport.errors import error_from_wire
from gorilix.transport.frames import (
    ASK,
    BATCH,
    CONTROL_ID,
    FAIL,
    PART,
    REPLY,
    TELL,
    message_frames,
    pack_env,
    pack_route,
    unpack_env,
)
from gorilix.transport.routing import client_identity, client_ids
from gorilix.workers.batch import ANSWER_LEVELS, encode_request

# -- actors (module level: the workers import them from here) ----------------------------


class Target(Actor):
    """Keeps what reaches its receive; "counters" tells the bad-input counters of the worker it runs in."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def receive(self, msg: Any) -> Any:
        if msg == "counters":
            inbox = cast(Any, self._gx_cell).host.inbox
            return {"malformed": inbox.malformed, "dead_letters": inbox.dead_letters, "worker_id": inbox.self_id}
        if msg == "seen":
            return list(self.seen)
        self.seen.append(msg)
        return msg


class Tally(Actor):
    """Answers each item as it is and counts them (this incarnation); item ``crash_at`` crashes it."""

    def __init__(self, crash_at: int = -1) -> None:
        self.crash_at = crash_at
        self.count = 0

    def receive(self, item: Any) -> Any:
        if item == "count":
            return self.count
        if item == self.crash_at:
            raise ValueError(f"item {item} breaks me")
        self.count += 1
        return item


class AsyncTally(Actor):
    """Tally with an ``async def receive`` that yields to the loop on each item."""

    def __init__(self, crash_at: int = -1) -> None:
        self.crash_at = crash_at
        self.count = 0

    async def receive(self, item: Any) -> Any:
        await asyncio.sleep(0)
        if item == "count":
            return self.count
        if item == self.crash_at:
            raise ValueError(f"item {item} breaks me")
        self.count += 1
        return item


class StopsAt(Actor):
    """Answers each item; stops itself (a normal exit) while handling item ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def receive(self, item: Any) -> Any:
        if item == self.at:
            self.stop()
        return item


_GHOST: list[type] = []


def _worker_only(x: int) -> Any:
    """An instance of a @message class that only the process calling this has registered."""
    if not _GHOST:
        ghost = type("Ghost", (), {"__annotations__": {"x": int}, "__module__": "hostile_batches_worker_only",
                                   "__qualname__": "Ghost"})
        _GHOST.append(message(ghost))
    return _GHOST[0](x)


class Shapes(Actor):
    """About ``ms`` ms of work per item, then the item itself, bar a few items whose answers are trouble.

    "set" answers a set (it cannot be sent), "ghost" an object of a class
    only this worker knows (the client cannot decode it), "die" ends the
    worker process.
    """

    def __init__(self, ms: float = 0.0) -> None:
        self.seconds = ms / 1000

    def receive(self, item: Any) -> Any:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        if item == "set":
            return {1, 2}
        if item == "ghost":
            return _worker_only(7)
        if item == "die":
            os._exit(3)
        return item


class SlowAsync(Actor):
    """Each item: create the file ``started``, sleep ``seconds`` (awaiting), answer the item."""

    def __init__(self, started: str, seconds: float) -> None:
        self.started = started
        self.seconds = seconds

    async def receive(self, item: Any) -> Any:
        Path(self.started).touch()
        await asyncio.sleep(self.seconds)
        return item


class Cancels(Actor):
    """Answers each item; raises asyncio.CancelledError (a BaseException, not an Exception) on "cancel".

    With ``awaits``, its receive is a coroutine (``async def``-like) that raises it after a turn of the loop.
    """

    def __init__(self, awaits: bool) -> None:
        self.awaits = awaits

    def receive(self, item: Any) -> Any:
        if self.awaits:
            return self._later(item)
        if item == "cancel":
            raise asyncio.CancelledError()
        return item

    async def _later(self, item: Any) -> Any:
        await asyncio.sleep(0)
        if item == "cancel":
            raise asyncio.CancelledError()
        return item


class Napper(Actor):
    """("nap", s, path) creates the file ``path`` and sleeps s seconds (awaiting: the actor is busy meanwhile)."""

    async def receive(self, item: Any) -> Any:
        if type(item) is tuple and item[0] == "nap":
            Path(item[2]).touch()
            await asyncio.sleep(item[1])
            return "rested"
        return item


# -- a hostile peer ------------------------------------------------------------------------


class Answer(NamedTuple):
    kind: int
    corr: int
    value: Any  # the payload decoded, or the DecodeError it raised


@dataclass
class Outcome:
    """What came back for one BATCH: its parts, then its final answer (REPLY or FAIL)."""

    kind: int
    parts: list[list[Any]]
    answers: list[Any]  # the parts' answers, then the reply's, in order
    failure: GorilixError | None


@dataclass
class Peer:
    """A client written by hand: a DEALER named and attached as client ``id``, sending any frames at all."""

    system: ActorSystem
    id: int = field(default_factory=lambda: next(client_ids()))
    got: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = self.system.name
        self._corrs = itertools.count(1000)
        self.zctx: zmq.Context[Any] = zmq.Context()
        self.sock: zmq.Socket[bytes] = self.zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, client_identity(self.id))
        self.sock.connect(self.system._node.endpoint)
        self.send(CONTROL_ID, TELL, codec.encode(["attach_client", self.id]))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.zctx.destroy(linger=0)

    def corr(self) -> int:
        return next(self._corrs)

    def send(self, dst_id: int, kind: int, payload: bytes, corr: int = 0, dst_node: str | None = None) -> None:
        node = self.node if dst_node is None else dst_node
        self.sock.send_multipart(message_frames(node, dst_id, kind, self.node, self.id, payload, corr))

    def _read(self, timeout: float) -> bool:
        """One multipart from the socket into ``got``; False if none came within ``timeout``."""
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return False
        frames = self.sock.recv_multipart()
        env = unpack_env(frames[1])
        try:
            value = codec.decode(frames[2], ANSWER_LEVELS)
        except DecodeError as exc:
            value = exc
        self.got.append(Answer(env.kind, env.corr, value))
        return True

    def drain(self) -> None:
        """Read what has arrived already."""
        while self._read(0):
            pass

    def of(self, corr: int) -> list[Answer]:
        return [a for a in self.got if a.corr == corr]

    def first(self, corr: int, kinds: int | tuple[int, ...], timeout: float) -> Answer | None:
        """The first answer for ``corr`` of one of ``kinds``, waiting up to ``timeout``; None if none came."""
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        deadline = time.monotonic() + timeout
        while True:
            found = [a for a in self.of(corr) if a.kind in kinds]
            if found:
                return found[0]
            if not self._read(deadline - time.monotonic()):
                return None

    def final(self, corr: int, timeout: float) -> Answer | None:
        """The REPLY or FAIL for ``corr``, waiting up to ``timeout``; None if none came."""
        return self.first(corr, (REPLY, FAIL), timeout)

    def ask(self, dst_id: int, msg: Any, timeout: float = 10.0) -> Any:
        """A plain ask through this socket (so it is handled after whatever this peer sent before)."""
        corr = self.corr()
        self.send(dst_id, ASK, codec.encode(msg), corr)
        answer = self.final(corr, timeout)
        assert answer is not None, f"no answer to {msg!r} within {timeout} s"
        if answer.kind == FAIL:
            raise error_from_wire(answer.value)
        return answer.value

    def send_batch(self, dst_id: int, payload: bytes, dst_node: str | None = None) -> int:
        corr = self.corr()
        self.send(dst_id, BATCH, payload, corr, dst_node)
        return corr

    def outcome(self, corr: int, timeout: float = 10.0) -> Outcome | None:
        answer = self.final(corr, timeout)
        if answer is None:
            return None
        parts = [a.value for a in self.of(corr) if a.kind == PART]
        answers = [item for part in parts for item in part]
        if answer.kind == FAIL:
            return Outcome(FAIL, parts, answers, error_from_wire(answer.value))
        done, record = answer.value
        return Outcome(REPLY, parts, answers + done, None if record is None else error_from_wire(record))

    def batch(self, dst_id: int, items: list[Any], timeout: float = 10.0) -> Outcome:
        outcome = self.outcome(self.send_batch(dst_id, encode_request(items)), timeout)
        assert outcome is not None, f"no answer to a batch of {len(items)} items within {timeout} s"
        return outcome

    def counters(self, target: ActorRef) -> dict[str, int]:
        return cast(dict[str, int], self.ask(target.id, "counters"))

    def node_stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.ask(CONTROL_ID, ["stats"]))


@pytest.fixture
def peer(system: ActorSystem) -> Iterator[Peer]:
    hostile = Peer(system)
    try:
        yield hostile
    finally:
        hostile.close()


def still_answers(system: ActorSystem) -> None:
    """The system's own client gets a normal ask answered, on a new actor and on each worker."""
    assert system.spawn(Echo).ask("still here", timeout=10.0) == "still here"
    for worker in range(len(system.workers())):
        assert system.spawn(Echo, worker=worker).ask(worker, timeout=10.0) == worker


def depth(levels: int) -> bytes:
    """The encoding of ``levels`` nested lists (``[[[]]]`` is 3)."""
    return b"\x91" * (levels - 1) + b"\x90"


# -- BATCH payloads that are no list of items ----------------------------------------------

NOT_A_CHUNK: list[tuple[str, bytes]] = [
    ("a str", codec.encode("item")),
    ("a dict", codec.encode({"items": [1, 2]})),
    ("None", codec.encode(None)),
    ("an int", codec.encode(3)),
    ("a tuple of items", codec.encode((1, 2))),
    ("an empty list", codec.encode([])),
    ("no bytes", b""),
    ("garbage", b"\xc1\xc1\xc1"),
    ("cut short", codec.encode([1, 2, "three"])[:-2]),
    ("trailing bytes", codec.encode([1, 2]) + b"\x01"),
    ("a list of 2**32-1 items, none there", b"\xdd\xff\xff\xff\xff"),
    ("an unknown extension", msgpack.packb([msgpack.ExtType(99, b"x")])),
    ("a msgpack timestamp", msgpack.packb([msgpack.Timestamp(1, 0)])),
    ("a stray tuple marker", msgpack.packb([1, msgpack.ExtType(1, b"")])),
    ("too deep", depth(codec.MAX_DEPTH + 30)),
    ("an item one level too deep", depth(codec.MAX_DEPTH + 2)),  # the list is one, its item MAX_DEPTH + 1
]


def test_a_batch_that_is_no_list_of_items_is_dropped_counted_and_never_run(system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target, worker=0)
    before = peer.counters(target)
    refused: list[int] = []
    for count, (label, payload) in enumerate(NOT_A_CHUNK, 1):
        corr = peer.send_batch(target.id, payload)
        refused.append(corr)
        counters = peer.counters(target)  # (handled after the batch, which came first on this socket)
        assert counters["malformed"] == before["malformed"] + count, label
        assert peer.of(corr) == [], f"{label}: {peer.of(corr)}"
    assert peer.ask(target.id, "seen") == []  # not one of them reached receive
    assert peer.counters(target)["dead_letters"] == before["dead_letters"]
    # The worker and the actor go on, and a sound batch on the same socket is answered.
    assert peer.batch(target.id, ["a", "b"]) == Outcome(REPLY, [], ["a", "b"], None)
    peer.drain()
    assert [a for a in peer.got if a.corr in refused] == []  # (dropped: no answer came, nor will one)
    still_answers(system)


def test_an_item_of_the_full_depth_travels_in_a_batch(system: ActorSystem, peer: Peer) -> None:
    # The chunk's list is allowed one level more than its items: an item that may travel alone may travel in one.
    target = system.spawn(Target)
    deepest = codec.decode(depth(codec.MAX_DEPTH))
    outcome = peer.outcome(peer.send_batch(target.id, b"\x92" + depth(codec.MAX_DEPTH) + b"\x01"))
    assert outcome == Outcome(REPLY, [], [deepest, 1], None)


def test_a_batch_of_an_item_whose_class_the_worker_lacks_fails_at_once(system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target, worker=1)
    before = peer.counters(target)
    ghost = msgpack.packb([msgpack.ExtType(codec.EXT_MESSAGE, b""), "nowhere.Ghost", [1]])
    outcome = peer.outcome(peer.send_batch(target.id, b"\x92\x01" + ghost))
    assert outcome is not None and outcome.kind == FAIL and outcome.answers == []
    assert type(outcome.failure) is UnknownMessageType
    assert "nowhere.Ghost" in str(outcome.failure) and f"{target.id:#x}" in str(outcome.failure)
    assert peer.counters(target) == before  # (sound input: a class this process lacks is not malformed)
    assert peer.ask(target.id, "seen") == []


# -- BATCH to what takes no batch --------------------------------------------------------


def test_a_batch_to_the_node_itself_is_an_invalid_argument(system: ActorSystem, peer: Peer) -> None:
    echo = system.spawn(Echo)
    op = ["register_name", "from-a-batch", echo.id]  # a control op as the items: it must not run
    for label, payload, node in [
        ("items", encode_request(op), None),
        ("items, to whichever node", encode_request(op), ""),
        ("garbage", b"\xc1", None),
        ("an empty list", codec.encode([]), None),
    ]:
        started = time.monotonic()
        outcome = peer.outcome(peer.send_batch(CONTROL_ID, payload, node), timeout=5.0)
        assert outcome is not None, f"{label}: the node did not answer"
        assert outcome.kind == FAIL and type(outcome.failure) is InvalidArgument, (label, outcome)
        assert str(outcome.failure) == "only an actor takes a batch of items"
        assert time.monotonic() - started < 2.0
    assert peer.ask(CONTROL_ID, ["whereis", "from-a-batch"]) is None
    assert system.whereis("from-a-batch") is None
    still_answers(system)


def test_a_batch_to_a_supervisor_is_an_invalid_argument(system: ActorSystem, peer: Peer) -> None:
    sup = system.spawn_supervisor("hostile")
    child = sup.add_child(supervisor.ChildSpec(id="c", actor_class=Echo))
    for payload in [encode_request(["which_children"]), encode_request(["count_children", 1]), b"\xc1"]:
        outcome = peer.outcome(peer.send_batch(sup.id, payload), timeout=5.0)
        assert outcome is not None and outcome.kind == FAIL, outcome
        assert type(outcome.failure) is InvalidArgument and "only an actor takes a batch" in str(outcome.failure)
    assert peer.ask(sup.id, "which_children") == [("c", child)]
    assert sup.children() == [("c", child)]
    assert child.ask("child") == "child"
    still_answers(system)


def test_a_map_over_a_pool_of_the_node_or_a_supervisor_fails_at_once(system: ActorSystem) -> None:
    # A PoolRef of refs that are no actors (a user's mistake): each chunk's BATCH is refused at once.
    sup = system.spawn_supervisor("hostile")
    for ref in [sup.ref, ActorRef(system.name, CONTROL_ID, "node")]:
        started = time.monotonic()
        with pytest.raises(InvalidArgument, match="only an actor takes a batch of items") as info:
            PoolRef([ref]).map(range(12), chunksize=4, timeout=10.0)
        assert "(item 0 of the map)" in info.value.__notes__
        with pytest.raises(InvalidArgument, match="only an actor takes a batch of items"):
            list(PoolRef([ref]).imap_unordered(range(12), chunksize=4, timeout=10.0))
        assert time.monotonic() - started < 5.0
    assert sup.children() == []
    still_answers(system)


def test_a_batch_to_no_actor_fails_at_once(system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target, worker=0)
    gone = system.spawn(Echo)
    gone.stop()
    wait_for(lambda: _stopped(gone), what="the stopped actor forgotten")
    worker_id = peer.counters(target)["worker_id"]  # routed to the worker, which hosts no such actor
    for label, dst, error in [
        ("never existed", 12345, ActorNotFound),
        ("stopped", gone.id, ActorNotFound),
        ("an id past every actor", 2**64 - 1, ActorNotFound),
    ]:
        started = time.monotonic()
        outcome = peer.outcome(peer.send_batch(dst, encode_request([1, 2, 3])), timeout=5.0)
        assert outcome is not None, f"{label}: no answer"
        # (the node fails it; or, if the node has not yet heard that the actor stopped, its worker answers
        # the batch with no answers and the failure)
        assert outcome.answers == [] and type(outcome.failure) is error, (label, outcome)
        assert f"{dst:#x}" in str(outcome.failure)
        assert time.monotonic() - started < 2.0
    outcome = peer.outcome(peer.send_batch(worker_id, encode_request([1, 2, 3])), timeout=5.0)
    assert outcome is not None and outcome.kind == REPLY and outcome.answers == []
    assert type(outcome.failure) is ActorNotFound and f"{worker_id:#x}" in str(outcome.failure)
    # Through the API: a pool of a ref to no actor fails its map at once, naming the first item.
    started = time.monotonic()
    with pytest.raises(ActorNotFound) as info:
        PoolRef([ActorRef(system.name, 12345)]).map(range(10), chunksize=5, timeout=10.0)
    assert "(item 0 of the map)" in info.value.__notes__
    assert time.monotonic() - started < 5.0
    still_answers(system)


def _stopped(ref: ActorRef) -> bool:
    try:
        ref.ask("?", timeout=5.0)
    except ActorNotFound:
        return True
    return False


def test_a_batch_whose_sender_names_a_node_that_is_not_there_is_answered_into_a_dead_letter(
        system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target)
    before = peer.node_stats()["dead_letters"]
    corr = peer.corr()
    frames = message_frames(system.name, target.id, BATCH, "nowhere", peer.id, encode_request(["x", "y"]), corr)
    peer.sock.send_multipart(frames)
    assert peer.ask(target.id, "seen") == ["x", "y"]  # it ran, and its answer went towards "nowhere"
    wait_for(lambda: peer.node_stats()["dead_letters"] == before + 1, 5.0, "the answer counted as a dead letter")
    assert peer.of(corr) == []
    still_answers(system)


def test_a_batch_to_a_full_mailbox_fails_at_once_with_mailbox_full(
        system: ActorSystem, peer: Peer, tmp_path: Path) -> None:
    napper = system.spawn(Napper, mailbox_size=1)
    napping = tmp_path / "napping"
    nap = peer.corr()
    peer.send(napper.id, ASK, codec.encode(("nap", 1.0, str(napping))), nap)
    wait_for(napping.exists, 5.0, "the nap begun")  # out of the mailbox, and busy for 1 s
    peer.send(napper.id, TELL, codec.encode("filler"))  # the mailbox holds one message: full
    outcome = peer.outcome(peer.send_batch(napper.id, encode_request([1, 2])), timeout=5.0)
    assert outcome is not None and outcome.kind == REPLY and outcome.answers == []
    assert type(outcome.failure) is MailboxFull
    answer = peer.final(nap, 5.0)
    assert answer is not None and answer.value == "rested"
    assert peer.batch(napper.id, [1, 2]) == Outcome(REPLY, [], [1, 2], None)


# -- PART where no client waits ------------------------------------------------------------


def test_a_part_sent_to_an_actor_never_reaches_receive_and_is_counted(system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target, worker=0)
    before = peer.counters(target)
    for payload in [codec.encode(["a forged answer"]), codec.encode("not even a list"), b"\xc1"]:
        peer.send(target.id, PART, payload, corr=peer.corr())
    peer.send(before["worker_id"], PART, codec.encode([1]), corr=peer.corr())  # to the worker itself
    after = peer.counters(target)
    assert after["malformed"] == before["malformed"] + 4
    assert after["dead_letters"] == before["dead_letters"]
    assert peer.ask(target.id, "seen") == []
    assert [a.corr for a in peer.got if a.kind not in (REPLY, FAIL)] == []
    assert target.ask("fine") == "fine"
    still_answers(system)


def test_a_part_naming_a_class_the_worker_lacks_is_counted(system: ActorSystem, peer: Peer) -> None:
    target = system.spawn(Target, worker=0)
    before = peer.counters(target)
    ghost = msgpack.packb([[msgpack.ExtType(codec.EXT_MESSAGE, b""), "nowhere.Ghost", [1]]])
    peer.send(target.id, PART, ghost, corr=peer.corr())
    after = peer.counters(target)
    assert peer.ask(target.id, "seen") == []
    assert after["malformed"] + after["dead_letters"] == before["malformed"] + before["dead_letters"] + 1, after


def test_a_part_sent_to_the_node_is_dropped_and_counted_not_run(system: ActorSystem, peer: Peer) -> None:
    echo = system.spawn(Echo)
    before = peer.node_stats()["malformed"]
    peer.send(CONTROL_ID, PART, codec.encode(["register_name", "from-a-part", echo.id]), corr=peer.corr())
    assert peer.ask(CONTROL_ID, ["whereis", "from-a-part"]) is None, "the PART's op ran"
    assert peer.node_stats()["malformed"] == before + 1


def test_a_part_sent_to_a_supervisor_is_counted(system: ActorSystem, peer: Peer) -> None:
    sup = system.spawn_supervisor("hostile")
    before = peer.node_stats()["malformed"]
    peer.send(sup.id, PART, codec.encode(["which_children"]), corr=peer.corr())
    assert peer.ask(sup.id, "which_children") == []
    assert peer.node_stats()["malformed"] == before + 1


def test_junk_answers_sent_to_a_client_are_dropped_and_counted(system: ActorSystem, peer: Peer) -> None:
    echo = system.spawn(Echo)
    assert echo.ask("first") == "first"
    client = system._client()  # this thread's port: the victim
    before = client.malformed
    stranger = 987_654_321  # a corr this client never used
    route = pack_route(system.name, client.id, 0, peer.id, stranger)
    junk: list[tuple[list[bytes], int]] = [
        ([route, pack_env(PART, system.name, peer.id, stranger), codec.encode(["forged"])], 0),  # sound: ignored
        ([route, pack_env(PART, system.name, peer.id, stranger), b"\xc1"], 1),
        ([route, pack_env(PART, system.name, peer.id, stranger), codec.encode("no list")], 0),
        ([route, pack_env(REPLY, system.name, peer.id, stranger), codec.encode([["x"], None])], 0),
        ([route, pack_env(REPLY, system.name, peer.id, stranger), depth(codec.MAX_DEPTH + 5)], 1),
        ([route, pack_env(FAIL, system.name, peer.id, stranger), codec.encode("no error record")], 0),
        ([route, pack_env(BATCH, system.name, peer.id, stranger), encode_request([1])], 0),  # an ask: skipped
        ([route, msgpack.packb([99, system.name, peer.id, stranger]), codec.encode([1])], 1),  # unknown kind
        ([route, pack_env(PART, system.name, peer.id, stranger), codec.encode([1]), pack_env(PART, system.name,
                                                                                             peer.id, stranger)], 1),
    ]
    for frames, _ in junk:
        peer.sock.send_multipart(frames)
    counted = sum(bad for _, bad in junk)
    # Each ask reads what reached the socket before its answer: ask until all of it was read.
    wait_for(lambda: echo.ask("again") == "again" and client.malformed >= before + counted, 10.0, "junk read")
    assert client.malformed == before + counted
    assert echo.ask("last") == "last"
    assert PoolRef([echo]).map(range(20), chunksize=7) == list(range(20))
    still_answers(system)


# -- what a batch's actor does ----------------------------------------------------------------


def test_a_crash_on_item_5_of_10000_answers_items_0_to_4_and_restarts_the_actor(
        system: ActorSystem, peer: Peer) -> None:
    tally = system.spawn(Tally, 5)
    assert tally.ask(-1) == -1 and tally.ask("count") == 1
    started = time.monotonic()
    outcome = peer.batch(tally.id, list(range(10_000)))
    assert time.monotonic() - started < 5.0
    assert outcome.kind == REPLY and outcome.answers == [0, 1, 2, 3, 4]
    failure = outcome.failure
    assert type(failure) is ActorError and failure.remote_type == "ValueError"
    assert "item 5 breaks me" in str(failure)
    # Re-created (count back to 0): none of items 6..9999 ran, on either incarnation.
    assert tally.ask("count") == 0
    # A map over the same items: item 5's failure raised with its index; with return_exceptions, in its place.
    with pytest.raises(ActorError, match="item 5 breaks me") as info:
        PoolRef([tally]).map(range(10_000), chunksize=10_000, timeout=15.0)
    assert "(item 5 of the map)" in info.value.__notes__
    results = PoolRef([tally]).map(range(10_000), chunksize=10_000, timeout=15.0, return_exceptions=True)
    assert type(results[5]) is ActorError
    assert results[:5] + results[6:] == [n for n in range(10_000) if n != 5]
    still_answers(system)


def test_an_actor_that_stops_itself_mid_batch_answers_what_it_ran(system: ActorSystem, peer: Peer) -> None:
    temporary = system.spawn(StopsAt, 3, restart="temporary")
    assert peer.batch(temporary.id, list(range(10))) == Outcome(REPLY, [], [0, 1, 2, 3], None)
    with pytest.raises(ActorNotFound):
        temporary.ask("gone?")
    # A map asks the rest again: a permanent actor is back to run them; a temporary one is gone.
    assert PoolRef([system.spawn(StopsAt, 3)]).map(range(8), chunksize=8, timeout=10.0) == list(range(8))
    with pytest.raises(ActorNotFound) as info:
        PoolRef([system.spawn(StopsAt, 3, restart="temporary")]).map(range(8), chunksize=8, timeout=10.0)
    assert "(item 4 of the map)" in info.value.__notes__
    still_answers(system)


def test_an_async_receive_runs_a_batch_item_by_item(system: ActorSystem, peer: Peer) -> None:
    fine = system.spawn(AsyncTally)
    outcome = peer.batch(fine.id, list(range(500)))
    assert outcome.kind == REPLY and outcome.answers == list(range(500)) and outcome.failure is None
    assert fine.ask("count") == 500
    crashing = system.spawn(AsyncTally, 7)
    outcome = peer.batch(crashing.id, list(range(500)))
    assert outcome.answers == list(range(7))
    assert type(outcome.failure) is ActorError and "item 7 breaks me" in str(outcome.failure)
    assert crashing.ask("count") == 0  # re-created
    pool = system.spawn_pool(AsyncTally, size=2)
    assert pool.map(range(300), chunksize=40, timeout=15.0) == list(range(300))
    still_answers(system)


def test_an_async_batch_whose_actor_is_stopped_mid_item_is_answered(
        system: ActorSystem, peer: Peer, tmp_path: Path) -> None:
    started = tmp_path / "started"
    sup = system.spawn_supervisor("hostile")
    slow = sup.add_child(supervisor.ChildSpec(id="slow", actor_class=SlowAsync, args=(str(started), 1.0)))
    corr = peer.send_batch(slow.id, encode_request([1, 2, 3]))
    wait_for(started.exists, 5.0, "the first item started")
    assert sup.remove_child("slow") is True
    outcome = peer.outcome(corr, timeout=5.0)
    still_answers(system)
    assert outcome is not None, "the batch was never answered"
    # What ran is answered; the items not run are the sender's to ask again (the actor is gone: ActorNotFound).
    assert outcome.answers in ([], [1]) and outcome.failure is None or type(outcome.failure) is ActorNotFound
    assert outcome.answers == [1] or type(outcome.failure) is ActorNotFound


def test_a_batch_whose_actor_is_stopped_between_slices_answers_what_ran(system: ActorSystem, peer: Peer) -> None:
    # The synchronous counterpart of the test above: between two slices the chunk waits in the mailbox,
    # which a stop fails whole, with the answers so far.
    sup = system.spawn_supervisor("hostile")
    spin = sup.add_child(supervisor.ChildSpec(id="spin", actor_class=Shapes, args=(5.0,)))
    corr = peer.send_batch(spin.id, encode_request(list(range(200))))
    assert peer.first(corr, PART, 5.0) is not None, "no part: the batch does not run"
    assert sup.remove_child("spin") is True
    outcome = peer.outcome(corr, timeout=5.0)
    assert outcome is not None and outcome.kind == REPLY
    assert 0 < len(outcome.answers) < 200 and outcome.answers == list(range(len(outcome.answers)))
    assert type(outcome.failure) is ActorNotFound and "stopped" in str(outcome.failure)
    still_answers(system)


def test_an_item_that_raises_a_base_exception_crashes_only_its_actor(system: ActorSystem, peer: Peer) -> None:
    actor = system.spawn(Cancels, False, worker=0)
    neighbour = system.spawn(Tally, worker=0)
    assert neighbour.ask(1) == 1
    outcome = peer.outcome(peer.send_batch(actor.id, encode_request([1, "cancel", 3])), timeout=10.0)
    still_answers(system)
    assert outcome is not None
    assert outcome.kind == REPLY and outcome.answers == [1], outcome
    assert type(outcome.failure) is ActorError and "CancelledError" in outcome.failure.remote_type
    assert neighbour.ask("count") == 1, "the neighbour was re-created: its worker died"


def test_an_async_item_that_raises_a_base_exception_is_answered(system: ActorSystem, peer: Peer) -> None:
    actor = system.spawn(Cancels, True)
    outcome = peer.outcome(peer.send_batch(actor.id, encode_request([1, "cancel", 3])), timeout=5.0)
    still_answers(system)
    assert outcome is not None, "the batch was never answered"
    assert outcome.answers == [1] and type(outcome.failure) is ActorError
    assert actor.ask("after", timeout=5.0) == "after"


def test_an_answer_that_cannot_be_sent_fails_its_own_item(system: ActorSystem, peer: Peer) -> None:
    shapes = system.spawn(Shapes)
    outcome = peer.batch(shapes.id, [0, 1, 2, "set", 4, 5])
    assert outcome.kind == REPLY and outcome.answers == [0, 1, 2]
    assert type(outcome.failure) is SerializationError and "builtins.set" in str(outcome.failure)
    results = PoolRef([shapes]).map([0, 1, 2, "set", 4, 5], chunksize=6, return_exceptions=True)
    assert results[:3] + results[4:] == [0, 1, 2, 4, 5] and type(results[3]) is SerializationError
    with pytest.raises(SerializationError) as info:
        PoolRef([shapes]).map([0, 1, 2, "set", 4, 5], chunksize=6)
    assert "(item 3 of the map)" in info.value.__notes__
    # Where a part is due when the bad answer is met (items of 5 ms: a part every 10 or so).
    slow = system.spawn(Shapes, 5.0)
    items: list[Any] = [*range(25), "set", *range(26, 40)]
    outcome = peer.batch(slow.id, items)
    assert outcome.parts != [], "no part came: the test did not reach the case it is for"
    assert outcome.answers == list(range(25)) and type(outcome.failure) is SerializationError
    results = PoolRef([slow]).map(items, chunksize=40, return_exceptions=True, timeout=15.0)
    assert type(results[25]) is SerializationError and results[:25] + results[26:] == items[:25] + items[26:]
    still_answers(system)


def test_an_answer_the_client_cannot_decode_fails_only_its_own_item(system: ActorSystem) -> None:
    shapes = system.spawn(Shapes)
    items: list[Any] = [0, 1, 2, "ghost", 4]
    alone = PoolRef([shapes]).map(items, chunksize=1, return_exceptions=True)
    assert alone[:3] + alone[4:] == [0, 1, 2, 4] and type(alone[3]) is UnknownMessageType
    with pytest.raises(UnknownMessageType) as info:
        PoolRef([shapes]).map(items, chunksize=5)
    still_answers(system)
    chunked = PoolRef([shapes]).map(items, chunksize=5, return_exceptions=True)
    shown = [type(r).__name__ if isinstance(r, BaseException) else r for r in chunked]
    assert shown == [0, 1, 2, "UnknownMessageType", 4]
    assert "(item 3 of the map)" in info.value.__notes__


def test_a_batch_whose_item_kills_its_worker_fails_with_worker_died(system: ActorSystem, peer: Peer) -> None:
    shapes = system.spawn(Shapes, worker=0)
    pid = next(w.pid for w in system.workers() if w.id == 0)
    started = time.monotonic()
    outcome = peer.outcome(peer.send_batch(shapes.id, encode_request([1, 2, "die", 4])), timeout=10.0)
    assert outcome is not None and outcome.kind == FAIL and type(outcome.failure) is WorkerDied
    assert time.monotonic() - started < 5.0
    # The actor comes back on a fresh worker (its messages park meanwhile) and takes batches again.
    assert peer.batch(shapes.id, [5, 6], timeout=15.0) == Outcome(REPLY, [], [5, 6], None)
    assert next(w.pid for w in system.workers() if w.id == 0) != pid
    still_answers(system)


# -- scheduling -------------------------------------------------------------------------------


def test_a_long_batch_leaves_its_workers_other_actors_answering(system: ActorSystem, peer: Peer) -> None:
    # 200 items of 5 ms: 1 s of work, run a slice (2 ms) at a time. An ask to another actor of the
    # same worker waits for one slice, not for the chunk's end.
    spin = system.spawn(Shapes, 5.0, worker=0)
    echo = system.spawn(Echo, worker=0)
    assert echo.ask("warm") == "warm"
    sent = time.monotonic()
    corr = peer.send_batch(spin.id, encode_request(list(range(200))))
    assert peer.first(corr, PART, 5.0) is not None, "no part: the batch does not run"
    latencies = []
    for n in range(5):
        began = time.monotonic()
        assert echo.ask(n, timeout=5.0) == n
        latencies.append(time.monotonic() - began)
    peer.drain()
    assert [a for a in peer.of(corr) if a.kind in (REPLY, FAIL)] == [], "the batch ended before the asks"
    assert max(latencies) < 0.5, latencies
    outcome = peer.outcome(corr, timeout=10.0)
    took = time.monotonic() - sent
    assert outcome is not None and outcome.answers == list(range(200)) and outcome.failure is None
    assert len(outcome.parts) >= 5  # (one every 50 ms)
    assert took >= 0.9


def test_a_chunk_of_a_million_items_runs_in_slices_with_parts(system: ActorSystem, peer: Peer) -> None:
    tally = system.spawn(Tally, worker=1)
    echo = system.spawn(Echo, worker=1)
    corr = peer.send_batch(tally.id, encode_request(list(range(1_000_000))))
    assert peer.first(corr, PART, 10.0) is not None, "no part"
    began = time.monotonic()
    assert echo.ask("meanwhile", timeout=5.0) == "meanwhile"
    assert time.monotonic() - began < 0.5
    outcome = peer.outcome(corr, timeout=15.0)
    assert outcome is not None and outcome.failure is None and len(outcome.parts) >= 1
    assert outcome.answers == list(range(1_000_000))
    assert tally.ask("count") == 1_000_000


# -- a pool's map: its chunk size -----------------------------------------------------------

BAD_CHUNKSIZES: list[Any] = [0, -1, 1.5, "3", True, False, b"3", [3], 2.0, -(2**70)]


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered"])
def test_a_bad_chunksize_is_an_invalid_argument_and_sends_nothing(system: ActorSystem, method: str) -> None:
    tally = system.spawn(Tally)
    pool = PoolRef([tally])
    call: Callable[..., Any] = getattr(pool, method)
    for chunksize in BAD_CHUNKSIZES:
        with pytest.raises(InvalidArgument, match=f"^{method}: chunksize=") as info:
            call(range(10), chunksize=chunksize)
        assert type(info.value) is InvalidArgument
        assert "must be an int from 1 to" in str(info.value) and repr(chunksize)[:6] in str(info.value)
    assert tally.ask("count") == 0
    assert sorted(call(range(10), chunksize=3)) == list(range(10))


@pytest.mark.parametrize("method", ["map", "imap"])
def test_a_chunksize_past_sys_maxsize_is_refused_or_works(system: ActorSystem, method: str) -> None:
    pool = PoolRef([system.spawn(Tally)])
    try:
        results = list(getattr(pool, method)(range(3), chunksize=2**63))
    except InvalidArgument as exc:
        assert "chunksize" in str(exc)
    else:
        assert results == [0, 1, 2]


# -- many hostile peers at once --------------------------------------------------------------


def test_hostile_peers_on_threads_while_a_map_runs(system: ActorSystem) -> None:
    # Bad batches and stray parts from four peers at once, while this thread maps over a pool of the
    # same workers: the map's answers are all there, in order, and the node and workers still answer.
    pool = system.spawn_pool(Tally, size=2)
    targets = [system.spawn(Target, worker=w) for w in (0, 1)]
    failures: list[BaseException] = []

    def attack(seed: int) -> None:
        hostile = Peer(system)
        try:
            for n in range(50):
                target = targets[(seed + n) % 2]
                _, payload = NOT_A_CHUNK[(seed * 7 + n) % len(NOT_A_CHUNK)]
                hostile.send_batch(target.id, payload)
                hostile.send(target.id, PART, codec.encode([n]), corr=hostile.corr())
                hostile.send_batch(CONTROL_ID, encode_request([n]))
            assert hostile.ask(targets[0].id, "seen") == []
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)
        finally:
            hostile.close()

    threads = [threading.Thread(target=attack, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    results = pool.map(range(5000), chunksize=250, timeout=15.0)
    for thread in threads:
        thread.join(15.0)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert results == list(range(5000))
    assert [t.ask("seen") for t in targets] == [[], []]
    still_answers(system)
