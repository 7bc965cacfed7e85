"""A pool's map as a state machine (gorilix.workers.fanout) and a chunk's wire format (gorilix.workers.batch).

The engine is driven here as ``ClientPort.fan_out`` drives it, with actors
simulated by functions: what ``take()`` hands out is "sent", each chunk is
answered with the bytes a worker would send (decoded as the client decodes
them), and the runs that come out are checked. No process, no socket, no clock.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from gorilix.transport import codec
from gorilix.transport.errors import (
    ActorError,
    ActorNotFound,
    DecodeError,
    GorilixError,
    NodeDown,
    SerializationError,
    WorkerDied,
    error_from_wire,
    error_to_wire,
    qualified_name,
)
from gorilix.transport.frames import ASK, BATCH
from gorilix.workers.batch import (
    ANSWER_LEVELS,
    PART_LEVELS,
    REQUEST_LEVELS,
    Part,
    decode_answer,
    decode_part,
    decode_request,
    encode_answer,
    encode_part,
    encode_request,
)
from gorilix.workers.fanout import Chunk, Fanout, Run, default_chunksize, named
from gorilix.workers.ref import ActorRef

#: What an actor's answer to one chunk is, as ``settle`` takes it: (ok, decoded reply or error).
Reply = tuple[bool, Any]
Actor = Callable[[Chunk], Reply]


def refs(count: int) -> list[ActorRef]:
    return [ActorRef("n1", 100 + i, None) for i in range(count)]


def deaths(error: BaseException) -> bool:
    """What a pool's map retries by default (gorilix.system._retryable with no retry_on)."""
    return isinstance(error, (WorkerDied, NodeDown))


def square(item: Any) -> Any:
    return item * item


class Died(Exception):
    """Raised by an item's function: the worker dies running it, so the whole ask fails with WorkerDied."""


class Flaky(Exception):
    """A user's exception class, retried when ``retryable`` says so (``retry_on=(Flaky,)``)."""


def received(chunk: Chunk) -> list[Any]:
    """The items an actor receives: decoded from the chunk's payload, as a worker decodes it."""
    if chunk.kind == ASK:
        return [codec.decode(chunk.payload)]
    assert chunk.kind == BATCH
    return decode_request(chunk.payload).items


def wire(answers: list[Any], failure: BaseException | None = None) -> Any:
    """A batch's REPLY as its asker reads it: encoded by the worker, decoded with the answers' allowance."""
    return codec.decode(encode_answer(answers, failure), ANSWER_LEVELS)


def crash(exc: Exception, actor: str = "") -> ActorError:
    return ActorError(qualified_name(type(exc)), str(exc), "Traceback ...", actor)


def serve(fn: Callable[[Any], Any]) -> Actor:
    """An actor that answers each item with ``fn(item)``, as a worker does.

    ``fn`` raising Died kills the worker (the ask fails with WorkerDied, the
    answers so far are lost); raising anything else crashes the actor (a
    plain ask fails with the ActorError, a batch answers up to that item and
    carries its record).
    """
    def actor(chunk: Chunk) -> Reply:
        answers: list[Any] = []
        for item in received(chunk):
            try:
                answers.append(fn(item))
            except Died:
                return False, WorkerDied("the worker hosting the actor died")
            except Exception as exc:  # the actor crashed on this item
                if chunk.kind == ASK:
                    return False, error_from_wire(error_to_wire(crash(exc)))
                return True, wire(answers, crash(exc))
        if chunk.kind == BATCH:
            return True, wire(answers)
        try:
            return True, codec.decode(codec.encode(answers[0]))
        except SerializationError as exc:  # (the worker fails the ask: its answer cannot travel)
            return False, error_from_wire(error_to_wire(SerializationError(f"the answer cannot be sent: {exc}")))

    return actor


class Sent(NamedTuple):
    """A chunk as it was sent (the chunk itself moves on with parts and retries)."""

    start: int
    size: int
    actor: int
    tries: int
    kind: int


def oldest(flying: list[Chunk]) -> Chunk:
    return flying[0]


def drive(
    fanout: Fanout, actor: Actor, *, pick: Callable[[list[Chunk]], Chunk] = oldest,
    sent: list[Sent] | None = None, watch: Callable[[list[Chunk]], None] | None = None,
    until: Callable[[list[Run]], bool] | None = None, steps: int = 20_000,
) -> list[Run]:
    """Run ``fanout`` as ClientPort.fan_out does; ``pick`` chooses which chunk in flight is answered next.

    ``sent`` collects every send, ``watch`` sees the chunks in flight after
    each ``take``, and ``until`` stops early (an endless stream).
    """
    flying: list[Chunk] = []
    out: list[Run] = []
    for _ in range(steps):
        for chunk in fanout.take():
            assert chunk not in flying, f"{chunk} sent while in flight"
            if sent is not None:
                sent.append(Sent(chunk.start, len(chunk.items), chunk.actor, chunk.tries, chunk.kind))
            flying.append(chunk)
        assert fanout.in_flight == len(flying)
        if watch is not None:
            watch(flying)
        runs = fanout.runs()
        if runs:
            out += runs
            if until is not None and until(out):
                return out
            continue
        if not flying:
            assert fanout.finished
            return out
        chunk = pick(flying)
        flying.remove(chunk)
        fanout.settle(chunk, *actor(chunk))
    raise AssertionError(f"the fan-out did not end in {steps} steps")


def results(runs: list[Run]) -> list[Any]:
    """What map(return_exceptions=True) returns: the answers, each failure in its item's place."""
    out: list[Any] = []
    for _, answers, failure in runs:
        out += answers
        if failure is not None:
            out.append(failure)
    return out


def contiguous(runs: list[Run]) -> bool:
    """The runs follow each other in item order, from item 0."""
    at = 0
    for start, answers, failure in runs:
        if start != at:
            return False
        at += len(answers) + (failure is not None)
    return True


def counting(source: Iterator[Any]) -> tuple[Iterator[Any], Callable[[], int]]:
    """``source``, and how many items were read from it so far."""
    read = 0

    def items() -> Iterator[Any]:
        nonlocal read
        for item in source:
            read += 1
            yield item

    return items(), lambda: read


