"""Archived objects, the pure parts: which objects are archived (archive.py), the pacing of the wait for
restores, how a run with archived objects is told and ends (archivesummary.py, run.ending), the spec's
rules, and storage classes read from listing pages only when asked for (leanlist.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.model.copyjob import Archived, CopyJobSpec, Restore, RestoreTier
from ferry.worker.archive import (
    MAX_RESTORE_HEADER,
    ArchiveState,
    RestoreWait,
    is_archived_error,
    listed_archived,
    restore_ongoing,
    state_of,
)
from ferry.worker.archivesummary import archived_counts, archived_line, restore_pending
from ferry.worker.engine import Summary
from ferry.worker.leanlist import Page, _page
from ferry.worker.progress import Counts
from ferry.worker.run import EXIT_FAILED_OBJECTS, EXIT_OK, EXIT_RESTORE_PENDING, ending


@pytest.mark.parametrize(
    ("storage_class", "archived"),
    [
        ("GLACIER", True),
        ("DEEP_ARCHIVE", True),
        ("GLACIER_IR", False),  # Instant Retrieval: read like STANDARD
        ("STANDARD", False),
        ("INTELLIGENT_TIERING", False),  # its archive tiers show only in HEAD (or as a refused read)
        ("STANDARD_IA", False),
        (None, False),  # not read: the copy's refusal tells
        ("glacier", False),  # S3 names classes in capitals; anything else is not trusted as one
    ],
)
def test_which_listed_storage_classes_are_archived(storage_class: str | None, archived: bool) -> None:
    assert listed_archived(storage_class) is archived


@pytest.mark.parametrize(
    ("code", "archived"),
    [
        ("InvalidObjectState", True),
        ("ObjectNotInActiveTierError", True),
        ("AccessDenied", False),
        ("NoSuchKey", False),
        ("", False),
    ],
)
def test_which_refusals_mean_archived(code: str, archived: bool) -> None:
    assert is_archived_error(code) is archived


@pytest.mark.parametrize(
    ("header", "ongoing"),
    [
        ('ongoing-request="true"', True),
        ('ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"', False),
        ('ongoing-request="FALSE"', False),
        ('expiry-date="Fri, 21 Dec 2012 00:00:00 GMT", ongoing-request="true"', True),
        ("", None),
        (None, None),
        ("ongoing-request=true", None),  # unquoted: not S3's
        ('not-ongoing-request="false"', None),
        ('ongoing-request="false"' + " " * MAX_RESTORE_HEADER, None),  # too long to be S3's
    ],
)
def test_the_restore_header_is_read_strictly(header: str | None, ongoing: bool | None) -> None:
    assert restore_ongoing(header) is ongoing


@pytest.mark.parametrize(
    ("storage_class", "restore", "archive_status", "state"),
    [
        ("GLACIER", None, None, ArchiveState.ARCHIVED),
        ("DEEP_ARCHIVE", 'ongoing-request="true"', None, ArchiveState.RESTORING),
        ("GLACIER", 'ongoing-request="false", expiry-date="x"', None, ArchiveState.RESTORED),
        ("GLACIER_IR", None, None, ArchiveState.READABLE),
        (None, None, None, ArchiveState.READABLE),  # HEAD names no class for STANDARD
        ("INTELLIGENT_TIERING", None, "ARCHIVE_ACCESS", ArchiveState.ARCHIVED),
        ("INTELLIGENT_TIERING", None, "DEEP_ARCHIVE_ACCESS", ArchiveState.ARCHIVED),
        ("INTELLIGENT_TIERING", 'ongoing-request="true"', "ARCHIVE_ACCESS", ArchiveState.RESTORING),
        ("INTELLIGENT_TIERING", None, None, ArchiveState.READABLE),
        # A restore header that is not S3's says nothing: the class decides.
        ("GLACIER", "garbage", None, ArchiveState.ARCHIVED),
    ],
)
def test_state_of_a_head_answer(
    storage_class: str | None, restore: str | None, archive_status: str | None, state: ArchiveState
) -> None:
    assert state_of(storage_class, restore, archive_status) is state


@pytest.mark.parametrize(
    ("requested", "last", "next_check"),
    [
        (100.0, None, 110.0),  # first check an interval after the request
        (100.0, 110.0, 120.0),
        (100.0, 125.0, 130.0),  # never past the deadline (100 + 30)
        (100.0, 130.0, 130.0),
    ],
)
def test_restore_checks_are_paced_and_end_at_the_deadline(
    requested: float, last: float | None, next_check: float
) -> None:
    wait = RestoreWait(interval=10.0, max_wait=30.0)
    assert wait.next_check(requested, last) == next_check
    assert not wait.timed_out(requested, 129.9) and wait.timed_out(requested, 130.0)
    assert wait.checks_at_most() == 5


@pytest.mark.parametrize(("interval", "max_wait"), [(0.0, 10.0), (10.0, 0.0), (-1.0, 10.0)])
def test_a_restore_wait_must_be_positive(interval: float, max_wait: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RestoreWait(interval=interval, max_wait=max_wait)


# -- the spec ----------------------------------------------------------------------------------------------


def _spec(**extra: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}, **extra}
    )


def test_archived_objects_fail_by_default_as_before() -> None:
    spec = _spec()
    assert spec.archived is Archived.FAIL and spec.restore is None


def test_restore_settings_default_and_bounds() -> None:
    spec = _spec(archived="restore")
    assert spec.restore is None  # the engine uses Restore()'s defaults
    assert Restore() == Restore(
        tier=RestoreTier.STANDARD, days=1, max_wait_seconds=172_800, check_interval_seconds=300
    )
    spec = _spec(archived="restore", restore={"tier": "Bulk", "days": 7, "maxWaitSeconds": 60})
    assert spec.restore is not None and spec.restore.tier is RestoreTier.BULK and spec.restore.days == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"archived": "skip", "restore": {"days": 2}}, "restore is only valid with archived: restore"),
        ({"restore": {}}, "restore is only valid with archived: restore"),
        ({"archived": "thaw"}, "archived"),
        ({"archived": "restore", "restore": {"days": 0}}, "days"),
        ({"archived": "restore", "restore": {"days": 366}}, "days"),
        ({"archived": "restore", "restore": {"maxWaitSeconds": 604_801}}, "maxWaitSeconds"),
        ({"archived": "restore", "restore": {"checkIntervalSeconds": 0}}, "checkIntervalSeconds"),
        ({"archived": "restore", "restore": {"tier": "Fast"}}, "tier"),
        ({"archived": "restore", "restore": {"days": "2"}}, "days"),  # strict: no strings for numbers
    ],
)
def test_contradictory_or_unbounded_archive_settings_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CopyJobSpec.model_validate(
            {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}, **extra},
            by_alias=True,
            by_name=False,
        )


# -- how a run with archived objects ends -------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("counts", "state", "exit_code"),
    [
        # Skipped archived objects were left out as asked: the run succeeded.
        ({"discovered": 5, "copied": 3, "skipped": 2, "archived_skipped": 2}, "complete", EXIT_OK),
        ({"discovered": 5, "copied": 5, "restored": 2}, "complete", EXIT_OK),
        # Only restores not done in time: a run to repeat later, told apart from failed objects.
        (
            {"discovered": 5, "copied": 3, "failed": 2, "restore_timed_out": 2},
            "restorePending",
            EXIT_RESTORE_PENDING,
        ),
        # Any other failure beside them: failed.
        ({"discovered": 5, "copied": 2, "failed": 3, "restore_timed_out": 2}, "failed", EXIT_FAILED_OBJECTS),
        ({"discovered": 5, "copied": 4, "failed": 1}, "failed", EXIT_FAILED_OBJECTS),
    ],
)
def test_how_a_run_with_archived_objects_ends(counts: dict[str, int], state: str, exit_code: int) -> None:
    end = ending(_summary(**counts))
    assert (end.state, end.exit_code) == (state, exit_code)
    assert restore_pending(_summary(**counts).counts) is (state == "restorePending")


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        ({}, None),
        (
            {"archived_skipped": 1200},
            "  archived: 1,200 skipped (spec.archived: skip; each is in the report)",
        ),
        (
            {"restored": 3, "restore_timed_out": 1, "restore_waiting": 2},
            "  archived: 3 restored and copied, 1 not restored in time (RestoreTimedOut), 2 still waiting "
            "for their restore",
        ),
    ],
)
def test_the_text_summary_line_on_archived_objects(counts: dict[str, int], line: str | None) -> None:
    assert archived_line(replace(Counts(), **counts)) == line


def test_archived_counts_are_named_as_in_status() -> None:
    counts = replace(Counts(), archived_skipped=1, restored=2, restore_timed_out=3, restore_waiting=4)
    assert archived_counts(counts) == {
        "skipped": 1,
        "restored": 2,
        "restoreTimedOut": 3,
        "waitingForRestore": 4,
    }


# -- storage classes in listing pages ------------------------------------------------------------------------

_NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _listing(classes: list[str | None]) -> bytes:
    entries = "".join(
        f"<Contents><Key>k{i}</Key><LastModified>2026-11-29T12:00:00.000Z</LastModified>"
        f"<ETag>&quot;abc&quot;</ETag><Size>{i}</Size>"
        + (f"<StorageClass>{storage}</StorageClass>" if storage is not None else "")
        + "</Contents>"
        for i, storage in enumerate(classes)
    )
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult {_NS}><Name>b</Name>"
        f"<IsTruncated>false</IsTruncated>{entries}</ListBucketResult>"
    ).encode()


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (["STANDARD", "GLACIER", "DEEP_ARCHIVE"], ["STANDARD", "GLACIER", "DEEP_ARCHIVE"]),
        # An entry without one: read entry by entry by the XML parser, the others keep theirs.
        (["GLACIER", None, "STANDARD"], ["GLACIER", None, "STANDARD"]),
        # Longer than any storage class: not kept.
        (["X" * 100, "GLACIER"], [None, "GLACIER"]),
    ],
)
def test_storage_classes_are_read_when_asked_for(written: list[str | None], read: list[str | None]) -> None:
    page = _page(_listing(written), storage_classes=True)
    assert [page.object(i).storage_class for i in range(len(written))] == read
    assert [entry.get("StorageClass") for entry in page.as_boto()["Contents"]] == read


def test_storage_classes_are_not_read_unless_asked_for() -> None:
    page = _page(_listing(["GLACIER", "STANDARD"]))
    assert page.classes is None
    assert all(page.object(i).storage_class is None for i in range(2))
    assert all("StorageClass" not in entry for entry in page.as_boto()["Contents"])


def test_a_page_whose_class_column_differs_in_length_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Page(keys=["a"], sizes=[1], etags=["e"], modified=["m"], classes=[])
