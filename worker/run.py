"""`ferry run -f copyjob.yaml`: run a CopyJob on this machine with the same engine the worker pods use.

Exit codes scripts can trust:
    0  every object was copied or skipped as already present
    1  an unexpected internal error (a bug: please report it with the log)
    2  invalid input: bad file, unknown field, unreachable endpoint, missing bucket, denied access, a
       manifest that is missing or corrupt; also
       a run stopped early because its transfers kept failing the same job-wide way (a wrong region,
       refused credentials, denied access, a missing bucket: state "systematicFailure")
    3  the job ran to the end but some objects failed (listed in the report)
    4  the job could not finish: the source listing broke off
    5  spec.mode sync refused to delete anything: more destination objects would be deleted than
       spec.deletes.max allows, or the source listing was empty (the copy itself ended well)
    6  the job ran to the end, but archived objects (spec.archived: restore) were not restored within
       spec.restore.maxWaitSeconds (RestoreTimedOut) and nothing else failed; a re-run copies them once
       restored (state "restorePending")
    130 interrupted (Ctrl-C); what finished is kept, a re-run skips it

With --output json, stdout holds one JSON document whatever the exit code: the summary of a run, or an
error document ({"state": "invalid" | "error" | "interrupted", "exitCode", "error", "field", "reason"}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.errors import FerryError, InvalidSpec, PreflightError
from ferry.model import CopyJob, CopyJobSpec, Location, format_bytes
from ferry.model.copyjob import Mode, ReportInclude, Versions
from ferry.model.loading import JobFile, SecretData, load_job_file
from ferry.worker import credentials, notify
from ferry.worker.adaptive import AdaptiveLimiter, IncidentLimiter
from ferry.worker.archivesummary import (
    archived_json,
    archived_line,
    restore_pending,
    restore_pending_line,
)
from ferry.worker.budget import (
    BudgetTooSmall,
    MemoryBudget,
    MemoryPeak,
    anonymous_rss,
    check_before_clients,
    detect_budget,
    find_cgroup,
    memory_peak,
    tune_allocator,
)
from ferry.worker.control import ControlConfig, initial_concurrency
from ferry.worker.copyprocs import CopierSetup, ProcessTree, parse_processes, start_copy_processes
from ferry.worker.deleter import SyncOutcome, SyncSides, run_sync
from ferry.worker.display import PLAIN_INTERVAL, ProgressDisplay, format_duration
from ferry.worker.engine import CopyEngine, Progress, Summary
from ferry.worker.evidence import EvidenceRecorder, lines_per_part, run_scope
from ferry.worker.leans3 import make_lean
from ferry.worker.limits import FixedLimiter, Limiter
from ferry.worker.lockcheck import check_destination_lock
from ferry.worker.parts import DEFAULT_PART
from ferry.worker.preflight import check_location
from ferry.worker.progress import Counts
from ferry.worker.report import FailureReport, ReportStore, write_evidence
from ferry.worker.report import upload as report_upload
from ferry.worker.s3 import ClientOptions, make_client
from ferry.worker.syncdeletes import CopyEnd, DeleteLimit, Refusal
from ferry.worker.timeline import Timeline
from ferry.worker.versioningcheck import check_destination_versioning

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID = 2
EXIT_FAILED_OBJECTS = 3
EXIT_INCOMPLETE = 4
EXIT_DELETES_REFUSED = 5
EXIT_RESTORE_PENDING = 6
EXIT_INTERRUPTED = 130

DEFAULT_CONCURRENCY = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--file", required=True, type=Path, help="CopyJob manifest (may also hold Secrets)"
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="final summary format on stdout: text (default) or json (one document for every exit code, "
        "errors included)",
    )
    parser.add_argument("--report", type=Path, metavar="PATH", help="write failed objects here as JSON lines")
    parser.add_argument(
        "--policy",
        choices=("adaptive", "fixed", "incident"),
        help="concurrency policy: adaptive (default; finds the level on its own within the memory budget), "
        "fixed (--concurrency transfers), incident (the +2-per-step manager Ferry replaces; for benchmarks)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="with --policy fixed (implied when given alone): transfers in flight, capped by spec.concurrency.max",
    )
    parser.add_argument(
        "--transport",
        choices=("lean", "botocore"),
        default=os.environ.get("FERRY_TRANSPORT", "lean"),
        help="how streamed objects are fetched and stored: lean (default; a signed urllib3 request, a "
        "fraction of botocore's CPU) or botocore (the reference path)",
    )
    parser.add_argument(
        "--processes",
        default=os.environ.get("FERRY_PROCESSES", "1"),
        metavar="N",
        help="copy in N processes, one per CPU, under the one memory budget and concurrency manager "
        "(1-16, or auto for the CPUs this process may use; default 1, or FERRY_PROCESSES)",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        metavar="PATH",
        help="write one JSON line per second of progress and concurrency",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="progress on stderr: auto (default; live on a terminal, plain otherwise), live (a redrawn "
        "bar, a spinner while the source is listed), plain (a line every --progress-interval seconds, "
        "for logs) or none",
    )
    parser.add_argument(
        "--notify-url",
        metavar="URL",
        help="send a CloudEvent to this webhook when the run ends (instead of spec.notify's Secret); "
        "https unless --notify-allow-http; the URL is never printed",
    )
    parser.add_argument(
        "--notify-allow-http",
        action="store_true",
        help="allow a plain http webhook URL (for a receiver on this machine or a trusted network)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=PLAIN_INTERVAL,
        metavar="SECONDS",
        help=f"with plain progress: seconds between lines (default {PLAIN_INTERVAL:g})",
    )


class RunFailed(Exception):
    """Ends `main` before the copy with an exit code, a message for stderr and the fields of the JSON
    error document."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_INVALID,
        *,
        field: str | None = None,
        reason: str | None = None,
        stderr: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.field = field
        self.reason = reason
        #: The stderr line when it says more than the message (the file name, the reason).
        self.stderr = stderr or f"error: {message}"


