"""`status.scaling`: the fleet law's state as the CopyJob's status shows it, read back after an operator
restart, and the observation one reconcile pass hands the law. Pure: values in, values out.

Where it sits: `reconcile.py` builds an `Observation` from the pods and reports it collected, steps
`fleet.py`'s law, patches the Job and writes `scaling_status` into the status. Everything read here may
have been written by someone else (a pod's report, a status edited through the status subresource):
numbers are bounded and checked, and anything malformed starts the law afresh from the Job's pods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ferry.operator.fleet import (
    MAX_POD_RATE,
    MAX_TARGET_RATE,
    FleetConfig,
    FleetState,
    Level,
    Observation,
    PodRate,
    Reason,
    pod_rate,
)
from ferry.operator.planfile import TIME_FORMAT
from ferry.worker.statusdoc import WorkerReport

#: The most pods a CopyJob runs (the CRD's bound on spec.parallelism).
MAX_PODS = 1000
#: Longest message kept from a stored status (the law writes a sentence of at most ~300 characters).
MAX_MESSAGE = 512


def observation(
    now: datetime,
    target: float,
    upper: int,
    running: Mapping[int, tuple[str, WorkerReport]],
    pods: list[dict[str, Any]],
) -> Observation:
    """What the law sees this pass: each running, reporting worker pod's objects/s (bounded) and its age
    from the kubelet's `status.startTime`. Pods being deleted (a scale-down on its way) do not count."""
    started: dict[str, datetime | None] = {}
    leaving: set[str] = set()
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        name = str(meta.get("name") or "")
        if meta.get("deletionTimestamp"):
            leaving.add(name)
        started[name] = _time(status.get("startTime"))
    seen = []
    for name, report in running.values():
        if name in leaving:
            continue
        start = started.get(name)
        age = max(0.0, (now - start).total_seconds()) if start is not None else 0.0
        seen.append(PodRate(name, pod_rate(report.objects_per_second), age))
    return Observation(now.timestamp(), min(max(0.0, target), MAX_TARGET_RATE), max(1, upper), tuple(seen))


def scaling_status(state: FleetState, target: float, actual: int) -> dict[str, Any]:
    """`status.scaling`: desired and actual pods, why, and what the law keeps to go on after a restart."""
    return {
        "targetObjectsPerSecond": round(target, 2),
        "desiredPods": state.pods,
        "actualPods": actual,
        "measuredObjectsPerSecond": round(state.measured, 2) if state.measured is not None else None,
        "reason": str(state.reason),
        "message": state.message,
        "lastChange": _stamp(state.changed_at),
        "limit": (
            {"pods": state.ceiling, "until": _stamp(state.ceiling_until)}
            if state.ceiling is not None
            else None
        ),
        "before": _level(state.before) if state.before is not None else None,
        "history": [_level(level) for level in state.levels],
        "samples": [round(s, 2) for s in state.samples],
    }


def state_from_status(raw: Any, config: FleetConfig = FleetConfig()) -> FleetState | None:
    """The law's state from `status.scaling`, or None when there is none or it is not one the operator
    wrote (then the law starts afresh)."""
    if not isinstance(raw, Mapping):
        return None
    pods = _count(raw.get("desiredPods"))
    changed = _seconds(raw.get("lastChange"))
    reason_text = raw.get("reason")
    if pods is None or changed is None or not isinstance(reason_text, str) or reason_text not in set(Reason):
        return None
    reason = Reason(reason_text)
    limit = _mapping(raw.get("limit"))
    ceiling, until = _count(limit.get("pods")), _seconds(limit.get("until"))
    history = _items(raw.get("history"))
    levels = tuple(lv for lv in (_parse_level(x) for x in history[: config.max_levels]) if lv is not None)
    samples_raw = _items(raw.get("samples"))
    samples = tuple(
        s
        for s in (_rate(x, MAX_POD_RATE * MAX_PODS) for x in samples_raw[: config.max_samples])
        if s is not None
    )
    measured = _rate(raw.get("measuredObjectsPerSecond"), MAX_POD_RATE * MAX_PODS)
    message = raw.get("message")
    return FleetState(
        pods=pods,
        reason=reason,
        message=message[:MAX_MESSAGE] if isinstance(message, str) else "",
        changed_at=changed,
        before=_parse_level(raw.get("before")),
        ceiling=ceiling if until is not None else None,
        ceiling_until=until if ceiling is not None and until is not None else 0.0,
        levels=levels,
        samples=samples,
        measured=measured,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _level(level: Level) -> dict[str, Any]:
    return {"pods": level.pods, "objectsPerSecond": round(level.rate, 2), "at": _stamp(level.at)}


def _parse_level(raw: Any) -> Level | None:
    if not isinstance(raw, Mapping):
        return None
    pods, rate, at = (
        _count(raw.get("pods")),
        _rate(raw.get("objectsPerSecond"), MAX_POD_RATE * MAX_PODS),
        _seconds(raw.get("at")),
    )
    if pods is None or rate is None or at is None:
        return None
    return Level(pods, rate, at)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PODS:
        return None
    return value


def _rate(value: Any, bound: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= bound else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        # RFC 3339 as the API server writes it, or its ISO form once the client has parsed it.
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp.astimezone(UTC) if stamp.tzinfo is not None else None


def _seconds(value: Any) -> float | None:
    stamp = _time(value)
    return stamp.timestamp() if stamp is not None else None


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(math.floor(seconds), UTC).strftime(TIME_FORMAT)
