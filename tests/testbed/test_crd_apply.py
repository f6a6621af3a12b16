"""The CopyJob CRD and the Helm chart against a real kube-apiserver (the testbed's `cluster`).

The CRD is applied and must become Established (the API server compiles its CEL rules then). Every
example is accepted; invalid CopyJobs are refused at create time with an error naming the field, and
the pydantic model refuses the same objects (one set of rules, two validators). Clients ask for strict
field validation (`fieldValidation=Strict`, kubectl's default `--validate=strict`), without which a
structural schema silently prunes unknown fields. A status the operator would write survives a
round-trip unpruned. Finally the chart's rendered manifests pass a server-side dry-run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from ferry.model.copyjob import MAX_FILTER_CHARACTERS, parse_copyjob
from ferry.operator.reconcile import _stalled_status
from support.spellings import SPELLINGS

from .conftest import Cluster

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "copyjob.yaml"
CHART = REPO / "charts" / "ferry"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
FULL_VALUES = REPO / "tests" / "chart" / "testdata" / "values" / "full.yaml"
STATUS_SAMPLES = [
    REPO / "tests" / "chart" / "testdata" / "argocd" / n for n in ("running.yaml", "failed.yaml")
]
GROUP, VERSION, PLURAL = "ferry.dev", "v1alpha1", "copyjobs"


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.controlplane.bins.path("kubectl")), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def crd_namespace(cluster: Cluster) -> str:
    """Apply the CRD (server-side, so other tests applying it too do not conflict), wait Established."""
    proc = kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(cluster, "wait", "--for=condition=Established", "crd/copyjobs.ferry.dev", "--timeout=30s")
    assert proc.returncode == 0, proc.stderr
    return cluster.new_namespace("crd")


def base_job(name: str = "job") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CopyJob",
        "metadata": {"name": name},
        "spec": {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}},
    }


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api)
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return created


# -- valid CopyJobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(cluster: Cluster, crd_namespace: str, path: Path) -> None:
    proc = kubectl(cluster, "apply", "--validate=strict", "-n", crd_namespace, "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"warnings: {proc.stderr}"  # e.g. an unknown field only warned about


Edit = Callable[[dict[str, Any]], None]

VALID: dict[str, Edit] = {
    "same-bucket-disjoint-prefixes": lambda s: s.update(
        source={"bucket": "one-bucket", "prefix": "a/"}, destination={"bucket": "one-bucket", "prefix": "b/"}
    ),
    "same-bucket-other-endpoint": lambda s: s.update(
        source={"bucket": "one-bucket", "endpoint": "https://a.example"}, destination={"bucket": "one-bucket"}
    ),
    "sizes-mixing-integers-and-quantities": lambda s: s.update(
        filter={"minSize": 1024, "maxSize": "1Ki"}, objectSizes={"median": "1e3", "p99": 4096, "max": "5Gi"}
    ),
    "zero-sizes-are-not-ordered": lambda s: s.update(objectSizes={"median": "1Mi", "p99": 0, "max": "2Mi"}),
    "target-deadline": lambda s: s.update(target={"deadline": "2030-01-01T00:00:00+02:00"}),
    "sync-with-a-count": lambda s: s.update(mode="sync", deletes={"max": 1000}),
    "sync-with-a-percentage": lambda s: s.update(mode="sync", deletes={"max": "0.5%"}),
    "copy-said-outright": lambda s: s.update(mode="copy"),
    "every-version": lambda s: s.update(
        versions="all", filter={"include": ["logs/*"]}, overwrite="ifDifferent"
    ),
    "current-versions-said-outright": lambda s: s.update(versions="current", overwrite="always"),
    "every-version-with-evidence-of-every-version": lambda s: s.update(
        versions="all", report={"bucket": "reports", "include": "all"}
    ),
    "report-of-every-object": lambda s: s.update(report={"bucket": "reports", "include": "all"}),
    "completion-webhook": lambda s: s.update(notify={"urlSecret": {"name": "hooks", "key": "slack.url"}}),
    "archived-skip": lambda s: s.update(archived="skip"),
    "archived-restore-with-defaults": lambda s: s.update(archived="restore"),
    "archived-restore-settings": lambda s: s.update(
        archived="restore",
        restore={"tier": "Bulk", "days": 3, "maxWaitSeconds": 604800, "checkIntervalSeconds": 60},
    ),
    "manifest-in-a-bucket": lambda s: s["source"].update(
        manifest={
            "format": "inventory",
            "bucket": "inventories",
            "key": "src/cfg/2024-05-01T00-00Z/manifest.json",
        }
    ),
    "requester-pays": lambda s: (
        s["source"].update(requesterPays=True),
        s["destination"].update(requesterPays=False),
    ),
    "sse-customer-keys": lambda s: (
        s["source"].update(sseCustomerKey={"name": "src-keys", "key": "sse.key"}),
        s["destination"].update(sseCustomerKey={"name": "dst-keys", "key": "key"}),
    ),
    "acl-and-object-lock": lambda s: (
        s["destination"].update(acl="bucket-owner-full-control", storageClass="STANDARD"),
        s.update(preserve={"objectLock": True}),
    ),
    "everything": lambda s: s.update(
        filter={"include": ["*.parquet"], "exclude": ["tmp/*"], "modifiedAfter": "2024-01-01T00:00:00Z"},
        overwrite="always",
        verify="size",
        preserve={"metadata": False, "tags": True},
        concurrency={"initial": 8, "max": 64},
        rateLimit={"requestsPerSecond": 0, "bytesPerSecond": "100Mi"},
        report={"bucket": "reports", "prefix": "ferry/"},
        parallelism=4,
        resources={"memory": "auto", "cpu": "500m"},
        dryRun=False,
        suspend=True,
        ttlSecondsAfterFinished=3600,
        shardSize={"maxObjects": 10000, "maxBytes": "10Gi"},
    ),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_copyjob_is_accepted(cluster: Cluster, crd_namespace: str, name: str) -> None:
    body = base_job(f"valid-{name}")
    VALID[name](body["spec"])
    parse_copyjob(body)  # the model agrees
    created = create(cluster, crd_namespace, body)
    assert created["spec"] == body["spec"], "the API server changed or pruned the spec"


# -- invalid CopyJobs ------------------------------------------------------------------------------

#: name -> (edit of a valid spec, substrings the API server's error must contain)
INVALID: dict[str, tuple[Edit, tuple[str, ...]]] = {
    "unknown-field": (lambda s: s.update(overwirte="never"), ('unknown field "spec.overwirte"',)),
    "unknown-nested-field": (
        lambda s: s["source"].update(bukket="x"),
        ('unknown field "spec.source.bukket"',),
    ),
    "missing-bucket": (lambda s: s["source"].pop("bucket"), ("spec.source.bucket", "Required value")),
    "missing-destination": (lambda s: s.pop("destination"), ("spec.destination", "Required value")),
    "bad-bucket-name": (lambda s: s["source"].update(bucket="Bad_Bucket"), ("spec.source.bucket",)),
    "bucket-like-an-ip": (lambda s: s["destination"].update(bucket="10.1.2.3"), ("spec.destination.bucket",)),
    "endpoint-not-a-url": (
        lambda s: s["source"].update(endpoint="s3.example.com"),
        ("spec.source.endpoint",),
    ),
    "endpoint-with-path": (
        lambda s: s["destination"].update(endpoint="https://s3.example.com/bucket"),
        ("spec.destination.endpoint",),
    ),
    "bad-overwrite-enum": (
        lambda s: s.update(overwrite="sometimes"),
        ("spec.overwrite", "Unsupported value"),
    ),
    "negative-rate-limit": (
        lambda s: s.update(rateLimit={"requestsPerSecond": -1}),
        ("spec.rateLimit.requestsPerSecond",),
    ),
    "negative-bytes-per-second": (
        lambda s: s.update(rateLimit={"bytesPerSecond": -5}),
        ("spec.rateLimit.bytesPerSecond",),
    ),
    "concurrency-max-0": (lambda s: s.update(concurrency={"max": 0}), ("spec.concurrency.max",)),
    "concurrency-initial-above-max": (
        lambda s: s.update(concurrency={"initial": 16, "max": 8}),
        ("spec.concurrency.initial", "concurrency.max"),
    ),
    "concurrency-initial-above-default-max": (
        lambda s: s.update(concurrency={"initial": 1000}),
        ("spec.concurrency.initial",),
    ),
    "min-size-above-max-size": (
        lambda s: s.update(filter={"minSize": "2Mi", "maxSize": 1048576}),
        ("spec.filter.minSize", "maxSize"),
    ),
    "modified-after-not-before": (
        lambda s: s.update(
            filter={"modifiedAfter": "2025-01-01T00:00:00Z", "modifiedBefore": "2024-01-01T00:00:00Z"}
        ),
        ("spec.filter.modifiedAfter",),
    ),
    "time-without-zone": (
        lambda s: s.update(filter={"modifiedAfter": "2025-01-01T00:00:00"}),
        ("modifiedAfter",),
    ),
    "object-sizes-out-of-order": (
        lambda s: s.update(objectSizes={"median": "1Mi", "p99": "100Ki"}),
        ("spec.objectSizes.median", "p99"),
    ),
    "object-sizes-p99-above-max": (
        lambda s: s.update(objectSizes={"p99": "1Gi", "max": "1Mi"}),
        ("spec.objectSizes.p99", "max"),
    ),
    "overlapping-source-and-destination": (
        lambda s: s["destination"].update(bucket="src-bucket", prefix="a/"),
        ("spec.destination.prefix", "overlap"),
    ),
    "overlap-despite-trailing-slash": (
        lambda s: s.update(
            source={"bucket": "same", "endpoint": "https://s3.example", "prefix": "x/"},
            destination={"bucket": "same", "endpoint": "https://s3.example/", "prefix": "x/y/"},
        ),
        ("spec.destination.prefix", "overlap"),
    ),
    "target-with-both": (
        lambda s: s.update(target={"objectsPerSecond": 100, "deadline": "2030-01-01T00:00:00Z"}),
        ("spec.target", "objectsPerSecond", "deadline"),
    ),
    "target-with-neither": (lambda s: s.update(target={}), ("spec.target",)),
    "manifest-bucket-without-key": (
        lambda s: s["source"].update(manifest={"format": "csv", "bucket": "lists"}),
        ("spec.source.manifest", "key"),
    ),
    "manifest-of-unknown-format": (
        lambda s: s["source"].update(manifest={"format": "xml", "bucket": "lists", "key": "k"}),
        ("spec.source.manifest.format",),
    ),
    "kms-key-with-aes256": (
        lambda s: s["destination"].update(serverSideEncryption={"type": "AES256", "kmsKeyId": "key"}),
        ("spec.destination.serverSideEncryption.kmsKeyId", "aws:kms"),
    ),
    "sse-customer-key-with-kms": (
        lambda s: s["destination"].update(
            sseCustomerKey={"name": "keys", "key": "k"}, serverSideEncryption={"type": "aws:kms"}
        ),
        ("spec.destination.sseCustomerKey", "one encryption"),
    ),
    "sse-customer-key-without-key": (
        lambda s: s["source"].update(sseCustomerKey={"name": "keys"}),
        ("spec.source.sseCustomerKey.key", "Required value"),
    ),
    "sse-customer-key-with-a-bad-data-key": (
        lambda s: s["source"].update(sseCustomerKey={"name": "keys", "key": "a/b"}),
        ("spec.source.sseCustomerKey.key",),
    ),
    "public-acl": (
        lambda s: s["destination"].update(acl="public-read"),
        ("spec.destination.acl", "Unsupported value"),
    ),
    "acl-on-a-directory-bucket": (
        lambda s: s["destination"].update(acl="private", storageClass="EXPRESS_ONEZONE"),
        ("spec.destination.acl", "directory buckets have no ACLs"),
    ),
    "object-lock-on-a-directory-bucket": (
        lambda s: (
            s["destination"].update(storageClass="EXPRESS_ONEZONE"),
            s.update(preserve={"objectLock": True}),
        ),
        ("spec.preserve.objectLock", "directory buckets have no Object Lock"),
    ),
    "bad-quantity-string": (
        lambda s: s.update(objectSizes={"median": "100KB"}),
        ("spec.objectSizes.median",),
    ),
    "bad-memory": (lambda s: s.update(resources={"memory": "lots"}), ("spec.resources.memory",)),
    "parallelism-0": (lambda s: s.update(parallelism=0), ("spec.parallelism",)),
    "bad-secret-name": (
        lambda s: s["source"].update(credentialsSecret="Not_A_Name"),
        ("spec.source.credentialsSecret",),
    ),
    # What the operator could not run: botocore refuses these regions and hosts, and the plan could not
    # hold so many patterns.
    "region-with-underscores": (
        lambda s: s["source"].update(region="eu_west_1"),
        ("spec.source.region",),
    ),
    "region-of-digits": (lambda s: s["destination"].update(region="123"), ("spec.destination.region",)),
    "endpoint-host-with-underscore": (
        lambda s: s["source"].update(endpoint="http://my_minio:9000"),
        ("spec.source.endpoint",),
    ),
    "endpoint-with-credentials": (
        lambda s: s["destination"].update(endpoint="https://user:pass@s3.example.com"),
        ("spec.destination.endpoint",),
    ),
    "endpoint-port-out-of-range": (
        lambda s: s["source"].update(endpoint="https://s3.example.com:65536"),
        ("spec.source.endpoint",),
    ),
    "endpoint-host-over-255": (
        lambda s: s["source"].update(endpoint="https://" + "a." * 127 + "bc"),
        ("spec.source.endpoint", "longer than 255"),
    ),
    # spec.mode sync: deletes only with a limit, never from a manifest's snapshot.
    "deletes-with-mode-copy": (
        lambda s: s.update(mode="copy", deletes={"max": 10}),
        ("spec.deletes", "mode is copy"),
    ),
    "deletes-without-a-mode": (lambda s: s.update(deletes={"max": 10}), ("spec.deletes", "mode is copy")),
    "sync-without-a-delete-limit": (lambda s: s.update(mode="sync"), ("spec.deletes", "deletes.max")),
    "sync-from-a-manifest": (
        lambda s: (
            s.update(mode="sync", deletes={"max": 10})
            or s["source"].update(manifest={"format": "csv", "bucket": "lists", "key": "k"})
        ),
        ("spec.mode", "manifest"),
    ),
    "delete-limit-over-100-percent": (
        lambda s: s.update(mode="sync", deletes={"max": "101%"}),
        ("spec.deletes.max",),
    ),
    "delete-limit-negative": (lambda s: s.update(mode="sync", deletes={"max": -1}), ("spec.deletes.max",)),
    "unknown-mode": (lambda s: s.update(mode="mirror"), ("spec.mode", "Unsupported value")),
    # spec.versions all: histories compared version by version, listed (never from a manifest), whole.
    "unknown-versions": (lambda s: s.update(versions="latest"), ("spec.versions", "Unsupported value")),
    "every-version-overwritten-always": (
        lambda s: s.update(versions="all", overwrite="always"),
        ("spec.overwrite", "overwrite ifDifferent"),
    ),
    "every-version-never-overwritten": (
        lambda s: s.update(versions="all", overwrite="never"),
        ("spec.overwrite", "overwrite ifDifferent"),
    ),
    "every-version-from-a-manifest": (
        lambda s: (
            s.update(versions="all")
            or s["source"].update(manifest={"format": "csv", "bucket": "lists", "key": "k"})
        ),
        ("spec.versions", "manifest"),
    ),
    "every-version-filtered-by-size": (
        lambda s: s.update(versions="all", filter={"maxSize": "1Mi"}),
        ("spec.filter", "filters by key only"),
    ),
    "every-version-filtered-by-date": (
        lambda s: s.update(versions="all", filter={"modifiedBefore": "2024-01-01T00:00:00Z"}),
        ("spec.filter", "filters by key only"),
    ),
    "every-version-synced": (
        lambda s: s.update(versions="all", mode="sync", deletes={"max": 10}),
        ("spec.versions", "mode sync"),
    ),
    "webhook-secret-key-with-a-slash": (
        lambda s: s.update(notify={"urlSecret": {"name": "hooks", "key": "a/b"}}),
        ("spec.notify.urlSecret.key",),
    ),
    "webhook-without-a-secret-key": (
        lambda s: s.update(notify={"urlSecret": {"name": "hooks"}}),
        ("spec.notify.urlSecret.key", "Required value"),
    ),
    "unknown-report-include": (
        lambda s: s.update(report={"bucket": "reports", "include": "everything"}),
        ("spec.report.include", "Unsupported value"),
    ),
    # spec.restore only with archived: restore.
    "restore-without-archived": (
        lambda s: s.update(restore={"days": 2}),
        ("spec.restore", "archived: restore"),
    ),
    "restore-with-archived-skip": (
        lambda s: s.update(archived="skip", restore={"tier": "Bulk"}),
        ("spec.restore", "archived: restore"),
    ),
    "unknown-archived": (lambda s: s.update(archived="thaw"), ("spec.archived", "Unsupported value")),
    "restore-days-over-a-year": (
        lambda s: s.update(archived="restore", restore={"days": 366}),
        ("spec.restore.days",),
    ),
    "restore-wait-over-a-week": (
        lambda s: s.update(archived="restore", restore={"maxWaitSeconds": 604801}),
        ("spec.restore.maxWaitSeconds",),
    ),
    "restore-unknown-tier": (
        lambda s: s.update(archived="restore", restore={"tier": "Instant"}),
        ("spec.restore.tier", "Unsupported value"),
    ),
    "filter-patterns-over-the-plan-s-room": (
        lambda s: s.update(filter={"include": ["x" * 1000] * 9, "exclude": ["y" * 1000] * 8}),
        ("spec.filter.include", str(MAX_FILTER_CHARACTERS)),
    ),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_copyjob_is_refused_naming_the_field(cluster: Cluster, crd_namespace: str, name: str) -> None:
    edit, expected = INVALID[name]
    body = base_job(f"invalid-{name}")
    edit(body["spec"])
    with pytest.raises(ValidationError):  # the model refuses it too
        parse_copyjob(copy.deepcopy(body))
    with pytest.raises(ApiException) as raised:
        create(cluster, crd_namespace, body)
    assert raised.value.status in (400, 422), raised.value
    message = json.loads(raised.value.body)["message"]
    for text in expected:
        assert text in message, f"{text!r} not in the API server's error: {message}"


def test_a_local_manifest_file_is_refused_in_the_cluster(cluster: Cluster, crd_namespace: str) -> None:
    """`ferry run` reads a local manifest file; the operator's pods have no such file, so the API server
    refuses it while the model (shared with `ferry run`) accepts it."""
    body = base_job("manifest-file")
    body["spec"]["source"]["manifest"] = {"format": "jsonl", "file": "/etc/passwd"}
    parse_copyjob(copy.deepcopy(body))
    with pytest.raises(ApiException) as raised:
        create(cluster, crd_namespace, body)
    assert raised.value.status in (400, 422), raised.value
    message = json.loads(raised.value.body)["message"]
    assert "spec.source.manifest.file" in message and "ferry run" in message


def _overlapping(source: str | None, destination: str | None) -> dict[str, Any]:
    body = base_job(f"spelling-{uuid.uuid4().hex[:8]}")
    body["spec"]["source"] = {"bucket": "one-bucket", "prefix": "data/"}
    body["spec"]["destination"] = {"bucket": "one-bucket", "prefix": "data/copy/"}
    for side, endpoint in (("source", source), ("destination", destination)):
        if endpoint is not None:
            body["spec"][side]["endpoint"] = endpoint
    return body


@pytest.mark.parametrize(
    ("source", "destination", "same"), [s[1:] for s in SPELLINGS], ids=[s[0] for s in SPELLINGS]
)  # fmt: skip
def test_overlap_is_found_however_the_endpoint_is_spelled(
    cluster: Cluster, crd_namespace: str, source: str | None, destination: str | None, same: bool
) -> None:
    """The CRD's CEL rule and the model normalize endpoints alike (tests/support/spellings.py)."""
    body = _overlapping(source, destination)
    if not same:
        parse_copyjob(copy.deepcopy(body))
        create(cluster, crd_namespace, body)
        return
    with pytest.raises(ValidationError, match="overlap"):
        parse_copyjob(copy.deepcopy(body))
    with pytest.raises(ApiException) as raised:
        create(cluster, crd_namespace, body)
    message = json.loads(raised.value.body)["message"]
    assert "spec.destination.prefix" in message and "overlap" in message, message


