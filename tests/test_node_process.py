"""The node is a process of its own: the program's GIL cannot stall it, and it dies with the program."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from actors import Echo
from conftest import process_running, wait_for

import gorilix
from gorilix import Actor, ActorSystem, InvalidArgument, NotRunning
from gorilix.bench import hold_the_gil
from gorilix.cluster import bridge
from gorilix.launcher import free_port
from gorilix.node_handle import node_sys_path
from gorilix.system import ClusterConfig


class PingLoop(Actor):
    """Asks a target in a loop, in a task of its own, and keeps the wall-clock time of each answer."""

    def __init__(self) -> None:
        self.answered: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.answered
        self.task = asyncio.get_running_loop().create_task(self.ping(msg))
        return None

    async def ping(self, target: Any) -> None:
        while True:
            await target.ask_async("ping", timeout=30.0)
            self.answered.append(time.time())


def test_the_node_is_a_process_of_its_own_and_its_workers_are_its_children(system: ActorSystem) -> None:
    node = psutil.Process(system._node.pid)
    assert system._node.pid != os.getpid()
    assert node.ppid() == os.getpid()
    children = {c.pid for c in node.children() if "resource_tracker" not in " ".join(c.cmdline())}
    assert {w.pid for w in system.workers()} == children


def _socket_inodes(pid: int) -> set[str]:
    fds = Path(f"/proc/{pid}/fd")
    links = set()
    for fd in fds.iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:  # closed meanwhile
            pass
    return {link for link in links if link.startswith("socket:")}


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc")
def test_the_first_workers_are_forked_from_the_fresh_node_and_keep_nothing_of_its_lifeline(
        tmp_path: Path) -> None:
    # Forking the node before it has a thread or a ZeroMQ context spares each worker a fresh
    # interpreter's start; a forked worker must still log as a worker, close the node's end of the
    # program's lifeline, and come back as a fresh interpreter when it is respawned.
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent("""
        import logging, os, signal, sys, json
        import psutil
        from gorilix import Actor, ActorSystem
        from gorilix.bench_actors import Echo

        class Says(Actor):
            def receive(self, message):
                logging.getLogger("app").info("said %s", message)

        if __name__ == "__main__":
            with ActorSystem("forked", workers=1, log_level="INFO") as system:
                system.spawn(Says).ask("hello", timeout=30.0)
                node = psutil.Process(system._node.pid)
                lifeline_fd = int(node.cmdline()[4])
                lifeline = os.readlink(f"/proc/{node.pid}/fd/{lifeline_fd}")
                first = system.workers()[0].pid
                forked = psutil.Process(first).cmdline() == node.cmdline()
                worker_fds = {os.readlink(f"/proc/{first}/fd/{fd}") for fd in os.listdir(f"/proc/{first}/fd")}
                system.kill_worker(0, signal.SIGKILL)
                assert system.spawn(Echo).ask("back", timeout=30.0) == "back"
                second = system.workers()[0].pid
                respawned_fresh = "--multiprocessing-fork" in psutil.Process(second).cmdline()
            print(json.dumps({"forked": forked, "lifeline_kept": lifeline in worker_fds,
                              "respawned_fresh": respawned_fresh}), flush=True)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts == {"forked": True, "lifeline_kept": False, "respawned_fresh": True}
    assert " worker 0 INFO app: said hello" in result.stderr  # its own format, not the node's it was forked with
    assert " node forked INFO gorilix.node: worker 0 ready" in result.stderr


def test_asks_between_workers_go_on_while_the_program_holds_its_gil(system: ActorSystem) -> None:
    # With the node a thread of the program, every ask between two workers waited for the
    # program's C call: none was answered while it ran (2.9 s for one, measured).
    echo = system.spawn(Echo, worker=1)
    pinger = system.spawn(PingLoop, worker=0)
    pinger.tell(echo)
    wait_for(lambda: len(pinger.ask("get")) > 100, 10, "the ping loop running")
    started, ended = hold_the_gil(1.5)
    answered = pinger.ask("get", timeout=10.0)
    during = [t for t in answered if started + 0.1 < t < ended - 0.1]
    assert ended - started > 0.5, "the GIL was not held long enough to tell"
    assert len(during) > 50, f"only {len(during)} asks answered in {ended - started:.1f} s of a held GIL"


