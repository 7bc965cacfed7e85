"""Asks, tells, ordering and the in-actor API, across real worker processes."""

from __future__ import annotations

import asyncio
import threading

import psutil
import pytest
from actors import (
    Counter,
    Echo,
    Greeter,
    Impatient,
    LoopUser,
    Parent,
    Pinger,
    Point,
    Recorder,
    Relay,
    SenderProbe,
    SeqChecker,
    Sleeper,
    Square,
    Stamp,
    Stopper,
    ThreadUser,
    Timer,
    WhoAmI,
)
from conftest import wait_for

from gorilix import ActorRef, ActorSystem


def test_readme_greeter(system: ActorSystem) -> None:
    ref = system.spawn(Greeter, "Hi", name="greeter")
    assert ref.ask("World", timeout=5.0) == "Hi, World!"
    assert ref.name == "greeter"
    assert ref.node == system.name
    ref.tell("fire and forget")
    assert ref.ask("again") == "Hi, again!"


def test_values_survive_the_trip(system: ActorSystem) -> None:
    echo = system.spawn(Echo)
    value = {"t": (1, (2, 3)), "l": [1, 2.5, None, True, b"\x00"], 7: "seven", "p": Point(1, 2)}
    assert echo.ask(value) == value
    assert echo.ask(echo) == echo


def test_spawn_spreads_over_workers(system: ActorSystem) -> None:
    pids = {system.spawn(WhoAmI).ask(None)["pid"] for _ in range(4)}
    assert pids == {w.pid for w in system.workers()}
    assert [w.actors for w in system.workers()] == [2, 2]


def test_spawn_on_a_given_worker(system: ActorSystem) -> None:
    worker_pids = {w.id: w.pid for w in system.workers()}
    for slot in (1, 0, 1):
        assert system.spawn(WhoAmI, worker=slot).ask(None)["pid"] == worker_pids[slot]


def test_actor_to_actor_ask_across_workers(system: ActorSystem) -> None:
    greeter = system.spawn(Greeter, "Yo", worker=1)
    relay = system.spawn(Relay, worker=0)
    assert relay.ask((greeter, "there")) == ("relayed", "Yo, there!")


def test_async_ask_within_one_worker(system: ActorSystem) -> None:
    greeter = system.spawn(Greeter, worker=0)
    relay = system.spawn(Relay, worker=0)
    assert relay.ask((greeter, "local")) == ("relayed", "Hello, local!")


def test_ordering_of_10000_messages_per_pair(system: ActorSystem) -> None:
    checker = system.spawn(SeqChecker, worker=1)
    remote = system.spawn(Pinger, worker=0)
    local = system.spawn(Pinger, worker=1)
    assert remote.ask(("send", checker, 10_000)) == 10_000
    assert local.ask(("send", checker, 10_000)) == 10_000
    for i in range(10_000):  # and from the main thread
        checker.tell(("seq", "main", i))
    report = wait_for(lambda: (r := checker.ask("report"))["count"] == 30_000 and r, what="30,000 messages")
    assert report["in_order"] is True


