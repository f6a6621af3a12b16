"""Jobs on the testbed: the real job and garbage-collector controllers drive pods the process kubelet runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


def indexed_job(name: str, code: str, *, completions: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "main", "image": "ferry:test", "command": ["python", "-c", code]}
                    ],
                }
            },
        },
    }


def job_condition(cluster: Cluster, ns: str, name: str) -> tuple[Any, str | None]:
    job = cluster.batch.read_namespaced_job(name, ns)
    for cond in job.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return job, cond.type
    return job, None


def test_indexed_job_of_three_completions_succeeds_with_all_indexes_completed(
    cluster: Cluster, namespace: str
):
    code = "import os; print('shard', os.environ['JOB_COMPLETION_INDEX'])"
    cluster.batch.create_namespaced_job(namespace, indexed_job("three", code, completions=3))

    job, outcome = wait_for(
        "job to finish", lambda: (r := job_condition(cluster, namespace, "three"))[1] and r
    )

    assert outcome == "Complete"
    assert job.status.completed_indexes == "0-2"
    assert job.status.succeeded == 3
    assert not job.status.failed


def test_many_pods_run_concurrently_on_the_process_kubelet(cluster: Cluster, namespace: str, tmp_path: Path):
    # Each pod waits until all ten have left a marker in a shared hostPath, so they must overlap in time.
    code = (
        "import os, time; d = '/wave'; open(d + '/' + os.environ['JOB_COMPLETION_INDEX'], 'w').close()\n"
        "t = time.time() + 20\n"
        "while len(os.listdir(d)) < 10 and time.time() < t: time.sleep(0.05)\n"
        "assert len(os.listdir(d)) == 10"
    )
    body = indexed_job("wide", code, completions=10)
    template = body["spec"]["template"]["spec"]
    template["volumes"] = [{"name": "wave", "hostPath": {"path": str(tmp_path)}}]
    template["containers"][0]["volumeMounts"] = [{"name": "wave", "mountPath": "/wave"}]
    cluster.batch.create_namespaced_job(namespace, body)

    job, outcome = wait_for(
        "job to finish", lambda: (r := job_condition(cluster, namespace, "wide"))[1] and r
    )

    assert outcome == "Complete"
    assert job.status.completed_indexes == "0-9"
    assert len(list(tmp_path.iterdir())) == 10


def test_failing_index_is_retried_per_backoff_limit_per_index_then_marked_failed(
    cluster: Cluster, namespace: str
):
    code = "import os, sys; sys.exit(1 if os.environ['JOB_COMPLETION_INDEX'] == '1' else 0)"
    body = indexed_job("flaky", code, completions=2, backoffLimitPerIndex=1)
    cluster.batch.create_namespaced_job(namespace, body)

    # The retry waits out the job controller's pod-failure backoff (10 s at first).
    job, outcome = wait_for(
        "job to fail", lambda: (r := job_condition(cluster, namespace, "flaky"))[1] and r, timeout=90
    )

    assert outcome == "Failed"
    assert job.status.completed_indexes == "0"
    assert job.status.failed_indexes == "1"
    assert job.status.failed == 2  # the first attempt and its one retry
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=flaky").items
    failed = [p for p in pods if p.status.phase == "Failed"]
    assert {p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in failed} == {"1"}
    assert all(p.status.container_statuses[0].state.terminated.exit_code == 1 for p in failed)


def test_job_completion_index_reaches_the_process_and_its_termination_message(
    cluster: Cluster, namespace: str
):
    code = "import os; open('/dev/termination-log', 'w').write('index=' + os.environ['JOB_COMPLETION_INDEX'])"
    cluster.batch.create_namespaced_job(namespace, indexed_job("idx", code, completions=2))

    wait_for("job to complete", lambda: job_condition(cluster, namespace, "idx")[1] == "Complete")

    pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=idx").items
    messages = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: (
            p.status.container_statuses[0].state.terminated.message
        )
        for p in pods
    }
    assert messages == {"0": "index=0", "1": "index=1"}


def test_deleting_a_job_in_background_garbage_collects_its_running_pods(cluster: Cluster, namespace: str):
    body = indexed_job("long", "import time; time.sleep(300)", completions=2)
    cluster.batch.create_namespaced_job(namespace, body)

    def running() -> bool:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=long").items
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

    wait_for("both pods running", running)
    cluster.batch.delete_namespaced_job("long", namespace, propagation_policy="Background")

    wait_for(
        "pods to be garbage-collected",
        lambda: not cluster.core.list_namespaced_pod(namespace).items,
        timeout=60,
    )


def test_deleted_namespace_with_a_running_pod_finishes_terminating(cluster: Cluster):
    ns = cluster.new_namespace("doomed")
    cluster.core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"k": "v"}})
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}],
        },
    }
    cluster.core.create_namespaced_pod(ns, pod)
    wait_for("pod running", lambda: cluster.core.read_namespaced_pod("sleeper", ns).status.phase == "Running")

    cluster.core.delete_namespace(ns)

    def gone() -> bool:
        try:
            cluster.core.read_namespace(ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("namespace to disappear", gone, timeout=90)
