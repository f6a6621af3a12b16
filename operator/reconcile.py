"""One reconciliation of one CopyJob, as named steps: load inputs (the spec, the credentials policy),
ensure the plan (`planstep.py`: the stored plan, or the planner pod that makes it), ensure the worker Job
and the progress ledger, observe the workers, render the status.

Level-based: every pass starts from what exists (the plan ConfigMap, the planner and worker Jobs, the
pods, the ledger) and converges towards the spec, so an operator restarted at any point loses nothing
and never re-plans a finished plan. The kopf wiring (`handlers.py`) calls `reconcile` on a timer; what
this process remembers between passes is one `Memory` on kopf's memo, all of it rebuildable.

Children are found by name but trusted by ownership only (`children.py`, `ownership.py`): an object of a
child's name that this CopyJob does not control stalls it with `NameConflict` and is never read as a
plan, patched or deleted. Whatever cannot go on becomes a `Stalled` condition and one Warning Event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec
from ferry.model.copyjob import Mode, ReportInclude, Restore, Versions, copyjob_name_problem
from ferry.model.loading import format_validation_error
from ferry.model.plan import Shard
from ferry.model.quantity import parse_bytes, to_display_quantity, to_quantity
from ferry.operator import conditions as cond
from ferry.operator import ledger, versionstatus
from ferry.operator.aggregate import (
    JobView,
    Totals,
    WorkerFailures,
    counts_status,
    phase_and_conditions,
    totals,
    worker_failures,
)
from ferry.operator.archivestatus import archived_status, restores_condition
from ferry.operator.budgetcontrol import BudgetBook
from ferry.operator.caps import caps_message, plan_summary, size_workers, target_cap
from ferry.operator.caps import parallelism as parallelism_for
from ferry.operator.children import create_owned, now, require_owned
from ferry.operator.conditions import Condition
from ferry.operator.errors import Stalled
from ferry.operator.finalacks import recorded_finals
from ferry.operator.fleet import FleetState, initial_state, needed_rate, step
from ferry.operator.fleetstatus import observation, scaling_status, state_from_status
from ferry.operator.kube import Kube, fetch_worker_status, push_recorded_all
from ferry.operator.ownership import NAME_CONFLICT, Ownership, conflict_message, controlled, ownership
from ferry.operator.planfile import TIME_FORMAT, StoredPlan
from ferry.operator.plannerjob import (
    check_destination,
)
from ferry.operator.planstep import (
    StillPlanning,
    WaitingForCapacity,
    ensure_plan,
    worker_account,
)
from ferry.operator.planview import plan_cost, plan_view
from ferry.operator.policy import Identity, PolicyRefusal, identity
from ferry.operator.ratecontrol import apply_rate_limits, job_env, new_token
from ferry.operator.render import (
    LABEL_COPYJOB,
    Owner,
    child_name,
    job_name,
    labels,
    plan_name,
    render_job,
)
from ferry.operator.restorewait import (
    CheckBack,
    check_back,
    parse_time,
    waiting_condition,
    waiting_shards,
)
from ferry.operator.restorewait import ledger_patch as restore_ledger_patch
from ferry.operator.resume import after_edit, remove_job
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing
from ferry.operator.stopped import SYSTEMATIC_FAILURE, StoppedShard, as_running, stall_message, stopped_shards
from ferry.operator.syncstep import SyncState, sync_dry_run, sync_step
from ferry.worker.evidence import evidence_status
from ferry.worker.ratelimit import TOKEN_ENV, RateShare
from ferry.worker.shardsync import ShardCensus
from ferry.worker.statusdoc import WorkerReport, parse_report

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass
class Memory:
    """What this operator process remembers of CopyJobs between passes, held on kopf's memo. All of it
    can be rebuilt from the cluster; it only saves API reads, and it is dropped with the CopyJob."""

    #: Plans by CopyJob uid: a plan never changes once written, so it is read from its ConfigMap once.
    plans: dict[str, StoredPlan] = field(default_factory=dict)
    #: CopyJobs whose worker Job exists: the tenant's ServiceAccount was checked before it was made.
    started: set[str] = field(default_factory=set)
    #: CopyJobs planning now, by namespace (uids): the per-namespace planning limit counts these. Kept
    #: here, not read from phases, so that many CopyJobs applied at once cannot all pass the check before
    #: the first of them has written its phase; re-learned from planner Jobs after a restart.
    planning: dict[str, set[str]] = field(default_factory=dict)
    #: Last `/status` answer of each running worker pod, by CopyJob uid and pod name: a pod busy for one
    #: pass keeps its counts. Only pods seen in the last pass are kept.
    answers: dict[str, dict[str, WorkerReport]] = field(default_factory=dict)
    #: Rate-limit shares each running worker pod confirmed, by CopyJob uid and pod name (`ratecontrol`).
    rate_shares: dict[str, dict[str, RateShare]] = field(default_factory=dict)
    #: The fleet law's state of each CopyJob with spec.target, by uid: the pass after a change may still
    #: read the status from before it; `status.scaling` is read only after a restart.
    fleets: dict[str, FleetState] = field(default_factory=dict)
    #: The EndpointBudgets the watch delivered, and the CopyJobs sharing them (`budgetcontrol`).
    budgets: BudgetBook = field(default_factory=BudgetBook)

    def forget(self, uid: str) -> None:
        """Drop what this process remembers of a deleted CopyJob."""
        self.budgets.forget(uid)
        self.plans.pop(uid, None)
        self.started.discard(uid)
        self.answers.pop(uid, None)
        self.rate_shares.pop(uid, None)
        self.fleets.pop(uid, None)
        for namespace, planning in list(self.planning.items()):
            planning.discard(uid)
            if not planning:
                del self.planning[namespace]

    def done_planning(self, namespace: str, uid: str) -> None:
        planning = self.planning.get(namespace)
        if planning is not None:
            planning.discard(uid)
            if not planning:
                del self.planning[namespace]


def ledger_name(owner: str) -> str:
    return child_name(owner, "progress", 253, label=False)


@dataclass
class Context:
    """Everything one pass needs; `post` sends a Kubernetes Event about the CopyJob."""

    kube: Kube
    settings: OperatorSettings
    post: Callable[[str, str, str], None]  # (type, reason, message)
    memory: Memory
    #: Labels of the CopyJob's Namespace, for the platform's workloadIdentity.namespaceSelector.
    namespace_labels: dict[str, str] | None = None


def parse_spec(raw: dict[str, Any]) -> CopyJobSpec:
    try:
        spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidSpec(format_validation_error(exc, CopyJobSpec)) from exc
    # The CRD refuses it too; a CopyJob stored before that rule, or an API server without CEL, is held here.
    if spec.source.manifest is not None and spec.source.manifest.file is not None:
        raise InvalidSpec(
            "spec.source.manifest.file: a local file is for `ferry run` and `ferry plan` only; on a cluster, "
            "name the manifest by spec.source.manifest.bucket and key"
        )
    return spec


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
    # An edit of a finished or stopped CopyJob (resume.py): followed, or resumed under the new spec.
    edited = await after_edit(ctx.kube, ctx.post, owner, spec_raw, status, generation)
    if edited is not None:
        ctx.memory.forget(owner.uid)
        return edited
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
    except WaitingToStart as waiting:
        return waiting.status
    except StillPlanning as planning:
        return planning.status


@dataclass(frozen=True)
class Inputs:
    """What a pass reads before it touches anything: the checked spec and the identity it may use."""

    spec: CopyJobSpec
    who: Identity


@dataclass
class Observed:
    """What the running workers and the Job show this pass, after the ledger has recorded it."""

    view: JobView
    pods: list[dict[str, Any]]
    running: dict[int, tuple[str, WorkerReport]]
    stopped: tuple[StoppedShard, ...]
    counted: Totals
    failures: WorkerFailures
    why: str
    pod_memory: str
    rate_limit: dict[str, Any]
    #: spec.mode sync: each finished shard's census (the ledger's, and this pass's new reports).
    censuses: dict[int, ShardCensus] = field(default_factory=dict)
    #: spec.archived restore: shards whose pod ended waiting for restores (restorewait.py), and, once the
    #: Job completed, when the operator runs them again.
    waiting: dict[int, tuple[str, WorkerReport]] = field(default_factory=dict)
    restores: CheckBack | None = None


async def _reconcile(
    ctx: Context,
    owner: Owner,
    spec_raw: dict[str, Any],
    status: dict[str, Any],
    generation: int,
    active_in_namespace: int,
) -> dict[str, Any]:
    """The pass as the Job controller's syncJob reads: load inputs, ensure the plan, ensure the Job,
    observe the workers, render the status. Each step raises what ends the pass early (a stall, a
    wait, planning in progress); `reconcile` turns those into conditions."""
    inputs = await _load_inputs(ctx, owner, spec_raw)
    spec = inputs.spec
    plan = await ensure_plan(ctx, owner, spec, inputs.who, status, generation)
    sizing = size_workers(plan.histogram, len(plan.shards), spec, ctx.settings, plan.listed_at)
    summary = plan_summary(plan, sizing, plan_name(owner.name))
    base: dict[str, Any] = {
        "observedGeneration": generation,
        "plan": summary,
        "memory": {
            "limit": summary["podMemory"],
            "peakBytes": (status.get("memory") or {}).get("peakBytes", 0),
        },
    }
    unchecked = (
        "; the destination was not checked (no credentials for it in a dry run)"
        if spec.dry_run and not check_destination(spec, inputs.who)
        else ""
    )
    planned = Condition("Planned", "True", "PlanReady", sizing.reason + unchecked)
    if spec.dry_run:
        # The plan as `ferry plan` shows it: with the predicted duration's basis and the cost estimate.
        cost = plan_cost(
            plan, spec, ctx.settings.prices, existing=plan.existing, list_requests=plan.list_requests
        )
        base["plan"] = plan_view(plan, sizing, cost, plan_name(owner.name))
        if spec.mode is Mode.SYNC:  # what the sync would delete, counted by a census Job (syncstep.py)
            base["sync"] = await sync_dry_run(ctx, owner, inputs, plan, sizing)
        return _dry_run_status(base, plan.shards, status, planned, generation)
    parallelism = parallelism_for(spec, sizing.parallelism, ctx.settings, len(plan.shards))
    fleet: FleetState | None = None
    if spec.target is not None:
        # spec.target: the fleet law sets the pods, from one pod up; spec.parallelism is only its cap.
        fleet = ctx.memory.fleets.get(owner.uid) or state_from_status(status.get("scaling"))
        fleet = fleet or initial_state(time.time())
        parallelism = min(fleet.pods, target_cap(spec, ctx.settings, len(plan.shards)))
    else:
        ctx.memory.fleets.pop(owner.uid, None)
        if status.get("scaling") is not None:
            base["scaling"] = None  # spec.target removed: the merge patch drops what it showed
    job, progress = await _ensure_job(
        ctx, owner, inputs, plan, sizing, summary, parallelism, base, status, generation, active_in_namespace
    )
    observed = await _observe(ctx, owner, spec, plan, job, progress, parallelism, summary, base, status)
    await _restores_step(ctx, owner, spec, job, observed)
    if fleet is not None:
        parallelism = await _scale(
            ctx, owner, spec, job, observed, fleet, parallelism, len(plan.shards), base
        )
    # spec.mode sync: once the copy Job completed, the decision over the whole job and the delete Job.
    sync = await sync_step(
        ctx,
        owner,
        inputs,
        plan.shards,
        sizing,
        job,
        observed.view.complete,
        observed.censuses,
        observed.counted.objects["failed"],
        parallelism,
        progress,
    )
    return _render_status(
        ctx, owner, spec, summary, observed, base, planned, parallelism, status, generation, sync
    )


async def _scale(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    job: dict[str, Any],
    observed: Observed,
    fleet: FleetState,
    parallelism: int,
    shards: int,
    base: dict[str, Any],
) -> int:
    """spec.target: one step of the fleet law (`fleet.py`) on what the workers reported this pass; a
    change is patched into the Job's parallelism (as an edit of spec.parallelism is) with an Event, and
    `status.scaling` says why. Returns the pods wanted now."""
    assert spec.target is not None
    view = observed.view
    wall = datetime.now(UTC)
    target = needed_rate(
        spec.target.objects_per_second, spec.target.deadline, observed.counted.objects["pending"], wall
    )
    upper = target_cap(spec, ctx.settings, shards - len(view.completed_indexes))
    seen = observation(wall, target, upper, observed.running, observed.pods)
    if not (spec.suspend or view.complete or view.failed):
        after = step(fleet, seen)
        if after.pods != parallelism:
            meta = job["metadata"]
            await asyncio.to_thread(
                ctx.kube.patch_job,
                meta["namespace"],
                meta["name"],
                str(meta["uid"]),
                {"spec": {"parallelism": after.pods}},
            )
            ctx.post(
                "Normal", str(after.reason), f"worker pods {parallelism} -> {after.pods}: {after.message}"
            )
            parallelism = after.pods
        fleet = after
    ctx.memory.fleets[owner.uid] = fleet
    base["scaling"] = scaling_status(fleet, target, len(seen.pods))
    return parallelism


async def _load_inputs(ctx: Context, owner: Owner, spec_raw: dict[str, Any]) -> Inputs:
    """The spec, checked, and the platform's credentials policy, before anything is read, planned or
    started: every location has a Secret, or the namespace may use workload identity under a
    ServiceAccount of its own (which must exist)."""
    # Refused at apply time by today's CRD; a CopyJob stored under an older one stops here, before
    # anything is planned (its name would fail as a label value).
    problem = copyjob_name_problem(owner.name)
    if problem:
        raise Stalled("InvalidName", problem)
    spec = parse_spec(spec_raw)
    who = identity(
        spec,
        owner.namespace,
        ctx.settings.workload_identity_namespaces,
        selector=ctx.settings.workload_identity_selector,
        namespace_labels=ctx.namespace_labels,
    )
    tenant_account = who.service_account
    if (
        tenant_account
        and owner.uid not in ctx.memory.started
        and not await asyncio.to_thread(ctx.kube.service_account_exists, owner.namespace, tenant_account)
    ):
        raise Stalled(
            "ServiceAccountMissing",
            f"ServiceAccount {tenant_account!r} named by spec.serviceAccountName does not exist in "
            f"namespace {owner.namespace}; create it with the cloud identity the worker pods should use",
        )
    return Inputs(spec, who)


def _kept_conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"]


STALLED_CLEARED = Condition("Stalled", "False", "ReferencesValid", "")


def _dry_run_status(
    base: dict[str, Any], shards: Sequence[Shard], status: dict[str, Any], planned: Condition, generation: int
) -> dict[str, Any]:
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
            _kept_conditions(status), [*updates, STALLED_CLEARED, planned], now(), generation
        ),
    }


class WaitingToStart(Exception):
    """The plan is ready but the namespace runs as many CopyJobs as the platform allows."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__("waiting for capacity")
        self.status = status


