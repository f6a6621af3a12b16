"""The operator's decision over a whole sync job (operator/syncphase.py), the shard reports it reads
(worker/shardsync.py) and the ledger lines that keep them (operator/ledger.py). Pure, table-driven.

Proves: the per-shard counts add up to the same rule `ferry run` applies (the limit over the whole
job, an empty source, a count that broke off or is missing, failed copies), each shard's cap is its
own count, a delete is done only when every approved shard reported without trouble, and whatever a
pod or the ledger says is bounded and checked (a malformed report deletes nothing).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.operator import ledger
from ferry.operator.syncphase import (
    decide_sync,
    delete_progress,
    dry_run_status,
    sync_conditions,
    sync_status,
)
from ferry.worker.shardsync import ShardCensus, ShardDeletes, allowed_for, encode_allowed, phase_message
from ferry.worker.statusdoc import FORMAT, parse_report
from ferry.worker.syncdeletes import DeleteLimit, Refusal


def census(candidates: int, destination: int = 100, source: int = 100, complete: bool = True) -> ShardCensus:
    return ShardCensus(candidates, destination, source, complete)


@pytest.mark.parametrize(
    ("shards", "censuses", "failed", "limit", "refusal", "allowed"),
    [
        # Within the limit over the whole job: each shard may delete its own count.
        (3, {0: census(2), 1: census(0), 2: census(3)}, 0, 5, None, {0: 2, 2: 3}),
        # Each shard is within the limit, the job is not: refused.
        (3, {0: census(2), 1: census(2), 2: census(2)}, 0, 5, Refusal.LIMIT_EXCEEDED, {}),
        # A percentage is of the destination objects in scope over the whole job (1% of 300 = 3).
        (3, {0: census(1), 1: census(1), 2: census(1)}, 0, "1%", None, {0: 1, 1: 1, 2: 1}),
        (3, {0: census(2), 1: census(1), 2: census(1)}, 0, "1%", Refusal.LIMIT_EXCEEDED, {}),
        # An empty source in scope over the whole job deletes nothing, however few would go.
        (2, {0: census(1, source=0), 1: census(0, source=0)}, 0, 100, Refusal.SOURCE_EMPTY, {}),
        # One shard with source objects is enough.
        (2, {0: census(1, source=0), 1: census(0, source=1)}, 0, 100, None, {0: 1}),
        # A shard whose count broke off, or that gave none, proves nothing about what is absent.
        (2, {0: census(1), 1: census(0, complete=False)}, 0, 100, Refusal.LISTING_INCOMPLETE, {}),
        (2, {0: census(1)}, 0, 100, Refusal.LISTING_INCOMPLETE, {}),
        # A copy with failures deletes nothing.
        (1, {0: census(1)}, 3, 100, Refusal.COPY_FAILURES, {}),
        # Nothing to delete: no refusal, no delete.
        (2, {0: census(0), 1: census(0)}, 0, 0, None, {}),
    ],
)
def test_the_decision_over_the_whole_job(
    shards: int,
    censuses: dict[int, ShardCensus],
    failed: int,
    limit: int | str,
    refusal: Refusal | None,
    allowed: dict[int, int],
) -> None:
    verdict = decide_sync(shards, censuses, failed, DeleteLimit.parse(limit))
    assert verdict.decision.refusal is refusal
    assert verdict.allowed == allowed
    assert sum(verdict.allowed.values()) <= verdict.decision.allowed
    status = sync_status(verdict)
    assert status["deleted"] == 0 and status["reason"] == (refusal.value if refusal else None)


def test_a_missing_count_names_its_shards() -> None:
    verdict = decide_sync(5, {0: census(1), 4: census(0)}, 0, DeleteLimit.parse(10))
    assert "shards 1-3 gave no count" in verdict.decision.message


@pytest.mark.parametrize(
    ("reports", "complete", "failed", "phase", "reason"),
    [
        ({}, False, False, "Running", "Deleting"),  # deletes pending: never Succeeded
        ({0: ShardDeletes(2, 0, 0)}, False, False, "Running", "Deleting"),
        ({0: ShardDeletes(2, 0, 0), 2: ShardDeletes(2, 1, 0)}, True, False, "Succeeded", "Synced"),
        ({0: ShardDeletes(2, 0, 0), 2: ShardDeletes(1, 0, 1)}, True, False, "Failed", "DeletesFailed"),
        (
            {0: ShardDeletes(1, 0, 0, "stopped"), 2: ShardDeletes(2, 0, 0)},
            True,
            False,
            "Failed",
            "DeletesFailed",
        ),
        ({0: ShardDeletes(2, 0, 0)}, True, False, "Failed", "DeletesFailed"),  # shard 2 never reported
        ({0: ShardDeletes(2, 0, 0), 2: ShardDeletes(2, 0, 0)}, False, True, "Failed", "DeletesFailed"),
    ],
)
def test_a_sync_succeeds_only_once_every_approved_shard_deleted_cleanly(
    reports: dict[int, ShardDeletes], complete: bool, failed: bool, phase: str, reason: str
) -> None:
    verdict = decide_sync(3, {0: census(2), 1: census(0), 2: census(3)}, 0, DeleteLimit.parse(5))
    progress = delete_progress(verdict.allowed, reports, complete=complete, failed=failed)
    chosen = sync_conditions(verdict, progress, "10 copied")
    assert chosen is not None
    got_phase, conditions = chosen
    succeeded = next(c for c in conditions if c.type == "Succeeded")
    assert (got_phase, succeeded.reason) == (phase, reason)


def test_a_refused_sync_has_no_phase_of_its_own_and_a_clean_one_with_nothing_to_delete_succeeds() -> None:
    refused = decide_sync(1, {0: census(9)}, 0, DeleteLimit.parse(1))
    assert sync_conditions(refused, None, "") is None
    nothing = decide_sync(1, {0: census(0)}, 0, DeleteLimit.parse(1))
    chosen = sync_conditions(nothing, None, "")
    assert chosen is not None and chosen[0] == "Succeeded"


def test_reports_of_shards_not_approved_do_not_count() -> None:
    progress = delete_progress(
        {0: 2}, {0: ShardDeletes(2, 0, 0), 7: ShardDeletes(10**6, 0, 0)}, complete=True, failed=False
    )
    assert progress.deleted == 2 and progress.done


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"candidates": 1, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": True},
            ShardCensus(1, 2, 3, True),
        ),
        # More candidates than destination objects is not a true count.
        ({"candidates": 3, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": True}, None),
        ({"candidates": -1, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": True}, None),
        ({"candidates": True, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": True}, None),
        ({"candidates": 1.5, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": True}, None),
        (
            {"candidates": 10**14, "destinationInScope": 10**14, "sourceInScope": 3, "listingComplete": True},
            None,
        ),
        ({"candidates": 1, "destinationInScope": 2, "sourceInScope": 3, "listingComplete": "yes"}, None),
        ({"candidates": 1, "destinationInScope": 2}, None),
        ("not a census", None),
    ],
)
def test_a_census_from_a_pod_is_checked(raw: Any, expected: ShardCensus | None) -> None:
    assert ShardCensus.from_json(raw) == expected
    report = parse_report(json.dumps({"format": FORMAT, "shard": 0, "state": "complete", "sync": raw}))
    assert report is not None and report.sync == expected


def test_a_pod_s_error_text_is_bounded_and_cleaned() -> None:
    deletes = ShardDeletes.from_json({"deleted": 1, "kept": 0, "failed": 0, "error": "\x1b[31m" + "x" * 5000})
    assert deletes is not None and deletes.error is not None
    assert len(deletes.error) == 300 and "\x1b" not in deletes.error


@pytest.mark.parametrize(
    ("text", "shard", "expected"),
    [
        ("0:3,4:2", 0, 3),
        ("0:3,4:2", 4, 2),
        ("0:3,4:2", 1, 0),  # not listed: nothing to delete
        (None, 0, 0),
        ("0:-3", 0, 0),
        ("0:3x", 0, 0),
        ("0:²", 0, 0),  # a digit Python reads but no count
        ("0:" + "9" * 20, 0, 0),
        ("x" * (600 * 1024), 0, 0),
    ],
)
def test_a_shard_s_cap_is_read_strictly(text: str | None, shard: int, expected: int) -> None:
    assert allowed_for(text, shard) == expected


def test_caps_round_trip_and_leave_out_shards_with_nothing_to_delete() -> None:
    caps = {0: 3, 1: 0, 12: 7}
    text = encode_allowed(caps)
    assert text == "0:3,12:7"
    assert {i: allowed_for(text, i) for i in range(13) if allowed_for(text, i)} == {0: 3, 12: 7}


def test_the_ledger_keeps_each_shard_s_census_and_reads_malformed_lines_as_none() -> None:
    report = parse_report(
        json.dumps(
            {
                "format": FORMAT,
                "shard": 2,
                "state": "complete",
                "objects": {"total": 1},
                "sync": {
                    "candidates": 1,
                    "destinationInScope": 2,
                    "sourceInScope": 3,
                    "listingComplete": True,
                },
            }
        )
    )
    assert report is not None
    patch = ledger.additions({2: report}, {})
    assert patch["sync-2"] == "1,2,3,1"
    data = {
        **patch,
        "sync-0": "1,2,3,2",  # not a flag
        "sync-1": "5,2,3,1",  # more candidates than in scope
        "sync-9": "1,2,3,1",  # not a shard of this plan
        "sync-x": "1,2,3,1",
    }
    assert ledger.read_sync(data, 3) == {2: ShardCensus(1, 2, 3, True)}
    assert 2 in ledger.read(data)  # the shard's own line is still read as before


def test_a_dry_run_shows_how_far_the_count_is_then_what_would_go_escaped() -> None:
    limit = DeleteLimit.parse(5)
    counting = dry_run_status(3, {0: census(1)}, limit, ended=False)
    assert counting["dryRun"] is True and "1 of 3 shards counted" in counting["message"]
    assert "candidates" not in counting
    counted = {
        0: ShardCensus(2, 10, 10, True, sample=("a\x1b[2Jb", "c")),
        1: census(0),
        2: ShardCensus(1, 10, 10, True, sample=("z\n",)),
    }
    done = dry_run_status(3, counted, limit, ended=True)
    assert (done["candidates"], done["max"], done["deleted"]) == (3, 5, 0)
    assert done["wouldDelete"] == ["a\\x1b[2Jb", "c", "z\\n"] and done["wouldDeleteShown"] == 3
    assert "3 destination objects would be deleted" in done["message"]
    refused = dry_run_status(3, counted, DeleteLimit.parse(2), ended=True)
    assert refused["reason"] == "DeleteLimitExceeded" and "would refuse" in refused["message"]
    # A census Job that ended with shards uncounted says which.
    failed = dry_run_status(3, {0: census(1)}, limit, ended=True)
    assert failed["reason"] == "ListingIncomplete" and "shards 1-2" in failed["message"]


def test_a_census_message_drops_sample_keys_until_it_fits_and_keeps_the_counts() -> None:
    long_keys = tuple("k" * 1000 + str(i) for i in range(10))
    text = phase_message(FORMAT, 4, "census", ShardCensus(10, 20, 30, True, sample=long_keys))
    assert len(text.encode()) <= 4096
    report = parse_report(text)
    assert report is not None and report.sync is not None and report.shard == 4
    assert (report.sync.candidates, report.sync.destination_in_scope) == (10, 20)
    assert 0 < len(report.sync.sample) < 10
    deletes = parse_report(phase_message(FORMAT, 1, "delete", ShardDeletes(3, 1, 0)))
    assert deletes is not None and deletes.deletes == ShardDeletes(3, 1, 0) and deletes.state == "complete"
