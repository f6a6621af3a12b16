"""The fleet law (`operator/fleet.py`): table-driven decisions, and a simulated fleet of worker pods
behind a provider of limited capacity, driven pass by pass on a fake clock: no threads, no sleeps."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from ferry.operator.fleet import (
    MAX_POD_RATE,
    MIN_DEADLINE_SECONDS,
    FleetConfig,
    FleetState,
    Level,
    Observation,
    PodRate,
    Reason,
    initial_state,
    needed_rate,
    pod_rate,
    step,
)

# --- a simulated fleet -------------------------------------------------------------------------------


@dataclass
class SimPod:
    started: float
    #: (time, objects done) since the process started, as the worker's rate window samples them.
    done: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class SimulatedFleet:
    """Pods of ``pod_rate`` objects/s each (times a noise factor), behind a provider that serves at most
    ``capacity(t)`` objects/s shared evenly among the pods copying. A pod copies ``start_delay`` seconds
    after it is created and reports the average of its last 10 s (from its start while younger), as the
    worker's `RateWindow` does. The operator's pass runs every ``tick`` seconds."""

    pod_rate: float = 100.0
    capacity: Callable[[float], float] = lambda _t: math.inf
    target: float = 300.0
    upper: int = 1000
    start_delay: float = 2.0
    tick: float = 2.0
    noise: float = 0.05
    seed: int = 7
    config: FleetConfig = FleetConfig()
    history: list[tuple[float, int, float, str]] = field(default_factory=list)

    def run(self, seconds: float) -> FleetState:
        rng = random.Random(self.seed)
        state = initial_state(0.0)
        pods = [SimPod(0.0, [(0.0, 0.0)])]
        now = 0.0
        while now < seconds:
            now += self.tick
            copying = [p for p in pods if now - p.started > self.start_delay]
            offered = len(copying) * self.pod_rate
            share = min(1.0, self.capacity(now) / offered) if offered else 0.0
            for pod in pods:
                rate = self.pod_rate * share * (1 + rng.uniform(-self.noise, self.noise))
                working = max(0.0, min(self.tick, now - pod.started - self.start_delay))
                pod.done.append((now, pod.done[-1][1] + rate * working))
            actual = self.pod_rate * share * len(copying)
            seen = Observation(
                now,
                self.target,
                self.upper,
                tuple(
                    PodRate(f"pod-{i}", pod_rate(self.reported(p, now)), now - p.started)
                    for i, p in enumerate(pods)
                ),
            )
            state = step(state, seen, self.config)
            while len(pods) < state.pods:
                pods.append(SimPod(now, [(now, 0.0)]))
            del pods[state.pods :]  # the Job controller removes the newest pods first
            self.history.append((now, state.pods, actual, state.reason))
        return state

    @staticmethod
    def reported(pod: SimPod, now: float) -> float:
        window = [(t, d) for t, d in pod.done if now - t <= 10.0]
        (t0, d0), (t1, d1) = window[0], window[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def pods_at(self, t: float) -> int:
        return [p for when, p, _a, _r in self.history if when <= t][-1]

    def rate_at(self, t: float) -> float:
        return [a for when, _p, a, _r in self.history if when <= t][-1]

    def first_time_met(self) -> float | None:
        met = [when for when, _p, actual, _r in self.history if actual >= 0.95 * self.target]
        return met[0] if met else None


@pytest.mark.parametrize("tick", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("target", [150.0, 300.0, 450.0, 1000.0])
def test_a_target_above_one_pod_is_met_within_60_seconds_and_stays_met(target: float, tick: float) -> None:
    fleet = SimulatedFleet(target=target, tick=tick)
    fleet.run(240)
    met = fleet.first_time_met()
    assert met is not None and met <= 60, fleet.history
    assert all(a >= 0.9 * target for t, _p, a, _r in fleet.history if t >= 80), "the target keeps being met"
    changes = sum(1 for a, b in zip(fleet.history, fleet.history[1:], strict=False) if a[1] != b[1])
    assert changes <= 4, f"it flaps: {changes} changes"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [120.0, 300.0, 350.0, 790.0])
def test_never_more_than_one_pod_over_what_the_target_needs(target: float, seed: int) -> None:
    fleet = SimulatedFleet(target=target, seed=seed, noise=0.08)
    fleet.run(300)
    needs = math.ceil(target / fleet.pod_rate)
    assert max(p for _t, p, _a, _r in fleet.history) <= needs + 1, fleet.history
    assert fleet.pods_at(300) in (needs, needs + 1)


def test_a_target_one_pod_meets_keeps_one_pod() -> None:
    fleet = SimulatedFleet(target=60.0)
    state = fleet.run(120)
    assert {p for _t, p, _a, _r in fleet.history} == {1}
    assert state.reason is Reason.TARGET_MET


def test_adding_stops_where_the_provider_caps_the_aggregate() -> None:
    fleet = SimulatedFleet(target=1000.0, capacity=lambda _t: 500.0)
    state = fleet.run(600)
    # The knee is 5 pods (5 x 100 = 500): after the search the fleet holds there, probing one pod more
    # now and then, and says why.
    assert all(p in (5, 6) for t, p, _a, _r in fleet.history if t >= 90), fleet.history
    assert sum(1 for t, p, _a, _r in fleet.history if t >= 90 and p == 6) < 0.25 * (510 / fleet.tick)
    assert fleet.rate_at(600) >= 0.95 * 500
    assert state.reason is Reason.NO_GAIN and "provider or the network" in state.message
    assert max(p for _t, p, _a, _r in fleet.history) <= 11  # the search never went past the target's need + 1


def test_it_scales_back_when_the_provider_s_capacity_halves() -> None:
    fleet = SimulatedFleet(target=1000.0, capacity=lambda t: 600.0 if t < 200 else 300.0)
    fleet.run(400)
    assert fleet.pods_at(195) in (6, 7)
    # Within a settle time of the drop: 3 pods carry 300 objects/s; the fleet holds 3 or 4, probing one
    # more now and then.
    after = [p for t, p, _a, _r in fleet.history if t >= 225]
    assert max(after) <= 5 and sum(p <= 4 for p in after) >= 0.85 * len(after), fleet.history
    assert fleet.pods_at(400) in (3, 4)
    assert fleet.rate_at(400) >= 0.95 * 300


def test_it_scales_back_when_the_target_is_met_with_room_after_capacity_returns() -> None:
    """A provider-limited fleet whose provider recovers: more pods are tried again after the probe
    time, and the target is met without going past its need by more than one pod."""
    fleet = SimulatedFleet(target=600.0, capacity=lambda t: 300.0 if t < 100 else math.inf)
    fleet.run(500)
    assert all(p <= 4 for t, p, _a, _r in fleet.history if t < 100)
    assert fleet.rate_at(500) >= 0.95 * 600 and fleet.pods_at(500) in (6, 7)


def test_a_lower_cap_holds_the_fleet_and_says_so() -> None:
    fleet = SimulatedFleet(target=1000.0, upper=3)
    state = fleet.run(120)
    assert max(p for _t, p, _a, _r in fleet.history) == 3
    assert state.reason is Reason.AT_CAP and "cap of 3" in state.message


# --- decisions, one pass at a time -------------------------------------------------------------------

CONFIG = FleetConfig()


def pods(*rates: float, age: float = 60.0) -> tuple[PodRate, ...]:
    return tuple(PodRate(f"p{i}", r, age) for i, r in enumerate(rates))


def settled(
    count: int, *, measured: float | None = None, changed_at: float = 0.0, **extra: object
) -> FleetState:
    """A state of ``count`` pods whose last change is long past, with one sample taken already."""
    samples = (measured,) if measured is not None else ()
    return replace(FleetState(count, Reason.STARTING, "", changed_at, samples=samples), **extra)  # type: ignore[arg-type]


CASES = [
    # (name, state, observation, expected pods, expected reason)
    (
        "too soon after a change: nothing decided",
        settled(2, changed_at=95.0),
        Observation(100.0, 1000.0, 100, pods(100, 100)),
        2,
        Reason.STARTING,
    ),
    (
        "most pods still filling their rate window",
        settled(3, measured=300.0),
        Observation(100.0, 1000.0, 100, (*pods(100), *pods(10, 10, age=3))),
        3,
        Reason.STARTING,
    ),
    (
        "a pod not started yet",
        settled(3, measured=300.0),
        Observation(100.0, 1000.0, 100, pods(100, 100)),
        3,
        Reason.STARTING,
    ),
    (
        "below the target: the pods the measured rate says it needs",
        settled(1, measured=100.0),
        Observation(100.0, 300.0, 100, pods(100)),
        3,
        Reason.BELOW_TARGET,
    ),
    (
        "one step multiplies the pods by at most max_growth",
        settled(2, measured=200.0),
        Observation(100.0, 5000.0, 100, pods(100, 100)),
        8,
        Reason.BELOW_TARGET,
    ),
    (
        "a growth step never goes past the cap",
        settled(2, measured=200.0),
        Observation(100.0, 5000.0, 5, pods(100, 100)),
        5,
        Reason.BELOW_TARGET,
    ),
    (
        "below the target at the cap",
        settled(5, measured=500.0),
        Observation(100.0, 1000.0, 5, pods(100, 100, 100, 100, 100)),
        5,
        Reason.AT_CAP,
    ),
    (
        "a cap lowered below the pods (spec.parallelism edited, shards running out)",
        settled(6, measured=600.0),
        Observation(100.0, 1000.0, 4, pods(100, 100, 100, 100, 100, 100)),
        4,
        Reason.AT_CAP,
    ),
    (
        "met within the band: held",
        settled(3, measured=290.0),
        Observation(100.0, 300.0, 100, pods(97, 97, 96)),
        3,
        Reason.TARGET_MET,
    ),
    (
        "met with room to spare: the pods the target does not need go",
        settled(8, measured=800.0),
        Observation(100.0, 300.0, 100, pods(*[100.0] * 8)),
        3,
        Reason.ROOM_TO_SPARE,
    ),
    (
        "met, one pod fewer would not leave room: held (no flapping at the edge)",
        settled(4, measured=400.0),
        Observation(100.0, 340.0, 100, pods(100, 100, 100, 100)),
        4,
        Reason.TARGET_MET,
    ),
    (
        "the last pods added nothing: back to where the gain stopped",
        settled(8, measured=410.0, before=Level(4, 400.0, 50.0)),
        Observation(100.0, 1000.0, 100, pods(*[51.0] * 8)),
        4,
        Reason.NO_GAIN,
    ),
    (
        "the last pods added a little: the pods the gain paid for",
        settled(8, measured=600.0, before=Level(4, 400.0, 50.0)),
        Observation(100.0, 1000.0, 100, pods(*[75.0] * 8)),
        6,
        Reason.NO_GAIN,
    ),
    (
        "the last pods added their share: growing on",
        settled(4, measured=400.0, before=Level(2, 200.0, 50.0)),
        Observation(100.0, 1000.0, 100, pods(100, 100, 100, 100)),
        10,
        Reason.BELOW_TARGET,
    ),
    (
        "a limit found before holds growth until the probe time",
        settled(4, measured=400.0, ceiling=4, ceiling_until=200.0),
        Observation(100.0, 1000.0, 100, pods(100, 100, 100, 100)),
        4,
        Reason.NO_GAIN,
    ),
    (
        "after the probe time: one pod above the limit",
        settled(4, measured=400.0, ceiling=4, ceiling_until=90.0),
        Observation(100.0, 1000.0, 100, pods(100, 100, 100, 100)),
        5,
        Reason.BELOW_TARGET,
    ),
    (
        "pods doing far less each than before: a tightened limit sheds them",
        settled(6, measured=300.0, levels=(Level(3, 300.0, 40.0),)),
        Observation(100.0, 1000.0, 100, pods(*[50.0] * 6)),
        3,
        Reason.NO_GAIN,
    ),
    (
        "a removal that lost what the pods carried is undone",
        settled(3, measured=150.0, before=Level(6, 300.0, 50.0), ceiling=3, ceiling_until=500.0),
        Observation(100.0, 1000.0, 100, pods(50, 50, 50)),
        6,
        Reason.RESTORED,
    ),
    (
        "a deadline with nothing left asks for nothing",
        settled(3, measured=300.0),
        Observation(100.0, 0.0, 100, pods(100, 100, 100)),
        3,
        Reason.TARGET_MET,
    ),
]


@pytest.mark.parametrize(("name", "state", "seen", "expected", "reason"), CASES, ids=[c[0] for c in CASES])
def test_one_pass(name: str, state: FleetState, seen: Observation, expected: int, reason: Reason) -> None:
    after = step(state, seen, CONFIG)
    assert (after.pods, after.reason) == (expected, reason), after.message
    if expected != state.pods:
        assert after.changed_at == seen.now and after.samples == ()
    assert len(after.message) < 400


def test_a_change_records_the_level_it_is_judged_against() -> None:
    after = step(settled(1, measured=100.0), Observation(100.0, 300.0, 100, pods(100)), CONFIG)
    assert after.before == Level(1, 100.0, 100.0) and after.measured == 100.0
    assert "below the target of 300" in after.message


def test_levels_are_bounded_and_forgotten_after_the_horizon() -> None:
    old = tuple(Level(i, 100.0 * i, 0.0) for i in range(1, 9))
    after = step(
        settled(3, measured=300.0, levels=old), Observation(400.0, 300.0, 100, pods(100, 100, 100)), CONFIG
    )
    assert after.levels == (Level(3, 300.0, 400.0),)
    many = tuple(Level(i, 100.0 * i, 390.0) for i in range(10, 30))
    after = step(
        settled(3, measured=300.0, levels=many), Observation(400.0, 300.0, 100, pods(100, 100, 100)), CONFIG
    )
    assert len(after.levels) == CONFIG.max_levels and after.levels[-1].pods == 3


# --- what a pod reports, and what a deadline asks for ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (250.5, 250.5),
        (0, 0.0),
        (-5.0, 0.0),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
        (1e12, MAX_POD_RATE),
        ("300", 0.0),
        (True, 0.0),
        (None, 0.0),
    ],
)
def test_a_pod_s_rate_is_bounded(value: object, expected: float) -> None:
    assert pod_rate(value) == expected


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rate", "deadline", "pending", "expected"),
    [
        (500, None, 10_000, 500.0),
        (None, NOW + timedelta(hours=1), 360_000, 100.0),
        (None, NOW + timedelta(seconds=10), 6_000, 6_000 / MIN_DEADLINE_SECONDS),
        (None, NOW - timedelta(hours=5), 6_000, 6_000 / MIN_DEADLINE_SECONDS),
        (None, NOW + timedelta(hours=1), 0, 0.0),
    ],
    ids=["rate", "deadline in an hour", "deadline near", "deadline past", "nothing left"],
)
def test_needed_rate(rate: int | None, deadline: datetime | None, pending: int, expected: float) -> None:
    assert needed_rate(rate, deadline, pending, NOW) == pytest.approx(expected)


def test_a_deadline_becomes_a_rate_the_fleet_meets_as_objects_go() -> None:
    """A deadline of 100,000 objects in 5 minutes asks ~333 objects/s: the simulated fleet, fed the rate
    the objects left and the time left ask for at each pass, meets it with 4 pods."""
    total, deadline = 100_000.0, 300.0
    fleet = SimulatedFleet()
    state = initial_state(0.0)
    done, now, tick = 0.0, 0.0, 2.0
    sim = SimulatedFleet(tick=tick)
    running = [SimPod(0.0, [(0.0, 0.0)])]
    seen_pods: list[int] = []
    while now < 330 and done < total:
        now += tick
        for pod in running:
            working = max(0.0, min(tick, now - pod.started - sim.start_delay))
            pod.done.append((now, pod.done[-1][1] + fleet.pod_rate * working))
            done += fleet.pod_rate * working
        target = needed_rate(
            None, NOW + timedelta(seconds=deadline), int(total - done), NOW + timedelta(seconds=now)
        )
        observed = tuple(
            PodRate(str(i), sim.reported(p, now), now - p.started) for i, p in enumerate(running)
        )
        state = step(state, Observation(now, target, 100, observed))
        while len(running) < state.pods:
            running.append(SimPod(now, [(now, 0.0)]))
        del running[state.pods :]
        seen_pods.append(state.pods)
    assert done >= total and now <= deadline + 10, (done, now)
    assert max(seen_pods) <= 5
