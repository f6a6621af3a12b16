"""Workload identity by label selector, end to end on the testbed: the operator under the chart's
ServiceAccount, RBAC and admission policy, with the platform's `workloadIdentity.namespaceSelector`
(FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR) and no namespace allowed by name.

The operator learns Namespaces' labels from a watch (a kopf index, list and watch of namespaces, which the
chart's ClusterRole grants), so a namespace labelled while a CopyJob waits lets it go on at the next pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from support.operator import Jobs, condition, fill, md5s, spec_for
from support.wait import wait_for
from testbed.binaries import TestBinaries
from testbed.install import OperatorProcess, install, operator_process

pytestmark = pytest.mark.timeout(300)

LABEL, FROZEN = "platform.example.com/workload-identity", "platform.example.com/frozen"
SELECTOR = {
    "matchLabels": {LABEL: "allowed"},
    "matchExpressions": [{"key": FROZEN, "operator": "DoesNotExist"}],
}
ACCOUNT = "copier"


@pytest.fixture(scope="module")
def operator(
    cluster: Any, testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(
        cluster.controlplane,
        tmp_path_factory.mktemp("operator"),
        extra_env={"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": json.dumps(SELECTOR)},
    )


def tenant_account(cluster: Any, namespace: str) -> None:
    """The tenant's own ServiceAccount, which would carry their cloud identity (IRSA and the like)."""
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": ACCOUNT}})


def label(cluster: Any, namespace: str, labels: dict[str, str | None]) -> None:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def stalled(jobs: Jobs, name: str) -> dict[str, Any] | None:
    status = jobs.status(name)
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    return status if conditions.get("Stalled", {}).get("status") == "True" else None


def worker_pod_spec(cluster: Any, namespace: str, name: str) -> Any:
    return cluster.batch.read_namespaced_job(f"{name}-workers", namespace).spec.template.spec


def test_a_copyjob_in_a_namespace_the_selector_matches_runs_under_its_own_service_account(
    jobs: Jobs, cluster: Any, namespace: str, s3: Any, versitygw: Any
) -> None:
    label(cluster, namespace, {LABEL: "allowed"})
    tenant_account(cluster, namespace)
    source, destination = fill(s3, 30, size=500)
    jobs.create("own", spec_for(versitygw.endpoint.url, source, destination, serviceAccountName=ACCOUNT))
    status = jobs.wait_phase("own", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert md5s(s3, destination) == md5s(s3, source)
    pod = worker_pod_spec(cluster, namespace, "own")
    # Workload identity: the tenant's account, and the cloud's metadata service left reachable.
    assert pod.service_account_name == ACCOUNT
    assert "AWS_EC2_METADATA_DISABLED" not in {e.name for e in pod.containers[0].env}


def test_a_copyjob_without_credentials_in_an_unlabelled_namespace_stalls_credentials_required(
    jobs: Jobs, cluster: Any, namespace: str, s3: Any, versitygw: Any
) -> None:
    """The attack: a tenant whose namespace the selector does not match omits credentialsSecret to run on
    ambient cloud identity; and names their own ServiceAccount with Secrets, to run under its identity.
    Both stall. Labelled by the platform afterwards, the namespace's CopyJob goes on by itself."""
    tenant_account(cluster, namespace)
    label(cluster, namespace, {LABEL: "allowed", FROZEN: "true"})  # matchLabels holds, the expression not
    source, destination = fill(s3, 20, size=500)
    borrow = spec_for(versitygw.endpoint.url, source, destination, serviceAccountName=ACCOUNT)
    del borrow["source"]["credentialsSecret"]
    jobs.create("borrow", borrow)
    jobs.create("own", spec_for(versitygw.endpoint.url, source, destination, serviceAccountName=ACCOUNT))

    status = wait_for("borrow Stalled", partial(stalled, jobs, "borrow"), timeout=60)
    got = condition(status, "Stalled")
    assert got["reason"] == "CredentialsRequired", got
    assert "workloadIdentity.namespaceSelector" in got["message"], got
    status = wait_for("own Stalled", partial(stalled, jobs, "own"), timeout=60)
    assert condition(status, "Stalled")["reason"] == "WorkloadIdentityNotAllowed", status
    assert not jobs.status("borrow").get("plan") and not jobs.status("own").get("plan")
    assert cluster.batch.list_namespaced_job(namespace).items == []
    assert md5s(s3, destination) == {}

    jobs.custom.delete_namespaced_custom_object("ferry.dev", "v1alpha1", namespace, "copyjobs", "borrow")
    label(cluster, namespace, {FROZEN: None})  # now the selector matches
    status = jobs.wait_phase("own", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert condition(status, "Stalled")["status"] == "False"
    assert worker_pod_spec(cluster, namespace, "own").service_account_name == ACCOUNT
    assert md5s(s3, destination) == md5s(s3, source)
