"""spec.versions all, the pure parts of its evidence and status: what each version's evidence line says
(worker/versionevidence.py), the counters a worker reports and the operator reads back
(worker/versionsummary.py, worker/statusdoc.py), their ledger entries and status (operator/versionstatus.py)
and the checked failure sample (operator/aggregate.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model.plan import Shard
from ferry.operator.aggregate import JobView, failed_entry, totals
from ferry.operator.versionstatus import ledger_patch, read_ledger, versions_status, with_ledger
from ferry.worker.engine import Summary
from ferry.worker.evidence import Checksum, Evidence, evidence_line
from ferry.worker.objects import FailedObject, Outcome
from ferry.worker.progress import Counts
from ferry.worker.statusdoc import WorkerReport, parse_report, termination_message
from ferry.worker.versionevidence import (
    COPIED,
    MARKER_COPIED,
    MARKER_SAME,
    RECORDED,
    SAME_ETAG,
    VersionEvidence,
    VersionLine,
    copied_line,
    failed_line,
    skipped_line,
)
from ferry.worker.versionlisting import KeyHistory
from ferry.worker.versionrun import VersionCounts
from ferry.worker.versions import Version
from ferry.worker.versionsummary import MAX_COUNT, sum_versions, versions_from_json

T = datetime(2026, 1, 1, tzinfo=UTC)


def obj(version_id: str, size: int = 1, etag: str | None = None, key: str = "k") -> Version:
    return Version(key, version_id, False, size, etag if etag is not None else f"e{size}", T)


def marker(version_id: str, key: str = "k") -> Version:
    return Version(key, version_id, True, 0, "", T)


CRC = Checksum("crc32c", "AAAAAQ==", "AAAAAQ==")


# --- what a version's line says ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(copied_line(obj("1"), CRC), VersionLine(obj("1"), Outcome.COPIED, COPIED, None, CRC),
                     id="object-copied-with-its-checksum"),
        pytest.param(copied_line(marker("2"), CRC), VersionLine(marker("2"), Outcome.COPIED, MARKER_COPIED),
                     id="marker-copied-has-no-checksum"),
        pytest.param(skipped_line(obj("1", 5, "a"), obj("d1", 5, "a")),
                     VersionLine(obj("1", 5, "a"), Outcome.SKIPPED, SAME_ETAG, None, Checksum("etag", "a", "a")),
                     id="skipped-same-etag"),
        pytest.param(skipped_line(obj("1", 5, "a-2"), obj("d1", 5, "b-2")),
                     VersionLine(obj("1", 5, "a-2"), Outcome.SKIPPED, RECORDED, None,
                                 Checksum("etag", "a-2", "b-2")),
                     id="skipped-by-recorded-version-id"),
        pytest.param(skipped_line(obj("1", 5, ""), obj("d1", 5, "")),
                     VersionLine(obj("1", 5, ""), Outcome.SKIPPED, RECORDED, None, Checksum("etag", None, None)),
                     id="skipped-without-etags"),
        pytest.param(skipped_line(marker("2"), marker("d2")), VersionLine(marker("2"), Outcome.SKIPPED, MARKER_SAME),
                     id="marker-skipped"),
        pytest.param(failed_line(marker("3"), "EarlierVersionFailed", "held back"),
                     VersionLine(marker("3"), Outcome.FAILED, "held back", "EarlierVersionFailed"),
                     id="marker-failed"),
    ],
)  # fmt: skip
def test_version_lines(line: VersionLine, expected: VersionLine) -> None:
    assert line == expected


@pytest.mark.parametrize(
    ("delete_marker", "expected"),
    [(None, None), (False, False), (True, True)],
    ids=["object-line-has-no-field", "object-version", "delete-marker"],
)
def test_a_version_line_says_its_kind(delete_marker: bool | None, expected: bool | None) -> None:
    line = json.loads(
        evidence_line(Evidence("k", 0, Outcome.COPIED, COPIED, T, "v1", None, None, delete_marker))
    )
    assert line.get("deleteMarker", "absent") == ("absent" if expected is None else expected)


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, str, str, bool | None]] = []

    def record(self, source: Any, action: Outcome, **kwargs: Any) -> None:
        self.lines.append(
            (
                source.key,
                source.version_id,
                action.value,
                kwargs.get("code") or "",
                kwargs.get("delete_marker"),
            )
        )


def test_bulk_lines_are_read_back_from_a_spilled_history(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.worker import versionlisting

    monkeypatch.setattr(versionlisting, "SPILL_VERSIONS", 3)
    source, destination = KeyHistory("k"), KeyHistory("k")
    for i in reversed(range(8)):  # listed newest first
        source.add(marker(str(i)) if i % 4 == 3 else obj(str(i)))
        destination.add(marker(f"d{i}") if i % 4 == 3 else obj(f"d{i}"))
    assert source.held < 8  # spilled
    recorder = Recorder()
    evidence = VersionEvidence(lambda: recorder)
    evidence.skipped(source.oldest_first(), destination.oldest_first(), 5)
    evidence.failed_history(source, "X", "why", after=5)
    assert [(v, a) for _, v, a, _, _ in recorder.lines] == [(str(i), "skipped") for i in range(5)] + [
        (str(i), "failed") for i in range(5, 8)
    ]
    assert [m for *_, m in recorder.lines] == [i % 4 == 3 for i in range(8)]
    source.close()
    destination.close()


def test_without_a_recorder_nothing_is_read_back() -> None:
    class Unreadable:
        key, bytes = "k", 3

        def oldest_first(self) -> Any:
            raise AssertionError("no evidence asked for: the history is not read again")

    VersionEvidence(lambda: None).failed_history(Unreadable(), "X", "why")


def test_a_history_that_cannot_be_read_back_gets_one_line_for_the_key() -> None:
    class Broken:
        key, bytes = "k", 30

        def oldest_first(self) -> Any:
            raise OSError("spill file gone")

    recorder = Recorder()
    VersionEvidence(lambda: recorder).failed_history(Broken(), "X", "why")
    assert recorder.lines == [("k", None, "failed", "X", None)]


# --- counters: worker report, operator, ledger, status ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param([1, 2], None, id="not-an-object"),
        pytest.param({"keys": 4, "deleteMarkersCopied": 2, "divergedKeys": 1},
                     {"keys": 4, "deleteMarkersCopied": 2, "divergedKeys": 1}, id="checked"),
        pytest.param({"keys": -1, "deleteMarkersCopied": True, "divergedKeys": "3", "extra": 9},
                     {"keys": 0, "deleteMarkersCopied": 0, "divergedKeys": 0}, id="hostile-values-count-as-none"),
        pytest.param({"keys": MAX_COUNT + 1, "deleteMarkersCopied": 2.5},
                     {"keys": 0, "deleteMarkersCopied": 0, "divergedKeys": 0}, id="out-of-bounds"),
    ],
)  # fmt: skip
def test_versions_from_json(value: Any, expected: dict[str, int] | None) -> None:
    assert versions_from_json(value) == expected


def test_sum_versions() -> None:
    one = {"keys": 1, "deleteMarkersCopied": 2, "divergedKeys": 3}
    assert sum_versions(None, None) is None
    assert sum_versions(None, one) == one
    assert sum_versions(one, None) == one
    assert sum_versions(one, one) == {"keys": 2, "deleteMarkersCopied": 4, "divergedKeys": 6}


def _summary(versions: VersionCounts | None, failures: list[FailedObject]) -> Summary:
    counts = Counts(discovered=3, copied=2, failed=1, bytes_discovered=3, bytes_copied=2, bytes_failed=1)
    return Summary(counts, 1.0, 0, 0, 10, failures, "/tmp/r", versions=versions)


def test_the_termination_message_carries_version_counters_and_failed_versions() -> None:
    failure = FailedObject("k", "AccessDenied", "no", 3, 1, "v-1")
    text = termination_message(0, _summary(VersionCounts(2, 1, 0), [failure]), None)
    report = parse_report(text)
    assert report is not None
    assert report.versions == {"keys": 2, "deleteMarkersCopied": 1, "divergedKeys": 0}
    assert report.failed[0]["version"] == "v-1"
    # A run of current versions says nothing of versions, as before.
    plain = parse_report(termination_message(0, _summary(None, [replace(failure, version=None)]), None))
    assert plain is not None and plain.versions is None and "version" not in plain.failed[0]
    assert "versions" not in json.loads(termination_message(0, _summary(None, []), None))


def _report(shard: int, versions: dict[str, int] | None, failed: list[Any] | None = None) -> WorkerReport:
    return WorkerReport(
        shard=shard,
        state="complete",
        objects={"total": 10, "copied": 10, "skipped": 0, "failed": 0, "pending": 0},
        bytes={"total": 10, "copied": 10, "skipped": 0, "failed": 0},
        objects_per_second=0.0,
        bytes_per_second=0.0,
        concurrency=0,
        in_flight=0,
        reason="",
        rss_bytes=None,
        failed=failed or [],
        error=None,
        versions=versions,
    )


PLAN = [Shard(None, "m", 10, 10), Shard("m", None, 10, 10)]


def test_totals_sum_the_version_counters_of_the_shards_that_report_them() -> None:
    one = {"keys": 3, "deleteMarkersCopied": 1, "divergedKeys": 0}
    two = {"keys": 4, "deleteMarkersCopied": 0, "divergedKeys": 1}
    counted = totals(PLAN, {0: _report(0, one)}, {1: ("p", _report(1, two))}, JobView(exists=True))
    assert counted.versions == {"keys": 7, "deleteMarkersCopied": 1, "divergedKeys": 1}
    assert totals(PLAN, {0: _report(0, None)}, {}, JobView(exists=True)).versions is None


@pytest.mark.parametrize(
    ("every_version", "versions", "expected"),
    [
        (False, {"keys": 3}, {}),
        (True, None, {"versions": {"keys": 0, "deleteMarkersCopied": 0, "divergedKeys": 0}}),
        (True, {"keys": 3, "divergedKeys": 1}, {"versions": {"keys": 3, "deleteMarkersCopied": 0, "divergedKeys": 1}}),
    ],
    ids=["current-versions-whatever-a-pod-says", "every-version-before-any-report", "every-version"],
)  # fmt: skip
def test_versions_status(
    every_version: bool, versions: dict[str, int] | None, expected: dict[str, Any]
) -> None:
    assert versions_status(versions, every_version=every_version) == expected


def test_the_ledger_keeps_a_finished_shard_s_counters_for_the_passes_after_its_pod_is_gone() -> None:
    kept = {"keys": 3, "deleteMarkersCopied": 1, "divergedKeys": 2}
    patch = ledger_patch({0: _report(0, kept), 1: _report(1, None)})
    assert patch == {"versions-0": "3,1,2"}
    read = read_ledger(patch, len(PLAN))
    assert read == {0: kept}
    # The ledger's own reports of finished shards carry no counters: they are given back.
    restored = with_ledger({0: _report(0, None), 1: _report(1, {"keys": 9})}, read)
    assert restored[0].versions == kept and restored[1].versions == {"keys": 9}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"versions-1": "1,2,3"}, {1: {"keys": 1, "deleteMarkersCopied": 2, "divergedKeys": 3}},
                     id="well-formed"),
        pytest.param({"versions-2": "1,2,3"}, {}, id="shard-not-in-the-plan"),
        pytest.param({"versions-0": "1,2"}, {}, id="too-few-fields"),
        pytest.param({"versions-0": "1,-2,3"}, {}, id="negative"),
        pytest.param({"versions-0": "1,2," + "9" * 14}, {}, id="too-large"),
        pytest.param({"versions-0": "1,2,٣"}, {}, id="non-ascii-digit"),
        pytest.param({"versions-x": "1,2,3", "versions-": "1,2,3", "0": "1,2,3"}, {}, id="other-keys"),
        pytest.param({"versions-00000001": "1,2,3"}, {}, id="index-too-long"),
    ],
)  # fmt: skip
def test_read_ledger_refuses_what_a_user_edited(data: dict[str, str], expected: dict[int, Any]) -> None:
    assert read_ledger(data, len(PLAN)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"key": "k", "code": "C", "message": "m", "size": 3, "version": "v"},
                     {"key": "k", "code": "C", "message": "m", "size": 3, "version": "v"}, id="with-version"),
        pytest.param({"key": "k", "code": "C", "message": "m", "size": 3},
                     {"key": "k", "code": "C", "message": "m", "size": 3}, id="current-version"),
        pytest.param({"key": "k" * 5000, "version": "v" * 5000, "size": -1, "other": "x"},
                     {"key": "k" * 1024, "version": "v" * 1024}, id="bounded-and-only-known-fields"),
        pytest.param({"key": 7, "code": None, "size": True}, {}, id="wrong-types-dropped"),
        pytest.param("not an object", None, id="not-an-object"),
    ],
)  # fmt: skip
def test_failed_entry(value: Any, expected: dict[str, Any] | None) -> None:
    assert failed_entry(value) == expected


def test_the_failure_sample_keeps_versions_and_drops_what_is_not_an_object() -> None:
    failed = [{"key": "k", "code": "C", "message": "m", "size": 1, "version": "v-1"}, "junk", 3]
    counted = totals(PLAN, {0: _report(0, None, failed)}, {}, JobView(exists=True))
    assert counted.failed_objects == [failed[0]]
