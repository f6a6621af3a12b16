"""A listing divided over several planner pods: where the pods cut the key space (`keyspace.part_cuts`),
how each pod's answer names its part and how the operator checks and joins them (`planresult`), the
Indexed planner Job (`plannerjob`), its pods by index (`plannerstate`) and their combined progress."""

from __future__ import annotations

import bisect
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.operator.plannerjob import render_planner_job
from ferry.operator.plannerstate import Stage, planner_state
from ferry.operator.planning import Planner
from ferry.operator.planresult import (
    MAX_PLANNER_PODS,
    PlanPart,
    PlanResult,
    PlanResultInvalid,
    combine_progress,
    merge_parts,
    parse_plan_result,
)
from ferry.operator.render import Owner
from ferry.operator.settings import OperatorSettings
from ferry.worker.keyspace import Alphabet, clip, part_cuts, ranges_from_prefixes
from ferry.worker.planpod import _part

LISTED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEYS = [f"d/{a}/{i:03d}" for a in "abcdefgh" for i in range(40)] + ["d/z", "d/zz/0"]
SPEC = CopyJobSpec.model_validate(
    {
        "source": {"bucket": "src", "credentialsSecret": "s"},
        "destination": {"bucket": "dst", "credentialsSecret": "s"},
    },
    by_alias=True,
    by_name=False,
)


def contains(start: str | None, end: str | None, key: str) -> bool:
    return (start is None or key > start) and (end is None or key <= end)


@pytest.mark.parametrize(
    ("prefixes", "count"),
    [
        (["d/a/", "d/b/", "d/c/", "d/d/", "d/e/"], 1),
        (["d/a/", "d/b/", "d/c/", "d/d/", "d/e/"], 2),
        (["d/a/", "d/b/", "d/c/", "d/d/", "d/e/"], 6),
        (["d/a/", "d/b/"], 5),  # fewer ranges than pods: midpoints make more
        ([], 4),  # a flat bucket: midpoints only
        ([], 16),
    ],
)
def test_every_key_falls_in_exactly_one_pod_s_part(prefixes: list[str], count: int) -> None:
    ranges = ranges_from_prefixes(prefixes, 64)
    cuts = part_cuts(ranges, count, "d/", Alphabet.of(p[2:] for p in prefixes) or Alphabet())
    assert len(cuts) == count + 1 and cuts[0] is None and cuts[-1] is None
    inner = [c for c in cuts[1:-1] if c is not None]
    assert len(inner) == count - 1 and inner == sorted(inner)
    parts = [clip(ranges, cuts[i], cuts[i + 1]) for i in range(count)]
    for key in KEYS:
        owners = [i for i, part in enumerate(parts) if any(contains(lo, hi, key) for lo, hi in part)]
        assert len(owners) == 1, (key, owners)
        # And within a part, exactly one range.
        assert sum(contains(lo, hi, key) for lo, hi in parts[owners[0]]) == 1


def part_result(keys: list[str], index: int, count: int, start: str | None, end: str | None) -> PlanResult:
    mine = [k for k in keys if contains(start, end, k)]
    planner = Planner(piece_objects=7, start_after=start).add_all((k, 100) for k in mine)
    pieces = planner.pieces()
    pieces[-1] = replace(pieces[-1], end=end)
    return PlanResult(
        planner.histogram(),
        tuple(pieces),
        LISTED,
        destination_checked=True,
        existing=(1, 100),
        list_requests=3,
        part=PlanPart(index, count, start, end),
    )


def divided(count: int, cuts: list[str | None] | None = None) -> list[PlanResult]:
    cuts = cuts or [None, *(KEYS[len(KEYS) * j // count] for j in range(1, count)), None]
    return [part_result(KEYS, i, count, cuts[i], cuts[i + 1]) for i in range(count)]


@pytest.mark.parametrize("count", [2, 3, 7])
def test_the_parts_join_into_the_plan_one_pod_would_make(count: int) -> None:
    parts = divided(count)
    # Each part reads back as the pod wrote it, in any order of answers.
    parts = [parse_plan_result(p.to_json()) for p in reversed(parts)]
    merged = merge_parts(parts, 8192)
    assert merged.part is None
    assert merged.histogram.objects == len(KEYS) and merged.histogram.bytes == 100 * len(KEYS)
    assert merged.pieces[0].start_after is None and merged.pieces[-1].end is None
    assert all(a.end == b.start_after for a, b in itertools.pairwise(merged.pieces))
    assert sum(p.objects for p in merged.pieces) == len(KEYS)
    assert (merged.existing, merged.list_requests) == ((count, 100 * count), 3 * count)
    ends = [p.end for p in merged.pieces[:-1]]
    for key in KEYS:
        assert bisect.bisect_left(ends, key) < len(merged.pieces)


def test_a_pod_given_no_keys_adds_an_empty_part() -> None:
    cut = KEYS[100]
    parts = divided(3, [None, cut, cut, None])
    assert parts[1].histogram.objects == 0
    merged = merge_parts(parts, 8192)
    assert merged.histogram.objects == len(KEYS)
    assert all(a.end == b.start_after for a, b in itertools.pairwise(merged.pieces))


def test_joined_pieces_are_coarsened_to_what_one_plan_keeps() -> None:
    merged = merge_parts(divided(4), 10)
    assert len(merged.pieces) <= 10 and sum(p.objects for p in merged.pieces) == len(KEYS)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda ps: ps[:2], "not parts 0 to 1 of 2"),  # a pod missing
        (lambda ps: [ps[0], ps[0], ps[2]], "not parts"),  # one answer twice
        (lambda ps: [ps[0], ps[1], replace(ps[2], part=None)], "not parts"),
        (lambda ps: [ps[0], ps[1], replace(ps[2], part=replace(ps[2].part, count=4))], "not parts"),
        # Pods that saw different prefix trees: their parts overlap or leave a gap.
        (
            lambda ps: [ps[0], part_result(KEYS, 1, 3, KEYS[50], KEYS[200]), ps[2]],
            "divided the key space differently",
        ),
    ],
)
def test_parts_that_do_not_divide_the_key_space_one_way_are_refused(change: Any, fragment: str) -> None:
    with pytest.raises(PlanResultInvalid, match=fragment):
        merge_parts(change(divided(3)), 8192)


