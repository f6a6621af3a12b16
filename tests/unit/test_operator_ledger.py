"""The progress ledger keeps every finished shard's counts within one ConfigMap."""

from __future__ import annotations

import json

import pytest

from ferry.operator import ledger
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
