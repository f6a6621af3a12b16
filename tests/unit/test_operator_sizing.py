"""Sizing: pod memory, FERRY_MEMORY_LIMIT, concurrency and parallelism from object sizes (operator/sizing.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ferry.operator.planning import Planner
from ferry.operator.sizing import (
    BASELINE_BYTES,
    MIN_POD_MEMORY,
    MIN_WORKER_MEMORY,
    OVERHEAD_BYTES,
    SOFT_LIMIT_SHARE,
    WORKER_BASELINE_BYTES,
    Sizing,
    per_transfer_bytes,
    size,
    size_from_histogram,
)
from ferry.worker.budget import (
    CGROUP_FRACTION,
    RUNTIME_RESERVE,
    MemoryBudget,
    minimum_memory_limit,
    plan_memory,
)
from ferry.worker.copyprocs import PROCESS_BASELINE_BYTES
from ferry.worker.display import format_duration
from ferry.worker.engine import TRANSFER_OVERHEAD_BYTES
from ferry.worker.parts import DEFAULT_PART, transfer_memory

KB, KiB, MiB, GiB, TiB = 1000, 2**10, 2**20, 2**30, 2**40

INCIDENT: dict[str, Any] = {
    "objects": 1_000_000,
    "total_bytes": 1_000_000 * 100 * KB,
    "median": 100 * KB,
    "p99": 100 * KB,
    "shards": 1000,
    "target_objects_per_second": 100,
}


def check_memory_invariants(sizing: Sizing) -> None:
    assert sizing.memory_limit_bytes == int(sizing.pod_memory_bytes * SOFT_LIMIT_SHARE)
    assert sizing.memory_limit_bytes < sizing.pod_memory_bytes
    assert 1 <= sizing.initial_concurrency <= sizing.max_concurrency
    assert sizing.parallelism >= 1
    assert sizing.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, OVERHEAD_BYTES),
        (100 * KB, 100 * KB + OVERHEAD_BYTES),
        (DEFAULT_PART, DEFAULT_PART + OVERHEAD_BYTES),
        (5 * GiB, DEFAULT_PART + OVERHEAD_BYTES),  # one part buffer, not the object
    ],
    ids=["empty", "incident-100KB", "one-part", "large"],
)
def test_per_transfer_bytes(value: int, expected: int) -> None:
    assert per_transfer_bytes(value) == expected


def test_incident_never_50_mib_per_transfer() -> None:
    assert per_transfer_bytes(100_000) < 1 * MiB
    assert per_transfer_bytes(100_000) < 50 * MiB / 50


@pytest.mark.parametrize(
    "sizing",
    [
        pytest.param(size(**INCIDENT), id="declared"),
        pytest.param(
            size_from_histogram(
                Planner().add_all((f"k{i:07d}", 100 * KB) for i in range(2000)).histogram(),
                1000,
                target_objects_per_second=100,
            ),
            id="from-histogram",
        ),
        pytest.param(
            size_from_histogram(
                Planner().add_all((f"k{i:07d}", 90 * KB + i % 20 * KB) for i in range(2000)).histogram(),
                1000,
                target_objects_per_second=100,
            ),
            id="from-histogram-spread",
        ),
    ],
)
def test_the_incident_gets_a_handful_of_small_pods(sizing: Sizing) -> None:
    """1,000,000 x 100 KB at 100 objects/s: not one 1.8 GiB pod at concurrency 1 (243 hours)."""
    check_memory_invariants(sizing)
    assert 2 <= sizing.parallelism <= 6
    assert sizing.pod_memory_bytes <= 1 * GiB
    assert sizing.memory_limit_bytes == int(0.8 * sizing.pod_memory_bytes)
    assert sizing.initial_concurrency >= 16
    assert sizing.max_concurrency >= 64
    # The plan meets the target on paper.
    assert sizing.predicted_seconds is not None


def test_incident_prediction_meets_the_target() -> None:
    sizing = size(**INCIDENT)
    assert sizing.predicted_seconds is not None
    assert sizing.predicted_seconds <= INCIDENT["objects"] / INCIDENT["target_objects_per_second"]
    assert sizing.predicted_seconds < 243 * 3600 / 10


@pytest.mark.parametrize(
    ("median", "p99"),
    [(1 * GiB, 1 * GiB), (1 * GiB, 4 * GiB), (5 * GiB, 50 * GiB), (64 * MiB, 2 * GiB)],
    ids=["1GiB", "1GiB-p99-4GiB", "5GiB-p99-50GiB", "64MiB-p99-2GiB"],
)
def test_large_objects_keep_memory_bounded_and_concurrency_lower(median: int, p99: int) -> None:
    large = size(objects=10_000, total_bytes=10_000 * median, median=median, p99=p99, shards=100)
    small = size(**INCIDENT)
    check_memory_invariants(large)
    assert large.pod_memory_bytes <= 2 * GiB
    assert large.max_concurrency < small.max_concurrency
    assert large.initial_concurrency < small.initial_concurrency
    # payload of max concurrency, one part buffer each, fits the soft limit minus the baseline
    assert large.max_concurrency * per_transfer_bytes(median) <= large.memory_limit_bytes


@pytest.mark.parametrize(
    ("kwargs", "parallelism"),
    [
        ({"deadline_seconds": 10_000.0}, 2),  # 100 objects/s at 50 per pod
        ({"deadline_seconds": 1_000.0}, 20),
        ({"deadline_seconds": 3_600.0}, math.ceil(1_000_000 / 3_600 / 50)),
        ({"deadline_seconds": 10.0**9}, 1),
        ({"deadline_seconds": 100.0}, 200),
    ],
    ids=["100-per-s", "1000-per-s", "one-hour", "far-future", "tight"],
)
def test_deadline_targets(kwargs: dict[str, Any], parallelism: int) -> None:
    args = {**INCIDENT, "target_objects_per_second": None, **kwargs}
    sizing = size(**args)
    check_memory_invariants(sizing)
    assert sizing.parallelism == parallelism


def test_deadline_for_large_objects_is_bound_by_bytes_per_second() -> None:
    # 1000 x 1 GiB in one hour: 0.28 objects/s, but one pod moves ~50 MiB/s (0.049 objects/s).
    sizing = size(
        objects=1000, total_bytes=1000 * GiB, median=GiB, p99=GiB, shards=1000, deadline_seconds=3600.0
    )
    assert sizing.parallelism == math.ceil((1000 / 3600) / (50 * MiB / GiB))


@pytest.mark.parametrize(
    ("shards", "cap", "target", "expected"),
    [
        (5, None, 1000, 5),  # capped by shards
        (1000, 3, 1000, 3),  # capped by parallelism_cap
        (2, 3, 1000, 2),
        (1000, None, 1000, 20),
        (1, None, 100_000, 1),
        (1000, 1000, 10_000_000, 1000),
    ],
    ids=["by-shards", "by-cap", "shards-below-cap", "uncapped", "one-shard", "hard-cap"],
)
def test_parallelism_caps(shards: int, cap: int | None, target: int, expected: int) -> None:
    sizing = size(
        **{**INCIDENT, "shards": shards, "target_objects_per_second": target, "parallelism_cap": cap}
    )
    assert sizing.parallelism == expected


@pytest.mark.parametrize(
    "override",
    [256 * MiB, 3 * GiB, 700 * MiB + 1],
    ids=["small", "large", "odd"],
)
def test_memory_override_is_respected(override: int) -> None:
    sizing = size(**INCIDENT, memory_override=override)
    check_memory_invariants(sizing)
    assert sizing.pod_memory_bytes == override
    assert sizing.memory_limit_bytes == int(override * SOFT_LIMIT_SHARE)


@pytest.mark.parametrize(
    ("shards", "expected"),
    [(1, 1), (2, 2), (4, 4), (10, 4), (1000, 4)],
    ids=["1", "2", "4", "10", "1000"],
)
def test_no_target_gives_min_4_and_shards(shards: int, expected: int) -> None:
    args = {**INCIDENT, "target_objects_per_second": None, "shards": shards}
    assert size(**args).parallelism == expected


@pytest.mark.parametrize(
    ("concurrency_max", "expected_max", "expected_initial"),
    [(4, 4, 4), (16, 16, 16), (1, 1, 1), (4096, 512, 64)],
    ids=["4", "16", "1", "above-per-pod-max"],
)
def test_concurrency_max_bounds_concurrency(
    concurrency_max: int, expected_max: int, expected_initial: int
) -> None:
    sizing = size(**INCIDENT, concurrency_max=concurrency_max)
    assert sizing.max_concurrency == expected_max
    assert sizing.initial_concurrency == expected_initial


def test_empty_source_sizes_to_the_minimum() -> None:
    sizing = size_from_histogram(Planner().histogram(), 1)
    check_memory_invariants(sizing)
    assert sizing.parallelism == 1
    assert sizing.predicted_seconds == 0
    assert sizing.pod_memory_bytes >= 256 * MiB


@pytest.mark.parametrize(
    "object_size",
    [
        pytest.param(100 * KB, id="100KB"),
        pytest.param(5 * GiB, id="5GiB"),
        pytest.param(
            100 * GiB,
            id="100GiB",
        ),
        pytest.param(
            1 * TiB,
            id="1TiB",
        ),
    ],
)
def test_sizing_per_transfer_matches_what_the_worker_reserves(object_size: int) -> None:
    worker = transfer_memory(object_size, DEFAULT_PART, server_side=False) + TRANSFER_OVERHEAD_BYTES
    assert per_transfer_bytes(object_size) == worker


def test_sizing_baseline_matches_what_the_worker_counts() -> None:
    """The operator's baseline is the worker's (measured, rounded up) plus the worker's runtime reserve,
    and its soft limit is the share the worker takes of a cgroup limit."""
    assert BASELINE_BYTES == WORKER_BASELINE_BYTES + RUNTIME_RESERVE
    assert SOFT_LIMIT_SHARE == CGROUP_FRACTION
    assert minimum_memory_limit(WORKER_BASELINE_BYTES) == MIN_WORKER_MEMORY
    assert MIN_WORKER_MEMORY < MIN_POD_MEMORY  # "auto" never sizes a pod a worker refuses


@pytest.mark.parametrize(
    "sizing",
    [
        pytest.param(size(**INCIDENT), id="incident"),
        pytest.param(size(objects=10, total_bytes=10 * GiB, median=GiB, p99=GiB, shards=1), id="large"),
        pytest.param(size_from_histogram(Planner().histogram(), 1), id="empty"),
    ],
)
def test_auto_sized_pods_leave_the_worker_room_for_8_mib_parts(sizing: Sizing) -> None:
    worker_budget = sizing.memory_limit_bytes
    plan = plan_memory(MemoryBudget(worker_budget, "FERRY_MEMORY_LIMIT"), WORKER_BASELINE_BYTES)
    assert plan.part_size == DEFAULT_PART


@pytest.mark.parametrize(
    ("override", "warned"),
    [(64 * MiB, True), (MIN_WORKER_MEMORY - MiB, True), (MIN_WORKER_MEMORY, False), (256 * MiB, False)],
    ids=["64Mi", "just-below", "minimum", "256Mi"],
)
def test_a_memory_override_below_what_a_worker_needs_is_explained(override: int, warned: bool) -> None:
    sizing = size(**INCIDENT, memory_override=override)
    assert sizing.pod_memory_bytes == override
    assert ("every shard would fail at once" in sizing.reason) is warned
    if warned:
        assert f"{MIN_WORKER_MEMORY // MiB}Mi" in sizing.reason


# --- spec.target.deadline: the rate it needs, and a prediction that agrees with it -------------------------


@pytest.mark.parametrize(
    ("objects", "deadline", "needs"),
    [
        (1_000, 86_400.0, "0.0116"),  # a day for a thousand objects: far below one object per second
        (10, 3_600.0, "0.00278"),
        (1_000_000, 3_600.0, "278"),
        (1_000_000, 10_000.0, "100"),
        (1_000_000, 100.0, "10,000"),
    ],
    ids=["day-for-1000", "hour-for-10", "hour-for-a-million", "100-per-s", "tight"],
)
def test_a_deadline_names_the_rate_it_needs_and_predicts_within_it(
    objects: int, deadline: float, needs: str
) -> None:
    sizing = size(**_deadline(deadline, objects=objects, total_bytes=objects * 100 * KB))
    assert f"which needs {needs} objects/s" in sizing.reason, sizing.reason
    assert " 0 objects/s" not in sizing.reason
    assert sizing.needed_objects_per_second == pytest.approx(objects / deadline)
    assert sizing.predicted_seconds is not None
    assert 1 <= sizing.predicted_seconds <= math.ceil(deadline)
    assert "past the deadline" not in sizing.reason


@pytest.mark.parametrize(
    ("shards", "cap", "parallelism", "predicted"),
    [(10, None, 10, 2_000), (1000, 4, 4, 5_000), (1, None, 1, 20_000)],
    ids=["by-shards", "by-cap", "one-shard"],
)
def test_a_deadline_the_pods_cannot_meet_says_by_how_much_it_is_missed(
    shards: int, cap: int | None, parallelism: int, predicted: int
) -> None:
    sizing = size(**_deadline(100.0, shards=shards, parallelism_cap=cap))
    assert (sizing.parallelism, sizing.predicted_seconds) == (parallelism, predicted)
    assert f"takes about {format_duration(predicted)}" in sizing.reason, sizing.reason
    assert f"{format_duration(predicted - 100)} past the deadline" in sizing.reason


@pytest.mark.parametrize("deadline", [-3_600.0, 0.0], ids=["an-hour-ago", "at-the-listing"])
def test_a_deadline_already_past_says_so_and_sizes_as_without_a_target(deadline: float) -> None:
    sizing = size(**_deadline(deadline))
    without = size(**INCIDENT | {"target_objects_per_second": None})
    assert f"had passed {format_duration(-deadline)} before the source was listed" in sizing.reason
    assert sizing.needed_objects_per_second is None
    assert (sizing.parallelism, sizing.predicted_seconds) == (without.parallelism, without.predicted_seconds)


@pytest.mark.parametrize(
    ("target", "shards", "held"),
    [(100, 1000, None), (1000, 5, "held to 5 pod(s)"), (100_000, 1000, "held to 1000 pod(s)")],
    ids=["met", "by-shards", "by-hard-cap"],
)
def test_an_objects_per_second_target_names_itself_and_says_when_it_is_held_back(
    target: int, shards: int, held: str | None
) -> None:
    sizing = size(**{**INCIDENT, "target_objects_per_second": target, "shards": shards})
    assert f"for a target of {target:,} objects/s" in sizing.reason
    assert sizing.needed_objects_per_second == target
    assert (held is not None and held in sizing.reason) or (held is None and "held to" not in sizing.reason)


@pytest.mark.parametrize("objects", [1, 10, 49], ids=["1", "10", "49"])
def test_a_small_job_is_never_predicted_to_take_zero_seconds(objects: int) -> None:
    sizing = size(objects=objects, total_bytes=objects * KB, median=KB, p99=KB, shards=1)
    assert sizing.predicted_seconds == 1


def _deadline(seconds: float, **changes: Any) -> dict[str, Any]:
    """The incident's job with a deadline instead of its objects/s target."""
    return {**INCIDENT, "target_objects_per_second": None, "deadline_seconds": seconds, **changes}


