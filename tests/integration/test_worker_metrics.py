"""A worker's `/metrics` scraped over HTTP while a real engine copies against moto (worker/statusserver.py):
Prometheus conventions (a transfer-time histogram, requests by operation and code, counters that only go
up), label values from small fixed sets, the series the chart's dashboard queries; and the progress a
worker reports knowing its total from the lister, for a shard too."""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ferry.worker.engine import CopyEngine, Summary
from ferry.worker.limits import FixedLimiter
from ferry.worker.objects import KeyRange
from ferry.worker.progress import OK_CODE, Operation, code_label
from ferry.worker.report import FailureReport
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.statusdoc import status_document
from ferry.worker.statusserver import StatusServer
from support.dashboard import OPERATOR_SERIES, dashboard_series
from support.engine import FAST_RETRY, TEST_PART, spec
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_engine(
    endpoint: S3Endpoint,
    src: str,
    dst: str,
    *,
    source_url: str | None = None,
    key_range: KeyRange = KeyRange(),
) -> CopyEngine:
    creds = Credentials(endpoint.access_key, endpoint.secret_key)
    options = ClientOptions(max_pool_connections=12, read_timeout=10, connect_timeout=2)
    job = spec(
        {"bucket": src, "endpoint": source_url or endpoint.url},
        {"bucket": dst, "endpoint": endpoint.url},
    )
    return CopyEngine(
        spec=job,
        source_client=make_client(job.source, creds, options),
        destination_client=make_client(job.destination, creds, options),
        limiter=FixedLimiter(4),
        report=FailureReport(),
        part_size=TEST_PART,
        retry=FAST_RETRY,
        key_range=key_range,
    )


@contextmanager
def serving(engine: CopyEngine) -> Iterator[str]:
    server = StatusServer(("127.0.0.1", 0), lambda: status_document(0, engine.progress()), engine.progress)
    host, port = server.address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.close()


def scrape(base: str) -> Samples:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def types_of(base: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def requests_by(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["operation"], dict(labels)["code"]): value
        for (name, labels), value in samples.items()
        if name == "ferry_requests_total"
    }


def run_in_thread(engine: CopyEngine) -> tuple[threading.Thread, list[Summary]]:
    result: list[Summary] = []
    thread = threading.Thread(target=lambda: result.append(engine.run()), daemon=True)
    thread.start()
    return thread, result


def test_metrics_of_a_streamed_run_follow_prometheus_conventions(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(60):
        s3.client.put_object(Bucket=src, Key=f"k{i:03d}", Body=os.urandom(2000))
    s3.client.put_object(Bucket=src, Key="large", Body=os.urandom(2 * TEST_PART + 1))  # multipart
    # Latency makes every transfer take >= 40 ms; some GETs are throttled (503 SlowDown), then retried.
    plan = FaultPlan(latency_ms=40, throttle_rate=0.15, methods=frozenset({"GET"}))
    with FaultProxy(s3.endpoint.url, plan, seed=3) as proxy:
        engine = make_engine(s3.endpoint, src, dst, source_url=proxy.url)
        with serving(engine) as base:
            thread, result = run_in_thread(engine)
            time.sleep(0.6)
            during = scrape(base)
            thread.join(timeout=120)
            after = scrape(base)
            kinds = types_of(base)
    summary = result[0]
    assert summary.complete and summary.counts.copied == 61

    assert kinds["ferry_transfer_seconds"] == "histogram"
    assert kinds["ferry_requests"] == "counter"
    assert "ferry_transfer_latency_seconds" not in kinds

    # Counters only go up between scrapes, label set by label set.
    for key, value in during.items():
        if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
            assert after.get(key, 0) >= value, key

    by = requests_by(after)
    operations = {op for op, _ in by}
    assert {
        "LIST",
        "GET",
        "PUT",
        "HEAD",
        "CREATE_MULTIPART",
        "UPLOAD_PART",
        "COMPLETE_MULTIPART",
    } <= operations
    assert operations <= {op.value for op in Operation}
    assert by[("GET", "SlowDown")] >= 1 and by[("GET", OK_CODE)] >= 61
    assert all(code_label(code) == code for _, code in by)  # every code is from the bounded set
    assert sum(by.values()) == summary.requests

    # Histogram: one observation per copied object, cumulative buckets, nothing under the added latency.
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == "ferry_transfer_seconds_bucket"
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert buckets[0][0] == 0.005 and buckets[-2][0] == 60.0 and buckets[-1] == (float("inf"), 61)
    assert after[("ferry_transfer_seconds_count", ())] == 61
    assert dict(buckets)[0.025] == 0
    assert after[("ferry_transfer_seconds_sum", ())] >= 61 * 0.04

    # No key, bucket or free text in any label value.
    values = {value for _, labels in after for _, value in labels}
    assert not any(src in v or dst in v or re.search(r"k\d\d\d|large", v) for v in values), values


def test_a_server_side_run_counts_copies(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(5):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"data")
    s3.client.put_object(Bucket=src, Key="large", Body=os.urandom(TEST_PART + 1))
    engine = make_engine(s3.endpoint, src, dst)  # both sides on one service: server-side copies
    with serving(engine) as base:
        summary = engine.run()
        by = requests_by(scrape(base))
    assert summary.counts.copied == 6
    assert by[("COPY", OK_CODE)] == 5
    assert by[("UPLOAD_PART_COPY", OK_CODE)] == 2
    assert ("GET", OK_CODE) not in by


def test_the_dashboards_worker_series_are_exported(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    s3.client.put_object(Bucket=src, Key="k", Body=b"x")
    engine = make_engine(s3.endpoint, src, dst)
    with serving(engine) as base:
        engine.run()
        exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name, _ in scrape(base)}
    used = dashboard_series() - OPERATOR_SERIES
    assert used and used <= exported, used - exported


def test_a_shard_knows_its_total_from_the_lister_before_the_copier_takes_it_all_in(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(300):
        s3.client.put_object(Bucket=src, Key=f"k{i:03d}", Body=b"x" * 100)
    shard = KeyRange(start_after="k049", end="k249")  # 200 objects
    with FaultProxy(s3.endpoint.url, FaultPlan(latency_ms=30, methods=frozenset({"GET"}))) as proxy:
        engine = make_engine(s3.endpoint, src, dst, source_url=proxy.url, key_range=shard)
        thread, result = run_in_thread(engine)
        early = None
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            progress = engine.progress()
            if progress.counts.total is not None and early is None:
                early = progress
            time.sleep(0.05)
        thread.join(timeout=60)
    assert early is not None
    # Known while the copier was still taking objects in, so a display shows percent and ETA early.
    assert not early.counts.listing_done and early.counts.done < 200
    assert (early.counts.total, early.counts.bytes_total) == (200, 200 * 100)
    c = result[0].counts
    assert (c.listed, c.discovered, c.copied, c.listing_done, c.listed_all) == (200, 200, 200, True, True)
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=dst).get("Contents", [])}
    assert keys == {f"k{i:03d}" for i in range(50, 250)}
