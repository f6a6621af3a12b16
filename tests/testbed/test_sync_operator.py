"""`spec.mode: sync` through the operator on the testbed: the real kube-apiserver and Job controller,
worker pods run by the process kubelet, versitygw as S3 (the testbed's S3 server, which the worker pods
reach over HTTP on 127.0.0.1). The operator runs under the chart's RBAC.

Proves: the copy Job's shards each count their destination-only keys; the operator adds them up over the
whole job and, within deletes.max, runs the delete Job, which deletes exactly those keys and nothing
else, and only then is the CopyJob Succeeded with status.sync; over deletes.max it stalls with
DeleteLimitExceeded, starts no delete Job and deletes nothing; a dry run counts what would go (with the
keys) by a census Job and copies and deletes nothing; spec.suspend set while the delete Job runs
suspends it (no delete pod runs, nothing more is deleted, the status says the deletes are held and
counts what went so far), and once resumed exactly the destination-only keys are gone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from support.operator import condition, fill, spec_for
from testbed.faultproxy import FaultPlan, FaultProxy

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)

#: Destination-only keys spread over the key space, so that several shards hold some; one outside
#: the source prefix, which is never the job's.
STALE = ("data/00004.old", "data/00031.gone", "data/00059.gone", "data/zz-last")
OUTSIDE = "elsewhere/kept"


def keys(s3: Any, bucket: str) -> list[str]:
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found += [o["Key"] for o in page.get("Contents", [])]
    return sorted(found)


def stale_destination(s3: Any, destination: str) -> None:
    for key in (*STALE, OUTSIDE):
        s3.put_object(Bucket=destination, Key=key, Body=b"stale")


def sync_spec(endpoint: str, source: str, destination: str, most: int) -> dict[str, Any]:
    spec = spec_for(endpoint, source, destination, parallelism=2, shardSize={"maxObjects": 20})
    spec["source"]["prefix"] = spec["destination"]["prefix"] = "data/"
    return {**spec, "mode": "sync", "deletes": {"max": most}}


def test_a_sync_copyjob_deletes_exactly_the_destination_only_keys_then_succeeds(
    jobs: Any, s3: Any, versitygw: Any, cluster: Cluster, namespace: str
) -> None:
    source, destination = fill(s3, 60)
    stale_destination(s3, destination)
    jobs.create("mirror", sync_spec(versitygw.endpoint.url, source, destination, 10))
    status = jobs.wait_phase("mirror", "Succeeded", "Failed", timeout=200)
    assert status["phase"] == "Succeeded", status
    assert status["plan"]["shards"] >= 3
    assert condition(status, "Succeeded")["reason"] == "Synced"
    sync = status["sync"]
    assert (sync["decision"], sync["candidates"], sync["deleted"], sync["max"]) == ("delete", 4, 4, 10)
    assert sync["sourceObjects"] == 60 and sync["destinationObjects"] == 64
    # Exactly the source's keys are left under the prefix; what is outside it was never the job's.
    assert keys(s3, destination) == sorted([*keys(s3, source), OUTSIDE])
    delete_job = cluster.batch.read_namespaced_job("mirror-deletes", namespace)
    env = {e.name: e.value for e in delete_job.spec.template.spec.containers[0].env}
    assert env["FERRY_PHASE"] == "delete"
    assert sum(int(part.split(":")[1]) for part in env["FERRY_SYNC_ALLOWED"].split(",")) == 4


def test_a_sync_copyjob_over_its_delete_limit_stalls_and_deletes_nothing(
    jobs: Any, s3: Any, versitygw: Any, cluster: Cluster, namespace: str
) -> None:
    source, destination = fill(s3, 60)
    stale_destination(s3, destination)
    jobs.create("capped", sync_spec(versitygw.endpoint.url, source, destination, 3))
    status = jobs.wait_stalled("capped", timeout=200)
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "DeleteLimitExceeded", status
    assert "4 destination objects" in stalled["message"] and "deletes.max" in stalled["message"]
    assert status["phase"] != "Succeeded"
    assert condition(status, "Succeeded")["status"] == "Unknown"
    assert (status["sync"]["decision"], status["sync"]["deleted"]) == ("refused", 0)
    assert status["objects"]["copied"] == 60
    assert set(STALE) <= set(keys(s3, destination))
    with pytest.raises(ApiException) as missing:
        cluster.batch.read_namespaced_job("capped-deletes", namespace)
    assert missing.value.status == 404


def test_a_dry_run_sync_counts_what_would_go_and_changes_nothing(
    jobs: Any, s3: Any, versitygw: Any, cluster: Cluster, namespace: str
) -> None:
    source, destination = fill(s3, 60)
    stale_destination(s3, destination)
    before = keys(s3, destination)
    jobs.create("preview", {**sync_spec(versitygw.endpoint.url, source, destination, 10), "dryRun": True})
    status = wait_for(
        "the dry run's count",
        lambda: (s := jobs.status("preview")).get("sync", {}).get("candidates") is not None and s,
        200,
    )
    assert status["phase"] == "Planned"
    sync = status["sync"]
    assert sync["dryRun"] is True and (sync["candidates"], sync["max"], sync["deleted"]) == (4, 10, 0)
    assert sorted(sync["wouldDelete"]) == sorted(STALE) and sync["wouldDeleteShown"] == 4
    assert "4 destination objects would be deleted" in sync["message"]
    assert keys(s3, destination) == before  # nothing copied, nothing deleted
    with pytest.raises(ApiException) as missing:
        cluster.batch.read_namespaced_job("preview-workers", namespace)
    assert missing.value.status == 404


def delete_pods(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    """The delete Job's pods that have not ended (running, starting or stopping)."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items
    return [
        p
        for p in pods
        if p.metadata.name.startswith(f"{name}-deletes-") and p.status.phase not in ("Succeeded", "Failed")
    ]


