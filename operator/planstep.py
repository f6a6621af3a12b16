"""The planning step of a pass: the CopyJob's stored plan, or the planner pod that makes it.

Where it sits: `reconcile` calls `ensure_plan` first; until it returns a plan, the pass ends with the
status it raises (`StillPlanning`, `WaitingForCapacity`, or a stall). The operator never speaks S3
itself: it starts the one-pod Job `<name>-planner` in the CopyJob's namespace (`plannerjob.py`), follows
it (`plannerstate.py`), reads the plan from the pod it controls with a size cap and a deadline, checks
it (`planresult.py`), cuts shards and sizes workers under the platform's caps (`caps.py`), and stores
the owned ConfigMap `<name>-plan`. A plan that is stored is never listed again; one the API server
refuses is kept by its planner pod until it can be stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry.model import CopyJobSpec, format_bytes
from ferry.model.quantity import format_duration
from ferry.operator import conditions as cond
from ferry.operator.caps import MIN_SHARDS_BYTES, cut_shards, plan_summary
from ferry.operator.children import create_owned, now, require_owned
from ferry.operator.conditions import Condition
from ferry.operator.errors import Stalled
from ferry.operator.kube import fetch_from_pod, fetch_worker_status
from ferry.operator.ownership import controlled
from ferry.operator.planfile import PlanUnreadable, StoredPlan, read_plan
from ferry.operator.plannerjob import (
    GENERATION_ANNOTATION,
    planner_name,
    render_planner_configmap,
    render_planner_job,
)
from ferry.operator.plannerstate import FINAL_REASONS, PlannerState, Stage, planner_state
from ferry.operator.planning import MAX_PIECES, piece_targets
from ferry.operator.planresult import (
    MAX_PLANNER_PODS,
    MAX_RESULT_BYTES,
    PLANNER_REASONS,
    PlanResultInvalid,
    combine_progress,
    merge_parts,
    parse_listing_progress,
    parse_plan_result,
)
from ferry.operator.policy import Identity
from ferry.operator.render import (
    CONFIGMAP_DATA_BYTES,
    Owner,
    data_bytes,
    plan_name,
    render_plan,
    shards_budget,
)
from ferry.operator.suspension import Child, ChildJob, held, suspend_change

if TYPE_CHECKING:
    from ferry.operator.reconcile import Context

#: Stall reasons that come from a planner pod: a new planner keeps them (and their one Event) until it
#: finds otherwise.
PLANNER_STALLS = PLANNER_REASONS | {"CredentialsSecretMissing", "CredentialsKeyMissing"}
#: Set by the Job controller on every pod it creates; a tenant may copy it, so ownership is checked too.
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"


class WaitingForCapacity(Exception):
    """The CopyJob waits for the platform's per-namespace limit; not an error, a Pending condition."""


async def ensure_plan(
    ctx: Context, owner: Owner, spec: CopyJobSpec, who: Identity, status: dict[str, Any], generation: int
) -> StoredPlan:
    """The CopyJob's plan: remembered, read from its own ConfigMap, or made by its planner pod and stored
    now. Raises `StillPlanning` with this pass's status while the planner works."""
    cached = ctx.memory.plans.get(owner.uid)
    if cached is not None:
        return cached
    name = plan_name(owner.name)
    stored = require_owned(
        await asyncio.to_thread(ctx.kube.configmap, owner.namespace, name), "ConfigMap", owner
    )
    planner = require_owned(
        await asyncio.to_thread(ctx.kube.job, owner.namespace, planner_name(owner.name)), "Job", owner
    )
    if stored is None:
        stored = await _run_planner(ctx, owner, spec, who, status, generation, planner)
    try:
        plan = read_plan(stored.get("data"))
    except PlanUnreadable as exc:
        raise Stalled(
            "PlanUnreadable",
            f"ConfigMap {owner.namespace}/{name} holds no plan Ferry can use ({exc}): something other than "
            f"the operator changed it. Delete it (kubectl -n {owner.namespace} delete configmap {name}) and "
            "the CopyJob is planned again",
        ) from exc
    ctx.memory.plans[owner.uid] = plan
    ctx.memory.done_planning(owner.namespace, owner.uid)
    planner = require_owned(
        await asyncio.to_thread(ctx.kube.job, owner.namespace, planner_name(owner.name)), "Job", owner
    )
    if planner is not None:  # its pod has nothing more to say: stop it now rather than at its hold's end
        await asyncio.to_thread(
            ctx.kube.delete_job, owner.namespace, planner_name(owner.name), str(planner["metadata"]["uid"])
        )
    return plan


