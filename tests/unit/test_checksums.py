"""CRC32C and multipart ETags."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest

from ferry.worker.checksums import crc32c, crc32c_b64, is_full_object_checksum, md5_b64, multipart_etag


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", 0x00000000, id="empty"),
        pytest.param(b"123456789", 0xE3069283, id="check-value"),
        pytest.param(b"\x00" * 32, 0x8A9136AA, id="32-zeros-rfc3720"),
        pytest.param(b"\xff" * 32, 0x62A8AB43, id="32-ones-rfc3720"),
        pytest.param(bytes(range(32)), 0x46DD794E, id="incrementing-rfc3720"),
    ],
)
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def test_crc32c_accepts_memoryview() -> None:
    assert crc32c(memoryview(b"xx123456789")[2:]) == 0xE3069283


DATA = bytes((i * 7 + 3) % 256 for i in range(10_000))


@pytest.mark.parametrize(
    "cuts",
    [
        pytest.param([], id="whole"),
        pytest.param([1], id="first-byte"),
        pytest.param([5000], id="halves"),
        pytest.param([0, 0, 9999], id="empty-parts"),
        pytest.param([1000, 2000, 3333, 8191], id="uneven-parts"),
    ],
)
def test_crc32c_chains_over_parts(cuts: list[int]) -> None:
    bounds = [0, *cuts, len(DATA)]
    value = 0
    for start, end in itertools.pairwise(bounds):
        value = crc32c(DATA[start:end], value)
    assert value == crc32c(DATA)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0xE3069283, "4waSgw==", id="check-value"),
        pytest.param(0, "AAAAAA==", id="zero"),
        pytest.param(0xFFFFFFFF, "/////w==", id="max"),
        pytest.param(1, "AAAAAQ==", id="big-endian"),
    ],
)
def test_crc32c_b64(value: int, expected: str) -> None:
    assert crc32c_b64(value) == expected
    assert base64.b64decode(expected) == value.to_bytes(4, "big")


def test_md5_b64() -> None:
    assert md5_b64(hashlib.md5(b"").digest()) == "1B2M2Y8AsgTpgAmY7PhCfg=="


HELLO_MD5 = bytes.fromhex("5d41402abc4b2a76b9719d911017c592")
WORLD_MD5 = bytes.fromhex("7d793037a0760186574b0282f2f435e7")


def test_known_part_digests() -> None:
    assert hashlib.md5(b"hello").digest() == HELLO_MD5
    assert hashlib.md5(b"world").digest() == WORLD_MD5


@pytest.mark.parametrize(
    ("digests", "expected"),
    [
        pytest.param([HELLO_MD5], "62109206880d38a4010a98e11243924a-1", id="one-part"),
        pytest.param([HELLO_MD5, WORLD_MD5], "065947336a2f2a95ba8899f3675c3be6-2", id="two-parts"),
        pytest.param([WORLD_MD5, HELLO_MD5], None, id="order-matters"),
        pytest.param([HELLO_MD5] * 10_000, None, id="ten-thousand-parts"),
    ],
)
def test_multipart_etag(digests: list[bytes], expected: str | None) -> None:
    etag = multipart_etag(digests)
    digest, count = etag.rsplit("-", 1)
    assert int(count) == len(digests)
    assert len(digest) == 32 and all(c in "0123456789abcdef" for c in digest)
    if expected is not None:
        assert etag == expected
    assert etag != "065947336a2f2a95ba8899f3675c3be6-2" or digests == [HELLO_MD5, WORLD_MD5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("4waSgw==", True, id="full-object"),
        pytest.param("4waSgw==-3", False, id="composite"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_is_full_object_checksum(value: str | None, expected: bool) -> None:
    assert is_full_object_checksum(value) is expected
