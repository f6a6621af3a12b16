"""SSE-C (`source.sseCustomerKey`, `destination.sseCustomerKey`) against a real S3 server process, on both
transports and every request a copy makes.

Server: moto with its request recorder (tests/support/recording.py). Neither moto nor versitygw honours
SSE-C (both accept the headers and store the bytes as they are; checked by reading an object back with
another key and with none), so these tests prove what Ferry sends on every request of each side, and
that a key never reaches its output; the answers S3 gives a key that does not fit (403 AccessDenied,
400 InvalidRequest) come from the fault proxy in front of moto.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.worker.ssec import CustomerKey, CustomerKeys
from support.engine import TEST_PART, digest_map, spec
from support.recording import RecordingMoto, Request, recording_moto
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

FERRY = [str(Path(sys.executable).with_name("ferry"))]
SOURCE_KEY, DESTINATION_KEY = os.urandom(32), os.urandom(32)
PREFIX = "x-amz-server-side-encryption-customer-"
COPY_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"

#: What each operation must carry: (this side's key headers, the copy source's key headers).
SOURCE_READS = {"GetObject", "HeadObject"}
DESTINATION_WRITES = {
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "CopyObject",
    "UploadPartCopy",
}
COPIES = {"CopyObject", "UploadPartCopy"}


def _md5(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def _key_of(request: Request, prefix: str) -> tuple[str | None, str | None, str | None]:
    h = request.headers
    return h.get(prefix + "algorithm"), h.get(prefix + "key"), h.get(prefix + "key-md5")


def _expected(key: bytes) -> tuple[str, str, str]:
    return "AES256", base64.b64encode(key).decode(), _md5(key)


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingMoto]:
    with recording_moto(tmp_path_factory.mktemp("moto-recording")) as server:
        yield server


def _run(job: Any, endpoint: S3Endpoint, transport: str) -> Any:
    # As support.engine.run_engine builds it, with the keys `ferry run` and the worker pod resolve.
    from ferry.worker.engine import CopyEngine
    from ferry.worker.leans3 import make_lean
    from ferry.worker.limits import FixedLimiter
    from ferry.worker.report import FailureReport
    from ferry.worker.s3 import ClientOptions, Credentials, make_client
    from support.engine import FAST_RETRY

    creds = Credentials(endpoint.access_key, endpoint.secret_key)
    options = ClientOptions(max_pool_connections=8, read_timeout=10, connect_timeout=2)
    lean = transport == "lean"
    engine = CopyEngine(
        spec=job,
        source_client=make_client(job.source, creds, options),
        destination_client=make_client(job.destination, creds, options),
        source_lean=make_lean(job.source, creds, options) if lean else None,
        destination_lean=make_lean(job.destination, creds, options) if lean else None,
        limiter=FixedLimiter(4),
        report=FailureReport(None),
        part_size=TEST_PART,
        retry=FAST_RETRY,
        customer_keys=CustomerKeys(CustomerKey(SOURCE_KEY), CustomerKey(DESTINATION_KEY)),
    )
    return engine.run()


@pytest.mark.parametrize("path", ["streamed", "server-side"])
@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_every_request_carries_its_side_s_key(recorder: RecordingMoto, transport: str, path: str) -> None:
    endpoint = recorder.endpoint
    client = endpoint.client()
    src, dst = f"ssec-src-{transport}-{path}", f"ssec-dst-{transport}-{path}"
    client.create_bucket(Bucket=src)
    client.create_bucket(Bucket=dst)
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SOURCE_KEY}
    client.put_object(Bucket=src, Key="small", Body=os.urandom(1000), **sse)
    client.put_object(Bucket=src, Key="big", Body=os.urandom(2 * TEST_PART + 7), **sse)
    reader, writer = ("same", "same") if path == "server-side" else ("reader", "writer")
    job = spec(
        {
            "bucket": src,
            "endpoint": endpoint.url,
            "credentialsSecret": reader,
            "sseCustomerKey": {"name": "keys", "key": "source"},
        },
        {
            "bucket": dst,
            "endpoint": endpoint.url,
            "credentialsSecret": writer,
            "sseCustomerKey": {"name": "keys", "key": "destination"},
        },
        verify="etag",  # SSE-C ETags are no MD5s: the copy must not compare them
    )
    recorder.start()
    summary = _run(job, endpoint, transport)
    requests = recorder.stop()
    assert (summary.counts.copied, summary.counts.failed) == (2, 0), summary.failures

    reads = [r for r in requests if r.of_bucket(src) and r.operation in SOURCE_READS]
    writes = [r for r in requests if r.of_bucket(dst) and r.operation in DESTINATION_WRITES]
    operations = {r.operation for r in reads + writes}
    if path == "server-side":
        assert {"CopyObject", "UploadPartCopy", "CreateMultipartUpload", "HeadObject"} <= operations
    else:
        assert {"GetObject", "PutObject", "UploadPart", "CreateMultipartUpload", "HeadObject"} <= operations
    assert {_key_of(r, PREFIX) for r in reads} == {_expected(SOURCE_KEY)}
    assert {_key_of(r, PREFIX) for r in writes} == {_expected(DESTINATION_KEY)}
    copies = [r for r in writes if r.operation in COPIES]
    assert {_key_of(r, COPY_PREFIX) for r in copies} == ({_expected(SOURCE_KEY)} if copies else set())
    # moto keeps the bytes as sent: they arrived whole.
    assert digest_map(client, dst) == digest_map(client, src)


def _job_file(path: Path, endpoint: S3Endpoint, src: str, dst: str, source_key: str) -> Path:
    path.write_text(
        f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: ssec-test}}
spec:
  source:
    bucket: {src}
    endpoint: "{endpoint.url}"
    credentialsSecret: creds
    sseCustomerKey: {{name: keys, key: source}}
  destination:
    bucket: {dst}
    endpoint: "{endpoint.url}"
    credentialsSecret: creds
    sseCustomerKey: {{name: keys, key: destination}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
  source: "{source_key}"
  destination: "{base64.b64encode(DESTINATION_KEY).decode()}"
"""
    )
    return path


