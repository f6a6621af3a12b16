"""The operator on the testbed, installed the way a platform team installs it: the CRD and the chart's
ServiceAccounts and RBAC applied to the real apiserver, then `ferry operator` run as a local process
under the chart's ServiceAccount identity (a token minted with the TokenRequest API). Used by the
end-to-end tests and by `make dev-cluster`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "ferry-system"
RELEASE = "ferry"
GROUP, VERSION, PLURAL = "ferry.dev", "v1alpha1", "copyjobs"
#: The testbed's S3 servers and pods live on loopback addresses, which the operator refuses as endpoints
#: unless the platform allows them: the testbed allows them the way a platform allows an internal
#: endpoint, with the chart value endpoints.allow (FERRY_ALLOWED_ENDPOINTS for the operator process).
ALLOWED_ENDPOINTS = ("127.0.0.0/8",)
#: Where the operator's /metrics and /healthz listen here: loopback, like every testbed server. (In a
#: cluster the chart's default is the pod's address; the testbed's pods share the host's network.)
LISTEN_ADDRESS = "127.0.0.1"


def policy_values(allowed: tuple[str, ...] = ALLOWED_ENDPOINTS) -> tuple[str, ...]:
    """`--set` arguments of the testbed's endpoint policy."""
    return (f"endpoints.allow={{{','.join(allowed)}}}",) if allowed else ()


def render_chart(helm: Path, *values: str) -> list[dict[str, Any]]:
    args = [str(helm), "template", RELEASE, str(REPO / "charts" / "ferry"), "--namespace", NAMESPACE]
    for value in (*policy_values(), *values):
        args += ["--set", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def install(api: client.ApiClient, helm: Path) -> None:
    """CRD, namespace, and the chart's ServiceAccounts, RBAC and admission policy on the operator's writes
    (not its Deployment: the operator runs here as a process)."""
    ext = client.ApiextensionsV1Api(api)
    # The CopyJob's, and the platform's EndpointBudget's (cluster-scoped).
    for path in ("copyjob.yaml", "endpointbudget.yaml"):
        crd = yaml.safe_load((REPO / "crds" / path).read_text())
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conditions = ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.2)
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    wanted = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for obj in render_chart(helm):
        if obj["kind"] in wanted:
            try:
                utils.create_from_dict(api, obj)
            except utils.FailToCreateError as exc:
                if not all(e.status == 409 for e in exc.api_exceptions):
                    raise


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("ferry")), "operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """SIGKILL, as a node failure would: no clean shutdown."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    @property
    def metrics_url(self) -> str:
        address = self.env.get("FERRY_LISTEN_ADDRESS", LISTEN_ADDRESS)
        return f"http://{address}:{self.env['FERRY_METRICS_PORT']}/metrics"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def operator_process(
    controlplane: Any,
    workdir: Path,
    interval: float = 1.0,
    *,
    server: str | None = None,
    allowed_endpoints: tuple[str, ...] = ALLOWED_ENDPOINTS,
    extra_env: dict[str, str] | None = None,
) -> Generator[OperatorProcess, None, None]:
    """Run `ferry operator` as the chart's ServiceAccount, with exactly the chart's RBAC: what the
    operator may do here is what it may do in a real cluster. `server` points it at a proxy;
    `allowed_endpoints` is its endpoint allow-list (the testbed's loopback by default), `extra_env`
    further settings (FERRY_* variables, as the chart's values set them)."""
    kubeconfig = controlplane.service_account_kubeconfig(
        NAMESPACE, RELEASE, workdir / "operator.kubeconfig", server=server
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "FERRY_AGGREGATE_INTERVAL_SECONDS": str(interval),
        "FERRY_METRICS_PORT": str(free_port()),
        "FERRY_LIVENESS_PORT": str(free_port()),
        "FERRY_LISTEN_ADDRESS": LISTEN_ADDRESS,
        "FERRY_WORKER_SERVICE_ACCOUNT": f"{RELEASE}-worker",
        "FERRY_MAX_PODS_PER_JOB": "50",
        "MALLOC_ARENA_MAX": "2",  # as the chart sets it
        "FERRY_ALLOWED_ENDPOINTS": ",".join(allowed_endpoints),
    }
    # The operator gets S3 credentials from the CopyJobs' Secrets only, never from its environment
    # (unless a test gives it an identity on purpose, through `extra_env`, to show it is never used).
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env.update(extra_env or {})
    handle = OperatorProcess(kubeconfig, workdir / "operator.log", env)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ChartOperator:
    """The operator as a platform team runs it: `helm install` of charts/ferry, its Deployment's pod run
    from the image by the testbed's container kubelet."""

    metrics_port: int
    liveness_port: int
    image: str

    @property
    def metrics_url(self) -> str:
        return f"http://{LISTEN_ADDRESS}:{self.metrics_port}/metrics"


def helm_install(
    helm: Path,
    kubeconfig: Path,
    image: str,
    *,
    aggregate_interval: int = 2,
    extra_values: tuple[str, ...] = (),
    timeout_seconds: int = 180,
) -> ChartOperator:
    """`helm upgrade --install` the chart with `image` (never pulled: it must exist in the engine) and
    wait for the operator's Deployment. Pods share the host's network here, so the operator's ports are
    free ports of this machine rather than the chart's defaults (8080 is the workers' status port)."""
    repository, _, tag = image.rpartition(":")
    ports = ChartOperator(free_port(), free_port(), image)
    args = [
        str(helm),
        "upgrade",
        "--install",
        RELEASE,
        str(REPO / "charts" / "ferry"),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "--timeout",
        f"{timeout_seconds}s",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        f"metrics.port={ports.metrics_port}",
        "--set",
        f"livenessPort={ports.liveness_port}",
        "--set",
        f"listenAddress={LISTEN_ADDRESS}",
        "--set",
        f"aggregateIntervalSeconds={aggregate_interval}",
    ]
    for value in (*policy_values(), *extra_values):
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout_seconds + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm install failed: {result.stderr.strip()[-2000:]}")
    return ports
