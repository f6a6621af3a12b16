"""The engine's side of spec.versions all: list version histories, hand each key to a transfer thread,
and count versions the way the engine counts objects.

Where it sits: `CopyEngine` makes one `VersionedRun` when spec.versions is all and gives it the work its
own object path would do: `pairs` replaces the object listing, `handle` replaces `_handle`. The
accounting is the engine's own (`Counts`, the failure report, the systematic-failure streak, the
limiter), with one version counted where one object would be; a delete marker counts as a version of 0
bytes, and `VersionCounts` tells how many of the copied versions were delete markers.

Resumption is per version id, through the destination: a re-run (or a retried shard) lists both
histories again and copies only the missing tail, so no checkpoint is kept (`Progress.checkpoint` stays
None). Memory: one permit per key, sized for its largest version plus the versions its two histories
hold or read back at once (at most `SPILL_VERSIONS` each, see worker/versionlisting.py), twice that
when each version gets an evidence line (the skipped versions' lines read both histories back beside
the walk).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ferry.worker.budget import TransferTooLarge
from ferry.worker.keys import destination_key
from ferry.worker.limits import TransferReport
from ferry.worker.listing import prefetch
from ferry.worker.objects import FailedObject, ObjectInfo
from ferry.worker.parts import TRANSFER_OVERHEAD_BYTES, transfer_memory
from ferry.worker.progress import OK_CODE, Operation
from ferry.worker.retry import Classified, RetriesExhausted, call_with_retry
from ferry.worker.systematic import Attempt, Side, observe
from ferry.worker.versioncopy import HistoryCopier
from ferry.worker.versionevidence import VersionEvidence
from ferry.worker.versionlisting import (
    SPILL_VERSIONS,
    HistoryPair,
    KeyHistory,
    histories,
    join_histories,
    version_pages,
)
from ferry.worker.versions import DIVERGED, Version

if TYPE_CHECKING:
    from ferry.worker.engine import CopyEngine

#: Memory reserved per version a history holds or reads back at once: a `Version` with 32-character ids
#: and its share of a spilled chunk being written or read (tracemalloc: 1.1 MB peak for a 100,000-version
#: history in chunks of 1,000).
VERSION_BYTES = 1_100


@dataclass(frozen=True)
class VersionCounts:
    """What a run with spec.versions all did beyond the version counts (which are `Counts`)."""

    keys: int = 0
    delete_markers_copied: int = 0
    diverged_keys: int = 0


class VersionedRun:
    """The versions path of one engine. It updates the engine's own counters, report and limiter (its
    private fields, under its lock) so that the engine itself changes only where it branches here."""

    def __init__(self, engine: CopyEngine) -> None:
        self.engine = engine
        spec = engine.spec
        # The engine's Copier on boto3 clients only: the lean transport reads and writes current versions.
        self.copier = replace(engine.copier, source_lean=None, destination_lean=None)
        self.histories = HistoryCopier(
            self.copier,
            engine.destination_client,
            spec.destination.bucket,
            self._request,
            # Read at each outcome: the recorder is the engine's (spec.report.include all) or None.
            evidence=VersionEvidence(lambda: engine.evidence),
        )
        self._lock = threading.Lock()
        self._counts = VersionCounts()

    def counts(self) -> VersionCounts:
        with self._lock:
            return self._counts

    # -- listing -----------------------------------------------------------------------------------------

    def pairs(self) -> Iterator[HistoryPair]:
        engine, spec = self.engine, self.engine.spec
        key_range = engine.key_range
        source_pages = version_pages(
            engine.source_client,
            spec.source.bucket,
            spec.source.prefix,
            key_range.start_after,
            call=lambda request: self._request(Operation.LIST, request),
        )
        start_after = key_range.start_after
        dest_start = (
            destination_key(start_after, spec.source.prefix, spec.destination.prefix)
            if start_after and start_after.startswith(spec.source.prefix)
            else None
        )
        destination_pages = version_pages(
            engine.destination_client,
            spec.destination.bucket,
            spec.destination.prefix,
            dest_start,
            call=lambda request: self._request(Operation.LIST, request),
        )
        sources = histories(prefetch(self._counted(source_pages)))
        destinations = histories(prefetch(destination_pages))
        return join_histories(
            sources,
            destinations,
            lambda key: destination_key(key, spec.source.prefix, spec.destination.prefix),
            key_range,
        )

    def _counted(self, pages: Iterator[list[Version]]) -> Iterator[list[Version]]:
        """The source versions this run copies (in the key range, keys the filter accepts), counted as
        listed in the lister's thread, as the engine counts objects."""
        engine = self.engine
        end = engine.key_range.end
        accepted: dict[str, bool] = {}
        for page in pages:
            kept = [v for v in page if engine.key_range.contains(v.key) and self._accepts(v, accepted)]
            past_end = end is not None and bool(page) and page[-1].key > end
            with engine._lock:
                engine._counts = engine._counts.list_page(len(kept), sum(v.size for v in kept))
                if past_end:
                    engine._counts = replace(engine._counts, listed_all=True)
            yield kept
            if past_end:
                return
        with engine._lock:
            engine._counts = replace(engine._counts, listed_all=True)

    def _accepts(self, version: Version, cache: dict[str, bool]) -> bool:
        """The filter by key (the model allows only include/exclude with versions all), once per key."""
        verdict = cache.get(version.key)
        if verdict is None:
            probe = ObjectInfo(version.key, version.size, version.etag, version.last_modified)
            verdict = self.engine.filter.accepts(probe)
            cache.clear()  # keys arrive together: only the current one is worth remembering
            cache[version.key] = verdict
        return verdict

    def _request(self, operation: Operation, request: Callable[[], Any]) -> Any:
        """One request retried, rate-limited and counted like every request of the engine."""
        engine = self.engine

        def attempt() -> Any:
            engine._request_bucket.take()
            answer = request()
            engine._count_request(operation, OK_CODE)
            return answer

        def on_error(error: Classified) -> None:
            engine._count_request(operation, error.code)
            engine._count_error(error)

        try:
            return call_with_retry(attempt, engine.retry, on_error=on_error)
        except RetriesExhausted as exc:
            raise RetriesExhausted(exc.last, exc.attempts, operation.value) from exc

    # -- copying -----------------------------------------------------------------------------------------

    def handle(self, pair: HistoryPair, pool: ThreadPoolExecutor, in_flight: set[Future[None]]) -> None:
        """Start copying one key's history in a transfer thread, once the limiter grants its memory."""
        engine = self.engine
        source = pair.source
        with engine._lock:
            engine._counts = replace(
                engine._counts,
                discovered=engine._counts.discovered + source.versions,
                bytes_discovered=engine._counts.bytes_discovered + source.bytes,
            )
        with self._lock:
            self._counts = replace(self._counts, keys=self._counts.keys + 1)
        # Each history holds, or reads back from its spill file, at most SPILL_VERSIONS versions at once.
        held = min(source.versions, SPILL_VERSIONS)
        if pair.existing is not None:
            held += min(pair.existing.versions, SPILL_VERSIONS)
        if self.histories.evidence.enabled:
            held *= 2  # the evidence of skipped versions reads both histories back beside the walk
        largest = transfer_memory(source.largest, engine.part_size, engine.server_side)
        reserve = largest + TRANSFER_OVERHEAD_BYTES + VERSION_BYTES * held
        try:
            permit = engine.limiter.acquire(reserve)
        except TransferTooLarge as exc:
            failure = FailedObject(source.key, "MemoryBudgetTooSmall", str(exc), 0, source.bytes)
            self.versions_failed(failure, source.versions, source.bytes)
            if source.overflowed:
                self.histories.evidence.failed_key(source.key, source.bytes, failure.code, failure.message)
            else:
                self.histories.evidence.failed_history(source, failure.code, failure.message)
            _close(pair)
            return
        if engine._systematic is not None:
            engine.limiter.release(permit, TransferReport(ok=False, size=0, seconds=0.0, throttles=0))
            _close(pair)
            return
        future = pool.submit(self._copy, pair, permit)
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)

    def _copy(self, pair: HistoryPair, permit: Any) -> None:
        engine = self.engine
        started = engine.clock()
        throttles, ok = 0, False
        try:
            throttles, ok = self.histories.copy(pair, self)
        finally:
            engine.limiter.release(
                permit,
                TransferReport(
                    ok=ok, size=pair.source.bytes, seconds=engine.clock() - started, throttles=throttles
                ),
            )

    # -- the sink versioncopy.HistoryCopier reports to ----------------------------------------------------

    def version_copied(self, version: Version) -> None:
        engine = self.engine
        with engine._lock:
            engine._counts = replace(
                engine._counts,
                copied=engine._counts.copied + 1,
                bytes_copied=engine._counts.bytes_copied + version.size,
            )
            engine._streak, _ = observe(engine._streak, Attempt(ok=True))
        if version.delete_marker:
            with self._lock:
                self._counts = replace(
                    self._counts, delete_markers_copied=self._counts.delete_markers_copied + 1
                )

    def versions_skipped(self, versions: int, nbytes: int) -> None:
        engine = self.engine
        with engine._lock:
            engine._counts = replace(
                engine._counts,
                skipped=engine._counts.skipped + versions,
                bytes_skipped=engine._counts.bytes_skipped + nbytes,
            )

    def versions_failed(
        self, failure: FailedObject, versions: int, nbytes: int, side: Side | None = None
    ) -> None:
        engine = self.engine
        engine.report.record(failure)
        if failure.code == DIVERGED:
            with self._lock:
                self._counts = replace(self._counts, diverged_keys=self._counts.diverged_keys + 1)
        with engine._lock:
            engine._counts = replace(
                engine._counts,
                failed=engine._counts.failed + versions,
                bytes_failed=engine._counts.bytes_failed + nbytes,
            )
            if failure.attempts == 0:
                return  # versions waiting on an earlier one: one failure, already observed
            engine._streak, verdict = observe(engine._streak, Attempt(ok=False, code=failure.code, side=side))
            if verdict is None or engine._systematic is not None:
                return
            engine._systematic = verdict


def _close(pair: HistoryPair) -> None:
    pair.source.close()
    if pair.existing is not None:
        pair.existing.close()


__all__ = ["HistoryPair", "KeyHistory", "VersionCounts", "VersionedRun"]
