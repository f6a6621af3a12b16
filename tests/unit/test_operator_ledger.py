"""The progress ledger keeps every finished shard's counts within one ConfigMap."""

from __future__ import annotations

import json

import pytest

from ferry.model.checkpoint import Checkpoint, LedgerEntry
from ferry.model.plan import Shard
from ferry.operator import ledger
from ferry.operator.accounting import ShardCount, Tally
from ferry.worker.statusdoc import WorkerReport


def report(shard: int, failed: int = 0) -> WorkerReport:
    return WorkerReport(
        shard=shard,
        state="complete",
        objects={"total": 25_000, "copied": 24_000 - failed, "skipped": 1000, "failed": failed, "pending": 0},
        bytes={
            "total": 2_500_000_000_000,
            "copied": 2_400_000_000_000,
            "skipped": 100_000_000_000,
            "failed": 0,
        },
        objects_per_second=0.0,
        bytes_per_second=0.0,
        concurrency=0,
        in_flight=0,
        reason="",
        rss_bytes=300 * 2**20,
        failed=[{"key": f"k/{shard}/{i}", "code": "InternalError"} for i in range(failed)],
        error=None,
    )


def test_counts_round_trip() -> None:
    original = report(7)
    data = ledger.additions({7: original}, {})
    back = ledger.read(data)[7]
    assert (back.objects, back.bytes, back.rss_bytes, back.state) == (
        original.objects,
        original.bytes,
        original.rss_bytes,
        "complete",
    )


def test_ten_thousand_shards_fit_a_configmap() -> None:
    data = ledger.additions({i: report(i) for i in range(10_000)}, {})
    assert len(json.dumps(data).encode()) < 1_000_000
    assert len(ledger.read(data)) == 10_000


def test_failure_sample_is_shared_and_capped() -> None:
    data = ledger.additions({1: report(1, failed=15)}, {})
    data.update(ledger.additions({2: report(2, failed=15)}, data))
    read = ledger.read(data)
    assert len([f for r in read.values() for f in r.failed]) == ledger.FAILED_SAMPLE
    assert read[1].objects["failed"] == 15 and read[2].objects["failed"] == 15


def test_garbage_entries_are_ignored() -> None:
    assert ledger.read({"3": "nonsense", "4": "1,2,3", "x": "1,1,0,0,1,1,0,0,0", "failed": "{"}) == {}


@pytest.mark.parametrize(("source", "suffix"), [("cgroup", "c"), ("rss", ""), (None, "")])
def test_the_peak_keeps_where_it_was_measured(source: str | None, suffix: str) -> None:
    report = WorkerReport(
        shard=0,
        state="complete",
        objects={"total": 2, "copied": 2, "skipped": 0, "failed": 0},
        bytes={"total": 20, "copied": 20, "skipped": 0, "failed": 0},
        objects_per_second=0.0,
        bytes_per_second=0.0,
        concurrency=0,
        in_flight=0,
        reason="",
        rss_bytes=300 * 1024 * 1024,
        failed=[],
        error=None,
        peak_source=source,
    )
    text = ledger.encode(report)
    assert text.endswith(f",{300 * 1024}{suffix}")
    back = ledger.decode(0, text)
    assert back is not None and back.rss_bytes == 300 * 1024 * 1024
    assert back.peak_source == ("cgroup" if source == "cgroup" else "rss")


# -- resume entries: floors and resume points of unfinished shards ------------------------------------

SHARDS = [Shard(None, "b/", 100, 1000), Shard("b/", "d/", 100, 1000), Shard("d/", None, 100, 1000)]


def running(shard: int, copied: int, after: str | None = None, carried: int = 0) -> WorkerReport:
    base = report(shard)
    return WorkerReport(
        **{
            **base.__dict__,
            "state": "running",
            "objects": {"total": 100, "copied": copied, "skipped": 0, "failed": 0, "pending": 100 - copied},
            "bytes": {"total": 1000, "copied": copied * 10, "skipped": 0, "failed": 0},
            "resume": None if after is None else Checkpoint(after, carried, 0, 0, carried * 10, 0, 0),
        }
    )


def shown(copied: int, skipped: int = 0, total: int = 100) -> ShardCount:
    return ShardCount(Tally(copied, skipped, 0, copied * 10, skipped * 10, 0), total, total * 10)


def test_each_running_shard_gets_its_floor_and_resume_point() -> None:
    patch = ledger.progress_patch(
        SHARDS,
        {0: shown(40), 1: shown(7)},
        {},
        {0: running(0, 40, "a/0038", 38), 1: running(1, 7)},
        {},
    )
    assert set(patch) == {"resume-0", "resume-1"}
    entries = ledger.entries(patch, len(SHARDS))
    assert entries[0].floor == (40, 0, 0, 400, 0, 0)
    assert entries[0].resume == Checkpoint("a/0038", 38, 0, 0, 380, 0, 0)
    assert entries[1].resume is None
    assert ledger.floors(patch, len(SHARDS))[0] == Tally(40, 0, 0, 400, 0, 0)