def test_a_name_longer_than_a_label_value_is_refused(cluster: Cluster, crd_namespace: str) -> None:
    """The name is the ferry.dev/copyjob label's value on the Job and pods: 63 characters at most."""
    create(cluster, crd_namespace, base_job("n" * 63))
    body = base_job("n" * 64)
    with pytest.raises(ValidationError, match="at most 63"):
        parse_copyjob(copy.deepcopy(body))
    with pytest.raises(ApiException) as raised:
        create(cluster, crd_namespace, body)
    message = json.loads(raised.value.body)["message"]
    assert "metadata.name" in message and "at most 63 characters" in message, message


def test_unknown_field_is_pruned_without_strict_validation(cluster: Cluster, crd_namespace: str) -> None:
    """Why clients must ask for Strict: the default (Warn) accepts the object and drops the field."""
    body = base_job("pruned")
    body["spec"]["overwirte"] = "never"
    api = client.CustomObjectsApi(cluster.api)
    created = api.create_namespaced_custom_object(GROUP, VERSION, crd_namespace, PLURAL, body)
    assert "overwirte" not in created["spec"]


# -- status ----------------------------------------------------------------------------------------


def create_with_status(cluster: Cluster, namespace: str, path: Path, name: str) -> tuple[dict[str, Any], Any]:
    """Create the CopyJob of a testdata file, then write its status as the operator would."""
    sample = yaml.safe_load(path.read_text())
    body = {"apiVersion": sample["apiVersion"], "kind": sample["kind"], "metadata": {"name": name}}
    created = create(cluster, namespace, dict(body, spec=sample["spec"]))
    generation = created["metadata"]["generation"]
    status = dict(sample["status"], observedGeneration=generation)
    for condition in status.get("conditions", []):
        condition["observedGeneration"] = generation
    api = client.CustomObjectsApi(cluster.api)
    patched = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}, field_validation="Strict"
    )
    return status, patched


