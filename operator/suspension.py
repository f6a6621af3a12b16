"""Which of a CopyJob's child Jobs `spec.suspend` holds, and when a held one may run again. Pure.

Where it sits: each reconciliation converges every child Job that exists to what `suspend_change` says
(the worker Job in `reconcile._converge_job`, the planner Job in `planstep.py`, a sync's delete and
census Jobs in `syncstep.py`), and renders a child created while the CopyJob is suspended already
suspended. Kubernetes suspends a Job by deleting its running pods and resumes it by creating them
again; the decision is level-based, so an operator restarted at any point reaches the same state.

Held: every Job whose pods speak S3 for the CopyJob (list, copy, count or delete on the user's
accounts). Not held: the notify Job (`notifystep.py`). It announces a phase the CopyJob already
reached (Succeeded, Failed, or a new stall) with one request to the user's endpoint and touches no
bucket; holding it would only delay news of something that already happened, or lose it when a
suspended CopyJob is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["HELD", "Child", "ChildJob", "held", "suspend_change"]


class Child(StrEnum):
    """A CopyJob's child Jobs."""

    WORKERS = "workers"
    PLANNER = "planner"
    #: A sync's delete Job (`spec.mode: sync`).
    DELETES = "deletes"
    #: A sync's dry-run census Job.
    CENSUS = "census"
    #: The `spec.notify` Job.
    NOTIFY = "notify"


#: The children `spec.suspend` holds.
HELD = frozenset({Child.WORKERS, Child.PLANNER, Child.DELETES, Child.CENSUS})


def held(child: Child, suspend: bool) -> bool:
    """Whether ``child`` runs suspended (or is created suspended) under this `spec.suspend`."""
    return suspend and child in HELD


@dataclass(frozen=True)
class ChildJob:
    """What a child Job shows this pass."""

    child: Child
    #: Its `spec.suspend` now.
    suspended: bool
    #: It completed or failed: suspending it would change nothing.
    finished: bool = False
    #: Its pods that have not ended yet (running, or stopping after a suspension).
    unended_pods: int = 0
    #: A delete Job's stopped pods whose deletes the progress ledger does not record yet.
    unrecorded: int = 0


def suspend_change(job: ChildJob, suspend: bool) -> bool | None:
    """The value to set the Job's `spec.suspend` to, or None to leave it as it is.

    A delete Job is resumed only once every pod the suspension stopped has ended and what each deleted
    is recorded in the ledger: the shard's next pod reads that count from the ledger as it starts, and
    deletes at most what is left of the shard's approved count (`shardsync.resumed_allowance`).
    """
    if job.finished:
        return None
    want = held(job.child, suspend)
    if want == job.suspended:
        return None
    if not want and job.child is Child.DELETES and (job.unended_pods or job.unrecorded):
        return None
    return want
