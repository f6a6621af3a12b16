"""Where an idle lister cuts a busy range (`ParallelListing._take`), decided from the ranges' state
alone: no request is made here."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ferry.model.copyjob import Filter
from ferry.worker.filters import ObjectFilter
from ferry.worker.keyspace import CEILING, Alphabet
from ferry.worker.parallel_listing import ParallelListing, _Probe, _Range

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
    busy = busy_range(pl, "d/2021-01-01/object-000000.x", page_first, position, end, 62_000, more=more)
    # The days after day 21 are known and already cut off (a probe found them): what is left is the day's.
    busy.mark_folder = "d/"
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


def busy_range(
    pl: ParallelListing,
    first: str,
    page_first: str,
    position: str,
    end: str | None,
    listed: int,
    more: bool = True,
) -> Any:
    """The listing's one range, active and paged, listed from ``first`` up to ``position``."""
    busy = pl._new_range(None, end)
    busy.state, busy.paged, busy.more = "active", True, more
    busy.first, busy.page_first, busy.position, busy.listed = first, page_first, position, listed
    busy.alphabet = DIGITS_AND_DOTS
    pl._ranges = [busy]
    return busy


def tree_range(pl: ParallelListing, position: str, end: str | None, page_first: str) -> Any:
    return busy_range(pl, "t/2021/01/01/o-000000.x", page_first, position, end, 5000)


def test_a_range_in_a_prefix_tree_is_cut_at_the_middle_folder_a_probe_found() -> None:
    pl = listing()
    busy = tree_range(pl, "t/2021/03/05/o-000999.x", "t/2021/" + CEILING, "t/2021/03/05/o-000000.x")
    with pl._lock:
        probe = pl._take()
    # No folder known yet: an idle lister asks which folders follow, instead of cutting blindly.
    assert isinstance(probe, _Probe)
    assert (probe.folder, probe.start_after) == ("t/2021/", "t/2021/03/" + CEILING)
    months = ["t/2021/04/", "t/2021/05/", "t/2021/06/", "t/2021/07/"]
    busy.marks, busy.mark_folder = months, probe.folder
    with pl._lock:
        upper = pl._take()
    assert isinstance(upper, _Range) and upper.start_after == busy.end == "t/2021/06/"
    assert busy.marks == months[:2] and upper.marks == months[3:]
    # Every cut after that is at a folder too, with no request to find it.
    with pl._lock:
        again = pl._take()
    assert isinstance(again, _Range) and again.start_after in months


def test_the_rest_of_a_small_folder_is_not_cut() -> None:
    pl = listing()
    # The last page ended the folder "t/2021/03/05/" early (its keys began in another folder): cutting
    # ahead of the position would most likely land past its last key, a request for nothing.
    busy = tree_range(pl, "t/2021/03/05/o-000013.x", "t/2021/03/06/", "t/2021/03/04/o-000100.x")
    busy.mark_folder = "t/2021/03/"
    with pl._lock:
        assert pl._take() is None
    assert busy.end == "t/2021/03/06/"


def test_a_large_folder_of_numbered_keys_is_cut_as_far_ahead_as_it_reaches_back() -> None:
    pl = listing()
    day = "t/2021/03/05/o-"
    busy = tree_range(pl, day + "004999.x", "t/2021/03/06/", day + "004000.x")
    busy.first, busy.mark_folder = day + "000000.x", "t/2021/03/"
    with pl._lock:
        upper = pl._take()
    # 5,000 keys listed in the folder so far: it likely holds as many again, so the cut falls among its
    # own numbers, 5,000 ahead, not at a midpoint of the key space past its last key.
    assert isinstance(upper, _Range) and upper.start_after == busy.end == day + "009998"
    assert upper.origin == day + "000000.x"
