"""`ferry run` as a user runs it: a process, a file, exit codes, messages and the JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

FERRY = [str(Path(sys.executable).with_name("ferry"))]


def write_job(
    path: Path,
    endpoint: Any,
    src: str,
    dst: str,
    *,
    extra: str = "",
    secrets: bool = True,
    source_endpoint: str | None = None,
) -> Path:
    text = f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: cli-test}}
spec:
  source: {{bucket: {src}, endpoint: "{source_endpoint or endpoint.url}", credentialsSecret: src-creds}}
  destination: {{bucket: {dst}, endpoint: "{endpoint.url}", credentialsSecret: dst-creds}}
{extra}
"""
    if secrets:
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
    return path


def ferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], capture_output=True, text=True, timeout=120, check=False)


def test_run_copies_and_prints_a_json_summary_then_a_rerun_skips_everything(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(40):
        s3.client.put_object(Bucket=src, Key=f"k{i:03d}", Body=b"x" * (100 + i))
    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst)

    first = ferry("run", "-f", str(job), "--output", "json", "--progress", "plain")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["objects"] == {"total": 40, "copied": 40, "skipped": 0, "failed": 0, "pending": 0}
    assert summary["bytes"]["total"] == summary["bytes"]["copied"] == sum(100 + i for i in range(40))
    assert summary["durationSeconds"] > 0 and summary["objectsPerSecond"] > 0

    second = json.loads(ferry("run", "-f", str(job), "--output", "json", "--progress", "none").stdout)
    assert second["objects"]["skipped"] == 40 and second["objects"]["copied"] == 0


def test_secret_keys_never_appear_in_output_even_with_debug_logging(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    s3.client.put_object(Bucket=src, Key="k", Body=b"x")
    planted = "PLANTED-secret-value-4f1c9e"  # moto accepts any key; this one must never be printed
    job = write_job(tmp_path / "job.yaml", replace(s3.endpoint, secret_key=planted), src, dst)
    result = ferry("-v", "run", "-f", str(job), "--progress", "plain")
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr  # debug logging really was on
    assert planted not in result.stdout + result.stderr


def test_unknown_field_exits_2_naming_the_field(s3: Any, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", s3.endpoint, "aaa", "bbb", extra="  overwirte: never")
    result = ferry("run", "-f", str(job))
    assert result.returncode == 2
    assert "spec.overwirte: unknown field" in result.stderr
    assert "overwrite" in result.stderr  # the allowed names are listed


def test_missing_bucket_exits_2_with_reason(s3: Any, tmp_path: Path) -> None:
    dst = s3.make_bucket("dst")
    job = write_job(tmp_path / "job.yaml", s3.endpoint, "does-not-exist-anywhere", dst)
    result = ferry("run", "-f", str(job))
    assert result.returncode == 2
    assert "spec.source" in result.stderr and "does-not-exist-anywhere" in result.stderr
    assert "BucketNotFound" in result.stderr


def test_unreachable_endpoint_exits_2(s3: Any, tmp_path: Path) -> None:
    from testbed.s3server import free_port

    dst = s3.make_bucket("dst")
    job = write_job(
        tmp_path / "job.yaml", s3.endpoint, "src", dst, source_endpoint=f"http://127.0.0.1:{free_port()}"
    )
    result = ferry("run", "-f", str(job))
    assert result.returncode == 2
    assert "EndpointUnreachable" in result.stderr and "spec.source.endpoint" in result.stderr


def test_secret_without_keys_exits_2(s3: Any, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", s3.endpoint, "aaa", "bbb", secrets=False)
    job.write_text(
        job.read_text() + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: src-creds}\n"
        "stringData: {AWS_ACCESS_KEY_ID: x}\n"
    )
    result = ferry("run", "-f", str(job))
    assert result.returncode == 2
    assert "Secret 'src-creds'" in result.stderr and "AWS_SECRET_ACCESS_KEY" in result.stderr


def test_failed_objects_exit_3_and_go_to_the_report(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(5):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"data")
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/k3")
    report = tmp_path / "failed.jsonl"
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url)
        result = ferry("run", "-f", str(job), "--report", str(report), "--progress", "none")
    assert result.returncode == 3, result.stderr
    assert "4 copied" in result.stdout and "1 failed" in result.stdout
    assert [json.loads(line)["key"] for line in report.read_text().splitlines()] == ["k3"]


def test_invalid_yaml_and_bombs_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: CopyJob\nspec: [unclosed\n")
    assert ferry("run", "-f", str(bad)).returncode == 2
    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
        for i in range(9)
    ]
    bomb.write_text("\n".join(lines) + "\n")
    result = ferry("run", "-f", str(bomb))
    assert result.returncode == 2 and "YAML bomb" in result.stderr
    missing = ferry("run", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_failed_objects_are_also_written_to_spec_report(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst, reports = s3.make_bucket("src"), s3.make_bucket("dst"), s3.make_bucket("reports")
    for i in range(3):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"data")
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/k1")
    extra = f'  report: {{bucket: {reports}, prefix: "ferry/", endpoint: "{s3.endpoint.url}", credentialsSecret: dst-creds}}'
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url, extra=extra)
        result = ferry("run", "-f", str(job), "--progress", "none")
    assert result.returncode == 3, result.stderr
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=reports).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("ferry/cli-test/failed-") and keys[0].endswith(".jsonl")
    assert f"report: s3://{reports}/{keys[0]}" in result.stderr
    lines = s3.client.get_object(Bucket=reports, Key=keys[0])["Body"].read().decode().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["k1"]
