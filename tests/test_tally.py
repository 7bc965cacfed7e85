"""A worker's tally: what it settled, read by its node after the fact (gorilix.workers.tally)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from gorilix.transport import codec
from gorilix.transport.frames import FLAG_ASK, TELL, message_frames, pack_env, pack_route
from gorilix.workers.asks import PendingAsks
from gorilix.workers.inbox import Inbox
from gorilix.workers.outbox import Outbox
from gorilix.workers.scheduler import Scheduler
from gorilix.workers.tally import RING, Tally, TallyReader, create_tally, tally_path


@pytest.fixture
def tally_file(tmp_path: Path) -> str:
    path = tally_path(str(tmp_path / "w0.health"))
    create_tally(path)
    return path


def test_the_node_reads_each_settled_tell_once_by_actor(tally_file: str) -> None:
    tally, reader = Tally(tally_file), TallyReader(tally_file)
    for actor in (5, 5, 9, 5):
        tally.settle(actor)
    tally.took(1000)
    assert reader.take() == Counter({5: 3, 9: 1}) and reader.read() == 1000
    assert reader.take() == Counter()  # (read once)
    tally.settle_many(7, 2)
    assert reader.take() == Counter({7: 2}) and reader.overrun == 0


def test_the_ring_wraps_and_a_reader_that_fell_behind_knows_by_how_much(tally_file: str) -> None:
    tally, reader = Tally(tally_file), TallyReader(tally_file)
    tally.settle_many(1, RING - 10)
    assert reader.take() == Counter({1: RING - 10})
    tally.settle_many(2, 20)  # (wraps round the end)
    assert reader.take() == Counter({2: 20}) and reader.overrun == 0
    tally.settle_many(3, RING + 5)  # more than the ring holds before the next look
    assert reader.take() == Counter({3: RING}) and reader.overrun == 5


def test_a_tally_outlives_its_writer(tally_file: str) -> None:
    tally = Tally(tally_file)
    tally.settle(4)
    del tally  # (a SIGKILL unmaps it just the same: the writes are in the file)
    assert TallyReader(tally_file).take() == Counter({4: 1})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_worker_settles_each_counted_tell_once_refused_or_run(tally_file: str, loop: asyncio.AbstractEventLoop) -> None:
    tally, reader = Tally(tally_file), TallyReader(tally_file)
    inbox = Inbox("n1", 0, 1 << 40, {}, Scheduler(None, loop, tally), PendingAsks(loop),  # type: ignore[arg-type]
                  Outbox("n1", 1 << 40), None)  # type: ignore[arg-type]
    inbox.outbox.report = lambda report: None  # type: ignore[method-assign]
    nobody = 77
    tells = message_frames("n1", nobody, TELL, "n2", 5, codec.encode("x"))
    batch = [tells[0], tells[1], tells[2], tells[1], tells[2], tells[1], b"\xc1"]  # 3 tells, the last undecodable
    inbox.dispatch(batch)  # to an actor this worker does not have: refused, and settled
    assert reader.take() == Counter({nobody: 3})
    ask = [pack_route("n1", nobody, FLAG_ASK, 5, 1), pack_env(1, "n2", 5, 1), codec.encode("q")]
    inbox.outbox.send = lambda *args: None  # type: ignore[method-assign]
    inbox.dispatch(ask)  # an ask is not counted: the node fails it on a death instead
    inbox.dispatch([pack_route("n1", nobody), msgpack.packb("not an envelope"), codec.encode(1)])
    assert reader.take() == Counter({nobody: 1})
