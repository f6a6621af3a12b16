"""What a worker reports: the `/status` document of a running pod and the termination message of a
finished one. Pure renderings of engine values; the operator parses both with `parse_report`.

The termination message must stay under Kubernetes' 4096-byte limit, so it carries counts and a
handful of failed keys; the complete list goes to the report location.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ferry.worker.engine import Progress, Summary

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
    }


def status_document(shard: int, progress: Progress, memory: MemoryFigures | None = None) -> dict[str, Any]:
    limiter = progress.limiter
    figures = {k: v for k, v in memory.as_json().items() if k != "budgetBytes"} if memory else {}
    return {
        "format": FORMAT,
        "shard": shard,
        "state": "running",
        **_counts(progress.counts),
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
    }


def termination_message(
    shard: int, summary: Summary, peak_rss: int | None, memory: MemoryFigures | None = None
) -> str:
    """A compact JSON summary that fits the termination-message limit, shrinking the failure sample.

    ``peak_rss`` is the peak memory to report (`peakRssBytes`, which every operator version reads);
    ``memory`` adds where it was measured and against which limit and budget."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "shard": shard,
        "state": "complete" if summary.complete else ("interrupted" if summary.interrupted else "incomplete"),
        **_counts(summary.counts),
        "durationSeconds": round(summary.duration_seconds, 3),
        "throttles": summary.throttles,
        "retries": summary.retries,
        "peakRssBytes": peak_rss,
        **({"memory": memory.as_json()} if memory else {}),
        "error": summary.error[:1000] if summary.error else None,
        "failed": [
            {"key": f.key, "code": f.code, "message": f.message[:200], "size": f.size}
            for f in summary.failures[:10]
        ],
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


def parse_report(text: str) -> WorkerReport | None:
    """Parse what a worker wrote; None for anything else (an OOM kill leaves no message)."""
    try:
        raw = json.loads(text)
    except (ValueError, TypeError):
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
    )


def _peak_source(memory: dict[str, Any]) -> str | None:
    if memory.get("peakBytes"):
        return "cgroup" if str(memory.get("peakSource") or "").startswith("cgroup") else "rss"
    return "rss" if memory.get("rssBytes") else None
