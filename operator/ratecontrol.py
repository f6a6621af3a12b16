"""`spec.rateLimit` on a running CopyJob: every pass, after the workers' `/status` was collected,
`apply_rate_limits` splits the job-wide limits over the worker pods (`ratesplit`), sends each running pod
whose share changed its new one (`kube.push_worker_limits`), and keeps the share a new pod starts with in
the progress ledger. A thin adapter: the arithmetic is `ratesplit`'s.

Under an EndpointBudget the job-wide limits are the CopyJob's share of the budget (never more than its own
`spec.rateLimit`), from `budgetcontrol`, which also learns the throttles its pods reported this pass.

Only the operator can change a worker's limits: every `PUT /limits` carries a random token made when the
Job is made (`new_token`), which reaches the pods through their template's environment. It is read back
from the Job each pass, so a restarted operator still has it; it is never logged or shown. A push that
fails (a pod still starting, or gone) is tried again at the next pass, and never fails the pass.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ferry.model import CopyJobSpec
from ferry.operator import ratesplit
from ferry.operator.aggregate import JobView
from ferry.operator.budgetcontrol import BudgetBook
from ferry.operator.kube import Kube, push_worker_limits
from ferry.worker.ratelimit import (
    LATEST_SHARE_KEY,
    SHARE_ENV,
    TOKEN_ENV,
    TOKEN_MAX_LENGTH,
    RateShare,
    parse_share,
)

log = logging.getLogger(__name__)
#: Pushes in flight at once, like the `/status` reads.
PUSH_THREADS = 16


def new_token() -> str:
    """A CopyJob's limits token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def job_env(job: Mapping[str, Any], name: str) -> str | None:
    """A plain value of the worker container's environment in the Job's pod template."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in template.get("containers") or []:
        if container.get("name") != "worker":
            continue
        for var in container.get("env") or []:
            value = var.get("value")
            if var.get("name") == name and isinstance(value, str) and len(value) <= TOKEN_MAX_LENGTH:
                return value
    return None


def _share(text: Any) -> RateShare | None:
    try:
        return parse_share(text) if isinstance(text, str) else None
    except ValueError:
        return None


def apply_rate_limits(
    kube: Kube,
    spec: CopyJobSpec,
    job: Mapping[str, Any],
    view: JobView,
    pods: list[dict[str, Any]],
    parallelism: int,
    ledger: Mapping[str, Any],
    port: int,
    confirmed: dict[str, RateShare],
    budgets: BudgetBook | None = None,
    uid: str = "",
    throttles: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Split, push and record this pass's shares; returns `status.rateLimit`. ``pods`` are the Job's own
    (ownership checked), ``ledger`` the progress ConfigMap as read this pass, ``parallelism`` the one the
    Job is converging to, ``confirmed`` this CopyJob's shares confirmed by pod name (updated: pods that
    no longer run are dropped). With ``budgets``, CopyJob ``uid`` takes its share of the EndpointBudgets it
    is under; ``throttles`` are its running pods' throttle counts by pod name."""
    limit = RateShare.of(spec.rate_limit)
    completions = int((job.get("spec") or {}).get("completions") or 0)
    unfinished = completions - len(view.completed_indexes | view.failed_indexes)
    phases = [str((p.get("status") or {}).get("phase") or "") for p in pods]
    sharing = ratesplit.sharing_pods(phases, parallelism, unfinished)
    # Null when under no budget: status is merge-patched, and a budget deleted must leave it.
    under: dict[str, Any] = {"budget": None, "budgetShare": None}
    if budgets is not None:
        # A suspended CopyJob, or one whose shards are all done, runs no pod: its share goes to the others.
        active = sharing > 0 and not spec.suspend
        allocation = budgets.job_limit(uid, spec, throttles or {}, active)
        if allocation is not None:
            limit, under = allocation.limit, allocation.status()
    share = ratesplit.split(limit, sharing)

    running = {
        str((p.get("metadata") or {}).get("name") or ""): str((p.get("status") or {}).get("podIP") or "")
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running" and (p.get("status") or {}).get("podIP")
    }
    for gone in [name for name in confirmed if name not in running]:
        del confirmed[gone]
    token = job_env(job, TOKEN_ENV)
    stale = [name for name in running if confirmed.get(name) != share]
    if token and stale:
        body = share.encode()
        with ThreadPoolExecutor(min(PUSH_THREADS, len(stale))) as pool:
            taken = list(pool.map(lambda name: push_worker_limits(running[name], port, token, body), stale))
        for name, ok in zip(stale, taken, strict=True):
            if ok:
                confirmed[name] = share
        if not all(taken):
            log.debug(
                "%d of %d worker pod(s) did not take their rate limits yet", taken.count(False), len(stale)
            )
    _keep_starting_share(kube, job, ledger, share)
    applied = sum(1 for name in running if confirmed.get(name) == share)
    return {**ratesplit.status(limit, sharing, share, applied), **under}


def _keep_starting_share(
    kube: Kube, job: Mapping[str, Any], ledger: Mapping[str, Any], share: RateShare
) -> None:
    """Write ``share`` into the ledger when a pod starting now would begin with another one (the ledger's,
    else the one its Job was made with): after an edit of the limits or of parallelism, new pods start
    with the new share rather than exceed it until the next pass."""
    data = ledger.get("data") or {}
    starting = _share(data.get(LATEST_SHARE_KEY)) or _share(job_env(job, SHARE_ENV))
    meta = ledger.get("metadata") or {}
    if starting == share or not meta.get("uid"):
        return
    try:
        kube.patch_configmap_data(
            str(meta.get("namespace")),
            str(meta.get("name")),
            str(meta["uid"]),
            {LATEST_SHARE_KEY: share.encode()},
        )
    except Exception as exc:  # best effort: the next pass writes it again
        log.warning("the starting rate share of new worker pods was not written (%s)", type(exc).__name__)