@pytest.mark.parametrize("path", STATUS_SAMPLES, ids=lambda p: p.stem)
def test_status_round_trips_unpruned(cluster: Cluster, crd_namespace: str, path: Path) -> None:
    status, patched = create_with_status(cluster, crd_namespace, path, f"status-{path.stem}")
    assert patched["status"] == status


def test_status_rejects_a_bad_condition(cluster: Cluster, crd_namespace: str) -> None:
    created = create(cluster, crd_namespace, base_job("bad-condition"))
    condition = {
        "type": "Succeeded",
        "status": "Maybe",
        "reason": "X",
        "message": "",
        "lastTransitionTime": "now",
    }
    api = client.CustomObjectsApi(cluster.api)
    with pytest.raises(ApiException) as raised:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            crd_namespace,
            PLURAL,
            created["metadata"]["name"],
            {"status": {"conditions": [condition]}},
        )
    message = json.loads(raised.value.body)["message"]
    assert "status.conditions[0].status" in message and "status.conditions[0].lastTransitionTime" in message


def test_printer_columns(cluster: Cluster, crd_namespace: str) -> None:
    create_with_status(cluster, crd_namespace, STATUS_SAMPLES[0], "columns")
    proc = kubectl(cluster, "get", "cpj", "-n", crd_namespace, "columns", "-o", "wide")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "PHASE",
        "REASON",
        "PROGRESS",
        "COPIED",
        "TOTAL",
        "OBJ/S",
        "ETA",
        "AGE",
        "SOURCE",
        "DESTINATION",
        "MESSAGE",
    ]
    assert row.split()[:8] == ["columns", "Running", "Copying", "40", "1204551", "3000000", "812.5", "36m48s"]


