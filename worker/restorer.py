"""Restores of archived source objects (``spec.archived: restore``): the S3 calls (RestoreObject, HEAD)
and the bounded wait for them. The decisions are `archive.py`'s; the engine sets objects aside here and
copies them when `await_restores` hands them back.

Where it sits: the engine requests a restore as soon as it meets an archived object and sets the object
aside with no transfer slot and no memory reservation (a `Waiting` is a few hundred bytes). When the rest
of its key range is copied, `await_restores` checks each waiting object with HEAD every
restore.checkIntervalSeconds and hands back each one whose restored copy is readable, until
restore.maxWaitSeconds after its request, when it is given up (`RestoreTimedOut`). The wait sleeps on the
run's stop event, so an interrupt ends it at once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ferry.model.copyjob import Restore
from ferry.worker.archive import RESTORE_ALREADY_CODES, ArchiveState, RestoreWait, state_of
from ferry.worker.objects import ObjectInfo
from ferry.worker.progress import OK_CODE, Operation
from ferry.worker.ratelimit import TokenBucket
from ferry.worker.retry import Classified, RetriesExhausted, RetryPolicy, call_with_retry

log = logging.getLogger(__name__)

#: RestoreObject requests sent at once; as many more wait in the queue, and the lister waits beyond that.
REQUESTS_AT_ONCE = 8


@dataclass(slots=True)
class Waiting:
    """An archived object set aside until its restore is done."""

    source: ObjectInfo
    target_key: str
    existing: ObjectInfo | None
    #: Its entry in the engine's resume mark, closed when the object settles.
    ticket: int
    requested_at: float
    last_check: float | None = None


@dataclass
class Restorer:
    """RestoreObject and HEAD on the source bucket, retried, rate-limited and counted like every request
    of the engine (``on_request``/``on_error`` as in `copier.Copier`)."""

    client: Any
    bucket: str
    settings: Restore
    retry: RetryPolicy
    requests: TokenBucket = field(default_factory=lambda: TokenBucket(0))
    on_request: Callable[[Operation, str], None] = lambda _operation, _code: None
    on_error: Callable[[Classified], None] = lambda _error: None
    _jitter: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def wait(self) -> RestoreWait:
        return RestoreWait(
            interval=float(self.settings.check_interval_seconds),
            max_wait=float(self.settings.max_wait_seconds),
        )

    def request(self, obj: ObjectInfo) -> None:
        """Ask the source to restore ``obj`` (one already under way is fine). Raises `RetriesExhausted`
        when the source refuses (e.g. AccessDenied, or an Expedited restore from DEEP_ARCHIVE)."""
        storage_class = obj.storage_class or self._head(obj).get("StorageClass")
        job: dict[str, Any] = {"Tier": self.settings.tier.value}
        request: dict[str, Any] = {"GlacierJobParameters": job}
        # INTELLIGENT_TIERING's archive tiers restore into the frequent tier, for no set number of days:
        # S3 refuses Days for them.
        if storage_class != "INTELLIGENT_TIERING":
            request["Days"] = self.settings.days
        try:
            self._call(
                Operation.RESTORE,
                lambda: self.client.restore_object(Bucket=self.bucket, Key=obj.key, RestoreRequest=request),
            )
        except RetriesExhausted as exc:
            if exc.last.code not in RESTORE_ALREADY_CODES:
                raise

    def state(self, obj: ObjectInfo) -> ArchiveState:
        """Whether ``obj`` can be read now, by its HEAD. Raises `RetriesExhausted` when it cannot be read."""
        head = self._head(obj)
        return state_of(head.get("StorageClass"), head.get("Restore"), head.get("ArchiveStatus"))

    def _head(self, obj: ObjectInfo) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            Operation.HEAD, lambda: self.client.head_object(Bucket=self.bucket, Key=obj.key)
        )
        return answer

    def _call(self, name: Operation, operation: Callable[[], Any]) -> Any:
        def counted() -> Any:
            self.requests.take()
            answer = operation()
            self.on_request(name, OK_CODE)
            return answer

        def on_error(error: Classified) -> None:
            self.on_request(name, error.code)
            self.on_error(error)

        try:
            return call_with_retry(counted, self.retry, on_error=on_error, rng=self._jitter)
        except RetriesExhausted as exc:
            raise RetriesExhausted(exc.last, exc.attempts, name.value) from exc


class RequestQueue:
    """Restore requests on a few threads of their own, so the lister's thread never waits on one: at most
    `REQUESTS_AT_ONCE` run and as many wait (``submit`` blocks beyond, which bounds the memory held).
    Threads start with the first request; a run without archived objects starts none."""

    def __init__(self, threads: int = REQUESTS_AT_ONCE) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads
        self._slots = threading.BoundedSemaphore(2 * threads)

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` (which handles its own errors) on a restore thread."""
        self._slots.acquire()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="ferry-restore")
        future = self._pool.submit(work)
        future.add_done_callback(lambda _done: self._slots.release())

    def drain(self) -> None:
        """Wait for every request submitted; no more may be submitted after."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def await_restores(
    waiting: list[Waiting],
    restorer: Restorer,
    *,
    clock: Callable[[], float],
    stop: threading.Event,
    on_ready: Callable[[Waiting], None],
    on_timeout: Callable[[Waiting], None],
    on_error: Callable[[Waiting, RetriesExhausted], None],
    halted: Callable[[], bool] = lambda: False,
    until: float | None = None,
) -> list[Waiting]:
    """Check the waiting objects until each is restored (``on_ready``), given up (``on_timeout``) or
    unreadable (``on_error``); returns those still waiting when ``stop`` was set or ``halted`` says the
    run stopped otherwise (a systematic failure).

    With ``until`` (a worker pod that hands the wait to the operator), every object still waiting at that
    time is checked once more and those still restoring are returned rather than waited for.

    Bounded: every object is checked at most `RestoreWait.checks_at_most` times, and settled on the check
    at its deadline at the latest. An object whose restore is not under way (its request was lost, or
    its restored copy expired before it was copied) is asked for again."""
    pacing = restorer.wait()
    left = list(waiting)
    rounds_left = max(1, len(left)) * pacing.checks_at_most()
    handed_off = False
    while left and not stop.is_set() and not halted() and rounds_left > 0:
        rounds_left -= 1
        now = clock()
        final = until is not None and now >= until
        still: list[Waiting] = []
        for entry in left:
            due = final or pacing.next_check(entry.requested_at, entry.last_check) <= now
            if stop.is_set() or halted() or not due:
                still.append(entry)
                continue
            try:
                state = restorer.state(entry.source)
                if state is ArchiveState.ARCHIVED and not pacing.timed_out(entry.requested_at, now):
                    restorer.request(entry.source)
            except RetriesExhausted as exc:
                on_error(entry, exc)
                continue
            if state in (ArchiveState.RESTORED, ArchiveState.READABLE):
                on_ready(entry)
            elif pacing.timed_out(entry.requested_at, clock()):
                on_timeout(entry)
            else:
                entry.last_check = now
                still.append(entry)
        left = still
        if final:
            handed_off = True
            break
        if left:
            upcoming = min(pacing.next_check(w.requested_at, w.last_check) for w in left)
            if until is not None:
                upcoming = min(upcoming, until)
            stop.wait(max(0.0, upcoming - clock()))
    # The bound above was reached (never when handed off): what is left is given up.
    if left and not handed_off and not stop.is_set() and not halted():
        log.warning("gave up %d restores after the bounded number of checks", len(left))
        for entry in left:
            on_timeout(entry)
        left = []
    return left
