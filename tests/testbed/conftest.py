"""Fixtures for tests that need the testbed's real processes: a control plane with a process kubelet,
and the versitygw S3 server.

Both are session-scoped (start-up costs seconds) and isolate tests by namespace or bucket. When the
binaries were never built, every test using them fails with the instruction to run `make testbin`:
a silently skipped tier would hide that the operator was never tested against an API server.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from support.operator import GROUP, PLURAL, VERSION, Jobs, secret
from support.wait import wait_for
from testbed.binaries import CONTROL_PLANE, MissingBinariesError, TestBinaries, find_bin_dir
from testbed.controlplane import ControlPlane
from testbed.install import OperatorProcess, install, operator_process
from testbed.kubelet import ProcessKubelet
from testbed.versitygw import VersityGW

__all__ = ["Cluster", "wait_for"]


@dataclass(frozen=True)
class Cluster:
    """The running testbed cluster: where it is, clients for it, and a fresh-namespace factory."""

    controlplane: ControlPlane
    kubelet: ProcessKubelet
    kubeconfig: Path
    api: client.ApiClient
    new_namespace: Callable[[str], str]

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)


def require(testbin: TestBinaries, *names: str) -> None:
    try:
        testbin.require(*names)
    except MissingBinariesError as exc:
        pytest.fail(f"testbed binaries missing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def testbin() -> TestBinaries:
    try:
        return TestBinaries(find_bin_dir())
    except MissingBinariesError as exc:
        pytest.fail(f"testbed binaries missing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def cluster(testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require(testbin, *CONTROL_PLANE)
    work = tmp_path_factory.mktemp("cluster")
    created: list[str] = []
    with (
        ControlPlane(testbin, work / "controlplane") as cp,
        ProcessKubelet(cp.admin_kubeconfig, work / "kubelet") as kubelet,
    ):
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        core = client.CoreV1Api(api)

        def new_namespace(prefix: str = "t") -> str:
            name = f"{prefix}-{uuid.uuid4().hex[:8]}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            created.append(name)
            # Pods are refused until the serviceaccount controller made the namespace's default SA.
            wait_for(
                f"default ServiceAccount in {name}",
                lambda: any(
                    sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
                ),
                timeout=30,
            )
            return name

        yield Cluster(cp, kubelet, cp.admin_kubeconfig, api, new_namespace)
        api.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace for one test (left for the namespace controller to clean at session end)."""
    prefix = request.node.name.replace("_", "-")[:40].strip("-").lower()
    return cluster.new_namespace(prefix)


@pytest.fixture(scope="session")
def versitygw(testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersityGW]:
    require(testbin, "versitygw")
    with VersityGW(testbin, tmp_path_factory.mktemp("versitygw")) as gw:
        yield gw


# -- the operator, for the modules that test it end to end ---------------------------------------


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`ferry operator` under the chart's ServiceAccount and RBAC; one per test module."""
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(cluster.controlplane, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def s3(versitygw: VersityGW) -> Any:
    return versitygw.endpoint.client()


@pytest.fixture
def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


@pytest.fixture
def jobs(
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    cluster: Cluster,
    versitygw: VersityGW,
) -> Iterator[Jobs]:
    """CopyJobs in the test's namespace, with Secrets `src` and `dst` for versitygw. Deleted after the
    test (not waited for): the operators of later modules would otherwise keep reconciling every CopyJob
    left unfinished (Stalled, Suspended, crawling), and their passes run late for everyone."""
    secret(cluster, namespace, "src", versitygw.endpoint)
    secret(cluster, namespace, "dst", versitygw.endpoint)
    yield Jobs(custom, namespace)
    # The apiserver busy, or the test broke it: the namespace is left for session end anyway.
    with contextlib.suppress(Exception):
        custom.delete_collection_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=10
        )
