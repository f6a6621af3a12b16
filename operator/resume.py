"""Edits of a CopyJob that no longer runs, carried out: the thin adapter over `edits.py`.

Where it sits: `reconcile` calls `after_edit` before anything else in a pass. For a Succeeded CopyJob
whose spec changed it returns the status at the new generation; for a Failed one, or one stalled by a
systematic failure, it removes the old worker Job, clears from the ledger what is to run again, writes
the new spec into the plan (or deletes the plan, when the objects or their grouping changed) and returns
the status of a resumed CopyJob: the next passes start the workers (or the planner) as for a new one.

Each step is safe to repeat: a pass that fails half-way is retried from the start, and the plan's spec,
written last, is what the next attempt compares the edit with. Only objects this CopyJob controls are
deleted or patched, each with its UID as a precondition; a foreign one is left for the pass that follows,
which stalls the CopyJob with NameConflict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.model.loading import format_validation_error
from ferry.model.plan import SPEC_FILE
from ferry.operator import conditions as cond
from ferry.operator.conditions import Condition
from ferry.operator.edits import (
    Edit,
    Scope,
    edit_of,
    finished_without_failures,
    followed_status,
    ledger_removals,
    planned_spec,
    resumed_status,
    scope_of,
)
from ferry.operator.kube import Kube
from ferry.operator.ownership import Ownership, ownership
from ferry.operator.planfile import TIME_FORMAT, PlanUnreadable, read_plan
from ferry.operator.render import Owner, job_name, plan_name, progress_name, spec_json

#: How long a pass waits for a deleted worker Job to be gone before it creates nothing in its place (the
#: next pass tries again). A Job deleted in the background goes at once; finalizers may hold it.
JOB_GONE_SECONDS = 10.0
JOB_GONE_POLL_SECONDS = 0.25


class JobStillThere(RuntimeError):
    """The old worker Job has not gone yet; the pass fails and is retried."""


def _now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def _owned(obj: dict[str, Any] | None, owner: Owner) -> dict[str, Any] | None:
    return obj if ownership(obj, owner.uid) is Ownership.OWNED else None


def remove_job(kube: Kube, owner: Owner) -> None:
    """Delete the CopyJob's worker Job (and, in the background, its pods) and wait until it is gone, so
    the Job of the new spec is never mistaken for it. Bounded: `JobStillThere` after `JOB_GONE_SECONDS`."""
    name = job_name(owner.name)
    job = _owned(kube.job(owner.namespace, name), owner)
    if job is None:
        return
    uid = str(job["metadata"]["uid"])
    kube.delete_job(owner.namespace, name, uid)
    deadline = time.monotonic() + JOB_GONE_SECONDS
    for _ in range(int(JOB_GONE_SECONDS / JOB_GONE_POLL_SECONDS) + 1):
        current = kube.job(owner.namespace, name)
        if current is None or str(current["metadata"].get("uid")) != uid:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(JOB_GONE_POLL_SECONDS)
    raise JobStillThere(
        f"Job {owner.namespace}/{name} is still being deleted; the CopyJob resumes once it is gone"
    )


def remove_configmap(kube: Kube, owner: Owner, name: str) -> None:
    """Delete one of the CopyJob's own ConfigMaps (the plan, the ledger); foreign or missing: nothing."""
    found = _owned(kube.configmap(owner.namespace, name), owner)
    if found is not None:
        kube.delete_configmap(owner.namespace, name, str(found["metadata"]["uid"]))


def clear_ledger(kube: Kube, owner: Owner, scope: Scope, shards: int) -> int:
    """Remove from the ledger what is to run again; returns how many of the plan's `shards` it still
    counts as finished (none without a ledger of this CopyJob's)."""
    name = progress_name(owner.name)
    found = _owned(kube.configmap(owner.namespace, name), owner)
    if found is None:
        return 0
    data = {str(k): str(v) for k, v in (found.get("data") or {}).items()}
    removals = ledger_removals(data, scope)
    if removals:
        kube.patch_configmap_data(owner.namespace, name, str(found["metadata"]["uid"]), dict(removals))
    return finished_without_failures(data, removals, shards)


def _resume(kube: Kube, owner: Owner, spec: CopyJobSpec) -> tuple[str, bool]:
    """Carry out a resume (blocking calls; run in a thread). Returns the Event's message and whether
    the CopyJob is planned again."""
    plan = _owned(kube.configmap(owner.namespace, plan_name(owner.name)), owner)
    data = dict((plan or {}).get("data") or {})
    try:
        shards = len(read_plan(data).shards) if plan is not None else None
    except PlanUnreadable:
        shards = None
    scope = scope_of(planned_spec(data.get(SPEC_FILE)), spec) if shards is not None else Scope.REPLAN
    remove_job(kube, owner)
    if scope is Scope.REPLAN:
        remove_configmap(kube, owner, progress_name(owner.name))
        remove_configmap(kube, owner, plan_name(owner.name))
        return "spec.source, spec.filter or spec.shardSize changed: the source is planned again", True
    assert plan is not None and shards is not None
    kept = clear_ledger(kube, owner, scope, shards)
    # Written last: until it is, a retried pass compares the edit with the spec the ledger was made for.
    uid = str(plan["metadata"]["uid"])
    kube.patch_configmap_data(owner.namespace, plan_name(owner.name), uid, {SPEC_FILE: spec_json(spec)})
    again = shards - kept
    why = (
        "the destination moved: every shard runs again" if scope is Scope.ALL else "finished shards are kept"
    )
    return f"re-running {again} of {shards} shard(s) under the edited spec ({why})", False


async def after_edit(
    kube: Kube,
    post: Callable[[str, str, str], None],
    owner: Owner,
    spec_raw: dict[str, Any],
    status: dict[str, Any],
    generation: int,
) -> dict[str, Any] | None:
    """The status to write for an edit of a finished or stopped CopyJob; None when the pass should go on
    as usual (no edit, or a CopyJob that still runs)."""
    edit = edit_of(status, generation)
    if edit is Edit.NONE:
        return None
    if edit is Edit.FOLLOW:
        return followed_status(status, generation, _now())
    try:
        spec = CopyJobSpec.model_validate(spec_raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        # Refused at apply time by the CRD; one stored under an older CRD waits for the next edit.
        message = f"{format_validation_error(exc, CopyJobSpec)}; nothing was run again"
        post("Warning", "InvalidSpec", message)
        stalled = Condition("Stalled", "True", "InvalidSpec", message)
        conditions = cond.set_conditions(list(status.get("conditions") or []), [stalled], _now(), generation)
        return {"observedGeneration": generation, "conditions": conditions}
    message, replanned = await asyncio.to_thread(_resume, kube, owner, spec)
    post("Normal", "Resumed", f"spec edited (generation {generation}): {message}")
    return resumed_status(status, generation, _now(), message, replanned)
