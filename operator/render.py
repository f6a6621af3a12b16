"""Rendering of the objects a CopyJob owns: the plan ConfigMap and the Indexed Job of workers. Pure:
values in, Kubernetes manifests (dicts) out.

Worker pods run under the restricted Pod Security Standard with no Kubernetes token: they hold S3
credentials only, taken from the Secrets the CopyJob names. They get no ambient cloud identity (the
metadata service is off for the AWS SDK) unless the platform allows workload identity for the namespace;
then they run under the tenant's own ServiceAccount (`policy.Identity`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ferry.model import CopyJobSpec
from ferry.model.plan import (
    FINISHED_SHARDS_ENV,
    FINISHED_SHARDS_LIMIT,
    SHARDS_FILE,
    SPEC_FILE,
    SUMMARY_FILE,
    Shard,
    index_ranges,
)
from ferry.model.quantity import parse_cpu, to_cpu_quantity
from ferry.operator.policy import Identity
from ferry.operator.ratesplit import split
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing
from ferry.worker.ratelimit import SHARE_ENV, TOKEN_ENV, RateShare
from ferry.worker.shardsync import (
    ALLOWED_ENV,
    CENSUS_PHASE,
    DELETE_PHASE,
    EXIT_STOPPED,
    IGNORED_ENV,
    PHASE_ENV,
    RUN_ENV,
)
from ferry.worker.ssec import SSE_CUSTOMER_KEY_ENV

LABEL_COPYJOB = "ferry.dev/copyjob"
PLAN_MOUNT = "/etc/ferry/plan"
#: The progress ledger, mounted read-only: a restarted shard finds its resume point there.
PROGRESS_MOUNT = "/etc/ferry/progress"
#: What the API server accepts in one ConfigMap's data, keys and values together.
CONFIGMAP_DATA_BYTES = 1024 * 1024
#: Most the shard boundaries take of the plan; less when the spec is large (see `shards_budget`).
MAX_SHARDS_BYTES = 900 * 1024
#: Room kept for summary.json: at most 15 histogram buckets and one sentence of reasons, about 2 KiB.
SUMMARY_ALLOWANCE = 8 * 1024
WORKER_UID = 10001


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def child_name(owner: str, suffix: str, limit: int = 52, label: bool = True) -> str:
    """``<owner>-<suffix>``, valid for its kind and at most ``limit`` characters.

    With ``label`` (Jobs: their Indexed pods' hostnames ``<job>-<index>`` must be DNS labels) dots become
    dashes. Too long a name keeps a readable head, a hash of the whole owner name and the suffix.
    """
    head = owner.replace(".", "-") if label else owner
    name = f"{head}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    head = head[: limit - len(suffix) - 10].rstrip(".-")
    return f"{head}-{digest}-{suffix}"


def plan_name(owner: str) -> str:
    return child_name(owner, "plan", 253, label=False)


def progress_name(owner: str) -> str:
    """The progress ledger ConfigMap (`ledger.py`)."""
    return child_name(owner, "progress", 253, label=False)


def job_name(owner: str) -> str:
    return child_name(owner, "workers")


def labels(owner: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ferry",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "ferry-operator",
        LABEL_COPYJOB: owner,
    }


def spec_json(spec: CopyJobSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True))


def shards_budget(spec: CopyJobSpec) -> int:
    """Bytes left for shards.json beside this spec and the summary in one ConfigMap. The CRD bounds the
    spec (filter patterns: 16 Ki characters) so that this leaves room for hundreds of shards; one shard
    (two keys of at most 1 KiB, escaped) takes at most 13 KiB."""
    keys = len(SPEC_FILE) + len(SHARDS_FILE) + len(SUMMARY_FILE)
    left = CONFIGMAP_DATA_BYTES - len(spec_json(spec)) - SUMMARY_ALLOWANCE - keys
    return min(MAX_SHARDS_BYTES, left)


def data_bytes(data: dict[str, str]) -> int:
    """What a ConfigMap's data counts against its limit: keys and values in UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def fit_shards(shards: list[Shard], limit: int = MAX_SHARDS_BYTES) -> list[Shard]:
    """Merge neighbouring shards until their JSON fits the ConfigMap."""
    while len(shards) > 1 and len(json.dumps([s.as_json() for s in shards])) > limit:
        merged = [
            Shard(a.start_after, b.end, a.objects + b.objects, a.bytes + b.bytes)
            for a, b in zip(shards[::2], shards[1::2], strict=False)
        ]
        if len(shards) % 2:
            merged.append(shards[-1])
        shards = merged
    return shards


def render_plan(
    owner: Owner, spec: CopyJobSpec, shards: list[Shard], summary: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "plan"),
            "ownerReferences": [owner.reference()],
        },
        "data": {
            SPEC_FILE: spec_json(spec),
            SHARDS_FILE: json.dumps([s.as_json() for s in shards]),
            SUMMARY_FILE: json.dumps(summary),
        },
    }


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard for a container of Ferry's (planner or worker)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    """The restricted Pod Security Standard for a pod of Ferry's (planner or worker)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def credential_env(prefix: str, secret: str | None) -> list[dict[str, Any]]:
    if secret is None:
        return []
    return [
        {
            "name": f"FERRY_{prefix}_{var}",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}},
        }
        for var, key, optional in (
            ("ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", False),
            ("SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", False),
            ("SESSION_TOKEN", "AWS_SESSION_TOKEN", True),
        )
    ]


