"""Worker reports: the `/status` document and the termination message, parsed back (worker/statusdoc.py)."""

from __future__ import annotations

import json

import pytest

from ferry.worker.engine import Progress, Summary
from ferry.worker.limits import LimiterState
from ferry.worker.objects import FailedObject
from ferry.worker.progress import Counts
from ferry.worker.statusdoc import (
    FORMAT,
    TERMINATION_LIMIT,
    MemoryFigures,
    held_state,
    parse_report,
    status_document,
    termination_message,
)

COUNTS = Counts(
    discovered=1000,
    copied=900,
    skipped=80,
    failed=10,
    bytes_discovered=100_000_000,
    bytes_copied=90_000_000,
    bytes_skipped=8_000_000,
    bytes_failed=1_000_000,
    listing_done=True,
)


def failures(count: int, key_bytes: int = 20, message_bytes: int = 20, char: str = "k") -> list[FailedObject]:
    return [
        FailedObject(
            key=f"{i:04d}/" + char * ((key_bytes - 5) // len(char.encode())),
            code="AccessDenied",
            message="m" * message_bytes,
            attempts=5,
            size=100_000,
        )
        for i in range(count)
    ]


def summary(
    failed: list[FailedObject] | None = None,
    counts: Counts = COUNTS,
    error: str | None = None,
    interrupted: bool = False,
) -> Summary:
    return Summary(
        counts=counts,
        duration_seconds=123.4567,
        throttles=3,
        retries=7,
        requests=2100,
        failures=failures(10) if failed is None else failed,
        report_path="/tmp/ferry-report.jsonl",
        error=error,
        interrupted=interrupted,
    )


DONE = Counts(
    discovered=5,
    copied=4,
    skipped=1,
    bytes_discovered=50,
    bytes_copied=40,
    bytes_skipped=10,
    listing_done=True,
)


@pytest.mark.parametrize(
    ("value", "shrunk"),
    [
        (summary(failures(0), DONE), False),
        (summary(failures(3)), False),
        (summary(failures(10)), False),
        (summary(failures(10, key_bytes=1024, message_bytes=1024)), True),
        (summary(failures(10, key_bytes=1024, message_bytes=1024, char="é")), True),
        (summary(failures(10, key_bytes=1024, message_bytes=1024, char="🦀")), True),
        (summary(failures(50, key_bytes=1024, message_bytes=5000)), True),
        (summary(failures(10, key_bytes=1024), error="listing failed: timeout"), True),
        (summary(failures(10, key_bytes=1024), interrupted=True), True),
    ],
    ids=["clean", "few-failures", "ten-failures", "1KiB-keys", "1KiB-2-byte-chars", "1KiB-4-byte-chars",
         "many-failures", "with-error", "interrupted"],
)  # fmt: skip
def test_termination_message_fits_and_round_trips(value: Summary, shrunk: bool) -> None:
    text = termination_message(4, value, 300 * 2**20)
    assert len(text.encode()) <= TERMINATION_LIMIT
    report = parse_report(text)
    assert report is not None
    assert report.shard == 4
    assert report.state == (
        "complete" if value.complete else "interrupted" if value.interrupted else "incomplete"
    )
    c = value.counts
    assert report.objects == {
        "total": c.discovered,
        "copied": c.copied,
        "skipped": c.skipped,
        "failed": c.failed,
        "pending": c.pending,
    }
    assert report.bytes == {
        "total": c.bytes_discovered,
        "copied": c.bytes_copied,
        "skipped": c.bytes_skipped,
        "failed": c.bytes_failed,
    }
    assert report.rss_bytes == 300 * 2**20
    assert report.error == value.error
    sample = report.failed
    expected_keys = [f.key for f in value.failures[:10]]
    assert [f["key"] for f in sample] == expected_keys[: len(sample)]  # a prefix, in order
    if shrunk:
        assert 0 < len(sample) < len(expected_keys)
    else:
        assert len(sample) == len(expected_keys)
    for entry in sample:
        assert len(entry["message"]) <= 200
        assert entry["code"] == "AccessDenied"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param("listing failed: " + "x" * 5000, id="long-ascii-error"),
        pytest.param("listing failed: " + "é" * 2100, id="long-utf8-error"),
    ],
)
def test_termination_message_with_long_error_still_parses(error: str) -> None:
    text = termination_message(1, summary(failures(2), error=error), None)
    assert len(text.encode()) <= TERMINATION_LIMIT
    report = parse_report(text)
    assert report is not None
    assert report.state == "incomplete"
    assert report.error and report.error.startswith("listing failed: ")


