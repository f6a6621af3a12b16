"""One reconcile pass against a fake API adapter (operator/reconcile.py): who owns what, and what runs
once. The S3 side is replaced by a fake bucket listing (`FakeS3`) and a count of how often planning listed it.

Proves: a foreign plan, Job or ledger stalls the CopyJob with NameConflict and is never read as a plan,
patched or deleted, and nothing is created beside it; a refused plan stalls once and is retried without
listing the source again; a name too long for a label stalls before anything is listed; pods the Job
does not control are not counted; sizing comes from the histogram, not from numbers in the ConfigMap.

Planning runs in a planner pod, simulated here by running `worker/planpod.py`'s own functions on the
environment and spec the operator rendered for it (Secrets resolved as the kubelet would, a missing one
keeping the pod waiting). The operator reads no Secret and makes no S3 client.

And the platform's tenancy policy: a location without a Secret stalls (CredentialsRequired) before
anything is created or listed, unless the namespace may use workload identity under a ServiceAccount of
its own; the planner gets no ambient identity otherwise; endpoints the policy refuses stall
(EndpointNotAllowed) before any request; a namespace plans at most so many CopyJobs at once
(WaitingForCapacity, dryRun too); a listing past its deadline or object cap stalls once and is not
started again until the spec changes; what a failing endpoint answered never reaches the status.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ferry.model.plan import SUMMARY_FILE
from ferry.operator import planstep
from ferry.operator import reconcile as rc
from ferry.operator.cost import parse_prices
from ferry.operator.fleet import FleetState, Reason
from ferry.operator.fleetstatus import scaling_status
from ferry.operator.kube import Refused
from ferry.operator.plannerjob import planner_name
from ferry.operator.planresult import PlannerFailure
from ferry.operator.render import delete_job_name, job_name, plan_name
from ferry.operator.settings import OperatorSettings
from ferry.worker import planpod
from ferry.worker import scan as scan_module
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
    """The adapter's surface, over a dict of objects; records every write. A planner Job "runs" when it
    is created: `planpod`'s preflight and listing on the environment and spec rendered for it."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (verb, kind, name)
    refuse: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, name) -> HTTP status
    pod_list: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=lambda: {"src": KEYS, "dst": KEYS})
    accounts: set[str] = field(default_factory=lambda: {"ferry-worker"})
    reads: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of accounts
    #: What each planner pod serves on /plan, by pod IP, and the pods of planner Jobs, by Job uid.
    served: dict[str, str] = field(default_factory=dict)
    planner_pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

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
        stored = self.put(kind, body)
        if (
            kind == "Job"
            and (body["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "planner"
            and not (body.get("spec") or {}).get("suspend")  # a suspended Job starts no pod
        ):
            self._run_planner(stored)
        return True

    def _run_planner(self, job: dict[str, Any]) -> None:
        """The kubelet and the planner pod, in one step: resolve the env, run planpod, record the outcome."""
        uid = job["metadata"]["uid"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        ip = f"10.0.0.{len(self.planner_pods) + 1}"
        pod_meta = {
            "name": f"{job['metadata']['name']}-x{len(self.planner_pods)}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "Job", "uid": uid, "controller": True}],
        }
        env: dict[str, str] = {}
        for var in container["env"]:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[var["name"]] = var.get("value", "")
                continue
            values = self.secrets.get(ref["name"])
            problem = (
                f'secret "{ref["name"]}" not found'
                if values is None
                else None
                if ref["key"] in values or ref.get("optional")
                else f"couldn't find key {ref['key']} in Secret {NS}/{ref['name']}"
            )
            if problem:
                waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": problem}}
                self.planner_pods[uid] = [
                    {
                        "metadata": pod_meta,
                        "status": {"phase": "Pending", "containerStatuses": [{"state": waiting}]},
                    }
                ]
                return
            if ref["key"] in values:
                env[var["name"]] = values[ref["key"]]
        spec_json = self.objects[("ConfigMap", planner_name(NAME))]["data"]["spec.json"]
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "spec.json").write_text(spec_json)
            config = planpod.config_from({**env, "FERRY_PLAN_DIR": folder})
        try:
            text = planpod.plan(config, planpod.preflight(config)).to_json()
        except planpod.PlanningStopped as exc:
            message = PlannerFailure(exc.reason, str(exc)).to_json()
            terminated = {"terminated": {"exitCode": 4 if exc.retry else 2, "message": message}}
            self.planner_pods[uid] = [
                {
                    "metadata": pod_meta,
                    "status": {"phase": "Failed", "containerStatuses": [{"state": terminated}]},
                }
            ]
            failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}
            job["status"] = {"conditions": [{**failed, "lastTransitionTime": rc.now()}]}
            return
        self.served[ip] = text
        self.planner_pods[uid] = [{"metadata": pod_meta, "status": {"phase": "Running", "podIP": ip}}]

    def fetch(self, address: str, port: int, path: str, *_: Any) -> str | None:
        return self.served.get(address) if path == "/plan" else None

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
        job = self.objects[("Job", name)]
        assert job["metadata"]["uid"] == uid
        resumed = job.get("spec", {}).get("suspend") and (patch.get("spec") or {}).get("suspend") is False
        job.setdefault("spec", {}).update(patch.get("spec") or {})
        if resumed and name == planner_name(NAME):  # a resumed planner Job starts its pod
            self._run_planner(job)

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self.writes.append(("delete", "Job", name))
        assert self.objects[("Job", name)]["metadata"]["uid"] == uid
        if name == planner_name(NAME):  # planners go at once (workers stay, as the TTL tests need)
            del self.objects[("Job", name)]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        if selector.startswith(planstep.CONTROLLER_UID_LABEL + "="):
            return copy.deepcopy(self.planner_pods.get(selector.split("=", 1)[1], []))
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
    memory: rc.Memory = field(default_factory=rc.Memory)
    #: What the source bucket answers the planner's listing.
    source: FakeS3 = field(default_factory=lambda: FakeS3(lambda i: f"k{i:05d}", 2000, 100_000))
    #: What the destination bucket answers a dry run's comparison: the first 500 of the source's objects.
    destination: FakeS3 = field(default_factory=lambda: FakeS3(lambda i: f"k{i:05d}", 500, 100_000))

    def run(
        self,
        status: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        name: str = NAME,
        generation: int = 1,
    ) -> dict[str, Any]:
        ctx = rc.Context(
            kube=self.kube,  # type: ignore[arg-type]
            settings=self.settings,
            post=lambda *e: self.events.append(e),
            memory=self.memory,
        )
        meta = {"name": name, "namespace": NS, "uid": UID, "generation": generation}
        return asyncio.run(rc.reconcile(ctx, meta, spec or SPEC, status or {}, 0))

    def passes(self, count: int, **kwargs: Any) -> dict[str, Any]:
        status: dict[str, Any] = {}
        for _ in range(count):
            status = {**status, **self.run(status, **kwargs)}
        return status

    def until_planned(self, status: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Passes until the plan is stored (the planner pod answers on the second pass)."""
        status = dict(status or {})
        for _ in range(4):
            status = {**status, **self.run(status, **kwargs)}
            if status.get("phase") not in ("Planning", "Pending", None):
                break
        return status


class FakeS3:
    """ListObjectsV2 over a sorted, possibly endless, sequence of keys (``key_at(i)`` for ``i < count``):
    the planner's parallel listing reads it with Prefix, StartAfter and continuation tokens."""

    def __init__(
        self,
        key_at: Callable[[int], str],
        count: int,
        size: int,
        *,
        page_limit: int = 1000,
        fail: Exception | None = None,
    ) -> None:
        self.key_at, self.count, self.size, self.fail = key_at, count, size, fail
        self.page_limit = page_limit

    def _first_after(self, key: str, *, inclusive: bool = False) -> int:
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            at = self.key_at(middle)
            if at < key or (at == key and not inclusive):
                low = middle + 1
            else:
                high = middle
        return low

    def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        """Named like boto3's: Prefix, MaxKeys, StartAfter, ContinuationToken (a Delimiter finds no
        common prefix: the keys hold no "/")."""
        prefix: str = params.get("Prefix", "")
        token: str | None = params.get("ContinuationToken")
        if self.fail is not None:
            raise self.fail
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        if token is not None:
            index = int(token)
        else:
            index = max(
                self._first_after(params.get("StartAfter") or ""), self._first_after(prefix, inclusive=True)
            )
        contents = []
        limit = min(int(params.get("MaxKeys", 1000)), self.page_limit)
        while len(contents) < limit and index < self.count and self.key_at(index).startswith(prefix):
            key = self.key_at(index)
            contents.append({"Key": key, "Size": self.size, "ETag": '"e"', "LastModified": stamp})
            index += 1
        more = index < self.count and self.key_at(index).startswith(prefix)
        page: dict[str, Any] = {"Contents": contents, "IsTruncated": more}
        if more:
            page["NextContinuationToken"] = str(index)
        return page


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    listings: list[str] = []
    world = World(FakeKube(), [], listings, OperatorSettings(max_memory_per_pod=512 * MiB))
    real_plan_source = planpod.plan_source

    def plan_source(spec: Any, source: Any, *, destination: Any = None, **kwargs: Any) -> Any:
        listings.append(spec.source.bucket)
        compared = world.destination if destination is not None else None
        return real_plan_source(spec, world.source, destination=compared, **kwargs)

    monkeypatch.setattr(planpod, "make_client", lambda *a: object())
    monkeypatch.setattr(planpod, "guard_client", lambda client, policy: client)
    monkeypatch.setattr(planpod, "check_location", lambda *a: None)
    monkeypatch.setattr(planpod, "plan_source", plan_source)
    monkeypatch.setattr(planstep, "fetch_from_pod", world.kube.fetch)
    yield world


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
    assert status["phase"] == "Planning", status
    assert world.kube.writes == [
        ("create", "ConfigMap", planner_name(NAME)),
        ("create", "Job", planner_name(NAME)),
    ]
    status = world.run(status)
    assert status["phase"] != "Pending", status
    assert world.kube.writes[2:] == [
        ("create", "ConfigMap", plan_name(NAME)),
        ("delete", "Job", planner_name(NAME)),  # its plan is stored: the planner pod stops
        ("create", "ConfigMap", f"{NAME}-progress"),
        ("create", "Job", job_name(NAME)),
    ]
    for key in (
        ("ConfigMap", plan_name(NAME)),
        ("ConfigMap", planner_name(NAME)),
        ("ConfigMap", f"{NAME}-progress"),
        ("Job", job_name(NAME)),
    ):
        refs = world.kube.objects[key]["metadata"]["ownerReferences"]
        assert refs[0]["uid"] == UID and refs[0]["controller"] is True
    assert world.listings == ["src-bucket"]
    assert [r for r in world.kube.reads if r[0] == "Secret"] == []


def test_the_operator_reads_only_checked_plans_from_the_planner_pod(world: World) -> None:
    world.run()
    (ip,) = world.kube.served
    result = json.loads(world.kube.served[ip])
    result["histogram"]["counts"][0] += 5  # counts that do not add up to the objects
    world.kube.served[ip] = json.dumps(result)
    status = world.run({})
    assert stalled(status)["reason"] == "PlanInvalid" and "do not add up" in stalled(status)["message"]
    assert ("ConfigMap", plan_name(NAME)) not in world.kube.objects


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
    # Planned first (spec.suspend holds planning too), then suspended: a pass would patch its own Job.
    status = world.until_planned(spec={**SPEC, "parallelism": 3})
    for _ in range(2):
        status = {**status, **world.run(status, spec={**SPEC, "parallelism": 3, "suspend": True})}
    assert stalled(status)["reason"] == "NameConflict" and "Job " in stalled(status)["message"]
    # The plan is the CopyJob's own; neither the ledger nor a Job was created beside the foreign one.
    assert [w for w in world.kube.writes if w[2] == job_name(NAME) or w[2].endswith("-progress")] == []
    # After the foreign Job is gone the CopyJob starts, without listing the source again.
    del world.kube.objects[("Job", job_name(NAME))]
    world.run(status)
    assert ("create", "Job", job_name(NAME)) in world.kube.writes and len(world.listings) == 1


def test_a_foreign_ledger_starts_no_job(world: World) -> None:
    forged = {"0": "1000,1000,0,0,1,1,0,0,0"}  # "shard 0 finished": would count as copied
    world.kube.put("ConfigMap", tenant_made("ConfigMap", f"{NAME}-progress", forged))
    status = world.passes(2)
    assert stalled(status)["reason"] == "NameConflict"
    assert ("Job", job_name(NAME)) not in world.kube.objects
    assert "objects" not in status


def test_a_ledger_replaced_under_a_running_job_is_not_trusted(world: World) -> None:
    status = world.until_planned()
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
    world.until_planned()
    done = {"phase": "Succeeded", "completionTime": "2020-01-01T00:00:00Z", "conditions": []}
    world.run(done, spec={**SPEC, "ttlSecondsAfterFinished": 0})
    assert ("delete", "Job", job_name(NAME)) in world.kube.writes  # the fake checks the UID


def test_a_refused_plan_stalls_once_and_never_lists_again(world: World) -> None:
    world.kube.refuse[("ConfigMap", plan_name(NAME))] = 403
    status = world.passes(4)
    condition = stalled(status)
    assert condition["reason"] == "PlanRejected" and "exceeded quota" in condition["message"]
    # Listed once; the planner pod keeps serving its plan while the create is retried.
    assert world.listings == ["src-bucket"]
    assert [e[1] for e in world.events].count("PlanRejected") == 1
    assert [e[1] for e in world.events].count("Planning") == 1
    del world.kube.refuse[("ConfigMap", plan_name(NAME))]
    status = world.run(status)
    assert ("Job", job_name(NAME)) in world.kube.objects and world.listings == ["src-bucket"]


def test_a_refused_job_stalls_and_is_retried_without_listing(world: World) -> None:
    world.kube.refuse[("Job", job_name(NAME))] = 422
    status = world.passes(4)
    assert stalled(status)["reason"] == "JobRejected"
    assert world.listings == ["src-bucket"]


def test_a_name_too_long_for_a_label_stalls_before_listing(world: World) -> None:
    status = world.run(name="x" * 64)
    assert stalled(status)["reason"] == "InvalidName" and "at most 63" in stalled(status)["message"]
    assert world.listings == [] and world.kube.writes == []


def test_sizing_ignores_numbers_edited_into_the_own_plan(world: World) -> None:
    world.until_planned()
    plan = world.kube.objects[("ConfigMap", plan_name(NAME))]
    summary = json.loads(plan["data"][SUMMARY_FILE])
    # The tenant edits the operator's own plan, and the Job is gone so that it is created again.
    plan["data"][SUMMARY_FILE] = json.dumps({**summary, "podMemory": "64Gi", "memoryLimit": "60Gi"})
    del world.kube.objects[("Job", job_name(NAME))]
    world.memory.forget(UID)
    status = world.run()
    limits = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]["containers"][0]
    assert int(limits["resources"]["limits"]["memory"]) <= 512 * MiB
    assert status["plan"]["podMemory"] == summary["podMemory"] != "64Gi"


def test_pods_the_job_does_not_control_are_not_counted(world: World) -> None:
    status = world.until_planned()
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


def test_a_manifest_named_by_a_local_file_is_refused_before_any_pod_runs(world: World) -> None:
    """The CRD refuses manifest.file; a CopyJob stored before that rule must not make a planner pod read
    a file of its own image."""
    spec = {**SPEC, "source": {**SPEC["source"], "manifest": {"format": "csv", "file": "/etc/passwd"}}}
    status = world.passes(2, spec=spec)
    condition = stalled(status)
    assert condition["reason"] == "InvalidSpec" and "spec.source.manifest.file" in condition["message"]
    assert world.kube.writes == [] and world.listings == []


# -- spec.mode sync: the delete Job after the copy Job --------------------------------------------

SYNC_SPEC = {**SPEC, "mode": "sync", "deletes": {"max": 100}}


def finished_pod(name: str, job_uid: str, index: int, document: dict[str, Any]) -> dict[str, Any]:
    message = json.dumps({"format": FORMAT, "shard": index, "state": "complete", **document})
    return {
        "metadata": {
            "name": name,
            "labels": {"ferry.dev/copyjob": NAME},
            "annotations": {rc.INDEX_ANNOTATION: str(index)},
            "ownerReferences": [{"kind": "Job", "uid": job_uid, "controller": True}],
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "worker", "state": {"terminated": {"message": message}}}],
        },
    }


