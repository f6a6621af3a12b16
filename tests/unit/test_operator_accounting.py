"""Progress accounting rules (operator/accounting.py): per-shard floors, percent, smoothed rates, running
time and ETA."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ferry.operator.accounting import (
    SMOOTHING_SECONDS,
    STALL_SECONDS,
    Pace,
    PaceBefore,
    PaceNow,
    ShardCount,
    Tally,
    account,
    pace,
    percent,
    smooth,
)


def objects(copied: int = 0, skipped: int = 0, failed: int = 0, size: int = 10) -> Tally:
    """A tally whose bytes follow the objects (``size`` bytes each)."""
    return Tally(copied, skipped, failed, copied * size, skipped * size, failed * size)


# id, evidence, shard total, floor, shown (copied, skipped, failed), shown total
ACCOUNTING = [
    ("no-floor-evidence-as-is", objects(40, 10, 1), 100, None, (40, 10, 1), 100),
    ("higher-than-floor", objects(60, 10, 0), 100, objects(40, 10, 0), (60, 10, 0), 100),
    ("stale-answer-lowers-nothing", objects(30, 5, 0), 100, objects(40, 10, 1), (40, 10, 1), 100),
    ("pod-stopped-nothing-reports", objects(), 100, objects(40, 10, 1), (40, 10, 1), 100),
    # A restart without a resume point re-lists the 40 it copied as present: still 40 copied.
    ("relisted-as-skipped-counts-once-as-copied", objects(0, 40, 0), 100, objects(40, 0, 0), (40, 0, 0), 100),
    # Past its predecessor: 5 new copies; what it re-listed is no longer told apart from true skips.
    ("restart-goes-further", objects(5, 40, 0), 100, objects(40, 0, 0), (40, 5, 0), 100),
    # With a resume point the new pod carries 38 and re-lists the 2 settled after it.
    ("resumed-carries-forward", objects(38 + 10, 2, 0), 100, objects(40, 0, 0), (48, 2, 0), 100),
    # A finished shard whose last pod re-listed 2 objects an earlier one copied: they stay copied.
    ("finished-relabel-absorbed", objects(98, 2, 0), 100, objects(100 - 2, 0, 0), (98, 2, 0), 100),
    ("finished-floor-above-report", objects(90, 10, 0), 100, objects(95, 0, 0), (95, 5, 0), 100),
    ("failed-never-lowered", objects(50, 0, 0), 100, objects(40, 0, 3), (50, 0, 3), 100),
    # A floor past the total (the source shrank since planning, or a forged ledger): the total follows,
    # so the accounting still closes.
    ("total-never-below-done", objects(10, 0, 0), 100, objects(120, 0, 0), (120, 0, 0), 120),
    ("listed-more-than-planned", objects(150, 0, 0), 100, None, (150, 0, 0), 150),
]


@pytest.mark.parametrize(
    ("evidence", "total", "floor", "expected", "expected_total"),
    [case[1:] for case in ACCOUNTING],
    ids=[case[0] for case in ACCOUNTING],
)
def test_shard_accounting_rules(
    evidence: Tally, total: int, floor: Tally | None, expected: tuple[int, int, int], expected_total: int
) -> None:
    shown = account(evidence, total, total * 10, floor)
    assert (shown.tally.copied, shown.tally.skipped, shown.tally.failed) == expected
    assert shown.total == expected_total
    # Bytes follow the same rules, and close too.
    assert (shown.tally.bytes_copied, shown.tally.bytes_skipped, shown.tally.bytes_failed) == tuple(
        10 * n for n in expected
    )
    assert shown.tally.done <= shown.total and shown.tally.bytes_done <= shown.bytes_total
    if floor is not None:
        for now, before in zip(shown.tally.counts(), floor.counts(), strict=True):
            assert now >= before


def test_a_sequence_of_answers_never_shows_less() -> None:
    """Any order of answers from a shard's pods: fed back as the floor, nothing shown decreases."""
    answers = [
        objects(10),
        objects(30, 2),
        objects(25, 2),  # a late answer
        objects(),  # the pod stopped
        objects(28, 4),  # a new pod carried 28 and re-listed 4
        objects(50, 4),
        objects(100, 4),  # finished: 104 listed
    ]
    floor: Tally | None = None
    shown: list[ShardCount] = []
    for answer in answers:
        count = account(answer, 100, 1000, floor)
        shown.append(count)
        floor = count.tally
    for before, after in itertools.pairwise(shown):
        assert all(a >= b for a, b in zip(after.tally.counts(), before.tally.counts(), strict=True))
        assert after.tally.done >= before.tally.done
    assert shown[-1].tally.done == shown[-1].total == 104


