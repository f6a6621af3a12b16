"""Operator settings, from the environment the Helm chart sets. Platform teams offering migration as a
service put their defaults and caps here; every tenant's CopyJob is held to them with a clear condition.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ferry.model.quantity import parse_bytes


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

        memory = env.get("FERRY_DEFAULT_WORKER_MEMORY", "auto").strip()
        max_memory = env.get("FERRY_MAX_MEMORY_PER_POD", "").strip()
        defaults = cls()
        return cls(
            watch_namespaces=tuple(
                n.strip() for n in env.get("FERRY_WATCH_NAMESPACES", "").split(",") if n.strip()
            ),
            worker_image=env.get("FERRY_WORKER_IMAGE") or defaults.worker_image,
            worker_service_account=env.get("FERRY_WORKER_SERVICE_ACCOUNT") or defaults.worker_service_account,
            default_worker_memory=None if memory in ("", "auto") else parse_bytes(memory),
            default_worker_cpu=env.get("FERRY_DEFAULT_WORKER_CPU") or None,
            max_pods_per_job=number("FERRY_MAX_PODS_PER_JOB"),
            max_memory_per_pod=parse_bytes(max_memory) if max_memory else None,
            max_jobs_per_namespace=number("FERRY_MAX_JOBS_PER_NAMESPACE"),
            aggregate_interval_seconds=float(env.get("FERRY_AGGREGATE_INTERVAL_SECONDS") or 5.0),
            reconcile_threads=number("FERRY_RECONCILE_THREADS") or defaults.reconcile_threads,
            metrics_port=number("FERRY_METRICS_PORT") or defaults.metrics_port,
            liveness_port=number("FERRY_LIVENESS_PORT") or defaults.liveness_port,
        )
