"""A failover drill: kill a worker process, and its actors answer again.

The actors on the killed worker are re-created on a live worker. Their refs
and names stay valid; their state starts afresh, as after any restart. Run it
with:

    python examples/failover.py
"""

from __future__ import annotations

import os
import signal
import time

from gorilix import Actor, ActorSystem


class Account(Actor):
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.deposits = 0

    def receive(self, message: str) -> dict[str, object]:
        if message == "deposit":
            self.deposits += 1
        return {"owner": self.owner, "deposits": self.deposits, "pid": os.getpid()}


def wait_until_all_alive(system: ActorSystem, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(w.alive for w in system.workers()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not all back within {timeout:g} s")
        time.sleep(0.01)


def main() -> None:
    with ActorSystem("failover", workers=2) as system:
        owners = ["ada", "bob", "cy"]
        refs = [system.spawn(Account, owner, name=owner, worker=0) for owner in owners]
        for ref in refs:
            ref.ask("deposit")
        before = {w.id: w.pid for w in system.workers()}
        print(f"3 named actors on worker 0 (pid {before[0]}); worker 1 is pid {before[1]}")

        # The node logs a warning on stderr when it sees the worker die.
        started = time.perf_counter()
        pid = system.kill_worker(0, signal.SIGKILL)
        answers = [ref.ask("balance", timeout=10.0) for ref in refs]
        took_ms = (time.perf_counter() - started) * 1e3
        print(f"killed worker 0 (pid {pid})")
        for answer in answers:
            print(
                f"  {answer['owner']} answered again from pid {answer['pid']}, "
                f"deposits {answer['deposits']} (state starts afresh)"
            )
        print(f"all {len(refs)} refs answered again {took_ms:.0f} ms after the kill")
        assert system.whereis("bob") == refs[1], "the name should still lead to the same ref"

        wait_until_all_alive(system)
        for w in system.workers():
            print(
                f"worker {w.id}: pid {w.pid}, alive {w.alive}, {w.actors} actors, "
                f"{w.restarts} restarts"
            )
        assert system.workers()[0].pid != before[0], "worker 0 should have a new pid"


if __name__ == "__main__":
    main()
