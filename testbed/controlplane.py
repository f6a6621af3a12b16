"""A real Kubernetes control plane on 127.0.0.1 for Ferry's operator tests and `make dev-cluster`.

`ControlPlane(bin_dir, workdir)` starts, as local processes built by `make testbin`:

* etcd (one member, `--unsafe-no-fsync`: the data is thrown away anyway);
* kube-apiserver with TLS from `testbed.pki`, bearer-token authentication from a static token
  file (an admin token in `system:masters`), `Node,RBAC` authorization and the ServiceAccount
  issuer/key flags, so the TokenRequest API works and the operator can run under its chart's
  ServiceAccount identity (`service_account_kubeconfig`);
* kube-controller-manager with only the controllers Ferry's workloads need: job, garbage-collector,
  namespace, serviceaccount (+ token), ttl-after-finished, clusterrole-aggregation, the
  kube-root-ca.crt publisher, and deployment/replicaset for the operator's own Deployment.

There is no scheduler and no kubelet here: `testbed.kubelet` binds and runs pods. The
node-lifecycle controller is off, so the process kubelet's node needs no lease.

Ports are chosen at run time, every log goes to a file in the work dir, and the processes are stopped
(SIGTERM, then SIGKILL) on exit, including when start-up fails half-way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from testbed.binaries import TestBinaries
from testbed.pki import Pki, make_pki

ADMIN_USER = "ferry-admin"
SERVICE_CIDR = "10.0.0.0/24"

# Controller names as kube-controller-manager >= 1.28 spells them (older aliases are also accepted).
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "ttl-after-finished-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers tolerate the small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One long-running program with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A new session: a Ctrl-C in the terminal of `make dev-cluster` reaches our handler, which
            # stops the servers in order, instead of killing them all at once under us.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_running(self) -> None:
        """Raise with the end of the log if the program has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; end of {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


def wait_until(what: str, predicate: Any, timeout: float, procs: Sequence[ServerProcess] = ()) -> None:
    """Poll `predicate()` until it is truthy; fail fast if one of `procs` died meanwhile."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        for p in procs:
            p.check_running()
        try:
            if predicate():
                return
        except Exception as exc:  # the server is not up yet: connection refused, 5xx, ...
            last_error = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last_error!r})")


def write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str, user: str) -> Path:
    """A kubeconfig with the CA inline and a bearer token: usable by kubectl, kopf and the Python client."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ferry-testbed",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "ferry-testbed", "context": {"cluster": "ferry-testbed", "user": user}}],
        "current-context": "ferry-testbed",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started on enter and stopped on exit."""

    def __init__(
        self,
        bin_dir: Path | TestBinaries,
        workdir: Path,
        *,
        controllers: Sequence[str] = CONTROLLERS,
        start_timeout: float = 60.0,
    ):
        self.bins = bin_dir if isinstance(bin_dir, TestBinaries) else TestBinaries(Path(bin_dir))
        self.workdir = Path(workdir)
        self.controllers = tuple(controllers)
        self.start_timeout = start_timeout
        self.admin_token = secrets.token_hex(24)
        self.procs: list[ServerProcess] = []
        self.etcd_url = ""
        self.url = ""
        self.pki: Pki | None = None
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self._ssl: ssl.SSLContext | None = None
        self._apiserver: ServerProcess | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        etcd_bin = self.bins.path("etcd")
        apiserver_bin = self.bins.path("kube-apiserver")
        kcm_bin = self.bins.path("kube-controller-manager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        self.pki = pki = make_pki(self.workdir / "pki")
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        deadline = time.monotonic() + self.start_timeout

        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                etcd_bin,
                "--name=ferry",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=ferry={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        wait_until("etcd", self._etcd_healthy, deadline - time.monotonic(), [etcd])

        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},ferry-admin-uid,"system:masters"\n')
        tokens.chmod(0o600)
        api_port = free_port()
        self.url = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                apiserver_bin,
                f"--etcd-servers={self.etcd_url}",
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
        )
        wait_until("kube-apiserver", self._apiserver_ready, deadline - time.monotonic(), [etcd, apiserver])
        self._apiserver = apiserver
        write_kubeconfig(self.admin_kubeconfig, self.url, pki.ca_cert, self.admin_token, ADMIN_USER)

        # The controller manager acts as the admin (system:masters) rather than per-controller
        # ServiceAccounts: one token, no bootstrap race for the controllers' own credentials.
        kcm_kubeconfig = write_kubeconfig(
            self.workdir / "kcm.kubeconfig", self.url, pki.ca_cert, self.admin_token, ADMIN_USER
        )
        kcm = self._spawn(
            "kube-controller-manager",
            [
                kcm_bin,
                f"--kubeconfig={kcm_kubeconfig}",
                # No HTTPS endpoint (health, metrics): readiness is judged from its effects below.
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Finished pods of Jobs are Ferry's evidence (termination messages); keep them.
                "--terminated-pod-gc-threshold=12500",
                "--v=1",
            ],
            logs / "kube-controller-manager.log",
        )
        # The serviceaccount controller creating "default" in "default" shows the controllers run;
        # pods cannot be admitted in a namespace until its default ServiceAccount exists.
        wait_until(
            "kube-controller-manager",
            lambda: self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default") is not None,
            deadline - time.monotonic(),
            [etcd, apiserver, kcm],
        )

    def stop(self) -> None:
        # Reverse order: controllers first, etcd last, so nobody logs storms of connection errors.
        errors: list[BaseException] = []
        for p in reversed(self.procs):
            try:
                p.stop()
            except BaseException as exc:
                errors.append(exc)
        self.procs.clear()
        if errors:
            raise errors[0]

    def restart_apiserver(self, down_seconds: float = 3.0) -> None:
        """Stop kube-apiserver (SIGTERM), leave it down for `down_seconds`, start it again on the same
        address and wait until it is ready: what clients see during an upgrade or a crash loop."""
        apiserver = self._apiserver
        if apiserver is None:
            raise RuntimeError("the control plane is not started")
        apiserver.stop()
        time.sleep(down_seconds)
        apiserver.start()
        wait_until("kube-apiserver after a restart", self._apiserver_ready, self.start_timeout, self.procs)

    def check_running(self) -> None:
        """Raise if any control-plane process has exited."""
        for p in self.procs:
            p.check_running()

    # -- API access ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> Any:
        """One API call as the admin; returns the decoded JSON, or None for 404."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            detail = err.read().decode(errors="replace")[:1000]
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {detail}") from err
        return json.loads(raw) if raw else {}

    def service_account_token(
        self, namespace: str, name: str, *, expiration_seconds: int = 86400, audiences: Sequence[str] = ()
    ) -> str:
        """A token for ServiceAccount `namespace/name`, minted with the TokenRequest API."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        result = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        if result is None:
            raise RuntimeError(f"ServiceAccount {namespace}/{name} does not exist")
        token: str = result["status"]["token"]
        return token

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path | None = None,
        *,
        expiration_seconds: int = 86400,
        server: str | None = None,
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount `namespace/name` (it must exist),
        against this apiserver or `server` (a proxy in front of it)."""
        token = self.service_account_token(namespace, name, expiration_seconds=expiration_seconds)
        assert self.pki is not None, "the control plane is not started"
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            path, server or self.url, self.pki.ca_cert, token, f"system:serviceaccount:{namespace}:{name}"
        )

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[Any], log_path: Path) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "KUBECONFIG"))}
        proc = ServerProcess(name, argv, log_path, env=env)
        self.procs.append(proc)
        proc.start()
        return proc

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        req = urllib.request.Request(self.url + "/readyz")
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        with urllib.request.urlopen(req, context=self._ssl, timeout=5) as resp:
            return bool(resp.status == 200)
