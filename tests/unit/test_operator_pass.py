"""One reconcile pass against a fake API adapter (operator/reconcile.py): who owns what, and what runs
once. The S3 side is replaced by a listing that counts how often it ran.

Proves: a foreign plan, Job or ledger stalls the CopyJob with NameConflict and is never read as a plan,
patched or deleted, and nothing is created beside it; a refused plan stalls once and is retried without
listing the source again; a name too long for a label stalls before anything is listed; pods the Job
does not control are not counted; sizing comes from the histogram, not from numbers in the ConfigMap.

And the platform's tenancy policy: a location without a Secret stalls (CredentialsRequired) before any
Secret is read or anything listed, unless the namespace may use workload identity under a ServiceAccount
of its own; the operator's own clients are never signed with an ambient identity; endpoints the policy
refuses stall (EndpointNotAllowed) before any request; a namespace plans at most so many CopyJobs at once
(WaitingForCapacity, dryRun too); a listing past its deadline or object cap stalls once and is not
started again; what a failing endpoint answered never reaches the status.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model.plan import SUMMARY_FILE
from ferry.operator import reconcile as rc
from ferry.operator.kube import Refused
from ferry.operator.render import job_name, plan_name
from ferry.operator.settings import OperatorSettings
from ferry.worker.objects import ObjectInfo
from ferry.worker.retry import RetryPolicy
from ferry.worker.statusdoc import FORMAT

NS, NAME, UID = "tenant-a", "migrate", "6f1c2a4e-0000-4000-8000-00000000c0de"
MiB = 2**20
SPEC = {
    "source": {"bucket": "src-bucket", "credentialsSecret": "src"},
    "destination": {"bucket": "dst-bucket", "credentialsSecret": "dst"},
}
KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret"}


@dataclass
class FakeKube:
    """The adapter's surface, over a dict of objects; records every write."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (verb, kind, name)
    refuse: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, name) -> HTTP status
    pod_list: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=lambda: {"src": KEYS, "dst": KEYS})
    accounts: set[str] = field(default_factory=lambda: {"ferry-worker"})
    reads: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of Secrets and accounts

    def put(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored["metadata"].setdefault("namespace", NS)
        stored["metadata"]["uid"] = str(uuid.uuid4())
        self.objects[(kind, stored["metadata"]["name"])] = stored
        return stored

    def _create(self, kind: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        self.writes.append(("create", kind, name))
        if (kind, name) in self.refuse:
            raise Refused(kind, NS, name, self.refuse[(kind, name)], "exceeded quota")
        if (kind, name) in self.objects:
            return False
        self.put(kind, body)
        return True

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads.append(("Secret", name))
        return self.secrets.get(name)

    def service_account_exists(self, namespace: str, name: str) -> bool:
        self.reads.append(("ServiceAccount", name))
        return name in self.accounts

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("ConfigMap", name)))

    def create_configmap(self, body: dict[str, Any]) -> bool:
        return self._create("ConfigMap", body)

    def patch_configmap_data(self, namespace: str, name: str, uid: str, data: dict[str, str]) -> None:
        self.writes.append(("patch", "ConfigMap", name))
        assert self.objects[("ConfigMap", name)]["metadata"]["uid"] == uid
        self.objects[("ConfigMap", name)].setdefault("data", {}).update(data)

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("Job", name)))

    def create_job(self, body: dict[str, Any]) -> bool:
        return self._create("Job", body)

    def patch_job(self, namespace: str, name: str, uid: str, patch: dict[str, Any]) -> None:
        self.writes.append(("patch", "Job", name))
        assert self.objects[("Job", name)]["metadata"]["uid"] == uid

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self.writes.append(("delete", "Job", name))
        assert self.objects[("Job", name)]["metadata"]["uid"] == uid

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pod_list)

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, best_effort: bool = False
    ) -> bool:
        self.statuses.append(status)
        return True