def test_a_stalled_copyjob_shows_its_reason_by_default(cluster: Cluster, crd_namespace: str) -> None:
    """The phase of a stalled CopyJob stays Pending (or Running); the default columns still say why."""
    created = create(cluster, crd_namespace, base_job("stalled"))
    generation = created["metadata"]["generation"]
    message = "spec.source at https://s3.example.com is unreachable; check source.endpoint"
    status = _stalled_status({}, "EndpointUnreachable", message, generation)  # what the operator writes
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object_status(
        GROUP, VERSION, crd_namespace, PLURAL, "stalled", {"status": status}, field_validation="Strict"
    )
    proc = kubectl(cluster, "get", "cpj", "-n", crd_namespace, "stalled")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "PHASE", "REASON"]
    assert row.split()[:3] == ["stalled", "Pending", "EndpointUnreachable"]
    proc = kubectl(
        cluster, "wait", "cpj/stalled", "-n", crd_namespace, "--for=condition=Stalled", "--timeout=10s"
    )
    assert proc.returncode == 0, proc.stderr
    # The README's loop for "wait until it ends, whichever way": it returns for a stalled job too.
    kube = f"{cluster.controlplane.bins.path('kubectl')} --kubeconfig {cluster.kubeconfig} -n {crd_namespace}"
    loop = (
        f"until {kube} get cpj stalled -o jsonpath='{{range .status.conditions[*]}}{{.type}}={{.status}}{{\"\\n\"}}{{end}}'"
        " | grep -qxE '(Succeeded|Failed|Stalled)=True'; do sleep 1; done"
    )
    subprocess.run(["bash", "-c", loop], check=True, timeout=20)


