"""Checksums computed while bytes pass through: CRC32C (what `verify: checksum` sends so the destination
validates it), CRC64NVME (compared with the source's own full-object value when it has one) and MD5
(what `verify: etag` compares). Pure.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from awscrt import checksums as _crt


def crc32c(data: bytes | memoryview, previous: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``previous`` (so parts can be chained into a whole-object value)."""
    return int(_crt.crc32c(data, previous))


def crc32c_b64(value: int) -> str:
    """The form S3 uses in ``x-amz-checksum-crc32c``: base64 of the big-endian 32-bit value."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def md5_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def multipart_etag(part_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart upload: MD5 of the parts' MD5s, a dash, and the part count."""
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def is_full_object_checksum(value: str | None) -> bool:
    """Composite checksums of multipart objects end in ``-N`` and cannot be compared with a whole-object CRC."""
    return bool(value) and "-" not in str(value)


def crc64nvme(data: bytes | memoryview, previous: int = 0) -> int:
    """CRC64NVME of ``data`` continuing from ``previous``: the full-object checksum S3 computes by default
    for new objects, which `verify: checksum` compares with the bytes read when the source offers it."""
    return int(_crt.crc64nvme(data, previous))


def crc64nvme_b64(value: int) -> str:
    """The form S3 uses in ``x-amz-checksum-crc64nvme``: base64 of the big-endian 64-bit value."""
    return base64.b64encode(value.to_bytes(8, "big")).decode()


#: The longest checksum value read from an answer (a CRC64NVME is 12 characters of base64).
MAX_CHECKSUM_TEXT = 64


def source_crc64nvme(head: Mapping[str, Any]) -> str | None:
    """The source's full-object CRC64NVME from a GET or HEAD answer (asked with checksum mode), or None
    when it has none, or one that is not a full-object value of the right form."""
    value = head.get("ChecksumCRC64NVME")
    if not isinstance(value, str) or len(value) > MAX_CHECKSUM_TEXT or not is_full_object_checksum(value):
        return None
    if str(head.get("ChecksumType") or "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return value if len(raw) == 8 else None
