"""Where a CopyJob's planner stands, from its Job and the pods it controls. Pure: bodies in, a verdict out.

The reconcile pass (`reconcile._ensure_plan`) acts on the verdict: wait, read the plan from the pod,
stall with the planner's reason, or start over. Everything here comes from objects in the tenant's
namespace; what a pod wrote is parsed by `planresult` and never echoed as it is, and the kubelet's
messages about Secrets are only matched against the names the CopyJob itself gave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ferry.model import CopyJobSpec
from ferry.operator.planresult import PlannerFailure, parse_planner_failure

#: Planner failures no retry can change: they wait for an edit of the CopyJob (or of the platform's limits).
FINAL_REASONS = frozenset(
    {"ListingTooLong", "TooManyObjects", "InvalidSpec", "LocationInvalid", "ManifestInvalid"}
)
_SECRET_MISSING = re.compile(r'^secrets? "([^"]+)" not found')
_KEY_MISSING = re.compile(r"^couldn't find key (\S+) in Secret [^/\s]+/(\S+)")


class Stage(StrEnum):
    STARTING = "starting"  # no pod running yet (scheduling, pulling, creating)
    LISTING = "listing"  # a pod runs: its /plan answers once the listing is done
    BLOCKED = "blocked"  # the pod cannot start as configured (a Secret or key is missing)
    FAILED = "failed"  # the Job failed: `failure` says why
    LOST = "lost"  # the Job completed, but its plan was never stored: plan again


@dataclass(frozen=True)
class PlannerState:
    stage: Stage
    #: The running pods' addresses by completion index (one pod is index 0; a listing divided over several
    #: planner pods has one per part).
    pod_ips: tuple[tuple[int, str], ...] = ()
    failure: PlannerFailure | None = None
    #: When the Job failed (its Failed condition's lastTransitionTime), for retries after a delay.
    failed_at: datetime | None = None


#: The Job controller's annotation of an Indexed Job's pod with its index.
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _time(text: Any) -> datetime | None:
    """An API timestamp, as the adapter hands it over ("...Z" or "...+00:00"), in UTC."""
    try:
        parsed = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def secret_problem(message: str, spec: CopyJobSpec, namespace: str = "") -> PlannerFailure | None:
    """The kubelet's reason a container cannot start, when it is one of the CopyJob's Secrets, in Ferry's words."""
    roles = {
        "source": spec.source.credentials_secret,
        "destination": spec.destination.credentials_secret,
        **({"report": spec.report.credentials_secret} if spec.report else {}),
    }
    missing, key = _SECRET_MISSING.match(message), _KEY_MISSING.match(message)
    name = missing.group(1) if missing else key.group(2) if key else None
    fields = [f"spec.{role}.credentialsSecret" for role, secret in roles.items() if secret and secret == name]
    if not fields:
        return None
    if missing:
        return PlannerFailure(
            "CredentialsSecretMissing",
            f"Secret {name!r} named by {' and '.join(fields)} does not exist in namespace "
            f"{namespace or 'of the CopyJob'}; create it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    assert key is not None
    return PlannerFailure(
        "CredentialsKeyMissing",
        f"Secret {name!r} ({' and '.join(fields)}) lacks {key.group(1)}; add the key(s) to the Secret "
        "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are needed, AWS_SESSION_TOKEN is optional)",
    )


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def _waiting(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return dict(waiting)
    return None


def _newest(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(
        pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True
    )


def _index(pod: Mapping[str, Any]) -> int:
    """A planner pod's completion index (0 for a pod of a planner Job made before they were Indexed)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    text = str(annotations.get(INDEX_ANNOTATION, "0"))
    return int(text) if text.isdigit() and len(text) < 4 else -1


def planner_state(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], spec: CopyJobSpec, namespace: str = ""
) -> PlannerState:
    """The planner's stage. ``pods`` are those the Job controls (never picked by label alone)."""
    failed = _condition(job, "Failed")
    if failed is not None:
        failure = None
        for pod in _newest(pods):
            terminated = _terminated(pod)
            if terminated and terminated.get("exitCode") not in (None, 0):
                failure = parse_planner_failure(str(terminated.get("message") or ""))
                if failure is not None:
                    break
        if failure is None:
            reason = str(failed.get("reason") or "")
            if reason == "DeadlineExceeded":
                failure = PlannerFailure(
                    "ListingTooLong",
                    "the planner pod ran past its deadline (activeDeadlineSeconds) and was stopped",
                )
            else:
                failure = PlannerFailure(
                    "PlanningFailed",
                    f"the planner Job failed ({reason or 'no reason given'}) without saying why",
                )
        return PlannerState(Stage.FAILED, failure=failure, failed_at=_time(failed.get("lastTransitionTime")))
    if _condition(job, "Complete") is not None:
        return PlannerState(Stage.LOST)
    running: dict[int, str] = {}
    for pod in _newest(pods):
        status = pod.get("status") or {}
        index = _index(pod)
        if status.get("phase") == "Running" and status.get("podIP") and index not in running:
            running[index] = str(status["podIP"])
    if running:
        return PlannerState(Stage.LISTING, pod_ips=tuple(sorted(running.items())))
    for pod in _newest(pods):
        waiting = _waiting(pod)
        if waiting and waiting.get("reason") == "CreateContainerConfigError":
            problem = secret_problem(str(waiting.get("message") or ""), spec, namespace)
            if problem is not None:
                return PlannerState(Stage.BLOCKED, failure=problem)
    return PlannerState(Stage.STARTING)
