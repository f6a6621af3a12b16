"""How many copy processes a worker runs: from the CPUs asked for, the cgroup's quota and the budget."""

from __future__ import annotations

import pytest

from ferry.worker.copyprocs import (
    MAX_PROCESSES,
    PROCESS_BASELINE_BYTES,
    copy_processes_for,
    cpus_from_cgroup,
    parse_processes,
)

MiB = 2**20


@pytest.mark.parametrize(
    ("requested", "budget", "expected"),
    [
        (1, None, 0),  # one CPU: the worker copies in its own threads
        (0, None, 0),
        (2, None, 2),
        (4, 1024 * MiB, 4),
        (99, None, MAX_PROCESSES),
        # Copy processes take at most half the budget: 512 MiB holds 4 of 52 MiB, not 8.
        (8, 512 * MiB, 4),
        # Room for only one more process is no gain over the worker's own threads.
        (4, 3 * PROCESS_BASELINE_BYTES, 0),
        (2, 4 * PROCESS_BASELINE_BYTES, 2),
    ],
)
def test_copy_processes_for(requested: int, budget: int | None, expected: int) -> None:
    assert copy_processes_for(requested, budget) == expected


@pytest.mark.parametrize(
    ("cpu_max", "quota", "period", "expected"),
    [
        ("200000 100000\n", None, None, 2.0),
        ("150000 100000", None, None, 1.5),
        ("max 100000\n", None, None, None),
        ("garbage", None, None, None),
        ("0 100000", None, None, None),
        (None, "400000\n", "100000\n", 4.0),
        (None, "-1\n", "100000\n", None),
        (None, "x", "100000", None),
        (None, None, None, None),
    ],
    ids=[
        "v2-two",
        "v2-fraction",
        "v2-unlimited",
        "v2-garbage",
        "v2-zero",
        "v1-four",
        "v1-none",
        "v1-bad",
        "none",
    ],
)
def test_cpus_from_cgroup(
    cpu_max: str | None, quota: str | None, period: str | None, expected: float | None
) -> None:
    assert cpus_from_cgroup(cpu_max, quota, period) == expected


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("2", 2), (" 16 ", 16)])
def test_parse_processes_counts(text: str, expected: int) -> None:
    assert parse_processes(text) == expected


def test_parse_processes_auto_is_within_bounds() -> None:
    assert 1 <= parse_processes("auto") <= MAX_PROCESSES


@pytest.mark.parametrize("text", ["0", "17", "-1", "two", "", "1.5", "2" * 40])
def test_parse_processes_refuses_what_is_not_a_count(text: str) -> None:
    with pytest.raises(ValueError, match="from 1 to 16 or auto") as raised:
        parse_processes(text)
    assert len(str(raised.value)) < 120  # a hostile value is not echoed whole