def main(args: argparse.Namespace) -> int:
    job: CopyJob | None = None
    try:
        job_file = load_job(args.file)
        job = job_file.copyjob
        return _run(args, job, job_file.secrets)
    except RunFailed as exc:
        return fail(args, exc, job.metadata.name if job else None)


def load_job(path: Path) -> JobFile:
    """The CopyJob file at ``path``; raises `RunFailed` (exit 2) naming the first wrong field."""
    try:
        return load_job_file(path)
    except InvalidSpec as exc:
        raise RunFailed(str(exc), field=first_field(str(exc))) from exc


def resolve_credentials(
    path: Path, locations: Mapping[str, Location | None], secrets: Mapping[str, SecretData]
) -> dict[str, credentials.Credentials | None]:
    """Credentials of each location (by its field, e.g. ``spec.source``) from the file's Secrets; raises
    `RunFailed` (exit 2) naming the field whose Secret is missing or incomplete."""
    warnings: list[str] = []
    creds: dict[str, credentials.Credentials | None] = {}
    for field, location in locations.items():
        if location is None:
            continue
        try:
            creds[field] = credentials.resolve(location, secrets, field, warnings)
        except InvalidSpec as exc:
            raise RunFailed(
                str(exc), field=f"{field}.credentialsSecret", stderr=f"error: {path}: {exc}"
            ) from exc
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return creds


def preflight(client: Any, location: Location, field: str, found: credentials.Credentials | None) -> None:
    """Check ``location`` as `ferry run` does before it copies; raises `RunFailed` (exit 2) with the
    field and reason a failed check points at."""
    try:
        origin = credentials_origin(location, found, field, os.environ)
        check_location(client, location, field, credentials=origin)
    except PreflightError as exc:
        raise RunFailed(
            str(exc),
            field=preflight_field(field, exc.reason),
            reason=exc.reason,
            stderr=f"error: {exc} [{exc.reason}]",
        ) from exc


