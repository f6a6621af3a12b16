"""The copy engine: list -> filter -> merge with the destination listing -> decide -> copy, under a
limiter, with exact accounting. `ferry run` and the worker pods both drive this class.

Threads, not asyncio: boto3 is synchronous, and a thread per in-flight transfer costs ~0.2 MiB, which
the memory model accounts for. Listing runs ahead in its own threads through bounded queues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ferry.model import CopyJobSpec, Overwrite
from ferry.model.checkpoint import Checkpoint
from ferry.model.copyjob import Archived, Restore, Versions
from ferry.worker.archive import (
    ARCHIVED_SKIPPED,
    MAX_WAITING,
    RESTORE_NOT_AWAITED,
    RESTORE_TIMED_OUT,
    is_archived_error,
    listed_archived,
)
from ferry.worker.budget import TransferTooLarge
from ferry.worker.copier import MISSING_CODES, Copier, CopyOptions
from ferry.worker.copyprocs import CopyProcessError, CopyProcesses, RemoteCopier
from ferry.worker.decide import decide
from ferry.worker.evidence import Checksum
from ferry.worker.filters import ObjectFilter
from ferry.worker.keys import destination_key
from ferry.worker.leanlist import LeanListing
from ferry.worker.limits import Limiter, LimiterState, TransferReport
from ferry.worker.listing import ListingFailed, Pair, merge_join, prefetch
from ferry.worker.manifest import ManifestError
from ferry.worker.manifestio import manifest_objects, manifest_retryable
from ferry.worker.objects import Action, FailedObject, KeyRange, ObjectInfo, Outcome
from ferry.worker.parts import DEFAULT_PART, TRANSFER_OVERHEAD_BYTES, transfer_memory
from ferry.worker.prefixlimits import GroupView, destination_requests, prefix_group
from ferry.worker.prefixpacer import PrefixPacer
from ferry.worker.progress import (
    OK_CODE,
    Counts,
    LatencyHistogram,
    Operation,
    RateWindow,
    code_label,
    eta_seconds,
)
from ferry.worker.ratelimit import RateShare, TokenBucket
from ferry.worker.report import FailureReport
from ferry.worker.restorer import RequestQueue, Restorer, Waiting, await_restores
from ferry.worker.retry import (
    PRECONDITION_FAILED,
    Classified,
    Kind,
    RetriesExhausted,
    RetryPolicy,
    call_with_retry,
    classify,
)
from ferry.worker.s3 import list_pages
from ferry.worker.settled import SettledMark
from ferry.worker.ssec import CustomerKeys
from ferry.worker.systematic import Attempt, Side, Streak, SystematicFailure, observe, side_of
from ferry.worker.versionrun import HistoryPair, VersionCounts, VersionedRun

log = logging.getLogger(__name__)

__all__ = ["TRANSFER_OVERHEAD_BYTES", "CopyEngine", "Progress", "Summary"]


#: Objects of one key range a manifest may name at most (sorted in memory, ~250 bytes each).
MAX_MANIFEST_ROWS = 4_000_000
#: Objects read with HEAD at once, and objects resolved ahead of the copier, when copying from a manifest.
HEAD_AHEAD = 16
HEAD_WINDOW = 256
#: The failure code of a key the manifest names that the source no longer holds.
SOURCE_MISSING = "SourceObjectMissing"
#: Requests that write the destination key: their answers feed its prefix group's pace (prefixlimits.py).
DESTINATION_WRITES = frozenset(
    {
        Operation.PUT,
        Operation.COPY,
        Operation.CREATE_MULTIPART,
        Operation.UPLOAD_PART,
        Operation.UPLOAD_PART_COPY,
        Operation.COMPLETE_MULTIPART,
    }
)
#: The failure code of an object that kept changing at the source while it was copied.
SOURCE_CHANGED = "SourceChangedDuringCopy"
#: Times an object that changed at the source during its copy is read anew and copied again at its new
#: version. A live bucket rewrites an object now and then, so a change or two is met and copied through;
#: an object still changing after this many copies is being rewritten continuously, and copying it again
#: would only spend requests and bandwidth on versions that are gone before they land.
MAX_SOURCE_CHANGES = 3
#: The message of an object that was listed, then deleted before its copy completed.
DELETED_DURING_COPY = "the object was deleted at the source while it was copied"
#: Requests whose precondition pins the source version (HEAD/GET If-Match, CopySourceIfMatch): a
#: `PreconditionFailed` from them means the source changed, not that the destination refused.
_PINNED = frozenset(
    {Operation.HEAD.value, Operation.GET.value, Operation.COPY.value, Operation.UPLOAD_PART_COPY.value}
)
#: Requests that read the source object: a missing key from one of them means it was deleted meanwhile.
_SOURCE_READS = _PINNED | {Operation.GET_TAGGING.value}


@dataclass(frozen=True, slots=True)
class MissingSource:
    """A manifest row whose object the source no longer holds."""

    source: ObjectInfo


@dataclass(frozen=True)
class Progress:
    """A consistent snapshot for displays, status documents and summaries."""

    counts: Counts
    elapsed_seconds: float
    objects_per_second: float
    bytes_per_second: float
    eta_seconds: float | None
    limiter: LimiterState
    throttles: int
    retries: int
    requests: int
    #: Requests by (operation, code label, count); both labels come from bounded sets (progress.py).
    requests_by: tuple[tuple[str, str, int], ...] = ()
    #: Seconds per successful transfer since the start.
    latency: LatencyHistogram = LatencyHistogram()
    #: Where a restarted run could resume: every object up to this key is settled (see `settled.py`).
    checkpoint: Checkpoint | None = None
    #: Set once the run was stopped because its transfers kept failing the same job-wide way.
    systematic: SystematicFailure | None = None
    #: The rate limits applied now (this pod's share of spec.rateLimit; 0: unlimited).
    rate_share: RateShare = RateShare()
    #: The destination prefix groups throttled most, with their paced rate (prefixlimits.py).
    prefix_groups: tuple[GroupView, ...] = ()
    #: With spec.versions all: keys, delete markers copied, diverged keys so far (worker/versionrun.py).
    versions: VersionCounts | None = None


@dataclass(frozen=True)
class Summary:
    counts: Counts
    duration_seconds: float
    throttles: int
    retries: int
    requests: int
    failures: list[FailedObject]
    report_path: str
    error: str | None = None
    #: The error is the input's: a manifest that is missing, refused or corrupt (a re-run alone fails again).
    input_invalid: bool = False
    interrupted: bool = False
    checkpoint: Checkpoint | None = None
    #: Why the run stopped early: its transfers kept failing the same job-wide way (systematic.py).
    systematic: SystematicFailure | None = None
    #: A sample of the archived objects skipped (spec.archived: skip); all of them are in the report.
    archived: tuple[FailedObject, ...] = ()
    #: With spec.versions all: keys, delete markers copied, diverged keys (the counts are of versions).
    versions: VersionCounts | None = None
    #: Archived objects still being restored when a worker pod handed their wait to the operator
    #: (`CopyEngine.restore_handoff_seconds`), and when the oldest of their restores was requested (on
    #: the engine's clock); 0 and None otherwise.
    handed_off: int = 0
    handed_off_since: float | None = None

    @property
    def waiting_for_restore(self) -> bool:
        """Whether the run did everything but the archived objects it handed off: they are its only
        pending objects, and a later run of the range copies them once restored."""
        return (
            self.handed_off > 0
            and self.error is None
            and not self.interrupted
            and self.systematic is None
            and self.counts.listing_done
            and self.counts.pending == self.handed_off
        )

    @property
    def objects_per_second(self) -> float:
        return self.counts.done / self.duration_seconds if self.duration_seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return (
            self.error is None
            and not self.interrupted
            and self.systematic is None
            and self.counts.pending == 0
        )


@dataclass
class CopyEngine:
    spec: CopyJobSpec
    source_client: Any
    destination_client: Any
    limiter: Limiter
    report: FailureReport
    key_range: KeyRange = KeyRange()
    part_size: int = DEFAULT_PART
    retry: RetryPolicy = RetryPolicy()
    clock: Callable[[], float] = time.monotonic
    source_lean: Any = None
    destination_lean: Any = None
    #: A resume point of an earlier run of this key range: listing starts after it, and the counts of the
    #: objects up to it are carried forward (the caller checks it lies in the key range).
    resume: Checkpoint | None = None
    #: This pod's share of spec.rateLimit (the operator splits the job-wide limits over the pods and
    #: changes shares with `set_rate_share`); None: the spec's limits as they are (`ferry run`).
    rate_share: RateShare | None = None
    #: Told every object's outcome when spec.report.include is all (an `evidence.EvidenceRecorder`).
    evidence: Any = None
    #: The SSE-C keys of source and destination (`ssec.CustomerKeys`); None: no SSE-C.
    customer_keys: CustomerKeys | None = None
    #: A worker pod's wait for restores: how long it checks the set-aside objects before it hands those
    #: still restoring to the operator (`Summary.handed_off`); None: wait for them in-process (ferry run).
    restore_handoff_seconds: float | None = None
    #: When an earlier pod of this range first requested restores (on this engine's clock): the objects
    #: set aside now count their restore.maxWaitSeconds from then, so a wait spread over pods is bounded.
    restores_requested_at: float | None = None
    #: Copy processes the transfers run in (a worker given several CPUs, see copyprocs.py); None: the
    #: engine's own threads copy. Versions (spec.versions all) are always copied in-process.
    processes: CopyProcesses | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _counts: Counts = field(default_factory=Counts, init=False)
    _throttles: int = field(default=0, init=False)
    _retries: int = field(default=0, init=False)
    _requests: int = field(default=0, init=False)
    #: The destination prefix group of the object a transfer thread copies, and the operation of its
    #: last answered request: a throttle is charged to that group when it came from a destination write.
    _in_transfer: threading.local = field(default_factory=threading.local, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _requests_by: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _latency: LatencyHistogram = field(default_factory=LatencyHistogram, init=False)
    _started: float | None = field(default=None, init=False)
    _finished: float | None = field(default=None, init=False)
    _rates: RateWindow = field(default_factory=RateWindow, init=False)
    _mark: SettledMark = field(default_factory=SettledMark, init=False)
    _streak: Streak = field(default_factory=Streak, init=False)
    _systematic: SystematicFailure | None = field(default=None, init=False)
    #: Archived objects set aside until restored (spec.archived: restore), and whether the wait for them
    #: began (objects found archived after that fail as they are).
    _waiting: list[Waiting] = field(default_factory=list, init=False)
    _awaiting: bool = field(default=False, init=False)
    _handed_off: list[Waiting] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        resume = self.resume
        # With spec.versions all a shard resumes through the destination's histories, never a resume point
        # (one written by a run of current versions says nothing of the older versions).
        versions_all = self.spec.versions is Versions.ALL
        if (
            resume is not None
            and not versions_all
            and resume.within(self.key_range.start_after, self.key_range.end)
        ):
            self.key_range = KeyRange(resume.after, self.key_range.end)
            self._mark = SettledMark(resume)
            # Carried objects were listed and settled by the earlier run: the accounting closes over both.
            self._counts = Counts(
                discovered=resume.done,
                copied=resume.copied,
                skipped=resume.skipped,
                failed=resume.failed,
                bytes_discovered=resume.bytes_done,
                bytes_copied=resume.bytes_copied,
                bytes_skipped=resume.bytes_skipped,
                bytes_failed=resume.bytes_failed,
                listed=resume.done,
                bytes_listed=resume.bytes_done,
            )
        else:
            self.resume = None
        self.server_side = self.spec.source.same_service(self.spec.destination)
        share = self.rate_share or RateShare.of(self.spec.rate_limit)
        self.rate_share = share
        self._request_bucket = TokenBucket(share.requests_per_second)
        self._byte_bucket = TokenBucket(share.bytes_per_second)
        self.copier = Copier(
            source_client=self.source_client,
            destination_client=self.destination_client,
            source_bucket=self.spec.source.bucket,
            destination_bucket=self.spec.destination.bucket,
            options=CopyOptions(
                verify=self.spec.verify,
                preserve=self.spec.preserve,
                destination=self.spec.destination,
                server_side=self.server_side,
                part_size=self.part_size,
                retry=self.retry,
                keys=self.customer_keys or CustomerKeys(),
                source_requester_pays=self.spec.source.requester_pays,
            ),
            source_lean=self.source_lean,
            destination_lean=self.destination_lean,
            on_request=self._count_request,
            on_error=self._count_error,
            requests=self._request_bucket,
            bandwidth=self._byte_bucket,
        )
        self.filter = ObjectFilter.compile(self.spec.filter, self.spec.source.prefix)
        self.pacer = PrefixPacer(self.spec.destination.prefix)
        # spec.versions all: every version of every key, listed and copied by worker/versionrun.py.
        self.versioned = VersionedRun(self) if self.spec.versions is Versions.ALL else None
        if self.processes is not None and self.versioned is None:
            self.processes.configure(self.copier.options, share.requests_per_second, share.bytes_per_second)
            self.copier = RemoteCopier(self.processes, self.copier)  # type: ignore[assignment]
        self.restorer = (
            Restorer(
                self.source_client,
                self.spec.source.bucket,
                self.spec.restore or Restore(),
                self.retry,
                requests=self._request_bucket,
                on_request=self._count_request,
                on_error=self._count_error,
            )
            if self.spec.archived is Archived.RESTORE
            else None
        )
        self._restore_requests = RequestQueue()

    # -- observation -------------------------------------------------------------------------------------

    def progress(self) -> Progress:
        now = self.clock()
        versions = self.versioned.counts() if self.versioned is not None else None  # its own lock
        with self._lock:
            counts = self._counts
            if self._started is not None:  # the window starts with the run (seeded in `run`)
                self._rates.add(now, counts.done, counts.bytes_done)
            objects_rate, bytes_rate = self._rates.rates()
            elapsed = ((self._finished or now) - self._started) if self._started is not None else 0.0
            return Progress(
                counts=counts,
                elapsed_seconds=elapsed,
                objects_per_second=objects_rate,
                bytes_per_second=bytes_rate,
                eta_seconds=eta_seconds(counts, objects_rate, bytes_rate),
                limiter=self.limiter.state(),
                throttles=self._throttles,
                retries=self._retries,
                requests=self._requests,
                requests_by=tuple((op, code, n) for (op, code), n in sorted(self._requests_by.items())),
                latency=self._latency,
                checkpoint=self._mark.checkpoint,
                systematic=self._systematic,
                rate_share=self.rate_share or RateShare(),
                prefix_groups=self.pacer.groups(),
                versions=versions,
            )

    def set_rate_share(self, share: RateShare) -> None:
        """Apply a new share of the rate limits at once, to transfers and listings already waiting too."""
        with self._lock:
            self.rate_share = share
        self._request_bucket.set_rate(share.requests_per_second)
        self._byte_bucket.set_rate(share.bytes_per_second)
        if isinstance(self.copier, RemoteCopier):
            self.copier.processes.set_rates(share.requests_per_second, share.bytes_per_second)

    def _count_request(self, operation: Operation, code: str) -> None:
        """One request answered (``code`` is `OK_CODE` or the error's code), counted when its answer is
        known so a counter by code never has to take one back."""
        label = (operation.value, code_label(code))
        with self._lock:
            self._requests += 1
            self._requests_by[label] = self._requests_by.get(label, 0) + 1
        self.limiter.count_requests()
        group = getattr(self._in_transfer, "group", None)
        if group is not None:
            # `on_error` follows this call for a failed request: it reads which operation it was.
            self._in_transfer.operation = operation
            if code == OK_CODE and operation in DESTINATION_WRITES:
                self.pacer.succeeded(group)

    def _count_error(self, error: Classified) -> None:
        with self._lock:
            self._retries += 1
            if error.kind is Kind.THROTTLE:
                self._throttles += 1
        if error.kind is not Kind.THROTTLE:
            self.limiter.count_error()
            return
        group = getattr(self._in_transfer, "group", None)
        write = getattr(self._in_transfer, "operation", None) in DESTINATION_WRITES
        # Throttles concentrated on one group are that group's: its pace slows, the pod keeps its
        # concurrency for the other groups. Spread over groups, they are the pod's too.
        if group is not None and write and self.pacer.throttled(group):
            return
        self.limiter.throttled()

    def _as_transfer_of(self, group: str, transfer: Callable[..., None], *args: Any) -> None:
        """Run ``transfer`` in this pool thread with its destination prefix group known to the counters."""
        self._in_transfer.group = group
        self._in_transfer.operation = None
        try:
            transfer(*args)
        finally:
            self._in_transfer.group = None

    # -- the run -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> Summary:
        """Copy everything in the key range; returns when done, or when ``stop`` is set (in-flight finish)."""
        stop = stop or threading.Event()
        self._stopping = stop
        self._started = self.clock()
        with self._lock:
            # The rate window starts at the run's start with nothing done by this run (carried counts
            # are not its work), so the first rate anyone reads is measured over the real elapsed time.
            self._rates.add(self._started, self._counts.done, self._counts.bytes_done)
        error: str | None = None
        input_invalid = False
        with ThreadPoolExecutor(self.limiter.ceiling, thread_name_prefix="ferry-copy") as pool:
            in_flight: set[Future[None]] = set()
            try:
                for pair in self._pairs():
                    if stop.is_set() or self._systematic is not None:
                        break
                    if isinstance(pair, HistoryPair) and self.versioned is not None:
                        self.versioned.handle(pair, pool, in_flight)
                        continue
                    if isinstance(pair, MissingSource):
                        self._missing(pair.source)
                        continue
                    self._handle(pair.source, pair.destination_key, pair.existing, pool, in_flight)
                else:
                    with self._lock:
                        self._counts = replace(self._counts, listing_done=True)
            except ListingFailed as exc:
                error = f"listing failed: {exc}"
                log.error("%s", error)
            except ManifestError as exc:
                input_invalid = not manifest_retryable(exc)
                error = f"manifest {'invalid' if input_invalid else 'unreadable'}: {exc}"
                log.error("%s", error)
            for future in list(in_flight):
                future.result()
            if self.restorer is not None:
                self._restore_requests.drain()
            if self._waiting and error is None:
                self._await_restores(pool, in_flight, stop)
        self._finished = self.clock()
        self.report.close()
        with self._lock:
            return Summary(
                counts=self._counts,
                duration_seconds=self._finished - self._started,
                throttles=self._throttles,
                retries=self._retries,
                requests=self._requests,
                failures=list(self.report.sample),
                report_path=str(self.report.path),
                error=error,
                input_invalid=input_invalid,
                interrupted=stop.is_set(),
                checkpoint=self._mark.checkpoint,
                systematic=self._systematic,
                archived=tuple(self.report.noted),
                versions=self.versioned.counts() if self.versioned is not None else None,
                handed_off=len(self._handed_off),
                handed_off_since=min((w.requested_at for w in self._handed_off), default=None),
            )

    def _pairs(self) -> Iterator[Any]:
        spec = self.spec
        if self.versioned is not None:
            return self.versioned.pairs()
        if spec.source.manifest is not None:
            return self._resolved(self._joined(self._manifest_objects()))
        listed = self._list(
            self.source_client, spec.source.bucket, spec.source.prefix, self.key_range.start_after
        )
        return self._joined(prefetch(self._counted(listed)))

    def _joined(self, sources: Iterator[ObjectInfo]) -> Iterator[Pair]:
        """Each source object of the range with its destination counterpart, from one forward pass over
        the destination's listing (none when every object is overwritten anyway)."""
        spec = self.spec
        destinations = None
        if spec.overwrite is not Overwrite.ALWAYS:
            start_after = self.key_range.start_after
            dest_start = (
                destination_key(start_after, spec.source.prefix, spec.destination.prefix)
                if start_after and start_after.startswith(spec.source.prefix)
                else None
            )
            destinations = prefetch(
                self._list(
                    self.destination_client, spec.destination.bucket, spec.destination.prefix, dest_start
                )
            )
        return merge_join(
            sources,
            destinations,
            lambda key: destination_key(key, spec.source.prefix, spec.destination.prefix),
            self.key_range,
        )

    # -- a manifest instead of the source listing ---------------------------------------------------------

    def _manifest_objects(self) -> Iterator[ObjectInfo]:
        """The manifest's objects in this key range, sorted by key, one per key, counted as listed.

        A shard's rows are bounded by the shard's size, so they are sorted in memory; `ferry run` (one
        range, the whole manifest) is bounded by MAX_MANIFEST_ROWS."""
        kept: list[ObjectInfo] = []
        for obj in manifest_objects(self.spec, self.source_client, self._manifest_call):
            if self.key_range.contains(obj.key):
                kept.append(obj)
                if len(kept) > MAX_MANIFEST_ROWS:
                    raise ManifestError(
                        f"more than {MAX_MANIFEST_ROWS} objects in one key range; let the operator shard the "
                        "job, or split it by source.prefix"
                    )
        kept.sort(key=lambda obj: obj.key)
        # One row per key: a manifest naming a key twice copies it once (the last row wins).
        unique = [
            obj
            for obj, after in zip(kept, [*kept[1:], None], strict=True)
            if after is None or after.key != obj.key
        ]
        with self._lock:
            self._counts = self._counts.list_page(len(unique), sum(obj.size for obj in unique))
            self._counts = replace(self._counts, listed_all=True)
        return iter(unique)

    def _manifest_call(self, request: Callable[[], Any]) -> Any:
        """Reading the manifest's files: retried, counted and rate-limited like the listing it replaces."""

        def attempt() -> Any:
            self._request_bucket.take()
            answer = request()
            self._count_request(Operation.GET, OK_CODE)
            return answer

        def on_error(error: Classified) -> None:
            self._count_request(Operation.GET, error.code)
            self._count_error(error)

        return call_with_retry(attempt, self.retry, on_error=on_error)

    def _resolved(self, pairs: Iterator[Pair]) -> Iterator[Pair | MissingSource]:
        """Pairs whose source is the object as it is now, not as the manifest saw it.

        A manifest is a snapshot: an object may have changed or vanished since. Its size and ETag are
        trusted only to skip an object whose destination already matches them; every other object is
        read with HEAD first (a few at a time, in order), so the copy and its memory reservation use the
        real size, and a vanished key becomes a `MissingSource`."""
        window: deque[Future[Pair | MissingSource]] = deque()
        with ThreadPoolExecutor(HEAD_AHEAD, thread_name_prefix="ferry-head") as pool:
            for pair in pairs:
                trusted = (
                    bool(pair.source.etag)
                    and decide(pair.source, pair.existing, self.spec.overwrite).action is Action.SKIP
                )
                future: Future[Pair | MissingSource] = Future()
                if trusted:
                    future.set_result(pair)
                else:
                    future = pool.submit(self._head, pair)
                window.append(future)
                while len(window) > HEAD_WINDOW or (window and window[0].done()):
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def _head(self, pair: Pair) -> Pair | MissingSource:
        key = pair.source.key

        def attempt() -> Any:
            self._request_bucket.take()
            answer = self.source_client.head_object(Bucket=self.spec.source.bucket, Key=key)
            self._count_request(Operation.HEAD, OK_CODE)
            return answer

        def on_error(error: Classified) -> None:
            self._count_request(Operation.HEAD, error.code)
            self._count_error(error)

        try:
            head = call_with_retry(attempt, self.retry, on_error=on_error)
        except RetriesExhausted as exc:
            if exc.last.code in MISSING_CODES:
                return MissingSource(pair.source)
            raise ListingFailed(f"reading {key!r} at the source failed: {exc.last.code}") from exc
        fresh = ObjectInfo(
            key=key,
            size=int(head.get("ContentLength", 0)),
            etag=str(head.get("ETag", "")).strip('"'),
            last_modified=head.get("LastModified") or pair.source.last_modified,
        )
        return Pair(fresh, pair.destination_key, pair.existing)

    def _missing(self, source: ObjectInfo) -> None:
        """A key the manifest names that the source no longer holds: failed, with its own reason, and the
        run goes on. Not part of a systematic-failure streak: one missing key says nothing of the next."""
        self.report.record(
            FailedObject(
                source.key,
                SOURCE_MISSING,
                "the manifest names this key, but the source has no such object (deleted or renamed since)",
                1,
                source.size,
            )
        )
        with self._lock:
            self._counts = self._counts.discover(source.size)
            self._counts = self._counts.finish(Outcome.FAILED, source.size)
            self._mark.settled(source.key, Outcome.FAILED, source.size)
        self._evidence(source, Outcome.FAILED, "the source no longer holds this key", code=SOURCE_MISSING)

    def _counted(self, pages: Iterator[list[ObjectInfo]]) -> Iterator[list[ObjectInfo]]:
        """Filter the source pages and count them in the lister's thread, ahead of the copier, so the
        total is known (`Counts.total`) as soon as the listing ends rather than when the copier takes in
        the last object. Keeps exactly what `merge_join` keeps: in the key range, up to its end."""
        end = self.key_range.end
        for page in pages:
            kept = [obj for obj in page if self.filter.accepts(obj) and self.key_range.contains(obj.key)]
            past_end = end is not None and bool(page) and page[-1].key > end
            with self._lock:
                self._counts = self._counts.list_page(len(kept), sum(obj.size for obj in kept))
                if past_end:  # nothing further is this shard's
                    self._counts = replace(self._counts, listed_all=True)
            yield kept
            if past_end:
                return
        with self._lock:
            self._counts = replace(self._counts, listed_all=True)

    def _list(
        self, client: Any, bucket: str, prefix: str, start_after: str | None
    ) -> Iterator[list[ObjectInfo]]:
        """Listing pages, each request retried like any other S3 call and counted per attempt."""

        def call(request: Callable[[], Any]) -> Any:
            def attempt() -> Any:
                self._request_bucket.take()  # listing requests count against spec.rateLimit too
                answer = request()
                self._count_request(Operation.LIST, OK_CODE)
                return answer

            def on_error(error: Classified) -> None:
                self._count_request(Operation.LIST, error.code)
                self._count_error(error)

            return call_with_retry(attempt, self.retry, on_error=on_error)

        # With the lean transport the pages are read by the lean page reader: botocore's model-driven
        # parser took about 0.1 ms of CPU per listed object, a fifth of a small object's copy
        # (bench/README.md, "Where the CPU goes per small object").
        lean = self.source_lean is not None or self.destination_lean is not None
        lister = LeanListing(client, self.spec.archived is not Archived.FAIL) if lean else client
        return list_pages(lister, bucket, prefix, start_after, call=call)

    def _handle(
        self,
        source: ObjectInfo,
        target_key: str,
        existing: ObjectInfo | None,
        pool: ThreadPoolExecutor,
        in_flight: set[Future[None]],
    ) -> None:
        with self._lock:
            self._counts = self._counts.discover(source.size)
        decision = decide(source, existing, self.spec.overwrite)
        if decision.action is Action.SKIP:
            with self._lock:
                self._counts = self._counts.finish(Outcome.SKIPPED, source.size)
                self._mark.settled(source.key, Outcome.SKIPPED, source.size)
            self._evidence(source, Outcome.SKIPPED, decision.reason, existing=existing)
            return
        if self.spec.archived is not Archived.FAIL and listed_archived(source.storage_class):
            self._archived(source, target_key, existing, None)
            return
        # A throttled destination prefix group is paced here, before the permit: waiting holds neither a
        # transfer slot nor memory. Keys come in order and a group is a key prefix, so only the objects
        # at a group's boundary wait behind another group's pace.
        group = prefix_group(target_key, self.spec.destination.prefix)
        requests = destination_requests(source.size, self.part_size, self.server_side)
        self.pacer.pace(group, requests, self._stopping)
        # Reserve before allocating: the permit holds the part buffer's bytes before the copy starts.
        reserve = transfer_memory(source.size, self.part_size, self.server_side) + TRANSFER_OVERHEAD_BYTES
        try:
            permit = self.limiter.acquire(reserve)
        except TransferTooLarge as exc:
            self._fail(source, "MemoryBudgetTooSmall", str(exc), 0)
            return
        if self._systematic is not None:
            # Stopped while this transfer waited for its permit: it does not start (it stays pending).
            self.limiter.release(permit, TransferReport(ok=False, size=0, seconds=0.0, throttles=0))
            return
        with self._lock:
            ticket = self._mark.opened(source.key, source.size)
        future = pool.submit(
            self._as_transfer_of,
            group,
            self._transfer,
            source,
            target_key,
            existing,
            permit,
            ticket,
            decision.reason,
        )
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)

    def _transfer(
        self,
        source: ObjectInfo,
        target_key: str,
        existing: ObjectInfo | None,
        permit: Any,
        ticket: int,
        reason: str = "",
    ) -> None:
        started = self.clock()
        throttles = 0
        ok = False
        current = source
        changes = 0
        held: Any = permit
        try:
            while True:
                try:
                    result = self.copier.copy(current, target_key)
                except RetriesExhausted as exc:
                    if source_missing(exc):
                        self._fail(source, SOURCE_MISSING, DELETED_DURING_COPY, exc.attempts, ticket)
                        return
                    if not source_changed(exc):
                        raise
                    changes += 1
                    if changes > MAX_SOURCE_CHANGES:
                        self._fail(
                            source,
                            SOURCE_CHANGED,
                            f"the object changed at the source during each of {changes} copies "
                            f"(copied again at its new version at most {MAX_SOURCE_CHANGES} times)",
                            changes,
                            ticket,
                        )
                        return
                    fresh = self.copier.current(current)
                    if fresh is None:
                        self._fail(source, SOURCE_MISSING, DELETED_DURING_COPY, changes, ticket)
                        return
                    if decide(fresh, existing, self.spec.overwrite).action is Action.SKIP:
                        # The destination already holds the new version.
                        ok = True
                        with self._lock:
                            self._counts = self._counts.finish(Outcome.SKIPPED, source.size)
                            self._mark.closed(ticket, Outcome.SKIPPED)
                        self._evidence(
                            fresh, Outcome.SKIPPED, "the destination holds the source's new version", existing
                        )
                        return
                    held = None  # the old permit may be handed back by `_reserve_for`
                    held = self._reserve_for(fresh, permit)
                    permit = held
                    current = fresh
                    continue
                throttles = result.throttles
                ok = True
                seconds = self.clock() - started
                with self._lock:
                    # Counted by the size listed, so the byte counts close over what was discovered.
                    self._counts = self._counts.finish(Outcome.COPIED, source.size)
                    if changes:
                        self._counts = self._counts.recopied_after_change()
                    self._mark.closed(ticket, Outcome.COPIED)
                    self._latency = self._latency.observe(seconds)
                    self._streak, _ = observe(self._streak, Attempt(ok=True))
                self._evidence(current, Outcome.COPIED, reason, checksum=result.checksum)
                return
        except RetriesExhausted as exc:
            # Archived, though its listing did not say so (an INTELLIGENT_TIERING archive tier, a manifest).
            if is_archived_error(exc.last.code) and self._archived(source, target_key, existing, ticket):
                return
            side = side_of(exc.operation)
            self._fail(source, exc.last.code, exc.last.message, exc.attempts, ticket, side)
        except TransferTooLarge as exc:
            self._fail(source, "MemoryBudgetTooSmall", str(exc), changes, ticket)
        except CopyProcessError as exc:  # logged with its traceback by the copy process
            self._fail(source, exc.classified.code, exc.classified.message, 1, ticket)
        except Exception as exc:  # a bug or an unexpected library error must not stop the job
            classified = classify(exc)
            log.exception("unexpected error copying %r", source.key)
            self._fail(source, classified.code, classified.message, 1, ticket)
        finally:
            if held is not None:
                self.limiter.release(
                    held,
                    TransferReport(
                        ok=ok, size=source.size, seconds=self.clock() - started, throttles=throttles
                    ),
                )

    def _reserve_for(self, fresh: ObjectInfo, permit: Any) -> Any:
        """The permit for copying ``fresh``, an object whose size changed since its permit was taken: the
        same one when it reserved enough memory, else a new one taken after handing the old one back
        (raises `TransferTooLarge` when the new size cannot fit the budget at all)."""
        reserve = transfer_memory(fresh.size, self.part_size, self.server_side) + TRANSFER_OVERHEAD_BYTES
        if reserve <= permit.reserved_bytes:
            return permit
        self.limiter.release(permit, TransferReport(ok=False, size=0, seconds=0.0, throttles=0))
        return self.limiter.acquire(reserve)

    def _fail(
        self,
        source: ObjectInfo,
        code: str,
        message: str,
        attempts: int,
        ticket: int | None = None,
        side: Side | None = None,
    ) -> None:
        self.report.record(FailedObject(source.key, code, message[:500], attempts, source.size))
        self._evidence(source, Outcome.FAILED, message, code=code)
        with self._lock:
            self._counts = self._counts.finish(Outcome.FAILED, source.size)
            # Failed objects are settled too: a resumed run does not try them again, and they stay
            # counted as failed (they are in the report this run uploads).
            if ticket is None:
                self._mark.settled(source.key, Outcome.FAILED, source.size)
            else:
                self._mark.closed(ticket, Outcome.FAILED)
            self._streak, verdict = observe(self._streak, Attempt(ok=False, code=code, side=side))
            if verdict is None or self._systematic is not None:
                return
            self._systematic = verdict
        log.error("stopping: %s", verdict.message())

    def _evidence(
        self,
        source: ObjectInfo,
        outcome: Outcome,
        reason: str,
        existing: ObjectInfo | None = None,
        *,
        code: str | None = None,
        checksum: Any = None,
    ) -> None:
        """Tell the evidence recorder (if any) one object's outcome; a skip shows the ETags it compared."""
        if self.evidence is None:
            return
        if checksum is None and existing is not None:
            checksum = Checksum("etag", source.etag or None, existing.etag or None)
        self.evidence.record(source, outcome, reason=reason, code=code, checksum=checksum)

    # -- archived objects (spec.archived; archive.py decides, restorer.py restores) -----------------------

    def _archived(
        self, source: ObjectInfo, target_key: str, existing: ObjectInfo | None, ticket: int | None
    ) -> bool:
        """An archived source object, met in the listing (``ticket`` None) or by a copy that failed:
        skipped, or set aside for its restore. False when it is left to fail like any unreadable object
        (spec.archived: fail, or found after the wait for restores began)."""
        if self.spec.archived is Archived.SKIP:
            why = "archived (GLACIER, DEEP_ARCHIVE or an archive access tier) and spec.archived is skip"
            self.report.note(FailedObject(source.key, ARCHIVED_SKIPPED, f"not copied: {why}", 0, source.size))
            with self._lock:
                self._counts = self._counts.finish(Outcome.SKIPPED, source.size)
                self._counts = self._counts.archive_event(archived_skipped=1)
                if ticket is None:
                    self._mark.settled(source.key, Outcome.SKIPPED, source.size)
                else:
                    self._mark.closed(ticket, Outcome.SKIPPED)
            self._evidence(source, Outcome.SKIPPED, why, code=ARCHIVED_SKIPPED)
            return True
        if self.restorer is None or self._awaiting:
            return False
        if ticket is not None:  # found by a refused copy, in a transfer's thread: requested there
            self._set_aside(source, target_key, existing, ticket)
            return True
        with self._lock:  # open until it settles, so a resume point never passes it
            opened = self._mark.opened(source.key, source.size)
        # Met in the listing: requested on the restore threads, so the copy of the rest goes on meanwhile.
        self._restore_requests.submit(lambda: self._set_aside(source, target_key, existing, opened))
        return True

    def _set_aside(
        self, source: ObjectInfo, target_key: str, existing: ObjectInfo | None, ticket: int
    ) -> None:
        """Request the restore of an archived object and set it aside until `_await_restores`."""
        assert self.restorer is not None
        try:
            self.restorer.request(source)
        except RetriesExhausted as exc:
            message = f"the source refused to restore it: {exc.last.message}"
            self._fail(source, exc.last.code, message, exc.attempts, ticket, side_of(exc.operation))
            return
        except Exception as exc:  # a bug must not leave the object open, and the run waiting, for ever
            classified = classify(exc)
            log.exception("unexpected error requesting the restore of %r", source.key)
            self._fail(source, classified.code, classified.message, 1, ticket)
            return
        with self._lock:
            full = len(self._waiting) >= MAX_WAITING
            if full:  # given up at once: counted with the restores not done in time
                self._counts = self._counts.archive_event(restore_timed_out=1)
            else:
                requested_at = self.clock()
                if self.restores_requested_at is not None:  # an earlier pod's request started the wait
                    requested_at = min(requested_at, self.restores_requested_at)
                self._waiting.append(Waiting(source, target_key, existing, ticket, requested_at))
                self._counts = self._counts.archive_event(restore_waiting=1)
        if full:
            message = (
                f"its restore was requested, but {MAX_WAITING} archived objects already wait in this run; "
                "run again once it is restored"
            )
            self._fail(source, RESTORE_NOT_AWAITED, message, 1, ticket)

    def _await_restores(
        self, pool: ThreadPoolExecutor, in_flight: set[Future[None]], stop: threading.Event
    ) -> None:
        """With the rest of the range done: copy each set-aside object once its restore is done, and give
        up those not restored within restore.maxWaitSeconds (`RestoreTimedOut`)."""
        assert self.restorer is not None
        with self._lock:
            self._awaiting = True
            waiting, self._waiting = self._waiting, []
        max_wait = self.restorer.settings.max_wait_seconds

        def ready(entry: Waiting) -> None:
            with self._lock:
                self._counts = self._counts.archive_event(restore_waiting=-1, restored=1)
            self._copy_restored(entry, pool, in_flight)

        def timed_out(entry: Waiting) -> None:
            with self._lock:
                self._counts = self._counts.archive_event(restore_waiting=-1, restore_timed_out=1)
            message = (
                f"its restore was not done {max_wait} s after it was requested (spec.restore.maxWaitSeconds); "
                "run again once it is restored"
            )
            self._fail(entry.source, RESTORE_TIMED_OUT, message, 1, entry.ticket)

        def unreadable(entry: Waiting, exc: RetriesExhausted) -> None:
            with self._lock:
                self._counts = self._counts.archive_event(restore_waiting=-1)
            if exc.last.code in MISSING_CODES:
                self._fail(entry.source, SOURCE_MISSING, DELETED_DURING_COPY, exc.attempts, entry.ticket)
            else:
                self._fail(entry.source, exc.last.code, exc.last.message, exc.attempts, entry.ticket)

        handoff = self.restore_handoff_seconds
        left = await_restores(
            waiting,
            self.restorer,
            clock=self.clock,
            stop=stop,
            on_ready=ready,
            on_timeout=timed_out,
            on_error=unreadable,
            halted=lambda: self._systematic is not None,
            until=None if handoff is None else self.clock() + handoff,
        )
        if handoff is not None and not stop.is_set() and self._systematic is None:
            # Still restoring: left open (the resume point stays before them) for a later pod.
            self._handed_off = left
        for future in list(in_flight):
            future.result()

    def _copy_restored(self, entry: Waiting, pool: ThreadPoolExecutor, in_flight: set[Future[None]]) -> None:
        """Start the copy of a restored object under the ticket it was set aside with."""
        source = entry.source
        reserve = transfer_memory(source.size, self.part_size, self.server_side) + TRANSFER_OVERHEAD_BYTES
        try:
            permit = self.limiter.acquire(reserve)
        except TransferTooLarge as exc:
            self._fail(source, "MemoryBudgetTooSmall", str(exc), 0, entry.ticket)
            return
        future = pool.submit(
            self._transfer, source, entry.target_key, entry.existing, permit, entry.ticket, "restored"
        )
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)


def source_changed(exc: RetriesExhausted) -> bool:
    """Whether a copy gave up because the source object is no longer the version it was copying."""
    return exc.last.code == PRECONDITION_FAILED and (exc.operation is None or exc.operation in _PINNED)


def source_missing(exc: RetriesExhausted) -> bool:
    """Whether a copy gave up because the source object no longer exists (deleted since it was listed)."""
    return exc.last.code in MISSING_CODES and exc.operation in _SOURCE_READS
