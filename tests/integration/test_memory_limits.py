"""`ferry run` under a real kernel memory limit: the image `ferry:dev`, run by the project's
container engine (`hack/engine.sh`) as a user runs it (`docker run --memory X --memory-swap X`, uid
10001, read-only root, host networking to an S3 server on 127.0.0.1), copying 2 x 300 MiB + 300 x 100 KB
objects streamed GET -> PUT.

- A tight but workable limit finishes, every object intact, never OOMKilled, with the cgroup's own peak
  (read by the worker from `memory.max_usage_in_bytes` / `memory.peak`) under the limit and the budget.
- A limit below the smallest budget a worker can work in ends at once with exit 2 and a message naming
  `spec.resources.memory` and the minimum, never with an OOM kill.
- The incident's manager (`--policy incident`) runs in a container of the incident's size (1.8 GiB).

Before this was fixed the same job was OOMKilled at 64m and 96m and peaked at 112 MiB (cgroup) at 128m.
The container tests skip, with the reason, where no engine can run. The last test needs no engine: an
object whose part can never fit the budget fails alone, with the reason, and the rest is copied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.worker.adaptive import AdaptiveLimiter
from ferry.worker.budget import RUNTIME_RESERVE, MemoryBudget
from ferry.worker.control import ControlConfig
from ferry.worker.engine import CopyEngine
from ferry.worker.leans3 import make_lean
from ferry.worker.report import FailureReport
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from support.containers import docker_host, ferry_image
from support.engine import FAST_RETRY, digest_map
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(600)

MiB, KB = 2**20, 100_000
DOCKER = "/usr/bin/docker"
LARGE, LARGE_SIZE, SMALL = 2, 300 * MiB, 300


@pytest.fixture(scope="module")
def server(versitygw_or_moto: S3Endpoint) -> S3Endpoint:
    return versitygw_or_moto


@pytest.fixture(scope="module")
def engine() -> tuple[str, str]:
    """(DOCKER_HOST, image): skips every container test, with the reason, where no engine can run."""
    host = docker_host()
    return host, ferry_image()


@dataclass(frozen=True)
class Source:
    bucket: str
    digests: dict[str, str]  # key -> MD5


@pytest.fixture(scope="module")
def source(server: S3Endpoint) -> Source:
    s3 = server.client()
    bucket = f"mem-src-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    digests: dict[str, str] = {}
    for i in range(LARGE):
        body = os.urandom(LARGE_SIZE)
        s3.upload_fileobj(io.BytesIO(body), bucket, f"large/{i}.bin")
        digests[f"large/{i}.bin"] = hashlib.md5(body).hexdigest()
        del body
    small = os.urandom(KB + SMALL)
    for i in range(SMALL):
        body = small[i : i + KB]
        s3.put_object(Bucket=bucket, Key=f"small/{i:04d}.bin", Body=body)
        digests[f"small/{i:04d}.bin"] = hashlib.md5(body).hexdigest()
    return Source(bucket, digests)


def write_job(path: Path, endpoint: S3Endpoint, source: str, destination: str, prefix: str = "") -> Path:
    """A CopyJob and its Secrets in one file. Two Secrets (same keys): different credentials make the
    copy stream GET -> PUT through the worker instead of asking the server for server-side copies."""
    text = f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: memory-limits}}
spec:
  source: {{bucket: {source}, prefix: "{prefix}", endpoint: "{endpoint.url}", credentialsSecret: src-creds}}
  destination: {{bucket: {destination}, prefix: "{prefix}", endpoint: "{endpoint.url}", credentialsSecret: dst-creds}}
"""
    for name in ("src-creds", "dst-creds"):
        text += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