def test_termination_message_is_compact_json() -> None:
    text = termination_message(0, summary(failures(1), DONE), None)
    raw = json.loads(text)
    assert raw["format"] == FORMAT
    assert raw["state"] == "complete"
    assert ", " not in text and ": " not in text
    assert raw["peakRssBytes"] is None


def progress(concurrency: int = 48, in_flight: int = 40, rss: int | None = 200 * 2**20) -> Progress:
    return Progress(
        counts=COUNTS,
        elapsed_seconds=12.34567,
        objects_per_second=101.239,
        bytes_per_second=10_123_456.7,
        eta_seconds=None,
        limiter=LimiterState(
            concurrency=concurrency,
            in_flight=in_flight,
            reason="growing: objects/s rose 12%",
            reserved_bytes=14 * 2**20,
            budget_bytes=358 * 2**20,
            budget_source="FERRY_MEMORY_LIMIT",
            rss_bytes=rss,
            overhead_bytes=200_000,
            latency_p50=0.05,
            latency_p95=0.2,
            latency_p99=0.4,
        ),
        throttles=2,
        retries=5,
        requests=3000,
    )


@pytest.mark.parametrize(
    ("value", "rss"),
    [(progress(), 200 * 2**20), (progress(1, 0, None), None)],
    ids=["busy", "idle-no-rss"],
)
def test_status_document_round_trips(value: Progress, rss: int | None) -> None:
    document = status_document(2, value)
    report = parse_report(json.dumps(document))
    assert report is not None
    assert report.shard == 2
    assert report.state == "running"
    assert report.objects["pending"] == COUNTS.pending
    assert report.objects["total"] == COUNTS.discovered
    assert report.objects_per_second == 101.24
    assert report.bytes_per_second == 10_123_457
    assert report.concurrency == value.limiter.concurrency
    assert report.in_flight == value.limiter.in_flight
    assert report.reason == value.limiter.reason
    assert report.rss_bytes == rss
    assert report.failed == []
    assert document["etaSeconds"] is None


@pytest.mark.parametrize(
    "text",
    [
        "",  # OOM-killed: the kubelet leaves no message
        "   ",
        "Killed",
        "Traceback (most recent call last):\n  File ...",
        "{",
        "null",
        "42",
        '"a string"',
        "[]",
        '[{"format": "ferry.dev/worker-report/v1"}]',
        "{}",
        '{"format": "ferry.dev/worker-report/v0", "shard": 1}',
        '{"format": null}',
        '{"shard": 1, "state": "complete"}',
        "\x00\x01binary",
    ],
    ids=["oom-empty", "blank", "killed", "traceback", "truncated", "null", "number", "string", "list",
         "list-of-doc", "empty-object", "wrong-format", "null-format", "no-format", "binary"],
)  # fmt: skip
def test_parse_report_returns_none_for_anything_else(text: str) -> None:
    assert parse_report(text) is None


@pytest.mark.parametrize(
    "document",
    [
        {"format": FORMAT, "shard": "one"},
        {"format": FORMAT, "objects": {"total": "many"}},
        {"format": FORMAT, "concurrency": 5},
        {"format": FORMAT, "objects": [1, 2]},
    ],
    ids=["shard-not-int", "count-not-int", "concurrency-not-object", "objects-not-object"],
)
def test_parse_report_malformed_document_is_none(document: dict[str, object]) -> None:
    assert parse_report(json.dumps(document)) is None


CGROUP_PEAK = MemoryFigures(
    peak_bytes=120 * 2**20,
    peak_source="cgroup v1 memory.max_usage_in_bytes",
    limit_bytes=160 * 2**20,
    budget_bytes=128 * 2**20,
    baseline_bytes=49 * 2**20,
    part_size_bytes=8 * 2**20,
)
VMHWM_PEAK = MemoryFigures(peak_bytes=90 * 2**20, peak_source="VmHWM (peak RSS of the process)")


