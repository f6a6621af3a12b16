"""`make dev-cluster` (testbed/cluster.py) in process mode: its banner and `.dev-cluster/env` give the
operator's metrics URL, on 127.0.0.1, and a scrape of it answers with the operator's series."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from support.wait import wait_for
from testbed.binaries import REPO_ROOT

pytestmark = pytest.mark.timeout(240)
READY_SECONDS = 150


def test_the_dev_cluster_banner_prints_the_operators_metrics_url(tmp_path: Path) -> None:
    state = tmp_path / "dev-cluster"
    process = subprocess.Popen(
        [sys.executable, "-m", "testbed.cluster", "--mode", "process", "--state-dir", str(state)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not any(line.startswith("Stop with Ctrl-C") for line in seen):
            assert time.monotonic() < deadline, "dev-cluster not ready:\n" + "".join(seen[-40:])
            assert process.poll() is None, "dev-cluster exited:\n" + "".join(seen[-40:])
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        (banner,) = [line for line in seen if line.strip().startswith("metrics:")]
        url = banner.split("metrics:", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), banner
        env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines() if "=" in line)
        assert env["FERRY_OPERATOR_METRICS_URL"] == url
        # The operator process may still be starting when the banner is printed.
        assert "ferry_copyjobs{" in wait_for("the operator's metrics", lambda: _get(url))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(5)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None
