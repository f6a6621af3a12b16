"""The platform's caps applied to a plan: worker sizing, parallelism and memory under the operator's
settings, recomputed every pass from what was measured. Pure: values in, values out.

A CopyJob asks (`spec.parallelism`, `spec.resources`), the plan measured (the histogram), and the
platform caps (`OperatorSettings`); nothing stored in a tenant's namespace is taken as a number here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.model.quantity import parse_cpu, to_cpu_quantity, to_quantity
from ferry.operator.planfile import TIME_FORMAT, StoredPlan, histogram_json
from ferry.operator.planning import Histogram, group_pieces
from ferry.operator.render import fit_shards, shards_budget, worker_cpu
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing, size_from_histogram

#: Smallest room for shards.json that still holds one shard with two 1 KiB keys, however escaped.
MIN_SHARDS_BYTES = 16 * 1024


def plan_summary(plan: StoredPlan, sizing: Sizing, config_map: str) -> dict[str, Any]:
    """`status.plan` (and the stored summary): what was measured, and the sizing computed from it now."""
    histogram = plan.histogram
    return {
        "objects": histogram.objects,
        "bytes": histogram.bytes,
        "shards": len(plan.shards),
        "configMap": config_map,
        "histogram": histogram_json(histogram),
        "largestObject": histogram.largest,
        "predictedSeconds": sizing.predicted_seconds,
        "podMemory": to_quantity(sizing.pod_memory_bytes),
        "memoryLimit": to_quantity(sizing.memory_limit_bytes),
        **({"podCpu": to_cpu_quantity(sizing.cpu_millis)} if sizing.cpu_millis is not None else {}),
        "processes": sizing.processes,
        "initialConcurrency": sizing.initial_concurrency,
        "maxConcurrency": sizing.max_concurrency,
        "parallelism": sizing.parallelism,
        "listedAt": plan.listed_at.strftime(TIME_FORMAT),
        "listingProgress": {"objects": histogram.objects, "bytes": histogram.bytes},
    }


def cut_shards(
    histogram: Histogram,
    pieces: list[Shard],
    spec: CopyJobSpec,
    settings: OperatorSettings,
    listed_at: datetime,
) -> tuple[list[Shard], Sizing]:
    """Shards from planning's contiguous pieces and the workers sized for them: about four shards per
    pod the first sizing asks for (at least 100 objects each), within spec.shardSize, merged until they
    fit the plan ConfigMap. The operator stores these; `ferry plan` shows the same."""
    first = size_workers(histogram, 1000, spec, settings, listed_at)
    # The pieces as one planner answers them (merged until they fit the plan ConfigMap, as `scan.scan`
    # leaves them), so that pieces joined from several planner pods' parts give the same shards.
    pieces = fit_shards(pieces, shards_budget(spec))
    shards = fit_shards(
        group_pieces(
            pieces,
            max(1, min(first.parallelism * 4, max(1, histogram.objects // 100))),
            spec.shard_size.max_objects,
            spec.shard_size.max_bytes,
        ),
        shards_budget(spec),
    )
    return shards, size_workers(histogram, len(shards), spec, settings, listed_at)


def size_workers(
    histogram: Histogram, shards: int, spec: CopyJobSpec, settings: OperatorSettings, listed_at: datetime
) -> Sizing:
    """Size the workers from what was measured, under the platform's caps as they are now. A deadline
    counts from the listing, so every pass computes the same figures for the same plan."""
    target = spec.target
    deadline = (target.deadline - listed_at).total_seconds() if target and target.deadline else None
    args: dict[str, Any] = {
        "target_objects_per_second": target.objects_per_second if target else None,
        "deadline_seconds": deadline,
        "parallelism_cap": parallelism_cap(spec, settings),
        "memory_override": memory_override(spec, settings),
        "concurrency_max": spec.concurrency.max,
        "cpu_millis": parse_cpu(cpu) if (cpu := worker_cpu(spec, settings)) else None,
        "cpu_fixed": spec.resources.cpu is not None,
        "max_cpu_millis": settings.max_cpu_per_pod,
    }
    sizing = size_from_histogram(histogram, shards, **args)
    cap = settings.max_memory_per_pod
    if cap is not None and sizing.pod_memory_bytes > cap:
        # "auto" sized above the platform's cap: held to it, as an explicit request would be.
        sizing = size_from_histogram(histogram, shards, **{**args, "memory_override": cap})
    return sizing


def memory_override(spec: CopyJobSpec, settings: OperatorSettings) -> int | None:
    requested = (
        spec.resources.memory if isinstance(spec.resources.memory, int) else settings.default_worker_memory
    )
    if requested is not None and settings.max_memory_per_pod is not None:
        return min(requested, settings.max_memory_per_pod)
    return requested


def parallelism_cap(spec: CopyJobSpec, settings: OperatorSettings) -> int | None:
    caps = [c for c in (spec.parallelism, settings.max_pods_per_job) if c]
    return min(caps) if caps else None


def parallelism(spec: CopyJobSpec, planned: int, settings: OperatorSettings, shards: int) -> int:
    """Pods now: the user's `spec.parallelism` when set (edits apply live), else the plan's, within caps."""
    wanted = spec.parallelism or planned
    if settings.max_pods_per_job:
        wanted = min(wanted, settings.max_pods_per_job)
    return max(1, min(wanted, shards))


#: The most worker pods a CopyJob runs (the CRD's bound on spec.parallelism).
MAX_PODS = 1000


def target_cap(spec: CopyJobSpec, settings: OperatorSettings, shards_left: int) -> int:
    """The most pods the fleet law (`fleet.py`) may ask for under `spec.target`: `spec.parallelism` (with
    a target it is the cap, not the count), the platform's pods per job and the shards not complete."""
    caps = [c for c in (spec.parallelism, settings.max_pods_per_job) if c]
    return max(1, min([*caps, shards_left, MAX_PODS]))


def caps_message(spec: CopyJobSpec, settings: OperatorSettings) -> str:
    notes = []
    if spec.parallelism and settings.max_pods_per_job and spec.parallelism > settings.max_pods_per_job:
        notes.append(f"parallelism {spec.parallelism} capped at {settings.max_pods_per_job} pods per job")
    memory = spec.resources.memory
    if isinstance(memory, int) and settings.max_memory_per_pod and memory > settings.max_memory_per_pod:
        notes.append(
            f"memory {to_quantity(memory)} capped at {to_quantity(settings.max_memory_per_pod)} per pod"
        )
    cpu = spec.resources.cpu
    if cpu and settings.max_cpu_per_pod is not None and parse_cpu(cpu) > settings.max_cpu_per_pod:
        notes.append(f"cpu {cpu} capped at {to_cpu_quantity(settings.max_cpu_per_pod)} per pod")
    return "; ".join(notes) + (" by the platform's limits" if notes else "")
