"""Part layout of multipart transfers."""

from __future__ import annotations

import itertools

import pytest

from ferry.worker.parts import (
    DEFAULT_PART,
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    part_ranges,
    part_size_for,
    transfer_memory,
)

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("object_size", "preferred", "expected"),
    [
        pytest.param(0, DEFAULT_PART, 8 * MiB, id="empty-object"),
        pytest.param(100 * KiB, DEFAULT_PART, 8 * MiB, id="small"),
        pytest.param(10_000 * 8 * MiB, DEFAULT_PART, 8 * MiB, id="exactly-10000-parts"),
        pytest.param(10_000 * 8 * MiB + 1, DEFAULT_PART, 16 * MiB, id="one-byte-over-10000-parts"),
        pytest.param(80 * GiB, DEFAULT_PART, 16 * MiB, id="80GiB-grows"),
        pytest.param(5 * TiB, DEFAULT_PART, 1024 * MiB, id="5TiB"),
        pytest.param(1 * MiB, 1 * MiB, MIN_PART, id="preferred-below-minimum"),
        pytest.param(1 * MiB, 10 * GiB, MAX_PART, id="preferred-above-maximum"),
        pytest.param(100 * TiB, DEFAULT_PART, MAX_PART, id="beyond-s3-capped"),
    ],
)
def test_part_size_for(object_size: int, preferred: int, expected: int) -> None:
    assert part_size_for(object_size, preferred) == expected


@pytest.mark.parametrize(
    "object_size",
    [1, 5 * MiB, 80 * GiB, 100 * GiB + 7, 1 * TiB, 5 * TiB - 1, 5 * TiB],
)
@pytest.mark.parametrize("preferred", [MIN_PART, DEFAULT_PART, 64 * MiB], ids=["5MiB", "8MiB", "64MiB"])
def test_part_size_invariants(object_size: int, preferred: int) -> None:
    size = part_size_for(object_size, preferred)
    assert MIN_PART <= size <= MAX_PART
    assert size >= preferred
    assert -(-object_size // size) <= MAX_PARTS
    ratio = size // preferred
    assert size % preferred == 0 and ratio & (ratio - 1) == 0  # a power-of-two multiple
    if size > preferred:  # the previous doubling was not enough
        assert -(-object_size // (size // 2)) > MAX_PARTS


def test_5tib_part_size_is_near_the_minimum_needed() -> None:
    needed = -(-5 * TiB // MAX_PARTS)  # about 525 MiB
    size = part_size_for(5 * TiB)
    assert needed <= size < 2 * needed


@pytest.mark.parametrize(
    ("object_size", "part_size", "expected"),
    [
        pytest.param(0, 8, [], id="zero-size-no-parts"),
        pytest.param(1, 8, [(0, 0)], id="one-byte"),
        pytest.param(8, 8, [(0, 7)], id="exactly-one-part"),
        pytest.param(9, 8, [(0, 7), (8, 8)], id="one-byte-spills"),
        pytest.param(20, 8, [(0, 7), (8, 15), (16, 19)], id="short-last-part"),
        pytest.param(24, 8, [(0, 7), (8, 15), (16, 23)], id="exact-multiple"),
    ],
)
def test_part_ranges(object_size: int, part_size: int, expected: list[tuple[int, int]]) -> None:
    assert list(part_ranges(object_size, part_size)) == expected


@pytest.mark.parametrize(
    ("object_size", "part_size"),
    [(1, MIN_PART), (MIN_PART, MIN_PART), (80 * GiB, 16 * MiB), (5 * TiB, GiB), (12345678901, 7 * MiB)],
)
def test_part_ranges_cover_contiguously(object_size: int, part_size: int) -> None:
    ranges = list(part_ranges(object_size, part_size))
    assert ranges[0][0] == 0
    assert ranges[-1][1] == object_size - 1
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1
    assert all(last - first + 1 <= part_size for first, last in ranges)
    assert sum(last - first + 1 for first, last in ranges) == object_size
    assert len(ranges) == -(-object_size // part_size)


@pytest.mark.parametrize(
    ("object_size", "part_size", "server_side", "expected"),
    [
        pytest.param(100 * KiB, DEFAULT_PART, False, 100 * KiB, id="small-object-whole"),
        pytest.param(0, DEFAULT_PART, False, 0, id="empty-object"),
        pytest.param(1 * GiB, DEFAULT_PART, False, DEFAULT_PART, id="large-one-part"),
        pytest.param(80 * GiB, DEFAULT_PART, False, 16 * MiB, id="grown-part"),
        pytest.param(1 * GiB, 1 * MiB, False, MIN_PART, id="part-clamped-to-minimum"),
        pytest.param(1 * GiB, DEFAULT_PART, True, 0, id="server-side-no-memory"),
        pytest.param(5 * TiB, DEFAULT_PART, True, 0, id="server-side-huge"),
    ],
)
def test_transfer_memory(object_size: int, part_size: int, server_side: bool, expected: int) -> None:
    assert transfer_memory(object_size, part_size, server_side) == expected
