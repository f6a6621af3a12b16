"""How a run's archived objects (spec.archived) are told: the `archived` part of `ferry run`'s JSON summary
and of a worker's status document, the line of the text summary, and whether the run ended waiting for
restores. Pure: counts in, values out; `run.py` and `statusdoc.py` call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry.worker.objects import FailedObject
from ferry.worker.progress import Counts

#: Archived objects listed by key in a summary at most (all of them are in the report).
SAMPLE = 20


def restore_pending(counts: Counts) -> bool:
    """Whether every object that failed is an archived object whose restore was not done in time: the
    run did all it could, and a later run copies them once restored."""
    return counts.failed > 0 and counts.failed == counts.restore_timed_out


def archived_counts(counts: Counts) -> dict[str, int]:
    """The archive counters as status and summaries name them."""
    return {
        "skipped": counts.archived_skipped,
        "restored": counts.restored,
        "restoreTimedOut": counts.restore_timed_out,
        "waitingForRestore": counts.restore_waiting,
    }


def archived_json(counts: Counts, sample: Sequence[FailedObject]) -> dict[str, Any]:
    """The `archived` part of the JSON summary: its counts and the first skipped objects by key."""
    return {**archived_counts(counts), "skippedSample": [entry.as_json() for entry in sample[:SAMPLE]]}


def archived_line(counts: Counts) -> str | None:
    """The text summary's line on archived objects; None when the run met none."""
    parts = []
    if counts.archived_skipped:
        parts.append(f"{counts.archived_skipped:,} skipped (spec.archived: skip; each is in the report)")
    if counts.restored:
        parts.append(f"{counts.restored:,} restored and copied")
    if counts.restore_timed_out:
        parts.append(f"{counts.restore_timed_out:,} not restored in time (RestoreTimedOut)")
    if counts.restore_waiting:
        parts.append(f"{counts.restore_waiting:,} still waiting for their restore")
    return f"  archived: {', '.join(parts)}" if parts else None


def restore_pending_line(counts: Counts, report_path: str) -> str:
    """How a run ends whose only failures are restores not done in time."""
    return (
        f"RESTORE PENDING: {counts.restore_timed_out:,} archived objects were not restored within "
        f"spec.restore.maxWaitSeconds (all of them in {report_path}); everything else is done; run again "
        "once they are restored (their restores stay requested)"
    )


#: The archive counters a worker reports, by the names status uses.
ARCHIVED_KEYS = ("skipped", "restored", "restoreTimedOut", "waitingForRestore")
#: A count above this is not one a worker makes; it counts as none.
MAX_COUNT = 10**12


def archived_report(counts: Counts) -> dict[str, Any]:
    """The `archived` part of a worker's status document and termination message: absent (empty) when
    the shard met no archived object, so the message stays as short as before."""
    figures = archived_counts(counts)
    return {"archived": figures} if any(figures.values()) else {}


def archived_from_json(value: Any) -> dict[str, int]:
    """The archive counters of a worker's report as checked values: the known names only, each a
    non-negative integer up to MAX_COUNT (anything else counts as 0); empty when none is given."""
    if not isinstance(value, dict):
        return {}
    checked: dict[str, int] = {}
    for name in ARCHIVED_KEYS:
        count = value.get(name)
        ok = isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_COUNT
        checked[name] = count if ok and isinstance(count, int) else 0
    return checked if any(checked.values()) else {}