@dataclass
class World:
    kube: FakeKube
    events: list[tuple[str, str, str]]
    listings: list[str]
    settings: OperatorSettings

    def run(
        self, status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None, name: str = NAME
    ) -> dict[str, Any]:
        ctx = rc.Context(kube=self.kube, settings=self.settings, post=lambda *e: self.events.append(e))  # type: ignore[arg-type]
        meta = {"name": name, "namespace": NS, "uid": UID, "generation": 1}
        return asyncio.run(rc.reconcile(ctx, meta, spec or SPEC, status or {}, 0))

    def passes(self, count: int, **kwargs: Any) -> dict[str, Any]:
        status: dict[str, Any] = {}
        for _ in range(count):
            status = {**status, **self.run(status, **kwargs)}
        return status


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    listings: list[str] = []

    def list_pages(client: Any, bucket: str, prefix: str, **_: Any) -> Iterator[list[ObjectInfo]]:
        listings.append(bucket)
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        yield [ObjectInfo(f"k{i:05d}", 100_000, "etag", stamp) for i in range(2000)]

    monkeypatch.setattr(rc, "make_client", lambda *a: object())
    monkeypatch.setattr(rc, "guard_client", lambda client, policy: client)
    monkeypatch.setattr(rc, "check_location", lambda *a: None)
    monkeypatch.setattr(rc, "list_pages", list_pages)
    rc.forget(UID)
    yield World(FakeKube(), [], listings, OperatorSettings(max_memory_per_pod=512 * MiB))
    rc.forget(UID)


