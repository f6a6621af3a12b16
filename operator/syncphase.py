"""The operator's side of a sync (`spec.mode: sync`): the decision over the whole job, and what the
CopyJob shows while and after its deletes run. Pure.

Where it sits: worker pods of the copy Job count, after copying their shard, the destination objects
in their range that the source no longer holds (worker/shardsync.py `ShardCensus`, kept in the progress
ledger). Once the copy Job completed, `decide_sync` adds every shard's count up and asks the same rule
`ferry run` uses (worker/syncdeletes.py `decide_deletes`): nothing is deleted unless every shard copied
without failures and counted completely, the source is not empty in scope and the total is within
`spec.deletes.max` over the whole job. Allowed, the operator starts the delete Job (operator/syncstep.py)
with each shard's own count as its cap; `delete_progress` then says where its pods are, and
`sync_conditions` what the CopyJob's phase and conditions are: never Succeeded while deletes are pending.

Under `spec.suspend` the delete Job is suspended too (`suspension.py`): its pods stop between two
requests and report what they deleted; `record_stopped` adds those counts, pod by pod, to the progress
ledger's `DeletedBefore` entries, which both the status (`delete_progress`) and the shard's next pod
(`shardsync.resumed_allowance`) read, so a suspension neither loses a count nor lets a shard delete
past its approved count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.model.plan import index_ranges
from ferry.operator.conditions import Condition
from ferry.worker.shardsync import (
    MAX_COUNT,
    MAX_STOPPED_PODS,
    DeletedBefore,
    ShardCensus,
    ShardDeletes,
    shown_key,
)
from ferry.worker.syncdeletes import Census, CopyEnd, DeleteDecision, DeleteLimit, Refusal, decide_deletes

__all__ = [
    "DeleteProgress",
    "SyncVerdict",
    "decide_sync",
    "delete_progress",
    "dry_run_status",
    "record_stopped",
    "sync_conditions",
    "sync_status",
]


@dataclass(frozen=True)
class SyncVerdict:
    """The decision over the whole job, with the counts it was made from and each shard's cap."""

    decision: DeleteDecision
    census: Census
    #: Each shard's approved count (its own candidates) when the decision is to delete; else empty.
    allowed: dict[int, int]

    @property
    def refused(self) -> bool:
        return self.decision.refusal is not None


def decide_sync(
    shard_count: int, censuses: Mapping[int, ShardCensus], failed: int, limit: DeleteLimit
) -> SyncVerdict:
    """The sync's decision once the copy Job completed: ``censuses`` are the shards' counts (a shard
    without one counted nothing, so what the source lacks is not known), ``failed`` the objects that
    failed to copy over the whole job."""
    counted = [censuses[i] for i in range(shard_count) if i in censuses]
    missing = [i for i in range(shard_count) if i not in censuses]
    census = Census(
        source_objects=sum(c.source_in_scope for c in counted),
        destination_objects=sum(c.destination_in_scope for c in counted),
        candidates=sum(c.candidates for c in counted),
        complete=not missing and all(c.listing_complete for c in counted),
    )
    decision = decide_deletes(CopyEnd(complete=True, failed=failed), census, limit)
    if decision.refusal is Refusal.LISTING_INCOMPLETE and missing:
        decision = DeleteDecision(
            decision.refusal,
            f"nothing deleted: shards {index_ranges(frozenset(missing))} gave no count of the destination "
            "(a shard counted as finished in an earlier run, or its report was lost); run the job again",
            decision.candidates,
            decision.allowed,
        )
    allowed = (
        {i: censuses[i].candidates for i in range(shard_count) if censuses[i].candidates}
        if decision.delete
        else {}
    )
    return SyncVerdict(decision, census, allowed)


@dataclass(frozen=True)
class DeleteProgress:
    """Where the delete Job is: what its finished shards deleted, and whether it has ended."""

    deleted: int
    kept: int
    failed: int
    #: Shards with an approved count whose pod has not reported yet.
    waiting: tuple[int, ...]
    #: Shards whose delete pass stopped early or failed some deletes, with the first reason met.
    troubled: tuple[int, ...]
    first_error: str | None
    #: The delete Job completed or failed; ``waiting`` shards then never reported.
    ended: bool
    job_failed: bool
    #: Delete pods still running or stopping (what a suspension waits for).
    active: int = 0

    @property
    def done(self) -> bool:
        return self.ended and not self.waiting and not self.troubled and not self.job_failed


