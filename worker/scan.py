"""One planning pass over a CopyJob's source: the parallel listing under the platform's limits, turned into
the `PlanResult` the operator checks. Used by the planner pod (`worker/planpod.py`) and by `ferry plan`.

Where it sits: between the S3 clients (made and checked by the caller) and the plan. `scan` runs a
`parallel_listing.ParallelListing`, keeps today's limits (too many listed keys: TooManyObjects; the listing
deadline: ListingTooLong; a listing that fails after its retries: ListingFailed, worth retrying), sizes
pieces from spec.shardSize, and merges pieces until shards cut from them fit the plan ConfigMap.
A `ListingTracker` follows the listing for status servers and displays.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.model.quantity import format_duration
from ferry.operator.planning import MAX_LEVEL, at_level, piece_targets
from ferry.operator.planresult import MAX_RESULT_BYTES, PlanPart, PlanResult
from ferry.operator.render import fit_shards, shards_budget
from ferry.worker.filters import ObjectFilter
from ferry.worker.leanlist import LeanListing
from ferry.worker.parallel_listing import (
    DEFAULT_LISTERS,
    PAGE_SIZE,
    DeadlinePassed,
    DestinationSide,
    ListingCounts,
    NotAListing,
    ParallelListing,
    TooManyKeys,
)
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry

__all__ = [
    "DEFAULT_LISTERS",
    "LISTING_RETRY",
    "ListingProgress",
    "ListingTracker",
    "PlanningStopped",
    "Scan",
    "scan",
]

LISTING_RETRY = RetryPolicy(max_attempts=5, base_seconds=0.5)


class PlanningStopped(Exception):
    """Planning cannot go on; ``reason`` is one of `planresult.PLANNER_REASONS`."""

    def __init__(self, reason: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class ListingProgress:
    """A snapshot of a listing: keys listed, objects and bytes accepted by the filter, listers busy,
    ranges finished of those known, requests made, the rate and the estimated time left."""

    listed: int = 0
    objects: int = 0
    bytes: int = 0
    listers: int = 0
    ranges_done: int = 0
    ranges_total: int = 0
    requests: int = 0
    keys_per_second: float = 0.0
    eta_seconds: float | None = None


class ListingTracker:
    """Thread-safe progress of one listing: the listing records, status servers and displays take
    `snapshot`s.

    The ETA's basis: finished ranges tell how many keys a range holds on average; the ranges not yet
    finished are assumed to hold as many, less what they have listed already; the keys left divided by
    the rate of the listing so far give the seconds left. Ranges are cut from busy ones as listers
    free up, so the estimate is rough early on and firms up as ranges finish; it is None until a range
    has finished and keys have been listed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._counts: ListingCounts | None = None

    def start(self) -> None:
        with self._lock:
            self._started = self._clock()

    def record(self, counts: ListingCounts) -> None:
        with self._lock:
            self._counts = counts

    def snapshot(self) -> ListingProgress:
        with self._lock:
            counts, elapsed = self._counts, self._clock() - self._started
        if counts is None:
            return ListingProgress()
        rate = counts.listed / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if counts.ranges_done and rate > 0:
            per_range = counts.listed_done / counts.ranges_done
            left_ranges = counts.ranges_total - counts.ranges_done
            listed_open = counts.listed - counts.listed_done
            eta = max(0.0, per_range * left_ranges - listed_open) / rate
        return ListingProgress(
            listed=counts.listed,
            objects=counts.objects,
            bytes=counts.bytes,
            listers=counts.listers,
            ranges_done=counts.ranges_done,
            ranges_total=counts.ranges_total,
            requests=counts.requests,
            keys_per_second=rate,
            eta_seconds=eta,
        )


@dataclass(frozen=True)
class Scan:
    result: PlanResult
    #: ListObjectsV2 requests made (source and destination, retries included), for the cost estimate.
    list_requests: int
    #: (objects, bytes) already at the destination that the worker would skip; None if not compared.
    existing: tuple[int, int] | None
    seconds: float


def _lean(client: Any) -> Any:
    """The lean ListObjectsV2 over a boto3 client (`leanlist`); anything else is used as it is."""
    if hasattr(client, "_request_signer") and hasattr(client, "_endpoint"):
        return LeanListing(client)
    return client


