"""What a planner pod hands the operator, and how the operator checks it. Pure: text in, checked values out.

A planner pod (`worker/planpod.py`) runs in the tenant's namespace under the tenant's credentials, so
everything it says is a tenant's word. The operator reads its answer with a size cap and a deadline
(`kube.fetch_from_pod`), and keeps only what it can check for consistency: a size histogram whose
counts add up, and contiguous key-space pieces that cover the whole listing, in key order, with
bounded keys. Shards, pod memory and parallelism are computed from these by the operator itself,
under the platform's caps; a pod that lies about its bucket only mis-sizes its own CopyJob, within
the caps any tenant may ask for anyway.

A failed planning is a termination message (at most 4 KiB, by the kubelet) naming one of the reasons
below: anything else becomes `PlanningFailed`, and the message is cut and stripped of control
characters, because it is shown in the CopyJob's status and Events.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.model.plan import Shard
from ferry.operator.planning import (
    BOUNDARY,
    BUCKET_BOUNDS,
    EXACT,
    EXACT_KEYS,
    FORCED,
    MAX_LEVEL,
    Histogram,
    finished_pieces,
    join_levelled,
    merge_neighbours,
)

RESULT_FORMAT = "ferry.dev/plan-result/v1"
FAILURE_FORMAT = "ferry.dev/planner-failure/v1"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Most a plan result may take: the plan ConfigMap holds at most 1 MiB, and pieces beyond that are
#: merged by the planner before it answers.
MAX_RESULT_BYTES = 2 * 1024 * 1024
#: S3 keys are at most 1,024 bytes of UTF-8.
MAX_KEY_BYTES = 1024
MAX_PIECES = 100_000
MAX_MESSAGE_CHARS = 1024
#: Reasons a planner pod may give; each is also a reason of the CopyJob's Stalled condition.
PLANNER_REASONS = frozenset(
    {
        "BucketNotFound",
        "AccessDenied",
        "CredentialsInvalid",
        "RegionMismatch",
        "EndpointNotAllowed",
        "NotS3",
        "EndpointUnreachable",
        "LocationUnusable",
        "LocationInvalid",
        "ListingFailed",
        "ManifestInvalid",
        "ManifestUnreadable",
        "ListingTooLong",
        "TooManyObjects",
        "InvalidSpec",
        "PlanningFailed",
        # spec.versions all into a bucket without versioning (worker/versioningcheck.py).
        "DestinationNotVersioned",
        # preserve.objectLock into a bucket without Object Lock (worker/lockcheck.py).
        "ObjectLockNotEnabled",
    }
)


#: More requests than listing the largest bucket a CopyJob may hold (the platform's object cap is far
#: lower): a larger count is not a measurement.
MAX_LIST_REQUESTS = 10**9


#: Most planner pods one CopyJob's listing is divided over (the chart's planning.pods is bounded by it).
MAX_PLANNER_PODS = 16


class PlanResultInvalid(ValueError):
    """The planner's answer is not a plan the operator can use; the message says what is wrong."""


@dataclass(frozen=True)
class PlanPart:
    """Which part of the key space a planner pod listed: pod ``index`` of ``count`` took the keys after
    ``start_after`` up to ``end`` (None: the beginning, and the open end)."""

    index: int
    count: int
    start_after: str | None
    end: str | None

    def as_json(self) -> dict[str, object]:
        return {"index": self.index, "count": self.count, "startAfter": self.start_after, "end": self.end}