def complete(world: World, name: str) -> tuple[str, int]:
    """Mark a Job of the world completed; its uid and shard count."""
    job = world.kube.objects[("Job", name)]
    shards = int(job["spec"]["completions"])
    job["status"] = {
        "completedIndexes": f"0-{shards - 1}" if shards > 1 else "0",
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    return job["metadata"]["uid"], shards


def copied_with_census(world: World, candidates: int, destination: int) -> int:
    """The copy Job completed, every shard copied and counted; returns the shard count."""
    job_uid, shards = complete(world, job_name(NAME))
    census = {
        "candidates": candidates,
        "destinationInScope": destination,
        "sourceInScope": 10,
        "listingComplete": True,
    }
    counts = {"objects": {"total": 10, "copied": 10}, "bytes": {"total": 10, "copied": 10}}
    world.kube.pod_list = [
        finished_pod(f"w-{i}", job_uid, i, {**counts, "sync": census}) for i in range(shards)
    ]
    return shards


def test_a_sync_deletes_through_a_capped_delete_job_and_succeeds_only_once_it_reported(world: World) -> None:
    status = world.until_planned(spec=SYNC_SPEC)
    shards = copied_with_census(world, candidates=2, destination=10)
    status = {**status, **world.run(status, spec=SYNC_SPEC)}
    delete_job = world.kube.objects[("Job", delete_job_name(NAME))]
    env = {e["name"]: e.get("value") for e in delete_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRY_PHASE"] == "delete"
    assert env["FERRY_SYNC_ALLOWED"] == ",".join(f"{i}:2" for i in range(shards))
    assert delete_job["spec"]["backoffLimitPerIndex"] == 0
    # Copied, deletes pending: never Succeeded yet.
    assert status["phase"] == "Running" and "completionTime" not in status
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "Deleting")
    assert status["sync"]["candidates"] == 2 * shards and status["sync"]["deleted"] == 0
    delete_uid, _ = complete(world, delete_job_name(NAME))
    world.kube.pod_list += [
        finished_pod(
            f"d-{i}", delete_uid, i, {"phase": "delete", "deletes": {"deleted": 2, "kept": 0, "failed": 0}}
        )
        for i in range(shards)
    ]
    status = {**status, **world.run(status, spec=SYNC_SPEC)}
    assert status["phase"] == "Succeeded"
    assert status["sync"]["deleted"] == 2 * shards and status["sync"]["max"] == 100
    assert ("Normal", "Completed") in [e[:2] for e in world.events]


def test_a_sync_over_its_limit_stalls_and_creates_no_delete_job(world: World) -> None:
    status = world.until_planned(spec={**SYNC_SPEC, "deletes": {"max": 1}})
    copied_with_census(world, candidates=2, destination=10)
    status = {**status, **world.run(status, spec={**SYNC_SPEC, "deletes": {"max": 1}})}
    condition = stalled(status)
    assert condition["reason"] == "DeleteLimitExceeded" and "deletes.max" in condition["message"]
    assert status["phase"] != "Succeeded" and status["sync"]["deleted"] == 0
    assert "completionTime" not in status and ("Normal", "Completed") not in [e[:2] for e in world.events]
    assert ("Job", delete_job_name(NAME)) not in world.kube.objects
    # Raising deletes.max is followed by the next pass: the counts are in the ledger.
    world.kube.pod_list = []
    world.run(status, spec={**SYNC_SPEC, "deletes": {"max": 1000}})
    assert ("Job", delete_job_name(NAME)) in world.kube.objects


def test_a_sync_whose_shard_gave_no_count_deletes_nothing(world: World) -> None:
    status = world.until_planned(spec=SYNC_SPEC)
    job_uid, shards = complete(world, job_name(NAME))
    counts = {"objects": {"total": 10, "copied": 10}, "bytes": {"total": 10, "copied": 10}}
    world.kube.pod_list = [finished_pod(f"w-{i}", job_uid, i, counts) for i in range(shards)]
    status = {**status, **world.run(status, spec=SYNC_SPEC)}
    assert stalled(status)["reason"] == "ListingIncomplete"
    assert ("Job", delete_job_name(NAME)) not in world.kube.objects


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
    made: list[Any] = []
    monkeypatch.setattr(planpod, "make_client", lambda location, creds, options: made.append(creds))
    world.settings = replace(
        world.settings, workload_identity_namespaces=(NS,), worker_service_account="ferry-worker"
    )
    world.kube.accounts.add("copier")
    spec = {**NO_SECRETS, "serviceAccountName": "copier"}
    status = world.until_planned(spec=spec)
    assert status["phase"] != "Pending", status
    # The planner pod, not the operator, signs requests: under the tenant's own account, with no keys.
    assert made == [None, None]
    for job in (world.kube.objects[("Job", job_name(NAME))],):
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "copier"
        assert "AWS_EC2_METADATA_DISABLED" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_the_planner_runs_under_the_tenant_s_account_too(world: World) -> None:
    world.settings = replace(world.settings, workload_identity_namespaces=(NS,))
    world.kube.accounts.add("copier")
    world.run(spec={**NO_SECRETS, "serviceAccountName": "copier"})
    pod = world.kube.objects[("Job", planner_name(NAME))]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "copier" and pod["automountServiceAccountToken"] is False


def test_a_tenant_account_that_does_not_exist_stalls(world: World) -> None:
    world.settings = replace(world.settings, workload_identity_namespaces=(NS,))
    status = world.run(spec={**NO_SECRETS, "serviceAccountName": "missing"})
    assert stalled(status)["reason"] == "ServiceAccountMissing"
    assert "'missing'" in stalled(status)["message"] and world.listings == []


def test_planner_and_workers_with_secrets_get_no_ambient_identity(world: World) -> None:
    world.run()
    env = world.kube.objects[("Job", planner_name(NAME))]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in env
    world.until_planned()
    env = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in env


def test_a_missing_secret_keeps_the_planner_waiting_and_stalls_naming_the_field(world: World) -> None:
    del world.kube.secrets["dst"]
    status = world.passes(3)
    condition = stalled(status)
    assert condition["reason"] == "CredentialsSecretMissing"
    assert "'dst'" in condition["message"] and "spec.destination.credentialsSecret" in condition["message"]
    assert world.listings == []


def test_a_dry_run_plans_without_destination_credentials(world: World) -> None:
    del world.kube.secrets["dst"]
    spec = {"source": SPEC["source"], "destination": {"bucket": "dst-bucket"}, "dryRun": True}
    status = world.run(spec=spec)
    planner = world.kube.objects[("Job", planner_name(NAME))]["spec"]["template"]["spec"]["containers"][0]
    assert "FERRY_DESTINATION_ACCESS_KEY_ID" not in {e["name"] for e in planner["env"]}
    assert {"name": "FERRY_CHECK_DESTINATION", "value": "false"} in planner["env"]
    status = world.until_planned(status, spec=spec)
    assert status["phase"] == "Planned", status
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert "destination was not checked" in planned["message"]
    assert world.listings == ["src-bucket"]


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9090", "http://[::1]:8080", "http://169.254.169.254", "http://0.0.0.0:80"]
)
def test_an_endpoint_the_policy_refuses_stalls_before_any_request(
    world: World, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    checked: list[Any] = []
    monkeypatch.setattr(planpod, "check_location", lambda *a: checked.append(a))
    spec = {**SPEC, "source": {**SPEC["source"], "endpoint": endpoint}}
    status = world.passes(2, spec=spec)
    condition = stalled(status)
    assert condition["reason"] == "EndpointNotAllowed" and "spec.source.endpoint" in condition["message"]
    assert checked == [] and world.listings == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["copy", "dry-run"])
