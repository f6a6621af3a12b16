"""Planning: the size histogram, its quantiles, and shards cut from the listing (operator/planning.py)."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from ferry.model.plan import Shard
from ferry.operator import planning
from ferry.operator.planning import BUCKET_BOUNDS, Planner

KiB, MiB, GiB = 2**10, 2**20, 2**30


def keys(sizes: list[int]) -> list[tuple[str, int]]:
    """Sorted, distinct keys for a list of sizes (listing order)."""
    return [(f"obj/{i:08d}", size) for i, size in enumerate(sizes)]


def skewed(n: int, seed: int = 7) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.choice([10, 100 * KiB, 100 * KiB, 3 * MiB, 2 * GiB]) for _ in range(n)]


def assert_covers(shards: list[Shard], objects: int, nbytes: int) -> None:
    assert shards, "no shards"
    assert shards[0].start_after is None
    assert shards[-1].end is None
    for previous, shard in itertools.pairwise(shards):
        assert shard.start_after == previous.end
        assert previous.end is not None
        assert previous.start_after is None or previous.start_after < previous.end
    assert sum(s.objects for s in shards) == objects
    assert sum(s.bytes for s in shards) == nbytes


def owner_of(shards: list[Shard], key: str) -> list[int]:
    return [
        i
        for i, s in enumerate(shards)
        if (s.start_after is None or key > s.start_after) and (s.end is None or key <= s.end)
    ]


# --- histogram -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([0, 1, 1024], {0: 3}),
        ([1025, 4096, 4097], {1: 2, 2: 1}),
        ([100_000] * 5, {4: 5}),
        ([64 * GiB], {13: 1}),
        ([64 * GiB + 1, 1 << 40], {14: 2}),
        ([1024, 1025, 16 * KiB, 16 * KiB + 1, 1 * MiB], {0: 1, 1: 1, 2: 1, 3: 1, 5: 1}),
    ],
    ids=["le-1KiB", "bucket-edges", "incident-100KB", "largest-bound", "unbounded", "one-per-bucket"],
)
def test_histogram_counts_per_bucket(sizes: list[int], expected: dict[int, int]) -> None:
    histogram = Planner().add_all(keys(sizes)).histogram()
    counts = [0] * (len(BUCKET_BOUNDS) + 1)
    for index, count in expected.items():
        counts[index] = count
    assert histogram.counts == tuple(counts)
    assert histogram.objects == len(sizes)
    assert histogram.bytes == sum(sizes)
    assert histogram.largest == max(sizes)
    assert sum(entry["count"] for entry in histogram.as_json()) == len(sizes)
    assert all(entry["count"] for entry in histogram.as_json())


@pytest.mark.parametrize(
    ("sizes", "q", "expected"),
    [
        ([100_000] * 100, 0.5, 100_000),  # the <=256 KiB bucket, capped by the largest (100 KB)
        ([100_000] * 100, 0.99, 100_000),
        ([100_000] * 99 + [MiB], 0.5, 4**4 * KiB),  # the bucket bound: an over-estimate
        ([100_000] * 98 + [MiB] * 2, 0.99, MiB),
        ([300] * 100, 0.5, 300),  # capped by the largest object
        ([10] * 90 + [5 * MiB] * 10, 0.5, 1 * KiB),
        ([10] * 90 + [5 * MiB] * 10, 0.9, 1 * KiB),
        ([10] * 90 + [5 * MiB] * 10, 0.99, 5 * MiB),  # the 16 MiB bucket, capped at 5 MiB
        ([10] * 50 + [3 * MiB] * 50, 0.99, 3 * MiB),
        ([1 << 40] * 3, 0.5, 1 << 40),  # unbounded bucket: the largest
        ([], 0.5, 0),
    ],
    ids=["median-100KB", "p99-100KB", "median-bound", "p99-bound", "capped-by-largest", "median-small", "p90-edge", "p99-tail",
         "p99-half-large", "unbounded", "empty"],
)  # fmt: skip
def test_quantile_is_bucket_bound_capped_by_largest(sizes: list[int], q: float, expected: int) -> None:
    histogram = Planner().add_all(keys(sizes)).histogram()
    value = histogram.quantile(q)
    assert value == expected
    if sizes:
        exact = sorted(sizes)[max(0, int(q * len(sizes)) - 1)]
        assert exact <= value <= max(sizes)  # an over-estimate, never above the largest


# --- shards ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "piece_objects", "shards"),
    [
        ([1000] * 2000, 10, 1),
        ([1000] * 2000, 10, 2),
        ([1000] * 2000, 10, 7),
        ([1000] * 2000, 10, 16),
        ([1000] * 2000, 10, 100),
        (skewed(2000), 10, 4),
        (skewed(2000), 10, 25),
        ([5 * GiB] * 40, 1, 8),
        ([1000] * 2005, 10, 10),  # an open piece at the end
    ],
    ids=["one", "two", "seven", "sixteen", "hundred", "skewed-4", "skewed-25", "huge-objects",
         "open-tail"],
)  # fmt: skip
def test_finish_covers_and_balances(sizes: list[int], piece_objects: int, shards: int) -> None:
    planner = Planner(piece_objects=piece_objects).add_all(keys(sizes))
    pieces = planner.pieces()  # what `finish` groups (a small job: cut from its first key)
    result = planner.finish(shards)
    objects, nbytes = len(sizes), sum(sizes)
    assert_covers(result, objects, nbytes)

    # every listed key falls in exactly one shard
    for key, _size in keys(sizes)[:: max(1, len(sizes) // 97)]:
        assert len(owner_of(result, key)) == 1

    def cost(s: Shard) -> float:
        return s.objects / max(1, objects) + s.bytes / max(1, nbytes)

    budget = 2.0 / shards
    largest_piece = max([cost(p) for p in pieces] + [0.0])
    assert abs(len(result) - shards) <= max(1, shards // 10)
    # Greedy cut: no shard exceeds the budget by more than one piece, none but the last falls short of
    # it by more than one piece.
    for shard in result:
        assert cost(shard) < budget + largest_piece + 1e-9
    for shard in result[:-1]:
        assert cost(shard) > budget - largest_piece - 1e-9


@pytest.mark.parametrize(
    ("sizes", "piece_objects", "piece_bytes", "max_objects", "max_bytes"),
    [
        ([1000] * 1000, 10, 2**30, 50, None),
        ([1000] * 1000, 10, 2**30, 10, None),
        ([1000] * 1000, 10, 2**30, None, 30_000),
        (skewed(600), 5, 4 * GiB, 40, 8 * GiB),
        ([MiB] * 300, 1, 2**30, 7, 5 * MiB),
    ],
    ids=["max-objects", "max-objects-one-piece", "max-bytes", "both", "single-object-pieces"],
)
def test_finish_respects_shard_limits(
    sizes: list[int], piece_objects: int, piece_bytes: int, max_objects: int | None, max_bytes: int | None
) -> None:
    planner = Planner(piece_objects=piece_objects, piece_bytes=piece_bytes).add_all(keys(sizes))
    pieces = list(planner._pieces)
    result = planner.finish(1, max_objects, max_bytes)  # one shard wanted: only the limits cut
    assert_covers(result, len(sizes), sum(sizes))
    for shard in result:
        # A shard above a limit must be a single piece that alone exceeds it ("where a piece allows").
        over = (max_objects is not None and shard.objects > max_objects) or (
            max_bytes is not None and shard.bytes > max_bytes
        )
        if over:
            assert any(p.start_after == shard.start_after and p.objects == shard.objects for p in pieces)
    if max_objects is not None and max(piece_objects, 1) <= max_objects and max_bytes is None:
        assert all(s.objects <= max_objects for s in result)
        assert len(result) >= len(sizes) // max_objects


@pytest.mark.parametrize(
    ("max_pieces", "count", "piece_objects", "shards"),
    [(8, 500, 3, 4), (4, 1000, 1, 3), (16, 777, 2, 40), (5, 64, 1, 1)],
    ids=["8-pieces", "4-pieces", "more-shards-than-pieces", "odd-limit"],
)
def test_pieces_coarsen_past_max_pieces(
    monkeypatch: pytest.MonkeyPatch, max_pieces: int, count: int, piece_objects: int, shards: int
) -> None:
    monkeypatch.setattr(planning, "MAX_PIECES", max_pieces)
    sizes = [i % 7 * 1000 + 1 for i in range(count)]
    planner = Planner(piece_objects=piece_objects)
    for key, size in keys(sizes):
        planner.add(key, size)
        assert len(planner._pieces) <= max_pieces
    assert planner.piece_objects > piece_objects  # granularity doubled at least once
    assert sum(p.objects for p in planner._pieces) + planner._open_objects == count
    result = planner.finish(shards)
    assert_covers(result, count, sum(sizes))
    assert len(result) <= max_pieces + 1
    for key, _size in keys(sizes):
        assert len(owner_of(result, key)) == 1


@pytest.mark.parametrize(
    ("shards", "max_objects", "max_bytes"),
    [(1, None, None), (10, None, None), (4, 1, 1)],
    ids=["one", "ten", "with-limits"],
)
def test_empty_listing_gives_one_open_shard(
    shards: int, max_objects: int | None, max_bytes: int | None
) -> None:
    planner = Planner()
    assert planner.progress == (0, 0)
    assert planner.histogram().objects == 0
    assert planner.finish(shards, max_objects, max_bytes) == [Shard(None, None, 0, 0)]


@pytest.mark.parametrize(
    "shard",
    [
        Shard(None, None, 0, 0),
        Shard(None, "a/b", 10, 1024),
        Shard("a/b", "c/d", 1, 2**40),
        Shard("a/b", None, 5, 5),
        Shard("ünïcode/ключ", "日本/キー", 3, 3),
        Shard("123", "456", 7, 8),  # numeric-looking keys stay strings
    ],
    ids=["open", "first", "middle", "last", "unicode", "numeric-keys"],
)
def test_shard_json_round_trip(shard: Shard) -> None:
    raw = shard.as_json()
    assert set(raw) == {"startAfter", "end", "objects", "bytes"}
    assert Shard.from_json(raw) == shard
    assert Shard.from_json(json.loads(json.dumps(raw))) == shard


@pytest.mark.parametrize("shards", [4, 10], ids=["four", "ten"])
def test_finish_zero_byte_objects_still_gives_about_n_shards(shards: int) -> None:
    planner = Planner(piece_objects=5).add_all(keys([0] * 500))
    result = planner.finish(shards)
    assert_covers(result, 500, 0)
    assert abs(len(result) - shards) <= 1


@pytest.mark.parametrize(
    ("seed", "objects", "page", "piece_objects", "piece_bytes", "max_pieces", "start_after"),
    [
        (1, 5000, 1000, 1000, 2**30, None, None),  # pieces by count, one per page
        (2, 5000, 1000, 300, 2**30, None, None),  # several pieces per page
        (3, 5000, 777, 1000, 2**30, None, "a"),  # pages and pieces out of step
        (4, 3000, 1000, 10**6, 50_000_000, None, None),  # pieces by bytes
        (5, 3000, 1, 7, 5_000_000, None, None),  # one key per page
        (6, 4000, 1000, 10, 2**30, 16, None),  # coarsening within a page
        (7, 2000, 500, 100, 1, None, None),  # every object closes a piece by bytes
        (8, 0, 1000, 1000, 2**30, None, "z"),  # nothing listed
    ],
)
def test_add_many_gives_what_add_gives_key_by_key(
    seed: int,
    objects: int,
    page: int,
    piece_objects: int,
    piece_bytes: int,
    max_pieces: int | None,
    start_after: str | None,
) -> None:
    rng = random.Random(seed)
    keys = sorted(f"k{rng.randrange(10**9):09d}-{i}" for i in range(objects))
    sizes = [rng.choice((0, 1, 900, 10**5, 10**7, 3 * 10**9)) for _ in keys]
    one, many = (
        Planner(piece_objects, piece_bytes, start_after=start_after, max_pieces=max_pieces) for _ in range(2)
    )
    for key, size in zip(keys, sizes, strict=True):
        one.add(key, size)
    for first in range(0, objects, page):
        many.add_many(keys[first : first + page], sizes[first : first + page])
    assert many.histogram() == one.histogram()
    assert many.pieces() == one.pieces()
    assert (many.piece_objects, many.piece_bytes) == (one.piece_objects, one.piece_bytes)