@pytest.mark.parametrize(
    ("stored", "answer", "kept"),
    [
        (None, "a/0038", "a/0038"),
        ("a/0038", "a/0050", "a/0050"),
        ("a/0050", "a/0038", "a/0050"),  # a late answer of an older pod never moves it back
        ("a/0050", None, "a/0050"),  # a pod that has settled nothing yet keeps the shard's point
        (None, "c/0001", None),  # another shard's key: ignored
        ("z/forged", "a/0010", "a/0010"),  # a stored point outside the range is dropped
    ],
    ids=["first", "further", "late-answer", "no-answer", "outside-range", "forged-stored"],
)
def test_the_resume_point_only_moves_forward_inside_the_shard(
    stored: str | None, answer: str | None, kept: str | None
) -> None:
    data = {}
    if stored is not None:
        data["resume-0"] = LedgerEntry((10, 0, 0, 100, 0, 0), Checkpoint(stored, 10, 0, 0, 100, 0, 0)).text()
    patch = ledger.progress_patch(SHARDS, {0: shown(60)}, {}, {0: running(0, 60, answer, 10)}, data)
    entry = ledger.entries({**data, **patch}, len(SHARDS))[0]
    assert (entry.resume.after if entry.resume else None) == kept


def test_a_finished_shard_keeps_what_was_shown_and_loses_its_entry() -> None:
    data = {"resume-2": LedgerEntry((98, 0, 0, 980, 0, 0), Checkpoint("d/0095", 95, 0, 0, 950, 0, 0)).text()}
    final = report(2)  # its own report: 24,000 copied, 1,000 skipped of 25,000
    patch = ledger.progress_patch(SHARDS, {2: shown(24_100, 900, 25_000)}, {2: final}, {}, data)
    assert patch["resume-2"] is None
    line = ledger.decode(2, str(patch["2"]))
    assert line is not None and (line.objects["copied"], line.objects["skipped"]) == (24_100, 900)


def test_nothing_is_written_when_nothing_changed() -> None:
    first = ledger.progress_patch(SHARDS, {0: shown(40)}, {}, {0: running(0, 40, "a/0038", 38)}, {})
    assert ledger.progress_patch(SHARDS, {0: shown(40)}, {}, {0: running(0, 40, "a/0038", 38)}, first) == {}


def test_resume_entries_stay_within_the_configmap_limit() -> None:
    """10,000 finished shards, then a thousand running ones with keys of 1,024 bytes: what does not fit
    is not written, and the whole stays under 1 MiB."""
    shards = [Shard(f"{i:05d}", f"{i + 1:05d}", 100, 1000) for i in range(11_000)]
    data = ledger.additions({i: report(i) for i in range(10_000)}, {})
    key = "x" * 1018
    reports = {i: running(i, 50, f"{i:05d}{key}"[:1024], 50) for i in range(10_000, 11_000)}
    patch = ledger.progress_patch(shards, {i: shown(50) for i in reports}, {}, reports, data)
    merged = {**data, **{k: v for k, v in patch.items() if v is not None}}
    assert 0 < len(patch) < 1000
    assert sum(len(k.encode()) + len(v.encode()) for k, v in merged.items()) <= ledger.LEDGER_BYTES


@pytest.mark.parametrize(
    "text",
    [
        "nonsense",
        '{"floor": [1, 2]}',
        '{"floor": [-1, 0, 0, 0, 0, 0]}',
        '{"floor": [true, 0, 0, 0, 0, 0]}',
        '{"floor": ["1", 0, 0, 0, 0, 0]}',
        '{"floor": [1e400, 0, 0, 0, 0, 0]}',
        '{"floor": [9007199254740993, 0, 0, 0, 0, 0]}',
        "[" * 5_000,
        '{"floor": [1, 0, 0, 0, 0, 0], "pad": "' + "x" * 10_000 + '"}',
    ],
    ids=["garbage", "short", "negative", "bool", "string", "float", "huge", "deep", "too-long"],
)
def test_forged_resume_entries_give_no_floor(text: str) -> None:
    assert ledger.floors({"resume-0": text}, 1) == {}


def test_entries_of_shards_outside_the_plan_are_ignored() -> None:
    good = LedgerEntry((1, 0, 0, 10, 0, 0)).text()
    data = {"resume-3": good, "resume-99999999": good, "resume-x": good, "resume--1": good, "resume-0": good}
    assert set(ledger.floors(data, 3)) == {0}
