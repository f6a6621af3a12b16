"""SSE-C through the operator on the testbed: the worker pods get the keys from the Secrets the CopyJob
names (a `secretKeyRef` the kubelet resolves; the operator never reads them), copy with them, and the keys
appear nowhere: not in the CopyJob, its Events, the Job or pod specs, the operator's log, or the workers'
files. versitygw accepts SSE-C headers without enforcing them (tests/integration/test_sse_customer_keys.py
checks the headers themselves); here the point is the path of the key."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.operator import Jobs, fill, md5s, spec_for
from testbed.install import OperatorProcess

pytestmark = pytest.mark.timeout(240)


def test_worker_pods_copy_with_keys_from_secrets_that_nothing_prints(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    keys = {"source": os.urandom(32), "destination": os.urandom(32)}
    planted = {side: base64.b64encode(key).decode() for side, key in keys.items()}
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "sse-keys"},
            "stringData": {"src.key": planted["source"], "dst.key": planted["destination"]},
        },
    )
    source, destination = fill(s3, 30)
    spec = spec_for(versitygw.endpoint.url, source, destination)
    spec["source"]["sseCustomerKey"] = {"name": "sse-keys", "key": "src.key"}
    spec["destination"]["sseCustomerKey"] = {"name": "sse-keys", "key": "dst.key"}
    jobs.create("ssec", spec)
    status = jobs.wait_phase("ssec", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["copied"] == 30
    assert md5s(s3, destination) == md5s(s3, source)

    pod_spec = cluster.batch.read_namespaced_job("ssec-workers", namespace).spec.template.spec
    env = {e.name: e for e in pod_spec.containers[0].env}
    for side, key in (("SOURCE", "src.key"), ("DESTINATION", "dst.key")):
        variable = env[f"FERRY_{side}_SSE_CUSTOMER_KEY"]
        assert variable.value is None
        assert (variable.value_from.secret_key_ref.name, variable.value_from.secret_key_ref.key) == (
            "sse-keys",
            key,
        )

    def texts() -> Iterator[tuple[str, str]]:
        yield "status", json.dumps(jobs.get("ssec"))
        yield (
            "events",
            json.dumps(
                [e.to_dict() for e in cluster.core.list_namespaced_event(namespace).items], default=str
            ),
        )
        for cm in cluster.core.list_namespaced_config_map(namespace).items:
            yield f"configmap {cm.metadata.name}", json.dumps(cm.to_dict(), default=str)
        for job in cluster.batch.list_namespaced_job(namespace).items:
            yield f"job {job.metadata.name}", json.dumps(job.to_dict(), default=str)
        for pod in cluster.core.list_namespaced_pod(namespace).items:
            yield f"pod {pod.metadata.name}", json.dumps(pod.to_dict(), default=str)
            directory = cluster.kubelet.pod_dir(namespace, pod.metadata.name)
            for path in (directory or Path("/nonexistent")).rglob("*"):
                if path.is_file() and "volumes" not in path.parts:
                    yield str(path), path.read_text(errors="replace")
        yield "operator log", operator.log.read_text(errors="replace")

    checked = 0
    for where, text in texts():
        checked += 1
        for side, value in planted.items():
            assert value not in text, f"the {side} SSE-C key appears in {where}"
            assert keys[side].hex() not in text, f"the {side} SSE-C key (hex) appears in {where}"
    assert checked > 5
