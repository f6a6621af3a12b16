"""What a worker reports: the `/status` document of a running pod and the termination message of a
finished one. Pure renderings of engine values; the operator parses both with `parse_report`.

The termination message must stay under Kubernetes' 4096-byte limit, so it carries counts and a
handful of failed keys; the complete list goes to the report location.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ferry.model.checkpoint import Checkpoint, checkpoint_from_json
from ferry.worker.archivesummary import archived_from_json, archived_report
from ferry.worker.engine import Progress, Summary
from ferry.worker.handoff import RestoreHandoff
from ferry.worker.shardsync import ShardCensus, ShardDeletes
from ferry.worker.systematic import SystematicFailure
from ferry.worker.versionsummary import versions_from_json, versions_report

TERMINATION_LIMIT = 4096
FORMAT = "ferry.dev/worker-report/v1"


@dataclass(frozen=True)
class MemoryFigures:
    """The worker's memory as measured: its peak (from the cgroup under a limit, else the process's
    VmHWM), the hard limit, the budget, the baseline measured at start and the part size that follows."""

    peak_bytes: int | None
    peak_source: str
    limit_bytes: int | None = None
    budget_bytes: int | None = None
    baseline_bytes: int | None = None
    part_size_bytes: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "peakBytes": self.peak_bytes,
            "peakSource": self.peak_source,
            "limitBytes": self.limit_bytes,
            "budgetBytes": self.budget_bytes,
            "baselineBytes": self.baseline_bytes,
            "partSizeBytes": self.part_size_bytes,
        }


def _counts(counts: Any) -> dict[str, Any]:
    return {
        "objects": {
            "total": counts.discovered,
            "copied": counts.copied,
            "skipped": counts.skipped,
            "failed": counts.failed,
            "pending": counts.pending,
        },
        "bytes": {
            "total": counts.bytes_discovered,
            "copied": counts.bytes_copied,
            "skipped": counts.bytes_skipped,
            "failed": counts.bytes_failed,
        },
        "listingDone": counts.listing_done,
        # Copied objects that changed at the source during their copy and were copied again.
        "changedDuringCopy": counts.changed_during_copy,
        # Archived objects met (spec.archived), when there were any.
        **archived_report(counts),
    }


#: The state of a shard stopped because its transfers kept failing the same job-wide way (systematic.py).
SYSTEMATIC_STATE = "systematicFailure"
#: The state of a shard that copied everything but archived objects still being restored, whose wait it
#: handed to the operator (handoff.py); its report carries a `RestoreHandoff` under this name too.
WAITING_FOR_RESTORE = "waitingForRestore"


def final_state(summary: Summary) -> str:
    """How a shard's run ended, as its termination message says: the cause to fix comes first."""
    if summary.systematic is not None:
        return SYSTEMATIC_STATE
    if summary.waiting_for_restore:
        return WAITING_FOR_RESTORE
    if summary.complete:
        return "complete"
    return "interrupted" if summary.interrupted else "incomplete"


def held_state(summary: Summary, stopped: bool) -> str | None:
    """The state a worker shows while it keeps answering `/status` until its operator has read its final
    counts and resume point, or None when it need not wait. An interrupted run waits; so does one that
    ended while the pod was being stopped (``stopped``: SIGTERM came): a pod deleted as its last objects
    settle may vanish before anyone reads its termination message, and the shard's next pod would then
    count those objects as skipped."""
    if summary.interrupted:
        return "interrupted"
    return final_state(summary) if stopped else None


def _systematic(failure: SystematicFailure | None) -> dict[str, Any]:
    return {SYSTEMATIC_STATE: failure.as_json()} if failure is not None else {}


