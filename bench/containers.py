"""The benchmark's container mode: run a tool inside a container and read its memory and CPU from the cgroup.

`bench/run.py` imports this module (it sits next to it). The engine is the project's own (`hack/engine.sh`):
a private dockerd with no bridge, so every container here uses `--network host` (the S3 server and the
proxies listen on 127.0.0.1); no image is ever pulled and no network is ever created.

How a run is measured (bench/README.md, "Container mode"):

- The tool runs under a small `sh` wrapper (`WRAPPER`), PID 1 of the container. The wrapper starts the
  tool with SIGINT back at its default (a shell's background job would ignore it), forwards SIGINT and
  SIGTERM to it, and when the tool has exited writes the container's own cgroup counters to `/out`:
  peak memory (`memory.max_usage_in_bytes` on cgroup v1, `memory.peak` on v2), CPU (`cpuacct.usage` on v1,
  `cpu.stat usage_usec` on v2), the OOM-kill count, and the tool's wall time. Read inside at the very end,
  these are exact; read from the host they could not be: runc removes the cgroup with the container.
- From the host, while the container runs, the bench reads the same cgroup directory (found by the
  container's id) every 50 ms: the peak resident set (VmHWM) of every process in `cgroup.procs`, and the
  cgroup's peak and CPU as a fallback for a container killed before its wrapper could write.
- After the container exits, `docker inspect` tells whether it was OOMKilled; then it is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The uid (and gid) the project's image runs as; the peers' containers use it too.
UID = 10001

#: PID 1 of every benchmark container. `$@` is the tool's argv. POSIX sh (dash in the images).
WRAPPER = r"""
t0=$(date +%s%N)
env --default-signal=INT "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null' INT
trap 'kill -TERM "$pid" 2>/dev/null' TERM
while :; do wait "$pid"; rc=$?; kill -0 "$pid" 2>/dev/null || break; done
t1=$(date +%s%N)
c=/sys/fs/cgroup
{
  echo "rc $rc"
  echo "t0 $t0"
  echo "t1 $t1"
  if [ -f $c/cgroup.controllers ]; then
    echo "cgroup v2"
    [ -r $c/memory.peak ] && echo "peak $(cat $c/memory.peak)"
    echo "limit $(cat $c/memory.max)"
    sed -n 's/^usage_usec /cpu_usec /p' $c/cpu.stat
    sed -n 's/^oom_kill /oom_kill /p' $c/memory.events
  else
    echo "cgroup v1"
    echo "peak $(cat $c/memory/memory.max_usage_in_bytes)"
    echo "limit $(cat $c/memory/memory.limit_in_bytes)"
    for d in cpuacct cpu,cpuacct cpuacct,cpu; do
      if [ -r $c/$d/cpuacct.usage ]; then echo "cpu_ns $(cat $c/$d/cpuacct.usage)"; break; fi
    done
    sed -n 's/^oom_kill /oom_kill /p' $c/memory/memory.oom_control
  fi
} >/out/cgroup.txt 2>/dev/null
exit $rc
"""


def docker_client() -> str | None:
    """Debian's client matches the engine's daemon (hack/engine.sh); another one on PATH may be newer."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


