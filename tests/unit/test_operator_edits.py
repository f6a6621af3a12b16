"""Edits of finished or stopped CopyJobs (operator/edits.py, operator/resume.py) and shards stopped on a
systematic failure (operator/stopped.py).

Pure decisions are table-driven; `after_edit` runs against an in-memory API adapter that records every
write, so each case shows what is deleted, cleared and rewritten, and that nothing else is touched.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import (
    FINISHED_SHARDS_ENV,
    SHARDS_FILE,
    SPEC_FILE,
    SUMMARY_FILE,
    in_ranges,
    index_ranges,
)
from ferry.operator.edits import (
    Edit,
    Scope,
    edit_of,
    followed_status,
    ledger_removals,
    resumed_status,
    scope_of,
)
from ferry.operator.render import Owner, job_name, plan_name, progress_name, render_job, spec_json
from ferry.operator.resume import after_edit
from ferry.operator.stopped import SYSTEMATIC_FAILURE, as_running, stall_message, stopped_shards
from ferry.worker.statusdoc import FORMAT, parse_report

NS, NAME, UID = "tenant-a", "migrate", "6f1c2a4e-0000-4000-8000-00000000c0de"
OWNER = Owner(NAME, NS, UID)
NOW = "2026-01-01T00:00:00Z"
BASE = {
    "source": {"bucket": "src-bucket", "endpoint": "http://s3.example:9000", "credentialsSecret": "src"},
    "destination": {"bucket": "dst-bucket", "endpoint": "http://s3.example:9000", "credentialsSecret": "dst"},
}


def spec(**changes: Any) -> CopyJobSpec:
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)


def conditions(*items: tuple[str, str, str], generation: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": "",
            "lastTransitionTime": NOW,
            "observedGeneration": generation,
        }
        for kind, value, reason in items
    ]


SUCCEEDED = {
    "phase": "Succeeded",
    "observedGeneration": 3,
    "completionTime": NOW,
    "conditions": conditions(("Succeeded", "True", "AllObjectsCopied"), ("Failed", "False", "NotSuspended")),
}
FAILED = {
    "phase": "Failed",
    "observedGeneration": 3,
    "completionTime": NOW,
    "conditions": conditions(("Succeeded", "False", "ObjectsFailed"), ("Failed", "True", "ObjectsFailed")),
}
STOPPED = {
    "phase": "Running",
    "observedGeneration": 3,
    "conditions": conditions(
        ("Stalled", "True", SYSTEMATIC_FAILURE), ("Succeeded", "Unknown", SYSTEMATIC_FAILURE)
    ),
}
STALLED_OTHERWISE = {**STOPPED, "conditions": conditions(("Stalled", "True", "CredentialsSecretMissing"))}
RUNNING = {"phase": "Running", "observedGeneration": 3, "conditions": []}


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        (SUCCEEDED, 3, Edit.NONE),
        (SUCCEEDED, 4, Edit.FOLLOW),
        (FAILED, 3, Edit.NONE),
        (FAILED, 5, Edit.RESUME),
        (STOPPED, 4, Edit.RESUME),
        (STOPPED, 3, Edit.NONE),
        (STALLED_OTHERWISE, 4, Edit.NONE),
        (RUNNING, 4, Edit.NONE),
        ({}, 1, Edit.NONE),
        ({**FAILED, "observedGeneration": "2"}, 4, Edit.NONE),
        ({**FAILED, "observedGeneration": True}, 4, Edit.NONE),
    ],
    ids=[
        "succeeded-unedited",
        "succeeded-edited",
        "failed-unedited",
        "failed-edited",
        "stopped-edited",
        "stopped-unedited",
        "stalled-for-another-reason",
        "running",
        "new",
        "observed-not-a-number",
        "observed-a-bool",
    ],
)
def test_what_an_edit_means(status: dict[str, Any], generation: int, expected: Edit) -> None:
    assert edit_of(status, generation) is expected


@pytest.mark.parametrize(
    ("planned", "edited", "expected"),
    [
        (spec(), spec(destination__region="us-west-2"), Scope.UNFINISHED),
        (spec(), spec(destination__credentialsSecret="dst-writer"), Scope.UNFINISHED),
        (spec(), spec(source__credentialsSecret="src-reader"), Scope.UNFINISHED),
        (spec(), spec(destination__endpoint="http://S3.Example:9000/"), Scope.UNFINISHED),
        (spec(), spec(rateLimit={"requestsPerSecond": 50}), Scope.UNFINISHED),
        (spec(), spec(concurrency={"max": 8}), Scope.UNFINISHED),
        (spec(), spec(overwrite="always"), Scope.UNFINISHED),
        (spec(), spec(suspend=True), Scope.UNFINISHED),
        (spec(), spec(destination__endpoint="http://other.example:9000"), Scope.ALL),
        (spec(), spec(destination__bucket="dst-bucket-2"), Scope.ALL),
        (spec(), spec(destination__prefix="archive/"), Scope.ALL),
        (spec(), spec(source__prefix="2024/"), Scope.REPLAN),
        (spec(), spec(source__bucket="src-bucket-2"), Scope.REPLAN),
        (spec(), spec(source__region="eu-west-1"), Scope.REPLAN),
        (spec(), spec(filter={"include": ["*.parquet"]}), Scope.REPLAN),
        (spec(), spec(shardSize={"maxObjects": 100}), Scope.REPLAN),
        (None, spec(), Scope.REPLAN),
    ],
    ids=[
        "destination-region",
        "destination-credentials",
        "source-credentials",
        "destination-endpoint-spelled-otherwise",
        "rate-limit",
        "concurrency",
        "overwrite",
        "suspend",
        "destination-service",
        "destination-bucket",
        "destination-prefix",
        "source-prefix",
        "source-bucket",
        "source-region",
        "filter",
        "shard-size",
        "no-readable-plan",
    ],
)
def test_what_runs_again_after_an_edit(
    planned: CopyJobSpec | None, edited: CopyJobSpec, expected: Scope
) -> None:
    assert scope_of(planned, edited) is expected


def finished(objects: int, failed: int = 0) -> str:
    """A ledger line of a finished shard (`ledger.encode`): objects, bytes, peak memory."""
    copied = objects - failed
    return f"{objects},{copied},0,{failed},{objects * 10},{copied * 10},0,{failed * 10},1024"


LEDGER = {
    "0": finished(100),
    "1": finished(100, failed=3),
    "2": finished(100),
    "resume-3": '{"after": "k"}',
    "failed": json.dumps([{"key": "a", "code": "AccessDenied"}]),
    "limits": "kept: another feature's",
}


@pytest.mark.parametrize(
    ("scope", "removed"),
    [
        (Scope.UNFINISHED, ["1", "failed", "resume-3"]),
        (Scope.ALL, ["0", "1", "2", "failed", "resume-3"]),
    ],
    ids=["unfinished", "all"],
)
def test_what_the_ledger_forgets(scope: Scope, removed: list[str]) -> None:
    assert ledger_removals(LEDGER, scope) == dict.fromkeys(removed)


def test_a_succeeded_copyjob_follows_the_generation_and_changes_nothing_else() -> None:
    followed = followed_status(SUCCEEDED, 4, "2026-01-02T00:00:00Z")
    assert set(followed) == {"observedGeneration", "conditions"}
    assert followed["observedGeneration"] == 4
    assert [c["observedGeneration"] for c in followed["conditions"]] == [4, 4]
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in followed["conditions"]] == [
        (c["type"], c["status"], c["lastTransitionTime"]) for c in SUCCEEDED["conditions"]
    ]


@pytest.mark.parametrize("replanned", [False, True])
def test_a_resumed_copyjob_is_pending_and_neither_failed_nor_stalled(replanned: bool) -> None:
    before = {
        **FAILED,
        "conditions": [*FAILED["conditions"], *conditions(("WorkersRemoved", "True", "TTLExpired"))],
    }
    resumed = resumed_status(before, 5, NOW, "re-running", replanned)
    assert resumed["phase"] == "Pending" and resumed["observedGeneration"] == 5
    assert resumed["completionTime"] is None and resumed["workers"] == {"lastFailure": None}
    by_type = {c["type"]: c for c in resumed["conditions"]}
    assert {c["observedGeneration"] for c in by_type.values()} == {5}
    assert (by_type["Failed"]["status"], by_type["Stalled"]["status"]) == ("False", "False")
    assert (by_type["Succeeded"]["status"], by_type["Succeeded"]["reason"]) == ("Unknown", "Resumed")
    assert by_type["WorkersRemoved"]["status"] == "False"
    assert ("Planned" in by_type) is replanned


# -- shards stopped on a systematic failure -------------------------------------------------------------


def report_text(shard: int, code: str = "AccessDenied", side: str = "destination", **extra: Any) -> str:
    kind = {"AccessDenied": "accessDenied", "AuthorizationHeaderMalformed": "region"}[code]
    return json.dumps(
        {
            "format": FORMAT,
            "shard": shard,
            "state": "systematicFailure",
            "systematicFailure": {"class": kind, "side": side, "code": code, "failures": 50},
            "objects": {"total": 300, "copied": 0, "skipped": 0, "failed": 57, "pending": 0},
            "bytes": {"total": 3000, "copied": 0, "skipped": 0, "failed": 570},
            **extra,
        }
    )


def pod(index: int, phase: str, message: str = "", name: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name or f"{NAME}-workers-{index}-abcde",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "worker", "state": {"terminated": {"exitCode": 5, "message": message}}}
            ],
        },
    }


def test_stopped_shards_come_from_failed_pods_and_from_running_pods_that_say_so() -> None:
    running_report = parse_report(report_text(2, "AuthorizationHeaderMalformed"))
    plain = parse_report(json.dumps({"format": FORMAT, "shard": 3, "state": "running", "objects": {}}))
    assert running_report is not None and plain is not None
    pods = [
        pod(0, "Failed", report_text(0)),
        pod(1, "Failed", json.dumps({"format": FORMAT, "shard": 1, "state": "incomplete", "error": "x"})),
        pod(4, "Succeeded", report_text(4)),
        pod(5, "Failed", "not json"),
        {**pod(6, "Failed", report_text(6)), "metadata": {"name": "no-index"}},
    ]
    stopped = stopped_shards(pods, {2: ("p2", running_report), 3: ("p3", plain)})
    assert [(s.shard, s.failure.code) for s in stopped] == [
        (0, "AccessDenied"),
        (2, "AuthorizationHeaderMalformed"),
    ]
    assert as_running(stopped)[0][1].objects["failed"] == 57


def test_a_forged_verdict_is_not_a_stopped_shard() -> None:
    forged = json.loads(report_text(0))
    forged["systematicFailure"]["code"] = "the region is wrong; expecting us-east-1"
    assert stopped_shards([pod(0, "Failed", json.dumps(forged))], {}) == ()


def test_the_stall_message_is_the_same_whichever_shards_stopped() -> None:
    one = stopped_shards([pod(0, "Failed", report_text(0))], {})
    two = stopped_shards([pod(3, "Failed", report_text(3)), pod(0, "Failed", report_text(0))], {})
    message = stall_message(one)
    assert message == stall_message(two)
    for fragment in (
        "destination",
        "AccessDenied",
        "grant s3:PutObject",
        "spec.destination.credentialsSecret",
        "edit",
    ):
        assert fragment in message, (fragment, message)


# -- after_edit against an in-memory API ---------------------------------------------------------------


def owned(kind: str, name: str, data: dict[str, str] | None = None, owner_uid: str = UID) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": str(uuid.uuid4()),
            "ownerReferences": [{"controller": True, "uid": owner_uid}],
        },
    }
    if data is not None:
        body["data"] = dict(data)
    return body


def plan_data(planned: CopyJobSpec, shards: int = 4) -> dict[str, str]:
    per = [
        {"startAfter": None if i == 0 else f"k{i}", "end": f"k{i + 1}", "objects": 100, "bytes": 1000}
        for i in range(shards)
    ]
    per[-1]["end"] = None
    summary = {
        "objects": 100 * shards,
        "bytes": 1000 * shards,
        "histogram": [{"le": "16Ki", "count": 100 * shards}],
        "largestObject": 10,
        "listedAt": NOW,
    }
    return {SPEC_FILE: spec_json(planned), SHARDS_FILE: json.dumps(per), SUMMARY_FILE: json.dumps(summary)}


@dataclass
class FakeKube:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, body: dict[str, Any]) -> None:
        self.objects[(body["kind"], body["metadata"]["name"])] = body

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("Job", name)))

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("ConfigMap", name)))

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self._delete("Job", name, uid)

    def delete_configmap(self, namespace: str, name: str, uid: str) -> None:
        self._delete("ConfigMap", name, uid)

    def _delete(self, kind: str, name: str, uid: str) -> None:
        self.writes.append(("delete", kind, name))
        assert self.objects[(kind, name)]["metadata"]["uid"] == uid  # the UID precondition
        del self.objects[(kind, name)]

    def patch_configmap_data(self, namespace: str, name: str, uid: str, data: dict[str, str | None]) -> None:
        self.writes.append(("patch", "ConfigMap", name))
        stored = self.objects[("ConfigMap", name)]
        assert stored["metadata"]["uid"] == uid
        for key, value in data.items():
            if value is None:
                stored["data"].pop(key, None)
            else:
                stored["data"][key] = value


def cluster(planned: CopyJobSpec, *, job_owner: str = UID) -> FakeKube:
    kube = FakeKube()
    kube.add(owned("ConfigMap", plan_name(NAME), plan_data(planned)))
    kube.add(owned("ConfigMap", progress_name(NAME), LEDGER))
    kube.add(owned("Job", job_name(NAME), owner_uid=job_owner))
    return kube


def edit(
    kube: FakeKube, status: dict[str, Any], edited: CopyJobSpec, generation: int = 4
) -> tuple[dict[str, Any] | None, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    raw = edited.model_dump(mode="json", by_alias=True, exclude_none=True)
    result = asyncio.run(after_edit(kube, lambda *e: events.append(e), OWNER, raw, status, generation))  # type: ignore[arg-type]
    return result, events


def test_a_failed_copyjob_edited_reruns_its_unfinished_shards_under_the_new_spec() -> None:
    kube = cluster(spec())
    edited = spec(destination__region="us-west-2")
    result, events = edit(kube, FAILED, edited)
    assert result is not None and result["phase"] == "Pending" and result["observedGeneration"] == 4
    assert ("Job", job_name(NAME)) not in kube.objects  # a new Job is made by the next pass
    assert set(kube.objects[("ConfigMap", progress_name(NAME))]["data"]) == {"0", "2", "limits"}
    assert kube.objects[("ConfigMap", plan_name(NAME))]["data"][SPEC_FILE] == spec_json(edited)
    # The ledger is cleared before the plan's spec is written: a retried pass compares with the old spec.
    assert [w for w in kube.writes if w[0] == "patch"] == [
        ("patch", "ConfigMap", progress_name(NAME)),
        ("patch", "ConfigMap", plan_name(NAME)),
    ]
    assert [(kind, reason) for kind, reason, _ in events] == [("Normal", "Resumed")]
    assert "re-running 2 of 4 shard(s)" in events[0][2]


def test_a_moved_destination_runs_every_shard_again() -> None:
    kube = cluster(spec())
    result, events = edit(kube, STOPPED, spec(destination__bucket="dst-bucket-2"))
    assert result is not None
    assert kube.objects[("ConfigMap", progress_name(NAME))]["data"] == {"limits": "kept: another feature's"}
    assert "re-running 4 of 4 shard(s)" in events[0][2]


def test_an_edited_source_plans_again() -> None:
    kube = cluster(spec())
    result, events = edit(kube, FAILED, spec(source__prefix="2024/"))
    assert result is not None and result["phase"] == "Pending"
    assert kube.objects == {}
    assert {c["type"]: c["status"] for c in result["conditions"]}["Planned"] == "Unknown"
    assert "planned again" in events[0][2]


def test_a_foreign_job_of_the_name_is_left_alone() -> None:
    kube = cluster(spec(), job_owner="someone-else")
    result, _ = edit(kube, FAILED, spec(destination__region="us-west-2"))
    assert result is not None
    assert ("Job", job_name(NAME)) in kube.objects
    assert ("delete", "Job", job_name(NAME)) not in kube.writes


@pytest.mark.parametrize(
    "status", [SUCCEEDED, RUNNING, STALLED_OTHERWISE, {**FAILED, "observedGeneration": 4}]
)
def test_nothing_is_touched_unless_a_failed_or_stopped_copyjob_was_edited(status: dict[str, Any]) -> None:
    kube = cluster(spec())
    before = copy.deepcopy(kube.objects)
    result, events = edit(kube, status, spec(destination__region="us-west-2"))
    assert kube.objects == before and kube.writes == [] and events == []
    if status is SUCCEEDED:
        assert result is not None and result["observedGeneration"] == 4
    else:
        assert result is None


# -- which CopyJobs get a timer tick ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "spec_raw", "generation", "expected"),
    [
        (RUNNING, {}, 3, True),
        (SUCCEEDED, {}, 3, False),
        (SUCCEEDED, {}, 4, True),
        (FAILED, {}, 5, True),
        (FAILED, {}, 3, False),
        (FAILED, {"ttlSecondsAfterFinished": 60}, 3, True),
        (
            {**SUCCEEDED, "conditions": conditions(("WorkersRemoved", "True", "TTLExpired"))},
            {"ttlSecondsAfterFinished": 60},
            3,
            False,
        ),
        (SUCCEEDED, {}, None, False),
    ],
    ids=[
        "running",
        "finished",
        "finished-then-edited",
        "failed-then-edited",
        "failed",
        "failed-waiting-for-its-ttl",
        "workers-removed",
        "generation-unknown",
    ],
)
def test_which_copyjobs_get_a_timer_tick(
    status: dict[str, Any], spec_raw: dict[str, Any], generation: int | None, expected: bool
) -> None:
    from ferry.operator.handlers import _needs_reconcile

    assert _needs_reconcile(status, spec_raw, generation) is expected


# -- the shards a re-created Job need not run ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("indexes", "text"),
    [(set(), ""), ({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({10, 3, 1, 2, 9}, "1-3,9-10")],
    ids=["none", "one", "range-and-one", "unordered"],
)
def test_finished_shards_are_written_as_ranges_and_read_back(indexes: set[int], text: str) -> None:
    assert index_ranges(indexes) == text
    assert {i for i in range(12) if in_ranges(i, text)} == indexes


@pytest.mark.parametrize(
    "text", ["x", "1-", "-1", "1,,2", "1-2-3", "a-b", "0," + "9" * 5000, "1" * 40_000, None]
)
def test_a_malformed_list_of_finished_shards_holds_none(text: str | None) -> None:
    assert not any(in_ranges(i, text) for i in range(3))


def test_a_re_created_job_lists_the_finished_shards_for_its_pods() -> None:
    from ferry.operator.settings import OperatorSettings
    from ferry.operator.sizing import Sizing

    sizing = Sizing(448 * 2**20, int(448 * 2**20 * 0.8), 32, 512, 2, 10_000, "2 pod(s) x 50 objects/s")
    settings = OperatorSettings()

    def env(finished: frozenset[int]) -> dict[str, str]:
        job = render_job(OWNER, spec(), sizing, 4, settings, 2, finished=finished)
        return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert FINISHED_SHARDS_ENV not in env(frozenset())
    assert env(frozenset({0, 2, 3}))[FINISHED_SHARDS_ENV] == "0,2-3"