def delete_progress(
    allowed: Mapping[int, int],
    reports: Mapping[int, ShardDeletes],
    *,
    complete: bool,
    failed: bool,
    before: Mapping[int, ShardDeletes] | None = None,
    active: int = 0,
) -> DeleteProgress:
    """The delete Job's shards as their last pods reported them (``reports``, by shard; others ignored),
    plus what earlier pods of a shard deleted before a suspension stopped them (``before``: the ledger's
    `DeletedBefore`). A shard is waiting until its last pod reported."""
    mine = {i: r for i, r in reports.items() if i in allowed}
    earlier = {i: r for i, r in (before or {}).items() if i in allowed}
    troubled = tuple(sorted(i for i, r in mine.items() if r.error or r.failed))
    errors = [mine[i].error or f"{mine[i].failed:,} deletes failed" for i in troubled]
    every = [*mine.values(), *earlier.values()]
    return DeleteProgress(
        deleted=sum(r.deleted for r in every),
        kept=sum(r.kept for r in every),
        failed=sum(r.failed for r in every),
        waiting=tuple(sorted(i for i in allowed if i not in mine)),
        troubled=troubled,
        first_error=errors[0] if errors else None,
        ended=complete or failed,
        job_failed=failed,
        active=active,
    )


def record_stopped(
    run: str,
    recorded: Mapping[int, DeletedBefore | None],
    stopped: Mapping[int, Mapping[str, ShardDeletes]],
    allowed: Mapping[int, int] | None = None,
) -> dict[int, DeletedBefore]:
    """The ledger entries to write: for each shard, its entry (``recorded``; one of another ``run``
    counts as none) with what its stopped pods deleted added, each pod (``stopped``: by shard, each
    stopped pod's report by its `pod_tag`) once: a pod read in several passes, or again after an operator
    restart, is not added twice. An entry names at most MAX_STOPPED_PODS pods, the newest. With
    ``allowed`` (each shard's approved count), no shard is recorded as having deleted more than its count:
    a pod's answer is untrusted, and no pass of the shard could have."""
    changed: dict[int, DeletedBefore] = {}
    for shard, pods in stopped.items():
        entry = recorded.get(shard)
        current = entry if entry is not None and entry.run == run else DeletedBefore(run, 0, 0, 0)
        grown = current
        for tag, report in sorted(pods.items()):
            if tag in grown.pods:
                continue
            most = MAX_COUNT if allowed is None else allowed.get(shard, 0)
            grown = DeletedBefore(
                run,
                min(most, grown.deleted + report.deleted),
                grown.kept + report.kept,
                grown.failed + report.failed,
                (*grown.pods, tag)[-MAX_STOPPED_PODS:],
            )
        if grown != current:
            changed[shard] = grown
    return changed


def counted_pods(
    run: str, entries: Mapping[int, DeletedBefore], stopped: Mapping[str, tuple[int, str]]
) -> list[str]:
    """The stopped delete pods (``stopped``: pod name → shard and `pod_tag`) whose count the ledger's
    ``entries`` for copy Job ``run`` hold: they may exit (`PUT /recorded`)."""
    return sorted(
        name
        for name, (shard, tag) in stopped.items()
        if (entry := entries.get(shard)) is not None and entry.run == run and tag in entry.pods
    )


def sync_status(verdict: SyncVerdict, progress: DeleteProgress | None = None) -> dict[str, Any]:
    """`status.sync`: the decision and its counts, and what was deleted (pod texts are bounded and
    cleaned by `ShardDeletes`; the status is JSON, so nothing is echoed unescaped)."""
    decision = verdict.decision
    return {
        "decision": "refused" if decision.refusal else ("delete" if decision.delete else "none"),
        "reason": decision.refusal.value if decision.refusal else None,
        "message": decision.message,
        "sourceObjects": verdict.census.source_objects,
        "destinationObjects": verdict.census.destination_objects,
        "candidates": decision.candidates,
        "max": decision.allowed,
        "deleted": progress.deleted if progress else 0,
        "kept": progress.kept if progress else 0,
        "deleteFailed": progress.failed if progress else 0,
    }


#: Keys a dry run's status names, over all shards (the count is always exact).
SHOWN_KEYS = 20


