"""Part layout of multipart transfers: S3's limits applied to an object size, and what one transfer holds
in memory. Pure.

The part size bounds the memory of a streaming transfer: one part buffer is the most a transfer holds
(the copier reads each part into one buffer it reuses and uploads from it without a second copy).
"""

from __future__ import annotations

from collections.abc import Iterator

MIN_PART = 5 * 2**20
MAX_PART = 5 * 2**30
MAX_PARTS = 10_000
DEFAULT_PART = 8 * 2**20
#: CopyObject refuses sources larger than this; above it only UploadPartCopy works.
MAX_SINGLE_COPY = 5 * 2**30
#: What a transfer holds beyond its part buffer: its thread's stack in use, connection and parser state,
#: and the chunks a part is read through (128 KiB at a time, see copier.READ_CHUNK). Measured with
#: tracemalloc: at most 0.35 MiB per streamed transfer on either transport.
TRANSFER_OVERHEAD_BYTES = 256 * 1024


def part_size_for(object_size: int, preferred: int = DEFAULT_PART) -> int:
    """The smallest part size at least ``preferred`` that keeps the object within 10,000 parts."""
    size = min(max(preferred, MIN_PART), MAX_PART)
    while -(-object_size // size) > MAX_PARTS and size < MAX_PART:
        size = min(size * 2, MAX_PART)
    return size


def part_ranges(object_size: int, part_size: int) -> Iterator[tuple[int, int]]:
    """Inclusive byte ranges ``(first, last)`` of each part, in order."""
    for first in range(0, object_size, part_size):
        yield first, min(first + part_size, object_size) - 1


def transfer_memory(object_size: int, part_size: int, server_side: bool) -> int:
    """Bytes one transfer holds in memory at most: one part (or the whole object when smaller).

    Server-side copies move no bytes through Ferry.
    """
    if server_side:
        return 0
    return min(object_size, part_size_for(object_size, part_size))
