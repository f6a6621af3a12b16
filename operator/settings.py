"""Operator settings, from the environment the Helm chart sets. Platform teams offering migration as a
service put their defaults and caps here; every tenant's CopyJob is held to them with a clear condition.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ferry.model.quantity import parse_bytes
from ferry.operator.policy import EndpointPolicy


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
    max_jobs_per_namespace: int | None = None
    #: CopyJobs of one namespace listing their source at once; more wait as Pending (WaitingForCapacity).
    max_planning_per_namespace: int | None = None
    #: Seconds one CopyJob's listing may take, and objects it may list, before it stalls
    #: (ListingTooLong, TooManyObjects): an endpoint that never stops listing holds nothing for long.
    listing_deadline_seconds: float | None = None
    max_objects_per_copyjob: int | None = None
    #: Namespaces whose CopyJobs may run on workload identity (spec.serviceAccountName) instead of Secrets.
    workload_identity_namespaces: tuple[str, ...] = ()
    #: Where endpoints may point (see `policy.EndpointPolicy`); by default the built-in refusals only.
    endpoints: EndpointPolicy = EndpointPolicy.build()
    aggregate_interval_seconds: float = 5.0
    #: Threads for the blocking API and worker /status calls of all reconcile passes together.
    reconcile_threads: int = 32
    metrics_port: int = 9090
    liveness_port: int = 8080
    status_port: int = 8080  # the workers' /status port

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
        defaults = cls()
        return cls(
            watch_namespaces=names("FERRY_WATCH_NAMESPACES"),
            worker_image=env.get("FERRY_WORKER_IMAGE") or defaults.worker_image,
            worker_service_account=env.get("FERRY_WORKER_SERVICE_ACCOUNT") or defaults.worker_service_account,
            default_worker_memory=None if memory in ("", "auto") else parse_bytes(memory),
            default_worker_cpu=env.get("FERRY_DEFAULT_WORKER_CPU") or None,
            max_pods_per_job=number("FERRY_MAX_PODS_PER_JOB"),
            max_memory_per_pod=parse_bytes(max_memory) if max_memory else None,
            max_jobs_per_namespace=number("FERRY_MAX_JOBS_PER_NAMESPACE"),
            max_planning_per_namespace=number("FERRY_MAX_PLANNING_PER_NAMESPACE"),
            listing_deadline_seconds=float(deadline) if deadline else None,
            max_objects_per_copyjob=number("FERRY_MAX_OBJECTS_PER_COPYJOB"),
            workload_identity_namespaces=names("FERRY_WORKLOAD_IDENTITY_NAMESPACES"),
            endpoints=EndpointPolicy.build(names("FERRY_ALLOWED_ENDPOINTS"), names("FERRY_CLUSTER_CIDRS")),
            aggregate_interval_seconds=float(env.get("FERRY_AGGREGATE_INTERVAL_SECONDS") or 5.0),
            reconcile_threads=number("FERRY_RECONCILE_THREADS") or defaults.reconcile_threads,
            metrics_port=number("FERRY_METRICS_PORT") or defaults.metrics_port,
            liveness_port=number("FERRY_LIVENESS_PORT") or defaults.liveness_port,
        )