PROGRAM = textwrap.dedent("""
    import json, os, sys, time
    from gorilix import Actor, ActorSystem

    MARKS = sys.argv[1]
    with open(MARKS, "a") as marks:  # every process that imports this program says so
        marks.write(f"{os.getpid()}\\n")

    class Echo(Actor):
        def receive(self, msg):
            return msg

    if __name__ == "__main__":
        system = ActorSystem("prog", workers=2)
        ref = system.spawn(Echo)  # a class of the program's __main__: workers import the program
        assert ref.ask("hi") == "hi"
        print(json.dumps({"node": system._node.pid, "workers": [w.pid for w in system.workers()],
                          "node_loop_here": "gorilix.node" in sys.modules}), flush=True)
        time.sleep(60)
""")


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str], dict[str, Any], Path]]]:
    """Run PROGRAM as a script; everything it started is killed at the end."""
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []

    def start() -> tuple[subprocess.Popen[str], dict[str, Any], Path]:
        script = tmp_path / "prog.py"
        script.write_text(PROGRAM)
        marks = tmp_path / f"marks-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        procs.append(proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the program did not start (exit {proc.wait(10)})"
        info = json.loads(line)
        pids.extend([info["node"], *info["workers"]])
        return proc, info, marks

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
        for pid in pids:
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_node_process_imports_no_user_module(program: Callable[..., Any]) -> None:
    proc, info, marks = program()
    imported = {int(line) for line in marks.read_text().split()}
    assert imported == {proc.pid, *info["workers"]}  # the program and its workers; never the node
    assert info["node"] not in imported
    assert info["node_loop_here"] is False  # and the program holds only clients


def test_a_program_that_starts_its_system_unguarded_fails_clearly(tmp_path: Path) -> None:
    # Workers import the program to find its actor classes. Started by the node process, a worker
    # that ran an unguarded ActorSystem(...) would start a node of its own, whose workers would do
    # the same: a fork bomb. It fails at once instead, and says how to fix the program.
    script = tmp_path / "unguarded.py"
    script.write_text("from gorilix import ActorSystem\nActorSystem('unguarded', workers=1).stop()\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    # One line that says what to add: not each worker's traceback three times (450 lines of stderr,
    # ending in "worker 1 died 3 times"), nor a retry of workers that can never start.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gorilix.transport.errors.NotRunning: node unguarded failed to start: your program "
                           "starts its ActorSystem when it is imported")
    assert last.endswith('under `if __name__ == "__main__":`')
    assert "died 3 times" not in result.stderr and len(result.stderr.splitlines()) < 25


def test_sigkill_of_the_program_takes_the_node_and_its_workers_within_a_second(
        program: Callable[..., Any]) -> None:
    proc, info, _ = program()
    pids = [info["node"], *info["workers"]]
    assert all(process_running(pid) for pid in pids)
    proc.kill()
    proc.wait(10)
    killed = time.monotonic()
    wait_for(lambda: not any(process_running(pid) for pid in pids), 5, "the node and its workers gone")
    assert time.monotonic() - killed < 1.0


def test_a_client_whose_node_process_died_fails_at_once(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1)
    ref = system.spawn(Echo)
    assert ref.ask("hi") == "hi"
    failed: list[BaseException] = []

    def wait_long() -> None:
        try:
            system.spawn(Echo, worker=0).ask(["never"], timeout=60.0)  # an answer to come, or the node's end
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failed.append(exc)

    os.kill(system._node.pid, signal.SIGKILL)
    started = time.monotonic()
    waiter = threading.Thread(target=wait_long, daemon=True)
    waiter.start()
    waiter.join(10.0)
    assert failed and isinstance(failed[0], NotRunning), failed
    assert "signal SIGKILL" in str(failed[0]) and "start a new ActorSystem" in str(failed[0])
    assert time.monotonic() - started < 5.0
    with pytest.raises(NotRunning):
        ref.tell("x")
    assert not system.running
    assert isinstance(system.failure, NotRunning)
    system.stop()  # still safe: nothing to stop


