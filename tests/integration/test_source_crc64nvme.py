"""`verify: checksum` against the source's own full-object CRC64NVME (what S3 computes for every new
object), on both transports, single and multipart.

Server: versitygw, which stores and reports CRC64NVME full-object checksums (single PUTs and multipart
uploads of type FULL_OBJECT) and keeps them in an extended attribute of the object's file: the test
changes that attribute to stand for bytes that no longer match what the source recorded, which Ferry must
refuse to store.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from support.engine import TEST_PART, digest_map, run_engine, spec
from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir
from testbed.versitygw import VersityGW

CHECKSUMS_ATTRIBUTE = "user.checksums"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersityGW]:
    try:
        binaries = TestBinaries(find_bin_dir())
    except (MissingBinariesError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"versitygw is not built ({exc}); run make testbin")
    with VersityGW(binaries, tmp_path_factory.mktemp("versitygw"), sidecar=False) as server:
        yield server


def _put_crc64(client: Any, bucket: str, key: str, body: bytes) -> None:
    if len(body) <= TEST_PART:
        client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="CRC64NVME")
        return
    upload = client.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )
    parts = []
    for number, first in enumerate(range(0, len(body), TEST_PART), start=1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body[first : first + TEST_PART],
            ChecksumAlgorithm="CRC64NVME",
        )
        parts.append(
            {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC64NVME": answer["ChecksumCRC64NVME"]}
        )
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )


def _setup(gateway: VersityGW, name: str) -> tuple[Any, str, str]:
    client = gateway.endpoint.client()
    src, dst = f"{name}-src", f"{name}-dst"
    client.create_bucket(Bucket=src)
    client.create_bucket(Bucket=dst)
    _put_crc64(client, src, "small", os.urandom(3000))
    _put_crc64(client, src, "big", os.urandom(TEST_PART + 12345))
    for key in ("small", "big"):
        head = client.head_object(Bucket=src, Key=key, ChecksumMode="ENABLED")
        assert head.get("ChecksumType") == "FULL_OBJECT" and head.get("ChecksumCRC64NVME")
    return client, src, dst


def _job(gateway: VersityGW, src: str, dst: str) -> Any:
    url = gateway.endpoint.url
    return spec(
        {"bucket": src, "endpoint": url, "credentialsSecret": "reader"},
        {"bucket": dst, "endpoint": url, "credentialsSecret": "writer"},
    )


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_objects_whose_bytes_match_the_source_s_crc64nvme_are_copied(
    gateway: VersityGW, transport: str
) -> None:
    client, src, dst = _setup(gateway, f"crc64-ok-{transport}")
    counts = run_engine(_job(gateway, src, dst), gateway.endpoint, transport=transport).summary.counts
    assert (counts.copied, counts.failed) == (2, 0)
    assert digest_map(client, dst) == digest_map(client, src)


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_bytes_that_do_not_match_the_source_s_crc64nvme_are_never_stored(
    gateway: VersityGW, transport: str
) -> None:
    client, src, dst = _setup(gateway, f"crc64-bad-{transport}")
    for key in ("small", "big"):
        path = gateway.data_dir / src / key
        recorded = json.loads(os.getxattr(path, CHECKSUMS_ATTRIBUTE))
        recorded["CRC64NVME"] = "AAAAAAAAAAA="  # what the source says its bytes were, now not what they are
        os.setxattr(path, CHECKSUMS_ATTRIBUTE, json.dumps(recorded).encode())
        head = client.head_object(Bucket=src, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == "AAAAAAAAAAA="
    summary = run_engine(_job(gateway, src, dst), gateway.endpoint, transport=transport).summary
    assert (summary.counts.copied, summary.counts.failed) == (0, 2)
    assert {(f.key, f.code) for f in summary.failures} == {
        ("small", "ChecksumMismatch"),
        ("big", "ChecksumMismatch"),
    }
    assert client.list_objects_v2(Bucket=dst).get("KeyCount", 0) == 0
    # The multipart upload was aborted, not left behind.
    assert client.list_multipart_uploads(Bucket=dst).get("Uploads", []) == []
