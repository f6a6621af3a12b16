"""Planning: turn one pass over the source listing into a size histogram and shards. Pure.

Shards are contiguous key ranges of roughly equal objects and bytes; each becomes one completion of the
Indexed Job. Boundaries are keys, so a retried shard lists exactly its own range again. Shards are
grouped from fine "pieces" (`group_pieces`), and the pieces are a function of the keys and their sizes
alone, never of how they were read: one sequential listing, the parallel listing's ranges cut anywhere,
several planner pods, and a key-ordered manifest of the same objects give the same pieces, so the same
shards. Two rules make it so:

- A small job is cut exactly as a sequential reader counts: a piece closes at every ``piece_objects``-th
  object (or where it reaches ``piece_bytes``), from the first key. Until a job holds more than
  `EXACT_KEYS` keys (or `EXACT_KEY_BYTES` of keys), every key is kept as a piece of its own (level
  `EXACT`), so ranges read apart are joined back key by key and cut from the first key at the end
  (`exact_cut`). This keeps the user's shardSize exact for small jobs (600 objects at maxObjects 100:
  6 shards of 100).
- A larger job's piece ends are content-defined: a key ends a piece when a stable hash of it falls
  below its share of a piece (`end_level`): 1/``piece_objects`` by count, size/``piece_bytes`` by bytes,
  the larger. Pieces so average ``piece_objects`` objects (or ``piece_bytes``), the size the planner
  always cut; a piece reaching `HARD_RATIO` times that without an end is closed there (a `FORCED` end,
  about once in e^16 pieces). Each end records its level (how many doublings of the piece size it
  survives); coarsening raises the level and drops the ends below it, which again depends on the keys
  only. Keys crafted to end pieces at every level fall back to the pairwise merge (`Planner.fell_back`):
  only then, or when a forced end lies near a range's cut, may two readers cut differently.

Which rule applies is itself a function of the whole set of keys (how many, how long), so every reader
agrees once it has joined its ranges (`join_levelled`); ranges and planner pods carry the level of each
piece's end for that.
"""

from __future__ import annotations

import json
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING

from ferry.model.plan import Shard

if TYPE_CHECKING:
    import numpy as np

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


#: Fine-grained ranges kept while listing; past this many, the level rises (piece sizes double), so a
#: plan of 100 million objects still fits a ConfigMap.
MAX_PIECES = 8192

#: A piece is closed without a content-defined end once it holds this many times the pieces' average
#: (``piece_objects``/``piece_bytes``): it happens about once in e^16 pieces.
HARD_RATIO = 16
#: The level of an end where a hash of 0 would put it at every level: bounds the loop in `end_level`.
MAX_LEVEL = 48
#: The level at which every key ends a piece (a small job, cut by `exact_cut`); also the level of a key
#: that ends no piece at level 0.
EXACT = -1
#: Level of an end closed by the hard bound, counted from the previous end: not a function of the key.
FORCED = -2
#: Level of the artificial end a range of the parallel listing gets at its own end: joining drops it.
BOUNDARY = -3
#: A job is cut exactly (level `EXACT`) while it holds at most this many keys (and no more than the
#: pieces a planner keeps), ...
EXACT_KEYS = 8192
#: ... and its keys, JSON-encoded (`exact_cost`), take at most this many bytes: a planner pod's answer of
#: one piece per key then stays well under the answer cap (`planresult.MAX_RESULT_BYTES`).
EXACT_KEY_BYTES = 512 * 1024
#: Levels one coarsening may raise before falling back to the pairwise merge (keys crafted to be ends at
#: every level would otherwise keep every piece).
MAX_RAISES = 4
_MASK32 = 0xFFFFFFFF


def key_hash(key: str) -> int:
    """A 32-bit hash of the key's UTF-8 bytes, the same in every process (unlike the salted `hash`):
    CRC-32, whose output is then mixed (MurmurHash3's finaliser) so that thresholds on it are not linear
    conditions on the key's bits, as they would be on CRC-32 itself."""
    return _mix(zlib.crc32(key.encode("utf-8", "surrogatepass")))


