"""The CopyJob status of archived objects (spec.archived): `status.archived` and the `RestoresPending`
condition. Pure: the counters the shards reported (summed by `aggregate.totals`) in, status values out;
`reconcile.py` writes them.

How a CopyJob waits for restores: each worker pod requests the restores of its shard's archived objects,
copies the rest of the shard, checks the set-aside objects for one restore.checkIntervalSeconds (two
minutes at most), and ends the shard "waitingForRestore" if some are still being restored. Once the Job
has completed, no pod runs: the operator checks back (`restorewait.py`) and runs those shards again, until
each object is copied or restore.maxWaitSeconds after its first request has passed. The condition says
what is being waited for, and how to copy what was not restored in time; while no pod runs,
`restorewait.waiting_condition` says when the operator checks back.
"""

from __future__ import annotations

from ferry.operator.conditions import Condition

#: The condition type: True while archived objects wait for their restore, or when some were not
#: restored in time; False once every restore a shard waited for was done.
RESTORES_PENDING = "RestoresPending"


def archived_status(archived: dict[str, int]) -> dict[str, dict[str, int]]:
    """`status.archived` (absent when no shard met an archived object)."""
    if not any(archived.values()):
        return {}
    return {
        "archived": {
            name: int(archived.get(name, 0))
            for name in ("skipped", "restored", "restoreTimedOut", "waitingForRestore")
        }
    }


def restores_condition(archived: dict[str, int], *, ended: bool) -> Condition | None:
    """The `RestoresPending` condition, or None when no restore was ever waited for."""
    waiting = int(archived.get("waitingForRestore", 0))
    timed_out = int(archived.get("restoreTimedOut", 0))
    restored = int(archived.get("restored", 0))
    if timed_out:
        return Condition(
            RESTORES_PENDING,
            "True",
            "RestoreTimedOut",
            f"{timed_out:,} archived objects were not restored within spec.restore.maxWaitSeconds (code "
            "RestoreTimedOut in status.failedObjects and the report); their restores stay requested: once "
            "they are restored, a new CopyJob of the same spec (or ferry run) copies them and skips the rest "
            "as present",
        )
    if waiting and not ended:
        return Condition(
            RESTORES_PENDING,
            "True",
            "WaitingForRestore",
            f"{waiting:,} archived objects wait for their restore (spec.archived: restore); each is copied "
            "once restored, within spec.restore.maxWaitSeconds",
        )
    if restored:
        return Condition(
            RESTORES_PENDING, "False", "RestoresDone", f"{restored:,} archived objects were restored"
        )
    return None