def nest(levels: int) -> Any:
    """A value exactly ``levels`` deep by the codec's measure (each list is a level)."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


# -- chunks ------------------------------------------------------------------------


def test_a_chunk_of_one_is_a_plain_ask_and_more_is_a_batch_of_the_items() -> None:
    one = Chunk(7, [{"k": (1, 2)}], 0)
    assert one.kind == ASK and one.payload == codec.encode({"k": (1, 2)})
    assert codec.decode(one.payload) == {"k": (1, 2)}
    several = Chunk(7, ["a", (1, 2), None], 0)
    assert several.kind == BATCH
    batch = decode_request(several.payload)
    assert batch.items == ["a", (1, 2), None] and batch.answers == [] and batch.sent == 0
    assert (several.start, several.tries, several.actor) == (7, 0, -1)


@pytest.mark.parametrize(("count", "chunksize"), [(10, 3), (9, 3), (1, 4), (5, 1), (7, 7), (8, 16)])
def test_items_go_in_chunks_of_chunksize_and_the_last_takes_the_rest(count: int, chunksize: int) -> None:
    items, read = counting(iter(range(count)))
    fanout = Fanout(refs(1), items, chunksize=chunksize, window=100)
    chunks = fanout.take()
    expected = [list(range(start, min(count, start + chunksize))) for start in range(0, count, chunksize)]
    assert [c.items for c in chunks] == expected
    assert [c.start for c in chunks] == list(range(0, count, chunksize))
    assert [c.kind for c in chunks] == [ASK if len(part) == 1 else BATCH for part in expected]
    assert [received(c) for c in chunks] == expected  # what travels is what was read
    assert all(c.actor == 0 and c.tries == 0 for c in chunks)
    assert read() == count and fanout.in_flight == len(expected)
    assert fanout.take() == []  # the items ran out: nothing more to send


def test_an_item_that_cannot_travel_is_refused_when_its_chunk_is_made_and_named() -> None:
    fanout = Fanout(refs(1), iter([1, 2, 3, 4, object(), 6]), chunksize=3, window=4)
    with pytest.raises(SerializationError) as info:
        fanout.take()
    assert "(item 4 of the map)" in info.value.__notes__
    alone = Fanout(refs(1), iter([1, nest(codec.MAX_DEPTH + 1)]), chunksize=1, window=4)
    with pytest.raises(SerializationError, match=f"more than {codec.MAX_DEPTH} levels") as info:
        alone.take()
    assert "(item 1 of the map)" in info.value.__notes__


@pytest.mark.parametrize(("items", "actors"), [
    (1, 1), (3, 1), (4, 1), (5, 1), (8, 2), (9, 2), (100, 4), (101, 4), (1000, 3), (7, 8), (10**6, 16), (33, 1),
])
def test_the_default_chunksize_is_multiprocessing_pools(items: int, actors: int) -> None:
    size, extra = divmod(items, 4 * actors)  # multiprocessing.Pool._map_async, written out
    if extra:
        size += 1
    assert default_chunksize(items, actors) == size


def test_the_default_chunksize_of_no_items_is_one() -> None:
    assert default_chunksize(0, 4) == 1  # (Pool picks 0; map returns [] before it asks anything)
    assert default_chunksize(3, 1) == 1 and default_chunksize(16, 1) == 4 and default_chunksize(17, 1) == 5


def test_named_notes_the_item_and_its_retries() -> None:
    error = named(ActorError("ValueError", "no"), 12, 0)
    assert error.__notes__ == ["(item 12 of the map)"]
    assert named(WorkerDied("gone"), 3, 2).__notes__ == ["(item 3 of the map, after 2 retries)"]


# -- answers in order, or as they come ------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 2, 5, 40])
@pytest.mark.parametrize("seed", range(4))
def test_ordered_answers_come_out_in_item_order_whatever_order_the_actors_answer(chunksize: int, seed: int) -> None:
    shuffle = random.Random(seed)
    fanout = Fanout(refs(3), iter(range(40)), chunksize=chunksize, window=2)
    runs = drive(fanout, serve(square), pick=lambda flying: shuffle.choice(flying))
    assert contiguous(runs)
    assert results(runs) == [n * n for n in range(40)]
    assert all(failure is None for _, _, failure in runs)


def test_unordered_answers_come_out_as_they_come_each_item_once() -> None:
    fanout = Fanout(refs(2), iter(range(30)), chunksize=3, window=2, ordered=False)
    runs = drive(fanout, serve(square), pick=lambda flying: flying[-1])  # the newest first
    assert not contiguous(runs)  # (not in item order: the test would not tell the modes apart otherwise)
    seen: list[int] = []
    for start, answers, failure in runs:
        assert failure is None
        assert answers == [n * n for n in range(start, start + len(answers))]
        seen += range(start, start + len(answers))
    assert sorted(seen) == list(range(30))


def test_ordered_holds_answers_back_until_their_turn() -> None:
    fanout = Fanout(refs(1), iter(range(4)), window=4)
    c0, c1, c2, c3 = fanout.take()
    fanout.settle(c2, True, 4)
    fanout.settle(c1, True, 1)
    assert fanout.runs() == [] and not fanout.finished
    fanout.settle(c0, True, 0)
    assert fanout.runs() == [(0, [0], None), (1, [1], None), (2, [4], None)]
    fanout.settle(c3, True, 9)
    assert fanout.runs() == [(3, [9], None)]
    assert fanout.finished and fanout.runs() == []


# -- pulled work -------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 2, 3])
def test_each_actor_has_at_most_window_chunks_in_flight(window: int) -> None:
    most: dict[int, int] = {}

    def watch(flying: list[Chunk]) -> None:
        for actor in range(3):
            count = sum(1 for chunk in flying if chunk.actor == actor)
            assert count <= window
            most[actor] = max(most.get(actor, 0), count)

    shuffle = random.Random(window)
    fanout = Fanout(refs(3), iter(range(50)), chunksize=2, window=window)
    runs = drive(fanout, serve(square), pick=lambda flying: shuffle.choice(flying), watch=watch)
    assert results(runs) == [n * n for n in range(50)]
    assert most == {0: window, 1: window, 2: window}  # the window was filled, not just respected


def test_a_slow_actor_gets_fewer_chunks() -> None:
    def fast_first(flying: list[Chunk]) -> Chunk:  # actor 0 answers only when actor 1 has nothing to answer
        return next((chunk for chunk in flying if chunk.actor == 1), flying[0])

    sent: list[Sent] = []
    fanout = Fanout(refs(2), iter(range(20)), window=2)
    runs = drive(fanout, serve(square), pick=fast_first, sent=sent)
    assert results(runs) == [n * n for n in range(20)]
    assert [s.actor for s in sent].count(0) == 2  # its first window, never refilled
    assert [s.actor for s in sent].count(1) == 18
    assert sorted(s.start for s in sent) == list(range(20))


# -- bounded --------------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize(("bound", "chunksize"), [(8, 1), (9, 3), (4, 4), (10, 3)])
def test_an_endless_stream_reads_at_most_bound_items_ahead_of_those_handed_out(
    ordered: bool, bound: int, chunksize: int,
) -> None:
    items, read = counting(itertools.count())
    handed = 0
    ahead: list[int] = []

    def until(runs: list[Run]) -> bool:
        nonlocal handed
        handed = sum(len(answers) for _, answers, _ in runs)
        return handed >= 300

    fanout = Fanout(refs(2), items, chunksize=chunksize, window=4, ordered=ordered, bound=bound)
    # The newest chunk answers first, so the oldest holds an ordered stream back and others pile up.
    runs = drive(fanout, serve(square), pick=lambda flying: flying[-1], until=until,
                 watch=lambda flying: ahead.append(read() - handed))
    assert max(ahead) <= bound + chunksize - 1  # a chunk is read whole once below the bound
    assert max(ahead) >= bound  # (the bound, not the windows, held reading back)
    assert read() - handed <= bound + chunksize - 1
    got = [(start + i, answer) for start, answers, _ in runs for i, answer in enumerate(answers)]
    assert len(got) >= 300 and all(answer == n * n for n, answer in got)
    assert len({n for n, _ in got}) == len(got)  # each item once
    if ordered:
        assert [n for n, _ in got] == list(range(len(got)))


def test_without_a_bound_the_windows_alone_limit_reading() -> None:
    items, read = counting(itertools.count())
    fanout = Fanout(refs(3), items, chunksize=5, window=2)
    assert len(fanout.take()) == 6 and read() == 30
    assert fanout.take() == [] and read() == 30


# -- a chunk answered in part, or with a failure ---------------------------------------------


def test_a_batch_answered_in_part_without_a_failure_asks_the_rest_again_not_as_a_retry() -> None:
    def stops_after_two(chunk: Chunk) -> Reply:  # the actor stops itself after two items of any chunk
        items = received(chunk)
        if chunk.kind == ASK:
            return True, square(items[0])
        return True, wire([square(n) for n in items[:2]])

    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(10)), chunksize=5, window=1, retries=3, retryable=lambda e: True)
    runs = drive(fanout, stops_after_two, sent=sent)
    assert results(runs) == [n * n for n in range(10)] and contiguous(runs)
    assert [(s.start, s.size, s.kind) for s in sent] == [
        (0, 5, BATCH), (2, 3, BATCH), (4, 1, ASK), (5, 5, BATCH), (7, 3, BATCH), (9, 1, ASK),
    ]
    assert all(s.tries == 0 for s in sent)  # stopping early is no failure: no retry counted


@pytest.mark.parametrize("ordered", [True, False])
def test_a_failure_in_a_batch_is_its_items_and_the_items_after_it_are_asked_again(ordered: bool) -> None:
    def fn(n: int) -> int:
        if n == 5:
            raise ValueError(f"no {n}")
        return n * n

    sent: list[Sent] = []
    fanout = Fanout(refs(2), iter(range(12)), chunksize=4, window=1, retries=3, retryable=deaths,
                    return_exceptions=True, ordered=ordered)
    runs = drive(fanout, serve(fn), sent=sent)
    by_item = {start + i: value for start, answers, failure in runs
               for i, value in enumerate([*answers, *([failure] if failure else [])])}
    assert sorted(by_item) == list(range(12))
    error = by_item.pop(5)
    assert type(error) is ActorError and error.remote_type == "ValueError" and error.remote_message == "no 5"
    assert error.__notes__ == ["(item 5 of the map)"]
    assert by_item == {n: n * n for n in range(12) if n != 5}
    assert [(s.start, s.size) for s in sent if s.start in (4, 5, 6)] == [(4, 4), (6, 2)]  # 5 is not asked again
    assert all(s.tries == 0 for s in sent)
    if ordered:
        assert contiguous(runs) and results(runs)[5] is error


def test_a_failure_ends_an_ordered_map_in_its_turn_reads_no_more_and_drains_what_is_in_flight() -> None:
    items, read = counting(iter(range(100)))
    fanout = Fanout(refs(2), items, chunksize=2, window=2)
    c0, c1, c2, c3 = fanout.take()
    assert [c.start for c in (c0, c1, c2, c3)] == [0, 2, 4, 6] and read() == 8
    fanout.settle(c1, True, wire([4], crash(ValueError("three"))))  # item 3 fails
    assert fanout.runs() == []  # (item 0 first)
    assert fanout.take() == [] and read() == 8  # an actor has room, but no item is read after a failure
    fanout.settle(c2, True, wire([16, 25]))
    runs = fanout.runs()
    assert runs == [] and not fanout.ended
    fanout.settle(c0, True, wire([0, 1]))
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(0, [0, 1]), (2, [4])]
    failure = runs[-1][2]
    assert isinstance(failure, ActorError) and failure.__notes__ == ["(item 3 of the map)"]
    assert fanout.ended  # items 4 and 5 answered, but after the failure: never handed out
    assert fanout.take() == [] and fanout.in_flight == 1 and not fanout.finished
    fanout.settle(c3, True, wire([36, 49]))  # drained
    assert fanout.runs() == [] and fanout.finished and fanout.in_flight == 0 and read() == 8


def test_the_items_after_a_failure_in_its_chunk_are_not_asked_again_without_return_exceptions() -> None:
    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=2)
    [chunk] = fanout.take()
    fanout.settle(chunk, True, wire([0], crash(ValueError("one"))))
    [(start, answers, failure)] = fanout.runs()
    assert (start, answers) == (0, [0]) and failure is not None and "(item 1 of the map)" in failure.__notes__
    assert fanout.ended and fanout.take() == [] and fanout.finished


def test_a_failure_ends_an_unordered_stream_at_once_with_what_came_before() -> None:
    fanout = Fanout(refs(1), iter(range(10)), window=3, ordered=False)
    c0, c1, c2 = fanout.take()
    fanout.settle(c1, True, 1)
    fanout.settle(c2, False, crash(ValueError("two")))
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(1, [1]), (2, [])]
    assert isinstance(runs[1][2], ActorError) and runs[1][2].__notes__ == ["(item 2 of the map)"]
    assert fanout.ended and fanout.take() == []
    fanout.settle(c0, True, 0)
    assert fanout.runs() == [] and fanout.finished


def test_with_return_exceptions_every_failure_sits_in_its_place_and_the_map_goes_on() -> None:
    def fn(n: int) -> int:
        if n % 4 == 1:
            raise KeyError(n)
        return -n

    fanout = Fanout(refs(3), iter(range(20)), chunksize=3, window=2, return_exceptions=True)
    runs = drive(fanout, serve(fn), pick=lambda flying: flying[-1])
    out = results(runs)
    assert len(out) == 20 and contiguous(runs) and not fanout.ended
    for n, value in enumerate(out):
        if n % 4 == 1:
            assert isinstance(value, ActorError) and value.remote_type == "KeyError"
            assert value.__notes__ == [f"(item {n} of the map)"]
        else:
            assert value == -n


# -- parts -------------------------------------------------------------------------------------


def test_a_part_hands_out_its_answers_and_moves_the_chunk_on_the_reply_covers_the_rest() -> None:
    fanout = Fanout(refs(1), iter(range(6)), chunksize=6, window=1)
    [chunk] = fanout.take()
    payload = chunk.payload
    fanout.settle_part(chunk, [0, 1])
    assert fanout.runs() == [(0, [0, 1], None)]
    assert (chunk.start, chunk.items, chunk.progressed) == (2, [2, 3, 4, 5], True)
    assert chunk.payload == payload  # (the ask stays open: nothing is sent again)
    fanout.settle_part(chunk, [4])
    assert fanout.runs() == [(2, [4], None)] and chunk.start == 3
    fanout.settle(chunk, True, wire([9, 16, 25]))
    assert fanout.runs() == [(3, [9, 16, 25], None)]
    assert fanout.take() == [] and fanout.finished


def test_a_part_then_a_failing_reply_names_the_item_after_the_parts() -> None:
    fanout = Fanout(refs(1), iter(range(5)), chunksize=5, window=1, return_exceptions=True)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, ["a", "b"])
    fanout.settle(chunk, True, wire(["c"], crash(ValueError("d"))))
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(0, ["a", "b"]), (2, ["c"])]
    assert runs[1][2] is not None and runs[1][2].__notes__ == ["(item 3 of the map)"]
    [rest] = fanout.take()
    assert (rest.start, rest.items, rest.kind, rest.tries) == (4, [4], ASK, 0)


@pytest.mark.parametrize("part", ["x", None, [], (0, 1), {"a": 1}, [0, 1, 4, 9, 16], [0] * 9],
                         ids=["str", "None", "empty", "tuple", "dict", "all of them", "more than all"])
def test_a_malformed_part_loses_the_chunk_and_its_items_are_asked_again_in_halves(part: Any) -> None:
    fanout = Fanout(refs(1), iter(range(5)), chunksize=5, window=2)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, part)
    assert fanout.runs() == [] and chunk.lost
    assert (chunk.start, chunk.items, chunk.progressed) == (0, [0, 1, 2, 3, 4], False)
    fanout.settle_part(chunk, [0, 1])  # a good part after a bad one: whose answers? ignored
    assert fanout.runs() == [] and chunk.start == 0
    fanout.settle(chunk, True, wire([0, 1]))  # nor can the reply be placed: ignored, the items go again
    assert fanout.runs() == []
    first, second = fanout.take()
    assert [(c.start, c.items, c.kind, c.tries) for c in (first, second)] == [
        (0, [0, 1], BATCH, 0), (2, [2, 3, 4], BATCH, 0)]
    assert not first.lost and not second.lost
    fanout.settle(second, True, wire([4, 9, 16]))
    fanout.settle(first, True, wire([0, 1]))
    assert fanout.runs() == [(0, [0, 1], None), (2, [4, 9, 16], None)] and fanout.finished


def test_decode_part_takes_a_list_of_fewer_answers_than_the_items_left() -> None:
    assert decode_part([1, 2], 3) == [1, 2]
    assert decode_part([None], 2) == [None]
    for bad, size in [([], 3), ([1, 2, 3], 3), ([1, 2, 3, 4], 3), ((1,), 3), ("ab", 3), (None, 3), ([1], 1)]:
        with pytest.raises(DecodeError, match=f"with {size} items unanswered"):
            decode_part(bad, size)
    assert codec.decode(encode_part([1, (2,), "3"]), ANSWER_LEVELS) == [1, (2,), "3"]
    assert Part([1]).answers == [1]


def test_parts_and_answers_after_the_end_change_nothing() -> None:
    fanout = Fanout(refs(1), iter(range(6)), chunksize=3, window=2)
    first, second = fanout.take()
    fanout.settle(first, False, crash(ValueError("x")))
    assert len(fanout.runs()) == 1 and fanout.ended
    fanout.settle_part(second, [9])
    assert (second.start, second.progressed) == (3, False)
    fanout.settle(second, True, wire([9, 16, 25]))
    assert fanout.runs() == [] and fanout.finished and fanout.take() == []


# -- deaths and retries -------------------------------------------------------------------------


def test_a_death_of_the_running_chunk_is_retried_up_to_retries_times() -> None:
    visits: dict[int, int] = {}

    def dies_thrice_on_2(n: int) -> int:
        visits[n] = visits.get(n, 0) + 1
        if n == 2 and visits[n] <= 3:
            raise Died
        return n * n

    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(5)), window=1, retries=3, retryable=deaths)
    runs = drive(fanout, serve(dies_thrice_on_2), sent=sent)
    assert results(runs) == [0, 1, 4, 9, 16] and contiguous(runs)
    assert [s.tries for s in sent if s.start == 2] == [0, 1, 2, 3]
    assert [s.start for s in sent] == [0, 1, 2, 2, 2, 2, 3, 4]  # asked again first in line


@pytest.mark.parametrize("return_exceptions", [False, True])
def test_a_poison_chunk_ends_the_map_with_its_death_after_the_retries(return_exceptions: bool) -> None:
    def poison(n: int) -> int:
        if n == 2:
            raise Died
        return n * n

    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(5)), window=1, retries=3, retryable=deaths,
                    return_exceptions=return_exceptions)
    runs = drive(fanout, serve(poison), sent=sent)
    assert [s.tries for s in sent if s.start == 2] == [0, 1, 2, 3]
    failure = results(runs)[2]
    assert type(failure) is WorkerDied and failure.__notes__ == ["(item 2 of the map, after 3 retries)"]
    if return_exceptions:
        assert results(runs) == [0, 1, failure, 9, 16] and not fanout.ended
    else:
        assert results(runs) == [0, 1, failure] and fanout.ended
        assert [s.start for s in sent] == [0, 1, 2, 2, 2, 2]  # nothing read after it


@pytest.mark.parametrize("death", [WorkerDied])  # (NodeDown retires the node: see below)
@pytest.mark.parametrize("notices", ["in sent order", "newest first"])
def test_the_chunks_queued_behind_the_running_one_are_retried_free(
    death: type[GorilixError], notices: str,
) -> None:
    fanout = Fanout(refs(1), iter(range(3)), window=3, retries=3, retryable=deaths)
    charged = {0: 0, 1: 0, 2: 0}
    for _ in range(3):
        chunks = fanout.take()  # in sent order: the actor runs the first, the others wait behind it
        assert sorted(c.start for c in chunks) == [0, 1, 2]
        charged[chunks[0].start] += 1
        for chunk in chunks if notices == "in sent order" else chunks[::-1]:
            fanout.settle(chunk, False, death("the worker died"))
        assert fanout.runs() == []
        assert {c.start: c.tries for c in chunks} == charged  # only the running one is charged
    assert charged == ({0: 3, 1: 0, 2: 0} if notices == "in sent order" else {0: 2, 1: 0, 2: 1})
    chunks = fanout.take()
    if notices == "in sent order":  # the fourth death of item 0 ends the map
        fanout.settle(chunks[0], False, death("the worker died"))
        [(start, answers, failure)] = fanout.runs()
        assert (start, answers, type(failure)) == (0, [], death)
        assert failure is not None and failure.__notes__ == ["(item 0 of the map, after 3 retries)"]
        assert fanout.ended
    else:
        for chunk in chunks:
            fanout.settle(chunk, True, chunk.start)
        assert results(fanout.runs()) == [0, 1, 2] and fanout.finished


def test_a_batch_whose_whole_ask_fails_charges_its_first_item_and_asks_the_rest_again() -> None:
    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=1, retries=3, retryable=deaths,
                    return_exceptions=True)
    [chunk] = fanout.take()
    fanout.settle(chunk, False, ActorNotFound("no actor at that address"))
    [(start, answers, failure)] = fanout.runs()
    assert (start, answers, type(failure)) == (0, [], ActorNotFound)
    assert failure is not None and failure.__notes__ == ["(item 0 of the map)"]
    [rest] = fanout.take()
    assert (rest.start, rest.items, rest.kind, rest.tries) == (1, [1, 2], BATCH, 0)


def test_a_chunk_is_running_once_those_before_it_answered() -> None:
    fanout = Fanout(refs(1), iter(range(2)), window=2, retries=3, retryable=deaths)
    first, second = fanout.take()
    fanout.settle(first, True, 0)
    fanout.settle(second, False, WorkerDied("the worker died"))
    [again] = fanout.take()
    assert again is second and again.tries == 1  # it was the oldest in flight: it ran, and is charged


def test_a_chunk_sent_after_a_death_runs_on_the_new_worker_and_is_charged_for_its_own() -> None:
    fanout = Fanout(refs(1), iter(range(3)), window=2, retries=3, retryable=deaths)
    c0, c1 = fanout.take()
    fanout.settle(c0, False, WorkerDied("the worker died"))  # c1 was queued behind it
    fanout.settle(c1, False, WorkerDied("the worker died"))
    assert (c0.tries, c1.tries) == (1, 0)
    assert fanout.take() == [c0, c1]
    fanout.settle(c0, True, 0)
    fanout.settle(c1, False, WorkerDied("the new worker died"))  # c1 ran this time
    [again, c2] = fanout.take()
    assert again is c1 and c1.tries == 1 and c2.start == 2


def test_a_part_resets_the_retries_of_a_chunk() -> None:
    # A chunk is charged while its first item fails (a retryable crash); a part moves it on to new items,
    # and the death after the part charges the item left from zero, not the chunk's old count.
    flaky = qualified_name(Flaky)

    def retryable(error: BaseException) -> bool:
        return deaths(error) or isinstance(error, ActorError) and error.remote_type == flaky

    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=1, retries=2, retryable=retryable)
    [chunk] = fanout.take()
    for tries in (1, 2):
        fanout.settle(chunk, True, wire([], crash(Flaky("not yet"))))
        assert fanout.take() == [chunk] and chunk.tries == tries
    assert chunk.tries == 2  # one more failure of item 0 would end the map
    fanout.settle_part(chunk, [0, 1])
    assert fanout.runs() == [(0, [0, 1], None)]
    fanout.settle(chunk, False, WorkerDied("the worker died"))  # item 2 alone was caught: it is charged once
    assert fanout.runs() == []
    [again] = fanout.take()
    assert (again.start, again.items, again.kind, again.tries) == (2, [2], ASK, 1)
    assert received(again) == [2]  # a new payload, without the items answered
    fanout.settle(again, False, WorkerDied("the worker died"))
    [again] = fanout.take()
    assert again.tries == 2
    fanout.settle(again, True, 4)
    assert fanout.runs() == [(2, [4], None)] and fanout.finished


def test_a_death_after_a_part_halves_what_is_left_of_the_chunk_free() -> None:
    fanout = Fanout(refs(1), iter(range(8)), chunksize=8, window=1, retries=1, retryable=deaths)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, [0, 1, 4])
    fanout.settle(chunk, False, WorkerDied("the worker died"))
    assert fanout.runs() == [(0, [0, 1, 4], None)]
    [left] = fanout.take()
    assert (left.start, left.items, left.tries) == (3, [3, 4], 0)
    fanout.settle(left, True, wire([9, 16]))
    [right] = fanout.take()
    assert (right.start, right.items, right.tries) == (5, [5, 6, 7], 0)
    fanout.settle(right, True, wire([25, 36, 49]))
    assert results(fanout.runs()) == [9, 16, 25, 36, 49] and fanout.finished


def test_no_retry_at_all_with_retries_zero() -> None:
    fanout = Fanout(refs(1), iter(range(2)), window=2, retries=0, retryable=lambda error: True,
                    return_exceptions=True)
    first, second = fanout.take()
    fanout.settle(first, False, WorkerDied("the worker died"))
    fanout.settle(second, False, WorkerDied("the worker died"))  # queued: still no free retry
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(0, []), (1, [])]
    assert [run[2].__notes__ for run in runs if run[2]] == [["(item 0 of the map)"], ["(item 1 of the map)"]]
    assert fanout.take() == [] and fanout.finished


def test_an_actor_error_is_not_retried() -> None:
    visits: list[int] = []

    def fn(n: int) -> int:
        visits.append(n)
        if n in (1, 6):
            raise ValueError(n)
        return n

    for chunksize in (1, 4):
        visits.clear()
        fanout = Fanout(refs(1), iter(range(8)), chunksize=chunksize, window=1, retries=3, retryable=deaths,
                        return_exceptions=True)
        out = results(drive(fanout, serve(fn)))
        assert sorted(visits) == list(range(8))  # each item ran once
        assert [type(v) for v in out] == [int, ActorError, int, int, int, int, ActorError, int]
        assert out[6].__notes__ == ["(item 6 of the map)"]


def test_retryable_decides_for_a_failure_inside_a_batch_answer() -> None:
    visits: dict[int, int] = {}

    def fn(n: int) -> int:
        visits[n] = visits.get(n, 0) + 1
        if n == 5 and visits[n] <= 2:
            raise Flaky("not yet")
        if n == 9:
            raise ValueError("never")
        return n * n

    flaky = qualified_name(Flaky)

    def retryable(error: BaseException) -> bool:
        return deaths(error) or isinstance(error, ActorError) and error.remote_type == flaky

    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(12)), chunksize=4, window=1, retries=3, retryable=retryable,
                    return_exceptions=True)
    out = results(drive(fanout, serve(fn), sent=sent))
    assert out[:9] == [n * n for n in range(9)] and out[10:] == [100, 121]
    assert isinstance(out[9], ActorError) and out[9].remote_type == "ValueError"
    assert out[9].__notes__ == ["(item 9 of the map)"]  # not retried: the callback said no
    assert [(s.start, s.size, s.tries) for s in sent if 4 <= s.start < 8] == [(4, 4, 0), (5, 3, 1), (5, 3, 2)]
    assert visits[5] == 3 and visits[4] == 1 and visits[9] == 1


def test_a_failure_retryable_inside_a_batch_ends_after_the_retries() -> None:
    def fn(n: int) -> int:
        if n == 2:
            raise Flaky("never")
        return n

    flaky = qualified_name(Flaky)
    fanout = Fanout(refs(1), iter(range(4)), chunksize=4, window=1, retries=2,
                    retryable=lambda error: isinstance(error, ActorError) and error.remote_type == flaky)
    runs = drive(fanout, serve(fn))
    assert results(runs)[:2] == [0, 1] and len(results(runs)) == 3 and fanout.ended
    failure = results(runs)[2]
    assert isinstance(failure, ActorError) and failure.__notes__ == ["(item 2 of the map, after 2 retries)"]


def test_an_item_queued_behind_a_chunk_out_of_retries_is_not_charged_for_its_death() -> None:
    # Item 0 kills its worker every time; item 1 kills it once (a transient death), then answers.
    # With retries=1 item 1 may be caught in one death of its own and still answer.
    fanout = Fanout(refs(1), iter(range(2)), window=2, retries=1, retryable=deaths, return_exceptions=True)
    for _ in range(2):  # item 0 runs and kills the worker; item 1, queued behind it, fails with it unrun
        poison, queued = fanout.take()
        assert (poison.start, queued.start) == (0, 1)
        fanout.settle(poison, False, WorkerDied("the worker died"))
        fanout.settle(queued, False, WorkerDied("the worker died"))
    [item1] = fanout.take()  # item 1 alone now: it runs, and kills its worker once
    fanout.settle(item1, False, WorkerDied("the worker died"))
    again = fanout.take()
    if again:
        fanout.settle(again[0], True, "one")
    out = results(fanout.runs())
    assert type(out[0]) is WorkerDied and out[0].__notes__ == ["(item 0 of the map, after 1 retries)"]
    assert out[1] == "one"


def test_the_item_that_kills_its_worker_inside_a_chunk_is_the_one_that_fails() -> None:
    def poison(n: int) -> int:
        if n == 1:
            raise Died  # (no part: the chunk is halved, free, until item 1 is alone)
        return n * n

    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=1, retries=3, retryable=deaths,
                    return_exceptions=True)
    out = results(drive(fanout, serve(poison)))
    assert out[0] == 0 and out[2] == 4
    assert type(out[1]) is WorkerDied and out[1].__notes__ == ["(item 1 of the map, after 3 retries)"]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("ordered", [True, False])
def test_through_deaths_parts_and_early_stops_every_item_is_answered_once(seed: int, ordered: bool) -> None:
    rng = random.Random(seed)
    count = rng.randrange(1, 60)
    fanout = Fanout(refs(3), iter(range(count)), chunksize=rng.randrange(1, 6), window=rng.randrange(1, 4),
                    retries=10_000, retryable=deaths, ordered=ordered, bound=rng.choice([None, 7, 20]))
    flying: list[Chunk] = []
    out: list[Run] = []
    for _ in range(50_000):
        for chunk in fanout.take():
            assert received(chunk) == list(range(chunk.start, chunk.start + len(chunk.items)))
            flying.append(chunk)
        runs = fanout.runs()
        if runs:  # (handing out makes room under the bound: take again first, as fan_out does)
            out += runs
            continue
        if not flying:
            break
        actor = rng.choice(sorted({chunk.actor for chunk in flying}))
        mine = [chunk for chunk in flying if chunk.actor == actor]
        running = mine[0]
        left = list(range(running.start, running.start + len(running.items)))
        roll = rng.random()
        if roll < 0.15:  # the worker dies: every ask in flight to it fails, in sent order
            for chunk in mine:
                flying.remove(chunk)
                fanout.settle(chunk, False, WorkerDied("the worker died"))
        elif roll < 0.35 and running.kind == BATCH and len(left) > 1:
            fanout.settle_part(running, [-n for n in left[:rng.randrange(1, len(left))]])
        else:
            flying.remove(running)
            if running.kind == ASK:
                fanout.settle(running, True, -left[0])
            else:  # all its items, or the actor stopped itself after some
                answered = left if roll < 0.8 else left[:rng.randrange(1, len(left) + 1)]
                fanout.settle(running, True, wire([-n for n in answered]))
    else:
        raise AssertionError("the fan-out did not end")
    assert fanout.finished and fanout.in_flight == 0
    handed = [(start + i, answer) for start, answers, failure in out for i, answer in enumerate(answers)]
    assert all(failure is None for _, _, failure in out)
    assert sorted(handed) == [(n, -n) for n in range(count)]
    if ordered:
        assert contiguous(out)


# -- malformed answers ----------------------------------------------------------------------------

RECORD = error_to_wire(ActorError("ValueError", "bad", "tb", "actor 3"))

MALFORMED: dict[str, Any] = {
    "not a list": "three answers",
    "None": None,
    "a dict": {"answers": [1, 2, 3]},
    "a tuple": ([1, 2, 3], None),
    "one element": [[1, 2, 3]],
    "three elements": [[1, 2, 3], None, None],
    "answers not a list": [(1, 2, 3), None],
    "answers a str": ["abc", None],
    "more answers than items": [[1, 2, 3, 4], None],
    "a failure after the last item": [[1, 2, 3], RECORD],
    "neither answers nor a failure": [[], None],
}


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
def test_decode_answer_refuses_a_malformed_answer(value: Any) -> None:
    with pytest.raises(DecodeError, match="malformed answer to a batch of 3 items"):
        decode_answer(value, 3)


def test_decode_answer_reads_answers_and_a_failure() -> None:
    assert decode_answer([[1, 2, 3], None], 3) == ([1, 2, 3], None)
    assert decode_answer([[1], None], 3) == ([1], None)
    answers, failure = decode_answer([[1, 2], RECORD], 3)
    assert answers == [1, 2] and type(failure) is ActorError
    assert (failure.remote_type, failure.remote_message, failure.remote_traceback, failure.actor) == (
        "ValueError", "bad", "tb", "actor 3")
    assert decode_answer([[], error_to_wire(WorkerDied("gone"))], 1)[1].__class__ is WorkerDied
    answers, failure = decode_answer([[7], ["not", "a", "record"]], 2)
    assert answers == [7] and type(failure) is DecodeError and "malformed error record" in str(failure)


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_answer_is_neither_a_crash_nor_a_hang_and_its_items_are_asked_again_in_halves(
    value: Any,
) -> None:
    fanout = Fanout(refs(1), iter(range(4)), chunksize=3, window=1, retries=3, retryable=deaths,
                    return_exceptions=True)
    [garbled] = fanout.take()
    assert garbled.items == [0, 1, 2]
    fanout.settle(garbled, True, value)
    assert fanout.runs() == []  # no item can be blamed: none fails
    sent: list[Sent] = []
    runs = drive(fanout, serve(square), sent=sent)  # the rest, answered properly
    assert results(runs) == [0, 1, 4, 9] and contiguous(runs)
    assert [(s.start, s.size, s.kind, s.tries) for s in sent] == [
        (0, 1, ASK, 0), (1, 2, BATCH, 0), (3, 1, ASK, 0)]  # halves, free, before any new item


def test_a_malformed_answer_does_not_end_a_map_but_an_unreadable_single_answer_does() -> None:
    fanout = Fanout(refs(1), iter(range(6)), chunksize=3, window=2)
    first, second = fanout.take()
    fanout.settle(first, True, wire([0]))  # the actor stopped after one item: 1 and 2 go again
    fanout.settle(second, True, [[9, 16, 25, 36], None])  # more answers than items: 3..5 go again, in halves
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(0, [0])]
    assert not fanout.ended
    rest, three = fanout.take()
    assert [(c.start, c.items, c.kind) for c in (rest, three)] == [(1, [1, 2], BATCH), (3, [3], ASK)]
    fanout.settle(rest, True, wire([1, 4]))
    fanout.settle(three, False, DecodeError("the answer cannot be read"))  # a plain ask's: its own failure
    runs = fanout.runs()
    assert [(start, answers) for start, answers, _ in runs] == [(1, [1, 4]), (3, [])]
    assert type(runs[-1][2]) is DecodeError and runs[-1][2].__notes__ == ["(item 3 of the map)"]
    assert fanout.ended and fanout.take() == [] and fanout.finished  # (4 and 5: after the failure, never asked)


# -- encode_answer, and depth ------------------------------------------------------------------------


def test_an_answer_that_cannot_travel_fails_its_item_and_keeps_the_answers_before_it() -> None:
    answers, failure = decode_answer(wire([1, "two", object(), 4]), 4)
    assert answers == [1, "two"]
    assert type(failure) is SerializationError and "the answer cannot be sent" in str(failure)
    # The item that crashed came after the bad answer: the bad answer's item is the one that fails.
    answers, failure = decode_answer(wire([1, object()], crash(ValueError("third"))), 3)
    assert answers == [1] and type(failure) is SerializationError
    answers, failure = decode_answer(wire([object()]), 3)
    assert answers == [] and type(failure) is SerializationError


def test_an_answer_that_cannot_travel_is_its_items_failure_in_the_map() -> None:
    def fn(n: int) -> Any:
        return object() if n in (2, 5) else n * n

    for chunksize in (1, 4):
        fanout = Fanout(refs(2), iter(range(8)), chunksize=chunksize, window=2, return_exceptions=True)
        out = results(drive(fanout, serve(fn)))
        assert [v for n, v in enumerate(out) if n not in (2, 5)] == [0, 1, 9, 16, 36, 49]
        for n in (2, 5):
            assert type(out[n]) is SerializationError and out[n].__notes__ == [f"(item {n} of the map)"]


def test_items_and_answers_as_deep_as_the_codec_allows_travel_in_a_chunk() -> None:
    deepest = nest(codec.MAX_DEPTH)
    assert codec.decode(codec.encode(deepest)) == deepest
    with pytest.raises(SerializationError):
        codec.encode([deepest])  # (one more level does not travel alone)
    assert REQUEST_LEVELS == codec.MAX_DEPTH + 1 and ANSWER_LEVELS == codec.MAX_DEPTH + 2
    items = [deepest, 1, deepest]
    assert decode_request(encode_request(items)).items == items
    assert decode_answer(wire(items), 3) == (items, None)
    answers, failure = decode_answer(wire([deepest], crash(ValueError("x"))), 2)
    assert answers == [deepest] and type(failure) is ActorError
    assert codec.decode(encode_part([deepest, deepest]), ANSWER_LEVELS) == [deepest, deepest]
    fanout = Fanout(refs(2), iter(items * 3), chunksize=3, window=2)
    chunks = fanout.take()
    assert [c.kind for c in chunks] == [BATCH, BATCH, BATCH]
    for chunk in chunks[::-1]:
        fanout.settle(chunk, True, wire(received(chunk)))
    assert results(fanout.runs()) == items * 3 and fanout.finished
    alone = Fanout(refs(2), iter([deepest] * 5), chunksize=2, window=2)  # (the last chunk, of one, is an ask)
    assert results(drive(alone, serve(lambda item: item), pick=lambda flying: flying[-1])) == [deepest] * 5


def test_a_part_refuses_an_answer_too_deep_to_travel_alone_as_a_reply_does() -> None:
    assert PART_LEVELS == codec.MAX_DEPTH + 1
    too_deep = nest(codec.MAX_DEPTH + 1)
    with pytest.raises(SerializationError):
        codec.encode(too_deep)
    answers, failure = decode_answer(wire([1, too_deep]), 3)  # in a reply: its item fails
    assert answers == [1] and type(failure) is SerializationError
    with pytest.raises(SerializationError):  # in a part: the worker would fall back to the reply above
        encode_part([1, too_deep])


def test_decode_request_refuses_anything_but_a_non_empty_list() -> None:
    refused: list[Any] = [[], (1, 2), "ab", 3, None, {"a": 1}]
    for value in refused:
        with pytest.raises(DecodeError, match="non-empty list of items"):
            decode_request(codec.encode(value, REQUEST_LEVELS))
    with pytest.raises(DecodeError):
        decode_request(b"\xc1")  # (not msgpack)
    with pytest.raises(SerializationError):
        encode_request([nest(codec.MAX_DEPTH + 1)])


# -- narrowing down: halves --------------------------------------------------------------------------


@pytest.mark.parametrize("death", [WorkerDied])  # (NodeDown retires the node: see below)
def test_a_death_of_a_running_chunk_of_several_items_asks_it_again_as_two_halves_free(
    death: type[GorilixError],
) -> None:
    fanout = Fanout(refs(1), iter(range(10)), chunksize=7, window=2, retries=1, retryable=deaths)
    running, queued = fanout.take()
    assert (running.items, queued.items) == (list(range(7)), [7, 8, 9])
    fanout.settle(running, False, death("the worker died"))
    assert queued.queued and fanout.runs() == []  # behind it at its death: its own death is free
    fanout.settle(queued, False, death("the worker died"))
    assert fanout.runs() == []
    sent = fanout.take()
    assert [(c.start, c.items, c.kind, c.tries) for c in sent] == [
        (0, [0, 1, 2], BATCH, 0), (3, [3, 4, 5, 6], BATCH, 0)]
    fanout.settle(sent[0], False, death("the worker died"))  # again: the running half halves
    fanout.settle(sent[1], False, death("the worker died"))
    after = fanout.take()
    assert [(c.start, c.items, c.tries) for c in after] == [(7, [7, 8, 9], 0), (0, [0], 0)]
    assert after[0] is queued and not queued.queued
    fanout.settle(after[0], True, wire([49, 64, 81]))
    fanout.settle(after[1], True, 0)
    sent: list[Sent] = []
    runs = drive(fanout, serve(square), sent=sent)
    assert [(s.start, s.size, s.tries) for s in sent] == [(1, 2, 0), (3, 4, 0)]  # the rest of the halves
    assert results(runs) == [n * n for n in range(10)] and contiguous(runs)


def test_the_item_that_kills_its_worker_is_narrowed_down_by_exact_free_halves() -> None:
    def poison(n: int) -> int:
        if n == 5:
            raise Died
        return n * n

    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(8)), chunksize=8, window=1, retries=2, retryable=deaths,
                    return_exceptions=True)
    out = results(drive(fanout, serve(poison), sent=sent))
    assert [(s.start, s.size, s.tries) for s in sent] == [
        (0, 8, 0),  # dies: halves
        (0, 4, 0), (4, 4, 0),  # the second dies: halves
        (4, 2, 0), (6, 2, 0),  # the first dies: halves, behind (6, 2)
        (4, 1, 0), (5, 1, 0),  # item 5 alone, charged from here
        (5, 1, 1), (5, 1, 2),
    ]
    assert out[:5] == [0, 1, 4, 9, 16] and out[6:] == [36, 49]
    assert type(out[5]) is WorkerDied and out[5].__notes__ == ["(item 5 of the map, after 2 retries)"]


def test_with_retries_zero_a_death_fails_the_map_at_once_whatever_the_chunk() -> None:
    sent: list[Sent] = []
    fanout = Fanout(refs(1), iter(range(6)), chunksize=3, window=1, retries=0, retryable=deaths)
    runs = drive(fanout, serve(lambda n: (_ for _ in ()).throw(Died()) if n == 1 else n), sent=sent)
    assert [(s.start, s.size) for s in sent] == [(0, 3)]  # no halves: nothing is retried
    [(start, answers, failure)] = runs
    assert (start, answers, type(failure)) == (0, [], WorkerDied) and fanout.ended
    assert failure is not None and failure.__notes__ == ["(item 0 of the map)"]


def test_an_unreadable_failure_record_keeps_the_answers_before_it_and_halves_the_rest() -> None:
    fanout = Fanout(refs(1), iter(range(5)), chunksize=5, window=2, return_exceptions=True)
    [chunk] = fanout.take()
    fanout.settle(chunk, True, [[0, 1], ["not", "a", "record"]])
    assert fanout.runs() == [(0, [0, 1], None)]
    left, right = fanout.take()
    assert [(c.start, c.items, c.kind, c.tries) for c in (left, right)] == [
        (2, [2], ASK, 0), (3, [3, 4], BATCH, 0)]
    fanout.settle(left, True, 4)
    fanout.settle(right, True, wire([9, 16]))
    assert results(fanout.runs()) == [4, 9, 16] and fanout.finished


def test_a_batch_answer_the_client_cannot_parse_halves_the_chunk_a_plain_asks_is_its_own() -> None:
    fanout = Fanout(refs(1), iter(range(5)), chunksize=5, window=2, return_exceptions=True)
    [chunk] = fanout.take()
    fanout.settle(chunk, False, DecodeError("the reply cannot be decoded"))
    assert fanout.runs() == []
    left, right = fanout.take()
    assert [(c.start, c.items, c.tries) for c in (left, right)] == [(0, [0, 1], 0), (2, [2, 3, 4], 0)]
    fanout.settle(left, False, DecodeError("the reply cannot be decoded"))
    fanout.settle(right, True, wire([4, 9, 16]))
    zero, one = fanout.take()
    assert [(c.start, c.kind) for c in (zero, one)] == [(0, ASK), (1, ASK)]
    fanout.settle(zero, False, DecodeError("the reply cannot be decoded"))
    fanout.settle(one, True, 1)
    out = results(fanout.runs())
    assert out[1:] == [1, 4, 9, 16] and fanout.finished
    assert type(out[0]) is DecodeError and out[0].__notes__ == ["(item 0 of the map)"]


@pytest.mark.parametrize("how", ["malformed value", "error"])
@pytest.mark.parametrize("end", ["a reply", "a death", "a crash"])
def test_a_lost_chunk_asks_its_items_after_the_last_good_part_again_in_halves(how: str, end: str) -> None:
    fanout = Fanout(refs(1), iter(range(9)), chunksize=9, window=1, retries=1, retryable=deaths,
                    return_exceptions=True)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, [0, 1])
    assert fanout.runs() == [(0, [0, 1], None)]
    if how == "error":
        fanout.settle_part(chunk, None, DecodeError("the part cannot be read"))
    else:
        fanout.settle_part(chunk, {"not": "a part"})
    assert chunk.lost and (chunk.start, chunk.items) == (2, list(range(2, 9)))
    fanout.settle_part(chunk, [4, 9])  # ignored
    assert fanout.runs() == [] and chunk.start == 2
    if end == "a reply":
        fanout.settle(chunk, True, wire([16, 25, 36]))
    elif end == "a death":
        fanout.settle(chunk, False, WorkerDied("the worker died"))
    else:
        fanout.settle(chunk, True, wire([16], crash(ValueError("x"))))
    assert fanout.runs() == []
    sent: list[Sent] = []
    runs = drive(fanout, serve(square), sent=sent)
    assert [(s.start, s.size, s.tries) for s in sent] == [(2, 3, 0), (5, 4, 0)]
    assert runs == [(2, [4, 9, 16], None), (5, [25, 36, 49, 64], None)]  # item 0 and 1 not again


def test_a_chunk_with_one_item_left_that_loses_a_part_asks_it_again_alone() -> None:
    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=1)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, [0, 1])
    fanout.settle_part(chunk, [4])  # all that is left: not a part
    assert chunk.lost
    fanout.settle(chunk, True, wire([4]))
    [again] = fanout.take()
    assert (again.start, again.items, again.kind, again.tries) == (2, [2], ASK, 0)
    fanout.settle(again, True, 4)
    assert results(fanout.runs()) == [0, 1, 4] and fanout.finished


# -- termination ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_an_actor_that_garbles_every_batch_answer_still_answers_every_item_through_single_asks(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randrange(1, 50)
    garbage = rng.choice([value for key, value in MALFORMED.items()  # (malformed whatever the chunk's size)
                          if key not in ("more answers than items", "a failure after the last item")])

    def garbling(chunk: Chunk) -> Reply:
        if chunk.kind == BATCH:
            return True, garbage
        return serve(square)(chunk)

    sent: list[Sent] = []
    fanout = Fanout(refs(rng.randrange(1, 4)), iter(range(count)), chunksize=rng.randrange(1, 9),
                    window=rng.randrange(1, 4), ordered=rng.random() < 0.5)
    runs = drive(fanout, garbling, sent=sent, pick=lambda flying: rng.choice(flying))
    assert sorted(results(runs)) == [n * n for n in range(count)]
    assert all(failure is None for _, _, failure in runs)
    assert sorted(s.start for s in sent if s.kind == ASK) == list(range(count))  # each item once, alone
    assert all(s.tries == 0 for s in sent)


@pytest.mark.parametrize("seed", range(12))
def test_a_worker_that_dies_whenever_one_item_runs_ends_with_that_items_death_and_every_other_answer(
    seed: int,
) -> None:
    rng = random.Random(seed)
    count = rng.randrange(2, 50)
    poison = rng.randrange(count)
    retries = rng.randrange(1, 4)

    def actor(chunk: Chunk) -> Reply:  # what a worker would send: maybe a part of the items before it, then dies
        items = received(chunk)
        if poison not in items:
            return serve(square)(chunk)
        before = items.index(poison)
        if chunk.kind == BATCH and 0 < before < len(chunk.items) and rng.random() < 0.5:
            fanout.settle_part(chunk, [square(n) for n in items[:rng.randrange(1, before + 1)]])
        return False, WorkerDied("the worker died")

    sent: list[Sent] = []
    fanout = Fanout(refs(rng.randrange(1, 4)), iter(range(count)), chunksize=rng.randrange(1, 9),
                    window=rng.randrange(1, 4), retries=retries, retryable=deaths, return_exceptions=True)
    runs = drive(fanout, actor, sent=sent)
    out = results(runs)
    assert contiguous(runs) and len(out) == count
    assert [v for n, v in enumerate(out) if n != poison] == [n * n for n in range(count) if n != poison]
    assert type(out[poison]) is WorkerDied
    assert out[poison].__notes__ == [f"(item {poison} of the map, after {retries} retries)"]
    assert sorted(s.tries for s in sent if s.start == poison and s.size == 1)[-1] == retries


# -- regressions --------------------------------------------------------------------------------------


def test_a_death_of_a_lost_running_chunk_leaves_the_chunks_queued_behind_it_free() -> None:
    fanout = Fanout(refs(1), iter(range(4)), chunksize=3, window=2, retries=1, retryable=deaths)
    running, queued = fanout.take()
    assert (running.items, queued.items, queued.kind) == ([0, 1, 2], [3], ASK)
    fanout.settle_part(running, "garbled")
    assert running.lost
    fanout.settle(running, False, WorkerDied("the worker died"))  # item 3 never ran
    fanout.settle(queued, False, WorkerDied("the worker died"))
    assert queued.tries == 0  # (engine: 1, as if it had run)
    zero, rest = fanout.take()
    assert [(c.start, c.items) for c in (zero, rest)] == [(0, [0]), (1, [1, 2])]
    fanout.settle(zero, True, 0)
    fanout.settle(rest, True, wire([1, 4]))
    [three] = fanout.take()
    fanout.settle(three, False, WorkerDied("the worker died"))  # its own first death: one retry left
    [three] = fanout.take()
    fanout.settle(three, True, 9)
    assert results(fanout.runs()) == [0, 1, 4, 9] and fanout.finished


def test_an_unreadable_answer_to_a_batch_with_one_item_left_asks_that_item_again_alone() -> None:
    # After its parts, a batch had one item left; its reply cannot be read: the item goes again
    # as a plain ask (free), rather than failing for what its batch's answer looked like.
    fanout = Fanout(refs(1), iter(range(3)), chunksize=3, window=1, retries=3, retryable=deaths)
    [chunk] = fanout.take()
    fanout.settle_part(chunk, [0, 1])
    fanout.settle(chunk, True, "not an answer")
    [again] = fanout.take()
    assert (again.start, again.items, again.kind, again.tries) == (2, [2], ASK, 0)
    assert results(fanout.runs()) == [0, 1]


# -- members that come and go (a cluster pool) -----------------------------------------------------


def test_a_node_that_answers_node_down_gets_nothing_more_and_its_chunk_goes_elsewhere_free() -> None:
    pool = [ActorRef("a", 1, None), ActorRef("b", 2, None)]
    fanout = Fanout(pool, iter(range(8)), chunksize=2, window=1, retries=1, retryable=deaths)
    first, second = fanout.take()
    assert (first.actor, second.actor) == (0, 1)
    fanout.settle(second, False, NodeDown("node b is down (dead)"))
    assert fanout.take() == []  # (actor 0 is busy; actor 1's node is gone)
    fanout.settle(first, True, wire([0, 1]))
    [again] = fanout.take()
    assert (again.start, again.items, again.actor, again.tries) == (2, [2, 3], 0, 0)
    fanout.settle(again, True, wire([4, 9]))
    runs = drive(fanout, serve(square))
    assert results(fanout.runs()) + results(runs) == [0, 1, 4, 9, 16, 25, 36, 49]


def test_actors_in_gone_get_nothing() -> None:
    gone: set[ActorRef] = set()
    pool = [ActorRef("a", 1, None), ActorRef("b", 2, None)]
    fanout = Fanout(pool, iter(range(6)), chunksize=1, window=1, gone=gone)
    gone.add(pool[1])  # (a cluster pool learns of the death from the membership)
    [chunk] = fanout.take()
    assert chunk.actor == 0


def test_when_every_node_of_the_pool_is_gone_the_map_fails_with_node_down() -> None:
    pool = [ActorRef("a", 1, None)]
    fanout = Fanout(pool, iter(range(6)), chunksize=2, window=1, retries=3, retryable=deaths)
    [chunk] = fanout.take()
    fanout.settle(chunk, False, NodeDown("node a is down (dead)"))
    with pytest.raises(NodeDown, match="every actor of the pool is on a node that is gone"):
        fanout.take()


def test_actors_appended_to_the_pool_join_the_running_fan_out() -> None:
    pool = [ActorRef("a", 1, None)]
    fanout = Fanout(pool, iter(range(10)), chunksize=1, window=1)
    assert [c.actor for c in fanout.take()] == [0]
    pool.append(ActorRef("c", 3, None))  # a member joined
    assert [c.actor for c in fanout.take()] == [1]


def test_a_chunk_sent_after_a_death_and_then_caught_in_another_is_asked_again_from_where_its_parts_left_off() -> None:
    # Found with a worker killed every half second: answers landed 39 items away from their own.
    # Y's death was read before X's, Y went again at once (Y2), then X's death marked Y2 queued;
    # Y2 ran on the new incarnation, sent a part, and died too: it went again with the payload
    # of before its part, so the next part's answers were placed from its new start.
    fanout = Fanout(refs(1), iter(range(12)), chunksize=6, window=2, retries=3, retryable=deaths)
    x, y = fanout.take()
    died = WorkerDied("worker 0 died")
    fanout.settle(y, False, died)  # (read first: y was queued behind x, so it goes again free)
    [y2] = fanout.take()
    assert (y2.start, y2.items) == (6, [6, 7, 8, 9, 10, 11])
    fanout.settle(x, False, died)  # x was running: halves; y2 is taken for one queued behind it
    fanout.settle_part(y2, [36, 49])  # but y2 runs on the re-created actor: items 6 and 7 answered
    fanout.settle(y2, False, WorkerDied("worker 0 died again"))
    waiting = [c for c in fanout._again if c.start >= 6]  # (what goes again, before it goes)
    assert [(c.start, c.items) for c in waiting] == [(8, [8, 9]), (10, [10, 11])]  # (it ran: halves)
    for chunk in waiting:  # what the worker will run is what is counted
        assert decode_request(chunk.payload).items == chunk.items
    runs = drive(fanout, serve(square))
    assert results(fanout.runs()) + results(runs) == [n * n for n in range(12)]