def test_stop_when_the_node_already_ended_is_quick_and_clean(system: ActorSystem) -> None:
    system._node.request_stop()
    wait_for(lambda: not system.running, 5, "the node ended")
    with pytest.raises(NotRunning, match="was stopped"):
        system.spawn(Echo)
    assert system.failure is None
    system.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_clustered_program_holding_its_gil_for_30_s_is_never_suspected(tmp_path: Path) -> None:
    # With gossip on a thread of the program, a healthy peer marked such a node suspect
    # after 5 s and dead after 9 s, and its actors' monitors fired.
    port, peer_port = free_port(), free_port()
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent(f"""
        from gorilix import ActorSystem
        from gorilix.bench import hold_the_gil
        from gorilix.cluster import bridge
        from gorilix.system import ClusterConfig

        if __name__ == "__main__":
            with ActorSystem("busy", workers=1) as system:
                system.set_cluster_provider(bridge.ClusterProvider())
                system.enable_clustering(ClusterConfig(node_name="busy", bind_port={port},
                                                       seeds=["127.0.0.1:{peer_port}"]))
                print("joined", flush=True)
                hold_the_gil(30.0)
                print("done", flush=True)
    """))
    events: list[tuple[str, str]] = []
    with ActorSystem(f"peer-{uuid.uuid4().hex[:6]}", workers=1) as peer:
        peer.set_cluster_provider(bridge.ClusterProvider())
        cluster = peer.enable_clustering(ClusterConfig(node_name=peer.name, bind_port=peer_port))
        cluster.on_event(lambda e: events.append((e.name, e.status)))
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "joined"  # type: ignore[union-attr]
            wait_for(lambda: ("busy", "alive") in events, 10, "busy seen alive")
            assert proc.stdout.readline().strip() == "done"  # type: ignore[union-attr]
            assert proc.wait(30) == 0
            wait_for(lambda: ("busy", "left") in events, 10, "busy's graceful leave at its stop")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
    seen = [status for name, status in events if name == "busy"]
    assert "suspect" not in seen and "dead" not in seen, seen
    assert seen[-1] == "left", seen


def run_script(tmp_path: Path, source: str, *args: str, shell_prefix: str = "") -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"script_{uuid.uuid4().hex[:6]}.py"
    script.write_text(textwrap.dedent(source))
    if shell_prefix:
        command = f"{shell_prefix} {sys.executable} {script} " + " ".join(args)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=90,
                          cwd=tmp_path)


def test_a_forked_child_that_exits_stops_nothing_of_its_parent(tmp_path: Path) -> None:
    # The child inherited the system's atexit hook: its normal exit stopped the parent's node, or
    # spun in stop() on the parent's sockets for good.
    result = run_script(tmp_path, """
        import os, sys
        from gorilix import ActorSystem, NotRunning
        from gorilix.bench_actors import Echo

        if __name__ == "__main__":
            system = ActorSystem("forks", workers=1)
            ref = system.spawn(Echo)
            assert ref.ask(1) == 1
            pid = os.fork()
            if pid == 0:
                try:
                    system.workers()
                    print("child: usable", flush=True)
                except NotRunning as exc:
                    print("child:", exc, flush=True)
                sys.exit(0)  # a normal exit: atexit hooks run
            os.waitpid(pid, 0)
            print("parent:", ref.ask(2), flush=True)
            system.stop()
    """)
    assert result.returncode == 0, result.stderr
    assert "this process is a fork of it" in result.stdout
    assert "parent: 2" in result.stdout


