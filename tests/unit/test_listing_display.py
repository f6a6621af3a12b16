"""What `ferry plan` shows while it lists (worker/listingdisplay.py): keys, objects and bytes found,
listers at work, ranges, requests, the rate once it means something, and the ETA only when the lister can
estimate it; plain lines for logs, one at the end."""

from __future__ import annotations

import io

import pytest

from ferry.worker.listingdisplay import ListingDisplay, describe_listing
from ferry.worker.scan import ListingProgress

BUSY = ListingProgress(
    listed=120_000,
    objects=120_000,
    bytes=3 * 2**30,
    listers=32,
    ranges_done=10,
    ranges_total=40,
    requests=130,
    keys_per_second=24_000.4,
    eta_seconds=65,
)


@pytest.mark.parametrize(
    ("progress", "elapsed", "expected"),
    [
        (
            BUSY,
            5.0,
            "listing: 120,000 objects (3.0 GiB) · 32 listers · ranges 10/40 · 130 requests · 24,000 keys/s "
            "· ETA 1m05s",
        ),
        # Too early for a rate; no ETA yet.
        (
            ListingProgress(listed=10, objects=10, bytes=10, listers=4, requests=1),
            0.2,
            "listing: 10 objects (10 B) · 4 listers · 1 requests · ETA --",
        ),
        # The filter keeps fewer objects than keys listed.
        (
            ListingProgress(listed=500, objects=20, bytes=2048, listers=1, requests=1, keys_per_second=250.0),
            2.0,
            "listing: 500 keys, 20 objects (2.0 KiB) kept by the filter · 1 listers · 1 requests · 250 keys/s "
            "· ETA --",
        ),
    ],
    ids=["busy", "starting", "filtered"],
)
def test_one_line_says_how_far_the_listing_is(
    progress: ListingProgress, elapsed: float, expected: str
) -> None:
    assert describe_listing(progress, elapsed) == expected


def test_a_plain_display_prints_a_last_line_when_the_listing_ends() -> None:
    stream = io.StringIO()
    ticks = iter(range(0, 10_000))
    with ListingDisplay(
        lambda: BUSY, stream, live=False, plain_interval=3600, clock=lambda: float(next(ticks))
    ):
        pass
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[") and "120,000 objects" in lines[0]
