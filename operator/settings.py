"""Operator settings, from the environment the Helm chart sets. Platform teams offering migration as a
service put their defaults and caps here; every tenant's CopyJob is held to them with a clear condition.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ferry.model.quantity import parse_bytes, parse_cpu
from ferry.operator.cost import DEFAULT_PRICES, Prices, PricesInvalid, parse_prices
from ferry.operator.planresult import MAX_PLANNER_PODS
from ferry.operator.policy import EndpointPolicy, LabelSelector, parse_selector


@dataclass(frozen=True)
class OperatorSettings:
    watch_namespaces: tuple[str, ...] = ()
    worker_image: str = "ghcr.io/ferry-dev/ferry:0.1.0"
    #: Empty: the namespace's default ServiceAccount, whose token the pods never mount either way.
    worker_service_account: str = ""
    default_worker_memory: int | None = None  # None: sized from the histogram
    default_worker_cpu: str | None = None
    max_pods_per_job: int | None = None
    max_memory_per_pod: int | None = None
    #: Millicores; caps spec.resources.cpu and the default as max_memory_per_pod caps memory.
    max_cpu_per_pod: int | None = None
    #: Give worker pods a CPU limit equal to their CPU request (a quota on limits.cpu needs one).
    worker_cpu_limit: bool = False
    #: Let spec.notify webhooks be plain http (the chart's notify.allowHttp); https only by default.
    notify_allow_http: bool = False
    max_jobs_per_namespace: int | None = None
    #: CopyJobs of one namespace listing their source at once; more wait as Pending (WaitingForCapacity).
    max_planning_per_namespace: int | None = None
    #: Seconds one CopyJob's listing may take, and objects it may list, before it stalls
    #: (ListingTooLong, TooManyObjects): an endpoint that never stops listing holds nothing for long.
    listing_deadline_seconds: float | None = None
    #: Planner pods one CopyJob's listing is divided over (an Indexed Job; the chart's planning.pods).
    planner_pods: int = 1
    max_objects_per_copyjob: int | None = None
    #: Namespaces whose CopyJobs may run on workload identity (spec.serviceAccountName) instead of Secrets.
    workload_identity_namespaces: tuple[str, ...] = ()
    #: Namespaces selected by their labels for the same; None selects none.
    workload_identity_selector: LabelSelector | None = None
    #: Where endpoints may point (see `policy.EndpointPolicy`); by default the built-in refusals only.
    endpoints: EndpointPolicy = EndpointPolicy.build()
    aggregate_interval_seconds: float = 5.0
    #: Threads for the blocking API and worker /status calls of all reconcile passes together.
    reconcile_threads: int = 32
    metrics_port: int = 9090
    liveness_port: int = 8080
    #: Where /metrics and /healthz listen. Loopback for `ferry operator` run on a workstation; the chart
    #: sets the pod's address (0.0.0.0), which Prometheus and the kubelet's probe reach.
    listen_address: str = "127.0.0.1"
    #: CopyJobs with per-CopyJob metric series ({namespace, copyjob} labels): tenants choose those names,
    #: so the series a Prometheus stores stay bounded however many CopyJobs they create.
    max_copyjob_series: int = 1000
    status_port: int = 8080  # the workers' /status port
    #: The price table of a dry run's cost estimate (the chart's planning.prices); AWS's by default.
    prices: Prices = DEFAULT_PRICES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env

        def number(name: str) -> int | None:
            value = env.get(name, "").strip()
            return int(value) if value else None

        def names(name: str) -> tuple[str, ...]:
            return tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())

        deadline = env.get("FERRY_LISTING_DEADLINE_SECONDS", "").strip()
        memory = env.get("FERRY_DEFAULT_WORKER_MEMORY", "auto").strip()
        max_memory = env.get("FERRY_MAX_MEMORY_PER_POD", "").strip()
        max_cpu = env.get("FERRY_MAX_CPU_PER_POD", "").strip()
        defaults = cls()
        return cls(
            watch_namespaces=names("FERRY_WATCH_NAMESPACES"),
            worker_image=env.get("FERRY_WORKER_IMAGE") or defaults.worker_image,
            worker_service_account=env.get("FERRY_WORKER_SERVICE_ACCOUNT") or defaults.worker_service_account,
            default_worker_memory=None if memory in ("", "auto") else parse_bytes(memory),
            default_worker_cpu=_cpu(env.get("FERRY_DEFAULT_WORKER_CPU", "")),
            max_pods_per_job=number("FERRY_MAX_PODS_PER_JOB"),
            max_memory_per_pod=parse_bytes(max_memory) if max_memory else None,
            max_cpu_per_pod=parse_cpu(max_cpu) if max_cpu else None,
            worker_cpu_limit=_flag(env, "FERRY_WORKER_CPU_LIMIT"),
            notify_allow_http=_flag(env, "FERRY_NOTIFY_ALLOW_HTTP"),
            max_jobs_per_namespace=number("FERRY_MAX_JOBS_PER_NAMESPACE"),
            max_planning_per_namespace=number("FERRY_MAX_PLANNING_PER_NAMESPACE"),
            listing_deadline_seconds=float(deadline) if deadline else None,
            planner_pods=_planner_pods(number("FERRY_PLANNER_PODS")),
            max_objects_per_copyjob=number("FERRY_MAX_OBJECTS_PER_COPYJOB"),
            workload_identity_namespaces=names("FERRY_WORKLOAD_IDENTITY_NAMESPACES"),
            workload_identity_selector=_selector(env.get("FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR", "")),
            endpoints=EndpointPolicy.build(names("FERRY_ALLOWED_ENDPOINTS"), names("FERRY_CLUSTER_CIDRS")),
            aggregate_interval_seconds=float(env.get("FERRY_AGGREGATE_INTERVAL_SECONDS") or 5.0),
            reconcile_threads=number("FERRY_RECONCILE_THREADS") or defaults.reconcile_threads,
            metrics_port=number("FERRY_METRICS_PORT") or defaults.metrics_port,
            liveness_port=number("FERRY_LIVENESS_PORT") or defaults.liveness_port,
            listen_address=_address(env.get("FERRY_LISTEN_ADDRESS", "").strip() or defaults.listen_address),
            max_copyjob_series=_count(number("FERRY_MAX_COPYJOB_SERIES"), defaults.max_copyjob_series),
            prices=_prices(env.get("FERRY_PRICES", "")),
        )


def _planner_pods(value: int | None) -> int:
    if value is None:
        return 1
    if not 1 <= value <= MAX_PLANNER_PODS:
        raise ValueError(f"FERRY_PLANNER_PODS={value} is not between 1 and {MAX_PLANNER_PODS}")
    return value


def _address(value: str) -> str:
    """An IP address to bind to; a name would bind wherever it happens to resolve."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"FERRY_LISTEN_ADDRESS={value!r} is not an IP address; use 127.0.0.1 (this machine only) "
            "or 0.0.0.0 (every interface, e.g. the pod's address)"
        ) from None


