"""What the process kubelet gives a pod: volumes, env sources, status shape, restarts, identity."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(60)


def pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "ferry:test", "command": ["python3", "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def finished(cluster: Cluster, ns: str, name: str) -> Any:
    def terminal() -> Any:
        p = cluster.core.read_namespaced_pod(name, ns)
        return p if p.status.phase in ("Succeeded", "Failed") else None

    return wait_for(f"pod {name} to finish", terminal, timeout=30)


def test_pod_reads_a_file_of_its_mounted_configmap(cluster: Cluster, namespace: str):
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "plan"}, "data": {"plan.json": '{"shards": 3}'}}
    )
    code = "open('/dev/termination-log', 'w').write(open('/etc/ferry/plan/plan.json').read())"
    body = pod(
        "reader",
        code,
        volumes=[{"name": "plan", "configMap": {"name": "plan"}}],
        container={"volumeMounts": [{"name": "plan", "mountPath": "/etc/ferry/plan", "readOnly": True}]},
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "reader")

    assert p.status.phase == "Succeeded"
    assert p.status.container_statuses[0].state.terminated.message == '{"shards": 3}'


def test_pod_gets_secret_configmap_downward_and_resource_env_values(cluster: Cluster, namespace: str):
    cluster.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "s3"}, "data": {"secret-key": base64.b64encode(b"s3cr3t").decode()}},
    )
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"REGION": "eu-1"}}
    )
    code = (
        "import os, json; keys = ['SECRET', 'CFG_REGION', 'POD', 'MEM', 'URL', 'IP'];"
        "open('/dev/termination-log', 'w').write(json.dumps({k: os.environ.get(k) for k in keys}))"
    )
    env = [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret-key"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": "MEM",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "URL", "value": "http://$(IP):8080/$(CFG_REGION)"},
    ]
    body = pod(
        "envs",
        code,
        container={
            "env": env,
            "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
            "resources": {"limits": {"memory": "256Mi"}},
        },
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "envs")

    import json

    values = json.loads(p.status.container_statuses[0].state.terminated.message)
    ip = p.status.pod_ip
    assert ip.startswith("127.0.0.")
    assert values == {
        "SECRET": "s3cr3t",
        "CFG_REGION": "eu-1",
        "POD": "envs",
        "MEM": "256",
        "URL": f"http://{ip}:8080/eu-1",
        "IP": ip,
    }


def test_finished_pod_has_kubelet_shaped_status_with_fallback_log_message(cluster: Cluster, namespace: str):
    body = pod(
        "boom",
        "import sys; print('something broke'); sys.exit(3)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "boom")

    assert p.status.phase == "Failed"
    conditions = {c.type: c.status for c in p.status.conditions}
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
    }
    term = p.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert term.started_at is not None and term.finished_at is not None
    assert "something broke" in term.message
    assert p.spec.node_name == cluster.kubelet.node_name


def test_on_failure_pod_restarts_in_place_after_init_container_ran(cluster: Cluster, namespace: str):
    # The first run fails and leaves a marker in the emptyDir; the restarted process finds it and succeeds.
    code = (
        "import os, sys; m = '/scratch/marker'; first = not os.path.exists(m);"
        "open(m, 'a').write('x'); sys.exit(1 if first else 0)"
    )
    body = pod(
        "retry",
        code,
        restartPolicy="OnFailure",
        volumes=[{"name": "scratch", "emptyDir": {}}],
        initContainers=[
            {
                "name": "init",
                "image": "x",
                "command": ["sh", "-c", "echo init > /scratch/init"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
    )
    cluster.core.create_namespaced_pod(namespace, body)

    p = finished(cluster, namespace, "retry")

    assert p.status.phase == "Succeeded"
    status = p.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert p.status.init_container_statuses[0].state.terminated.reason == "Completed"


def test_deleted_running_pod_is_terminated_and_removed(cluster: Cluster, namespace: str):
    cluster.core.create_namespaced_pod(
        namespace, pod("sleeper", "import time; time.sleep(300)", terminationGracePeriodSeconds=5)
    )
    wait_for(
        "pod running",
        lambda: cluster.core.read_namespaced_pod("sleeper", namespace).status.phase == "Running",
    )

    cluster.core.delete_namespaced_pod("sleeper", namespace)

    wait_for("pod removed", lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=20)


def test_service_account_kubeconfig_authenticates_as_that_service_account(cluster: Cluster, namespace: str):
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "ferry-operator"}})
    path = cluster.controlplane.service_account_kubeconfig(namespace, "ferry-operator")

    from kubernetes import config

    api = config.new_client_from_config(config_file=str(path))
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:ferry-operator"
        with pytest.raises(client.ApiException) as denied:
            client.CoreV1Api(api).list_namespaced_secret(namespace)
        assert denied.value.status == 403  # RBAC is enforced: the SA has no role yet
    finally:
        api.close()


def test_pods_created_while_the_kubelet_rewatches_still_run(cluster: Cluster, namespace: str):
    cluster.kubelet.interrupt_watches()
    cluster.core.create_namespaced_pod(namespace, pod("after-cut", "print('ok')"))
    cluster.kubelet.interrupt_watches()

    assert finished(cluster, namespace, "after-cut").status.phase == "Succeeded"


def test_a_command_that_cannot_start_ends_with_start_error_as_a_kubelet_reports_it(
    cluster: Cluster, namespace: str
):
    body = pod("no-such-program", "", container={"command": ["/nonexistent/ferry-no-such-program"]})
    cluster.core.create_namespaced_pod(namespace, body)
    p = finished(cluster, namespace, "no-such-program")
    assert p.status.phase == "Failed"
    (state,) = p.status.container_statuses
    assert state.state.terminated.reason == "StartError"
    assert state.state.terminated.exit_code == 128
    assert "No such file" in state.state.terminated.message