@dataclass(frozen=True)
class PlanResult:
    histogram: Histogram
    pieces: tuple[Shard, ...]
    listed_at: datetime
    #: Whether the planner checked the destination (a dry run without its credentials does not).
    destination_checked: bool
    #: (objects, bytes) the destination already holds that a copy would skip; a dry run's planner
    #: compares, others leave it to the workers (None).
    existing: tuple[int, int] | None = None
    #: The requests planning made (ListObjectsV2 calls, or GETs of a manifest's files), for the cost.
    list_requests: int | None = None
    #: The part of the key space this answer covers when several planner pods list one source (None:
    #: all of it).
    part: PlanPart | None = None
    #: A part's pieces as its planner joined them, not finished (`planning.finished_pieces`): the level
    #: of each piece's end (the last `BOUNDARY`) and the part's level, for `merge_parts` to join the parts
    #: as one planner of all the keys would have cut them. None: pieces to take as they are.
    levels: tuple[int, ...] | None = None
    level: int | None = None

    def to_json(self) -> str:
        h = self.histogram
        return json.dumps(
            {
                "format": RESULT_FORMAT,
                "listedAt": self.listed_at.strftime(TIME_FORMAT),
                "destinationChecked": self.destination_checked,
                "histogram": {
                    "counts": list(h.counts),
                    "objects": h.objects,
                    "bytes": h.bytes,
                    "largest": h.largest,
                },
                "pieces": [p.as_json() for p in self.pieces],
                **(
                    {"existing": {"objects": self.existing[0], "bytes": self.existing[1]}}
                    if self.existing is not None
                    else {}
                ),
                **({"listRequests": self.list_requests} if self.list_requests is not None else {}),
                **({"part": self.part.as_json()} if self.part is not None else {}),
                **(
                    {"levels": list(self.levels), "level": self.level}
                    if self.levels is not None and self.level is not None
                    else {}
                ),
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class PlannerFailure:
    reason: str
    message: str

    def to_json(self) -> str:
        return json.dumps({"format": FAILURE_FORMAT, "reason": self.reason, "message": self.message})


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**63:
        raise PlanResultInvalid(f"{what} is not a count")
    return value


def _key(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise PlanResultInvalid(f"{what} is not an S3 key")
    return value


def _histogram(raw: Any) -> Histogram:
    if not isinstance(raw, dict):
        raise PlanResultInvalid("histogram is not an object")
    counts = raw.get("counts")
    if not isinstance(counts, list) or len(counts) != len(BUCKET_BOUNDS) + 1:
        raise PlanResultInvalid(f"histogram.counts is not a list of {len(BUCKET_BOUNDS) + 1} counts")
    checked = tuple(_count(c, "a histogram count") for c in counts)
    objects, total = (
        _count(raw.get("objects"), "histogram.objects"),
        _count(raw.get("bytes"), "histogram.bytes"),
    )
    largest = _count(raw.get("largest"), "histogram.largest")
    if sum(checked) != objects:
        raise PlanResultInvalid("the histogram's counts do not add up to its objects")
    top = max((i for i, c in enumerate(checked) if c), default=-1)
    if largest > total or (0 <= top < len(BUCKET_BOUNDS) and largest > BUCKET_BOUNDS[top]):
        raise PlanResultInvalid("the largest object does not fit the histogram")
    if objects and top >= 0 and top > 0 and largest <= BUCKET_BOUNDS[top - 1]:
        raise PlanResultInvalid("the largest object is smaller than its histogram bucket")
    return Histogram(checked, objects, total, largest)


def _pieces(raw: Any, span: tuple[str | None, str | None] = (None, None)) -> tuple[Shard, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_PIECES:
        raise PlanResultInvalid(f"pieces is not a list of 1 to {MAX_PIECES:,} ranges")
    pieces = []
    for item in raw:
        if not isinstance(item, dict):
            raise PlanResultInvalid("a piece is not an object")
        pieces.append(
            Shard(
                _key(item.get("startAfter"), "a piece's startAfter"),
                _key(item.get("end"), "a piece's end"),
                _count(item.get("objects"), "a piece's objects"),
                _count(item.get("bytes"), "a piece's bytes"),
            )
        )
    if (pieces[0].start_after, pieces[-1].end) != span:
        raise PlanResultInvalid("the pieces do not cover the whole listing (or the pod's part of it)")
    for before, after in itertools.pairwise(pieces):
        if before.end is None or before.end != after.start_after:
            raise PlanResultInvalid("the pieces are not contiguous")
    ends = [p.end for p in pieces[:-1]]
    if any(a is not None and b is not None and a >= b for a, b in itertools.pairwise(ends)):
        raise PlanResultInvalid("the pieces are not in key order")
    return tuple(pieces)


def parse_plan_result(text: str) -> PlanResult:
    """Check a planner's answer. Raises `PlanResultInvalid` naming the first thing wrong."""
    if len(text) > MAX_RESULT_BYTES:
        raise PlanResultInvalid("the answer is larger than a plan can be")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise PlanResultInvalid("the answer is not JSON") from exc
    if not isinstance(raw, dict) or raw.get("format") != RESULT_FORMAT:
        raise PlanResultInvalid(f"the answer is not a {RESULT_FORMAT} document")
    histogram = _histogram(raw.get("histogram"))
    part = _part(raw.get("part"))
    pieces = _pieces(raw.get("pieces"), (None, None) if part is None else (part.start_after, part.end))
    if (sum(p.objects for p in pieces), sum(p.bytes for p in pieces)) != (histogram.objects, histogram.bytes):
        raise PlanResultInvalid("the pieces do not add up to the histogram")
    try:
        listed_at = datetime.strptime(str(raw.get("listedAt")), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise PlanResultInvalid("listedAt is not a time") from exc
    checked = raw.get("destinationChecked")
    if not isinstance(checked, bool):
        raise PlanResultInvalid("destinationChecked is not true or false")
    levels, level = _levels(raw.get("levels"), raw.get("level"), pieces, part)
    return PlanResult(
        histogram,
        pieces,
        listed_at,
        checked,
        parse_existing(raw.get("existing"), histogram),
        parse_list_requests(raw.get("listRequests")),
        part,
        levels,
        level,
    )


def _levels(
    raw: Any, raw_level: Any, pieces: Sequence[Shard], part: PlanPart | None
) -> tuple[tuple[int, ...] | None, int | None]:
    """A part's levels, checked against what a planner can have held: one per piece, the last the part's
    own end (`BOUNDARY`), the others of the part's level or above (or `FORCED`, closed by the hard bound);
    at level `EXACT`, one key per piece and no more than `EXACT_KEYS` of them. What no check can tell (a
    level a key's hash does not give) only moves where this CopyJob's own shards are cut."""
    if raw is None and raw_level is None:
        return None, None
    if part is None:
        raise PlanResultInvalid("levels come with a part of the key space only")
    if isinstance(raw_level, bool) or not isinstance(raw_level, int) or not EXACT <= raw_level <= MAX_LEVEL:
        raise PlanResultInvalid(f"level is not a level from {EXACT} to {MAX_LEVEL}")
    if not isinstance(raw, list) or len(raw) != len(pieces):
        raise PlanResultInvalid("levels is not a list of one level per piece")
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlanResultInvalid("a level is not a whole number")
    if raw[-1] != BOUNDARY:
        raise PlanResultInvalid("the last piece does not end where the part does")
    inner = raw[:-1]
    if any(
        not (raw_level <= value <= MAX_LEVEL or (value == FORCED and raw_level != EXACT)) for value in inner
    ):
        raise PlanResultInvalid("a piece's end is not of the part's level")
    if raw_level == EXACT and (
        len(inner) > EXACT_KEYS or any(p.objects != 1 for p in pieces[:-1]) or pieces[-1].objects
    ):
        raise PlanResultInvalid("a part cut key by key holds pieces of more than one key")
    return tuple(raw), raw_level


def _part(raw: Any) -> PlanPart | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PlanResultInvalid("part is not an object")
    count = _count(raw.get("count"), "part.count")
    index = _count(raw.get("index"), "part.index")
    if not 1 <= count <= MAX_PLANNER_PODS or index >= count:
        raise PlanResultInvalid(f"part is not one of 1 to {MAX_PLANNER_PODS} parts")
    start, end = _key(raw.get("startAfter"), "part.startAfter"), _key(raw.get("end"), "part.end")
    if (start is None) != (index == 0) or (end is None) != (index == count - 1):
        raise PlanResultInvalid("part does not begin or end where its index says")
    if start is not None and end is not None and start > end:
        raise PlanResultInvalid("part ends before it starts")
    return PlanPart(index, count, start, end)


def merge_parts(
    parts: Sequence[PlanResult], max_pieces: int, targets: tuple[int, int] = (1000, 2**30)
) -> PlanResult:
    """One plan from the answers of a listing's planner pods, one each, in any order: the parts must
    be those of one division of the key space (every index once, each ending where the next starts),
    or keys would be lost or counted twice. Empty parts (a pod given no keys) add nothing. Raises
    `PlanResultInvalid`; pods that divided a bucket that changed under them disagree, and planning
    again is the remedy.

    Parts that carry their levels join as one planner of all the keys would have cut them
    (`planning.join_levelled`, a small job cut from its first key at the piece sizes ``targets``), so
    several pods give the pieces of one; parts without them join pairwise."""
    if not parts:
        raise PlanResultInvalid("no planner pod answered")
    if len(parts) == 1 and parts[0].part is None:
        return parts[0]
    ordered = sorted(parts, key=lambda r: r.part.index if r.part is not None else -1)
    count = len(ordered)
    for i, result in enumerate(ordered):
        if result.part is None or result.part.index != i or result.part.count != count:
            raise PlanResultInvalid(f"the planner pods' answers are not parts 0 to {count - 1} of {count}")
    spans = [(r.part.start_after, r.part.end) for r in ordered if r.part is not None]
    for (_start, end), (start, _end) in itertools.pairwise(spans):
        if end != start:
            raise PlanResultInvalid("the planner pods divided the key space differently; planning again")
    kept = [r for r in ordered if not _empty(r)]
    pieces = [p for r in kept for p in r.pieces]
    if not pieces:
        pieces = [Shard(None, None, 0, 0)]
    elif all(r.levels is not None and r.level is not None for r in kept):
        levels = [value for r in kept for value in r.levels or ()]
        joined, _, level = join_levelled(pieces, levels, max(r.level or 0 for r in kept), max_pieces)
        pieces = finished_pieces(joined, level, None, None, *targets)
    else:
        pieces = merge_neighbours(pieces, max_pieces)
    histograms = [r.histogram for r in ordered]
    counts = tuple(sum(column) for column in zip(*(h.counts for h in histograms), strict=True))
    histogram = Histogram(
        counts,
        sum(h.objects for h in histograms),
        sum(h.bytes for h in histograms),
        max(h.largest for h in histograms),
    )
    existing = [r.existing for r in ordered]
    requests = [r.list_requests for r in ordered]
    return PlanResult(
        histogram,
        tuple(pieces),
        min(r.listed_at for r in ordered),
        all(r.destination_checked for r in ordered),
        None
        if any(e is None for e in existing)
        else (sum(e[0] for e in existing if e), sum(e[1] for e in existing if e)),
        None if any(q is None for q in requests) else sum(q for q in requests if q is not None),
    )


def _empty(result: PlanResult) -> bool:
    part = result.part
    return part is not None and part.start_after is not None and part.start_after == part.end


def parse_existing(raw: Any, histogram: Histogram) -> tuple[int, int] | None:
    """What the destination holds of the plan, as a planner answers it and the plan ConfigMap keeps it:
    never more objects or bytes than the source has. Raises PlanResultInvalid."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PlanResultInvalid("existing is not an object")
    objects, size = _count(raw.get("objects"), "existing.objects"), _count(raw.get("bytes"), "existing.bytes")
    if objects > histogram.objects or size > histogram.bytes:
        raise PlanResultInvalid("existing counts more than the source holds")
    return objects, size


def parse_list_requests(raw: Any) -> int | None:
    """Planning's request count, bounded. Raises PlanResultInvalid."""
    if raw is None:
        return None
    requests = _count(raw, "listRequests")
    if requests > MAX_LIST_REQUESTS:
        raise PlanResultInvalid("listRequests is larger than any listing makes")
    return requests


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)[:MAX_MESSAGE_CHARS]


def parse_planner_failure(message: str) -> PlannerFailure | None:
    """A failed planner pod's termination message, checked; None when it holds no failure document."""
    try:
        raw = json.loads(message[: 8 * 1024])
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("format") != FAILURE_FORMAT:
        return None
    reason, text = raw.get("reason"), raw.get("message")
    if not isinstance(text, str):
        return None
    return PlannerFailure(
        reason if isinstance(reason, str) and reason in PLANNER_REASONS else "PlanningFailed",
        _printable(text),
    )


#: Largest rate and ETA a planner's /status may report that are rendered (about 31 years of seconds).
MAX_RATE = 1e9
MAX_ETA_SECONDS = 1e9
#: Listers a planner may report (its FERRY_PLAN_LISTERS is at most 256).
MAX_LISTERS = 4096


def _status_count(raw: dict[str, Any], name: str, limit: int = 2**63 - 1) -> int | None:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        return None
    return value


def _status_number(raw: dict[str, Any], name: str, limit: float) -> float | None:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= limit else None


def parse_listing_progress(text: str | None) -> dict[str, Any] | None:
    """status.plan.listingProgress from a planner's `/status` (read with a size cap by the caller),
    checked field by field: `objects` and `bytes` must be counts, or nothing is shown; `listed`,
    `listers`, `keysPerSecond` and `etaSeconds` are shown only when they are bounded numbers (an older
    planner sends none of them). None while nothing was listed yet (a CopyJob stalled before its listing
    began shows no listing progress) or when the answer is not a JSON object."""
    try:
        raw = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    objects, nbytes = _status_count(raw, "objects"), _status_count(raw, "bytes")
    if objects is None or nbytes is None:
        return None
    listed = _status_count(raw, "listed")
    if not objects and not listed:
        return None
    progress: dict[str, Any] = {"objects": objects, "bytes": nbytes}
    if listed is not None:
        progress["listed"] = listed
    listers = _status_count(raw, "listers", MAX_LISTERS)
    if listers is not None:
        progress["listers"] = listers
    rate = _status_number(raw, "keysPerSecond", MAX_RATE)
    if rate is not None:
        progress["keysPerSecond"] = round(rate, 1)
    eta = _status_number(raw, "etaSeconds", MAX_ETA_SECONDS)
    if eta is not None:
        progress["etaSeconds"] = math.ceil(eta)
    return progress


def combine_progress(parts: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """status.plan.listingProgress of a listing divided over several planner pods, from each pod's
    (`parse_listing_progress`): counts and rates add up, the listing ends with its slowest part."""
    known = [p for p in parts if p is not None]
    if not known:
        return None
    if len(parts) == 1:
        return known[0]
    combined: dict[str, Any] = {
        "objects": sum(p["objects"] for p in known),
        "bytes": sum(p["bytes"] for p in known),
    }
    for name in ("listed", "listers", "keysPerSecond"):
        values = [p[name] for p in known if name in p]
        if len(values) == len(known):
            combined[name] = round(sum(values), 1) if name == "keysPerSecond" else sum(values)
    etas = [p["etaSeconds"] for p in known if "etaSeconds" in p]
    if len(etas) == len(parts):
        combined["etaSeconds"] = max(etas)
    return combined
