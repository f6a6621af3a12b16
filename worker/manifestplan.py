"""Planning from a manifest, in constant memory: in one pass when its rows come in key order, else in two. Pure.

Where it sits: `manifestscan.py` feeds it the manifest's objects in batches (`manifestbatch.KeyBatch`: keys
and sizes, NumPy arrays). Shards are contiguous key ranges cut from the fine pieces of
`operator.planning.Planner`, which a listing feeds one key at a time in key order.

- In key order (S3's order: UTF-8 byte order of the key, which is Python's order of str), `InOrderPass`
  feeds the very same `Planner` the very same keys, so the pieces, and the shards cut from them, are those
  of a sequential listing of the same objects, and of the parallel listing (piece ends are functions of
  the keys: `operator.planning`). Order is checked batch by batch as the rows arrive: a
  manifest never claims it.
- In no particular order (or when order breaks mid-way), `FirstPass` keeps the size histogram, a bounded
  uniform reservoir sample of keys (seeded, so the same manifest always gives the same plan) and the
  largest objects exactly. Piece ends are quantiles of that sample by objects, and by bytes (the largest
  objects at their own weight, the sampled rest standing for the objects it was drawn from); the second
  pass, `SecondPass`, counts the objects and bytes of each piece by a vectorised search. The pieces are
  contiguous, cover the whole key space (the first starts at None, the last is open-ended) and their counts
  are exact; only their boundaries are estimates, so shards are less even than a listing's.

`FirstPass` runs in the first pass either way: when order breaks, the second pass follows directly, and a
manifest is never read more than twice.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ferry.model.plan import Shard
from ferry.operator.planning import BUCKET_BOUNDS, MAX_PIECES, Histogram, Planner
from ferry.worker.manifestbatch import KeyBatch, key_array

#: Keys each sample keeps: at most 1 KiB each, so a few MiB whatever the manifest's size.
SAMPLE_KEYS = 4096
#: The generator's seed: the same manifest gives the same boundaries on every run.
SEED = 20161130
#: Rows per batch when `add_all` is given single objects.
_BATCH = 8192
_BOUNDS = np.array(BUCKET_BOUNDS, dtype=np.int64)


def _batches(items: Iterable[tuple[str, int]]) -> Iterable[KeyBatch]:
    batch: list[tuple[str, int]] = []
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            yield KeyBatch.of(batch)
            batch = []
    if batch:
        yield KeyBatch.of(batch)


def in_key_order(keys: Sequence[str], after: str | None) -> bool:
    """Whether ``keys`` rise strictly, all after ``after``: the order of a listing (no key twice)."""
    if not len(keys):
        return True
    if after is not None and not keys[0] > after:
        return False
    return all(map(operator.lt, keys[:-1], keys[1:]))


@dataclass
class InOrderPass:
    """Feeds a `Planner` batch by batch while the keys come in key order; stops for good at the first key
    out of order (the planner is then dropped: the two-pass plan takes over)."""

    planner: Planner | None
    _last: str | None = None

    @property
    def in_order(self) -> bool:
        return self.planner is not None

    def add(self, batch: KeyBatch) -> None:
        if self.planner is None or not len(batch):
            return
        keys = batch.keys.tolist()
        if not in_key_order(keys, self._last):
            self.planner = None
            return
        # As the listing feeds it a page at a time: `add` for each key, in order.
        self.planner.add_many(keys, batch.sizes.tolist())
        self._last = keys[-1]


@dataclass
class FirstPass:
    """Histogram and key samples of the objects seen, in memory bounded by `SAMPLE_KEYS`."""

    sample_keys: int = SAMPLE_KEYS
    seed: int = SEED
    _counts: np.ndarray = field(default_factory=lambda: np.zeros(len(BUCKET_BOUNDS) + 1, dtype=np.int64))
    _objects: int = 0
    _bytes: int = 0
    _largest: int = 0
    #: Algorithm R's reservoir: (key, size) of a uniform sample of the objects seen.
    _uniform: list[tuple[str, int]] = field(default_factory=list)
    #: Sizes and keys of the largest objects seen: byte quantiles count them exactly.
    _heavy_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _heavy_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    _random: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._random = np.random.Generator(np.random.PCG64(self.seed))

    def add(self, batch: KeyBatch) -> None:
        count = len(batch)
        if not count:
            return
        sizes = batch.sizes
        # The first bound >= size, as `Planner.add` bisects, for the whole batch at once.
        self._counts += np.bincount(np.searchsorted(_BOUNDS, sizes, side="left"), minlength=len(self._counts))
        seen = self._objects
        self._objects += count
        self._bytes += int(sizes.sum())
        self._largest = max(self._largest, int(sizes.max()))
        self._sample(batch, seen)
        self._keep_heaviest(batch)

    def _sample(self, batch: KeyBatch, seen: int) -> None:
        # Algorithm R: the t-th object (1-based) takes slot floor(u * t) when that is below k, so after n
        # objects each is in the sample with probability k / n. One uniform draw per object, by batch.
        k = self.sample_keys
        fill = min(len(batch), max(0, k - len(self._uniform)))
        keys, sizes = batch.keys, batch.sizes
        self._uniform.extend(zip(keys[:fill].tolist(), sizes[:fill].tolist(), strict=True))
        rest = len(batch) - fill
        if not rest:
            return
        t = np.arange(seen + fill + 1, seen + len(batch) + 1, dtype=np.float64)
        slots = (self._random.random(rest) * t).astype(np.int64)
        # In row order: a later object taking the same slot replaces an earlier one, as row by row.
        for i in np.flatnonzero(slots < k).tolist():
            self._uniform[int(slots[i])] = (keys[fill + i], int(sizes[fill + i]))

    def _keep_heaviest(self, batch: KeyBatch) -> None:
        k = self.sample_keys
        sizes = batch.sizes
        if len(self._heavy_sizes) >= k:
            heavier = np.flatnonzero(sizes > self._heavy_sizes.min())
            if not len(heavier):
                return
        else:
            heavier = np.arange(len(sizes))
        all_sizes = np.concatenate([self._heavy_sizes, sizes[heavier]])
        all_keys = np.concatenate([self._heavy_keys, batch.keys[heavier]])
        if len(all_sizes) > k:
            # The k largest; among equal sizes the earliest seen, so the sample does not depend on timing.
            keep = np.argsort(-all_sizes, kind="stable")[:k]
            all_sizes, all_keys = all_sizes[keep], all_keys[keep]
        self._heavy_sizes, self._heavy_keys = all_sizes, all_keys

    def add_all(self, items: Iterable[tuple[str, int]]) -> FirstPass:
        for batch in _batches(items):
            self.add(batch)
        return self

    @property
    def objects(self) -> int:
        return self._objects

    @property
    def bytes(self) -> int:
        return self._bytes

    def histogram(self) -> Histogram:
        return Histogram(tuple(int(c) for c in self._counts), self._objects, self._bytes, self._largest)

    def boundaries(self, piece_objects: int, piece_bytes: int) -> tuple[str, ...]:
        """Sorted, distinct piece ends: about one per ``piece_objects`` objects and one per
        ``piece_bytes`` bytes, at most `MAX_PIECES` - 1 of them."""
        wanted_by_count = min(MAX_PIECES // 2, math.ceil(self._objects / max(1, piece_objects)))
        wanted_by_bytes = min(MAX_PIECES // 2, math.ceil(self._bytes / max(1, piece_bytes)))
        ends = set(_quantiles(sorted((key, 1.0) for key, _ in self._uniform), wanted_by_count))
        heavy = {
            key: float(size) for key, size in zip(self._heavy_keys, self._heavy_sizes.tolist(), strict=True)
        }
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
    _ends: np.ndarray = field(init=False)
    _objects: np.ndarray = field(init=False)
    _bytes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._ends = key_array(list(self.boundaries))
        self._objects = np.zeros(len(self.boundaries) + 1, dtype=np.int64)
        self._bytes = np.zeros(len(self.boundaries) + 1, dtype=np.int64)

    def add(self, batch: KeyBatch) -> None:
        count = len(batch)
        if not count:
            return
        # Piece i holds the keys after boundaries[i-1] up to boundaries[i], the end inclusive. With the
        # batch sorted (str order, so S3's), the keys up to each boundary are one search of the boundary:
        # a few thousand searches a batch instead of one per key.
        keys = batch.keys.tolist()
        order = np.array(sorted(range(count), key=keys.__getitem__), dtype=np.int64)
        in_order = key_array([keys[i] for i in order.tolist()])
        edges = np.concatenate(([0], np.searchsorted(in_order, self._ends, side="right"), [count]))
        self._objects += np.diff(edges)
        running = np.concatenate(([0], np.cumsum(batch.sizes[order])))  # int64: byte sums stay exact
        self._bytes += running[edges[1:]] - running[edges[:-1]]

    def add_all(self, items: Iterable[tuple[str, int]]) -> SecondPass:
        for batch in _batches(items):
            self.add(batch)
        return self

    @property
    def objects(self) -> int:
        return int(self._objects.sum())

    def pieces(self) -> list[Shard]:
        """Contiguous pieces covering the whole key space, empty ones merged into the next."""
        starts: list[str | None] = [None, *self.boundaries]
        ends: list[str | None] = [*self.boundaries, None]
        pieces: list[Shard] = []
        carry_start: str | None = None
        carried = False
        for start, end, objects, size in zip(
            starts, ends, self._objects.tolist(), self._bytes.tolist(), strict=True
        ):
            begin = carry_start if carried else start
            if objects == 0 and end is not None:
                carry_start, carried = begin, True
                continue
            pieces.append(Shard(begin, end, objects, size))
            carried = False
        return pieces
