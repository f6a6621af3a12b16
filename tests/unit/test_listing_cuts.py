"""Where an idle lister cuts a busy range (`ParallelListing._take`), decided from the ranges' state
alone: no request is made here."""

from __future__ import annotations

import time

import pytest

from ferry.model.copyjob import Filter
from ferry.worker.filters import ObjectFilter
from ferry.worker.keyspace import Alphabet
from ferry.worker.parallel_listing import ParallelListing

DIGITS_AND_DOTS = Alphabet(ord("."), ord("z"))


def listing() -> ParallelListing:
    return ParallelListing(
        None,
        "bucket",
        "",
        object_filter=ObjectFilter.compile(Filter(), ""),
        piece_objects=1000,
        piece_bytes=2**30,
        call=lambda request: request(),
        clock=time.monotonic,
        page_size=1000,
    )


@pytest.mark.parametrize(
    ("page_first", "position", "end", "more", "cut"),
    [
        # 62,000 keys listed from day 01 to the middle of day 21, which holds far more than the days
        # before it: by density the range is nearly done, yet its pages say the day goes on.
        pytest.param(
            "d/2021-01-21/object-047285.x",
            "d/2021-01-21/object-048284.x",
            "d/2021-01-25",
            True,
            True,
            id="hot-directory",
        ),
        # The last page said no more keys follow: nothing to cut.
        pytest.param(
            "d/2021-01-21/object-047285.x",
            "d/2021-01-21/object-048284.x",
            "d/2021-01-25",
            False,
            False,
            id="ended",
        ),
        # A few pages ahead is past the range's end: it ends soon enough.
        pytest.param(
            "d/2021-01-21/object-047285.x",
            "d/2021-01-21/object-048284.x",
            "d/2021-01-21/object-048300",
            True,
            False,
            id="end-is-near",
        ),
    ],
)
def test_a_range_dense_where_it_is_listed_is_cut_a_few_pages_ahead(
    page_first: str, position: str, end: str, more: bool, cut: bool
) -> None:
    pl = listing()
    busy = pl._new_range(None, end)
    busy.state, busy.paged, busy.more = "active", True, more
    busy.first, busy.page_first, busy.position, busy.listed = (
        "d/2021-01-01/object-000000.x",
        page_first,
        position,
        62_000,
    )
    busy.alphabet = DIGITS_AND_DOTS
    pl._ranges = [busy]
    with pl._lock:
        upper = pl._take()
    if not cut:
        assert upper is None and busy.end == end
        return
    assert upper is not None
    assert upper.start_after == busy.end and upper.end == end
    assert position < upper.start_after < end
    # Within the hot day: the cut takes the rest of the day's keys from the busy lister.
    assert upper.start_after < "d/2021-01-22"


def test_a_range_with_many_keys_left_by_density_is_cut_at_its_midpoint() -> None:
    pl = listing()
    busy = pl._new_range(None, "d/9")
    busy.state, busy.paged = "active", True
    busy.first, busy.page_first, busy.position, busy.listed = "d/0000", "d/0990", "d/1000", 1000
    busy.alphabet = Alphabet(ord("0"), ord("9"))
    pl._ranges = [busy]
    with pl._lock:
        upper = pl._take()
    assert upper is not None and "d/4" < upper.start_after < "d/6"
