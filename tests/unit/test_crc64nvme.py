"""The source's full-object CRC64NVME as `verify: checksum` reads and computes it (worker/checksums.py):
table-driven, pure. Known values are what S3 and versitygw answer for the same bytes."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.worker import checksums


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"x", "Lb1nAmRU5LE="),  # S3's and versitygw's x-amz-checksum-crc64nvme for one byte "x"
        (b"hello", "M3eFcAZSQlc="),  # versitygw's for "hello"
        (b"", "AAAAAAAAAAA="),
    ],
)
def test_known_values(data: bytes, expected: str) -> None:
    assert checksums.crc64nvme_b64(checksums.crc64nvme(data)) == expected


def test_parts_chain_into_the_whole_object_value() -> None:
    whole = checksums.crc64nvme(b"a" * 1000 + b"b" * 7)
    chained = checksums.crc64nvme(b"b" * 7, checksums.crc64nvme(b"a" * 1000))
    assert chained == whole


@pytest.mark.parametrize(
    ("head", "value"),
    [
        ({"ChecksumCRC64NVME": "Lb1nAmRU5LE=", "ChecksumType": "FULL_OBJECT"}, "Lb1nAmRU5LE="),
        ({"ChecksumCRC64NVME": "Lb1nAmRU5LE="}, "Lb1nAmRU5LE="),  # the lean transport's GET may lack the type
        ({}, None),
        ({"ChecksumCRC32C": "yZRlqg=="}, None),
        ({"ChecksumCRC64NVME": "Lb1nAmRU5LE=", "ChecksumType": "COMPOSITE"}, None),
        ({"ChecksumCRC64NVME": "Lb1nAmRU5LE=-3"}, None),
        ({"ChecksumCRC64NVME": "yZRlqg=="}, None),  # 4 bytes: not a CRC64
        ({"ChecksumCRC64NVME": "not base64!"}, None),
        ({"ChecksumCRC64NVME": "A" * 1000}, None),
        ({"ChecksumCRC64NVME": 12345}, None),
    ],
)
def test_the_source_s_value_is_read_only_when_it_is_a_full_object_crc64nvme(
    head: dict[str, Any], value: str | None
) -> None:
    assert checksums.source_crc64nvme(head) == value
