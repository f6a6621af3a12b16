"""The operator end to end on the testbed: a real kube-apiserver with RBAC, the Job controller, worker
pods run by the process kubelet, versitygw as S3. The operator runs under the chart's ServiceAccount.
Every object is verified at the destination by content."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Jobs,
    accounting_closes,
    condition,
    events,
    fill,
    md5s,
    secret,
    spec_for,
)
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.install import OperatorProcess

from .conftest import wait_for

pytestmark = pytest.mark.timeout(240)


def test_copyjob_across_shards_succeeds_with_exact_counts_and_every_object_verified(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 1500)
    jobs.create(
        "bulk",
        spec_for(versitygw.endpoint.url, source, destination, parallelism=3, shardSize={"maxObjects": 300}),
    )
    status = jobs.wait_phase("bulk", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"] == {"total": 1500, "copied": 1500, "skipped": 0, "failed": 0, "pending": 0}
    assert status["plan"]["shards"] >= 5 and status["workers"]["succeeded"] == status["plan"]["shards"]
    assert condition(status, "Succeeded")["status"] == "True"
    assert status["observedGeneration"] == jobs.get("bulk")["metadata"]["generation"]
    assert status["completionTime"] >= status["startTime"]
    assert md5s(s3, destination) == md5s(s3, source)
    reasons = {r for r, _m in events(cluster, namespace, "bulk")}
    assert {"Planned", "Started", "Completed"} <= reasons
    job = cluster.batch.read_namespaced_job("bulk-workers", namespace)
    pod = job.spec.template.spec
    assert pod.automount_service_account_token is False
    assert pod.containers[0].security_context.read_only_root_filesystem is True


def test_dry_run_reports_the_estimate_and_copies_nothing(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 200)
    jobs.create("estimate", spec_for(versitygw.endpoint.url, source, destination, dryRun=True))
    status = jobs.wait_phase("estimate", "Planned")
    plan = status["plan"]
    assert plan["objects"] == 200 and plan["bytes"] > 200 * 2000
    assert plan["podMemory"] and plan["memoryLimit"] and plan["predictedSeconds"] >= 0
    assert sum(h["count"] for h in plan["histogram"]) == 200
    assert status["objects"]["pending"] == 200
    assert md5s(s3, destination) == {}
    assert cluster.batch.list_namespaced_job(namespace).items == []


def test_suspend_pauses_and_resume_finishes(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 300)
    jobs.create("paused", spec_for(versitygw.endpoint.url, source, destination, suspend=True))
    status = jobs.wait_phase("paused", "Suspended")
    assert (condition(status, "Suspended")["status"], condition(status, "Suspended")["reason"]) == (
        "True",
        "PlanningHeld",
    )
    # Suspended from the start: its planner Job is held too, so no pod of it lists the source.
    time.sleep(2)
    planner = cluster.batch.read_namespaced_job("paused-planner", namespace)
    assert planner.spec.suspend is True
    assert cluster.core.list_namespaced_pod(namespace, label_selector="ferry.dev/copyjob=paused").items == []
    jobs.patch("paused", {"suspend": False})
    status = jobs.wait_phase("paused", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded"
    assert md5s(s3, destination) == md5s(s3, source)


def test_missing_secret_stalls_with_a_reason_and_creating_it_resumes(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    cluster: Any,
    namespace: str,
    s3: Any,
    versitygw: Any,
) -> None:
    jobs = Jobs(custom, namespace)
    secret(cluster, namespace, "src", versitygw.endpoint)
    source, destination = fill(s3, 100)
    jobs.create("waits", spec_for(versitygw.endpoint.url, source, destination))
    status = jobs.wait_stalled("waits")
    stalled = condition(status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "CredentialsSecretMissing")
    assert "'dst'" in stalled["message"] and "spec.destination.credentialsSecret" in stalled["message"]
    wait_for(
        "a Warning event",
        lambda: any(r == "CredentialsSecretMissing" for r, _ in events(cluster, namespace, "waits")),
    )
    secret(cluster, namespace, "dst", versitygw.endpoint)
    status = jobs.wait_phase("waits", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded" and condition(status, "Stalled")["status"] == "False"


def test_missing_bucket_stalls_with_bucket_not_found(jobs: Jobs, s3: Any, versitygw: Any) -> None:
    source, _destination = fill(s3, 10)
    jobs.create("nobucket", spec_for(versitygw.endpoint.url, source, "no-such-bucket-here"))
    status = jobs.wait_stalled("nobucket")
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "BucketNotFound" and "no-such-bucket-here" in stalled["message"]


def test_a_stalled_copyjob_posts_one_event_however_often_it_is_retried(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    """A pass every second and a new planner every 30 s, for 45 s: one Planning and one Warning Event."""
    source, _destination = fill(s3, 10)
    jobs.create("quiet", spec_for(versitygw.endpoint.url, source, "no-such-bucket-either"))
    jobs.wait_stalled("quiet")
    time.sleep(45)
    reasons = [r for r, _m in events(cluster, namespace, "quiet")]
    assert reasons.count("BucketNotFound") == 1 and reasons.count("Planning") == 1, reasons
    planners = [
        j for j in cluster.batch.list_namespaced_job(namespace).items if j.metadata.name == "quiet-planner"
    ]
    assert planners, "the planner is retried, not given up"


def test_parallelism_edit_applies_to_the_live_job(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 600)
    with FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=40)) as slow:
        jobs.create(
            "resize", spec_for(slow.url, source, destination, parallelism=1, shardSize={"maxObjects": 100})
        )
        wait_for(
            "the workers' Job",
            lambda: [
                j
                for j in cluster.batch.list_namespaced_job(namespace).items
                if j.metadata.name == "resize-workers"
            ],
        )
        jobs.patch("resize", {"parallelism": 4})
        wait_for(
            "parallelism 4 on the Job",
            lambda: cluster.batch.read_namespaced_job("resize-workers", namespace).spec.parallelism == 4,
        )
        status = jobs.wait_phase("resize", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded" and status["workers"]["desired"] == 4
    assert md5s(s3, destination) == md5s(s3, source)


def worker_pid(pod: Any) -> int:
    """The PID of a pod's `ferry worker` process under the process kubelet, found by its HOSTNAME (an
    Indexed Job's pods are named by `spec.hostname`)."""
    wanted = f"HOSTNAME={pod.spec.hostname or pod.metadata.name}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"worker" not in (proc / "cmdline").read_bytes():
                continue
            if wanted in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    raise LookupError(f"no worker process for pod {pod.metadata.name}")


