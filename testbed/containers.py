"""Container mode of the testbed kubelet: a pod's containers run from their images in a real engine.

`DockerEngine(docker_host)` is the only place that talks to the engine, through Debian's docker client
(`/usr/bin/docker`, which matches Debian's daemon) on the private socket of `hack/engine.sh`. The
kubelet (`testbed.kubelet.ProcessKubelet(..., engine=DockerEngine(...))`) asks it for four things: does
an image exist, create and start a container with its output attached to a log file, signal it, and
inspect then remove it. What a pod's container means for the engine is decided here too:
`container_spec` (from `resource_options`, `security_options`, `command_options`, `bind_mounts`)
builds a `ContainerSpec`, whose `create_body` is pure.

Rules every container follows: `--network host` (pods get loopback addresses 127.0.0.N from the
kubelet, never a bridge), no image is ever pulled, PID 1 is the program (no `--init`), a bounded
`--pids-limit`, no engine-side log copy (`--log-driver none`: the attached client writes the pod's
log file), and labels naming the kubelet that started it, so a stopped or crashed kubelet's
containers can be found and removed.

Containers are created through the Engine API on the same socket (`POST /containers/create`, at the
daemon's API version) and everything else through the client: environment values (which may be
Secrets, or hold newlines) then never appear on a command line nor in the environment of a process
that runs as root.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal as signals
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

Obj = dict[str, Any]

DOCKER = "/usr/bin/docker"
#: Label on every container a kubelet starts: its value is that kubelet's id.
KUBELET_LABEL = "dev.ferry.testbed"
#: The process id of that kubelet: containers of a kubelet whose process is gone are orphans.
PID_LABEL = "dev.ferry.testbed.pid"
PIDS_LIMIT = 4096
#: Volume types whose content the kubelet writes; Kubernetes always mounts them read-only.
WRITER_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


class EngineError(RuntimeError):
    """The engine refused or could not be reached; the message is one line."""


class SpecError(ValueError):
    """The pod spec asks for something this kubelet will not run (CreateContainerConfigError)."""


# -- what a container spec means for docker create (pure) ----------------------------------------


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False

    def body(self) -> Obj:
        return {"Type": "bind", "Source": self.source, "Target": self.target, "ReadOnly": self.read_only}


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `docker create` is told about one container of a pod."""

    name: str
    image: str
    hostname: str
    entrypoint: str | None = None  # None keeps the image's ENTRYPOINT
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    group_add: tuple[int, ...] = ()
    memory: int | None = None  # bytes; swap is set equal (no swap)
    cpus: str | None = None
    cpu_shares: int | None = None
    read_only: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = False
    seccomp_unconfined: bool = False
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    pids_limit: int = PIDS_LIMIT

    def create_body(self) -> Obj:
        """The body of the Engine API's `POST /containers/create` (the same settings as `docker create`
        flags: --network host --log-driver none --memory … --memory-swap … --cpus … --read-only …)."""
        host: Obj = {
            "NetworkMode": "host",
            "LogConfig": {"Type": "none", "Config": {}},
            "PidsLimit": self.pids_limit,
            "ReadonlyRootfs": self.read_only,
            "CapDrop": list(self.cap_drop) or None,
            "CapAdd": list(self.cap_add) or None,
            "SecurityOpt": (["no-new-privileges"] if self.no_new_privileges else [])
            + (["seccomp=unconfined"] if self.seccomp_unconfined else []),
            "GroupAdd": [str(g) for g in self.group_add] or None,
            "Mounts": [m.body() for m in self.mounts],
        }
        if self.memory is not None:
            host["Memory"] = host["MemorySwap"] = self.memory
        if self.cpus is not None:
            host["NanoCpus"] = int(Decimal(self.cpus) * 10**9)
        if self.cpu_shares is not None:
            host["CpuShares"] = self.cpu_shares
        body: Obj = {
            "Image": self.image,
            "Hostname": self.hostname,
            "Env": [f"{k}={v}" for k, v in sorted(self.env.items())],
            "Cmd": list(self.cmd) or None,
            "Labels": dict(self.labels),
            "HostConfig": host,
        }
        if self.entrypoint is not None:
            # Set by the user, the engine uses neither the image's ENTRYPOINT nor its CMD.
            body["Entrypoint"] = [self.entrypoint]
        if self.user is not None:
            body["User"] = self.user
        if self.workdir:
            body["WorkingDir"] = self.workdir
        return body


