"""The delete phase of a sync (`spec.mode: sync`) in one reconciliation: the thin adapter over
`syncphase.py`.

Where it sits: `reconcile` calls `sync_step` after observing the workers. Until the copy Job completed
it does nothing. Then it decides over the whole job from the shards' censuses in the progress ledger;
refused, the CopyJob stalls with the refusal's reason and nothing is deleted; allowed, it creates the
delete Job (owned, like the worker Job; `render.render_delete_job`) and reads what its pods report.
Level-based like the rest: a restarted operator decides again from the same ledger and finds the
same delete Job. A delete Job made for an earlier copy Job (one an edit replaced) is removed first.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ferry.model.copyjob import Mode
from ferry.model.plan import Shard
from ferry.operator.caps import parallelism as parallelism_for
from ferry.operator.children import create_owned, require_owned
from ferry.operator.conditions import Condition
from ferry.operator.errors import Stalled
from ferry.operator.ownership import controlled
from ferry.operator.planfile import StoredPlan
from ferry.operator.plannerjob import check_destination
from ferry.operator.planstep import worker_account
from ferry.operator.render import (
    CENSUS_ANNOTATION,
    COPY_JOB_ANNOTATION,
    LABEL_COPYJOB,
    Owner,
    census_job_name,
    delete_job_name,
    render_census_job,
    render_delete_job,
    spec_json,
)
from ferry.operator.sizing import Sizing
from ferry.operator.syncphase import (
    DeleteProgress,
    SyncVerdict,
    decide_sync,
    delete_progress,
    dry_run_status,
    sync_conditions,
    sync_status,
)
from ferry.worker.shardsync import MAX_ALLOWED_TEXT, ShardCensus, encode_allowed
from ferry.worker.statusdoc import WorkerReport, parse_report
from ferry.worker.syncdeletes import DeleteLimit, Refusal

if TYPE_CHECKING:
    from ferry.operator.reconcile import Context, Inputs

__all__ = ["SyncState", "sync_dry_run", "sync_step"]

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class SyncState:
    """A sync whose copy Job completed: the decision, and the delete Job's progress once it exists."""

    verdict: SyncVerdict
    progress: DeleteProgress | None = None

    def status(self) -> dict[str, Any]:
        return sync_status(self.verdict, self.progress)

    def stall(self) -> tuple[str, str] | None:
        """The reason and message to stall with: a refusal (failed objects aside, which fail the
        CopyJob as in a copy, resumable by an edit)."""
        refusal = self.verdict.decision.refusal
        if refusal is None or refusal is Refusal.COPY_FAILURES:
            return None
        return refusal.value, self.verdict.decision.message

    def phase_and_conditions(
        self, phase: str, updates: list[Condition], objects: dict[str, int]
    ) -> tuple[str, list[Condition]]:
        """The copy's phase and conditions, or those of the sync once its copy ended without failures."""
        stalled = self.stall()
        if stalled is not None:  # never the copy's Succeeded: nothing was deleted (the caller stalls)
            reason, message = stalled
            return "Running", [
                Condition("Progressing", "False", reason, message),
                Condition("Succeeded", "Unknown", reason, message),
            ]
        if self.verdict.decision.refusal is not None:  # failed objects: the copy's Failed
            return phase, updates
        copied = f"{objects['copied']:,} copied, {objects['skipped']:,} skipped of {objects['total']:,}"
        chosen = sync_conditions(self.verdict, self.progress, copied)
        return chosen if chosen is not None else (phase, updates)


async def sync_step(
    ctx: Context,
    owner: Owner,
    inputs: Inputs,
    shards: Sequence[Shard],
    sizing: Sizing,
    job: dict[str, Any],
    job_complete: bool,
    censuses: dict[int, ShardCensus],
    failed: int,
    parallelism: int,
) -> SyncState | None:
    """None unless this is a sync whose copy Job completed; else its decision and delete progress."""
    spec = inputs.spec
    if spec.mode is not Mode.SYNC or not job_complete:
        return None
    assert spec.deletes is not None  # the model requires it with mode sync
    verdict = decide_sync(len(shards), censuses, failed, DeleteLimit.parse(spec.deletes.max))
    if not verdict.decision.delete:
        return SyncState(verdict)
    allowed = encode_allowed(verdict.allowed)
    if len(allowed) > MAX_ALLOWED_TEXT:
        raise Stalled(
            "TooManyShards",
            f"{len(verdict.allowed):,} shards have objects to delete, more than one delete Job can carry; "
            "nothing deleted",
        )
    copy_uid = str(job["metadata"]["uid"])
    existing = await _current_job(ctx, owner, delete_job_name(owner.name), COPY_JOB_ANNOTATION, copy_uid)
    if existing is None:
        account, note = await worker_account(ctx, owner.namespace, inputs.who)
        settings = replace(ctx.settings, worker_service_account=account)
        manifest = render_delete_job(
            owner,
            spec,
            sizing,
            len(shards),
            settings,
            parallelism,
            allowed=allowed,
            copy_job_uid=copy_uid,
            identity=inputs.who,
        )
        await create_owned(ctx, owner, "Job", manifest, "JobRejected")
        ctx.post(
            "Normal",
            "Deleting",
            f"deleting {verdict.decision.candidates:,} destination objects the source no longer holds "
            f"(deletes.max allows {verdict.decision.allowed:,}){note}",
        )
        return SyncState(verdict)
    pods = await _pods_of(ctx, owner, existing)
    complete, job_failed = _ended(existing)
    reports = {i: r.deletes for i, r in _reports(pods).items() if r.deletes is not None}
    progress = delete_progress(verdict.allowed, reports, complete=complete, failed=job_failed)
    return SyncState(verdict, progress)


