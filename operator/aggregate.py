"""Aggregation: the workers' reports and the Job's status become the CopyJob's status. Pure.

Per shard, the best evidence wins: a finished shard's final report (its termination message, kept in
the progress ledger), else a running pod's `/status`, else the plan's count as pending. The shard's floor
(the highest counts shown for it, kept in the ledger) then applies the accounting rules of
`accounting.py`, so nothing shown goes backwards. The accounting closes by construction:
total = copied + skipped + failed + pending.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ferry.model.plan import Shard
from ferry.model.quantity import format_duration
from ferry.operator.accounting import PaceBefore, PaceNow, ShardCount, Tally, account, pace, percent
from ferry.operator.conditions import Condition
from ferry.operator.planfile import TIME_FORMAT
from ferry.worker.statusdoc import WorkerReport, parse_report
from ferry.worker.versionsummary import sum_versions

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
    #: What is shown for each shard that has evidence or a floor: the floors of the next pass.
    shard_counts: dict[int, ShardCount] = field(default_factory=dict)
    #: Archived objects the shards met (spec.archived), summed by name; empty: none (archivestatus.py).
    archived: dict[str, int] = field(default_factory=dict)
    #: spec.versions all: keys, delete markers copied, diverged keys over the shards that reported them.
    versions: dict[str, int] | None = None

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


def totals(
    shards: list[Shard],
    finished: dict[int, WorkerReport],
    running: dict[int, tuple[str, WorkerReport]],
    job: JobView,
    previous_peak: int = 0,
    previous_peak_source: str | None = None,
    floors: Mapping[int, Tally] | None = None,
) -> Totals:
    objects = dict.fromkeys(("total", "copied", "skipped", "failed", "pending"), 0)
    data = dict.fromkeys(("total", "copied", "skipped", "failed"), 0)
    rate_objects = rate_bytes = 0.0
    per_pod: list[dict[str, Any]] = []
    peak, peak_source = previous_peak, previous_peak_source
    failures: list[dict[str, Any]] = []
    lost: list[int] = []
    shown: dict[int, ShardCount] = {}
    archived: dict[str, int] = {}
    versions: dict[str, int] | None = None
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
        floor = (floors or {}).get(index)
        if report is None:
            if index in job.completed_indexes:
                # Complete, but its report is gone: its objects are done, how is unknown. Say so.
                lost.append(index)
                evidence = ShardCount(
                    Tally(copied=shard.objects, bytes_copied=shard.bytes), shard.objects, shard.bytes
                )
            elif floor is None:
                objects["total"] += shard.objects
                objects["pending"] += shard.objects
                data["total"] += shard.bytes
                continue
            else:
                # Started, but no pod reports now (suspended, fewer pods, between two pods): what was
                # shown for it stays.
                evidence = ShardCount(Tally(), shard.objects, shard.bytes)
        else:
            if (report.rss_bytes or 0) > peak:
                peak, peak_source = report.rss_bytes or 0, report.peak_source
            listed = int(report.objects.get("total", 0))
            listed_bytes = int(report.bytes.get("total", 0))
            final = index in finished
            # A finished shard's listing is exact; a running one has listed part of its range so far.
            evidence = ShardCount(
                Tally.of_report(report.objects, report.bytes),
                listed if final else max(listed, shard.objects),
                listed_bytes if final else max(listed_bytes, shard.bytes),
            )
            failures.extend(entry for f in report.failed if (entry := failed_entry(f)) is not None)
            versions = sum_versions(versions, report.versions)
            for name, count in report.archived.items():
                archived[name] = archived.get(name, 0) + count
        counted = shown[index] = account(evidence.tally, evidence.total, evidence.bytes_total, floor)
        tally = counted.tally
        objects["total"] += counted.total
        objects["pending"] += counted.total - tally.done
        data["total"] += counted.bytes_total
        for key, value, size in (
            ("copied", tally.copied, tally.bytes_copied),
            ("skipped", tally.skipped, tally.bytes_skipped),
            ("failed", tally.failed, tally.bytes_failed),
        ):
            objects[key] += value
            data[key] += size
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
        shown,
        archived,
        versions,
    )


#: Bounds of a failed object's fields in status.failedObjects (the CRD's status schema says the same).
_FAILED_TEXT = {"key": 1024, "code": 256, "message": 4096, "version": 1024}


def failed_entry(value: Any) -> dict[str, Any] | None:
    """A failed object of a worker's report (or of the ledger, which the namespace's users can edit) as
    status shows it: the known fields only, strings cut to the schema's bounds, the size a non-negative
    integer; None for anything that is not an object."""
    if not isinstance(value, dict):
        return None
    entry: dict[str, Any] = {
        name: value[name][:limit] for name, limit in _FAILED_TEXT.items() if isinstance(value.get(name), str)
    }
    size = value.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**63:
        entry["size"] = size
    return entry


def phase_and_conditions(
    *, planned: bool, dry_run: bool, suspended: bool, job: JobView, totals: Totals | None
) -> tuple[str, list[Condition]]:
    """The display phase and the conditions that are its contract. Each reason says why its condition
    has its status now: `Finished` only for a job that ended, `Suspended=False` `NotSuspended` unless
    spec.suspend asks for a suspension that a finished job no longer needs."""
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
    if job.complete or job.failed:
        ended = (
            Condition("Suspended", "False", "Finished", "spec.suspend is true, but the job had already ended")
            if suspended
            else Condition("Suspended", "False", "NotSuspended", "")
        )
        if job.complete and counts["failed"]:
            return "Failed", [
                Condition("Progressing", "False", "Finished", summary),
                Condition("Succeeded", "False", "ObjectsFailed", summary),
                Condition("Failed", "True", "ObjectsFailed", summary),
                ended,
            ]
        if job.complete:
            return "Succeeded", [
                Condition("Progressing", "False", "Finished", summary),
                Condition("Succeeded", "True", "AllObjectsCopied", summary),
                Condition("Failed", "False", "AllObjectsCopied", ""),
                ended,
            ]
        message = f"{job.failure_message or 'shards failed'}; failed shards: {sorted(job.failed_indexes)}; {summary}"
        return "Failed", [
            Condition("Progressing", "False", "ShardsFailed", message),
            Condition("Succeeded", "False", "ShardsFailed", message),
            Condition("Failed", "True", "ShardsFailed", message),
            ended,
        ]
    if suspended:
        # Suspended once the Job is and its last pod has stopped; until then the suspension is on its way.
        if job.suspended and not job.active:
            held = Condition("Suspended", "True", "JobSuspended", f"no worker pod runs; {summary}")
        else:
            stopping = f"{job.active} worker pod(s) stopping" if job.active else "suspending the Job"
            held = Condition(
                "Suspended", "True", "SuspendRequested", f"spec.suspend is true; {stopping}; {summary}"
            )
        return "Suspended", [
            Condition("Progressing", "False", "Suspended", "spec.suspend is true"),
            held,
            Condition("Succeeded", "Unknown", "Suspended", summary),
        ]
    eta = f", ETA {format_duration(totals.eta_seconds)}" if totals.eta_seconds else ""
    done = counts["copied"] + counts["skipped"] + counts["failed"]
    if not totals.per_pod and not done:
        # Nothing copied and no worker reporting: the pods are being created, scheduled or started.
        doing, message = "StartingWorkers", f"waiting for the first worker pod to report; {summary}"
    else:
        doing, message = "Copying", f"{summary}{eta}"
    return "Running", [
        Condition("Progressing", "True", doing, message),
        Condition("Suspended", "False", "NotSuspended", ""),
        Condition("Succeeded", "Unknown", doing, summary),
    ]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def counts_status(
    counted: Totals, previous: Mapping[str, Any], now: datetime, *, running: bool, finished: bool
) -> dict[str, Any]:
    """The counting part of the status: objects, bytes, percent, throughput, running time and ETA, from
    this pass's totals and the previous status (``now`` is the pass's time). Keys whose value is None
    are removed by the merge patch that writes the status: an ETA that no longer holds disappears."""
    now = now.replace(microsecond=0)  # the stored times have whole seconds: sums of differences stay exact
    objects = counted.objects
    done = objects["total"] - objects["pending"]
    before_objects = previous.get("objects") or {}
    progressed = done != int(before_objects.get("total", 0)) - int(before_objects.get("pending", 0))
    last_progress = _time(previous.get("lastProgressTime"))
    if progressed or last_progress is None:
        last_progress = now
    throughput = previous.get("throughput") or {}
    data = counted.bytes
    result = pace(
        PaceBefore(
            objects_per_second=_number(throughput.get("objectsPerSecond")),
            bytes_per_second=_number(throughput.get("bytesPerSecond")),
            duration_seconds=_number(previous.get("durationSeconds")) or 0.0,
            sampled_at=_time(throughput.get("sampledAt")),
            last_progress=_time(previous.get("lastProgressTime")),
        ),
        PaceNow(
            now=now,
            objects_per_second=counted.objects_per_second,
            bytes_per_second=counted.bytes_per_second,
            running=running,
            reporting=bool(counted.per_pod),
            finished=finished,
            done=done,
            bytes_done=data["copied"] + data["skipped"] + data["failed"],
            pending=objects["pending"],
            progressed=progressed,
        ),
    )
    previous_percent = previous.get("progressPercent")
    return {
        "objects": objects,
        "bytes": data,
        "throughput": {
            "objectsPerSecond": round(result.objects_per_second, 2),
            "bytesPerSecond": int(result.bytes_per_second),
            "averageObjectsPerSecond": (
                round(result.average_objects_per_second, 2)
                if result.average_objects_per_second is not None
                else None
            ),
            "averageBytesPerSecond": (
                int(result.average_bytes_per_second) if result.average_bytes_per_second is not None else None
            ),
            "sampledAt": result.sampled_at.strftime(TIME_FORMAT) if result.sampled_at else None,
        },
        "durationSeconds": int(result.duration_seconds),
        "progressPercent": percent(
            done, objects["total"], previous_percent if isinstance(previous_percent, int) else None
        ),
        "failedObjects": counted.failed_objects,
        "etaSeconds": result.eta_seconds,
        "eta": format_duration(result.eta_seconds) if result.eta_seconds is not None else None,
        "lastProgressTime": last_progress.strftime(TIME_FORMAT),
    }
