"""One reconciliation of one CopyJob: validate references, plan once, run the Indexed Job, aggregate.

Level-based: every pass starts from what exists (the plan ConfigMap, the Job, the pods, the progress
ledger) and converges towards the spec, so an operator restarted at any point loses nothing and never
re-plans a finished plan. The kopf wiring (`handlers.py`) calls `reconcile` on a timer.

Children are found by name but trusted by ownership only (`ownership.py`): an object of a child's name
that this CopyJob does not control stalls it with `NameConflict` and is never read as a plan, patched
or deleted. Whatever cannot go on becomes a `Stalled` condition and one Warning Event; a failure after
the source was listed never lists it again (the listing is kept until its plan is stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec, format_bytes
from ferry.model.copyjob import copyjob_name_problem
from ferry.model.loading import format_validation_error
from ferry.model.plan import Shard
from ferry.model.quantity import parse_bytes, to_quantity
from ferry.operator import conditions as cond
from ferry.operator import ledger
from ferry.operator.aggregate import JobView, Totals, phase_and_conditions, totals, worker_failures
from ferry.operator.conditions import Condition
from ferry.operator.errors import Stalled
from ferry.operator.kube import Kube, Refused, fetch_worker_status
from ferry.operator.netguard import endpoint_problem, guard_client
from ferry.operator.ownership import NAME_CONFLICT, Ownership, conflict_message, controlled, ownership
from ferry.operator.planfile import TIME_FORMAT, PlanUnreadable, StoredPlan, histogram_json, read_plan
from ferry.operator.planning import Histogram, Planner
from ferry.operator.policy import ENDPOINT_NOT_ALLOWED, PolicyRefusal, identity
from ferry.operator.render import (
    CONFIGMAP_DATA_BYTES,
    LABEL_COPYJOB,
    Owner,
    child_name,
    data_bytes,
    fit_shards,
    job_name,
    labels,
    plan_name,
    render_job,
    render_plan,
    shards_budget,
)
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing, size_from_histogram
from ferry.worker.credentials import credentials_from_values
from ferry.worker.display import format_duration
from ferry.worker.filters import ObjectFilter
from ferry.worker.preflight import check_location
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry
from ferry.worker.s3 import ClientOptions, Credentials, list_pages, make_client
from ferry.worker.statusdoc import WorkerReport, parse_report

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: Plans by CopyJob uid: a plan never changes once written, so it is read from its ConfigMap once.
_plans: dict[str, StoredPlan] = {}
#: Plan ConfigMaps computed but not stored yet (the API server refused them, or a foreign object holds
#: the name), by CopyJob uid, with the generation they were listed for: the next passes retry storing
#: them instead of listing the source again.
_unsaved: dict[str, tuple[int, dict[str, Any]]] = {}
#: Last `/status` answer of each running pod, by pod name; bounded by the pods of this operator's jobs.
_last_answers: dict[str, WorkerReport] = {}
#: CopyJobs whose worker Job exists: their pods read the Secrets themselves, so a pass need not read them
#: again (two API reads per CopyJob per pass saved, and the operator touches credentials less often).
_started: set[str] = set()
#: CopyJobs listing their source now, by namespace (uids): the per-namespace planning limit counts these.
#: Kept here, not read from the CopyJobs' phases, so that many CopyJobs applied at once cannot all pass
#: the check before the first of them has written its phase.
_planning: dict[str, set[str]] = {}
#: Listings stopped by the platform's limits (ListingTooLong, TooManyObjects), by CopyJob uid, with the
#: generation: the next passes stall again without listing, until the spec changes.
_listing_stopped: dict[str, tuple[int, Stalled]] = {}


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def ledger_name(owner: str) -> str:
    return child_name(owner, "progress", 253, label=False)


def forget(uid: str) -> None:
    """Drop what this process remembers of a deleted CopyJob."""
    _plans.pop(uid, None)
    _unsaved.pop(uid, None)
    _started.discard(uid)
    _listing_stopped.pop(uid, None)
    for planning in _planning.values():
        planning.discard(uid)


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
    # Workers already running keep running (a stall found later, e.g. a foreign ledger, stops nothing).
    phase = status.get("phase") if status.get("phase") in ("Running", "Suspended") else "Pending"
    return {"observedGeneration": generation, "phase": phase, "conditions": conditions}


def _stall(
    ctx: Context, status: dict[str, Any], reason: str, message: str, generation: int
) -> dict[str, Any]:
    """The status of a stalled CopyJob; the Warning Event goes out once per distinct stall, not per pass."""
    current = cond.get(status.get("conditions") or [], "Stalled") or {}
    if (current.get("status"), current.get("reason"), current.get("message")) != ("True", reason, message):
        ctx.post("Warning", reason, message)
    return _stalled_status(status, reason, message, generation)


class WaitingForCapacity(Exception):
    """The CopyJob waits for the platform's per-namespace limit; not an error, a Pending condition."""