def _run(args: argparse.Namespace, job: CopyJob, secrets: Mapping[str, SecretData]) -> int:
    spec = job.spec
    creds = resolve_credentials(
        args.file,
        {"spec.source": spec.source, "spec.destination": spec.destination, "spec.report": spec.report},
        secrets,
    )
    source_creds, dest_creds = creds["spec.source"], creds["spec.destination"]
    webhook = resolve_webhook(args, job, secrets)
    try:
        customer_keys = credentials.customer_keys(spec, secrets)
    except InvalidSpec as exc:
        raise RunFailed(str(exc), field=first_field(str(exc)), stderr=f"error: {args.file}: {exc}") from exc
    if customer_keys.source or customer_keys.destination:
        # botocore's debug log prints every request's headers, and an SSE-C request carries its key in
        # one: with a key, botocore says no more than INFO, even under -v.
        botocore_log = logging.getLogger("botocore")
        botocore_log.setLevel(max(logging.INFO, botocore_log.getEffectiveLevel()))

    tune_allocator()
    cgroup = find_cgroup()
    tree = ProcessTree()
    try:
        processes_asked = parse_processes(args.processes)
        budget = detect_budget(cgroup)
        limiter = make_limiter(args.policy, args.concurrency, spec, budget, rss=tree.rss)
    except ValueError as exc:  # a bad FERRY_MEMORY_LIMIT, or a budget that can never hold one transfer
        raise RunFailed(str(exc), field=first_field(str(exc))) from exc
    options = ClientOptions(max_pool_connections=limiter.ceiling + 8)
    source_client = make_client(spec.source, source_creds, options)
    dest_client = make_client(spec.destination, dest_creds, options)
    for client, location, field, found in (
        (source_client, spec.source, "spec.source", source_creds),
        (dest_client, spec.destination, "spec.destination", dest_creds),
    ):
        try:
            preflight(client, location, field, found)
        except RunFailed:
            limiter.close()
            raise
    try:
        check_destination_lock(dest_client, spec)
    except PreflightError as exc:
        limiter.close()
        raise RunFailed(
            str(exc),
            field="spec.preserve.objectLock",
            reason=exc.reason,
            stderr=f"error: {exc} [{exc.reason}]",
        ) from exc

    try:
        check_destination_versioning(dest_client, spec)
    except PreflightError as exc:
        limiter.close()
        raise RunFailed(
            str(exc), field="spec.versions", reason=exc.reason, stderr=f"error: {exc} [{exc.reason}]"
        ) from exc

    if spec.mode is Mode.SYNC and spec.dry_run:
        # A sync's dry run copies and deletes nothing: it counts and lists what the sync would delete.
        limiter.close()
        return _sync_dry_run(args, job, source_client, dest_client)

    lean = args.transport == "lean"
    source_lean = make_lean(spec.source, source_creds, options) if lean else None
    destination_lean = make_lean(spec.destination, dest_creds, options) if lean else None
    # Started before the budget's baseline is measured, which then holds them.
    processes = start_copy_processes(
        processes_asked,
        CopierSetup(spec.source, spec.destination, source_creds, dest_creds, options, lean, limiter.ceiling),
        tree,
        budget_bytes=budget.bytes if isinstance(limiter, AdaptiveLimiter) else None,
        every_version=spec.versions is Versions.ALL,
    )
    part_size = DEFAULT_PART
    if isinstance(limiter, AdaptiveLimiter):
        try:
            # The baseline, measured now that the clients exist, decides the part size, or that
            # the budget is too small to start at all.
            part_size = limiter.plan(DEFAULT_PART).part_size
        except BudgetTooSmall as exc:
            limiter.close()
            if processes is not None:
                processes.close()
            raise RunFailed(str(exc), field=first_field(str(exc))) from exc
    report = FailureReport(args.report)
    evidence = _evidence_recorder(job, creds.get("spec.report"))
    engine = CopyEngine(
        spec=spec,
        source_client=source_client,
        destination_client=dest_client,
        source_lean=source_lean,
        destination_lean=destination_lean,
        limiter=limiter,
        report=report,
        part_size=part_size,
        evidence=evidence[0] if evidence else None,
        customer_keys=customer_keys,
        processes=processes,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: _interrupt(stop))
    try:
        with contextlib.ExitStack() as stack:
            if args.timeline:
                stack.enter_context(Timeline(args.timeline, engine.progress))
            if args.progress != "none":
                live = {"auto": None, "live": True, "plain": False}[args.progress]
                stack.enter_context(
                    ProgressDisplay(engine.progress, live=live, plain_interval=args.progress_interval)
                )
            summary = engine.run(stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        limiter.close()
        if processes is not None:
            processes.close()
    # Taken at once: its rates are those of the run's last window (the throughput at the end).
    final = engine.progress()
    sync = _sync_phase(spec, source_client, dest_client, summary) if spec.mode is Mode.SYNC else None

    peak = memory_peak(cgroup, budget)
    if processes is not None and peak.bytes is not None and peak.source.startswith("VmHWM"):
        # No cgroup limit to read a peak from: the worker's and its copy processes' peaks, summed.
        peak = MemoryPeak(
            peak.bytes + tree.peak_of_copy_processes(),
            "VmHWM (peak RSS) of the worker and its copy processes, summed",
        )
    memory = {
        "peakBytes": peak.bytes,
        "source": peak.source,
        "limitBytes": budget.limit_bytes,
        "budgetBytes": budget.bytes if isinstance(limiter, AdaptiveLimiter) else None,
        "budgetSource": budget.source if isinstance(limiter, AdaptiveLimiter) else None,
        "baselineBytes": limiter.memory_plan.baseline
        if isinstance(limiter, AdaptiveLimiter) and limiter.memory_plan
        else None,
        "partSizeBytes": part_size,
        # Processes the transfers ran in besides the worker's own (0: copied in the worker's threads).
        "copyProcesses": processes.count if processes is not None else 0,
    }
    if spec.report is not None and (summary.counts.failed or summary.counts.archived_skipped):
        _upload_report(job, report.path, creds.get("spec.report"))
    pointer = _finish_evidence(job, summary, *evidence) if evidence else None
    delivery = _notify(webhook, job, summary) if webhook is not None else None
    if args.output == "json":
        document = summary_json(job, summary, memory, final=final)
        if pointer is not None:
            document["evidence"] = pointer
        if delivery is not None:
            document["notify"] = notify.delivery_json(delivery)
        if sync is not None:
            document["sync"] = sync.as_json()
            document["exitCode"] = sync_exit(ending(summary).exit_code, sync)
            if document["exitCode"] != ending(summary).exit_code:  # the copy ended well, its deletes did not
                document["state"] = SYNC_STATES[document["exitCode"]]
        print(json.dumps(document, indent=2))
    else:
        for line in summary_text(job.metadata.name, summary, final):
            print(line)
        if sync is not None:
            print(f"sync: {sync.message()}")
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
    if summary.systematic is not None:
        print(f"error: {summary.systematic.message()} [SystematicFailure]", file=sys.stderr)
    if sync is not None:
        if sync.decision.refusal is not None and ending(summary).exit_code == EXIT_OK:
            print(f"error: sync: {sync.message()} [{sync.decision.refusal.value}]", file=sys.stderr)
        return sync_exit(ending(summary).exit_code, sync)
    return ending(summary).exit_code


# -- spec.mode sync: the delete phase after the copy (worker/deleter.py) --------------------------------


def _sync_phase(spec: CopyJobSpec, source_client: Any, dest_client: Any, summary: Summary) -> SyncOutcome:
    assert spec.deletes is not None  # the model requires it with mode sync
    # Any copy that did not end well (exit code not 0, e.g. archived objects still being restored)
    # counts as unfinished: deletes follow only a copy that ended well.
    finished = summary.complete and ending(summary).exit_code in (EXIT_OK, EXIT_FAILED_OBJECTS)
    copy = CopyEnd(complete=finished, failed=summary.counts.failed)
    sides = SyncSides(spec, source_client, dest_client)
    return run_sync(sides, copy, DeleteLimit.parse(spec.deletes.max))


def _sync_dry_run(args: argparse.Namespace, job: CopyJob, source_client: Any, dest_client: Any) -> int:
    spec = job.spec
    assert spec.deletes is not None
    sides = SyncSides(spec, source_client, dest_client)
    outcome = run_sync(sides, CopyEnd(True, 0), DeleteLimit.parse(spec.deletes.max), dry_run=True)
    code = EXIT_INCOMPLETE if outcome.error else EXIT_OK
    if args.output == "json":
        document = {"name": job.metadata.name, "state": "dryRun", "exitCode": code, "sync": outcome.as_json()}
        print(json.dumps(document, indent=2))
    else:
        print(f"{job.metadata.name}: {outcome.message()}")
        # Keys go out through repr: a key may hold any character, and a terminal must not act on it.
        for key in outcome.sample:
            print(f"  would delete: {key!r}")
        if len(outcome.sample) < outcome.census.candidates:
            print(f"  ... and {outcome.census.candidates - len(outcome.sample):,} more")
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    return code


#: The JSON `state` of a sync whose copy ended well and whose delete phase did not, by exit code.
SYNC_STATES = {
    EXIT_DELETES_REFUSED: "deletesRefused",
    EXIT_INCOMPLETE: "incomplete",
    EXIT_FAILED_OBJECTS: "failed",
}


def sync_exit(copy_exit: int, sync: SyncOutcome) -> int:
    """The exit code of a sync: the copy's when it did not end well (nothing was deleted then), else
    how the delete phase ended."""
    if copy_exit != EXIT_OK:
        return copy_exit
    if sync.decision.refusal in (Refusal.SOURCE_EMPTY, Refusal.LIMIT_EXCEEDED):
        return EXIT_DELETES_REFUSED
    if sync.error or sync.decision.refusal is not None or (sync.result and sync.result.error):
        return EXIT_INCOMPLETE
    if sync.result and sync.result.failed:
        return EXIT_FAILED_OBJECTS
    return EXIT_OK


def make_limiter(
    policy: str | None,
    concurrency: int | None,
    spec: CopyJobSpec,
    budget: MemoryBudget | None = None,
    rss: Callable[[], int] = anonymous_rss,
) -> Limiter:
    """The limiter a run asks: adaptive unless a fixed concurrency (or the incident policy) is asked for.

    The adaptive limiter keeps the run inside ``budget`` (detected when not given). Raises
    `BudgetTooSmall` when the budget cannot even hold the process with its S3 clients and one
    transfer: checked before the clients are made, so such a run ends at once with the minimum instead
    of being killed by the kernel while it starts.
    """
    if policy == "incident":
        return IncidentLimiter()
    if policy == "fixed" or (policy is None and concurrency):
        value = concurrency or spec.concurrency.initial or DEFAULT_CONCURRENCY
        return FixedLimiter(max(1, min(value, spec.concurrency.max)))
    budget = budget or detect_budget()
    check_before_clients(budget, anonymous_rss())
    initial = spec.concurrency.initial or initial_concurrency(
        spec.object_sizes.median, DEFAULT_PART, budget.bytes, spec.concurrency.max
    )
    return AdaptiveLimiter(ControlConfig(initial=initial, maximum=spec.concurrency.max), budget, rss=rss)


def _interrupt(stop: threading.Event) -> None:
    if stop.is_set():
        raise KeyboardInterrupt
    print("\ninterrupted: finishing transfers in flight (Ctrl-C again to abort)", file=sys.stderr)
    stop.set()


# -- pure renderings of a run's end -------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """How a run ended: the `state` of the JSON summary and the exit code."""

    state: str
    exit_code: int


def ending(summary: Summary) -> Ending:
    if summary.systematic is not None:
        # The cause is the configuration, as for input refused before the run: a re-run alone fails again.
        return Ending("systematicFailure", EXIT_INVALID)
    if summary.interrupted:
        return Ending("interrupted", EXIT_INTERRUPTED)
    if summary.error:
        return (
            Ending("invalid", EXIT_INVALID)
            if summary.input_invalid
            else Ending("incomplete", EXIT_INCOMPLETE)
        )
    if restore_pending(summary.counts):
        return Ending("restorePending", EXIT_RESTORE_PENDING)
    if summary.counts.failed:
        return Ending("failed", EXIT_FAILED_OBJECTS)
    return Ending("complete", EXIT_OK)


def not_copied(counts: Counts) -> tuple[int, bool]:
    """Objects not copied (neither copied nor already present) and whether that is exact. While the
    source had not been listed to its end, only a lower bound is known: what was listed and not done."""
    handled = counts.copied + counts.skipped
    total = counts.total
    if total is not None:
        return total - handled, True
    return max(counts.listed, counts.discovered) - handled, False


def accounted(counts: Counts) -> tuple[int, int, int]:
    """Total objects, total bytes and objects pending, by the best total known: the listed total once
    the source listing ended (an interrupted run knows it even though the copier never took in the
    rest), else what the copier took in. total = copied + skipped + failed + pending either way."""
    total = counts.total if counts.total is not None else counts.discovered
    total_bytes = counts.bytes_total if counts.bytes_total is not None else counts.bytes_discovered
    return total, total_bytes, total - counts.done


def _rates(summary: Summary, final: Progress | None) -> dict[str, float]:
    duration = summary.duration_seconds
    return {
        "objectsPerSecond": round(summary.objects_per_second, 2),
        "bytesPerSecond": round(summary.counts.bytes_copied / duration, 1) if duration > 0 else 0.0,
        "finalObjectsPerSecond": round(final.objects_per_second, 2) if final else 0.0,
        "finalBytesPerSecond": round(final.bytes_per_second, 1) if final else 0.0,
    }


def ending_line(summary: Summary) -> str | None:
    """The line that says how the run ended when it did not simply end well."""
    end = ending(summary)
    missing, exact = not_copied(summary.counts)
    if exact:
        left = f"{missing:,} of {summary.counts.total:,} objects not copied"
    elif missing:
        left = f"at least {missing:,} objects not copied (the source was still being listed)"
    else:
        left = "the objects not listed yet were not copied (the source was still being listed)"
    if end.state == "systematicFailure":
        assert summary.systematic is not None
        return f"STOPPED: {summary.systematic.message()}; {left}; fix it and run again (what is done is kept)"
    if end.state == "interrupted":
        return f"INTERRUPTED: {left}; run again to resume (what is done is kept and skipped)"
    if end.state == "incomplete":
        return f"INCOMPLETE: {summary.error}; {left}; run again to resume"
    if end.state == "invalid":
        return f"INVALID INPUT: {summary.error}; nothing was copied; fix spec.source.manifest and run again"
    if end.state == "restorePending":
        return restore_pending_line(summary.counts, summary.report_path)
    if end.state == "failed":
        return (
            f"FAILED: {summary.counts.failed:,} objects could not be copied (all of them in "
            f"{summary.report_path}); run again to retry them"
        )
    return None


def summary_text(name: str, summary: Summary, final: Progress | None = None) -> list[str]:
    """The text summary: counts and duration, average and final throughput, failures, how it ended."""
    c = summary.counts
    rates = _rates(summary, final)
    total, total_bytes, pending = accounted(c)
    lines = [
        f"{name}: {total:,} objects ({format_bytes(total_bytes)}): "
        f"{c.copied:,} copied ({format_bytes(c.bytes_copied)}), {c.skipped:,} skipped, {c.failed:,} failed"
        + (f", {pending:,} not done" if pending else "")
        + f" in {format_duration(summary.duration_seconds)}",
        f"  throughput: {rates['objectsPerSecond']:,.1f} objects/s "
        f"({format_bytes(int(rates['bytesPerSecond']))}/s) on average"
        + (
            f", {rates['finalObjectsPerSecond']:,.1f} objects/s "
            f"({format_bytes(int(rates['finalBytesPerSecond']))}/s) at the end"
            if final is not None
            else ""
        ),
    ]
    if summary.versions is not None:
        v = summary.versions
        lines.append(
            f"  versions: the counts above are versions of {v.keys:,} keys; {v.delete_markers_copied:,} "
            f"delete markers copied, {v.diverged_keys:,} keys with a diverged destination history"
        )
    lines += [
        f"  failed: {f.key!r}{f' version {f.version!r}' if f.version else ''}: {f.code}: {f.message}"
        for f in summary.failures[:10]
    ]
    archived = archived_line(c)
    if archived:
        lines.append(archived)
    line = ending_line(summary)
    if line:
        lines.append(line)
    return lines


def summary_json(
    job: CopyJob, summary: Summary, memory: dict[str, Any] | None = None, *, final: Progress | None = None
) -> dict[str, Any]:
    c = summary.counts
    end = ending(summary)
    missing, exact = not_copied(c)
    total, total_bytes, pending = accounted(c)
    document = {
        "name": job.metadata.name,
        "state": end.state,
        "exitCode": end.exit_code,
        "complete": summary.complete,
        "objects": {
            "total": total,
            "copied": c.copied,
            "skipped": c.skipped,
            "failed": c.failed,
            "pending": pending,
        },
        "bytes": {
            "total": total_bytes,
            "copied": c.bytes_copied,
            "skipped": c.bytes_skipped,
            "failed": c.bytes_failed,
        },
        # Objects neither copied nor already present; a lower bound when the listing had not ended.
        "notCopied": missing,
        "totalKnown": exact,
        "durationSeconds": round(summary.duration_seconds, 3),
        **_rates(summary, final),
        "requests": summary.requests,
        "retries": summary.retries,
        "throttles": summary.throttles,
        # Copied objects that changed at the source during their copy and were copied again.
        "changedDuringCopy": c.changed_during_copy,
        "failedSample": [f.as_json() for f in summary.failures[:20]],
        # Archived objects met (spec.archived): skipped, restored, not restored in time, still waiting.
        "archived": archived_json(c, summary.archived),
        "report": summary.report_path if c.failed or c.archived_skipped else None,
        "error": summary.error,
        "interrupted": summary.interrupted,
        "message": ending_line(summary),
    }
    if summary.versions is not None:
        # spec.versions all: the objects counts above count versions (delete markers included).
        document["versions"] = {
            "keys": summary.versions.keys,
            "deleteMarkersCopied": summary.versions.delete_markers_copied,
            "divergedKeys": summary.versions.diverged_keys,
        }
    if summary.systematic is not None:
        stopped: dict[str, Any] = summary.systematic.as_json()
        stopped["field"] = first_field(summary.systematic.fix())
        document["systematicFailure"] = stopped
    if memory is not None:
        # Peak from the cgroup when the run has a memory limit (what the kernel's OOM killer compares).
        document["memory"] = memory
    return document


def error_json(
    message: str,
    exit_code: int,
    *,
    name: str | None = None,
    field: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The JSON document of a run that ended before (or instead of) a summary."""
    state = {EXIT_INVALID: "invalid", EXIT_INTERRUPTED: "interrupted"}.get(exit_code, "error")
    return {
        "name": name,
        "state": state,
        "exitCode": exit_code,
        "complete": False,
        "error": message,
        "field": field,
        "reason": reason,
    }


_FIELD_LINE = re.compile(r"^((?:spec|metadata)(?:\.[A-Za-z0-9_]+|\[\d+\])+): ", re.MULTILINE)
_FIELD_ANYWHERE = re.compile(r"\b(spec(?:\.[A-Za-z][A-Za-z0-9_]*)+)")


def first_field(message: str) -> str | None:
    """The first field a message names: a validation line (`spec.overwirte: unknown field`), else the
    first `spec.…` path in the text (`set spec.resources.memory to …`)."""
    match = _FIELD_LINE.search(message) or _FIELD_ANYWHERE.search(message)
    return match.group(1) if match else None


#: The field of a location a preflight reason points at (reasons not listed point at the location).
_PREFLIGHT_FIELDS = {
    "BucketNotFound": "bucket",
    "EndpointUnreachable": "endpoint",
    "NotS3": "endpoint",
    "RegionMismatch": "region",
}


def preflight_field(location_field: str, reason: str) -> str:
    sub = _PREFLIGHT_FIELDS.get(reason)
    return f"{location_field}.{sub}" if sub else location_field


def credentials_origin(
    location: Location, found: credentials.Credentials | None, field: str, environ: Mapping[str, str]
) -> str:
    """Where the credentials of ``location`` came from, as an error message names it: the Secret when
    one was used, else what the default AWS credential chain will have found first."""
    name = location.credentials_secret
    if found is not None:
        return f"Secret {name!r} named by {field}.credentialsSecret"
    why = (
        f"Secret {name!r} named by {field}.credentialsSecret is not in the file"
        if name
        else f"{field} sets no credentialsSecret"
    )
    if environ.get(credentials.ACCESS_KEY):
        return (
            f"the environment variables {credentials.ACCESS_KEY}/{credentials.SECRET_KEY} "
            f"({why}, so the default AWS credential chain used them)"
        )
    if environ.get("AWS_PROFILE"):
        return f"the AWS profile {environ['AWS_PROFILE']!r} named by AWS_PROFILE ({why})"
    return (
        "the default AWS credential chain: ~/.aws/credentials, ~/.aws/config, or the instance or "
        f"container role ({why})"
    )


def _upload_report(job: CopyJob, path: Path, creds: credentials.Credentials | None) -> None:
    assert job.spec.report is not None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = report_upload(path, job.spec.report, creds, f"{job.metadata.name}/failed-{stamp}.jsonl")
    if target:
        print(f"report: {target}", file=sys.stderr)


def resolve_webhook(
    args: argparse.Namespace, job: CopyJob, secrets: Mapping[str, SecretData]
) -> notify.Webhook | None:
    """The webhook told when the run ends; raises `RunFailed` (exit 2) before anything is copied when its
    URL cannot be used (the message names where it came from, never the URL)."""
    ref = job.spec.notify.url_secret if job.spec.notify is not None else None
    try:
        return notify.run_webhook(
            getattr(args, "notify_url", None),
            bool(getattr(args, "notify_allow_http", False)),
            (ref.name, ref.key) if ref is not None else None,
            {name: secret.values for name, secret in secrets.items()},
        )
    except notify.NotifyError as exc:
        field = "spec.notify.urlSecret" if ref is not None and not getattr(args, "notify_url", None) else None
        raise RunFailed(str(exc), field=field) from exc


def _notify(webhook: notify.Webhook, job: CopyJob, summary: Summary) -> notify.Delivery | None:
    """Send the run's completion event (none for an interrupted run); says on stderr how it went."""
    total, total_bytes, pending = accounted(summary.counts)
    c = summary.counts
    event = notify.run_event(
        name=job.metadata.name,
        namespace=job.metadata.namespace,
        state=ending(summary).state,
        event_id=str(uuid.uuid4()),
        time_=datetime.now(UTC),
        objects={
            "total": total,
            "copied": c.copied,
            "skipped": c.skipped,
            "failed": c.failed,
            "pending": pending,
        },
        bytes_={
            "total": total_bytes,
            "copied": c.bytes_copied,
            "skipped": c.bytes_skipped,
            "failed": c.bytes_failed,
        },
    )
    if event is None:
        return None
    delivery = notify.send(webhook.url, event)
    print(notify.describe(delivery, webhook.origin), file=sys.stderr)
    return delivery


def _evidence_recorder(
    job: CopyJob, creds: credentials.Credentials | None
) -> tuple[EvidenceRecorder, ReportStore] | None:
    """With spec.report.include: all, the recorder of every object's outcome and where its parts go."""
    location = job.spec.report
    if location is None or location.include is not ReportInclude.ALL:
        return None
    store = ReportStore(location, creds)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    recorder = EvidenceRecorder(
        scope=run_scope(job.metadata.name, stamp),
        sink=store.put_file,
        lines_per_part=lines_per_part(os.environ),
    )
    return recorder, store


def _finish_evidence(
    job: CopyJob, summary: Summary, recorder: EvidenceRecorder, store: ReportStore
) -> dict[str, Any]:
    """Write the run's evidence summary; returns what the JSON summary's ``evidence`` holds."""
    pointer = write_evidence(
        recorder,
        store,
        job=job.metadata.name,
        shard=None,
        resumed_after=None,
        complete=summary.complete,
        replaces=False,
    )
    if pointer["summary"]:
        print(f"report: {pointer['summary']}", file=sys.stderr)
    return pointer


def fail(args: argparse.Namespace, failure: RunFailed, name: str | None) -> int:
    """Print how ``failure`` ended the command (stderr; with --output json also the error document on
    stdout) and return its exit code."""
    print(failure.stderr, file=sys.stderr)
    if getattr(args, "output", "text") == "json":
        document = error_json(
            str(failure), failure.exit_code, name=name, field=failure.field, reason=failure.reason
        )
        print(json.dumps(document, indent=2))
    return failure.exit_code


def run_cli(args: argparse.Namespace) -> int:
    try:
        return main(args)
    except FerryError as exc:
        return fail(args, RunFailed(str(exc), field=first_field(str(exc))), None)
    except KeyboardInterrupt:  # the second Ctrl-C: no summary, but a document saying why
        message = (
            "aborted by a second Ctrl-C before the summary; what was copied is kept; run again to resume"
        )
        return fail(args, RunFailed(message, EXIT_INTERRUPTED), None)
    except Exception as exc:  # a bug: the traceback goes to stderr, scripts still get a document
        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc} (a bug: please report it with the log)"
        return fail(args, RunFailed(message, EXIT_INTERNAL), None)
