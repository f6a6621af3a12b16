"""`make dev-cluster`: a local control plane, a kubelet, an S3 server and the Ferry operator until
interrupted.

Run as `python -m testbed.cluster`. It starts `ControlPlane`, the testbed kubelet and `VersityGW` with
their state in `.dev-cluster/` of the repository, installs Ferry, prints how to reach everything (the
operator's metrics URL included), and writes `.dev-cluster/env` (shell assignments of KUBECONFIG,
FERRY_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
FERRY_OPERATOR_METRICS_URL) once everything is ready, so another terminal can `source .dev-cluster/env`.
SIGINT or SIGTERM stops every process it started. The credentials are generated for this run and only
protect a server on 127.0.0.1.

Two modes (`--mode`):

* container (the default wherever the project's engine runs, `hack/engine.sh`): the image `ferry:dev`
  is built (or reused), the kubelet runs pods from images under real cgroup limits, and Ferry is
  installed as a platform team installs it, with `helm install` of charts/ferry: the operator runs as
  the chart's Deployment, its worker pods from the same image;
* process (where no engine can run, or when asked): pods run as local processes, the CRD and the
  chart's ServiceAccounts and RBAC are applied, and `ferry operator` runs as a local process under the
  chart's ServiceAccount.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config

from testbed.binaries import CONTROL_PLANE, REPO_ROOT, S3_SERVER, MissingBinariesError, find_binaries
from testbed.containers import DockerEngine
from testbed.controlplane import ControlPlane
from testbed.install import NAMESPACE, RELEASE, helm_install, install, operator_process
from testbed.kubelet import ProcessKubelet
from testbed.versitygw import VersityGW


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.cluster", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--state-dir", type=Path, default=REPO_ROOT / ".dev-cluster", help="where state and logs go"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "container", "process"),
        default="auto",
        help="run pods in containers from ferry:dev (auto: wherever the engine runs) or as local processes",
    )
    args = parser.parse_args(argv)

    try:
        bins = find_binaries(*CONTROL_PLANE, *S3_SERVER, "helm")
    except MissingBinariesError as exc:
        print(f"dev-cluster: {exc}", file=sys.stderr)
        return 2

    state: Path = args.state_dir
    # A fresh cluster every run: etcd data of a previous run would hold pods nobody runs any more.
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    engine, image = _engine(args.mode)
    if engine is None and args.mode == "container":
        return 2
    started = time.monotonic()
    with (
        ControlPlane(bins, state / "controlplane") as cp,
        ProcessKubelet(cp.admin_kubeconfig, state / "kubelet", engine=engine) as kubelet,
        VersityGW(bins, state / "s3") as s3,
        contextlib.ExitStack() as stack,
    ):
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        if engine is not None:
            print(f"dev-cluster: helm install {RELEASE} charts/ferry (image {image})", flush=True)
            chart = helm_install(bins.bin_dir / "helm", cp.admin_kubeconfig, image)
            pod = _operator_pod(api)
            log_dir = kubelet.pod_dir(NAMESPACE, pod)
            where = (
                f"Deployment {NAMESPACE}/{RELEASE} from {image}, pod {pod} (log: {log_dir}/logs/operator.log)"
            )
            metrics = chart.metrics_url
        else:
            install(api, bins.bin_dir / "helm")
            operator = operator_process(cp, state, interval=2.0)
            handle = next(operator)
            stack.callback(operator.close)
            where = (
                f"ferry operator as system:serviceaccount:{NAMESPACE}:{RELEASE} (log: {state}/operator.log)"
            )
            metrics = handle.metrics_url
        ep = s3.endpoint
        example = _seed(api, ep, state)
        env = {
            "KUBECONFIG": str(cp.admin_kubeconfig),
            "FERRY_S3_ENDPOINT": ep.url,
            "AWS_ACCESS_KEY_ID": ep.access_key,
            "AWS_SECRET_ACCESS_KEY": ep.secret_key,
            "AWS_DEFAULT_REGION": ep.region,
            "FERRY_OPERATOR_METRICS_URL": metrics,
        }
        env_file = state / "env"
        env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        kubectl = bins.bin_dir / "kubectl"
        print(
            f"dev-cluster ready in {time.monotonic() - started:.1f} s\n"
            f"  kubeconfig:   {cp.admin_kubeconfig}\n"
            f"  apiserver:    {cp.url}\n"
            f"  S3 endpoint:  {ep.url} (region {ep.region})\n"
            f"  S3 access key: {ep.access_key}\n"
            f"  S3 secret key: {ep.secret_key}\n"
            f"  kubectl:      {kubectl}\n"
            f"  pods:         {'containers from their images (real memory limits)' if engine else 'local processes'}\n"
            f"  operator:     {where}\n"
            f"  metrics:      {metrics}\n"
            f"  logs:         {state}/controlplane/logs, {state}/kubelet, {state}/s3\n"
            f"  try it:       {kubectl} apply -f {example} && {kubectl} get copyjobs -w\n"
            f"In another shell: set -a; source {env_file}; set +a\n"
            "Stop with Ctrl-C.",
            flush=True,
        )
        parent = os.getppid()
        while not stop.wait(1.0):
            if os.getppid() != parent:
                # `make` was killed without passing the signal on: nobody can stop us any more.
                print("dev-cluster: parent process gone", flush=True)
                break
            cp.check_running()
            if s3.proc is not None:
                s3.proc.check_running()
        print("dev-cluster: stopping", flush=True)
    (state / "env").unlink(missing_ok=True)
    return 0


def _engine(mode: str) -> tuple[DockerEngine | None, str]:
    """The engine and the freshly built image for container mode; (None, "") for process mode."""
    if mode == "process":
        return None, ""
    script = str(REPO_ROOT / "hack" / "engine.sh")
    print("dev-cluster: building (or reusing) the image ferry:dev", flush=True)
    built = subprocess.run(["bash", script, "image"], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        reason = (built.stderr.strip().splitlines() or ["unknown"])[-1]
        if built.returncode != 3:
            raise SystemExit(f"dev-cluster: {reason}")
        print(f"dev-cluster: pods run as local processes: {reason}", flush=True)
        return None, ""
    host = subprocess.run(["bash", script, "env"], capture_output=True, text=True, check=True).stdout
    return DockerEngine(host.strip().removeprefix("DOCKER_HOST=")), built.stdout.strip()


def _operator_pod(api: Any) -> str:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    )
    running = [p.metadata.name for p in pods.items if p.status.phase == "Running"]
    return running[0] if running else "?"


def _seed(api: object, endpoint: Any, state: Path, objects: int = 500) -> Path:
    """A source bucket with objects, an empty destination, a Secret and a CopyJob ready to apply."""
    s3 = endpoint.client()
    s3.create_bucket(Bucket="dev-source")
    s3.create_bucket(Bucket="dev-destination")
    for index in range(objects):
        s3.put_object(
            Bucket="dev-source",
            Key=f"logs/{index % 7}/part-{index:05d}.json",
            Body=b"{}" * (50 + index * 7),
            ContentType="application/json",
        )
    client.CoreV1Api(api).create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "dev-s3"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": endpoint.access_key,
                "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
            },
        },
    )
    manifest = state / "copyjob.yaml"
    manifest.write_text(f"""# A CopyJob against the dev-cluster's own S3 server (written by make dev-cluster).
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: dev-copy, namespace: default}}
spec:
  source: {{bucket: dev-source, prefix: logs/, endpoint: "{endpoint.url}", credentialsSecret: dev-s3}}
  destination: {{bucket: dev-destination, prefix: copied/, endpoint: "{endpoint.url}", credentialsSecret: dev-s3}}
  parallelism: 2
  shardSize: {{maxObjects: 100}}
""")
    return manifest


if __name__ == "__main__":
    sys.exit(main())