def dry_run_status(
    shard_count: int, censuses: Mapping[int, ShardCensus], limit: DeleteLimit, *, ended: bool
) -> dict[str, Any]:
    """`status.sync` of a dry run: while the census Job runs, how far it is; once it ended, what the sync
    would delete (the count over the whole job, and the first keys, escaped) and whether it would refuse."""
    counted = {i: c for i, c in censuses.items() if 0 <= i < shard_count}
    if not ended and len(counted) < shard_count:
        return {
            "dryRun": True,
            "message": f"dry run: counting what the sync would delete; {len(counted)} of {shard_count} shards counted",
        }
    verdict = decide_sync(shard_count, counted, 0, limit)
    decision = verdict.decision
    keys = [shown_key(k) for i in sorted(counted) for k in counted[i].sample][:SHOWN_KEYS]
    if decision.refusal is not None:
        verdict_text = "the sync would refuse: " + decision.message.removeprefix("nothing deleted: ")
    else:
        verdict_text = f"deletes.max allows {decision.allowed:,}"
    return {
        **sync_status(verdict),
        "dryRun": True,
        "message": f"dry run: {decision.candidates:,} destination objects would be deleted ({verdict_text})",
        "wouldDelete": keys,
        "wouldDeleteShown": len(keys),
    }


def sync_conditions(
    verdict: SyncVerdict, progress: DeleteProgress | None, copied: str, *, suspended: bool = False
) -> tuple[str, list[Condition]] | None:
    """The phase and conditions of a sync whose copy Job completed without failures; None when refused
    (the caller stalls the CopyJob with the refusal's reason). ``copied`` is the copy's one-line summary.
    ``progress`` is None until the delete Job exists (with deletes approved). ``suspended``: spec.suspend
    is true, which holds deletes not yet done."""
    decision = verdict.decision
    if decision.refusal is not None:
        return None
    if not decision.delete:
        return _succeeded(f"{copied}; {decision.message}")
    if suspended and (progress is None or not progress.ended):
        done = (
            f"{progress.deleted:,} of {decision.candidates:,}"
            if progress
            else f"0 of {decision.candidates:,}"
        )
        stopping = f"{progress.active} delete pod(s) stopping; " if progress and progress.active else ""
        message = (
            f"spec.suspend is true; {stopping}the deletes are held: {done} destination objects deleted so "
            f"far (at most {decision.allowed:,} allowed); {copied}"
        )
        return "Suspended", [
            Condition("Progressing", "False", "Suspended", "spec.suspend is true"),
            Condition("Suspended", "True", "DeletesHeld" if not stopping else "SuspendRequested", message),
            Condition("Succeeded", "Unknown", "Suspended", message),
        ]
    if progress is None or not progress.ended:
        done = f"{progress.deleted:,} deleted so far, " if progress else ""
        message = f"{copied}; deleting {decision.candidates:,} destination objects the source no longer holds ({done}at most {decision.allowed:,} allowed)"
        return "Running", [
            Condition("Progressing", "True", "Deleting", message),
            Condition("Suspended", "False", "NotSuspended", ""),
            Condition("Succeeded", "Unknown", "Deleting", message),
        ]
    summary = f"{copied}; deleted {progress.deleted:,} of {decision.candidates:,} destination objects"
    if progress.kept:
        summary += f" ({progress.kept:,} kept: back at the source)"
    if progress.done:
        return _succeeded(summary)
    if progress.job_failed:
        why = "the delete Job failed"
    elif progress.troubled:
        why = (
            f"shards {index_ranges(frozenset(progress.troubled))} did not delete all: {progress.first_error}"
        )
    else:
        why = f"shards {index_ranges(frozenset(progress.waiting))} ended without a report"
    message = f"{summary}; {why}; run the job again to finish"
    return "Failed", [
        Condition("Progressing", "False", "Finished", message),
        Condition("Succeeded", "False", "DeletesFailed", message),
        Condition("Failed", "True", "DeletesFailed", message),
        Condition("Suspended", "False", "NotSuspended", ""),
    ]


def _succeeded(message: str) -> tuple[str, list[Condition]]:
    return "Succeeded", [
        Condition("Progressing", "False", "Finished", message),
        Condition("Succeeded", "True", "Synced", message),
        Condition("Failed", "False", "Synced", ""),
        Condition("Suspended", "False", "NotSuspended", ""),
    ]
