"""The kubelet's container mode: pods run from their images in a real engine, under real cgroup limits.

The whole module skips, with the reason, where no container engine can run (`hack/engine.sh start`
exits 3). Its kubelet does not schedule: every pod here names its node, so the session's process
kubelet never sees them.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.containers import base_image as base_image_of_engine
from support.containers import docker_host
from support.containers import ferry_image as image_of_engine
from testbed.containers import KUBELET_LABEL, PID_LABEL, ContainerSpec, DockerEngine, EngineError
from testbed.controlplane import free_port
from testbed.kubelet import ProcessKubelet

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

PEM = "-----BEGIN KEY-----\nc2VjcmV0\n-----END KEY-----\n"
NODE = "ferry-docker-0"
WORKER_UID = 10001
#: The restricted security context the operator gives worker pods (operator/render.py).
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="session", autouse=True)
def engine() -> DockerEngine:
    """The project's engine (started or reused); session scope and autouse, so the module skips
    before the control plane is started for nothing."""
    return DockerEngine(docker_host())


@pytest.fixture(scope="module")
def base_image(engine: DockerEngine) -> str:
    """A plain Debian image with python3 (root by default)."""
    return base_image_of_engine()


@pytest.fixture(scope="module")
def ferry_image(engine: DockerEngine) -> str:
    """`ferry:dev`, the project's image (ENTRYPOINT ferry, uid 10001)."""
    return image_of_engine()


@pytest.fixture(scope="module")
def kubelet(
    engine: DockerEngine, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessKubelet]:
    work = tmp_path_factory.mktemp("container-kubelet")
    with ProcessKubelet(cluster.kubeconfig, work, node_name=NODE, engine=engine, schedule=False) as k:
        yield k
    assert engine.containers(f"{KUBELET_LABEL}={k.id}") == {}, "the kubelet left containers behind"


def docker(engine: DockerEngine, *args: str) -> None:
    """The engine's CLI for test set-up the kubelet never does (tagging images)."""
    subprocess.run([engine.docker, "--host", engine.host, *args], check=True, capture_output=True, timeout=60)


def pod(name: str, image: str, *, container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": image, **(container or {})}],
            **spec,
        },
    }


def python(code: str) -> dict[str, Any]:
    return {"command": ["python3", "-c", code]}


def finished(cluster: Cluster, ns: str, name: str, timeout: float = 60) -> Any:
    def terminal() -> Any:
        p = cluster.core.read_namespaced_pod(name, ns)
        return p if p.status.phase in ("Succeeded", "Failed") else None

    return wait_for(f"pod {name} to finish", terminal, timeout=timeout)


def terminated(p: Any) -> Any:
    return p.status.container_statuses[0].state.terminated


def pod_containers(engine: DockerEngine, uid: str) -> dict[str, str]:
    return engine.containers(f"io.kubernetes.pod.uid={uid}")


# -- running from the image --------------------------------------------------------------------


