"""Accounting, rate windows and ETA of a running copy."""

from __future__ import annotations

import pytest

from ferry.worker.objects import Outcome
from ferry.worker.progress import Counts, RateWindow, eta_seconds

EVENTS = [
    ("discover", 100),
    ("discover", 200),
    ("finish", Outcome.COPIED, 100),
    ("discover", 50),
    ("discover", 0),
    ("finish", Outcome.SKIPPED, 50),
    ("finish", Outcome.FAILED, 0),
    ("discover", 7),
]


def apply(counts: Counts, event: tuple) -> Counts:
    if event[0] == "discover":
        return counts.discover(event[1])
    return counts.finish(event[1], event[2])


def test_accounting_closes_after_every_event() -> None:
    counts = Counts()
    for event in EVENTS:
        counts = apply(counts, event)
        assert counts.discovered == counts.copied + counts.skipped + counts.failed + counts.pending
        assert counts.pending >= 0
        assert counts.bytes_done <= counts.bytes_discovered
    assert (counts.discovered, counts.copied, counts.skipped, counts.failed, counts.pending) == (
        5,
        1,
        1,
        1,
        2,
    )
    assert (counts.bytes_discovered, counts.bytes_copied, counts.bytes_skipped, counts.bytes_failed) == (
        357,
        100,
        50,
        0,
    )
    assert counts.bytes_done == 150


@pytest.mark.parametrize(
    ("outcome", "field", "bytes_field"),
    [
        pytest.param(Outcome.COPIED, "copied", "bytes_copied", id="copied"),
        pytest.param(Outcome.SKIPPED, "skipped", "bytes_skipped", id="skipped"),
        pytest.param(Outcome.FAILED, "failed", "bytes_failed", id="failed"),
    ],
)
def test_finish_counts_the_outcome(outcome: Outcome, field: str, bytes_field: str) -> None:
    before = Counts().discover(42)
    after = before.finish(outcome, 42)
    assert getattr(after, field) == 1
    assert getattr(after, bytes_field) == 42
    assert after.done == 1 and after.pending == 0
    assert before.pending == 1  # values are immutable


@pytest.mark.parametrize(
    ("samples", "seconds", "expected"),
    [
        pytest.param([], 10.0, (0.0, 0.0), id="no-samples"),
        pytest.param([(0.0, 0, 0)], 10.0, (0.0, 0.0), id="one-sample"),
        pytest.param([(5.0, 3, 30), (5.0, 9, 90)], 10.0, (0.0, 0.0), id="zero-span"),
        pytest.param([(0.0, 0, 0), (2.0, 10, 1000)], 10.0, (5.0, 500.0), id="two-samples"),
        pytest.param([(0.0, 0, 0), (1.0, 1, 10), (4.0, 40, 400)], 10.0, (10.0, 100.0), id="three-samples"),
        pytest.param(
            [(0.0, 0, 0), (1.0, 1000, 10000)]
            + [(float(t), 1000 + 100 * (t - 1), 10000 + 1000 * (t - 1)) for t in range(2, 23)],
            10.0,
            (100.0, 1000.0),
            id="old-samples-dropped",
        ),
    ],
)
def test_rate_window(samples: list[tuple[float, int, int]], seconds: float, expected: tuple) -> None:
    window = RateWindow(seconds)
    for now, objects, nbytes in samples:
        window.add(now, objects, nbytes)
    assert window.rates() == pytest.approx(expected)


def test_rate_window_forgets_a_burst_after_the_window() -> None:
    window = RateWindow(seconds=5.0)
    window.add(0.0, 0, 0)
    window.add(1.0, 1000, 0)  # burst
    for t in range(2, 30):
        window.add(float(t), 1000 + (t - 1), 0)  # then one object per second
    objects_per_second, _ = window.rates()
    assert objects_per_second == pytest.approx(1.0, rel=0.05)


def counts(discovered: int, done: int, bytes_discovered: int, bytes_done: int, listing_done: bool) -> Counts:
    return Counts(
        discovered=discovered,
        copied=done,
        bytes_discovered=bytes_discovered,
        bytes_copied=bytes_done,
        listing_done=listing_done,
    )


@pytest.mark.parametrize(
    ("state", "ops", "bps", "expected"),
    [
        pytest.param(counts(100, 10, 1000, 100, False), 10.0, 100.0, None, id="listing-not-done"),
        pytest.param(counts(100, 100, 1000, 1000, True), 0.0, 0.0, 0.0, id="done"),
        pytest.param(counts(0, 0, 0, 0, True), 0.0, 0.0, 0.0, id="nothing-to-do"),
        pytest.param(counts(100, 50, 1000, 500, True), 0.0, 0.0, None, id="no-rate-yet"),
        pytest.param(counts(100, 50, 1000, 500, True), 10.0, 0.0, 5.0, id="objects-only"),
        pytest.param(counts(100, 50, 1000, 500, True), 0.0, 50.0, 10.0, id="bytes-only"),
        pytest.param(counts(100, 50, 1000, 500, True), 10.0, 50.0, 10.0, id="bytes-slower-wins"),
        pytest.param(counts(100, 50, 1000, 500, True), 1.0, 500.0, 50.0, id="objects-slower-wins"),
        pytest.param(counts(100, 50, 1000, 1000, True), 0.0, 50.0, None, id="no-bytes-left-no-object-rate"),
    ],
)
def test_eta_seconds(state: Counts, ops: float, bps: float, expected: float | None) -> None:
    result = eta_seconds(state, ops, bps)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
