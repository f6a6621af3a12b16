"""versitygw, the testbed's fast S3 server, supports the S3 features Ferry's copier relies on."""

from __future__ import annotations

import base64
import uuid

import pytest

from testbed.versitygw import VersityGW

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


def crc32c(data: bytes) -> str:
    """Base64 CRC32C as S3 reports it; awscrt is what botocore itself needs to send CRC32C."""
    try:
        from awscrt import checksums
    except ImportError:
        pytest.fail("awscrt is missing: botocore needs it for CRC32C (pip install awscrt)")
    return base64.b64encode(checksums.crc32c(data).to_bytes(4, "big")).decode()


def test_versitygw_accepts_multipart_copies_tagging_and_crc32c_checksums(versitygw: VersityGW):
    s3 = versitygw.endpoint.client()
    bucket = f"vgw-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)

    # Multipart upload with CRC32C per part.
    parts_data = [b"a" * (5 * MIB), b"b" * MIB]
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big", ChecksumAlgorithm="CRC32C")
    parts = []
    for number, data in enumerate(parts_data, start=1):
        resp = s3.upload_part(
            Bucket=bucket,
            Key="big",
            UploadId=mpu["UploadId"],
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="CRC32C",
        )
        assert resp["ChecksumCRC32C"] == crc32c(data)
        parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumCRC32C": resp["ChecksumCRC32C"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == 6 * MIB

    # Single-part PUT with a CRC32C checksum, returned by HEAD in checksum mode.
    small = b"hello ferry"
    s3.put_object(Bucket=bucket, Key="small", Body=small, ChecksumAlgorithm="CRC32C")
    head = s3.head_object(Bucket=bucket, Key="small", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == crc32c(small)

    # CopyObject keeps the bytes.
    s3.copy_object(Bucket=bucket, Key="small-copy", CopySource={"Bucket": bucket, "Key": "small"})
    assert s3.get_object(Bucket=bucket, Key="small-copy")["Body"].read() == small

    # UploadPartCopy assembles an object from byte ranges of another.
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big-copy")
    copied = []
    ranges = [(0, 5 * MIB - 1), (5 * MIB, 6 * MIB - 1)]
    for number, (first, last) in enumerate(ranges, start=1):
        resp = s3.upload_part_copy(
            Bucket=bucket,
            Key="big-copy",
            UploadId=mpu["UploadId"],
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "big"},
            CopySourceRange=f"bytes={first}-{last}",
        )
        copied.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big-copy", UploadId=mpu["UploadId"], MultipartUpload={"Parts": copied}
    )
    body = s3.get_object(Bucket=bucket, Key="big-copy")["Body"].read()
    assert body == b"".join(parts_data)

    # Object tagging.
    tags = [{"Key": "ferry", "Value": "copied"}, {"Key": "shard", "Value": "7"}]
    s3.put_object_tagging(Bucket=bucket, Key="small-copy", Tagging={"TagSet": tags})
    got = s3.get_object_tagging(Bucket=bucket, Key="small-copy")["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == tags
