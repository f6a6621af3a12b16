"""Checksums computed while bytes pass through: CRC32C (what `verify: checksum` sends so the destination
validates it) and MD5 (what `verify: etag` compares). Pure.
"""

from __future__ import annotations

import base64
import hashlib

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
