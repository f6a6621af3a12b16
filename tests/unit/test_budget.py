"""The worker's memory budget (worker/budget.py): where the budget comes from, which cgroup is the
process's own, the part size a budget allows, the smallest budget a worker can work in, and admission."""

from __future__ import annotations

import pytest

from ferry.worker.budget import (
    CGROUP_FRACTION,
    CLIENTS_AT_LEAST,
    CLIENTS_ESTIMATE,
    PARTS_IN_FLIGHT,
    RUNTIME_RESERVE,
    BudgetTooSmall,
    MemoryBudget,
    TransferTooLarge,
    admits,
    cgroup_memory_dir,
    check_before_clients,
    choose_budget,
    committed,
    minimum_budget,
    minimum_memory_limit,
    part_size_for_budget,
    plan_memory,
)
from ferry.worker.parts import DEFAULT_PART, MIN_PART, TRANSFER_OVERHEAD_BYTES

MiB, GiB = 2**20, 2**30
V1 = "cgroup v1 memory.limit_in_bytes"
V2 = "cgroup v2 memory.max"


@pytest.mark.parametrize(
    ("env", "v2", "v1", "expected"),
    [
        pytest.param(None, None, str(160 * MiB), MemoryBudget(128 * MiB, f"80% of {V1}", 160 * MiB), id="v1"),
        pytest.param(None, f"{GiB}\n", None, MemoryBudget(int(0.8 * GiB), f"80% of {V2}", GiB), id="v2"),
        pytest.param(
            "100Mi",
            None,
            str(160 * MiB),
            MemoryBudget(100 * MiB, "FERRY_MEMORY_LIMIT", 160 * MiB),
            id="env-below",
        ),
        pytest.param(
            str(128 * MiB),
            None,
            str(160 * MiB),
            MemoryBudget(128 * MiB, "FERRY_MEMORY_LIMIT", 160 * MiB),
            id="env-as-the-operator-sets-it",
        ),
        pytest.param(
            "1Gi",
            None,
            str(160 * MiB),
            MemoryBudget(128 * MiB, f"80% of {V1} (FERRY_MEMORY_LIMIT {GiB} is above it)", 160 * MiB),
            id="env-above-the-cgroup-is-capped",
        ),
        pytest.param(
            "1Gi", None, None, MemoryBudget(GiB, "FERRY_MEMORY_LIMIT", None), id="env-without-a-cgroup-limit"
        ),
        pytest.param(
            None, "max", "9223372036854771712", MemoryBudget(4 * GiB, "25% of machine memory"), id="unlimited"
        ),
        pytest.param(None, "", None, MemoryBudget(4 * GiB, "25% of machine memory"), id="empty-file"),
    ],
)
def test_choose_budget(env: str | None, v2: str | None, v1: str | None, expected: MemoryBudget) -> None:
    assert choose_budget(env, v2, v1, 16 * GiB) == expected


# -- which cgroup is this process's --------------------------------------------------------------------------

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
DOCKER_V1_MOUNTS = """\
700 699 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs rw,mode=755
705 700 0:32 /docker/2ae137 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
706 700 0:33 /docker/2ae137 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
"""
V2_MOUNTS = (
    "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
)
V2_NS_MOUNTS = "29 23 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"


@pytest.mark.parametrize(
    ("proc_cgroup", "mountinfo", "expected"),
    [
        pytest.param(
            "4:memory:/docker/2ae137\n1:cpu,cpuacct:/docker/2ae137\n0::/\n",
            DOCKER_V1_MOUNTS,
            ("/sys/fs/cgroup/memory", 1),
            id="docker-v1-mount-is-the-container",
        ),
        pytest.param(
            "9:name=systemd:/\n4:memory:/process_api/c140\n0::/\n",
            V1_MOUNTS,
            ("/sys/fs/cgroup/memory/process_api/c140", 1),
            id="host-v1-nested-cgroup",
        ),
        pytest.param(
            "4:memory:/\n0::/\n", V1_MOUNTS, ("/sys/fs/cgroup/memory", 1), id="host-v1-root-hybrid-prefers-v1"
        ),
        pytest.param(
            "0::/kubepods.slice/pod1/cri-abc\n",
            V2_MOUNTS,
            ("/sys/fs/cgroup/kubepods.slice/pod1/cri-abc", 2),
            id="host-v2",
        ),
        pytest.param("0::/\n", V2_NS_MOUNTS, ("/sys/fs/cgroup", 2), id="v2-cgroup-namespace"),
        pytest.param("0::/../../other\n", V2_NS_MOUNTS, ("/sys/fs/cgroup", 2), id="v2-outside-the-namespace"),
        pytest.param(
            "4:memory:/elsewhere\n",
            DOCKER_V1_MOUNTS,
            ("/sys/fs/cgroup/memory", 1),
            id="v1-path-not-under-root",
        ),
        pytest.param("", "", None, id="no-proc"),
        pytest.param("4:memory:/x\n", "", None, id="not-mounted"),
        pytest.param("garbage\n", "also garbage\n", None, id="garbage"),
    ],
)
def test_cgroup_memory_dir(proc_cgroup: str, mountinfo: str, expected: tuple[str, int] | None) -> None:
    assert cgroup_memory_dir(proc_cgroup, mountinfo) == expected


