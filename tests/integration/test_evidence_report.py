"""`spec.report.include: all` end to end: `ferry run` and a worker pod's process against the session's moto
S3 server (the `s3` fixture: a real server over HTTP on 127.0.0.1, and moto keeps checksums and ETags as
S3 does), with the fault proxy forcing one object to fail. What is read back is what a user's auditor reads:
the parts in the report bucket, decompressed, against the summary document beside them."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ferry.worker.evidence import FORMAT, LINES_PER_PART_ENV
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import free_port

from .test_ferry_run import ferry, write_job

SECONDS = 120


def _report_location(s3: Any, bucket: str, include: str = "all") -> str:
    return (
        f'  report: {{bucket: {bucket}, prefix: "audit/", endpoint: "{s3.endpoint.url}", '
        f"credentialsSecret: dst-creds, include: {include}}}\n"
    )


def _read_summary(s3: Any, address: str) -> dict[str, Any]:
    bucket, _, key = address.removeprefix("s3://").partition("/")
    document: dict[str, Any] = json.loads(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return document


def _read_parts(s3: Any, bucket: str, summary: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every part the summary names, checked against its line count and SHA-256, as parsed lines."""
    parts = []
    for part in summary["parts"]:
        body = s3.client.get_object(Bucket=bucket, Key=f"audit/{part['name']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == part["sha256"]
        assert len(body) == part["bytes"] and part["uploaded"] is True
        lines = gzip.decompress(body).decode("ascii").splitlines()
        assert len(lines) == part["lines"]
        parts.append([json.loads(line) for line in lines])
    return parts


def test_ferry_run_with_include_all_writes_one_verified_line_per_object_in_parts_and_a_summary(
    s3: Any, tmp_path: Path
) -> None:
    src, dst, audit = s3.make_bucket("src"), s3.make_bucket("dst"), s3.make_bucket("audit")
    for i in range(7):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"data-%d" % i)
    # Already at the destination, identical: skipped, with the ETags compared on both sides.
    s3.client.put_object(Bucket=dst, Key="k0", Body=b"data-0")
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/k3")
    env = {**os.environ, LINES_PER_PART_ENV: "3"}
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(
            tmp_path / "job.yaml",
            s3.endpoint,
            src,
            dst,
            source_endpoint=proxy.url,
            extra=_report_location(s3, audit),
        )
        result = ferry("run", "-f", str(job), "--output", "json", "--progress", "none", env=env)
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    pointer = document["evidence"]
    assert pointer["summary"].startswith(f"s3://{audit}/audit/cli-test/evidence/run-")
    assert pointer["objects"] == {"total": 7, "copied": 5, "skipped": 1, "failed": 1}
    assert pointer["parts"] == 3 and pointer["format"] == FORMAT

    summary = _read_summary(s3, pointer["summary"])
    assert summary["format"] == FORMAT and summary["job"] == "cli-test" and summary["shard"] is None
    assert summary["objects"] == pointer["objects"]
    assert summary["bytes"]["total"] == sum(len(b"data-%d" % i) for i in range(7))
    # Complete: every object the run considered has its line (the failed one too, as failed).
    assert summary["complete"] is True
    parts = _read_parts(s3, audit, summary)
    # Split at the boundary: 3 + 3 + 1 lines.
    assert [len(lines) for lines in parts] == [3, 3, 1]
    lines = [line for part in parts for line in part]
    by_key = {line["key"]: line for line in lines}
    assert len(by_key) == len(lines) == 7  # exactly one line per object
    assert {key: line["action"] for key, line in by_key.items()} == {
        "k0": "skipped",
        "k1": "copied",
        "k2": "copied",
        "k3": "failed",
        "k4": "copied",
        "k5": "copied",
        "k6": "copied",
    }
    for key in ("k1", "k2", "k4", "k5", "k6"):
        checksum = by_key[key]["checksum"]
        # verify: checksum (the default) streams CRC32C and the destination checks it.
        assert checksum["algorithm"] == "crc32c"
        assert checksum["source"] and checksum["source"] == checksum["destination"]
        assert by_key[key]["reason"] == "absent at destination" and by_key[key]["code"] is None
    skipped = by_key["k0"]["checksum"]
    assert skipped == {
        "algorithm": "etag",
        "source": hashlib.md5(b"data-0").hexdigest(),
        "destination": hashlib.md5(b"data-0").hexdigest(),
    }
    assert by_key["k3"]["checksum"] is None and by_key["k3"]["code"]
    for line in lines:
        assert line["version"] is None
        assert line["time"].endswith("Z") and line["time"][10] == "T"


