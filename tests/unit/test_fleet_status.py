"""`status.scaling` (`operator/fleetstatus.py`): the fleet law's state rendered, read back after a
restart, refused when forged; and the observation built from pods and their reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.operator.caps import target_cap
from ferry.operator.fleet import MAX_POD_RATE, FleetState, Level, Reason
from ferry.operator.fleetstatus import observation, scaling_status, state_from_status
from ferry.operator.settings import OperatorSettings
from ferry.worker.statusdoc import WorkerReport

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
T = NOW.timestamp()

STATE = FleetState(
    pods=4,
    reason=Reason.NO_GAIN,
    message="no gain from the last 4 pod(s): the provider or the network is the limit near 4 pod(s)",
    changed_at=T - 30,
    before=Level(8, 410.0, T - 31),
    ceiling=4,
    ceiling_until=T + 90,
    levels=(Level(1, 100.0, T - 60), Level(4, 400.0, T - 45), Level(8, 410.0, T - 31)),
    samples=(399.5, 401.25),
    measured=400.38,
)


def test_the_status_shows_desired_and_actual_pods_and_why() -> None:
    shown = scaling_status(STATE, 1000.0, 4)
    assert shown["desiredPods"] == 4 and shown["actualPods"] == 4
    assert shown["reason"] == "NoGainProviderOrNetworkLimit" and "provider or the network" in shown["message"]
    assert shown["targetObjectsPerSecond"] == 1000.0 and shown["measuredObjectsPerSecond"] == 400.38
    assert shown["lastChange"] == "2026-11-01T11:59:30Z"
    assert shown["limit"] == {"pods": 4, "until": "2026-11-01T12:01:30Z"}
    assert shown["history"][0] == {"pods": 1, "objectsPerSecond": 100.0, "at": "2026-11-01T11:59:00Z"}


def test_a_fresh_state_shows_no_limit_nor_before() -> None:
    shown = scaling_status(FleetState(1, Reason.STARTING, "started", T), 300.0, 0)
    assert shown["limit"] is None and shown["before"] is None and shown["measuredObjectsPerSecond"] is None


def test_the_state_reads_back_as_written() -> None:
    assert state_from_status(scaling_status(STATE, 1000.0, 4)) == STATE


def good() -> dict[str, Any]:
    return scaling_status(STATE, 1000.0, 4)


@pytest.mark.parametrize(
    ("change", "readable"),
    [
        (lambda s: s.update(desiredPods=0), False),
        (lambda s: s.update(desiredPods=100_000), False),
        (lambda s: s.update(desiredPods="4"), False),
        (lambda s: s.update(desiredPods=True), False),
        (lambda s: s.update(reason="Whatever"), False),
        (lambda s: s.update(reason=["TargetMet"]), False),
        (lambda s: s.update(lastChange="yesterday"), False),
        (lambda s: s.pop("lastChange"), False),
        (lambda s: s.update(history="lots"), True),
        (
            lambda s: s.update(
                history=[{"pods": 2, "objectsPerSecond": math.inf, "at": "2026-11-01T12:00:00Z"}]
            ),
            True,
        ),
        (lambda s: s.update(samples=[-1, "x", 5.0]), True),
        (lambda s: s.update(limit={"pods": 4}), True),
        (lambda s: s.update(message="x" * 100_000), True),
    ],
    ids=[
        "no pods",
        "too many pods",
        "pods as a string",
        "pods as a boolean",
        "unknown reason",
        "reason as a list",
        "bad time",
        "no time",
        "history not a list",
        "infinite rate",
        "bad samples",
        "limit without until",
        "huge message",
    ],
)
def test_a_forged_status_is_refused_or_bounded(change: Any, readable: bool) -> None:
    raw = good()
    change(raw)
    state = state_from_status(raw)
    assert (state is not None) == readable
    if state is not None:
        assert len(state.message) <= 512
        assert all(math.isfinite(lv.rate) for lv in state.levels)
        assert all(s >= 0 for s in state.samples) and len(state.samples) <= 3
        assert state.ceiling is None or state.ceiling_until > 0


@pytest.mark.parametrize("raw", [None, "scaling", [], {}, {"desiredPods": 3}])
def test_no_state_is_none(raw: Any) -> None:
    assert state_from_status(raw) is None


def report(rate: Any, shard: int = 0) -> WorkerReport:
    return WorkerReport(
        shard=shard,
        state="running",
        objects={},
        bytes={},
        objects_per_second=rate,
        bytes_per_second=0.0,
        concurrency=4,
        in_flight=4,
        reason="",
        rss_bytes=None,
        failed=[],
        error=None,
    )


def pod(name: str, started: str | None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-01T11:59:59+00:00"
    return {"metadata": meta, "status": {"phase": "Running", **({"startTime": started} if started else {})}}


def test_the_observation_bounds_every_pod_s_rate_and_ages_them_by_the_kubelet_s_start_time() -> None:
    running = {
        0: ("w-0", report(120.5)),
        1: ("w-1", report(float("nan"))),
        2: ("w-2", report(1e15)),
        3: ("w-3", report(-3.0)),
        4: ("w-4", report(50.0)),
        5: ("w-5", report(80.0)),
    }
    pods = [
        pod("w-0", "2026-11-01T11:59:00+00:00"),  # as the Kubernetes client renders times
        pod("w-1", "2026-11-01T11:59:50Z"),
        pod("w-2", None),
        pod("w-3", "2026-11-01T12:05:00Z"),  # a clock ahead: age 0, never negative
        pod("w-4", "2026-11-01T11:00:00Z", deleting=True),
    ]
    seen = observation(NOW, 300.0, 5, running, pods)
    by_name = {p.name: p for p in seen.pods}
    assert set(by_name) == {"w-0", "w-1", "w-2", "w-3", "w-5"}, "a pod being deleted does not count"
    assert by_name["w-0"].objects_per_second == 120.5 and by_name["w-0"].age_seconds == 60.0
    assert by_name["w-1"].objects_per_second == 0.0 and by_name["w-1"].age_seconds == 10.0
    assert by_name["w-2"].objects_per_second == MAX_POD_RATE and by_name["w-2"].age_seconds == 0.0
    assert by_name["w-3"].objects_per_second == 0.0 and by_name["w-3"].age_seconds == 0.0
    assert by_name["w-5"].age_seconds == 0.0, "a pod not listed is young"
    assert (seen.now, seen.target, seen.upper) == (T, 300.0, 5)


def test_the_observation_bounds_the_target_and_the_cap() -> None:
    seen = observation(NOW + timedelta(seconds=1), math.inf, 0, {}, [])
    assert seen.upper == 1 and seen.target == 10_000_000.0 and seen.pods == ()


SPEC = {
    "source": {"bucket": "src-bucket", "credentialsSecret": "s"},
    "destination": {"bucket": "dst-bucket", "credentialsSecret": "s"},
    "target": {"objectsPerSecond": 500},
}


@pytest.mark.parametrize(
    ("parallelism", "platform", "shards_left", "expected"),
    [
        (None, None, 40, 40),
        (None, None, 5000, 1000),
        (8, None, 40, 8),
        (8, 4, 40, 4),
        (None, 6, 40, 6),
        (20, None, 3, 3),
        (20, None, 0, 1),
    ],
)
def test_the_cap_is_spec_parallelism_the_platform_s_and_the_shards_left(
    parallelism: int | None, platform: int | None, shards_left: int, expected: int
) -> None:
    spec = CopyJobSpec.model_validate({**SPEC, **({"parallelism": parallelism} if parallelism else {})})
    settings = OperatorSettings(max_pods_per_job=platform)
    assert target_cap(spec, settings, shards_left) == expected