def security_context(pod: Obj, c: Obj) -> Obj:
    """The container's securityContext over the pod's (the container's fields win)."""
    return {**(pod["spec"].get("securityContext") or {}), **(c.get("securityContext") or {})}


def _quantity(value: str) -> Decimal:
    from kubernetes.utils import parse_quantity

    return Decimal(parse_quantity(value))


def resource_options(c: Obj) -> dict[str, Any]:
    """limits.memory -> bytes, limits.cpu -> --cpus, requests.cpu -> --cpu-shares (as kubelet does)."""
    res = c.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    out: dict[str, Any] = {}
    if "memory" in limits:
        out["memory"] = int(_quantity(str(limits["memory"])).to_integral_value(rounding=ROUND_CEILING))
    if "cpu" in limits:
        cpus = _quantity(str(limits["cpu"])).quantize(Decimal("0.001"), rounding=ROUND_CEILING)
        out["cpus"] = format(cpus.normalize(), "f")
    if "cpu" in requests:
        milli = int((_quantity(str(requests["cpu"])) * 1000).to_integral_value(rounding=ROUND_CEILING))
        out["cpu_shares"] = max(2, milli * 1024 // 1000)
    return out


def image_uid(image_user: str) -> int | None:
    """The uid an image runs as by default: 0 when unset, None when it names a user (unknown here)."""
    user = image_user.split(":", 1)[0]
    if not user:
        return 0
    return int(user) if user.isdigit() else None


def security_options(pod: Obj, c: Obj, image_user: str) -> dict[str, Any]:
    """securityContext -> user, groups, read-only root, capabilities, no-new-privileges, seccomp.

    Raises SpecError for what the kubelet refuses: runAsNonRoot with a root (or unverifiable) user,
    and privileged containers (the engine shares this machine's kernel and network).
    """
    sc = security_context(pod, c)
    ref = f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}", container: {c["name"]})'
    if sc.get("privileged"):
        raise SpecError(f"privileged containers are not run by the testbed kubelet {ref}")
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    if sc.get("runAsNonRoot"):
        if uid == 0:
            raise SpecError(f"container's runAsUser breaks non-root policy {ref}")
        if uid is None:
            default = image_uid(image_user)
            if default is None:
                raise SpecError(
                    f"container has runAsNonRoot and image has non-numeric user ({image_user}), "
                    f"cannot verify user is non-root {ref}"
                )
            if default == 0:
                raise SpecError(f"container has runAsNonRoot and image will run as root {ref}")
    user = None
    if uid is not None:
        user = f"{uid}:{gid}" if gid is not None else str(uid)
    elif gid is not None:
        user = f"{image_user.split(':', 1)[0] or 0}:{gid}"
    pod_sc = pod["spec"].get("securityContext") or {}
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    caps = sc.get("capabilities") or {}
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    return {
        "user": user,
        "group_add": tuple(dict.fromkeys(groups)),
        "read_only": bool(sc.get("readOnlyRootFilesystem")),
        "cap_drop": tuple(caps.get("drop") or ()),
        "cap_add": tuple(caps.get("add") or ()),
        "no_new_privileges": sc.get("allowPrivilegeEscalation") is False,
        "seccomp_unconfined": seccomp == "Unconfined",
    }


def command_options(command: Sequence[str], args: Sequence[str]) -> dict[str, Any]:
    """Kubernetes semantics: `command` replaces the ENTRYPOINT (and drops CMD), `args` alone replace CMD."""
    if command:
        return {"entrypoint": command[0], "cmd": (*command[1:], *args)}
    return {"entrypoint": None, "cmd": tuple(args)}


def container_spec(
    pod: Obj,
    c: Obj,
    image: Obj,
    *,
    env: Mapping[str, str],
    command: Sequence[str],
    args: Sequence[str],
    volumes_dir: Path,
    message_path: Path,
    labels: Mapping[str, str],
    attempt: int,
) -> ContainerSpec:
    """One container of `pod` as the engine runs it. `image` is its `docker image inspect`; `env`,
    `command` and `args` are already expanded by the kubelet. Raises SpecError (or ValueError for a
    bad quantity): the kubelet reports CreateContainerConfigError and retries."""
    md = pod["metadata"]
    return ContainerSpec(
        # As a kubelet names them, plus a random tail: a retried create never meets a stale name.
        name=f"k8s_{c['name']}_{md['name']}_{md['namespace']}_{md['uid']}_{attempt}_{os.urandom(3).hex()}",
        image=c["image"],
        hostname=(pod["spec"].get("hostname") or md["name"])[:63],
        env=dict(env),
        workdir=c.get("workingDir"),
        mounts=bind_mounts(pod, c, volumes_dir, message_path),
        labels=dict(labels),
        **command_options(command, args),
        **resource_options(c),
        **security_options(pod, c, str((image.get("Config") or {}).get("User") or "")),
    )


