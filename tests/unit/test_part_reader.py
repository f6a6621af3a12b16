"""The part buffer as a request body (worker/copier.py `PartReader`): botocore reads it in slices, seeks
it back for a retry and asks its length, and never gets a whole-part copy."""

from __future__ import annotations

import io

import pytest

from ferry.worker.copier import PartReader

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param([100, 100], [DATA[:100], DATA[100:200]], id="slices"),
        pytest.param([10_000, 10_000], [DATA[:10_000], DATA[10_000:]], id="short-last-read"),
        pytest.param([20_000, 5], [DATA, b""], id="past-the-end"),
        pytest.param([-1], [DATA], id="all"),
        pytest.param([None], [DATA], id="none-means-all"),
        pytest.param([0, 3], [b"", DATA[:3]], id="zero"),
    ],
)
def test_read_returns_the_slices_asked_for(sizes: list[int | None], expected: list[bytes]) -> None:
    reader = PartReader(memoryview(bytearray(DATA)))
    assert [reader.read(size) for size in sizes] == expected


@pytest.mark.parametrize(
    ("offset", "whence", "position"),
    [
        (0, io.SEEK_SET, 0),
        (500, io.SEEK_SET, 500),
        (-10, io.SEEK_END, len(DATA) - 10),
        (0, io.SEEK_END, len(DATA)),
        (50, io.SEEK_CUR, 150),
        (-1000, io.SEEK_CUR, 0),  # clamped, never negative
        (10**9, io.SEEK_SET, len(DATA)),  # clamped to the end
    ],
)
def test_seek_and_tell(offset: int, whence: int, position: int) -> None:
    reader = PartReader(memoryview(bytearray(DATA)))
    reader.read(100)
    assert reader.seek(offset, whence) == position
    assert reader.tell() == position
    assert reader.read() == DATA[position:]


def test_a_view_of_part_of_the_buffer_is_the_whole_body() -> None:
    buffer = bytearray(DATA)
    reader = PartReader(memoryview(buffer)[:1000])
    assert len(reader) == 1000
    assert reader.readable() and reader.seekable()
    chunk = bytearray(600)
    assert reader.readinto(chunk) == 600 and bytes(chunk) == DATA[:600]
    assert reader.readinto(chunk) == 400 and bytes(chunk[:400]) == DATA[600:1000]
    assert reader.readinto(chunk) == 0


def test_reads_see_the_buffer_not_a_copy_of_it() -> None:
    buffer = bytearray(DATA)
    reader = PartReader(memoryview(buffer))
    buffer[:4] = b"ABCD"  # the next part is read into the same buffer
    assert reader.read(4) == b"ABCD"
