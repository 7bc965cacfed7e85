"""The node's book of actors: where each lives, how to re-create it, names."""

from __future__ import annotations

from dataclasses import dataclass

from gorilix.transport.describe import shown
from gorilix.transport.errors import GorilixError, InvalidArgument
from gorilix.workers.spec import NAME_MAX, ActorSpec, valid_name


@dataclass(slots=True)
class ActorRecord:
    id: int
    spec: ActorSpec
    slot: int | None  # the worker hosting it, or None while waiting for one
    placed: bool = False  # the worker confirmed it runs there
    started: bool = False  # it ran at least once (a failure after that is a restart's)
    supervisor: int = 0  # the supervisor's id (0 until adopted)
    key: str = ""  # its child id within that supervisor


class Registry:
    def __init__(self) -> None:
        self.actors: dict[int, ActorRecord] = {}
        self.names: dict[str, int] = {}
        self._by_slot: dict[int | None, set[int]] = {}
        self._names_of: dict[int, set[str]] = {}

    def add(self, record: ActorRecord) -> None:
        self.actors[record.id] = record
        self._by_slot.setdefault(record.slot, set()).add(record.id)

    def move(self, actor_id: int, slot: int | None, placed: bool = False) -> None:
        record = self.actors[actor_id]
        self._by_slot.get(record.slot, set()).discard(actor_id)
        record.slot = slot
        record.placed = placed
        record.started = record.started or placed
        self._by_slot.setdefault(slot, set()).add(actor_id)

    def evacuate(self, slot: int) -> list[int]:
        """Every actor of ``slot`` is on no worker now (its worker died); returns their ids in start order."""
        ids = self._by_slot.pop(slot, set())
        actors = self.actors
        for actor_id in ids:
            record = actors[actor_id]
            record.slot = None
            record.placed = False
        self._by_slot.setdefault(None, set()).update(ids)
        return sorted(ids)

    def remove(self, actor_id: int) -> ActorRecord | None:
        record = self.actors.pop(actor_id, None)
        if record is None:
            return None
        self._by_slot.get(record.slot, set()).discard(actor_id)
        for name in self._names_of.pop(actor_id, ()):
            if self.names.get(name) == actor_id:
                del self.names[name]
        return record

    def on_slot(self, slot: int | None) -> list[ActorRecord]:
        return [self.actors[i] for i in sorted(self._by_slot.get(slot, ()))]

    def count(self, slot: int | None) -> int:
        return len(self._by_slot.get(slot, ()))

    def least_loaded(self, slots: list[int]) -> int | None:
        """The slot with the fewest actors (lowest number on ties), or None."""
        if not slots:
            return None
        return min(slots, key=lambda s: (self.count(s), s))

    def register_name(self, name: str, actor_id: int) -> None:
        if not valid_name(name):  # the facade checks too; this guards requests from remote tools
            raise InvalidArgument(f"a name must be a non-empty str of at most {NAME_MAX} characters, got {shown(name)}")
        owner = self.names.get(name)
        if owner is not None and owner != actor_id:
            raise GorilixError(f"name {name!r} is already registered to actor {owner:#x}; unregister it first")
        if actor_id not in self.actors:
            raise GorilixError(f"cannot register {name!r}: no actor {actor_id:#x} on this node")
        self.names[name] = actor_id
        self._names_of.setdefault(actor_id, set()).add(name)

    def unregister_name(self, name: str) -> bool:
        owner = self.names.pop(name, None)
        if owner is None:
            return False
        self._names_of.get(owner, set()).discard(name)
        return True