def test_kubectl_explain_prints_the_model_s_descriptions(cluster: Cluster, crd_namespace: str) -> None:
    proc = kubectl(cluster, "explain", "copyjob.spec.ttlSecondsAfterFinished")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "the CopyJob and its status are kept" in text
    proc = kubectl(cluster, "explain", "cpj.spec.rateLimit.requestsPerSecond")
    assert proc.returncode == 0, proc.stderr
    assert "<no description>" not in proc.stdout and "unlimited" in proc.stdout


# -- the chart -------------------------------------------------------------------------------------


def test_chart_manifests_pass_server_side_dry_run(cluster: Cluster, crd_namespace: str) -> None:
    helm = Path(os.environ.get("FERRY_TESTBIN") or cluster.controlplane.bins.bin_dir) / "helm"
    if not helm.is_file():
        pytest.fail(f"helm not found at {helm}: run `make testbin`", pytrace=False)
    release_ns, team_a, team_b = (cluster.new_namespace(p) for p in ("ferry", "team-a", "team-b"))
    # A release name of its own: cluster-scoped objects (the ClusterRole `ferry`) of an operator other
    # tests installed would otherwise exist already, and kubectl warns that they lack its
    # last-applied annotation. This test is about a fresh install, in any order of tests.
    release = f"dry-{uuid.uuid4().hex[:8]}"
    rendered = []
    for extra in (
        [],
        ["--values", str(FULL_VALUES), "--set-json", f"watchNamespaces={json.dumps([team_a, team_b])}"],
    ):
        proc = subprocess.run(
            [str(helm), "template", release, str(CHART), "--namespace", release_ns, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        rendered.extend(d for d in yaml.safe_load_all(proc.stdout) if d)
    skipped = {"ServiceMonitor", "PodMonitor", "CustomResourceDefinition"}  # no Prometheus Operator CRDs here
    documents = [d for d in rendered if d["kind"] not in skipped]
    assert {d["kind"] for d in rendered} - {d["kind"] for d in documents} == {"ServiceMonitor", "PodMonitor"}
    # One document at a time: the two renderings share names, and apply refuses duplicates in one input.
    for document in documents:
        proc = kubectl(
            cluster,
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            "-",
            stdin=yaml.safe_dump(document),
        )
        assert proc.returncode == 0, f"{document['kind']} {document['metadata']['name']}: {proc.stderr}"
        assert proc.stderr == "", f"{document['kind']} {document['metadata']['name']}: {proc.stderr}"
