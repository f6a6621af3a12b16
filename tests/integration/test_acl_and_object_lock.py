"""`destination.acl` and `preserve.objectLock` against real S3 server processes, on both transports and
every write path (streamed single PUT, streamed multipart, CopyObject, UploadPartCopy).

Servers: Object Lock on versitygw (`versitygw_or_moto`: versitygw when the testbed binaries are built);
it keeps retention and legal holds per object and refuses retain-until dates in the past, as S3 does.
The canned ACL on moto with its request recorder on: neither server can show the ACLs Ferry allows
(moto stores private, bucket-owner-read and bucket-owner-full-control alike; versitygw has no object
ACLs), so the test reads the headers moto received on every write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.errors import PreflightError
from ferry.worker.lockcheck import REASON, check_destination_lock
from support.engine import TEST_PART, run_engine, spec
from support.recording import RecordingMoto, recording_moto
from testbed.s3server import S3Endpoint

FERRY = [str(Path(sys.executable).with_name("ferry"))]
TRANSPORTS = ["lean", "botocore"]
#: Streamed (two credentials: different services as far as Ferry knows) or copied by the service.
PATHS = {"streamed": ("reader", "writer"), "server-side": ("same", "same")}

_BUCKETS = iter(range(1_000_000))


def _bucket(client: Any, prefix: str, *, lock: bool) -> str:
    name = f"{prefix}-{os.getpid()}-{next(_BUCKETS)}-{time.monotonic_ns() % 10**8}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    return name


def _job(endpoint: S3Endpoint, src: str, dst: str, path: str, **extra: Any) -> Any:
    reader, writer = PATHS[path]
    destination = {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": writer}
    destination.update(extra.pop("destination", {}))
    return spec({"bucket": src, "endpoint": endpoint.url, "credentialsSecret": reader}, destination, **extra)


def _lock_of(client: Any, bucket: str, key: str) -> tuple[Any, Any, Any]:
    head = client.head_object(Bucket=bucket, Key=key)
    until = head.get("ObjectLockRetainUntilDate")
    # Compared to the second: servers keep the date at the precision they were sent it.
    until = until.astimezone(UTC).replace(microsecond=0) if until else None
    return head.get("ObjectLockMode"), until, head.get("ObjectLockLegalHoldStatus")


# -- Object Lock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retention_and_legal_hold_arrive_at_the_destination_on_every_write_path(
    versitygw_or_moto: S3Endpoint, transport: str, path: str
) -> None:
    client = versitygw_or_moto.client()
    src, dst = _bucket(client, "src", lock=True), _bucket(client, "dst", lock=True)
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    objects = {
        "governance": ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until}, 2000),
        "held": ({"ObjectLockLegalHoldStatus": "ON"}, 3000),
        "both": (
            {
                "ObjectLockMode": "GOVERNANCE",
                "ObjectLockRetainUntilDate": until,
                "ObjectLockLegalHoldStatus": "ON",
            },
            4000,
        ),
        "plain": ({}, 5000),
        # Multipart (streamed parts, or UploadPartCopy): the lock rides on CreateMultipartUpload.
        "big-governance": (
            {
                "ObjectLockMode": "GOVERNANCE",
                "ObjectLockRetainUntilDate": until,
                "ObjectLockLegalHoldStatus": "ON",
            },
            TEST_PART + 4321,
        ),
    }
    for key, (lock, size) in objects.items():
        client.put_object(Bucket=src, Key=key, Body=os.urandom(size), **lock)

    # verify: size sends no checksum: the writes that set a lock must add their own Content-MD5.
    job = _job(versitygw_or_moto, src, dst, path, preserve={"objectLock": True}, verify="size")
    counts = run_engine(job, versitygw_or_moto, transport=transport).summary.counts
    assert (counts.copied, counts.failed) == (len(objects), 0)

    expected = {
        "governance": ("GOVERNANCE", until, None),
        "held": (None, None, "ON"),
        "both": ("GOVERNANCE", until, "ON"),
        "plain": (None, None, None),
        "big-governance": ("GOVERNANCE", until, "ON"),
    }
    found = {key: _lock_of(client, dst, key) for key in objects}
    # A server may answer OFF for an object that never had a legal hold.
    found = {k: (m, u, None if h == "OFF" else h) for k, (m, u, h) in found.items()}
    assert found == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_preserve_object_lock_no_lock_is_copied(
    versitygw_or_moto: S3Endpoint, transport: str
) -> None:
    client = versitygw_or_moto.client()
    src, dst = _bucket(client, "src", lock=True), _bucket(client, "dst", lock=True)
    until = datetime.now(UTC) + timedelta(days=2)
    client.put_object(
        Bucket=src,
        Key="k",
        Body=b"data",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
        ObjectLockLegalHoldStatus="ON",
    )
    counts = run_engine(_job(versitygw_or_moto, src, dst, "streamed"), versitygw_or_moto, transport=transport)
    assert counts.summary.counts.copied == 1
    mode, retain, hold = _lock_of(client, dst, "k")
    assert (mode, retain, hold in (None, "OFF")) == (None, None, True)


@pytest.mark.parametrize("path", list(PATHS))
def test_a_retention_about_to_expire_is_not_sent_and_the_legal_hold_still_is(
    versitygw_or_moto: S3Endpoint, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = versitygw_or_moto.client()
    src, dst = _bucket(client, "src", lock=True), _bucket(client, "dst", lock=True)
    # Still in the future for the source, but within Ferry's margin: by the time a write reached the
    # destination it could be in the past, which S3 refuses.
    soon = datetime.now(UTC) + timedelta(seconds=20)
    client.put_object(
        Bucket=src,
        Key="expiring",
        Body=b"data",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=soon,
        ObjectLockLegalHoldStatus="ON",
    )
    job = _job(versitygw_or_moto, src, dst, path, preserve={"objectLock": True})
    with caplog.at_level("WARNING", logger="ferry.worker.copier"):
        counts = run_engine(job, versitygw_or_moto).summary.counts
    assert (counts.copied, counts.failed) == (1, 0)
    assert _lock_of(client, dst, "expiring") == (None, None, "ON")
    assert any("'expiring'" in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)


def test_a_destination_without_object_lock_is_refused_before_copying_naming_the_bucket(
    versitygw_or_moto: S3Endpoint,
) -> None:
    client = versitygw_or_moto.client()
    src, plain = _bucket(client, "src", lock=True), _bucket(client, "plain", lock=False)
    locked = _bucket(client, "dst", lock=True)
    job = _job(versitygw_or_moto, src, plain, "streamed", preserve={"objectLock": True})
    with pytest.raises(PreflightError) as refused:
        check_destination_lock(client, job)
    assert refused.value.reason == REASON
    assert repr(plain) in str(refused.value) and "preserve.objectLock: false" in str(refused.value)
    # A bucket with Object Lock passes, and so does any bucket when locks are not asked for.
    check_destination_lock(
        client, _job(versitygw_or_moto, src, locked, "streamed", preserve={"objectLock": True})
    )
    check_destination_lock(client, _job(versitygw_or_moto, src, plain, "streamed"))


def test_ferry_run_stops_at_a_destination_without_object_lock(
    versitygw_or_moto: S3Endpoint, tmp_path: Path
) -> None:
    client = versitygw_or_moto.client()
    src, plain = _bucket(client, "src", lock=True), _bucket(client, "plain", lock=False)
    client.put_object(Bucket=src, Key="k", Body=b"x")
    endpoint = versitygw_or_moto
    text = f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: lock-test}}
spec:
  source: {{bucket: {src}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
  destination: {{bucket: {plain}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
  preserve: {{objectLock: true}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
"""
    job = tmp_path / "job.yaml"
    job.write_text(text)
    result = subprocess.run(
        [*FERRY, "run", "-f", str(job), "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert REASON in result.stderr and repr(plain) in result.stderr
    assert endpoint.secret_key not in result.stderr + result.stdout
    assert client.list_objects_v2(Bucket=plain).get("KeyCount", 0) == 0


# -- canned ACL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingMoto]:
    with recording_moto(tmp_path_factory.mktemp("moto-recording")) as server:
        yield server


#: The writes that create an object, and so carry its ACL.
CREATING = {"PutObject", "CopyObject", "CreateMultipartUpload"}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_canned_acl_is_sent_on_every_write_that_creates_an_object(
    recorder: RecordingMoto, transport: str, path: str
) -> None:
    endpoint = recorder.endpoint
    client = endpoint.client()
    src, dst = _bucket(client, "src", lock=False), _bucket(client, "dst", lock=False)
    client.put_object(Bucket=src, Key="small", Body=os.urandom(1000))
    client.put_object(Bucket=src, Key="big", Body=os.urandom(TEST_PART + 1000))
    job = _job(endpoint, src, dst, path, destination={"acl": "bucket-owner-full-control"})
    recorder.start()
    counts = run_engine(job, endpoint, transport=transport).summary.counts
    requests = recorder.stop()
    assert (counts.copied, counts.failed) == (2, 0)

    created = [r for r in requests if r.of_bucket(dst) and r.operation in CREATING]
    single = "CopyObject" if path == "server-side" else "PutObject"
    assert sorted(r.operation for r in created) == sorted(["CreateMultipartUpload", single])
    assert {r.headers.get("x-amz-acl") for r in created} == {"bucket-owner-full-control"}
    # The objects are really there and whole.
    assert client.head_object(Bucket=dst, Key="big")["ContentLength"] == TEST_PART + 1000


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_an_acl_none_is_sent(recorder: RecordingMoto, transport: str) -> None:
    endpoint = recorder.endpoint
    client = endpoint.client()
    src, dst = _bucket(client, "src", lock=False), _bucket(client, "dst", lock=False)
    client.put_object(Bucket=src, Key="small", Body=b"x" * 100)
    recorder.start()
    copied = run_engine(
        _job(endpoint, src, dst, "streamed"), endpoint, transport=transport
    ).summary.counts.copied
    requests = recorder.stop()
    assert copied == 1
    writes = [r for r in requests if r.of_bucket(dst) and r.operation in CREATING]
    assert [r.operation for r in writes] == ["PutObject"]
    assert "x-amz-acl" not in writes[0].headers