# -- what fits ------------------------------------------------------------------------------------------------


def test_minimum_budget_is_baseline_reserve_and_one_minimal_transfer() -> None:
    assert minimum_budget(50 * MiB) == 50 * MiB + RUNTIME_RESERVE + MIN_PART + TRANSFER_OVERHEAD_BYTES


@pytest.mark.parametrize(
    ("baseline", "expected_mib"),
    [
        # (49 + 8 + 5 + 0.25) / 0.8 = 77.8 -> 78 MiB: what a worker measured in ferry:dev needs.
        pytest.param(49 * MiB, 78, id="measured-in-the-image"),
        pytest.param(56 * MiB, 87, id="sizing-baseline"),
        pytest.param(0, 17, id="no-baseline"),
        pytest.param(int(54.75 * MiB), 85, id="exact-multiple-not-rounded-up"),
    ],
)
def test_minimum_memory_limit_is_whole_mib_rounded_up(baseline: int, expected_mib: int) -> None:
    limit = minimum_memory_limit(baseline)
    assert limit == expected_mib * MiB
    assert int(limit * CGROUP_FRACTION) + MiB > minimum_budget(baseline)  # enough, within a MiB
    assert (limit - MiB) * CGROUP_FRACTION < minimum_budget(baseline)  # and not a MiB more than needed


@pytest.mark.parametrize(
    ("budget", "baseline", "expected"),
    [
        pytest.param(1024 * MiB, 50 * MiB, DEFAULT_PART, id="roomy-keeps-8MiB"),
        pytest.param(128 * MiB, 50 * MiB, DEFAULT_PART, id="160Mi-pod-keeps-8MiB"),
        pytest.param(int(0.8 * 128 * MiB), 50 * MiB, DEFAULT_PART, id="128Mi-pod-8MiB"),
        pytest.param(int(0.8 * 112 * MiB), 50 * MiB, 7 * MiB, id="112Mi-pod-7MiB"),
        pytest.param(int(0.8 * 96 * MiB), 50 * MiB, MIN_PART, id="96Mi-pod-5MiB"),
        pytest.param(64 * MiB, 50 * MiB, MIN_PART, id="tiny-clamped-to-s3-minimum"),
        pytest.param(10 * MiB, 50 * MiB, MIN_PART, id="below-baseline-still-minimum"),
        pytest.param(GiB, 0, DEFAULT_PART, id="never-above-preferred"),
    ],
)
def test_part_size_follows_the_budget(budget: int, baseline: int, expected: int) -> None:
    size = part_size_for_budget(budget, baseline)
    assert size == expected
    assert size % MiB == 0 and MIN_PART <= size <= DEFAULT_PART
    if size > MIN_PART:  # shrunk only as far as needed: PARTS_IN_FLIGHT parts fit
        room = budget - baseline - RUNTIME_RESERVE
        assert PARTS_IN_FLIGHT * (size + TRANSFER_OVERHEAD_BYTES) <= room


@pytest.mark.parametrize(
    ("preferred", "expected"),
    [(16 * MiB, 16 * MiB), (MiB, MIN_PART), (64 * MiB, 49 * MiB)],
    ids=["larger-preferred", "below-s3-minimum", "capped-by-room"],
)
def test_part_size_for_budget_honours_the_preferred_size(preferred: int, expected: int) -> None:
    assert part_size_for_budget(256 * MiB, 50 * MiB, preferred) == expected


@pytest.mark.parametrize(
    ("limit_mib", "baseline_mib", "part_mib"),
    [(78, 49, 5), (96, 49, 5), (112, 49, 7), (128, 49, 8), (160, 49, 8), (1843, 49, 8)],
)
def test_plan_memory_for_limits_that_work(limit_mib: int, baseline_mib: int, part_mib: int) -> None:
    budget = choose_budget(None, None, str(limit_mib * MiB), 16 * GiB)
    plan = plan_memory(budget, baseline_mib * MiB)
    assert plan.part_size == part_mib * MiB
    assert plan.floor == baseline_mib * MiB + RUNTIME_RESERVE
    assert plan.largest_transfer >= MIN_PART + TRANSFER_OVERHEAD_BYTES


