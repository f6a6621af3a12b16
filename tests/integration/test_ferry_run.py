"""`ferry run` as a user runs it: a process, a file, exit codes, messages and the JSON summary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
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


def ferry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


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


def test_json_on_stdout_for_every_kind_of_invalid_input(s3: Any, tmp_path: Path) -> None:
    """Scripts parse stdout whatever happened: exit 2 comes with an error document naming the field."""
    unknown = write_job(tmp_path / "unknown.yaml", s3.endpoint, "aaa", "bbb", extra="  overwirte: never")
    missing = write_job(
        tmp_path / "missing.yaml", s3.endpoint, "does-not-exist-anywhere", s3.make_bucket("d")
    )
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: CopyJob\nspec: [unclosed\n")
    cases = [
        # args, field, reason, fragment of the error
        (["-f", str(unknown)], "spec.overwirte", None, "unknown field"),
        (["-f", str(missing)], "spec.source.bucket", "BucketNotFound", "does-not-exist-anywhere"),
        (["-f", str(bad_yaml)], None, None, "not valid YAML"),
        (["-f", str(tmp_path / "nope.yaml")], None, None, "cannot read"),
        (["-f", str(unknown), "--progress", "sometimes"], None, None, "invalid choice"),  # argparse's own
    ]
    for args, field, reason, fragment in cases:
        result = ferry("run", *args, "--output", "json")
        assert result.returncode == 2, (args, result.stderr)
        document = json.loads(result.stdout)
        assert (document["state"], document["exitCode"], document["complete"]) == ("invalid", 2, False)
        assert (document["field"], document["reason"]) == (field, reason), args
        assert fragment in document["error"], (fragment, document)
        assert result.stderr  # the person at the terminal still reads it on stderr
    text = ferry("run", "-f", str(unknown))
    assert text.returncode == 2 and text.stdout == ""  # text mode keeps stdout for summaries only


def test_an_interrupted_run_says_so_and_a_rerun_resumes(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(200):
        s3.client.put_object(Bucket=src, Key=f"k{i:03d}", Body=b"x" * 100)
    # 200 ms per source request and 2 transfers at a time: ~10 objects/s, so Ctrl-C lands mid-run.
    with FaultProxy(s3.endpoint.url, FaultPlan(latency_ms=200)) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url)
        runs = []
        for output in ("text", "json"):
            process = subprocess.Popen(
                [
                    *FERRY,
                    "run",
                    "-f",
                    str(job),
                    "--progress",
                    "none",
                    "--concurrency",
                    "2",
                    "--output",
                    output,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(3)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
            copied = len(s3.client.list_objects_v2(Bucket=dst).get("Contents", []))
            runs.append((process.returncode, stdout, stderr, copied))

    (code, stdout, stderr, copied) = runs[0]
    assert code == 130, stderr
    assert 0 < copied < 200
    assert f"INTERRUPTED: {200 - copied:,} of 200 objects not copied; run again to resume" in stdout, stdout
    assert f"{copied:,} copied" in stdout and f"{200 - copied:,} not done" in stdout

    (code, stdout, stderr, copied_after_second) = runs[1]
    assert code == 130, stderr
    document = json.loads(stdout)
    assert (document["state"], document["exitCode"], document["complete"]) == ("interrupted", 130, False)
    assert document["notCopied"] == 200 - copied_after_second and document["totalKnown"] is True
    assert document["objects"]["total"] == 200
    assert document["message"].startswith("INTERRUPTED: ")

    resumed = ferry(
        "run",
        "-f",
        str(write_job(tmp_path / "direct.yaml", s3.endpoint, src, dst)),
        "--progress",
        "none",
        "--output",
        "json",
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["state"] == "complete"
    assert summary["objects"]["skipped"] == copied_after_second
    assert summary["objects"]["copied"] == 200 - copied_after_second


def test_a_rejected_key_from_the_environment_names_the_environment(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    dst = s3.make_bucket("dst")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret-4c1d"}
    # moto accepts any key: the proxy answers as AWS does to a key it does not know.
    refuse = FaultPlan(refuse_rate=1.0, refuse_status=403, refuse_code="InvalidAccessKeyId")
    with FaultProxy(s3.endpoint.url, refuse) as proxy:
        from_env = write_job(
            tmp_path / "env.yaml", s3.endpoint, "src-bucket", dst, secrets=False, source_endpoint=proxy.url
        )
        text = from_env.read_text().replace(", credentialsSecret: src-creds", "")
        from_env.write_text(text.replace(", credentialsSecret: dst-creds", ""))
        result = ferry("run", "-f", str(from_env), "--output", "json", env=env)
        from_secret = write_job(
            tmp_path / "secret.yaml", s3.endpoint, "src-bucket", dst, source_endpoint=proxy.url
        )
        with_secret = ferry("run", "-f", str(from_secret), env=env)

    assert result.returncode == 2, result.stderr
    assert "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in result.stderr
    assert "spec.source sets no credentialsSecret" in result.stderr
    assert "check spec.source.credentialsSecret" not in result.stderr
    assert "not-a-real-secret" not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert (document["reason"], document["field"]) == ("CredentialsInvalid", "spec.source")

    assert with_secret.returncode == 2
    assert "check Secret 'src-creds' named by spec.source.credentialsSecret" in with_secret.stderr


def test_plain_progress_shows_a_true_first_rate_and_percent_once_the_total_is_known(
    s3: Any, tmp_path: Path
) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(300):
        s3.client.put_object(Bucket=src, Key=f"k{i:03d}", Body=b"x" * 100)
    with FaultProxy(s3.endpoint.url, FaultPlan(latency_ms=60)) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url)
        result = ferry(
            "run", "-f", str(job), "--progress", "plain", "--progress-interval", "1", "--concurrency", "4"
        )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) >= 2, result.stderr
    pattern = re.compile(r"^\[(\d+)s\] ([\d,]+)/300 objects \(([\d.]+)%\)")
    first = pattern.match(lines[0])
    # Percent from the first line on: the lister knew the total long before the copier took it all in.
    assert first and int(first.group(2).replace(",", "")) < 300, lines[0]
    assert all("+" not in line.split(" · ")[0] and "listing" not in line for line in lines)

    with_rate = next(line for line in lines if "obj/s" in line)
    match = pattern.match(with_rate)
    rate = re.search(r"([\d,.]+) obj/s", with_rate)
    assert match and rate, with_rate
    elapsed, done, shown = int(match.group(1)), int(match.group(2).replace(",", "")), float(rate.group(1))
    # Over the real elapsed window since the start (the line's seconds are rounded): never a 0.0 placeholder.
    assert done > 0 and shown > 0, with_rate
    assert 0.99 * done / (elapsed + 0.5) <= shown <= 1.01 * done / (elapsed - 0.5), with_rate
    assert "throughput:" in result.stdout and "at the end" in result.stdout
