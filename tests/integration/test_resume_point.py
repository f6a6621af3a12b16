"""A shard's resume point against a real S3 server process (moto, over HTTP, behind a slow proxy): a run
stopped mid-way settles what it started and reports the key up to which every object is settled; a new
run of the same key range lists after that point and carries its counts forward, so for an empty
destination every object counts once, as copied, none as skipped, and every object arrives intact. And
the exchange by which a stopped worker knows its operator has recorded its last `/status`."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

from ferry.model.checkpoint import Checkpoint
from ferry.model.copyjob import CopyJobSpec
from ferry.operator.kube import fetch_worker_status, push_recorded, push_worker_limits
from ferry.worker.engine import CopyEngine, Summary
from ferry.worker.finaldoc import FinalDocument
from ferry.worker.leans3 import make_lean
from ferry.worker.limits import FixedLimiter
from ferry.worker.objects import KeyRange
from ferry.worker.report import FailureReport
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.statusdoc import parse_report
from ferry.worker.statusserver import OperatorEndpoints, StatusServer
from support.engine import FAST_RETRY, TEST_PART, digest_map, spec
from testbed.faultproxy import FaultPlan, FaultProxy

OBJECTS = 240


def engine_for(
    job: CopyJobSpec, endpoint: Any, url: str, key_range: KeyRange, resume: Checkpoint | None
) -> CopyEngine:
    creds = Credentials(endpoint.access_key, endpoint.secret_key)
    options = ClientOptions(max_pool_connections=12, read_timeout=10, connect_timeout=2)
    source = job.source.model_copy(update={"endpoint": url})
    destination = job.destination.model_copy(update={"endpoint": url})
    return CopyEngine(
        spec=job,
        source_client=make_client(source, creds, options),
        destination_client=make_client(destination, creds, options),
        source_lean=make_lean(source, creds, options),
        destination_lean=make_lean(destination, creds, options),
        limiter=FixedLimiter(8),
        report=FailureReport(),
        key_range=key_range,
        part_size=TEST_PART,
        retry=FAST_RETRY,
        resume=resume,
    )


def run_until(engine: CopyEngine, copied: int) -> Summary:
    """Run, and stop (as SIGTERM does in a pod) once ``copied`` objects are copied; bounded in time."""
    stop = threading.Event()
    result: list[Summary] = []
    thread = threading.Thread(target=lambda: result.append(engine.run(stop)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while engine.progress().counts.copied < copied and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=60)
    assert result, "the engine did not stop"
    return result[0]


def test_a_run_resumed_after_an_interruption_counts_every_object_once_as_copied(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(OBJECTS):
        client.put_object(Bucket=src, Key=f"data/{i:05d}", Body=os.urandom(500 + i))
    # The shard: keys after data/00019 up to data/00219 (200 objects).
    shard = KeyRange("data/00019", "data/00219")
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "reader"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "writer"},
    )
    # Requests of varied latency finish transfers out of order.
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=20, jitter_ms=15), seed=3) as proxy:
        first = run_until(engine_for(job, endpoint, proxy.url, shard, None), copied=60)
        point = first.checkpoint
        assert first.interrupted and point is not None
        # Stopped with its transfers finished: everything it took in is settled, so the point covers it.
        assert point.done == first.counts.done == first.counts.copied
        assert point.after == f"data/{19 + point.done:05d}"
        gets_before = proxy.stats().by_method.get("GET", 0)
        second = engine_for(job, endpoint, proxy.url, shard, point).run()
        lists = proxy.stats().by_method.get("GET", 0) - gets_before
    c = second.counts
    assert (c.discovered, c.copied, c.skipped, c.failed, c.pending) == (200, 200, 0, 0, 0)
    assert second.complete and second.checkpoint is not None and second.checkpoint.after == "data/00219"
    assert c.bytes_copied == sum(500 + i for i in range(20, 220))
    copied = digest_map(client, dst)
    assert sorted(copied) == [f"data/{i:05d}" for i in range(20, 220)]
    assert copied == {k: v for k, v in digest_map(client, src).items() if k in copied}
    # The second run read only what is after the point: one GET per object it copied, plus listings.
    assert lists < (200 - point.done) + 10, lists


def test_a_resume_point_outside_the_key_range_is_not_used(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(30):
        client.put_object(Bucket=src, Key=f"data/{i:05d}", Body=b"x" * 100)
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "reader"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "writer"},
    )
    # A point beyond the range's end (a forged ledger, another shard's point) would skip the whole range.
    forged = Checkpoint("data/00099", copied=1_000_000)
    engine = engine_for(job, endpoint, endpoint.url, KeyRange(None, "data/00019"), forged)
    summary = engine.run()
    assert (summary.counts.copied, summary.counts.skipped) == (20, 0)
    assert len(digest_map(client, dst)) == 20
    assert dataclasses.replace(engine.key_range) == KeyRange(None, "data/00019")


def test_a_stopped_worker_hears_from_its_operator_only_that_its_final_document_is_recorded() -> None:
    """`PUT /recorded` ends a stopped worker's wait only with the CopyJob's token and the name of its own
    final document: a stranger, an older pod's name or a malformed body change nothing."""
    token = "t" * 43
    final = FinalDocument()
    taken: list[object] = []
    server = StatusServer(
        ("127.0.0.1", 0),
        lambda: {
            "format": "ferry.dev/worker-report/v1",
            "shard": 3,
            "state": "interrupted",
            "final": final.name,
        },
        lambda: None,  # type: ignore[arg-type,return-value]  # /metrics is not asked here
        OperatorEndpoints(token, taken.append, final.acknowledge),
    )
    try:
        port = int(server.address[1])
        report = parse_report(fetch_worker_status("127.0.0.1", port, pod="steady-workers-3-abcde") or "")
        assert report is not None and report.final == final.name
        assert not push_recorded("127.0.0.1", port, "x" * 43, final.name)  # 401: not the CopyJob's token
        assert not push_recorded("127.0.0.1", port, token, "not a document name")  # 400
        assert not push_recorded("127.0.0.1", port, token, final.name + "0")  # 400: too long
        assert push_recorded("127.0.0.1", port, token, "0" * 32)  # taken, but another document's name
        assert not final.wait(0.2)
        assert push_recorded("127.0.0.1", port, token, final.name)
        assert final.wait(2.0)
    finally:
        server.close()
    assert taken == []  # no rate share came through that endpoint


