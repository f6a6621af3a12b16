"""The worker's metrics vocabulary and histogram (worker/progress.py), their Prometheus rendering
(worker/statusserver.py), and the total a run knows from its lister before the copier has taken
everything in (Counts.total, eta_seconds)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ferry.worker.engine import Progress
from ferry.worker.limits import LimiterState
from ferry.worker.objects import Outcome
from ferry.worker.progress import (
    LATENCY_BUCKETS,
    OK_CODE,
    OTHER_CODE,
    Counts,
    LatencyHistogram,
    Operation,
    code_label,
    eta_seconds,
)
from ferry.worker.statusserver import EngineCollector


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (OK_CODE, "2xx"),
        ("SlowDown", "SlowDown"),
        ("NoSuchKey", "NoSuchKey"),
        ("InvalidAccessKeyId", "InvalidAccessKeyId"),
        ("ConnectionError", "ConnectionError"),
        ("404", "4xx"),  # botocore's code for a body-less error answer (HEAD)
        ("503", "5xx"),
        ("999", OTHER_CODE),
        ("XAdminUserNotFound", OTHER_CODE),  # a server's own code: not in the fixed set
        ("a key/with spaces and\nnewlines", OTHER_CODE),  # never free text in a label
        ("", OTHER_CODE),
    ],
)
def test_code_label_is_bounded(code: str, label: str) -> None:
    assert code_label(code) == label


def test_operations_are_a_small_fixed_set_of_upper_case_names() -> None:
    assert len(Operation) <= 12
    assert all(op.value.isupper() for op in Operation)
    assert {"GET", "PUT", "COPY", "HEAD", "LIST"} <= {op.value for op in Operation}


def test_latency_buckets_span_5ms_to_60s() -> None:
    assert LATENCY_BUCKETS[0] == 0.005 and LATENCY_BUCKETS[-1] == 60.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


@pytest.mark.parametrize(
    ("observed", "cumulative_at"),
    [
        # seconds observed -> {bucket bound: transfers at or below it}
        ([], {0.005: 0, 60.0: 0, math.inf: 0}),
        ([0.005], {0.005: 1, 0.01: 1, math.inf: 1}),  # a value on a bound belongs to that bound
        ([0.0051], {0.005: 0, 0.01: 1}),
        ([0.02, 0.3, 0.3, 4.0], {0.01: 0, 0.025: 1, 0.25: 1, 0.5: 3, 5.0: 4, math.inf: 4}),
        ([61.0, 600.0], {60.0: 0, math.inf: 2}),
    ],
)
def test_histogram_counts_like_prometheus(observed: list[float], cumulative_at: dict[float, int]) -> None:
    histogram = LatencyHistogram()
    for seconds in observed:
        histogram = histogram.observe(seconds)
    table = dict(histogram.cumulative())
    for bound, count in cumulative_at.items():
        assert table[bound] == count, bound
    assert histogram.count == len(observed)
    assert histogram.total_seconds == pytest.approx(sum(observed))
    counts = [count for _, count in histogram.cumulative()]
    assert counts == sorted(counts)  # cumulative never decreases


def test_histogram_is_a_value() -> None:
    empty = LatencyHistogram()
    empty.observe(1.0)
    assert empty.count == 0


LISTING = Counts(discovered=100, copied=50, bytes_discovered=100_000, bytes_copied=50_000, listed=900)


@pytest.mark.parametrize(
    ("counts", "total", "bytes_total", "eta"),
    [
        pytest.param(LISTING, None, None, None, id="still listing: unknown"),
        pytest.param(
            replace(LISTING, listed_all=True, bytes_listed=900_000),
            900,
            900_000,
            85.0,  # 850 objects left at 10/s, 850 kB left at 20 kB/s: the slower wins
            id="listed to the end: total known before the copier took everything in",
        ),
        pytest.param(
            replace(LISTING, listing_done=True, copied=100, bytes_copied=100_000),
            100,
            100_000,
            0.0,
            id="copier took everything in",
        ),
    ],
)
def test_total_and_eta_follow_the_lister(
    counts: Counts, total: int | None, bytes_total: int | None, eta: float | None
) -> None:
    assert (counts.total, counts.bytes_total) == (total, bytes_total)
    assert eta_seconds(counts, 10.0, 20_000.0) == eta


def test_eta_is_blank_when_nothing_moves() -> None:
    counts = replace(LISTING, listed_all=True, bytes_listed=900_000)
    assert eta_seconds(counts, 0.0, 0.0) is None


def test_list_page_counts_ahead_and_accounting_still_closes() -> None:
    counts = Counts().list_page(3, 300).list_page(2, 50)
    assert (counts.listed, counts.bytes_listed) == (5, 350)
    counts = counts.discover(100).finish(Outcome.COPIED, 100)
    assert counts.discovered == counts.copied + counts.skipped + counts.failed + counts.pending


def scrape(progress: Progress) -> dict[str, Metric]:
    registry = CollectorRegistry()
    registry.register(EngineCollector(lambda: progress))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_collector_renders_requests_by_operation_and_code_and_a_latency_histogram() -> None:
    histogram = LatencyHistogram().observe(0.02).observe(0.3).observe(120.0)
    progress = Progress(
        counts=Counts(copied=3, discovered=3, listing_done=True),
        elapsed_seconds=5.0,
        objects_per_second=1.0,
        bytes_per_second=1.0,
        eta_seconds=0.0,
        limiter=LimiterState(4, 0, "fixed", 0),
        throttles=1,
        retries=1,
        requests=8,
        requests_by=(("GET", "2xx", 3), ("GET", "SlowDown", 1), ("LIST", "2xx", 1), ("PUT", "2xx", 3)),
        latency=histogram,
    )
    families = scrape(progress)
    requests = families["ferry_requests"]
    assert requests.type == "counter"
    by_label = {
        (s.labels["operation"], s.labels["code"]): s.value
        for s in requests.samples
        if s.name == "ferry_requests_total"
    }
    assert by_label == {("GET", "2xx"): 3, ("GET", "SlowDown"): 1, ("LIST", "2xx"): 1, ("PUT", "2xx"): 3}
    latency = families["ferry_transfer_seconds"]
    assert latency.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in latency.samples}
    assert samples[("ferry_transfer_seconds_bucket", "0.025")] == 1
    assert samples[("ferry_transfer_seconds_bucket", "0.5")] == 2
    assert samples[("ferry_transfer_seconds_bucket", "60.0")] == 2
    assert samples[("ferry_transfer_seconds_bucket", "+Inf")] == 3
    assert samples[("ferry_transfer_seconds_count", None)] == 3
    assert samples[("ferry_transfer_seconds_sum", None)] == pytest.approx(120.32)
    assert "ferry_transfer_latency_seconds" not in families  # no gauge of quantiles any more
    assert not any("quantile" in s.labels for f in families.values() for s in f.samples)
