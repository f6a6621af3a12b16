"""A copy whose transfers all fail the same job-wide way stops early; one with scattered failures runs to its
end. The S3 server is a real process (moto) behind the fault-injecting proxy; `ferry run` runs as a user
runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ferry.worker.systematic import ACCESS_DENIED_FIRST_FAILURES, ErrorClass, Side, SystematicFailure
from support.engine import run_engine, spec
from testbed.faultproxy import FaultPlan, FaultProxy

FERRY = [str(Path(sys.executable).with_name("ferry"))]
CONCURRENCY = 8
#: Every write refused, as by a destination key without s3:PutObject.
NO_WRITES = FaultPlan(
    refuse_rate=1.0, refuse_status=403, refuse_code="AccessDenied", methods=frozenset({"PUT"})
)


def fill(client: Any, bucket: str, count: int) -> set[str]:
    keys = {f"obj/{i:04d}" for i in range(count)}
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode() * 10)
    return keys


def keys_in(client: Any, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_a_destination_refusing_every_write_stops_after_a_bounded_number_of_failures(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(s3.client, src, 600)
    with FaultProxy(s3.endpoint.url, NO_WRITES) as destination:
        job = spec({"bucket": src, "endpoint": s3.endpoint.url}, {"bucket": dst, "endpoint": destination.url})
        run = run_engine(job, s3.endpoint, concurrency=CONCURRENCY)
        puts = destination.stats().by_method.get("PUT", 0)
    summary, c = run.summary, run.summary.counts
    assert summary.systematic == SystematicFailure(
        ErrorClass.ACCESS_DENIED, Side.DESTINATION, "AccessDenied", ACCESS_DENIED_FIRST_FAILURES
    )
    assert not summary.complete and summary.error is None
    # No new transfer after the verdict: only those already in flight end (and fail) after it.
    assert ACCESS_DENIED_FIRST_FAILURES <= c.failed <= ACCESS_DENIED_FIRST_FAILURES + CONCURRENCY
    assert puts == c.failed, (puts, c.failed)
    assert c.copied == 0 and keys_in(s3.client, dst) == set()
    assert c.discovered == c.copied + c.skipped + c.failed + c.pending
    with open(summary.report_path) as report:
        failed = [json.loads(line) for line in report]
    assert len(failed) == c.failed and {f["code"] for f in failed} == {"AccessDenied"}


def test_scattered_refusals_among_successes_never_stop_the_copy(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    keys = fill(s3.client, src, 400)
    # One object in five refused, the same code as above: with successes in between it is no pattern.
    plan = FaultPlan(
        refuse_rate=1.0,
        refuse_status=403,
        refuse_code="AccessDenied",
        methods=frozenset({"PUT"}),
        path_regex=r"obj/\d{3}[05]$",
    )
    refused = {k for k in keys if k[-1] in "05"}
    with FaultProxy(s3.endpoint.url, plan) as destination:
        job = spec({"bucket": src, "endpoint": s3.endpoint.url}, {"bucket": dst, "endpoint": destination.url})
        run = run_engine(job, s3.endpoint, concurrency=CONCURRENCY)
    c = run.summary.counts
    assert run.summary.systematic is None
    assert (c.discovered, c.copied, c.failed, c.pending) == (400, 320, 80, 0)
    assert run.failed_keys() <= refused and keys_in(s3.client, dst) == keys - refused


def test_ferry_run_stops_early_and_exits_2_with_the_side_the_code_and_the_fix(
    s3: Any, tmp_path: Path
) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(s3.client, src, 300)
    endpoint = s3.endpoint
    with FaultProxy(endpoint.url, NO_WRITES) as destination:
        job = tmp_path / "job.yaml"
        job.write_text(
            f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: denied}}
spec:
  source: {{bucket: {src}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
  destination: {{bucket: {dst}, endpoint: "{destination.url}", credentialsSecret: creds}}
  concurrency: {{max: {CONCURRENCY}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{AWS_ACCESS_KEY_ID: "{endpoint.access_key}", AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"}}
"""
        )
        result = subprocess.run(
            [*FERRY, "run", "-f", str(job), "--output", "json", "--progress", "none"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert (document["state"], document["exitCode"]) == ("systematicFailure", 2)
    stopped = document["systematicFailure"]
    assert (stopped["class"], stopped["side"], stopped["code"]) == (
        "accessDenied",
        "destination",
        "AccessDenied",
    )
    assert stopped["field"] == "spec.destination.credentialsSecret"
    assert document["objects"]["failed"] <= ACCESS_DENIED_FIRST_FAILURES + CONCURRENCY
    assert document["message"].startswith("STOPPED: the first 50 transfers failed at the destination")
    assert "grant s3:PutObject" in result.stderr and "[SystematicFailure]" in result.stderr
