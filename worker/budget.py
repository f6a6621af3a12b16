"""The worker's memory budget: where it comes from, what the process needs before its first transfer,
what part size fits, and how much memory it really used.

The rules:

1. **The budget.** `FERRY_MEMORY_LIMIT` (set by the operator, like Go's GOMEMLIMIT: a soft budget below
   the pod's hard limit) wins, capped at 80% of the cgroup's hard limit; else 80% of the cgroup's hard
   limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes`` of the process's own cgroup); else a quarter
   of the machine's memory.
2. **The baseline is measured.** What the process holds once its S3 clients are made (interpreter,
   botocore's models and endpoint rules) is read from /proc, not assumed: its anonymous resident memory
   (~50 MiB; 66 MiB with the shared libraries' file pages, which the kernel can reclaim). A fixed runtime
   reserve covers what grows outside any transfer (listing pages, the thread pool), and RSS samples
   taken while it runs count whatever exceeds it.
3. **Reserve before allocating.** A transfer is admitted only when baseline + runtime reserve + every
   reservation + its own fits the budget, so the worker stays under it instead of reacting once over.
4. **Part size follows the budget**, between S3's 5 MiB minimum and the preferred 8 MiB, so that
   `PARTS_IN_FLIGHT` part buffers fit next to the baseline.
5. **Fail fast.** When even the baseline plus one transfer of a 5 MiB part does not fit, the worker
   does not start: `BudgetTooSmall` names `spec.resources.memory` and the minimum, in MiB, rounded up.

Everything above the I/O section is pure and table-tested; the readers below it are the only I/O.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ferry.model.quantity import parse_bytes
from ferry.worker.parts import DEFAULT_PART, MIN_PART, TRANSFER_OVERHEAD_BYTES

MiB = 2**20
#: Share of a cgroup's hard limit the worker plans to use: the rest is headroom for what no RSS sample
#: shows (kernel memory, page cache the kernel must reclaim first, bursts between samples). The operator
#: sets FERRY_MEMORY_LIMIT to the same share of the pod's limit (sizing.SOFT_LIMIT_SHARE).
CGROUP_FRACTION = 0.8
#: Share of a machine without a limit: `ferry run` on a laptop must leave room for everything else.
MACHINE_FRACTION = 0.25
#: cgroup v1 reports "no limit" as a huge number near 2^63.
_UNLIMITED = 1 << 60
#: Memory a run adds to its start-up baseline outside any transfer's reservation: two listings with
#: their prefetched pages of 1,000 keys (0.2 MiB each as ObjectInfo, plus the parsed XML of the page
#: being read), the copy threads' pool, the status server. Measured 1-4 MiB above baseline plus
#: reservations in `ferry run --timeline` under 80-96 MiB limits; rounded up for full listings.
RUNTIME_RESERVE = 8 * MiB
#: What the two S3 clients (and the lean transports) add to the anonymous resident memory of the
#: imported worker: measured 15 MiB (botocore's S3 model and endpoint rules). Used only before they
#: exist, so a budget that can never work fails before the clients could push the process over it.
CLIENTS_ESTIMATE = 15 * MiB
#: The least they add: that early check refuses only budgets below this, so it never refuses one the
#: measured baseline would accept (its message names the minimum from `CLIENTS_ESTIMATE`).
CLIENTS_AT_LEAST = 12 * MiB
#: Part buffers the part size leaves room for, next to the baseline, before it shrinks toward 5 MiB.
PARTS_IN_FLIGHT = 4


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # shown in status: where the number came from
    limit_bytes: int | None = None  # the cgroup's hard limit, when there is one


def _limit(text: str | None) -> int | None:
    if text is None or text.strip() in ("", "max"):
        return None
    limit = int(text.strip())
    return limit if 0 < limit < _UNLIMITED else None


def choose_budget(
    env_value: str | None, cgroup_v2: str | None, cgroup_v1: str | None, machine_bytes: int
) -> MemoryBudget:
    """Pick the budget from what the environment offers. Raises ValueError for a bad env value."""
    hard: tuple[int, str] | None = None
    for text, name in ((cgroup_v2, "cgroup v2 memory.max"), (cgroup_v1, "cgroup v1 memory.limit_in_bytes")):
        limit = _limit(text)
        if limit is not None:
            hard = (limit, name)
            break
    if env_value:
        try:
            wanted = parse_bytes(env_value.strip())
        except ValueError as exc:
            raise ValueError(f"FERRY_MEMORY_LIMIT: {exc}") from exc
        if hard is not None and wanted > int(hard[0] * CGROUP_FRACTION):
            return MemoryBudget(
                int(hard[0] * CGROUP_FRACTION),
                f"{CGROUP_FRACTION:.0%} of {hard[1]} (FERRY_MEMORY_LIMIT {wanted} is above it)",
                hard[0],
            )
        return MemoryBudget(wanted, "FERRY_MEMORY_LIMIT", hard[0] if hard else None)
    if hard is not None:
        return MemoryBudget(int(hard[0] * CGROUP_FRACTION), f"{CGROUP_FRACTION:.0%} of {hard[1]}", hard[0])
    return MemoryBudget(int(machine_bytes * MACHINE_FRACTION), f"{MACHINE_FRACTION:.0%} of machine memory")


# -- what fits --------------------------------------------------------------------------------------------


def _mib_up(value: float) -> int:
    return -(-int(value) // MiB)


def minimum_budget(baseline: int) -> int:
    """The smallest budget a worker with this baseline can copy in: one transfer of a 5 MiB part."""
    return baseline + RUNTIME_RESERVE + MIN_PART + TRANSFER_OVERHEAD_BYTES


def check_before_clients(budget: MemoryBudget, rss_now: int) -> None:
    """Raise `BudgetTooSmall` when the budget cannot hold the S3 clients still to be made and one
    transfer beside what the process holds now (``rss_now``: anonymous resident bytes)."""
    if budget.bytes < minimum_budget(rss_now + CLIENTS_AT_LEAST):
        raise BudgetTooSmall(budget, rss_now + CLIENTS_ESTIMATE, measured=False)


def minimum_memory_limit(baseline: int) -> int:
    """The smallest pod memory limit (`spec.resources.memory`) that gives that budget, in whole MiB."""
    return _mib_up(minimum_budget(baseline) / CGROUP_FRACTION) * MiB


class BudgetTooSmall(ValueError):
    """The budget cannot hold the baseline and one transfer: retrying or waiting cannot help."""

    def __init__(self, budget: MemoryBudget, baseline: int, *, measured: bool = True) -> None:
        self.budget = budget
        self.baseline = baseline
        self.minimum_budget = minimum_budget(baseline)
        self.minimum_limit = minimum_memory_limit(baseline)
        super().__init__(
            f"memory budget too small: {_mib_up(budget.bytes)} MiB ({budget.source}) cannot hold the "
            f"worker's baseline of {_mib_up(baseline)} MiB (interpreter and S3 clients, "
            f"{'measured' if measured else 'expected'}) plus "
            f"{RUNTIME_RESERVE // MiB} MiB for listing and one transfer of a {MIN_PART // MiB} MiB part; "
            f"set spec.resources.memory to at least {self.minimum_limit // MiB}Mi (a budget of "
            f"{_mib_up(self.minimum_budget)} MiB; FERRY_MEMORY_LIMIT or a container's memory limit for "
            "ferry run), or to auto"
        )


class TransferTooLarge(Exception):
    """One object's transfer needs more than the budget can ever hold (its part size is forced up by
    S3's 10,000-part limit): that object fails with this message, the rest of the shard goes on."""

    def __init__(self, need: int, budget: MemoryBudget, floor: int) -> None:
        self.need = need
        limit = _mib_up((floor + need) / CGROUP_FRACTION)
        super().__init__(
            f"this object's transfer holds one {_mib_up(need)} MiB part in memory (large objects need large "
            "parts: S3 allows 10,000), "
            f"more than the {_mib_up(budget.bytes - floor)} MiB the memory budget of {_mib_up(budget.bytes)} MiB "
            f"({budget.source}) leaves beside the worker's baseline; set spec.resources.memory to at least "
            f"{limit}Mi"
        )


