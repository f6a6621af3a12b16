"""The plan both sides share: what the operator writes into the `<copyjob>-plan` ConfigMap and each
worker pod reads. Pure values and their JSON forms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Shards a worker Job's pods need not run (finished under an earlier Job of the same CopyJob), in the
#: Job's pod template: a pod whose index is listed ends at once. The Job's own record, so no stale view of
#: a ConfigMap can make a pod skip a shard that is to run again.
FINISHED_SHARDS_ENV = "FERRY_FINISHED_SHARDS"
#: Longest list written: ranges keep it short; a longer one is left out (every shard then runs, and a
#: finished one only lists its range and skips what it finds).
FINISHED_SHARDS_LIMIT = 32 * 1024

#: Keys of the plan ConfigMap (mounted at FERRY_PLAN_DIR in worker pods).
SPEC_FILE = "spec.json"
SHARDS_FILE = "shards.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Shard:
    """Keys after ``start_after`` (exclusive) up to ``end`` (inclusive); ``None`` means open-ended."""

    start_after: str | None
    end: str | None
    objects: int
    bytes: int

    def as_json(self) -> dict[str, object]:
        return {"startAfter": self.start_after, "end": self.end, "objects": self.objects, "bytes": self.bytes}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Shard:
        start, end = raw.get("startAfter"), raw.get("end")
        return cls(
            start_after=str(start) if start is not None else None,
            end=str(end) if end is not None else None,
            objects=int(str(raw["objects"])),
            bytes=int(str(raw["bytes"])),
        )


def index_ranges(indexes: Iterable[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"`` (the form of a Job's completedIndexes)."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        start = end + 1
    return ",".join(parts)


def in_ranges(index: int, text: str | None) -> bool:
    """Whether ``index`` is in ``text`` of the form ``"0-2,5"``; anything malformed holds no index."""
    if not text or len(text) > FINISHED_SHARDS_LIMIT:
        return False
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or max(len(first), len(last)) > 9:
            return False
        ranges.append((int(first), int(last or first)))
    return any(first <= index <= last for first, last in ranges)
