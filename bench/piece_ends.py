"""CPU per key of content-defined piece ends in the planner (`operator/planning.py`).

Feeds 300,000 keys of the "tree" shape (a few levels of prefixes, numbered names) to `Planner.add_many`
in pages of 1,000, each page made just before it is fed, as the listing's page reader hands them over
(only the feeding is timed), and prints the best of several runs in ns of CPU per key: the
hash alone (`Planner._content_ends`: CRC-32 of each key, mixed, compared with its share of a piece), the
whole page step of a planner past the exact cut (level 0), and of one that starts with a small job's
exact cut (its first 8,192 keys one at a time). Usage::

    .venv/bin/python bench/piece_ends.py
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from ferry.operator.planning import Planner

KEYS = 300_000
PAGE = 1000
RUNS = 7


def pages(seed: int = 1) -> Iterator[tuple[list[str], list[int]]]:
    """Pages of sorted keys and their sizes, each made when asked for (fresh in the CPU's caches)."""
    rnd = random.Random(seed)
    for first in range(0, KEYS, PAGE):
        names = [
            f"d{(first + i) // 10_000:02d}/sub{rnd.randrange(100):02d}/{first + i:09d}.bin"
            for i in range(PAGE)
        ]
        yield names, [rnd.randrange(1, 300_000) for _ in names]


def best_ns_per_key(feed: Callable[[list[str], list[int]], object], fresh: Callable[[], object]) -> float:
    runs = []
    for _ in range(RUNS):
        fresh()
        spent = 0
        for names, sizes in pages():
            started = time.process_time_ns()
            feed(names, sizes)
            spent += time.process_time_ns() - started
        runs.append(spent)
    return min(runs) / KEYS


def main() -> None:
    planner = Planner()

    def at(level: int | None) -> Callable[[], None]:
        def fresh() -> None:
            nonlocal planner
            planner = Planner()
            if level is not None:
                planner.raise_to(level)

        return fresh

    print(f"{KEYS:,} keys in pages of {PAGE:,}, best of {RUNS}, ns of CPU per key")
    hashing = best_ns_per_key(lambda k, s: planner._content_ends(k, s), at(0))
    print(f"hash and end test (_content_ends): {hashing:.0f}")
    content = best_ns_per_key(lambda k, s: planner.add_many(k, s), at(0))
    print(f"add_many, content-defined ends:    {content:.0f}")
    small = best_ns_per_key(lambda k, s: planner.add_many(k, s), at(None))
    print(f"add_many, from a small job's cut:  {small:.0f}")


if __name__ == "__main__":
    main()
