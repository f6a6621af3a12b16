"""The plan ConfigMap's contents, read back. Pure: ConfigMap data (strings) in, checked values out.

The operator writes `<copyjob>-plan` once and reads it after every restart. What it takes from it is
the measured part only: the size histogram, the largest object, the shard boundaries and when the
source was listed. Every number derived from them (pod memory, FERRY_MEMORY_LIMIT, concurrency,
parallelism) is recomputed by the operator under the platform's current caps: a ConfigMap sits in the
tenant's namespace, and a number in it proves nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.model.plan import SHARDS_FILE, SPEC_FILE, SUMMARY_FILE, Shard
from ferry.model.quantity import parse_bytes, to_quantity
from ferry.operator.planning import BUCKET_BOUNDS, Histogram
from ferry.operator.planresult import PlanResultInvalid, parse_existing, parse_list_requests

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class PlanUnreadable(ValueError):
    """The ConfigMap does not hold a plan as the operator writes them."""


@dataclass(frozen=True)
class StoredPlan:
    histogram: Histogram
    shards: tuple[Shard, ...]
    listed_at: datetime
    #: A dry run's comparison with the destination and planning's request count: they feed only the
    #: dry run's own cost estimate, bounded by the histogram, never a limit or a size.
    existing: tuple[int, int] | None = None
    list_requests: int | None = None


def histogram_json(histogram: Histogram) -> list[dict[str, Any]]:
    """The summary's (and status.plan's) form: bucket bounds as quantities, empty buckets left out."""
    return [
        {"le": to_quantity(int(str(h["le"]))) if h["le"] != "+Inf" else "+Inf", "count": h["count"]}
        for h in histogram.as_json()
    ]


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanUnreadable(f"{what} is {value!r}, not a count")
    return value


def _histogram(summary: dict[str, Any]) -> Histogram:
    objects = _count(summary.get("objects"), "objects")
    total_bytes = _count(summary.get("bytes"), "bytes")
    counts = [0] * (len(BUCKET_BOUNDS) + 1)
    entries = summary.get("histogram")
    if not isinstance(entries, list) or len(entries) > len(counts):
        raise PlanUnreadable("histogram is not a list of buckets")
    top = -1
    for entry in entries:
        if not isinstance(entry, dict):
            raise PlanUnreadable("a histogram bucket is not an object")
        le = entry.get("le")
        try:
            index = len(BUCKET_BOUNDS) if le == "+Inf" else BUCKET_BOUNDS.index(parse_bytes(str(le)))
        except ValueError as exc:
            raise PlanUnreadable(f"histogram bound {le!r} is not one of the operator's") from exc
        counts[index] = _count(entry.get("count"), f"the count of bucket {le}")
        top = max(top, index)
    if sum(counts) != objects:
        raise PlanUnreadable(f"the histogram counts {sum(counts)} objects, the summary {objects}")
    largest = summary.get("largestObject")
    if largest is None:
        # Plans written before largestObject was stored: the top bucket's bound (or every byte), an
        # over-estimate, which is the safe side for sizing.
        largest = total_bytes if top in (-1, len(BUCKET_BOUNDS)) else min(total_bytes, BUCKET_BOUNDS[top])
    largest = _count(largest, "largestObject")
    if largest > total_bytes or (objects and top < len(BUCKET_BOUNDS) and largest > BUCKET_BOUNDS[top]):
        raise PlanUnreadable(f"largestObject {largest} does not fit the histogram")
    return Histogram(tuple(counts), objects, total_bytes, largest)


def read_plan(data: dict[str, str] | None) -> StoredPlan:
    """Parse and cross-check a plan ConfigMap's data. Raises `PlanUnreadable` saying what is wrong."""
    data = data or {}
    for key in (SPEC_FILE, SHARDS_FILE, SUMMARY_FILE):
        if key not in data:
            raise PlanUnreadable(f"it has no {key}")
    try:
        summary = json.loads(data[SUMMARY_FILE])
        raw_shards = json.loads(data[SHARDS_FILE])
    except ValueError as exc:
        raise PlanUnreadable(f"not JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise PlanUnreadable(f"{SUMMARY_FILE} is not an object")
    if not isinstance(raw_shards, list) or not raw_shards:
        raise PlanUnreadable(f"{SHARDS_FILE} is not a list of shards")
    try:
        shards = tuple(Shard.from_json(s) for s in raw_shards)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PlanUnreadable(f"{SHARDS_FILE} holds a shard that is not one: {exc}") from exc
    histogram = _histogram(summary)
    if any(s.objects < 0 or s.bytes < 0 for s in shards) or (
        sum(s.objects for s in shards),
        sum(s.bytes for s in shards),
    ) != (histogram.objects, histogram.bytes):
        raise PlanUnreadable("the shards do not add up to the summary's objects and bytes")
    try:
        listed_at = datetime.strptime(str(summary.get("listedAt")), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise PlanUnreadable(f"listedAt {summary.get('listedAt')!r} is not a time") from exc
    try:
        existing = parse_existing(summary.get("existing"), histogram)
        list_requests = parse_list_requests(summary.get("listRequests"))
    except PlanResultInvalid as exc:
        raise PlanUnreadable(str(exc)) from exc
    return StoredPlan(histogram, shards, listed_at, existing, list_requests)
