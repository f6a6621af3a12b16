"""Piece ends as functions of the keys (operator/planning.py, worker/keyspace.py `join_pieces`,
operator/planresult.py `merge_parts`): the same keys give the same pieces, and so the same shards, whoever
reads them and however the key space was divided: one sequential planner, pages of any size, the parallel
listing's ranges cut anywhere and coarsened together, several planner pods' parts, or a manifest of the
same keys; a small job is still cut exactly at the user's shard size. Pure: planners are fed in memory."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.operator import planning
from ferry.operator.caps import cut_shards
from ferry.operator.planning import (
    EXACT,
    EXACT_KEYS,
    FORCED,
    HARD_RATIO,
    MAX_LEVEL,
    Histogram,
    Planner,
    coarsen_together,
    end_level,
    group_pieces,
    key_hash,
    piece_targets,
)
from ferry.operator.planresult import PlanPart, PlanResult, PlanResultInvalid, merge_parts, parse_plan_result
from ferry.operator.settings import OperatorSettings
from ferry.worker.keyspace import join_levels, join_pieces
from ferry.worker.manifestbatch import KeyBatch
from ferry.worker.manifestplan import InOrderPass
from ferry.worker.scan import fit_part

KiB, MiB, GiB = 2**10, 2**20, 2**30
LISTED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
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
    targets = (bounds.get("piece_objects", 1000), bounds.get("piece_bytes", GiB))
    return join_pieces(parts, max_pieces, levels=levels, level=level, targets=targets)


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
def test_pieces_average_the_size_the_planner_always_cut_and_stay_within_their_bounds(
    sizes: str, piece_objects: int, piece_bytes: int
) -> None:
    objects = bucket(60_000, 41, sizes)
    planner = sequential(objects, 8192, piece_objects=piece_objects, piece_bytes=piece_bytes)
    assert planner.level == 0
    pieces = planner.pieces()[:-1]  # the open last piece is cut short by the end of the listing
    # A key ends a piece with probability its share of a piece (objects or bytes, the larger), at most 1.
    expected = sum(min(1.0, max(1 / piece_objects, size / piece_bytes)) for _, size in objects)
    # Ends are independent draws: their count is within four standard deviations of its expectation.
    assert abs(len(pieces) + 1 - expected) <= 4 * math.sqrt(expected)
    assert max(p.objects for p in pieces) <= HARD_RATIO * piece_objects
    mean_objects = statistics.mean(p.objects for p in pieces)
    if sizes == "uniform" and piece_bytes == GiB:
        # Geometric sizes: the mean of n pieces is within four standard errors of piece_objects.
        assert abs(mean_objects - piece_objects) <= 4 * piece_objects / math.sqrt(len(pieces))
    # Over the hard byte bound only by the object that ends the piece (as the bound closes a piece).
    size_of = dict(objects)
    for piece in pieces:
        assert piece.end is not None and piece.bytes - size_of[piece.end] < HARD_RATIO * piece_bytes


def test_a_stretch_without_an_end_is_closed_at_the_hard_bound() -> None:
    # No key below the object threshold at pieces of 10: the hard bound closes pieces of 160.
    threshold = (1 << 32) // 10
    names = [f"k{i:07d}" for i in range(4000)]
    high = [(name, 1) for name in names if key_hash(name) > threshold][:800]
    planner = Planner(piece_objects=10)
    planner.raise_to(0)  # a large job's level
    planner.add_all(high)
    assert [p.objects for p in planner.pieces()] == [HARD_RATIO * 10] * 5
    assert set(planner._levels) == {FORCED}


@pytest.mark.parametrize(
    ("hashed", "size", "piece_objects", "piece_bytes", "expected"),
    [
        (0, 0, 1000, GiB, MAX_LEVEL),  # a hash of 0 ends pieces at every level: bounded
        (2**32 - 1, 1, 1000, GiB, EXACT),
        ((1 << 32) // 1000 - 1, 1, 1000, GiB, 0),  # just below the object threshold
        ((1 << 32) // 1000 + 1, 1, 1000, GiB, EXACT),  # just above it
        ((1 << 32) // 4000 - 1, 1, 1000, GiB, 2),  # a quarter of it: two doublings more
        (2**32 - 1, GiB, 1000, GiB, 0),  # an object of a whole piece's bytes always ends one
        (2**32 - 1, GiB - 1, 1000, GiB, EXACT),
        (2**31, 4 * GiB, 1000, GiB, 2),  # four pieces' bytes, hash one half: two doublings
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
    objects = [(f"k{i:05d}", 10) for i in range(12_000)]
    objects.insert(9500, ("k09499\ud800", 10))
    paged = sequential(objects, 8192, page=1000, piece_objects=100)
    assert paged.pieces() == Planner(piece_objects=100).add_all(objects).pieces()


# -- keys of every shape, small jobs cut exactly, planner pods' parts ---------------------------------


def shaped(count: int, shape: str, seed: int) -> Objects:
    """Sorted, distinct keys of one shape: deep trees, one flat directory, or non-ASCII names."""
    rnd = random.Random(seed)
    if shape == "deep":
        names = {
            "/".join(f"l{rnd.randrange(4)}" for _ in range(rnd.randrange(1, 6))) + f"/{rnd.randrange(10**8)}"
            for _ in range(count)
        }
    elif shape == "flat":
        names = {f"{rnd.randrange(10**12):012d}" for _ in range(count)}
    else:
        names = {f"фото/{rnd.choice('日本中文ñé')}{rnd.randrange(10**7)}/😀" for _ in range(count)}
    return [(name, rnd.randrange(1, 300 * KiB)) for name in sorted(names)]


def pod_parts(objects: Objects, cuts: Sequence[str], max_pieces: int, **bounds: int) -> list[PlanResult]:
    """What planner pods answer, each listing its part of the key space in two ranges, read back as the
    operator reads them."""
    edges: list[str | None] = [None, *sorted(cuts), None]
    count = len(edges) - 1
    answers = []
    for index, (start, end) in enumerate(itertools.pairwise(edges)):
        mine = [(k, s) for k, s in objects if (start is None or k > start) and (end is None or k <= end)]
        middle = mine[len(mine) // 2][0] if len(mine) > 2 else None
        ranges = [start, middle, end] if middle is not None else [start, end]
        planners = [Planner(start_after=lo, max_pieces=max_pieces, **bounds) for lo in ranges[:-1]]
        for planner, lo, hi in zip(planners, ranges, ranges[1:], strict=False):
            inside = [(k, s) for k, s in mine if (lo is None or k > lo) and (hi is None or k <= hi)]
            for i in range(0, len(inside), 1000):
                chunk = inside[i : i + 1000]
                planner.add_many([k for k, _ in chunk], [s for _, s in chunk])
                coarsen_together(planners, max_pieces)
        level = max(p.level for p in planners)
        for planner in planners:
            planner.raise_to(level)
        parts = [p.range_pieces(hi) for p, hi in zip(planners, ranges[1:], strict=False)]
        pieces, levels, level = join_levels(
            [p for p, _ in parts], [e for _, e in parts], level, max_pieces, start, end
        )
        fitted, kept, kept_level = fit_part(pieces, levels, level)
        histogram = Histogram(
            tuple(map(sum, zip(*(p.histogram().counts for p in planners), strict=True))),
            sum(p.histogram().objects for p in planners),
            sum(p.histogram().bytes for p in planners),
            max(p.histogram().largest for p in planners),
        )
        answer = PlanResult(
            histogram,
            tuple(fitted),
            LISTED,
            destination_checked=True,
            part=PlanPart(index, count, start, end),
            levels=None if kept is None else tuple(kept),
            level=kept_level,
        )
        answers.append(parse_plan_result(answer.to_json()))
    return answers


@pytest.mark.parametrize(
    ("count", "shape", "pods", "piece_objects"),
    [
        (600, "flat", 3, 100),  # small jobs: cut exactly, from the first key
        (5_000, "deep", 4, 1000),
        (5_000, "unicode", 2, 70),
        (EXACT_KEYS, "flat", 5, 1000),  # the largest job cut exactly
        (EXACT_KEYS + 1, "flat", 5, 1000),  # the smallest with content-defined ends
        (40_000, "deep", 3, 1000),
        (40_000, "flat", 7, 1000),
        (40_000, "unicode", 16, 1000),
        (40_000, "flat", 4, 100),
    ],
)  # fmt: skip
def test_planner_pods_parts_join_into_the_sequential_pieces_and_shards(
    count: int, shape: str, pods: int, piece_objects: int
) -> None:
    objects = shaped(count, shape, count + pods)
    one = sequential(objects, planning.MAX_PIECES, piece_objects=piece_objects)
    cuts = random.Random(pods).sample([k for k, _ in objects], pods - 1)
    answers = pod_parts(objects, cuts, planning.MAX_PIECES, piece_objects=piece_objects)
    merged = merge_parts(list(reversed(answers)), planning.MAX_PIECES, (piece_objects, GiB))
    assert list(merged.pieces) == one.pieces()
    assert in_ranges(objects, cuts, planning.MAX_PIECES, piece_objects=piece_objects) == one.pieces()
    assert merged.histogram == one.histogram()
    for shards in (1, 5, 40):
        assert group_pieces(list(merged.pieces), shards, piece_objects) == one.finish(shards, piece_objects)


def test_planner_pods_coarsened_past_the_most_pieces_still_join_as_one() -> None:
    objects = shaped(30_000, "deep", 3)
    one = sequential(objects, 8)
    answers = pod_parts(objects, random.Random(3).sample([k for k, _ in objects], 3), 8)
    assert list(merge_parts(answers, 8).pieces) == one.pieces()
    assert one.level > 0


def test_a_job_of_long_keys_is_cut_exactly_only_while_its_keys_fit_an_answer() -> None:
    # 3,000 keys of 200 characters: fewer than EXACT_KEYS, more than EXACT_KEY_BYTES of keys.
    objects = [(f"{i:05d}" + "x" * 195, 10) for i in range(3000)]
    one = sequential(objects, planning.MAX_PIECES, piece_objects=100)
    assert one.level == 0
    cuts = [objects[1000][0], objects[2000][0]]
    merged = merge_parts(pod_parts(objects, cuts, planning.MAX_PIECES, piece_objects=100), 8192, (100, GiB))
    assert list(merged.pieces) == one.pieces()
    fewer = objects[:2000]
    assert sequential(fewer, planning.MAX_PIECES, piece_objects=100).level == EXACT


SPEC = {
    "source": {"bucket": "src", "credentialsSecret": "s"},
    "destination": {"bucket": "dst", "credentialsSecret": "s"},
}


@pytest.mark.parametrize(
    ("objects", "parallelism", "max_objects", "shards"),
    [
        (600, 2, 100, [100] * 6),  # the progress test's plan
        (600, 2, 200, [200] * 3),  # a stalled CopyJob's plan (operator edits)
        (300, 3, 100, [100] * 3),  # a failed CopyJob retried by an edit
        (600, 1, None, [600]),
        (2_500, 8, None, [1000, 1000, 500]),  # pieces of 1,000 as always: shards of whole pieces
        (8_000, 2, 1000, [1000] * 8),
    ],
)  # fmt: skip
def test_small_jobs_keep_their_shards_however_their_keys_are_read(
    objects: int, parallelism: int, max_objects: int | None, shards: list[int]
) -> None:
    listed = [(f"data/{i:05d}.bin", 1024) for i in range(objects)]
    raw = {**SPEC, "parallelism": parallelism}
    if max_objects is not None:
        raw["shardSize"] = {"maxObjects": max_objects}
    spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    targets = piece_targets(spec.shard_size.max_objects, spec.shard_size.max_bytes)
    one = sequential(listed, planning.MAX_PIECES, page=7, piece_objects=targets[0], piece_bytes=targets[1])
    cuts = [listed[objects // 3][0], listed[objects // 2][0] + "!"]
    readers = {
        "sequential": one.pieces(),
        "ranges": in_ranges(listed, cuts, planning.MAX_PIECES, piece_objects=targets[0]),
        "pods": list(
            merge_parts(
                pod_parts(listed, cuts[:1], planning.MAX_PIECES, piece_objects=targets[0]), 8192, targets
            ).pieces
        ),
    }
    manifest = InOrderPass(Planner(piece_objects=targets[0], piece_bytes=targets[1]))
    manifest.add(KeyBatch.of(listed))
    assert manifest.planner is not None
    readers["manifest"] = manifest.planner.pieces()
    for name, pieces in readers.items():
        cut, _ = cut_shards(one.histogram(), pieces, spec, OperatorSettings(), LISTED)
        assert [s.objects for s in cut] == shards, name
        assert cut[0].start_after is None and cut[-1].end is None


def test_a_part_s_levels_are_checked() -> None:
    objects = shaped(3000, "flat", 1)
    good = pod_parts(objects, [objects[1500][0]], planning.MAX_PIECES, piece_objects=100)[0]
    raw = json.loads(good.to_json())
    assert raw["level"] == EXACT and len(raw["levels"]) == len(raw["pieces"])

    def changed(**fields: Any) -> str:
        return json.dumps({**raw, **fields})

    for text, fragment in [
        (changed(level=MAX_LEVEL + 1), "level is not a level"),
        (changed(level=True), "level is not a level"),
        (changed(levels=raw["levels"][1:]), "one level per piece"),
        (changed(levels=[*raw["levels"][:-1], 0]), "does not end where the part does"),
        (changed(levels=[FORCED, *raw["levels"][1:]]), "not of the part's level"),
        (changed(levels=[MAX_LEVEL + 1, *raw["levels"][1:]]), "not of the part's level"),
        (changed(levels=["0", *raw["levels"][1:]]), "not a whole number"),
        (changed(level=0), "not of the part's level"),  # ends of level EXACT in a part of level 0
    ]:
        with pytest.raises(PlanResultInvalid, match=fragment):
            parse_plan_result(text)
    # A whole listing's answer carries finished pieces, never levels.
    whole = json.loads(pod_parts(objects, [], planning.MAX_PIECES, piece_objects=100)[0].to_json())
    with pytest.raises(PlanResultInvalid, match="with a part of the key space only"):
        parse_plan_result(json.dumps({**whole, "part": None}))
    # A part at level EXACT holds one key per piece.
    merged_pieces = [*raw["pieces"][:2]]
    first = merged_pieces[0]
    two = {
        **first,
        "end": merged_pieces[1]["end"],
        "objects": 2,
        "bytes": first["bytes"] + merged_pieces[1]["bytes"],
    }
    text = changed(pieces=[two, *raw["pieces"][2:]], levels=raw["levels"][1:])
    with pytest.raises(PlanResultInvalid, match="more than one key"):
        parse_plan_result(text)


def test_a_part_too_large_for_an_answer_is_thinned_by_its_level_and_still_covers_its_keys() -> None:
    # 6,000 keys of 1,000 characters: past the exact cut; pieces of 10 objects would not fit an answer.
    objects = [(f"{i:05d}" + "k" * 995, 10) for i in range(6000)]
    planner = Planner(piece_objects=10)
    planner.add_all(objects)
    assert planner.level == 0
    pieces, levels = planner.range_pieces("zzz")
    fitted, kept, level = fit_part(pieces, levels, 0, limit=200_000)
    assert kept is not None and level is not None and level > 0
    assert len(json.dumps([p.as_json() for p in fitted])) <= 200_000
    assert sum(p.objects for p in fitted) == len(objects) and fitted[-1].end == "zzz"
    assert all(value >= level for value in kept[:-1]) and kept[-1] == planning.BOUNDARY
