"""Planning: turn one pass over the source listing into a size histogram and shards. Pure.

Shards are contiguous key ranges of roughly equal objects and bytes; each becomes one completion of the
Indexed Job. Boundaries are keys, so a retried shard lists exactly its own range again.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate

from ferry.model.plan import Shard

#: Histogram bucket upper bounds: powers of four from 1 KiB to 64 GiB, then everything larger.
BUCKET_BOUNDS: tuple[int, ...] = tuple(1024 * 4**i for i in range(14))


@dataclass(frozen=True)
class Histogram:
    """Counts of objects whose size is at most each bound (the last bucket is unbounded)."""

    counts: tuple[int, ...]
    objects: int
    bytes: int
    largest: int

    def quantile(self, q: float) -> int:
        """Upper bound of the bucket holding the q-quantile (an over-estimate, which is what sizing wants)."""
        if not self.objects:
            return 0
        rank = q * self.objects
        running = 0
        for bound, count in zip((*BUCKET_BOUNDS, self.largest), self.counts, strict=True):
            running += count
            if running >= rank:
                return min(bound, self.largest)
        return self.largest

    def as_json(self) -> list[dict[str, object]]:
        bounds = [*(str(b) for b in BUCKET_BOUNDS), "+Inf"]
        return [{"le": b, "count": c} for b, c in zip(bounds, self.counts, strict=True) if c]


#: Fine-grained ranges kept while listing; past this many, neighbours merge (granularity doubles), so a
#: plan of 100 million objects still fits a ConfigMap.
MAX_PIECES = 8192


@dataclass
class Planner:
    """Consumes the listing in key order, one object at a time, in bounded memory.

    It keeps the histogram and fine "pieces" of the key space; `finish` groups pieces into shards of
    roughly equal objects and bytes once the totals are known.
    """

    piece_objects: int = 1000
    piece_bytes: int = 2**30
    #: Where the listing starts (exclusive): a parallel listing runs one Planner per key range.
    start_after: str | None = None
    #: Pieces kept before neighbours merge (None: MAX_PIECES); a parallel listing bounds the sum over
    #: its ranges instead.
    max_pieces: int | None = None
    _counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS) + 1))
    _objects: int = 0
    _bytes: int = 0
    _largest: int = 0
    _pieces: list[Shard] = field(default_factory=list)
    _start: str | None = None
    _open_objects: int = 0
    _open_bytes: int = 0

    def __post_init__(self) -> None:
        self._start = self.start_after

    def add(self, key: str, size: int) -> None:
        # The first bound >= size; a bisection, since a listing of millions of keys passes here per key.
        index = bisect_left(BUCKET_BOUNDS, size)
        self._counts[index] += 1
        self._objects += 1
        self._bytes += size
        self._largest = max(self._largest, size)
        self._open_objects += 1
        self._open_bytes += size
        if self._open_objects >= self.piece_objects or self._open_bytes >= self.piece_bytes:
            self._pieces.append(Shard(self._start, key, self._open_objects, self._open_bytes))
            self._start, self._open_objects, self._open_bytes = key, 0, 0
            if len(self._pieces) > (MAX_PIECES if self.max_pieces is None else self.max_pieces):
                self.coarsen()

    def add_many(self, keys: Sequence[str], sizes: Sequence[int]) -> None:
        """`add` for each key in order, a page at a time: the same histogram and pieces, with the
        per-key work (bucketing, sums, finding where a piece closes) done by C loops."""
        if not keys:
            return
        for index, count in Counter(map(partial(bisect_left, BUCKET_BOUNDS), sizes)).items():
            self._counts[index] += count
        self._objects += len(keys)
        self._largest = max(self._largest, max(sizes))
        # Running totals through each key; where a piece closes is found by bisection on them.
        running = list(accumulate(sizes))
        self._bytes += running[-1]
        first, before = 0, 0  # the first key not in a closed piece, and the bytes before it
        while first < len(keys):
            by_count = max(first, first + self.piece_objects - self._open_objects - 1)
            by_bytes = bisect_left(running, before + self.piece_bytes - self._open_bytes, first)
            last = min(by_count, by_bytes)
            if last >= len(keys):
                self._open_objects += len(keys) - first
                self._open_bytes += running[-1] - before
                return
            objects = self._open_objects + last - first + 1
            nbytes = self._open_bytes + running[last] - before
            self._pieces.append(Shard(self._start, keys[last], objects, nbytes))
            self._start, self._open_objects, self._open_bytes = keys[last], 0, 0
            first, before = last + 1, running[last]
            if len(self._pieces) > (MAX_PIECES if self.max_pieces is None else self.max_pieces):
                self.coarsen()

    def add_all(self, items: Iterable[tuple[str, int]]) -> Planner:
        for key, size in items:
            self.add(key, size)
        return self

    def coarsen(self) -> None:
        """Merge neighbouring pieces pairwise and double the size of pieces to come."""
        pairs = zip(self._pieces[::2], self._pieces[1::2], strict=False)
        merged = [Shard(a.start_after, b.end, a.objects + b.objects, a.bytes + b.bytes) for a, b in pairs]
        if len(self._pieces) % 2:
            merged.append(self._pieces[-1])
        self._pieces = merged
        self.piece_objects *= 2
        self.piece_bytes *= 2

    @property
    def piece_count(self) -> int:
        """Closed pieces held (the open one not counted)."""
        return len(self._pieces)

    @property
    def progress(self) -> tuple[int, int]:
        return self._objects, self._bytes

    def histogram(self) -> Histogram:
        return Histogram(tuple(self._counts), self._objects, self._bytes, self._largest)

    def pieces(self) -> list[Shard]:
        """The fine contiguous ranges seen so far, the last one open-ended: together they cover the
        whole key space of the listing, so grouping them never loses a key."""
        pieces = list(self._pieces)
        if self._open_objects or not pieces:
            pieces.append(Shard(self._start, None, self._open_objects, self._open_bytes))
        last = pieces[-1]
        pieces[-1] = Shard(last.start_after, None, last.objects, last.bytes)
        return pieces

    def finish(
        self, shards: int, max_objects: int | None = None, max_bytes: int | None = None
    ) -> list[Shard]:
        return group_pieces(self.pieces(), shards, max_objects, max_bytes)


def merge_neighbours(pieces: list[Shard], most: int) -> list[Shard]:
    """Neighbouring pieces merged pairwise, round after round, until at most ``most`` remain; the
    first start and the last end stay where they were."""
    while len(pieces) > max(1, most):
        pairs = zip(pieces[::2], pieces[1::2], strict=False)
        merged = [Shard(a.start_after, b.end, a.objects + b.objects, a.bytes + b.bytes) for a, b in pairs]
        if len(pieces) % 2:
            merged.append(pieces[-1])
        pieces = merged
    return pieces


def group_pieces(
    pieces: list[Shard], shards: int, max_objects: int | None = None, max_bytes: int | None = None
) -> list[Shard]:
    """Group contiguous pieces into about ``shards`` ranges of similar cost (objects and bytes weigh
    equally), never above ``max_objects``/``max_bytes`` where a piece allows. The last range is
    open-ended, so keys written after planning are still copied."""
    assert pieces, "a listing always has at least one (possibly empty) piece"
    total_objects = max(1, sum(p.objects for p in pieces))
    all_bytes = sum(p.bytes for p in pieces)
    total_bytes = max(1, all_bytes)
    # Objects and bytes weigh equally; with no bytes at all (empty objects) objects weigh for both.
    byte_weight = 1.0 if all_bytes else 0.0
    object_weight = 2.0 - byte_weight
    budget = 2.0 / max(1, shards)
    result: list[Shard] = []
    current: Shard | None = None
    for piece in pieces:
        if current is None:
            current = piece
            continue
        before = object_weight * current.objects / total_objects + byte_weight * current.bytes / total_bytes
        after = (
            object_weight * (current.objects + piece.objects) / total_objects
            + byte_weight * (current.bytes + piece.bytes) / total_bytes
        )
        too_big = (max_objects is not None and current.objects + piece.objects > max_objects) or (
            max_bytes is not None and current.bytes + piece.bytes > max_bytes
        )
        # Close when adding the piece would overshoot the budget more than leaving it out undershoots.
        if (after > budget and after - budget > budget - before) or too_big:
            result.append(current)
            current = piece
        else:
            current = Shard(
                current.start_after, piece.end, current.objects + piece.objects, current.bytes + piece.bytes
            )
    assert current is not None
    result.append(current)
    last = result[-1]
    result[-1] = Shard(last.start_after, None, last.objects, last.bytes)
    return result
