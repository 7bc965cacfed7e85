"""Who watches whom: monitors, links and topic subscriptions, as plain data.

Monitors and links belong to one incarnation: they fire once, when the
watched actor exits, and those an actor held are dropped when it exits.
Topic subscriptions belong to the ref, so they survive restarts and end only
when the actor is gone for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Watches:
    monitors: dict[int, set[int]] = field(default_factory=dict)  # watched -> watchers
    watching: dict[int, set[int]] = field(default_factory=dict)  # watcher -> watched
    links: dict[int, set[int]] = field(default_factory=dict)
    topics: dict[str, set[int]] = field(default_factory=dict)

    def monitor(self, watcher: int, watched: int) -> None:
        self.monitors.setdefault(watched, set()).add(watcher)
        self.watching.setdefault(watcher, set()).add(watched)

    def demonitor(self, watcher: int, watched: int) -> None:
        self.monitors.get(watched, set()).discard(watcher)
        self.watching.get(watcher, set()).discard(watched)

    def link(self, a: int, b: int) -> None:
        if a != b:
            self.links.setdefault(a, set()).add(b)
            self.links.setdefault(b, set()).add(a)

    def unlink(self, a: int, b: int) -> None:
        self.links.get(a, set()).discard(b)
        self.links.get(b, set()).discard(a)

    def exited(self, actor_id: int) -> tuple[set[int], set[int]]:
        """The actor's incarnation ended: returns (watchers to tell, linked to signal)."""
        watchers = self.monitors.pop(actor_id, set())
        for watcher in watchers:
            self.watching.get(watcher, set()).discard(actor_id)
        for watched in self.watching.pop(actor_id, set()):
            self.monitors.get(watched, set()).discard(actor_id)
        linked = self.links.pop(actor_id, set())
        for other in linked:
            self.links.get(other, set()).discard(actor_id)
        return watchers, linked

    def subscribe(self, topic: str, actor_id: int) -> None:
        self.topics.setdefault(topic, set()).add(actor_id)

    def unsubscribe(self, topic: str, actor_id: int) -> bool:
        subscribers = self.topics.get(topic)
        if not subscribers or actor_id not in subscribers:
            return False
        subscribers.discard(actor_id)
        if not subscribers:
            del self.topics[topic]
        return True

    def subscribers(self, topic: str) -> list[int]:
        return sorted(self.topics.get(topic, ()))

    def forget(self, actor_id: int) -> None:
        """The actor is gone for good: drop its subscriptions too."""
        for topic in [t for t, ids in self.topics.items() if actor_id in ids]:
            self.unsubscribe(topic, actor_id)