def test_a_namespace_plans_at_most_its_limit_at_once(world: World, dry_run: bool) -> None:
    world.settings = replace(world.settings, max_planning_per_namespace=2)
    world.memory.planning[NS] = {"other-1", "other-2"}  # two CopyJobs of the namespace planning now
    status = world.passes(2, spec={**SPEC, "dryRun": dry_run})
    waiting = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert status["phase"] == "Pending" and waiting["reason"] == "WaitingForCapacity"
    assert "already plans 2 CopyJob(s), the platform's limit is 2" in waiting["message"]
    assert world.listings == [] and world.kube.writes == []
    world.memory.planning[NS].discard("other-1")  # one of them is done
    status = world.run(status, spec={**SPEC, "dryRun": dry_run})
    assert status["phase"] == "Planning" and world.memory.planning[NS] == {"other-2", UID}
    status = world.run(status, spec={**SPEC, "dryRun": dry_run})
    assert world.listings == ["src-bucket"] and status["phase"] in ("Planned", "Running"), status
    assert world.memory.planning[NS] == {"other-2"}  # this one's slot is free again


def endless(page_size: int) -> FakeS3:
    """A source that never ends, answering ``page_size`` keys a page (0: empty pages, "more to come")."""
    return FakeS3(lambda i: f"k{i // 1000:09d}-{i % 1000:04d}", 10**15, 10, page_limit=page_size)


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
    world.source = endless(page_size)
    world.settings = replace(world.settings, **limits)
    status = world.passes(4)
    condition = stalled(status)
    assert condition["reason"] == reason and fragment in condition["message"], condition
    assert "edit the CopyJob to plan it again" in condition["message"]
    assert len(world.listings) == 1  # the next passes stall again without starting a planner
    assert [e[1] for e in world.events].count(reason) == 1
    assert [w[2] for w in world.kube.writes if w[0] == "create"] == [planner_name(NAME)] * 2
    assert ("ConfigMap", plan_name(NAME)) not in world.kube.objects
    # A new spec (generation) is planned again, by a new planner.
    world.passes(2, spec={**SPEC, "parallelism": 2}, generation=2)
    assert len(world.listings) == 2