@dataclasses.dataclass
class Engine:
    """A running engine and the two images the benchmark uses."""

    docker: str
    host: str  # DOCKER_HOST
    image: str  # ferry:dev
    image_id: str  # sha256:… of ferry:dev when the benchmark started
    base: str  # ferry-base:bookworm-… (python3, no Ferry)
    cgroup: str  # "v1" or "v2", as the daemon reports it
    #: A tag of our own on image_id, what the containers run: a rebuild of ferry:dev by someone else during
    #: the benchmark neither changes the code measured nor lets `docker image prune` remove it.
    pinned: str = ""

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_HOST": self.host}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def _engine_sh(repo: Path, verb: str, timeout: float) -> tuple[int, str, str]:
    try:
        out = subprocess.run(
            ["bash", str(repo / "hack" / "engine.sh"), verb],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return 1, "", f"hack/engine.sh {verb} did not finish within {timeout:.0f}s"
    except OSError as exc:
        return 1, "", f"hack/engine.sh {verb}: {exc}"
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def detect(mode: str, repo: Path, timeout: float, log: Callable[[str], None]) -> tuple[Engine | None, str]:
    """The engine for container mode, or None and the reason it is off.

    `mode` is BENCH_CONTAINERS: "0" off, "1" required (SystemExit when the engine or the image fails),
    "auto" on when `hack/engine.sh image` succeeds.
    """
    if mode == "0":
        return None, "BENCH_CONTAINERS=0"
    if mode not in ("1", "auto"):
        raise SystemExit(f"bench: BENCH_CONTAINERS={mode!r}: use auto, 1 or 0")
    docker = docker_client()
    if docker is None:
        why = "no docker client (/usr/bin/docker) on this machine"
    else:
        log("containers: hack/engine.sh image (starts the engine, builds ferry:dev when the code changed)")
        why = ""
        results: dict[str, str] = {}
        for verb in ("image", "base", "env"):
            rc, out, err = _engine_sh(repo, verb, timeout)
            if verb == "image" and rc == 1:
                # Exit 1 is a failed step, e.g. a build racing another one over the same tag: once more.
                log(
                    f"containers: hack/engine.sh image failed ({(err.splitlines() or [''])[-1]}); retrying once"
                )
                time.sleep(5)
                rc, out, err = _engine_sh(repo, verb, timeout)
            if rc != 0 or not out:
                last = (err.splitlines() or [f"exit {rc}"])[-1]
                why = f"hack/engine.sh {verb} failed (exit {rc}): {last}"
                break
            results[verb] = out.splitlines()[-1].strip()
        if not why:
            host = results["env"].removeprefix("DOCKER_HOST=")
            probe = Engine(docker, host, results["image"], "", results["base"], "")
            info = probe.cli("info", "--format", "{{.CgroupVersion}}")
            ident = probe.cli("image", "inspect", "--format", "{{.Id}}", probe.image)
            if info.returncode != 0 or ident.returncode != 0:
                why = f"docker info/inspect failed: {(info.stderr or ident.stderr).strip()[:200]}"
            else:
                probe.cgroup = f"v{info.stdout.strip() or '1'}"
                probe.image_id = ident.stdout.strip()
                pinned = f"ferry-bench:run-{os.getpid()}"
                tag = probe.cli("tag", probe.image_id, pinned)
                if tag.returncode != 0:
                    why = f"docker tag {pinned} failed: {tag.stderr.strip()[:200]}"
                else:
                    probe.pinned = pinned
                    return probe, ""
    if mode == "1":
        raise SystemExit(f"bench: BENCH_CONTAINERS=1 but container mode cannot run: {why}")
    return None, why


@dataclasses.dataclass
class Mount:
    host: Path
    target: str
    read_only: bool = True


@dataclasses.dataclass
class Spec:
    """What to run in one container."""

    image: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount]
    memory: int | None  # --memory and --memory-swap (no swap), bytes; None: no limit
    user: str = f"{UID}:{UID}"
    cpus: float | None = None  # --cpus (a CFS quota the tool sees in its cgroup); None: no limit


@dataclasses.dataclass
class Outcome:
    """What one container run measured; None where it could not be measured."""

    cgroup_peak: int | None  # bytes, the cgroup's own high-water mark
    cgroup_peak_source: str
    cpu_seconds: float | None  # the cgroup's user+sys CPU
    cpu_source: str
    vm_hwm: int | None  # max VmHWM over the container's processes, sampled from the host every 50 ms
    tool_wall: float | None  # the tool's own wall time, measured inside
    tool_rc: int | None
    oom_killed: bool | None  # docker inspect .State.OOMKilled
    oom_kills: int | None  # the cgroup's oom_kill count
    limit: int | None  # the cgroup's memory limit as the container saw it
    notes: list[str]


def _read_int(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().split()[0])
    return None


