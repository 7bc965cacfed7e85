"""Bad input, crashes and dying processes: each gives a clear, fast outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
import zmq
from actors import (
    AskTwice,
    BadInit,
    BlockingAsk,
    Counter,
    Crasher,
    Echo,
    NotAnActor,
    Parent,
    Sleeper,
    Stopper,
    UnsendableReply,
)
from conftest import process_running, wait_for

from gorilix import (
    ActorError,
    ActorNotFound,
    ActorRef,
    ActorSystem,
    AskTimeout,
    GorilixError,
    SerializationError,
    SpawnError,
    WorkerDied,
)


def test_unsendable_message_fails_at_the_sender(system: ActorSystem) -> None:
    echo = system.spawn(Echo)
    with pytest.raises(SerializationError, match="builtins.set"):
        echo.tell({1, 2})
    with pytest.raises(SerializationError, match="object"):
        echo.ask(object())
    assert system.stats()["malformed"] == 0
    assert echo.ask("fine") == "fine"


def test_unsendable_inside_an_actor_and_as_a_reply(system: ActorSystem) -> None:
    actor = system.spawn(UnsendableReply)
    assert actor.ask(actor) == "SerializationError"
    with pytest.raises(SerializationError):
        actor.ask("set")


def test_spawn_rejects_non_actors(system: ActorSystem) -> None:
    with pytest.raises(SpawnError, match="not an Actor subclass"):
        system.spawn(NotAnActor)  # type: ignore[arg-type]
    with pytest.raises(SpawnError, match="not an Actor subclass"):
        system.spawn("actors:NotAnActor")
    with pytest.raises(SpawnError, match="cannot import actor class no_such_module:Thing"):
        system.spawn("no_such_module:Thing")
    with pytest.raises(SpawnError, match="RuntimeError: cannot start"):
        system.spawn(BadInit)
    with pytest.raises(SpawnError, match="cannot send the arguments"):
        system.spawn(Echo, {1})
    with pytest.raises(SpawnError, match="no worker 7"):
        system.spawn(Echo, worker=7)

    class Local(Echo):
        pass

    with pytest.raises(SpawnError, match="inside a function"):
        system.spawn(Local)
    assert Parent  # spawn failures inside an actor are tested below
    assert system.spawn(Parent).ask("bad-child") == "SpawnError"


def test_duplicate_name_is_refused(system: ActorSystem) -> None:
    system.spawn(Echo, name="only")
    with pytest.raises(SpawnError, match="already registered"):
        system.spawn(Echo, name="only")


def test_ask_to_a_stopped_actor_fails_fast(system: ActorSystem) -> None:
    actor = system.spawn(Stopper, restart="transient")
    assert actor.ask("stop") == "stopping"
    started = time.monotonic()
    with pytest.raises(ActorNotFound):
        actor.ask("anyone?", timeout=10.0)
    assert time.monotonic() - started < 5.0  # far from the timeout: it was not waited out
    with pytest.raises(ActorNotFound):
        ActorRef(system.name, 999_999).ask("ghost", timeout=10.0)


def test_queued_asks_fail_when_the_actor_stops(system: ActorSystem) -> None:
    for worker in (0, 1):  # same worker (fast path) and across the router
        stopper = system.spawn(Stopper, worker=1, restart="transient")
        first, error_type, text = system.spawn(AskTwice, worker=worker).ask(stopper)
        assert first == "stopping"
        assert error_type == "ActorNotFound"
        # Failed from the mailbox ("stopped (normal)"), or refused by the router
        # if the node had already forgotten the actor: both say it stopped.
        assert "stopped" in text


def test_ask_timeout(system: ActorSystem) -> None:
    sleeper = system.spawn(Sleeper)
    with pytest.raises(AskTimeout, match="did not answer within 0.1 s"):
        sleeper.ask(1.0, timeout=0.1)
    assert sleeper.ask(0, timeout=5.0) == 0  # the late answer was discarded


def test_crash_reaches_the_asker_and_the_actor_comes_back(system: ActorSystem) -> None:
    crasher = system.spawn(Crasher)
    pid = crasher.ask("pid")
    assert crasher.ask("count") == 1
    with pytest.raises(ActorError) as caught:
        crasher.ask("boom")
    error = caught.value
    assert error.remote_type == "ValueError"
    assert error.remote_message == "kaboom"
    assert "raise ValueError" in error.remote_traceback
    assert "Crasher" in error.actor
    assert crasher.ask("count") == 1  # re-created: fresh state
    assert crasher.ask("pid") == pid  # and the worker lived on


def test_temporary_actor_is_not_restarted(system: ActorSystem) -> None:
    crasher = system.spawn(Crasher, restart="temporary")
    with pytest.raises(ActorError):
        crasher.ask("boom")
    with pytest.raises(ActorNotFound):
        crasher.ask("count")


def test_blocking_ask_inside_an_actor_says_what_to_do(system: ActorSystem) -> None:
    actor = system.spawn(BlockingAsk)
    echo = system.spawn(Echo)
    answer = actor.ask(echo)
    assert answer.startswith("GorilixError") and "ask_async" in answer


def test_malformed_frames_are_dropped_and_counted(system: ActorSystem) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(system._node.endpoint)
    try:
        for junk in ([b"x"], [b"\xc1", b"", b""], [b"\x95\xa1a", b"1", b"2"], [b"\x95" * 8, b"env", b"p"]):
            sock.send_multipart(junk)
        wait_for(lambda: system.stats()["malformed"] >= 4, what="4 malformed frames counted")
    finally:
        sock.close()
    assert system.spawn(Echo).ask("alive") == "alive"


def test_sigkill_of_a_worker_during_traffic(system: ActorSystem) -> None:
    counter = system.spawn(Counter, worker=1)
    before = {w.id: w.pid for w in system.workers()}
    stop = threading.Event()
    answered: list[int] = []
    failed: list[type] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                counter.ask("inc", timeout=5.0)
                answered.append(1)
            except (WorkerDied, AskTimeout) as exc:
                failed.append(type(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: len(answered) > 50, what="traffic flowing")
        system.kill_worker(1)
        seen = len(answered)
        wait_for(lambda: len(answered) > seen + 50, what="answers after the kill")
    finally:
        stop.set()
        thread.join()
    assert set(failed) <= {WorkerDied}
    assert counter.ask("get") >= 0  # the same ref answers (state was lost with the process)
    workers = wait_for(lambda: (ws := system.workers()) and all(w.alive for w in ws) and ws, what="respawn")
    assert workers[1].pid != before[1]
    assert workers[1].restarts == 1
    assert workers[0].pid == before[0]


def test_every_actor_of_a_dead_worker_comes_back(system: ActorSystem) -> None:
    refs = [system.spawn(Echo, worker=0) for _ in range(20)]
    temporary = system.spawn(Echo, worker=0, restart="temporary")
    system.kill_worker(0)
    assert [r.ask(i, timeout=10.0) for i, r in enumerate(refs)] == list(range(20))
    with pytest.raises(ActorNotFound):
        temporary.ask("gone", timeout=10.0)


def test_stop_is_idempotent_and_final(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(1)
    echo = system.spawn(Echo)
    pids = [w.pid for w in system.workers()]
    system.stop()
    system.stop()
    assert not any(process_running(p) for p in pids)
    with pytest.raises(GorilixError):
        echo.ask("anyone?")
    with pytest.raises(GorilixError):
        system.spawn(Echo)


NODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from gorilix import ActorSystem
    if __name__ == "__main__":
        system = ActorSystem("doomed", workers=2)
        print(json.dumps([w.pid for w in system.workers()]), flush=True)
        sys.stdin.read()
    """
)