@dataclass(frozen=True)
class MemoryPlan:
    """What a measured baseline leaves for transfers, and the part size that follows from it."""

    budget: int
    baseline: int
    part_size: int

    @property
    def floor(self) -> int:
        """Memory held outside every reservation: the baseline plus the runtime reserve."""
        return self.baseline + RUNTIME_RESERVE

    @property
    def largest_transfer(self) -> int:
        """The largest reservation that can ever be admitted (with nothing else in flight)."""
        return self.budget - self.floor


def part_size_for_budget(budget: int, baseline: int, preferred: int = DEFAULT_PART) -> int:
    """The part size that lets `PARTS_IN_FLIGHT` parts fit beside the baseline: ``preferred`` when
    there is room, shrinking in whole MiB toward S3's 5 MiB minimum when there is not."""
    room = budget - baseline - RUNTIME_RESERVE
    per_part = room // PARTS_IN_FLIGHT - TRANSFER_OVERHEAD_BYTES
    size = per_part // MiB * MiB
    return max(MIN_PART, min(max(preferred, MIN_PART), size))


def plan_memory(budget: MemoryBudget, baseline: int, preferred_part: int = DEFAULT_PART) -> MemoryPlan:
    """The part size for this budget and baseline. Raises `BudgetTooSmall` when one minimal transfer
    does not fit beside the baseline."""
    if budget.bytes < minimum_budget(baseline):
        raise BudgetTooSmall(budget, baseline)
    return MemoryPlan(budget.bytes, baseline, part_size_for_budget(budget.bytes, baseline, preferred_part))


