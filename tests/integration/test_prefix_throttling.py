"""Per-prefix throttle handling end to end: `ferry run` (a process) copies two prefixes to a destination
behind the fault proxy, which allows only N requests/s under one destination prefix and answers 503
SlowDown above (a provider's partition limit). The throttled prefix slows to about N and still completes;
the other prefix keeps its rate, against the same run without throttling; every object arrives intact.

Objects of the throttled prefix sort first: the run meets its throttles before it reaches the other
prefix, so a pod that backed off as a whole would copy the other prefix slower too.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(90)

FERRY = [str(Path(sys.executable).with_name("ferry"))]
HOT, COLD = "a-hot/", "b-cold/"
HOT_OBJECTS, COLD_OBJECTS = 150, 600
#: The destination's limit for the hot prefix, requests/s (each small object is one PUT there).
CAP = 50.0
POLL_SECONDS = 0.05
#: Latency of every destination request: the pace of a transfer is its concurrency over the round trip
#: (long enough that the pace, not the CPU of a shared machine, bounds the rate),
#: as with a remote destination, so a pod that backed off as a whole would visibly copy slower.
LATENCY_MS = 150.0


def fill(client: Any, bucket: str) -> dict[str, str]:
    digests = {}
    for prefix, count in ((HOT, HOT_OBJECTS), (COLD, COLD_OBJECTS)):
        for index in range(count):
            body = f"{prefix}{index}".encode() * 20
            key = f"{prefix}{index:05d}"
            client.put_object(Bucket=bucket, Key=key, Body=body)
            digests[key] = hashlib.md5(body).hexdigest()
    return digests


def write_job(path: Path, endpoint: S3Endpoint, src: str, dst: str, destination_url: str) -> Path:
    text = f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: prefix-throttling}}
spec:
  source: {{bucket: {src}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
  destination: {{bucket: {dst}, endpoint: "{destination_url}", credentialsSecret: creds}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
"""
    path.write_text(text)
    return path


class Arrivals:
    """When each destination key first appeared, seen by listing the destination directly (not through
    the proxy) every POLL_SECONDS until stopped; bounded by the run's timeout."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client, self.bucket = client, bucket
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        deadline = time.monotonic() + 80
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    self.first_seen.setdefault(obj["Key"], now)
            self._stop.wait(POLL_SECONDS)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def rate(self, prefix: str) -> float:
        """Objects/s of ``prefix``: its objects over the time from its first arrival to its last."""
        times = sorted(t for key, t in self.first_seen.items() if key.startswith(prefix))
        return (len(times) - 1) / max(times[-1] - times[0], POLL_SECONDS)


def copy(
    endpoint: S3Endpoint, src: str, dst: str, plan: FaultPlan, tmp_path: Path
) -> tuple[dict[str, Any], Arrivals]:
    client = endpoint.client()
    client.create_bucket(Bucket=dst)
    with FaultProxy(endpoint.url, plan, seed=1) as proxy:
        job = write_job(tmp_path / f"{dst}.yaml", endpoint, src, dst, proxy.url)
        with Arrivals(client, dst) as arrivals:
            result = subprocess.run(
                [*FERRY, "run", "-f", str(job), "--output", "json", "--progress", "none"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            # The last objects are seen by the next poll.
            time.sleep(3 * POLL_SECONDS)
        stats = proxy.stats()
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    summary["capped"] = stats.capped
    return summary, arrivals


def digests_of(client: Any, bucket: str) -> dict[str, str]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"]] = hashlib.md5(body).hexdigest()
    return found


def test_a_throttled_destination_prefix_slows_alone_while_the_other_keeps_its_rate(
    versitygw_or_moto: S3Endpoint, tmp_path: Path
) -> None:
    endpoint = versitygw_or_moto
    client = endpoint.client()
    stamp = time.monotonic_ns()
    src = f"src-{stamp}"
    client.create_bucket(Bucket=src)
    digests = fill(client, src)

    free_summary, free = copy(endpoint, src, f"free-{stamp}", FaultPlan(latency_ms=LATENCY_MS), tmp_path)
    capped_dst = f"capped-{stamp}"
    plan = FaultPlan(
        latency_ms=LATENCY_MS, capped_path_regex=f"/{capped_dst}/{HOT}", capped_path_requests_per_second=CAP
    )
    capped_summary, capped = copy(endpoint, src, capped_dst, plan, tmp_path)

    figures = {
        "free": {"hot": free.rate(HOT), "cold": free.rate(COLD), "seconds": free_summary["durationSeconds"]},
        "capped": {
            "hot": capped.rate(HOT),
            "cold": capped.rate(COLD),
            "seconds": capped_summary["durationSeconds"],
            "throttles": capped_summary.get("throttles"),
            "capped": capped_summary["capped"],
        },
    }
    print(json.dumps(figures))
    # Every object of both runs arrived, intact.
    for summary in (free_summary, capped_summary):
        assert summary["objects"]["copied"] == HOT_OBJECTS + COLD_OBJECTS, summary
        assert summary["objects"]["failed"] == 0, summary
    assert digests_of(client, capped_dst) == digests
    assert digests_of(client, f"free-{stamp}") == digests
    # The provider really throttled the hot prefix, and it slowed to about its limit.
    assert capped_summary["capped"] > 0
    assert figures["capped"]["hot"] <= 1.3 * CAP < figures["free"]["hot"], figures
    # The other prefix kept its rate.
    assert figures["capped"]["cold"] >= 0.7 * figures["free"]["cold"], figures
