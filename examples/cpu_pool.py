"""CPU-bound work on a pool of actors: one actor versus one actor per worker.

Each worker is its own process with its own interpreter, so pure-Python work
on different workers runs in parallel. Run it with:

    python examples/cpu_pool.py
"""

from __future__ import annotations

import time

from gorilix import Actor, ActorSystem


def count_primes(limit: int) -> int:
    """Pure-Python CPU work: how many primes are below ``limit``."""
    count = 0
    for n in range(2, limit):
        for d in range(2, int(n**0.5) + 1):
            if n % d == 0:
                break
        else:
            count += 1
    return count


class PrimeCounter(Actor):
    def receive(self, limit: int) -> int:
        return count_primes(limit)


def timed_map(pool, items: list[int]) -> tuple[list[int], float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    results = pool.map(items, timeout=120.0)
    return results, time.perf_counter() - start


def main() -> None:
    with ActorSystem("cpu-pool") as system:  # one worker process per core
        workers = len(system.workers())
        items = [50_000] * (4 * workers)  # a few tens of milliseconds each

        one = system.spawn_pool(PrimeCounter, size=1)
        many = system.spawn_pool(PrimeCounter)  # default size: one actor per worker

        expected, one_s = timed_map(one, items)
        results, many_s = timed_map(many, items)
        assert results == expected, "the pool gave different answers"

        print(f"{len(items)} tasks on 1 actor: {one_s:.2f} s")
        print(f"{len(items)} tasks on {workers} actors, one per worker: {many_s:.2f} s")
        print(f"speedup {one_s / many_s:.2f}x with {workers} workers")


if __name__ == "__main__":
    main()
