"""The node<->worker protocol: every message survives its wire form, and a bad one is refused whole."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from gorilix.transport import codec
from gorilix.transport.errors import DecodeError, error_to_wire
from gorilix.transport.frames import CONTROL_ID, TELL, message_frames
from gorilix.workers import protocol
from gorilix.workers.asks import PendingAsks
from gorilix.workers.inbox import Inbox
from gorilix.workers.outbox import Outbox
from gorilix.workers.protocol import (
    WORKER_OPS,
    WORKER_REPORTS,
    AttachWorker,
    DeadLetter,
    Demonitor,
    Exited,
    ExitSignal,
    HandedOff,
    Handoff,
    Link,
    Load,
    Monitor,
    Register,
    Reload,
    Reloaded,
    Restart,
    Restarted,
    Shutdown,
    Spawn,
    SpawnAt,
    Spawned,
    SpawnFailed,
    StopActor,
    Suspend,
    Unlink,
    op_from_wire,
    report_from_wire,
)
from gorilix.workers.ref import ActorRef
from gorilix.workers.scheduler import Scheduler
from gorilix.workers.spec import ActorSpec, make_spec

SPEC = make_spec("pkg.mod:Cls", (1, "two"), {"three": 3.0}, name="named", mailbox_size=8)

OPS = [Spawn(1 << 40, SPEC), StopActor(5, "shutdown"), Suspend(5, "shutdown"), Restart(5, "boom"),
       ExitSignal(5, ("n2", 9, None), "killed"), ExitSignal(5, ("n2", 9, "named"), "normal"), Reload("pkg.mod"),
       Shutdown(), Handoff(5)]
REPORTS = [AttachWorker(0, 12, 4321), Spawned(5), SpawnFailed(5, error_to_wire(RuntimeError("no"))),
           Exited(5, "RuntimeError: boom", True, False), Restarted(5), Monitor(5, "n2", 9), Demonitor(5, "n2", 9),
           Link(5, "n1", 6), Unlink(5, "n1", 6), DeadLetter(5, "MailboxFull: full"), Load(3, 2, 100, 0, 1),
           Reloaded("pkg.mod", 2, None), Reloaded("pkg.mod", 0, "ImportError: x"), Register(5, SPEC),
           SpawnAt(5, SPEC, 1), SpawnAt(5, SPEC, None), HandedOff(5),
           Register(5, make_spec("pkg.mod:Cls", (), {}, movable=True))]


def test_every_message_type_is_covered_here() -> None:
    assert {type(m) for m in OPS} == set(WORKER_OPS.values())
    assert {type(m) for m in REPORTS} == set(WORKER_REPORTS.values())
    assert not set(WORKER_OPS) & set(WORKER_REPORTS)


@pytest.mark.parametrize("message", OPS, ids=lambda m: type(m).__name__)
def test_an_op_survives_the_wire(message: Any) -> None:
    assert op_from_wire(codec.decode(codec.encode(message.to_wire()))) == message


@pytest.mark.parametrize("message", REPORTS, ids=lambda m: type(m).__name__)
def test_a_report_survives_the_wire(message: Any) -> None:
    assert report_from_wire(codec.decode(codec.encode(message.to_wire()))) == message


@pytest.mark.parametrize("message", [*OPS, *REPORTS], ids=lambda m: type(m).__name__)
def test_messages_are_frozen_and_slotted(message: Any) -> None:
    assert not hasattr(message, "__dict__")
    for field in dataclasses.fields(message):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field.name, None)


@pytest.mark.parametrize("wire", [
    None, [], "spawned", [5], ["no_such_op", 1],
    ["spawned"], ["spawned", 1, 2], ["spawned", "1"], ["spawned", True], ["spawned", 1.0],
    ["exited", 5, "boom", 1, False],  # a bool is asked for: 1 is not one
    ["exited", 5, b"boom", True, False],
    ["attach_worker", 0, 1],
    ["load", 1, 2, 3, 4, "5"],
    ["reloaded", "m", 0, 5],
    ["register", 5, ["pkg.mod:Cls"]], ["register", 5, "spec"], ["spawn_at", 5, SPEC.to_wire(), "1"],
    ["spawn_failed", 5, "not a record"],
], ids=repr)
def test_a_bad_report_is_refused_whole(wire: Any) -> None:
    with pytest.raises(DecodeError):
        report_from_wire(wire)


@pytest.mark.parametrize("wire", [
    ["spawn", 5], ["spawn", "5", SPEC.to_wire()], ["spawn", 5, ["a:B", "not bytes", None, "permanent", None]],
    ["exit_signal", 5, ["n", 9], "r"], ["exit_signal", 5, ["n", "9", None], "r"], ["exit_signal", 5, ["n", 9, 3], "r"],
    ["stop_actor", 5], ["reload", 5], ["shutdown", 1], ["spawned", 5],  # a report is no op
], ids=repr)
def test_a_bad_op_is_refused_whole(wire: Any) -> None:
    with pytest.raises(DecodeError):
        op_from_wire(wire)


def test_the_module_names_its_two_directions() -> None:
    assert protocol.WorkerOp.__args__ == tuple(WORKER_OPS.values())  # type: ignore[attr-defined]
    assert protocol.WorkerReport.__args__ == tuple(WORKER_REPORTS.values())  # type: ignore[attr-defined]


class _RecordingControl:
    """Stands in for the worker's keeper of cells: records what the inbox asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _inbox(control: _RecordingControl, loop: asyncio.AbstractEventLoop) -> Inbox:
    outbox = Outbox("n1", 1 << 40)
    return Inbox("n1", 0, 1 << 40, {}, Scheduler(None, loop), PendingAsks(loop), outbox, control)  # type: ignore[arg-type]