@pytest.mark.parametrize("how", ["pod-deleted", "process-sigkilled"])
def test_worker_pod_killed_mid_shard_is_retried_and_recopies_are_bounded(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str, how: str
) -> None:
    source, destination = fill(s3, 400)
    in_flight = 4  # concurrency.max: the most a killed pod can have been writing
    # A slow link holds every shard open until a pod has been killed; then the link speeds up. Timing
    # on a loaded machine cannot make a shard finish before the kill.
    with FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=1500)) as link:
        jobs.create(
            "killed",
            spec_for(
                link.url,
                source,
                destination,
                parallelism=2,
                shardSize={"maxObjects": 200},
                concurrency={"max": in_flight},
            ),
        )
        pods = "ferry.dev/copyjob=killed"

        def running_with_progress() -> Any:
            if s3.list_objects_v2(Bucket=destination).get("KeyCount", 0) == 0:
                return None
            items = cluster.core.list_namespaced_pod(namespace, label_selector=pods).items
            return next((p for p in items if p.status.phase == "Running"), None)

        victim = wait_for("a running worker with progress", running_with_progress, timeout=120)
        if how == "pod-deleted":
            cluster.core.delete_namespaced_pod(victim.metadata.name, namespace, grace_period_seconds=0)
            wait_for(
                "the killed pod gone",
                lambda: (
                    victim.metadata.name
                    not in {p.metadata.name for p in cluster.core.list_namespaced_pod(namespace).items}
                ),
                timeout=60,
            )
        else:  # the OOM killer's way: no signal handler runs, the pod stays and fails
            os.kill(worker_pid(victim), signal.SIGKILL)
            wait_for(
                "the killed pod failed",
                lambda: (
                    cluster.core.read_namespaced_pod(victim.metadata.name, namespace).status.phase == "Failed"
                ),
                timeout=60,
            )
        link.set_plan(FaultPlan(latency_ms=20))
        status = jobs.wait_phase("killed", "Succeeded", "Failed", timeout=180)
        puts = link.stats().by_method.get("PUT", 0)
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["total"] == 400 and status["objects"]["failed"] == 0
    assert accounting_closes(status)
    assert md5s(s3, destination) == md5s(s3, source)
    # The replacement pod skips what its predecessor finished: re-copies are what was in flight.
    assert 400 <= puts <= 400 + in_flight, puts


