"""The node<->worker protocol: every message survives its wire form, and a bad one is refused whole."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gorilix.transport import codec
from gorilix.transport.errors import DecodeError, error_to_wire
from gorilix.workers import protocol
from gorilix.workers.protocol import (
    WORKER_OPS,
    WORKER_REPORTS,
    AttachWorker,
    DeadLetter,
    Demonitor,
    Exited,
    ExitSignal,
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
from gorilix.workers.spec import make_spec

SPEC = make_spec("pkg.mod:Cls", (1, "two"), {"three": 3.0}, name="named", mailbox_size=8)

OPS = [Spawn(1 << 40, SPEC), StopActor(5, "shutdown"), Suspend(5, "shutdown"), Restart(5, "boom"),
       ExitSignal(5, ("n2", 9, None), "killed"), ExitSignal(5, ("n2", 9, "named"), "normal"), Reload("pkg.mod"),
       Shutdown()]
REPORTS = [AttachWorker(0, 12, 4321), Spawned(5), SpawnFailed(5, error_to_wire(RuntimeError("no"))),
           Exited(5, "RuntimeError: boom", True, False), Restarted(5), Monitor(5, "n2", 9), Demonitor(5, "n2", 9),
           Link(5, "n1", 6), Unlink(5, "n1", 6), DeadLetter(5, "MailboxFull: full"), Load(3, 2, 100, 0, 1),
           Reloaded("pkg.mod", 2, None), Reloaded("pkg.mod", 0, "ImportError: x"), Register(5, SPEC),
           SpawnAt(5, SPEC, 1), SpawnAt(5, SPEC, None)]


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
