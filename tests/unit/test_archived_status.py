"""Archived objects in a CopyJob's status: what a worker reports of them (statusdoc.py, hostile input
checked), their sum over the shards (aggregate.totals) and the status and condition the operator writes
from it (operator/archivestatus.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from ferry.model.plan import Shard
from ferry.operator.aggregate import JobView, totals
from ferry.operator.archivestatus import RESTORES_PENDING, archived_status, restores_condition
from ferry.worker.archivesummary import MAX_COUNT, archived_from_json
from ferry.worker.engine import Summary
from ferry.worker.progress import Counts
from ferry.worker.statusdoc import WorkerReport, parse_report, termination_message


def _summary(**counts: int) -> Summary:
    return Summary(
        counts=replace(Counts(listing_done=True), **counts),
        duration_seconds=1.0,
        throttles=0,
        retries=0,
        requests=0,
        failures=[],
        report_path="/tmp/report.jsonl",
    )


def test_a_termination_message_carries_the_archive_counters_and_reads_back() -> None:
    summary = _summary(
        discovered=10, copied=6, skipped=1, failed=3, archived_skipped=1, restored=2, restore_timed_out=3
    )
    report = parse_report(termination_message(2, summary, None))
    assert report is not None
    assert report.archived == {"skipped": 1, "restored": 2, "restoreTimedOut": 3, "waitingForRestore": 0}


def test_a_shard_without_archived_objects_says_nothing_of_them() -> None:
    text = termination_message(0, _summary(discovered=3, copied=3), None)
    assert "archived" not in json.loads(text)
    report = parse_report(text)
    assert report is not None and report.archived == {}


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (
            {"skipped": 2, "restored": 1},
            {"skipped": 2, "restored": 1, "restoreTimedOut": 0, "waitingForRestore": 0},
        ),
        # Unknown names are dropped; wrong types, negatives, booleans and huge counts count as 0.
        (
            {"skipped": 1, "evil": 10**6},
            {"skipped": 1, "restored": 0, "restoreTimedOut": 0, "waitingForRestore": 0},
        ),
        ({"skipped": -1, "restored": "5", "restoreTimedOut": True, "waitingForRestore": 1.5}, {}),
        ({"skipped": MAX_COUNT + 1}, {}),
        (
            {"restoreTimedOut": MAX_COUNT},
            {"skipped": 0, "restored": 0, "restoreTimedOut": MAX_COUNT, "waitingForRestore": 0},
        ),
        ([1, 2], {}),
        ("archived", {}),
        (None, {}),
    ],
)
def test_a_worker_s_archive_counters_are_checked(value: Any, read: dict[str, int]) -> None:
    assert archived_from_json(value) == read


PLAN = [Shard(None, "m", 10, 10_000), Shard("m", None, 10, 10_000)]


def _report(shard: int, state: str, archived: dict[str, int]) -> WorkerReport:
    return WorkerReport(
        shard=shard,
        state=state,
        objects={"total": 10, "copied": 8, "skipped": 0, "failed": 0, "pending": 2},
        bytes={"total": 10_000, "copied": 8_000, "skipped": 0, "failed": 0},
        objects_per_second=1.0,
        bytes_per_second=1000.0,
        concurrency=1,
        in_flight=0,
        reason="",
        rss_bytes=None,
        failed=[],
        error=None,
        archived=archived,
    )


def test_archive_counters_are_summed_over_finished_and_running_shards() -> None:
    finished = {0: _report(0, "complete", {"restored": 2, "restoreTimedOut": 1})}
    running = {1: ("workers-1-abcde", _report(1, "running", {"restored": 1, "waitingForRestore": 2}))}
    counted = totals(PLAN, finished, running, JobView(exists=True, completed_indexes=frozenset({0})))
    assert counted.archived == {"restored": 3, "restoreTimedOut": 1, "waitingForRestore": 2}
    assert archived_status(counted.archived) == {
        "archived": {"skipped": 0, "restored": 3, "restoreTimedOut": 1, "waitingForRestore": 2}
    }


def test_no_archived_objects_no_status_and_no_condition() -> None:
    counted = totals(PLAN, {}, {}, JobView(exists=True))
    assert counted.archived == {}
    assert archived_status(counted.archived) == {}
    assert restores_condition(counted.archived, ended=False) is None


@pytest.mark.parametrize(
    ("archived", "ended", "status", "reason"),
    [
        ({"waitingForRestore": 4}, False, "True", "WaitingForRestore"),
        ({"restored": 2, "waitingForRestore": 1}, False, "True", "WaitingForRestore"),
        ({"restoreTimedOut": 3, "restored": 2}, True, "True", "RestoreTimedOut"),
        ({"restoreTimedOut": 1, "waitingForRestore": 2}, False, "True", "RestoreTimedOut"),
        ({"restored": 5}, True, "False", "RestoresDone"),
        ({"restored": 5}, False, "False", "RestoresDone"),
        ({"skipped": 5}, True, None, None),  # skipped as asked: nothing was waited for
        ({}, True, None, None),
    ],
)
def test_the_restores_pending_condition(
    archived: dict[str, int], ended: bool, status: str | None, reason: str | None
) -> None:
    condition = restores_condition(archived, ended=ended)
    if status is None:
        assert condition is None
        return
    assert condition is not None and condition.type == RESTORES_PENDING
    assert (condition.status, condition.reason) == (status, reason)
    if reason == "RestoreTimedOut":
        assert "spec.restore.maxWaitSeconds" in condition.message and "RestoreTimedOut" in condition.message
