"""Aggregation: the workers' reports and the Job's status become the CopyJob's status. Pure.

Per shard, the best evidence wins: a finished shard's final report (its termination message, kept in
the progress ledger), else a running pod's `/status`, else the plan's count as pending. The accounting
closes by construction: total = copied + skipped + failed + pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry.model.plan import Shard
from ferry.operator.conditions import Condition
from ferry.worker.display import format_duration
from ferry.worker.statusdoc import WorkerReport, parse_report

FAILED_SAMPLE = 20


@dataclass(frozen=True)
class JobView:
    """What the adapter extracts from the Indexed Job (absent Job: ``exists=False``)."""

    exists: bool = False
    parallelism: int = 0
    active: int = 0
    failed_pods: int = 0
    completed_indexes: frozenset[int] = frozenset()
    failed_indexes: frozenset[int] = frozenset()
    complete: bool = False
    failed: bool = False
    failure_message: str = ""
    suspended: bool = False


@dataclass(frozen=True)
class Totals:
    objects: dict[str, int]
    bytes: dict[str, int]
    objects_per_second: float
    bytes_per_second: float
    eta_seconds: int | None
    per_pod: list[dict[str, Any]]
    peak_rss: int
    failed_objects: list[dict[str, Any]]
    lost_reports: list[int] = field(default_factory=list)
    #: Where the highest peak was measured: "cgroup" (the pod's own high-water mark) or "rss".
    peak_source: str | None = None

    @property
    def percent(self) -> int:
        total = self.objects["total"]
        done = total - self.objects["pending"]
        return 100 if total == 0 else min(100, int(100 * done / total))


@dataclass(frozen=True)
class WorkerFailures:
    """Why worker pods failed, from their container states: what a user needs to fix the CopyJob."""

    oom_killed: tuple[str, ...] = ()  # pod names, as the kubelet reported them
    messages: tuple[str, ...] = ()  # the workers' own error lines (an invalid plan, a budget too small)

    def summary(self, memory_limit: str) -> str:
        """One sentence for the Failed condition; empty when no pod said why."""
        parts = []
        if self.oom_killed:
            parts.append(
                f"{len(self.oom_killed)} worker pod(s) were OOMKilled at their memory limit {memory_limit} "
                f"(e.g. {self.oom_killed[0]}): raise spec.resources.memory, or set it to auto"
            )
        parts.extend(self.messages[:1])
        return "; ".join(parts)


#: Longest worker error line carried into a condition (the kubelet caps termination messages at 4 KiB).
MESSAGE_LIMIT = 600


def worker_failures(pods: list[dict[str, Any]], container: str = "worker") -> WorkerFailures:
    """Failed worker pods: the kubelet's OOMKilled verdict and the worker's own termination report."""
    oom: list[str] = []
    messages: list[str] = []
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        for state in status.get("containerStatuses") or []:
            if state.get("name") != container:
                continue
            terminated = (state.get("state") or {}).get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                oom.append(str((pod.get("metadata") or {}).get("name", ""))[:253])
                continue
            report = parse_report(str(terminated.get("message") or ""))
            if report is not None and report.error:
                text = " ".join(str(report.error).split())[:MESSAGE_LIMIT]
                if text not in messages:
                    messages.append(text)
    return WorkerFailures(tuple(sorted(oom)), tuple(messages[:5]))


def _sum(target: dict[str, int], source: dict[str, int], keys: tuple[str, ...]) -> None:
    for key in keys:
        target[key] += int(source.get(key, 0))


def totals(
    shards: list[Shard],
    finished: dict[int, WorkerReport],
    running: dict[int, tuple[str, WorkerReport]],
    job: JobView,
    previous_peak: int = 0,
    previous_peak_source: str | None = None,
) -> Totals:
    objects = dict.fromkeys(("total", "copied", "skipped", "failed", "pending"), 0)
    data = dict.fromkeys(("total", "copied", "skipped", "failed"), 0)
    rate_objects = rate_bytes = 0.0
    per_pod: list[dict[str, Any]] = []
    peak, peak_source = previous_peak, previous_peak_source
    failures: list[dict[str, Any]] = []
    lost: list[int] = []
    for index, shard in enumerate(shards):
        report = finished.get(index)
        if report is None and index in running:
            pod, report = running[index]
            per_pod.append(
                {
                    "pod": pod,
                    "shard": index,
                    "concurrency": report.concurrency,
                    "inFlight": report.in_flight,
                    "reason": report.reason,
                }
            )
            rate_objects += report.objects_per_second
            rate_bytes += report.bytes_per_second
        if report is None:
            if index in job.completed_indexes:
                # Complete, but its report is gone: its objects are done, how is unknown. Say so.
                lost.append(index)
                objects["total"] += shard.objects
                objects["copied"] += shard.objects
                data["total"] += shard.bytes
                data["copied"] += shard.bytes
            else:
                objects["total"] += shard.objects
                objects["pending"] += shard.objects
                data["total"] += shard.bytes
            continue
        if (report.rss_bytes or 0) > peak:
            peak, peak_source = report.rss_bytes or 0, report.peak_source
        done = sum(int(report.objects.get(k, 0)) for k in ("copied", "skipped", "failed"))
        listed = int(report.objects.get("total", 0))
        final = index in finished
        # A finished shard's listing is exact; a running one has listed part of its range so far.
        shard_total = listed if final else max(listed, shard.objects)
        objects["total"] += shard_total
        objects["pending"] += shard_total - done
        _sum(objects, report.objects, ("copied", "skipped", "failed"))
        data["total"] += (
            int(report.bytes.get("total", 0))
            if final
            else max(int(report.bytes.get("total", 0)), shard.bytes)
        )
        _sum(data, report.bytes, ("copied", "skipped", "failed"))
        failures.extend(report.failed)
    eta = int(objects["pending"] / rate_objects) if rate_objects > 0 and objects["pending"] else None
    if objects["pending"] == 0:
        eta = 0
    return Totals(
        objects,
        data,
        round(rate_objects, 2),
        round(rate_bytes),
        eta,
        per_pod,
        peak,
        failures[:FAILED_SAMPLE],
        lost,
        peak_source,
    )


def phase_and_conditions(
    *, planned: bool, dry_run: bool, suspended: bool, job: JobView, totals: Totals | None
) -> tuple[str, list[Condition]]:
    """The display phase and the conditions that are its contract."""
    if not planned:
        return "Planning", [
            Condition("Planned", "Unknown", "Listing", "listing the source"),
            Condition("Succeeded", "Unknown", "Planning", ""),
        ]
    if dry_run:
        return "Planned", [
            Condition("Planned", "True", "PlanReady", "dry run: nothing is copied"),
            Condition("Progressing", "False", "DryRun", "spec.dryRun is true"),
            Condition("Succeeded", "Unknown", "DryRun", "spec.dryRun is true"),
        ]
    assert totals is not None
    counts = totals.objects
    summary = (
        f"{counts['copied']:,} copied, {counts['skipped']:,} skipped, {counts['failed']:,} failed "
        f"of {counts['total']:,}"
    )
    if job.complete:
        if counts["failed"]:
            return "Failed", [
                Condition("Progressing", "False", "Finished", summary),
                Condition("Succeeded", "False", "ObjectsFailed", summary),
                Condition("Failed", "True", "ObjectsFailed", summary),
                Condition("Suspended", "False", "Finished", ""),
            ]
        return "Succeeded", [
            Condition("Progressing", "False", "Finished", summary),
            Condition("Succeeded", "True", "AllObjectsCopied", summary),
            Condition("Failed", "False", "Finished", ""),
            Condition("Suspended", "False", "Finished", ""),
        ]
    if job.failed:
        message = f"{job.failure_message or 'shards failed'}; failed shards: {sorted(job.failed_indexes)}; {summary}"
        return "Failed", [
            Condition("Progressing", "False", "ShardsFailed", message),
            Condition("Succeeded", "False", "ShardsFailed", message),
            Condition("Failed", "True", "ShardsFailed", message),
            Condition("Suspended", "False", "Finished", ""),
        ]
    if suspended:
        return "Suspended", [
            Condition("Progressing", "False", "Suspended", "spec.suspend is true"),
            Condition("Suspended", "True", "SuspendRequested", summary),
            Condition("Succeeded", "Unknown", "Suspended", summary),
        ]
    eta = f", ETA {format_duration(totals.eta_seconds)}" if totals.eta_seconds else ""
    return "Running", [
        Condition("Progressing", "True", "Copying", f"{summary}{eta}"),
        Condition("Suspended", "False", "Running", ""),
        Condition("Succeeded", "Unknown", "Copying", summary),
    ]
