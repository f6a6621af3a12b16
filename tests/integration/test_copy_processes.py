"""`ferry run --processes N`: the transfers run in N copy processes under one budget and one manager,
as a worker pod given N CPUs runs them; a copy process that dies costs no object, an interrupt leaves
none behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.engine import digest_map
from testbed.faultproxy import FaultPlan, FaultProxy

from .test_ferry_run import FERRY, ferry, write_job


def fill(client: Any, bucket: str, count: int, size: int = 2000) -> dict[str, str]:
    digests = {}
    for index in range(count):
        body = os.urandom(size + index)
        client.put_object(Bucket=bucket, Key=f"k{index:04d}", Body=body)
        digests[f"k{index:04d}"] = hashlib.md5(body).hexdigest()
    return digests


def copy_processes_of(pid: int) -> list[int]:
    """The copy processes a ferry process started: its children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def run_in_two_processes(job: Path, concurrency: int) -> subprocess.Popen[str]:
    argv = ["run", "-f", str(job), "--processes", "2", "--concurrency", str(concurrency), "--output", "json"]
    return subprocess.Popen([*FERRY, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def copying_mid_run(pid: int, arrived: Callable[[], bool], seconds: float = 30) -> list[int]:
    """The two copy processes of the ferry process ``pid``, once both started and objects ``arrived``."""
    deadline = time.monotonic() + seconds
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 2:
        time.sleep(0.2)
        children = copy_processes_of(pid)
    assert len(children) == 2, "two copy processes must have started"
    while time.monotonic() < deadline and not arrived():
        time.sleep(0.1)
    return children


def test_two_copy_processes_copy_every_object_and_the_summary_says_so(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(s3.client, src, 150)
    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst)

    first = ferry("run", "-f", str(job), "--processes", "2", "--output", "json", "--progress", "none")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["objects"] == {"total": 150, "copied": 150, "skipped": 0, "failed": 0, "pending": 0}
    assert summary["memory"]["copyProcesses"] == 2
    # Every GET and PUT made in the copy processes is counted by the worker, beside its own listings.
    assert summary["requests"] >= 2 * 150 + 2
    assert digest_map(s3.client, dst) == digests

    again = json.loads(ferry("run", "-f", str(job), "--processes", "2", "--output", "json").stdout)
    assert again["objects"]["skipped"] == 150 and again["objects"]["copied"] == 0


def test_one_process_asked_copies_in_the_worker_itself(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(s3.client, src, 5)
    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst)
    result = ferry("run", "-f", str(job), "--processes", "1", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["memory"]["copyProcesses"] == 0


def test_a_bad_processes_value_exits_2_saying_what_is_accepted(s3: Any, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", s3.endpoint, "aaa", "bbb")
    for value in ("0", "17", "two"):
        result = ferry("run", "-f", str(job), "--processes", value)
        assert result.returncode == 2, (value, result.stderr)
        assert "processes must be a whole number from 1 to 16 or auto" in result.stderr


def test_a_copy_process_killed_mid_run_is_replaced_and_every_object_arrives(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    digests = fill(s3.client, src, 240)
    # 100 ms per source request and 8 transfers at a time: about 6 s of copying, so the kill lands mid-run.
    with FaultProxy(s3.endpoint.url, FaultPlan(latency_ms=100)) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url)
        process = run_in_two_processes(job, concurrency=8)
        try:
            children = copying_mid_run(
                process.pid, lambda: bool(s3.client.list_objects_v2(Bucket=dst).get("KeyCount"))
            )
            os.kill(children[0], signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["objects"]["copied"] == 240 and summary["objects"]["failed"] == 0
    assert "a copy process ended" in stderr and "starting another" in stderr
    assert digest_map(s3.client, dst) == digests


def test_an_interrupted_run_leaves_no_copy_process_behind(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(s3.client, src, 200, size=100)
    with FaultProxy(s3.endpoint.url, FaultPlan(latency_ms=200)) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url)
        process = run_in_two_processes(job, concurrency=2)
        try:
            # Interrupted mid-copy, once the first objects arrived (start-up is interrupted otherwise).
            children = copying_mid_run(
                process.pid, lambda: bool(s3.client.list_objects_v2(Bucket=dst).get("KeyCount"))
            )
            time.sleep(0.5)
            # Ctrl-C reaches every process of the terminal's group: the copy processes ignore it, the
            # worker lets in-flight transfers finish, then ends them.
            for pid in (*children, process.pid):
                os.kill(pid, signal.SIGINT)
            stdout, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130
    document = json.loads(stdout)
    assert document["state"] == "interrupted" and document["objects"]["copied"] < 200
    time.sleep(0.5)
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