def test_pod_runs_from_its_image_as_uid_10001_on_a_read_only_root_with_volumes_env_and_message(
    cluster: Cluster, engine: DockerEngine, kubelet: ProcessKubelet, ferry_image: str, namespace: str
):
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "plan"}, "data": {"plan.json": '{"shards": 3}'}}
    )
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "s3"}, "stringData": {"secret-key": "s3cr3t", "pem": PEM}}
    )
    code = """
import json, os, socket
out = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "hostname": socket.gethostname()}
try:
    open("/written-to-root", "w")
    out["root"] = "writable"
except OSError as exc:
    out["root"] = exc.strerror
open("/tmp/scratch", "w").write("ok")
out["tmp"] = open("/tmp/scratch").read()
out["plan"] = json.load(open("/etc/ferry/plan/plan.json"))
out["key"] = open("/etc/ferry/s3/secret-key").read()
out["env"] = {k: os.environ.get(k) for k in ("SECRET", "PEM", "FERRY_POD_IP", "MEM", "PATH")}
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
out["caps"], out["nnp"] = status["CapEff"].strip(), status["NoNewPrivs"].strip()
out["pid"] = os.getpid()
open("/dev/termination-log", "w").write(json.dumps(out))
"""
    body = pod(
        "worker",
        ferry_image,
        container={
            **python(code),
            "securityContext": RESTRICTED,
            "env": [
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret-key"}}},
                {"name": "PEM", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "pem"}}},
                {"name": "FERRY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {
                    "name": "MEM",
                    "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
                },
            ],
            "resources": {"limits": {"memory": "256Mi", "cpu": "1"}},
            "volumeMounts": [
                {"name": "plan", "mountPath": "/etc/ferry/plan", "readOnly": True},
                {"name": "s3", "mountPath": "/etc/ferry/s3"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        },
        securityContext={"runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID},
        volumes=[
            {"name": "plan", "configMap": {"name": "plan"}},
            {"name": "s3", "secret": {"secretName": "s3"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    )
    created = cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "worker")

    assert p.status.phase == "Succeeded", terminated(p)
    out = json.loads(terminated(p).message)
    assert (out["uid"], out["gid"]) == (WORKER_UID, WORKER_UID)
    assert out["root"] == "Read-only file system"
    assert out["tmp"] == "ok"
    assert out["plan"] == {"shards": 3}
    assert out["key"] == "s3cr3t"
    assert (out["env"]["SECRET"], out["env"]["PEM"]) == ("s3cr3t", PEM)  # newlines intact
    assert out["env"]["FERRY_POD_IP"] == p.status.pod_ip and p.status.pod_ip.startswith("127.0.0.")
    assert out["env"]["MEM"] == "256"
    assert out["env"]["PATH"].startswith("/opt/ferry/bin:")  # the image's PATH, not the host's
    assert out["hostname"] == "worker"
    assert out["caps"] == "0000000000000000"
    assert out["nnp"] == "1"
    assert out["pid"] == 1  # the program is PID 1, as in Kubernetes
    status = p.status.container_statuses[0]
    assert status.container_id.startswith("docker://")
    assert status.image_id.startswith("docker://sha256:")
    assert terminated(p).reason == "Completed"
    assert pod_containers(engine, created.metadata.uid) == {}  # removed once it ended
    node = cluster.core.read_node(NODE)
    assert node.status.node_info.container_runtime_version.startswith("docker://20.")


def test_args_alone_keep_the_image_entrypoint_and_output_reaches_the_log(
    cluster: Cluster, kubelet: ProcessKubelet, ferry_image: str, namespace: str
):
    cluster.core.create_namespaced_pod(namespace, pod("help", ferry_image, container={"args": ["--help"]}))

    p = finished(cluster, namespace, "help")

    assert p.status.phase == "Succeeded", terminated(p)
    log = kubelet.pod_dir(namespace, "help") / "logs" / "main.log"
    assert "usage: ferry" in log.read_text()


def test_in_cluster_client_uses_the_mounted_service_account_token(
    cluster: Cluster, kubelet: ProcessKubelet, ferry_image: str, namespace: str
):
    code = """
import json
from kubernetes import client, config
config.load_incluster_config()
review = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1"})
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
open("/dev/termination-log", "w").write(json.dumps({"user": review.status.user_info.username, "ns": ns}))
"""
    # The chart's pod-level context for the operator: non-root 10001 with fsGroup.
    body = pod(
        "incluster",
        ferry_image,
        container={
            **python(code),
            "securityContext": RESTRICTED,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
        securityContext={"runAsNonRoot": True, "runAsUser": WORKER_UID, "fsGroup": WORKER_UID},
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "incluster")

    assert cluster.core.read_namespaced_config_map("kube-root-ca.crt", namespace).data["ca.crt"]
    assert p.status.phase == "Succeeded", terminated(p).message
    out = json.loads(terminated(p).message)
    assert out == {"user": f"system:serviceaccount:{namespace}:default", "ns": namespace}


def test_init_container_and_restarted_container_share_the_empty_dir_as_a_non_root_user(
    cluster: Cluster, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    # The first run fails and leaves a marker in the emptyDir; the restarted container finds it.
    code = (
        "import os, sys; m = '/scratch/marker'; first = not os.path.exists(m);"
        "open(m, 'a').write('x'); sys.exit(1 if first else 0)"
    )
    mount = {"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
    init = {
        "name": "init",
        "image": base_image,
        "command": ["sh", "-c", "echo init > /scratch/init"],
        **mount,
    }
    body = pod(
        "retry",
        base_image,
        container={**python(code), **mount},
        restartPolicy="OnFailure",
        securityContext={"runAsUser": WORKER_UID, "runAsGroup": WORKER_UID},
        initContainers=[init],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "retry")

    assert p.status.phase == "Succeeded"
    status = p.status.container_statuses[0]
    assert (status.restart_count, status.last_state.terminated.exit_code) == (1, 1)
    assert p.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert (kubelet.pod_dir(namespace, "retry") / "volumes" / "scratch" / "init").stat().st_uid == WORKER_UID


def test_run_as_non_root_refuses_an_image_that_runs_as_root(
    cluster: Cluster, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    body = pod(
        "rooted", base_image, container=python("print('never')"), securityContext={"runAsNonRoot": True}
    )
    cluster.core.create_namespaced_pod(namespace, body)

    def waiting() -> Any:
        statuses = cluster.core.read_namespaced_pod("rooted", namespace).status.container_statuses or []
        w = statuses and statuses[0].state.waiting
        return w if w and w.reason == "CreateContainerConfigError" else None

    w = wait_for("CreateContainerConfigError", waiting, timeout=30)

    assert w.message.startswith("container has runAsNonRoot and image will run as root")
    cluster.core.delete_namespaced_pod("rooted", namespace)  # no more retries


# -- resources ---------------------------------------------------------------------------------


def test_container_sees_its_memory_and_cpu_limits_in_its_cgroup(
    cluster: Cluster, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    code = """
import json
cg = lambda p: int(open("/sys/fs/cgroup/" + p).read())
open("/dev/termination-log", "w").write(json.dumps({
    "memory": cg("memory/memory.limit_in_bytes"),
    "quota": cg("cpu/cpu.cfs_quota_us") / cg("cpu/cpu.cfs_period_us"),
}))
"""
    limits = {"memory": "96Mi", "cpu": "500m"}
    body = pod("limits", base_image, container={**python(code), "resources": {"limits": limits}})
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "limits")

    assert p.status.phase == "Succeeded", terminated(p)
    assert json.loads(terminated(p).message) == {"memory": 96 * 2**20, "quota": 0.5}


ALLOCATE = "chunks = [b'x' * (8 << 20) for _ in range(64)]"  # 512 MiB, every page written


def test_pod_allocating_past_its_memory_limit_is_reported_oom_killed_with_exit_137(
    cluster: Cluster, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    body = pod("hog", base_image, container={**python(ALLOCATE), "resources": {"limits": {"memory": "64Mi"}}})
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "hog")

    assert p.status.phase == "Failed"
    term = terminated(p)
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)


def test_indexed_job_pod_failure_policy_fails_the_index_that_was_oom_killed(
    cluster: Cluster, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    code = f"import os\nif os.environ['JOB_COMPLETION_INDEX'] == '1':\n    {ALLOCATE}"
    template = pod(
        "unused", base_image, container={**python(code), "resources": {"limits": {"memory": "64Mi"}}}
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "shards"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            # Without the policy index 1 would be retried once; FailIndex stops it at the OOM kill.
            "backoffLimitPerIndex": 1,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": {"containerName": "main", "operator": "In", "values": [137]},
                    }
                ]
            },
            "template": {"spec": template["spec"]},
        },
    }
    cluster.batch.create_namespaced_job(namespace, job)

    def outcome() -> Any:
        j = cluster.batch.read_namespaced_job("shards", namespace)
        done = [
            c.type
            for c in j.status.conditions or []
            if c.type in ("Complete", "Failed") and c.status == "True"
        ]
        return (j, done[0]) if done else None

    j, condition = wait_for("job to finish", outcome, timeout=90)

    assert condition == "Failed"
    assert (j.status.failed_indexes, j.status.completed_indexes) == ("1", "0")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=shards").items
    index1 = [q for q in pods if q.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "1"]
    assert len(index1) == 1  # not retried
    assert (terminated(index1[0]).reason, terminated(index1[0]).exit_code) == ("OOMKilled", 137)


# -- images, deletion, the kubelet's own life --------------------------------------------------


def test_missing_image_waits_with_err_image_never_pull_and_starts_once_the_image_exists(
    cluster: Cluster, engine: DockerEngine, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    image = f"ferry-test-missing:{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespaced_pod(namespace, pod("later", image, container=python("print('ran')")))

    def waiting() -> Any:
        statuses = cluster.core.read_namespaced_pod("later", namespace).status.container_statuses or []
        return (
            statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == "ErrImageNeverPull"
        )

    wait_for("ErrImageNeverPull", waiting, timeout=30)
    state = cluster.core.read_namespaced_pod("later", namespace).status.container_statuses[0].state
    assert state.waiting.message == f'Container image "{image}" is not present with pull policy of Never'

    docker(engine, "tag", base_image, image)  # "building" the image later
    try:
        p = finished(cluster, namespace, "later")
    finally:
        docker(engine, "rmi", image)

    assert p.status.phase == "Succeeded"
    assert "ran" in (kubelet.pod_dir(namespace, "later") / "logs" / "main.log").read_text()


def test_running_pod_serves_on_its_pod_ip_and_deleting_it_removes_its_container(
    cluster: Cluster, engine: DockerEngine, kubelet: ProcessKubelet, base_image: str, namespace: str
):
    port = free_port()
    code = f"""
import http.server, os, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.HTTPServer((os.environ["FERRY_POD_IP"], {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
    body = pod("server", base_image, container={**python(code), "workingDir": "/etc"})
    body["spec"]["terminationGracePeriodSeconds"] = 60
    created = cluster.core.create_namespaced_pod(namespace, body)
    ip = wait_for(
        "pod running",
        lambda: (
            (p := cluster.core.read_namespaced_pod("server", namespace)).status.phase == "Running"
            and p.status.pod_ip
        ),
    )

    def get() -> Any:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/hostname", timeout=2) as resp:
                return resp.status
        except OSError:
            return None

    assert wait_for("the pod's server from the host", get, timeout=20) == 200
    assert len(pod_containers(engine, created.metadata.uid)) == 1

    started = time.monotonic()
    cluster.core.delete_namespaced_pod("server", namespace)
    wait_for("pod removed", lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=30)

    assert time.monotonic() - started < 30  # SIGTERM reached PID 1: no wait for the 60 s grace
    assert pod_containers(engine, created.metadata.uid) == {}


def test_unreachable_engine_fails_kubelet_start_with_a_one_line_error(cluster: Cluster, tmp_path: Path):
    kubelet = ProcessKubelet(
        cluster.kubeconfig,
        tmp_path,
        node_name="ferry-docker-unreachable",
        engine=DockerEngine(f"unix://{tmp_path}/no-engine.sock"),
        schedule=False,
    )

    with pytest.raises(EngineError) as err:
        kubelet.start()

    message = str(err.value)
    assert "\n" not in message
    assert f"container engine at unix://{tmp_path}/no-engine.sock cannot be reached" in message


def test_kubelet_removes_containers_of_dead_kubelets_at_start_and_its_own_at_stop(
    cluster: Cluster, engine: DockerEngine, base_image: str, namespace: str, tmp_path: Path
):
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = engine.create(
        ContainerSpec(
            name=f"ferry-test-orphan-{uuid.uuid4().hex[:8]}",
            image=base_image,
            hostname="orphan",
            labels={KUBELET_LABEL: "crashed-run", PID_LABEL: str(gone.pid)},
        )
    )
    node = "ferry-docker-1"
    kubelet = ProcessKubelet(cluster.kubeconfig, tmp_path, node_name=node, engine=engine, schedule=False)
    kubelet.start()
    try:
        assert engine.inspect(orphan) is None
        body = pod("sleeper", base_image, container=python("import time; time.sleep(300)"))
        body["spec"]["nodeName"] = node
        created = cluster.core.create_namespaced_pod(namespace, body)
        wait_for("container started", lambda: pod_containers(engine, created.metadata.uid), timeout=30)
    finally:
        kubelet.stop()

    assert engine.containers(f"{KUBELET_LABEL}={kubelet.id}") == {}
