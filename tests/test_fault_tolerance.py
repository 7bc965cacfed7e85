"""Supervision trees, monitors, links, GenServer, mailboxes, topics: real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from actors import (
    AsyncKeyValue,
    Echo,
    KeyValue,
    Recorder,
    SlowCounter,
    Stateful,
    Subscriber,
    Watcher,
)
from conftest import wait_for

from gorilix import (
    ActorError,
    ActorNotFound,
    ActorSystem,
    Down,
    Exit,
    GorilixError,
    MailboxFull,
    supervisor,
)
from gorilix.supervisor import ChildSpec, Strategy


def counters(sup: supervisor.SupervisorRef, *labels: str, **spec: object) -> list:  # type: ignore[type-arg]
    refs = [sup.add_child(ChildSpec(id=label, actor_class=Stateful, args=(label,), **spec)) for label in labels]  # type: ignore[arg-type]
    for ref in refs:
        ref.ask("inc")
    return refs


def crash(ref) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ActorError, match="crashed on purpose"):
        ref.ask("crash")


@pytest.mark.parametrize(
    ("kind", "reset"),
    [
        (supervisor.ONE_FOR_ONE, [False, True, False]),
        (supervisor.ONE_FOR_ALL, [True, True, True]),
        (supervisor.REST_FOR_ONE, [False, True, True]),
    ],
)
def test_strategies_across_workers(system: ActorSystem, kind: str, reset: list[bool]) -> None:
    sup = system.spawn_supervisor("sup", Strategy(kind))
    a = sup.add_child(ChildSpec(id="a", actor_class=Stateful, args=("a",), worker=0))
    b = sup.add_child(ChildSpec(id="b", actor_class=Stateful, args=("b",), worker=1))
    c = sup.add_child(ChildSpec(id="c", actor_class=Stateful, args=("c",), worker=0))
    for ref in (a, b, c):
        ref.ask("inc")
    crash(b)
    # Each child answers through the same ref; a restarted one starts from 0.
    expected = [1 if r else 2 for r in reset]
    assert [ref.ask("inc") for ref in (a, b, c)] == expected
    assert [key for key, _ in sup.children()] == ["a", "b", "c"]


def test_children_add_and_remove(system: ActorSystem) -> None:
    sup = system.spawn_supervisor("sup")
    a, b = counters(sup, "a", "b")
    assert sup.children() == [("a", a), ("b", b)]
    with pytest.raises(GorilixError, match="already has a child 'a'"):
        sup.add_child(ChildSpec(id="a", actor_class=Echo))
    assert sup.remove_child("a") is True
    assert sup.remove_child("a") is False
    with pytest.raises(ActorNotFound):
        a.ask("get")
    assert sup.children() == [("b", b)]


def test_restart_types_under_a_supervisor(system: ActorSystem) -> None:
    sup = system.spawn_supervisor("sup", Strategy(max_restarts=10))
    permanent, transient, temporary = (
        sup.add_child(ChildSpec(id=kind, actor_class=Stateful, args=(kind,), restart=kind))
        for kind in (supervisor.PERMANENT, supervisor.TRANSIENT, supervisor.TEMPORARY)
    )
    # A normal exit: only the permanent child comes back.
    assert permanent.ask("stop") == "stopping"
    assert transient.ask("stop") == "stopping"
    assert wait_for(lambda: _answer(permanent), what="permanent child back") == (0,)
    with pytest.raises(ActorNotFound):
        transient.ask("get")
    # A crash: the temporary child does not come back.
    crash(temporary)
    with pytest.raises(ActorNotFound):
        temporary.ask("get")
    assert [key for key, _ in sup.children()] == ["permanent"]


def _answer(ref):  # type: ignore[no-untyped-def]
    """(answer,) once the actor answers; None while it is away."""
    try:
        return (ref.ask("get", timeout=2.0),)
    except ActorNotFound:
        return None


def test_too_many_restarts_stops_the_subtree(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    sup = system.spawn_supervisor("fragile", Strategy(max_restarts=1, within_seconds=60), restart="temporary")
    first = sup.add_child(ChildSpec(id="first", actor_class=Stateful, args=("first", log)))
    second = sup.add_child(ChildSpec(id="second", actor_class=Stateful, args=("second", log)))
    crash(second)
    assert second.ask("inc") == 1
    crash(second)  # the second restart within the window: the supervisor gives up
    for ref in (first, second):
        wait_for(lambda ref=ref: _gone(ref), what=f"{ref} stopped")
    with pytest.raises(GorilixError, match="stopped"):
        sup.children()
    def shutdowns() -> list:  # type: ignore[type-arg]
        return [entry for entry in log.ask(("get",)) if entry[1] == "shutdown"]

    # `second` was already down when the supervisor gave up: only `first` is shut down.
    assert wait_for(shutdowns, what="first shut down") == [("first", "shutdown")]


def _gone(ref) -> bool:  # type: ignore[no-untyped-def]
    try:
        ref.ask("get", timeout=2.0)
    except ActorNotFound:
        return True
    return False


def test_escalation_reaches_the_parent_which_restarts_the_subtree(system: ActorSystem) -> None:
    top = system.spawn_supervisor("top", Strategy(max_restarts=5))
    inner = top.add_supervisor("inner", Strategy(max_restarts=0))
    sibling = top.add_child(ChildSpec(id="sibling", actor_class=Stateful, args=("sibling",)))
    a, b = counters(inner, "a", "b")
    sibling.ask("inc")
    crash(a)  # inner allows no restart: it fails, top restarts it (and so both children)
    assert wait_for(lambda: a.ask("get") == 0 and b.ask("get") == 0, what="inner subtree restarted")
    assert sibling.ask("get") == 1  # top is one_for_one: the sibling kept its state
    assert [key for key, _ in top.children()] == ["inner", "sibling"]


def test_stopping_a_supervisor_stops_its_subtree_in_reverse_order(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    sup = system.spawn_supervisor("sup")
    refs = [sup.add_child(ChildSpec(id=n, actor_class=Stateful, args=(n, log), worker=i % 2))
            for i, n in enumerate(["one", "two", "three"])]
    assert sup.stop() is True
    wait_for(lambda: len(log.ask(("get",))) == 3, what="three on_stop calls")
    for ref in refs:
        with pytest.raises(ActorNotFound):
            ref.ask("get")
    stopped = [label for label, reason in log.ask(("get",)) if reason == "shutdown"]
    assert sorted(stopped) == ["one", "three", "two"]


def test_worker_death_restarts_supervised_children_elsewhere(system: ActorSystem) -> None:
    sup = system.spawn_supervisor("sup", Strategy(supervisor.ONE_FOR_ONE, max_restarts=3))
    on_zero = [sup.add_child(ChildSpec(id=f"z{i}", actor_class=Stateful, worker=0)) for i in range(5)]
    on_one = sup.add_child(ChildSpec(id="o", actor_class=Stateful, worker=1))
    on_one.ask("inc")
    system.kill_worker(0)
    pids = {ref.ask("pid", timeout=10.0) for ref in on_zero}
    assert pids == {on_one.ask("pid")}  # re-created on the live worker
    assert on_one.ask("get") == 1  # one incident for five children: no escalation, sibling kept


def test_monitor_gets_down_for_each_cause(system: ActorSystem) -> None:
    watcher = system.spawn(Watcher, worker=1)
    crashing = system.spawn(Stateful, "c", worker=0)
    stopping = system.spawn(Stateful, "s", worker=0, restart="transient")
    dying = system.spawn(Stateful, "d", worker=0)
    for ref in (crashing, stopping, dying):
        assert watcher.ask(("watch", ref)) == "watching"
    watcher.ask(("watch", system.spawn(Echo)))
    crash(crashing)
    stopping.ask("stop")
    wait_for(lambda: len(watcher.ask("get")) == 2, what="two Down messages")
    system.kill_worker(0)
    downs = wait_for(lambda: len(d := watcher.ask("get")) == 3 and d, what="third Down")
    assert all(isinstance(d, Down) for d in downs)
    reasons = {d.ref: d.reason for d in downs}
    assert reasons[crashing].startswith("crashed: RuntimeError")
    assert reasons[stopping] == "normal"
    assert reasons[dying].startswith("worker 0 died (signal SIGKILL)")


def test_monitor_of_a_missing_actor_and_demonitor(system: ActorSystem) -> None:
    watcher = system.spawn(Watcher)
    target = system.spawn(Stateful, "t")
    ghost = system.spawn(Echo)
    ghost.stop()
    wait_for(lambda: _gone(ghost), what="ghost gone")
    watcher.ask(("watch", ghost))
    watcher.ask(("watch", target))
    watcher.ask(("unwatch", target))
    crash(target)
    downs = wait_for(lambda: watcher.ask("get"), what="noproc Down")
    assert downs == [Down(ghost, "noproc")]


def test_links_crash_together_unless_trapping(system: ActorSystem) -> None:
    a = system.spawn(Watcher, worker=0)
    b = system.spawn(Stateful, "b", worker=1)
    trapper = system.spawn(Watcher, True, worker=1)
    b.ask("inc")
    assert a.ask(("link", b)) == "linked"
    assert trapper.ask(("link", b)) == "linked"
    a.ask("ping")
    crash(b)
    # a crashed with b and was restarted (state reset); the trapper got an Exit message.
    assert wait_for(lambda: a.ask("get") == [], what="linked actor restarted")
    exits = wait_for(lambda: trapper.ask("get"), what="Exit message")
    assert len(exits) == 1 and isinstance(exits[0], Exit)
    assert exits[0].ref == b and exits[0].reason.startswith("crashed: RuntimeError")
    assert b.ask("get") == 0


def test_genserver_call_cast_info_and_errors(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    kv = system.spawn(KeyValue, log)
    kv.cast(("colour", "green"))
    assert kv.call("colour") == "green"
    kv.tell("a plain message")
    assert kv.call("infos") == ["a plain message"]
    with pytest.raises(ActorError) as caught:
        kv.call("boom")
    assert caught.value.remote_type == "KeyError"
    assert kv.call("colour") is None  # restarted after the crash: fresh state
    kv.stop()
    wait_for(lambda: ("kv stopped", "shutdown") in log.ask(("get",)), what="on_stop with its reason")
    crashed = [r for _, r in log.ask(("get",)) if r.startswith("crashed")]
    assert crashed and "KeyError" in crashed[0]
    assert system.spawn(AsyncKeyValue).call(5) == ("async", 5)


def test_bounded_mailbox(system: ActorSystem, tmp_path: Path) -> None:
    started = tmp_path / "started"
    slow = system.spawn(SlowCounter, str(started), mailbox_size=1)
    before = system.dead_letters().count
    slow.tell(8.0)  # keeps it busy for 8 s; its mailbox holds one more message
    wait_for(started.exists, what="the actor inside its long message")  # (else the first 0.0 might wait beside it)
    for _ in range(5):
        slow.tell(0.0)
    with pytest.raises(MailboxFull, match=r"is full \(1 message\)$"):  # (it said "1 messages")
        slow.ask("get", timeout=5.0)
    letters = wait_for(lambda: (d := system.dead_letters()).count >= before + 4 and d, what="dead letters")
    assert any("MailboxFull" in letter["reason"] for letter in letters.recent)
    assert letters.count - before == 4  # one tell queued, four refused
    # Every tell was either handled or counted as a dead letter: none vanished.
    assert wait_for(lambda: _count_when_free(slow) == 1 + 1, 20, what="accepted tells handled")


def _count_when_free(ref):  # type: ignore[no-untyped-def]
    try:
        return ref.ask("get", timeout=15.0)  # it may queue behind the 8 s message
    except MailboxFull:
        return None


def test_topics_reach_every_subscriber(system: ActorSystem) -> None:
    subs = [system.spawn(Subscriber, "news", worker=i % 2) for i in range(3)]
    other = system.spawn(Subscriber, "sport")
    wait_for(lambda: system.publish("news", "probe") == 3, what="subscriptions in place")
    assert system.publish("news", {"headline": 1}) == 3
    subs[0].tell(("publish", "news", "from an actor"))
    for sub in subs:
        wait_for(lambda sub=sub: sub.ask("get")[-2:] == [{"headline": 1}, "from an actor"], what="delivery")
    assert other.ask("get") == []
    assert system.unsubscribe("news", subs[1]) is True
    assert system.publish("news", "fewer") == 2
    subs[2].stop()
    wait_for(lambda: system.publish("news", "fewer") == 1, what="stopped subscriber dropped")
    before = system.dead_letters().count
    assert system.publish("nobody-listens", 1) == 0
    assert system.dead_letters().count == before + 1
    system.subscribe("sport", subs[0])
    assert system.publish("sport", "goal") == 2


def test_siblings_restarted_or_removed_by_a_strategy_are_exits_too(system: ActorSystem) -> None:
    log = system.spawn(Recorder)
    watcher = system.spawn(Watcher)
    sup = system.spawn_supervisor("sup", Strategy(supervisor.ONE_FOR_ALL))
    failing = sup.add_child(ChildSpec(id="failing", actor_class=Stateful, args=("failing", log)))
    sibling = sup.add_child(ChildSpec(id="sibling", actor_class=Stateful, args=("sibling", log)))
    temp = sup.add_child(ChildSpec(id="temp", actor_class=Stateful, args=("temp", log), restart="temporary"))
    for ref in (sibling, temp):
        watcher.ask(("watch", ref))
    crash(failing)
    downs = wait_for(lambda: len(d := watcher.ask("get")) == 2 and d, what="Down for both siblings")
    assert {d.ref: d.reason for d in downs} == {sibling: "shutdown", temp: "shutdown"}
    assert ("sibling", "shutdown") in wait_for(lambda: log.ask(("get",)), what="on_stop logged")
    assert sibling.ask("get") == 0  # restarted
    with pytest.raises(ActorNotFound):
        temp.ask("get")  # a temporary sibling is not brought back
    assert [key for key, _ in sup.children()] == ["failing", "sibling"]


def test_a_supervisor_is_an_actor_too_monitors_links_and_asks(system: ActorSystem) -> None:
    top = system.spawn_supervisor("top", Strategy(max_restarts=5))
    inner = top.add_supervisor("inner", Strategy(max_restarts=0))
    a, b = counters(inner, "a", "b")
    watcher = system.spawn(Watcher, worker=0)
    trapper = system.spawn(Watcher, True, worker=1)
    assert watcher.ask(("watch", inner.ref)) == "watching"
    assert trapper.ask(("link", inner.ref)) == "linked"

    assert inner.ref.ask("which_children") == [("a", a), ("b", b)]
    assert inner.ref.ask("count_children") == {"specs": 2, "active": 2, "supervisors": 0, "workers": 2}
    assert top.ref.ask("count_children") == {"specs": 1, "active": 1, "supervisors": 1, "workers": 0}
    assert top.ref.ask("which_children") == [("inner", inner.ref)]
    with pytest.raises(GorilixError, match="answers 'which_children' and 'count_children'"):
        inner.ref.ask("hello")

    crash(a)  # inner allows no restart: it gives up, and top restarts it under the same ref
    downs = wait_for(lambda: watcher.ask("get"), what="Down for the supervisor that gave up")
    assert len(downs) == 1 and isinstance(downs[0], Down) and downs[0].ref == inner.ref
    assert "inner" in downs[0].reason and downs[0].reason != "shutdown"
    exits = wait_for(lambda: trapper.ask("get"), what="Exit for the linked supervisor")
    assert len(exits) == 1 and isinstance(exits[0], Exit) and exits[0].ref == inner.ref
    assert wait_for(lambda: a.ask("get") == 0 and b.ask("get") == 0, what="inner subtree restarted")
    assert inner.ref.ask("count_children")["active"] == 2

    # A monitor fires once; watch again, then stop the subtree through the actor ref.
    watcher.ask(("watch", inner.ref))
    inner.ref.stop()
    downs = wait_for(lambda: watcher.ask("get")[1:], what="Down for the stopped supervisor")
    assert downs == [Down(inner.ref, "shutdown")]
    for ref in (a, b):
        wait_for(lambda ref=ref: _gone(ref), what=f"{ref} stopped with its supervisor")
    assert top.children() == []
    # A stopped supervisor is gone like any actor: noproc, and asks fail fast.
    watcher.ask(("watch", inner.ref))
    assert wait_for(lambda: watcher.ask("get")[2:], what="noproc") == [Down(inner.ref, "noproc")]
    with pytest.raises(ActorNotFound):
        inner.ref.ask("count_children")
