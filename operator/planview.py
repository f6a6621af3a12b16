"""The plan as users see it: what `ferry plan` prints and what a CopyJob with `spec.dryRun: true` shows in
status.plan. Pure: the measured plan, the sizing and the price table in; a status document and text out.

Where it sits: after planning and sizing (`caps.cut_shards`, `caps.size_workers`). The operator renders
`plan_view` into a dry run's status.plan (operator/reconcile.py); `ferry plan` (worker/plancmd.py)
prints `plan_lines` or the same document as JSON, so both speak of one plan in the same words.
"""

from __future__ import annotations

from typing import Any

from ferry.model import CopyJobSpec, Overwrite, format_bytes
from ferry.model.quantity import format_duration
from ferry.operator.caps import plan_summary
from ferry.operator.cost import CostEstimate, Prices, cost_json, cost_lines, estimate
from ferry.operator.planfile import StoredPlan
from ferry.operator.planning import BUCKET_BOUNDS, Histogram
from ferry.operator.sizing import (
    BYTES_PER_SECOND_PER_POD,
    OBJECTS_PER_SECOND_PER_POD,
    Sizing,
    objects_per_second_per_pod,
)
from ferry.worker.parts import DEFAULT_PART

MiB = 2**20


def plan_cost(
    plan: StoredPlan,
    spec: CopyJobSpec,
    prices: Prices,
    *,
    existing: tuple[int, int] | None = None,
    list_requests: int | None = None,
    part_size: int = DEFAULT_PART,
) -> CostEstimate:
    """The cost estimate of a plan, with the route and options the worker will use for this spec."""
    return estimate(
        plan.histogram,
        plan.shards,
        prices=prices,
        server_side=spec.source.same_service(spec.destination),
        preserve_tags=spec.preserve.tags,
        compare_destination=spec.overwrite is not Overwrite.ALWAYS,
        existing=existing if spec.overwrite is not Overwrite.ALWAYS else None,
        planning_list_requests=list_requests,
        part_size=part_size,
    )


def prediction_basis(histogram: Histogram, sizing: Sizing) -> str:
    """How the predicted duration was computed, saying that its rate is an assumption."""
    rate = objects_per_second_per_pod(histogram.objects, histogram.bytes)
    return (
        f"{sizing.parallelism} pod(s) x {rate:,.3g} objects/s per pod, an assumption of sizing (at most "
        f"{OBJECTS_PER_SECOND_PER_POD:g} objects/s or {BYTES_PER_SECOND_PER_POD // MiB} MiB/s per pod), "
        "not a measurement: a run measures its real rate"
    )


def plan_view(
    plan: StoredPlan, sizing: Sizing, cost: CostEstimate, config_map: str | None = None
) -> dict[str, Any]:
    """status.plan of a dry run (and the `plan` of `ferry plan --output json`): the summary every
    CopyJob shows, plus the predicted duration with its basis and the cost estimate."""
    view = plan_summary(plan, sizing, config_map or "")
    if config_map is None:
        del view["configMap"]
    if plan.existing is not None:
        view["existing"] = {"objects": plan.existing[0], "bytes": plan.existing[1]}
    view["predictedDuration"] = format_duration(sizing.predicted_seconds)
    view["predictionBasis"] = prediction_basis(plan.histogram, sizing)
    view["cost"] = cost_json(cost)
    return view


def _bucket_label(index: int) -> str:
    if index < len(BUCKET_BOUNDS):
        return f"<= {format_bytes(BUCKET_BOUNDS[index])}"
    return f"> {format_bytes(BUCKET_BOUNDS[-1])}"


def histogram_lines(histogram: Histogram) -> list[str]:
    """One line per non-empty size bucket: bound, count and share of the objects."""
    lines = []
    for index, count in enumerate(histogram.counts):
        if count:
            share = 100 * count / histogram.objects if histogram.objects else 0.0
            lines.append(f"  {_bucket_label(index):>14}  {count:>13,}  {share:5.1f}%")
    return lines


def plan_lines(
    name: str,
    plan: StoredPlan,
    sizing: Sizing,
    cost: CostEstimate,
    *,
    existing: tuple[int, int] | None,
) -> list[str]:
    """`ferry plan`'s text: what was found, what would be skipped, shards and pods, duration, cost."""
    h = plan.histogram
    lines = [
        f"{name}: {h.objects:,} objects ({format_bytes(h.bytes)}), largest {format_bytes(h.largest)}",
        "object sizes:",
        *histogram_lines(h),
    ]
    if existing is None:
        lines.append("already at the destination: not compared (no credentials for it, or overwrite: always)")
    else:
        lines.append(
            f"already at the destination (skipped): {existing[0]:,} objects ({format_bytes(existing[1])}); "
            f"to copy: {cost.copied_objects:,} objects ({format_bytes(cost.copied_bytes)})"
        )
    lines += [
        f"shards: {len(plan.shards):,}; worker pods: {sizing.parallelism}, {format_bytes(sizing.pod_memory_bytes)} "
        f"memory each (FERRY_MEMORY_LIMIT {format_bytes(sizing.memory_limit_bytes)}), "
        f"{sizing.initial_concurrency} to {sizing.max_concurrency} transfers per pod",
        f"predicted duration: {format_duration(sizing.predicted_seconds)} ({prediction_basis(h, sizing)})",
        *cost_lines(cost),
    ]
    return lines
