"""Restores handed from a worker pod to the operator (``spec.archived: restore`` on a cluster). Pure: the
values a pod reports and the progress ledger keeps, and their checks.

Where it sits: a worker pod copies its shard, requests the restores of the archived objects, checks them
for a short while (`handoff_window`) and ends the shard "waiting for restore" with a `RestoreHandoff` in
its termination message (`statusdoc.py`): how many objects still wait and when the oldest restore was
requested. The operator keeps it in the progress ledger under `restore_key` (`operator/restorewait.py`
decides when to check back); the shard's next pod reads it from the mounted ledger, so each object's
restore.maxWaitSeconds counts from the first request, whichever pod made it.

The ledger is a ConfigMap the namespace's users can edit, and a termination message is written by a pod
running the tenant's credentials: both are read as untrusted (bounded integers, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The ledger key of a shard's restores in progress: `restore-<shard>`.
RESTORE_PREFIX = "restore-"
#: The longest a worker pod checks restores in progress before it hands them off: the pod holds its
#: memory request meanwhile, so this stays short whatever restore.checkIntervalSeconds says.
MAX_HANDOFF_SECONDS = 120.0
#: Larger counts and times are not ones Ferry writes (a time after the year 2286, 10^12 objects).
MAX_EPOCH_SECONDS = 10**10
MAX_WAITING = 10**12
#: A ledger entry longer than this is not one Ferry wrote.
MAX_ENTRY_CHARS = 40


def restore_key(index: int) -> str:
    return f"{RESTORE_PREFIX}{index}"


def handoff_window(check_interval_seconds: float) -> float:
    """How long a worker pod checks its set-aside objects before it hands them off: one check interval
    (so a restore that completes that fast is copied by the same pod), at most `MAX_HANDOFF_SECONDS`."""
    return max(0.0, min(float(check_interval_seconds), MAX_HANDOFF_SECONDS))


@dataclass(frozen=True, slots=True)
class RestoreHandoff:
    """A shard's archived objects still being restored: how many, and when the oldest of their restores
    was requested (Unix seconds)."""

    waiting: int
    requested_at: int

    def as_json(self) -> dict[str, int]:
        return {"objects": self.waiting, "requestedAt": self.requested_at}

    def text(self) -> str:
        """The ledger entry: `<requestedAt>,<objects>`."""
        return f"{self.requested_at},{self.waiting}"

    def earlier(self, other: RestoreHandoff | None) -> RestoreHandoff:
        """This hand-off, keeping the older request time of ``other`` (an earlier pod's of the shard)."""
        if other is None or other.requested_at >= self.requested_at:
            return self
        return RestoreHandoff(self.waiting, other.requested_at)

    @staticmethod
    def from_json(value: Any) -> RestoreHandoff | None:
        """A worker's report of it, checked; None for anything else."""
        if not isinstance(value, dict):
            return None
        return _checked(value.get("objects"), value.get("requestedAt"))

    @staticmethod
    def from_text(text: Any) -> RestoreHandoff | None:
        """A ledger entry, checked; None for anything else."""
        if not isinstance(text, str) or len(text) > MAX_ENTRY_CHARS:
            return None
        requested, _, waiting = text.partition(",")
        if not (_digits(requested) and _digits(waiting)):
            return None
        return _checked(int(waiting), int(requested))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 13


def _checked(waiting: Any, requested_at: Any) -> RestoreHandoff | None:
    for value, top in ((waiting, MAX_WAITING), (requested_at, MAX_EPOCH_SECONDS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            return None
    if waiting == 0:
        return None
    return RestoreHandoff(waiting, requested_at)


def requested_before(handoff: RestoreHandoff | None, wall_now: float) -> float | None:
    """Seconds since an earlier pod's oldest restore request (0 for a time in the future: the ledger is
    editable, and a later time must never stretch the wait); None without one."""
    if handoff is None:
        return None
    return max(0.0, wall_now - handoff.requested_at)
