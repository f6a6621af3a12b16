"""Which stopped workers to tell that their final counts are recorded. Pure: this pass's answers and the
ledger as written in, the workers to answer out.

Where it sits: a worker stopped by SIGTERM (a suspension, fewer pods, an eviction) answers `/status` with
its final document, named (`worker/finaldoc.py`), and waits. `reconcile` writes the ledger's floor and
resume point of every shard from this pass's answers; then, and only for a document whose resume point
the written ledger holds (or passed), it sends the name back (`PUT /recorded`). A document the ledger
could not take (full) is not acknowledged: its pod waits out its grace period, and the next pass may
still record it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.operator import ledger
from ferry.worker.statusdoc import WorkerReport


@dataclass(frozen=True)
class FinalAck:
    pod: str
    address: str
    #: The name of the pod's final document, as it gave it (`statusdoc.FINAL_PATTERN`).
    final: str


def recorded_finals(
    answered: Mapping[int, tuple[str, WorkerReport]],
    addresses: Mapping[str, str],
    finished: Collection[int],
    written: Mapping[str, Any],
    shard_count: int,
) -> list[FinalAck]:
    """The pods to tell: those among ``answered`` (shard → pod name and its answer) that answered this
    pass (``addresses``: pod name → IP; an answer remembered from an earlier pass is not proof the pod
    still waits) with a final document, whose shard is finished or whose resume point the ledger as
    ``written`` holds or passed."""
    entries = ledger.entries(written, shard_count)
    acks: list[FinalAck] = []
    for index, (pod, report) in sorted(answered.items()):
        address = addresses.get(pod)
        if report.final is None or address is None or not 0 <= index < shard_count:
            continue
        if index not in finished and report.resume is not None:
            held = entries.get(index)
            if held is None or held.resume is None or held.resume.after < report.resume.after:
                continue
        acks.append(FinalAck(pod, address, report.final))
    return acks