def stalled(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Stalled" and c["status"] == "True")


def tenant_made(kind: str, name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": NS}}
    if kind == "Job":
        body["spec"] = {"parallelism": 1, "template": {"spec": {"containers": [{"name": "x"}]}}}
    if data is not None:
        body["data"] = data
    return body


def test_a_happy_pass_creates_owned_children(world: World) -> None:
    status = world.run()
    assert status["phase"] != "Pending", status
    assert [w[:2] for w in world.kube.writes] == [
        ("create", "ConfigMap"),
        ("create", "ConfigMap"),
        ("create", "Job"),
    ]
    for key in (("ConfigMap", plan_name(NAME)), ("ConfigMap", f"{NAME}-progress"), ("Job", job_name(NAME))):
        refs = world.kube.objects[key]["metadata"]["ownerReferences"]
        assert refs[0]["uid"] == UID and refs[0]["controller"] is True
    assert world.listings == ["src-bucket"]


def test_a_tenant_made_plan_stalls_with_name_conflict_and_is_never_read(world: World) -> None:
    forged = {SUMMARY_FILE: json.dumps({"podMemory": "64Gi"}), "spec.json": "{}", "shards.json": "[]"}
    world.kube.put("ConfigMap", tenant_made("ConfigMap", plan_name(NAME), forged))
    status = world.passes(3)
    condition = stalled(status)
    assert condition["reason"] == "NameConflict"
    assert (
        f"ConfigMap {NS}/{plan_name(NAME)}" in condition["message"]
        and "delete configmap" in condition["message"]
    )
    assert world.kube.writes == [] and world.listings == []  # nothing created, patched, deleted or listed
    assert "plan" not in status and status["phase"] == "Pending"
    assert [e[1] for e in world.events] == ["NameConflict"]  # one Event, not one per pass


def test_an_unowned_workers_job_is_never_patched_or_deleted(world: World) -> None:
    world.kube.put("Job", tenant_made("Job", job_name(NAME)))
    status = world.passes(2, spec={**SPEC, "parallelism": 3, "suspend": True})
    assert stalled(status)["reason"] == "NameConflict" and "Job " in stalled(status)["message"]
    # The plan is the CopyJob's own; neither the ledger nor a Job was created beside the foreign one.
    assert [w for w in world.kube.writes if w[1] == "Job" or w[2].endswith("-progress")] == []
    # After the foreign Job is gone the CopyJob starts, without listing the source again.
    del world.kube.objects[("Job", job_name(NAME))]
    world.run(status)
    assert ("create", "Job", job_name(NAME)) in world.kube.writes and len(world.listings) == 1


def test_a_foreign_ledger_starts_no_job(world: World) -> None:
    forged = {"0": "1000,1000,0,0,1,1,0,0,0"}  # "shard 0 finished": would count as copied
    world.kube.put("ConfigMap", tenant_made("ConfigMap", f"{NAME}-progress", forged))
    status = world.run()
    assert stalled(status)["reason"] == "NameConflict"
    assert ("Job", job_name(NAME)) not in world.kube.objects
    assert "objects" not in status


def test_a_ledger_replaced_under_a_running_job_is_not_trusted(world: World) -> None:
    status = world.run()
    del world.kube.objects[("ConfigMap", f"{NAME}-progress")]
    world.kube.put("ConfigMap", tenant_made("ConfigMap", f"{NAME}-progress", {"0": "1,1,0,0,1,1,0,0,0"}))
    status = world.run(status)
    assert stalled(status)["reason"] == "NameConflict"
    assert not [w for w in world.kube.writes if w[0] == "patch" and w[2].endswith("-progress")]


def test_an_unowned_job_is_not_removed_after_ttl(world: World) -> None:
    world.kube.put("Job", tenant_made("Job", job_name(NAME)))
    done = {"phase": "Succeeded", "completionTime": "2020-01-01T00:00:00Z", "conditions": []}
    status = world.run(done, spec={**SPEC, "ttlSecondsAfterFinished": 0})
    assert not [w for w in world.kube.writes if w[0] == "delete"]
    removed = next(c for c in status["conditions"] if c["type"] == "WorkersRemoved")
    assert removed["reason"] == "NameConflict" and "not removed" in removed["message"]


def test_the_own_job_is_removed_after_ttl_by_uid(world: World) -> None:
    world.run()
    done = {"phase": "Succeeded", "completionTime": "2020-01-01T00:00:00Z", "conditions": []}
    world.run(done, spec={**SPEC, "ttlSecondsAfterFinished": 0})
    assert ("delete", "Job", job_name(NAME)) in world.kube.writes  # the fake checks the UID


def test_a_refused_plan_stalls_once_and_never_lists_again(world: World) -> None:
    world.kube.refuse[("ConfigMap", plan_name(NAME))] = 403
    status = world.passes(4)
    condition = stalled(status)
    assert condition["reason"] == "PlanRejected" and "exceeded quota" in condition["message"]
    assert world.listings == ["src-bucket"]  # listed once, then only the create is retried
    assert [e[1] for e in world.events].count("PlanRejected") == 1
    assert [e[1] for e in world.events].count("Planning") == 1
    del world.kube.refuse[("ConfigMap", plan_name(NAME))]
    status = world.run(status)
    assert ("Job", job_name(NAME)) in world.kube.objects and world.listings == ["src-bucket"]


def test_a_refused_job_stalls_and_is_retried_without_listing(world: World) -> None:
    world.kube.refuse[("Job", job_name(NAME))] = 422
    status = world.passes(3)
    assert stalled(status)["reason"] == "JobRejected"
    assert world.listings == ["src-bucket"]


def test_a_name_too_long_for_a_label_stalls_before_listing(world: World) -> None:
    status = world.run(name="x" * 64)
    assert stalled(status)["reason"] == "InvalidName" and "at most 63" in stalled(status)["message"]
    assert world.listings == [] and world.kube.writes == []


def test_sizing_ignores_numbers_edited_into_the_own_plan(world: World) -> None:
    world.run()
    plan = world.kube.objects[("ConfigMap", plan_name(NAME))]
    summary = json.loads(plan["data"][SUMMARY_FILE])
    # The tenant edits the operator's own plan, and the Job is gone so that it is created again.
    plan["data"][SUMMARY_FILE] = json.dumps({**summary, "podMemory": "64Gi", "memoryLimit": "60Gi"})
    del world.kube.objects[("Job", job_name(NAME))]
    rc.forget(UID)
    status = world.run()
    limits = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]["containers"][0]
    assert int(limits["resources"]["limits"]["memory"]) <= 512 * MiB
    assert status["plan"]["podMemory"] == summary["podMemory"] != "64Gi"


def test_pods_the_job_does_not_control_are_not_counted(world: World) -> None:
    status = world.run()
    job_uid = world.kube.objects[("Job", job_name(NAME))]["metadata"]["uid"]
    report = json.dumps(
        {
            "format": FORMAT,
            "shard": 0,
            "state": "complete",
            "objects": {"total": 1000, "copied": 1000},
            "bytes": {"total": 1, "copied": 1},
        }
    )

    def pod(name: str, owner: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "labels": {"ferry.dev/copyjob": NAME},
                "annotations": {rc.INDEX_ANNOTATION: "0"},
                "ownerReferences": [{"kind": "Job", "uid": owner, "controller": True}],
            },
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "worker", "state": {"terminated": {"message": report}}}],
            },
        }

    world.kube.pod_list = [pod("forged", "not-the-job")]
    status = world.run(status)
    assert status["objects"]["copied"] == 0
    assert not [w for w in world.kube.writes if w[0] == "patch" and w[2].endswith("-progress")]
    world.kube.pod_list = [pod("real", job_uid)]
    world.run(status)
    assert [w for w in world.kube.writes if w[0] == "patch" and w[2].endswith("-progress")]