@pytest.mark.parametrize(
    ("done", "total", "previous", "expected"),
    [
        (0, 0, None, 100),
        (0, 400, None, 0),
        (399, 400, None, 99),
        (400, 400, None, 100),
        (200, 400, 60, 60),  # the total grew (shards listed more than planned): the bar stays
        (300, 400, 60, 75),
        (10, 400, 250, 100),  # a nonsense previous value is held to 0..100
    ],
    ids=["empty", "none-done", "rounds-down", "all", "held", "rises", "bounded"],
)
def test_percent_never_moves_back(done: int, total: int, previous: int | None, expected: int) -> None:
    assert percent(done, total, previous) == expected


@pytest.mark.parametrize(
    ("previous", "current", "seconds", "expected"),
    [
        (None, 42.0, 5.0, 42.0),
        (100.0, 0.0, 0.0, 100.0),
        (100.0, 0.0, SMOOTHING_SECONDS, 100.0 / 2.718281828),
        (100.0, 200.0, 0.0, 200.0),  # a rise shows at once
        (100.0, 50.0, 1e9, 50.0),
        (float("nan"), 7.0, 5.0, 7.0),
        (-1.0, 7.0, 5.0, 7.0),
    ],
    ids=["first", "no-time", "one-time-constant", "rise", "long-after", "nan", "negative"],
)
def test_smoothing(previous: float | None, current: float, seconds: float, expected: float) -> None:
    assert smooth(previous, current, seconds) == pytest.approx(expected, rel=1e-6)


T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def now(
    seconds: float,
    *,
    rate: float = 10.0,
    running: bool = True,
    reporting: bool = True,
    finished: bool = False,
    done: int = 500,
    pending: int = 500,
    progressed: bool = True,
) -> PaceNow:
    return PaceNow(
        now=T0 + timedelta(seconds=seconds),
        objects_per_second=rate,
        bytes_per_second=rate * 100,
        running=running,
        reporting=reporting,
        finished=finished,
        done=done,
        bytes_done=done * 100,
        pending=pending,
        progressed=progressed,
    )


def before(
    rate: float | None = 10.0, duration: float = 100.0, sampled: float | None = 0.0, progress: float = 0.0
) -> PaceBefore:
    return PaceBefore(
        objects_per_second=rate,
        bytes_per_second=None if rate is None else rate * 100,
        duration_seconds=duration,
        sampled_at=None if sampled is None else T0 + timedelta(seconds=sampled),
        last_progress=T0 + timedelta(seconds=progress),
    )


# id, before, now, expected (rate, duration, sampled_at set, eta)
PACES = [
    ("first-pass", before(rate=None, duration=0, sampled=None), now(5, rate=20), (20.0, 0, True, 25)),
    ("steady", before(), now(5), (10.0, 105, True, 50)),
    # Between two shards nobody reports: the rate eases down, no ETA for the moment.
    ("between-shards", before(), now(5, rate=0, reporting=False), (10.0 * 0.7788, 105, True, None)),
    ("suspended", before(), now(5, rate=0, running=False, reporting=False), (0.0, 100, False, None)),
    # The first pass after a suspension starts afresh: the suspended time is not running time.
    ("resumed", before(rate=0.0, sampled=None), now(600, rate=12), (12.0, 100, True, 41)),
    ("stalled", before(progress=-60), now(5, progressed=False), (10.0, 105, True, None)),
    ("not-yet-stalled", before(progress=-10), now(5, progressed=False), (10.0, 105, True, 50)),
    ("nothing-pending", before(), now(5, rate=0, pending=0, reporting=False), (10.0 * 0.7788, 105, True, 0)),
    # Finished: the rate shown is the average over the running time, and the running time stops.
    ("finished", before(), now(5, running=False, finished=True, done=1050, pending=0), (10.0, 105, False, 0)),
]


@pytest.mark.parametrize(
    ("previous", "current", "expected"), [case[1:] for case in PACES], ids=[case[0] for case in PACES]
)
def test_pace_rules(
    previous: PaceBefore, current: PaceNow, expected: tuple[float, float, bool, int | None]
) -> None:
    result: Pace = pace(previous, current)
    rate, duration, sampled, eta = expected
    assert result.objects_per_second == pytest.approx(rate, rel=1e-3)
    assert result.duration_seconds == duration
    assert (result.sampled_at is not None) == sampled
    assert result.eta_seconds == eta
    if result.duration_seconds:
        assert result.average_objects_per_second == pytest.approx(current.done / result.duration_seconds)


def test_stall_threshold_is_what_the_reference_says() -> None:
    assert STALL_SECONDS == 30.0
