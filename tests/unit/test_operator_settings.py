"""Operator settings from the environment the Helm chart sets (operator/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.operator.cost import DEFAULT_PRICES
from ferry.operator.policy import EndpointPolicy, LabelSelector
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
    ("max-cpu", {"FERRY_MAX_CPU_PER_POD": "4"}, {"max_cpu_per_pod": 4000}),
    ("max-cpu-millis", {"FERRY_MAX_CPU_PER_POD": " 1500m "}, {"max_cpu_per_pod": 1500}),
    ("max-cpu-blank", {"FERRY_MAX_CPU_PER_POD": ""}, {"max_cpu_per_pod": None}),
    ("cpu-limit", {"FERRY_WORKER_CPU_LIMIT": "true"}, {"worker_cpu_limit": True}),
    ("cpu-limit-off", {"FERRY_WORKER_CPU_LIMIT": "false"}, {"worker_cpu_limit": False}),
    ("cpu-limit-blank", {"FERRY_WORKER_CPU_LIMIT": ""}, {"worker_cpu_limit": False}),
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
        "workload-identity-selector",
        {"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": '{"matchLabels": {"tier": "gold"}}'},
        {"workload_identity_selector": LabelSelector(match_labels=(("tier", "gold"),))},
    ),
    # Empty selects nothing here (Kubernetes' empty selector selects everything): the chart's default.
    ("workload-identity-selector-empty", {"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": "{}"}, {}),
    ("workload-identity-selector-blank", {"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": " "}, {}),
    (
        "workload-identity-selector-empty-parts",
        {"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": '{"matchLabels": {}, "matchExpressions": []}'},
        {},
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
    assert settings.workload_identity_selector is None
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
        {"FERRY_MAX_CPU_PER_POD": "4Gi"},
        {"FERRY_DEFAULT_WORKER_CPU": "one"},
        {"FERRY_WORKER_CPU_LIMIT": "yes"},
        {"FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": "tier=gold"},
        {
            "FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": '{"matchExpressions": [{"key": "t", "operator": "In"}]}'
        },
    ],
    ids=[
        "memory-garbage",
        "negative-memory",
        "pods-garbage",
        "endpoint-url",
        "cidr-garbage",
        "cpu-cap-garbage",
        "cpu-default-garbage",
        "cpu-limit-not-a-boolean",
        "selector-not-json",
        "selector-in-without-values",
    ],
)
def test_invalid_values_raise(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        OperatorSettings.from_env(env)


@pytest.mark.parametrize(
    ("env", "address", "series"),
    [
        ({}, "127.0.0.1", 1000),  # `ferry operator` outside a pod: this machine only
        ({"FERRY_LISTEN_ADDRESS": "0.0.0.0"}, "0.0.0.0", 1000),  # the chart: the pod's address
        ({"FERRY_LISTEN_ADDRESS": " :: "}, "::", 1000),
        ({"FERRY_LISTEN_ADDRESS": "", "FERRY_MAX_COPYJOB_SERIES": ""}, "127.0.0.1", 1000),
        ({"FERRY_MAX_COPYJOB_SERIES": "50"}, "127.0.0.1", 50),
        ({"FERRY_MAX_COPYJOB_SERIES": "0"}, "127.0.0.1", 0),
    ],
    ids=["defaults", "all-ipv4", "all-ipv6", "blank", "series-cap", "no-series"],
)
def test_listen_address_and_series_cap(env: dict[str, str], address: str, series: int) -> None:
    settings = OperatorSettings.from_env(env)
    assert (settings.listen_address, settings.max_copyjob_series) == (address, series)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FERRY_LISTEN_ADDRESS": "localhost"}, "is not an IP address"),
        ({"FERRY_LISTEN_ADDRESS": "127.0.0.1:9090"}, "is not an IP address"),
        ({"FERRY_MAX_COPYJOB_SERIES": "-1"}, "negative"),
        ({"FERRY_MAX_COPYJOB_SERIES": "many"}, "invalid literal"),
    ],
    ids=["host-name", "with-port", "negative-cap", "cap-garbage"],
)
def test_bad_listen_address_or_series_cap_is_refused_at_start(env: dict[str, str], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        OperatorSettings.from_env(env)


PRICES_JSON = (
    '{"name": "Platform rates", "date": "2026-10-01", "currency": "EUR", "putCopyPostListPer1000": 0.004, '
    '"getAndOtherPer1000": 0.0003, "internetEgressPerGB": 0.05}'
)


@pytest.mark.parametrize(
    ("text", "name", "egress"),
    [
        ("", DEFAULT_PRICES.name, 0.09),
        ("  ", DEFAULT_PRICES.name, 0.09),
        (PRICES_JSON, "Platform rates", 0.05),
    ],
)
def test_the_price_table_comes_from_the_chart_or_is_aws_s(text: str, name: str, egress: float) -> None:
    prices = OperatorSettings.from_env({"FERRY_PRICES": text}).prices
    assert prices.name == name and prices.internet_egress_per_gb == egress


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "FERRY_PRICES is not JSON"),
        (PRICES_JSON.replace("0.004", "-1"), "planning.prices: putCopyPostListPer1000:"),
        (PRICES_JSON.replace('"currency": "EUR", ', ""), None),
        (PRICES_JSON.replace("internetEgressPerGB", "egress"), "planning.prices: egress: unknown field"),
        ("[1]", "planning.prices: a price table is a mapping"),
    ],
)
def test_a_bad_price_table_is_refused_at_start_naming_the_field(text: str, fragment: str | None) -> None:
    if fragment is None:  # the currency has a default
        assert OperatorSettings.from_env({"FERRY_PRICES": text}).prices.currency == "USD"
        return
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        OperatorSettings.from_env({"FERRY_PRICES": text})