CANARY = "CANARY-" + uuid.uuid4().hex


def test_what_a_failing_endpoint_answered_never_reaches_the_status(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    error: Any = {"Error": {"Code": "InternalError", "Message": CANARY}}
    failure = ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 500}}, "ListObjectsV2")
    world.source = FakeS3(lambda i: f"k{i:05d}", 10, 10, fail=failure)
    monkeypatch.setattr(
        scan_module, "LISTING_RETRY", RetryPolicy(max_attempts=2, base_seconds=0, throttle_base_seconds=0)
    )
    status = world.passes(2)
    condition = stalled(status)
    assert condition["reason"] == "ListingFailed"
    assert "InternalError: the service failed internally (HTTP 500)" in condition["message"]
    assert CANARY not in json.dumps(status) and CANARY not in json.dumps(world.events)


def test_a_failed_check_is_retried_by_a_new_planner_after_a_delay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferry.errors import PreflightError

    def missing(client: Any, location: Any, field: str) -> None:
        raise PreflightError(f"{field}: bucket {location.bucket!r} does not exist", reason="BucketNotFound")

    monkeypatch.setattr(planpod, "check_location", missing)
    status = world.passes(3)
    assert (
        stalled(status)["reason"] == "BucketNotFound" and "planned again every" in stalled(status)["message"]
    )
    assert [w[2] for w in world.kube.writes if w[:2] == ("create", "Job")] == [planner_name(NAME)]
    # The bucket is created; once the delay has passed, a new planner plans the CopyJob.
    monkeypatch.setattr(planpod, "check_location", lambda *a: None)
    job = world.kube.objects[("Job", planner_name(NAME))]
    job["status"]["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00+00:00"
    status = world.until_planned(status)
    assert status["phase"] not in ("Pending", "Planning"), status
    # One Event for the stall and one for planning, however often the planner was started.
    assert [e[1] for e in world.events if e[1] in ("BucketNotFound", "Planning")] == [
        "Planning",
        "BucketNotFound",
    ]
    assert [w[2] for w in world.kube.writes if w[:2] == ("create", "Job")] == [
        planner_name(NAME),
        planner_name(NAME),
        job_name(NAME),
    ]


def test_an_empty_source_is_said_out_loud(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.source = FakeS3(lambda i: f"k{i:05d}", 0, 10)
    spec = {**SPEC, "source": {**SPEC["source"], "prefix": "Data/"}}
    world.until_planned(spec=spec)
    warnings = [e for e in world.events if e[0] == "Warning"]
    assert [e[1] for e in warnings] == ["SourceEmpty"]
    assert "s3://src-bucket/Data/" in warnings[0][2] and "case-sensitive" in warnings[0][2]


def test_the_planner_runs_under_the_same_restricted_security_as_the_workers(world: World) -> None:
    world.run()
    planner = world.kube.objects[("Job", planner_name(NAME))]["spec"]["template"]["spec"]
    world.until_planned()
    workers = world.kube.objects[("Job", job_name(NAME))]["spec"]["template"]["spec"]
    assert planner["securityContext"] == workers["securityContext"]
    assert planner["containers"][0]["securityContext"] == workers["containers"][0]["securityContext"]
    assert planner["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert planner["automountServiceAccountToken"] is workers["automountServiceAccountToken"] is False


PLATFORM_PRICES = {
    "name": "Platform rates",
    "date": "2026-10-01",
    "currency": "EUR",
    "putCopyPostListPer1000": 0.004,
    "getAndOtherPer1000": 0.0003,
    "internetEgressPerGB": 0.02,
}


def test_a_dry_run_shows_the_cost_and_the_basis_of_its_prediction(world: World) -> None:
    world.settings = replace(world.settings, prices=parse_prices(PLATFORM_PRICES, "planning.prices"))
    status = world.until_planned(spec={**SPEC, "dryRun": True})
    assert status["phase"] == "Planned", status
    plan = status["plan"]
    assert "an assumption" in plan["predictionBasis"] and plan["predictedDuration"]
    cost = plan["cost"]
    assert cost["currency"] == "EUR" and cost["prices"] == {"name": "Platform rates", "date": "2026-10-01"}
    by_kind = {r["kind"]: r["count"] for r in cost["requests"]}
    # 2,000 objects of 100 KB between two services; the dry run's planner compared the destination,
    # which holds 500 of them: only the other 1,500 are priced.
    assert plan["existing"] == {"objects": 500, "bytes": 500 * 100_000}
    assert by_kind["GET"] == by_kind["PUT"] == 1500 and cost["copiedObjects"] == 1500
    assert cost["route"] == "streamed" and cost["egress"]["bytes"] == 1500 * 100_000
    # Planning's own LIST requests are measured, not estimated.
    assert cost["total"] > 0 and not any("not compared" in a for a in cost["assumptions"])
    json.dumps(status)  # what is written to the API server is plain JSON


def test_a_copy_that_is_not_a_dry_run_shows_no_cost(world: World) -> None:
    status = world.until_planned()
    assert "cost" not in status["plan"] and "predictedSeconds" in status["plan"]


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (
            {
                "objects": 500,
                "bytes": 9000,
                "listed": 700,
                "listers": 8,
                "keysPerSecond": 350.04,
                "etaSeconds": 2.1,
            },
            {
                "objects": 500,
                "bytes": 9000,
                "listed": 700,
                "listers": 8,
                "keysPerSecond": 350.0,
                "etaSeconds": 3,
            },
        ),
        # A hostile planner: junk in the new fields is left out; the counts still show.
        (
            {"objects": 5, "bytes": 6, "listers": -1, "keysPerSecond": "\x1b[2J", "etaSeconds": 1e308 * 10},
            {"objects": 5, "bytes": 6},
        ),
        ({"objects": "5", "bytes": 6}, None),
    ],
    ids=["every-field", "junk", "no-counts"],
)
def test_listing_progress_shows_what_the_planner_reports_checked(
    world: World, monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], shown: dict[str, Any] | None
) -> None:
    monkeypatch.setattr(planstep, "fetch_from_pod", lambda *a: None)  # no plan yet: still listing
    monkeypatch.setattr(planstep, "fetch_worker_status", lambda *a: json.dumps(answer))
    status = world.passes(3)
    assert status["phase"] == "Planning", status
    assert (status.get("plan") or {}).get("listingProgress") == shown


