"""What an edit of a CopyJob that no longer runs means. Pure: statuses, specs and ledger data in,
decisions and status documents out; `resume.py` carries them out against the API.

Where it sits: every pass of `reconcile` first asks `resume.after_edit`, which asks `edit_of` here. An edit
is a spec change the status has not observed (metadata.generation > status.observedGeneration):

- Succeeded: the status follows the new generation (status.observedGeneration and every condition's),
  and nothing runs again: a finished copy is a record of what was copied. To copy again, create a CopyJob.
- Failed, or Stalled by a systematic failure (`stopped.py`): the shards that did not finish, or finished
  with failed objects, run again under the new spec in a new worker Job; finished shards without failures
  are not run again. When the destination moved (another service, bucket or prefix) every shard runs
  again. When what the plan was cut from changed (the source, the filter, the shard size), the plan is
  recomputed: the plan ConfigMap, the ledger and the worker Job are deleted and the CopyJob is planned
  again.
- Anything else (running, planning, stalled for another reason): the next pass takes the spec as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.model.checkpoint import RESUME_PREFIX
from ferry.model.copyjob import storage_service
from ferry.operator import conditions as cond
from ferry.operator import ledger
from ferry.operator.conditions import Condition
from ferry.operator.stopped import SYSTEMATIC_FAILURE


class Edit(StrEnum):
    NONE = "none"  # not edited, or still running: the normal pass takes the spec as it is
    FOLLOW = "follow"  # Succeeded: observe the new generation, run nothing
    RESUME = "resume"  # Failed, or stopped by a systematic failure: run again under the new spec


class Scope(StrEnum):
    UNFINISHED = "unfinished"  # the shards that did not finish, or finished with failed objects
    ALL = "all"  # every shard: the destination moved
    REPLAN = "replan"  # plan again: the objects or their grouping changed


#: Planning's longest plan spec.json read back (the plan ConfigMap holds at most 1 MiB).
SPEC_TEXT_LIMIT = 1024 * 1024


def stopped_by_systematic_failure(status: Mapping[str, Any]) -> bool:
    stalled = cond.get(list(status.get("conditions") or []), "Stalled") or {}
    return stalled.get("status") == "True" and stalled.get("reason") == SYSTEMATIC_FAILURE


def edit_of(status: Mapping[str, Any], generation: int) -> Edit:
    observed = status.get("observedGeneration")
    if isinstance(observed, bool) or not isinstance(observed, int) or generation <= observed:
        return Edit.NONE
    if status.get("phase") == "Succeeded":
        return Edit.FOLLOW
    if status.get("phase") == "Failed" or stopped_by_systematic_failure(status):
        return Edit.RESUME
    return Edit.NONE


def planned_spec(text: Any) -> CopyJobSpec | None:
    """The spec a plan was made with (its ConfigMap's spec.json); None when it is not one."""
    if not isinstance(text, str) or len(text) > SPEC_TEXT_LIMIT:
        return None
    try:
        return CopyJobSpec.model_validate(json.loads(text), by_alias=True, by_name=False)
    except (ValueError, ValidationError):
        return None


def _plan_inputs(spec: CopyJobSpec) -> dict[str, Any]:
    """What a plan is cut from: which objects there are (where, which of them) and how they are grouped.
    The source's credentials are not among them: other keys to the same bucket list the same objects."""
    return {
        "source": spec.source.model_dump(mode="json", exclude={"credentials_secret"}),
        "filter": spec.filter.model_dump(mode="json"),
        "shardSize": spec.shard_size.model_dump(mode="json"),
    }


def _destination(spec: CopyJobSpec) -> tuple[str, str, str]:
    """Where objects land (the service however its endpoint is spelled, the bucket, the prefix)."""
    target = spec.destination
    return storage_service(target.endpoint), target.bucket, target.prefix


def scope_of(planned: CopyJobSpec | None, spec: CopyJobSpec) -> Scope:
    """What runs again after an edit, given the spec the current plan and ledger were made with."""
    if planned is None or _plan_inputs(planned) != _plan_inputs(spec):
        return Scope.REPLAN
    if _destination(planned) != _destination(spec):
        return Scope.ALL
    return Scope.UNFINISHED


def ledger_removals(data: Mapping[str, str], scope: Scope) -> dict[str, None]:
    """The ledger keys to delete (a merge patch's nulls) so that the shards of `scope` run again: their
    final counts, every resume point (a resume point counts failed objects as settled, and was taken under
    the old spec), and the failure sample (its objects are tried again). Other keys are other features'
    and stay."""
    if scope is Scope.UNFINISHED:
        shards = {str(i) for i, report in ledger.read(dict(data)).items() if report.objects.get("failed", 0)}
    else:
        shards = {k for k in data if k.isdigit()}
    keys = {k for k in data if k in shards or k.startswith(RESUME_PREFIX) or k == ledger.FAILED_KEY}
    return dict.fromkeys(sorted(keys))


def finished_without_failures(data: Mapping[str, str], removals: Mapping[str, None], shards: int) -> int:
    """Shards the ledger still counts as finished once `removals` are applied: they do not run again."""
    kept = {k: v for k, v in data.items() if k not in removals}
    return sum(1 for index in ledger.read(kept) if 0 <= index < shards)


def followed_status(status: Mapping[str, Any], generation: int, now: str) -> dict[str, Any]:
    """A Succeeded CopyJob's status for an edit: the same, observed at the new generation."""
    return {
        "observedGeneration": generation,
        "conditions": cond.set_conditions(list(status.get("conditions") or []), [], now, generation),
    }


def resumed_status(
    status: Mapping[str, Any], generation: int, now: str, message: str, replanned: bool
) -> dict[str, Any]:
    """The status of a CopyJob resumed by an edit: pending again, no longer failed or stalled; the next
    passes start its workers (and, when `replanned`, its planner)."""
    existing = list(status.get("conditions") or [])
    updates = [
        Condition("Stalled", "False", "Resumed", ""),
        Condition("Failed", "False", "Resumed", message),
        Condition("Succeeded", "Unknown", "Resumed", message),
        Condition("Progressing", "True", "Resumed", message),
    ]
    if replanned:
        updates.append(Condition("Planned", "Unknown", "Replanning", message))
    if cond.get(existing, "WorkersRemoved") is not None:
        # The new workers are removed again ttlSecondsAfterFinished after the next end.
        updates.append(Condition("WorkersRemoved", "False", "Resumed", ""))
    return {
        "observedGeneration": generation,
        "phase": "Pending",
        "conditions": cond.set_conditions(existing, updates, now, generation),
        # Merge-patch nulls: the next end writes its own completion time and failure.
        "completionTime": None,
        "workers": {"lastFailure": None},
    }
