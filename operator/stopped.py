"""Shards stopped on a systematic failure, as the operator sees them. Pure: pods and reports in, the
stopped shards and the Stalled message out.

Where it sits: a worker whose transfers keep failing the same job-wide way (`worker/systematic.py`)
stops its shard, says so in `/status` while its last transfers end, then exits 5, which the Job's
podFailurePolicy turns into a failed Job: no other pod starts. `reconcile` finds the stopped shards here,
counts them as they stood, and stalls the CopyJob with `SystematicFailure` and Ferry's own message, until
an edit of the spec resumes it (`resume.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.worker.statusdoc import WorkerReport, parse_report
from ferry.worker.systematic import SystematicFailure

SYSTEMATIC_FAILURE = "SystematicFailure"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: Longest termination message read (the kubelet keeps at most 4 KiB).
MESSAGE_LIMIT = 4096


@dataclass(frozen=True)
class StoppedShard:
    shard: int
    pod: str
    #: Its counts as they stood when it stopped; ``report.systematic`` says why.
    report: WorkerReport

    @property
    def failure(self) -> SystematicFailure:
        assert self.report.systematic is not None
        return self.report.systematic


def completion_index(pod: Mapping[str, Any]) -> int | None:
    """The shard of a pod of an Indexed Job, from its completion-index annotation; None when absent or not
    a plain number of at most 7 ASCII digits (a tenant may annotate a pod it made)."""
    meta = pod.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(INDEX_ANNOTATION)
    return (
        int(text) if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 8 else None
    )


def stopped_shards(
    pods: Sequence[Mapping[str, Any]],
    running: Mapping[int, tuple[str, WorkerReport]],
    container: str = "worker",
) -> tuple[StoppedShard, ...]:
    """Shards whose worker stopped on a systematic failure: failed pods (of the Job; the caller checked
    ownership) whose termination message says so, and running pods whose `/status` already does."""
    found: dict[int, StoppedShard] = {}
    for pod in pods:
        status = pod.get("status") or {}
        index = completion_index(pod)
        if status.get("phase") != "Failed" or index is None:
            continue
        for state in status.get("containerStatuses") or []:
            if state.get("name") != container:
                continue
            terminated = (state.get("state") or {}).get("terminated") or {}
            report = parse_report(str(terminated.get("message") or "")[:MESSAGE_LIMIT])
            if report is not None and report.systematic is not None:
                name = str((pod.get("metadata") or {}).get("name", ""))[:253]
                found[index] = StoppedShard(index, name, report)
    for index, (name, report) in running.items():
        if report.systematic is not None and index not in found:
            found[index] = StoppedShard(index, name, report)
    return tuple(found[i] for i in sorted(found))


def as_running(stopped: Sequence[StoppedShard]) -> dict[int, tuple[str, WorkerReport]]:
    """The stopped shards in the form `aggregate.totals` reads running pods: counted as they stood."""
    return {s.shard: (s.pod, s.report) for s in stopped}


def stall_message(stopped: Sequence[StoppedShard]) -> str:
    """The Stalled condition's message: the side, the S3 code and what to fix. The same for every pass
    while the cause is the same (so the Warning Event goes out once), whichever shards stopped."""
    first = min(stopped, key=lambda s: (s.failure.kind.value, s.failure.side.value, s.failure.code)).failure
    return (
        f"transfers kept failing at the {first.side.value} with {first.code} ({first.words()}), so the "
        f"workers were stopped early instead of failing every object: {first.fix()}; then edit the "
        "CopyJob's spec (the fix itself, or spec.suspend set to true and back to false) to run the "
        "unfinished shards again"
    )
