"""The delete phase of a sync (`spec.mode: sync`) in one reconciliation: the thin adapter over
`syncphase.py`.

Where it sits: `reconcile` calls `sync_step` after observing the workers. Until the copy Job completed
it does nothing. Then it decides over the whole job from the shards' censuses in the progress ledger;
refused, the CopyJob stalls with the refusal's reason and nothing is deleted; allowed, it creates the
delete Job (owned, like the worker Job; `render.render_delete_job`) and reads what its pods report.
Level-based like the rest: a restarted operator decides again from the same ledger and finds the
same delete Job. A delete Job made for an earlier copy Job (one an edit replaced) is removed first.

`spec.suspend` holds the delete Job and a dry run's census Job as it holds the worker Job
(`suspension.py`): created suspended, suspended while they run, resumed when it goes back to false. A
delete pod stopped by the suspension reports what it deleted; that count goes into the ledger
(`syncphase.record_stopped`) before the delete Job is resumed, and the shard's next pod deletes at most
what is left of its approved count.
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
from ferry.operator.kube import fetch_worker_status, push_recorded_all
from ferry.operator.ownership import controlled
from ferry.operator.planfile import StoredPlan
from ferry.operator.plannerjob import check_destination
from ferry.operator.planstep import worker_account
from ferry.operator.ratecontrol import job_env, new_token
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
from ferry.operator.stopped import completion_index
from ferry.operator.suspension import Child, ChildJob, held, suspend_change
from ferry.operator.syncphase import (
    DeleteProgress,
    SyncVerdict,
    counted_pods,
    decide_sync,
    delete_progress,
    dry_run_status,
    record_stopped,
    sync_conditions,
    sync_status,
)
from ferry.worker.ratelimit import TOKEN_ENV
from ferry.worker.shardsync import (
    MAX_ALLOWED_TEXT,
    DeletedBefore,
    ShardCensus,
    ShardDeletes,
    deleted_key,
    encode_allowed,
    pod_tag,
)
from ferry.worker.statusdoc import WorkerReport, parse_report
from ferry.worker.syncdeletes import DeleteLimit, Refusal

if TYPE_CHECKING:
    from ferry.operator.reconcile import Context, Inputs

__all__ = ["SyncState", "sync_dry_run", "sync_step"]


@dataclass(frozen=True)
class SyncState:
    """A sync whose copy Job completed: the decision, and the delete Job's progress once it exists."""

    verdict: SyncVerdict
    progress: DeleteProgress | None = None
    #: spec.suspend is true: deletes not yet done are held.
    suspended: bool = False

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
        chosen = sync_conditions(self.verdict, self.progress, copied, suspended=self.suspended)
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
    ledger: dict[str, Any],
) -> SyncState | None:
    """None unless this is a sync whose copy Job completed; else its decision and delete progress.
    ``ledger`` is the progress ConfigMap, where stopped delete pods' counts are recorded."""
    spec = inputs.spec
    if spec.mode is not Mode.SYNC or not job_complete:
        return None
    assert spec.deletes is not None  # the model requires it with mode sync
    verdict = decide_sync(len(shards), censuses, failed, DeleteLimit.parse(spec.deletes.max))
    if not verdict.decision.delete:
        return SyncState(verdict)
    suspended = held(Child.DELETES, spec.suspend)
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
            suspend=suspended,
            token=new_token(),
        )
        await create_owned(ctx, owner, "Job", manifest, "JobRejected")
        held_note = "; held while spec.suspend is true" if suspended else ""
        ctx.post(
            "Normal",
            "Deleting",
            f"deleting {verdict.decision.candidates:,} destination objects the source no longer holds "
            f"(deletes.max allows {verdict.decision.allowed:,}){note}{held_note}",
        )
        return SyncState(verdict, suspended=suspended)
    pods = await _pods_of(ctx, owner, existing)
    complete, job_failed = _ended(existing)
    reports = {
        i: r.deletes for i, r in _reports(pods).items() if r.deletes is not None and not r.deletes.stopped
    }
    # What pods stopped by a suspension deleted goes into the ledger before anything resumes the Job.
    before = await _record_stopped(ctx, owner, ledger, copy_uid, verdict.allowed, pods, existing)
    unended = sum(1 for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
    change = suspend_change(
        ChildJob(
            Child.DELETES,
            suspended=bool((existing.get("spec") or {}).get("suspend")),
            finished=complete or job_failed,
            unended_pods=unended,
        ),
        spec.suspend,
    )
    if change is not None:
        await _patch_suspend(ctx, existing, change)
    progress = delete_progress(
        verdict.allowed, reports, complete=complete, failed=job_failed, before=before, active=unended
    )
    return SyncState(verdict, progress, suspended=suspended)


async def _record_stopped(
    ctx: Context,
    owner: Owner,
    ledger: dict[str, Any],
    run: str,
    allowed: Mapping[int, int],
    pods: Sequence[Mapping[str, Any]],
    job: Mapping[str, Any],
) -> dict[int, ShardDeletes]:
    """Add what the delete pods stopped by a suspension deleted to the ledger (written before it is
    shown or trusted), then tell each stopped pod whose count the ledger holds that it may exit; returns
    each shard's count from its earlier, stopped pods."""
    data = dict(ledger.get("data") or {})
    recorded = {i: DeletedBefore.parse(data.get(deleted_key(i))) for i in allowed}
    answers, addresses = await _ask_stopping(ctx, pods)
    changed = record_stopped(run, recorded, _stopped_reports(pods, answers, allowed), allowed)
    if changed:
        await asyncio.to_thread(
            ctx.kube.patch_configmap_data,
            owner.namespace,
            str(ledger["metadata"]["name"]),
            str(ledger["metadata"]["uid"]),
            {deleted_key(i): entry.text() for i, entry in changed.items()},
        )
    entries = {**{i: e for i, e in recorded.items() if e is not None}, **changed}
    token = job_env(job, TOKEN_ENV)
    told = counted_pods(run, entries, _stopped_tags(pods, answers))
    finals = [(addresses[name], final) for name in told if (final := answers[name].final) is not None]
    if token and finals:
        await asyncio.to_thread(push_recorded_all, finals, ctx.settings.status_port, token)
    return {i: e.counts() for i, e in entries.items() if e.run == run}


def _stopped_tags(
    pods: Sequence[Mapping[str, Any]], answers: Mapping[str, WorkerReport]
) -> dict[str, tuple[int, str]]:
    """The delete pods that answered this pass with a named final document (stopped), by pod name: their
    shard and `pod_tag`."""
    found: dict[str, tuple[int, str]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name") or "")
        report = answers.get(name)
        index = completion_index(pod)
        if report is None or report.final is None or index is None:
            continue
        if report.answers_for(index, name):
            found[name] = (index, pod_tag(str(meta.get("uid") or name)))
    return found


def _stopped_reports(
    pods: Sequence[Mapping[str, Any]], answers: Mapping[str, WorkerReport], allowed: Mapping[int, int]
) -> dict[int, dict[str, ShardDeletes]]:
    """What each delete pod stopped before the end of its range (a suspension, an eviction) deleted, by
    shard and by `pod_tag`: from its last `/status` answer (``answers``, by pod name: a suspended Job's
    pods are deleted, their termination messages with them) or its termination message if still seen."""
    found: dict[int, dict[str, ShardDeletes]] = {}
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        index, name = completion_index(pod), str(meta.get("name") or "")
        if index is None or index not in allowed:
            continue
        reports = [answers.get(name)]
        for container in status.get("containerStatuses") or []:
            message = str(((container.get("state") or {}).get("terminated") or {}).get("message") or "")
            reports.append(parse_report(message[:8192]))
        for report in reports:
            if (
                report is not None
                and report.answers_for(index, name)
                and report.deletes
                and report.deletes.stopped
            ):
                found.setdefault(index, {})[pod_tag(str(meta.get("uid") or name))] = report.deletes
                break
    return found


async def _ask_stopping(
    ctx: Context, pods: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, WorkerReport], dict[str, str]]:
    """The `/status` answers of the delete pods stopping (a stopped one answers with what it deleted
    until its operator has recorded it), and the addresses that answered, by pod name."""
    targets = [
        (str((p.get("metadata") or {}).get("name") or ""), str((p.get("status") or {}).get("podIP") or ""))
        for p in pods
        # Stopping: deleted (by the suspension, an eviction) and still running.
        if (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") == "Running"
        and (p.get("status") or {}).get("podIP")
    ][:64]
    port = ctx.settings.status_port
    texts = await asyncio.gather(
        *(asyncio.to_thread(fetch_worker_status, ip, port, pod=name) for name, ip in targets)
    )
    answers: dict[str, WorkerReport] = {}
    addresses: dict[str, str] = {}
    for (name, ip), text in zip(targets, texts, strict=True):
        report = parse_report(text) if text else None
        if report is not None:
            answers[name], addresses[name] = report, ip
    return answers, addresses


async def _patch_suspend(ctx: Context, job: Mapping[str, Any], suspend: bool) -> None:
    meta = job["metadata"]
    await asyncio.to_thread(
        ctx.kube.patch_job, meta["namespace"], meta["name"], str(meta["uid"]), {"spec": {"suspend": suspend}}
    )


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
            owner,
            spec,
            sizing,
            len(shards),
            settings,
            parallelism,
            census_of=census_of,
            identity=inputs.who,
            suspend=held(Child.CENSUS, spec.suspend),
        )
        await create_owned(ctx, owner, "Job", manifest, "JobRejected")
        ctx.post("Normal", "Counting", f"counting what the sync would delete in {len(shards)} shard(s){note}")
        return _held(
            dry_run_status(len(shards), {}, DeleteLimit.parse(spec.deletes.max), ended=False), spec.suspend
        )
    pods = await _pods_of(ctx, owner, existing)
    censuses = {i: r.sync for i, r in _reports(pods).items() if r.sync is not None and r.state == "complete"}
    complete, failed = _ended(existing)
    change = suspend_change(
        ChildJob(
            Child.CENSUS,
            suspended=bool((existing.get("spec") or {}).get("suspend")),
            finished=complete or failed,
        ),
        spec.suspend,
    )
    if change is not None:
        await _patch_suspend(ctx, existing, change)
    counted = dry_run_status(
        len(shards), censuses, DeleteLimit.parse(spec.deletes.max), ended=complete or failed
    )
    return counted if complete or failed else _held(counted, spec.suspend)


def _held(status: dict[str, Any], suspend: bool) -> dict[str, Any]:
    """A dry run's count while spec.suspend holds its census Job: the message says so."""
    if not suspend:
        return status
    return {**status, "message": f"{status['message']}; held while spec.suspend is true"}


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
        status = pod.get("status") or {}
        index = completion_index(pod)
        if status.get("phase") != "Succeeded" or index is None:
            continue
        for container in status.get("containerStatuses") or []:
            message = str(((container.get("state") or {}).get("terminated") or {}).get("message") or "")
            report = parse_report(message[:8192])
            if report is not None and report.shard == index:
                found[index] = report
    return found
