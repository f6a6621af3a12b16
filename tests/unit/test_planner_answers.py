"""What the operator takes from a planner pod (operator/planresult.py, operator/plannerstate.py): a
checked plan or a failure in Ferry's words, and a verdict on the planner Job. Everything a planner pod
says is a tenant's word: each case below is an answer a hostile or broken pod could give."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.operator.plannerstate import Stage, planner_state, secret_problem
from ferry.operator.planning import Planner
from ferry.operator.planresult import (
    PlannerFailure,
    PlanResult,
    PlanResultInvalid,
    parse_listing_progress,
    parse_plan_result,
    parse_planner_failure,
)

LISTED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def good() -> dict[str, Any]:
    planner = Planner(piece_objects=10).add_all((f"k{i:04d}", 1000 + i) for i in range(95))
    result = PlanResult(planner.histogram(), tuple(planner.pieces()), LISTED, destination_checked=True)
    return dict(json.loads(result.to_json()))


def test_a_planner_s_own_answer_reads_back_as_it_was() -> None:
    result = parse_plan_result(json.dumps(good()))
    assert result.histogram.objects == 95 and result.histogram.largest == 1094
    assert len(result.pieces) == 10 and result.pieces[0].start_after is None and result.pieces[-1].end is None
    assert result.listed_at == LISTED and result.destination_checked


def test_a_dry_run_s_comparison_and_request_count_read_back_and_are_optional() -> None:
    planner = Planner(piece_objects=10).add_all((f"k{i:04d}", 1000 + i) for i in range(95))
    compared = PlanResult(
        planner.histogram(), tuple(planner.pieces()), LISTED, True, existing=(40, 41_000), list_requests=7
    )
    read = parse_plan_result(compared.to_json())
    assert (read.existing, read.list_requests) == ((40, 41_000), 7)
    plain = parse_plan_result(json.dumps(good()))
    assert (plain.existing, plain.list_requests) == (None, None)


def _set(path: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = doc
        for part in head:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_set("format", "ferry.dev/plan-result/v9"), "not a ferry.dev/plan-result/v1"),
        (_set("histogram.counts.0", 10**6), "do not add up to its objects"),
        (_set("histogram.counts.0", -1), "not a count"),
        (_set("histogram.counts.0", True), "not a count"),
        (_set("histogram.objects", 2**70), "not a count"),
        (_set("histogram.counts", [95]), "not a list of 15 counts"),
        (_set("histogram.largest", 10**9), "does not fit the histogram"),
        (_set("histogram.largest", 10), "smaller than its histogram bucket"),
        (_set("pieces", []), "not a list of 1 to"),
        (_set("pieces.0.startAfter", "a"), "do not cover the whole listing"),
        (_set("pieces.9.end", "zzz"), "do not cover the whole listing"),
        (_set("pieces.3.end", "k9999"), "not contiguous"),
        (_set("pieces.2.objects", 11), "do not add up to the histogram"),
        (_set("pieces.2.end", "x" * 1025), "not an S3 key"),
        (_set("pieces.2.end", ""), "not an S3 key"),
        (_set("listedAt", "yesterday"), "listedAt is not a time"),
        (_set("destinationChecked", "yes"), "destinationChecked"),
        (_set("existing", [1, 2]), "existing is not an object"),
        (_set("existing", {"objects": 96, "bytes": 0}), "more than the source holds"),
        (_set("existing", {"objects": 1, "bytes": 10**12}), "more than the source holds"),
        (_set("existing", {"objects": -1, "bytes": 0}), "existing.objects is not a count"),
        (_set("existing", {"objects": 1}), "existing.bytes is not a count"),
        (_set("listRequests", 10**10), "larger than any listing makes"),
        (_set("listRequests", "many"), "listRequests is not a count"),
    ],
)
def test_an_answer_that_does_not_add_up_is_refused(change: Any, fragment: str) -> None:
    doc = good()
    change(doc)
    with pytest.raises(PlanResultInvalid, match=fragment):
        parse_plan_result(json.dumps(doc))


def test_pieces_out_of_key_order_are_refused() -> None:
    doc = good()
    # Contiguous as a chain, but going backwards: not a listing S3 could have produced.
    doc["pieces"][1]["end"], doc["pieces"][2]["startAfter"] = "a", "a"
    with pytest.raises(PlanResultInvalid, match="not in key order"):
        parse_plan_result(json.dumps(doc))


@pytest.mark.parametrize("text", ["", "[]", "not json", "{" * 10_000, "x" * (3 * 2**20)])
def test_garbage_is_refused_not_raised(text: str) -> None:
    with pytest.raises(PlanResultInvalid):
        parse_plan_result(text)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            PlannerFailure("BucketNotFound", "bucket 'b' does not exist").to_json(),
            ("BucketNotFound", "bucket 'b' does not exist"),
        ),
        # A reason Ferry does not know becomes PlanningFailed; control characters never reach status.
        (
            json.dumps(
                {"format": "ferry.dev/planner-failure/v1", "reason": "Owned", "message": "a\x1b[2Jb\nc"}
            ),
            ("PlanningFailed", "a [2Jb c"),
        ),
        (
            json.dumps({"format": "ferry.dev/planner-failure/v1", "reason": "NotS3", "message": "m" * 5000}),
            ("NotS3", "m" * 1024),
        ),
        (json.dumps({"format": "ferry.dev/worker-report/v1", "reason": "NotS3", "message": "m"}), None),
        ("plain text from a pod's log", None),
    ],
)
def test_a_planner_failure_is_read_in_ferry_s_words(message: str, expected: tuple[str, str] | None) -> None:
    failure = parse_planner_failure(message)
    if expected is None:
        assert failure is None
    else:
        assert failure is not None and (failure.reason, failure.message) == expected


SPEC = CopyJobSpec.model_validate(
    {
        "source": {"bucket": "src-bucket", "credentialsSecret": "shared"},
        "destination": {"bucket": "dst-bucket", "credentialsSecret": "dst"},
    },
    by_alias=True,
    by_name=False,
)


@pytest.mark.parametrize(
    ("message", "reason", "fragment"),
    [
        ('secret "dst" not found', "CredentialsSecretMissing", "spec.destination.credentialsSecret"),
        ('secret "shared" not found', "CredentialsSecretMissing", "'shared' named by spec.source"),
        (
            "couldn't find key AWS_SECRET_ACCESS_KEY in Secret team/dst",
            "CredentialsKeyMissing",
            "lacks AWS_SECRET_ACCESS_KEY",
        ),
        # A Secret the CopyJob does not name, or any other message: nothing is echoed.
        ('secret "kube-system-token" not found', None, None),
        ('configmap "x" not found', None, None),
    ],
)
def test_a_missing_secret_is_named_by_its_field(
    message: str, reason: str | None, fragment: str | None
) -> None:
    problem = secret_problem(message, SPEC)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and problem.reason == reason and fragment in problem.message


def pod(phase: str, **state: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if phase == "Running":
        status["podIP"] = "10.1.2.3"
    if state:
        status["containerStatuses"] = [{"name": "planner", "state": state}]
    return {"metadata": {"name": "p", "creationTimestamp": "2026-11-29T12:00:00Z"}, "status": status}


def job(*conditions: str, reason: str = "") -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": c, "status": "True", "reason": reason, "lastTransitionTime": "2026-11-29T12:01:00Z"}
                for c in conditions
            ]
        }
    }


FAILED = PlannerFailure("TooManyObjects", "more than 10 objects").to_json()


@pytest.mark.parametrize(
    ("job_body", "pods", "stage", "reason"),
    [
        (job(), [], Stage.STARTING, None),
        (job(), [pod("Pending")], Stage.STARTING, None),
        (job(), [pod("Running")], Stage.LISTING, None),
        (
            job(),
            [
                pod(
                    "Pending",
                    waiting={"reason": "CreateContainerConfigError", "message": 'secret "dst" not found'},
                )
            ],
            Stage.BLOCKED,
            "CredentialsSecretMissing",
        ),
        (
            job("Failed"),
            [pod("Failed", terminated={"exitCode": 2, "message": FAILED})],
            Stage.FAILED,
            "TooManyObjects",
        ),
        (job("Failed", reason="DeadlineExceeded"), [], Stage.FAILED, "ListingTooLong"),
        (
            job("Failed", reason="BackoffLimitExceeded"),
            [pod("Failed", terminated={"exitCode": 137})],
            Stage.FAILED,
            "PlanningFailed",
        ),
        (job("Complete"), [pod("Succeeded", terminated={"exitCode": 0})], Stage.LOST, None),
    ],
)
def test_the_planner_s_stage_from_its_job_and_pods(
    job_body: dict[str, Any], pods: list[dict[str, Any]], stage: Stage, reason: str | None
) -> None:
    state = planner_state(job_body, pods, SPEC)
    assert state.stage is stage
    assert (state.failure.reason if state.failure else None) == reason
    if stage is Stage.LISTING:
        assert state.pod_ips == ((0, "10.1.2.3"),)


def test_grouping_pieces_keeps_every_key_and_closes_the_last_range() -> None:
    planner = Planner(piece_objects=7).add_all((f"k{i:04d}", 10) for i in range(100))
    pieces = planner.pieces()
    shards = planner.finish(4)
    assert sum(s.objects for s in shards) == 100 == sum(p.objects for p in pieces)
    assert shards[0].start_after is None and shards[-1].end is None
    assert all(a.end == b.start_after for a, b in itertools.pairwise(shards))


@pytest.mark.parametrize("stamp", ["2026-11-29T12:01:00Z", "2026-11-29T12:01:00+00:00"])
def test_the_failure_time_is_read_in_either_form_the_api_gives(stamp: str) -> None:
    body = job("Failed")
    body["status"]["conditions"][0]["lastTransitionTime"] = stamp
    state = planner_state(body, [], SPEC)
    assert state.failed_at == datetime(2026, 11, 29, 12, 1, tzinfo=UTC)


# -- listing progress: a planner's /status while it lists ----------------------------------------------

FULL_STATUS = {
    "format": "ferry.dev/planner-status/v1",
    "objects": 1200,
    "bytes": 5_000_000,
    "listed": 1500,
    "listers": 16,
    "requests": 40,
    "keysPerSecond": 12345.678,
    "etaSeconds": 41.2,
    "done": False,
}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Every field a planner sends, rounded as shown.
        (
            FULL_STATUS,
            {
                "objects": 1200,
                "bytes": 5_000_000,
                "listed": 1500,
                "listers": 16,
                "keysPerSecond": 12345.7,
                "etaSeconds": 42,
            },
        ),
        # An older planner: objects and bytes only.
        ({"objects": 10, "bytes": 20, "done": False}, {"objects": 10, "bytes": 20}),
        # No ETA yet (null) is left out; an integer rate reads as a number.
        (
            {**FULL_STATUS, "etaSeconds": None, "keysPerSecond": 7},
            {
                "objects": 1200,
                "bytes": 5_000_000,
                "listed": 1500,
                "listers": 16,
                "keysPerSecond": 7.0,
            },
        ),
        # Junk in the new fields is ignored field by field; objects and bytes still show.
        (
            {
                **FULL_STATUS,
                "listed": -1,
                "listers": 10**9,
                "keysPerSecond": "fast",
                "etaSeconds": 1e300,
            },
            {"objects": 1200, "bytes": 5_000_000},
        ),
        (
            {**FULL_STATUS, "listed": True, "listers": 2.5, "keysPerSecond": -3, "etaSeconds": [1]},
            {
                "objects": 1200,
                "bytes": 5_000_000,
            },
        ),
        # Keys listed but none kept by the filter yet: shown.
        ({"objects": 0, "bytes": 0, "listed": 300}, {"objects": 0, "bytes": 0, "listed": 300}),
        # Nothing listed yet: no progress (a CopyJob stalled before its listing shows none).
        ({"objects": 0, "bytes": 0}, None),
        # Without counts for objects and bytes nothing is shown.
        ({**FULL_STATUS, "objects": "1200"}, None),
        ({**FULL_STATUS, "bytes": 2**63}, None),
        ({**FULL_STATUS, "objects": True}, None),
        ({"listed": 5}, None),
        ([1, 2], None),
        ("text", None),
    ],
)
def test_listing_progress_is_read_field_by_field(answer: Any, expected: dict[str, Any] | None) -> None:
    assert parse_listing_progress(json.dumps(answer)) == expected


@pytest.mark.parametrize(
    "text", [None, "", "not json", "{", "NaN", '{"objects": 1, "bytes": 1, "etaSeconds": NaN}']
)
def test_listing_progress_survives_answers_that_are_not_json_objects(text: str | None) -> None:
    progress = parse_listing_progress(text)
    assert progress is None or progress == {"objects": 1, "bytes": 1}
