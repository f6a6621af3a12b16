"""What users install: the wheel and the sdist as built, installed without `-e` into a clean venv.

Every other test runs against the editable install, which maps ferry.operator and ferry.worker to
their folders whatever the packaging metadata says; only a real wheel shows a module left out of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.engine import digest_map

ROOT = Path(__file__).resolve().parents[2]
#: Folder in the repository -> import path in the installed package (pyproject's package-dir).
PACKAGE_DIRS = {"ferry": "ferry", "operator": "ferry/operator", "worker": "ferry/worker"}


def _sources() -> dict[str, Path]:
    """Every runtime module in the repository, by the path it must have inside the wheel."""
    found: dict[str, Path] = {}
    for folder, target in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            found[f"{target}/{path.relative_to(ROOT / folder).as_posix()}"] = path
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a folder outside the repository, in isolated mode: the project's operator/ folder must never
    # be importable as the standard library's `operator` (it once broke the image build that way).
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--sdist",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        cwd=out,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding only the wheel and its dependencies (from the package index)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-I", "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(dist.glob("ferry-*.whl"))
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-m", "pip", "install", "-q", str(wheel)],
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield venv


def test_wheel_holds_every_runtime_module_and_no_test_tools(dist: Path) -> None:
    wheel = next(dist.glob("ferry-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(set(_sources()) - names)
    assert not missing, f"modules left out of the wheel: {missing}"
    assert "ferry/py.typed" in names
    leaked = sorted(n for n in names if n.startswith(("testbed/", "ferry/testbed/", "tests/")))
    assert not leaked, f"test tools shipped in the wheel: {leaked}"
    # Top-level names other than ferry would shadow or clash with other distributions.
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ferry"}


def test_sdist_builds_the_same_wheel_contents(dist: Path, tmp_path: Path) -> None:
    sdist = next(dist.glob("ferry-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
        tar.extractall(tmp_path, filter="data")
    for folder in PACKAGE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert path.relative_to(ROOT).as_posix() in members, f"{path} missing from the sdist"
    # The sdist is enough to build a wheel again (what a downstream packager does).
    root = next(tmp_path.glob("ferry-*"))
    out = tmp_path / "rebuilt"
    subprocess.run(
        [sys.executable, "-I", "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(root)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    rebuilt = set(zipfile.ZipFile(next(out.glob("ferry-*.whl"))).namelist())
    original = set(zipfile.ZipFile(next(dist.glob("ferry-*.whl"))).namelist())
    assert rebuilt == original


def test_installed_wheel_imports_every_ferry_module(installed: Path) -> None:
    script = (
        "import importlib, json, pkgutil, ferry\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(ferry.__path__, 'ferry.'))\n"
        "for n in names: importlib.import_module(n)\n"
        "print(json.dumps({'file': ferry.__file__, 'modules': names}))\n"
    )
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-I", "-c", script],
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["file"].startswith(str(installed)), "imported ferry from outside the venv"
    expected = {path[: -len(".py")].removesuffix("/__init__").replace("/", ".") for path in _sources()} - {
        "ferry"
    }
    assert set(report["modules"]) == expected


def test_installed_ferry_command_shows_help_and_runs_a_real_copy(
    installed: Path, s3: Any, tmp_path: Path
) -> None:
    ferry = str(installed / "bin" / "ferry")
    for args in (["--help"], ["run", "--help"], ["worker", "--help"], ["operator", "--help"]):
        shown = subprocess.run([ferry, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert shown.returncode == 0, (args, shown.stderr[-2000:])
        assert "usage: ferry" in shown.stdout

    src, dst = s3.make_bucket("wheel-src"), s3.make_bucket("wheel-dst")
    for i in range(25):
        s3.client.put_object(Bucket=src, Key=f"data/{i:03d}.bin", Body=bytes([i]) * (1000 + 97 * i))
    endpoint = s3.endpoint
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: from-the-wheel}}
spec:
  source: {{bucket: {src}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
  destination: {{bucket: {dst}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{AWS_ACCESS_KEY_ID: "{endpoint.access_key}", AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"}}
"""
    )
    run = subprocess.run(
        [ferry, "run", "-f", str(job), "--output", "json", "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["objects"]["copied"] == 25
    assert digest_map(s3.client, dst) == digest_map(s3.client, src)
