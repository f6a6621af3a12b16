"""Planning from a manifest whose rows come in no particular key order, in constant memory. Pure.

Where it sits: `manifestscan.py` feeds it the manifest's objects twice. Shards are contiguous key
ranges, and a listing yields keys in order, which `operator.planning.Planner` relies on; a manifest does
not (inventory files are not sorted). So the first pass keeps the size histogram, a bounded uniform
reservoir sample of keys (seeded, so the same manifest always gives the same plan) and the largest
objects exactly. Piece ends are quantiles of that sample by objects, and by bytes (the largest objects at
their own weight, the sampled rest standing for the objects it was drawn from); the second pass counts the objects and bytes of each piece
by bisection. The pieces are what the listing planner produces: contiguous, covering the whole key space
(the first starts at None, the last is open-ended), with exact counts.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ferry.model.plan import Shard
from ferry.operator.planning import BUCKET_BOUNDS, MAX_PIECES, Histogram

#: Keys each reservoir keeps: at most 1 KiB each, so a few MiB whatever the manifest's size.
SAMPLE_KEYS = 4096
#: The generator's seed: the same manifest gives the same boundaries on every run.
SEED = 20161130


@dataclass
class FirstPass:
    """Histogram and key samples of the objects seen, in memory bounded by `SAMPLE_KEYS`."""

    sample_keys: int = SAMPLE_KEYS
    seed: int = SEED
    _counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS) + 1))
    _objects: int = 0
    _bytes: int = 0
    _largest: int = 0
    _uniform: list[tuple[str, int]] = field(default_factory=list)
    #: (size, key) of the largest objects seen, a min-heap: byte quantiles count them exactly.
    _heaviest: list[tuple[int, str]] = field(default_factory=list)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(self, key: str, size: int) -> None:
        index = bisect.bisect_left(BUCKET_BOUNDS, size)
        self._counts[index] += 1
        self._objects += 1
        self._bytes += size
        self._largest = max(self._largest, size)
        # Algorithm R: after n objects, each is in the uniform sample with probability k/n.
        if len(self._uniform) < self.sample_keys:
            self._uniform.append((key, size))
        else:
            slot = self._random.randrange(self._objects)
            if slot < self.sample_keys:
                self._uniform[slot] = (key, size)
        if len(self._heaviest) < self.sample_keys:
            heapq.heappush(self._heaviest, (size, key))
        elif size > self._heaviest[0][0]:
            heapq.heapreplace(self._heaviest, (size, key))

    def add_all(self, items: Iterable[tuple[str, int]]) -> FirstPass:
        for key, size in items:
            self.add(key, size)
        return self

    @property
    def objects(self) -> int:
        return self._objects

    def histogram(self) -> Histogram:
        return Histogram(tuple(self._counts), self._objects, self._bytes, self._largest)

    def boundaries(self, piece_objects: int, piece_bytes: int) -> tuple[str, ...]:
        """Sorted, distinct piece ends: about one per ``piece_objects`` objects and one per
        ``piece_bytes`` bytes, at most `MAX_PIECES` - 1 of them."""
        wanted_by_count = min(MAX_PIECES // 2, math.ceil(self._objects / max(1, piece_objects)))
        wanted_by_bytes = min(MAX_PIECES // 2, math.ceil(self._bytes / max(1, piece_bytes)))
        ends = set(_quantiles(sorted((key, 1.0) for key, _ in self._uniform), wanted_by_count))
        heavy = {key: float(size) for size, key in self._heaviest}
        rest = [(key, size) for key, size in self._uniform if key not in heavy]
        # Each sampled object outside the heaviest stands for this many such objects.
        scale = (self._objects - len(heavy)) / len(rest) if rest else 0.0
        weighted = sorted([*heavy.items(), *((key, size * scale) for key, size in rest)])
        ends.update(_quantiles(weighted, wanted_by_bytes))
        return tuple(sorted(ends))


def _quantiles(keys: list[tuple[str, float]], pieces: int) -> list[str]:
    """The keys that cut sorted (key, weight) pairs into ``pieces`` parts of equal weight."""
    total = sum(weight for _, weight in keys)
    if pieces <= 1 or total <= 0:
        return []
    step = total / pieces
    ends: list[str] = []
    running = 0.0
    target = step
    for key, weight in keys:
        running += weight
        while running >= target and len(ends) < pieces - 1:
            if not ends or ends[-1] != key:
                ends.append(key)
            target += step
    return ends


@dataclass
class SecondPass:
    """Objects and bytes of each piece between ``boundaries`` (ends inclusive, the last open-ended)."""

    boundaries: tuple[str, ...]
    _objects: list[int] = field(init=False)
    _bytes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self._objects = [0] * (len(self.boundaries) + 1)
        self._bytes = [0] * (len(self.boundaries) + 1)

    def add(self, key: str, size: int) -> None:
        # Piece i holds the keys after boundaries[i-1] up to boundaries[i], the end inclusive.
        index = bisect.bisect_left(self.boundaries, key)
        self._objects[index] += 1
        self._bytes[index] += size

    def add_all(self, items: Iterable[tuple[str, int]]) -> SecondPass:
        for key, size in items:
            self.add(key, size)
        return self

    @property
    def objects(self) -> int:
        return sum(self._objects)

    def pieces(self) -> list[Shard]:
        """Contiguous pieces covering the whole key space, empty ones merged into the next."""
        starts: list[str | None] = [None, *self.boundaries]
        ends: list[str | None] = [*self.boundaries, None]
        pieces: list[Shard] = []
        carry_start: str | None = None
        carried = False
        for start, end, objects, size in zip(starts, ends, self._objects, self._bytes, strict=True):
            begin = carry_start if carried else start
            if objects == 0 and end is not None:
                carry_start, carried = begin, True
                continue
            pieces.append(Shard(begin, end, objects, size))
            carried = False
        return pieces
