"""The evidence report's pure parts: lines, names, bounds, tallies and the summary document; and the
recorder's parts against a sink that keeps what it is given (local files only, no S3)."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ferry.worker.evidence import (
    FORMAT,
    LINES_PER_PART,
    LINES_PER_PART_ENV,
    MAX_LINES_PER_PART,
    MAX_REASON_CHARS,
    Checksum,
    Evidence,
    EvidenceRecorder,
    Part,
    Tally,
    evidence_line,
    evidence_status,
    lines_per_part,
    part_name,
    rfc3339,
    run_scope,
    shard_scope,
    summary_document,
)
from ferry.worker.objects import ObjectInfo, Outcome

MOMENT = datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(MOMENT, "2026-11-30T01:02:03.456Z", id="utc-milliseconds"),
        pytest.param(
            datetime(2026, 11, 30, 3, 2, 3, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-30T01:02:03.000Z",
            id="other-zone-to-utc",
        ),
    ],
)
def test_rfc3339(moment: datetime, expected: str) -> None:
    assert rfc3339(moment) == expected


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        pytest.param(
            Evidence("a/b", 10, Outcome.COPIED, "absent at destination", MOMENT,
                     checksum=Checksum("crc32c", "AAAAAQ==", "AAAAAQ==")),
            {"key": "a/b", "version": None, "size": 10, "action": "copied", "reason": "absent at destination",
             "code": None, "checksum": {"algorithm": "crc32c", "source": "AAAAAQ==", "destination": "AAAAAQ=="},
             "time": "2026-11-30T01:02:03.456Z"},
            id="copied-with-crc32c",
        ),
        pytest.param(
            Evidence("k", 0, Outcome.FAILED, "x" * 2000, MOMENT, code="AccessDenied", version="v1"),
            {"key": "k", "version": "v1", "size": 0, "action": "failed", "reason": "x" * MAX_REASON_CHARS,
             "code": "AccessDenied", "checksum": None, "time": "2026-11-30T01:02:03.456Z"},
            id="failed-reason-bounded",
        ),
        pytest.param(
            Evidence("line\nbreak\u2028sep\"quote", 1, Outcome.SKIPPED, "same size and ETag", MOMENT,
                     checksum=Checksum("etag", "e", "e")),
            {"key": "line\nbreak\u2028sep\"quote", "version": None, "size": 1, "action": "skipped",
             "reason": "same size and ETag", "code": None,
             "checksum": {"algorithm": "etag", "source": "e", "destination": "e"},
             "time": "2026-11-30T01:02:03.456Z"},
            id="hostile-key-escaped",
        ),
    ],
)  # fmt: skip
def test_evidence_line(evidence: Evidence, expected: dict[str, object]) -> None:
    line = evidence_line(evidence)
    assert "\n" not in line and line.isascii()  # one line whatever the key holds
    assert json.loads(line) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, LINES_PER_PART, id="unset"),
        pytest.param({LINES_PER_PART_ENV: "3"}, 3, id="set"),
        pytest.param({LINES_PER_PART_ENV: "0"}, 1, id="at-least-one"),
        pytest.param({LINES_PER_PART_ENV: "999999999"}, MAX_LINES_PER_PART, id="capped"),
        pytest.param({LINES_PER_PART_ENV: "-5"}, LINES_PER_PART, id="negative"),
        pytest.param({LINES_PER_PART_ENV: "1e9"}, LINES_PER_PART, id="not-digits"),
        pytest.param({LINES_PER_PART_ENV: "9" * 400}, LINES_PER_PART, id="huge-text"),
    ],
)
def test_lines_per_part(env: dict[str, str], expected: int) -> None:
    assert lines_per_part(env) == expected


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param(shard_scope("job", 3, None), "job/evidence/shard-00003", id="shard"),
        pytest.param(
            shard_scope("job", 3, "k9"),
            f"job/evidence/shard-00003-after-{hashlib.sha256(b'k9').hexdigest()[:12]}",
            id="resumed-shard-has-its-own",
        ),
        pytest.param(run_scope("job", "20261130T010203Z"), "job/evidence/run-20261130T010203Z", id="run"),
        pytest.param(part_name("job/evidence/shard-00003", 12), "job/evidence/shard-00003/part-00012.jsonl.gz",
                     id="part"),
    ],
)  # fmt: skip
def test_names(scope: str, expected: str) -> None:
    assert scope == expected


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([], Tally(), id="empty"),
        pytest.param(
            [(Outcome.COPIED, 10), (Outcome.COPIED, 5), (Outcome.SKIPPED, 7), (Outcome.FAILED, 1)],
            Tally(copied=2, skipped=1, failed=1, bytes_copied=15, bytes_skipped=7, bytes_failed=1),
            id="each-action",
        ),
    ],
)
def test_tally(steps: list[tuple[Outcome, int]], expected: Tally) -> None:
    tally = Tally()
    for action, size in steps:
        tally = tally.add(action, size)
    assert tally == expected
    assert tally.objects == len(steps)


@pytest.mark.parametrize(
    ("parts", "complete", "expected_complete"),
    [
        pytest.param([Part(1, "s/part-00001.jsonl.gz", 1, 9, "b", True),
                      Part(0, "s/part-00000.jsonl.gz", 2, 9, "a", True)], True, True, id="all-uploaded"),
        pytest.param([Part(0, "s/part-00000.jsonl.gz", 2, 9, "a", False)], True, False, id="a-part-missing"),
        pytest.param([], False, False, id="run-incomplete"),
    ],
)  # fmt: skip
def test_summary_document(parts: list[Part], complete: bool, expected_complete: bool) -> None:
    tally = Tally(copied=2, failed=1, bytes_copied=20, bytes_failed=3)
    document = summary_document(
        job="j",
        scope="j/evidence/shard-00000",
        address="s3://b/p/",
        shard=0,
        resumed_after=None,
        tally=tally,
        started=MOMENT,
        ended=MOMENT + timedelta(seconds=1),
        parts=parts,
        complete=complete,
    )
    assert document["format"] == FORMAT
    assert document["objects"] == {"total": 3, "copied": 2, "skipped": 0, "failed": 1}
    assert document["bytes"] == {"total": 23, "copied": 20, "skipped": 0, "failed": 3}
    assert document["start"] == "2026-11-30T01:02:03.456Z" and document["end"] == "2026-11-30T01:02:04.456Z"
    assert document["complete"] is expected_complete
    assert [part["name"] for part in document["parts"]] == sorted(part.name for part in parts)


class KeepingSink:
    """Keeps a copy of every part it is given (the recorder deletes its own file afterwards)."""

    def __init__(self, folder: Path, accept: bool = True) -> None:
        self.folder = folder
        self.accept = accept
        self.names: list[str] = []

    def __call__(self, path: Path, name: str) -> bool:
        self.names.append(name)
        (self.folder / name.replace("/", "_")).write_bytes(path.read_bytes())
        return self.accept


def _objects(count: int) -> list[ObjectInfo]:
    return [ObjectInfo(f"k{i:04d}", i, f"etag{i}", MOMENT) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "per_part", "sizes"),
    [
        pytest.param(0, 3, [], id="nothing-no-part"),
        pytest.param(3, 3, [3], id="exactly-one-part"),
        pytest.param(4, 3, [3, 1], id="one-over-the-boundary"),
        pytest.param(9, 3, [3, 3, 3], id="exact-multiple"),
        pytest.param(5, 1, [1] * 5, id="one-line-parts"),
    ],
)
def test_recorder_splits_at_the_boundary_and_cleans_up(
    tmp_path: Path, count: int, per_part: int, sizes: list[int]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sink = KeepingSink(tmp_path)
    recorder = EvidenceRecorder("s", sink, per_part, scratch, clock=lambda: MOMENT)
    for obj in _objects(count):
        recorder.record(obj, Outcome.COPIED, reason="absent at destination")
    parts = recorder.close()
    assert [part.lines for part in parts] == sizes
    assert [part.name for part in parts] == [part_name("s", n) for n in range(len(sizes))]
    keys = []
    for part in parts:
        body = (tmp_path / part.name.replace("/", "_")).read_bytes()
        assert hashlib.sha256(body).hexdigest() == part.sha256 and len(body) == part.bytes
        keys += [json.loads(line)["key"] for line in gzip.decompress(body).splitlines()]
    assert keys == [obj.key for obj in _objects(count)]
    assert list(scratch.iterdir()) == []  # no part file left behind
    assert recorder.tally.copied == count


def test_recorder_counts_every_line_once_under_concurrent_records(tmp_path: Path) -> None:
    sink = KeepingSink(tmp_path)
    recorder = EvidenceRecorder("s", sink, 7, tmp_path)
    objects = _objects(500)

    def work(chunk: list[ObjectInfo]) -> None:
        for obj in chunk:
            recorder.record(obj, Outcome.SKIPPED, reason="same size and ETag")

    threads = [threading.Thread(target=work, args=(objects[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    parts = recorder.close()
    assert sum(part.lines for part in parts) == 500
    seen = list(
        itertools.chain.from_iterable(
            gzip.decompress((tmp_path / part.name.replace("/", "_")).read_bytes()).splitlines()
            for part in parts
        )
    )
    assert sorted(json.loads(line)["key"] for line in seen) == sorted(obj.key for obj in objects)


def test_a_part_the_sink_refuses_is_listed_as_not_uploaded(tmp_path: Path) -> None:
    recorder = EvidenceRecorder("s", KeepingSink(tmp_path, accept=False), 2, tmp_path)
    for obj in _objects(3):
        recorder.record(obj, Outcome.FAILED, reason="r", code="InternalError")
    parts = recorder.close()
    assert [part.uploaded for part in parts] == [False, False]
    recorder.record(_objects(1)[0], Outcome.COPIED, reason="after close")  # ignored
    assert recorder.tally.failed == 3 and recorder.tally.copied == 0


@pytest.mark.parametrize(
    ("prefix", "objects", "expected_location", "expected_objects"),
    [
        pytest.param("", {"total": 9, "copied": 5, "skipped": 3, "failed": 1, "pending": 0},
                     "s3://audit/job/evidence/", {"copied": 5, "skipped": 3, "failed": 1}, id="counts"),
        pytest.param("a/b/", {}, "s3://audit/a/b/job/evidence/", {"copied": 0, "skipped": 0, "failed": 0},
                     id="nothing-yet"),
    ],
)  # fmt: skip
def test_evidence_status(
    prefix: str, objects: dict[str, int], expected_location: str, expected_objects: dict[str, int]
) -> None:
    status = evidence_status("audit", prefix, "job", objects)
    assert status == {
        "format": FORMAT,
        "location": expected_location,
        "summaries": "shard-NNNNN/summary.json",
        "objects": expected_objects,
    }
