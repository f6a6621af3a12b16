"""One reconciliation of one CopyJob: validate references, plan once, run the Indexed Job, aggregate.

Level-based: every pass starts from what exists (the plan ConfigMap, the Job, the pods, the progress
ledger) and converges towards the spec, so an operator restarted at any point loses nothing and never
re-plans a finished plan. The kopf wiring (`handlers.py`) calls `reconcile` on a timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec, format_bytes
from ferry.model.loading import format_validation_error
from ferry.model.plan import SHARDS_FILE, SUMMARY_FILE, Shard
from ferry.model.quantity import parse_bytes, to_quantity
from ferry.operator import conditions as cond
from ferry.operator import ledger
from ferry.operator.aggregate import JobView, Totals, phase_and_conditions, totals, worker_failures
from ferry.operator.conditions import Condition
from ferry.operator.errors import Stalled
from ferry.operator.kube import Kube, fetch_worker_status
from ferry.operator.planning import Planner
from ferry.operator.render import (
    LABEL_COPYJOB,
    Owner,
    child_name,
    fit_shards,
    job_name,
    labels,
    plan_name,
    render_job,
    render_plan,
)
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing, size_from_histogram
from ferry.worker.credentials import credentials_from_values
from ferry.worker.display import format_duration
from ferry.worker.filters import ObjectFilter
from ferry.worker.preflight import check_location
from ferry.worker.s3 import ClientOptions, Credentials, list_pages, make_client
from ferry.worker.statusdoc import WorkerReport, parse_report

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: Plans by CopyJob uid: a plan never changes once written, so it is read from its ConfigMap once.
_plans: dict[str, tuple[dict[str, Any], list[Shard]]] = {}
#: Last `/status` answer of each running pod, by pod name; bounded by the pods of this operator's jobs.
_last_answers: dict[str, WorkerReport] = {}
#: CopyJobs whose worker Job exists: their pods read the Secrets themselves, so a pass need not read them
#: again (two API reads per CopyJob per pass saved, and the operator touches credentials less often).
_started: set[str] = set()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_name(owner: str) -> str:
    return child_name(owner, "progress", 253, label=False)


def forget(uid: str) -> None:
    """Drop what this process remembers of a deleted CopyJob."""
    _plans.pop(uid, None)
    _started.discard(uid)


@dataclass
class Context:
    """Everything one pass needs; `post` sends a Kubernetes Event about the CopyJob."""

    kube: Kube
    settings: OperatorSettings
    post: Callable[[str, str, str], None]  # (type, reason, message)


def parse_spec(raw: dict[str, Any]) -> CopyJobSpec:
    try:
        return CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidSpec(format_validation_error(exc, CopyJobSpec)) from exc


def _stalled_status(status: dict[str, Any], reason: str, message: str, generation: int) -> dict[str, Any]:
    conditions = cond.set_conditions(
        status.get("conditions") or [],
        [
            Condition("Stalled", "True", reason, message),
            Condition("Progressing", "False", reason, message),
            Condition("Succeeded", "Unknown", reason, message),
        ],
        now(),
        generation,
    )
    return {"observedGeneration": generation, "phase": "Pending", "conditions": conditions}


async def reconcile(
    ctx: Context,
    meta: dict[str, Any],
    spec_raw: dict[str, Any],
    status: dict[str, Any],
    active_in_namespace: int,
) -> dict[str, Any]:
    """Return the status to write. Raises nothing for user errors: they become conditions and Events."""
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation") or 1)
    owner = Owner(name, namespace, uid)
    if status.get("phase") in TERMINAL:
        return await _after_finish(ctx, namespace, name, spec_raw, status, generation)
    try:
        spec = parse_spec(spec_raw)
        credentials = (
            {} if uid in _started else await asyncio.to_thread(_credentials, ctx.kube, namespace, spec)
        )
    except (InvalidSpec, Stalled) as exc:
        reason = exc.reason if isinstance(exc, Stalled) else "InvalidSpec"
        if not cond.is_true(status.get("conditions") or [], "Stalled") or _message(status, "Stalled") != str(
            exc
        ):
            ctx.post("Warning", reason, str(exc))
        return _stalled_status(status, reason, str(exc), generation)

    cached = _plans.get(uid)
    plan = None if cached else await asyncio.to_thread(ctx.kube.configmap, namespace, plan_name(name))
    if cached:
        summary, shards = cached
    elif plan is None:
        try:
            summary, shards = await _plan(ctx, owner, spec, credentials, status, generation)
        except PreflightError as exc:
            ctx.post("Warning", exc.reason, str(exc))
            return _stalled_status(status, exc.reason, str(exc), generation)
    else:
        summary = json.loads(plan["data"][SUMMARY_FILE])
        shards = [Shard.from_json(s) for s in json.loads(plan["data"][SHARDS_FILE])]
    _plans[uid] = (summary, shards)

    base: dict[str, Any] = {
        "observedGeneration": generation,
        "plan": {k: v for k, v in summary.items() if k != "reason"},
        "memory": {
            "limit": summary["podMemory"],
            "peakBytes": (status.get("memory") or {}).get("peakBytes", 0),
        },
    }
    existing = [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"]
    stalled_cleared = Condition("Stalled", "False", "ReferencesValid", "")
    capped = _caps_message(spec, ctx.settings)
    if spec.dry_run:
        phase, updates = phase_and_conditions(
            planned=True, dry_run=True, suspended=False, job=JobView(), totals=None
        )
        return {
            **base,
            "phase": phase,
            "objects": _plan_objects(shards),
            "bytes": _plan_bytes(shards),
            "progressPercent": 0,
            "conditions": cond.set_conditions(
                existing,
                [*updates, stalled_cleared, Condition("Planned", "True", "PlanReady", summary["reason"])],
                now(),
                generation,
            ),
        }

    job_manifest_name = job_name(name)
    job = await asyncio.to_thread(ctx.kube.job, namespace, job_manifest_name)
    parallelism = _parallelism(spec, summary, ctx.settings, len(shards))
    if job is None:
        cap = ctx.settings.max_jobs_per_namespace
        if cap is not None and active_in_namespace >= cap:
            message = f"namespace {namespace} already runs {active_in_namespace} CopyJobs, the platform's limit is {cap}"
            return {
                **base,
                "phase": "Pending",
                "conditions": cond.set_conditions(
                    existing,
                    [Condition("Progressing", "False", "WaitingForCapacity", message), stalled_cleared],
                    now(),
                    generation,
                ),
            }
        sizing = _sizing_from_summary(summary)
        settings, note = ctx.settings, ""
        account = settings.worker_service_account
        if account and not await asyncio.to_thread(ctx.kube.service_account_exists, namespace, account):
            # Pods naming a missing ServiceAccount are never created; the namespace's default one
            # serves as well, since worker pods never mount a token.
            settings = replace(settings, worker_service_account="")
            note = f"; ServiceAccount {account!r} is not in {namespace}, using the default one (no token mounted)"
        manifest = render_job(owner, spec, sizing, len(shards), settings, parallelism)
        await asyncio.to_thread(ctx.kube.create_job, manifest)
        await asyncio.to_thread(ctx.kube.create_configmap, _ledger(owner))
        ctx.post(
            "Normal",
            "Started",
            f"started {len(shards)} shard(s) on up to {parallelism} pod(s) of {summary['podMemory']} each{note}",
        )
        job = await asyncio.to_thread(ctx.kube.job, namespace, job_manifest_name)
    assert job is not None
    _started.add(uid)
    await asyncio.to_thread(_converge_job, ctx.kube, job, parallelism, spec.suspend)

    view = job_view(job)
    ledger_map = await asyncio.to_thread(ctx.kube.configmap, namespace, ledger_name(name))
    ledger_data: dict[str, str] = dict((ledger_map or {}).get("data") or {})
    finished = ledger.read(ledger_data)
    pods = await asyncio.to_thread(ctx.kube.pods, namespace, f"{LABEL_COPYJOB}={name}")
    running, new_finished = await asyncio.to_thread(_collect, pods, view, finished, ctx.settings.status_port)
    if new_finished:
        reports = {i: r for i, t in new_finished.items() if (r := parse_report(t))}
        await asyncio.to_thread(
            ctx.kube.patch_configmap_data,
            namespace,
            ledger_name(name),
            ledger.additions(reports, ledger_data),
        )
        finished.update(reports)
    failures = worker_failures(pods)
    why = failures.summary(summary["podMemory"])
    if why:
        # The Job only says "failed indexes"; the pods say why (an OOM kill, a budget too small).
        view = replace(view, failure_message=why)
    counted = totals(shards, finished, running, view, int(base["memory"]["peakBytes"] or 0))
    phase, updates = phase_and_conditions(
        planned=True, dry_run=False, suspended=spec.suspend, job=view, totals=counted
    )
    extra = [stalled_cleared, Condition("Planned", "True", "PlanReady", summary["reason"])]
    if capped:
        extra.append(Condition("Capped", "True", "PlatformLimits", capped))
    if counted.lost_reports:
        extra.append(
            Condition(
                "ReportsLost",
                "True",
                "TerminationMessagesMissing",
                f"shards {counted.lost_reports} finished but their reports were lost; "
                "their objects are counted as copied",
            )
        )
    new_status = {
        **base,
        **_render_counts(counted, status),
        "phase": phase,
        "conditions": cond.set_conditions(existing, [*updates, *extra], now(), generation),
        "workers": {
            "desired": 0 if spec.suspend else parallelism,
            "active": view.active,
            "running": len(running),
            "succeeded": len(view.completed_indexes),
            "failed": view.failed_pods,
            "oomKilled": len(failures.oom_killed),
            **({"lastFailure": why} if why else {}),
        },
        "concurrency": {
            "total": sum(p["concurrency"] for p in counted.per_pod),
            "perPod": counted.per_pod[:1000],
        },
        "startTime": status.get("startTime") or now(),
    }
    new_status["memory"]["peakBytes"] = counted.peak_rss
    if spec.report is not None:
        new_status["report"] = f"s3://{spec.report.bucket}/{spec.report.prefix}{name}/"
    if phase in TERMINAL and status.get("phase") not in TERMINAL:
        new_status["completionTime"] = now()
        kind = "Normal" if phase == "Succeeded" else "Warning"
        succeeded = cond.get(new_status["conditions"], "Succeeded") or {}
        ctx.post(kind, "Completed" if phase == "Succeeded" else "Failed", str(succeeded.get("message", "")))
    return new_status


async def _after_finish(
    ctx: Context, namespace: str, name: str, spec_raw: dict[str, Any], status: dict[str, Any], generation: int
) -> dict[str, Any]:
    """`ttlSecondsAfterFinished`: remove the Job and its pods once the final counts are in the status,
    keep the CopyJob. Done here rather than with the Job's own TTL, which could delete pods before
    their termination messages were read."""
    ttl = spec_raw.get("ttlSecondsAfterFinished")
    done = status.get("completionTime")
    if ttl is None or not done or cond.is_true(status.get("conditions") or [], "WorkersRemoved"):
        return {}
    finished = datetime.strptime(done, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if (datetime.now(UTC) - finished).total_seconds() < float(ttl):
        return {}
    await asyncio.to_thread(ctx.kube.delete_job, namespace, job_name(name))
    ctx.post(
        "Normal",
        "WorkersRemoved",
        f"removed the worker Job {ttl} s after completion (ttlSecondsAfterFinished)",
    )
    return {
        "conditions": cond.set_conditions(
            status.get("conditions") or [],
            [
                Condition(
                    "WorkersRemoved",
                    "True",
                    "TTLExpired",
                    "ttlSecondsAfterFinished passed; final status kept",
                )
            ],
            now(),
            generation,
        )
    }


def _message(status: dict[str, Any], kind: str) -> str:
    found = cond.get(status.get("conditions") or [], kind)
    return str(found.get("message", "")) if found else ""


def _credentials(kube: Kube, namespace: str, spec: CopyJobSpec) -> dict[str, Credentials | None]:
    result: dict[str, Credentials | None] = {}
    for role, location in (
        ("source", spec.source),
        ("destination", spec.destination),
        ("report", spec.report),
    ):
        if location is None or location.credentials_secret is None:
            result[role] = None
            continue
        secret = location.credentials_secret
        values = kube.secret(namespace, secret)
        if values is None:
            raise Stalled(
                "CredentialsSecretMissing",
                f"Secret {secret!r} named by spec.{role}.credentialsSecret does not exist in namespace "
                f"{namespace}; create it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        try:
            result[role] = credentials_from_values(
                values, f"Secret {secret!r} (spec.{role}.credentialsSecret)"
            )
        except InvalidSpec as exc:
            raise Stalled("CredentialsKeyMissing", str(exc)) from exc
    return result


async def _plan(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    credentials: dict[str, Credentials | None],
    status: dict[str, Any],
    generation: int,
) -> tuple[dict[str, Any], list[Shard]]:
    """List the source once, size the workers, cut shards and store the plan ConfigMap."""
    options = ClientOptions(max_pool_connections=4)
    source = make_client(spec.source, credentials["source"], options)
    destination = make_client(spec.destination, credentials["destination"], options)
    await asyncio.to_thread(check_location, source, spec.source, "spec.source")
    await asyncio.to_thread(check_location, destination, spec.destination, "spec.destination")
    ctx.post("Normal", "Planning", f"listing s3://{spec.source.bucket}/{spec.source.prefix}")
    planning_status = {
        "observedGeneration": generation,
        "phase": "Planning",
        "conditions": cond.set_conditions(
            [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"],
            [
                Condition("Planned", "Unknown", "Listing", "listing the source"),
                Condition("Succeeded", "Unknown", "Planning", ""),
            ],
            now(),
            generation,
        ),
    }
    await asyncio.to_thread(ctx.kube.patch_status, owner.namespace, owner.name, planning_status)
    # Pieces no larger than the user's shard bounds, so the bounds can be honoured exactly.
    planner = Planner(
        piece_objects=min(1000, spec.shard_size.max_objects or 1000),
        piece_bytes=min(2**30, spec.shard_size.max_bytes or 2**30),
    )
    object_filter = ObjectFilter.compile(spec.filter, spec.source.prefix)
    started = time.monotonic()

    def listing() -> None:
        last = time.monotonic()
        for page in list_pages(source, spec.source.bucket, spec.source.prefix):
            for obj in page:
                if object_filter.accepts(obj):
                    planner.add(obj.key, obj.size)
            if time.monotonic() - last >= 2.0:
                objects, nbytes = planner.progress
                ctx.kube.patch_status(
                    owner.namespace,
                    owner.name,
                    {"plan": {"listingProgress": {"objects": objects, "bytes": nbytes}}},
                    best_effort=True,
                )
                last = time.monotonic()

    await asyncio.to_thread(listing)
    histogram = planner.histogram()
    memory_override = _memory_override(spec, ctx.settings)
    target = spec.target
    deadline = (target.deadline - datetime.now(UTC)).total_seconds() if target and target.deadline else None
    sizing_args: dict[str, Any] = {
        "target_objects_per_second": target.objects_per_second if target else None,
        "deadline_seconds": deadline,
        "parallelism_cap": _parallelism_cap(spec, ctx.settings),
        "memory_override": memory_override,
        "concurrency_max": spec.concurrency.max,
    }
    first = size_from_histogram(histogram, 1000, **sizing_args)
    shards = fit_shards(
        planner.finish(
            max(1, min(first.parallelism * 4, max(1, histogram.objects // 100))),
            spec.shard_size.max_objects,
            spec.shard_size.max_bytes,
        )
    )
    sizing = size_from_histogram(histogram, len(shards), **sizing_args)
    summary = {
        "objects": histogram.objects,
        "bytes": histogram.bytes,
        "shards": len(shards),
        "configMap": plan_name(owner.name),
        "histogram": [
            {"le": to_quantity(int(str(h["le"]))) if h["le"] != "+Inf" else "+Inf", "count": h["count"]}
            for h in histogram.as_json()
        ],
        "predictedSeconds": sizing.predicted_seconds,
        "podMemory": to_quantity(sizing.pod_memory_bytes),
        "memoryLimit": to_quantity(sizing.memory_limit_bytes),
        "initialConcurrency": sizing.initial_concurrency,
        "maxConcurrency": sizing.max_concurrency,
        "parallelism": sizing.parallelism,
        "listedAt": now(),
        "listingProgress": {"objects": histogram.objects, "bytes": histogram.bytes},
        "reason": sizing.reason,
    }
    await asyncio.to_thread(ctx.kube.create_configmap, render_plan(owner, spec, shards, summary))
    ctx.post(
        "Normal",
        "Planned",
        f"{histogram.objects:,} objects ({format_bytes(histogram.bytes)}) in {len(shards)} shard(s), listed in "
        f"{format_duration(time.monotonic() - started)}; {sizing.reason}; predicted "
        f"{format_duration(sizing.predicted_seconds)}",
    )
    return summary, shards


def _memory_override(spec: CopyJobSpec, settings: OperatorSettings) -> int | None:
    requested = (
        spec.resources.memory if isinstance(spec.resources.memory, int) else settings.default_worker_memory
    )
    if requested is not None and settings.max_memory_per_pod is not None:
        return min(requested, settings.max_memory_per_pod)
    return requested


def _parallelism_cap(spec: CopyJobSpec, settings: OperatorSettings) -> int | None:
    caps = [c for c in (spec.parallelism, settings.max_pods_per_job) if c]
    return min(caps) if caps else None


def _parallelism(spec: CopyJobSpec, summary: dict[str, Any], settings: OperatorSettings, shards: int) -> int:
    """Pods now: the user's `spec.parallelism` when set (edits apply live), else the plan's, within caps."""
    wanted = spec.parallelism or int(summary["parallelism"])
    if settings.max_pods_per_job:
        wanted = min(wanted, settings.max_pods_per_job)
    return max(1, min(wanted, shards))


def _caps_message(spec: CopyJobSpec, settings: OperatorSettings) -> str:
    notes = []
    if spec.parallelism and settings.max_pods_per_job and spec.parallelism > settings.max_pods_per_job:
        notes.append(f"parallelism {spec.parallelism} capped at {settings.max_pods_per_job} pods per job")
    memory = spec.resources.memory
    if isinstance(memory, int) and settings.max_memory_per_pod and memory > settings.max_memory_per_pod:
        notes.append(
            f"memory {to_quantity(memory)} capped at {to_quantity(settings.max_memory_per_pod)} per pod"
        )
    return "; ".join(notes) + (" by the platform's limits" if notes else "")


def _sizing_from_summary(summary: dict[str, Any]) -> Sizing:
    return Sizing(
        parse_bytes(summary["podMemory"]),
        parse_bytes(summary["memoryLimit"]),
        int(summary["initialConcurrency"]),
        int(summary["maxConcurrency"]),
        int(summary["parallelism"]),
        summary.get("predictedSeconds"),
        summary.get("reason", ""),
    )


def _ledger(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ledger_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "progress"),
            "ownerReferences": [owner.reference()],
        },
        "data": {},
    }


def _converge_job(kube: Kube, job: dict[str, Any], parallelism: int, suspend: bool) -> None:
    spec = job.get("spec") or {}
    patch: dict[str, Any] = {}
    if spec.get("parallelism") != parallelism:
        patch["parallelism"] = parallelism
    if bool(spec.get("suspend")) != suspend:
        patch["suspend"] = suspend
    if patch:
        meta = job["metadata"]
        kube.patch_job(meta["namespace"], meta["name"], {"spec": patch})


def parse_indexes(text: str | None) -> frozenset[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5} (the Job's completedIndexes / failedIndexes form)."""
    result: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        result.update(range(int(first), int(last or first) + 1))
    return frozenset(result)