def test_operator_restarted_mid_run_resumes_without_replanning(
    jobs: Jobs, operator: OperatorProcess, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 500)
    with FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=40)) as slow:
        jobs.create(
            "restart", spec_for(slow.url, source, destination, parallelism=2, shardSize={"maxObjects": 100})
        )
        wait_for("copying", lambda: (jobs.status("restart").get("objects") or {}).get("copied", 0) > 0)
        plan = cluster.core.read_namespaced_config_map("restart-plan", namespace)
        operator.kill()
        operator.start()
        status = jobs.wait_phase("restart", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded"
    assert (
        cluster.core.read_namespaced_config_map("restart-plan", namespace).metadata.uid == plan.metadata.uid
    )
    assert [r for r, _ in events(cluster, namespace, "restart")].count("Planned") == 1
    assert status["objects"] == {"total": 500, "copied": 500, "skipped": 0, "failed": 0, "pending": 0}
    assert md5s(s3, destination) == md5s(s3, source)


def test_failed_objects_end_failed_with_a_sample_and_closed_accounting(
    jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, _destination = fill(s3, 50)
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/data/0001[0-2]\.bin")
    with FaultProxy(versitygw.endpoint.url, plan) as faulty:
        jobs.create("broken", spec_for(faulty.url, source, _destination))
        status = jobs.wait_phase("broken", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Failed"
    assert condition(status, "Failed")["reason"] == "ObjectsFailed"
    assert status["objects"]["failed"] == 3 and status["objects"]["copied"] == 47
    assert {f["key"] for f in status["failedObjects"]} == {f"data/0001{i}.bin" for i in range(3)}
    assert accounting_closes(status)


def test_deleting_the_copyjob_removes_everything_it_owns(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str, custom: client.CustomObjectsApi
) -> None:
    source, destination = fill(s3, 100)
    jobs.create("gone", spec_for(versitygw.endpoint.url, source, destination))
    jobs.wait_phase("gone", "Succeeded", "Failed")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    wait_for(
        "owned objects collected",
        lambda: (
            not cluster.batch.list_namespaced_job(namespace).items
            and not [
                c
                for c in cluster.core.list_namespaced_config_map(namespace).items
                if c.metadata.name.startswith("gone-")
            ]
            and not cluster.core.list_namespaced_pod(namespace, label_selector="ferry.dev/copyjob=gone").items
        ),
    )


def test_ttl_after_finished_removes_workers_and_keeps_the_copyjob(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 50)
    jobs.create("ttl", spec_for(versitygw.endpoint.url, source, destination, ttlSecondsAfterFinished=1))
    jobs.wait_phase("ttl", "Succeeded")
    wait_for("Job removed after the TTL", lambda: not cluster.batch.list_namespaced_job(namespace).items)
    status = wait_for(
        "WorkersRemoved",
        lambda: (
            (s := jobs.status("ttl"))
            and any(c["type"] == "WorkersRemoved" and c["status"] == "True" for c in s["conditions"])
            and s
        ),
    )
    assert status["phase"] == "Succeeded"
    assert status["objects"] == {"total": 50, "copied": 50, "skipped": 0, "failed": 0, "pending": 0}
    wait_for(
        "worker pods gone",
        lambda: not cluster.core.list_namespaced_pod(namespace, label_selector="ferry.dev/copyjob=ttl").items,
    )


def test_operator_serves_metrics(operator: OperatorProcess) -> None:
    port = operator.env["FERRY_METRICS_PORT"]
    text = wait_for("metrics", lambda: _get(f"http://127.0.0.1:{port}/metrics"))
    assert "ferry_api_requests_total" in text and "ferry_copyjobs" in text
    # The operator may have been restarted by an earlier test: give its probe a moment to come up.
    assert wait_for(
        "liveness", lambda: _get(f"http://127.0.0.1:{operator.env['FERRY_LIVENESS_PORT']}/healthz")
    )


def _get(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_planted_secret_values_never_leak(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    cluster: Any,
    namespace: str,
    s3: Any,
    versitygw: Any,
) -> None:
    """Known credential values go in; they must come out nowhere: not in the CopyJob's status, Events,
    owned ConfigMaps, Job or pod specs, the operator's log and metrics, the workers' logs and
    termination messages."""
    planted_key = "PLANTEDkey" + uuid.uuid4().hex[:12]
    planted_secret = "PLANTEDsecret" + uuid.uuid4().hex
    # versitygw only knows its root key; the planted pair is for the destination side of a job whose
    # destination is refused (InvalidAccessKeyId), which puts the credentials through every error path.
    secret(cluster, namespace, "src", versitygw.endpoint)
    secret(cluster, namespace, "dst", SimpleNamespace(access_key=planted_key, secret_key=planted_secret))
    jobs = Jobs(custom, namespace)
    source, destination = fill(s3, 20)
    jobs.create("secrecy", spec_for(versitygw.endpoint.url, source, destination))
    jobs.wait_stalled("secrecy")
    # Now let it run with a working destination Secret.
    cluster.core.patch_namespaced_secret(
        "dst",
        namespace,
        {
            "stringData": {
                "AWS_ACCESS_KEY_ID": versitygw.endpoint.access_key,
                "AWS_SECRET_ACCESS_KEY": versitygw.endpoint.secret_key,
            }
        },
    )
    jobs.wait_phase("secrecy", "Succeeded", "Failed")

    def texts() -> Iterator[tuple[str, str]]:
        yield "status", json.dumps(jobs.get("secrecy"))
        yield (
            "events",
            json.dumps(
                [e.to_dict() for e in cluster.core.list_namespaced_event(namespace).items], default=str
            ),
        )
        for cm in cluster.core.list_namespaced_config_map(namespace).items:
            yield f"configmap {cm.metadata.name}", json.dumps(cm.to_dict(), default=str)
        for job in cluster.batch.list_namespaced_job(namespace).items:
            yield f"job {job.metadata.name}", json.dumps(job.to_dict(), default=str)
        for pod in cluster.core.list_namespaced_pod(namespace).items:
            yield f"pod {pod.metadata.name}", json.dumps(pod.to_dict(), default=str)
            directory = cluster.kubelet.pod_dir(namespace, pod.metadata.name)
            for path in (directory or Path("/nonexistent")).rglob("*"):
                if path.is_file() and "volumes" not in path.parts:
                    yield str(path), path.read_text(errors="replace")
        yield "operator log", operator.log.read_text(errors="replace")
        yield "operator metrics", _get(f"http://127.0.0.1:{operator.env['FERRY_METRICS_PORT']}/metrics") or ""

    checked = 0
    for where, text in texts():
        checked += 1
        assert planted_secret not in text, f"the planted secret key appears in {where}"
        assert versitygw.endpoint.secret_key not in text, f"the S3 secret key appears in {where}"
    assert checked > 5


def test_operator_killed_while_listing_plans_once_after_restart(
    jobs: Jobs, operator: OperatorProcess, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 1200)
    # Listing pages take a second each, so the operator is killed in the middle of planning.
    slow_listing = FaultPlan(latency_ms=1000, methods=frozenset({"GET"}), path_regex=r"list-type=2")
    with FaultProxy(versitygw.endpoint.url, FaultPlan()) as proxy:
        proxy.set_plan(slow_listing)
        jobs.create("replan", spec_for(proxy.url, source, destination))
        wait_for("planning", lambda: jobs.status("replan").get("phase") == "Planning", timeout=60)
        operator.kill()
        assert not [
            c
            for c in cluster.core.list_namespaced_config_map(namespace).items
            if c.metadata.name == "replan-plan"
        ]
        operator.start()
        status = jobs.wait_phase("replan", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded"
    assert status["objects"] == {"total": 1200, "copied": 1200, "skipped": 0, "failed": 0, "pending": 0}
    assert status["plan"]["objects"] == 1200
    assert md5s(s3, destination) == md5s(s3, source)