class StillPlanning(Exception):
    """The planner pod is at work; ``status`` is what this pass writes meanwhile."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__("planning")
        self.status = status


def _stalled_by_planner(status: dict[str, Any]) -> bool:
    """Whether the CopyJob is stalled by what an earlier planner found (the one a new planner may clear)."""
    stalled = cond.get(status.get("conditions") or [], "Stalled") or {}
    return stalled.get("status") == "True" and stalled.get("reason") in PLANNER_STALLS


def _held_status(status: dict[str, Any], generation: int) -> dict[str, Any]:
    """A CopyJob suspended before its plan was made: Suspended, as one suspended later is, with planning
    held (a stall of an earlier planner, if any, stands)."""
    updates = [
        Condition("Planned", "Unknown", "Listing", HELD_MESSAGE),
        Condition("Progressing", "False", "Suspended", "spec.suspend is true"),
        Condition("Suspended", "True", "PlanningHeld", HELD_MESSAGE),
        Condition("Succeeded", "Unknown", "Suspended", HELD_MESSAGE),
    ]
    if not _stalled_by_planner(status):
        updates.append(Condition("Stalled", "False", "ReferencesValid", ""))
    return {
        "observedGeneration": generation,
        "phase": "Suspended",
        "conditions": cond.set_conditions(status.get("conditions") or [], updates, now(), generation),
    }


def _planning_status(
    status: dict[str, Any], generation: int, message: str, listed: dict[str, Any] | None
) -> dict[str, Any]:
    conditions = status.get("conditions") or []
    # Said once it was held: no longer held.
    suspension = [Condition("Suspended", "False", "NotSuspended", "")][
        : 1 if cond.is_true(conditions, "Suspended") else 0
    ]
    if _stalled_by_planner(status):
        # A new planner after a failed one: the stall stands (and says nothing new) until it is
        # resolved one way or the other.
        return {
            "observedGeneration": generation,
            "conditions": cond.set_conditions(
                conditions,
                [Condition("Planned", "Unknown", "Listing", message), *suspension],
                now(),
                generation,
            ),
        }
    result: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Planning",
        "conditions": cond.set_conditions(
            [c for c in (status.get("conditions") or []) if c.get("type") != "Stalled"],
            [
                Condition("Planned", "Unknown", "Listing", message),
                Condition("Succeeded", "Unknown", "Planning", ""),
                Condition("Stalled", "False", "ReferencesValid", ""),
                *suspension,
            ],
            now(),
            generation,
        ),
    }
    if listed is not None:
        result["plan"] = {"listingProgress": listed}
    return result


async def _run_planner(
    ctx: Context,
    owner: Owner,
    spec: CopyJobSpec,
    who: Identity,
    status: dict[str, Any],
    generation: int,
    planner: dict[str, Any] | None,
) -> dict[str, Any]:
    """Drive the planner Job one step: start it, wait for it, or take its plan and store it. Returns the
    stored plan ConfigMap; raises `StillPlanning`, `Stalled` or `WaitingForCapacity` otherwise."""
    job_name_ = planner_name(owner.name)
    if planner is not None:
        planned_for = str((planner["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION))
        state = (
            planner_state(planner, await _planner_pods(ctx, owner, planner), spec, owner.namespace)
            if planned_for == str(generation)
            else None
        )
        retry_at = _retry_at(state)
        if (
            state is None
            or state.stage is Stage.LOST
            or (retry_at is not None and datetime.now(UTC) >= retry_at)
        ):
            # Planned for an older spec, finished without its plan being stored, or failed long enough
            # ago to try again: a new planner starts on the next pass.
            await asyncio.to_thread(
                ctx.kube.delete_job, owner.namespace, job_name_, str(planner["metadata"]["uid"])
            )
            raise StillPlanning(_planning_status(status, generation, "starting the planner again", None))
        # spec.suspend holds the planner too (suspension.py): no pod lists the user's account meanwhile.
        change = suspend_change(
            ChildJob(
                Child.PLANNER,
                suspended=bool((planner.get("spec") or {}).get("suspend")),
                finished=state.stage in (Stage.FAILED, Stage.LOST),
            ),
            spec.suspend,
        )
        if change is not None:
            meta = planner["metadata"]
            await asyncio.to_thread(
                ctx.kube.patch_job,
                owner.namespace,
                job_name_,
                str(meta["uid"]),
                {"spec": {"suspend": change}},
            )
        if spec.suspend and state.stage is not Stage.FAILED:
            ctx.memory.done_planning(owner.namespace, owner.uid)  # a held plan takes no planning place
            raise StillPlanning(_held_status(status, generation))
        ctx.memory.planning.setdefault(owner.namespace, set()).add(owner.uid)
        if state.stage in (Stage.FAILED, Stage.BLOCKED):
            assert state.failure is not None
            if state.stage is Stage.FAILED:
                ctx.memory.done_planning(owner.namespace, owner.uid)
            # The same words at every retry: one Event per distinct stall, not one per attempt.
            when = (
                f"; planned again every {PLANNER_RETRY_SECONDS:.0f} s until it succeeds"
                if retry_at is not None
                else ""
            )
            if state.stage is Stage.FAILED and state.failure.reason in FINAL_REASONS:
                when = "; edit the CopyJob to plan it again"
            raise Stalled(state.failure.reason, f"{state.failure.message}{when}")
        if state.stage is Stage.LISTING:
            port = ctx.settings.status_port
            pods = _planner_count(planner)
            running = dict(state.pod_ips)
            if sorted(running) == list(range(pods)):
                texts = await asyncio.gather(
                    *(
                        asyncio.to_thread(
                            fetch_from_pod, running[i], port, "/plan", PLAN_READ_SECONDS, MAX_RESULT_BYTES
                        )
                        for i in range(pods)
                    )
                )
                if all(text is not None for text in texts):
                    try:
                        return await _store_plan(ctx, owner, spec, [t for t in texts if t is not None])
                    except PartsDisagree:
                        # Pods that saw different prefix trees (the bucket changed as they started):
                        # none of their parts can be trusted to meet the others, so all list again.
                        await asyncio.to_thread(
                            ctx.kube.delete_job, owner.namespace, job_name_, str(planner["metadata"]["uid"])
                        )
                        raise StillPlanning(
                            _planning_status(
                                status, generation, "the planner pods divided the source differently", None
                            )
                        ) from None
            answers = await asyncio.gather(
                *(asyncio.to_thread(fetch_worker_status, ip, port) for ip in running.values())
            )
            progress = combine_progress([parse_listing_progress(a) for a in answers])
            doing = (
                "the planner pod lists the source" if pods == 1 else f"{pods} planner pods list the source"
            )
            raise StillPlanning(_planning_status(status, generation, doing, progress))
        raise StillPlanning(_planning_status(status, generation, "the planner pod is starting", None))

    cap = ctx.settings.max_planning_per_namespace
    planning = ctx.memory.planning.setdefault(owner.namespace, set())
    if cap is not None and owner.uid not in planning and len(planning) >= cap:
        raise WaitingForCapacity(
            f"namespace {owner.namespace} already plans {len(planning)} CopyJob(s), the platform's limit is "
            f"{cap} (planning.maxPerNamespace); this one is planned when one of them is done"
        )
    if shards_budget(spec) < MIN_SHARDS_BYTES:  # only a spec admitted under an older CRD
        raise Stalled(
            "PlanTooLarge",
            f"spec is too large for its plan ConfigMap ({CONFIGMAP_DATA_BYTES} bytes with the shards); "
            "use fewer filter patterns",
        )
    # Checked and taken in one step of the event loop: no other pass runs in between.
    planning.add(owner.uid)
    request = render_planner_configmap(owner, spec)
    existing = require_owned(
        await asyncio.to_thread(ctx.kube.configmap, owner.namespace, job_name_), "ConfigMap", owner
    )
    if existing is None:
        await create_owned(ctx, owner, "ConfigMap", request, "PlanRejected")
    elif existing.get("data") != request["data"]:
        await asyncio.to_thread(
            ctx.kube.patch_configmap_data,
            owner.namespace,
            job_name_,
            str(existing["metadata"]["uid"]),
            request["data"],
        )
    account, _note = await worker_account(ctx, owner.namespace, who)
    suspended = held(Child.PLANNER, spec.suspend)
    manifest = render_planner_job(
        owner, spec, ctx.settings, generation, identity=who, service_account=account, suspend=suspended
    )
    await create_owned(ctx, owner, "Job", manifest, "PlanRejected")
    if not _stalled_by_planner(status) and not suspended:  # a retry of a stalled plan is no news
        ctx.post(
            "Normal", "Planning", f"listing s3://{spec.source.bucket}/{spec.source.prefix} in a planner pod"
        )
    if suspended:
        ctx.memory.done_planning(owner.namespace, owner.uid)  # a held plan takes no planning place
        raise StillPlanning(_held_status(status, generation))
    raise StillPlanning(_planning_status(status, generation, "starting the planner pod", None))


#: What a CopyJob suspended before its plan is made says.
HELD_MESSAGE = "spec.suspend is true: planning is held and no planner pod runs"


#: A failed planner is started again after this long (a bucket created meanwhile, a Secret fixed), unless
#: its failure is one no retry can change (`FINAL_REASONS`).
PLANNER_RETRY_SECONDS = 30.0
#: Seconds to read a plan from the planner pod (at most `MAX_RESULT_BYTES`).
PLAN_READ_SECONDS = 10.0


def _retry_at(state: PlannerState | None) -> datetime | None:
    if state is None or state.stage is not Stage.FAILED or state.failed_at is None:
        return None
    if state.failure is not None and state.failure.reason in FINAL_REASONS:
        return None
    return state.failed_at + timedelta(seconds=PLANNER_RETRY_SECONDS)


async def _planner_pods(ctx: Context, owner: Owner, planner: dict[str, Any]) -> list[dict[str, Any]]:
    """The planner's pods, found through the Job's controller-uid and checked by ownerReference."""
    uid = str(planner["metadata"]["uid"])
    listed = await asyncio.to_thread(ctx.kube.pods, owner.namespace, f"{CONTROLLER_UID_LABEL}={uid}")
    return [dict(p) for p in controlled(listed, uid)]


async def worker_account(ctx: Context, namespace: str, who: Identity) -> tuple[str, str]:
    """The ServiceAccount pods run under, and a note when the platform's worker account is missing."""
    if who.ambient:
        return "", ""  # the tenant's own ServiceAccount (render sets it from the identity)
    account = ctx.settings.worker_service_account
    if account and not await asyncio.to_thread(ctx.kube.service_account_exists, namespace, account):
        # Pods naming a missing ServiceAccount are never created; the namespace's default one serves
        # as well, since Ferry's pods never mount a token.
        return (
            "",
            f"; ServiceAccount {account!r} is not in {namespace}, using the default one (no token mounted)",
        )
    return account, ""