def answer(**part: Any) -> str:
    raw = json.loads(divided(3)[1].to_json())
    raw["part"].update(part)
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"index": 3}, "one of 1 to"),
        ({"count": MAX_PLANNER_PODS + 1}, "one of 1 to"),
        ({"index": True}, "not a count"),
        ({"startAfter": None}, "where its index says"),
        ({"end": "d/a/000"}, "ends before it starts|do not cover"),
        ({"startAfter": "x" * 2000}, "not an S3 key"),
    ],
)
def test_a_forged_part_is_refused(part: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PlanResultInvalid, match=fragment):
        parse_plan_result(answer(**part))


def test_pieces_must_cover_exactly_the_part_they_claim() -> None:
    raw = json.loads(divided(3)[1].to_json())
    raw["part"]["end"] = KEYS[-1]
    with pytest.raises(PlanResultInvalid, match="do not cover"):
        parse_plan_result(json.dumps(raw))


def test_a_single_pod_s_answer_has_no_part_and_merges_as_it_is() -> None:
    planner = Planner(piece_objects=7).add_all((k, 1) for k in KEYS)
    whole = PlanResult(planner.histogram(), tuple(planner.pieces()), LISTED, destination_checked=True)
    assert "part" not in json.loads(whole.to_json())
    assert merge_parts([whole], 8192) == whole
    assert merge_parts([whole], 8192).pieces == (
        Shard(None, planner.pieces()[0].end, 7, 7),
        *planner.pieces()[1:],
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"FERRY_PLAN_PODS": "1", "JOB_COMPLETION_INDEX": "0"}, None),
        ({"FERRY_PLAN_PODS": "3", "JOB_COMPLETION_INDEX": "2"}, (2, 3)),
        ({"FERRY_PLAN_PODS": "3", "JOB_COMPLETION_INDEX": "3"}, ValueError),
        ({"FERRY_PLAN_PODS": "3"}, ValueError),
        ({"FERRY_PLAN_PODS": str(MAX_PLANNER_PODS + 1), "JOB_COMPLETION_INDEX": "0"}, ValueError),
    ],
)
def test_a_planner_pod_knows_its_part_from_the_indexed_job(env: dict[str, str], expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            _part(env)
    else:
        assert _part(env) == expected


@pytest.mark.parametrize(
    ("pods", "manifest", "expected"),
    [(1, False, 1), (4, False, 4), (4, True, 1)],
)
def test_the_planner_job_has_one_pod_per_part(pods: int, manifest: bool, expected: int) -> None:
    spec = SPEC
    if manifest:
        spec = spec.model_copy(update={"source": spec.source.model_copy(update={"manifest": _manifest()})})
    job = render_planner_job(Owner("cj", "team", "uid-1"), spec, OperatorSettings(planner_pods=pods), 1)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == expected
    assert job["spec"]["completionMode"] == "Indexed"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRY_PLAN_PODS"] == str(expected)


def _manifest() -> Any:
    from ferry.model.copyjob import Manifest

    return Manifest.model_validate(
        {"bucket": "inv", "key": "m/keys.csv", "format": "csv"}, by_alias=True, by_name=False
    )


def indexed_pod(index: int, phase: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p{index}",
            "creationTimestamp": "2026-11-29T12:00:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "podIP": ip},
    }


def test_the_planner_s_running_pods_are_known_by_index() -> None:
    pods = [
        indexed_pod(2, "Running", "10.0.0.2"),
        indexed_pod(0, "Running", "10.0.0.0"),
        indexed_pod(1, "Pending", ""),
    ]
    state = planner_state({"status": {}}, pods, SPEC)
    assert state.stage is Stage.LISTING
    assert state.pod_ips == ((0, "10.0.0.0"), (2, "10.0.0.2"))


def test_progress_of_a_divided_listing_adds_up_and_ends_with_its_slowest_part() -> None:
    a = {"objects": 10, "bytes": 100, "listed": 12, "listers": 4, "keysPerSecond": 5.0, "etaSeconds": 30}
    b = {"objects": 5, "bytes": 50, "listed": 5, "listers": 2, "keysPerSecond": 2.5, "etaSeconds": 90}
    assert combine_progress([a, b]) == {
        "objects": 15,
        "bytes": 150,
        "listed": 17,
        "listers": 6,
        "keysPerSecond": 7.5,
        "etaSeconds": 90,
    }
    # A pod not yet answering: no ETA for the whole, the rest still adds up.
    assert "etaSeconds" not in (combine_progress([a, None]) or {"etaSeconds": 0})
    assert combine_progress([None, None]) is None and combine_progress([a]) == a
