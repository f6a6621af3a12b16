"""The worker's memory budget: where it comes from and what the process uses now.

`FERRY_MEMORY_LIMIT` (set by the operator, like Go's GOMEMLIMIT: a soft budget below the pod's hard
limit) wins; else a fraction of the cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); else a
fraction of the machine's memory. Parsing is pure; the readers at the bottom are the only I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferry.model.quantity import parse_bytes

#: Share of a cgroup's hard limit the worker plans to use: the rest is headroom for the interpreter,
#: allocator fragmentation and bursts between RSS samples.
CGROUP_FRACTION = 0.8
#: Share of a machine without a limit: `ferry run` on a laptop must leave room for everything else.
MACHINE_FRACTION = 0.25
#: cgroup v1 reports "no limit" as a huge number near 2^63.
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # shown in status: where the number came from


def choose_budget(
    env_value: str | None, cgroup_v2: str | None, cgroup_v1: str | None, machine_bytes: int
) -> MemoryBudget:
    """Pick the budget from what the environment offers. Raises ValueError for a bad env value."""
    if env_value:
        try:
            return MemoryBudget(parse_bytes(env_value.strip()), "FERRY_MEMORY_LIMIT")
        except ValueError as exc:
            raise ValueError(f"FERRY_MEMORY_LIMIT: {exc}") from exc
    for text, name in ((cgroup_v2, "cgroup v2 memory.max"), (cgroup_v1, "cgroup v1 memory.limit_in_bytes")):
        if text is None or text.strip() in ("", "max"):
            continue
        limit = int(text.strip())
        if 0 < limit < _UNLIMITED:
            return MemoryBudget(int(limit * CGROUP_FRACTION), f"{CGROUP_FRACTION:.0%} of {name}")
    return MemoryBudget(int(machine_bytes * MACHINE_FRACTION), f"{MACHINE_FRACTION:.0%} of machine memory")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def detect_budget() -> MemoryBudget:
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return choose_budget(
        os.environ.get("FERRY_MEMORY_LIMIT"),
        _read("/sys/fs/cgroup/memory.max"),
        _read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        machine,
    )


_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident set size of this process, in bytes (0 where /proc is unavailable)."""
    text = _read("/proc/self/statm")
    return int(text.split()[1]) * _PAGE if text else 0
