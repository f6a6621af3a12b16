"""Operator settings from the environment the Helm chart sets (operator/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.operator.policy import EndpointPolicy
from ferry.operator.settings import OperatorSettings

GiB, MiB = 2**30, 2**20

CASES = [
    ("empty", {}, {}),
    ("one-namespace", {"FERRY_WATCH_NAMESPACES": "tenant-a"}, {"watch_namespaces": ("tenant-a",)}),
    (
        "namespace-list",
        {"FERRY_WATCH_NAMESPACES": " tenant-a, tenant-b ,,tenant-c,"},
        {"watch_namespaces": ("tenant-a", "tenant-b", "tenant-c")},
    ),
    ("blank-namespaces", {"FERRY_WATCH_NAMESPACES": " , "}, {"watch_namespaces": ()}),
    ("memory-auto", {"FERRY_DEFAULT_WORKER_MEMORY": "auto"}, {"default_worker_memory": None}),
    ("memory-blank", {"FERRY_DEFAULT_WORKER_MEMORY": "  "}, {"default_worker_memory": None}),
    ("memory-gi", {"FERRY_DEFAULT_WORKER_MEMORY": "2Gi"}, {"default_worker_memory": 2 * GiB}),
    ("memory-mi", {"FERRY_DEFAULT_WORKER_MEMORY": " 512Mi "}, {"default_worker_memory": 512 * MiB}),
    ("memory-decimal", {"FERRY_DEFAULT_WORKER_MEMORY": "1G"}, {"default_worker_memory": 10**9}),
    ("max-memory", {"FERRY_MAX_MEMORY_PER_POD": "4Gi"}, {"max_memory_per_pod": 4 * GiB}),
    ("max-memory-blank", {"FERRY_MAX_MEMORY_PER_POD": ""}, {"max_memory_per_pod": None}),
    (
        "caps",
        {"FERRY_MAX_PODS_PER_JOB": "20", "FERRY_MAX_JOBS_PER_NAMESPACE": " 3 "},
        {"max_pods_per_job": 20, "max_jobs_per_namespace": 3},
    ),
    ("caps-blank", {"FERRY_MAX_PODS_PER_JOB": ""}, {"max_pods_per_job": None}),
    (
        "image-and-account",
        {"FERRY_WORKER_IMAGE": "registry.local/ferry:dev", "FERRY_WORKER_SERVICE_ACCOUNT": "ferry-worker"},
        {"worker_image": "registry.local/ferry:dev", "worker_service_account": "ferry-worker"},
    ),
    ("image-blank", {"FERRY_WORKER_IMAGE": ""}, {}),
    ("cpu", {"FERRY_DEFAULT_WORKER_CPU": "500m"}, {"default_worker_cpu": "500m"}),
    ("cpu-blank", {"FERRY_DEFAULT_WORKER_CPU": ""}, {"default_worker_cpu": None}),
    ("interval", {"FERRY_AGGREGATE_INTERVAL_SECONDS": "2.5"}, {"aggregate_interval_seconds": 2.5}),
    ("interval-blank", {"FERRY_AGGREGATE_INTERVAL_SECONDS": ""}, {"aggregate_interval_seconds": 5.0}),
    ("threads", {"FERRY_RECONCILE_THREADS": "64"}, {"reconcile_threads": 64}),
    ("threads-blank", {"FERRY_RECONCILE_THREADS": ""}, {"reconcile_threads": 32}),
    (
        "ports",
        {"FERRY_METRICS_PORT": "9100", "FERRY_LIVENESS_PORT": "8081"},
        {"metrics_port": 9100, "liveness_port": 8081},
    ),
    ("unrelated", {"HOME": "/root", "FERRY_UNKNOWN": "x"}, {}),
    (
        "planning-limits",
        {
            "FERRY_MAX_PLANNING_PER_NAMESPACE": "2",
            "FERRY_LISTING_DEADLINE_SECONDS": "7200",
            "FERRY_MAX_OBJECTS_PER_COPYJOB": "20000000",
        },
        {
            "max_planning_per_namespace": 2,
            "listing_deadline_seconds": 7200.0,
            "max_objects_per_copyjob": 20_000_000,
        },
    ),
    ("planning-limits-blank", {"FERRY_LISTING_DEADLINE_SECONDS": " "}, {"listing_deadline_seconds": None}),
    (
        "workload-identity",
        {"FERRY_WORKLOAD_IDENTITY_NAMESPACES": "team-a, team-b"},
        {"workload_identity_namespaces": ("team-a", "team-b")},
    ),
    (
        "endpoints",
        {"FERRY_ALLOWED_ENDPOINTS": "127.0.0.0/8,minio.svc", "FERRY_CLUSTER_CIDRS": "10.96.0.0/12"},
        {"endpoints": EndpointPolicy.build(["127.0.0.0/8", "minio.svc"], ["10.96.0.0/12"])},
    ),
]


@pytest.mark.parametrize(("env", "changed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_from_env(env: dict[str, str], changed: dict[str, Any]) -> None:
    settings = OperatorSettings.from_env(env)
    defaults = OperatorSettings()
    for name, value in vars(defaults).items():
        assert getattr(settings, name) == changed.get(name, value), name


def test_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings == OperatorSettings()
    assert settings.watch_namespaces == ()
    assert settings.default_worker_memory is None
    assert settings.worker_image.startswith("ghcr.io/")
    assert settings.aggregate_interval_seconds == 5.0
    # Secure by default: no workload identity, the built-in endpoint refusals, nothing allowed.
    assert settings.workload_identity_namespaces == ()
    assert settings.endpoints.allowed_networks == () and settings.endpoints.allowed_hosts == frozenset()


def test_from_env_reads_the_given_mapping_not_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_WATCH_NAMESPACES", "from-process")
    assert OperatorSettings.from_env({}).watch_namespaces == ()
    assert OperatorSettings.from_env().watch_namespaces == ("from-process",)


@pytest.mark.parametrize(
    "env",
    [
        {"FERRY_DEFAULT_WORKER_MEMORY": "lots"},
        {"FERRY_MAX_MEMORY_PER_POD": "-1Gi"},
        {"FERRY_MAX_PODS_PER_JOB": "twenty"},
        {"FERRY_ALLOWED_ENDPOINTS": "http://minio:9000"},
        {"FERRY_CLUSTER_CIDRS": "10.96.0.0/40"},
    ],
    ids=["memory-garbage", "negative-memory", "pods-garbage", "endpoint-url", "cidr-garbage"],
)
def test_invalid_values_raise(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        OperatorSettings.from_env(env)