class PartsDisagree(Exception):
    """The planner pods' parts do not divide the key space one way."""


def _planner_count(planner: dict[str, Any]) -> int:
    """Planner pods of the operator's own planner Job (its completions, bounded)."""
    completions = (planner.get("spec") or {}).get("completions")
    return completions if isinstance(completions, int) and 1 <= completions <= MAX_PLANNER_PODS else 1


async def _store_plan(ctx: Context, owner: Owner, spec: CopyJobSpec, texts: list[str]) -> dict[str, Any]:
    """Check the planner pods' answers (one each, merged when the listing was divided over several),
    cut shards and size the workers from them, and store the plan ConfigMap."""
    try:
        parts = [parse_plan_result(text) for text in texts]
    except PlanResultInvalid as exc:
        raise Stalled(
            "PlanInvalid",
            f"the planner pod of CopyJob {owner.name} answered with no plan Ferry can use ({exc}); "
            "it is planned again when the planner Job is deleted",
        ) from exc
    try:
        result = merge_parts(
            parts, MAX_PIECES, piece_targets(spec.shard_size.max_objects, spec.shard_size.max_bytes)
        )
    except PlanResultInvalid as exc:
        raise PartsDisagree(str(exc)) from exc
    histogram, listed_at = result.histogram, result.listed_at
    cap = ctx.settings.max_objects_per_copyjob
    if cap is not None and histogram.objects > cap:
        # Each pod keeps the limit for its own part; together they may still pass it.
        raise Stalled(
            "TooManyObjects",
            f"s3://{spec.source.bucket}/{spec.source.prefix} holds {histogram.objects:,} objects, more than "
            f"{cap:,}, the platform's limit for one CopyJob (planning.maxObjects); split it into CopyJobs of "
            "narrower source.prefix",
        )
    shards, sizing = cut_shards(histogram, list(result.pieces), spec, ctx.settings, listed_at)
    plan = StoredPlan(histogram, tuple(shards), listed_at)
    # The summary is for people reading the ConfigMap; the operator reads back only what was measured.
    summary = {**plan_summary(plan, sizing, plan_name(owner.name)), "reason": sizing.reason}
    if not result.destination_checked:
        summary["destinationChecked"] = False
    if result.existing is not None:
        summary["existing"] = {"objects": result.existing[0], "bytes": result.existing[1]}
    if result.list_requests is not None:
        summary["listRequests"] = result.list_requests
    body = render_plan(owner, spec, shards, summary)
    if data_bytes(body["data"]) > CONFIGMAP_DATA_BYTES:
        raise Stalled(
            "PlanTooLarge",
            f"the plan takes {data_bytes(body['data'])} bytes, more than a ConfigMap holds "
            f"({CONFIGMAP_DATA_BYTES}); use fewer filter patterns",
        )
    stored = await create_owned(ctx, owner, "ConfigMap", body, "PlanRejected")
    if not histogram.objects:
        # Not an error (objects written later are still copied), but most often a mistyped prefix.
        ctx.post(
            "Warning",
            "SourceEmpty",
            f"no objects under s3://{spec.source.bucket}/{spec.source.prefix}"
            + (" that the filter accepts" if spec.filter else "")
            + "; keys and prefixes are case-sensitive: check spec.source.prefix",
        )
    ctx.post(
        "Normal",
        "Planned",
        f"{histogram.objects:,} objects ({format_bytes(histogram.bytes)}) in {len(shards)} shard(s); "
        f"{sizing.reason}; predicted {format_duration(sizing.predicted_seconds)}",
    )
    return stored
