"""Planning from a manifest (worker/manifestplan.py, worker/manifestscan.py): one pass that equals the
listing's plan when the keys come in key order, the sampled two-pass plan otherwise, and the vectorised
passes equal to the row-by-row rules they replace. Pure, but for small local manifest files."""

from __future__ import annotations

import bisect
import gzip
import itertools
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.operator.caps import cut_shards
from ferry.operator.planning import BUCKET_BOUNDS, Planner
from ferry.operator.render import fit_shards, shards_budget
from ferry.operator.settings import OperatorSettings
from ferry.worker import manifestio, manifestscan
from ferry.worker.manifestbatch import KeyBatch
from ferry.worker.manifestplan import FirstPass, InOrderPass, SecondPass, in_key_order


@pytest.mark.parametrize(
    ("keys", "after", "expected"),
    [
        ([], None, True),
        ([], "z", True),
        (["a"], None, True),
        (["a", "b", "c"], None, True),
        (["a", "b", "c"], "0", True),
        (["a", "b"], "a", False),  # the previous batch ended at the same key
        (["b", "c"], "bz", False),
        (["a", "a"], None, False),  # a key twice: a listing never repeats one
        (["b", "a"], None, False),
        (["a", "a\x00", "a\x01", "ab"], None, True),  # NUL sorts first, as in UTF-8 bytes
        (["Z", "a", "é", "\uffff", "\U00010000"], None, True),  # code points, so UTF-8 byte order
        (["\U00010000", "\uffff"], None, False),  # UTF-16 order would say otherwise
        (["dir/a", "dir0", "dir/b"], None, False),
    ],
)
def test_key_order_is_s3_s_order_strictly_rising(keys: list[str], after: str | None, expected: bool) -> None:
    assert in_key_order(keys, after) is expected


def _objects(count: int, seed: int, sizes: tuple[int, int] = (0, 3 * 2**20)) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    keys = {
        "".join(rng.choice("ab/é0\x00日") for _ in range(rng.randrange(1, 9))) + f"{i}" for i in range(count)
    }
    return [(k, rng.randrange(*sizes)) for k in sorted(keys)]


def _split(items: list[tuple[str, int]], seed: int) -> list[KeyBatch]:
    rng = random.Random(seed)
    batches, at = [], 0
    while at < len(items):
        step = rng.choice([1, 7, 100, 8192])
        batches.append(KeyBatch.of(items[at : at + step]))
        at += step
    return batches


@pytest.mark.parametrize(
    ("count", "piece_objects", "piece_bytes", "max_pieces"),
    [
        (0, 1000, 2**30, None),
        (1, 1000, 2**30, None),
        (5_000, 1000, 2**30, None),
        (5_000, 40, 2**30, None),
        (5_000, 1000, 2**22, None),  # pieces closed by bytes
        (20_000, 10, 2**30, 64),  # coarsened again and again
    ],
)
def test_keys_in_order_give_exactly_the_listing_planner_s_pieces(
    count: int, piece_objects: int, piece_bytes: int, max_pieces: int | None
) -> None:
    items = _objects(count, seed=count)

    def planner() -> Planner:
        return Planner(piece_objects=piece_objects, piece_bytes=piece_bytes, max_pieces=max_pieces)

    listed = planner().add_all(items)
    fed = InOrderPass(planner())
    for batch in _split(items, seed=3):
        fed.add(batch)
    assert fed.planner is not None
    assert fed.planner.pieces() == listed.pieces()
    assert fed.planner.histogram() == listed.histogram()
    assert FirstPass().add_all(items).histogram() == listed.histogram()


@pytest.mark.parametrize("where", [1, 2_500, 4_999], ids=["second-key", "middle", "last-key"])
def test_the_one_pass_plan_stops_at_the_first_key_out_of_order(where: int) -> None:
    items = _objects(5_000, seed=9)
    items[where - 1], items[where] = items[where], items[where - 1]
    fed = InOrderPass(Planner())
    batches = _split(items, seed=5)
    for batch in batches:
        fed.add(batch)
    assert not fed.in_order and fed.planner is None
    repeated = InOrderPass(Planner())
    repeated.add(KeyBatch.of(items[:10]))
    repeated.add(KeyBatch.of(items[9:20]))  # the next batch starts with the key the last one ended with
    assert repeated.planner is None


