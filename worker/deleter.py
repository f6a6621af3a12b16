"""The deletes of a sync (`spec.mode: sync`): list both sides, count what the source no longer holds,
and, once `syncdeletes.decide_deletes` allowed it, delete exactly that.

Where it sits: `ferry run` (worker/run.py) runs the copy engine first, then `SyncSides.census`, then
the pure decision, then `SyncSides.delete`. The census keeps only counts and a short sample of keys,
so memory does not grow with the bucket; the delete pass lists both sides again instead of trusting
a list made minutes earlier, and asks the source for each candidate once more (HEAD) just before its
batch is deleted, so an object written back at the source meanwhile is kept. A pass never deletes
more than the decision allowed, whatever it finds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ferry.model import CopyJobSpec
from ferry.worker.copier import MISSING_CODES
from ferry.worker.filters import ObjectFilter
from ferry.worker.objects import FailedObject, KeyRange, ObjectInfo
from ferry.worker.ratelimit import RateShare, TokenBucket
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry
from ferry.worker.s3 import list_pages
from ferry.worker.syncdeletes import (
    Census,
    CopyEnd,
    DeleteDecision,
    DeleteLimit,
    decide_deletes,
    destination_only,
    source_form,
)

log = logging.getLogger(__name__)

__all__ = ["MAX_BATCH", "SAMPLE_KEYS", "CensusResult", "DeleteResult", "SyncOutcome", "SyncSides", "run_sync"]

#: Keys in one DeleteObjects request: S3's own limit.
MAX_BATCH = 1000
#: Destination keys a census keeps to show (a dry run's list, the summary); the count is always exact.
SAMPLE_KEYS = 1000
#: Failed deletes kept with their reason; the count is always exact.
SAMPLE_FAILURES = 20
#: Candidates re-checked at the source at once before their batch is deleted.
CHECKS_AT_ONCE = 16


@dataclass(frozen=True)
class CensusResult:
    census: Census
    #: The first destination keys that would be deleted, in key order (at most SAMPLE_KEYS).
    sample: tuple[str, ...]
    #: Why a listing broke off (the census is then incomplete).
    error: str | None = None
    #: Asked to stop (SIGTERM) before the end of its range (the census is then incomplete).
    stopped: bool = False


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    #: Candidates the source held again when re-checked just before their delete: kept.
    kept: int
    failed: int
    failures: tuple[FailedObject, ...] = ()
    #: Why the pass stopped early (a listing or check that kept failing, or the limit reached).
    error: str | None = None
    #: Asked to stop (SIGTERM) before the end of its range: what is counted was deleted; a batch being
    #: checked when the stop came was not deleted (the next pass finds it again).
    stopped: bool = False


@dataclass
class SyncSides:
    """Both locations of a sync, with the clients and retry policy its requests use."""

    spec: CopyJobSpec
    source_client: Any
    destination_client: Any
    retry: RetryPolicy = RetryPolicy()
    #: Keys per listing request (S3's most, 1000, unless a test needs several pages of a few keys).
    page_size: int = 1000
    #: The source keys whose side of the sync this covers: a shard's range in a worker pod of the
    #: operator (both listings are cut to it, the destination's by each key's source form); all of
    #: them in `ferry run`.
    key_range: KeyRange = KeyRange()
    #: Candidates checked and deleted together (DeleteObjects takes at most MAX_BATCH).
    batch_size: int = MAX_BATCH
    _requests: TokenBucket = field(init=False)
    _filter: ObjectFilter = field(init=False)

    def __post_init__(self) -> None:
        # Deletes, checks and listings count against spec.rateLimit like the copy's requests.
        self._requests = TokenBucket(RateShare.of(self.spec.rate_limit).requests_per_second)
        self._filter = ObjectFilter.compile(self.spec.filter, self.spec.source.prefix)

    # -- the census --------------------------------------------------------------------------------------

    def census(self, sample: int = SAMPLE_KEYS, stop: threading.Event | None = None) -> CensusResult:
        """Count both sides in scope and the destination objects the source lacks; keep a few keys.
        Once ``stop`` is set the count ends there, incomplete."""
        counted = {"source": 0, "destination": 0, "candidates": 0}
        keys: list[str] = []

        def source_keys() -> Iterator[str]:
            for obj in self._source_objects():
                if self._filter.accepts(obj):
                    counted["source"] += 1
                yield obj.key

        sources = source_keys()
        try:
            for obj, at_source in self._joined(sources):
                if stop is not None and stop.is_set():
                    error = "stopped before the end of the range"
                    return CensusResult(self._counted(counted, complete=False), tuple(keys), error, True)
                counted["destination"] += 1
                if not at_source:
                    counted["candidates"] += 1
                    if len(keys) < sample:
                        keys.append(obj.key)
            for _ in sources:  # the source objects past the destination's last key count too
                pass
        except Exception as exc:  # any listing failure leaves the census incomplete, which deletes nothing
            error = f"listing failed: {_failure(exc)}"
            return CensusResult(self._counted(counted, complete=False), tuple(keys), error)
        return CensusResult(self._counted(counted, complete=True), tuple(keys))

    @staticmethod
    def _counted(counted: dict[str, int], *, complete: bool) -> Census:
        return Census(
            source_objects=counted["source"],
            destination_objects=counted["destination"],
            candidates=counted["candidates"],
            complete=complete,
        )

    # -- the deletes -------------------------------------------------------------------------------------

    def delete(self, allowed: int, stop: threading.Event | None = None) -> DeleteResult:
        """Delete the destination objects in scope the source lacks, at most ``allowed`` of them (the
        count the decision approved); finding more stops the pass there, with an error. Once ``stop`` is
        set no request is started: a batch whose check was under way is not deleted, so what the result
        counts is exactly what was deleted (a suspension or eviction loses no count)."""
        deleted = kept = failed = 0
        failures: list[FailedObject] = []
        batch: list[ObjectInfo] = []
        error: str | None = None
        stopping = stop or threading.Event()
        size = max(1, min(self.batch_size, MAX_BATCH))
        cut = False  # the range was not gone through to its end

        def flush() -> None:
            nonlocal deleted, kept, failed, cut
            absent, present = self._still_absent(batch, stopping)
            if stopping.is_set():
                cut = True
                batch.clear()
                return
            kept += present
            done, refused = self._delete_batch(absent)
            deleted += done
            failed += len(refused)
            failures.extend(refused[: max(0, SAMPLE_FAILURES - len(failures))])
            batch.clear()

        try:
            for obj, at_source in self._joined(obj.key for obj in self._source_objects()):
                if stopping.is_set():
                    cut = True
                    break
                if at_source:
                    continue
                if deleted + len(batch) >= allowed:
                    error = (
                        f"more destination objects than the {allowed:,} counted and allowed were found "
                        "missing at the source while deleting (the source changed since it was counted); "
                        "stopped there; check the source, then run again"
                    )
                    break
                batch.append(obj)
                if len(batch) >= size:
                    flush()
            if batch:
                flush()
        except Exception as exc:  # a listing or request that kept failing: what was deleted stays deleted
            error = f"deleting stopped after {deleted:,}: {_failure(exc)}"
        return DeleteResult(deleted, kept, failed, tuple(failures), error, stopped=cut)

    def _still_absent(self, batch: list[ObjectInfo], stop: threading.Event) -> tuple[list[ObjectInfo], int]:
        """The objects of ``batch`` whose source key is still missing now, and how many are back (once
        ``stop`` is set the remaining checks are skipped: the caller then deletes nothing)."""

        def check(obj: ObjectInfo) -> bool:
            return True if stop.is_set() else self._at_source(obj)

        with ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="ferry-sync-check") as pool:
            present = list(pool.map(check, batch))
        absent = [obj for obj, here in zip(batch, present, strict=True) if not here]
        return absent, len(batch) - len(absent)

    def _at_source(self, obj: ObjectInfo) -> bool:
        key = source_form(obj.key, self.spec.source.prefix, self.spec.destination.prefix)
        try:
            self._call(lambda: self.source_client.head_object(Bucket=self.spec.source.bucket, Key=key))
        except RetriesExhausted as exc:
            if exc.last.code in MISSING_CODES:
                return False
            raise
        return True

    def _delete_batch(self, batch: list[ObjectInfo]) -> tuple[int, list[FailedObject]]:
        if not batch:
            return 0, []
        sizes = {obj.key: obj.size for obj in batch}
        answer = self._call(
            lambda: self.destination_client.delete_objects(
                Bucket=self.spec.destination.bucket,
                Delete={"Objects": [{"Key": obj.key} for obj in batch], "Quiet": True},
            )
        )
        refused = [
            FailedObject(
                str(item.get("Key", ""))[:1024],
                str(item.get("Code", "DeleteFailed"))[:64],
                str(item.get("Message", ""))[:500],
                1,
                sizes.get(str(item.get("Key", "")), 0),
            )
            for item in answer.get("Errors", ())[: len(batch)]
        ]
        return len(batch) - len(refused), refused

    # -- listings ----------------------------------------------------------------------------------------

    def _joined(self, sources: Iterator[str]) -> Iterator[tuple[ObjectInfo, bool]]:
        """Each destination object in scope with whether the source holds its key."""
        spec = self.spec
        in_scope = (obj for obj in self._destination_objects() if self._in_scope(obj))
        return destination_only(
            sources, in_scope, lambda key: source_form(key, spec.source.prefix, spec.destination.prefix)
        )

    def _in_scope(self, obj: ObjectInfo) -> bool:
        """Whether the filter would have copied this destination object had it been at the source: a
        destination object the job would never write is not the job's to delete."""
        key = source_form(obj.key, self.spec.source.prefix, self.spec.destination.prefix)
        return self._filter.accepts(ObjectInfo(key, obj.size, obj.etag, obj.last_modified))

    def _source_objects(self) -> Iterator[ObjectInfo]:
        source = self.spec.source
        objects = self._objects(self.source_client, source.bucket, source.prefix, self.key_range.start_after)
        return self._ranged(objects, lambda key: key)

    def _destination_objects(self) -> Iterator[ObjectInfo]:
        spec = self.spec
        start = self.key_range.start_after
        # StartAfter only saves requests; `_ranged` is what keeps the listing inside the range.
        first = (
            spec.destination.prefix + start[len(spec.source.prefix) :]
            if start is not None and start.startswith(spec.source.prefix)
            else None
        )
        objects = self._objects(
            self.destination_client, spec.destination.bucket, spec.destination.prefix, first
        )
        return self._ranged(
            objects, lambda key: source_form(key, spec.source.prefix, spec.destination.prefix)
        )

    def _ranged(self, objects: Iterator[ObjectInfo], to_source: Callable[[str], str]) -> Iterator[ObjectInfo]:
        """The objects whose source form is in ``key_range``; the listing stops past its end."""
        key_range = self.key_range
        for obj in objects:
            key = to_source(obj.key)
            if key_range.start_after is not None and key <= key_range.start_after:
                continue
            if key_range.end is not None and key > key_range.end:
                return
            yield obj

    def _objects(
        self, client: Any, bucket: str, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        for page in list_pages(
            client, bucket, prefix, start_after=start_after, page_size=self.page_size, call=self._call
        ):
            yield from page

    def _call(self, request: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            self._requests.take()
            return request()

        return call_with_retry(attempt, self.retry)


def _failure(exc: Exception) -> str:
    if isinstance(exc, RetriesExhausted):
        return str(exc)[:500]
    log.exception("sync request failed")
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# -- a sync after its copy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOutcome:
    """What the delete phase of a sync found, decided and did."""

    decision: DeleteDecision
    census: Census
    #: Destination keys that would be (or were to be) deleted, the first SAMPLE_KEYS of them.
    sample: tuple[str, ...]
    dry_run: bool = False
    result: DeleteResult | None = None
    #: Why the census listing broke off.
    error: str | None = None

    @property
    def deleted(self) -> int:
        return self.result.deleted if self.result else 0

    def message(self) -> str:
        if self.dry_run:
            verdict = (
                f"would refuse: {self.decision.message.removeprefix('nothing deleted: ')}"
                if self.decision.refusal
                else self.decision.message
            )
            return f"dry run: {self.census.candidates:,} destination objects would be deleted ({verdict})"
        if self.result is None:
            return self.decision.message + (f" ({self.error})" if self.error else "")
        done = f"deleted {self.result.deleted:,} of {self.decision.candidates:,} destination objects"
        extra = [f"{self.result.kept:,} kept (back at the source)"] if self.result.kept else []
        if self.result.failed:
            extra.append(f"{self.result.failed:,} deletes failed")
        text = done + (f" ({', '.join(extra)})" if extra else "")
        return f"{text}; {self.result.error}" if self.result.error else text

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "dryRun": self.dry_run,
            "decision": "refused"
            if self.decision.refusal
            else ("delete" if self.decision.delete else "none"),
            "reason": self.decision.refusal.value if self.decision.refusal else None,
            "message": self.message(),
            "sourceObjects": self.census.source_objects,
            "destinationObjects": self.census.destination_objects,
            "candidates": self.census.candidates,
            "allowed": self.decision.allowed,
            "deleted": self.deleted,
            "kept": self.result.kept if self.result else 0,
            "deleteFailed": self.result.failed if self.result else 0,
            "failedSample": [f.as_json() for f in self.result.failures] if self.result else [],
            "error": self.error or (self.result.error if self.result else None),
        }
        if self.dry_run:
            document["wouldDelete"] = list(self.sample)
            document["wouldDeleteShown"] = len(self.sample)
        return document


def run_sync(sides: SyncSides, copy: CopyEnd, limit: DeleteLimit, *, dry_run: bool = False) -> SyncOutcome:
    """The delete phase of a sync: count, decide, and (unless refused or a dry run) delete."""
    if not dry_run and (not copy.complete or copy.failed):
        # Refused on the copy alone: no listing is spent on a count that cannot change the answer.
        empty = Census(0, 0, 0, complete=False)
        return SyncOutcome(decide_deletes(copy, empty, limit), empty, ())
    found = sides.census()
    decision = decide_deletes(copy, found.census, limit)
    if dry_run or not decision.delete:
        return SyncOutcome(decision, found.census, found.sample, dry_run=dry_run, error=found.error)
    # At most what was counted and allowed: a source that lost more objects since is not followed.
    result = sides.delete(decision.candidates)
    return SyncOutcome(decision, found.census, found.sample, result=result)
