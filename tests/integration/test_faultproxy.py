"""The fault proxy relays S3 traffic unchanged and injects exactly the faults its plan asks for.

Real processes: the moto S3 server subprocess behind a FaultProxy, boto3 clients with path
addressing, and raw http.client where botocore would hide what the connection did.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from testbed.faultproxy import FaultPlan, FaultProxy, parse_rate
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=10)


@pytest.fixture
def proxy(moto_server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint.url, seed=7) as p:
        yield p


def via(endpoint: S3Endpoint, proxy: FaultProxy, config: Config = NO_RETRIES) -> Any:
    """A client that signs for the proxy's host:port, as a copy worker would behind a proxy."""
    return dataclasses.replace(endpoint, url=proxy.url).client(config=config)


def signed_path(endpoint: S3Endpoint, proxy: FaultProxy, bucket: str, key: str | None = None) -> str:
    """Path and query of a presigned GET through the proxy, for raw http.client requests."""
    client = via(endpoint, proxy)
    if key is None:
        url = client.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket})
    else:
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    return url.removeprefix(proxy.url)


def raw_get(proxy: FaultProxy, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection with http.client, which reports exactly what the wire did."""
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def crc32c(data: bytes) -> int:
    # Small pure-Python CRC32C so the test does not depend on awscrt.
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- pass-through -------------------------------------------------------------------------------------


def test_s3_operations_pass_through_byte_identical(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    body = os.urandom(300_000)

    client.put_object(Bucket=bucket, Key="dir/a.bin", Body=body, Metadata={"origin": "ferry"})
    head = client.head_object(Bucket=bucket, Key="dir/a.bin")
    assert head["ContentLength"] == len(body)
    assert head["Metadata"] == {"origin": "ferry"}
    assert client.get_object(Bucket=bucket, Key="dir/a.bin")["Body"].read() == body
    # Ranged reads relay the partial content as is.
    ranged = client.get_object(Bucket=bucket, Key="dir/a.bin", Range="bytes=1000-1999")["Body"].read()
    assert ranged == body[1000:2000]

    client.copy_object(Bucket=bucket, Key="dir/b.bin", CopySource={"Bucket": bucket, "Key": "dir/a.bin"})
    assert s3.client.get_object(Bucket=bucket, Key="dir/b.bin")["Body"].read() == body

    client.put_object_tagging(
        Bucket=bucket, Key="dir/b.bin", Tagging={"TagSet": [{"Key": "team", "Value": "storage"}]}
    )
    tags = client.get_object_tagging(Bucket=bucket, Key="dir/b.bin")["TagSet"]
    assert tags == [{"Key": "team", "Value": "storage"}]

    listed = client.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a.bin", "dir/b.bin"]

    client.delete_object(Bucket=bucket, Key="dir/a.bin")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/b.bin"]

    stats = proxy.stats()
    assert stats.faults == 0 and stats.upstream_errors == 0
    assert stats.by_method["PUT"] >= 3 and stats.by_method["HEAD"] == 1 and stats.by_method["DELETE"] == 1
    assert stats.bytes_to_upstream > len(body) and stats.bytes_to_client > len(body)


def test_multipart_upload_of_12_mib_object_round_trips(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    data = os.urandom(12 * MiB)

    upload = client.create_multipart_upload(Bucket=bucket, Key="big")
    parts = []
    for number, offset in enumerate(range(0, len(data), 5 * MiB), start=1):
        part = client.upload_part(
            Bucket=bucket,
            Key="big",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[offset : offset + 5 * MiB],
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    assert len(parts) == 3
    client.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert s3.client.get_object(Bucket=bucket, Key="big")["Body"].read() == data

    # File-like bodies make botocore send `Expect: 100-continue`, which the proxy must honour.
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=3)
    client.upload_fileobj(io.BytesIO(data), bucket, "big-streamed", Config=config)
    out = io.BytesIO()
    client.download_fileobj(bucket, "big-streamed", out, Config=config)
    assert out.getvalue() == data
    assert proxy.stats().faults == 0


def test_crc32c_checksum_round_trips(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    body = os.urandom(20_000)
    checksum = base64.b64encode(crc32c(body).to_bytes(4, "big")).decode()

    def declare_algorithm(request: Any, **_: Any) -> None:
        # botocore computes CRC32C only with awscrt; a copier that brings its own value declares
        # the algorithm in this signed header, which must reach the server unchanged.
        request.headers["x-amz-sdk-checksum-algorithm"] = "CRC32C"

    client.meta.events.register("before-sign.s3.PutObject", declare_algorithm)
    client.put_object(Bucket=bucket, Key="sum", Body=body, ChecksumCRC32C=checksum)

    head = client.head_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == checksum
    got = client.get_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == checksum
    assert base64.b64encode(crc32c(got["Body"].read()).to_bytes(4, "big")).decode() == checksum


class _RecordingUpstream:
    """A raw socket server that records the exact bytes it receives, for byte-level assertions.

    It answers each expected request once the bytes received so far end with its marker.
    """

    def __init__(self, end_markers: list[bytes]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.end_markers = end_markers
        self.received = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(5)
                for marker in self.end_markers:
                    while not self.received.endswith(marker):
                        data = conn.recv(65536)
                        if not data:
                            return
                        self.received += data
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.done.set()
                conn.recv(1)

    def close(self) -> None:
        self.sock.close()


def test_request_bytes_reach_upstream_unaltered_including_host_and_trailers() -> None:
    upstream = _RecordingUpstream([b"hello", b"AAAAAA==\r\n\r\n"])
    try:
        with FaultProxy(upstream.url) as proxy:
            port = int(proxy.url.rsplit(":", 1)[1])
            first = (
                b"PUT /bucket/key?x-id=PutObject HTTP/1.1\r\n"
                b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
                b"X-Amz-Date: 20250101T000000Z\r\n"
                b"authorization: AWS4-HMAC-SHA256 Credential=x/20250101/us-east-1/s3/aws4_request\r\n"
                b"Content-Length: 5\r\n\r\nhello"
            )
            second = (
                b"PUT /bucket/chunked HTTP/1.1\r\n"
                b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
                b"Transfer-Encoding: chunked\r\n"
                b"Content-Encoding: aws-chunked\r\n\r\n"
                b"5;chunk-signature=abc\r\nhello\r\n"
                b"0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                # Pipelined on one connection: the proxy must keep framing and order intact.
                sock.sendall(first + second)
                assert upstream.done.wait(5)
                expected = 2 * b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                replies = b""
                while len(replies) < len(expected) and (data := sock.recv(65536)):
                    replies += data
            assert upstream.received == first + second
            assert replies == expected
    finally:
        upstream.close()


# -- faults -------------------------------------------------------------------------------------------


def test_added_latency_delays_each_request(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    client.head_bucket(Bucket=bucket)  # warm the connection so only the proxy's delay is measured
    proxy.set_plan(FaultPlan(latency_ms=300, jitter_ms=20))
    started = time.monotonic()
    client.head_bucket(Bucket=bucket)
    assert time.monotonic() - started >= 0.28
    proxy.set_plan(FaultPlan())
    started = time.monotonic()
    client.head_bucket(Bucket=bucket)
    assert time.monotonic() - started < 0.25


@pytest.mark.parametrize("status", [503, 429])
def test_throttle_answers_s3_slowdown_that_botocore_parses(s3: Any, proxy: FaultProxy, status: int) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(throttle_rate=1.0, throttle_status=status))
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket=bucket, Key="k", Body=b"data")
    assert err.value.response["Error"]["Code"] == "SlowDown"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # The answer comes from the proxy: the object was never written.
    assert s3.client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # The connection stays usable after an injected error.
    proxy.set_plan(FaultPlan())
    client.put_object(Bucket=bucket, Key="k", Body=b"data")
    stats = proxy.stats()
    assert (stats.injected_503, stats.injected_429) == ((1, 0) if status == 503 else (0, 1))


def test_throttle_with_expect_continue_closes_without_waiting_for_the_body(
    s3: Any, proxy: FaultProxy
) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(throttle_rate=1.0))
    started = time.monotonic()
    with pytest.raises(ClientError) as err:
        # A file-like body: botocore sends Expect: 100-continue and waits for the answer.
        client.put_object(Bucket=bucket, Key="k", Body=io.BytesIO(os.urandom(MiB)))
    assert err.value.response["Error"]["Code"] == "SlowDown"
    assert time.monotonic() - started < 1.0


def test_error500_answers_s3_internal_error(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(error500_rate=1.0))
    with pytest.raises(ClientError) as err:
        client.list_objects_v2(Bucket=bucket)
    assert err.value.response["Error"]["Code"] == "InternalError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert proxy.stats().injected_500 == 1


def test_reset_mid_body_is_a_connection_reset_for_the_client(s3: Any, proxy: FaultProxy) -> None:
    bucket = s3.make_bucket()
    body = os.urandom(2 * MiB)
    s3.client.put_object(Bucket=bucket, Key="obj", Body=body)
    proxy.set_plan(FaultPlan(reset_rate=1.0))
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        raw_get(proxy, signed_path(s3.endpoint, proxy, bucket, "obj"))
    # botocore without retries reports it too instead of returning a short body.
    with pytest.raises((BotoCoreError, ConnectionError)):
        via(s3.endpoint, proxy).get_object(Bucket=bucket, Key="obj")["Body"].read()
    assert proxy.stats().resets == 2


def test_reset_of_a_put_happens_after_the_server_stored_the_object(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(reset_rate=1.0, methods=frozenset({"PUT"})))
    with pytest.raises(BotoCoreError):
        client.put_object(Bucket=bucket, Key="k", Body=b"written anyway")
    # The client saw a failure although the write happened: the case retries must be idempotent for.
    assert s3.client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"written anyway"


def test_truncated_body_is_an_incomplete_read_for_the_client(s3: Any, proxy: FaultProxy) -> None:
    bucket = s3.make_bucket()
    body = os.urandom(MiB)
    s3.client.put_object(Bucket=bucket, Key="obj", Body=body)
    proxy.set_plan(FaultPlan(truncate_rate=1.0))
    with pytest.raises(http.client.IncompleteRead) as err:
        raw_get(proxy, signed_path(s3.endpoint, proxy, bucket, "obj"))
    assert len(err.value.partial) == len(body) // 2
    with pytest.raises(BotoCoreError):
        via(s3.endpoint, proxy).get_object(Bucket=bucket, Key="obj")["Body"].read()
    assert proxy.stats().truncations == 2


def test_stall_pauses_the_body_then_completes_it(s3: Any, proxy: FaultProxy) -> None:
    bucket = s3.make_bucket()
    body = os.urandom(MiB)
    s3.client.put_object(Bucket=bucket, Key="obj", Body=body)
    proxy.set_plan(FaultPlan(stall_rate=1.0, stall_seconds=0.5))
    started = time.monotonic()
    status, got = raw_get(proxy, signed_path(s3.endpoint, proxy, bucket, "obj"))
    assert status == 200 and got == body
    assert time.monotonic() - started >= 0.5
    assert proxy.stats().stalls == 1


def test_only_first_n_limits_injected_faults(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(throttle_rate=1.0, only_first_n=2))
    outcomes = []
    for _ in range(5):
        try:
            client.head_bucket(Bucket=bucket)
            outcomes.append("ok")
        except ClientError:
            outcomes.append("throttled")
    assert outcomes == ["throttled", "throttled", "ok", "ok", "ok"]
    assert proxy.stats().injected_503 == 2
    # A new plan starts a new count.
    proxy.set_plan(FaultPlan(throttle_rate=1.0, only_first_n=1))
    with pytest.raises(ClientError):
        client.head_bucket(Bucket=bucket)
    client.head_bucket(Bucket=bucket)
    assert proxy.stats().injected_503 == 3


def test_faults_hit_only_matching_methods_and_paths(s3: Any, proxy: FaultProxy) -> None:
    client = via(s3.endpoint, proxy)
    bucket = s3.make_bucket()
    proxy.set_plan(FaultPlan(error500_rate=1.0, methods=frozenset({"get"}), path_regex=r"/victim/"))
    client.put_object(Bucket=bucket, Key="victim/a", Body=b"a")
    client.put_object(Bucket=bucket, Key="spared/b", Body=b"b")
    assert client.get_object(Bucket=bucket, Key="spared/b")["Body"].read() == b"b"
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key="victim/a")
    assert proxy.stats().injected_500 == 1


def test_same_seed_injects_the_same_faults(moto_server: Any, s3: Any) -> None:
    bucket = s3.make_bucket()

    def pattern(seed: int) -> list[int]:
        plan = FaultPlan(throttle_rate=0.5)
        with FaultProxy(moto_server.endpoint.url, plan, seed=seed) as p:
            path = signed_path(s3.endpoint, p, bucket)
            return [raw_get(p, path)[0] for _ in range(16)]

    first = pattern(3)
    assert first == pattern(3)
    assert 200 in first and 503 in first


def test_bandwidth_cap_slows_transfers(s3: Any, proxy: FaultProxy) -> None:
    bucket = s3.make_bucket()
    body = os.urandom(MiB)
    s3.client.put_object(Bucket=bucket, Key="obj", Body=body)
    proxy.set_plan(FaultPlan(bandwidth_bytes_per_s=2 * MiB))
    started = time.monotonic()
    status, got = raw_get(proxy, signed_path(s3.endpoint, proxy, bucket, "obj"))
    elapsed = time.monotonic() - started
    assert status == 200 and got == body
    assert 0.4 <= elapsed < 2.0


def test_upstream_down_gives_502(moto_server: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound but not listening: refused
        with FaultProxy(dead) as p:
            status, body = raw_get(p, "/any")
    assert status == 502 and b"BadGateway" in body


def test_plan_validation_rejects_impossible_rates() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultPlan(throttle_rate=0.7, reset_rate=0.7)
    with pytest.raises(ValueError, match="503 or 429"):
        FaultPlan(throttle_status=500)
    assert parse_rate("10MB") == 10_000_000
    assert parse_rate("512KiB/s") == 512 * 1024


def test_cli_prints_url_and_serves_until_sigterm(s3: Any) -> None:
    bucket = s3.make_bucket()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testbed.faultproxy",
            "--upstream",
            s3.endpoint.url,
            "--latency-ms",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = dataclasses.replace(s3.endpoint, url=url).client(config=NO_RETRIES)
        client.head_bucket(Bucket=bucket)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "requests=1" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
