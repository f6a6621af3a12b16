"""`ferry planner` as the process a planner pod runs (worker/planpod.py), against a real S3 server over
HTTP: it checks the locations, lists the source within the platform's limits, and serves a plan the
operator's own checks accept (operator/planresult.py); a CopyJob it cannot plan ends with exit 2 and a
failure document in its termination message, in Ferry's words."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferry.operator.planning import group_pieces
from ferry.operator.planresult import PlannerFailure, parse_plan_result, parse_planner_failure
from testbed.s3server import free_port

SECONDS = 60.0


def fill(s3: Any, bucket: str, count: int, size: int = 1500, prefix: str = "data/") -> None:
    for i in range(count):
        s3.client.put_object(Bucket=bucket, Key=f"{prefix}{i:05d}", Body=b"x" * (size + i))


@contextmanager
def planner(tmp_path: Path, spec: dict[str, Any], s3: Any, **extra: str) -> Iterator[dict[str, Any]]:
    """Run `ferry planner` configured as the operator renders it; yields its port, process and files."""
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps(spec))
    port = free_port()
    termination = tmp_path / "termination-log"
    env = {
        "PATH": os.environ["PATH"],
        "FERRY_PLAN_DIR": str(folder),
        "FERRY_STATUS_HOST": "127.0.0.1",
        "FERRY_STATUS_PORT": str(port),
        "FERRY_TERMINATION_MESSAGE_PATH": str(termination),
        "FERRY_PLAN_HOLD_SECONDS": "30",
        "FERRY_SOURCE_ACCESS_KEY_ID": s3.endpoint.access_key,
        "FERRY_SOURCE_SECRET_ACCESS_KEY": s3.endpoint.secret_key,
        "FERRY_DESTINATION_ACCESS_KEY_ID": s3.endpoint.access_key,
        "FERRY_DESTINATION_SECRET_ACCESS_KEY": s3.endpoint.secret_key,
        "FERRY_ALLOWED_ENDPOINTS": "127.0.0.0/8",
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ferry.cli", "planner"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield {"port": port, "process": process, "termination": termination}
    finally:
        process.terminate()
        process.wait(10)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def get(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def wait_plan(run: dict[str, Any]) -> str:
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        text = get(run["port"], "/plan")
        if text is not None:
            return text
        assert run["process"].poll() is None, run["termination"].read_text()
        time.sleep(0.1)
    raise AssertionError("the planner served no plan in time")


def failed(run: dict[str, Any], reason: str) -> PlannerFailure:
    """The failure a planner that could not plan ends with: exit 2 and its document, with ``reason``."""
    assert run["process"].wait(SECONDS) == 2
    failure = parse_planner_failure(run["termination"].read_text())
    assert failure is not None and failure.reason == reason, failure
    return failure


def spec(s3: Any, source: str, destination: str, **extra: Any) -> dict[str, Any]:
    url = s3.endpoint.url
    return {
        "source": {"bucket": source, "prefix": "data/", "endpoint": url, "credentialsSecret": "src"},
        "destination": {"bucket": destination, "endpoint": url, "credentialsSecret": "dst"},
        **extra,
    }


def test_the_planner_serves_a_plan_the_operator_accepts_and_stops_when_told(tmp_path: Path, s3: Any) -> None:
    source, destination = s3.make_bucket("plan-src"), s3.make_bucket("plan-dst")
    fill(s3, source, 250)
    fill(s3, source, 5, prefix="other/")  # outside the prefix: not planned
    with planner(tmp_path, spec(s3, source, destination, shardSize={"maxObjects": 40}), s3) as run:
        result = parse_plan_result(wait_plan(run))
        assert result.histogram.objects == 250
        assert result.histogram.bytes == sum(1500 + i for i in range(250))
        assert result.destination_checked
        # Pieces honour the shard bound, so the operator can cut shards within it.
        assert all(p.objects <= 40 for p in result.pieces)
        shards = group_pieces(list(result.pieces), 3, 40)
        assert sum(s.objects for s in shards) == 250 and all(s.objects <= 40 for s in shards)
        status = json.loads(get(run["port"], "/status") or "{}")
        assert (status["objects"], status["done"]) == (250, True)
        run["process"].terminate()  # what deleting the planner Job does
        assert run["process"].wait(10) == 0


def test_every_location_problem_is_reported_at_once_and_ends_exit_2(tmp_path: Path, s3: Any) -> None:
    body = spec(s3, "no-such-source-bucket", "no-such-destination-bucket")
    with planner(tmp_path, body, s3) as run:
        failure = failed(run, "BucketNotFound")
        assert "spec.source" in failure.message and "spec.destination" in failure.message


def test_a_dry_run_without_destination_credentials_plans_from_the_source_alone(
    tmp_path: Path, s3: Any
) -> None:
    source = s3.make_bucket("plan-src")
    fill(s3, source, 30)
    body = spec(s3, source, "no-such-destination-bucket", dryRun=True)
    del body["destination"]["credentialsSecret"]
    with planner(tmp_path, body, s3, FERRY_CHECK_DESTINATION="false") as run:
        result = parse_plan_result(wait_plan(run))
        assert result.histogram.objects == 30 and not result.destination_checked


def test_the_platform_s_object_cap_stops_the_listing(tmp_path: Path, s3: Any) -> None:
    source, destination = s3.make_bucket("plan-src"), s3.make_bucket("plan-dst")
    fill(s3, source, 120, size=10)
    with planner(tmp_path, spec(s3, source, destination), s3, FERRY_MAX_OBJECTS_PER_COPYJOB="50") as run:
        assert "50" in failed(run, "TooManyObjects").message


def test_an_endpoint_the_platform_does_not_allow_gets_no_request(tmp_path: Path, s3: Any) -> None:
    source, destination = s3.make_bucket("plan-src"), s3.make_bucket("plan-dst")
    with planner(tmp_path, spec(s3, source, destination), s3, FERRY_ALLOWED_ENDPOINTS="") as run:
        failure = failed(run, "EndpointNotAllowed")
        assert "loopback" in failure.message


def test_a_planner_plans_from_the_manifest_the_spec_names_without_listing_the_source(
    tmp_path: Path, s3: Any
) -> None:
    source, destination, lists = (
        s3.make_bucket("plan-src"),
        s3.make_bucket("plan-dst"),
        s3.make_bucket("lists"),
    )
    fill(s3, source, 60)
    # The manifest names 25 of the 60 objects, out of key order; the others are not planned.
    chosen = [f"data/{i:05d}" for i in range(59, 9, -2)]
    body = "".join(json.dumps({"key": key, "size": 1500 + int(key[-5:])}) + "\n" for key in chosen)
    s3.client.put_object(Bucket=lists, Key="keys.jsonl", Body=body.encode())
    manifest = {"format": "jsonl", "bucket": lists, "key": "keys.jsonl"}
    body_spec = spec(s3, source, destination, shardSize={"maxObjects": 10})
    body_spec["source"]["manifest"] = manifest
    with planner(tmp_path, body_spec, s3) as run:
        result = parse_plan_result(wait_plan(run))
        assert result.histogram.objects == 25
        assert result.histogram.bytes == sum(1500 + int(key[-5:]) for key in chosen)
        # Contiguous pieces in key order that hold every named key exactly once, within the shard bound.
        pieces = list(result.pieces)
        assert pieces[0].start_after is None and pieces[-1].end is None
        assert all(a.end == b.start_after for a, b in itertools.pairwise(pieces))
        assert sum(p.objects for p in pieces) == 25 and all(p.objects <= 10 for p in pieces)
        run["process"].terminate()
        assert run["process"].wait(10) == 0


def test_a_corrupt_manifest_ends_exit_2_naming_the_file_and_line(tmp_path: Path, s3: Any) -> None:
    source, destination, lists = (
        s3.make_bucket("plan-src"),
        s3.make_bucket("plan-dst"),
        s3.make_bucket("lists"),
    )
    fill(s3, source, 5)
    lines = [json.dumps({"key": f"data/{i:05d}", "size": 10}) for i in range(5)]
    lines[3] = '{"key": "data/00003", "size": -4}'
    s3.client.put_object(Bucket=lists, Key="keys.jsonl", Body=("\n".join(lines) + "\n").encode())
    body_spec = spec(s3, source, destination)
    body_spec["source"]["manifest"] = {"format": "jsonl", "bucket": lists, "key": "keys.jsonl"}
    with planner(tmp_path, body_spec, s3) as run:
        failure = failed(run, "ManifestInvalid")
        assert "keys.jsonl" in failure.message and "line 4" in failure.message


def test_a_manifest_that_is_not_there_ends_exit_2_naming_where_it_was_looked_for(
    tmp_path: Path, s3: Any
) -> None:
    source, destination, lists = (
        s3.make_bucket("plan-src"),
        s3.make_bucket("plan-dst"),
        s3.make_bucket("lists"),
    )
    body_spec = spec(s3, source, destination)
    body_spec["source"]["manifest"] = {"format": "csv", "bucket": lists, "key": "missing.csv"}
    with planner(tmp_path, body_spec, s3) as run:
        failure = failed(run, "ManifestInvalid")
        assert "missing.csv" in failure.message and "manifest.key" in failure.message
