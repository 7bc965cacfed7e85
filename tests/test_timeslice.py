"""Short time slices and a session of their own: what the node asks Linux for, so its wake-ups preempt a busy core.

Without them, an ask between two workers waited up to a scheduler tick
(4 ms) at each hop that woke on a core a CPU-bound process held: 11 to 16 ms
at worst while the program held the GIL in one long call (`gorilix bench`,
isolation). The figures are in docs/performance.md; these tests check what
the node asks the kernel for, in real processes, and what it leaves alone.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from conftest import wait_for

from gorilix import ActorSystem
from gorilix.workers import timeslice
from gorilix.workers.timeslice import SHORT_SLICE_NS, current_slice


def _in_a_fresh_process(code: str) -> dict[str, object]:
    """Run ``code`` (which prints one JSON line) in a new interpreter: slices are per thread and inherited."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _kernel_grants_slices() -> bool:
    return _in_a_fresh_process("""
        import json
        from gorilix.workers.timeslice import request_short_slice
        print(json.dumps({"granted": request_short_slice()}))
    """)["granted"] == SHORT_SLICE_NS


needs_slices = pytest.mark.skipif(not sys.platform.startswith("linux") or not _kernel_grants_slices(),
                                  reason="this kernel has no custom time slices (Linux 6.12 and later do)")


