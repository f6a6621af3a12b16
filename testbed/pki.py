"""Throwaway PKI for the testbed's control plane, made with the `openssl` command line.

`testbed.controlplane` needs a CA, a serving certificate for kube-apiserver on 127.0.0.1, and a
key pair that signs and verifies ServiceAccount tokens. Clients authenticate with bearer tokens
(a static token file), so no client certificates are issued. Everything lives in one directory
of the control plane's work dir and is valid for a day: it never outlives a test session or a
`make dev-cluster` run.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The in-cluster names a client may use for the apiserver, plus the first address of the service
# range the control plane configures (the "kubernetes" Service's ClusterIP).
_APISERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
_APISERVER_IPS = ("127.0.0.1", "10.0.0.1")


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    sa_key: Path  # private key: signs ServiceAccount tokens (apiserver) and legacy token secrets (kcm)
    sa_pub: Path  # public key: verifies them


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def make_pki(directory: Path, days: int = 1) -> Pki:
    """Create a CA, an apiserver serving certificate and a ServiceAccount key pair in `directory`."""
    if shutil.which("openssl") is None:
        raise RuntimeError(
            "the testbed needs the openssl command line tool (Debian: apt-get install openssl)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", str(days),
        "-subj", "/CN=ferry-testbed-ca", "-out", "ca.crt", cwd=d,
    )  # fmt: skip
    _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=d)
    _openssl(
        "req", "-new", "-key", "apiserver.key", "-subj", "/CN=kube-apiserver", "-out", "apiserver.csr", cwd=d
    )
    san = ",".join([*(f"DNS:{n}" for n in _APISERVER_DNS), *(f"IP:{ip}" for ip in _APISERVER_IPS)])
    (d / "apiserver.ext").write_text(
        f"subjectAltName={san}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", str(days), "-sha256", "-extfile", "apiserver.ext", "-out", "apiserver.crt", cwd=d,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for key in ("ca.key", "apiserver.key", "sa.key"):
        (d / key).chmod(0o600)
    return Pki(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        apiserver_cert=d / "apiserver.crt",
        apiserver_key=d / "apiserver.key",
        sa_key=d / "sa.key",
        sa_pub=d / "sa.pub",
    )
