"""Shards waiting for restores of archived objects (``spec.archived: restore``), as the operator sees and
schedules them. Pure: pods, reports, the ledger's data and times in; the waiting shards, the ledger entries
to write, when to check back and the condition out.

Where it sits: a worker pod copies its shard, requests the restores of its archived objects, checks them
briefly, and ends "waitingForRestore" (exit 0, so the Job's index completes) with a
`worker.handoff.RestoreHandoff` in its termination message. `reconcile` finds those shards here
(`waiting_shards`), counts them as they stood, and records each hand-off in the progress ledger
(`ledger_patch`: the oldest request time survives every pod). Once the worker Job has completed, the
CopyJob stays Running with no pod at all; `check_back` says when, restore.checkIntervalSeconds after the
Job completed, `reconcile` removes the Job so that the next pass starts a new one, in which only the
shards not finished in the ledger run: their pods list the shard again from its resume point, skip what
is copied, and copy the objects restored meanwhile. A restore not done restore.maxWaitSeconds after its
first request is given up by the pod that checks it then (RestoreTimedOut).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.operator.conditions import Condition
from ferry.operator.stopped import completion_index
from ferry.worker.handoff import RESTORE_PREFIX, RestoreHandoff, restore_key
from ferry.worker.statusdoc import WAITING_FOR_RESTORE, WorkerReport, parse_report

#: Longest termination message read (the kubelet keeps at most 4 KiB).
MESSAGE_LIMIT = 4096
#: The operator never checks back sooner than this after the Job completed, whatever a report says.
MIN_CHECK_SECONDS = 1.0


def waiting_shards(
    pods: Sequence[Mapping[str, Any]],
    finished: Iterable[int],
    shard_count: int,
    container: str = "worker",
) -> dict[int, tuple[str, WorkerReport]]:
    """Shards whose pod (of the Job: the caller checked ownership) succeeded ending "waitingForRestore",
    by index, with the pod's name and its final report; shards finished in the ledger are not waiting."""
    done = set(finished)
    found: dict[int, tuple[str, WorkerReport]] = {}
    for pod in pods:
        status = pod.get("status") or {}
        index = completion_index(pod)
        if status.get("phase") != "Succeeded" or index is None or index in done or index >= shard_count:
            continue
        for state in status.get("containerStatuses") or []:
            if state.get("name") != container:
                continue
            terminated = (state.get("state") or {}).get("terminated") or {}
            report = parse_report(str(terminated.get("message") or "")[:MESSAGE_LIMIT])
            if (
                report is not None
                and report.state == WAITING_FOR_RESTORE
                and report.handoff is not None
                and report.shard == index
            ):
                name = str((pod.get("metadata") or {}).get("name", ""))[:253]
                found[index] = (name, report)
    return found


def parse_time(value: Any) -> datetime | None:
    """A time as the API server's answers carry it (RFC 3339: `...Z`, or `...+00:00` once the client
    has turned it into a datetime and back), in UTC; None for anything else."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def _shard_of(key: str, shard_count: int) -> int | None:
    digits = key[len(RESTORE_PREFIX) :]
    if not key.startswith(RESTORE_PREFIX) or not (digits.isascii() and digits.isdigit()) or len(digits) > 7:
        return None
    index = int(digits)
    return index if index < shard_count else None


def ledger_handoffs(data: Mapping[str, Any], shard_count: int) -> dict[int, RestoreHandoff]:
    """The hand-offs the ledger holds for shards of this plan (malformed entries read as none)."""
    found: dict[int, RestoreHandoff] = {}
    for key, text in data.items():
        index = _shard_of(str(key), shard_count)
        handoff = RestoreHandoff.from_text(text) if index is not None else None
        if index is not None and handoff is not None:
            found[index] = handoff
    return found


def ledger_patch(
    waiting: Mapping[int, RestoreHandoff],
    finished: Iterable[int],
    data: Mapping[str, Any],
    shard_count: int,
    room: int | None = None,
) -> dict[str, str | None]:
    """The ledger entries to merge (None removes one): each waiting shard's hand-off, keeping the oldest
    request time recorded for it; a finished shard's entry removed. New entries take at most ``room``
    bytes (None: no limit); one left out means the shard's next pod counts maxWaitSeconds from its own
    request, as a pod did before hand-offs existed."""
    known = ledger_handoffs(data, shard_count)
    patch: dict[str, str | None] = {}
    for index in finished:
        if restore_key(index) in data:
            patch[restore_key(index)] = None
    left = room
    for index in sorted(waiting):
        if index >= shard_count or restore_key(index) in patch:
            continue
        key, text = restore_key(index), waiting[index].earlier(known.get(index)).text()
        if data.get(key) == text:
            continue
        grown = len(key) + len(text) if key not in data else len(text) - len(str(data[key]))
        if left is not None:
            if grown > left:
                continue
            left -= grown
        patch[key] = text
    return patch


@dataclass(frozen=True)
class CheckBack:
    """The operator's wait for restores while no worker pod runs."""

    shards: tuple[int, ...]
    #: Archived objects the shards left waiting.
    objects: int
    #: When their shards run again.
    next_check: datetime
    #: Whether that time has come: the worker Job is removed, and the next pass starts a new one.
    due: bool


def check_back(
    waiting: Mapping[int, RestoreHandoff],
    completed_at: datetime | None,
    now: datetime,
    interval_seconds: float,
    max_wait_seconds: float,
) -> CheckBack | None:
    """When a worker Job that completed at ``completed_at`` (None: not said; counted from ``now``, so the
    check is at once) with shards waiting for restores runs them again: ``interval_seconds`` later, or at
    the oldest request's restore.maxWaitSeconds deadline if that comes first (the pods then give up what
    is not restored), never sooner than `MIN_CHECK_SECONDS` after it completed. None: nothing waits."""
    if not waiting:
        return None
    since = completed_at or now
    oldest = min(h.requested_at for h in waiting.values())
    deadline = datetime.fromtimestamp(oldest, tz=UTC) + timedelta(seconds=max_wait_seconds)
    earliest = since + timedelta(seconds=MIN_CHECK_SECONDS)
    next_check = max(earliest, min(since + timedelta(seconds=interval_seconds), deadline))
    if completed_at is None:
        next_check = now
    return CheckBack(
        shards=tuple(sorted(waiting)),
        objects=sum(h.waiting for h in waiting.values()),
        next_check=next_check,
        due=now >= next_check,
    )


def waiting_condition(check: CheckBack, time_format: str) -> Condition:
    """The `RestoresPending` condition while no worker pod runs and restores are in progress."""
    shards = len(check.shards)
    when = (
        "running them again now"
        if check.due
        else f"the operator checks back at {check.next_check.strftime(time_format)}"
    )
    return Condition(
        "RestoresPending",
        "True",
        "WaitingForRestore",
        f"{check.objects:,} archived objects of {shards:,} shard(s) are being restored (spec.archived: "
        f"restore); everything else is copied and no worker pod runs meanwhile; {when} (every "
        "spec.restore.checkIntervalSeconds), copying each object once restored, within "
        "spec.restore.maxWaitSeconds of its first restore request",
    )