def _secrets_of(text: str) -> list[str]:
    """Every spelling of the two keys that output could hold."""
    spellings = []
    for key in (SOURCE_KEY, DESTINATION_KEY):
        spellings += [base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1]]
    return [s for s in spellings if s in text]


def test_ferry_run_copies_with_keys_from_its_file_and_never_prints_them_even_with_debug_logging(
    recorder: RecordingMoto, tmp_path: Path
) -> None:
    endpoint = recorder.endpoint
    client = endpoint.client()
    src, dst = "ssec-cli-src", "ssec-cli-dst"
    client.create_bucket(Bucket=src)
    client.create_bucket(Bucket=dst)
    for i in range(5):
        client.put_object(Bucket=src, Key=f"k{i}", Body=os.urandom(100 + i))
    job = _job_file(tmp_path / "job.yaml", endpoint, src, dst, base64.b64encode(SOURCE_KEY).decode())
    recorder.start()
    result = subprocess.run(
        [*FERRY, "-v", "run", "-f", str(job), "--progress", "plain", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    requests = recorder.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DEBUG" in result.stderr  # debug logging really was on
    assert _secrets_of(result.stdout + result.stderr) == []
    # One Secret for both sides: the service copies, with both keys.
    copies = [r for r in requests if r.of_bucket(dst) and r.operation == "CopyObject"]
    assert len(copies) == 5 and {_key_of(r, PREFIX) for r in copies} == {_expected(DESTINATION_KEY)}
    assert {_key_of(r, COPY_PREFIX) for r in copies} == {_expected(SOURCE_KEY)}


def test_ferry_run_refuses_a_key_that_is_not_one_naming_the_field_not_the_value(
    recorder: RecordingMoto, tmp_path: Path
) -> None:
    endpoint = recorder.endpoint
    short = base64.b64encode(b"sixteen byte key").decode()
    job = _job_file(tmp_path / "job.yaml", endpoint, "ssec-cli-src", "ssec-cli-dst", short)
    result = subprocess.run(
        [*FERRY, "run", "-f", str(job), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert '"field": "spec.source.sseCustomerKey' in result.stdout
    assert "32 bytes" in result.stdout + result.stderr
    assert short not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("side", "status", "code", "methods"),
    [
        # What S3 answers a GET or HEAD with another key than the object's.
        ("source", 403, "AccessDenied", frozenset({"GET", "HEAD"})),
        # What S3 answers a write whose key it cannot use.
        ("destination", 400, "InvalidRequest", frozenset({"PUT", "POST"})),
    ],
)
def test_a_refused_key_fails_naming_the_side_s_field_never_the_key(
    s3: Any, side: str, status: int, code: str, methods: frozenset[str]
) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(3):
        client.put_object(Bucket=src, Key=f"k{i}", Body=os.urandom(100))
    refused = src if side == "source" else dst
    plan = FaultPlan(
        refuse_rate=1.0,
        refuse_status=status,
        refuse_code=code,
        methods=methods,
        path_regex=rf"^/{refused}/k",
    )
    keyed = {"sseCustomerKey": {"name": "keys", "key": side}}
    with FaultProxy(endpoint.url, plan) as proxy:
        job = spec(
            {"bucket": src, "endpoint": proxy.url, "credentialsSecret": "a", **keyed},
            {"bucket": dst, "endpoint": proxy.url, "credentialsSecret": "b", **keyed},
        )
        summary = _run(job, endpoint, "lean")
    assert (summary.counts.copied, summary.counts.failed) == (0, 3)
    for failure in summary.failures:
        assert failure.code == code
        assert f"spec.{side}.sseCustomerKey" in failure.message
        other = "destination" if side == "source" else "source"
        assert f"spec.{other}.sseCustomerKey" not in failure.message
        assert _secrets_of(failure.message) == []