def customer_key_env(spec: CopyJobSpec) -> list[dict[str, Any]]:
    """The worker's SSE-C keys (`sseCustomerKey`), taken by the kubelet from the Secrets the spec names:
    the operator never reads them."""
    env = []
    for side, location in (("source", spec.source), ("destination", spec.destination)):
        ref = location.sse_customer_key
        if ref is not None:
            env.append(
                {
                    "name": SSE_CUSTOMER_KEY_ENV[side],
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": False}},
                }
            )
    return env


def worker_cpu(spec: CopyJobSpec, settings: OperatorSettings) -> str | None:
    """A worker pod's CPU request: the CopyJob's, else the platform's default, at most the platform's cap."""
    cpu = spec.resources.cpu or settings.default_worker_cpu
    if cpu and settings.max_cpu_per_pod is not None and parse_cpu(cpu) > settings.max_cpu_per_pod:
        return to_cpu_quantity(settings.max_cpu_per_pod)
    return cpu


def render_job(
    owner: Owner,
    spec: CopyJobSpec,
    sizing: Sizing,
    shard_count: int,
    settings: OperatorSettings,
    parallelism: int,
    *,
    identity: Identity | None = None,
    limits_token: str | None = None,
    finished: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """The worker Job. ``limits_token`` is the CopyJob's secret for what the operator sends its workers:
    their rate limits (`ratecontrol`), and that a stopped one's final counts are recorded (`finalacks`);
    without one, the workers take neither. ``finished``: shards the progress ledger
    counts as done under an earlier Job (one re-created after an edit); their pods end at once."""
    done = index_ranges(finished)
    identity = identity or Identity()
    memory = str(sizing.pod_memory_bytes)
    requests: dict[str, str] = {"memory": memory}
    limits: dict[str, str] = {"memory": memory}
    # The sizing's request when it has one (raised for spec.target), else the CopyJob's or the platform's.
    cpu = to_cpu_quantity(sizing.cpu_millis) if sizing.cpu_millis is not None else worker_cpu(spec, settings)
    if cpu:
        requests["cpu"] = cpu
        if settings.worker_cpu_limit:
            limits["cpu"] = cpu
    env: list[dict[str, Any]] = [
        {"name": "FERRY_COPYJOB", "value": owner.name},
        {"name": "FERRY_PLAN_DIR", "value": PLAN_MOUNT},
        {"name": "FERRY_PROGRESS_DIR", "value": PROGRESS_MOUNT},
        {"name": "FERRY_MEMORY_LIMIT", "value": str(sizing.memory_limit_bytes)},
        {"name": "FERRY_INITIAL_CONCURRENCY", "value": str(sizing.initial_concurrency)},
        # One copy process per whole CPU asked for (the worker copies in its own process with one).
        {"name": "FERRY_PROCESSES", "value": str(sizing.processes)},
        {"name": "FERRY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # Named in /status, so an answer from whatever listens on a pod's address after it is the
        # pod's own (addresses are reused).
        {"name": "FERRY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FERRY_STATUS_PORT", "value": str(settings.status_port)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # Each pod's share of the job-wide spec.rateLimit until the operator sends a newer one.
        {"name": SHARE_ENV, "value": split(RateShare.of(spec.rate_limit), parallelism).encode()},
        *([{"name": TOKEN_ENV, "value": limits_token}] if limits_token else []),
        *(
            [{"name": FINISHED_SHARDS_ENV, "value": done}]
            if done and len(done) <= FINISHED_SHARDS_LIMIT
            else []
        ),
        *credential_env("SOURCE", spec.source.credentials_secret),
        *credential_env("DESTINATION", spec.destination.credentials_secret),
        *credential_env("REPORT", spec.report.credentials_secret if spec.report else None),
        *customer_key_env(spec),
    ]
    if not identity.ambient:
        # Every location has a Secret: nothing may find the node's instance role instead (IMDS), even
        # if the worker's code path ever looked for one.
        env.append({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"})
    pod_labels = labels(owner.name, "worker")
    container = {
        "name": "worker",
        "image": settings.worker_image,
        "command": ["ferry", "worker"],
        "env": env,
        "ports": [{"name": "status", "containerPort": settings.status_port, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True},
            {"name": "progress", "mountPath": PROGRESS_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": shard_count,
        "parallelism": parallelism,
        "backoffLimitPerIndex": 3,
        "suspend": spec.suspend,
        "podFailurePolicy": {
            "rules": [
                # Exit 2: the plan or configuration is invalid; retrying the index cannot help.
                {
                    "action": "FailIndex",
                    "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2]},
                },
                # Exit 5: a shard's transfers kept failing the same job-wide way (a wrong region, refused
                # credentials): every other shard would meet it too, so the whole Job stops at once.
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "worker", "operator": "In", "values": [5]},
                },
                # Evictions and preemptions are not the shard's fault and do not count against it.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 30,
                "securityContext": pod_security(),
                "containers": [container],
                "volumes": [
                    {"name": "plan", "configMap": {"name": plan_name(owner.name)}},
                    # Optional: a pod starts from the shard's beginning when the ledger is gone.
                    {"name": "progress", "configMap": {"name": progress_name(owner.name), "optional": True}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                ],
            },
        },
    }
    if identity.service_account:
        # Workload identity: the tenant's own account (its token is projected by the cloud's webhook,
        # not mounted as a Kubernetes token).
        job_spec["template"]["spec"]["serviceAccountName"] = identity.service_account
    elif settings.worker_service_account:
        job_spec["template"]["spec"]["serviceAccountName"] = settings.worker_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "worker"),
            "ownerReferences": [owner.reference()],
        },
        "spec": job_spec,
    }


#: On a sync's delete Job: the uid of the copy Job whose shards' counts it deletes by; on a dry run's
#: census Job, the plan and spec it counts for (syncstep.py).
COPY_JOB_ANNOTATION = "ferry.dev/copy-job-uid"
CENSUS_ANNOTATION = "ferry.dev/census-of"
#: Set by the Job controller on a pod of an index whose earlier pods stopped without failing it (the
#: podFailurePolicy's Ignore: evicted, or exit 6): how many.
IGNORED_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"


def delete_job_name(owner: str) -> str:
    """The delete Job of a sync (`spec.mode: sync`)."""
    return child_name(owner, "deletes")


def census_job_name(owner: str) -> str:
    """The census Job of a sync's dry run."""
    return child_name(owner, "census")


def render_delete_job(
    owner: Owner,
    spec: CopyJobSpec,
    sizing: Sizing,
    shard_count: int,
    settings: OperatorSettings,
    parallelism: int,
    *,
    allowed: str,
    copy_job_uid: str,
    identity: Identity | None = None,
    suspend: bool = False,
    token: str | None = None,
) -> dict[str, Any]:
    """The delete Job of a sync: the worker Job's pods over the same shards, in the delete phase, each
    shard capped at its approved count (``allowed``: `shardsync.encode_allowed`). No failed index is
    retried: a second pass of a shard could delete past its count. A pod stopped by a suspension (which
    deletes it) or an eviction (exit 6 or DisruptionTarget, ignored) runs again when the Job may, capped
    at what is left of the count (the ledger's `DeletedBefore`, from the stopped pods' own reports).
    ``token`` is how the operator tells a stopped pod that its count is recorded (`PUT /recorded`)."""
    return _phase_job(
        owner,
        spec,
        sizing,
        shard_count,
        settings,
        parallelism,
        identity,
        name=delete_job_name(owner.name),
        env={PHASE_ENV: DELETE_PHASE, ALLOWED_ENV: allowed, RUN_ENV: copy_job_uid},
        annotation=(COPY_JOB_ANNOTATION, copy_job_uid),
        retries=0,
        suspend=suspend,
        token=token,
    )


def render_census_job(
    owner: Owner,
    spec: CopyJobSpec,
    sizing: Sizing,
    shard_count: int,
    settings: OperatorSettings,
    parallelism: int,
    *,
    census_of: str,
    identity: Identity | None = None,
    suspend: bool = False,
) -> dict[str, Any]:
    """A sync's dry run: the worker Job's pods over the same shards, counting what the sync would delete
    and copying nothing. A count that broke off is retried (it only lists)."""
    return _phase_job(
        owner,
        spec,
        sizing,
        shard_count,
        settings,
        parallelism,
        identity,
        name=census_job_name(owner.name),
        env={PHASE_ENV: CENSUS_PHASE},
        annotation=(CENSUS_ANNOTATION, census_of),
        retries=3,
        suspend=suspend,
    )


def _phase_job(
    owner: Owner,
    spec: CopyJobSpec,
    sizing: Sizing,
    shard_count: int,
    settings: OperatorSettings,
    parallelism: int,
    identity: Identity | None,
    *,
    name: str,
    env: dict[str, str],
    annotation: tuple[str, str],
    retries: int,
    suspend: bool,
    token: str | None = None,
) -> dict[str, Any]:
    # Under spec.rateLimit one pod runs: each pod's census or delete pass takes the whole job-wide limit.
    pods = 1 if spec.rate_limit.requests_per_second else max(1, parallelism)
    manifest = render_job(
        owner, spec, sizing, shard_count, settings, pods, identity=identity, limits_token=token
    )
    job_spec = manifest["spec"]
    job_spec["backoffLimitPerIndex"] = retries
    # spec.suspend holds these Jobs too (syncstep.py): created suspended while the CopyJob is.
    job_spec["suspend"] = suspend
    # A pod stopped by SIGTERM (a suspension) ends with EXIT_STOPPED: not a failure of its index, which
    # runs again once the Job may. First, so that it decides before the worker Job's own rules.
    job_spec["podFailurePolicy"]["rules"].insert(
        0,
        {
            "action": "Ignore",
            "onExitCodes": {"containerName": "worker", "operator": "In", "values": [EXIT_STOPPED]},
        },
    )
    template = job_spec["template"]
    template["metadata"]["labels"] = labels(owner.name, "sync")
    container = template["spec"]["containers"][0]
    container["env"] = [
        *container["env"],
        *({"name": k, "value": v} for k, v in env.items()),
        # How many earlier pods of this index were stopped and replaced at once (evicted): a delete pod
        # trusts the ledger's count of what they deleted only when it names as many (resumed_allowance).
        {
            "name": IGNORED_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{IGNORED_ANNOTATION}']"}},
        },
    ]
    manifest["metadata"] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, "sync"),
        "annotations": {annotation[0]: annotation[1]},
        "ownerReferences": [owner.reference()],
    }
    return manifest
