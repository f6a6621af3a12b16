"""Streaming listings: source and destination pages fetched ahead in background threads through
bounded queues, then merge-joined by key so each source object meets its destination counterpart
without a HEAD per object and without the whole listing in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ferry.worker.objects import KeyRange, ObjectInfo

#: Pages fetched ahead of the copier. 4 pages of 1,000 keys is about 1 MB of listing in memory.
PREFETCH_PAGES = 4

_DONE = object()

#: What a page holds: objects, or versions (spec.versions all).
T = TypeVar("T")


class ListingFailed(Exception):
    """The listing could not be completed; the cause is chained."""


def prefetch(pages: Iterable[list[T]], depth: int = PREFETCH_PAGES) -> Iterator[T]:
    """Iterate objects while a daemon thread fetches up to ``depth`` pages ahead."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        buffer.put(page, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="ferry-lister", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise ListingFailed(str(item)) from item
            assert isinstance(item, list)
            yield from item
    finally:
        stop.set()


@dataclass(frozen=True, slots=True)
class Pair:
    source: ObjectInfo
    destination_key: str
    existing: ObjectInfo | None


def merge_join(
    sources: Iterable[ObjectInfo],
    destinations: Iterable[ObjectInfo] | None,
    map_key: Callable[[str], str],
    key_range: KeyRange = KeyRange(),
) -> Iterator[Pair]:
    """Pair each source object with the destination object at its mapped key, if present.

    Both listings arrive in the same (UTF-8 binary) order and the key mapping preserves it, so one
    forward pass over each suffices. ``destinations=None`` means the destination is not consulted.
    """
    dest_iter = iter(destinations) if destinations is not None else None
    current: ObjectInfo | None = next(dest_iter, None) if dest_iter is not None else None
    for source in sources:
        if key_range.end is not None and source.key > key_range.end:
            return
        if not key_range.contains(source.key):
            continue
        target = map_key(source.key)
        while dest_iter is not None and current is not None and current.key < target:
            current = next(dest_iter, None)
        existing = current if current is not None and current.key == target else None
        yield Pair(source, target, existing)