def committed(floor: int, rss: int | None, reserved_at_sample: int) -> int:
    """Memory held outside reservations: the measured floor, or more when the last RSS sample says so
    (RSS minus what was reserved when it was taken; reservations never undercount what they hold, since
    they are made before the buffers exist)."""
    if not rss:
        return floor
    return max(floor, rss - reserved_at_sample)


def admits(*, budget: int, floor: int, held: int, reserved: int, need: int, in_flight: int) -> bool:
    """Whether a transfer reserving ``need`` may start now.

    ``held`` is `committed` memory. With nothing in flight only the floor counts, so a transfer that
    fits the budget at all always runs eventually (memory the allocator has not handed back yet must
    not stall the worker forever); otherwise every reservation and the measured excess count.
    """
    if in_flight == 0:
        return floor + need <= budget
    return max(floor, held) + reserved + need <= budget


# -- I/O: the cgroup, /proc and the allocator ---------------------------------------------------------------


def cgroup_memory_dir(proc_cgroup: str, mountinfo: str) -> tuple[str, int] | None:
    """The directory of this process's memory cgroup and its version (1 or 2), from the texts of
    /proc/self/cgroup and /proc/self/mountinfo. Pure.

    The cgroup path is taken relative to the mount's root: in a container the mount's root is the
    container's own cgroup (v1, or v2 with a cgroup namespace); on a host it is the hierarchy's root and
    the process's path leads to its cgroup. v1's memory controller wins over v2 (hybrid hosts mount an
    empty v2 hierarchy beside it).
    """
    paths: dict[int, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            paths.setdefault(1, path)
        elif parts[0] == "0" and controllers == "":
            paths.setdefault(2, path)
    mounts: dict[int, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split()
        if len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2]
        root, mountpoint = fields[3], fields[4]
        if fstype == "cgroup" and "memory" in options.split(","):
            mounts.setdefault(1, (root, mountpoint))
        elif fstype == "cgroup2":
            mounts.setdefault(2, (root, mountpoint))
    for version in (1, 2):
        if version not in paths or version not in mounts:
            continue
        root, mountpoint = mounts[version]
        path = paths[version]
        if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
            path = path[len(root) :]
        elif root != "/" or path.startswith("/.."):
            path = "/"  # another namespace's view: the mount itself is the best guess
        return mountpoint.rstrip("/") + ("/" + path.strip("/") if path.strip("/") else ""), version
    return None


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class MemoryPeak:
    bytes: int | None
    source: str


@dataclass(frozen=True)
class Cgroup:
    """This process's memory cgroup: its hard limit, usage and peak."""

    directory: Path
    version: int

    def _file(self, v1: str, v2: str) -> Path:
        return self.directory / (v1 if self.version == 1 else v2)

    def limit_text(self) -> str | None:
        """The tightest limit of this cgroup and the ancestors it can see, as the kernel writes it."""
        if self.version == 1:
            stat = _read(self.directory / "memory.stat") or ""
            for line in stat.splitlines():
                name, _, value = line.partition(" ")
                if name == "hierarchical_memory_limit":
                    return value
            return _read(self.directory / "memory.limit_in_bytes")
        limits = []
        directory = self.directory
        while True:
            limit = _limit(_read(directory / "memory.max"))
            if limit is not None:
                limits.append(limit)
            if not (directory.parent / "memory.max").exists() or directory.parent == directory:
                break
            directory = directory.parent
        return str(min(limits)) if limits else "max"

    def usage(self) -> int | None:
        return _int(_read(self._file("memory.usage_in_bytes", "memory.current")))

    def peak(self) -> MemoryPeak | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        value = _int(_read(self.directory / name))
        return MemoryPeak(value, f"cgroup v{self.version} {name}") if value else None


def find_cgroup() -> Cgroup | None:
    found = cgroup_memory_dir(_read("/proc/self/cgroup") or "", _read("/proc/self/mountinfo") or "")
    if found is None:
        return None
    directory, version = Path(found[0]), found[1]
    probe = directory / ("memory.limit_in_bytes" if version == 1 else "memory.current")
    return Cgroup(directory, version) if probe.exists() else None


def detect_budget(cgroup: Cgroup | None = None, env: Mapping[str, str] | None = None) -> MemoryBudget:
    cgroup = cgroup or find_cgroup()
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup.limit_text() if cgroup else None
    return choose_budget(
        (os.environ if env is None else env).get("FERRY_MEMORY_LIMIT"),
        limit if cgroup and cgroup.version == 2 else None,
        limit if cgroup and cgroup.version == 1 else None,
        machine,
    )


_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident set size of this process, in bytes (0 where /proc is unavailable)."""
    text = _read("/proc/self/statm")
    return int(text.split()[1]) * _PAGE if text else 0


def anonymous_rss(pid: int | str = "self") -> int:
    """The part of the resident set the kernel cannot reclaim without swap: RSS minus file-backed pages
    (statm's resident - shared, i.e. RssAnon). Shared libraries' pages are clean, reclaimable, and
    charged to whichever cgroup read them first, so counting them would make a worker refuse budgets it
    fits in (measured: 66 MiB RSS, 49 MiB anonymous, 53 MiB charged to the container's cgroup).
    ``pid``: another process's (a copy process's); 0 once it has ended."""
    text = _read(f"/proc/{pid}/statm")
    if not text:
        return 0
    fields = text.split()
    return (int(fields[1]) - int(fields[2])) * _PAGE


def peak_rss(pid: int | str = "self") -> int | None:
    """The process's peak resident set (VmHWM), in bytes; ``pid``: another process's (None once ended)."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def memory_peak(cgroup: Cgroup | None, budget: MemoryBudget) -> MemoryPeak:
    """The peak to report: the cgroup's own when the worker runs under a limit (what the kernel's OOM
    killer compares), else the process's VmHWM (a cgroup without a limit may hold other processes)."""
    if cgroup is not None and budget.limit_bytes is not None:
        peak = cgroup.peak()
        if peak is not None:
            return peak
    return MemoryPeak(peak_rss(), "VmHWM (peak RSS of the process)")


# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations this large get their own mapping and go back to the kernel when freed. Setting it also
#: stops glibc from raising the threshold after each freed part buffer, which would move 8 MiB buffers
#: into arenas that keep them resident after the transfer ends.
MMAP_THRESHOLD = 1 * MiB


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator() -> bool:
    """Make freed part buffers leave the resident set at once (glibc only; elsewhere a no-op)."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)) and ok


def trim() -> None:
    """Hand free heap pages back to the kernel (glibc's malloc_trim), so RSS shows what is in use."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