async def _ensure_job(
    ctx: Context,
    owner: Owner,
    inputs: Inputs,
    plan: StoredPlan,
    sizing: Sizing,
    summary: dict[str, Any],
    parallelism: int,
    base: dict[str, Any],
    status: dict[str, Any],
    generation: int,
    active_in_namespace: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The worker Job and the progress ledger, owned, created when missing, converged to the spec."""
    spec, namespace = inputs.spec, owner.namespace
    # Both children are checked before either is created: nothing starts beside a foreign object.
    job = require_owned(await asyncio.to_thread(ctx.kube.job, namespace, job_name(owner.name)), "Job", owner)
    progress = require_owned(
        await asyncio.to_thread(ctx.kube.configmap, namespace, ledger_name(owner.name)), "ConfigMap", owner
    )
    if job is None:
        cap = ctx.settings.max_jobs_per_namespace
        if cap is not None and active_in_namespace >= cap:
            message = f"namespace {namespace} already runs {active_in_namespace} CopyJobs, the platform's limit is {cap}"
            raise WaitingToStart(
                {
                    **base,
                    "phase": "Pending",
                    "conditions": cond.set_conditions(
                        _kept_conditions(status),
                        [Condition("Progressing", "False", "WaitingForCapacity", message), STALLED_CLEARED],
                        now(),
                        generation,
                    ),
                }
            )
        account, note = await worker_account(ctx, namespace, inputs.who)
        settings = replace(ctx.settings, worker_service_account=account)
        if progress is None:
            progress = await create_owned(ctx, owner, "ConfigMap", _ledger(owner), "JobRejected")
        manifest = render_job(
            owner,
            spec,
            sizing,
            len(plan.shards),
            settings,
            parallelism,
            identity=inputs.who,
            limits_token=new_token(),
            finished=frozenset(ledger.read(dict(progress.get("data") or {}))),  # after an edit: resume.py
        )
        job = await create_owned(ctx, owner, "Job", manifest, "JobRejected")
        ctx.post(
            "Normal",
            "Started",
            f"started {len(plan.shards)} shard(s) on up to {parallelism} pod(s) of {summary['podMemory']} each{note}",
        )
    elif progress is None:
        # The ledger was deleted under a running Job: counts of shards whose pods are gone are lost
        # (reported as ReportsLost); a new ledger keeps the rest.
        progress = await create_owned(ctx, owner, "ConfigMap", _ledger(owner), "JobRejected")
    ctx.memory.started.add(owner.uid)
    await asyncio.to_thread(_converge_job, ctx.kube, job, parallelism, spec.suspend)
    return job, progress


async def _observe(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    plan: StoredPlan,
    job: dict[str, Any],
    progress: dict[str, Any],
    parallelism: int,
    summary: dict[str, Any],
    base: dict[str, Any],
    status: dict[str, Any],
) -> Observed:
    """Read the workers (running pods' `/status`, finished pods' reports), push rate-limit shares, and
    record in the ledger what the status is about to show."""
    namespace, uid = owner.namespace, owner.uid
    view = job_view(job)
    # The Job's own pod template says what its pods got (sized when it was created); status shows that.
    pod_memory = _job_memory(job) or summary["podMemory"]
    ledger_data: dict[str, str] = dict(progress.get("data") or {})
    finished = ledger.read(ledger_data)
    # Listed by label, counted only when the Job controls them: a tenant's pod may carry any label.
    labelled = await asyncio.to_thread(ctx.kube.pods, namespace, f"{LABEL_COPYJOB}={owner.name}")
    pods = [dict(p) for p in controlled(labelled, str(job["metadata"]["uid"]))]
    running, new_finished, addresses = await asyncio.to_thread(
        _collect, pods, view, finished, ctx.settings.status_port, ctx.memory.answers.setdefault(uid, {})
    )
    # spec.rateLimit is job-wide: each running worker gets its share, re-split as pods come and go; under
    # an EndpointBudget, the job-wide limit is this CopyJob's share of it, and its pods' throttles count.
    shares = ctx.memory.rate_shares.setdefault(uid, {})
    throttles = {pod: report.throttles for pod, report in running.values()}
    rate_limit = await asyncio.to_thread(
        apply_rate_limits,
        ctx.kube,
        spec,
        job,
        view,
        pods,
        parallelism,
        progress,
        ctx.settings.status_port,
        shares,
        ctx.memory.budgets,
        uid,
        throttles,
    )
    reports = {i: r for i, t in new_finished.items() if (r := parse_report(t))}
    finished.update(reports)
    # spec.versions all: the ledger keeps finished shards' version counters (their pods go away).
    finished = versionstatus.with_ledger(finished, versionstatus.read_ledger(ledger_data, len(plan.shards)))
    # spec.archived restore: shards that ended waiting for restores count as they stood (restorewait.py).
    waiting = waiting_shards(pods, finished, len(plan.shards))
    failures = worker_failures(pods)
    stopped = stopped_shards(pods, running)  # on a systematic failure: counted as they stood (stopped.py)
    why = failures.summary(pod_memory)
    if why:
        # The Job only says "failed indexes"; the pods say why (an OOM kill, a budget too small).
        view = replace(view, failure_message=why)
    counted = totals(
        list(plan.shards),
        finished,
        {**as_running(stopped), **waiting, **running},
        view,
        int(base["memory"]["peakBytes"] or 0),
        (status.get("memory") or {}).get("peakSource"),
        floors=ledger.floors(ledger_data, len(plan.shards)),
    )
    if waiting:  # no pod of theirs runs: not among the pods' concurrency
        counted = replace(counted, per_pod=[p for p in counted.per_pod if p.get("shard") not in waiting])
    answered = {i: r for i, (_, r) in {**waiting, **running}.items()}
    handoffs = {i: r.handoff for i, (_, r) in waiting.items() if r.handoff is not None}
    # One ledger write per pass, before the status shows anything: new final reports, and the floor and
    # resume point of every unfinished shard (a failed write fails the pass; nothing shown goes back).
    patch = {
        **ledger.additions(reports, ledger_data),
        **versionstatus.ledger_patch(reports),
        **ledger.progress_patch(plan.shards, counted.shard_counts, finished, answered, ledger_data),
    }
    # spec.archived restore: when each waiting shard first requested its restores, within the ledger's size.
    room = ledger.LEDGER_BYTES - sum(
        len(str(k).encode()) + len(str(v).encode())
        for k, v in {**ledger_data, **patch}.items()
        if v is not None
    )
    patch.update(restore_ledger_patch(handoffs, reports, ledger_data, len(plan.shards), room))
    if patch:
        await asyncio.to_thread(
            ctx.kube.patch_configmap_data,
            namespace,
            ledger_name(owner.name),
            str(progress["metadata"]["uid"]),
            patch,
        )
    # Stopped workers whose final counts and resume point the ledger now holds may exit.
    acks = recorded_finals(
        {**waiting, **running}, addresses, finished, {**ledger_data, **patch}, len(plan.shards)
    )
    token = job_env(job, TOKEN_ENV)
    if acks and token:
        finals = [(a.address, a.final) for a in acks]
        await asyncio.to_thread(push_recorded_all, finals, ctx.settings.status_port, token)
    censuses = {
        **ledger.read_sync(ledger_data, len(plan.shards)),
        **{i: r.sync for i, r in reports.items() if r.sync is not None and i < len(plan.shards)},
    }
    return Observed(
        view,
        pods,
        running,
        stopped,
        counted,
        failures,
        why,
        pod_memory,
        rate_limit,
        censuses=censuses,
        waiting=waiting,
    )


async def _restores_step(
    ctx: Context, owner: Owner, spec: CopyJobSpec, job: dict[str, Any], observed: Observed
) -> None:
    """spec.archived restore: once the worker Job completed with shards waiting for restores, the CopyJob
    runs on with no pod (`observed.view` no longer complete); when `check_back` says it is time, the Job
    is removed and the next pass starts a new one for the shards the ledger does not count as finished."""
    view = observed.view
    if not observed.waiting or not view.complete:
        return
    # Not finished while objects wait: the CopyJob runs on (or shows Suspended) with no pod.
    observed.view = replace(view, complete=False)
    if spec.suspend:  # checked back once resumed: at once, if its time passed meanwhile
        return
    settings = spec.restore or Restore()
    check = check_back(
        {i: r.handoff for i, (_, r) in observed.waiting.items() if r.handoff is not None},
        _completed_at(job),
        datetime.now(UTC),
        float(settings.check_interval_seconds),
        float(settings.max_wait_seconds),
    )
    if check is None:
        return
    observed.restores = check
    if check.due:
        await asyncio.to_thread(remove_job, ctx.kube, owner)
        ctx.post(
            "Normal",
            "CheckingRestores",
            f"running {len(check.shards)} shard(s) again to copy the archived objects restored since",
        )


def _completed_at(job: dict[str, Any]) -> datetime | None:
    """When the Job controller says the worker Job completed (None: not said, or not a time)."""
    return parse_time((job.get("status") or {}).get("completionTime"))


def _render_status(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    summary: dict[str, Any],
    observed: Observed,
    base: dict[str, Any],
    planned: Condition,
    parallelism: int,
    status: dict[str, Any],
    generation: int,
    sync: SyncState | None = None,
) -> dict[str, Any]:
    """The status to write: counts, rates, conditions, workers, memory; Events on the transitions."""
    view, counted, running = observed.view, observed.counted, observed.running
    base["memory"]["limit"] = observed.pod_memory
    ended = view.complete or view.failed
    # The percent shown before holds only for the same plan (an edit may have planned the job again).
    same_plan = (status.get("plan") or {}).get("listedAt") == summary["listedAt"]
    previous = status if same_plan else {**status, "progressPercent": None}
    shown = _render_counts(counted, previous, running=not spec.suspend and not ended, finished=ended)
    counted = replace(counted, eta_seconds=shown["etaSeconds"])
    phase, updates = phase_and_conditions(
        planned=True, dry_run=False, suspended=spec.suspend, job=view, totals=counted
    )
    if sync is not None:  # a sync is Succeeded only once its deletes are done (syncstep.py)
        phase, updates = sync.phase_and_conditions(phase, updates, counted.objects)
    extra = [STALLED_CLEARED, planned]
    restores = restores_condition(counted.archived, ended=ended)  # spec.archived: restore
    if observed.restores is not None:  # no pod runs: the operator checks back (restorewait.py)
        restores = waiting_condition(observed.restores, TIME_FORMAT)
        extra.append(Condition("Progressing", "True", "WaitingForRestore", restores.message))
    if restores is not None:
        extra.append(restores)
    capped = caps_message(spec, ctx.settings)
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
        **shown,
        "phase": phase,
        "conditions": cond.set_conditions(_kept_conditions(status), [*updates, *extra], now(), generation),
        "workers": {
            "desired": 0 if spec.suspend else parallelism,
            "active": view.active,
            "running": len(running),
            "succeeded": len(view.completed_indexes),
            "failed": view.failed_pods,
            "oomKilled": len(observed.failures.oom_killed),
            **({"lastFailure": observed.why} if observed.why else {}),
        },
        "concurrency": {
            "total": sum(p["concurrency"] for p in counted.per_pod),
            "perPod": counted.per_pod[:1000],
        },
        "startTime": status.get("startTime") or now(),
        **archived_status(counted.archived),
        **versionstatus.versions_status(counted.versions, every_version=spec.versions is Versions.ALL),
        "rateLimit": observed.rate_limit,
    }
    new_status["memory"]["peakBytes"] = counted.peak_rss
    new_status["memory"]["peak"] = to_display_quantity(counted.peak_rss)
    if counted.peak_source:
        new_status["memory"]["peakSource"] = counted.peak_source
    if spec.report is not None:
        new_status["report"] = f"s3://{spec.report.bucket}/{spec.report.prefix}{owner.name}/"
        if spec.report.include is ReportInclude.ALL:
            new_status["evidence"] = evidence_status(
                spec.report.bucket, spec.report.prefix, owner.name, counted.objects
            )
    if sync is not None:
        new_status["sync"] = sync.status()
        stalled = sync.stall()
        if stalled is not None:  # refused: nothing deleted; an edit (deletes.max, the source) decides again
            return {**new_status, **_stall(ctx, status, *stalled, generation)}
    if observed.stopped:  # the workers stopped themselves (their Job failed); the CopyJob waits for an edit
        return {
            **new_status,
            **_stall(ctx, status, SYSTEMATIC_FAILURE, stall_message(observed.stopped), generation),
        }
    if phase in TERMINAL and status.get("phase") not in TERMINAL:
        new_status["completionTime"] = now()
        kind = "Normal" if phase == "Succeeded" else "Warning"
        succeeded = cond.get(new_status["conditions"], "Succeeded") or {}
        ctx.post(kind, "Completed" if phase == "Succeeded" else "Failed", str(succeeded.get("message", "")))
    return new_status


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
    pods: list[dict[str, Any]],
    view: JobView,
    finished: dict[int, WorkerReport],
    port: int,
    last_answers: dict[str, WorkerReport],
) -> tuple[dict[int, tuple[str, WorkerReport]], dict[int, str], dict[str, str]]:
    """Running pods' `/status` (fetched in parallel), new final reports of completed shards, and the
    addresses of the pods that answered now (by pod name). ``last_answers`` (this CopyJob's, by pod name)
    is updated, and keeps only the pods asked now."""
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
    addresses: dict[str, str] = {}
    if targets:
        with ThreadPoolExecutor(min(16, len(targets))) as pool:
            answers = list(pool.map(lambda t: fetch_worker_status(t[2], port, pod=t[1]), targets))
        for (index, pod_name, ip), text in zip(targets, answers, strict=True):
            report = parse_report(text) if text else None
            if report is not None and not report.answers_for(index, pod_name):
                report = None  # another process at an address this pod no longer holds
            if report is None:
                # Busy or shutting down: its last answer is better evidence than none (counts never
                # go backwards while a pod finishes).
                report = last_answers.get(pod_name)
            else:
                last_answers[pod_name] = report
                addresses[pod_name] = ip
            if report is not None:
                running[index] = (pod_name, report)
    asked = {pod_name for _index, pod_name, _ip in targets}
    for gone in [name for name in last_answers if name not in asked]:
        del last_answers[gone]
    return running, new_finished, addresses


def _plan_objects(shards: Sequence[Shard]) -> dict[str, int]:
    total = sum(s.objects for s in shards)
    return {"total": total, "copied": 0, "skipped": 0, "failed": 0, "pending": total}


def _plan_bytes(shards: Sequence[Shard]) -> dict[str, int]:
    return {"total": sum(s.bytes for s in shards), "copied": 0, "skipped": 0, "failed": 0}


def _render_counts(
    counted: Totals, previous: dict[str, Any], *, running: bool, finished: bool
) -> dict[str, Any]:
    return counts_status(counted, previous, datetime.now(UTC), running=running, finished=finished)