def _control_frames(value: Any) -> list[bytes]:
    return message_frames("n1", CONTROL_ID, TELL, "n1", CONTROL_ID, codec.encode(value))


def test_a_worker_runs_each_op_the_node_sends_by_its_type(loop: asyncio.AbstractEventLoop) -> None:
    control = _RecordingControl()
    inbox = _inbox(control, loop)
    for op in OPS:
        inbox.dispatch(_control_frames(op.to_wire()))
    names = [name for name, _ in control.calls]
    assert names == ["spawn_for_node", "stop_actor", "suspend", "restart", "exit_signal", "exit_signal", "reload",
                     "shutdown", "hand_off"]
    assert control.calls[-1] == ("hand_off", (5,))
    assert control.calls[0] == ("spawn_for_node", (1 << 40, SPEC))
    assert control.calls[4][1][1] == ActorRef("n2", 9) and control.calls[4][1][2] == "killed"
    assert inbox.malformed == 0


def test_a_worker_counts_an_op_it_cannot_parse_and_runs_nothing_of_it(loop: asyncio.AbstractEventLoop) -> None:
    # The worker read ops field by field and checked no type: ["restart", "5", "r"] went to the
    # cells as a restart of actor "5", and ["shutdown", "now"] shut the worker down.
    control = _RecordingControl()
    inbox = _inbox(control, loop)
    bad = [["spawn", 5], ["stop_actor", 5], ["exit_signal", 5, ["n", 9, None]], ["restart", "5", "r"],
           ["reload"], ["shutdown", "now"], ["spawned", 5], "shutdown", None]
    for value in bad:
        inbox.dispatch(_control_frames(value))
    assert control.calls == [] and inbox.malformed == len(bad)


def test_a_spec_of_the_first_release_without_movable_is_read_as_not_movable() -> None:
    old = SPEC.to_wire()[:5]
    assert ActorSpec.from_wire(old) == SPEC and SPEC.movable is False
    with pytest.raises(DecodeError):
        Spawn.from_fields([5, [*SPEC.to_wire()[:5], "yes"]])  # movable must be a bool
    with pytest.raises(DecodeError):
        Spawn.from_fields([5, [*SPEC.to_wire(), False]])  # seven fields
