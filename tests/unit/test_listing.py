"""Merge-join of source and destination listings; background page prefetch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ferry.worker.keys import destination_key
from ferry.worker.listing import ListingFailed, merge_join, prefetch
from ferry.worker.objects import KeyRange, ObjectInfo

T = datetime(2024, 1, 1, tzinfo=UTC)


def objs(*keys: str) -> list[ObjectInfo]:
    return [ObjectInfo(key=k, size=len(k), etag=f'"{k}"', last_modified=T) for k in keys]


def to_dst(key: str) -> str:
    return destination_key(key, "s/", "d/")


def summary(pairs: Iterator) -> list[tuple[str, str, str | None]]:
    return [(p.source.key, p.destination_key, p.existing.key if p.existing else None) for p in pairs]


@pytest.mark.parametrize(
    ("sources", "destinations", "expected"),
    [
        pytest.param(
            ["s/a", "s/b", "s/c"],
            ["d/a", "d/b", "d/c"],
            [("s/a", "d/a", "d/a"), ("s/b", "d/b", "d/b"), ("s/c", "d/c", "d/c")],
            id="all-present",
        ),
        pytest.param(
            ["s/a", "s/b", "s/c"],
            ["d/b"],
            [("s/a", "d/a", None), ("s/b", "d/b", "d/b"), ("s/c", "d/c", None)],
            id="missing-destinations",
        ),
        pytest.param(
            ["s/b", "s/d"],
            ["d/a", "d/b", "d/c", "d/d", "d/e"],
            [("s/b", "d/b", "d/b"), ("s/d", "d/d", "d/d")],
            id="extra-destinations-ignored",
        ),
        pytest.param(
            ["s/a", "s/b"], [], [("s/a", "d/a", None), ("s/b", "d/b", None)], id="empty-destination"
        ),
        pytest.param([], ["d/a"], [], id="empty-source"),
        pytest.param(
            ["s/a", "s/a/b", "s/ab"],
            ["d/a/b", "d/ab"],
            [("s/a", "d/a", None), ("s/a/b", "d/a/b", "d/a/b"), ("s/ab", "d/ab", "d/ab")],
            id="prefix-like-keys",
        ),
        pytest.param(
            ["s/x"],
            ["d/w", "d/y"],
            [("s/x", "d/x", None)],
            id="gap-between-destinations",
        ),
    ],
)
def test_merge_join(sources: list[str], destinations: list[str], expected: list[tuple]) -> None:
    assert summary(merge_join(objs(*sources), objs(*destinations), to_dst)) == expected


def test_existing_is_the_destination_object() -> None:
    dest = objs("d/a")
    (pair,) = merge_join(objs("s/a"), iter(dest), to_dst)
    assert pair.existing is dest[0]


def test_destinations_none_never_consults() -> None:
    pairs = summary(merge_join(objs("s/a", "s/b"), None, to_dst))
    assert pairs == [("s/a", "d/a", None), ("s/b", "d/b", None)]


def test_destination_is_consumed_lazily() -> None:
    consumed: list[str] = []

    def dest() -> Iterator[ObjectInfo]:
        for o in objs("d/a", "d/b", "d/c", "d/z"):
            consumed.append(o.key)
            yield o

    pairs = merge_join(objs("s/a", "s/b"), dest(), to_dst)
    next(pairs)
    assert "d/z" not in consumed


@pytest.mark.parametrize(
    ("key_range", "expected"),
    [
        pytest.param(KeyRange(), ["s/a", "s/b", "s/c", "s/d"], id="whole"),
        pytest.param(KeyRange(start_after="s/b"), ["s/c", "s/d"], id="start-after-exclusive"),
        pytest.param(KeyRange(end="s/b"), ["s/a", "s/b"], id="end-inclusive"),
        pytest.param(KeyRange(start_after="s/a", end="s/c"), ["s/b", "s/c"], id="both"),
        pytest.param(KeyRange(start_after="s/bb", end="s/c"), ["s/c"], id="start-between-keys"),
        pytest.param(KeyRange(start_after="s/d"), [], id="after-everything"),
    ],
)
def test_merge_join_key_range(key_range: KeyRange, expected: list[str]) -> None:
    pairs = merge_join(objs("s/a", "s/b", "s/c", "s/d"), objs("d/b", "d/c"), to_dst, key_range)
    assert [p.source.key for p in pairs] == expected


def test_merge_join_stops_reading_sources_past_end() -> None:
    def sources() -> Iterator[ObjectInfo]:
        yield from objs("s/a", "s/b", "s/c")
        raise AssertionError("read past the end of the range")

    pairs = list(merge_join(sources(), None, to_dst, KeyRange(end="s/b")))
    assert [p.source.key for p in pairs] == ["s/a", "s/b"]


@pytest.mark.parametrize(
    ("pages", "depth"),
    [
        pytest.param([], 4, id="no-pages"),
        pytest.param([[]], 4, id="one-empty-page"),
        pytest.param([["a", "b"], ["c"], [], ["d", "e", "f"]], 4, id="several-pages"),
        pytest.param([[f"k{i:03d}"] for i in range(20)], 1, id="more-pages-than-depth"),
    ],
)
def test_prefetch_yields_all_objects_in_order(pages: list[list[str]], depth: int) -> None:
    object_pages = [objs(*page) for page in pages]
    got = [o.key for o in prefetch(iter(object_pages), depth=depth)]
    assert got == [k for page in pages for k in page]


def test_prefetch_reraises_producer_error_as_listing_failed() -> None:
    def pages() -> Iterator[list[ObjectInfo]]:
        yield objs("a", "b")
        raise RuntimeError("AccessDenied on page 2")

    got: list[str] = []
    with pytest.raises(ListingFailed, match="AccessDenied on page 2") as caught:
        for o in prefetch(pages()):
            got.append(o.key)
    assert got == ["a", "b"]
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_prefetch_error_on_first_page() -> None:
    def pages() -> Iterator[list[ObjectInfo]]:
        raise OSError("connection refused")
        yield []  # pragma: no cover

    with pytest.raises(ListingFailed) as caught:
        list(prefetch(pages()))
    assert isinstance(caught.value.__cause__, OSError)