@pytest.mark.parametrize("limit_mib", [48, 64, 77], ids=["48Mi", "64Mi", "just-below"])
def test_a_budget_below_the_minimum_fails_naming_the_field_and_the_minimum(limit_mib: int) -> None:
    budget = choose_budget(None, None, str(limit_mib * MiB), 16 * GiB)
    with pytest.raises(BudgetTooSmall) as caught:
        plan_memory(budget, 49 * MiB)
    message = str(caught.value)
    assert "spec.resources.memory" in message
    assert "at least 78Mi" in message
    assert caught.value.minimum_limit == 78 * MiB
    assert f"{-(-budget.bytes // MiB)} MiB" in message and "cgroup v1" in message  # what it had, from where


def test_budget_too_small_is_a_value_error_for_the_cli() -> None:
    assert issubclass(BudgetTooSmall, ValueError)


@pytest.mark.parametrize(
    ("rss_now", "budget_mib", "fails"),
    [
        pytest.param(34 * MiB, 52, True, id="64Mi-pod-fails-before-clients"),
        pytest.param(34 * MiB, 80, False, id="96Mi-pod-goes-on"),
        # Between the lower bound and the estimate: left to the measured baseline to decide.
        pytest.param(
            34 * MiB, (34 * MiB + CLIENTS_AT_LEAST + minimum_budget(0)) // MiB + 1, False, id="doubt"
        ),
    ],
)
def test_check_before_clients(rss_now: int, budget_mib: int, fails: bool) -> None:
    budget = MemoryBudget(budget_mib * MiB, "test")
    if not fails:
        check_before_clients(budget, rss_now)
        return
    with pytest.raises(BudgetTooSmall) as caught:
        check_before_clients(budget, rss_now)
    assert caught.value.baseline == rss_now + CLIENTS_ESTIMATE  # the message uses the estimate
    assert "expected" in str(caught.value) and "spec.resources.memory" in str(caught.value)


def test_transfer_too_large_names_the_field_and_what_would_hold_it() -> None:
    budget = MemoryBudget(100 * MiB, "FERRY_MEMORY_LIMIT")
    error = TransferTooLarge(64 * MiB, budget, 58 * MiB)
    message = str(error)
    assert "64 MiB part" in message and "S3 allows 10,000" in message
    assert "42 MiB" in message  # what the budget leaves beside the floor
    assert "at least 153Mi" in message  # (58 + 64) / 0.8 = 152.5 -> 153


# -- admission -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("floor", "rss", "reserved", "expected"),
    [
        pytest.param(60, None, 10, 60, id="no-sample"),
        pytest.param(60, 0, 10, 60, id="no-proc"),
        pytest.param(60, 65, 10, 60, id="rss-within-reservations"),
        pytest.param(60, 90, 10, 80, id="rss-beyond-reservations-counts"),
        pytest.param(60, 40, 0, 60, id="never-below-the-floor"),
    ],
)
def test_committed(floor: int, rss: int | None, reserved: int, expected: int) -> None:
    assert committed(floor, rss, reserved) == expected


@pytest.mark.parametrize(
    ("floor", "held", "reserved", "need", "in_flight", "expected"),
    [
        pytest.param(60, 60, 0, 40, 0, True, id="first-fits-exactly"),
        pytest.param(60, 60, 0, 41, 0, False, id="first-does-not-fit"),
        pytest.param(60, 90, 0, 40, 0, True, id="nothing-in-flight-ignores-resident-excess"),
        pytest.param(60, 60, 30, 10, 3, True, id="fits-beside-reservations"),
        pytest.param(60, 60, 30, 11, 3, False, id="reserve-before-allocating"),
        pytest.param(60, 70, 20, 10, 2, True, id="held-within-budget"),
        pytest.param(60, 75, 20, 10, 2, False, id="measured-excess-blocks"),
        pytest.param(60, 50, 30, 10, 3, True, id="held-below-floor-uses-floor"),
    ],
)
def test_admits(floor: int, held: int, reserved: int, need: int, in_flight: int, expected: bool) -> None:
    assert (
        admits(budget=100, floor=floor, held=held, reserved=reserved, need=need, in_flight=in_flight)
        is expected
    )