async def sync_dry_run(
    ctx: Context, owner: Owner, inputs: Inputs, plan: StoredPlan, sizing: Sizing
) -> dict[str, Any]:
    """`status.sync` of a sync's dry run: the census Job (created when missing; one made for another
    plan or spec is replaced) and what its pods counted. Nothing is copied or deleted."""
    spec = inputs.spec
    assert spec.deletes is not None  # the model requires it with mode sync
    if not check_destination(spec, inputs.who):
        return {
            "dryRun": True,
            "message": "dry run: what the sync would delete is not counted without credentials for the "
            "destination (spec.destination.credentialsSecret)",
        }
    shards = plan.shards
    parallelism = parallelism_for(spec, sizing.parallelism, ctx.settings, len(shards))
    planned = f"{spec_json(spec)}\n{plan.listed_at.isoformat()}"
    census_of = hashlib.sha256(planned.encode()).hexdigest()[:32]
    existing = await _current_job(ctx, owner, census_job_name(owner.name), CENSUS_ANNOTATION, census_of)
    if existing is None:
        account, note = await worker_account(ctx, owner.namespace, inputs.who)
        settings = replace(ctx.settings, worker_service_account=account)
        manifest = render_census_job(
            owner, spec, sizing, len(shards), settings, parallelism, census_of=census_of, identity=inputs.who
        )
        await create_owned(ctx, owner, "Job", manifest, "JobRejected")
        ctx.post("Normal", "Counting", f"counting what the sync would delete in {len(shards)} shard(s){note}")
        return dry_run_status(len(shards), {}, DeleteLimit.parse(spec.deletes.max), ended=False)
    pods = await _pods_of(ctx, owner, existing)
    censuses = {i: r.sync for i, r in _reports(pods).items() if r.sync is not None and r.state == "complete"}
    complete, failed = _ended(existing)
    return dry_run_status(
        len(shards), censuses, DeleteLimit.parse(spec.deletes.max), ended=complete or failed
    )


async def _current_job(
    ctx: Context, owner: Owner, name: str, annotation: str, made_for: str
) -> dict[str, Any] | None:
    """The owned Job of that name when it was made for ``made_for``; one made for something else is
    deleted (the next pass makes the new one, once it is gone) and a foreign one stalls."""
    existing = require_owned(await asyncio.to_thread(ctx.kube.job, owner.namespace, name), "Job", owner)
    if existing is None:
        return None
    if ((existing.get("metadata") or {}).get("annotations") or {}).get(annotation) != made_for:
        uid = str(existing["metadata"]["uid"])
        await asyncio.to_thread(ctx.kube.delete_job, owner.namespace, name, uid)
        raise Stalled(
            "SyncJobReplaced",
            f"Job {name} was made for an earlier run of this CopyJob; it is being replaced",
        )
    return existing


async def _pods_of(ctx: Context, owner: Owner, job: dict[str, Any]) -> list[Mapping[str, Any]]:
    labelled = await asyncio.to_thread(ctx.kube.pods, owner.namespace, f"{LABEL_COPYJOB}={owner.name}")
    return controlled(labelled, str(job["metadata"]["uid"]))


def _ended(job: Mapping[str, Any]) -> tuple[bool, bool]:
    conditions = {
        c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    }
    return "Complete" in conditions, "Failed" in conditions


def _reports(pods: Sequence[Mapping[str, Any]]) -> dict[int, WorkerReport]:
    """What the census or delete Job's finished pods reported, by shard (a pod's message is checked)."""
    found: dict[int, WorkerReport] = {}
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        index_text = str((meta.get("annotations") or {}).get(INDEX_ANNOTATION) or "")
        if status.get("phase") != "Succeeded" or not (index_text.isascii() and index_text.isdigit()):
            continue
        for container in status.get("containerStatuses") or []:
            message = str(((container.get("state") or {}).get("terminated") or {}).get("message") or "")
            report = parse_report(message[:8192])
            if report is not None and report.shard == int(index_text):
                found[int(index_text)] = report
    return found
