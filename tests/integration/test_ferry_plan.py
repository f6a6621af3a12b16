"""`ferry plan` as a user runs it: the installed entry point, a CopyJob file, a real S3 server (versitygw)
over HTTP on 127.0.0.1. It plans without copying: objects and bytes with their histogram, what the
destination already holds, shards, pods, the predicted duration and the cost estimate, as text or as one
JSON document; a price table overrides the default; bad input exits 2 naming the field; a listing that
keeps failing exits 4."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir
from testbed.s3server import S3Endpoint, free_port
from testbed.versitygw import VersityGW

pytestmark = pytest.mark.timeout(300)

FERRY = str(Path(sys.executable).with_name("ferry"))
OBJECTS, SIZE = 120, 3000
MiB = 2**20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    try:
        binaries = TestBinaries(find_bin_dir()).require("versitygw")
    except MissingBinariesError as exc:
        pytest.fail(f"testbed binaries missing: {exc}", pytrace=False)
    with VersityGW(binaries, tmp_path_factory.mktemp("versitygw")) as gw:
        yield gw.endpoint


@pytest.fixture(scope="module")
def buckets(gateway: S3Endpoint) -> tuple[str, str]:
    """A source of OBJECTS small objects under three prefixes and one of 20 MiB; a destination that
    already holds every other small one."""
    client = gateway.client()
    client.create_bucket(Bucket="plan-src")
    client.create_bucket(Bucket="plan-dst")
    for i in range(OBJECTS):
        key = f"p{i % 3}/obj-{i:04d}"
        client.put_object(Bucket="plan-src", Key=key, Body=b"x" * SIZE)
        if i % 2 == 0:
            client.copy_object(Bucket="plan-dst", Key=key, CopySource={"Bucket": "plan-src", "Key": key})
    client.put_object(Bucket="plan-src", Key="zz-large", Body=b"y" * (20 * MiB))
    return "plan-src", "plan-dst"


def write_job(
    path: Path,
    endpoint: S3Endpoint,
    src: str,
    dst: str,
    *,
    source_endpoint: str | None = None,
    destination_secret: bool = True,
    extra: str = "",
    manifest: str | None = None,
) -> Path:
    """A CopyJob file with its Secrets; ``manifest`` is spec.source.manifest in YAML flow style."""
    named = f", manifest: {manifest}" if manifest else ""
    text = f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: plan-test}}
spec:
  source: {{bucket: {src}, endpoint: "{source_endpoint or endpoint.url}", credentialsSecret: src-creds{named}}}
  destination: {{bucket: {dst}, endpoint: "{endpoint.url}", credentialsSecret: dst-creds}}
{extra}"""
    for name in ("src-creds", "dst-creds") if destination_secret else ("src-creds",):
        text += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {{AWS_ACCESS_KEY_ID: "{endpoint.access_key}", AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"}}
"""
    path.write_text(text)
    return path


def ferry_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FERRY, "plan", *args], capture_output=True, text=True, timeout=180, check=False)


def test_plan_prints_what_a_copy_would_find_skip_take_and_cost(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.yaml", gateway, *buckets)
    result = ferry_plan("-f", str(job), "--progress", "plain", "--listers", "8")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"plan-test: {OBJECTS + 1} objects" in out
    assert "<= 4.0 KiB" in out and "<= 64.0 MiB" in out  # the histogram
    assert f"already at the destination (skipped): {OBJECTS // 2} objects" in out
    assert f"to copy: {OBJECTS // 2 + 1} objects" in out
    assert "shards: " in out and "worker pods: " in out and "FERRY_MEMORY_LIMIT" in out
    assert "predicted duration: " in out and "an assumption" in out
    assert "estimated cost: " in out and "USD (streamed)" in out and "AWS S3 Standard" in out
    assert "listing: " in result.stderr and "listers" in result.stderr  # progress on stderr
    assert gateway.secret_key not in out + result.stderr
    # Nothing was copied.
    listed = gateway.client().list_objects_v2(Bucket=buckets[1])
    assert listed["KeyCount"] == OBJECTS // 2


def test_plan_json_is_one_document_with_the_plan_the_operator_would_show(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.yaml", gateway, *buckets)
    result = ferry_plan("-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["name"], document["state"], document["exitCode"]) == ("plan-test", "planned", 0)
    plan = document["plan"]
    assert plan["objects"] == OBJECTS + 1 and plan["bytes"] == OBJECTS * SIZE + 20 * MiB
    assert plan["largestObject"] == 20 * MiB and plan["predictedSeconds"] >= 1
    assert document["existing"] == {"objects": OBJECTS // 2, "bytes": OBJECTS // 2 * SIZE}
    cost = plan["cost"]
    by_kind = {r["kind"]: r["count"] for r in cost["requests"]}
    # 61 objects to copy: single PUTs or multipart uploads, each size bucket losing the same share to
    # the skipped ones (the estimate's stated assumption; each kind rounded up, so at most one over).
    assert OBJECTS // 2 + 1 <= by_kind["PUT"] + by_kind["CreateMultipartUpload"] <= OBJECTS // 2 + 2
    assert 1 <= by_kind["UploadPart"] <= 3  # the 20 MiB object: 3 parts of 8 MiB, times its share
    assert by_kind["LIST"] >= document["listing"]["requests"] > 0
    assert cost["egress"]["bytes"] == OBJECTS // 2 * SIZE + 20 * MiB and cost["route"] == "streamed"
    assert cost["total"] > 0 and cost["prices"]["date"] == "2026-11-29"
    ranges = document["shardRanges"]
    assert len(ranges) == plan["shards"] and ranges[0]["startAfter"] is None and ranges[-1]["end"] is None
    assert all(a["end"] == b["startAfter"] for a, b in itertools.pairwise(ranges))
    assert sum(r["objects"] for r in ranges) == OBJECTS + 1


def test_a_price_file_overrides_the_default_prices(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "name: Internal rates\ndate: 2026-10-01\ncurrency: EUR\nputCopyPostListPer1000: 1\n"
        "getAndOtherPer1000: 0\ninternetEgressPerGB: 0\n"
    )
    job = write_job(tmp_path / "job.yaml", gateway, *buckets)
    result = ferry_plan("-f", str(job), "--prices", str(prices), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    cost = json.loads(result.stdout)["plan"]["cost"]
    assert cost["currency"] == "EUR" and cost["prices"] == {"name": "Internal rates", "date": "2026-10-01"}
    assert cost["egress"]["cost"] == 0
    first_tier = sum(
        r["count"] for r in cost["requests"] if r["kind"] not in ("GET", "HEAD", "GetObjectTagging")
    )
    assert cost["total"] == pytest.approx(first_tier / 1000)


def test_a_bad_price_file_exits_2_naming_the_field(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("name: x\ndate: 2026-10-01\nputCopyPostListPer1000: -5\ngetAndOtherPer1000: 0\n")
    job = write_job(tmp_path / "job.yaml", gateway, *buckets)
    result = ferry_plan("-f", str(job), "--prices", str(prices), "--output", "json")
    assert result.returncode == 2
    assert "putCopyPostListPer1000" in result.stderr and "internetEgressPerGB" in result.stderr
    document = json.loads(result.stdout)
    assert (document["state"], document["exitCode"]) == ("invalid", 2)
    assert document["field"] == "prices.putCopyPostListPer1000"


def test_an_unreachable_endpoint_exits_2(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    job = write_job(
        tmp_path / "job.yaml", gateway, *buckets, source_endpoint=f"http://127.0.0.1:{free_port()}"
    )
    result = ferry_plan("-f", str(job), "--output", "json")
    assert result.returncode == 2
    assert "EndpointUnreachable" in result.stderr and "spec.source.endpoint" in result.stderr
    document = json.loads(result.stdout)
    assert (document["reason"], document["field"]) == ("EndpointUnreachable", "spec.source.endpoint")


def test_without_destination_credentials_it_plans_without_comparing(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.yaml", gateway, *buckets, destination_secret=False)
    result = ferry_plan("-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "dst-creds" in result.stderr
    document = json.loads(result.stdout)
    assert document["existing"] is None and document["plan"]["cost"]["copiedObjects"] == OBJECTS + 1


def test_a_listing_that_keeps_failing_exits_4(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    # The location check (a one-key listing) passes; every listing request of the plan itself fails.
    fault = FaultPlan(
        error500_rate=1.0,
        methods=frozenset({"GET"}),
        path_regex=r"(delimiter|start-after|continuation-token)=",
    )
    with FaultProxy(gateway.url, fault) as proxy:
        job = write_job(tmp_path / "job.yaml", gateway, *buckets, source_endpoint=proxy.url)
        result = ferry_plan("-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 4, result.stderr
    document = json.loads(result.stdout)
    assert (document["state"], document["exitCode"], document["reason"]) == ("error", 4, "ListingFailed")


def test_plan_reads_the_manifest_instead_of_listing_the_source(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    # 30 of the source's objects, named out of key order, in a local JSON-lines manifest.
    keys = [f"p{i % 3}/obj-{i:04d}" for i in range(OBJECTS - 1, OBJECTS - 61, -2)]
    manifest = tmp_path / "keys.jsonl"
    manifest.write_text("".join(json.dumps({"key": key, "size": SIZE}) + "\n" for key in keys))
    job = write_job(
        tmp_path / "job.yaml", gateway, *buckets, manifest=f'{{format: jsonl, file: "{manifest}"}}'
    )
    result = ferry_plan("-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["plan"]["objects"], document["plan"]["bytes"]) == (30, 30 * SIZE)
    # The destination is compared by the workers, range by range, not by the plan of a manifest.
    assert document["existing"] is None
    assert sum(r["objects"] for r in document["shardRanges"]) == 30


def test_plan_of_a_corrupt_manifest_exits_2_naming_the_file_and_line(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "keys.csv"
    manifest.write_text('key,size\n"p0/obj-0000",3000\n"p0/obj-0003",three thousand\n')
    job = write_job(tmp_path / "job.yaml", gateway, *buckets, manifest=f'{{format: csv, file: "{manifest}"}}')
    result = ferry_plan("-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert (document["state"], document["reason"]) == ("invalid", "ManifestInvalid")
    assert "keys.csv" in document["error"] and "line 3" in document["error"]


def test_a_listing_divided_over_processes_plans_what_one_process_plans(
    gateway: S3Endpoint, buckets: tuple[str, str], tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.yaml", gateway, *buckets)
    documents = {}
    for processes in ("1", "3"):
        result = ferry_plan(
            "-f", str(job), "--output", "json", "--progress", "plain", "--processes", processes
        )
        assert result.returncode == 0, result.stderr
        documents[processes] = json.loads(result.stdout)
    one, three = documents["1"], documents["3"]
    for field in ("objects", "bytes", "largestObject", "histogram"):
        assert three["plan"][field] == one["plan"][field], field
    assert three["existing"] == one["existing"] == {"objects": OBJECTS // 2, "bytes": OBJECTS // 2 * SIZE}
    ranges = three["shardRanges"]
    assert ranges[0]["startAfter"] is None and ranges[-1]["end"] is None
    assert all(a["end"] == b["startAfter"] for a, b in itertools.pairwise(ranges))
    assert sum(r["objects"] for r in ranges) == OBJECTS + 1
    # Each process listed (and was counted) once: requests add up over the parts.
    assert three["listing"]["requests"] >= one["listing"]["requests"] > 0