# -- spec.target: the fleet law sets the Job's pods ----------------------------------------------------

TARGETED = {**SPEC, "target": {"objectsPerSecond": 5000}, "parallelism": 8}


def test_without_a_target_the_job_runs_the_planned_pods_and_the_status_has_no_scaling(world: World) -> None:
    status = world.until_planned()
    job = world.kube.objects[("Job", job_name(NAME))]
    assert job["spec"]["parallelism"] == status["plan"]["parallelism"] == status["workers"]["desired"]
    assert "scaling" not in status


def test_a_target_starts_the_job_at_one_pod_and_the_status_says_why(world: World) -> None:
    status = world.until_planned(spec=TARGETED)
    assert world.kube.objects[("Job", job_name(NAME))]["spec"]["parallelism"] == 1
    scaling = status["scaling"]
    assert (scaling["desiredPods"], scaling["actualPods"], scaling["reason"]) == (1, 0, "Starting")
    assert scaling["targetObjectsPerSecond"] == 5000 and status["workers"]["desired"] == 1
    # The target removed: the Job goes back to the pods the plan sizes, and status.scaling goes.
    status = {**status, **world.run(status, spec={**SPEC, "parallelism": 8})}
    assert world.kube.objects[("Job", job_name(NAME))]["spec"]["parallelism"] == min(
        8, status["plan"]["shards"]
    )
    assert status["scaling"] is None  # the merge patch removes it