def _mix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def _mix_page(crcs: np.ndarray) -> np.ndarray:
    """`_mix` of a page of CRC-32s at once (uint32 arithmetic wraps as `_mix` masks)."""
    import numpy as np

    h = crcs ^ (crcs >> 16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= np.uint32(0xC2B2AE35)
    mixed: np.ndarray = h ^ (h >> 16)
    return mixed


def exact_cost(key: str) -> int:
    """What a key counts against `EXACT_KEY_BYTES`: its length as JSON (escapes included)."""
    return len(json.dumps(key))


def end_level(hashed: int, size: int, piece_objects: int, piece_bytes: int) -> int:
    """How many more times the piece sizes may double with the key (hash ``hashed``, ``size`` bytes)
    still ending a piece; -1 when it ends none at these sizes.

    A key ends a piece when its hash, as a fraction of 2^32, falls below the larger of 1/``piece_objects``
    and ``size``/``piece_bytes``: one end per ``piece_objects`` objects and per ``piece_bytes`` bytes on
    average, an object of ``piece_bytes`` or more always ending one. Exact integers.
    """
    objects, nbytes = 1 << 32, size << 32
    level = -1
    while level < MAX_LEVEL and (
        hashed * (piece_objects << (level + 1)) < objects or hashed * (piece_bytes << (level + 1)) < nbytes
    ):
        level += 1
    return level


@dataclass
class Planner:
    """Consumes the listing in key order, one object at a time, in bounded memory.

    It keeps the histogram and fine "pieces" of the key space; `finish` groups pieces into shards of
    roughly equal objects and bytes once the totals are known.
    """

    #: The pieces' average size (objects, bytes) at level 0, doubled per level above it.
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
    #: The level of each closed piece's end (absolute: counted from the sizes at level 0), `FORCED` for
    #: an end the hard bound closed.
    _levels: list[int] = field(default_factory=list)
    #: `EXACT` (every key its own piece) until the job is too large for it, then the doublings so far:
    #: `piece_objects` and `piece_bytes` are the sizes at level 0 doubled this many times.
    level: int = EXACT
    #: `exact_cost` of the keys held as pieces of their own while at level `EXACT`.
    exact_bytes: int = 0
    #: Whether a coarsening merged pairwise (keys that end pieces at every level): pieces may then differ
    #: from another reader's of the same keys.
    fell_back: bool = False
    _start: str | None = None
    _open_objects: int = 0
    _open_bytes: int = 0

    def __post_init__(self) -> None:
        self._start = self.start_after

    @property
    def most(self) -> int:
        return MAX_PIECES if self.max_pieces is None else self.max_pieces

    def add(self, key: str, size: int) -> None:
        # The first bound >= size; a bisection, since a listing of millions of keys passes here per key.
        index = bisect_left(BUCKET_BOUNDS, size)
        self._counts[index] += 1
        self._objects += 1
        self._bytes += size
        self._largest = max(self._largest, size)
        self._add_piece(key, size)

    def _add_piece(self, key: str, size: int) -> None:
        self._open_objects += 1
        self._open_bytes += size
        level = end_level(key_hash(key), size, self.piece_objects, self.piece_bytes)
        if self.level == EXACT:
            self.exact_bytes += exact_cost(key)
            self._close(key, self._open_objects, self._open_bytes, level)
        elif (
            level >= 0
            or self._open_objects >= HARD_RATIO * self.piece_objects
            or self._open_bytes >= HARD_RATIO * self.piece_bytes
        ):
            self._close(
                key, self._open_objects, self._open_bytes, self.level + level if level >= 0 else FORCED
            )

    def add_many(self, keys: Sequence[str], sizes: Sequence[int]) -> None:
        """`add` for each key in order, a page at a time: the same histogram and pieces, with the
        per-key work (bucketing, sums, finding where a piece closes) done by C loops."""
        if not keys:
            return
        for index, count in Counter(map(partial(bisect_left, BUCKET_BOUNDS), sizes)).items():
            self._counts[index] += count
        self._objects += len(keys)
        self._largest = max(self._largest, max(sizes))
        # A small job's keys one at a time (at most `EXACT_KEYS` of them), until it outgrows that.
        done = 0
        while done < len(keys) and self.level == EXACT:
            self._add_piece(keys[done], sizes[done])
            self._bytes += sizes[done]
            done += 1
        if done:
            keys, sizes = keys[done:], sizes[done:]
            if not keys:
                return
        # Running totals through each key; where a piece closes is found by bisection on them.
        running = list(accumulate(sizes))
        self._bytes += running[-1]
        ends = self._content_ends(keys, sizes)
        next_end = 0  # the first of `ends` not yet passed
        first, before = 0, 0  # the first key not in a closed piece, and the bytes before it
        while first < len(keys):
            # The next content-defined end at the current level (coarsening may have raised it).
            while next_end < len(ends) and (ends[next_end][0] < first or ends[next_end][1] < self.level):
                next_end += 1
            next_end, first, before = self._close_run(keys, sizes, running, ends, next_end, first, before)
            while next_end < len(ends) and (ends[next_end][0] < first or ends[next_end][1] < self.level):
                next_end += 1
            if first >= len(keys):
                return
            by_content = ends[next_end][0] if next_end < len(ends) else len(keys)
            by_count = max(first, first + HARD_RATIO * self.piece_objects - self._open_objects - 1)
            by_bytes = bisect_left(running, before + HARD_RATIO * self.piece_bytes - self._open_bytes, first)
            last = min(by_content, by_count, by_bytes)
            if last >= len(keys):
                self._open_objects += len(keys) - first
                self._open_bytes += running[-1] - before
                return
            objects = self._open_objects + last - first + 1
            nbytes = self._open_bytes + running[last] - before
            self._close(keys[last], objects, nbytes, ends[next_end][1] if last == by_content else FORCED)
            first, before = last + 1, running[last]

    def _close_run(
        self,
        keys: Sequence[str],
        sizes: Sequence[int],
        running: list[int],
        ends: list[tuple[int, int]],
        next_end: int,
        first: int,
        before: int,
    ) -> tuple[int, int, int]:
        """Close at once the pieces of the content-defined ends ahead that no hard bound overtakes (the
        usual case) and that fit before coarsening; returns where `add_many` goes on. Closes what the loop
        would, a piece at a time: a piece stays whole when it holds at most the hard bound of objects and
        its bytes before its end key stay below the hard bound of bytes."""
        room = self.most - len(self._pieces)
        run = [end for end in ends[next_end : next_end + max(0, room)] if end[1] >= self.level]
        if not run:
            return next_end, first, before
        at = [i for i, _ in run]
        starts = [first, *(i + 1 for i in at[:-1])]
        bytes_before = [before, *(running[i] for i in at[:-1])]
        objects = [i - start + 1 for i, start in zip(at, starts, strict=True)]
        nbytes = [running[i] - b for i, b in zip(at, bytes_before, strict=True)]
        objects[0] += self._open_objects
        nbytes[0] += self._open_bytes
        most_objects, most_bytes = HARD_RATIO * self.piece_objects, HARD_RATIO * self.piece_bytes
        whole = 0
        for count, size, i in zip(objects, nbytes, at, strict=True):
            if count > most_objects or size - sizes[i] >= most_bytes:
                break
            whole += 1
        if not whole:
            return next_end, first, before
        ends_keys = [keys[i] for i in at[:whole]]
        self._pieces.extend(
            map(Shard, [self._start, *ends_keys[:-1]], ends_keys, objects[:whole], nbytes[:whole])
        )
        self._levels.extend(level for _, level in run[:whole])
        last = at[whole - 1]
        self._start, self._open_objects, self._open_bytes = keys[last], 0, 0
        # Past the ends taken (those skipped for their level lie before them too).
        while next_end < len(ends) and ends[next_end][0] <= last:
            next_end += 1
        return next_end, last + 1, running[last]

    def _content_ends(self, keys: Sequence[str], sizes: Sequence[int]) -> list[tuple[int, int]]:
        """(index, absolute level) of the keys of a page that end a piece at the current sizes.

        Most keys end none: those are ruled out by one comparison each in C loops (a hash above the
        threshold of both the object count and the object's bytes), and only the few left are looked
        at one by one.
        """
        # NumPy only here: the operator and small jobs, which never come here, do without its memory.
        import numpy as np

        count = len(keys)
        try:
            crcs = np.fromiter(map(zlib.crc32, map(str.encode, keys)), dtype=np.uint32, count=count)
        except UnicodeEncodeError:  # a lone surrogate (a manifest may carry one): as `key_hash` encodes
            encode = partial(str.encode, errors="surrogatepass")
            crcs = np.fromiter(map(zlib.crc32, map(encode, keys)), dtype=np.uint32, count=count)
        hashes = _mix_page(crcs)
        # `end_level`'s test at this level in floating point, with a margin: a superset of the ends.
        shares = np.maximum(
            np.fromiter(sizes, dtype=np.float64, count=count) / self.piece_bytes, 1 / self.piece_objects
        )
        maybe = np.flatnonzero(hashes < shares * float(1 << 32) * (1 + 1e-9) + 1)
        ends = []
        base = max(self.level, 0)
        for i, hashed in zip(maybe.tolist(), hashes[maybe].tolist(), strict=True):
            level = end_level(hashed, sizes[i], self.piece_objects, self.piece_bytes)
            if level >= 0:
                ends.append((i, base + level))
        return ends

    def _close(self, key: str, objects: int, nbytes: int, level: int) -> None:
        self._pieces.append(Shard(self._start, key, objects, nbytes))
        self._levels.append(level)
        self._start, self._open_objects, self._open_bytes = key, 0, 0
        if self.level == EXACT and beyond_exact(len(self._pieces), self.exact_bytes, self.most):
            self.raise_to(0)
        if len(self._pieces) > self.most:
            self.coarsen()

    def add_all(self, items: Iterable[tuple[str, int]]) -> Planner:
        for key, size in items:
            self.add(key, size)
        return self

    def coarsen(self) -> None:
        """Raise the level by one (dropping the ends below it and forced ones, doubling the sizes), and
        again while more than `max_pieces` remain, up to `MAX_RAISES` levels; past that, merge the pieces
        left pairwise (keys that end pieces at every level)."""
        for _ in range(MAX_RAISES):
            self.raise_to(self.level + 1)
            if len(self._pieces) <= self.most:
                return
        while len(self._pieces) > max(1, self.most):
            self.halve()

    def halve(self) -> None:
        """Merge neighbouring pieces pairwise: the fallback when raising the level does not thin them;
        from then on the pieces depend on the order of events, not on the keys alone."""
        self.fell_back = True
        pieces, levels = self._pieces, self._levels
        pairs = zip(pieces[::2], pieces[1::2], strict=False)
        merged = [Shard(a.start_after, b.end, a.objects + b.objects, a.bytes + b.bytes) for a, b in pairs]
        kept = levels[1::2]
        if len(pieces) % 2:
            merged.append(pieces[-1])
            kept.append(levels[-1])
        self._pieces, self._levels = merged, kept

    def raise_to(self, level: int) -> None:
        """Bring the pieces to ``level`` (no lower than now): ends below it are dropped, their pieces
        merged into the next (the last into the open piece), and the sizes doubled per level above 0."""
        if level <= self.level:
            return
        doublings = max(level, 0) - max(self.level, 0)
        self.piece_objects <<= doublings
        self.piece_bytes <<= doublings
        self.level = level
        pieces: list[Shard] = []
        levels: list[int] = []
        start, objects, nbytes = self.start_after, 0, 0
        for piece, end in zip(self._pieces, self._levels, strict=True):
            objects, nbytes = objects + piece.objects, nbytes + piece.bytes
            if end >= level:
                pieces.append(Shard(start, piece.end, objects, nbytes))
                levels.append(end)
                start, objects, nbytes = piece.end, 0, 0
        self._pieces, self._levels = pieces, levels
        self._start = start
        self._open_objects += objects
        self._open_bytes += nbytes

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
        whole key space of the listing, so grouping them never loses a key. A small job's keys (level
        `EXACT`) are cut from the first key (`exact_cut`)."""
        if self.level == EXACT:
            return exact_cut(self._pieces, self.start_after, None, self.piece_objects, self.piece_bytes)
        pieces = list(self._pieces)
        if self._open_objects or not pieces:
            pieces.append(Shard(self._start, None, self._open_objects, self._open_bytes))
        last = pieces[-1]
        pieces[-1] = Shard(last.start_after, None, last.objects, last.bytes)
        return pieces

    def range_pieces(self, end: str | None) -> tuple[list[Shard], list[int]]:
        """The pieces of one range of a listing that ends at ``end``, and the level of each end: the
        closed pieces, then the open one (possibly empty) up to ``end`` with the level `BOUNDARY`, for
        `join_levelled` to join with the next range as one planner of both would have cut them."""
        pieces = [*self._pieces, Shard(self._start, end, self._open_objects, self._open_bytes)]
        return pieces, [*self._levels, BOUNDARY]

    def finish(
        self, shards: int, max_objects: int | None = None, max_bytes: int | None = None
    ) -> list[Shard]:
        return group_pieces(self.pieces(), shards, max_objects, max_bytes)


def piece_targets(max_objects: int | None, max_bytes: int | None) -> tuple[int, int]:
    """The pieces' sizes (objects, bytes) for shards bounded by the user's shardSize (None: unbounded):
    no larger than those bounds, so that the operator can honour them exactly in a small job, and to a
    piece's grain in a larger one."""
    return min(1000, max_objects or 1000), min(2**30, max_bytes or 2**30)