def job_view(job: dict[str, Any]) -> JobView:
    status, spec = job.get("status") or {}, job.get("spec") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobView(
        exists=True,
        parallelism=int(spec.get("parallelism") or 0),
        active=int(status.get("active") or 0),
        failed_pods=int(status.get("failed") or 0),
        completed_indexes=parse_indexes(status.get("completedIndexes")),
        failed_indexes=parse_indexes(status.get("failedIndexes")),
        complete="Complete" in conditions,
        failed=failed is not None,
        failure_message=str((failed or {}).get("message") or ""),
        suspended=bool(spec.get("suspend")),
    )


def _collect(
    pods: list[dict[str, Any]], view: JobView, finished: dict[int, WorkerReport], port: int
) -> tuple[dict[int, tuple[str, WorkerReport]], dict[int, str]]:
    """Running pods' `/status` (fetched in parallel) and new final reports of completed shards."""
    new_finished: dict[int, str] = {}
    targets: list[tuple[int, str, str]] = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        index_text = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or (meta.get("labels") or {}).get(
            INDEX_ANNOTATION
        )
        if index_text is None:
            continue
        index = int(index_text)
        if status.get("phase") == "Succeeded" and index not in finished:
            # The pod's own final report counts at once; the Job's completedIndexes may lag behind it.
            for container in status.get("containerStatuses") or []:
                message = str(((container.get("state") or {}).get("terminated") or {}).get("message") or "")
                final = parse_report(message)
                if final is not None and final.state == "complete":
                    new_finished[index] = message
        elif status.get("phase") == "Running" and status.get("podIP") and index not in finished:
            targets.append((index, meta.get("name", ""), status["podIP"]))
    running: dict[int, tuple[str, WorkerReport]] = {}
    if targets:
        with ThreadPoolExecutor(min(16, len(targets))) as pool:
            answers = list(pool.map(lambda t: fetch_worker_status(t[2], port), targets))
        for (index, pod_name, _ip), text in zip(targets, answers, strict=True):
            report = parse_report(text) if text else None
            if report is None:
                # Busy or shutting down: its last answer is better evidence than none (counts never
                # go backwards while a pod finishes).
                report = _last_answers.get(pod_name)
            else:
                _last_answers[pod_name] = report
            if report is not None:
                running[index] = (pod_name, report)
    return running, new_finished


def _plan_objects(shards: list[Shard]) -> dict[str, int]:
    total = sum(s.objects for s in shards)
    return {"total": total, "copied": 0, "skipped": 0, "failed": 0, "pending": total}


def _plan_bytes(shards: list[Shard]) -> dict[str, int]:
    return {"total": sum(s.bytes for s in shards), "copied": 0, "skipped": 0, "failed": 0}


def _render_counts(counted: Totals, previous: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "objects": counted.objects,
        "bytes": counted.bytes,
        "throughput": {
            "objectsPerSecond": counted.objects_per_second,
            "bytesPerSecond": int(counted.bytes_per_second),
        },
        "progressPercent": counted.percent,
        "failedObjects": counted.failed_objects,
    }
    if counted.eta_seconds is not None:
        out["etaSeconds"] = counted.eta_seconds
        out["eta"] = format_duration(counted.eta_seconds)
    done = counted.objects["total"] - counted.objects["pending"]
    before = previous.get("objects") or {}
    if done != before.get("total", 0) - before.get("pending", 0) or not previous.get("lastProgressTime"):
        out["lastProgressTime"] = now()
    else:
        out["lastProgressTime"] = previous["lastProgressTime"]
    return out
