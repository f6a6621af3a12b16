"""The endpoint `make bench-cpus` measures against (hack/nulls3) serves what Ferry copies: every object
arrives once, checked against its Content-MD5, whether Ferry copies in one process or in two."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .test_ferry_run import FERRY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cpuscale


@pytest.mark.parametrize("processes", ["1", "2"])
def test_every_object_of_the_zero_cpu_endpoint_is_copied_once(tmp_path: Path, processes: str) -> None:
    server, url = cpuscale.start_nulls3(cpuscale.build_nulls3(), 1500, 10_000)
    try:
        job = tmp_path / "job.yaml"
        cpuscale.write_job(job, url)
        done = subprocess.run(
            [
                *FERRY,
                "run",
                "-f",
                str(job),
                "--processes",
                processes,
                "--output",
                "json",
                "--progress",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as answer:
            stats = json.load(answer)
    finally:
        server.kill()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["objects"] == {"total": 1500, "copied": 1500, "skipped": 0, "failed": 0, "pending": 0}
    assert summary["memory"]["copyProcesses"] == (2 if processes == "2" else 0)
    assert stats == {"gets": 1500, "puts": 1500}
