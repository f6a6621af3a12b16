"""The counts a CopyJob's status shows (operator/aggregate.py `totals` with the shards' floors, and
`counts_status`): they never go backwards for the same plan, and the ETA disappears when nothing moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.model.checkpoint import Checkpoint
from ferry.model.plan import Shard
from ferry.operator.accounting import Tally
from ferry.operator.aggregate import JobView, Totals, counts_status, totals
from ferry.worker.statusdoc import WorkerReport

PLAN = [Shard(None, "b", 100, 100_000), Shard("b", "d", 100, 100_000), Shard("d", None, 100, 100_000)]


def report(
    shard: int, copied: int = 0, skipped: int = 0, listed: int = 100, state: str = "running", ops: float = 0.0
) -> WorkerReport:
    done = copied + skipped
    return WorkerReport(
        shard=shard,
        state=state,
        objects={
            "total": listed,
            "copied": copied,
            "skipped": skipped,
            "failed": 0,
            "pending": listed - done,
        },
        bytes={"total": listed * 1000, "copied": copied * 1000, "skipped": skipped * 1000, "failed": 0},
        objects_per_second=ops,
        bytes_per_second=ops * 1000,
        concurrency=8,
        in_flight=2,
        reason="growing",
        rss_bytes=None,
        failed=[],
        error=None,
        resume=Checkpoint("a", 1) if state == "running" else None,
    )


def floor(copied: int, skipped: int = 0) -> Tally:
    return Tally(copied, skipped, 0, copied * 1000, skipped * 1000, 0)


# id, finished, running, floors, completed indexes, expected objects (copied, skipped, pending, total)
CASES: list[
    tuple[str, dict[int, WorkerReport], dict[int, WorkerReport], dict[int, Tally], set[int], tuple[int, ...]]
] = [
    ("no-floors", {}, {0: report(0, 40)}, {}, set(), (40, 0, 260, 300)),
    # Suspended: no pod runs; the shards keep what was shown for them.
    ("suspended", {}, {}, {0: floor(40), 1: floor(25, 5)}, set(), (65, 5, 230, 300)),
    # A busy pod answered with an older document than the one shown last pass.
    ("stale-answer", {}, {0: report(0, 30)}, {0: floor(40)}, set(), (40, 0, 260, 300)),
    # A shard restarted without a resume point re-lists its first 40 as present.
    ("restart-relists", {}, {0: report(0, 0, 40)}, {0: floor(40)}, set(), (40, 0, 260, 300)),
    # The shard's last pod reports 3 objects an earlier pod copied as skipped: they stay copied.
    (
        "finished-after-restart",
        {2: report(2, 97, 3, state="complete")},
        {},
        {2: floor(99)},
        {2},
        (99, 1, 200, 300),
    ),
    # Fewer pods: shards 1 and 2 stopped mid-way; shard 0 runs on.
    (
        "fewer-pods",
        {},
        {0: report(0, 70)},
        {0: floor(60), 1: floor(30), 2: floor(20)},
        set(),
        (120, 0, 180, 300),
    ),
]


@pytest.mark.parametrize(
    ("finished", "running", "floors", "completed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_floors_keep_every_shard_at_what_was_shown(
    finished: dict[int, WorkerReport],
    running: dict[int, WorkerReport],
    floors: dict[int, Tally],
    completed: set[int],
    expected: tuple[int, ...],
) -> None:
    counted = totals(
        PLAN,
        finished,
        {i: (f"w-{i}", r) for i, r in running.items()},
        JobView(exists=True, completed_indexes=frozenset(completed)),
        floors=floors,
    )
    o = counted.objects
    assert (o["copied"], o["skipped"], o["pending"], o["total"]) == expected
    assert o["total"] == o["copied"] + o["skipped"] + o["failed"] + o["pending"]
    for index, before in floors.items():
        after = counted.shard_counts[index].tally
        assert all(a >= b for a, b in zip(after.counts(), before.counts(), strict=True))


NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def counted(pending: int = 200, ops: float = 10.0, pods: int = 1) -> Totals:
    done = 300 - pending
    return Totals(
        {"total": 300, "copied": done, "skipped": 0, "failed": 0, "pending": pending},
        {"total": 300_000, "copied": done * 1000, "skipped": 0, "failed": 0},
        ops,
        ops * 1000,
        None,
        [{"pod": f"w-{i}", "shard": i, "concurrency": 8, "inFlight": 2, "reason": ""} for i in range(pods)],
        0,
        [],
    )


def previous(done: int = 90, seconds_ago: int = 5, percent: int = 30, **extra: Any) -> dict[str, Any]:
    return {
        "objects": {"total": 300, "copied": done, "skipped": 0, "failed": 0, "pending": 300 - done},
        "progressPercent": percent,
        "throughput": {
            "objectsPerSecond": 10.0,
            "bytesPerSecond": 10_000,
            "sampledAt": (NOW - timedelta(seconds=seconds_ago)).strftime(STAMP),
        },
        "durationSeconds": 60,
        "lastProgressTime": (NOW - timedelta(seconds=seconds_ago)).strftime(STAMP),
        "eta": "20s",
        "etaSeconds": 20,
        **extra,
    }


def test_running_advances_the_running_time_and_shows_an_eta() -> None:
    status = counts_status(counted(), previous(), NOW, running=True, finished=False)
    assert status["durationSeconds"] == 65
    assert status["throughput"]["sampledAt"] == NOW.strftime(STAMP)
    assert status["throughput"]["averageObjectsPerSecond"] == round(100 / 65, 2)
    assert status["etaSeconds"] == 20 and status["eta"] == "20s"
    assert status["lastProgressTime"] == NOW.strftime(STAMP)


def test_suspended_removes_the_eta_and_stops_the_clock() -> None:
    status = counts_status(counted(ops=0.0, pods=0), previous(done=100), NOW, running=False, finished=False)
    # None values are deleted by the merge patch that writes them: nothing frozen stays behind.
    assert status["eta"] is None and status["etaSeconds"] is None
    assert status["throughput"]["sampledAt"] is None and status["throughput"]["objectsPerSecond"] == 0
    assert status["durationSeconds"] == 60


def test_no_progress_for_a_while_removes_the_eta() -> None:
    status = counts_status(counted(), previous(done=100, seconds_ago=45), NOW, running=True, finished=False)
    assert status["etaSeconds"] is None


def test_percent_never_moves_back_when_the_total_grows() -> None:
    grown = counted()
    grown.objects.update(total=400, pending=300)
    status = counts_status(grown, previous(percent=33), NOW, running=True, finished=False)
    assert status["progressPercent"] == 33


def test_finished_keeps_the_running_time_and_shows_the_average_rate() -> None:
    status = counts_status(counted(pending=0, ops=0.0, pods=0), previous(), NOW, running=False, finished=True)
    assert status["durationSeconds"] == 65
    assert status["throughput"]["objectsPerSecond"] == status["throughput"]["averageObjectsPerSecond"]
    assert status["throughput"]["averageObjectsPerSecond"] == round(300 / 65, 2)
    assert status["etaSeconds"] == 0 and status["throughput"]["sampledAt"] is None
