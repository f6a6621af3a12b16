"""The project's container engine for tests: started (or reused) through `hack/engine.sh`, with the
images it builds. Where no engine can run, the tests that need one skip with the reason; `make test`
passes that reason in FERRY_ENGINE_UNAVAILABLE and repeats it in its last line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def engine_sh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "engine.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def engine_step(*args: str, timeout: float) -> str:
    """stdout of an engine.sh step; skip when no engine can run here, fail on any other error."""
    unavailable = os.environ.get("FERRY_ENGINE_UNAVAILABLE")
    if unavailable:
        pytest.skip(f"no container engine on this machine: {unavailable}")
    result = engine_sh(*args, timeout=timeout)
    reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
    if result.returncode == 3:
        pytest.skip(f"no container engine on this machine: {reason}")
    if result.returncode != 0:
        pytest.fail(f"hack/engine.sh {' '.join(args)} failed: {reason}", pytrace=False)
    return result.stdout.strip()


def docker_host() -> str:
    """DOCKER_HOST of the project's engine, started if needed."""
    engine_step("start", timeout=300)
    return engine_step("env", timeout=30).removeprefix("DOCKER_HOST=")


def ferry_image() -> str:
    """`ferry:dev` built from the working tree (reused when its content is unchanged)."""
    return engine_step("image", timeout=900)


def base_image() -> str:
    """The plain Debian base (python3, root by default) that ferry:dev is built on."""
    return engine_step("base", timeout=600)