def test_one_message_at_a_time_even_when_async(system: ActorSystem) -> None:
    sleeper = system.spawn(Sleeper)
    results: list[float] = []
    threads = [threading.Thread(target=lambda: results.append(sleeper.ask(0.05))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0.05, 0.05, 0.05]


def test_busy_actor_does_not_starve_its_neighbour(system: ActorSystem) -> None:
    checker = system.spawn(SeqChecker, worker=0)
    flood = system.spawn(Pinger, worker=0)
    echo = system.spawn(Echo, worker=0)
    flood.tell(("send", checker, 50_000))
    # The echo shares the worker with the flood but still answers.
    assert echo.ask("still here", timeout=5.0) == "still here"
    wait_for(lambda: checker.ask("report")["count"] == 50_000, what="flood delivered")


def test_ask_from_many_threads(system: ActorSystem) -> None:
    counter = system.spawn(Counter)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(200):
                counter.ask("inc")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counter.ask("get") == 800


def test_ask_async_from_asyncio_code(system: ActorSystem) -> None:
    greeter = system.spawn(Greeter)

    async def main() -> list[str]:
        return await asyncio.gather(*(greeter.ask_async(str(i)) for i in range(5)))

    assert asyncio.run(main()) == [f"Hello, {i}!" for i in range(5)]


def test_spawn_pool_map_keeps_order(system: ActorSystem) -> None:
    pool = system.spawn_pool(Square)
    assert len(pool) == 2
    items = list(range(200))
    assert pool.map(items, timeout=30) == [n * n for n in items]
    assert pool.map([]) == []
    assert pool.ask(3) == 9


def test_spawn_pool_spreads_over_workers(system: ActorSystem) -> None:
    pool = system.spawn_pool(WhoAmI, size=4)
    pids = [ref.ask(None)["pid"] for ref in pool]
    assert len(set(pids)) == 2


def test_sender_is_the_asking_actor(system: ActorSystem) -> None:
    probe = system.spawn(SenderProbe, worker=0)
    other = system.spawn(SenderProbe, worker=1)
    assert other.ask(probe) == other  # probe saw `other` as its sender
    # An ask from outside any actor still has a reply address.
    assert isinstance(probe.ask("from main"), ActorRef)


def test_spawn_from_inside_an_actor_returns_a_live_ref(system: ActorSystem) -> None:
    parent = system.spawn(Parent)
    child = parent.ask("child")
    assert isinstance(child, ActorRef)
    assert child.ask("hi") == "hi"
    children = parent.ask(("children", 50))
    assert len(set(children)) == 50
    assert [c.ask(i) for i, c in enumerate(children)] == list(range(50))


def test_named_actors(system: ActorSystem) -> None:
    ref = system.spawn(Echo, name="echo")
    assert system.whereis("echo") == ref
    assert system.whereis("nobody") is None
    system.register_name("alias", ref)
    assert system.whereis("alias") == ref
    assert system.unregister_name("alias") is True
    assert system.whereis("alias") is None
    assert system.unregister_name("alias") is False


def test_stop_from_inside_and_outside(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    inside = system.spawn(Stopper, log, restart="transient")
    assert inside.ask("stop") == "stopping"
    outside = system.spawn(Stopper, log)
    outside.stop()
    wait_for(lambda: len(log.ask(("get",))) == 2, what="both on_stop hooks")
    assert sorted(log.ask(("get",))) == [("stopped", "normal"), ("stopped", "shutdown")]


def test_send_after_fires_and_cancels(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    timer = system.spawn(Timer, log)
    timer.tell(("cancel", 0.01))
    timer.tell(("after", 0.05, "late"))
    timer.tell(("after", 0.01, "early"))
    wait_for(lambda: len(log.ask(("get",))) == 2, what="two timers")
    assert log.ask(("get",)) == [("fired", "early"), ("fired", "late")]


def test_a_thread_of_the_worker_can_tell_and_ask(system: ActorSystem) -> None:
    # The thread's calls are handed to the worker's loop, which must wake up for them.
    log = system.spawn(Recorder)
    user = system.spawn(ThreadUser)
    assert user.ask(log) is None  # Recorder answers None to anything but ("get",)
    wait_for(lambda: log.ask(("get",)) == [("from a thread", "tell"), ("from a thread", "ask")],
             what="the tell and the ask from the thread, in order")


def test_a_plain_receive_can_schedule_on_the_running_loop(system: ActorSystem) -> None:
    # asyncio runs in a worker only when it has work; a plain handler still finds it running.
    user = system.spawn(LoopUser)
    assert user.ask("go") == "scheduled"
    wait_for(lambda: user.ask("get") == ["task", "timer"], what="the timer and the task")


@pytest.mark.parametrize("workers", [1])
def test_single_worker_node(make_system, workers: int) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers)
    relay = system.spawn(Relay)
    echo = system.spawn(Echo)
    assert relay.ask((echo, 1)) == ("relayed", 1)


def test_workers_report_mailbox_depths_and_message_rates(system: ActorSystem) -> None:
    checker = system.spawn(SeqChecker, worker=1)
    flood = system.spawn(Pinger, worker=0)

    def busy() -> bool:
        # Paced by the two asks (sent, then handled), so a slow machine is not buried in a backlog.
        flood.ask(("send", checker, 2_000))
        checker.ask("report")
        return system.workers()[1].msgs_per_s > 0

    wait_for(busy, timeout=30.0, what="a message rate reported for worker 1")
    rows = system.workers()
    assert rows[0].msgs_per_s >= 0 and rows[1].mailbox >= 0 and rows[1].deepest_mailbox <= rows[1].mailbox


def test_ask_async_inside_a_worker_times_out_and_can_be_cancelled(system: ActorSystem) -> None:
    sleeper = system.spawn(Sleeper, worker=1)
    impatient = system.spawn(Impatient, worker=0)
    outcomes = impatient.ask(sleeper, timeout=10.0)
    assert outcomes[0][0] == "timeout" and "did not answer within 0.05 s" in outcomes[0][1]
    assert outcomes[1:] == [("gave up", "TimeoutError"), ("answer", 0.01)]
    # The late answers to the abandoned asks arrived and were dropped quietly: the actor still works.
    assert impatient.ask(sleeper, timeout=10.0)[2] == ("answer", 0.01)


def test_ask_async_from_asyncio_code_runs_asks_concurrently(system: ActorSystem) -> None:
    stamps = [system.spawn(Stamp) for _ in range(12)]

    async def main() -> list[float]:
        return await asyncio.gather(*(ref.ask_async(1.0, timeout=10.0) for ref in stamps))

    started = asyncio.run(main())
    # All twelve were handled at once: each began before any had finished.
    assert max(started) - min(started) < 1.0
    assert asyncio.run(main())  # a second event loop gets a socket of its own


def test_a_thread_per_request_holds_no_socket_once_its_thread_ends(system: ActorSystem) -> None:
    # Each thread's port was kept until stop(): after about 1,020 threads every new thread's ask
    # failed with "Too many open files", and the node kept every route.
    echo = system.spawn(Echo)
    me = psutil.Process()

    def one_request(i: int) -> None:
        assert echo.ask(i) == i

    def run(count: int) -> None:
        for i in range(count):
            thread = threading.Thread(target=one_request, args=(i,))
            thread.start()
            thread.join()

    run(20)  # warm: ZeroMQ's own descriptors are open
    before = me.num_fds()
    run(300)
    assert me.num_fds() - before < 30  # about one live thread's worth, not 300 threads' worth
    assert len(system._clients) <= 2  # this thread's port, and the last request's
