"""Ownership of children (operator/ownership.py) and the plan read back (operator/planfile.py): pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import SHARDS_FILE, SPEC_FILE, SUMMARY_FILE, Shard
from ferry.operator.caps import plan_summary, size_workers
from ferry.operator.ownership import Ownership, conflict_message, controlled, controller_uid, ownership
from ferry.operator.planfile import PlanUnreadable, StoredPlan, read_plan
from ferry.operator.planning import Planner
from ferry.operator.render import Owner, render_plan
from ferry.operator.settings import OperatorSettings

UID = "6f1c2a4e-0000-4000-8000-00000000c0de"
OTHER = "11111111-0000-4000-8000-000000000000"
OWNER = Owner("migrate", "tenant-a", UID)
MiB = 2**20


def ref(uid: str, controller: bool | None = True, kind: str = "CopyJob") -> dict[str, Any]:
    found: dict[str, Any] = {"apiVersion": "ferry.dev/v1alpha1", "kind": kind, "name": "migrate", "uid": uid}
    if controller is not None:
        found["controller"] = controller
    return found


def obj(*refs: dict[str, Any], name: str = "migrate-plan") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "tenant-a", "ownerReferences": list(refs)}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, Ownership.MISSING),
        (obj(ref(UID)), Ownership.OWNED),
        ({"metadata": {"name": "migrate-plan"}}, Ownership.FOREIGN),  # made by a tenant
        (obj(), Ownership.FOREIGN),
        (obj(ref(UID, controller=False)), Ownership.FOREIGN),  # an owner, but not the controller
        (obj(ref(UID, controller=None)), Ownership.FOREIGN),
        (obj(ref(OTHER)), Ownership.FOREIGN),  # a deleted CopyJob of the same name, or a forgery
        (obj(ref(UID, controller=False), ref(OTHER)), Ownership.FOREIGN),
        (obj(ref(OTHER, controller=False), ref(UID)), Ownership.OWNED),
        ({"metadata": {"ownerReferences": None}}, Ownership.FOREIGN),
    ],
    ids=[
        "missing",
        "owned",
        "no-owner-references",
        "empty-owner-references",
        "owner-not-controller",
        "controller-unset",
        "other-controller",
        "other-controller-and-us-as-owner",
        "us-as-controller-beside-another-owner",
        "null-owner-references",
    ],
)
def test_ownership(body: dict[str, Any] | None, expected: Ownership) -> None:
    assert ownership(body, UID) is expected


def test_controlled_keeps_only_the_owner_s_objects() -> None:
    pods = [obj(ref("job-uid", kind="Job"), name="a"), obj(name="b"), obj(ref("x", kind="Job"), name="c")]
    assert [p["metadata"]["name"] for p in controlled(pods, "job-uid")] == ["a"]
    assert controller_uid(pods[0]) == "job-uid" and controller_uid(pods[1]) is None


def test_conflict_message_says_what_where_and_what_to_do() -> None:
    message = conflict_message("ConfigMap", obj(), "migrate")
    assert "ConfigMap tenant-a/migrate-plan" in message
    assert "not by CopyJob migrate" in message
    assert "kubectl -n tenant-a delete configmap migrate-plan" in message
    other = conflict_message("Job", obj(ref(OTHER), name="migrate-workers"), "migrate")
    assert OTHER in other and "delete job migrate-workers" in other


# -- the plan read back -----------------------------------------------------------------------------

SPEC = CopyJobSpec.model_validate(
    {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}
)
LISTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def stored_plan(settings: OperatorSettings = OperatorSettings()) -> dict[str, str]:
    """Plan data exactly as the operator writes it, for 3,000 objects of 100 KB in 3 shards."""
    planner = Planner(piece_objects=1000)
    for i in range(3000):
        planner.add(f"k{i:05d}", 100_000)
    histogram = planner.histogram()
    shards = planner.finish(3)
    plan = StoredPlan(histogram, tuple(shards), LISTED)
    sizing = size_workers(histogram, len(shards), SPEC, settings, LISTED)
    summary = {**plan_summary(plan, sizing, "migrate-plan"), "reason": sizing.reason}
    data: dict[str, str] = render_plan(OWNER, SPEC, shards, summary)["data"]
    return data


def test_a_plan_reads_back_as_it_was_written() -> None:
    plan = read_plan(stored_plan())
    assert (plan.histogram.objects, plan.histogram.bytes, plan.histogram.largest) == (
        3000,
        300_000_000,
        100_000,
    )
    assert len(plan.shards) == 3 and plan.listed_at == LISTED


def tamper(data: dict[str, str], key: str, change: Any) -> dict[str, str]:
    value = json.loads(data[key])
    change(value)
    return {**data, key: json.dumps(value)}


def test_the_stored_pod_memory_is_never_used() -> None:
    """A tenant edits podMemory and friends: the operator's figures come out the same."""
    settings = OperatorSettings(max_memory_per_pod=512 * MiB)
    honest = read_plan(stored_plan(settings))
    forged = read_plan(
        tamper(
            stored_plan(settings),
            SUMMARY_FILE,
            lambda s: s.update(podMemory="64Gi", memoryLimit="60Gi", parallelism=1000, maxConcurrency=4096),
        )
    )
    assert forged == honest
    sizing = size_workers(forged.histogram, len(forged.shards), SPEC, settings, forged.listed_at)
    assert sizing.pod_memory_bytes <= 512 * MiB