@pytest.mark.parametrize(
    ("target", "shards", "cpu", "fixed", "cap", "expected_cpu", "expected_processes"),
    [
        # Enough pods for the target: each keeps the CPU it was given.
        (100, 1000, 1000, False, 4000, 1000, 1),
        # Held to 2 pods (shards) for 400 objects/s at 50 per CPU: 4 CPUs each, within the cap.
        (400, 2, 1000, False, 4000, 4000, 4),
        # The platform's cap bounds the raise.
        (1000, 2, 1000, False, 4000, 4000, 4),
        # A CopyJob that fixed its CPU keeps it, target or not.
        (400, 2, 1000, True, 4000, 1000, 1),
        # Two CPUs given: two processes, the target needs no more.
        (100, 1, 2000, False, 4000, 2000, 2),
        # Best-effort pods (no CPU request) are never given one.
        (400, 2, None, False, 4000, None, 1),
    ],
    ids=["enough-pods", "raised", "capped", "fixed", "given-two", "best-effort"],
)
def test_a_target_held_back_by_few_pods_asks_for_more_cpus_per_pod(
    target: int,
    shards: int,
    cpu: int | None,
    fixed: bool,
    cap: int,
    expected_cpu: int | None,
    expected_processes: int,
) -> None:
    sizing = size(
        **{**INCIDENT, "target_objects_per_second": target, "shards": shards},
        cpu_millis=cpu,
        cpu_fixed=fixed,
        max_cpu_millis=cap,
    )
    assert (sizing.cpu_millis, sizing.processes) == (expected_cpu, expected_processes)
    if expected_processes > 1:
        assert (
            f"{expected_processes} CPUs per pod, copying in {expected_processes} processes" in sizing.reason
        )


def test_each_copy_process_adds_its_baseline_to_the_pod_memory() -> None:
    job = {**INCIDENT, "target_objects_per_second": None}
    one = size(**job, cpu_millis=1000)
    four = size(**job, cpu_millis=4000)
    assert four.processes == 4
    added = int(4 * PROCESS_BASELINE_BYTES / SOFT_LIMIT_SHARE)
    assert (
        one.pod_memory_bytes + added - 64 * MiB
        <= four.pod_memory_bytes
        <= one.pod_memory_bytes + added + 64 * MiB
    )
    # Planned at a fifth of each process's CPU bound: four processes, four times the per-pod rate.
    assert four.predicted_seconds is not None and one.predicted_seconds is not None
    assert (one.parallelism, four.parallelism) == (4, 4)
    assert four.predicted_seconds == math.ceil(one.predicted_seconds / 4)