def test_a_restarted_operator_goes_on_from_status_scaling(world: World) -> None:
    status = world.until_planned(spec=TARGETED)
    assert status["plan"]["shards"] >= 2
    later = FleetState(2, Reason.BELOW_TARGET, "2 pod(s) needed", datetime.now(UTC).timestamp() - 5)
    status["scaling"] = scaling_status(later, 5000.0, 1)
    world.memory = rc.Memory()  # a new operator process
    events_before = len(world.events)
    status = world.run(status, spec=TARGETED)
    assert world.kube.objects[("Job", job_name(NAME))]["spec"]["parallelism"] == 2
    assert status["scaling"]["desiredPods"] == 2 and status["scaling"]["reason"] == "BelowTargetRising"
    assert len(world.events) == events_before, "a change made before the restart is not announced again"
    # A status forged above the cap is held to the cap (spec.parallelism 8, the shards left).
    status["scaling"] = {**status["scaling"], "desiredPods": 900}
    world.memory = rc.Memory()
    status = world.run(status, spec=TARGETED)
    assert world.kube.objects[("Job", job_name(NAME))]["spec"]["parallelism"] == 2
    assert status["scaling"]["reason"] == "AtCap"


def test_a_copyjob_suspended_before_its_plan_holds_its_planner_and_lists_nothing_until_resumed(
    world: World,
) -> None:
    status = world.passes(3, spec={**SPEC, "suspend": True})
    assert status["phase"] == "Suspended" and world.listings == []
    held = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert (held["status"], held["reason"]) == ("True", "PlanningHeld")
    assert "no planner pod runs" in held["message"]
    planner = world.kube.objects[("Job", planner_name(NAME))]
    assert planner["spec"]["suspend"] is True
    # Resumed: the same planner Job runs (no second one), lists once, and the CopyJob goes on.
    status = world.until_planned(status, spec={**SPEC, "suspend": False})
    assert world.kube.objects.get(("Job", planner_name(NAME)), {"spec": {}})["spec"].get("suspend") in (
        None,
        False,
    )
    assert world.listings == ["src-bucket"] and status["phase"] not in ("Planning", "Pending")
    resumed = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert resumed["status"] == "False"
