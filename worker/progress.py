"""Accounting and rates for a running copy. Pure: times are passed in, nothing reads a clock.

The accounting always closes: discovered = copied + skipped + failed + pending.

Also the bounded vocabularies of the worker's metrics (request operations and answer codes) and the
transfer-time histogram, kept here so the engine records values and the status server only renders them.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from ferry.worker.objects import Outcome

V = TypeVar("V")


def _evolve(value: V, **changes: Any) -> V:
    """`dataclasses.replace` for the values updated at every object (counts, the latency histogram): a
    copy of the fields with the changes, without replace's walk over the fields and the frozen class's
    `object.__setattr__` per field, which took about 4% of the CPU of a small object's copy. Only for
    frozen dataclasses without `__post_init__` or slots, with ``changes`` naming their fields."""
    new: V = object.__new__(type(value))
    new.__dict__.update(value.__dict__, **changes)
    return new


@dataclass(frozen=True)
class Counts:
    discovered: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_discovered: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0
    listing_done: bool = False
    #: What the source lister has returned so far (after filter and key range), ahead of `discovered`,
    #: which counts objects as the copier takes them in. The lister runs a few pages ahead, so on most
    #: jobs it finishes long before the copier has taken in the last object: from then on the total is
    #: known and a display can show percent and ETA.
    listed: int = 0
    bytes_listed: int = 0
    listed_all: bool = False
    #: Objects copied at a newer version than the one listed: the source changed during their copy, and
    #: they were read anew and copied again (they are counted in `copied` too).
    changed_during_copy: int = 0
    #: Archived source objects (spec.archived, archive.py): skipped as archived (counted in `skipped`
    #: too), restored and handed to the copier (then counted as any copy), restores not done in time
    #: (restore.maxWaitSeconds, or beyond what one run waits for; in `failed` too), and set aside now,
    #: waiting for their restore (in `pending`).
    archived_skipped: int = 0
    restored: int = 0
    restore_timed_out: int = 0
    restore_waiting: int = 0

    @property
    def done(self) -> int:
        return self.copied + self.skipped + self.failed

    @property
    def pending(self) -> int:
        return self.discovered - self.done

    @property
    def bytes_done(self) -> int:
        return self.bytes_copied + self.bytes_skipped + self.bytes_failed

    @property
    def total(self) -> int | None:
        """Objects this run will handle, once known (None while the source is still being listed)."""
        if self.listing_done:
            return self.discovered
        return self.listed if self.listed_all else None

    @property
    def bytes_total(self) -> int | None:
        if self.listing_done:
            return self.bytes_discovered
        return self.bytes_listed if self.listed_all else None

    def list_page(self, objects: int, nbytes: int) -> Counts:
        return _evolve(self, listed=self.listed + objects, bytes_listed=self.bytes_listed + nbytes)

    def discover(self, size: int) -> Counts:
        return _evolve(self, discovered=self.discovered + 1, bytes_discovered=self.bytes_discovered + size)

    def archive_event(self, **deltas: int) -> Counts:
        """Counts with the archive counters named in ``deltas`` moved by their values."""
        return _evolve(self, **{name: getattr(self, name) + delta for name, delta in deltas.items()})

    def recopied_after_change(self) -> Counts:
        return _evolve(self, changed_during_copy=self.changed_during_copy + 1)

    def finish(self, outcome: Outcome, size: int) -> Counts:
        if outcome is Outcome.COPIED:
            return _evolve(self, copied=self.copied + 1, bytes_copied=self.bytes_copied + size)
        if outcome is Outcome.SKIPPED:
            return _evolve(self, skipped=self.skipped + 1, bytes_skipped=self.bytes_skipped + size)
        return _evolve(self, failed=self.failed + 1, bytes_failed=self.bytes_failed + size)


class RateWindow:
    """Objects/s and bytes/s over the last ``seconds`` of samples of cumulative done counts."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, objects: int, nbytes: int) -> None:
        self._samples.append((now, objects, nbytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.seconds:
            self._samples.popleft()

    def rates(self) -> tuple[float, float]:
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, o0, b0), (t1, o1, b1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0
        return (o1 - o0) / span, (b1 - b0) / span


def eta_seconds(counts: Counts, objects_per_second: float, bytes_per_second: float) -> float | None:
    """Seconds left, or None when unknown: the total is not known yet (the source is still being
    listed), or nothing finished within the rate window (a stale figure would freeze on screen).

    Both the objects and the bytes left are projected and the slower wins, because small objects are
    bound by requests and large ones by bandwidth.
    """
    total, bytes_total = counts.total, counts.bytes_total
    if total is None or bytes_total is None:
        return None
    objects_left = total - counts.done
    if objects_left <= 0:
        return 0.0
    estimates = []
    if objects_per_second > 0:
        estimates.append(objects_left / objects_per_second)
    bytes_left = bytes_total - counts.bytes_done
    if bytes_per_second > 0 and bytes_left > 0:
        estimates.append(bytes_left / bytes_per_second)
    return max(estimates) if estimates else None


# -- metrics vocabularies ---------------------------------------------------------------------------------


class Operation(StrEnum):
    """The `operation` label of ``ferry_requests_total``: one value per kind of S3 request made."""

    LIST = "LIST"
    HEAD = "HEAD"
    GET = "GET"
    GET_TAGGING = "GET_TAGGING"
    PUT = "PUT"
    COPY = "COPY"
    CREATE_MULTIPART = "CREATE_MULTIPART"
    UPLOAD_PART = "UPLOAD_PART"
    UPLOAD_PART_COPY = "UPLOAD_PART_COPY"
    COMPLETE_MULTIPART = "COMPLETE_MULTIPART"
    RESTORE = "RESTORE"
    #: DeleteObject: a delete marker copied to a versioned destination (spec.versions all).
    DELETE = "DELETE"


#: The `code` label of a request that was answered with success.
OK_CODE = "2xx"
#: The `code` label of an error whose code is not in `KNOWN_ERROR_CODES`.
OTHER_CODE = "other"

#: S3 error codes kept as they are in the `code` label. Anything else (a server may answer any text)
#: becomes its HTTP status class or `other`, so the label's values stay a small, fixed set.
KNOWN_ERROR_CODES = frozenset(
    {
        # throttling
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestThrottled",
        # transient (server, network, body)
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "BadDigest",
        "IncompleteBody",
        "XAmzContentSHA256Mismatch",
        "InvalidDigest",
        "OperationAborted",
        "ChecksumMismatch",
        "ConnectionError",
        "ReadTimeout",
        # permanent
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchUpload",
        "PreconditionFailed",
        "InvalidRange",
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooLarge",
        "EntityTooSmall",
        "InvalidRequest",
        "InvalidArgument",
        "InvalidStorageClass",
        "KMS.DisabledException",
        "NotImplemented",
        # archived objects (archive.py)
        "InvalidObjectState",
        "ObjectNotInActiveTierError",
        "RestoreAlreadyInProgress",
    }
)


def code_label(code: str) -> str:
    """The bounded `code` label for an answer: `2xx`, a known S3 error code, an HTTP status class
    (``404`` → ``4xx``, what botocore reports for errors without a body, e.g. to HEAD), or `other`."""
    if code == OK_CODE or code in KNOWN_ERROR_CODES:
        return code
    if len(code) == 3 and code.isdigit() and code[0] in "12345":
        return f"{code[0]}xx"
    return OTHER_CODE


#: Upper bounds of the transfer-time histogram: 5 ms (a small object on a local network) to 60 s (a
#: large part over a slow link); slower transfers land in +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass(frozen=True)
class LatencyHistogram:
    """Seconds per successful transfer, as Prometheus histograms count them: per bucket (the last one
    is +Inf), a sum and a count. A value: `observe` returns a new histogram."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    total_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> LatencyHistogram:
        # `le` buckets: a value equal to a bound belongs to that bound's bucket.
        index = bisect.bisect_left(self.bounds, seconds)
        counts = list(self.counts)
        counts[index] += 1
        return _evolve(self, counts=tuple(counts), total_seconds=self.total_seconds + seconds)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, transfers at or below it) per bucket, ending with (inf, count)."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