def _count(value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 0:
        raise ValueError(f"FERRY_MAX_COPYJOB_SERIES={value} is negative; use 0 for no per-CopyJob series")
    return value


def _cpu(text: str) -> str | None:
    """A CPU quantity as given (it goes into pod specs), refused at start when it is none."""
    text = text.strip()
    if text:
        parse_cpu(text)
    return text or None


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in ("", "true", "false"):
        raise ValueError(f"{name}={value!r} is neither true nor false")
    return value == "true"


def _prices(text: str) -> Prices:
    """The chart's planning.prices, as JSON; empty: the default table (`cost.DEFAULT_PRICES`)."""
    if not text.strip():
        return DEFAULT_PRICES
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError(f"FERRY_PRICES is not JSON: {text[:200]!r}") from None
    try:
        return parse_prices(raw, "planning.prices")
    except PricesInvalid as exc:
        raise ValueError(str(exc)) from None


def _selector(text: str) -> LabelSelector | None:
    """The chart's workloadIdentity.namespaceSelector, as JSON. Empty selects no namespace: an empty
    Kubernetes selector selects every one, and workload identity everywhere must be asked for explicitly
    (e.g. matchExpressions [{key: kubernetes.io/metadata.name, operator: Exists}])."""
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError(f"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR is not JSON: {text[:200]!r}") from None
    selector = parse_selector(raw, "workloadIdentity.namespaceSelector")
    return None if selector.empty else selector
