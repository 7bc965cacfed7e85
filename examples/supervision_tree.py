"""A supervision tree: nested supervisors, a crash, a restart, fresh state.

    app (one_for_one)
    +-- storage (one_for_all, a nested supervisor)
    |   +-- cache   (worker 0)
    |   +-- disk    (worker 1)
    +-- api         (worker 0, registered as "api")
    +-- flaky (one_for_one, gives up after 1 restart within 60 s)
        +-- job

A crash of `disk` restarts both storage children (one_for_all) while `api`
keeps its state; a crash of `api` restarts `api` alone. Then `flaky` gives
up, and its parent `app` restarts the whole `flaky` subtree. The worker log
prints each crash's traceback on stderr; that is expected. Run it with:

    python examples/supervision_tree.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gorilix import Actor, ActorError, ActorRef, ActorSystem, supervisor
from gorilix.supervisor import ChildSpec, Strategy


class Counter(Actor):
    """Counts "inc" messages; "crash" raises; state lives in an attribute."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0

    def receive(self, message: str) -> int:
        if message == "crash":
            raise RuntimeError(f"{self.label} crashed on purpose")
        if message == "inc":
            self.count += 1
        return self.count


def crash(ref: ActorRef) -> str:
    try:
        ref.ask("crash")
    except ActorError as exc:
        return f"{exc.remote_type}: {exc.remote_message}"
    raise AssertionError("the crash should have reached the asker")


def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Restarts are asynchronous: wait until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def show(sup: supervisor.SupervisorRef, indent: str = "  ") -> None:
    for key, ref in sup.children():
        print(f"{indent}{key}: {ref!r}")
        if isinstance(ref, supervisor.SupervisorRef):
            show(ref, indent + "  ")


def main() -> None:
    with ActorSystem("tree", workers=2) as system:
        app = system.spawn_supervisor("app", Strategy(supervisor.ONE_FOR_ONE, max_restarts=5))
        storage = app.add_supervisor("storage", Strategy(supervisor.ONE_FOR_ALL))
        cache = storage.add_child(ChildSpec(id="cache", actor_class=Counter, args=("cache",), worker=0))
        disk = storage.add_child(ChildSpec(id="disk", actor_class=Counter, args=("disk",), worker=1))
        api = app.add_child(ChildSpec(id="api", actor_class=Counter, args=("api",), name="api", worker=0))
        flaky = app.add_supervisor("flaky", Strategy(max_restarts=1, within_seconds=60.0))
        job = flaky.add_child(ChildSpec(id="job", actor_class=Counter, args=("job",)))
        print("tree:")
        show(app)

        for ref in (cache, disk, api, api, job):
            ref.ask("inc")
        print(f"before: cache={cache.ask('get')} disk={disk.ask('get')} api={api.ask('get')}")

        print(f"disk: {crash(disk)}")
        until(lambda: cache.ask("get") == 0 and disk.ask("get") == 0)
        assert api.ask("get") == 2
        print(f"storage is one_for_all: cache={cache.ask('get')} disk={disk.ask('get')} "
              f"(restarted with fresh state); api={api.ask('get')} (kept its state)")

        print(f"api: {crash(api)}")
        assert api.ask("get") == 0 and system.whereis("api") == api
        print(f"api restarted with fresh state: api={api.ask('get')}, same ref and name; "
              f"disk={disk.ask('inc')} (untouched)")

        job.ask("inc")
        print(f"job: {crash(job)}  (flaky restarts it: 1 restart allowed)")
        job.ask("inc")
        print(f"job: {crash(job)}  (2 restarts within 60 s: flaky gives up, app restarts it)")
        until(lambda: job.ask("get") == 0)
        print(f"flaky subtree restarted by app: job={job.ask('get')}; "
              f"flaky still listed: {[key for key, _ in app.children()]}")

        assert app.stop() is True  # the whole subtree, last-started child first
        print("app stopped: its subtree is gone")


if __name__ == "__main__":
    main()