# -- the pod's files, seen from a container (filesystem work, as root) -------------------------


def bind_mounts(pod: Obj, c: Obj, volumes_dir: Path, message_path: Path) -> tuple[Mount, ...]:
    """Each volumeMount as a bind mount of the materialised volume, plus the termination message file."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = []
    for vm in c.get("volumeMounts") or []:
        vol = volumes.get(vm["name"])
        if vol is None:
            raise SpecError(f"volumeMount {vm['name']!r} names no volume of the pod")
        if vm.get("subPathExpr"):
            raise SpecError(f"volumeMount {vm['name']!r}: subPathExpr is not supported by the testbed")
        base = Path(vol["hostPath"]["path"]) if "hostPath" in vol else volumes_dir / vm["name"]
        source = base
        if vm.get("subPath"):
            source = _subpath(base, vm["subPath"], vm["name"])
        read_only = bool(vm.get("readOnly")) or any(k in vol for k in WRITER_VOLUMES)
        mounts.append(Mount(str(source), vm["mountPath"], read_only))
    target = c.get("terminationMessagePath") or "/dev/termination-log"
    mounts.append(Mount(str(message_path), target))
    return tuple(mounts)


def _subpath(base: Path, sub: str, name: str) -> Path:
    """base/sub, refusing any way out of the volume (`..`, absolute paths, symlinks a container made)."""
    if os.path.isabs(sub) or ".." in Path(sub).parts:
        raise SpecError(f"volumeMount {name!r}: subPath {sub!r} must be a relative path inside the volume")
    path = base / sub
    if not path.exists() and not path.is_symlink():
        path.mkdir(parents=True, exist_ok=True)  # as kubelet does
    real, root = os.path.realpath(path), os.path.realpath(base)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        raise SpecError(f"volumeMount {name!r}: subPath {sub!r} leads outside the volume")
    return Path(real)


def pod_fs_user(pod: Obj) -> int | None:
    """The runAsUser every container of the pod shares, if they all set the same one (kubelet's FsUser)."""
    spec = pod["spec"]
    uids = {
        security_context(pod, c).get("runAsUser")
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]
    }
    if len(uids) == 1:
        uid = next(iter(uids))
        return None if uid is None else int(uid)
    return None


def settle_volume_permissions(pod: Obj, volumes_dir: Path) -> None:
    """Modes and owners as a real kubelet leaves them, so a non-root container can use its volumes.

    emptyDir is 0777; a projected ServiceAccount token has the volume's defaultMode (0644), or 0600
    owned by the pods' common runAsUser when there is one or an fsGroup; with an fsGroup every
    volume's files become group-owned by it (g+r, g+rw for emptyDir; directories g+rwx and setgid).
    """
    spec = pod["spec"]
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    fs_user = pod_fs_user(pod)
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            continue
        root = volumes_dir / vol["name"]
        if not root.is_dir():
            continue
        if "emptyDir" in vol:
            root.chmod(0o777)
        if "projected" in vol:
            mode = vol["projected"].get("defaultMode", 0o644)
            for src in vol["projected"].get("sources") or []:
                token = (src.get("serviceAccountToken") or {}).get("path")
                if token and (root / token).is_file():
                    owned = fs_user is not None or fs_group is not None
                    (root / token).chmod(0o600 if owned else mode & 0o777)
                    if fs_user is not None:
                        os.chown(root / token, fs_user, -1)
        if fs_group is not None:
            _chgrp_tree(root, int(fs_group), writable="emptyDir" in vol)


def _chgrp_tree(root: Path, gid: int, *, writable: bool) -> None:
    file_bits = 0o060 if writable else 0o040
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, -1, gid)
        os.chmod(dirpath, os.stat(dirpath).st_mode & 0o7777 | 0o2070)
        for name in files:
            p = os.path.join(dirpath, name)
            os.chown(p, -1, gid)
            os.chmod(p, os.stat(p).st_mode & 0o7777 | file_bits)


