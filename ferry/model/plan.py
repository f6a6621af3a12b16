"""The plan both sides share: what the operator writes into the `<copyjob>-plan` ConfigMap and each
worker pod reads. Pure values and their JSON forms.
"""

from __future__ import annotations

from dataclasses import dataclass

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
