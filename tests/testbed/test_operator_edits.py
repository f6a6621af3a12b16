"""Systematic failures and edits of finished or stopped CopyJobs, end to end on the testbed: a real
kube-apiserver with RBAC, the Job controller, worker and planner pods run by the process kubelet, versitygw
as S3 (it checks the region a request is signed for, as AWS does), the fault-injecting proxy in front of it
where a test needs a destination that refuses writes. Every object is verified at the destination.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from ferry.errors import PreflightError
from ferry.model import Location
from ferry.worker.preflight import check_location
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.systematic import (
    ACCESS_DENIED_FIRST_FAILURES,
    FIRST_FAILURES,
    ErrorClass,
    Side,
    SystematicFailure,
)
from support.engine import run_engine, spec
from support.operator import Jobs, accounting_closes, condition, events, fill, md5s, spec_for
from testbed.binaries import TestBinaries
from testbed.faultproxy import FaultPlan, FaultProxy

from .conftest import wait_for

pytestmark = pytest.mark.timeout(480)

#: Every write refused, as by a destination key that may list the bucket but lacks s3:PutObject.
NO_WRITES = FaultPlan(
    refuse_rate=1.0, refuse_status=403, refuse_code="AccessDenied", methods=frozenset({"PUT"})
)
CONCURRENCY = 8


def stalled_with(jobs: Jobs, name: str, reason: str) -> dict[str, Any] | None:
    status = jobs.status(name)
    found = [c for c in status.get("conditions", []) if c["type"] == "Stalled" and c["status"] == "True"]
    return status if found and found[0]["reason"] == reason else None


def observed(jobs: Jobs, name: str) -> dict[str, Any] | None:
    """The CopyJob once its status and every condition describe its current generation."""
    body = jobs.get(name)
    status, generation = body.get("status") or {}, body["metadata"]["generation"]
    current = status.get("observedGeneration") == generation and all(
        c.get("observedGeneration") == generation for c in status.get("conditions", [])
    )
    return body if current else None


# -- the region: refused by preflight, and by every transfer ---------------------------------------------


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_a_wrong_region_is_refused_by_preflight_and_stops_a_copy_after_ten_failures(
    versitygw: Any, transport: str
) -> None:
    endpoint = versitygw.endpoint
    s3 = endpoint.client()
    source, destination = fill(s3, 60, size=100)
    wrong = Location.model_validate({"bucket": destination, "endpoint": endpoint.url, "region": "us-west-2"})
    client = make_client(wrong, Credentials(endpoint.access_key, endpoint.secret_key), ClientOptions())
    with pytest.raises(PreflightError) as refused:
        check_location(client, wrong, "spec.destination")
    assert refused.value.reason == "RegionMismatch"
    assert "'us-west-2'" in str(refused.value) and "set spec.destination.region" in str(refused.value)

    # Past the preflight (and with overwrite: always, the destination is not even listed), every write is
    # refused the same way: the copy stops itself after the first few.
    job = spec(
        {"bucket": source, "endpoint": endpoint.url},
        {"bucket": destination, "endpoint": endpoint.url, "region": "us-west-2"},
        overwrite="always",
    )
    run = run_engine(job, endpoint, concurrency=CONCURRENCY, transport=transport)
    assert run.summary.systematic == SystematicFailure(
        ErrorClass.REGION, Side.DESTINATION, "AuthorizationHeaderMalformed", FIRST_FAILURES
    )
    assert FIRST_FAILURES <= run.summary.counts.failed <= FIRST_FAILURES + CONCURRENCY
    assert s3.list_objects_v2(Bucket=destination).get("KeyCount") == 0


def test_a_copyjob_with_a_wrong_destination_region_stalls_before_copying_and_runs_once_it_is_fixed(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 100)
    body = spec_for(versitygw.endpoint.url, source, destination)
    body["destination"]["region"] = "us-west-2"  # the service is us-east-1's
    jobs.create("region", body)
    status = wait_for(
        "Stalled RegionMismatch", lambda: stalled_with(jobs, "region", "RegionMismatch"), timeout=180
    )
    assert "set spec.destination.region" in condition(status, "Stalled")["message"]
    assert (
        cluster.batch.list_namespaced_job(
            namespace, label_selector="app.kubernetes.io/component=worker"
        ).items
        == []
    )
    assert md5s(s3, destination) == {}
    jobs.patch("region", {"destination": {"region": "us-east-1"}})
    status = jobs.wait_phase("region", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded" and status["objects"]["copied"] == 100
    assert md5s(s3, destination) == md5s(s3, source)


# -- a CopyJob whose writes are all refused ----------------------------------------------------------------


def test_a_copyjob_whose_every_write_is_refused_stalls_after_a_bounded_number_and_resumes_once_fixed(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    objects = 600
    source, destination = fill(s3, objects)
    with FaultProxy(versitygw.endpoint.url, NO_WRITES) as refusing:
        body = spec_for(
            versitygw.endpoint.url,
            source,
            destination,
            parallelism=2,
            shardSize={"maxObjects": 200},
            concurrency={"max": CONCURRENCY},
        )
        body["destination"]["endpoint"] = refusing.url
        jobs.create("refused", body)
        status = wait_for(
            "Stalled SystematicFailure",
            lambda: stalled_with(jobs, "refused", "SystematicFailure"),
            timeout=240,
        )
        stalled = condition(status, "Stalled")
        for fragment in (
            "destination",
            "AccessDenied",
            "grant s3:PutObject",
            "spec.destination.credentialsSecret",
        ):
            assert fragment in stalled["message"], stalled["message"]
        # The worker that stopped failed the whole Job (podFailurePolicy): no pod runs, no shard starts.
        wait_for(
            "the worker Job failed and its pods stopped",
            lambda: (
                any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
                and not job.status.active
                if (job := cluster.batch.read_namespaced_job("refused-workers", namespace))
                else None
            ),
            timeout=120,
        )
        puts = refusing.stats().by_method.get("PUT", 0)
        time.sleep(5)  # several passes of the operator (1 s each here)
        assert refusing.stats().by_method.get("PUT", 0) == puts  # nothing more was tried
        # Each of the two pods stops within its first refusals and the transfers in flight.
        assert ACCESS_DENIED_FIRST_FAILURES <= puts <= 2 * (ACCESS_DENIED_FIRST_FAILURES + CONCURRENCY), puts
        status = jobs.status("refused")
        assert 0 < status["objects"]["failed"] <= puts and status["objects"]["copied"] == 0
        assert accounting_closes(status)
        assert condition(status, "Succeeded")["reason"] == "SystematicFailure"
        assert status["observedGeneration"] == jobs.get("refused")["metadata"]["generation"]
        warnings = [r for r, _ in events(cluster, namespace, "refused") if r == "SystematicFailure"]
        assert len(warnings) == 1, warnings
        assert md5s(s3, destination) == {}

        # The user fixes the spec: the destination endpoint that takes writes.
        jobs.patch("refused", {"destination": {"endpoint": versitygw.endpoint.url}})
        status = jobs.wait_phase("refused", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert status["objects"] == {"total": objects, "copied": objects, "skipped": 0, "failed": 0, "pending": 0}
    assert condition(status, "Stalled")["status"] == "False"
    assert observed(jobs, "refused") is not None
    assert md5s(s3, destination) == md5s(s3, source)
    reasons = [r for r, _ in events(cluster, namespace, "refused")]
    assert reasons.count("Resumed") == 1 and reasons.count("SystematicFailure") == 1


# -- a Failed CopyJob retried by an edit -----------------------------------------------------------------


def test_a_failed_copyjob_retried_by_an_edit_runs_only_its_failed_shard_again(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 300)
    doomed = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/data/0001[0-2]\.bin")
    with FaultProxy(versitygw.endpoint.url, doomed) as flaky:
        jobs.create(
            "retry",
            spec_for(flaky.url, source, destination, parallelism=3, shardSize={"maxObjects": 100}),
        )
        status = jobs.wait_phase("retry", "Succeeded", "Failed", timeout=240)
        assert (status["phase"], condition(status, "Failed")["reason"]) == ("Failed", "ObjectsFailed")
        assert status["objects"]["failed"] == 3 and status["plan"]["shards"] == 3
        first_job = cluster.batch.read_namespaced_job("retry-workers", namespace).metadata.uid
        flaky.set_plan(FaultPlan())  # the cause is gone; the user retries as the README says
        gets = flaky.stats().by_method.get("GET", 0)
        jobs.patch("retry", {"suspend": True})
        wait_for("resumed, suspended", lambda: (s := jobs.status("retry")).get("phase") == "Suspended" and s)
        jobs.patch("retry", {"suspend": False})
        status = jobs.wait_phase("retry", "Succeeded", "Failed", timeout=240)
        retried_gets = flaky.stats().by_method.get("GET", 0) - gets
    assert status["phase"] == "Succeeded", status
    o = status["objects"]
    assert (o["total"], o["failed"], o["pending"], o["copied"] + o["skipped"]) == (300, 0, 0, 300)
    assert md5s(s3, destination) == md5s(s3, source)
    assert cluster.batch.read_namespaced_job("retry-workers", namespace).metadata.uid != first_job
    # Only the shard with failures ran again: its three objects and its listings, not 300 objects.
    assert 3 <= retried_gets <= 20, retried_gets
    assert observed(jobs, "retry") is not None


# -- edits that change nothing to run: observedGeneration follows -------------------------------------------


def test_after_a_suspend_round_trip_and_an_edit_after_success_kubectl_wait_returns(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str, testbin: TestBinaries
) -> None:
    source, destination = fill(s3, 200)
    jobs.create("roundtrip", spec_for(versitygw.endpoint.url, source, destination, suspend=True))
    jobs.wait_phase("roundtrip", "Suspended")
    jobs.patch("roundtrip", {"suspend": False})
    status = jobs.wait_phase("roundtrip", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded"
    assert wait_for("status at the generation", lambda: observed(jobs, "roundtrip"))
    job_uid = cluster.batch.read_namespaced_job("roundtrip-workers", namespace).metadata.uid

    # An edit after success, as one made through Git: observed, nothing run again.
    jobs.patch("roundtrip", {"concurrency": {"max": 4}})
    body = wait_for("the edit observed", lambda: observed(jobs, "roundtrip"), timeout=60)
    assert body["metadata"]["generation"] == 3 and body["status"]["phase"] == "Succeeded"
    kubectl = [
        str(testbin.path("kubectl")),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        namespace,
        "wait",
        "--for=condition=Succeeded",
        "copyjob/roundtrip",
        "--timeout=60s",
    ]
    started = time.monotonic()
    waited = subprocess.run(
        kubectl, capture_output=True, text=True, timeout=90, check=False, env=dict(os.environ)
    )
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout and time.monotonic() - started < 30
    assert cluster.batch.read_namespaced_job("roundtrip-workers", namespace).metadata.uid == job_uid
    assert body["status"]["objects"]["copied"] == 200
    reasons = [r for r, _ in events(cluster, namespace, "roundtrip")]
    assert reasons.count("Started") == 1 and "Resumed" not in reasons
    assert md5s(s3, destination) == md5s(s3, source)
