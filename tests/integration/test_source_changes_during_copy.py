"""Objects that change at the source while Ferry copies them, against a real S3 server (versitygw when
built, else moto), through a fault proxy that slows the copy down so the change lands mid-copy.

An object overwritten during its copy ends copied at its new content; one rewritten again and again ends
failed as `SourceChangedDuringCopy` while the rest are copied; one deleted during its copy is reported by
key as `SourceObjectMissing`. Every case leaves no multipart upload behind at the destination."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ferry.worker.engine import MAX_SOURCE_CHANGES, SOURCE_CHANGED, SOURCE_MISSING
from ferry.worker.run import ending
from support.engine import TEST_PART, Run, digest_map, run_engine, spec
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(120)

#: Streamed copies go through the proxy at this rate: a 5 MiB part takes about half a second.
SLOW_LINK = 10 * 2**20
#: Server-side copies move no bytes through the proxy: each request waits this long instead.
SLOW_REQUEST_MS = 250.0
#: Bounds of every wait for the copy to reach a point.
WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def server(versitygw_or_moto: S3Endpoint) -> S3Endpoint:
    return versitygw_or_moto


@pytest.fixture
def client(server: S3Endpoint) -> Any:
    return server.client()


def bucket(client: Any, name: str) -> str:
    created = f"{name}-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=created)
    return created


def fill(client: Any, bucket_name: str, count: int) -> dict[str, str]:
    digests = {}
    for index in range(count):
        body = os.urandom(1000 + index)
        client.put_object(Bucket=bucket_name, Key=f"small/{index:03d}", Body=body)
        digests[f"small/{index:03d}"] = hashlib.md5(body).hexdigest()
    return digests


def put(client: Any, bucket_name: str, key: str, body: bytes) -> str:
    client.put_object(Bucket=bucket_name, Key=key, Body=body)
    return hashlib.md5(body).hexdigest()


def proxy_plan(server_side: bool) -> FaultPlan:
    if server_side:
        return FaultPlan(latency_ms=SLOW_REQUEST_MS)
    return FaultPlan(bandwidth_bytes_per_s=SLOW_LINK)


def start(job: Any, server: S3Endpoint, transport: str) -> tuple[threading.Thread, list[Run]]:
    runs: list[Run] = []
    thread = threading.Thread(
        target=lambda: runs.append(run_engine(job, server, transport=transport, concurrency=4)), daemon=True
    )
    thread.start()
    return thread, runs


def finish(thread: threading.Thread, runs: list[Run]) -> Run:
    thread.join(timeout=90)
    assert not thread.is_alive(), "the copy did not end in time"
    return runs[0]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the copy never reached the point the test waits for"
        time.sleep(0.02)


def uploading(client: Any, bucket_name: str) -> Callable[[], bool]:
    return lambda: bool(client.list_multipart_uploads(Bucket=bucket_name).get("Uploads"))


def uploads_left(client: Any, bucket_name: str) -> list[Any]:
    return list(client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []))


def job_for(proxy: FaultProxy, server: S3Endpoint, src: str, dst: str, server_side: bool) -> Any:
    # The same endpoint on both sides makes Ferry copy server-side; the proxy on the source side only
    # streams the bytes through the slow link.
    destination_url = proxy.url if server_side else server.url
    return spec(
        {"bucket": src, "endpoint": proxy.url, "region": "us-east-1"},
        {"bucket": dst, "endpoint": destination_url, "region": "us-east-1"},
    )


@pytest.fixture
def rewriter(client: Any) -> Iterator[Callable[[str, str, int], None]]:
    """Rewrites one source object with new content until the test ends (at most 2000 times, 60 s)."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def begin(bucket_name: str, key: str, size: int) -> None:
        payload = os.urandom(size)

        def loop() -> None:
            deadline = time.monotonic() + 60
            for version in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                body = version.to_bytes(8, "big") + payload[8:]
                client.put_object(Bucket=bucket_name, Key=key, Body=body)
                time.sleep(0.03)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)

    yield begin
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


