"""`ferry run -f copyjob.yaml`: run a CopyJob on this machine with the same engine the worker pods use.

Exit codes scripts can trust:
    0  every object was copied or skipped as already present
    1  an unexpected internal error (a bug: please report it with the log)
    2  invalid input: bad file, unknown field, unreachable endpoint, missing bucket, denied access
    3  the job ran to the end but some objects failed (listed in the report)
    4  the job could not finish: the source listing broke off
    130 interrupted (Ctrl-C); what finished is kept, a re-run skips it
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.errors import FerryError, InvalidSpec, PreflightError
from ferry.model import CopyJob, CopyJobSpec, format_bytes
from ferry.model.loading import load_job_file
from ferry.worker import credentials
from ferry.worker.adaptive import AdaptiveLimiter, IncidentLimiter
from ferry.worker.budget import (
    BudgetTooSmall,
    MemoryBudget,
    anonymous_rss,
    check_before_clients,
    detect_budget,
    find_cgroup,
    memory_peak,
    tune_allocator,
)
from ferry.worker.control import ControlConfig, initial_concurrency
from ferry.worker.display import ProgressDisplay, format_duration
from ferry.worker.engine import CopyEngine, Summary
from ferry.worker.leans3 import make_lean
from ferry.worker.limits import FixedLimiter, Limiter
from ferry.worker.parts import DEFAULT_PART
from ferry.worker.preflight import check_location
from ferry.worker.report import FailureReport
from ferry.worker.report import upload as report_upload
from ferry.worker.s3 import ClientOptions, make_client
from ferry.worker.timeline import Timeline

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID = 2
EXIT_FAILED_OBJECTS = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130

DEFAULT_CONCURRENCY = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--file", required=True, type=Path, help="CopyJob manifest (may also hold Secrets)"
    )
    parser.add_argument("--output", choices=("text", "json"), default="text", help="final summary format")
    parser.add_argument("--report", type=Path, help="write failed objects here as JSON lines")
    parser.add_argument(
        "--policy",
        choices=("adaptive", "fixed", "incident"),
        help="concurrency policy: adaptive (default; finds the level on its own within the memory budget), "
        "fixed (--concurrency transfers), incident (the +2-per-step manager Ferry replaces; for benchmarks)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
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
        "--timeline", type=Path, help="write one JSON line per second of progress and concurrency"
    )
    parser.add_argument("--progress", choices=("auto", "live", "plain", "none"), default="auto")


def main(args: argparse.Namespace) -> int:
    try:
        job_file = load_job_file(args.file)
    except InvalidSpec as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    job = job_file.copyjob
    spec = job.spec
    warnings: list[str] = []
    try:
        source_creds = credentials.resolve(spec.source, job_file.secrets, "spec.source", warnings)
        dest_creds = credentials.resolve(spec.destination, job_file.secrets, "spec.destination", warnings)
        report_creds = (
            credentials.resolve(spec.report, job_file.secrets, "spec.report", warnings)
            if spec.report
            else None
        )
    except InvalidSpec as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)

    tune_allocator()
    cgroup = find_cgroup()
    try:
        budget = detect_budget(cgroup)
        limiter = make_limiter(args.policy, args.concurrency, spec, budget)
    except ValueError as exc:  # a bad FERRY_MEMORY_LIMIT, or a budget that can never hold one transfer
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    options = ClientOptions(max_pool_connections=limiter.ceiling + 8)
    source_client = make_client(spec.source, source_creds, options)
    dest_client = make_client(spec.destination, dest_creds, options)
    try:
        check_location(source_client, spec.source, "spec.source")
        check_location(dest_client, spec.destination, "spec.destination")
    except PreflightError as exc:
        limiter.close()
        print(f"error: {exc} [{exc.reason}]", file=sys.stderr)
        return EXIT_INVALID

    lean = args.transport == "lean"
    source_lean = make_lean(spec.source, source_creds, options) if lean else None
    destination_lean = make_lean(spec.destination, dest_creds, options) if lean else None
    part_size = DEFAULT_PART
    if isinstance(limiter, AdaptiveLimiter):
        try:
            # The baseline, measured now that the clients exist, decides the part size, or that
            # the budget is too small to start at all.
            part_size = limiter.plan(DEFAULT_PART).part_size
        except BudgetTooSmall as exc:
            limiter.close()
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
    report = FailureReport(args.report)
    engine = CopyEngine(
        spec=spec,
        source_client=source_client,
        destination_client=dest_client,
        source_lean=source_lean,
        destination_lean=destination_lean,
        limiter=limiter,
        report=report,
        part_size=part_size,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: _interrupt(stop))
    try:
        with contextlib.ExitStack() as stack:
            if args.timeline:
                stack.enter_context(Timeline(args.timeline, engine.progress))
            if args.progress != "none":
                live = {"auto": None, "live": True, "plain": False}[args.progress]
                stack.enter_context(ProgressDisplay(engine.progress, live=live))
            summary = engine.run(stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        limiter.close()

    peak = memory_peak(cgroup, budget)
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
    }
    if spec.report is not None and summary.counts.failed:
        _upload_report(job, report.path, report_creds)
    _print_summary(job, summary, args.output, memory)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.error:
        return EXIT_INCOMPLETE
    return EXIT_FAILED_OBJECTS if summary.counts.failed else EXIT_OK


def make_limiter(
    policy: str | None, concurrency: int | None, spec: CopyJobSpec, budget: MemoryBudget | None = None
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
    return AdaptiveLimiter(ControlConfig(initial=initial, maximum=spec.concurrency.max), budget)


def _interrupt(stop: threading.Event) -> None:
    if stop.is_set():
        raise KeyboardInterrupt
    print("\ninterrupted: finishing transfers in flight (Ctrl-C again to abort)", file=sys.stderr)
    stop.set()


def summary_json(job: CopyJob, summary: Summary, memory: dict[str, Any] | None = None) -> dict[str, Any]:
    c = summary.counts
    document = {
        "name": job.metadata.name,
        "complete": summary.complete,
        "objects": {
            "total": c.discovered,
            "copied": c.copied,
            "skipped": c.skipped,
            "failed": c.failed,
            "pending": c.pending,
        },
        "bytes": {
            "total": c.bytes_discovered,
            "copied": c.bytes_copied,
            "skipped": c.bytes_skipped,
            "failed": c.bytes_failed,
        },
        "durationSeconds": round(summary.duration_seconds, 3),
        "objectsPerSecond": round(summary.objects_per_second, 2),
        "bytesPerSecond": round(c.bytes_copied / summary.duration_seconds, 1)
        if summary.duration_seconds
        else 0,
        "requests": summary.requests,
        "retries": summary.retries,
        "throttles": summary.throttles,
        "failedSample": [f.as_json() for f in summary.failures[:20]],
        "report": summary.report_path if c.failed else None,
        "error": summary.error,
        "interrupted": summary.interrupted,
    }
    if memory is not None:
        # Peak from the cgroup when the run has a memory limit (what the kernel's OOM killer compares).
        document["memory"] = memory
    return document


def _print_summary(job: CopyJob, summary: Summary, output: str, memory: dict[str, Any] | None = None) -> None:
    if output == "json":
        print(json.dumps(summary_json(job, summary, memory), indent=2))
        return
    c = summary.counts
    print(
        f"{job.metadata.name}: {c.discovered:,} objects ({format_bytes(c.bytes_discovered)}): "
        f"{c.copied:,} copied ({format_bytes(c.bytes_copied)}), {c.skipped:,} skipped, {c.failed:,} failed"
        + (f", {c.pending:,} not done" if c.pending else "")
        + f" in {format_duration(summary.duration_seconds)} ({summary.objects_per_second:,.1f} objects/s)"
    )
    for failure in summary.failures[:10]:
        print(f"  failed: {failure.key!r}: {failure.code}: {failure.message}")
    if c.failed:
        print(f"  all {c.failed:,} failed objects: {summary.report_path}")
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)


def _upload_report(job: CopyJob, path: Path, creds: credentials.Credentials | None) -> None:
    assert job.spec.report is not None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = report_upload(path, job.spec.report, creds, f"{job.metadata.name}/failed-{stamp}.jsonl")
    if target:
        print(f"report: {target}", file=sys.stderr)


def run_cli(args: argparse.Namespace) -> int:
    try:
        return main(args)
    except FerryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