def test_a_worker_without_a_final_document_has_no_recorded_endpoint() -> None:
    token = "t" * 43
    server = StatusServer(
        ("127.0.0.1", 0),
        lambda: {"format": "ferry.dev/worker-report/v1", "shard": 0},
        lambda: None,  # type: ignore[arg-type,return-value]
        OperatorEndpoints(token, lambda _share: None),
    )
    try:
        assert not push_recorded("127.0.0.1", int(server.address[1]), token, "0" * 32)  # 404
    finally:
        server.close()


def test_a_delete_pod_takes_its_operators_word_but_no_rate_share() -> None:
    """A sync's delete pod has a final document to wait on and no rate limits to take: `PUT /limits` is
    not found there, `PUT /recorded` ends its wait."""
    token = "t" * 43
    final = FinalDocument()
    server = StatusServer(
        ("127.0.0.1", 0),
        lambda: {"format": "ferry.dev/worker-report/v1", "shard": 0, "final": final.name},
        None,
        OperatorEndpoints(token, None, final.acknowledge),
    )
    try:
        port = int(server.address[1])
        assert not push_worker_limits("127.0.0.1", port, token, '{"requestsPerSecond": 1}')
        assert push_recorded("127.0.0.1", port, token, final.name)
        assert final.wait(2.0)
    finally:
        server.close()