# -- the platform's tenancy policy ----------------------------------------------------------------

NO_SECRETS = {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}


def test_a_copyjob_without_credentials_stalls_before_anything_is_read_or_listed(world: World) -> None:
    status = world.passes(3, spec=NO_SECRETS)
    condition = stalled(status)
    assert condition["reason"] == "CredentialsRequired"
    assert "spec.source and spec.destination have no credentialsSecret" in condition["message"]
    assert world.kube.reads == [] and world.kube.writes == [] and world.listings == []
    assert [e[1] for e in world.events] == ["CredentialsRequired"]


def test_workload_identity_runs_under_the_tenant_s_own_account_and_never_the_operator_s(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[Any, Any]] = []
    monkeypatch.setattr(rc, "make_client", lambda location, creds, options: made.append((creds, options)))
    world.settings = replace(
        world.settings, workload_identity_namespaces=(NS,), worker_service_account="ferry-worker"
    )
    world.kube.accounts.add("copier")
    spec = {**NO_SECRETS, "serviceAccountName": "copier"}
    status = world.run(spec=spec)
    assert status["phase"] != "Pending", status
    # No Secret read; the operator's own requests for those locations are anonymous.
    assert ("Secret", "src") not in world.kube.reads
    assert made and all(creds is None and options.anonymous for creds, options in made)
    pod = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "copier"
    assert "AWS_EC2_METADATA_DISABLED" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_a_tenant_account_that_does_not_exist_stalls(world: World) -> None:
    world.settings = replace(world.settings, workload_identity_namespaces=(NS,))
    status = world.run(spec={**NO_SECRETS, "serviceAccountName": "missing"})
    assert stalled(status)["reason"] == "ServiceAccountMissing"
    assert "'missing'" in stalled(status)["message"] and world.listings == []


def test_workers_with_secrets_get_no_ambient_identity(world: World) -> None:
    world.run()
    env = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in env


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9090", "http://[::1]:8080", "http://169.254.169.254", "http://0.0.0.0:80"]
)
def test_an_endpoint_the_policy_refuses_stalls_before_any_request(
    world: World, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    checked: list[Any] = []
    monkeypatch.setattr(rc, "check_location", lambda *a: checked.append(a))
    spec = {**SPEC, "source": {**SPEC["source"], "endpoint": endpoint}}
    status = world.run(spec=spec)
    condition = stalled(status)
    assert condition["reason"] == "EndpointNotAllowed" and "spec.source.endpoint" in condition["message"]
    assert checked == [] and world.listings == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["copy", "dry-run"])
