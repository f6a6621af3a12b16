"""The plan as users see it (operator/planview.py): one rendering for `ferry plan` and a dry run's
status.plan; the route and options come from the spec; the predicted duration says its rate is an
assumption; shards and sizing are the operator's own (caps.cut_shards)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.operator.caps import cut_shards
from ferry.operator.cost import DEFAULT_PRICES
from ferry.operator.planfile import StoredPlan
from ferry.operator.planning import Planner
from ferry.operator.planview import histogram_lines, plan_cost, plan_lines, plan_view
from ferry.operator.settings import OperatorSettings

LISTED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "source": {"bucket": "src", "endpoint": "https://s3.one.example", "credentialsSecret": "a"},
    "destination": {"bucket": "dst", "endpoint": "https://s3.two.example", "credentialsSecret": "b"},
}


def planned(spec: dict[str, Any], count: int = 5000, size: int = 100_000) -> tuple[Any, StoredPlan, Any]:
    planner = Planner(piece_objects=100).add_all((f"k{i:06d}", size) for i in range(count))
    parsed = CopyJobSpec.model_validate(spec, by_alias=True, by_name=False)
    shards, sizing = cut_shards(planner.histogram(), planner.pieces(), parsed, OperatorSettings(), LISTED)
    return parsed, StoredPlan(planner.histogram(), tuple(shards), LISTED), sizing


def test_shards_cover_the_listing_and_sizing_is_for_their_number() -> None:
    _, plan, sizing = planned(SPEC)
    assert plan.shards[0].start_after is None and plan.shards[-1].end is None
    assert sum(s.objects for s in plan.shards) == 5000
    assert 1 <= sizing.parallelism <= len(plan.shards)


@pytest.mark.parametrize(
    ("change", "route", "copy_kinds"),
    [
        ({}, "streamed", {"GET", "PUT"}),
        (
            {
                "destination": {
                    **SPEC["destination"],
                    "endpoint": SPEC["source"]["endpoint"],
                    "credentialsSecret": "a",
                }
            },
            "server-side",
            {"COPY"},
        ),
    ],
    ids=["two-services", "one-service"],
)
def test_the_route_is_the_engine_s(change: dict[str, Any], route: str, copy_kinds: set[str]) -> None:
    spec, plan, _ = planned({**SPEC, **change})
    cost = plan_cost(plan, spec, DEFAULT_PRICES)
    kinds = {r.kind for r in cost.requests if r.count} - {"LIST", "GetObjectTagging"}
    assert cost.route == route and kinds == copy_kinds


@pytest.mark.parametrize(("overwrite", "skipped"), [("ifDifferent", 1000), ("never", 1000), ("always", 0)])
def test_with_overwrite_always_nothing_is_skipped(overwrite: str, skipped: int) -> None:
    spec, plan, _ = planned({**SPEC, "overwrite": overwrite})
    cost = plan_cost(plan, spec, DEFAULT_PRICES, existing=(1000, 100_000_000))
    assert cost.copied_objects == 5000 - skipped


def test_tags_are_counted_only_when_preserved() -> None:
    with_tags, plan, _ = planned(SPEC)
    without, _, _ = planned({**SPEC, "preserve": {"tags": False}})
    tagging = {
        name: next(
            r.count for r in plan_cost(plan, s, DEFAULT_PRICES).requests if r.kind == "GetObjectTagging"
        )
        for name, s in (("with", with_tags), ("without", without))
    }
    assert tagging == {"with": 5000, "without": 0}


def test_a_dry_run_view_is_the_summary_plus_prediction_and_cost() -> None:
    spec, plan, sizing = planned(SPEC)
    view = plan_view(plan, sizing, plan_cost(plan, spec, DEFAULT_PRICES), "job-plan")
    assert view["configMap"] == "job-plan" and view["objects"] == 5000
    assert view["predictedSeconds"] == sizing.predicted_seconds
    assert "an assumption" in view["predictionBasis"] and "50 objects/s" in view["predictionBasis"]
    assert view["cost"]["currency"] == "USD" and view["cost"]["prices"]["date"] == "2026-11-29"
    assert view["cost"]["total"] > 0
    assert "configMap" not in plan_view(plan, sizing, plan_cost(plan, spec, DEFAULT_PRICES))


def test_the_text_says_what_is_found_skipped_sized_predicted_and_what_it_costs() -> None:
    spec, plan, sizing = planned(SPEC)
    cost = plan_cost(plan, spec, DEFAULT_PRICES, existing=(1000, 100_000_000), list_requests=5)
    text = "\n".join(plan_lines("job", plan, sizing, cost, existing=(1000, 100_000_000)))
    for fragment in (
        "job: 5,000 objects (476.8 MiB), largest 97.7 KiB",
        "<= 256.0 KiB",
        "already at the destination (skipped): 1,000 objects",
        "to copy: 4,000 objects",
        f"shards: {len(plan.shards)}",
        f"worker pods: {sizing.parallelism}",
        "FERRY_MEMORY_LIMIT",
        "predicted duration:",
        "an assumption",
        "estimated cost:",
        "assuming:",
    ):
        assert fragment in text, fragment
    unknown = "\n".join(plan_lines("job", plan, sizing, plan_cost(plan, spec, DEFAULT_PRICES), existing=None))
    assert "already at the destination: not compared" in unknown


def test_histogram_lines_show_only_buckets_with_objects() -> None:
    planner = Planner().add_all([("a", 10), ("b", 10), ("c", 5_000_000), ("d", 2**37)])
    lines = histogram_lines(planner.histogram())
    assert len(lines) == 3
    assert "<= 1.0 KiB" in lines[0] and "50.0%" in lines[0]
    assert lines[-1].strip().startswith("> 64.0 GiB")
