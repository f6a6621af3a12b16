"""The mission's promise under real kernel limits: worker pods sized from the object-size distribution
finish without an OOM kill, stay under their limit as the cgroup measures it, and a pod given less
memory than a worker can work in fails its shards at once with a message that names the field to fix.

Everything here runs as a platform team runs it: the operator installed with `helm install` of
charts/ferry from the image `ferry:dev`, its pod and the worker pods run from that image by the
testbed's kubelet in container mode (real cgroup memory limits, uid 10001, read-only root, host
networking on loopback addresses). The whole module skips, with the reason, where no engine can run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from kubernetes import client, config

from ferry.model.quantity import parse_bytes
from support.containers import docker_host, ferry_image
from support.engine import digest_map
from support.operator import Jobs, condition, secret, spec_for
from support.wait import wait_for
from testbed.binaries import CONTROL_PLANE, TestBinaries
from testbed.containers import DockerEngine
from testbed.controlplane import ControlPlane
from testbed.install import helm_install
from testbed.kubelet import ProcessKubelet
from testbed.versitygw import VersityGW

from .conftest import require

pytestmark = pytest.mark.timeout(900)

GiB, MiB, KB = 2**30, 2**20, 100 * 1024
LARGE = 2
SMALL = 2000


@dataclass(frozen=True)
class ContainerCluster:
    controlplane: ControlPlane
    kubelet: ProcessKubelet
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


@pytest.fixture(scope="module")
def container_cluster(
    testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerCluster]:
    host = docker_host()  # skips the module where no engine can run
    image = ferry_image()
    require(testbin, *CONTROL_PLANE, "helm")
    work = tmp_path_factory.mktemp("container-cluster")
    with (
        ControlPlane(testbin, work / "controlplane") as cp,
        ProcessKubelet(cp.admin_kubeconfig, work / "kubelet", engine=DockerEngine(host)) as kubelet,
    ):
        helm_install(testbin.path("helm"), cp.admin_kubeconfig, image, aggregate_interval=2)
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        yield ContainerCluster(cp, kubelet, api)
        api.close()


@pytest.fixture(scope="module")
def mixed_source(versitygw: VersityGW) -> tuple[str, dict[str, str]]:
    """2 x 1 GiB + 2,000 x 100 KB objects, and the MD5 of each."""
    s3 = versitygw.endpoint.client()
    bucket = f"mixed-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(LARGE):
            path = Path(tmp) / f"large-{i}"
            md5 = hashlib.md5()
            with path.open("wb") as f:
                for _ in range(GiB // (8 * MiB)):
                    chunk = os.urandom(8 * MiB)
                    md5.update(chunk)
                    f.write(chunk)
            key = f"large/{i}.bin"
            s3.upload_file(str(path), bucket, key, Config=TransferConfig(multipart_chunksize=64 * MiB))
            digests[key] = md5.hexdigest()
            path.unlink()

    def put(i: int) -> tuple[str, str]:
        body = os.urandom(KB - (i % 512))
        key = f"small/{i:05d}.bin"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return key, hashlib.md5(body).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        digests.update(pool.map(put, range(SMALL)))
    return bucket, digests


@pytest.fixture
def tenant(container_cluster: ContainerCluster, versitygw: VersityGW) -> Jobs:
    """A fresh namespace with the Secrets `src` and `dst`, and a CopyJob client for it."""
    namespace = f"mem-{uuid.uuid4().hex[:8]}"
    core = container_cluster.core
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        f"default ServiceAccount in {namespace}",
        lambda: any(
            s.metadata.name == "default" for s in core.list_namespaced_service_account(namespace).items
        ),
        timeout=30,
    )
    secret(container_cluster, namespace, "src", versitygw.endpoint)
    secret(container_cluster, namespace, "dst", versitygw.endpoint)
    return Jobs(client.CustomObjectsApi(container_cluster.api), namespace)


def worker_pods(cluster: ContainerCluster, namespace: str, name: str) -> list[Any]:
    return cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items


def terminations(pods: list[Any]) -> list[Any]:
    return [
        s.state.terminated
        for p in pods
        for s in (p.status.container_statuses or [])
        if s.state is not None and s.state.terminated is not None
    ]


def run_mixed_job(
    tenant: Jobs, versitygw: VersityGW, source: str, **extra: Any
) -> tuple[str, str, dict[str, Any]]:
    s3 = versitygw.endpoint.client()
    destination = f"dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=destination)
    name = f"mixed-{uuid.uuid4().hex[:6]}"
    spec = spec_for(
        versitygw.endpoint.url,
        source,
        destination,
        objectSizes={"median": "100Ki", "p99": "1Gi", "max": "1Gi"},
        parallelism=2,
        **extra,
    )
    tenant.create(name, spec)
    status = tenant.wait_phase(name, "Succeeded", "Failed", timeout=720)
    return name, destination, status


def test_pods_sized_from_the_distribution_copy_large_and_small_objects_without_an_oom_kill(
    container_cluster: ContainerCluster,
    tenant: Jobs,
    versitygw: VersityGW,
    mixed_source: tuple[str, dict[str, str]],
) -> None:
    source, digests = mixed_source
    name, destination, status = run_mixed_job(tenant, versitygw, source)
    assert status["phase"] == "Succeeded", condition(status, "Succeeded")
    assert status["objects"]["copied"] == LARGE + SMALL
    assert digest_map(versitygw.endpoint.client(), destination) == digests

    limit = parse_bytes(status["memory"]["limit"])
    pods = worker_pods(container_cluster, tenant.namespace, name)
    assert pods, "the worker pods are gone before they could be checked"
    for pod in pods:
        (container,) = pod.spec.containers
        assert parse_bytes(container.resources.limits["memory"]) == limit
    ends = terminations(pods)
    assert ends and all(t.reason != "OOMKilled" and t.exit_code == 0 for t in ends), ends
    assert status["workers"]["oomKilled"] == 0
    # The peak is the cgroup's own high-water mark (page cache included), not a sampled RSS.
    assert status["memory"]["peakSource"] == "cgroup"
    assert 0 < status["memory"]["peakBytes"] < limit
    print(
        f"sized pods: limit {status['memory']['limit']}, cgroup peak {status['memory']['peakBytes'] / MiB:.1f} MiB"
    )


def test_a_pod_given_less_memory_than_sized_admits_fewer_transfers_and_finishes(
    container_cluster: ContainerCluster,
    tenant: Jobs,
    versitygw: VersityGW,
    mixed_source: tuple[str, dict[str, str]],
) -> None:
    source, digests = mixed_source
    name, destination, status = run_mixed_job(tenant, versitygw, source, resources={"memory": "160Mi"})
    assert status["phase"] == "Succeeded", condition(status, "Succeeded")
    assert status["memory"]["limit"] == "160Mi"
    assert digest_map(versitygw.endpoint.client(), destination) == digests
    ends = terminations(worker_pods(container_cluster, tenant.namespace, name))
    assert ends and all(t.reason != "OOMKilled" for t in ends), ends
    assert status["memory"]["peakSource"] == "cgroup"
    assert status["memory"]["peakBytes"] < 160 * MiB
    print(f"160Mi pods: cgroup peak {status['memory']['peakBytes'] / MiB:.1f} MiB")


def test_a_pod_below_the_smallest_workable_budget_fails_its_shards_at_once_naming_the_field(
    container_cluster: ContainerCluster, tenant: Jobs, versitygw: VersityGW
) -> None:
    s3 = versitygw.endpoint.client()
    source, destination = f"src-{uuid.uuid4().hex[:8]}", f"dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    for i in range(30):
        s3.put_object(Bucket=source, Key=f"k/{i:03d}", Body=b"x" * 1000)
    name = "too-small"
    tenant.create(
        name,
        spec_for(
            versitygw.endpoint.url,
            source,
            destination,
            resources={"memory": "48Mi"},
            shardSize={"maxObjects": 10},
        ),
    )
    status = tenant.wait_phase(name, "Failed", "Succeeded", timeout=180)
    assert status["phase"] == "Failed"
    message = condition(status, "Failed")["message"]
    assert "spec.resources.memory" in message and "at least" in message, message
    pods = worker_pods(container_cluster, tenant.namespace, name)
    ends = terminations(pods)
    # Each shard tried once and failed with the worker's own exit code: no crash loop of OOM kills.
    assert len(pods) == 3, [p.metadata.name for p in pods]
    assert all(t.exit_code == 2 and t.reason != "OOMKilled" for t in ends), ends
    assert status["objects"]["copied"] == 0


def test_pods_given_two_cpus_copy_in_two_processes_within_their_limit(
    container_cluster: ContainerCluster, tenant: Jobs, versitygw: VersityGW
) -> None:
    s3 = versitygw.endpoint.client()
    source = f"cpus-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=source)
    digests = {}
    for i in range(300):
        body = os.urandom(10_000 + i)
        s3.put_object(Bucket=source, Key=f"o/{i:04d}", Body=body)
        digests[f"o/{i:04d}"] = hashlib.md5(body).hexdigest()
    destination = f"dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=destination)
    name = f"cpus-{uuid.uuid4().hex[:6]}"
    tenant.create(
        name,
        spec_for(versitygw.endpoint.url, source, destination, parallelism=1, resources={"cpu": "2"}),
    )
    status = tenant.wait_phase(name, "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", condition(status, "Succeeded")
    assert status["plan"]["processes"] == 2 and status["plan"]["podCpu"] == "2"
    assert digest_map(s3, destination) == digests

    pods = worker_pods(container_cluster, tenant.namespace, name)
    assert pods
    for pod in pods:
        (container,) = pod.spec.containers
        assert container.resources.requests["cpu"] == "2"
        assert {e.name: e.value for e in container.env}["FERRY_PROCESSES"] == "2"
        log = container_cluster.kubelet.pod_dir(tenant.namespace, pod.metadata.name) / "logs" / "worker.log"
        assert "copying in 2 processes" in log.read_text()
    ends = terminations(pods)
    assert ends and all(t.reason != "OOMKilled" and t.exit_code == 0 for t in ends), ends
    # The sizing holds the copy processes' baselines: the cgroup's peak stays under the pod's limit.
    assert status["memory"]["peakSource"] == "cgroup"
    assert 0 < status["memory"]["peakBytes"] < parse_bytes(status["memory"]["limit"])