def scan(
    spec: CopyJobSpec,
    source: Any,
    *,
    destination: Any | None = None,
    listers: int = DEFAULT_LISTERS,
    deadline_seconds: float | None = None,
    max_objects: int | None = None,
    tracker: ListingTracker | None = None,
    clock: Callable[[], float] = time.monotonic,
    page_size: int = PAGE_SIZE,
    part: tuple[int, int] | None = None,
) -> Scan:
    """List the source of ``spec`` in parallel within the limits and return the plan's histogram and
    pieces. With a ``destination`` client, also count what the destination already holds.

    Raises `PlanningStopped`: TooManyObjects (more than ``max_objects`` keys listed), ListingTooLong
    (past ``deadline_seconds``), ListingFailed with ``retry=True`` (a request failed after its retries;
    never a partial plan) or EndpointNotAllowed.

    With ``part`` = (index, count), list only pod ``index``'s part of the key space divided over
    ``count`` planner pods (`keyspace.part_cuts`); the result says which part it covers.
    """
    where = f"s3://{spec.source.bucket}/{spec.source.prefix}"
    tracker = tracker or ListingTracker(clock)
    tracker.start()
    started = clock()
    side = None
    if destination is not None:
        side = DestinationSide(
            _lean(destination), spec.destination.bucket, spec.destination.prefix, spec.overwrite
        )
    targets = piece_targets(spec.shard_size.max_objects, spec.shard_size.max_bytes)
    listing = ParallelListing(
        _lean(source),
        spec.source.bucket,
        spec.source.prefix,
        object_filter=ObjectFilter.compile(spec.filter, spec.source.prefix),
        # Pieces no larger than the user's shard bounds, so that the operator can honour them exactly.
        piece_objects=targets[0],
        piece_bytes=targets[1],
        call=lambda request: call_with_retry(request, LISTING_RETRY),
        clock=clock,
        listers=listers,
        page_size=page_size,
        max_objects=max_objects,
        deadline_seconds=deadline_seconds,
        destination=side,
        report=tracker.record,
        part=part,
    )
    try:
        outcome = listing.run()
    except TooManyKeys as exc:
        raise PlanningStopped(
            "TooManyObjects",
            f"{where} holds more than {max_objects:,} objects, the platform's limit for one CopyJob "
            "(planning.maxObjects); split it into CopyJobs of narrower source.prefix",
        ) from exc
    except DeadlinePassed as exc:
        assert deadline_seconds is not None
        raise PlanningStopped(
            "ListingTooLong",
            f"listing {where} took longer than {format_duration(deadline_seconds)}, the platform's limit "
            f"(planning.listingDeadlineSeconds), after {exc.listed:,} objects; split it into "
            "CopyJobs of narrower source.prefix, or check that spec.source.endpoint is a real S3 service",
        ) from exc
    except RetriesExhausted as exc:
        # Ferry's words only (retry.classify): what the endpoint answered never reaches the operator.
        reason = "EndpointNotAllowed" if exc.last.code == "EndpointNotAllowed" else "ListingFailed"
        raise PlanningStopped(
            reason,
            f"listing {where} failed after {exc.attempts} attempt(s): {exc.last.code}: {exc.last.message}",
            retry=reason == "ListingFailed",
        ) from exc
    except NotAListing as exc:
        # Pages out of key order, or a truncated page without a token: an endpoint that ignores StartAfter
        # and continuation tokens (or answers endlessly with whatever it likes) fails the same way again.
        raise PlanningStopped(
            "NotS3",
            f"listing {where} failed: spec.source.endpoint answers listings that break S3's rules ({exc}); "
            "it does not behave as an S3 service: check spec.source.endpoint",
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        # An answer that is not a listing (no Key, a Size that is not a number): never a partial plan.
        raise PlanningStopped(
            "ListingFailed",
            f"listing {where} failed: an answer was not a usable listing ({type(exc).__name__})",
            retry=True,
        ) from exc
    levels: list[int] | None = None
    level = outcome.level
    if outcome.levels is not None and level is not None:
        # A part goes with its levels, for the operator to join the parts as one listing would have cut
        # them; thinned by raising its level until the answer fits.
        pieces, levels, level = fit_part(list(outcome.pieces), list(outcome.levels), level)
    else:
        # Pieces merged until they fit beside the spec in the plan ConfigMap: every shard cut from them fits.
        pieces = fit_shards(list(outcome.pieces), shards_budget(spec))
    result = PlanResult(
        outcome.histogram,
        tuple(pieces),
        datetime.now(UTC).replace(microsecond=0),
        destination_checked=destination is not None,
        part=None if part is None else PlanPart(part[0], part[1], *outcome.span),
        levels=None if levels is None else tuple(levels),
        level=level,
    )
    return Scan(result, outcome.requests, outcome.existing, clock() - started)


#: Most a part's pieces may take in a planner pod's answer: the rest of `planresult.MAX_RESULT_BYTES` is
#: left for the levels, the histogram and the other fields.
PART_PIECES_BYTES = MAX_RESULT_BYTES - 256 * 1024


def fit_part(
    pieces: list[Shard], levels: list[int], level: int, limit: int = PART_PIECES_BYTES
) -> tuple[list[Shard], list[int] | None, int | None]:
    """A part's pieces thinned until their JSON fits ``limit``: by raising the level (`planning.at_level`,
    which the operator's join repeats for every part, so the parts still join as one listing), or, for
    keys that end pieces at every level, by the pairwise merge (the answer then carries no levels)."""
    for _ in range(MAX_LEVEL + 2):
        if len(json.dumps([p.as_json() for p in pieces])) <= limit:
            return pieces, levels, level
        level += 1
        pieces, levels = at_level(pieces, levels, level)
    return fit_shards(pieces, limit), None, None