def _reference_counts(boundaries: tuple[str, ...], items: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """The row-by-row rule the vectorised second pass replaces: bisect each key into the boundaries."""
    objects = [0] * (len(boundaries) + 1)
    size = [0] * (len(boundaries) + 1)
    for key, value in items:
        index = bisect.bisect_left(boundaries, key)
        objects[index] += 1
        size[index] += value
    return list(zip(objects, size, strict=True))


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_piece_counts_equal_counting_row_by_row(seed: int) -> None:
    rng = random.Random(seed)
    items = _objects(rng.randrange(1, 30_000), seed, sizes=(0, 5 * 2**40))  # sums far past 2**53
    rng.shuffle(items)
    keys = [k for k, _ in items]
    # Boundaries that are keys (ends are inclusive), between keys, before and after all of them.
    chosen = rng.sample(keys, min(len(keys), rng.randrange(0, 300)))
    between = [k + "\x00" for k in rng.sample(keys, min(len(keys), 20))]
    boundaries = tuple(sorted({*chosen, *between, "", "\U0010ffff" * 3}))
    counted = SecondPass(boundaries)
    for batch in _split(items, seed):
        counted.add(batch)
    assert list(zip(counted._objects.tolist(), counted._bytes.tolist(), strict=True)) == _reference_counts(
        boundaries, items
    )
    assert counted.objects == len(items)


def test_the_first_pass_keeps_bounded_samples_and_the_largest_objects_exactly() -> None:
    items = _objects(50_000, seed=4)
    random.Random(4).shuffle(items)
    first = FirstPass(sample_keys=512)
    for batch in _split(items, seed=4):
        first.add(batch)
    assert len(first._uniform) == 512 and len(first._heavy_sizes) == 512
    largest = sorted((s for _, s in items), reverse=True)[:512]
    assert sorted(first._heavy_sizes.tolist(), reverse=True) == largest
    assert set(first._uniform) <= set(items)
    # Uniform: the sample's keys are spread over the whole key space, not the first rows read.
    ordered = sorted(items)
    ranks = sorted(bisect.bisect_left(ordered, pair) / len(items) for pair in first._uniform)
    assert ranks[len(ranks) // 10] < 0.2 and ranks[-len(ranks) // 10] > 0.8
    counts = np.bincount(np.searchsorted(np.array(BUCKET_BOUNDS), [s for _, s in items]), minlength=15)
    assert first.histogram().counts == tuple(counts.tolist())


# -- scan_manifest on local files -------------------------------------------------------------------------


def _spec(path: Path, **more: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {
            "source": {"bucket": "src-bucket", "manifest": {"format": "csv", "file": str(path)}},
            "destination": {"bucket": "dst-bucket"},
            "shardSize": {"maxObjects": 50},
            **more,
        },
        by_alias=True,
        by_name=False,
    )


def _write(path: Path, items: list[tuple[str, int]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("key,size\n")
        out.writelines(f'"{k}",{s}\n' if "," in k else f"{k},{s}\n" for k, s in items)
    return path


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    batches = manifestio.manifest_batches

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return batches(*args, **kwargs)

    monkeypatch.setattr(manifestscan, "manifest_batches", counted)
    return reads


def _listing_plan(spec: CopyJobSpec, items: list[tuple[str, int]]) -> tuple[Any, list[Shard]]:
    """What `scan.scan` makes of a sequential listing of the same objects, and the operator's shards."""
    listed = Planner(piece_objects=50).add_all(items)
    pieces = fit_shards(listed.pieces(), shards_budget(spec))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return pieces, cut_shards(listed.histogram(), pieces, spec, OperatorSettings(), at)[0]


def test_a_manifest_in_key_order_is_planned_in_one_read_as_a_listing_plans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [(k.replace("\x00", "-"), s) for k, s in _objects(12_000, seed=1)]
    items = sorted(dict(items).items())
    spec = _spec(_write(tmp_path / "keys.csv.gz", items))
    reads = _reads(monkeypatch)
    found = manifestscan.scan_manifest(spec, None)
    assert len(reads) == 1
    pieces, shards = _listing_plan(spec, items)
    assert list(found.result.pieces) == pieces
    assert found.result.histogram == Planner().add_all(items).histogram()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert (
        cut_shards(found.result.histogram, list(found.result.pieces), spec, OperatorSettings(), at)[0]
        == shards
    )


def test_prefix_and_filter_apply_before_the_pieces_as_the_listing_s_do(tmp_path: Path) -> None:
    items = sorted((f"{d}/{i:05d}.{ext}", i) for i in range(3000) for d, ext in (("a", "bin"), ("b", "txt")))
    spec = _spec(
        _write(tmp_path / "keys.csv.gz", items),
        filter={"include": ["*.bin"], "minSize": 10},
    )
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"prefix": "a/"})})
    kept = [(k, s) for k, s in items if k.startswith("a/") and k.endswith(".bin") and s >= 10]
    found = manifestscan.scan_manifest(spec, None)
    assert list(found.result.pieces) == _listing_plan(spec, kept)[0]


def test_a_manifest_that_turns_out_of_order_midway_is_planned_from_two_reads_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [(f"k/{i:06d}", 10 + i % 7) for i in range(20_000)]
    tail = items[15_000:]
    random.Random(2).shuffle(tail)
    rows = items[:15_000] + tail  # in order for 15,000 rows, then not
    spec = _spec(_write(tmp_path / "keys.csv.gz", rows))
    reads = _reads(monkeypatch)
    found = manifestscan.scan_manifest(spec, None)
    assert len(reads) == 2
    pieces = found.result.pieces
    assert pieces[0].start_after is None and pieces[-1].end is None
    assert all(a.end == b.start_after for a, b in itertools.pairwise(pieces))
    keys = [k for k, _ in items]
    for piece in pieces:  # each piece counts exactly the keys in its range
        low = 0 if piece.start_after is None else bisect.bisect_right(keys, piece.start_after)
        high = len(keys) if piece.end is None else bisect.bisect_right(keys, piece.end)
        assert (piece.objects, piece.bytes) == (high - low, sum(s for _, s in items[low:high]))
    assert found.result.histogram == Planner().add_all(items).histogram()