def _resume(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    return checkpoint.as_json() if checkpoint is not None else None


def status_document(
    shard: int,
    progress: Progress,
    memory: MemoryFigures | None = None,
    state: str = "running",
    pod: str | None = None,
    final: str | None = None,
) -> dict[str, Any]:
    """The `/status` document. ``state`` is "running", or how the run ended while the worker still
    answers (a stopped worker waits until its operator says it recorded its final counts and resume
    point); ``pod`` is the pod's name, by which the reader knows the answer is from the pod it asked;
    ``final`` names this last document, for the operator to send back once it recorded it."""
    limiter = progress.limiter
    figures = {k: v for k, v in memory.as_json().items() if k != "budgetBytes"} if memory else {}
    return {
        "format": FORMAT,
        "shard": shard,
        **({"pod": pod} if pod else {}),
        **({"final": final} if final else {}),
        # Stopped on a systematic failure, the worker still answers while its last transfers end.
        "state": SYSTEMATIC_STATE if progress.systematic is not None and state == "running" else state,
        **_systematic(progress.systematic),
        **_counts(progress.counts),
        # spec.versions all: the counts are of versions; these say of how many keys, and more.
        **versions_report(progress.versions),
        "resume": _resume(progress.checkpoint),
        "elapsedSeconds": round(progress.elapsed_seconds, 3),
        "objectsPerSecond": round(progress.objects_per_second, 2),
        "bytesPerSecond": round(progress.bytes_per_second),
        "etaSeconds": None if progress.eta_seconds is None else round(progress.eta_seconds),
        "concurrency": {
            "current": limiter.concurrency,
            "inFlight": limiter.in_flight,
            "reason": limiter.reason,
        },
        "memory": {
            "budgetBytes": limiter.budget_bytes,
            "budgetSource": limiter.budget_source,
            "rssBytes": limiter.rss_bytes,
            "reservedBytes": limiter.reserved_bytes,
            "overheadBytes": limiter.overhead_bytes,
            **figures,
        },
        "latencySeconds": {
            "p50": limiter.latency_p50,
            "p95": limiter.latency_p95,
            "p99": limiter.latency_p99,
        },
        "throttles": progress.throttles,
        "retries": progress.retries,
        "requests": progress.requests,
        "rateLimit": progress.rate_share.as_json(),
        # Destination prefix groups paced for throttling (bounded list, most throttled first). A group
        # is a piece of a key, which anyone who can name objects wrote: JSON-escaped, at most 64 chars.
        "prefixGroups": [
            {
                "group": view.group,
                "requestsPerSecond": None if view.rate is None else round(view.rate, 1),
                "throttles": view.throttles,
                "requests": view.requests,
            }
            for view in progress.prefix_groups
        ],
    }


def termination_message(
    shard: int,
    summary: Summary,
    peak_rss: int | None,
    memory: MemoryFigures | None = None,
    evidence: dict[str, Any] | None = None,
    sync: ShardCensus | None = None,
    handoff: RestoreHandoff | None = None,
) -> str:
    """A compact JSON summary that fits the termination-message limit, shrinking the failure sample.

    ``peak_rss`` is the peak memory to report (`peakRssBytes`, which every operator version reads);
    ``memory`` adds where it was measured and against which limit and budget; ``handoff``, the restores
    a shard ending "waitingForRestore" left to the operator."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "shard": shard,
        "state": final_state(summary),
        **_systematic(summary.systematic),
        **_counts(summary.counts),
        **versions_report(summary.versions),
        "resume": _resume(summary.checkpoint),
        "durationSeconds": round(summary.duration_seconds, 3),
        "throttles": summary.throttles,
        "retries": summary.retries,
        "peakRssBytes": peak_rss,
        **({"memory": memory.as_json()} if memory else {}),
        "error": summary.error[:1000] if summary.error else None,
        "failed": [
            {
                "key": f.key,
                "code": f.code,
                "message": f.message[:200],
                "size": f.size,
                # spec.versions all: the source version that failed.
                **({"version": f.version} if f.version is not None else {}),
            }
            for f in summary.failures[:10]
        ],
        # With spec.report.include: all, the shard's evidence summary (its name under spec.report.prefix).
        **({"evidence": evidence} if evidence else {}),
        # With spec.mode sync, the shard's count of destination objects the source no longer holds.
        **({"sync": sync.as_json()} if sync is not None else {}),
        **({WAITING_FOR_RESTORE: handoff.as_json()} if handoff is not None else {}),
    }
    while True:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
        if document["failed"]:
            document["failed"] = document["failed"][:-1]
        elif document["error"]:
            # Shorten the error rather than cut the JSON: the counts must stay readable.
            document["error"] = document["error"][: len(document["error"]) // 2]
        elif document.get("memory"):
            document["memory"] = None
        elif document.get("resume"):
            # A key of control characters escapes to six bytes each: the counts matter more.
            document["resume"] = None
        else:
            document["peakRssBytes"] = None
            return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True)
class WorkerReport:
    """A parsed status document or termination message."""

    shard: int
    state: str
    objects: dict[str, int]
    bytes: dict[str, int]
    objects_per_second: float
    bytes_per_second: float
    concurrency: int
    in_flight: int
    reason: str
    #: Peak memory the worker reported: the cgroup's peak when it runs under a limit, else its RSS.
    rss_bytes: int | None
    failed: list[dict[str, Any]]
    error: str | None
    #: Where ``rss_bytes`` was measured: "cgroup" (the cgroup's own high-water mark, what the kernel's
    #: OOM killer compares with the limit), "rss" (the process's RSS or VmHWM), or None (not said).
    peak_source: str | None = None
    #: The shard's resume point (None from workers that predate it, or before anything settled).
    resume: Checkpoint | None = None
    #: The pod that answered, as it names itself (None from workers that predate it).
    pod: str | None = None
    #: Why the shard was stopped early (state "systematicFailure"), as checked values.
    systematic: SystematicFailure | None = None
    #: Requests the endpoints throttled (503 SlowDown, 429) since the worker started; what EndpointBudgets
    #: adapt to (0 from workers that predate it, or when the count is not a sane one).
    throttles: int = 0
    #: Archived objects the shard met (spec.archived), by `archivesummary.ARCHIVED_KEYS`; empty: none.
    archived: dict[str, int] = field(default_factory=dict)
    #: With spec.mode sync: the shard's census after its copy (None: not a sync, or not reported).
    sync: ShardCensus | None = None
    #: A pod of a sync's delete Job: what its delete pass did.
    deletes: ShardDeletes | None = None
    #: With spec.versions all: keys, delete markers copied, diverged keys (versionsummary.VERSION_KEYS).
    versions: dict[str, int] | None = None
    #: A shard that ended waiting for restores (state "waitingForRestore"): what it handed off.
    handoff: RestoreHandoff | None = None
    #: A stopped worker's name for its last document (`FINAL_PATTERN`), sent back by the operator once
    #: it recorded that document's counts and resume point (None: still running, or not said).
    final: str | None = None

    def answers_for(self, shard: int, pod: str) -> bool:
        """Whether this is the answer of that pod for that shard: a pod's address can be another pod's
        once it has stopped, and its counts and resume point must never count for this shard."""
        return self.shard == shard and (self.pod is None or self.pod == pod)


def parse_report(text: str) -> WorkerReport | None:
    """Parse what a worker wrote; None for anything else (an OOM kill leaves no message)."""
    try:
        raw = json.loads(text)
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested deeper than Python parses
        return None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return None
    try:
        return _report(raw)
    except (ValueError, TypeError, AttributeError):
        return None  # the right format but malformed fields: not a report Ferry wrote


def _report(raw: dict[str, Any]) -> WorkerReport:
    concurrency = raw.get("concurrency") or {}
    memory = raw.get("memory") or {}
    return WorkerReport(
        shard=int(raw.get("shard", -1)),
        state=str(raw.get("state", "unknown")),
        objects={k: int(v) for k, v in (raw.get("objects") or {}).items()},
        bytes={k: int(v) for k, v in (raw.get("bytes") or {}).items()},
        objects_per_second=float(raw.get("objectsPerSecond") or 0.0),
        bytes_per_second=float(raw.get("bytesPerSecond") or 0.0),
        concurrency=int(concurrency.get("current") or 0),
        in_flight=int(concurrency.get("inFlight") or 0),
        reason=str(concurrency.get("reason") or ""),
        rss_bytes=memory.get("peakBytes") or memory.get("rssBytes") or raw.get("peakRssBytes"),
        peak_source=_peak_source(memory),
        failed=list(raw.get("failed") or []),
        error=raw.get("error"),
        # Checked on its own: a malformed resume point is ignored, the counts beside it still count.
        resume=checkpoint_from_json(raw.get("resume")),
        pod=_pod(raw.get("pod")),
        systematic=SystematicFailure.from_json(raw.get(SYSTEMATIC_STATE)),
        throttles=_throttles(raw.get("throttles")),
        archived=archived_from_json(raw.get("archived")),
        sync=ShardCensus.from_json(raw.get("sync")),
        deletes=ShardDeletes.from_json(raw.get("deletes")),
        versions=versions_from_json(raw.get("versions")),
        handoff=RestoreHandoff.from_json(raw.get(WAITING_FOR_RESTORE)),
        final=final_name(raw.get("final")),
    )


#: A count above this is not one a worker makes (a billion throttled requests); it counts as none.
MAX_THROTTLES = 10**9


def _throttles(value: Any) -> int:
    """A worker's throttle count: a non-negative integer up to MAX_THROTTLES, else 0."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THROTTLES:
        return 0
    return value


#: How a stopped worker names its last document: 32 lowercase hex digits (`secrets.token_hex(16)`).
FINAL_PATTERN = re.compile(r"[0-9a-f]{32}")


def final_name(value: Any) -> str | None:
    """A final document's name as `FINAL_PATTERN` allows it, else None (so it is never echoed)."""
    return value if isinstance(value, str) and FINAL_PATTERN.fullmatch(value) else None


def _pod(value: Any) -> str | None:
    """A pod's name as it says it (at most 253 characters, a Kubernetes name's limit), or None."""
    return value if isinstance(value, str) and 0 < len(value) <= 253 else None


def _peak_source(memory: dict[str, Any]) -> str | None:
    if memory.get("peakBytes"):
        return "cgroup" if str(memory.get("peakSource") or "").startswith("cgroup") else "rss"
    return "rss" if memory.get("rssBytes") else None