def _vm_hwm(pid: str) -> int:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Container:
    """One `docker run` of a tool under the wrapper, measured from inside and from the host."""

    _seq = 0
    created: list[tuple[Engine, str]] = []  # every container this process named, for remove_all()

    def __init__(self, engine: Engine, spec: Spec, rundir: Path) -> None:
        Container._seq += 1
        self.engine = engine
        self.spec = spec
        self.name = f"ferry-bench-{os.getpid()}-{Container._seq}"
        Container.created.append((engine, self.name))
        self.rundir = rundir
        self.out = rundir / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chown(self.out, UID, UID)
        self.out.chmod(0o777)  # the tool's uid writes its timeline and the wrapper its counters here
        self.cidfile = rundir / "cid"
        self.cidfile.unlink(missing_ok=True)
        self.envfile = rundir / "env"  # credentials go through a file, never the docker argv (ps shows that)
        fd = os.open(self.envfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for k, v in spec.env.items():
                if "\n" in v:
                    raise ValueError(f"env {k}: a value for docker --env-file cannot hold a newline")
                f.write(f"{k}={v}\n")
        self._mem_dir: Path | None = None
        self._cpu_file: Path | None = None
        self._looked_until = 0.0
        self._hwm = 0
        self._host_peak = 0
        self._host_cpu: float | None = None
        self._procs_seen = False

    def client_env(self) -> dict[str, str]:
        """The docker client's environment: the engine's socket and little else."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        return {k: v for k, v in os.environ.items() if k in keep} | self.engine.env()

    def argv(self) -> list[str]:
        s = self.spec
        a = [self.engine.docker, "run", "--name", self.name, "--cidfile", str(self.cidfile)]
        a += ["--network", "host", "--read-only", "--tmpfs", "/tmp", "--user", s.user, "--log-driver", "none"]
        a += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--env-file", str(self.envfile)]
        if s.memory:
            a += ["--memory", str(s.memory), "--memory-swap", str(s.memory)]
        if s.cpus:
            a += ["--cpus", f"{s.cpus:g}"]
        for m in s.mounts:
            a += ["-v", f"{os.path.realpath(m.host)}:{m.target}{':ro' if m.read_only else ''}"]
        a += ["-v", f"{self.out}:/out", "--entrypoint", "/bin/sh", s.image, "-c", WRAPPER, "sh", *s.argv]
        return a

    # -- from the host, while it runs ------------------------------------------------------------------

    def _find_cgroup(self) -> None:
        """The container's cgroup directories as this process sees them (cgroupfs or systemd driver)."""
        now = time.monotonic()
        if self._mem_dir is not None or now < self._looked_until:
            return
        self._looked_until = now + 0.2
        try:
            cid = self.cidfile.read_text().strip()
        except OSError:
            return
        if not cid:
            return
        root = Path("/sys/fs/cgroup")
        leaves = (f"docker/{cid}", f"system.slice/docker-{cid}.scope")
        if self.engine.cgroup == "v2":
            for leaf in leaves:
                if (root / leaf / "cgroup.procs").is_file():
                    self._mem_dir = root / leaf
                    self._cpu_file = root / leaf / "cpu.stat"
                    return
            return
        for leaf in leaves:
            if (root / "memory" / leaf / "cgroup.procs").is_file():
                self._mem_dir = root / "memory" / leaf
                for ctl in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
                    if (root / ctl / leaf / "cpuacct.usage").is_file():
                        self._cpu_file = root / ctl / leaf / "cpuacct.usage"
                        break
                return

    def sample(self) -> None:
        """One host-side sample: VmHWM of the container's processes, the cgroup's peak and CPU so far."""
        self._find_cgroup()
        d = self._mem_dir
        if d is None:
            return
        try:
            pids = (d / "cgroup.procs").read_text().split()
        except OSError:
            return
        self._procs_seen = self._procs_seen or bool(pids)
        for pid in pids:
            self._hwm = max(self._hwm, _vm_hwm(pid))
        peak = _read_int(d / ("memory.peak" if self.engine.cgroup == "v2" else "memory.max_usage_in_bytes"))
        if peak:
            self._host_peak = max(self._host_peak, peak)
        if self._cpu_file is not None:
            with contextlib.suppress(OSError, ValueError):
                text = self._cpu_file.read_text()
                if self.engine.cgroup == "v2":
                    usec = next(int(x.split()[1]) for x in text.splitlines() if x.startswith("usage_usec"))
                    self._host_cpu = usec / 1e6
                else:
                    self._host_cpu = int(text.strip()) / 1e9

    def signal(self, sig: str) -> None:
        """SIGINT (the wrapper forwards it to the tool) or KILL (the whole container) through the engine."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.engine.cli("kill", "--signal", sig, self.name, timeout=30)

    # -- after it exited -------------------------------------------------------------------------------

    def finish(self) -> Outcome:
        notes: list[str] = []
        inside: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in (self.out / "cgroup.txt").read_text().splitlines():
                k, _, v = line.partition(" ")
                if v.strip():
                    inside[k] = v.strip()
        oom: bool | None = None
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            st = self.engine.cli("inspect", "--format", "{{.State.OOMKilled}}", self.name, timeout=30)
            if st.returncode == 0:
                oom = st.stdout.strip() == "true"
        self.remove()

        def num(key: str) -> int | None:
            with contextlib.suppress(KeyError, ValueError):
                return int(inside[key])
            return None

        v = self.engine.cgroup
        peak_file = "memory.peak" if v == "v2" else "memory.max_usage_in_bytes"
        cpu_file = "cpu.stat usage_usec" if v == "v2" else "cpuacct.usage"
        peak, peak_src = num("peak"), f"{peak_file} (cgroup {v}), read inside the container at exit"
        if peak is None and self._host_peak:
            peak, peak_src = self._host_peak, f"{peak_file} (cgroup {v}), last host sample (50 ms)"
            notes.append("the container ended before its wrapper wrote the cgroup counters: host samples")
        elif peak is None:
            peak_src = "not measured"
        cpu: float | None = None
        cpu_src = f"{cpu_file} (cgroup {v}), read inside the container at exit"
        if num("cpu_ns") is not None:
            cpu = num("cpu_ns") / 1e9  # type: ignore[operator]
        elif num("cpu_usec") is not None:
            cpu = num("cpu_usec") / 1e6  # type: ignore[operator]
        elif self._host_cpu is not None:
            cpu, cpu_src = self._host_cpu, f"{cpu_file} (cgroup {v}), last host sample (50 ms)"
        else:
            cpu_src = "not measured"
        wall = None
        if num("t0") and num("t1"):
            wall = (num("t1") - num("t0")) / 1e9  # type: ignore[operator]
        limit = num("limit")
        if limit is not None and limit >= 1 << 60:
            limit = None
        if not self._procs_seen and inside:
            notes.append("the container's cgroup is not visible from the bench: VmHWM not sampled")
        return Outcome(
            cgroup_peak=peak,
            cgroup_peak_source=peak_src,
            cpu_seconds=cpu,
            cpu_source=cpu_src,
            vm_hwm=self._hwm or None,
            tool_wall=wall,
            tool_rc=num("rc"),
            oom_killed=oom,
            oom_kills=num("oom_kill"),
            limit=limit,
            notes=notes,
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            if self.engine.cli("rm", "--force", self.name, timeout=60).returncode == 0:
                with contextlib.suppress(ValueError):
                    Container.created.remove((self.engine, self.name))


def remove_all() -> None:
    """Remove every container this process created that is still there (a crash, an interrupted bench)."""
    by_engine: dict[str, tuple[Engine, list[str]]] = {}
    for engine, name in Container.created:
        by_engine.setdefault(engine.host, (engine, []))[1].append(name)
    for engine, names in by_engine.values():
        if not names:
            continue
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            engine.cli("rm", "--force", *names, timeout=120)
    Container.created.clear()


def release(engine: Engine | None) -> None:
    """Drop the benchmark's own tag (the image itself stays while ferry:dev names it)."""
    if engine is not None and engine.pinned:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            engine.cli("rmi", engine.pinned, timeout=60)


def outcome_fields(o: Outcome) -> dict[str, Any]:
    return {
        "cgroupPeakBytes": o.cgroup_peak,
        "cgroupPeakSource": o.cgroup_peak_source,
        "cgroupMemoryLimitBytes": o.limit,
        "oomKilled": o.oom_killed,
        "cgroupOomKills": o.oom_kills,
    }