def _thread_slices(pid: int) -> dict[int, int | None]:
    """The time slice of each thread of process ``pid``."""
    return {int(tid): current_slice(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@needs_slices
def test_a_short_slice_is_granted_and_inherited_by_later_threads() -> None:
    result = _in_a_fresh_process("""
        import json, threading
        from gorilix.workers.timeslice import current_slice, request_short_slice
        before = current_slice(0)
        granted = request_short_slice()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(current_slice(0)))
        thread.start()
        thread.join()
        print(json.dumps({"before": before, "granted": granted, "thread": seen[0]}))
    """)
    assert result["before"] != SHORT_SLICE_NS  # (the kernel's default)
    assert result["granted"] == SHORT_SLICE_NS
    assert result["thread"] == SHORT_SLICE_NS


@needs_slices
def test_a_thread_someone_put_in_another_policy_is_left_alone() -> None:
    result = _in_a_fresh_process("""
        import json, os
        from gorilix.workers.timeslice import current_slice, request_short_slice
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        granted = request_short_slice()
        print(json.dumps({"granted": granted, "policy": os.sched_getscheduler(0)}))
    """)
    assert result == {"granted": None, "policy": os.SCHED_IDLE}


@needs_slices
def test_the_node_and_its_workers_run_with_short_slices(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(2)
    node = _thread_slices(system._node.pid)
    assert len(node) > 1 and set(node.values()) == {SHORT_SLICE_NS}, node  # the loop, ZeroMQ's threads
    for worker in system.workers():
        assert worker.pid is not None
        threads = _thread_slices(worker.pid)
        assert set(threads.values()) == {SHORT_SLICE_NS}, (worker.id, threads)
    # The program's own threads keep the kernel's default: its scheduling is its own.
    assert current_slice(0) != SHORT_SLICE_NS

    # A worker the node starts again after a death (a fresh interpreter, not a fork) has them too.
    old = system.workers()[0].pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    reborn = wait_for(lambda: next((w.pid for w in system.workers() if w.id == 0 and w.alive
                                    and w.pid not in (None, old)), None), 15, "worker 0 started again")
    assert set(_thread_slices(reborn).values()) == {SHORT_SLICE_NS}


@needs_slices
def test_short_slices_can_be_turned_off(make_system: Callable[..., ActorSystem],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timeslice.ENV_VAR, "0")
    system = make_system(1)
    assert SHORT_SLICE_NS not in _thread_slices(system._node.pid).values()
    pid = system.workers()[0].pid
    assert pid is not None and SHORT_SLICE_NS not in _thread_slices(pid).values()


@pytest.mark.parametrize(("value", "on"), [(None, True), ("", True), ("1", True), ("0", False), ("off", False),
                                           (" No ", False), ("false", False), ("n", False), ("yes", True)])
def test_the_environment_variable_turns_slices_off(value: str | None, on: bool, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    if value is None:
        monkeypatch.delenv(timeslice.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(timeslice.ENV_VAR, value)
    assert timeslice.wanted() is on
    assert not caplog.records


@pytest.mark.parametrize("value", ["00", "0.0", "disable", "2"])
def test_a_value_it_cannot_read_is_said_and_leaves_slices_on(value: str, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # "00" or "disable" left short slices on without a word.
    monkeypatch.setenv(timeslice.ENV_VAR, value)
    assert timeslice.wanted() is True
    assert any(timeslice.ENV_VAR in r.getMessage() and "stays on" in r.getMessage() for r in caplog.records)


needs_autogroups = pytest.mark.skipif(timeslice.autogroup("self") is None,
                                      reason="this kernel does not group processes by session (no autogroup)")


def test_the_node_and_its_workers_lead_a_session_of_their_own(make_system: Callable[..., ActorSystem]) -> None:
    # They shared the program's session, so a thread of theirs that woke on the core the program's long
    # C call held was owed nothing and waited for the scheduler's tick (gorilix.workers.timeslice).
    system = make_system(2)
    node = system._node.pid
    assert node is not None
    assert os.getsid(node) == node != os.getsid(0)
    workers = [w.pid for w in system.workers()]
    for pid in workers:
        assert pid is not None
        assert os.getsid(pid) == node and os.getpgid(pid) == pid  # (its own group: what its actors start joins)
    if timeslice.autogroup("self") is not None:  # (the scheduler's group is the session's, where it has them)
        assert timeslice.autogroup(node) != timeslice.autogroup("self")
        assert {timeslice.autogroup(pid) for pid in workers if pid} == {timeslice.autogroup(node)}

    # A worker started again after a death is in it too.
    old = workers[0]
    assert old is not None
    os.kill(old, signal.SIGKILL)
    reborn = wait_for(lambda: next((w.pid for w in system.workers() if w.id == 0 and w.alive
                                    and w.pid not in (None, old)), None), 15, "worker 0 started again")
    assert os.getsid(reborn) == node


def test_the_node_can_stay_in_the_programs_session(make_system: Callable[..., ActorSystem],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timeslice.SESSION_ENV_VAR, "0")
    system = make_system(1)
    assert system._node.pid is not None and os.getsid(system._node.pid) == os.getsid(0)
    worker = system.workers()[0].pid
    assert worker is not None and os.getsid(worker) == os.getsid(0) and os.getpgid(worker) == worker


@needs_autogroups
@pytest.mark.parametrize("how", ["process", "group"])
def test_a_new_session_weighs_what_the_programs_session_does(how: str) -> None:
    # Its autogroup's nice value is what the kernel weighs it by against other sessions, the program's
    # among them: a copy of the program's process nice value (10) made its actors yield to it 10:1.
    result = _in_a_fresh_process(f"""
        import json, os
        from gorilix.workers import timeslice
        if {how!r} == "process":
            os.nice(7)  # (counts inside the program's group only)
        else:
            os.setsid()
            with open("/proc/self/autogroup", "w") as group:
                group.write("7")
        pid = os.fork()
        if pid == 0:
            own = timeslice.start_own_session()
            print(json.dumps({{"own": own, "sid": os.getsid(0) == os.getpid(),
                              "nice": timeslice.autogroup_nice("self")}}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    assert result == {"own": True, "sid": True, "nice": 0 if how == "process" else 7}


def test_a_busy_kernel_is_asked_again_for_the_groups_nice_value(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # An unprivileged user may set an autogroup's nice value once per 100 ms on the whole machine (EAGAIN
    # otherwise), and the node's workers start together: the write was dropped without a word.
    tries: list[str] = []

    class Busy:
        def __init__(self, fails: int) -> None:
            self.fails = fails

        def __call__(self, path: str, mode: str = "r") -> Busy:
            return self

        def __enter__(self) -> Busy:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def write(self, text: str) -> None:
            tries.append(text)
            if len(tries) <= self.fails:
                raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(timeslice.time, "sleep", lambda _: None)
    monkeypatch.setattr("builtins.open", Busy(fails=3))
    timeslice._set_autogroup_nice(5)
    assert tries == ["5"] * 4 and not caplog.records
    tries.clear()
    monkeypatch.setattr("builtins.open", Busy(fails=10**6))
    timeslice._set_autogroup_nice(5)
    assert len(tries) == timeslice.AUTOGROUP_NICE_TRIES
    assert any("keeps nice 0" in r.getMessage() and "busy" in r.getMessage() for r in caplog.records)


def test_a_process_that_cannot_start_a_session_says_so() -> None:
    result = _in_a_fresh_process("""
        import json, os
        from gorilix.workers import timeslice
        os.setsid()  # (now it leads its session: setsid(2) refuses a group leader)
        print(json.dumps({"own": timeslice.start_own_session()}))
    """)
    assert result == {"own": False}


@pytest.mark.parametrize(("text", "nice"), [("/autogroup-12 nice 0", 0), ("/autogroup-3 nice 19", 19),
                                           ("/autogroup-3 nice -5", -5), ("", 0), ("garbage", 0),
                                           ("/autogroup-3 nice x", 0)])
def test_an_autogroups_nice_value_is_read_or_taken_as_0(text: str, nice: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeslice, "autogroup", lambda pid: text or None)
    assert timeslice.autogroup_nice("self") == nice
