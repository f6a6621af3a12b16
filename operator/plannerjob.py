"""Rendering of the planner: the one-pod Job `<copyjob>-planner` and the ConfigMap holding the spec it
plans. Pure: values in, Kubernetes manifests (dicts) out.

The planner pod speaks S3 for the operator (`worker/planpod.py`): it runs in the CopyJob's namespace
under exactly the identity the workers will have (the Secrets the CopyJob names, or the tenant's own
ServiceAccount where the platform allows workload identity), with the platform's endpoint policy and
listing limits in its environment. Like worker pods it gets no Kubernetes token and runs under the
restricted Pod Security Standard.
"""

from __future__ import annotations

from typing import Any

from ferry.model import CopyJobSpec
from ferry.model.plan import SPEC_FILE
from ferry.operator.policy import Identity
from ferry.operator.render import (
    PLAN_MOUNT,
    Owner,
    child_name,
    container_security,
    credential_env,
    labels,
    pod_security,
    spec_json,
)
from ferry.operator.settings import OperatorSettings
from ferry.worker.shardsync import EXIT_STOPPED

#: Annotation on the planner Job: the CopyJob generation it plans, so an edit starts a new planner.
GENERATION_ANNOTATION = "ferry.dev/generation"
#: Planning keeps the histogram and at most a few thousand pieces in memory, whatever the bucket holds.
PLANNER_MEMORY = "256Mi"
#: Seconds a finished plan waits in its pod for the operator (it reads it within a pass or two).
HOLD_SECONDS = 600
#: Retries of a pod whose listing broke off (exit 4); a check that fails (exit 2) is not retried.
BACKOFF_LIMIT = 2


def planner_name(owner: str) -> str:
    return child_name(owner, "planner")


def check_destination(spec: CopyJobSpec, identity: Identity) -> bool:
    """A dry run plans from the source alone: its destination is checked only when it can be."""
    return not spec.dry_run or spec.destination.credentials_secret is not None or identity.ambient


def planner_pods(spec: CopyJobSpec, settings: OperatorSettings) -> int:
    """Planner pods for ``spec``: the platform's planning.pods for a listing; one for a manifest, which
    is read whole."""
    return 1 if spec.source.manifest is not None else settings.planner_pods


def render_planner_configmap(owner: Owner, spec: CopyJobSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": planner_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "planner"),
            "ownerReferences": [owner.reference()],
        },
        "data": {SPEC_FILE: spec_json(spec)},
    }


def render_planner_job(
    owner: Owner,
    spec: CopyJobSpec,
    settings: OperatorSettings,
    generation: int,
    *,
    identity: Identity | None = None,
    service_account: str = "",
    suspend: bool = False,
) -> dict[str, Any]:
    """The planner Job. ``service_account`` is the platform's worker account when it exists in the
    namespace (else the namespace's default); the tenant's own one under workload identity. ``suspend``:
    created suspended (spec.suspend holds planning too: no pod lists the user's account)."""
    identity = identity or Identity()
    destination = check_destination(spec, identity)
    env: list[dict[str, Any]] = [
        {"name": "FERRY_COPYJOB", "value": owner.name},
        {"name": "FERRY_PLAN_DIR", "value": PLAN_MOUNT},
        {"name": "FERRY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "FERRY_STATUS_PORT", "value": str(settings.status_port)},
        {"name": "FERRY_CHECK_DESTINATION", "value": "true" if destination else "false"},
        {"name": "FERRY_PLAN_HOLD_SECONDS", "value": str(HOLD_SECONDS)},
        {"name": "FERRY_PLAN_PODS", "value": str(planner_pods(spec, settings))},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": k, "value": v} for k, v in settings.endpoints.as_env().items() if v),
        *credential_env("SOURCE", spec.source.credentials_secret),
        *(credential_env("DESTINATION", spec.destination.credentials_secret) if destination else []),
    ]
    if settings.listing_deadline_seconds is not None:
        env.append(
            {"name": "FERRY_LISTING_DEADLINE_SECONDS", "value": str(settings.listing_deadline_seconds)}
        )
    if settings.max_objects_per_copyjob is not None:
        env.append({"name": "FERRY_MAX_OBJECTS_PER_COPYJOB", "value": str(settings.max_objects_per_copyjob)})
    if not identity.ambient:
        env.append({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"})
    requests = {"memory": PLANNER_MEMORY}
    if settings.default_worker_cpu:
        requests["cpu"] = settings.default_worker_cpu
    container = {
        "name": "planner",
        "image": settings.worker_image,
        "command": ["ferry", "planner"],
        "env": env,
        "ports": [{"name": "status", "containerPort": settings.status_port, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": {"memory": PLANNER_MEMORY}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "spec", "mountPath": PLAN_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": planner_name(owner.name)}},
            # ORC and Parquet inventory files are spooled here to be read (manifestio.MAX_SPOOLED_BYTES).
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    account = identity.service_account or service_account
    if account:
        pod_spec["serviceAccountName"] = account
    pods = planner_pods(spec, settings)
    job_spec: dict[str, Any] = {
        "completions": pods,
        "parallelism": pods,
        # Each pod lists its part of the key space (JOB_COMPLETION_INDEX); one pod is index 0 of 1.
        "completionMode": "Indexed",
        "backoffLimit": BACKOFF_LIMIT,
        "suspend": suspend,
        "podFailurePolicy": {
            "rules": [
                # Exit 6: stopped while listing by a suspension; not a failure, it lists again on resume.
                {
                    "action": "Ignore",
                    "onExitCodes": {"containerName": "planner", "operator": "In", "values": [EXIT_STOPPED]},
                },
                # Exit 2: a location failed its check or a platform limit was hit; a retry cannot help.
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "planner", "operator": "In", "values": [2]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": labels(owner.name, "planner")}, "spec": pod_spec},
    }
    if settings.listing_deadline_seconds is not None:
        # The pod stops itself at the listing deadline; this bounds a pod that cannot even do that.
        job_spec["activeDeadlineSeconds"] = int(settings.listing_deadline_seconds) + HOLD_SECONDS + 300
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": planner_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "planner"),
            "annotations": {GENERATION_ANNOTATION: str(generation)},
            "ownerReferences": [owner.reference()],
        },
        "spec": job_spec,
    }
