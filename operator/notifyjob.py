"""Rendering of the notify pod: the one-pod Job `<copyjob>-notify-<kind>` that sends a CopyJob's completion
event (`spec.notify`) from the CopyJob's own namespace. Pure: values in, a Kubernetes manifest out.

Why a pod and not the operator: the webhook URL is tenant input and lives in the tenant's Secret. Fetched
from the operator's pod it could reach anything the operator can (its API server, the cluster network:
SSRF), and the operator would have to read tenant Secrets, which it never does. The pod runs the worker
image's `ferry notify` (worker/notify.py) with the URL from the Secret through a secretKeyRef, under the
restricted Pod Security Standard, without a Kubernetes token, and with the platform's network policies
for the namespace around it. The event itself (counts only) is rendered here and passed in its
environment; its id is the CopyJob's uid, the kind and the generation, so a receiver can drop a repeat.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ferry.model import CopyJobSpec
from ferry.operator.render import Owner, child_name, container_security, labels, pod_security
from ferry.operator.settings import OperatorSettings
from ferry.worker import notify

#: `ferry notify` peaked at 57 MiB resident (GNU time's maximum RSS, one delivery; the `ferry` command
#: imports its other subcommands' modules, boto3 among them): this leaves room for a slow receiver.
NOTIFY_MEMORY = "96Mi"
#: The pod retries itself (worker/notify.py: 5 attempts within about a minute); a second pod would only
#: repeat that, so none is started.
BACKOFF_LIMIT = 0
#: A pod that cannot even do that much is stopped after this long.
ACTIVE_DEADLINE_SECONDS = 300
#: Finished notify Jobs are removed after a day: their logs say whether the event was delivered.
TTL_SECONDS = 86_400
#: The annotation on the Job: the generation whose end it announces.
GENERATION_ANNOTATION = "ferry.dev/generation"


def notify_name(owner: str, kind: str, generation: int) -> str:
    """One Job per kind and generation: a pass that announces again finds its name taken (the API server
    answers 409) and starts no second pod; a CopyJob edited and run again is announced again."""
    return child_name(owner, f"notify-{kind}-{generation}")


def copyjob_source(owner: Owner) -> str:
    """The CloudEvents ``source``: the CopyJob's API path."""
    return f"/apis/ferry.dev/v1alpha1/namespaces/{owner.namespace}/copyjobs/{owner.name}"


def notify_event(
    owner: Owner, phase: str, generation: int, status: dict[str, Any], when: datetime, reason: str | None
) -> dict[str, Any] | None:
    """The event announcing that the CopyJob reached ``phase`` (None for a phase that is not announced),
    with the counts of ``status``."""
    kind = notify.event_kind(phase)
    if kind is None:
        return None
    data = notify.event_data(
        name=owner.name,
        namespace=owner.namespace,
        phase=phase,
        objects=status.get("objects") or {},
        bytes_=status.get("bytes") or {},
        reason=reason,
    )
    return notify.cloud_event(
        kind=kind,
        source=copyjob_source(owner),
        event_id=f"{owner.uid}-{kind}-{generation}",
        time_=when,
        subject=owner.name,
        data=data,
    )


def render_notify_job(
    owner: Owner,
    spec: CopyJobSpec,
    settings: OperatorSettings,
    event: dict[str, Any],
    generation: int,
    *,
    service_account: str = "",
) -> dict[str, Any]:
    """The notify Job of ``event`` (``spec.notify`` must be set). ``service_account``: the platform's
    worker account when it exists in the namespace (else the namespace's default)."""
    assert spec.notify is not None
    ref = spec.notify.url_secret
    kind = str(event["type"]).rsplit(".", 1)[-1]
    env: list[dict[str, Any]] = [
        {"name": notify.URL_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}},
        {"name": notify.EVENT_ENV, "value": json.dumps(event, separators=(",", ":"))},
        {"name": notify.ALLOW_HTTP_ENV, "value": "true" if settings.notify_allow_http else "false"},
        {"name": notify.ORIGIN_ENV, "value": f"Secret {ref.name!r} key {ref.key!r} (spec.notify.urlSecret)"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    container = {
        "name": "notify",
        "image": settings.worker_image,
        "command": ["ferry", "notify"],
        "env": env,
        "resources": {"requests": {"memory": NOTIFY_MEMORY}, "limits": {"memory": NOTIFY_MEMORY}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": pod_security(),
        "containers": [container],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": notify_name(owner.name, kind, generation),
            "namespace": owner.namespace,
            "labels": labels(owner.name, "notify"),
            "annotations": {GENERATION_ANNOTATION: str(generation)},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels(owner.name, "notify")}, "spec": pod_spec},
        },
    }
