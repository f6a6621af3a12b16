"""The operator converges through control-plane faults: status writes answered 409 Conflict, and the
apiserver restarted while a job runs. These tests own their control plane (the restart would disturb
other tests sharing one); the operator reaches it through a fault-injecting proxy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from support.operator import Jobs, accounting_closes, condition, events, fill, md5s, secret, spec_for
from support.wait import wait_for
from testbed.apiproxy import COPYJOB_STATUS_CONFLICT, ApiFaultProxy
from testbed.controlplane import ControlPlane
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.install import OperatorProcess, install, operator_process
from testbed.kubelet import ProcessKubelet

from .conftest import require

pytestmark = pytest.mark.timeout(300)


class Plane:
    def __init__(self, controlplane: ControlPlane, proxy: ApiFaultProxy, operator: OperatorProcess) -> None:
        self.controlplane, self.proxy, self.operator = controlplane, proxy, operator
        self.api = config.new_client_from_config(config_file=str(controlplane.admin_kubeconfig))
        self.core = client.CoreV1Api(self.api)


@pytest.fixture(scope="module")
def plane(testbin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    require(testbin, "etcd", "kube-apiserver", "kube-controller-manager", "helm")
    work = tmp_path_factory.mktemp("faulty-plane")
    with (
        ControlPlane(testbin, work / "controlplane") as cp,
        ProcessKubelet(cp.admin_kubeconfig, work / "kubelet"),
    ):
        assert cp.pki is not None
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        install(api, testbin.path("helm"))
        with ApiFaultProxy(cp.url, cp.pki.ca_cert, cp.pki.apiserver_cert, cp.pki.apiserver_key) as proxy:
            for operator in operator_process(cp, work, server=proxy.url):
                yield Plane(cp, proxy, operator)


@pytest.fixture
def jobs(plane: Plane, versitygw: Any) -> Jobs:
    namespace = f"faults-{uuid.uuid4().hex[:8]}"
    plane.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_for(
        "the default ServiceAccount",
        lambda: plane.core.list_namespaced_service_account(namespace).items,
        timeout=30,
    )
    secret(plane, namespace, "src", versitygw.endpoint)
    secret(plane, namespace, "dst", versitygw.endpoint)
    return Jobs(client.CustomObjectsApi(plane.api), namespace)


def test_status_write_conflicts_are_absorbed_and_counts_stay_exact(
    plane: Plane, jobs: Jobs, versitygw: Any
) -> None:
    s3 = versitygw.endpoint.client()
    source, destination = fill(s3, 600)
    plane.proxy.set_faults((COPYJOB_STATUS_CONFLICT,))  # half of all status writes answer 409
    try:
        jobs.create(
            "conflicts",
            spec_for(
                versitygw.endpoint.url,
                source,
                destination,
                parallelism=3,
                shardSize={"maxObjects": 200},
                ttlSecondsAfterFinished=0,
            ),
        )
        status = jobs.wait_phase("conflicts", "Succeeded", "Failed", timeout=180)
        # The final reports are read before the workers go: counts survive a lost status write there too.
        status = wait_for(
            "workers removed",
            lambda: (
                (s := jobs.status("conflicts"))
                and any(
                    c["type"] == "WorkersRemoved" and c["status"] == "True" for c in s.get("conditions", [])
                )
                and s
            ),
            timeout=60,
        )
    finally:
        plane.proxy.set_faults(())
    conflicts = plane.proxy.injected().get("PATCH 409", 0)
    assert conflicts >= 5, plane.proxy.injected()
    assert status["phase"] == "Succeeded", status
    assert status["objects"] == {"total": 600, "copied": 600, "skipped": 0, "failed": 0, "pending": 0}
    assert accounting_closes(status)
    assert [r for r, _ in events(plane, jobs.namespace, "conflicts")].count("Planned") == 1
    assert condition(status, "Succeeded")["status"] == "True"
    assert md5s(s3, destination) == md5s(s3, source)
    assert plane.operator.process is not None and plane.operator.process.poll() is None


def test_apiserver_restart_mid_run_resumes_with_exact_counts(
    plane: Plane, jobs: Jobs, versitygw: Any
) -> None:
    s3 = versitygw.endpoint.client()
    source, destination = fill(s3, 400)
    with FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=200)) as slow:
        jobs.create(
            "restart", spec_for(slow.url, source, destination, parallelism=2, shardSize={"maxObjects": 200})
        )
        wait_for(
            "copying", lambda: (jobs.status("restart").get("objects") or {}).get("copied", 0) > 0, timeout=120
        )
        plane.controlplane.restart_apiserver(down_seconds=5)
        slow.set_plan(FaultPlan())
        status = jobs.wait_phase("restart", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status
    assert status["objects"] == {"total": 400, "copied": 400, "skipped": 0, "failed": 0, "pending": 0}
    assert [r for r, _ in events(plane, jobs.namespace, "restart")].count("Planned") == 1
    assert md5s(s3, destination) == md5s(s3, source)
    assert plane.operator.process is not None and plane.operator.process.poll() is None