def test_a_sync_suspended_while_deleting_holds_its_deletes_and_deletes_exactly_the_rest_once_resumed(
    jobs: Any, s3: Any, versitygw: Any, cluster: Cluster, namespace: str
) -> None:
    source, destination = fill(s3, 60)
    # Destination-only keys in every shard of 10 source keys (each sorts just after a source key).
    stale = [f"data/{i:05d}.gone" for i in range(0, 60, 4)]
    for key in (*stale, OUTSIDE):
        s3.put_object(Bucket=destination, Key=key, Body=b"stale")
    total = 60 + len(stale) + 1  # once copied
    name = "held"
    with FaultProxy(versitygw.endpoint.url, FaultPlan()) as link:
        spec = sync_spec(link.url, source, destination, 30)
        jobs.create(name, {**spec, "parallelism": 1, "shardSize": {"maxObjects": 10}})
        wait_for(
            "the delete Job",
            lambda: any(
                j.metadata.name == f"{name}-deletes"
                for j in cluster.batch.list_namespaced_job(namespace).items
            ),
            timeout=120,
        )
        # Slow requests from now on: one delete pod at a time, each a few seconds over its shard.
        link.set_plan(FaultPlan(latency_ms=600))
        wait_for("some deletes done", lambda: len(keys(s3, destination)) < total, timeout=60)
        # Suspended while a delete pod is in the middle of its pass (running, its requests under way).
        wait_for(
            "a delete pod at work",
            lambda: any(p.status.phase == "Running" for p in delete_pods(cluster, namespace, name)),
            timeout=30,
        )
        time.sleep(2)
        jobs.patch(name, {"suspend": True})
        status = wait_for(
            "the deletes held, no delete pod left",
            lambda: (
                (s := jobs.status(name)).get("phase") == "Suspended"
                and condition(s, "Suspended").get("reason") == "DeletesHeld"
                and not delete_pods(cluster, namespace, name)
                and s
            ),
            timeout=60,
        )
        assert cluster.batch.read_namespaced_job(f"{name}-deletes", namespace).spec.suspend is True
        held_at = len(keys(s3, destination))
        time.sleep(4)
        assert len(keys(s3, destination)) == held_at, "deletes went on while suspended"
        assert not delete_pods(cluster, namespace, name)
        # The status counts exactly what went so far, and says the rest is held.
        status = wait_for(
            "status.sync counting what went",
            lambda: (s := jobs.status(name))["sync"]["deleted"] == total - held_at and s,
            timeout=30,
        )
        assert 0 < status["sync"]["deleted"] < len(stale), status["sync"]
        assert "the deletes are held" in condition(status, "Suspended")["message"]
        assert condition(status, "Succeeded")["status"] == "Unknown"
        # The delete pod the suspension stopped is in the ledger, with what it deleted, before any resume.
        ledger = cluster.core.read_namespaced_config_map(f"{name}-progress", namespace).data or {}
        recorded = {k: v for k, v in ledger.items() if k.startswith("deleted-")}
        assert recorded and all(len(v.split(",")[4].split(".")) == 1 for v in recorded.values()), recorded
        link.set_plan(FaultPlan())
        jobs.patch(name, {"suspend": False})
        status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", status
    sync = status["sync"]
    assert (sync["candidates"], sync["deleted"], sync["deleteFailed"]) == (len(stale), len(stale), 0), sync
    assert keys(s3, destination) == sorted([*keys(s3, source), OUTSIDE])
    # The stopped delete pod exited once the operator had said its count was recorded, not on a timeout.
    logs = [
        p.read_text() for p in cluster.kubelet.workdir.glob(f"pods/{namespace}_{name}-deletes-*/logs/*.log")
    ]
    assert any("deleted count recorded by the operator" in text for text in logs), logs
    assert not any("did not record what this pod deleted" in text for text in logs), logs