def test_verify_etag_says_only_etags_were_compared(s3: Any, tmp_path: Path) -> None:
    src, dst, audit = s3.make_bucket("src"), s3.make_bucket("dst"), s3.make_bucket("audit")
    s3.client.put_object(Bucket=src, Key="only", Body=b"payload")
    job = write_job(
        tmp_path / "job.yaml", s3.endpoint, src, dst, extra="  verify: etag\n" + _report_location(s3, audit)
    )
    # Both sides on one endpoint with one Secret: the service copies (CopyObject), and ETags are compared.
    result = ferry("run", "-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    summary = _read_summary(s3, json.loads(result.stdout)["evidence"]["summary"])
    assert summary["complete"] is True
    [[line]] = _read_parts(s3, audit, summary)
    digest = hashlib.md5(b"payload").hexdigest()
    assert line["action"] == "copied"
    assert line["checksum"] == {"algorithm": "etag", "source": digest, "destination": digest}


def test_include_failures_writes_no_evidence(s3: Any, tmp_path: Path) -> None:
    src, dst, audit = s3.make_bucket("src"), s3.make_bucket("dst"), s3.make_bucket("audit")
    s3.client.put_object(Bucket=src, Key="a", Body=b"a")
    job = write_job(
        tmp_path / "job.yaml", s3.endpoint, src, dst, extra=_report_location(s3, audit, "failures")
    )
    result = ferry("run", "-f", str(job), "--output", "json", "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert "evidence" not in json.loads(result.stdout)
    assert s3.client.list_objects_v2(Bucket=audit).get("KeyCount", 0) == 0


def _worker(tmp_path: Path, s3: Any, spec: dict[str, Any], index: int, shards: list[dict[str, Any]]) -> str:
    """Run `ferry worker` for shard ``index`` as a worker pod runs it; returns its termination message."""
    folder = tmp_path / f"plan-{index}"
    folder.mkdir(exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "shards.json").write_text(json.dumps(shards))
    termination = tmp_path / f"termination-{index}"
    creds = {
        f"FERRY_{role}_{name}": value
        for role in ("SOURCE", "DESTINATION", "REPORT")
        for name, value in (
            ("ACCESS_KEY_ID", s3.endpoint.access_key),
            ("SECRET_ACCESS_KEY", s3.endpoint.secret_key),
        )
    }
    env = {
        "PATH": os.environ["PATH"],
        "FERRY_PLAN_DIR": str(folder),
        "JOB_COMPLETION_INDEX": str(index),
        "FERRY_COPYJOB": "pod-test",
        "FERRY_STATUS_HOST": "127.0.0.1",
        "FERRY_STATUS_PORT": str(free_port()),
        "FERRY_TERMINATION_MESSAGE_PATH": str(termination),
        "FERRY_MEMORY_LIMIT": str(512 * 2**20),
        "AWS_EC2_METADATA_DISABLED": "true",
        LINES_PER_PART_ENV: "2",
        **creds,
    }
    process = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    for value in creds.values():
        assert value not in process.stdout + process.stderr
    return termination.read_text()


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def test_worker_pods_write_parts_per_shard_and_a_rerun_replaces_its_own(s3: Any, tmp_path: Path) -> None:
    src, dst, audit = s3.make_bucket("src"), s3.make_bucket("dst"), s3.make_bucket("audit")
    for i in range(8):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"x" * (10 + i))
    endpoint = s3.endpoint.url
    spec = {
        "source": {"bucket": src, "endpoint": endpoint, "credentialsSecret": "c"},
        "destination": {"bucket": dst, "endpoint": endpoint, "credentialsSecret": "c"},
        "report": {"bucket": audit, "prefix": "audit/", "endpoint": endpoint, "credentialsSecret": "r",
                   "include": "all"},
    }  # fmt: skip
    shards = [
        {"startAfter": None, "end": "k4", "objects": 5, "bytes": 60},
        {"startAfter": "k4", "end": None, "objects": 3, "bytes": 48},
    ]
    messages = [json.loads(_worker(tmp_path, s3, spec, index, shards)) for index in (0, 1)]
    root = "audit/pod-test/evidence/"
    assert _keys(s3, audit, root) == [
        f"{root}shard-00000/part-00000.jsonl.gz",
        f"{root}shard-00000/part-00001.jsonl.gz",
        f"{root}shard-00000/part-00002.jsonl.gz",
        f"{root}shard-00000/summary.json",
        f"{root}shard-00001/part-00000.jsonl.gz",
        f"{root}shard-00001/part-00001.jsonl.gz",
        f"{root}shard-00001/summary.json",
    ]
    for index, message in enumerate(messages):
        assert message["evidence"]["summary"] == f"pod-test/evidence/shard-{index:05d}/summary.json"
    first = _read_summary(s3, f"s3://{audit}/audit/{messages[0]['evidence']['summary']}")
    assert first["shard"] == 0 and first["objects"]["copied"] == 5 and first["complete"] is True
    assert sorted(line["key"] for part in _read_parts(s3, audit, first) for line in part) == [
        f"k{i}" for i in range(5)
    ]

    # Shard 0 runs again with fewer objects: its summary and parts are replaced, none of the old is left.
    for i in (1, 2, 3):
        s3.client.delete_object(Bucket=src, Key=f"k{i}")
    again = json.loads(_worker(tmp_path, s3, spec, 0, shards))
    assert _keys(s3, audit, f"{root}shard-00000/") == [
        f"{root}shard-00000/part-00000.jsonl.gz",
        f"{root}shard-00000/summary.json",
    ]
    rerun = _read_summary(s3, f"s3://{audit}/audit/{again['evidence']['summary']}")
    assert rerun["objects"] == {"total": 2, "copied": 0, "skipped": 2, "failed": 0}
    assert [line["key"] for part in _read_parts(s3, audit, rerun) for line in part] == ["k0", "k4"]
    # The other shard's evidence is untouched.
    assert len(_keys(s3, audit, f"{root}shard-00001/")) == 3