def beyond_exact(keys: int, key_bytes: int, most: int) -> bool:
    """Whether a job of ``keys`` keys (``key_bytes`` of them by `exact_cost`) is too large to be cut
    exactly, when at most ``most`` pieces may be kept."""
    return keys > min(EXACT_KEYS, most) or key_bytes > EXACT_KEY_BYTES


def exact_cut(
    pieces: Sequence[Shard], start_after: str | None, end: str | None, piece_objects: int, piece_bytes: int
) -> list[Shard]:
    """A small job's pieces (one per key, as level `EXACT` keeps them) cut from the first key: a piece
    closes at its ``piece_objects``-th object or once it holds ``piece_bytes``. The last piece ends at
    ``end``."""
    cut: list[Shard] = []
    start, objects, nbytes = start_after, 0, 0
    for piece in pieces:
        objects, nbytes = objects + piece.objects, nbytes + piece.bytes
        if objects and (objects >= piece_objects or nbytes >= piece_bytes):
            cut.append(Shard(start, piece.end, objects, nbytes))
            start, objects, nbytes = piece.end, 0, 0
    if objects or not cut:
        cut.append(Shard(start, end, objects, nbytes))
    last = cut[-1]
    cut[-1] = Shard(last.start_after, end, last.objects, last.bytes)
    return cut