@pytest.mark.parametrize("transport", ["lean", "botocore"])
@pytest.mark.parametrize("server_side", [False, True], ids=["streamed", "server-side"])
def test_an_object_overwritten_during_its_multipart_copy_ends_copied_at_its_new_content(
    server: S3Endpoint, client: Any, transport: str, server_side: bool
) -> None:
    src, dst = bucket(client, "src"), bucket(client, "dst")
    expected = fill(client, src, 6)
    put(client, src, "big", os.urandom(2 * TEST_PART + 123))
    with FaultProxy(server.url, proxy_plan(server_side), seed=1) as proxy:
        thread, runs = start(job_for(proxy, server, src, dst, server_side), server, transport)
        wait_for(uploading(client, dst))
        # Overwritten while its parts are copied, with another size (the copy reserves memory anew).
        expected["big"] = put(client, src, "big", os.urandom(2 * TEST_PART + 4567))
        run = finish(thread, runs)

    assert run.summary.failures == []
    assert ending(run.summary).exit_code == 0
    assert run.summary.counts.copied == 7
    assert run.summary.counts.changed_during_copy == 1
    assert digest_map(client, dst) == expected == digest_map(client, src)
    assert uploads_left(client, dst) == []


@pytest.mark.parametrize("transport", ["lean", "botocore"])
@pytest.mark.parametrize("server_side", [False, True], ids=["streamed", "server-side"])
def test_an_object_rewritten_again_and_again_fails_as_changed_during_copy_and_the_rest_are_copied(
    server: S3Endpoint,
    client: Any,
    rewriter: Callable[[str, str, int], None],
    transport: str,
    server_side: bool,
) -> None:
    src, dst = bucket(client, "src"), bucket(client, "dst")
    expected = fill(client, src, 6)
    # Streamed, the rewritten object is multipart (its ranged GETs are pinned to one version); server-side,
    # a single CopyObject pinned by CopySourceIfMatch.
    size = TEST_PART + 1000 if not server_side else 2000
    put(client, src, "hot", os.urandom(size))
    rewriter(src, "hot", size)
    with FaultProxy(server.url, proxy_plan(server_side), seed=2) as proxy:
        thread, runs = start(job_for(proxy, server, src, dst, server_side), server, transport)
        run = finish(thread, runs)

    [failure] = run.summary.failures
    assert (failure.key, failure.code) == ("hot", SOURCE_CHANGED)
    assert f"each of {MAX_SOURCE_CHANGES + 1} copies" in failure.message
    assert ending(run.summary).exit_code == 3
    assert (run.summary.counts.copied, run.summary.counts.failed) == (6, 1)
    assert digest_map(client, dst) == expected
    assert uploads_left(client, dst) == []


@pytest.mark.parametrize("transport", ["lean", "botocore"])
@pytest.mark.parametrize("server_side", [False, True], ids=["streamed", "server-side"])
def test_an_object_deleted_during_its_copy_is_reported_missing_by_key(
    server: S3Endpoint, client: Any, transport: str, server_side: bool
) -> None:
    src, dst = bucket(client, "src"), bucket(client, "dst")
    expected = fill(client, src, 6)
    put(client, src, "gone", os.urandom(2 * TEST_PART + 123))
    with FaultProxy(server.url, proxy_plan(server_side), seed=3) as proxy:
        thread, runs = start(job_for(proxy, server, src, dst, server_side), server, transport)
        wait_for(uploading(client, dst))
        client.delete_object(Bucket=src, Key="gone")
        run = finish(thread, runs)

    [failure] = run.summary.failures
    assert (failure.key, failure.code) == ("gone", SOURCE_MISSING)
    assert ending(run.summary).exit_code == 3
    assert digest_map(client, dst) == expected
    assert uploads_left(client, dst) == []
