"""Hot reload of live actors, and a supervised tree under repeated SIGKILLs."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from actors import Stateful
from conftest import wait_for

from gorilix import AskTimeout, GorilixError, supervisor
from gorilix.supervisor import ChildSpec, Strategy

VERSION = textwrap.dedent(
    """
    from gorilix import Actor

    class Versioned(Actor):
        def __init__(self):
            self.count = 0
            self.changes = 0

        def receive(self, msg):
            if msg == "changes":
                return self.changes
            self.count += 1
            return ("{version}", self.count)

        def on_code_change(self):
            self.changes += 1
    """
)


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    name = f"reloadable_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(VERSION.format(version="v1"))
    sys.path.insert(0, str(tmp_path))  # workers are spawned with this sys.path
    try:
        yield tmp_path, name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_reload_moves_live_actors_to_new_code_keeping_state(module_dir, make_system) -> None:  # type: ignore[no-untyped-def]
    path, name = module_dir
    system = make_system(2)
    refs = [system.spawn(f"{name}:Versioned", worker=i) for i in (0, 1)]
    assert [r.ask("hit") for r in refs] == [("v1", 1), ("v1", 1)]
    # A different length too, so a cached .pyc can never pass for the new source.
    (path / f"{name}.py").write_text(VERSION.format(version="v2-new"))
    flood = refs[0]
    sent = 200
    for _ in range(sent // 2):
        flood.tell("during")
    result = system.reload(name)
    for _ in range(sent // 2):
        flood.tell("during")
    assert result["moved"] == 2 and result["workers"] == 2
    assert refs[1].ask("hit") == ("v2-new", 2)  # new code, old state
    assert refs[0].ask("hit") == ("v2-new", sent + 2)  # no message lost in the swap
    assert [r.ask("changes") for r in refs] == [1, 1]


def test_reload_of_a_broken_module_reports_and_keeps_old_code(module_dir, make_system) -> None:  # type: ignore[no-untyped-def]
    path, name = module_dir
    system = make_system(1)
    ref = system.spawn(f"{name}:Versioned")
    assert ref.ask("hit") == ("v1", 1)
    (path / f"{name}.py").write_text("this is not python(\n")
    with pytest.raises(GorilixError, match="SyntaxError"):
        system.reload(name)
    assert ref.ask("hit") == ("v1", 2)


@pytest.mark.slow
def test_chaos_worker_kills_under_supervised_traffic(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(2)
    sup = system.spawn_supervisor("chaos", Strategy(supervisor.ONE_FOR_ONE, max_restarts=None))
    children = [sup.add_child(ChildSpec(id=f"c{i}", actor_class=Stateful, args=(f"c{i}",), worker=i % 2))
                for i in range(8)]
    stop = threading.Event()
    outcomes = {"answered": 0, "failed": 0}
    hung: list[str] = []
    lock = threading.Lock()

    def traffic(refs: list) -> None:  # type: ignore[type-arg]
        i = 0
        while not stop.is_set():
            ref = refs[i % len(refs)]
            i += 1
            started = time.monotonic()
            try:
                ref.ask("inc", timeout=3.0)
                key = "answered"
            except AskTimeout:
                key = "failed"
                hung.append(repr(ref))
            except GorilixError:
                key = "failed"
            if time.monotonic() - started > 4.0:
                hung.append(f"{ref} took {time.monotonic() - started:.1f} s")
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=traffic, args=(children[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    kills = 0
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            wait_for(lambda: all(w.alive for w in system.workers()), what="workers back")
            system.kill_worker(kills % 2)
            kills += 1
            time.sleep(0.3)  # the cadence of the drill, not a synchronisation
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads), "a traffic thread hung"
    assert kills >= 8
    assert hung == []  # every ask got an answer or an error well before its timeout
    assert outcomes["answered"] > 100
    for ref in children:  # every permanent child answers at the end
        assert wait_for(lambda ref=ref: _answers(ref), what=f"{ref} answers") is True


def _answers(ref) -> bool:  # type: ignore[no-untyped-def]
    try:
        ref.ask("get", timeout=2.0)
        return True
    except GorilixError:
        return False
