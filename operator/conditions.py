"""Kubernetes-style conditions (metav1.Condition semantics). Pure.

`lastTransitionTime` changes only when `status` changes; reason and message may change at any time.
Every condition written carries the generation of the pass that wrote it, updated or not: each pass
evaluates the whole CopyJob at that generation (kubectl wait and Argo CD ignore a condition older than
metadata.generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def set_conditions(
    existing: list[dict[str, Any]], updates: list[Condition], now: str, generation: int
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``existing`` (a list of condition dicts), keeping order and transition times;
    every condition is stamped with ``generation``."""
    by_type = {c.get("type"): {**c, "observedGeneration": generation} for c in existing}
    for update in updates:
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message[:32768],
            "lastTransitionTime": now
            if changed or previous is None
            else previous.get("lastTransitionTime", now),
            "observedGeneration": generation,
        }
    # One entry per type (conditions are a map keyed by type), in first-seen order.
    order = list(dict.fromkeys([*(c.get("type") for c in existing), *(u.type for u in updates)]))
    return [by_type[t] for t in order if t in by_type]


def get(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def is_true(conditions: list[dict[str, Any]], kind: str) -> bool:
    found = get(conditions, kind)
    return bool(found and found.get("status") == "True")