def test_asks_waiting_when_the_system_stops_fail_with_not_running(make_system: Callable[..., ActorSystem]) -> None:
    # An ask_async waiting on its event loop when another thread called stop() waited for good
    # (timeout=None), or ended in AskTimeout; the loop also printed an OSError from a closed fd.
    system = make_system(1)
    sleeper = system.spawn(Echo)  # any actor: the asks below go to one that never answers
    hog = system.spawn("gorilix.bench_actors:CpuWorker", worker=0)
    hog.tell(10**12)  # worker 0 busy for good: asks to it wait
    outcomes: list[BaseException | None] = []

    def waiting_loop() -> None:
        async def main() -> None:
            try:
                await hog.ask_async("never", timeout=None)
                outcomes.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcomes.append(exc)
        asyncio.run(main())

    def waiting_thread() -> None:
        try:
            hog.ask("never", timeout=None)
            outcomes.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcomes.append(exc)

    threads = [threading.Thread(target=waiting_loop, daemon=True), threading.Thread(target=waiting_thread, daemon=True)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both asks sent and waiting
    assert sleeper  # (the system is up)
    system.stop(timeout=5.0)
    for thread in threads:
        thread.join(10.0)
    assert len(outcomes) == 2 and all(isinstance(o, NotRunning) for o in outcomes), outcomes


def test_many_waiters_all_learn_why_the_node_died(make_system: Callable[..., ActorSystem]) -> None:
    # Threads that checked the end notice while another was reading the node's last word got
    # "node X None" (a reason not yet set), and asyncio waiters were left to their timeouts.
    system = make_system(1)
    hog = system.spawn("gorilix.bench_actors:CpuWorker")
    hog.tell(10**12)  # holds its worker's loop: the worker cannot watch its node from there
    [worker] = [w.pid for w in system.workers()]
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            hog.ask("never", timeout=30.0)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(system._node.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(15.0)
    assert len(errors) == 40
    assert all(isinstance(e, NotRunning) and "signal SIGKILL" in str(e) for e in errors), {str(e) for e in errors}
    # The busy worker was left spinning as an orphan for good; the kernel now kills it with its node.
    wait_for(lambda: not process_running(worker), 5, "the busy worker gone with its node")


def test_a_program_with_its_standard_streams_closed_runs(tmp_path: Path) -> None:
    # The socket pair took descriptors 1 and 2: the node's first log line (a worker death) went down
    # it as a record, and the program hung for good reading it.
    done = tmp_path / "done"
    result = run_script(tmp_path, """
        import signal, sys
        from gorilix import ActorSystem
        from gorilix.bench_actors import Echo

        if __name__ == "__main__":
            with ActorSystem("closed-stdio", workers=1) as system:
                ref = system.spawn(Echo)
                system.kill_worker(0, signal.SIGKILL)  # the node logs a warning
                assert ref.ask("after", timeout=30.0) == "after"
            open(sys.argv[1], "w").write("ok")
    """, str(done), shell_prefix="exec <&- >&- 2>&-;")
    assert result.returncode == 0
    assert done.read_text() == "ok"


def test_paths_and_arguments_that_are_not_utf8_and_odd_names_and_level_names(tmp_path: Path) -> None:
    # A non-UTF-8 argument stopped the start (msgpack refused the lone surrogate); a "%" in the name
    # broke every log line of the node; log_level="INFO" crashed it with a raw ValueError.
    script = tmp_path / "odd.py"
    script.write_text(textwrap.dedent("""
        import signal, sys
        from gorilix import ActorSystem
        from gorilix.bench_actors import Echo

        if __name__ == "__main__":
            assert sys.argv[1] == "caf\\udce9.txt", ascii(sys.argv[1])
            with ActorSystem("odd-%(name)s", workers=1, log_level="INFO") as system:
                ref = system.spawn(Echo)
                system.kill_worker(0, signal.SIGKILL)  # the node logs a warning
                assert ref.ask("ok", timeout=30.0) == "ok"
            print("done", flush=True)
    """))
    result = subprocess.run([sys.executable, str(script), b"caf\xe9.txt"], capture_output=True, text=True,
                            timeout=90, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert "Logging error" not in result.stderr
    assert "node odd-%(name)s WARNING gorilix.node: worker 0" in result.stderr


def test_a_log_level_that_is_no_level_is_refused(make_system: Callable[..., ActorSystem]) -> None:
    for level in ("LOUD", 2.5, None):
        with pytest.raises(InvalidArgument, match="log_level="):
            ActorSystem(f"bad-level-{uuid.uuid4().hex[:4]}", workers=1, log_level=level)  # type: ignore[arg-type]


def test_the_node_gets_the_programs_import_path_without_the_script_directory(monkeypatch: pytest.MonkeyPatch,
                                                                                tmp_path: Path) -> None:
    root = str(Path(gorilix.__file__).resolve().parent.parent)
    monkeypatch.setattr(sys, "path", [str(tmp_path), "/somewhere/else", root])
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "prog.py"), raising=False)
    assert node_sys_path() == ["/somewhere/else", root]  # the script's directory is dropped
    monkeypatch.setattr(sys, "path", ["", "/somewhere/else"])
    assert node_sys_path()[0] == root  # where this program found gorilix is always there
