"""The fleet law: how many worker pods a CopyJob with `spec.target` runs. Pure: observations in, the
desired pod count and its reason out; no clock, no Kubernetes.

Where it sits: every reconcile pass (`reconcile.py`) reads the running worker pods' `/status`; for a
CopyJob with a target it hands this module the objects/s each pod reports, the target (a deadline
already turned into a rate by `needed_rate`) and the caps (`spec.parallelism`, the platform's
`maxPodsPerJob`, the shards left). The decision is patched into the worker Job's `parallelism`, and the
state below is kept in `status.scaling` (`fleetstatus.py`) so an operator restarted mid-run goes on.

The law, as the in-pod adaptive manager (`worker/control.py`) does for transfers, one level up:
- A pod count is judged only once it has settled: some seconds after the change (a worker's rate is an
  average over its last 10 s) and with most pods old enough to have filled that window.
- Below the target, it grows to the count the measured per-pod rate says the target needs (never more
  than `max_growth` times the pods now): with pods of equal rate it lands on the target, not past it.
- Every growth step is then judged by its gain. The pods added must add a fair share of what a pod did
  before; when they add (almost) nothing the provider or the network is the limit, and the fleet goes
  back to the count that carried the same load and stays there (`ceiling`) until a later probe.
- When the pods do markedly less each than at an earlier count while below the target, a shared limit
  has tightened (the provider's capacity fell): the fleet sheds the pods the measured load no longer
  needs. A removal that lost what the removed pods carried is undone.
- Above the target with room to spare (one pod fewer would still meet it by a margin), it removes the
  pods the target does not need. The margin and the settle time keep it from flapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

#: The most objects/s one pod's report may count for: a worker is bound by one CPU near 300 objects/s,
#: so a larger figure is a lie or a fault and must not make the operator remove every other pod.
MAX_POD_RATE = 100_000.0
#: The most objects/s a target may ask for (the CRD's bound on target.objectsPerSecond).
MAX_TARGET_RATE = 10_000_000.0
#: Once a deadline is this close (or past), its rate is the objects left over this many seconds: as
#: fast as the pods that still add throughput allow, never an infinite rate.
MIN_DEADLINE_SECONDS = 10.0


class Reason(StrEnum):
    """Why the fleet has the pods it has: the `status.scaling.reason` and the Event's reason word."""

    STARTING = "Starting"
    BELOW_TARGET = "BelowTargetRising"
    NO_GAIN = "NoGainProviderOrNetworkLimit"
    RESTORED = "RemovedPodsWereNeeded"
    TARGET_MET = "TargetMet"
    ROOM_TO_SPARE = "TargetMetWithRoomToSpare"
    AT_CAP = "AtCap"


@dataclass(frozen=True)
class FleetConfig:
    #: Seconds after a change before its pod count is judged: the workers' rate window is 10 s.
    settle_seconds: float = 12.0
    #: A pod younger than this is still filling its rate window; its figure is not yet its rate.
    warmup_seconds: float = 12.0
    #: Settled observations of one pod count averaged before deciding on it.
    min_samples: int = 2
    #: The target counts as met at this share of it (measurement noise is a few percent).
    met_share: float = 0.95
    #: Pods are removed only when one pod fewer would still give this share of the target.
    spare_share: float = 1.15
    #: Pods added must add at least this share of what each pod did before, else they gave no gain.
    gain_floor: float = 0.25
    #: Pods that added less than this share of a pod's rate each found the limit inside the step.
    partial_gain: float = 0.75
    #: Pods doing less than this share of what a pod did at an earlier count: a shared limit tightened.
    slowdown_share: float = 0.7
    #: A removal that lost more than this share of what the removed pods carried is undone.
    loss_share: float = 0.5
    #: A growth step multiplies the pods by at most this.
    max_growth: float = 4.0
    #: A provider or network limit found at some pod count is probed again (one pod more) after this.
    probe_seconds: float = 120.0
    #: Measured levels older than this are forgotten: the provider and the objects change.
    horizon_seconds: float = 300.0
    max_levels: int = 8
    max_samples: int = 3


@dataclass(frozen=True)
class Level:
    """A settled measurement: the aggregate objects/s the fleet did at a pod count, and when."""

    pods: int
    rate: float
    at: float

    @property
    def per_pod(self) -> float:
        return self.rate / self.pods if self.pods else 0.0


@dataclass(frozen=True)
class PodRate:
    """One running worker pod as the controller sees it: its reported objects/s, already bounded
    (`pod_rate`), and its age in seconds."""

    name: str
    objects_per_second: float
    age_seconds: float


@dataclass(frozen=True)
class Observation:
    """One reconcile pass: when, the objects/s needed, the most pods allowed now (>= 1), the pods."""

    now: float
    target: float
    upper: int
    pods: tuple[PodRate, ...]