def coarsen_together(planners: Sequence[Planner], most: int) -> None:
    """Thin the pieces of several planners (the ranges of one listing) until they hold at most ``most``
    closed pieces together: all are brought to the highest level among them (level 0 at least once the
    job is too large to cut exactly), then raised a level at a time (at most `MAX_RAISES`), then merged
    pairwise. Raising them together keeps their ends those a single planner of all their keys would
    keep."""
    if not planners:
        return
    top = max(p.level for p in planners)
    if top == EXACT and beyond_exact(
        sum(p.piece_count for p in planners), sum(p.exact_bytes for p in planners), most
    ):
        top = 0
    for planner in planners:
        planner.raise_to(top)
    for _ in range(MAX_RAISES):
        if sum(p.piece_count for p in planners) <= most:
            return
        top += 1
        for planner in planners:
            planner.raise_to(top)
    for _ in range(64):  # each round halves every planner's pieces
        if sum(p.piece_count for p in planners) <= most:
            return
        for planner in planners:
            if planner.piece_count > 1:
                planner.halve()


def at_level(pieces: Sequence[Shard], levels: Sequence[int], level: int) -> tuple[list[Shard], list[int]]:
    """The pieces with every end below ``level`` dropped (forced and range ends too), each merged into the
    next piece; the last piece stays whatever its end."""
    kept: list[Shard] = []
    kept_levels: list[int] = []
    start: str | None = pieces[0].start_after if pieces else None
    objects = nbytes = 0
    for i, (piece, end) in enumerate(zip(pieces, levels, strict=True)):
        objects, nbytes = objects + piece.objects, nbytes + piece.bytes
        if end >= level or i == len(pieces) - 1:
            kept.append(Shard(start, piece.end, objects, nbytes))
            kept_levels.append(end)
            start, objects, nbytes = piece.end, 0, 0
    return kept, kept_levels


