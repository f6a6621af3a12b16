"""Where the testbed finds the programs `make testbin` builds from the Go modules under hack/.

The bin directory is `$FERRY_TESTBIN` when set, else the one `hack/testbin.sh --print-dir` names
(a cache outside the repository, keyed by tool versions and go.sum hashes). A missing program is an
error that says to run `make testbin`: tests that need the control plane must fail, not skip, when
the binaries were never built.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTBIN_SCRIPT = REPO_ROOT / "hack" / "testbin.sh"

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
S3_SERVER = ("versitygw",)


class MissingBinariesError(RuntimeError):
    """The testbed's programs were not built (or FERRY_TESTBIN points at the wrong place)."""


@dataclass(frozen=True)
class TestBinaries:
    """A directory holding the testbed's programs."""

    __test__ = False  # not a pytest test class despite the name

    bin_dir: Path

    def path(self, name: str) -> Path:
        """The program `name`, or MissingBinariesError saying how to build it."""
        p = self.bin_dir / name
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise MissingBinariesError(
                f"{name} not found in {self.bin_dir}: run `make testbin` (it builds the testbed's programs "
                "from the Go modules under hack/), or point FERRY_TESTBIN at a directory holding them"
            )
        return p

    def require(self, *names: str) -> TestBinaries:
        """Check that every program in `names` is present; returns self for chaining."""
        for name in names:
            self.path(name)
        return self


def find_bin_dir() -> Path:
    """The bin directory: $FERRY_TESTBIN, else the cache directory hack/testbin.sh computes."""
    env = os.environ.get("FERRY_TESTBIN")
    if env:
        return Path(env)
    if not TESTBIN_SCRIPT.is_file():
        raise MissingBinariesError(f"FERRY_TESTBIN is not set and {TESTBIN_SCRIPT} does not exist")
    proc = subprocess.run(
        ["bash", str(TESTBIN_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False, timeout=30
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MissingBinariesError(
            f"FERRY_TESTBIN is not set and `hack/testbin.sh --print-dir` failed: {proc.stderr.strip()}"
        )
    return Path(proc.stdout.strip())


def find_binaries(*required: str) -> TestBinaries:
    """The testbed's programs, checking that `required` ones exist (default: control plane + S3 server)."""
    names = required or (*CONTROL_PLANE, *S3_SERVER)
    return TestBinaries(find_bin_dir()).require(*names)
