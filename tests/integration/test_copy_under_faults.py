"""No object is lost or corrupted when either side misbehaves: throttling, server errors, connections
reset mid-body, truncated bodies and stalls longer than the read timeout. Objects that keep failing are
reported with their key and error, and the accounting still closes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.worker.systematic import FAILURES_AFTER_SUCCESS, FIRST_FAILURES
from support.engine import FAST_RETRY, TEST_PART, digest_map, run_engine, spec
from testbed.faultproxy import FaultPlan, FaultProxy


def fill(client: Any, bucket: str, count: int, size: int = 4096) -> dict[str, str]:
    digests = {}
    for index in range(count):
        body = os.urandom(size + index)
        key = f"obj/{index:04d}"
        client.put_object(Bucket=bucket, Key=key, Body=body)
        digests[key] = hashlib.md5(body).hexdigest()
    return digests


#: In the worker's threads, and in two copy processes (a worker given two CPUs).
TRANSPORTS_AND_PROCESSES = [("lean", 0), ("botocore", 0), ("lean", 2)]


@pytest.mark.parametrize(("transport", "processes"), TRANSPORTS_AND_PROCESSES)
def test_faults_on_both_sides_lose_and_corrupt_nothing(s3: Any, transport: str, processes: int) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 120)
    big = os.urandom(2 * TEST_PART + 777)
    client.put_object(Bucket=src, Key="obj/zz-big", Body=big)
    digests["obj/zz-big"] = hashlib.md5(big).hexdigest()
    # Faults only on object traffic: listing stays clean so the test is about copies.
    source_plan = FaultPlan(
        throttle_rate=0.1,
        error500_rate=0.05,
        reset_rate=0.1,
        truncate_rate=0.1,
        methods=frozenset({"GET"}),
        path_regex=r"/obj/",
    )
    destination_plan = FaultPlan(
        throttle_rate=0.1, error500_rate=0.05, reset_rate=0.05, methods=frozenset({"PUT", "POST"})
    )
    with (
        FaultProxy(endpoint.url, source_plan, seed=1) as source,
        FaultProxy(endpoint.url, destination_plan, seed=2) as destination,
    ):
        job = spec({"bucket": src, "endpoint": source.url}, {"bucket": dst, "endpoint": destination.url})
        # 35% of object GETs fail here: with 8 attempts, one of 121 objects exhausts them in about 3% of
        # runs (0.35^8 x 121); 16 attempts make that 1 in 10^5, so a failure means a lost retry.
        retry = dataclasses.replace(FAST_RETRY, max_attempts=16)
        run = run_engine(job, endpoint, concurrency=8, transport=transport, retry=retry, processes=processes)
        injected = source.stats().faults + destination.stats().faults

    summary = run.summary
    assert injected > 20, "the plan must really have injected faults"
    assert summary.counts.failed == 0, summary.failures
    assert summary.counts.copied == len(digests)
    assert summary.throttles > 0 and summary.retries >= summary.throttles
    assert digest_map(client, dst) == digests
    if processes:
        assert all(n > 0 for n in run.answered), run.answered  # every copy process copied


@pytest.mark.parametrize(("transport", "processes"), TRANSPORTS_AND_PROCESSES)
def test_server_side_copies_under_faults_lose_and_corrupt_nothing(
    s3: Any, transport: str, processes: int
) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 80)
    # CopyObject is a PUT: throttled, failed and cut off on its way back, on the one endpoint both use.
    plan = FaultPlan(
        throttle_rate=0.1, error500_rate=0.05, reset_rate=0.1, methods=frozenset({"PUT"}), path_regex=r"/obj/"
    )
    with FaultProxy(endpoint.url, plan, seed=3) as proxy:
        job = spec({"bucket": src, "endpoint": proxy.url}, {"bucket": dst, "endpoint": proxy.url})
        retry = dataclasses.replace(FAST_RETRY, max_attempts=16)
        run = run_engine(job, endpoint, concurrency=8, transport=transport, retry=retry, processes=processes)
        injected = proxy.stats().faults

    assert run.engine.server_side
    assert injected > 10, "the plan must really have injected faults"
    assert run.summary.counts.failed == 0, run.summary.failures
    assert run.summary.counts.copied == len(digests)
    assert run.summary.throttles > 0
    assert digest_map(client, dst) == digests
    if processes:
        assert all(n > 0 for n in run.answered), run.answered


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_stalls_longer_than_the_read_timeout_are_retried(s3: Any, transport: str) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 6, size=256 * 1024)
    plan = FaultPlan(
        stall_rate=1.0, stall_seconds=3.0, methods=frozenset({"GET"}), path_regex=r"/obj/", only_first_n=2
    )
    with FaultProxy(endpoint.url, plan) as source:
        job = spec({"bucket": src, "endpoint": source.url}, {"bucket": dst, "endpoint": endpoint.url})
        run = run_engine(job, endpoint, read_timeout=1.0, transport=transport)
        assert source.stats().stalls == 2
    assert run.summary.counts.failed == 0
    assert run.summary.retries >= 2
    assert digest_map(client, dst) == digests


def test_objects_that_keep_failing_are_reported_with_key_and_code(s3: Any, tmp_path: Path) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 30)
    doomed = {"obj/0007", "obj/0021"}
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/obj/00(07|21)")
    report = tmp_path / "failed.jsonl"
    with FaultProxy(endpoint.url, plan) as source:
        job = spec({"bucket": src, "endpoint": source.url}, {"bucket": dst, "endpoint": endpoint.url})
        run = run_engine(job, endpoint, report=report)

    c = run.summary.counts
    assert (c.discovered, c.copied, c.failed, c.pending) == (30, 28, 2, 0)
    assert run.failed_keys() == doomed
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert {line["key"] for line in lines} == doomed
    assert {line["code"] for line in lines} == {"InternalError"}
    assert all(line["attempts"] == 8 for line in lines)
    copied = digest_map(client, dst)
    assert copied == {k: v for k, v in digests.items() if k not in doomed}


def test_a_missing_bucket_ends_the_job_at_once_with_the_reason(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(client, src, 3)
    client.delete_bucket(Bucket=dst)
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
    )
    summary = run_engine(job, endpoint).summary
    assert not summary.complete
    assert summary.error is not None and "NoSuchBucket" in summary.error
    assert "after 1 attempts" in summary.error  # permanent: not retried
    assert summary.counts.copied == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "InvalidAccessKeyId"), (404, "NoSuchBucket")],
    ids=["credentials-revoked", "bucket-deleted"],
)
def test_destination_lost_mid_run_stops_after_a_bounded_run_of_failures_each_listed_by_key(
    s3: Any, status: int, code: str
) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 300)
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=50)) as destination:
        job = spec({"bucket": src, "endpoint": endpoint.url}, {"bucket": dst, "endpoint": destination.url})
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(run=run_engine(job, endpoint, concurrency=4)))
        worker.start()
        deadline = time.monotonic() + 60
        while client.list_objects_v2(Bucket=dst).get("KeyCount", 0) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        # From now on the destination refuses every write, as after a revoked key or a deleted bucket.
        destination.set_plan(
            FaultPlan(
                refuse_rate=1.0, refuse_status=status, refuse_code=code, methods=frozenset({"PUT", "POST"})
            )
        )
        worker.join(120)
    summary = result["run"].summary
    arrived = digest_map(client, dst)
    c = summary.counts
    # Copies had succeeded, so the shard stops only after a long run of refusals (systematic.py), not
    # after failing every object left. Refusals come back at once while the copies in flight at the
    # switch still wait on the link, so their late successes restart the run a few times.
    assert summary.systematic is not None and summary.systematic.after_success
    assert (summary.systematic.side.value, summary.systematic.code) == ("destination", code)
    assert FAILURES_AFTER_SUCCESS <= c.failed < 2 * FAILURES_AFTER_SUCCESS
    assert c.copied == len(arrived) and c.copied + c.failed + c.pending == c.discovered < 300
    assert arrived == {k: v for k, v in digests.items() if k in arrived}  # what arrived is intact
    with open(summary.report_path) as report:
        failed = [json.loads(line) for line in report]
    failed_keys = {f["key"] for f in failed}
    assert len(failed_keys) == c.failed and not failed_keys & set(arrived)  # each failed object, by key
    assert {f["code"] for f in failed} == {code}
    assert {f["attempts"] for f in failed} == {1}  # permanent: not retried


@pytest.mark.parametrize(
    ("regex", "status", "code"),
    [
        (r"continuation-token", 404, "NoSuchBucket"),
        (r"continuation-token|/obj/", 404, "NoSuchBucket"),
        (r"continuation-token|/obj/", 403, "InvalidAccessKeyId"),
    ],
    ids=["listing-cut-after-first-page", "bucket-deleted-mid-listing", "credentials-revoked-mid-listing"],
)
def test_source_lost_mid_listing_ends_incomplete_with_exact_accounting(
    s3: Any, regex: str, status: int, code: str
) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(client, src, 1100, size=16)  # two listing pages of 1,000
    # The first listing page is served; from the second page on the source is gone (and, in the last
    # two cases, so are its objects), as when the bucket is deleted or the key revoked while listing.
    plan = FaultPlan(refuse_rate=1.0, refuse_status=status, refuse_code=code, path_regex=regex)
    with FaultProxy(endpoint.url, plan) as source:
        job = spec({"bucket": src, "endpoint": source.url}, {"bucket": dst, "endpoint": endpoint.url})
        summary = run_engine(job, endpoint, concurrency=8).summary
    c = summary.counts
    assert not summary.complete
    assert c.copied + c.skipped + c.failed + c.pending == c.discovered
    arrived = digest_map(client, dst)
    assert arrived == {k: digests[k] for k in arrived}  # whatever arrived is intact
    if regex == "continuation-token":
        assert summary.error is not None and code in summary.error, summary.error
        assert c.discovered == 1000 and c.pending == 0
        assert c.copied == 1000 and c.failed == 0
    else:
        # Every object refused from the first: the copy stops after the first few (systematic.py)
        # rather than failing all it listed.
        assert summary.systematic is not None and summary.systematic.side.value == "source"
        assert summary.systematic.code == code
        with open(summary.report_path) as report:
            failed = [json.loads(line) for line in report]
        assert c.copied == len(arrived) == 0 and FIRST_FAILURES <= c.failed <= FIRST_FAILURES + 8
        assert {f["key"] for f in failed} <= set(sorted(digests)[:1000])  # listed ones, by key
        assert len(failed) == c.failed and {f["code"] for f in failed} == {code}
