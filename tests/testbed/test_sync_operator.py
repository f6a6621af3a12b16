"""`spec.mode: sync` through the operator on the testbed: the real kube-apiserver and Job controller,
worker pods run by the process kubelet, versitygw as S3 (the testbed's S3 server, which the worker pods
reach over HTTP on 127.0.0.1). The operator runs under the chart's RBAC.

Proves: the copy Job's shards each count their destination-only keys; the operator adds them up over the
whole job and, within deletes.max, runs the delete Job, which deletes exactly those keys and nothing
else, and only then is the CopyJob Succeeded with status.sync; over deletes.max it stalls with
DeleteLimitExceeded, starts no delete Job and deletes nothing; a dry run counts what would go (with the
keys) by a census Job and copies and deletes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from support.operator import condition, fill, spec_for

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