def prepare_message_file(path: Path) -> None:
    """An empty termination message file any container user can write (kubelet makes it 0666)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    path.chmod(0o666)


# -- how a container ended ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerExit:
    exit_code: int
    reason: str  # Completed, Error, OOMKilled, StartError or ContainerStatusUnknown
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None


def _timestamp(value: str | None) -> str | None:
    """Docker's RFC 3339 with nanoseconds -> Kubernetes' seconds; None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    return value[:19] + "Z"


def exit_of(state: Obj | None) -> ContainerExit:
    """`docker inspect`'s State -> the terminated state a kubelet reports (OOMKilled as the runtime says)."""
    if state is None:
        return ContainerExit(137, "ContainerStatusUnknown", "the container vanished from the engine")
    code = int(state.get("ExitCode", 0))
    started, finished = _timestamp(state.get("StartedAt")), _timestamp(state.get("FinishedAt"))
    if state.get("Error") and started is None:
        return ContainerExit(128, "StartError", str(state["Error"]), None, finished)
    if state.get("OOMKilled"):
        return ContainerExit(code, "OOMKilled", "", started, finished)
    return ContainerExit(code, "Completed" if code == 0 else "Error", "", started, finished)


# -- the engine --------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class DockerEngine:
    """A docker daemon reached through its CLI (see module doc); every call is bounded in time."""

    def __init__(self, docker_host: str, *, docker: str = DOCKER, timeout: float = 60.0):
        self.host = docker_host
        self.docker = docker
        self.timeout = timeout
        # The client's own config dir: nothing of the host user's ~/.docker (contexts, proxies) applies.
        self.config_dir = tempfile.mkdtemp(prefix="ferry-docker-config-")
        self._removed: set[str] = set()
        self._api_version: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DockerEngine({self.host!r})"

    def _argv(self, *args: str) -> list[str]:
        return [self.docker, "--host", self.host, "--config", self.config_dir, *args]

    def _run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._argv(*args),
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"docker {args[0]} did not answer within {exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise EngineError(f"cannot run the docker client {self.docker}: {exc}") from exc

    def _ok(self, *args: str) -> str:
        result = self._run(*args)
        if result.returncode != 0:
            raise EngineError(f"docker {args[0]} failed: {_last_line(result.stderr) or result.returncode}")
        return result.stdout

    # -- queries -------------------------------------------------------------------------------

    def version(self) -> str:
        """The daemon's version; EngineError (one line) when it cannot be reached."""
        try:
            result = self._run("version", "--format", "{{.Server.Version}}", timeout=15)
        except EngineError as exc:
            raise EngineError(f"container engine at {self.host} cannot be reached: {exc}") from None
        version = result.stdout.strip()
        if result.returncode != 0 or not version or "<no value>" in version:
            reason = _last_line(result.stderr) or f"docker version exited {result.returncode}"
            raise EngineError(f"container engine at {self.host} cannot be reached: {reason}")
        return version

    def image(self, ref: str) -> Obj | None:
        """`docker image inspect` of a local image, or None when it is not there (never pulls)."""
        result = self._run("image", "inspect", "--", ref)  # `--`: an image name is never a flag
        if result.returncode != 0:
            if "no such image" in result.stderr.lower():
                return None
            raise EngineError(f"docker image inspect {ref} failed: {_last_line(result.stderr)}")
        found: list[Obj] = json.loads(result.stdout)
        return found[0] if found else None

    def image_exists(self, ref: str) -> bool:
        return self.image(ref) is not None

    def inspect(self, cid: str) -> Obj | None:
        result = self._run("container", "inspect", cid)
        if result.returncode != 0:
            return None
        found: list[Obj] = json.loads(result.stdout)
        return found[0] if found else None

    def containers(self, label: str, show: str = PID_LABEL) -> dict[str, str]:
        """Id -> value of label `show`, of every container (running or not) with `label` (`key[=value]`)."""
        out = self._ok(
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            f"label={label}",
            "--format",
            f'{{{{.ID}}}} {{{{.Label "{show}"}}}}',
        )
        found = {}
        for line in out.splitlines():
            cid, _, value = line.strip().partition(" ")
            if cid:
                found[cid] = value.strip()
        return found

    # -- actions -------------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container. Through the Engine API rather than the client: env values
        (Secrets, any bytes, newlines) go neither on a command line nor into a root process's environ."""
        status, answer = self._api("POST", "/containers/create?name=" + quote(spec.name), spec.create_body())
        if status != 201:
            raise EngineError(
                f"creating container {spec.name} failed: HTTP {status}: {answer.get('message', '')}"
            )
        cid: str = answer["Id"]
        return cid

    def _api(self, method: str, path: str, body: Obj | None = None) -> tuple[int, Obj]:
        """One Engine API request on the unix socket, at the daemon's own API version."""
        if not self.host.startswith("unix://"):
            raise EngineError(f"the Engine API is only used on unix sockets, not {self.host}")
        if self._api_version is None:
            _, info = self._request("GET", "/version", None)
            self._api_version = str(info.get("ApiVersion") or "1.41")
        return self._request(method, f"/v{self._api_version}{path}", body)

    def _request(self, method: str, path: str, body: Obj | None) -> tuple[int, Obj]:
        conn = _UnixHTTPConnection(self.host.removeprefix("unix://"), self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read(1 << 20)
        except OSError as exc:
            raise EngineError(f"container engine at {self.host}: {method} {path}: {exc}") from exc
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"message": raw[:200].decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {"items": answer}

    def start(self, cid: str, log: IO[bytes]) -> ContainerProcess:
        """Start a created container with its stdout and stderr attached to `log`."""
        try:
            client = subprocess.Popen(
                self._argv("start", "--attach", cid),
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot run the docker client {self.docker}: {exc}") from exc
        return ContainerProcess(self, cid, client)

    def run(self, spec: ContainerSpec, log: IO[bytes]) -> ContainerProcess:
        cid = self.create(spec)
        try:
            return self.start(cid, log)
        except EngineError:
            self.remove(cid)
            raise

    def kill(self, cid: str, sig: int = signals.SIGKILL) -> None:
        """Signal the container's PID 1; a container that already stopped is not an error."""
        if self.removed(cid):
            return
        self._run("kill", "--signal", signals.Signals(sig).name.removeprefix("SIG"), cid)

    def remove(self, *cids: str) -> None:
        """`docker rm -f`: kill and remove; containers already gone are not an error."""
        todo = [c for c in cids if not self.removed(c)]
        if not todo:
            return
        result = self._run("rm", "-f", *todo)
        if result.returncode == 0 or "no such container" in result.stderr.lower():
            with self._lock:
                self._removed.update(todo)

    def removed(self, cid: str) -> bool:
        with self._lock:
            return cid in self._removed

    def remove_labelled(self, kubelet_id: str) -> int:
        """Remove every container of one kubelet; how many there were."""
        found = self.containers(f"{KUBELET_LABEL}={kubelet_id}")
        if found:
            self.remove(*found)
        return len(found)

    def remove_orphans(self) -> int:
        """Remove the containers of kubelets whose process is gone (a crashed or killed test run)."""
        orphans = [cid for cid, pid in self.containers(KUBELET_LABEL, PID_LABEL).items() if not _alive(pid)]
        if orphans:
            self.remove(*orphans)
        return len(orphans)


def _alive(pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ContainerProcess:
    """A started container, shaped like the `subprocess.Popen` the kubelet polls: the attached
    client lives as long as the container runs, and exits with its exit code."""

    def __init__(self, engine: DockerEngine, cid: str, client: subprocess.Popen[bytes]):
        self.engine = engine
        self.id = cid
        self.client = client

    @property
    def pid(self) -> int:
        return self.client.pid

    @property
    def uri(self) -> str:
        return f"docker://{self.id}"

    @property
    def returncode(self) -> int | None:
        return self.client.returncode

    def poll(self) -> int | None:
        return self.client.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.client.wait(timeout)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self.engine.kill(self.id, sig)

    def finish(self) -> ContainerExit:
        """After the client exited: how the container ended, then remove it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.client.wait(10)
        info = self.engine.inspect(self.id)
        state = info.get("State") if info else None
        if state and state.get("Running"):  # the client died, not the container
            self.engine.kill(self.id)
            info = self.engine.inspect(self.id)
            state = info.get("State") if info else None
        self.remove()
        return exit_of(state)

    def remove(self) -> None:
        if self.client.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.client.pid, signals.SIGKILL)
        self.engine.remove(self.id)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.client.wait(5)
