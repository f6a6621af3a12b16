"""CopyJobs with archived source objects (spec.archived) end to end on the testbed: the operator under the
chart's RBAC, worker pods run by the process kubelet, and moto's S3 server on 127.0.0.1 as both source
and destination.

moto, not the testbed's versitygw, because versitygw stores every object as STANDARD and does not
implement RestoreObject; moto refuses to read GLACIER and DEEP_ARCHIVE objects until restored and
implements RestoreObject (its restores are done by the next HEAD). A restore that never completes is
made by a fault proxy answering every RestoreObject with 409 RestoreAlreadyInProgress; switching that rule
off makes the restores complete when the operator next checks back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from ferry.operator.render import job_name
from support.operator import Jobs, accounting_closes, condition, md5s, secret, spec_for
from support.restores import NEVER_RESTORED
from support.wait import wait_for
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.install import OperatorProcess
from testbed.s3server import MotoServer, S3Endpoint

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(300)]

CLASSES = {f"std/{i:02d}": "STANDARD" for i in range(6)} | {
    "cold/a": "GLACIER",
    "cold/b": "DEEP_ARCHIVE",
    "cold/c": "GLACIER",
    "ir/a": "GLACIER_IR",
}
ARCHIVED = {key for key, storage in CLASSES.items() if storage in ("GLACIER", "DEEP_ARCHIVE")}


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Endpoint]:
    with MotoServer() as server:
        yield server.endpoint


@pytest.fixture
def moto_jobs(
    operator: OperatorProcess, custom: client.CustomObjectsApi, namespace: str, cluster: Any, moto: S3Endpoint
) -> Jobs:
    """CopyJobs in the test's namespace, with Secrets `src` and `dst` for moto."""
    secret(cluster, namespace, "src", moto)
    secret(cluster, namespace, "dst", moto)
    return Jobs(custom, namespace)


def fill(moto: S3Endpoint) -> tuple[Any, str, str]:
    s3 = moto.client()
    source, destination = f"arch-src-{uuid.uuid4().hex[:8]}", f"arch-dst-{uuid.uuid4().hex[:8]}"
    for bucket in (source, destination):
        s3.create_bucket(Bucket=bucket)
    for key, storage in CLASSES.items():
        s3.put_object(Bucket=source, Key=key, Body=key.encode() * 50, StorageClass=storage)
    return s3, source, destination


def test_archived_skip_succeeds_and_counts_the_archived_objects(moto_jobs: Jobs, moto: S3Endpoint) -> None:
    s3, source, destination = fill(moto)
    moto_jobs.create("skip", spec_for(moto.url, source, destination, archived="skip"))
    status = moto_jobs.wait_phase("skip", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["skipped"] == len(ARCHIVED) and status["objects"]["failed"] == 0
    assert status["archived"] == {
        "skipped": len(ARCHIVED),
        "restored": 0,
        "restoreTimedOut": 0,
        "waitingForRestore": 0,
    }
    assert set(md5s(s3, destination)) == set(CLASSES) - ARCHIVED
    assert accounting_closes(status)


def test_archived_restore_copies_every_object_once_restored(moto_jobs: Jobs, moto: S3Endpoint) -> None:
    s3, source, destination = fill(moto)
    spec = spec_for(
        moto.url,
        source,
        destination,
        archived="restore",
        restore={"tier": "Bulk", "maxWaitSeconds": 60, "checkIntervalSeconds": 1},
    )
    moto_jobs.create("restore", spec)
    status = moto_jobs.wait_phase("restore", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["copied"] == len(CLASSES)
    assert status["archived"]["restored"] == len(ARCHIVED)
    assert condition(status, "RestoresPending")["reason"] == "RestoresDone"
    assert md5s(s3, destination) == md5s(s3, source)


def test_a_restore_that_never_completes_fails_its_objects_with_a_clear_condition(
    moto_jobs: Jobs, moto: S3Endpoint
) -> None:
    s3, source, destination = fill(moto)
    with FaultProxy(moto.url, NEVER_RESTORED) as proxy:
        spec = spec_for(
            moto.url,
            source,
            destination,
            archived="restore",
            restore={"maxWaitSeconds": 3, "checkIntervalSeconds": 1},
        )
        spec["source"]["endpoint"] = proxy.url
        moto_jobs.create("never", spec)
        status = moto_jobs.wait_phase("never", "Succeeded", "Failed")
    assert status["phase"] == "Failed", status
    assert status["archived"]["restoreTimedOut"] == len(ARCHIVED)
    assert {f["key"] for f in status["failedObjects"]} == ARCHIVED
    assert {f["code"] for f in status["failedObjects"]} == {"RestoreTimedOut"}
    pending = condition(status, "RestoresPending")
    assert (pending["status"], pending["reason"]) == ("True", "RestoreTimedOut")
    assert set(md5s(s3, destination)) == set(CLASSES) - ARCHIVED
    assert accounting_closes(status)


def test_while_restores_are_pending_no_worker_pod_runs_and_the_operator_checks_back(
    moto_jobs: Jobs, moto: S3Endpoint, cluster: Any, namespace: str
) -> None:
    s3, source, destination = fill(moto)
    with FaultProxy(moto.url, NEVER_RESTORED) as proxy:
        # The pod checks its restores for one interval, then hands them off; the operator checks back an
        # interval after the Job completed: long enough to see that no pod runs meanwhile.
        spec = spec_for(
            moto.url,
            source,
            destination,
            archived="restore",
            restore={"maxWaitSeconds": 3600, "checkIntervalSeconds": 12},
        )
        spec["source"]["endpoint"] = proxy.url

        def handed_off() -> dict[str, Any] | None:
            status = moto_jobs.status("checkback")
            found = [c for c in status.get("conditions", []) if c["type"] == "RestoresPending"]
            waiting = found and "no worker pod runs" in found[0]["message"]
            return status if waiting and "running them again" not in found[0]["message"] else None

        moto_jobs.create("checkback", spec)
        status = wait_for("restores handed to the operator", handed_off, timeout=150)
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job_name('checkback')}"
        ).items
        assert pods and all(p.status.phase == "Succeeded" for p in pods), [p.status.phase for p in pods]
        assert status["phase"] == "Running", status
        pending = condition(status, "RestoresPending")
        assert (pending["status"], pending["reason"]) == ("True", "WaitingForRestore")
        assert f"{len(ARCHIVED)} archived objects" in pending["message"]
        assert "checks back at" in pending["message"]
        assert condition(status, "Progressing")["reason"] == "WaitingForRestore"
        assert status["archived"]["waitingForRestore"] == len(ARCHIVED)
        assert status["objects"]["pending"] == len(ARCHIVED) and status["objects"]["failed"] == 0
        assert status["workers"]["running"] == 0
        assert accounting_closes(status)
        assert set(md5s(s3, destination)) == set(CLASSES) - ARCHIVED

        proxy.set_plan(FaultPlan())  # the restores complete
        status = moto_jobs.wait_phase("checkback", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["failed"] == 0 and status["objects"]["pending"] == 0
    assert md5s(s3, destination) == md5s(s3, source)
    assert accounting_closes(status)