def _waiting_status(status: dict[str, Any], message: str, generation: int) -> dict[str, Any]:
    existing = [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"]
    return {
        "observedGeneration": generation,
        "phase": "Pending",
        "conditions": cond.set_conditions(
            existing,
            [
                Condition("Progressing", "False", "WaitingForCapacity", message),
                Condition("Stalled", "False", "ReferencesValid", ""),
            ],
            now(),
            generation,
        ),
    }


def _require_owned(obj: dict[str, Any] | None, kind: str, owner: Owner) -> dict[str, Any] | None:
    """`obj` when it is missing or this CopyJob's; a foreign object stalls the CopyJob."""
    if ownership(obj, owner.uid) is Ownership.FOREIGN:
        assert obj is not None
        raise Stalled(NAME_CONFLICT, conflict_message(kind, obj, owner.name))
    return obj


async def reconcile(
    ctx: Context,
    meta: dict[str, Any],
    spec_raw: dict[str, Any],
    status: dict[str, Any],
    active_in_namespace: int,
) -> dict[str, Any]:
    """Return the status to write. Raises nothing for user errors: they become conditions and Events."""
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    generation = int(meta.get("generation") or 1)
    if status.get("phase") in TERMINAL:
        return await _after_finish(ctx, owner, spec_raw, status, generation)
    try:
        return await _reconcile(ctx, owner, spec_raw, status, generation, active_in_namespace)
    except InvalidSpec as exc:
        return _stall(ctx, status, "InvalidSpec", str(exc), generation)
    except (Stalled, PreflightError, PolicyRefusal) as exc:
        return _stall(ctx, status, exc.reason, str(exc), generation)
    except WaitingForCapacity as exc:
        return _waiting_status(status, str(exc), generation)


async def _reconcile(
    ctx: Context,
    owner: Owner,
    spec_raw: dict[str, Any],
    status: dict[str, Any],
    generation: int,
    active_in_namespace: int,
) -> dict[str, Any]:
    name, namespace, uid = owner.name, owner.namespace, owner.uid
    # Refused at apply time by today's CRD; a CopyJob stored under an older one stops here, before
    # anything is listed (its name would fail as a label value after the whole listing).
    problem = copyjob_name_problem(name)
    if problem:
        raise Stalled("InvalidName", problem)
    spec = parse_spec(spec_raw)
    # The platform's credentials policy, before anything is read, listed or started: every location has
    # a Secret, or the namespace may use workload identity under a ServiceAccount of its own.
    who = identity(spec, namespace, ctx.settings.workload_identity_namespaces)
    tenant_account = who.service_account
    if (
        tenant_account
        and uid not in _started
        and not await asyncio.to_thread(ctx.kube.service_account_exists, namespace, tenant_account)
    ):
        raise Stalled(
            "ServiceAccountMissing",
            f"ServiceAccount {tenant_account!r} named by spec.serviceAccountName does not exist in "
            f"namespace {namespace}; create it with the cloud identity the worker pods should use",
        )
    credentials = {} if uid in _started else await asyncio.to_thread(_credentials, ctx.kube, namespace, spec)

    plan = await _ensure_plan(ctx, owner, spec, credentials, status, generation)
    sizing = size_workers(plan.histogram, len(plan.shards), spec, ctx.settings, plan.listed_at)
    summary = plan_summary(plan, sizing, plan_name(name))
    base: dict[str, Any] = {
        "observedGeneration": generation,
        "plan": summary,
        "memory": {
            "limit": summary["podMemory"],
            "peakBytes": (status.get("memory") or {}).get("peakBytes", 0),
        },
    }
    existing = [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"]
    stalled_cleared = Condition("Stalled", "False", "ReferencesValid", "")
    planned = Condition("Planned", "True", "PlanReady", sizing.reason)
    capped = _caps_message(spec, ctx.settings)
    if spec.dry_run:
        phase, updates = phase_and_conditions(
            planned=True, dry_run=True, suspended=False, job=JobView(), totals=None
        )
        return {
            **base,
            "phase": phase,
            "objects": _plan_objects(plan.shards),
            "bytes": _plan_bytes(plan.shards),
            "progressPercent": 0,
            "conditions": cond.set_conditions(
                existing, [*updates, stalled_cleared, planned], now(), generation
            ),
        }

    # Both children are checked before either is created: nothing starts beside a foreign object.
    job = _require_owned(await asyncio.to_thread(ctx.kube.job, namespace, job_name(name)), "Job", owner)
    progress = _require_owned(
        await asyncio.to_thread(ctx.kube.configmap, namespace, ledger_name(name)), "ConfigMap", owner
    )
    parallelism = _parallelism(spec, sizing.parallelism, ctx.settings, len(plan.shards))
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
        settings, note = ctx.settings, ""
        account = settings.worker_service_account
        if who.ambient:
            pass  # the tenant's own ServiceAccount, checked above
        elif account and not await asyncio.to_thread(ctx.kube.service_account_exists, namespace, account):
            # Pods naming a missing ServiceAccount are never created; the namespace's default one
            # serves as well, since worker pods never mount a token.
            settings = replace(settings, worker_service_account="")
            note = f"; ServiceAccount {account!r} is not in {namespace}, using the default one (no token mounted)"
        if progress is None:
            progress = await _create_owned(ctx, owner, "ConfigMap", _ledger(owner), "JobRejected")
        manifest = render_job(owner, spec, sizing, len(plan.shards), settings, parallelism, identity=who)
        job = await _create_owned(ctx, owner, "Job", manifest, "JobRejected")
        ctx.post(
            "Normal",
            "Started",
            f"started {len(plan.shards)} shard(s) on up to {parallelism} pod(s) of {summary['podMemory']} each{note}",
        )
    elif progress is None:
        # The ledger was deleted under a running Job: counts of shards whose pods are gone are lost
        # (reported as ReportsLost); a new ledger keeps the rest.
        progress = await _create_owned(ctx, owner, "ConfigMap", _ledger(owner), "JobRejected")
    _started.add(uid)
    await asyncio.to_thread(_converge_job, ctx.kube, job, parallelism, spec.suspend)

    view = job_view(job)
    # The Job's own pod template says what its pods got (sized when it was created); status shows that.
    pod_memory = _job_memory(job) or summary["podMemory"]
    base["memory"]["limit"] = pod_memory
    ledger_data: dict[str, str] = dict(progress.get("data") or {})
    finished = ledger.read(ledger_data)
    # Listed by label, counted only when the Job controls them: a tenant's pod may carry any label.
    labelled = await asyncio.to_thread(ctx.kube.pods, namespace, f"{LABEL_COPYJOB}={name}")
    pods = [dict(p) for p in controlled(labelled, str(job["metadata"]["uid"]))]
    running, new_finished = await asyncio.to_thread(_collect, pods, view, finished, ctx.settings.status_port)
    if new_finished:
        reports = {i: r for i, t in new_finished.items() if (r := parse_report(t))}
        await asyncio.to_thread(
            ctx.kube.patch_configmap_data,
            namespace,
            ledger_name(name),
            str(progress["metadata"]["uid"]),
            ledger.additions(reports, ledger_data),
        )
        finished.update(reports)
    failures = worker_failures(pods)
    why = failures.summary(pod_memory)
    if why:
        # The Job only says "failed indexes"; the pods say why (an OOM kill, a budget too small).
        view = replace(view, failure_message=why)
    counted = totals(
        list(plan.shards),
        finished,
        running,
        view,
        int(base["memory"]["peakBytes"] or 0),
        (status.get("memory") or {}).get("peakSource"),
    )
    phase, updates = phase_and_conditions(
        planned=True, dry_run=False, suspended=spec.suspend, job=view, totals=counted
    )
    extra = [stalled_cleared, planned]
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
    if counted.peak_source:
        new_status["memory"]["peakSource"] = counted.peak_source
    if spec.report is not None:
        new_status["report"] = f"s3://{spec.report.bucket}/{spec.report.prefix}{name}/"
    if phase in TERMINAL and status.get("phase") not in TERMINAL:
        new_status["completionTime"] = now()
        kind = "Normal" if phase == "Succeeded" else "Warning"
        succeeded = cond.get(new_status["conditions"], "Succeeded") or {}
        ctx.post(kind, "Completed" if phase == "Succeeded" else "Failed", str(succeeded.get("message", "")))
    return new_status


async def _create_owned(
    ctx: Context, owner: Owner, kind: str, body: dict[str, Any], refused_reason: str
) -> dict[str, Any]:
    """Create a child and return it as stored. An object of its name that appeared since it was read
    stalls the CopyJob (`NameConflict`); one the API server refuses stalls it with `refused_reason`."""
    create, read = (
        (ctx.kube.create_job, ctx.kube.job)
        if kind == "Job"
        else (ctx.kube.create_configmap, ctx.kube.configmap)
    )
    meta = body["metadata"]
    try:
        await asyncio.to_thread(create, body)
    except Refused as exc:
        raise Stalled(
            refused_reason, f"{exc}; fix the cause (a quota, an admission policy) and it is retried"
        ) from exc
    stored = _require_owned(await asyncio.to_thread(read, meta["namespace"], meta["name"]), kind, owner)
    if stored is None:  # deleted the moment it was made; the next pass creates it again
        raise RuntimeError(f"{kind} {meta['namespace']}/{meta['name']} vanished right after it was created")
    return stored


async def _ensure_plan(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    credentials: dict[str, Credentials | None],
    status: dict[str, Any],
    generation: int,
) -> StoredPlan:
    """The CopyJob's plan: remembered, read from its own ConfigMap, or listed and stored now."""
    cached = _plans.get(owner.uid)
    if cached is not None:
        return cached
    name = plan_name(owner.name)
    stored = _require_owned(
        await asyncio.to_thread(ctx.kube.configmap, owner.namespace, name), "ConfigMap", owner
    )
    if stored is None:
        unsaved = _unsaved.get(owner.uid)
        if unsaved is None or unsaved[0] != generation:
            body = await _plan_within_limits(ctx, owner, spec, credentials, status, generation)
            _unsaved[owner.uid] = (generation, body)
        else:
            body = unsaved[1]
        stored = await _create_owned(ctx, owner, "ConfigMap", body, "PlanRejected")
        _unsaved.pop(owner.uid, None)
    try:
        plan = read_plan(stored.get("data"))
    except PlanUnreadable as exc:
        raise Stalled(
            "PlanUnreadable",
            f"ConfigMap {owner.namespace}/{name} holds no plan Ferry can use ({exc}): something other than "
            f"the operator changed it. Delete it (kubectl -n {owner.namespace} delete configmap {name}) and "
            "the CopyJob is planned again",
        ) from exc
    _plans[owner.uid] = plan
    return plan


async def _after_finish(
    ctx: Context, owner: Owner, spec_raw: dict[str, Any], status: dict[str, Any], generation: int
) -> dict[str, Any]:
    """`ttlSecondsAfterFinished`: remove the Job and its pods once the final counts are in the status,
    keep the CopyJob. Done here rather than with the Job's own TTL, which could delete pods before
    their termination messages were read. Only this CopyJob's own Job is ever deleted."""
    ttl = spec_raw.get("ttlSecondsAfterFinished")
    done = status.get("completionTime")
    if ttl is None or not done or cond.is_true(status.get("conditions") or [], "WorkersRemoved"):
        return {}
    finished = datetime.strptime(done, TIME_FORMAT).replace(tzinfo=UTC)
    if (datetime.now(UTC) - finished).total_seconds() < float(ttl):
        return {}
    name = job_name(owner.name)
    job = await asyncio.to_thread(ctx.kube.job, owner.namespace, name)
    state = ownership(job, owner.uid)
    if state is Ownership.FOREIGN:
        assert job is not None
        # This CopyJob's own Job is gone (names are unique): nothing of its own is left to remove.
        message = conflict_message("Job", job, owner.name)
        ctx.post("Warning", NAME_CONFLICT, message)
        removed = Condition("WorkersRemoved", "True", NAME_CONFLICT, f"not removed: {message}")
    else:
        if state is Ownership.OWNED:
            assert job is not None
            await asyncio.to_thread(ctx.kube.delete_job, owner.namespace, name, str(job["metadata"]["uid"]))
        ctx.post(
            "Normal",
            "WorkersRemoved",
            f"removed the worker Job {ttl} s after completion (ttlSecondsAfterFinished)",
        )
        removed = Condition(
            "WorkersRemoved", "True", "TTLExpired", "ttlSecondsAfterFinished passed; final status kept"
        )
    return {"conditions": cond.set_conditions(status.get("conditions") or [], [removed], now(), generation)}


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


def _client(
    spec: CopyJobSpec, role: str, credentials: Credentials | None, options: ClientOptions, ctx: Context
) -> Any:
    """A client for the operator's own requests: signed with the tenant's Secret, or anonymous (never
    the operator's identity), and connecting only where the endpoint policy allows."""
    location = spec.source if role == "source" else spec.destination
    try:
        client = make_client(location, credentials, replace(options, anonymous=True))
        return guard_client(client, ctx.settings.endpoints)
    except (ValueError, botocore.exceptions.BotoCoreError) as exc:
        # The model refuses what botocore is known to refuse; this catches whatever else it might.
        raise Stalled(
            "LocationInvalid",
            f"spec.{role}: the S3 client refuses endpoint {location.endpoint!r} or region "
            f"{location.region!r} ({type(exc).__name__}); fix spec.{role}.endpoint or spec.{role}.region",
        ) from exc


async def _plan_within_limits(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    credentials: dict[str, Credentials | None],
    status: dict[str, Any],
    generation: int,
) -> dict[str, Any]:
    """`_plan`, within the platform's limits: a listing stopped by them is not started again for the
    same spec, and a namespace lists at most `max_planning_per_namespace` sources at once (dryRun too)."""
    stopped = _listing_stopped.get(owner.uid)
    if stopped is not None and stopped[0] == generation:
        raise stopped[1]
    cap = ctx.settings.max_planning_per_namespace
    planning = _planning.setdefault(owner.namespace, set())
    if cap is not None and owner.uid not in planning and len(planning) >= cap:
        raise WaitingForCapacity(
            f"namespace {owner.namespace} already plans {len(planning)} CopyJob(s), the platform's limit is "
            f"{cap} (planning.maxPerNamespace); this one is planned when one of them is done"
        )
    # Checked and taken in one step of the event loop: no other pass runs in between.
    planning.add(owner.uid)
    try:
        return await _plan(ctx, owner, spec, credentials, status, generation)
    except Stalled as exc:
        if exc.reason in (LISTING_TOO_LONG, TOO_MANY_OBJECTS):
            _listing_stopped[owner.uid] = (generation, exc)
        raise
    finally:
        planning.discard(owner.uid)
        if not planning:
            _planning.pop(owner.namespace, None)


LISTING_TOO_LONG = "ListingTooLong"
TOO_MANY_OBJECTS = "TooManyObjects"
#: The operator's own S3 requests: a few attempts, and no single read waiting longer than this.
LISTING_RETRY = RetryPolicy(max_attempts=3, base_seconds=0.5)
READ_TIMEOUT_SECONDS = 20.0


async def _plan(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    credentials: dict[str, Credentials | None],
    status: dict[str, Any],
    generation: int,
) -> dict[str, Any]:
    """List the source once, size the workers, cut shards; return the plan ConfigMap to store."""
    # Before any request: every name resolved, every address checked against the platform's policy.
    refusal = await asyncio.to_thread(endpoint_problem, spec, ctx.settings.endpoints)
    if refusal is not None:
        raise Stalled(ENDPOINT_NOT_ALLOWED, refusal)
    options = ClientOptions(max_pool_connections=4, read_timeout=READ_TIMEOUT_SECONDS)
    source = _client(spec, "source", credentials["source"], options, ctx)
    destination = _client(spec, "destination", credentials["destination"], options, ctx)
    for role, client, location in (
        ("source", source, spec.source),
        ("destination", destination, spec.destination),
    ):
        try:
            await asyncio.to_thread(check_location, client, location, f"spec.{role}")
        except PreflightError as exc:
            if credentials[role] is not None:
                raise
            raise PreflightError(
                f"{exc}. The operator checks and lists locations without a credentialsSecret anonymously "
                "(never with its own identity) until planning runs in pods: name a Secret in "
                f"spec.{role}.credentialsSecret for a bucket that is not public",
                reason=exc.reason,
            ) from exc
    budget = shards_budget(spec)
    if budget < MIN_SHARDS_BYTES:  # only a spec admitted under an older CRD: refuse it before listing
        raise Stalled(
            "PlanTooLarge",
            f"spec is too large for its plan ConfigMap ({CONFIGMAP_DATA_BYTES} bytes with the shards); "
            "use fewer filter patterns",
        )
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
    deadline = ctx.settings.listing_deadline_seconds
    max_objects = ctx.settings.max_objects_per_copyjob
    where = f"s3://{spec.source.bucket}/{spec.source.prefix}"

    def listing() -> None:
        last = time.monotonic()
        listed = 0
        pages = list_pages(
            source,
            spec.source.bucket,
            spec.source.prefix,
            call=lambda request: call_with_retry(request, LISTING_RETRY),
        )
        for page in pages:
            listed += len(page)
            # Counted as listed, not as accepted: a filter that rejects everything still costs the listing.
            if max_objects is not None and listed > max_objects:
                raise Stalled(
                    TOO_MANY_OBJECTS,
                    f"{where} holds more than {max_objects:,} objects, the platform's limit for one CopyJob "
                    "(planning.maxObjects); split it into CopyJobs of narrower source.prefix",
                )
            if deadline is not None and time.monotonic() - started > deadline:
                raise Stalled(
                    LISTING_TOO_LONG,
                    f"listing {where} took longer than {format_duration(deadline)}, the platform's limit "
                    f"(planning.listingDeadlineSeconds), after {listed:,} objects; split it into CopyJobs of "
                    "narrower source.prefix, or check that spec.source.endpoint is a real S3 service",
                )
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

    try:
        await asyncio.to_thread(listing)
    except RetriesExhausted as exc:
        # Ferry's words only (retry.classify): what the endpoint answered never reaches a condition.
        reason = ENDPOINT_NOT_ALLOWED if exc.last.code == "EndpointNotAllowed" else "ListingFailed"
        raise Stalled(
            reason,
            f"listing {where} failed after {exc.attempts} attempt(s): {exc.last.code}: {exc.last.message}; "
            "it is retried at the next pass",
        ) from exc
    listed_at = datetime.now(UTC).replace(microsecond=0)
    histogram = planner.histogram()
    first = size_workers(histogram, 1000, spec, ctx.settings, listed_at)
    shards = fit_shards(
        planner.finish(
            max(1, min(first.parallelism * 4, max(1, histogram.objects // 100))),
            spec.shard_size.max_objects,
            spec.shard_size.max_bytes,
        ),
        budget,
    )
    plan = StoredPlan(histogram, tuple(shards), listed_at)
    sizing = size_workers(histogram, len(shards), spec, ctx.settings, listed_at)
    # The summary is for people reading the ConfigMap; the operator reads back only what was measured.
    summary = {**plan_summary(plan, sizing, plan_name(owner.name)), "reason": sizing.reason}
    body = render_plan(owner, spec, shards, summary)
    if data_bytes(body["data"]) > CONFIGMAP_DATA_BYTES:
        raise Stalled(
            "PlanTooLarge",
            f"the plan takes {data_bytes(body['data'])} bytes, more than a ConfigMap holds "
            f"({CONFIGMAP_DATA_BYTES}); use fewer filter patterns",
        )
    ctx.post(
        "Normal",
        "Planned",
        f"{histogram.objects:,} objects ({format_bytes(histogram.bytes)}) in {len(shards)} shard(s), listed in "
        f"{format_duration(time.monotonic() - started)}; {sizing.reason}; predicted "
        f"{format_duration(sizing.predicted_seconds)}",
    )
    return body


#: Smallest room for shards.json that still holds one shard with two 1 KiB keys, however escaped.
MIN_SHARDS_BYTES = 16 * 1024


def plan_summary(plan: StoredPlan, sizing: Sizing, config_map: str) -> dict[str, Any]:
    """`status.plan` (and the stored summary): what was measured, and the sizing computed from it now."""
    histogram = plan.histogram
    return {
        "objects": histogram.objects,
        "bytes": histogram.bytes,
        "shards": len(plan.shards),
        "configMap": config_map,
        "histogram": histogram_json(histogram),
        "largestObject": histogram.largest,
        "predictedSeconds": sizing.predicted_seconds,
        "podMemory": to_quantity(sizing.pod_memory_bytes),
        "memoryLimit": to_quantity(sizing.memory_limit_bytes),
        "initialConcurrency": sizing.initial_concurrency,
        "maxConcurrency": sizing.max_concurrency,
        "parallelism": sizing.parallelism,
        "listedAt": plan.listed_at.strftime(TIME_FORMAT),
        "listingProgress": {"objects": histogram.objects, "bytes": histogram.bytes},
    }


def size_workers(
    histogram: Histogram, shards: int, spec: CopyJobSpec, settings: OperatorSettings, listed_at: datetime
) -> Sizing:
    """Size the workers from what was measured, under the platform's caps as they are now. A deadline
    counts from the listing, so every pass computes the same figures for the same plan."""
    target = spec.target
    deadline = (target.deadline - listed_at).total_seconds() if target and target.deadline else None
    args: dict[str, Any] = {
        "target_objects_per_second": target.objects_per_second if target else None,
        "deadline_seconds": deadline,
        "parallelism_cap": _parallelism_cap(spec, settings),
        "memory_override": _memory_override(spec, settings),
        "concurrency_max": spec.concurrency.max,
    }
    sizing = size_from_histogram(histogram, shards, **args)
    cap = settings.max_memory_per_pod
    if cap is not None and sizing.pod_memory_bytes > cap:
        # "auto" sized above the platform's cap: held to it, as an explicit request would be.
        sizing = size_from_histogram(histogram, shards, **{**args, "memory_override": cap})
    return sizing


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


def _parallelism(spec: CopyJobSpec, planned: int, settings: OperatorSettings, shards: int) -> int:
    """Pods now: the user's `spec.parallelism` when set (edits apply live), else the plan's, within caps."""
    wanted = spec.parallelism or planned
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


def _job_memory(job: dict[str, Any]) -> str | None:
    """The memory limit of the Job's worker container, as a quantity."""
    containers = ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    limit = ((containers[0].get("resources") or {}).get("limits") or {}).get("memory") if containers else None
    try:
        return to_quantity(parse_bytes(limit)) if limit is not None else None
    except ValueError:
        return None


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
        kube.patch_job(meta["namespace"], meta["name"], str(meta["uid"]), {"spec": patch})


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


def _plan_objects(shards: Sequence[Shard]) -> dict[str, int]:
    total = sum(s.objects for s in shards)
    return {"total": total, "copied": 0, "skipped": 0, "failed": 0, "pending": total}


def _plan_bytes(shards: Sequence[Shard]) -> dict[str, int]:
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