def join_levelled(
    pieces: Sequence[Shard], levels: Sequence[int], level: int, most: int
) -> tuple[list[Shard], list[int], int]:
    """Contiguous pieces of several ranges (the level of each end beside them; each range's own end
    `BOUNDARY`, its planner at ``level`` or below) joined as one planner of all their keys would hold
    them: at the level of the whole (`EXACT` only while the job is small enough, `beyond_exact`), range
    ends dropped, raised while more than ``most`` closed pieces remain (at most `MAX_RAISES` levels,
    then merged pairwise). Returns the pieces (the last one the open piece, possibly empty, its end
    `BOUNDARY`), the levels of their ends and the level; `finished_pieces` makes a listing's pieces of
    them."""
    assert pieces, "a listing always has at least one (possibly empty) piece"
    if level == EXACT:
        keys = sum(p.objects for p, end in zip(pieces, levels, strict=True) if end != BOUNDARY)
        key_bytes = sum(
            exact_cost(p.end) for p, end in zip(pieces, levels, strict=True) if end != BOUNDARY and p.end
        )
        if beyond_exact(keys, key_bytes, most):
            level = 0
    # The ends of the level and the forced ones stay, as in one planner at this level; the ranges' own
    # ends go. A forced end counts as of this level: raising further drops it.
    joined, kept = at_level(pieces, [level if value == FORCED else value for value in levels], level)
    for _ in range(MAX_RAISES):
        if len(joined) - 1 <= most:
            break
        level += 1
        joined, kept = at_level(joined, kept, level)
    if len(joined) - 1 > most:  # keys that end pieces at every level
        joined = merge_neighbours(joined, most)
        kept = [*(FORCED for _ in joined[:-1]), BOUNDARY]
    return joined, kept, level


def finished_pieces(
    pieces: Sequence[Shard],
    level: int,
    start_after: str | None,
    end: str | None,
    piece_objects: int,
    piece_bytes: int,
) -> list[Shard]:
    """The pieces of a listing from ``start_after`` to ``end`` once joined at ``level`` (`join_levelled`):
    a small job's one-key pieces cut from the first key (`exact_cut`), others as they are, the last one
    ending at ``end``."""
    if level == EXACT:
        return exact_cut(pieces, start_after, end, piece_objects, piece_bytes)
    done = list(pieces)
    if len(done) > 1 and not done[-1].objects:
        # No key after the last end: that piece is the last, open-ended, as `Planner.pieces` gives it.
        before = done.pop()
        done[-1] = Shard(done[-1].start_after, before.end, done[-1].objects, done[-1].bytes)
    last = done[-1]
    done[-1] = Shard(last.start_after, end, last.objects, last.bytes)
    return done


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
