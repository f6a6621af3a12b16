"""Aggregation of worker reports and the Job's status into CopyJob status (operator/aggregate.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.model.plan import Shard
from ferry.operator.aggregate import (
    FAILED_SAMPLE,
    JobView,
    Totals,
    WorkerFailures,
    phase_and_conditions,
    totals,
    worker_failures,
)
from ferry.operator.conditions import Condition
from ferry.worker.statusdoc import WorkerReport

#: Four shards of the plan: 100 objects of 1,000 bytes each.
PLAN = [
    Shard(None, "b", 100, 100_000),
    Shard("b", "d", 100, 100_000),
    Shard("d", "f", 100, 100_000),
    Shard("f", None, 100, 100_000),
]


def report(
    shard: int,
    *,
    copied: int = 0,
    skipped: int = 0,
    failed: int = 0,
    listed: int | None = None,
    size: int = 1000,
    state: str = "complete",
    ops: float = 0.0,
    bps: float = 0.0,
    rss: int | None = None,
    failures: int | None = None,
) -> WorkerReport:
    done = copied + skipped + failed
    listed = done if listed is None else listed
    return WorkerReport(
        shard=shard,
        state=state,
        objects={
            "total": listed,
            "copied": copied,
            "skipped": skipped,
            "failed": failed,
            "pending": listed - done,
        },
        bytes={
            "total": listed * size,
            "copied": copied * size,
            "skipped": skipped * size,
            "failed": failed * size,
        },
        objects_per_second=ops,
        bytes_per_second=bps,
        concurrency=16,
        in_flight=3,
        reason="growing",
        rss_bytes=rss,
        failed=[
            {"key": f"s{shard}/k{i}", "code": "AccessDenied", "message": "no", "size": size}
            for i in range(failed if failures is None else failures)
        ],
        error=None,
    )


def running(index: int, **kwargs: Any) -> tuple[str, WorkerReport]:
    return f"workers-{index}-abcde", report(index, state="running", **kwargs)


def closes(t: Totals) -> None:
    o = t.objects
    assert o["total"] == o["copied"] + o["skipped"] + o["failed"] + o["pending"]
    assert min(o.values()) >= 0
    b = t.bytes
    assert b["copied"] + b["skipped"] + b["failed"] <= b["total"]
    assert 0 <= t.percent <= 100


CASES = [
    # id, finished, running, completed indexes, expected objects, lost
    (
        "nothing-started",
        {},
        {},
        frozenset(),
        {"total": 400, "copied": 0, "skipped": 0, "failed": 0, "pending": 400},
        [],
    ),
    (
        "all-finished",
        {i: report(i, copied=90, skipped=10) for i in range(4)},
        {},
        frozenset(range(4)),
        {"total": 400, "copied": 360, "skipped": 40, "failed": 0, "pending": 0},
        [],
    ),
    (
        "finished-listing-differs-from-plan",
        {0: report(0, copied=120), 1: report(1, copied=80, failed=2)},
        {},
        frozenset({0, 1}),
        {"total": 402, "copied": 200, "skipped": 0, "failed": 2, "pending": 200},
        [],
    ),
    (
        "running-partial-listing",
        {},
        {0: running(0, copied=10, listed=30)},
        frozenset(),
        {"total": 400, "copied": 10, "skipped": 0, "failed": 0, "pending": 390},
        [],
    ),
    (
        "running-listed-more-than-planned",
        {},
        {0: running(0, copied=50, skipped=20, listed=150)},
        frozenset(),
        {"total": 450, "copied": 50, "skipped": 20, "failed": 0, "pending": 380},
        [],
    ),
    (
        "lost-report",
        {0: report(0, copied=100)},
        {},
        frozenset({0, 2}),
        {"total": 400, "copied": 200, "skipped": 0, "failed": 0, "pending": 200},
        [2],
    ),
    (
        "mix",
        {0: report(0, copied=95, failed=5)},
        {1: running(1, copied=40, skipped=10, listed=60), 3: running(3, copied=1, listed=130)},
        frozenset({0, 2}),
        {"total": 430, "copied": 236, "skipped": 10, "failed": 5, "pending": 179},
        [2],
    ),
    (
        "finished-wins-over-running",
        {1: report(1, copied=100)},
        {1: running(1, copied=3, listed=10)},
        frozenset({1}),
        {"total": 400, "copied": 100, "skipped": 0, "failed": 0, "pending": 300},
        [],
    ),
    (
        "running-shard-already-completed",
        {},
        {1: running(1, copied=99, listed=100)},
        frozenset({1}),
        {"total": 400, "copied": 99, "skipped": 0, "failed": 0, "pending": 301},
        [],
    ),
]


@pytest.mark.parametrize(
    ("finished", "running_reports", "completed", "expected", "lost"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_accounting_closes(
    finished: dict[int, WorkerReport],
    running_reports: dict[int, tuple[str, WorkerReport]],
    completed: frozenset[int],
    expected: dict[str, int],
    lost: list[int],
) -> None:
    t = totals(PLAN, finished, running_reports, JobView(exists=True, completed_indexes=completed))
    closes(t)
    assert t.objects == expected
    assert t.lost_reports == lost
    assert t.bytes["copied"] == expected["copied"] * 1000
    assert t.bytes["failed"] == expected["failed"] * 1000


def test_running_bytes_total_never_below_plan() -> None:
    t = totals(PLAN, {}, {0: running(0, copied=1, listed=2, size=10)}, JobView(exists=True))
    assert t.bytes["total"] == 400_000
    t = totals(PLAN, {}, {0: running(0, copied=1, listed=200, size=1000)}, JobView(exists=True))
    assert t.bytes["total"] == 300_000 + 200_000


@pytest.mark.parametrize(
    ("running_reports", "finished", "ops", "bps", "eta"),
    [
        ({}, {}, 0.0, 0, None),
        ({0: running(0, copied=0, listed=10, ops=50.0, bps=5e6)}, {}, 50.0, 5_000_000, 8),
        (
            {0: running(0, ops=25.5, bps=1e6), 1: running(1, ops=24.5, bps=2e6), 2: running(2, ops=0.0)},
            {},
            50.0,
            3_000_000,
            8,
        ),
        ({0: running(0, copied=0, ops=0.0, bps=0.0)}, {}, 0.0, 0, None),
        ({}, {i: report(i, copied=100) for i in range(4)}, 0.0, 0, 0),
        ({3: running(3, copied=100, listed=100, ops=10.0)}, {i: report(i, copied=100) for i in range(3)}, 10.0, 0, 0),
    ],
    ids=["no-rate", "one-pod", "sum-of-pods", "zero-rate", "nothing-pending", "pending-zero-with-rate"],
)  # fmt: skip
def test_rates_sum_over_running_pods_and_eta(
    running_reports: dict[int, tuple[str, WorkerReport]],
    finished: dict[int, WorkerReport],
    ops: float,
    bps: int,
    eta: int | None,
) -> None:
    t = totals(PLAN, finished, running_reports, JobView(exists=True))
    closes(t)
    assert t.objects_per_second == ops
    assert t.bytes_per_second == bps
    assert t.eta_seconds == eta
    assert [p["shard"] for p in t.per_pod] == sorted(running_reports)
    for pod in t.per_pod:
        assert pod["pod"] == running_reports[pod["shard"]][0]
        assert pod["concurrency"] == 16


@pytest.mark.parametrize(
    ("failures_per_shard", "expected"),
    [((0, 0, 0, 0), 0), ((3, 0, 2, 0), 5), ((10, 10, 0, 0), 20), ((10, 10, 10, 10), FAILED_SAMPLE)],
    ids=["none", "few", "exactly-cap", "over-cap"],
)
def test_failed_sample_is_capped(failures_per_shard: tuple[int, ...], expected: int) -> None:
    finished = {i: report(i, copied=100 - n, failed=n) for i, n in enumerate(failures_per_shard)}
    t = totals(PLAN, finished, {}, JobView(exists=True, completed_indexes=frozenset(range(4))))
    closes(t)
    assert FAILED_SAMPLE == 20
    assert len(t.failed_objects) == expected
    assert t.objects["failed"] == sum(failures_per_shard)


@pytest.mark.parametrize(
    ("previous", "rss", "expected"),
    [(0, (None, None), 0), (0, (100, 300), 300), (500, (100, 300), 500), (0, (None, 7), 7)],
    ids=["unknown", "max-of-reports", "previous-higher", "partly-unknown"],
)
def test_peak_rss(previous: int, rss: tuple[int | None, int | None], expected: int) -> None:
    finished = {0: report(0, copied=100, rss=rss[0])}
    running_reports = {1: ("p", report(1, state="running", rss=rss[1]))}
    assert totals(PLAN, finished, running_reports, JobView(exists=True), previous).peak_rss == expected


# --- phase and conditions --------------------------------------------------------------------------------


def some_totals(failed: int = 0, pending: int = 0, eta: int | None = None, reporting: int = 0) -> Totals:
    copied = 400 - failed - pending
    return Totals(
        {"total": 400, "copied": copied, "skipped": 0, "failed": failed, "pending": pending},
        {"total": 400_000, "copied": copied * 1000, "skipped": 0, "failed": failed * 1000},
        10.0,
        10_000,
        eta,
        [
            {"pod": f"w-{i}", "shard": i, "concurrency": 8, "inFlight": 2, "reason": "growing"}
            for i in range(reporting)
        ],
        0,
        [],
    )


PHASES = [
    # id, kwargs, phase, {type: (status, reason)}
    (
        "planning",
        {"planned": False, "dry_run": False, "suspended": False, "job": JobView(), "totals": None},
        "Planning",
        {"Planned": ("Unknown", "Listing"), "Succeeded": ("Unknown", "Planning")},
    ),
    (
        "dry-run",
        {"planned": True, "dry_run": True, "suspended": False, "job": JobView(), "totals": None},
        "Planned",
        {
            "Planned": ("True", "PlanReady"),
            "Progressing": ("False", "DryRun"),
            "Succeeded": ("Unknown", "DryRun"),
        },
    ),
    (
        "running",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(exists=True, active=2),
            "totals": some_totals(pending=100, eta=600),
        },
        "Running",
        {
            "Progressing": ("True", "Copying"),
            "Suspended": ("False", "NotSuspended"),
            "Succeeded": ("Unknown", "Copying"),
        },
    ),
    (
        "workers-starting",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(exists=True, active=2),
            "totals": some_totals(pending=400),
        },
        "Running",
        {
            "Progressing": ("True", "StartingWorkers"),
            "Suspended": ("False", "NotSuspended"),
            "Succeeded": ("Unknown", "StartingWorkers"),
        },
    ),
    (
        "first-worker-reporting",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(exists=True, active=2),
            "totals": some_totals(pending=400, reporting=1),
        },
        "Running",
        {"Progressing": ("True", "Copying"), "Succeeded": ("Unknown", "Copying")},
    ),
    (
        "suspended",
        {
            "planned": True,
            "dry_run": False,
            "suspended": True,
            "job": JobView(exists=True, suspended=True),
            "totals": some_totals(pending=100),
        },
        "Suspended",
        {
            "Progressing": ("False", "Suspended"),
            "Suspended": ("True", "JobSuspended"),
            "Succeeded": ("Unknown", "Suspended"),
        },
    ),
    (
        "suspend-requested-pods-stopping",
        {
            "planned": True,
            "dry_run": False,
            "suspended": True,
            "job": JobView(exists=True, suspended=True, active=2),
            "totals": some_totals(pending=100),
        },
        "Suspended",
        {"Suspended": ("True", "SuspendRequested"), "Succeeded": ("Unknown", "Suspended")},
    ),
    (
        "suspend-requested-job-not-yet-suspended",
        {
            "planned": True,
            "dry_run": False,
            "suspended": True,
            "job": JobView(exists=True),
            "totals": some_totals(pending=100),
        },
        "Suspended",
        {"Suspended": ("True", "SuspendRequested")},
    ),
    (
        "complete",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(exists=True, complete=True),
            "totals": some_totals(),
        },
        "Succeeded",
        {
            "Progressing": ("False", "Finished"),
            "Succeeded": ("True", "AllObjectsCopied"),
            "Failed": ("False", "AllObjectsCopied"),
            "Suspended": ("False", "NotSuspended"),
        },
    ),
    (
        "complete-with-failed-objects",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(exists=True, complete=True),
            "totals": some_totals(failed=3),
        },
        "Failed",
        {
            "Progressing": ("False", "Finished"),
            "Succeeded": ("False", "ObjectsFailed"),
            "Failed": ("True", "ObjectsFailed"),
            "Suspended": ("False", "NotSuspended"),
        },
    ),
    (
        "job-failed",
        {
            "planned": True,
            "dry_run": False,
            "suspended": False,
            "job": JobView(
                exists=True,
                failed=True,
                failed_indexes=frozenset({3, 1}),
                failure_message="Job has failed indexes",
            ),
            "totals": some_totals(pending=200),
        },
        "Failed",
        {
            "Progressing": ("False", "ShardsFailed"),
            "Succeeded": ("False", "ShardsFailed"),
            "Failed": ("True", "ShardsFailed"),
            "Suspended": ("False", "NotSuspended"),
        },
    ),
    (
        "complete-wins-over-suspend",
        {
            "planned": True,
            "dry_run": False,
            "suspended": True,
            "job": JobView(exists=True, complete=True),
            "totals": some_totals(),
        },
        "Succeeded",
        {"Succeeded": ("True", "AllObjectsCopied"), "Suspended": ("False", "Finished")},
    ),
    (
        "failed-wins-over-suspend",
        {
            "planned": True,
            "dry_run": False,
            "suspended": True,
            "job": JobView(exists=True, failed=True),
            "totals": some_totals(pending=10),
        },
        "Failed",
        {"Failed": ("True", "ShardsFailed"), "Suspended": ("False", "Finished")},
    ),
]


@pytest.mark.parametrize(("kwargs", "phase", "expected"), [c[1:] for c in PHASES], ids=[c[0] for c in PHASES])
def test_phase_and_conditions(
    kwargs: dict[str, Any], phase: str, expected: dict[str, tuple[str, str]]
) -> None:
    got_phase, conditions = phase_and_conditions(**kwargs)
    assert got_phase == phase
    assert all(isinstance(c, Condition) for c in conditions)
    by_type = {c.type: c for c in conditions}
    assert len(by_type) == len(conditions)  # one condition per type
    for kind, (status, reason) in expected.items():
        assert (by_type[kind].status, by_type[kind].reason) == (status, reason), kind
    for c in conditions:
        assert c.status in ("True", "False", "Unknown")
        assert c.reason and c.reason[0].isupper() and c.reason.isalnum()
    # Reasons tell the truth: Finished only once the job ended; Suspended=False says why.
    finished = [c.type for c in conditions if c.reason == "Finished"]
    assert not finished or got_phase in ("Succeeded", "Failed"), finished
    if by_type.get("Suspended") and by_type["Suspended"].status == "False":
        expected_reason = "Finished" if kwargs["suspended"] else "NotSuspended"
        assert by_type["Suspended"].reason == expected_reason
    # Succeeded and Failed are never both True.
    assert not (
        by_type.get("Succeeded", Condition("", "", "")).status
        == "True"
        == by_type.get("Failed", Condition("", "", "")).status
    )


def test_job_failed_message_names_the_failed_shards_and_counts() -> None:
    _phase, conditions = phase_and_conditions(
        planned=True,
        dry_run=False,
        suspended=False,
        job=JobView(exists=True, failed=True, failed_indexes=frozenset({3, 1})),
        totals=some_totals(failed=2, pending=10),
    )
    message = next(c.message for c in conditions if c.type == "Failed")
    assert "[1, 3]" in message
    assert "388 copied" in message
    assert "2 failed" in message
    assert "of 400" in message


@pytest.mark.parametrize(
    ("eta", "shown"), [(600, True), (None, False), (0, False)], ids=["eta", "no-eta", "zero"]
)
def test_running_message_shows_eta_only_when_known(eta: int | None, shown: bool) -> None:
    _phase, conditions = phase_and_conditions(
        planned=True,
        dry_run=False,
        suspended=False,
        job=JobView(exists=True),
        totals=some_totals(100, 50, eta),
    )
    message = next(c.message for c in conditions if c.type == "Progressing")
    assert ("ETA" in message) is shown


def _pod(
    name: str, phase: str, terminated: dict[str, object] | None, container: str = "worker"
) -> dict[str, object]:
    state = {"terminated": terminated} if terminated is not None else {"running": {}}
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "containerStatuses": [{"name": container, "state": state}]},
    }


_BUDGET = json.dumps(
    {
        "format": "ferry.dev/worker-report/v1",
        "state": "invalid",
        "error": "memory budget 40 MiB is below the 70 MiB this worker needs;\nset spec.resources.memory to at least 96Mi",
    }
)


@pytest.mark.parametrize(
    ("pods", "oom", "messages"),
    [
        ([], (), ()),
        # Running and succeeded pods say nothing about failures.
        (
            [_pod("a", "Running", None), _pod("b", "Succeeded", {"exitCode": 0, "reason": "Completed"})],
            (),
            (),
        ),
        # The kubelet's verdict, whatever the exit code says.
        ([_pod("w-1", "Failed", {"exitCode": 137, "reason": "OOMKilled"})], ("w-1",), ()),
        # The worker's own report, whitespace folded to one line; repeated messages once.
        (
            [
                _pod(f"w-{i}", "Failed", {"exitCode": 2, "reason": "Error", "message": _BUDGET})
                for i in range(3)
            ],
            (),
            (
                "memory budget 40 MiB is below the 70 MiB this worker needs; "
                "set spec.resources.memory to at least 96Mi",
            ),
        ),
        # Not a Ferry report (a crash's log tail): no words are taken from it.
        ([_pod("w-2", "Failed", {"exitCode": 1, "reason": "Error", "message": "Traceback ..."})], (), ()),
        # Another container's OOM is not the worker's.
        ([_pod("w-3", "Failed", {"exitCode": 137, "reason": "OOMKilled"}, container="sidecar")], (), ()),
    ],
)
def test_worker_failures_read_oom_kills_and_worker_reports(
    pods: list[dict[str, object]], oom: tuple[str, ...], messages: tuple[str, ...]
) -> None:
    failures = worker_failures(pods)  # type: ignore[arg-type]
    assert failures.oom_killed == oom
    assert failures.messages == messages


def test_worker_failure_summary_names_the_field_to_change() -> None:
    failures = WorkerFailures(oom_killed=("job-workers-0-abc",), messages=("budget too small",))
    text = failures.summary("256Mi")
    assert "OOMKilled at their memory limit 256Mi" in text
    assert "spec.resources.memory" in text
    assert text.endswith("budget too small")
    assert WorkerFailures().summary("1Gi") == ""
