"""What `ferry run` shows while it works (worker/display.py): lines and frames are pure functions of one
`Progress` snapshot, rendered here without a terminal."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.text import Text

from ferry.worker.display import (
    RATE_MIN_WINDOW,
    SPINNER,
    describe,
    format_duration,
    format_percent,
    format_rate,
    frame,
    plain_due,
    plain_line,
    spinner,
)
from ferry.worker.engine import Progress
from ferry.worker.limits import LimiterState
from ferry.worker.progress import Counts

LIMITER = LimiterState(concurrency=16, in_flight=12, reason="fixed", reserved_bytes=0)

#: 2,293 objects of 1,000 bytes, 2,261 done: listed ahead of the copier, which has taken in 2,280.
LISTING = Counts(
    discovered=2_280,
    copied=2_261,
    bytes_discovered=2_280_000,
    bytes_copied=2_261_000,
    listed=2_293,
    bytes_listed=2_293_000,
)
LISTED = replace(LISTING, listed_all=True)
DONE = Counts(
    discovered=2_293,
    copied=2_293,
    bytes_discovered=2_293_000,
    bytes_copied=2_293_000,
    listed=2_293,
    bytes_listed=2_293_000,
    listed_all=True,
    listing_done=True,
)


def snapshot(
    counts: Counts,
    elapsed: float = 12.0,
    rate: float = 183.0,
    eta: float | None = 7.0,
    throttles: int = 0,
    limiter: LimiterState = LIMITER,
) -> Progress:
    return Progress(
        counts=counts,
        elapsed_seconds=elapsed,
        objects_per_second=rate,
        bytes_per_second=rate * 1000,
        eta_seconds=eta,
        limiter=limiter,
        throttles=throttles,
        retries=0,
        requests=0,
    )


def text_of(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize(
    ("progress", "present", "absent"),
    [
        pytest.param(
            snapshot(LISTING, eta=None),
            ("listing: 2,293 objects (2.2 MiB) found so far, 2,261 done (2.2 MiB)", "183.0 obj/s"),
            ("%", "ETA", "2,293+", "/2,293"),
            id="listing: counts and rate, no percent, no ETA",
        ),
        pytest.param(
            snapshot(LISTED),
            ("2,261/2,293 objects (98.6%)", "2.2 MiB/2.2 MiB", "183.0 obj/s, 178.7 KiB/s", "ETA 7s"),
            ("listing", "+"),
            id="total known from the lister before the copier took everything in",
        ),
        pytest.param(
            snapshot(DONE, eta=0.0),
            ("2,293/2,293 objects (100.0%)", "ETA 0s"),
            ("listing",),
            id="done",
        ),
        pytest.param(
            snapshot(LISTED, elapsed=0.4, eta=1.0),
            ("2,261/2,293 objects (98.6%)", "ETA --"),
            ("obj/s", "ETA 1s"),
            id="no rate (nor ETA from it) before a window exists",
        ),
        pytest.param(
            snapshot(LISTED, rate=0.0, eta=None),
            ("0.0 obj/s", "ETA --"),
            ("ETA 7s",),
            id="nothing moves: ETA blank, not a stale number",
        ),
        pytest.param(
            snapshot(replace(LISTED, skipped=3, failed=2, copied=2_256), throttles=5),
            ("skipped 3", "failed 2", "throttled 5"),
            (),
            id="skips, failures and throttles",
        ),
        pytest.param(
            snapshot(
                LISTED,
                limiter=replace(
                    LIMITER, rss_bytes=200 * 2**20, budget_bytes=512 * 2**20, reserved_bytes=2**20
                ),
            ),
            (
                "memory 200.0 MiB of 512.0 MiB budget (1.0 MiB reserved)",
                "concurrency 16 (fixed, 12 in flight)",
            ),
            (),
            id="memory",
        ),
    ],
)
def test_describe(progress: Progress, present: tuple[str, ...], absent: tuple[str, ...]) -> None:
    line = describe(progress)
    for fragment in present:
        assert fragment in line, (fragment, line)
    for fragment in absent:
        assert fragment not in line, (fragment, line)


def test_a_snapshot_without_lister_counts_still_shows_what_the_copier_took_in() -> None:
    counts = Counts(discovered=10, copied=4, bytes_discovered=10_000, bytes_copied=4_000)
    assert "10 objects (9.8 KiB) found so far, 4 done" in describe(snapshot(counts, eta=None))


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [
        (0, 10, "0.0%"),
        (2_261, 2_293, "98.6%"),
        (9_999, 10_000, "99.9%"),  # rounded down: 100.0% only when everything is done
        (10_000, 10_000, "100.0%"),
        (0, 0, "100.0%"),  # nothing to copy is done
    ],
)
def test_format_percent(done: int, total: int, expected: str) -> None:
    assert format_percent(done, total) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "--"), (0.0, "0s"), (7.4, "7s"), (59.6, "1m00s"), (125, "2m05s"), (3 * 3600 + 61, "3h01m")],
)
def test_format_duration(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("elapsed", "rate", "expected"),
    [
        (0.0, 0.0, None),
        (RATE_MIN_WINDOW - 0.01, 500.0, None),
        (RATE_MIN_WINDOW, 66.0, "66.0 obj/s, 64.5 KiB/s"),
        (30.0, 0.0, "0.0 obj/s, 0 B/s"),
    ],
)
def test_format_rate_only_over_a_real_window(elapsed: float, rate: float, expected: str | None) -> None:
    assert format_rate(snapshot(LISTED, elapsed=elapsed, rate=rate)) == expected


def test_plain_line_starts_with_the_elapsed_time() -> None:
    assert plain_line(snapshot(LISTED, elapsed=11.2)).startswith("[11s] 2,261/2,293 objects (98.6%)")


def test_frame_while_listing_is_a_spinner_line_without_a_bar() -> None:
    shown = frame(snapshot(LISTING, elapsed=0.6, eta=None))
    assert isinstance(shown, Text)  # no bar at all: a bar would need a total
    assert shown.plain.startswith(f"{SPINNER[2]} listing: 2,293 objects")
    assert "━" not in text_of(shown)


def test_frame_with_a_known_total_has_a_bar_filled_to_the_fraction_done() -> None:
    shown = frame(snapshot(LISTED))
    assert isinstance(shown, Group)
    bar, line = shown.renderables
    assert isinstance(bar, ProgressBar) and isinstance(line, Text)
    assert (bar.completed, bar.total) == (2_261, 2_293)
    assert "(98.6%)" in line.plain and "ETA 7s" in line.plain
    assert "98.6%" in text_of(shown)


def test_frame_of_an_empty_job_is_a_full_bar() -> None:
    empty = Counts(listed_all=True, listing_done=True)
    bar = frame(snapshot(empty, eta=0.0)).renderables[0]  # type: ignore[union-attr]
    assert bar.completed == bar.total


def test_spinner_advances_with_elapsed_time() -> None:
    assert [spinner(i * 0.25) for i in range(len(SPINNER) + 1)] == [*SPINNER, SPINNER[0]]


@pytest.mark.parametrize(
    ("progress", "last_line_at", "total_was_known", "due"),
    [
        pytest.param(snapshot(LISTING, elapsed=3.0), None, False, False, id="listing, before the interval"),
        pytest.param(snapshot(LISTING, elapsed=10.0), None, False, True, id="first interval"),
        pytest.param(snapshot(LISTED, elapsed=0.7), None, False, True, id="listing just ended"),
        pytest.param(snapshot(LISTED, elapsed=4.0), 0.7, True, False, id="total known, within interval"),
        pytest.param(snapshot(LISTED, elapsed=10.7), 0.7, True, True, id="total known, next interval"),
    ],
)
def test_plain_due(progress: Progress, last_line_at: float | None, total_was_known: bool, due: bool) -> None:
    assert plain_due(progress, last_line_at, total_was_known, 10.0) is due
