"""Content-defined piece ends (operator/planning.py, worker/keyspace.py `join_pieces`): the same keys give
the same pieces, and so the same shards, whoever reads them and however the key space was divided: one
sequential planner, pages of any size, the parallel listing's ranges cut anywhere and coarsened together,
or a manifest of the same keys. Pure: planners are fed in memory."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

import pytest

from ferry.model.plan import Shard
from ferry.operator import planning
from ferry.operator.planning import (
    END_RATIO,
    FORCED,
    MAX_LEVEL,
    Planner,
    coarsen_together,
    end_level,
    key_hash,
)
from ferry.worker.keyspace import join_pieces
from ferry.worker.manifestbatch import KeyBatch
from ferry.worker.manifestplan import InOrderPass

KiB, MiB, GiB = 2**10, 2**20, 2**30
Objects = list[tuple[str, int]]


def bucket(count: int, seed: int, sizes: str = "uniform") -> Objects:
    """Sorted, distinct keys under a few prefixes, with uniform or heavy-tailed sizes."""
    rnd = random.Random(seed)
    names = sorted({f"d{rnd.randrange(30)}/{rnd.randrange(10**9):09d}.bin" for _ in range(count)})
    if sizes == "uniform":
        return [(name, 100 * KiB) for name in names]
    return [(name, min(64 * GiB, int(rnd.paretovariate(1.1) * 20 * KiB))) for name in names]


def sequential(objects: Objects, max_pieces: int, page: int = 1000, **bounds: int) -> Planner:
    planner = Planner(max_pieces=max_pieces, **bounds)
    for i in range(0, len(objects), page):
        chunk = objects[i : i + page]
        planner.add_many([k for k, _ in chunk], [s for _, s in chunk])
    return planner


def in_ranges(objects: Objects, cuts: Sequence[str], max_pieces: int, **bounds: int) -> list[Shard]:
    """As the parallel listing does: one planner per range, fed page by page in turns (listers run at
    once), coarsened together past ``max_pieces``, then joined at one level."""
    bounds_ = [None, *sorted(cuts), None]
    planners = [Planner(start_after=b, max_pieces=max_pieces, **bounds) for b in bounds_[:-1]]
    pages: list[list[tuple[int, Objects]]] = [[] for _ in planners]
    current: list[tuple[str, int]] = []
    j = 0
    for key, size in objects:
        while bounds_[j + 1] is not None and key > str(bounds_[j + 1]):
            if current:
                pages[j].append((j, current))
            current, j = [], j + 1
        current.append((key, size))
        if len(current) == 700:
            pages[j].append((j, current))
            current = []
    if current:
        pages[j].append((j, current))
    # Round robin over the ranges: each takes its next page.
    for turn in range(max((len(p) for p in pages), default=0)):
        for ranges_pages in pages:
            if turn < len(ranges_pages):
                index, chunk = ranges_pages[turn]
                planners[index].add_many([k for k, _ in chunk], [s for _, s in chunk])
                if sum(p.piece_count for p in planners) > max_pieces:
                    coarsen_together(planners, max_pieces)
    level = max(p.level for p in planners)
    parts, levels = [], []
    for planner, end in zip(planners, bounds_[1:], strict=True):
        planner.raise_to(level)
        pieces, ends = planner.range_pieces(end)
        parts.append(pieces)
        levels.append(ends)
    return join_pieces(parts, max_pieces, levels=levels, level=level)


@pytest.mark.parametrize(
    ("count", "sizes", "max_pieces", "ranges", "seed"),
    [
        (30_000, "uniform", 8192, 2, 1),
        (30_000, "uniform", 8192, 3, 2),
        (30_000, "uniform", 8192, 7, 3),
        (30_000, "skewed", 8192, 7, 4),
        (30_000, "uniform", 40, 2, 5),  # coarsened several times
        (30_000, "skewed", 40, 3, 6),
        (30_000, "uniform", 100, 7, 7),
        (30_000, "skewed", 300, 7, 8),
        (2_000, "uniform", 8, 3, 9),
    ],
)  # fmt: skip
def test_ranges_cut_anywhere_give_the_sequential_pieces_and_shards(
    count: int, sizes: str, max_pieces: int, ranges: int, seed: int
) -> None:
    objects = bucket(count, seed, sizes)
    one = sequential(objects, max_pieces)
    cuts = random.Random(seed).sample([k for k, _ in objects], ranges - 1)
    joined = in_ranges(objects, cuts, max_pieces)
    assert joined == one.pieces()
    assert not one.fell_back
    for shards in (1, 4, 17):
        assert planning.group_pieces(joined, shards) == one.finish(shards)


@pytest.mark.parametrize("ranges", [2, 3, 7])
def test_cuts_between_keys_that_are_not_keys_give_the_same_pieces(ranges: int) -> None:
    objects = bucket(20_000, 11)
    one = sequential(objects, 8192)
    # Cut at strings that are no key (a midpoint, as the listing cuts): "<key>!" sorts right after it.
    cuts = [k + "!" for k in random.Random(ranges).sample([k for k, _ in objects], ranges - 1)]
    assert in_ranges(objects, cuts, 8192) == one.pieces()


@pytest.mark.parametrize("page", [1, 7, 1000, 5000])
def test_pages_of_any_size_give_the_pieces_of_single_keys(page: int) -> None:
    objects = bucket(12_000, 21, "skewed")
    single = Planner(max_pieces=50).add_all(objects)
    paged = sequential(objects, 50, page=page)
    assert paged.pieces() == single.pieces()
    assert (paged.level, paged.piece_objects, paged.piece_bytes) == (
        single.level,
        single.piece_objects,
        single.piece_bytes,
    )


@pytest.mark.parametrize("batch", [500, 8192])
def test_a_manifest_in_key_order_gives_the_listing_s_pieces(batch: int) -> None:
    objects = bucket(25_000, 31, "skewed")
    cuts = random.Random(31).sample([k for k, _ in objects], 6)
    manifest = InOrderPass(Planner())
    for i in range(0, len(objects), batch):
        manifest.add(KeyBatch.of(objects[i : i + batch]))
    assert manifest.planner is not None
    assert manifest.planner.pieces() == in_ranges(objects, cuts, planning.MAX_PIECES)


@pytest.mark.parametrize(
    ("sizes", "piece_objects", "piece_bytes"),
    [("uniform", 1000, GiB), ("skewed", 1000, GiB), ("skewed", 1000, 64 * MiB), ("uniform", 320, GiB)],
)
def test_pieces_stay_near_their_targets_and_within_their_bounds(
    sizes: str, piece_objects: int, piece_bytes: int
) -> None:
    objects = bucket(60_000, 41, sizes)
    planner = sequential(objects, 8192, piece_objects=piece_objects, piece_bytes=piece_bytes)
    assert planner.level == 0
    pieces = planner.pieces()[:-1]  # the open last piece is cut short by the end of the listing
    # A key ends a piece with probability END_RATIO times its share of a bound (objects or bytes, the
    # larger), at most 1: about one end per sixteenth of a bound.
    expected = sum(min(1.0, END_RATIO * max(1 / piece_objects, size / piece_bytes)) for _, size in objects)
    assert 0.9 * expected <= len(pieces) + 1 <= 1.1 * expected
    assert max(p.objects for p in pieces) <= piece_objects
    mean_objects = statistics.mean(p.objects for p in pieces)
    if sizes == "uniform" and piece_bytes == GiB:
        assert 0.85 * piece_objects / END_RATIO <= mean_objects <= 1.15 * piece_objects / END_RATIO
    # Over the byte bound only by the object that ends the piece (as the bound closes a piece).
    size_of = dict(objects)
    for piece in pieces:
        assert piece.end is not None and piece.bytes - size_of[piece.end] < piece_bytes


def test_a_stretch_without_an_end_is_closed_at_the_bound() -> None:
    # Every key ends a piece at the object bound 1 (END_RATIO/1 > 1): with a bound of 1,000 and keys
    # whose hashes all lie above the threshold none would, so the bound closes pieces of 1,000.
    threshold = (END_RATIO << 32) // 1000
    names = [f"k{i:07d}" for i in range(40_000)]
    high = [(name, 1) for name in names if key_hash(name) > threshold][:5000]
    planner = Planner(piece_objects=1000).add_all(high)
    assert [p.objects for p in planner.pieces()] == [1000] * 5
    assert set(planner._levels) == {FORCED}


@pytest.mark.parametrize(
    ("hashed", "size", "piece_objects", "piece_bytes", "expected"),
    [
        (0, 0, 1000, GiB, MAX_LEVEL),  # a hash of 0 ends pieces at every level: bounded
        (2**32 - 1, 1, 1000, GiB, -1),
        ((END_RATIO << 32) // 1000 - 1, 1, 1000, GiB, 0),  # just below the object threshold
        ((END_RATIO << 32) // 1000 + 1, 1, 1000, GiB, -1),  # just above it
        ((END_RATIO << 32) // 4000 - 1, 1, 1000, GiB, 2),  # a quarter of it: two doublings more
        (2**32 - 1, GiB // END_RATIO, 1000, GiB, 0),  # a sixteenth of the byte bound always ends one
        (2**32 - 1, GiB // END_RATIO - 1, 1000, GiB, -1),
        (2**31, 4 * GiB, 1000, GiB, 6),  # 64 sixteenths of the bound, hash one half: six doublings
    ],
)
def test_end_level(hashed: int, size: int, piece_objects: int, piece_bytes: int, expected: int) -> None:
    assert end_level(hashed, size, piece_objects, piece_bytes) == expected


def test_the_key_hash_is_the_same_in_every_process() -> None:
    # Fixed values: Python's own hash() is salted per process and would cut differently in every pod.
    assert [key_hash(k) for k in ["a", "data/00000001", "ключ/日本"]] == [3320656311, 4188556773, 4275054272]


def test_keys_crafted_to_end_pieces_at_every_level_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys chosen against the (public, unkeyed) hash: every key ends a piece at every level.
    monkeypatch.setattr(planning, "_mix", lambda _h: 0)
    monkeypatch.setattr(planning, "_mix_page", lambda crcs: crcs * 0)
    objects = bucket(20_000, 51)
    planner = sequential(objects, 64)
    assert planner.piece_count <= 64 and planner.fell_back
    pieces = planner.pieces()
    assert sum(p.objects for p in pieces) == len(objects)
    assert pieces[0].start_after is None and pieces[-1].end is None
    # Ranges fall back too, still within the bound and covering every key.
    planners = [Planner(max_pieces=64), Planner(start_after=objects[9_999][0], max_pieces=64)]
    planners[0].add_all(objects[:10_000])
    planners[1].add_all(objects[10_000:])
    coarsen_together(planners, 64)
    assert sum(p.piece_count for p in planners) <= 64
    assert any(p.fell_back for p in planners)


def test_a_key_with_a_lone_surrogate_is_hashed_as_a_single_key_is() -> None:
    # A manifest can carry a key that is no valid UTF-8 (a lone surrogate): a page of it still plans.
    objects = [(f"k{i:05d}", 10) for i in range(3000)]
    objects.insert(1500, ("k01499\ud800", 10))
    paged = sequential(objects, 8192, page=1000, piece_objects=100)
    assert paged.pieces() == Planner(piece_objects=100).add_all(objects).pieces()
