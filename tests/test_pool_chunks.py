"""A pool's items in chunks, its futures, and its asyncio twins, against real workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import time
from collections.abc import Callable, Iterator

import psutil
import pytest
from actors import AsyncSquare, KillsItsWorker, Spin, Square, Tiny

from gorilix import (
    ActorError,
    ActorSystem,
    AskTimeout,
    InvalidArgument,
    NotRunning,
    PoolFuture,
    WorkerDied,
)


def test_map_in_chunks_answers_every_item_in_order(system: ActorSystem) -> None:
    pool = system.spawn_pool(Square, size=3)
    items = list(range(5000))
    expected = [n * n for n in items]
    assert pool.map(items) == expected  # the default chunk size: about four chunks per actor
    assert pool.map(items, chunksize=7) == expected
    assert pool.map(items, chunksize=10_000) == expected  # one chunk, bigger than the map
    assert list(pool.imap(items, chunksize=64)) == expected
    assert sorted(pool.imap_unordered(items, chunksize=64)) == expected


def test_async_receive_runs_each_item_of_a_chunk(system: ActorSystem) -> None:
    pool = system.spawn_pool(AsyncSquare)
    assert pool.map(range(300), chunksize=50) == [n * n for n in range(300)]


@pytest.mark.parametrize("chunksize", [0, -1, 1.5, "3", True])
def test_a_bad_chunksize_is_refused_naming_it(system: ActorSystem, chunksize: object) -> None:
    pool = system.spawn_pool(Square, size=1)
    with pytest.raises(InvalidArgument, match="chunksize"):
        pool.map([1, 2], chunksize=chunksize)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="chunksize"):
        pool.imap([1, 2], chunksize=chunksize)  # type: ignore[arg-type]


def test_a_long_chunk_sends_its_answers_as_it_goes(system: ActorSystem) -> None:
    # One chunk of 40 items of 25 ms runs for a second; its parts bring the first answers long before.
    pool = system.spawn_pool(Spin, 25.0, size=1)
    began = time.monotonic()
    answers = pool.imap(range(40), chunksize=40)
    assert next(answers) == 0
    first = time.monotonic() - began
    assert list(answers) == [n * n for n in range(1, 40)]
    whole = time.monotonic() - began
    assert first < whole / 2, f"the first answer came after {first:.2f} s of {whole:.2f} s"


def test_an_item_that_kills_its_worker_each_time_ends_the_map_naming_it(make_system: Callable[..., ActorSystem]) -> None:
    # The chunk's earlier items are answered (parts, and the answer before the death), the
    # poison item is caught in a death each time it runs, and the map ends after its retries.
    system = make_system(2, log_level="CRITICAL")
    pool = system.spawn_pool(KillsItsWorker, 37, size=1)
    with pytest.raises(WorkerDied) as caught:
        pool.map(range(100), chunksize=50, timeout=60.0)
    assert "(item 37 of the map, after 3 retries)" in caught.value.__notes__
    results = pool.map(range(100), chunksize=50, timeout=60.0, return_exceptions=True)
    assert isinstance(results[37], WorkerDied)
    assert results[:37] + results[38:] == [n * n for n in range(100) if n != 37]


def test_submit_returns_futures_that_work_as_concurrent_futures(system: ActorSystem) -> None:
    pool = system.spawn_pool(Square)
    futures = [pool.submit(n) for n in range(200)]
    assert all(isinstance(f, (PoolFuture, concurrent.futures.Future)) for f in futures)
    assert sorted(f.result(timeout=30) for f in concurrent.futures.as_completed(futures, timeout=30)) == sorted(
        n * n for n in range(200))
    done, not_done = concurrent.futures.wait([pool.submit(n) for n in range(10)], timeout=30)
    assert len(done) == 10 and not not_done
    failed = pool.submit("not a number")
    assert isinstance(failed.exception(timeout=30), ActorError)


def test_a_submitted_future_can_be_awaited(system: ActorSystem) -> None:
    pool = system.spawn_pool(Square)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.submit(n) for n in range(20))))

    assert asyncio.run(main()) == [n * n for n in range(20)]


def test_submitted_items_finish_through_a_worker_death(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2, log_level="CRITICAL")
    pool = system.spawn_pool(Spin, 5.0, size=2)
    futures = [pool.submit(n) for n in range(200)]
    time.sleep(0.2)
    system.kill_worker(0)
    assert [f.result(timeout=60) for f in futures] == [n * n for n in range(200)]


def test_submissions_fail_with_not_running_once_the_system_stops(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1)
    pool = system.spawn_pool(Spin, 200.0, size=1)
    waiting = [pool.submit(n) for n in range(5)]
    time.sleep(0.1)
    system.stop()
    for future in waiting:
        assert isinstance(future.exception(timeout=10), NotRunning)
    assert isinstance(pool.submit(1).exception(timeout=10), NotRunning)


def test_the_asyncio_twins_give_what_their_blocking_forms_give(system: ActorSystem) -> None:
    pool = system.spawn_pool(Square)

    async def main() -> None:
        items = list(range(1000))
        assert await pool.map_async(items) == [n * n for n in items]
        assert await pool.map_async([]) == []
        assert [a async for a in pool.imap_async(items, chunksize=16)] == [n * n for n in items]
        assert sorted([a async for a in pool.imap_unordered_async(iter(items))]) == [n * n for n in items]
        with pytest.raises(ActorError) as caught:
            await pool.map_async([1, 2, "x", 4])
        assert "(item 2 of the map)" in caught.value.__notes__
        mixed = await pool.map_async([1, "x", 3], return_exceptions=True)
        assert mixed[0] == 1 and isinstance(mixed[1], ActorError) and mixed[2] == 9

    asyncio.run(main())


def test_an_async_map_that_runs_out_of_time_raises_ask_timeout(system: ActorSystem) -> None:
    pool = system.spawn_pool(Spin, 300.0, size=1)

    async def main() -> None:
        with pytest.raises(AskTimeout):
            await pool.map_async(range(4), timeout=0.2)
        with pytest.raises(AskTimeout):
            async for _ in pool.imap_async(range(4), timeout=0.1):
                pass

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_imap_unordered_over_ten_million_items_keeps_memory_flat(system: ActorSystem) -> None:
    # A stream reads a bounded number of items ahead: an unbounded queue of 10 million
    # items (or their answers) would hold several hundred MB.
    pool = system.spawn_pool(Tiny)
    produced = itertools.count()

    def items() -> Iterator[int]:
        for n in range(10_000_000):
            next(produced)
            yield n

    me = psutil.Process(os.getpid())
    total = seen = 0
    baseline = peak = 0
    ahead = 0
    for answer in pool.imap_unordered(items(), chunksize=1000, timeout=120.0):
        total += answer
        seen += 1
        if seen % 1_000_000 == 0:
            rss = me.memory_info().rss
            baseline = baseline or rss
            peak = max(peak, rss)
            ahead = max(ahead, next(produced) - 1 - seen)
    assert seen == 10_000_000
    assert total == sum(n * n for n in range(10_000_000))
    assert peak - baseline < 50 * 2**20, f"the client grew by {(peak - baseline) / 2**20:.0f} MB"
    assert ahead <= 8 * len(pool) * 1000 + 1000, f"{ahead} items were read ahead of the answers"