"""
    path.write_text(text)
    path.chmod(0o644)  # read by uid 10001 through the read-only bind mount
    return path


@dataclass(frozen=True)
class Ran:
    exit_code: int
    oom_killed: bool
    seconds: float
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        try:
            value: dict[str, Any] = json.loads(self.stdout)
        except ValueError:
            pytest.fail(f"no JSON summary (exit {self.exit_code}): {self.stdout!r} {self.stderr[-2000:]!r}")
        return value


def ferry_run_in_container(engine: tuple[str, str], limit: str, job: Path, *args: str) -> Ran:
    host, image = engine
    env = {**os.environ, "DOCKER_HOST": host}
    name = f"ferry-memory-{uuid.uuid4().hex[:10]}"
    argv = [
        DOCKER, "run", "--name", name, "--network", "host",
        "--memory", limit, "--memory-swap", limit,
        "--read-only", "--tmpfs", "/tmp", "--user", "10001",
        "-v", f"{job}:/job.yaml:ro",
        image, "run", "-f", "/job.yaml", "--output", "json", "--progress", "none", *args,
    ]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
        seconds = time.monotonic() - started
        state = subprocess.run(
            [DOCKER, "inspect", name, "--format", "{{json .State}}"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=True,
        )
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, timeout=60, env=env, check=False)
    status = json.loads(state.stdout)
    return Ran(int(status["ExitCode"]), bool(status["OOMKilled"]), seconds, done.stdout, done.stderr)


def limit_bytes(limit: str) -> int:
    return int(limit.removesuffix("m")) * MiB


@pytest.mark.parametrize("limit", ["96m", "160m"])
def test_a_tight_limit_finishes_intact_under_its_limit_and_budget_without_an_oom_kill(
    engine: tuple[str, str], server: S3Endpoint, source: Source, tmp_path: Path, limit: str
) -> None:
    s3 = server.client()
    destination = f"mem-dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=destination)
    job = write_job(tmp_path / "job.yaml", server, source.bucket, destination)

    ran = ferry_run_in_container(engine, limit, job)

    assert not ran.oom_killed, ran.stderr[-2000:]
    assert ran.exit_code == 0, ran.stderr[-2000:]
    summary = ran.summary()
    assert summary["objects"]["copied"] == LARGE + SMALL and summary["complete"]
    memory = summary["memory"]
    # The peak is the cgroup's own high-water mark: what the kernel compares with the limit.
    assert memory["source"].startswith("cgroup v"), memory
    assert memory["limitBytes"] == limit_bytes(limit)
    assert 0 < memory["peakBytes"] < limit_bytes(limit), memory
    # Not compared with the budget: the cgroup's peak also counts page cache (the image's files, read
    # once per fresh layer), which the kernel reclaims before it kills; the budget bounds the process's
    # own memory. Seen: 83.8 MiB against a 76.8 MiB budget under 96 MiB, once in five runs.
    assert memory["baselineBytes"] < memory["budgetBytes"]
    assert memory["partSizeBytes"] >= 5 * MiB
    assert digest_map(s3, destination) == source.digests


@pytest.mark.parametrize("limit", ["64m"])
def test_below_the_smallest_workable_budget_it_exits_2_at_once_naming_the_field_and_the_minimum(
    engine: tuple[str, str], server: S3Endpoint, source: Source, tmp_path: Path, limit: str
) -> None:
    destination = f"mem-dst-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=destination)
    job = write_job(tmp_path / "job.yaml", server, source.bucket, destination)

    ran = ferry_run_in_container(engine, limit, job)

    assert not ran.oom_killed
    assert ran.exit_code == 2, ran.stderr[-2000:]
    assert ran.seconds < 20
    assert "spec.resources.memory" in ran.stderr, ran.stderr
    needed = ran.stderr.split("at least ", 1)[1].split("Mi", 1)[0]
    assert limit_bytes(limit) < int(needed) * MiB < 2 * limit_bytes(limit), ran.stderr
    # Scripts get a document that says the run was refused, never a summary of a copy.
    refused = json.loads(ran.stdout)
    assert refused["state"] == "invalid" and refused["exitCode"] == 2
    assert "spec.resources.memory" in refused["error"]
    assert not server.client().list_objects_v2(Bucket=destination).get("Contents")


def test_the_incident_policy_runs_in_a_container_of_the_incidents_size(
    engine: tuple[str, str], server: S3Endpoint, source: Source, tmp_path: Path
) -> None:
    s3 = server.client()
    destination = f"mem-dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=destination)
    job = write_job(tmp_path / "job.yaml", server, source.bucket, destination, prefix="small/")

    ran = ferry_run_in_container(engine, "1843m", job, "--policy", "incident")

    assert not ran.oom_killed and ran.exit_code == 0, ran.stderr[-2000:]
    summary = ran.summary()
    assert summary["objects"]["copied"] == SMALL
    assert summary["objectsPerSecond"] > 0
    memory = summary["memory"]
    assert memory["source"].startswith("cgroup v") and 0 < memory["peakBytes"] < 1843 * MiB, memory
    assert memory["budgetBytes"] is None  # the incident's manager keeps no budget of its own
    small = {k: v for k, v in source.digests.items() if k.startswith("small/")}
    assert digest_map(s3, destination) == small


def test_an_object_whose_part_can_never_fit_fails_alone_with_the_reason(server: S3Endpoint) -> None:
    """In process: a 12 MiB object in 10 MiB parts needs a 10 MiB part buffer; the budget leaves 6 MiB
    beside the baseline. That object fails at once naming spec.resources.memory; the others are copied."""
    s3 = server.client()
    source, destination = f"mem-src-{uuid.uuid4().hex[:8]}", f"mem-dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    s3.put_object(Bucket=source, Key="huge", Body=os.urandom(12 * MiB))
    for i in range(5):
        s3.put_object(Bucket=source, Key=f"small/{i}", Body=os.urandom(KB))
    spec = CopyJobSpec.model_validate(
        {
            "source": {"bucket": source, "endpoint": server.url, "credentialsSecret": "a"},
            "destination": {"bucket": destination, "endpoint": server.url, "credentialsSecret": "b"},
        }
    )
    baseline = 50 * MiB
    limiter = AdaptiveLimiter(
        ControlConfig(initial=4, maximum=4),
        MemoryBudget(baseline + RUNTIME_RESERVE + 6 * MiB, "test"),
        rss=lambda: baseline,
        tick_seconds=3600,
    )
    creds, options = Credentials(server.access_key, server.secret_key), ClientOptions(connect_timeout=2)
    try:
        limiter.plan()
        engine = CopyEngine(
            spec=spec,
            source_client=make_client(spec.source, creds, options),
            destination_client=make_client(spec.destination, creds, options),
            source_lean=make_lean(spec.source, creds, options),
            destination_lean=make_lean(spec.destination, creds, options),
            limiter=limiter,
            report=FailureReport(),
            part_size=10 * MiB,
            retry=FAST_RETRY,
        )
        summary = engine.run()
    finally:
        limiter.close()
    assert (summary.counts.copied, summary.counts.failed, summary.counts.pending) == (5, 1, 0)
    (failure,) = summary.failures
    assert failure.key == "huge" and failure.code == "MemoryBudgetTooSmall"
    assert "spec.resources.memory" in failure.message
    copied = {item["Key"] for item in s3.list_objects_v2(Bucket=destination).get("Contents", [])}
    assert copied == {f"small/{i}" for i in range(5)}