@dataclass(frozen=True)
class FleetState:
    """What the law remembers between passes (kept in `status.scaling`)."""

    pods: int
    reason: Reason
    message: str
    changed_at: float
    #: The level measured just before the last change, to judge that change by; None once judged.
    before: Level | None = None
    #: A count above which pods gave no gain (provider or network limit), until `ceiling_until`.
    ceiling: int | None = None
    ceiling_until: float = 0.0
    levels: tuple[Level, ...] = ()
    #: Aggregate estimates of the present count since it settled, newest last.
    samples: tuple[float, ...] = ()
    #: The last aggregate measured (the mean of `samples`), for status.
    measured: float | None = None


def pod_rate(value: object) -> float:
    """A pod's reported objects/s as the law may use it: a finite number in [0, MAX_POD_RATE]; anything
    else (a string, NaN, infinity, a negative number) counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        return 0.0
    return min(number, MAX_POD_RATE)


def needed_rate(
    objects_per_second: int | None, deadline: datetime | None, pending: int, now: datetime
) -> float:
    """The objects/s the target asks for now: target.objectsPerSecond as written, or the objects left
    over the time left to target.deadline (at least MIN_DEADLINE_SECONDS, so a deadline that is near or
    past asks for a finite rate). 0 when nothing is left."""
    if objects_per_second is not None:
        return min(float(objects_per_second), MAX_TARGET_RATE)
    if deadline is None or pending <= 0:
        return 0.0
    seconds = max(MIN_DEADLINE_SECONDS, (deadline - now).total_seconds())
    return min(pending / seconds, MAX_TARGET_RATE)


def initial_state(now: float) -> FleetState:
    """Start with one pod: its measured rate says how many the target needs (the operator's sizing
    assumes 50 objects/s a pod; a real pod may do six times that)."""
    return FleetState(1, Reason.STARTING, "started with 1 pod to measure what one pod does", now)


def step(state: FleetState, seen: Observation, config: FleetConfig = FleetConfig()) -> FleetState:
    """One pass of the law: the state after `seen`; its `pods` is the desired count."""
    upper = max(1, seen.upper)
    levels = tuple(lv for lv in state.levels if seen.now - lv.at <= config.horizon_seconds)
    state = replace(state, levels=levels)
    if state.pods > upper:
        return _change(
            state,
            seen.now,
            upper,
            Reason.AT_CAP,
            f"held to {upper} pod(s) by spec.parallelism, the platform's pods per job or the shards left",
            None,
            keep_ceiling=True,
        )
    estimate = _estimate(state, seen, config)
    if estimate is None:
        return state
    samples = (*state.samples, estimate)[-config.max_samples :]
    if len(samples) < config.min_samples:
        return replace(state, samples=samples)
    measured = sum(samples) / len(samples)
    pods = state.pods
    level = Level(pods, measured, seen.now)
    kept = tuple(lv for lv in levels if lv.pods != pods)
    state = replace(state, samples=samples, measured=measured, levels=(*kept, level)[-config.max_levels :])
    judged = _judge_last_change(state, level, seen, config)
    if judged is not None:
        return judged
    state = replace(state, before=None)
    return _decide(state, level, seen.target, upper, seen.now, config)


def _estimate(state: FleetState, seen: Observation, config: FleetConfig) -> float | None:
    """The fleet's objects/s at the present count, or None while it has not settled: too soon after the
    change, not every pod reporting, or most pods still filling their rate window. Young pods (a pod
    started on the next shard) count at the mean of the settled ones."""
    if seen.now - state.changed_at < config.settle_seconds:
        return None
    expected = min(state.pods, seen.upper)
    if len(seen.pods) != expected or not seen.pods:
        return None
    mature = [p.objects_per_second for p in seen.pods if p.age_seconds >= config.warmup_seconds]
    if 2 * len(mature) < len(seen.pods):
        return None
    return sum(mature) / len(mature) * len(seen.pods)


def _judge_last_change(
    state: FleetState, level: Level, seen: Observation, config: FleetConfig
) -> FleetState | None:
    """The state after judging the last change by what it gained or lost, or None to decide afresh."""
    before = state.before
    if before is None or before.pods == level.pods or before.rate <= 0:
        return None
    per_pod_before = before.per_pod
    if level.pods > before.pods:
        added = level.pods - before.pods
        gain = level.rate - before.rate
        expected = added * per_pod_before
        if gain >= config.partial_gain * expected:
            return None
        # The limit lies inside the step: keep the pods the measured gain paid for (rounded: less than
        # half a pod's rate is noise), and no more.
        knee = before.pods + max(0, math.floor(gain / per_pod_before + 0.5))
        if knee == before.pods:
            why = (
                f"no gain from the last {added} pod(s) ({_r(level.rate)} objects/s at {level.pods} pods, "
                f"{_r(before.rate)} at {before.pods})"
            )
        else:
            why = (
                f"the last {added} pod(s) added {_r(gain / added)} objects/s each, a pod did "
                f"{_r(per_pod_before)} before"
            )
        why += f": the provider or the network is the limit near {knee} pod(s)"
        ceiling = (knee, seen.now + config.probe_seconds)
        if knee < level.pods:
            return _change(state, seen.now, knee, Reason.NO_GAIN, why, level, ceiling=ceiling)
        return _hold(replace(state, before=None, ceiling=knee, ceiling_until=ceiling[1]), Reason.NO_GAIN, why)
    carried = (before.pods - level.pods) * per_pod_before
    lost = before.rate - level.rate
    if level.rate < config.met_share * seen.target and lost > config.loss_share * carried:
        # What made the removal look right (a faster pod rate measured earlier) no longer holds.
        fresh = tuple(lv for lv in state.levels if lv.per_pod <= level.per_pod * 1.05 or lv is level)
        return _change(
            replace(state, levels=fresh),
            seen.now,
            before.pods,
            Reason.RESTORED,
            f"the {before.pods - level.pods} pod(s) removed were carrying {_r(lost)} objects/s "
            f"({_r(level.rate)} at {level.pods} pods, {_r(before.rate)} at {before.pods}): added back",
            level,
            ceiling=None,
        )
    return None


def _decide(
    state: FleetState, level: Level, target: float, upper: int, now: float, config: FleetConfig
) -> FleetState:
    pods, rate, per_pod = level.pods, level.rate, level.per_pod
    at = f"{_r(rate)} objects/s at {pods} pod(s)"
    if target <= 0:
        return _hold(state, Reason.TARGET_MET, f"{at}; no objects left for the deadline to ask for")
    if rate < config.met_share * target:
        best = max((lv.per_pod for lv in state.levels), default=0.0)
        # Every sample must show it: the pods' rates are 10-s averages, and one pass in a transition
        # would shed more pods than the new limit needs.
        slow = config.slowdown_share * best * pods
        if pods > 1 and all(sample < slow for sample in state.samples):
            shed = max(1, math.ceil(rate / best))
            if shed < pods:
                return _change(
                    state,
                    now,
                    shed,
                    Reason.NO_GAIN,
                    f"{at}, {_r(per_pod)} each where a pod did {_r(best)}: the provider or the network "
                    f"is the limit, and {shed} pod(s) carry what it allows",
                    level,
                    ceiling=(shed, now + config.probe_seconds),
                )
        if pods >= upper:
            return _hold(
                state,
                Reason.AT_CAP,
                f"{at}, below the target of {_r(target)}: at the cap of {upper} pod(s) (spec.parallelism, "
                "the platform's pods per job or the shards left)",
            )
        ceiling = state.ceiling if state.ceiling is not None and now < state.ceiling_until else None
        if ceiling is not None and pods >= ceiling:
            return _hold(
                state,
                Reason.NO_GAIN,
                f"{at}, below the target of {_r(target)}: more pods gave no gain (the provider or the "
                f"network is the limit); tried again {_seconds(state.ceiling_until - now)} from now",
            )
        probing = state.ceiling is not None and ceiling is None and pods >= state.ceiling
        needed = pods + math.ceil((target - rate) / per_pod) if per_pod > 0 else upper
        most = min(upper, max(pods + 1, math.floor(pods * config.max_growth)))
        if probing:
            most = min(most, pods + 1)
        desired = max(pods + 1, min(needed, most))
        why = f"{at}, {_r(per_pod)} each, below the target of {_r(target)}: " + (
            "probing one pod above the limit found before" if probing else f"{desired} pod(s) needed"
        )
        return _change(state, now, desired, Reason.BELOW_TARGET, why, level, keep_ceiling=not probing)
    if pods > 1 and per_pod > 0 and (pods - 1) * per_pod >= config.spare_share * target:
        desired = max(1, math.ceil(target / per_pod))
        return _change(
            state,
            now,
            desired,
            Reason.ROOM_TO_SPARE,
            f"{at} meets the target of {_r(target)} with room to spare: {desired} pod(s) suffice",
            level,
            keep_ceiling=True,
        )
    return _hold(state, Reason.TARGET_MET, f"{at} meets the target of {_r(target)}")


def _hold(state: FleetState, reason: Reason, message: str) -> FleetState:
    return replace(state, reason=reason, message=message)


def _change(
    state: FleetState,
    now: float,
    pods: int,
    reason: Reason,
    message: str,
    before: Level | None,
    *,
    ceiling: tuple[int, float] | None = None,
    keep_ceiling: bool = False,
) -> FleetState:
    if keep_ceiling:
        limit, until = state.ceiling, state.ceiling_until
    elif ceiling is not None:
        limit, until = ceiling
    else:
        limit, until = None, 0.0
    if pods == state.pods:
        return replace(state, reason=reason, message=message, ceiling=limit, ceiling_until=until)
    return replace(
        state,
        pods=pods,
        reason=reason,
        message=message,
        changed_at=now,
        before=before,
        ceiling=limit,
        ceiling_until=until,
        samples=(),
    )


def _r(value: float) -> str:
    """Objects/s as people read them: 0.0116, 2.5, 27.8, 1,389."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _seconds(value: float) -> str:
    return f"{max(0, math.ceil(value))} s"
