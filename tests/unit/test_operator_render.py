"""Rendering of the plan ConfigMap and the Indexed Job of workers (operator/render.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.plan import SHARDS_FILE, SPEC_FILE, SUMMARY_FILE, Shard
from ferry.operator.render import (
    PLAN_MOUNT,
    Owner,
    child_name,
    fit_shards,
    job_name,
    plan_name,
    render_job,
    render_plan,
)
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing

MiB = 2**20
UID = "6f1c2a4e-0000-4000-8000-00000000c0de"
OWNER = Owner("migrate-logs", "tenant-a", UID)
SIZING = Sizing(448 * MiB, int(448 * MiB * 0.8), 32, 512, 2, 10_000, "2 pod(s) x 50 objects/s")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

BASE: dict[str, Any] = {
    "source": {"bucket": "src-bucket", "prefix": "logs/", "credentialsSecret": "src-creds"},
    "destination": {"bucket": "dst-bucket", "credentialsSecret": "dst-creds"},
}
FULL: dict[str, Any] = {
    "source": {
        "bucket": "src-bucket",
        "prefix": "data/",
        "endpoint": "https://s3.example.com",
        "region": "eu-west-1",
        "credentialsSecret": "src-creds",
    },
    "destination": {
        "bucket": "dst-bucket",
        "storageClass": "STANDARD_IA",
        "serverSideEncryption": {"type": "aws:kms", "kmsKeyId": "alias/k1"},
        "credentialsSecret": "dst-creds",
        "addressingStyle": "path",
    },
    "filter": {
        "include": ["*.csv"],
        "exclude": ["tmp/*"],
        "minSize": "1Ki",
        "maxSize": "10Gi",
        "modifiedAfter": "2024-01-01T00:00:00Z",
    },
    "objectSizes": {"median": "100k", "p99": "1Mi"},
    "overwrite": "never",
    "verify": "etag",
    "preserve": {"tags": False},
    "concurrency": {"max": 64, "initial": 8},
    "rateLimit": {"requestsPerSecond": 100, "bytesPerSecond": "100Mi"},
    "report": {"bucket": "rep-bucket", "prefix": "failed/", "credentialsSecret": "rep-creds"},
    "parallelism": 3,
    "target": {"deadline": "2026-12-01T00:00:00Z"},
    "resources": {"memory": "1Gi", "cpu": "500m"},
    "suspend": True,
    "ttlSecondsAfterFinished": 600,
    "shardSize": {"maxObjects": 1000, "maxBytes": "5Gi"},
}


def spec_of(raw: dict[str, Any], **extra: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate({**raw, **extra}, by_alias=True, by_name=False)


def job(
    spec: CopyJobSpec | None = None,
    settings: OperatorSettings | None = None,
    shards: int = 7,
    parallelism: int = 2,
    sizing: Sizing = SIZING,
) -> dict[str, Any]:
    return render_job(
        OWNER, spec or spec_of(BASE), sizing, shards, settings or OperatorSettings(), parallelism
    )


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod_spec(manifest)["containers"][0]["env"]}


SPECS = [
    pytest.param(spec_of(BASE), id="base"),
    pytest.param(spec_of(FULL), id="full"),
    pytest.param(
        spec_of({"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}),
        id="no-credentials",
    ),
]


# --- pod security ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_pods_meet_restricted_pod_security(spec: CopyJobSpec) -> None:
    manifest = job(spec)
    pod = pod_spec(manifest)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("hostNetwork", False) is False
    assert pod.get("hostPID", False) is False
    assert pod.get("hostIPC", False) is False
    for volume in pod["volumes"]:
        assert "hostPath" not in volume
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context.get("runAsUser", 1) != 0
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("privileged", False) is False
        assert "hostPort" not in json.dumps(container.get("ports", []))


# --- job shape -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shards", "parallelism"),
    [(1, 1), (7, 2), (1000, 20), (10_000, 1000)],
    ids=["one", "seven", "thousand", "ten-thousand"],
)
def test_indexed_job_shape(shards: int, parallelism: int) -> None:
    spec = job(shards=shards, parallelism=parallelism)["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == shards
    assert spec["parallelism"] == parallelism
    assert isinstance(spec["backoffLimitPerIndex"], int)
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_pod_failure_policy_fails_the_index_on_exit_2() -> None:
    rules = job()["spec"]["podFailurePolicy"]["rules"]
    fail_index = [r for r in rules if r["action"] == "FailIndex"]
    assert len(fail_index) == 1
    on_exit = fail_index[0]["onExitCodes"]
    assert on_exit["operator"] == "In"
    assert 2 in on_exit["values"]
    assert on_exit["containerName"] == "worker"
    assert 0 not in on_exit["values"]


@pytest.mark.parametrize(
    ("extra", "suspend", "ttl"),
    [
        ({}, False, None),
        ({"suspend": True}, True, None),
        ({"suspend": False, "ttlSecondsAfterFinished": 0}, False, 0),
        ({"ttlSecondsAfterFinished": 3600}, False, 3600),
        ({"suspend": True, "ttlSecondsAfterFinished": 60}, True, 60),
    ],
    ids=["defaults", "suspended", "ttl-zero", "ttl-hour", "both"],
)
def test_suspend_mirrors_the_spec_and_ttl_is_left_to_the_operator(
    extra: dict[str, Any], suspend: bool, ttl: int | None
) -> None:
    spec = job(spec_of(BASE, **extra))["spec"]
    assert spec["suspend"] is suspend
    # The operator removes the Job itself once it has read every final report; a Job TTL could delete
    # the pods (and their termination messages) before that.
    assert "ttlSecondsAfterFinished" not in spec
    del ttl


@pytest.mark.parametrize(
    ("sizing", "settings", "spec", "cpu"),
    [
        (SIZING, OperatorSettings(), spec_of(BASE), None),
        (Sizing(3 * 2**30, 2_576_980_377, 8, 124, 4, None, "r"), OperatorSettings(), spec_of(BASE), None),
        (SIZING, OperatorSettings(default_worker_cpu="250m"), spec_of(BASE), "250m"),
        (SIZING, OperatorSettings(default_worker_cpu="250m"), spec_of(FULL), "500m"),
    ],
    ids=["incident", "large", "default-cpu", "spec-cpu-wins"],
)
def test_memory_env_and_resources_follow_sizing(
    sizing: Sizing, settings: OperatorSettings, spec: CopyJobSpec, cpu: str | None
) -> None:
    manifest = job(spec, settings, sizing=sizing)
    env = env_of(manifest)
    assert env["FERRY_MEMORY_LIMIT"]["value"] == str(sizing.memory_limit_bytes)
    assert env["FERRY_INITIAL_CONCURRENCY"]["value"] == str(sizing.initial_concurrency)
    assert env["FERRY_PLAN_DIR"]["value"] == PLAN_MOUNT
    resources = pod_spec(manifest)["containers"][0]["resources"]
    assert resources["limits"]["memory"] == str(sizing.pod_memory_bytes)
    assert resources["requests"]["memory"] == str(sizing.pod_memory_bytes)
    assert resources["requests"].get("cpu") == cpu
    assert int(env["FERRY_MEMORY_LIMIT"]["value"]) < int(resources["limits"]["memory"])


# --- credentials and secrets -----------------------------------------------------------------------------

PLANTED = "PLANTED-s3cr3t-V4LUE-0123456789"


@pytest.mark.parametrize("spec", SPECS)
def test_credentials_only_via_secret_key_ref(spec: CopyJobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret value wherever a careless renderer could pick one up: the operator's own environment.
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "FERRY_SOURCE_SECRET_ACCESS_KEY",
        "FERRY_DESTINATION_SECRET_ACCESS_KEY",
        "FERRY_REPORT_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(name, PLANTED)
    manifest = job(spec)
    text = json.dumps(manifest)
    assert PLANTED not in text
    env = env_of(manifest)
    credential_vars = {n: e for n, e in env.items() if re.search(r"ACCESS_KEY|SESSION_TOKEN|SECRET", n)}
    secrets = {
        "SOURCE": spec.source.credentials_secret,
        "DESTINATION": spec.destination.credentials_secret,
        "REPORT": spec.report.credentials_secret if spec.report else None,
    }
    expected = {
        f"FERRY_{side}_{var}"
        for side, secret in secrets.items()
        if secret
        for var in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN")
    }
    assert set(credential_vars) == expected
    for name, entry in credential_vars.items():
        assert "value" not in entry, name
        ref = entry["valueFrom"]["secretKeyRef"]
        side = name.split("_")[1]
        assert ref["name"] == secrets[side]
        assert ref["key"].startswith("AWS_")
    # No literal value anywhere looks like a credential.
    for entry in env.values():
        if "value" in entry:
            assert not re.search(r"(?i)secret|token|access", entry["name"])
    assert "secret" not in json.dumps(pod_spec(manifest)["volumes"]).lower()


def test_plan_configmap_mounted_read_only() -> None:
    manifest = job()
    pod = pod_spec(manifest)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    plan_mount = mounts[PLAN_MOUNT]
    assert plan_mount["readOnly"] is True
    assert volumes[plan_mount["name"]]["configMap"]["name"] == plan_name(OWNER.name)
    # the only writable mount is the scratch emptyDir
    for mount in mounts.values():
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]]


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(job(), id="job"),
        pytest.param(render_plan(OWNER, spec_of(BASE), [Shard(None, None, 1, 1)], {}), id="plan"),
    ],
)
def test_owner_reference_is_the_controlling_copyjob(manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    assert meta["namespace"] == OWNER.namespace
    (reference,) = meta["ownerReferences"]
    assert reference["controller"] is True
    assert reference["uid"] == UID
    assert reference["kind"] == "CopyJob"
    assert reference["name"] == OWNER.name
    assert reference["apiVersion"] == "ferry.dev/v1alpha1"


def test_service_account_only_when_set() -> None:
    assert "serviceAccountName" not in pod_spec(job())
    manifest = job(settings=OperatorSettings(worker_service_account="ferry-worker"))
    assert pod_spec(manifest)["serviceAccountName"] == "ferry-worker"
    assert pod_spec(manifest)["automountServiceAccountToken"] is False


# --- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "suffix", "limit"),
    [
        ("a" * 253, "workers", 52),
        ("b" * 253, "plan", 253),
        ("c" * 45, "workers", 52),  # exactly at the limit: kept as is
        ("c" * 46, "workers", 52),  # one over: hashed
        ("short", "workers", 52),
        ("x" * 60, "ledger", 52),
        ("x.y." + "z" * 249, "plan", 253),  # dotted names are valid CopyJob and ConfigMap names
        pytest.param(
            "a" * 238 + "." + "b" * 14,
            "plan",
            253,
            id="plan-dot-at-cut",
        ),
    ],
    ids=[
        "253-workers",
        "253-plan",
        "at-limit",
        "one-over",
        "short",
        "ledger",
        "dotted-plan",
        "plan-dot-at-cut",
    ],
)
def test_child_name_length_and_determinism(owner: str, suffix: str, limit: int) -> None:
    name = child_name(owner, suffix, limit)
    assert len(name) <= limit
    assert name == child_name(owner, suffix, limit)
    assert name.endswith(f"-{suffix}")
    if len(owner) + 1 + len(suffix) <= limit:
        assert name == f"{owner}-{suffix}"
    assert DNS_SUBDOMAIN.match(name)


def test_child_names_of_long_owners_differ() -> None:
    base = "team-" + "x" * 240
    names = {child_name(base + str(i), "workers") for i in range(20)}
    assert len(names) == 20
    assert all(len(n) <= 52 for n in names)
    assert job_name("a" * 253) != job_name("a" * 252 + "b")


@pytest.mark.parametrize(
    ("owner", "completions"),
    [
        pytest.param("migrate-logs", 10_000, id="plain"),
        pytest.param("a" * 253, 100_000, id="253-chars"),
        pytest.param(
            "logs.2024",
            10,
            id="dotted-name",
        ),
    ],
)
def test_job_name_gives_valid_indexed_pod_hostnames(owner: str, completions: int) -> None:
    # kube-apiserver (ValidateJob): for Indexed Jobs "<name>-<completions-1>" must be a DNS-1123 label.
    hostname = f"{job_name(owner)}-{completions - 1}"
    assert len(hostname) <= 63
    assert DNS_LABEL.match(hostname), hostname


# --- fit_shards ------------------------------------------------------------------------------------------


def shards_of(count: int, key_length: int = 20) -> list[Shard]:
    ends = [f"{i:0{key_length}d}" for i in range(1, count)]
    starts: list[str | None] = [None, *ends]
    stops: list[str | None] = [*ends, None]
    return [
        Shard(a, b, 10 + i % 3, 1000 * (i + 1)) for i, (a, b) in enumerate(zip(starts, stops, strict=True))
    ]


@pytest.mark.parametrize(
    ("count", "key_length", "limit"),
    [(10, 20, 10_000), (100, 20, 2_000), (1001, 40, 20_000), (7, 10, 1), (3000, 200, 900 * 1024)],
    ids=["fits", "merge", "odd-count", "limit-below-one", "long-keys"],
)
def test_fit_shards_merges_until_under_limit_and_keeps_coverage(
    count: int, key_length: int, limit: int
) -> None:
    shards = shards_of(count, key_length)
    fitted = fit_shards(shards, limit)
    size = len(json.dumps([s.as_json() for s in fitted]))
    assert size <= limit or len(fitted) == 1
    if len(json.dumps([s.as_json() for s in shards])) <= limit:
        assert fitted == shards
    else:
        assert len(fitted) < len(shards)
    assert fitted[0].start_after is None
    assert fitted[-1].end is None
    for a, b in itertools.pairwise(fitted):
        assert b.start_after == a.end
    assert sum(s.objects for s in fitted) == sum(s.objects for s in shards)
    assert sum(s.bytes for s in fitted) == sum(s.bytes for s in shards)


# --- render_plan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_render_plan_spec_json_validates_back(spec: CopyJobSpec) -> None:
    shards = shards_of(5)
    summary = {"objects": 52, "bytes": 15_000, "shards": 5}
    plan = render_plan(OWNER, spec, shards, summary)
    assert plan["kind"] == "ConfigMap"
    assert plan["metadata"]["name"] == plan_name(OWNER.name)
    data = plan["data"]
    assert all(isinstance(v, str) for v in data.values())
    again = CopyJobSpec.model_validate(json.loads(data[SPEC_FILE]), by_alias=True, by_name=False)
    assert again == spec
    assert [Shard.from_json(s) for s in json.loads(data[SHARDS_FILE])] == shards
    assert json.loads(data[SUMMARY_FILE]) == summary


@pytest.mark.parametrize(
    ("settings", "spec", "requests", "limits"),
    [
        (OperatorSettings(), spec_of(BASE), {}, {}),
        (OperatorSettings(default_worker_cpu="1"), spec_of(BASE), {"cpu": "1"}, {}),
        (
            OperatorSettings(default_worker_cpu="1", worker_cpu_limit=True),
            spec_of(BASE),
            {"cpu": "1"},
            {"cpu": "1"},
        ),
        (OperatorSettings(worker_cpu_limit=True), spec_of(BASE), {}, {}),
        (OperatorSettings(max_cpu_per_pod=250), spec_of(FULL), {"cpu": "250m"}, {}),
        (
            OperatorSettings(max_cpu_per_pod=250, worker_cpu_limit=True),
            spec_of(FULL),
            {"cpu": "250m"},
            {"cpu": "250m"},
        ),
        (
            OperatorSettings(max_cpu_per_pod=4000, worker_cpu_limit=True),
            spec_of(FULL),
            {"cpu": "500m"},
            {"cpu": "500m"},
        ),
    ],
    ids=[
        "no-cpu",
        "default-request",
        "limit-equals-request",
        "no-request-no-limit",
        "capped",
        "capped-limit",
        "under-cap",
    ],
)
def test_cpu_request_is_capped_and_limited_only_when_the_platform_asks(
    settings: OperatorSettings, spec: CopyJobSpec, requests: dict[str, str], limits: dict[str, str]
) -> None:
    resources = pod_spec(job(spec, settings))["containers"][0]["resources"]
    memory = str(SIZING.pod_memory_bytes)
    assert resources["requests"] == {"memory": memory, **requests}
    assert resources["limits"] == {"memory": memory, **limits}


@pytest.mark.parametrize(
    ("sizing", "settings", "requests", "processes"),
    [
        (SIZING, OperatorSettings(default_worker_cpu="1"), {"cpu": "1"}, "1"),
        (dataclasses.replace(SIZING, cpu_millis=4000, processes=4), OperatorSettings(), {"cpu": "4"}, "4"),
        (
            dataclasses.replace(SIZING, cpu_millis=2000, processes=2),
            OperatorSettings(default_worker_cpu="1", worker_cpu_limit=True),
            {"cpu": "2"},
            "2",
        ),
    ],
    ids=["one-process", "raised-for-a-target", "two-with-limit"],
)
def test_a_worker_pod_copies_in_one_process_per_cpu_the_sizing_asks_for(
    sizing: Sizing, settings: OperatorSettings, requests: dict[str, str], processes: str
) -> None:
    manifest = job(spec_of(BASE), settings, sizing=sizing)
    resources = pod_spec(manifest)["containers"][0]["resources"]
    assert resources["requests"] == {"memory": str(sizing.pod_memory_bytes), **requests}
    if settings.worker_cpu_limit:
        assert resources["limits"]["cpu"] == requests["cpu"]
    assert env_of(manifest)["FERRY_PROCESSES"]["value"] == processes


# --- spec.rateLimit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "parallelism", "share"),
    [
        pytest.param({}, 2, {"requestsPerSecond": 0.0, "bytesPerSecond": 0}, id="unlimited"),
        pytest.param(
            {"requestsPerSecond": 20}, 2, {"requestsPerSecond": 10.0, "bytesPerSecond": 0}, id="rps"
        ),
        pytest.param(
            {"requestsPerSecond": 100, "bytesPerSecond": "100Mi"},
            3,
            {"requestsPerSecond": 33.333, "bytesPerSecond": 100 * MiB // 3},
            id="both-over-three",
        ),
    ],
)
def test_pods_start_with_their_share_of_the_job_wide_limits(
    limits: dict[str, Any], parallelism: int, share: dict[str, Any]
) -> None:
    manifest = render_job(OWNER, spec_of(BASE, rateLimit=limits), SIZING, 7, OperatorSettings(), parallelism)
    assert json.loads(env_of(manifest)["FERRY_RATE_SHARE"]["value"]) == share


def test_the_limits_token_is_in_the_pod_template_only_when_given() -> None:
    token = "t" * 43
    with_token = render_job(OWNER, spec_of(BASE), SIZING, 7, OperatorSettings(), 2, limits_token=token)
    assert env_of(with_token)["FERRY_LIMITS_TOKEN"] == {"name": "FERRY_LIMITS_TOKEN", "value": token}
    assert "FERRY_LIMITS_TOKEN" not in env_of(job())