@pytest.mark.parametrize(
    ("figures", "rss", "peak", "source"),
    [
        pytest.param(CGROUP_PEAK, 200 * 2**20, 120 * 2**20, "cgroup", id="cgroup-peak-wins-over-rss"),
        pytest.param(VMHWM_PEAK, 60 * 2**20, 90 * 2**20, "rss", id="no-limit-vmhwm"),
        pytest.param(None, 200 * 2**20, 200 * 2**20, "rss", id="old-worker-rss-only"),
        pytest.param(None, None, None, None, id="nothing-measured"),
    ],
)
def test_status_document_carries_the_measured_peak(
    figures: MemoryFigures | None, rss: int | None, peak: int | None, source: str | None
) -> None:
    document = status_document(0, progress(rss=rss), figures)
    if figures is not None:
        memory = document["memory"]
        assert memory["peakBytes"] == figures.peak_bytes
        assert memory["peakSource"] == figures.peak_source
        assert memory["limitBytes"] == figures.limit_bytes
        assert memory["baselineBytes"] == figures.baseline_bytes
        assert memory["partSizeBytes"] == figures.part_size_bytes
        assert memory["budgetBytes"] == 358 * 2**20  # the limiter's own figure stays
    report = parse_report(json.dumps(document))
    assert report is not None
    assert (report.rss_bytes, report.peak_source) == (peak, source)


@pytest.mark.parametrize(
    ("figures", "source"),
    [(CGROUP_PEAK, "cgroup"), (VMHWM_PEAK, "rss"), (None, None)],
    ids=["cgroup", "vmhwm", "no-figures"],
)
def test_termination_message_carries_the_peak_and_where_it_was_measured(
    figures: MemoryFigures | None, source: str | None
) -> None:
    peak = figures.peak_bytes if figures else 77 * 2**20
    text = termination_message(3, summary(failures(2), DONE), peak, figures)
    raw = json.loads(text)
    assert raw["peakRssBytes"] == peak  # what every operator version reads
    report = parse_report(text)
    assert report is not None
    assert (report.rss_bytes, report.peak_source) == (peak, source)
    if figures is not None:
        assert raw["memory"] == figures.as_json()


def test_a_full_termination_message_with_memory_figures_still_fits_and_parses() -> None:
    text = termination_message(
        1, summary(failures(10, key_bytes=400, message_bytes=200), error="e" * 3000), 5, CGROUP_PEAK
    )
    assert len(text.encode()) <= TERMINATION_LIMIT
    report = parse_report(text)
    assert report is not None and report.objects["total"] == COUNTS.discovered


def test_the_fail_fast_report_of_a_budget_too_small_parses_with_its_message() -> None:
    message = (
        "memory budget too small: 52 MiB (80% of cgroup v1 memory.limit_in_bytes) cannot hold ...; "
        "set spec.resources.memory to at least 78Mi"
    )
    report = parse_report(json.dumps({"format": FORMAT, "state": "invalid", "shard": 4, "error": message}))
    assert report is not None
    assert (report.shard, report.state, report.error) == (4, "invalid", message)


@pytest.mark.parametrize(
    ("value", "stopped", "held"),
    [
        (summary(failures(0), DONE), False, None),
        (summary(failures(0), DONE), True, "complete"),
        (summary(failures(0), interrupted=True), True, "interrupted"),
        (summary(failures(0), interrupted=True), False, "interrupted"),
        (summary(failures(2)), True, "incomplete"),
        (summary(failures(2)), False, None),
    ],
    ids=["done", "done-as-stopped", "interrupted", "interrupted-unsignalled", "unfinished-as-stopped", "unfinished"],
)  # fmt: skip
def test_a_stopped_worker_waits_to_be_read_even_when_its_shard_was_done(
    value: Summary, stopped: bool, held: str | None
) -> None:
    # A pod deleted while its last objects settle may vanish before its termination message is read: its
    # final counts and resume point must reach the operator through `/status`, or the shard's next pod
    # counts those objects as skipped.
    assert held_state(value, stopped) == held