def test_workers_exit_when_the_node_process_is_killed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    pids: list[int] = []
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            _run_and_kill(proc, pids)
        finally:
            proc.kill()
            proc.wait(10)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _run_and_kill(proc: subprocess.Popen[str], pids: list[int]) -> None:
    pids.extend(json.loads(proc.stdout.readline()))  # type: ignore[union-attr]
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    def gone() -> bool:
        return not any(process_running(p) for p in pids)

    wait_for(gone, 10.0, "workers of the killed node gone")




def test_import_starts_no_thread_or_process() -> None:
    code = "import threading, gorilix, psutil; print(threading.active_count(), len(psutil.Process().children()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "0"]


def test_messages_wait_for_a_recreated_actor_up_to_a_bound(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(1, max_parked=3)
    counter = system.spawn(Counter)
    counter.ask("inc")
    before = system.dead_letters().count
    system.kill_worker(0)  # returns once the node holds the actor for re-creation
    for _ in range(10):  # the only worker is still starting: these wait at the router
        counter.tell("inc")
    letters = system.dead_letters()
    assert letters.count - before == 7  # past the bound: dead letters, counted

    def count() -> int | None:
        try:
            return counter.ask("get", timeout=10.0)
        except GorilixError:  # still being re-created, and the queue is full
            return None

    assert wait_for(lambda: count() is not None, what="actor back") and count() == 3
    assert "already has 3 messages waiting" in letters.recent[-1]["reason"]