def test_a_namespace_plans_at_most_its_limit_at_once(world: World, dry_run: bool) -> None:
    world.settings = replace(world.settings, max_planning_per_namespace=2)
    rc._planning[NS] = {"other-1", "other-2"}  # two CopyJobs of the namespace listing right now
    try:
        status = world.passes(2, spec={**SPEC, "dryRun": dry_run})
        waiting = next(c for c in status["conditions"] if c["type"] == "Progressing")
        assert status["phase"] == "Pending" and waiting["reason"] == "WaitingForCapacity"
        assert "already plans 2 CopyJob(s), the platform's limit is 2" in waiting["message"]
        assert world.listings == []
        rc._planning[NS].discard("other-1")  # one of them is done
        status = world.run(status, spec={**SPEC, "dryRun": dry_run})
        assert world.listings == ["src-bucket"] and status["phase"] in ("Planned", "Running"), status
        assert rc._planning[NS] == {"other-2"}  # this one's slot is free again
    finally:
        rc._planning.pop(NS, None)


def endless(page_size: int) -> Callable[..., Iterator[list[ObjectInfo]]]:
    def list_pages(client: Any, bucket: str, prefix: str, **_: Any) -> Iterator[list[ObjectInfo]]:
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        for n in itertools.count():
            yield [ObjectInfo(f"k{n:09d}-{i:04d}", 10, "etag", stamp) for i in range(page_size)]

    return list_pages


@pytest.mark.parametrize(
    ("limits", "page_size", "reason", "fragment"),
    [
        ({"listing_deadline_seconds": 0.2}, 0, "ListingTooLong", "planning.listingDeadlineSeconds"),
        ({"max_objects_per_copyjob": 5000}, 1000, "TooManyObjects", "more than 5,000 objects"),
    ],
    ids=["deadline", "object-cap"],
)
def test_an_endless_listing_stalls_once_and_is_not_listed_again(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, Any],
    page_size: int,
    reason: str,
    fragment: str,
) -> None:
    calls: list[int] = []
    pages = endless(page_size)

    def counted(*args: Any, **kwargs: Any) -> Iterator[list[ObjectInfo]]:
        calls.append(1)
        return pages(*args, **kwargs)

    monkeypatch.setattr(rc, "list_pages", counted)
    world.settings = replace(world.settings, **limits)
    status = world.passes(3)
    condition = stalled(status)
    assert condition["reason"] == reason and fragment in condition["message"], condition
    assert len(calls) == 1  # the next passes stall again without listing
    assert [e[1] for e in world.events].count(reason) == 1
    assert not [w for w in world.kube.writes if w[0] == "create"]
    # A new spec (generation) is listed again.
    meta_generation = 2
    ctx = rc.Context(kube=world.kube, settings=world.settings, post=lambda *e: None)  # type: ignore[arg-type]
    meta = {"name": NAME, "namespace": NS, "uid": UID, "generation": meta_generation}
    asyncio.run(rc.reconcile(ctx, meta, {**SPEC, "parallelism": 2}, status, 0))
    assert len(calls) == 2


CANARY = "CANARY-" + uuid.uuid4().hex


def test_what_a_failing_endpoint_answered_never_reaches_the_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    def list_pages(client: Any, bucket: str, prefix: str, call: Any, **_: Any) -> Iterator[list[ObjectInfo]]:
        def request() -> Any:
            error: Any = {"Error": {"Code": "InternalError", "Message": CANARY}}
            raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 500}}, "ListObjectsV2")

        yield call(request)

    monkeypatch.setattr(rc, "list_pages", list_pages)
    monkeypatch.setattr(
        rc, "LISTING_RETRY", RetryPolicy(max_attempts=2, base_seconds=0, throttle_base_seconds=0)
    )
    status = world.run()
    condition = stalled(status)
    assert condition["reason"] == "ListingFailed"
    assert "InternalError: the service failed internally (HTTP 500)" in condition["message"]
    assert CANARY not in json.dumps(status) and CANARY not in json.dumps(world.events)
