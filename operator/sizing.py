"""Sizing: from the object-size histogram (or the declared distribution before listing) to worker pod
memory, the worker's `FERRY_MEMORY_LIMIT`, its initial and maximum concurrency, and how many pods meet
`spec.target`. Pure; every constant below is a measured figure or a stated assumption.

The incident this replaces budgeted 50 MiB per transfer of 100 KB objects. A streaming transfer really
holds one part buffer (the object itself when smaller than a part) plus about 0.2 MiB of thread and
connection state (measured with boto3; the worker learns the real overhead at run time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ferry.model.quantity import format_duration
from ferry.operator.planning import Histogram
from ferry.worker.budget import CGROUP_FRACTION, RUNTIME_RESERVE, minimum_memory_limit
from ferry.worker.copyprocs import MAX_PROCESSES, PROCESS_BASELINE_BYTES, copy_processes_for
from ferry.worker.parts import DEFAULT_PART, TRANSFER_OVERHEAD_BYTES, transfer_memory

MiB = 2**20
#: A worker's baseline as its budget counts it: anonymous resident memory with both S3 clients made,
#: before the first transfer (interpreter, botocore's S3 model and endpoint rules). Measured 48-52 MiB
#: in ferry:dev under cgroup limits of 128-256 MiB (66 MiB RSS with shared libraries' file pages, which
#: the kernel can reclaim); rounded up. The worker measures its own at start and sizes parts from it.
WORKER_BASELINE_BYTES = 56 * MiB
#: Memory outside every transfer's reservation: the baseline plus the worker's runtime reserve (listing
#: pages, thread pool; budget.RUNTIME_RESERVE).
BASELINE_BYTES = WORKER_BASELINE_BYTES + RUNTIME_RESERVE
#: Per-transfer overhead beyond the payload buffer (thread, connection, parser state).
OVERHEAD_BYTES = TRANSFER_OVERHEAD_BYTES
#: FERRY_MEMORY_LIMIT is this share of the pod limit, like GOMEMLIMIT below a cgroup limit; the worker
#: takes the same share of its cgroup limit when FERRY_MEMORY_LIMIT is absent.
SOFT_LIMIT_SHARE = CGROUP_FRACTION
#: The smallest pod memory a worker can copy in: its baseline and one transfer of a 5 MiB part in the
#: soft limit. Below it the worker ends every shard at once (exit 2) with this figure in its message.
MIN_WORKER_MEMORY = minimum_memory_limit(WORKER_BASELINE_BYTES)
#: What one worker process sustains on small objects over a remote link, conservatively: a fifth of the
#: 250 objects/s one core gave when it was set, so the target holds under latency and throttling. Since
#: the lean transport one core copies 1,200-2,000 objects/s of 10 KB (make bench-small, make bench-cpus),
#: so the assumption is now far below a fifth; it is kept until remote-link figures replace it.
OBJECTS_PER_SECOND_PER_POD = 50.0
#: What one worker pod sustains on large objects (bytes/s), conservatively.
BYTES_PER_SECOND_PER_POD = 50 * MiB
#: Floor of "auto" sizing: room for a handful of 8 MiB parts beside the baseline.
MIN_POD_MEMORY = 256 * MiB
MAX_CONCURRENCY_PER_POD = 512
WORKING_SET_CAP = 1024 * MiB


@dataclass(frozen=True)
class Sizing:
    pod_memory_bytes: int
    memory_limit_bytes: int  # FERRY_MEMORY_LIMIT
    initial_concurrency: int
    max_concurrency: int
    parallelism: int
    predicted_seconds: int | None
    reason: str  # one sentence a user can check
    #: Objects/s spec.target asks for (a deadline's: the objects over the time left); None without one,
    #: or when the deadline had passed before the listing.
    needed_objects_per_second: float | None = None
    #: Millicores each worker pod asks for: the CopyJob's or the platform's request, raised when spec.target
    #: needs more than the pods allowed give at that (see `size`); None: no CPU request.
    cpu_millis: int | None = None
    #: Processes a worker pod copies in: one per whole CPU it asks for (`copyprocs.copy_processes_for`).
    processes: int = 1


def per_transfer_bytes(size: int, part_size: int = DEFAULT_PART) -> int:
    """What the worker reserves for one transfer of ``size`` bytes (see `transfer_memory`)."""
    return transfer_memory(size, part_size, server_side=False) + OVERHEAD_BYTES


def size(
    *,
    objects: int,
    total_bytes: int,
    median: int,
    p99: int,
    shards: int,
    target_objects_per_second: int | None = None,
    deadline_seconds: float | None = None,
    parallelism_cap: int | None = None,
    memory_override: int | None = None,
    concurrency_max: int = 512,
    part_size: int = DEFAULT_PART,
    cpu_millis: int | None = None,
    cpu_fixed: bool = False,
    max_cpu_millis: int | None = None,
) -> Sizing:
    """Size a CopyJob's workers. ``median``/``p99`` are object sizes in bytes. ``cpu_millis`` is each pod's
    CPU request as the CopyJob (``cpu_fixed``) or the platform sets it, ``max_cpu_millis`` the platform's cap.

    CPU: a pod copies in one process per whole CPU, and sizing plans a fifth of each process's CPU bound
    (`OBJECTS_PER_SECOND_PER_POD` per CPU). When spec.target needs more than the pods allowed (by the
    shards or the parallelism limit) give, and the CopyJob did not fix its CPU, each pod asks for the CPUs
    that close the gap, up to the platform's cap: a job of few shards meets its target with bigger pods.
    Pods without a CPU request (best effort) copy in one process and are never given one."""
    # Concurrency: enough transfers of the p99 size to keep a pod busy, bounded by spec.concurrency.max.
    # Payload memory is capped at WORKING_SET_CAP: 512 transfers of 100 KB, or 120 of 8 MiB parts.
    by_memory = max(4, WORKING_SET_CAP // per_transfer_bytes(median, part_size))
    max_concurrency = max(1, min(concurrency_max, MAX_CONCURRENCY_PER_POD, by_memory))
    initial = max(1, min(max_concurrency, 64 if median <= MiB else 8))

    # Pods: what the target needs, at the conservative per-pod rates, never more than shards or the cap.
    per_process_rate = objects_per_second_per_pod(objects, total_bytes)
    processes = processes_for(cpu_millis)
    per_pod_rate = per_process_rate * processes
    needed_rate = None
    if target_objects_per_second:
        needed_rate = float(target_objects_per_second)
    elif deadline_seconds is not None and deadline_seconds > 0:
        needed_rate = objects / max(1.0, deadline_seconds)
    pods = math.ceil(needed_rate / per_pod_rate) if needed_rate else min(4, shards)
    cap = parallelism_cap or 1000
    parallelism = max(1, min(pods, shards, cap))
    if needed_rate and pods > parallelism and cpu_millis is not None and not cpu_fixed:
        # Held to fewer pods than the target needs: more CPUs per pod instead, within the platform's cap.
        wanted = math.ceil(needed_rate / (parallelism * per_process_rate))
        ceiling = min(MAX_PROCESSES, (max_cpu_millis or MAX_PROCESSES * 1000) // 1000)
        if min(wanted, ceiling) > processes:
            processes = min(wanted, ceiling)
            cpu_millis = processes * 1000
            per_pod_rate = per_process_rate * processes
            pods = math.ceil(needed_rate / per_pod_rate)
    # Memory: the baseline (each copy process adds its own) plus the max concurrency of median-sized
    # transfers, with room for p99 ones (the adaptive manager's admission keeps the real mix within
    # FERRY_MEMORY_LIMIT anyway).
    working_set = max_concurrency * per_transfer_bytes(median, part_size) + 8 * per_transfer_bytes(
        p99, part_size
    )
    copy_processes = copy_processes_for(processes, None)
    baseline = BASELINE_BYTES + copy_processes * PROCESS_BASELINE_BYTES
    pod_memory = memory_override or _round_up(
        max(MIN_POD_MEMORY, int((baseline + working_set) / SOFT_LIMIT_SHARE))
    )
    memory_limit = int(pod_memory * SOFT_LIMIT_SHARE)
    # Rounded up: ten objects take a moment, not "0s".
    predicted = math.ceil(objects / (parallelism * per_pod_rate)) if objects else 0
    reason = f"{parallelism} pod(s) x {_rate(per_pod_rate)} objects/s planned per pod"
    if target_objects_per_second:
        reason += f" for a target of {_rate(needed_rate or 0)} objects/s"
        if pods > parallelism:
            reason += (
                f"; held to {parallelism} pod(s) by the shards or the parallelism limit, about "
                f"{_rate(parallelism * per_pod_rate)} objects/s"
            )
    elif deadline_seconds is not None:
        reason += _deadline_note(deadline_seconds, needed_rate, predicted, pods > parallelism)
    reason += (
        f"; {_mib(pod_memory)} per pod for up to {max_concurrency} transfers of "
        f"{_mib(per_transfer_bytes(median, part_size), 2)}"
    )
    if copy_processes:
        reason += f"; {processes} CPUs per pod, copying in {copy_processes} processes"
    if pod_memory < MIN_WORKER_MEMORY:
        reason += (
            f"; {_mib(pod_memory)} is below the {MIN_WORKER_MEMORY // MiB}Mi a worker needs (its baseline "
            "and one 5 MiB part): every shard would fail at once; raise spec.resources.memory or set it to auto"
        )
    return Sizing(
        pod_memory,
        memory_limit,
        initial,
        max_concurrency,
        parallelism,
        predicted,
        reason,
        needed_rate,
        cpu_millis,
        processes,
    )


def processes_for(cpu_millis: int | None) -> int:
    """Processes a pod asking for ``cpu_millis`` copies in: one per whole CPU (1-`MAX_PROCESSES`)."""
    return max(1, min(MAX_PROCESSES, (cpu_millis or 0) // 1000))


def objects_per_second_per_pod(objects: int, total_bytes: int) -> float:
    """The rate sizing assumes one pod sustains on objects of this mean size: an assumption, not a
    measurement (`OBJECTS_PER_SECOND_PER_POD` for small objects, `BYTES_PER_SECOND_PER_POD` for large)."""
    return min(OBJECTS_PER_SECOND_PER_POD, BYTES_PER_SECOND_PER_POD / max(1, total_bytes / max(1, objects)))


def _deadline_note(seconds: float, needed_rate: float | None, predicted: int, capped: bool) -> str:
    """How spec.target.deadline was sized for, counted from the listing: the rate it needs and, when the
    pods allowed cannot meet it, by how much the prediction misses it."""
    if seconds <= 0:
        return (
            f"; spec.target.deadline had passed {format_duration(-seconds)} before the source was listed: "
            "sized as without a target"
        )
    note = (
        f" for the deadline {format_duration(seconds)} after the listing, which needs "
        f"{_rate(needed_rate or 0)} objects/s"
    )
    if capped and predicted > seconds:
        note += (
            f"; at that the copy takes about {format_duration(predicted)}, "
            f"{format_duration(predicted - seconds)} past the deadline: it needs more pods than there are "
            "shards or the parallelism limit allows"
        )
    return note


def size_from_histogram(histogram: Histogram, shards: int, **kwargs: object) -> Sizing:
    return size(
        objects=histogram.objects,
        total_bytes=histogram.bytes,
        median=histogram.quantile(0.5),
        p99=histogram.quantile(0.99),
        shards=shards,
        **kwargs,  # type: ignore[arg-type]
    )


def _round_up(value: int, step: int = 64 * MiB) -> int:
    return -(-value // step) * step


def _rate(value: float) -> str:
    """Objects/s as people read them: 0.0116, 2.5, 27.8, 1,389 (never "0" for a rate above zero)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _mib(value: int, digits: int = 0) -> str:
    return f"{value / MiB:.{digits}f} MiB"
