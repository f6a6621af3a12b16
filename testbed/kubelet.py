"""A "process kubelet": runs the testbed's pods as local processes so Jobs really do their work.

`ProcessKubelet(kubeconfig, workdir)` sits next to `testbed.controlplane` (which has no
scheduler and no kubelet). With `engine=DockerEngine(docker_host)` (from `testbed.containers`) it
runs in container mode instead: each container runs from its image in a real engine (see "Container
mode" below). In background threads it:

* registers one Node (`ferry-proc-0` by default) with Ready status, capacity and the host's
  address, and removes the not-ready taint; the node-lifecycle controller is off, so no lease;
* binds every pending pod (empty `spec.nodeName`, default scheduler) to that node through the
  binding subresource; node selectors, affinity, taints and resources are not considered
  (`schedule=False` binds nothing: then only pods naming the node in `spec.nodeName` run here);
* runs each pod: init containers one after another, then all containers at once, each as a
  subprocess of `command + args` (the image is ignored; a container without `command` fails with
  reason StartError, because image entrypoints are unknown);
* writes kubelet-shaped pod status: phase Pending -> Running -> Succeeded/Failed, the conditions
  PodScheduled/Initialized/ContainersReady/Ready, container states with exit codes, reasons,
  timestamps, restart counts and termination messages; a terminal pod never moves back;
* honours deletion: SIGTERM, `terminationGracePeriodSeconds`, SIGKILL, terminal status (Failed if
  it was still running), then a delete with grace 0 and a UID precondition.

Mapping rules of the process mode (documented here because they differ from a real node):

* Programs: if the basename of `command[0]` is `python`, `python3` or `python3.N`, the testbed's
  own interpreter runs it (`sys.executable`, the venv's python under `make`); if it is `ferry`, the
  `ferry` script next to that interpreter runs it. Anything else is looked up on the host's PATH
  (`command_map` adds more mappings).
* Volumes: configMap, secret (with `items`, `defaultMode`/`mode`), emptyDir, downwardAPI, projected
  (configMap, secret, downwardAPI, serviceAccountToken) and hostPath volumes become directories under
  the pod's directory `<workdir>/pods/<namespace>_<name>_<uid8>/volumes/<volume>` (hostPath: the host
  path itself). There are no mount namespaces, so every string of `command`, `args`, `workingDir`
  and env values that starts with a container's `mountPath` (at a path boundary, also after `=` as
  in `--plan=/etc/ferry/plan`) is rewritten to the local directory (honouring `subPath`).
* Termination messages: `terminationMessagePath` is mapped the same way to
  `<pod dir>/termination/<container>`, and that path is also exported as
  `FERRY_TERMINATION_MESSAGE_PATH`. Up to 4096 bytes of it become `state.terminated.message`;
  with `FallbackToLogsOnError` a failed container with an empty message gets the end of its log.
* Pod IP: each running pod gets its own loopback address 127.0.0.N (N = 2..254, reused), written to
  `status.podIP`, resolvable by `fieldRef: status.podIP` and exported as `FERRY_POD_IP`, so a
  worker can bind its status server there. `status.hostIP` is 127.0.0.1.
* Environment: the process gets only what the pod spec declares (env, envFrom, fieldRef incl.
  `JOB_COMPLETION_INDEX`, secretKeyRef, configMapKeyRef, resourceFieldRef) plus `PATH`, `HOME`
  (the pod directory), `HOSTNAME`, `KUBERNETES_SERVICE_HOST/PORT` (the real apiserver on
  127.0.0.1) and the two `FERRY_*` variables above. A missing non-optional Secret/ConfigMap key
  keeps the container waiting (CreateContainerConfigError) and is retried every second.
* Output: stdout and stderr go to `<pod dir>/logs/<container>.log` (appended across restarts).
* Restarts: `restartPolicy: OnFailure`/`Always` restart the process in place, with a short backoff
  (0.5 s doubling to 10 s, not the kubelet's 10 s to 5 min) and `restartCount`/`lastState` updated.

What it does not do: pull or run images, probes (a started container is Ready), resource limits
(no cgroups; limits only feed `resourceFieldRef`), network isolation or Services, mount/PID/user
namespaces, securityContext, lifecycle hooks, in-cluster configuration for code that reads
`/var/run/secrets/kubernetes.io/serviceaccount/` by a hard-coded path (the token is materialised
and the mountPath rewritten in args/env only; give such programs a KUBECONFIG instead), native sidecars (init containers with
`restartPolicy: Always`), ephemeral containers, `kubectl logs/exec`, or eviction.

Container mode (`engine=`; the docker calls live in `testbed.containers`), where it differs from the above:

* Programs: each container is a container of the engine, created from its `image`; `command` replaces
  the image's ENTRYPOINT (and its CMD), `args` alone replace the CMD, as in Kubernetes. No path is
  rewritten and no program is mapped. `workingDir` is the container's working directory.
* Images are never pulled, whatever `imagePullPolicy` says: an image that is not in the engine keeps
  the container waiting with reason ErrImageNeverPull (`Container image "X" is not present with pull
  policy of Never`), retried every second, so building the image later lets the pod start.
* Network: `--network host` for every container, never a bridge; the pod IP is still the pod's
  own 127.0.0.N (`status.podIP`, `FERRY_POD_IP`), reachable from the host since the network is the
  host's. Ports are not isolated between pods.
* Volumes are materialised as above and bind-mounted at each `mountPath` (`readOnly`, `subPath`
  without leaving the volume; configMap, secret, downwardAPI and projected volumes are always
  read-only). emptyDir is mode 0777; with `fsGroup` volumes become group-owned by it; the projected
  ServiceAccount token is 0600 owned by the pod's common `runAsUser` (or the volume's defaultMode),
  so in-cluster clients find it at /var/run/secrets/kubernetes.io/serviceaccount as admission put it.
* Termination messages: `<pod dir>/termination/<container>` (mode 0666) is bind-mounted at
  `terminationMessagePath`; `FERRY_TERMINATION_MESSAGE_PATH`, `PATH` and `HOME` are not set (the
  image's own `PATH` and user apply).
* Resources: `limits.memory` is the cgroup memory limit (`--memory`, swap equal: none),
  `limits.cpu` the CPU quota (`--cpus`), `requests.cpu` the CPU shares; `--pids-limit 4096`.
  A container the kernel OOM-killed ends with reason OOMKilled and the engine's exit code (137).
* securityContext (container over pod): runAsUser/runAsGroup, supplementalGroups and fsGroup (as
  extra groups), runAsNonRoot (checked against the image's user, CreateContainerConfigError as a
  kubelet), readOnlyRootFilesystem, capabilities drop/add, allowPrivilegeEscalation: false
  (no-new-privileges) and seccompProfile Unconfined; otherwise the engine's default seccomp profile.
  Privileged containers are refused (CreateContainerConfigError).
* PID 1 is the program (no init process); deletion sends SIGTERM with `docker kill`, then SIGKILL.
  Output goes to the log file through the attached client, while the container runs.
* Every container carries the label `dev.ferry.testbed=<kubelet id>`: the kubelet removes its own
  at stop, and at start those of kubelets whose process is gone. The node reports
  `containerRuntimeVersion: docker://<version>`; capacity stays the host's.

Container mode does not do either: pod networking (no network namespace, no Services), image
pulls, sharing of PID/IPC namespaces between a pod's containers, hostPID/hostIPC, privileged
containers, AppArmor/SELinux options, sysctls or subPathExpr.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import yaml

from testbed import containers
from testbed.containers import ContainerProcess, DockerEngine, EngineError, SpecError

DEFAULT_NODE = "ferry-proc-0"
MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")

Obj = dict[str, Any]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeApi:
    """A small JSON-over-HTTPS client: plain requests give full control over watches and status."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext, headers: Mapping[str, str]):
        self.server = server.rstrip("/")
        self.ssl = ssl_context
        self.headers = dict(headers)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeApi:
        config = yaml.safe_load(Path(path).read_text())
        ctx_name = config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        context = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            context.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif "certificate-authority" in cluster:
            context.load_verify_locations(cafile=cluster["certificate-authority"])
        headers = {}
        if "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        elif "client-certificate-data" in user:
            tmp = Path(tempfile.mkdtemp(prefix="ferry-kubelet-cred-"))
            (tmp / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
            (tmp / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
            context.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
            shutil.rmtree(tmp)
        return cls(cluster["server"], context, headers)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")[:2000]) from err
        return json.loads(raw) if raw else {}

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def watch(
        self, path: str, params: Mapping[str, str], on_open: Callable[[Any], None] | None = None
    ) -> Iterator[Obj]:
        """Yield watch events until the server ends the watch (timeoutSeconds) or the socket closes."""
        q = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        req = urllib.request.Request(
            self.server + path + "?" + urllib.parse.urlencode(q), headers=self.headers, method="GET"
        )
        try:
            resp = urllib.request.urlopen(req, context=self.ssl, timeout=90)
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")[:2000]) from err
        with resp:
            if on_open:
                on_open(resp)
            for line in resp:
                if line.strip():
                    yield json.loads(line)


def _path_for(pod: Obj, sub: str = "") -> str:
    md = pod["metadata"]
    return f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}{sub}"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined references are replaced, `$$` escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, text)


def rewrite_paths(text: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Replace container paths under a mountPath by the local directory (longest mountPath first).

    One pass over the text: a replaced path is never scanned again, so a mount at `/tmp` cannot
    rewrite the local directory of another mount when the pods' directories live under `/tmp`.
    """
    if not mounts:
        return text
    targets = {(cp.rstrip("/") or "/"): local for cp, local in mounts}
    ordered = sorted(targets, key=len, reverse=True)
    pattern = r"(?<![\w.\-/])(" + "|".join(re.escape(cp) for cp in ordered) + r")(?=$|/|[^\w.\-])"
    return re.sub(pattern, lambda m: targets[m.group(1)], text)


class ConfigError(Exception):
    """A container's configuration cannot be built yet (missing Secret/ConfigMap key): kubelet waits."""


@dataclass
class ContainerRun:
    """One container of a pod and the state the status is built from."""

    spec: Obj
    init: bool
    log_path: Path
    message_path: Path
    proc: subprocess.Popen[bytes] | ContainerProcess | None = None
    image_id: str = ""
    started_at: str | None = None
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    next_start: float = 0.0
    backoff: float = 0.5

    @property
    def name(self) -> str:
        name: str = self.spec["name"]
        return name

    @property
    def terminated(self) -> Obj | None:
        t: Obj | None = self.state.get("terminated")
        return t

    def status(self) -> Obj:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": self.image_id,
            "containerID": _container_id(self.proc),
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodRunner:
    """Runs one pod to a terminal phase (or until it is deleted) in its own thread."""

    def __init__(self, kubelet: ProcessKubelet, pod: Obj, pod_ip: str):
        self.kubelet = kubelet
        self.api = kubelet.api
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.pod_ip = pod_ip
        md = pod["metadata"]
        self.dir = kubelet.workdir / "pods" / f"{md['namespace']}_{md['name']}_{self.uid[:8]}"
        self.delete_grace: float | None = None
        self.done = threading.Event()
        self.wake = threading.Event()
        self.phase = "Pending"
        self.start_time = now()
        self.init_done = False
        self.conditions: dict[str, Obj] = {}
        self.mounts: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self._main, name=f"pod-{md['name']}", daemon=True)
        spec = pod["spec"]
        self.runs = [self._container(c, True) for c in spec.get("initContainers", [])] + [
            self._container(c, False) for c in spec["containers"]
        ]

    def _container(self, c: Obj, init: bool) -> ContainerRun:
        return ContainerRun(
            spec=c,
            init=init,
            log_path=self.dir / "logs" / f"{c['name']}.log",
            message_path=self.dir / "termination" / c["name"],
        )

    # -- control from the watch thread ---------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def request_delete(self, grace: float) -> None:
        if self.delete_grace is None or grace < self.delete_grace:
            self.delete_grace = grace
        self.wake.set()

    def stop_processes(self) -> None:
        """Kill everything at once (kubelet shutdown); no status is written."""
        self.wake.set()
        for r in self.runs:
            _kill(r.proc, signal.SIGKILL)

    # -- the pod's life ------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:
            self.kubelet.log(f"pod {self._ref()}: runner failed: {exc!r}")
            # A bug here must not leave the pod Running forever: report it failed like a lost node would.
            if self.phase not in ("Succeeded", "Failed") and not self._stopping():
                self.phase = "Failed"
                with contextlib.suppress(Exception):
                    self._write_status()
        finally:
            for r in self.runs:
                _kill(r.proc, signal.SIGKILL)
                if isinstance(r.proc, ContainerProcess):
                    r.proc.remove()
            self.done.set()
            self.kubelet.release_ip(self.pod_ip)

    def _ref(self) -> str:
        md = self.pod["metadata"]
        return f"{md['namespace']}/{md['name']}"

    def _stopping(self) -> bool:
        return self.kubelet.stopping.is_set()

    def _run(self) -> None:
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        self._set_condition("PodScheduled", True)
        self._set_condition("Initialized", False, "ContainersNotInitialized")
        self._set_condition("ContainersReady", False, "ContainersNotReady")
        self._set_condition("Ready", False, "ContainersNotReady")
        self._write_status()
        self._prepare_volumes()

        for run in (r for r in self.runs if r.init):
            while True:
                if self.delete_grace is not None or self._stopping():
                    return self._finish_deleted()
                if not self._start(run):
                    self._sleep(1.0)
                    continue
                self._write_status()
                while run.proc is not None and run.proc.poll() is None:
                    if self.delete_grace is not None or self._stopping():
                        return self._finish_deleted()
                    self._sleep(0.1)
                self._record_exit(run)
                if run.terminated and run.terminated["exitCode"] == 0:
                    break
                if policy == "Never":
                    self.phase = "Failed"
                    self._write_final_status()
                    return self._after_terminal()
                self._schedule_restart(run)
                self._write_status()
                self._sleep_until(run.next_start)
        self.init_done = True
        self._set_condition("Initialized", True)

        mains = [r for r in self.runs if not r.init]
        self.phase = "Running"
        dirty = True
        while True:
            if self.delete_grace is not None or self._stopping():
                return self._finish_deleted()
            for run in mains:
                if run.proc is not None and run.proc.poll() is not None and not run.terminated:
                    self._record_exit(run)
                    if self._wants_restart(run, policy):
                        self._schedule_restart(run)
                    dirty = True
                never_started = run.proc is None and not run.terminated
                restart = run.terminated is not None and self._wants_restart(run, policy)
                if (never_started or restart) and time.monotonic() >= run.next_start:
                    if not self._start(run):
                        run.next_start = time.monotonic() + 1.0  # configuration missing: retry
                        continue
                    dirty = True
                    if run.terminated and self._wants_restart(run, policy):  # it could not start
                        run.restart_count += 1
                        self._schedule_restart(run)
            if all(r.terminated and not self._wants_restart(r, policy) for r in mains):
                failed = any(r.terminated and r.terminated["exitCode"] != 0 for r in mains)
                self.phase = "Failed" if failed else "Succeeded"
                self._write_final_status()
                return self._after_terminal()
            if dirty:
                # Not written (apiserver down or restarting): try again on the next tick, as the
                # kubelet's status manager does, so no transition is lost.
                dirty = not self._write_status()
            self._sleep(0.1)

    def _wants_restart(self, run: ContainerRun, policy: str) -> bool:
        t = run.terminated
        if t is None:
            return False
        return policy == "Always" or (policy == "OnFailure" and t["exitCode"] != 0)

    def _schedule_restart(self, run: ContainerRun) -> None:
        run.next_start = time.monotonic() + run.backoff
        run.backoff = min(run.backoff * 2, 10.0)

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def _sleep_until(self, deadline: float) -> None:
        while time.monotonic() < deadline and self.delete_grace is None and not self._stopping():
            self._sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _write_final_status(self) -> None:
        """A terminal phase must reach the apiserver, or the pod's Job waits forever: retry until it is
        written, the pod is deleted or the kubelet stops."""
        while not self._write_status():
            if self.delete_grace is not None or self._stopping():
                return
            self._sleep(1.0)

    def _after_terminal(self) -> None:
        # A pod that finished on its own waits for its deletion (e.g. by the garbage collector)
        # in the watch thread; a pod that was already being deleted is removed now.
        if self.delete_grace is not None:
            self.kubelet.finalize_delete(self.pod)

    def _finish_deleted(self) -> None:
        if self._stopping():
            return
        grace = self.delete_grace or 0.0
        running = [r for r in self.runs if r.proc is not None and r.proc.poll() is None]
        for r in running:
            _kill(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(r.proc.poll() is None for r in running if r.proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in running:
            _kill(r.proc, signal.SIGKILL)
            if r.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(5)
            self._record_exit(r)
        mains = [r for r in self.runs if not r.init]
        all_ok = self.init_done and all(r.terminated and r.terminated["exitCode"] == 0 for r in mains)
        self.phase = "Succeeded" if all_ok else "Failed"
        for r in self.runs:
            if not r.terminated and "waiting" in r.state:
                # Never started: kubelet reports such containers as terminated with ContainerStatusUnknown.
                r.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                    }
                }
        self._write_status()
        self.kubelet.finalize_delete(self.pod)

    # -- containers ----------------------------------------------------------------------------

    def _start(self, run: ContainerRun) -> bool:
        """Start `run`'s process; False if its configuration is not available yet."""
        c = run.spec
        try:
            env = self._env(c)
        except ConfigError as exc:
            run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self._write_status()
            return False
        if self.kubelet.engine is not None:
            return self._start_container(run, self.kubelet.engine, env)
        mounts = self._mounts_for(c, run)
        argv = [expand(a, env) for a in [*c.get("command", []), *c.get("args", [])]]
        argv = [rewrite_paths(a, mounts) for a in argv]
        # Paths the kubelet itself provides are host paths already; only the pod's own values map.
        own = self._host_env(c)
        env = {k: v if own.get(k) == v else rewrite_paths(v, mounts) for k, v in env.items()}
        cwd = rewrite_paths(c["workingDir"], mounts) if c.get("workingDir") else str(self.dir)
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        run.message_path.parent.mkdir(parents=True, exist_ok=True)
        run.message_path.write_bytes(b"")
        if run.state.get("terminated"):
            run.last_state = {"terminated": run.state["terminated"]}
        started = now()
        with run.log_path.open("ab") as log:
            try:
                if not c.get("command"):
                    raise FileNotFoundError(
                        "the container has no command (image entrypoints are unknown here)"
                    )
                Path(cwd).mkdir(parents=True, exist_ok=True)
                run.proc = subprocess.Popen(
                    self.kubelet.map_command(argv),
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                _start_failed(run, log, f"cannot start {argv!r}", exc, started)
                return True
        run.started_at = started
        run.state = {"running": {"startedAt": started}}
        return True

    def _start_container(self, run: ContainerRun, engine: DockerEngine, env: dict[str, str]) -> bool:
        """Container mode: create and start `run` from its image; False while it cannot start yet."""
        c = run.spec
        image = str(c.get("image", ""))

        def wait(reason: str, message: str) -> bool:
            if run.state.get("waiting", {}).get("reason") != reason:
                self.kubelet.log(f"pod {self._ref()} container {run.name}: {reason}: {message}")
            if run.terminated:  # a restart that cannot happen yet: keep what the last run did
                run.last_state = {"terminated": run.terminated}
            run.proc = None
            run.state = {"waiting": {"reason": reason, "message": message}}
            self._write_status()
            return False

        try:
            info = engine.image(image)
        except EngineError as exc:
            return wait("ImageInspectError", str(exc))
        if info is None:
            # Nothing is ever pulled here, whatever imagePullPolicy says: the image must be built locally.
            return wait(
                "ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never'
            )
        try:
            spec = containers.container_spec(
                self.pod,
                c,
                info,
                env=env,
                command=[expand(a, env) for a in c.get("command") or []],
                args=[expand(a, env) for a in c.get("args") or []],
                volumes_dir=self.dir / "volumes",
                message_path=run.message_path,
                labels=self.kubelet.container_labels(self.pod, run.name),
                attempt=run.restart_count,
            )
        except (SpecError, ValueError) as exc:
            return wait("CreateContainerConfigError", str(exc))
        run.image_id = f"docker://{info.get('Id', '')}"
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        containers.prepare_message_file(run.message_path)
        if run.state.get("terminated"):
            run.last_state = {"terminated": run.state["terminated"]}
        started = now()
        with run.log_path.open("ab") as log:
            try:
                run.proc = engine.run(spec, log)
            except EngineError as exc:
                _start_failed(run, log, f"cannot start container {spec.name}", exc, started)
                return True
        run.started_at = started
        run.state = {"running": {"startedAt": started}}
        return True

    def _record_exit(self, run: ContainerRun) -> None:
        proc = run.proc
        if proc is None or proc.returncode is None or run.terminated:
            return
        if isinstance(proc, ContainerProcess):
            # The engine knows how it ended (OOM kill, start error); the container goes once read.
            ended = proc.finish()
        else:
            code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
            ended = containers.ContainerExit(code, "Completed" if code == 0 else "Error")
        code, reason = ended.exit_code, ended.reason
        message = ended.message[:MESSAGE_LIMIT] or _read_limited(run.message_path, MESSAGE_LIMIT)
        if not message and code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = _log_tail(run.log_path)
        term: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": ended.started_at or run.started_at or now(),
            "finishedAt": ended.finished_at or now(),
            "containerID": _container_id(proc),
        }
        if not isinstance(proc, ContainerProcess) and proc.returncode < 0:
            term["signal"] = -proc.returncode
        if message:
            term["message"] = message
        run.state = {"terminated": term}
        policy = self._policy()
        # Init containers are re-run only after a failure, whatever the policy (unless Never).
        will_restart = (code != 0 and policy != "Never") if run.init else self._wants_restart(run, policy)
        if will_restart and self.delete_grace is None:  # a pod being deleted is not restarted
            run.restart_count += 1

    def _policy(self) -> str:
        policy: str = self.pod["spec"].get("restartPolicy", "Always")
        return policy

    # -- environment and volumes ---------------------------------------------------------------

    def _field(self, path: str) -> str:
        md, spec = self.pod["metadata"], self.pod["spec"]
        simple: dict[str, str] = {
            "metadata.name": md["name"],
            "metadata.namespace": md["namespace"],
            "metadata.uid": md["uid"],
            "spec.nodeName": self.kubelet.node_name,
            "spec.serviceAccountName": str(spec.get("serviceAccountName", "")),
            "status.podIP": self.pod_ip,
            "status.podIPs": self.pod_ip,
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        m = _FIELD_PATH.match(path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = md.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        raise ConfigError(f"unsupported fieldRef {path!r}")

    def _resource(self, c: Obj, ref: Obj) -> str:
        target = c
        if ref.get("containerName"):
            target = next((x for x in self.runs if x.name == ref["containerName"]), self.runs[0]).spec
        kind, _, res = ref["resource"].partition(".")
        value = (target.get("resources", {}).get(kind) or {}).get(res)
        if value is None and kind == "limits":
            value = self.kubelet.allocatable.get(res)  # no limit: the node's allocatable, as kubelet does
        if value is None:
            value = "0"
        from kubernetes.utils import parse_quantity

        parse: Callable[[str], Any] = parse_quantity
        amount = Decimal(parse(value)) / Decimal(parse(ref.get("divisor", "1")))
        return str(int(amount.to_integral_value(rounding=ROUND_CEILING)))

    def _key_ref(self, kind: str, ref: Obj) -> str | None:
        ns = self.pod["metadata"]["namespace"]
        obj = self.kubelet.get_object(kind, ns, ref["name"])
        value = _object_data(kind, obj).get(ref["key"]) if obj else None
        if value is None and not ref.get("optional"):
            what = "secret" if kind == "secrets" else "configmap"
            if obj is None:
                raise ConfigError(f'{what} "{ref["name"]}" not found')
            raise ConfigError(f"couldn't find key {ref['key']} in {what.capitalize()} {ns}/{ref['name']}")
        return None if value is None else value.decode(errors="replace")

    def _host_env(self, c: Obj) -> dict[str, str]:
        """What the kubelet adds to every container, before the pod's own env."""
        md = self.pod["metadata"]
        host, port = self.kubelet.api_host_port
        env = {
            "HOSTNAME": self.pod["spec"].get("hostname") or md["name"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "FERRY_POD_IP": self.pod_ip,
        }
        if self.kubelet.engine is not None:
            return env  # PATH and HOME come from the image; the message file is at its real path
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.dir),
            **env,
            "FERRY_TERMINATION_MESSAGE_PATH": str(self.dir / "termination" / c["name"]),
        }

    def _env(self, c: Obj) -> dict[str, str]:
        md = self.pod["metadata"]
        env = self._host_env(c)
        ns = md["namespace"]
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                if key not in src:
                    continue
                ref = src[key]
                obj = self.kubelet.get_object(kind, ns, ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
                for k, v in _object_data(kind, obj).items():
                    env[prefix + k] = v.decode(errors="replace")
        for var in c.get("env", []):
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            vf = var["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                value = self._resource(c, vf["resourceFieldRef"])
            elif "secretKeyRef" in vf:
                value = self._key_ref("secrets", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = self._key_ref("configmaps", vf["configMapKeyRef"])
            else:
                raise ConfigError(f"unsupported valueFrom in env {name}")
            if value is not None:
                env[name] = value
        return env

    def _prepare_volumes(self) -> None:
        """Materialise the pod's volumes; a missing optional source becomes an empty directory."""
        for vol in self.pod["spec"].get("volumes", []):
            name = vol["name"]
            local = self.dir / "volumes" / name
            if "hostPath" in vol:
                continue
            local.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    self._fill_volume(vol, local)
                    break
                except ConfigError as exc:
                    # kubelet keeps such pods in ContainerCreating and retries.
                    for r in self.runs:
                        r.state = {"waiting": {"reason": "ContainerCreating", "message": str(exc)}}
                    self._write_status()
                    if self.delete_grace is not None or self._stopping():
                        return
                    self._sleep(1.0)
        if self.kubelet.engine is not None:
            containers.settle_volume_permissions(self.pod, self.dir / "volumes")

    def _fill_volume(self, vol: Obj, local: Path) -> None:
        ns = self.pod["metadata"]["namespace"]
        for kind, key in (("configmaps", "configMap"), ("secrets", "secret")):
            if key in vol:
                src = vol[key]
                obj_name = src.get("name") or src.get("secretName")
                self._write_keyed(kind, ns, obj_name, src, local, src.get("defaultMode", 0o644))
        if "downwardAPI" in vol:
            self._write_downward(
                vol["downwardAPI"].get("items", []), local, vol["downwardAPI"].get("defaultMode")
            )
        if "projected" in vol:
            mode = vol["projected"].get("defaultMode", 0o644)
            for src in vol["projected"].get("sources", []):
                if "configMap" in src:
                    self._write_keyed(
                        "configmaps", ns, src["configMap"]["name"], src["configMap"], local, mode
                    )
                if "secret" in src:
                    self._write_keyed("secrets", ns, src["secret"]["name"], src["secret"], local, mode)
                if "downwardAPI" in src:
                    self._write_downward(src["downwardAPI"].get("items", []), local, mode)
                if "serviceAccountToken" in src:
                    sat = src["serviceAccountToken"]
                    token = self.kubelet.service_account_token(self.pod, sat)
                    _write_file(local / sat["path"], token.encode(), 0o600)

    def _write_keyed(self, kind: str, ns: str, name: str, src: Obj, local: Path, mode: int) -> None:
        obj = self.kubelet.get_object(kind, ns, name)
        if obj is None:
            if src.get("optional"):
                return
            raise ConfigError(f'{kind[:-1]} "{name}" not found')
        data = _object_data(kind, obj)
        items = src.get("items")
        if items is None:
            items = [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if src.get("optional"):
                    continue
                raise ConfigError(f"key {item['key']} not found in {kind[:-1]} {ns}/{name}")
            _write_file(local / item["path"], data[item["key"]], item.get("mode", mode))

    def _write_downward(self, items: Sequence[Obj], local: Path, mode: int | None) -> None:
        for item in items:
            if "fieldRef" in item:
                value = self._field(item["fieldRef"]["fieldPath"])
            else:
                value = self._resource(self.runs[0].spec, item["resourceFieldRef"])
            _write_file(local / item["path"], value.encode(), item.get("mode", mode or 0o644))

    def _mounts_for(self, c: Obj, run: ContainerRun) -> list[tuple[str, str]]:
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        mounts: list[tuple[str, str]] = []
        for vm in c.get("volumeMounts", []):
            vol = volumes.get(vm["name"], {})
            base = Path(vol["hostPath"]["path"]) if "hostPath" in vol else self.dir / "volumes" / vm["name"]
            local = base / vm["subPath"] if vm.get("subPath") else base
            mounts.append((vm["mountPath"], str(local)))
        mounts.append((c.get("terminationMessagePath", "/dev/termination-log"), str(run.message_path)))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        return mounts

    # -- status --------------------------------------------------------------------------------

    def _set_condition(self, kind: str, status: bool, reason: str = "") -> None:
        value = "True" if status else "False"
        old = self.conditions.get(kind)
        if old and old["status"] == value and old.get("reason", "") == reason:
            return
        cond: Obj = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now()}
        if reason:
            cond["reason"] = reason
        self.conditions[kind] = cond

    def _write_status(self) -> bool:
        """Write the pod's status; False when the apiserver could not be reached (retry later)."""
        mains = [r for r in self.runs if not r.init]
        ready = self.phase == "Running" and all("running" in r.state for r in mains)
        if self.phase in ("Succeeded", "Failed"):
            reason = "PodCompleted"
        else:
            reason = "" if ready else "ContainersNotReady"
        self._set_condition("ContainersReady", ready, reason)
        self._set_condition("Ready", ready, reason)
        phase = self.phase
        if phase == "Running" and all("waiting" in r.state and not r.last_state for r in mains):
            # As a kubelet reports it: a pod none of whose containers ever started is still Pending
            # (ErrImageNeverPull, CreateContainerConfigError).
            phase = "Pending"
        status: Obj = {
            "phase": phase,
            "conditions": [
                self.conditions[k] for k in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": [r.status() for r in mains],
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        inits = [r.status() for r in self.runs if r.init]
        if inits:
            status["initContainerStatuses"] = inits
        try:
            self.api.merge_patch(_path_for(self.pod, "/status"), {"status": status})
        except ApiError as exc:
            if exc.status != 404:
                self.kubelet.log(f"pod {self._ref()}: status update failed: {exc}")
                return False
        except OSError as exc:
            self.kubelet.log(f"pod {self._ref()}: status update failed: {exc!r}")
            return False
        return True


def _start_failed(run: ContainerRun, log: Any, what: str, exc: Exception, started: str) -> None:
    """A container that could not start ends as a kubelet reports it: terminated, StartError, 128."""
    log.write(f"process kubelet: {what}: {exc}\n".encode())
    run.proc = None
    run.state = {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "message": str(exc)[:MESSAGE_LIMIT],
            "startedAt": started,
            "finishedAt": now(),
        }
    }


def _kill(proc: subprocess.Popen[bytes] | ContainerProcess | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    if isinstance(proc, ContainerProcess):
        proc.send_signal(sig)  # `docker kill --signal`: to the container's PID 1
        return
    # The whole process group: a shell wrapper's children get the signal too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _container_id(proc: subprocess.Popen[bytes] | ContainerProcess | None) -> str:
    if isinstance(proc, ContainerProcess):
        return proc.uri
    return f"ferry-proc://{proc.pid}" if proc else ""


def _object_data(kind: str, obj: Obj) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if kind == "secrets":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = v.encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode & 0o777)


def _read_limited(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines()[-FALLBACK_LOG_LINES:]
    return b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")


def _host_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


class ProcessKubelet:
    """Registers a node, binds pending pods to it and runs them as local processes (see module doc)."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        node_name: str = DEFAULT_NODE,
        python: str = sys.executable,
        command_map: Mapping[str, Sequence[str]] | None = None,
        max_pods: int = 250,
        engine: DockerEngine | None = None,
        schedule: bool = True,
    ):
        self.api = KubeApi.from_kubeconfig(Path(kubeconfig))
        #: Container mode when set: containers run from their images in this engine (see module doc).
        self.engine = engine
        self.runtime_version = "ferry-proc://1"
        #: False: bind nothing; pods run here only when they name this node in `spec.nodeName`.
        self.schedule = schedule
        #: The value of the label on every container this kubelet starts.
        self.id = f"{node_name}.{os.getpid()}.{os.urandom(4).hex()}"
        self.kubeconfig = Path(kubeconfig)
        self.workdir = Path(workdir)
        self.node_name = node_name
        self.python = python
        ferry_script = Path(python).parent / "ferry"
        self.commands: dict[str, list[str]] = {
            "ferry": [str(ferry_script)] if ferry_script.exists() else [python, "-m", "ferry.cli"],
        }
        for k, v in (command_map or {}).items():
            self.commands[k] = list(v)
        self.max_pods = max_pods
        self.allocatable = {
            "cpu": str(os.cpu_count() or 1),
            "memory": str(_host_memory()),
            "pods": str(max_pods),
        }
        parsed = urllib.parse.urlsplit(self.api.server)
        self.api_host_port = (parsed.hostname or "127.0.0.1", str(parsed.port or 443))
        self.stopping = threading.Event()
        self.runners: dict[str, PodRunner] = {}
        self.deleting: set[str] = set()
        self.lock = threading.Lock()
        self.free_ips = [f"127.0.0.{n}" for n in range(2, 255)]
        self.threads: list[threading.Thread] = []
        self._watches: set[Any] = set()
        self.log_path = self.workdir / "kubelet.log"
        self._log_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ProcessKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.engine is not None:
            self.runtime_version = f"docker://{self.engine.version()}"  # EngineError: one line
            removed = self.engine.remove_orphans()
            if removed:
                self.log(f"removed {removed} containers left by kubelets that are gone")
        self.register_node()
        loops = [(self._pods_loop, "pods"), (self._heartbeat, "hb")]
        if self.schedule:
            loops.insert(0, (self._schedule_loop, "scheduler"))
        for target, name in loops:
            t = threading.Thread(target=target, name=f"kubelet-{name}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        self.interrupt_watches()
        with self.lock:
            runners = list(self.runners.values())
        if self.engine is not None:
            self._remove_containers()  # all at once, before the runners are told one by one
        for r in runners:
            r.stop_processes()
        for r in runners:
            if r.thread.is_alive():
                r.thread.join(5)
        for t in self.threads:
            t.join(5)
        if self.engine is not None:
            self._remove_containers()  # any a runner was still creating

    def _remove_containers(self) -> None:
        assert self.engine is not None
        try:
            self.engine.remove_labelled(self.id)
        except EngineError as exc:
            self.log(f"removing this kubelet's containers failed: {exc}")

    def container_labels(self, pod: Obj, container: str) -> dict[str, str]:
        md = pod["metadata"]
        return {
            containers.KUBELET_LABEL: self.id,
            containers.PID_LABEL: str(os.getpid()),
            "io.kubernetes.pod.namespace": md["namespace"],
            "io.kubernetes.pod.name": md["name"],
            "io.kubernetes.pod.uid": md["uid"],
            "io.kubernetes.container.name": container,
        }

    def interrupt_watches(self) -> None:
        """Cut the open watch connections; unless stopping, the loops relist and watch again."""
        for resp in list(self._watches):
            # Closing a response does not wake a thread blocked reading it; shutting the socket does.
            sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
            with contextlib.suppress(Exception):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                resp.close()

    def log(self, message: str) -> None:
        with self._log_lock, self.log_path.open("a") as f:
            f.write(f"{now()} {message}\n")

    # -- node ----------------------------------------------------------------------------------

    def register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "ferry.dev/process-kubelet": "true",
                },
            },
        }
        try:
            self.api.request("POST", "/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        self._node_status()
        # TaintNodesByCondition put node.kubernetes.io/not-ready on the new node; nothing removes it
        # without the node-lifecycle controller, and a tainted node repels pods with tolerations checks.
        self.api.merge_patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": None}})

    def _node_status(self) -> None:
        t = now()

        def cond(kind: str, status: str, reason: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": "process kubelet",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }

        status = {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "ferry process kubelet",
                "containerRuntimeVersion": self.runtime_version,
                "kubeletVersion": "v0.0.0-ferry",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": status})

    def _heartbeat(self) -> None:
        while not self.stopping.wait(20):
            with contextlib.suppress(Exception):
                self._node_status()

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        self._list_watch({"fieldSelector": "spec.nodeName=,status.phase=Pending"}, self._maybe_bind)

    def _maybe_bind(self, kind: str, pod: Obj) -> None:
        if kind == "DELETED" or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        md = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": md["name"], "uid": md["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.request("POST", _path_for(pod, "/binding"), binding)
        except ApiError as exc:
            if exc.status not in (404, 409):
                self.log(f"binding {md['namespace']}/{md['name']} failed: {exc}")
        except OSError as exc:
            self.log(f"binding {md['namespace']}/{md['name']} failed: {exc!r}")

    # -- pods on this node ---------------------------------------------------------------------

    def _pods_loop(self) -> None:
        self._list_watch({"fieldSelector": f"spec.nodeName={self.node_name}"}, self._sync_pod, self._resync)

    def _resync(self, present: set[str]) -> None:
        """After a relist: pods that vanished while the watch was down are treated as deleted."""
        with self.lock:
            gone = [r for uid, r in self.runners.items() if uid not in present]
        for r in gone:
            r.request_delete(0)

    def _sync_pod(self, kind: str, pod: Obj) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        with self.lock:
            runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                runner.request_delete(0)
                with self.lock:
                    self.runners.pop(uid, None)
            self.deleting.discard(uid)
            return
        phase = pod.get("status", {}).get("phase")
        if md.get("deletionTimestamp"):
            if runner is not None and not runner.done.is_set():
                grace = md.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                runner.request_delete(float(grace))
            elif runner is None and phase not in ("Succeeded", "Failed"):
                # Deleted before it ever ran here: report it failed so Job controllers count it.
                with contextlib.suppress(ApiError, OSError):
                    self.api.merge_patch(_path_for(pod, "/status"), {"status": {"phase": "Failed"}})
                self.finalize_delete(pod)
            else:
                self.finalize_delete(pod)
            return
        if runner is None and phase not in ("Succeeded", "Failed"):
            ip = self._take_ip()
            runner = PodRunner(self, pod, ip)
            with self.lock:
                self.runners[uid] = runner
            runner.start()

    def finalize_delete(self, pod: Obj) -> None:
        """The kubelet's last word on a deleted pod: remove it now (finalizers may still hold it)."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid in self.deleting:
                return
            self.deleting.add(uid)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            self.api.request("DELETE", _path_for(pod), body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                self.log(f"delete of {pod['metadata']['name']} failed: {exc}")
                with self.lock:
                    self.deleting.discard(uid)
        except OSError as exc:
            self.log(f"delete of {pod['metadata']['name']} failed: {exc!r}")
            with self.lock:
                self.deleting.discard(uid)

    # -- helpers for runners -------------------------------------------------------------------

    def map_command(self, argv: list[str]) -> list[str]:
        if not argv:
            return argv
        base = os.path.basename(argv[0])
        if base in self.commands:
            return [*self.commands[base], *argv[1:]]
        if re.fullmatch(r"python(3(\.\d+)?)?", base):
            return [self.python, *argv[1:]]
        return argv

    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            obj: Obj = self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
            return obj
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise ConfigError(f"cannot read {kind} {namespace}/{name}: {exc}") from exc

    def service_account_token(self, pod: Obj, source: Obj) -> str:
        md = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName", "default")
        spec: Obj = {
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]},
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            result = self.api.request(
                "POST", f"/api/v1/namespaces/{md['namespace']}/serviceaccounts/{sa}/token", body
            )
        except ApiError as exc:
            raise ConfigError(f"cannot mint a token for serviceaccount {sa}: {exc}") from exc
        token: str = result["status"]["token"]
        return token

    def _take_ip(self) -> str:
        with self.lock:
            return self.free_ips.pop(0) if self.free_ips else "127.0.0.1"

    def release_ip(self, ip: str) -> None:
        if ip and ip != "127.0.0.1":
            with self.lock:
                self.free_ips.append(ip)

    def pod_dir(self, namespace: str, name: str) -> Path | None:
        """The local directory of a pod this kubelet ran (logs/, termination/, volumes/)."""
        with self.lock:
            for r in self.runners.values():
                md = r.pod["metadata"]
                if md["namespace"] == namespace and md["name"] == name:
                    return r.dir
        return None

    # -- list + watch --------------------------------------------------------------------------

    def _list_watch(
        self,
        params: Mapping[str, str],
        handle: Callable[[str, Obj], None],
        on_relist: Callable[[set[str]], None] | None = None,
    ) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone or any error."""
        path = "/api/v1/pods"
        while not self.stopping.is_set():
            try:
                listing = self.api.get(path, **params)
                rv = listing["metadata"]["resourceVersion"]
                present = set()
                for pod in listing["items"]:
                    present.add(pod["metadata"]["uid"])
                    self._handle(handle, "ADDED", pod)
                if on_relist:
                    on_relist(present)
                while not self.stopping.is_set():
                    gone = False
                    for event in self.api.watch(
                        path, {**params, "resourceVersion": rv, "timeoutSeconds": "60"}, self._watches.add
                    ):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            gone = True  # 410 Gone (or another error status): relist
                            break
                        rv = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            self._handle(handle, kind, obj)
                    self._watches.difference_update(
                        [w for w in self._watches if getattr(w, "closed", False) or w.isclosed()]
                    )
                    if gone:
                        break
            except Exception as exc:
                if self.stopping.is_set():
                    return
                self.log(f"watch {params}: {exc!r}; relisting")
                self.stopping.wait(0.5)

    def _handle(self, handle: Callable[[str, Obj], None], kind: str, pod: Obj) -> None:
        try:
            handle(kind, pod)
        except Exception as exc:
            self.log(f"handling {kind} {pod['metadata'].get('name')}: {exc!r}")