@pytest.mark.parametrize(
    ("existing", "requests", "expected"),
    [
        ({"objects": 1200, "bytes": 120_000_000}, 31, ((1200, 120_000_000), 31)),
        (None, None, (None, None)),
    ],
)
def test_a_dry_run_s_comparison_reads_back_bounded(existing: Any, requests: Any, expected: Any) -> None:
    """Only a dry run's own cost estimate reads them; a tenant's edit cannot make them exceed the plan."""

    def change(summary: dict[str, Any]) -> None:
        if existing is not None:
            summary["existing"] = existing
        if requests is not None:
            summary["listRequests"] = requests

    plan = read_plan(tamper(stored_plan(), SUMMARY_FILE, change))
    assert (plan.existing, plan.list_requests) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("existing", {"objects": 3001, "bytes": 0}),
        ("existing", {"objects": 0, "bytes": 300_000_001}),
        ("existing", {"objects": "all"}),
        ("existing", [3, 4]),
        ("listRequests", 10**15),
        ("listRequests", -1),
    ],
)
def test_a_comparison_larger_than_the_plan_is_unreadable(field: str, value: Any) -> None:
    with pytest.raises(PlanUnreadable, match=field):
        read_plan(tamper(stored_plan(), SUMMARY_FILE, lambda s: s.update({field: value})))


def test_auto_sizing_is_held_to_the_platform_cap() -> None:
    plan = read_plan(stored_plan())
    big = CopyJobSpec.model_validate({**SPEC.model_dump(by_alias=True), "concurrency": {"max": 4096}})
    free = size_workers(plan.histogram, 3, big, OperatorSettings(), plan.listed_at)
    capped = size_workers(
        plan.histogram, 3, big, OperatorSettings(max_memory_per_pod=300 * MiB), plan.listed_at
    )
    assert free.pod_memory_bytes > 300 * MiB
    assert capped.pod_memory_bytes == 300 * MiB and capped.memory_limit_bytes < 300 * MiB


def _drop(key: str) -> Any:
    return lambda d: {k: v for k, v in d.items() if k != key}


UNREADABLE = [
    ("no-summary", _drop(SUMMARY_FILE), "no summary.json"),
    ("no-spec", _drop(SPEC_FILE), "no spec.json"),
    ("not-json", lambda d: {**d, SHARDS_FILE: "{"}, "not JSON"),
    ("no-shards", lambda d: {**d, SHARDS_FILE: "[]"}, "not a list of shards"),
    ("bad-shard", lambda d: {**d, SHARDS_FILE: '[{"objects": "x"}]'}, "not one"),
    ("counts-do-not-add-up", lambda d: tamper(d, SUMMARY_FILE, lambda s: s.update(objects=5)), "counts"),
    (
        "shards-do-not-add-up",
        lambda d: {**d, SHARDS_FILE: json.dumps([Shard(None, None, 1, 1).as_json()])},
        "do not add up",
    ),
    (
        "unknown-bound",
        lambda d: tamper(d, SUMMARY_FILE, lambda s: s["histogram"][0].update(le="3Ki")),
        "not one of the operator's",
    ),
    ("negative", lambda d: tamper(d, SUMMARY_FILE, lambda s: s.update(bytes=-1)), "not a count"),
    (
        "largest-too-big",
        lambda d: tamper(d, SUMMARY_FILE, lambda s: s.update(largestObject=10**9)),
        "largestObject",
    ),
    ("no-time", lambda d: tamper(d, SUMMARY_FILE, lambda s: s.pop("listedAt")), "listedAt"),
]


@pytest.mark.parametrize(("change", "fragment"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_a_changed_plan_is_unreadable_not_trusted(change: Any, fragment: str) -> None:
    with pytest.raises(PlanUnreadable, match=fragment):
        read_plan(change(stored_plan()))


def test_a_plan_without_largest_object_reads_with_an_over_estimate() -> None:
    """Plans written before largestObject was stored still read; sizing errs on the large side."""
    plan = read_plan(tamper(stored_plan(), SUMMARY_FILE, lambda s: s.pop("largestObject")))
    assert plan.histogram.largest == 256 * 1024  # the bound of the bucket holding 100 KB
