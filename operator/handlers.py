"""kopf wiring: thin. One timer per CopyJob runs `reconcile` every few seconds (level-based: it converges
from what exists, so restarts and missed events cost nothing); settings, metrics and an index of
active CopyJobs per namespace are set up here. All logic lives in the pure modules and `reconcile`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, start_http_server

from ferry.operator import reconcile as reconcile_module
from ferry.operator.errors import to_kopf
from ferry.operator.kube import Kube
from ferry.operator.reconcile import TERMINAL, Context, reconcile
from ferry.operator.settings import OperatorSettings

GROUP, VERSION, PLURAL = "ferry.dev", "v1alpha1", "copyjobs"
COPYJOBS = Gauge("ferry_copyjobs", "CopyJobs seen by this operator, by phase", ["phase"])
RECONCILE_ERRORS = Counter("ferry_reconcile_errors", "Reconciliations that raised an error")
SETTINGS = OperatorSettings.from_env()
_phases: dict[str, str] = {}
#: What Events name as their source (`kubectl describe`'s "From", `reportingComponent`): kopf's default is "kopf".
REPORTING_COMPONENT = "ferry-operator"
_TICK = re.compile(r"^Timer '[^']*' succeeded\.$")


class QuietTicks(logging.Filter):
    """Demotes kopf's ``Timer 'reconcile' succeeded.`` to DEBUG.

    kopf logs it at INFO after every timer run: every few seconds for every unfinished CopyJob, drowning the
    lines that matter. The line stays visible with ``ferry --verbose operator``. Failures are not touched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _TICK.match(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@kopf.on.startup()
async def configure(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Every pass runs its blocking calls (API, workers' /status) via asyncio.to_thread. Python's default
    # pool has CPUs + 4 threads: with 50 CopyJobs on 2 CPUs, passes queued behind each other and status
    # lagged by up to 49 s (`make bench-load`). I/O-bound threads are cheap; give them room.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=SETTINGS.reconcile_threads, thread_name_prefix="reconcile")
    )
    # Storage names chosen once: changing them later would orphan the state of existing CopyJobs.
    settings.persistence.finalizer = "ferry.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ferry.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="ferry.dev")
    settings.posting.level = logging.INFO
    # Events come from the Ferry operator, not from "kopf"; the instance is the operator's pod.
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = os.environ.get("HOSTNAME") or REPORTING_COMPONENT
    settings.posting.event_name_prefix = "ferry-"
    # kopf's per-object logger: its lines carry the CopyJob and are printed as "[namespace/name] ...".
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietTicks) for f in objects.filters):
        objects.addFilter(QuietTicks())
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    memo.kube = Kube(threads=SETTINGS.reconcile_threads)
    start_http_server(SETTINGS.metrics_port)


@kopf.index(GROUP, VERSION, PLURAL)
def active_by_namespace(
    *, namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[str, str] | None:
    """CopyJobs holding worker pods or about to, for the per-namespace cap."""
    phase = dict(status or {}).get("phase")
    return {namespace or "": name} if phase in ("Planning", "Running", "Suspended") else None


def _needs_reconcile(status: Any, spec: Any) -> bool:
    """Finished CopyJobs need no timer, except to remove their workers after ttlSecondsAfterFinished."""
    status = dict(status or {})
    if status.get("phase") not in TERMINAL:
        return True
    removed = any(
        c.get("type") == "WorkersRemoved" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return dict(spec or {}).get("ttlSecondsAfterFinished") is not None and not removed


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=SETTINGS.aggregate_interval_seconds,
    id="reconcile",
    when=lambda status, spec, **_: _needs_reconcile(status, spec),
)
async def reconcile_copyjob(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    def post(kind: str, reason: str, message: str) -> None:
        (kopf.info if kind == "Normal" else kopf.warn)(body, reason=reason, message=message)

    namespace, name = meta["namespace"], meta["name"]
    active_by_namespace: kopf.Index[str, str] = kwargs["active_by_namespace"]
    others = [n for n in active_by_namespace.get(namespace, []) if n != name]
    context = Context(kube=memo.kube, settings=SETTINGS, post=post)
    try:
        new_status = await reconcile(context, dict(meta), dict(spec), dict(status), len(others))
        # Written here, not through kopf's `patch`: kopf applies that patch after the handler, outside
        # its error handling, and a 409 or an unreachable apiserver there ends the CopyJob's timer for
        # good. Written here, a failed write is a failed pass, retried on the next tick.
        if new_status:
            await asyncio.to_thread(memo.kube.patch_status, namespace, name, new_status)
    except Exception as exc:
        RECONCILE_ERRORS.inc()
        raise to_kopf(exc, SETTINGS.aggregate_interval_seconds) from exc
    _phases[f"{namespace}/{name}"] = str(
        new_status.get("phase") or dict(status or {}).get("phase") or "Pending"
    )
    for phase in ("Pending", "Planning", "Planned", "Running", "Suspended", "Succeeded", "Failed"):
        COPYJOBS.labels(phase).set(sum(1 for p in _phases.values() if p == phase))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(*, meta: kopf.Meta, **_: Any) -> None:
    """Children go with ownerReferences; only the metrics need to forget the CopyJob."""
    _phases.pop(f"{meta['namespace']}/{meta['name']}", None)
    reconcile_module.forget(str(meta.get("uid", "")))
