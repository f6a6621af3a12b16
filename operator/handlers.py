"""kopf wiring: thin. One timer per CopyJob runs `reconcile` every few seconds (level-based: it converges
from what exists, so restarts and missed events cost nothing); settings, metrics and an index of
active CopyJobs per namespace are set up here. All logic lives in the pure modules and `reconcile`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

from ferry.model.endpointbudget import BUDGET_PLURAL
from ferry.operator import reconcile as reconcile_module
from ferry.operator.budgetcontrol import run_budget_steps
from ferry.operator.errors import to_kopf
from ferry.operator.kube import Kube
from ferry.operator.metrics import CopyJobCollector, CopyJobSeries
from ferry.operator.notifystep import announce
from ferry.operator.reconcile import TERMINAL, Context, reconcile
from ferry.operator.render import Owner
from ferry.operator.settings import OperatorSettings

GROUP, VERSION, PLURAL = "ferry.dev", "v1alpha1", "copyjobs"
RECONCILE_ERRORS = Counter("ferry_reconcile_errors_total", "Reconciliations that raised an error")
#: From milliseconds (a pass that only reads) to minutes (one held up by a slow apiserver, or listing).
RECONCILE_SECONDS = Histogram(
    "ferry_reconcile_duration_seconds",
    "Seconds one reconciliation of one CopyJob took, errors included",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
SETTINGS = OperatorSettings.from_env()
#: What `ferry_copyjobs` and the per-CopyJob series say: every CopyJob's status as last written or seen.
SERIES = CopyJobSeries(SETTINGS.max_copyjob_series)
REGISTRY.register(CopyJobCollector(SERIES))
#: What Events name as their source (`kubectl describe`'s "From", `reportingComponent`): kopf's default is "kopf".
REPORTING_COMPONENT = "ferry-operator"
_TICK = re.compile(r"^(Timer '[^']*'|Handler 'observe') succeeded\.$")


class QuietTicks(logging.Filter):
    """Demotes kopf's ``Timer 'reconcile' succeeded.`` and ``Handler 'observe' succeeded.`` to DEBUG.

    kopf logs them at INFO after every timer run and every watch event: every few seconds for every
    unfinished CopyJob, drowning the lines that matter. They stay visible with ``ferry --verbose operator``.
    Failures are not touched.
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
    memo.copyjobs = reconcile_module.Memory()
    # EndpointBudgets: a CopyJob no pass has claimed for three passes' time has finished or gone.
    memo.copyjobs.budgets.stale_seconds = 3 * SETTINGS.aggregate_interval_seconds
    memo.budget_steps = asyncio.create_task(
        run_budget_steps(
            memo.copyjobs.budgets, memo.kube.patch_budget_status, SETTINGS.aggregate_interval_seconds
        ),
        name="endpoint-budget-steps",
    )
    start_http_server(SETTINGS.metrics_port, SETTINGS.listen_address)


@kopf.on.cleanup()
async def stop_budget_steps(*, memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("budget_steps")
    if task is not None:
        task.cancel()


@kopf.on.event(GROUP, VERSION, BUDGET_PLURAL)
def observe_budget(
    *,
    type: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """EndpointBudgets come from the watch only (list and watch; the operator never GETs one): each event
    updates what the CopyJob passes and the budget steps use."""
    memo.copyjobs.budgets.observe(type, name, dict(spec or {}), dict(status or {}), meta.get("generation"))


@kopf.index(GROUP, VERSION, PLURAL)
def active_by_namespace(
    *, namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[str, str] | None:
    """CopyJobs holding worker pods or about to, for the per-namespace cap."""
    phase = dict(status or {}).get("phase")
    return {namespace or "": name} if phase in ("Planning", "Running", "Suspended") else None


if SETTINGS.workload_identity_selector is not None:
    # Only a platform that selects namespaces by label needs their labels: then, and only then, the
    # operator watches Namespaces (list and watch, which its ClusterRole grants in every mode), and a label
    # added or removed counts from the next pass on.

    @kopf.index("v1", "namespaces")
    def namespace_labels(*, name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
        """Each Namespace's labels, for workloadIdentity.namespaceSelector."""
        return {name: dict(labels)}


def _needs_reconcile(status: Any, spec: Any, generation: Any = None) -> bool:
    """Finished CopyJobs need no timer, except to remove their workers after ttlSecondsAfterFinished, and
    to observe an edit (a Succeeded one follows the generation, a Failed one resumes: resume.py)."""
    status = dict(status or {})
    if status.get("phase") not in TERMINAL:
        return True
    if generation is not None and generation != status.get("observedGeneration"):
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
    when=lambda status, spec, meta, **_: _needs_reconcile(status, spec, meta.get("generation")),
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
    by_namespace: kopf.Index[str, dict[str, str]] | None = kwargs.get("namespace_labels")
    labels = next(iter(by_namespace.get(namespace, [])), {}) if by_namespace is not None else None
    context = Context(
        kube=memo.kube, settings=SETTINGS, post=post, memory=memo.copyjobs, namespace_labels=labels
    )
    started = time.monotonic()
    try:
        new_status = await reconcile(context, dict(meta), dict(spec), dict(status), len(others))
        if new_status and spec.get("notify"):
            # Before the status is written: a pass whose write fails announces again (one Job per name).
            owner = Owner(name, namespace, str(meta["uid"]))
            generation = int(meta.get("generation") or 1)
            await announce(context, owner, dict(spec), dict(status), new_status, generation)
        # Written here, not through kopf's `patch`: kopf applies that patch after the handler, outside
        # its error handling, and a 409 or an unreachable apiserver there ends the CopyJob's timer for
        # good. Written here, a failed write is a failed pass, retried on the next tick.
        if new_status:
            await asyncio.to_thread(memo.kube.patch_status, namespace, name, new_status)
    except Exception as exc:
        RECONCILE_ERRORS.inc()
        raise to_kopf(exc, SETTINGS.aggregate_interval_seconds) from exc
    finally:
        RECONCILE_SECONDS.observe(time.monotonic() - started)
    # The status as merge-patched: what the watch delivers next, already now (a pass that changes nothing
    # brings no watch event, and a series freed by a deleted CopyJob is taken at the next pass).
    SERIES.observe(namespace, name, {**dict(status or {}), **new_status})


@kopf.on.event(GROUP, VERSION, PLURAL)
def observe(*, type: str | None, meta: kopf.Meta, status: kopf.Status, **_: Any) -> None:
    """Every CopyJob on the watch, finished ones included (their timers never run), feeds the metrics."""
    if type == "DELETED":
        SERIES.forget(meta["namespace"], meta["name"])
    else:
        SERIES.observe(meta["namespace"], meta["name"], dict(status or {}))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(*, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Children go with ownerReferences; only the metrics and the passes' memory forget the CopyJob."""
    SERIES.forget(meta["namespace"], meta["name"])
    memo.copyjobs.forget(str(meta.get("uid", "")))
