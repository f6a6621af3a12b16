"""Ferry's benchmark: ferry vs rclone, s5cmd and the AWS CLI on a local S3 server behind fault proxies.

Run it with the project venv's interpreter (`make bench`, `make bench-smoke`); it imports only the
installed `testbed` package and boto3. Every server listens on 127.0.0.1; every run has a time cap.
bench/README.md describes the scenarios, the environment variables and the result files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import containers

from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import MotoServer, S3Endpoint

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", HERE / "results"))
SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferry"
FERRY = Path(sys.executable).with_name("ferry")
T0 = time.monotonic()

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise SystemExit(f"bench: not a size: {text!r} (examples: 100KB, 64MiB, 1GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def env(name: str, default: str, smoke: str | None = None) -> str:
    return os.environ.get(name) or (smoke if SMOKE and smoke is not None else default)


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


@dataclasses.dataclass
class Params:
    objects: int = int(env("BENCH_OBJECTS", "3000", "300"))
    size: int = parse_size(env("BENCH_SIZE", "100KB"))
    latency_ms: float = float(env("BENCH_LATENCY_MS", "400"))
    jitter_ms: float = float(env("BENCH_JITTER_MS", "20"))
    throttle_rate: float = float(env("BENCH_THROTTLE_RATE", "0.05"))
    memory_limit: int = parse_size(env("BENCH_MEMORY_LIMIT", "512Mi"))
    large_count: int = int(env("BENCH_LARGE_COUNT", "2"))
    large_size: int = parse_size(env("BENCH_LARGE_SIZE", "1GiB", "64MiB"))
    mixed_small: int = int(env("BENCH_MIXED_SMALL", "500", "100"))
    mixed_latency_ms: float = float(env("BENCH_MIXED_LATENCY_MS", "30"))
    zero_objects: int = int(env("BENCH_ZERO_OBJECTS", "3000", "300"))
    cap_seconds: float = float(env("BENCH_CAP_SECONDS", "60", "5"))
    tool_timeout: float = float(env("BENCH_TOOL_TIMEOUT", "900", "45"))
    total_timeout: float = float(env("BENCH_TOTAL_TIMEOUT", "10800", "170"))
    workers: int = int(env("BENCH_WORKERS", "64"))
    incident_objects: int = int(env("BENCH_INCIDENT_OBJECTS", "3000", "300"))
    incident_memory: int = parse_size(env("BENCH_INCIDENT_MEMORY", "1843Mi"))
    containers: str = env("BENCH_CONTAINERS", "auto")
    #: The small-objects scenario: objects per case, and the sizes and latencies it crosses.
    small_objects: int = int(env("BENCH_SMALL_OBJECTS", "3000", "300"))
    small_sizes: str = env("BENCH_SMALL_SIZES", "10KB,100KB")
    small_latencies: str = env("BENCH_SMALL_LATENCIES_MS", "0,50")
    engine_timeout: float = float(env("BENCH_ENGINE_TIMEOUT", "1200"))


SCENARIOS = ("small-latency", "small-throttled", "mixed-large", "zero-latency", "incident", "small-objects")
#: Run by default in every scenario but small-objects (`BENCH_TOOLS` may name any of `ALL_TOOLS`).
TOOLS = ("ferry-adaptive", "ferry-fixed-1", "incident-policy", "rclone", "s5cmd", "aws-cli")
ALL_TOOLS = (*TOOLS, "ferry-server-side", "ferry-1cpu", "ferry-2cpu")
FERRY_TOOLS = (
    "ferry-adaptive",
    "ferry-fixed-1",
    "incident-policy",
    "ferry-server-side",
    "ferry-1cpu",
    "ferry-2cpu",
)
#: Ferry streamed in a container given 1 or 2 CPUs (`--cpus`), copying in as many processes as its cgroup
#: allows (`--processes auto`): what a worker pod given that CPU does.
CPU_TOOLS = {"ferry-1cpu": 1.0, "ferry-2cpu": 2.0}
#: The small-objects scenario: where the CPU per object decides, ferry both ways against every peer.
SMALL_TOOLS = (
    "ferry-adaptive",
    "ferry-server-side",
    "ferry-1cpu",
    "ferry-2cpu",
    "rclone",
    "s5cmd",
    "aws-cli",
)
#: The incident scenario compares the incident's memory manager with ferry's, in a pod of the incident's size.
INCIDENT_TOOLS = ("incident-policy", "ferry-adaptive")
#: The incident: 1,000,000 objects of ~100 KB at 1.14 objects/s (DESIGN.md).
INCIDENT_OBJECTS = 1_000_000
INCIDENT_RATE = 1.14


# -- binaries ---------------------------------------------------------------------------------------------


def testbin_dir() -> Path | None:
    if os.environ.get("FERRY_TESTBIN"):
        return Path(os.environ["FERRY_TESTBIN"])
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["bash", str(REPO / "hack" / "testbin.sh"), "--print-dir"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return Path(out.stdout.strip())
    return None


def find_binary(name: str) -> Path | None:
    """The testbed's bin dir first, then a finished tool directory of the cache, then PATH."""
    bin_dir = testbin_dir()
    if bin_dir is not None and (bin_dir / name).is_file() and os.access(bin_dir / name, os.X_OK):
        return bin_dir / name
    tools = Path(os.environ.get("FERRY_TESTBIN_CACHE") or CACHE / "testbin") / "tools"
    for cand in sorted(tools.glob(f"{name}-*/{name}"), reverse=True):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(name)
    return Path(found) if found else None


def ferry_help() -> str:
    try:
        return subprocess.run(
            [str(FERRY), "run", "--help"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except OSError:
        return ""


# -- measuring a child ------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChildResult:
    code: int | None
    wall: float
    cpu: float
    maxrss: int  # sampled VmHWM, every 50 ms
    stdout: str
    stderr: str
    capped: bool
    timed_out: bool
    samples: list[tuple[float, int]]  # (t, PUT requests seen by the destination proxy)
    container: containers.Outcome | None = None  # what the container's cgroup measured (container mode)


def vm_hwm(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes, 0 once it is gone.

    Not ru_maxrss of wait4(): Linux carries the parent's RSS high-water mark across fork+exec into it,
    so every child would report at least the bench's own footprint.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_child(
    argv: list[str],
    child_env: dict[str, str],
    *,
    cap: float | None,
    timeout: float,
    put_counter: Any = None,
    cwd: Path | None = None,
    container: containers.Container | None = None,
) -> ChildResult:
    """Run one tool; wall time, user+sys CPU and peak RSS from wait4() of exactly this child.

    At `cap` seconds the child gets SIGINT (ferry finishes in-flight transfers and prints its summary),
    20-60 s later or at `timeout` SIGKILL. With `container`, `argv` is its `docker run`: wait4() then
    sees only the docker client, so the container is sampled from the host every 50 ms, signalled through
    the engine, and its cgroup's own counters are read after it exits (`ChildResult.container`).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
        )
        capped = timed_out = False
        killed_at: float | None = None
        samples: list[tuple[float, int]] = []
        next_sample = 0.0
        status = 0
        rusage = None
        peak = 0
        try:
            while True:
                if container is None:
                    peak = max(peak, vm_hwm(proc.pid))
                else:
                    container.sample()
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic() - start
                if put_counter is not None and now >= next_sample:
                    samples.append((round(now, 2), put_counter()))
                    next_sample += 1.0
                if cap is not None and not capped and now > cap:
                    capped = True
                    if container is not None:
                        container.signal("INT")
                    else:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, signal.SIGINT)
                # After SIGINT, transfers in flight finish: allow up to a minute for a large object.
                grace = min(60.0, max(20.0, cap)) if cap is not None else 0.0
                if now > timeout or (cap is not None and capped and now > cap + grace):
                    timed_out = not capped
                    if container is not None and killed_at is None:
                        killed_at = now  # the engine kills the container; its client then exits by itself
                        container.signal("KILL")
                    elif killed_at is None or now > killed_at + 10:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.05)
        except BaseException:  # the bench itself is stopped (Ctrl-C, SIGTERM): stop the tool with it
            if container is not None:
                container.signal("KILL")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray grandchildren
        outcome = container.finish() if container is not None else None
        out.seek(0)
        err.seek(0)
        return ChildResult(
            code=proc.returncode,
            wall=wall,
            cpu=rusage.ru_utime + rusage.ru_stime,
            maxrss=peak,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            capped=capped,
            timed_out=timed_out,
            samples=samples,
            container=outcome,
        )


# -- data -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    bucket: str
    objects: dict[str, tuple[int, str]]  # key -> (size, md5 hex)

    @property
    def total_bytes(self) -> int:
        return sum(s for s, _ in self.objects.values())


def client(ep: S3Endpoint, pool: int = 64) -> Any:
    from botocore.config import Config

    return ep.client(
        config=Config(max_pool_connections=pool, retries={"max_attempts": 8, "mode": "standard"})
    )


def generate(
    ep: S3Endpoint, bucket: str, spec: list[tuple[int, int]], workers: int, workdir: Path
) -> Dataset:
    """PUT `spec` = [(count, size)] objects straight to the server (no proxy), in parallel."""
    s3 = client(ep)
    s3.create_bucket(Bucket=bucket)
    jobs: list[tuple[str, int]] = []
    for count, size in spec:
        for i in range(count):
            jobs.append((f"data/{size}/{i:07d}.bin", size))
    objects: dict[str, tuple[int, str]] = {}
    lock = threading.Lock()
    big = 32 * 2**20

    def put(job: tuple[str, int]) -> None:
        key, size = job
        if size <= big:
            body = os.urandom(size)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            md5 = hashlib.md5(body).hexdigest()
        else:
            from boto3.s3.transfer import TransferConfig

            path = workdir / f"gen-{os.getpid()}-{threading.get_ident()}.bin"
            h = hashlib.md5()
            with path.open("wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 8 * 2**20))
                    h.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
            cfg = TransferConfig(multipart_chunksize=64 * 2**20, max_concurrency=8)
            s3.upload_file(str(path), bucket, key, Config=cfg)
            path.unlink()
            md5 = h.hexdigest()
        with lock:
            objects[key] = (size, md5)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, jobs))
    return Dataset(bucket, objects)


def list_bucket(s3: Any, bucket: str) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            found[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
    return found


def verify(ep: S3Endpoint, data: Dataset, dst: str) -> tuple[int, int, int]:
    """(intact, missing, corrupt) for the destination bucket; multipart ETags are checked by MD5 of a GET."""
    s3 = client(ep)
    found = list_bucket(s3, dst)
    missing = corrupt = intact = 0
    to_hash: list[tuple[str, str]] = []
    for key, (size, md5) in data.objects.items():
        got = found.get(key)
        if got is None:
            missing += 1
        elif got[0] != size:
            corrupt += 1
        elif got[1] == md5:
            intact += 1
        else:
            to_hash.append((key, md5))

    def full_md5(item: tuple[str, str]) -> bool:
        h = hashlib.md5()
        for chunk in s3.get_object(Bucket=dst, Key=item[0])["Body"].iter_chunks(2**20):
            h.update(chunk)
        return h.hexdigest() == item[1]

    with ThreadPoolExecutor(4) as pool:
        for ok in pool.map(full_md5, to_hash):
            intact += ok
            corrupt += not ok
    extra = len(set(found) - set(data.objects))
    return intact, missing, corrupt + extra


def drop_bucket(ep: S3Endpoint, bucket: str) -> None:
    s3 = client(ep)
    with contextlib.suppress(Exception):
        keys = list(list_bucket(s3, bucket))
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        s3.delete_bucket(Bucket=bucket)


# -- tools ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """Where a tool reads and writes in one scenario."""

    ep: S3Endpoint
    src_url: str
    dst_url: str
    server_side_url: str
    proxied: bool


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME")
    return {k: v for k, v in os.environ.items() if k in keep}


def ferry_job(
    path: Path, setup: Setup, src: str, dst: str, sizes: dict[str, int], server_side: bool = False
) -> None:
    """Two Secrets and two endpoints make ferry stream GET->PUT; ``server_side``: one endpoint and one
    Secret, so the service copies (CopyObject), as s5cmd and the AWS CLI do."""
    ep = setup.ep
    src_url = setup.server_side_url if server_side else setup.src_url
    dst_url = setup.server_side_url if server_side else setup.dst_url
    dst_secret = "bench-src" if server_side else "bench-dst"
    doc = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CopyJob",
        "metadata": {"name": "bench"},
        "spec": {
            "source": {
                "bucket": src,
                "endpoint": src_url,
                "region": ep.region,
                "addressingStyle": "path",
                "credentialsSecret": "bench-src",
            },
            "destination": {
                "bucket": dst,
                "endpoint": dst_url,
                "region": ep.region,
                "addressingStyle": "path",
                "credentialsSecret": dst_secret,
            },
            "objectSizes": sizes,
        },
    }
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": ep.access_key, "AWS_SECRET_ACCESS_KEY": ep.secret_key},
        }
        for name in sorted({"bench-src", dst_secret})
    ]
    path.write_text("\n---\n".join(json.dumps(d) for d in [doc, *secrets]) + "\n")  # JSON is YAML


def small_cases(p: Params) -> list[tuple[int, float]]:
    """(object size, added latency in ms) of each small-objects case, sizes first."""
    sizes = [parse_size(v) for v in p.small_sizes.split(",") if v.strip()]
    latencies = [float(v) for v in p.small_latencies.split(",") if v.strip()]
    return [(size, latency) for size in sizes for latency in latencies]


def small_case_name(size: int, latency: float) -> str:
    """The case's name, which names its buckets too (so lower case: S3 bucket names are)."""
    label = f"{size // 1000}kb" if size % 1000 == 0 else f"{size}b"
    return f"small-objects-{label}-{latency:g}ms"


def read_timeline(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def seconds_to_90(points: list[tuple[float, float]]) -> float | None:
    """First t where the 5-second moving objects/s reaches 90% of the final steady rate.

    `points` are (t, cumulative objects). The steady rate is the mean rate over the middle of the run
    (from 25% to 90% of its objects), so the ramp-up and the tail do not count.
    """
    if points and points[0][0] > 0:
        points = [(0.0, 0.0), *points]
    if len(points) < 3 or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    lo = next(p for p in points if p[1] >= 0.25 * total)
    hi = next(p for p in points if p[1] >= 0.90 * total)
    steady = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else (total / points[-1][0])
    if steady <= 0:
        return None
    for i, (t, n) in enumerate(points):
        j = i
        while j > 0 and t - points[j - 1][0] <= 5.0:
            j -= 1
        if j < i and t - points[j][0] >= 1.0:  # a window under 1 s is noise
            rate = (n - points[j][1]) / (t - points[j][0])
            if rate >= 0.9 * steady:
                return round(t, 1)
    return None


class Bench:
    def __init__(self, params: Params, workdir: Path, engine: containers.Engine | None) -> None:
        self.p = params
        self.workdir = workdir
        self.engine = engine
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._startup: dict[str, float] = {}
        self._runs = 0
        self.started = T0
        self.help = ferry_help()
        self.has_timeline = "--timeline" in self.help
        self.has_policy = "--policy" in self.help
        #: BENCH_TOOLS was set: the small-objects scenario runs only the tools it names.
        self.tools_named = False
        self.rclone = find_binary("rclone")
        self.s5cmd = find_binary("s5cmd")
        aws = CACHE / "bench-awscli" / "bin" / "aws"
        self.aws = aws if aws.is_file() else None
        for name, path in (("rclone", self.rclone), ("s5cmd", self.s5cmd), ("aws-cli", self.aws)):
            log(f"{name}: {path or 'MISSING - runs skipped'}")
        if not self.has_timeline:
            self.notes.append(
                "ferry run has no --timeline yet: secondsTo90Percent comes from the proxy's PUT count"
            )
        if not self.has_policy:
            self.notes.append(
                "ferry run has no --policy yet: ferry-adaptive ran ferry's current default limiter, "
                "ferry-fixed-1 ran --concurrency 1, incident-policy was skipped"
            )

    def in_container(self, tool: str) -> bool:
        """Container mode runs every tool in a container but the AWS CLI (a venv on the host, not an image)."""
        return self.engine is not None and tool != "aws-cli"

    def container(
        self,
        tool: str,
        argv: list[str],
        env: dict[str, str],
        mounts: list[containers.Mount],
        memory: int | None,
    ) -> containers.Container:
        """A container for `tool`: ferry in ferry:dev; rclone and s5cmd in the base image, binary mounted."""
        assert self.engine is not None
        self._runs += 1
        rundir = self.workdir / f"ctr-{self._runs}"
        if tool in ("rclone", "s5cmd"):
            binary = self.rclone if tool == "rclone" else self.s5cmd
            assert binary is not None
            mounts = [*mounts, containers.Mount(binary, f"/usr/local/bin/{tool}")]
            argv = [f"/usr/local/bin/{tool}", *argv[1:]]
            image = self.engine.base
        else:
            image = self.engine.pinned or self.engine.image
        spec = containers.Spec(image, argv, {"HOME": "/tmp", **env}, mounts, memory, cpus=CPU_TOOLS.get(tool))
        return containers.Container(self.engine, spec, rundir)

    def startup_cpu(self, tool: str) -> float:
        """CPU seconds a tool spends before copying anything (interpreter, imports), measured once.

        Subtracted for `cpuMsPerObjectNet`, so a short smoke run does not charge start-up to each object.
        In container mode it is measured the same way as the run: the container's cgroup CPU (wrapper
        included) of `ferry run --help` / `version` in the same image.
        """
        if tool in self._startup:
            return self._startup[tool]
        argv = {
            "ferry": [str(FERRY), "run", "--help"],
            "rclone": [str(self.rclone), "version"],
            "s5cmd": [str(self.s5cmd), "version"],
            "aws-cli": [str(self.aws), "--version"],
        }[tool]
        cpus: list[float] = []
        try:
            for _ in range(3):
                if self.in_container(tool):
                    inner = ["ferry", *argv[1:]] if tool == "ferry" else argv
                    ctr = self.container(tool, inner, {}, [], None)
                    res = run_child(ctr.argv(), ctr.client_env(), cap=None, timeout=60, container=ctr)
                    if res.container is not None and res.container.cpu_seconds is not None:
                        cpus.append(res.container.cpu_seconds)
                else:
                    cpus.append(run_child(argv, base_env(), cap=None, timeout=60).cpu)
        except OSError:
            pass
        self._startup[tool] = min(cpus) if cpus else 0.0
        return self._startup[tool]

    def remaining(self) -> float:
        return self.p.total_timeout - (time.monotonic() - self.started)

    def memory_limit(self, scenario: str) -> int | None:
        """The scenario's memory limit: the hard limit of its containers (None: no limit)."""
        return {"mixed-large": self.p.memory_limit, "incident": self.p.incident_memory}.get(scenario)

    # one tool, one scenario
    def run_tool(
        self, scenario: str, tool: str, setup: Setup, data: Dataset, sizes: dict[str, int], capped_tool: bool
    ) -> dict[str, Any]:
        p = self.p
        dst = f"dst-{scenario}-{tool}"[:63]
        s3 = client(setup.ep)
        drop_bucket(setup.ep, dst)
        s3.create_bucket(Bucket=dst)
        limit = self.memory_limit(scenario)
        boxed = self.in_container(tool)
        row: dict[str, Any] = {
            "scenario": scenario,
            "name": tool,
            "objectsPerSecond": None,
            "mbPerSecond": None,
            "cpuMsPerObject": None,
            "peakRssBytes": None,
            "cgroupPeakBytes": None,
            "memoryBudgetBytes": None,
            "secondsTo90Percent": None,
            "proxySecondsTo90Percent": None,
            "failedObjects": None,
            "verified": False,
            "throttles": None,
            "retries": None,
            "capped": False,
            "oomKilled": None,
            "copyMode": "streaming GET->PUT (two endpoints)",
            "runsIn": "host",
            "containerMemoryLimitBytes": limit if boxed else None,
            "wallSeconds": None,
            "note": "",
        }
        notes: list[str] = []
        timeout = min(p.tool_timeout, max(5.0, self.remaining() - 10))
        cap = min(p.cap_seconds, timeout - 5) if capped_tool else None
        e = base_env()
        timeline = self.workdir / f"{scenario}-{tool}.timeline.jsonl"
        cwd = None
        extra: dict[str, str] = {}  # the tool's own environment (in a container: all of it)
        mounts: list[containers.Mount] = []
        if tool in FERRY_TOOLS:
            job = self.workdir / f"{scenario}-{tool}.yaml"
            ferry_job(job, setup, data.bucket, dst, sizes, server_side=tool == "ferry-server-side")
            if tool == "ferry-server-side":
                row["copyMode"] = "server-side CopyObject (one endpoint)"
            if boxed:
                mounts.append(containers.Mount(job, "/job/copyjob.yaml"))
                argv = ["ferry", "run", "-f", "/job/copyjob.yaml"]
            else:
                argv = [str(FERRY), "run", "-f", str(job)]
            argv += ["--output", "json", "--progress", "none"]
            if self.has_timeline:
                argv += ["--timeline", "/out/timeline.jsonl" if boxed else str(timeline)]
            if tool == "ferry-fixed-1":
                argv += (
                    ["--policy", "fixed", "--concurrency", "1"] if self.has_policy else ["--concurrency", "1"]
                )
            elif tool == "incident-policy":
                argv += ["--policy", "incident"]
            elif tool in CPU_TOOLS:
                processes = "auto" if boxed else f"{CPU_TOOLS[tool]:g}"
                argv += ["--policy", "adaptive", "--processes", processes]
            elif self.has_policy:
                argv += ["--policy", "adaptive"] if "adaptive" in self.help else []
            if boxed and limit:
                # Like a worker pod: no FERRY_MEMORY_LIMIT, ferry takes 80% of its cgroup's limit itself.
                row["memoryBudgetBytes"] = int(0.8 * limit)
            elif limit and scenario == "incident":
                # On the host the incident's pod is only a budget: what ferry would take from 1.8 GiB.
                extra["FERRY_MEMORY_LIMIT"] = str(int(0.8 * limit))
            else:
                extra["FERRY_MEMORY_LIMIT"] = str(p.memory_limit)
            if "FERRY_MEMORY_LIMIT" in extra:
                row["memoryBudgetBytes"] = int(extra["FERRY_MEMORY_LIMIT"])
        elif tool == "rclone":
            for side, url in (("SRC", setup.src_url), ("DST", setup.dst_url)):
                extra |= {
                    f"RCLONE_CONFIG_{side}_TYPE": "s3",
                    f"RCLONE_CONFIG_{side}_PROVIDER": "Other",
                    f"RCLONE_CONFIG_{side}_ENDPOINT": url,
                    f"RCLONE_CONFIG_{side}_ACCESS_KEY_ID": setup.ep.access_key,
                    f"RCLONE_CONFIG_{side}_SECRET_ACCESS_KEY": setup.ep.secret_key,
                    f"RCLONE_CONFIG_{side}_REGION": setup.ep.region,
                    f"RCLONE_CONFIG_{side}_FORCE_PATH_STYLE": "true",
                }
            extra["RCLONE_CONFIG"] = (
                "/tmp/rclone-none.conf" if boxed else str(self.workdir / "rclone-none.conf")
            )
            argv = [str(self.rclone), "copy", f"src:{data.bucket}", f"dst:{dst}"]
            argv += ["--transfers", "64", "--checkers", "64", "--fast-list", "--s3-no-head"]
            argv += ["--s3-no-check-bucket", "--stats", "0", "--retries", "3"]
        elif tool == "s5cmd":
            extra |= self.aws_env(setup.ep)
            argv = [str(self.s5cmd), "--endpoint-url", setup.server_side_url, "--numworkers", "64"]
            argv += ["cp", f"s3://{data.bucket}/*", f"s3://{dst}/"]
            row["copyMode"] = "server-side CopyObject (one endpoint)"
        elif tool == "aws-cli":
            cfg = self.workdir / "aws-config"
            cfg.write_text(
                "[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 64\n"
                "  max_queue_size = 10000\n  addressing_style = path\n"
            )
            extra |= self.aws_env(setup.ep) | {
                "AWS_CONFIG_FILE": str(cfg),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws-none"),
            }
            argv = [str(self.aws), "s3", "cp", f"s3://{data.bucket}/", f"s3://{dst}/", "--recursive"]
            argv += ["--endpoint-url", setup.server_side_url, "--only-show-errors"]
            row["copyMode"] = "server-side CopyObject (one endpoint)"
        else:
            raise AssertionError(tool)

        ctr = None
        if boxed:
            assert self.engine is not None
            ctr = self.container(tool, argv, extra, mounts, limit)
            row["runsIn"] = f"container {self.engine.image if tool in FERRY_TOOLS else self.engine.base}"
            argv = ctr.argv()
            e = ctr.client_env()  # the docker client's; the tool's own goes through --env-file
        else:
            e |= extra
            if self.engine is not None:
                notes.append("on the host: the AWS CLI is a venv in the host's cache, not an image")

        proxies = self.proxies
        put_counter = None
        before = [px.stats() for px in proxies]
        if proxies:
            dst_px = proxies[-1] if row["copyMode"].startswith("streaming") else proxies[0]
            put_counter = lambda: dst_px.stats().by_method.get("PUT", 0)  # noqa: E731
        where = f" in a container{f' of {limit / 2**20:.0f} MiB' if limit else ''}" if boxed else ""
        log(f"{scenario}: {tool}{where} ... (timeout {timeout:.0f}s{f', cap {cap:.0f}s' if cap else ''})")
        res = run_child(argv, e, cap=cap, timeout=timeout, put_counter=put_counter, cwd=cwd, container=ctr)
        after = [px.stats() for px in proxies]
        if proxies:
            row["throttles"] = sum(a.injected_503 + a.injected_429 for a in after) - sum(
                b.injected_503 + b.injected_429 for b in before
            )
        if ctr is not None:
            timeline = ctr.out / "timeline.jsonl"
        wall, cpu, rss = res.wall, res.cpu, res.maxrss or None
        row["cpuSource"] = "wait4 (user+sys of the process)"
        row["peakRssSource"] = "VmHWM of the process, sampled every 50 ms"
        o = res.container
        if o is not None:
            # The tool's own wall time (start-up included), without creating and removing the container.
            wall = o.tool_wall or res.wall
            cpu = o.cpu_seconds  # type: ignore[assignment]
            rss = o.vm_hwm
            row |= containers.outcome_fields(o)
            row["cpuSource"] = o.cpu_source
            row["peakRssSource"] = (
                "max VmHWM of the container's processes, sampled from the host every 50 ms"
                if rss
                else "not measured"
            )
            row["containerWallSeconds"] = round(res.wall, 2)
            row["dockerClientCpuSeconds"] = round(res.cpu, 2)
            notes += o.notes
            if o.oom_killed or o.oom_kills:
                limit_text = f"its {o.limit / 2**20:.0f} MiB limit" if o.limit else "no limit"
                notes.append(
                    f"OOM kill under {limit_text} (docker OOMKilled={o.oom_killed}, "
                    f"cgroup oom_kill count {o.oom_kills})"
                )
        intact, missing, corrupt = verify(setup.ep, data, dst)
        n = len(data.objects)
        row["wallSeconds"] = round(wall, 2)
        row["capped"] = res.capped and missing > 0
        row["timedOut"] = res.timed_out
        row["exitCode"] = res.code
        row["peakRssBytes"] = rss
        done = intact
        done_bytes = sum(
            data.objects[k][0] for k in list_bucket(s3, dst) if k in data.objects
        )  # arrived bytes
        if done:
            row["objectsPerSecond"] = round(done / wall, 2)
            row["mbPerSecond"] = round(done_bytes / 1e6 / wall, 2)
            if cpu is not None:
                row["cpuMsPerObject"] = round(cpu * 1000 / done, 3)
                startup = self.startup_cpu("ferry" if tool in FERRY_TOOLS else tool)
                row["startupCpuMs"] = round(startup * 1000, 1)
                row["cpuMsPerObjectNet"] = round(max(0.0, cpu - startup) * 1000 / done, 3)
        row["cpuSeconds"] = round(cpu, 2) if cpu is not None else None
        row["objectsCopied"] = done
        row["failedObjects"] = corrupt + (0 if res.capped else missing)
        row["verified"] = (
            corrupt == 0
            and (res.capped or missing == 0)
            and done > 0
            and not (row.get("oomKilled") or row.get("cgroupOomKills"))
        )
        if row["capped"]:
            notes.append(f"capped at {cap:.0f}s: {done}/{n} objects arrived; rate is over the capped run")
        if res.timed_out:
            notes.append(f"killed at the {timeout:.0f}s timeout")
        if res.code not in (0, None) and not res.capped:
            lines = res.stderr.strip().splitlines() or [""]
            # docker run's own failures (125-127) say what was wrong on their first line.
            tail = (lines[0] if ctr is not None and res.code in (125, 126, 127) else lines[-1])[:200]
            notes.append(f"exit {res.code}: {tail}")
        if tool in FERRY_TOOLS:
            summary = None
            with contextlib.suppress(ValueError):
                m = res.stdout.find("{")
                summary = json.loads(res.stdout[m:]) if m >= 0 else None
            if summary:
                row["retries"] = summary.get("retries")
                row["ferryThrottles"] = summary.get("throttles")
                row["ferryObjectsPerSecond"] = summary.get("objectsPerSecond")
            rows = read_timeline(timeline)
            if rows:
                row["timeline"] = rows
                row["secondsTo90Percent"] = seconds_to_90([(r["t"], r["done"]) for r in rows])
                row["peakRssTimelineBytes"] = max((r.get("rssBytes") or 0) for r in rows)
                budgets = [r["budgetBytes"] for r in rows if r.get("budgetBytes")]
                if budgets:
                    row["memoryBudgetBytes"] = budgets[-1]  # what ferry itself reported
        if scenario == "incident" and row["objectsPerSecond"]:
            row["projectedHoursFor1M"] = round(INCIDENT_OBJECTS / row["objectsPerSecond"] / 3600, 1)
        if res.samples:
            row["proxyTimeline"] = res.samples
            if not res.capped:
                row["proxySecondsTo90Percent"] = seconds_to_90([(t, float(c)) for t, c in res.samples])
        row["note"] = "; ".join(notes)
        rate = row["objectsPerSecond"]
        cg = row["cgroupPeakBytes"]
        log(
            f"{scenario}: {tool}: {done}/{n} objects in {wall:.1f}s = {rate} obj/s, "
            f"cpu {fmt(cpu, 2)}s, VmHWM {fmt(rss / 2**20 if rss else None, 0)} MiB, "
            f"cgroup peak {fmt(cg / 2**20 if cg else None, 0)} MiB, oomKilled={row['oomKilled']}, "
            f"verified={row['verified']} {row['note']}"
        )
        drop_bucket(setup.ep, dst)
        return row

    @staticmethod
    def aws_env(ep: S3Endpoint) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ep.access_key,
            "AWS_SECRET_ACCESS_KEY": ep.secret_key,
            "AWS_REGION": ep.region,
            "AWS_DEFAULT_REGION": ep.region,
        }

    def skip(self, scenario: str, tool: str, why: str) -> None:
        log(f"{scenario}: {tool}: skipped ({why})")
        self.results.append(
            {"scenario": scenario, "name": tool, "skipped": True, "note": why, "verified": False}
        )

    def scenario(self, name: str, ep: S3Endpoint, tools: list[str]) -> None:
        p = self.p
        if name == "small-objects":
            # Every size at every latency, each case a scenario of its own in the results.
            asked = [t for t in tools if t in SMALL_TOOLS] if self.tools_named else list(SMALL_TOOLS)
            for size, latency in small_cases(p):
                case = small_case_name(size, latency)
                plan = FaultPlan(latency_ms=latency) if latency else None
                if self.remaining() < 20:
                    self.notes.append(f"scenario {case} skipped: total time budget used up")
                    continue
                self.run_scenario(case, ep, asked, [(p.small_objects, size)], plan)
            return
        if name == "small-latency":
            spec = [(p.objects, p.size)]
            plan = FaultPlan(latency_ms=p.latency_ms, jitter_ms=p.jitter_ms)
        elif name == "small-throttled":
            spec = [(p.objects, p.size)]
            plan = FaultPlan(latency_ms=p.latency_ms, jitter_ms=p.jitter_ms, throttle_rate=p.throttle_rate)
        elif name == "mixed-large":
            spec = [(p.large_count, p.large_size), (p.mixed_small, p.size)]
            jitter = min(p.jitter_ms, p.mixed_latency_ms)
            plan = FaultPlan(latency_ms=p.mixed_latency_ms, jitter_ms=jitter)
        elif name == "zero-latency":
            spec = [(p.zero_objects, p.size)]
            plan = None
        elif name == "incident":
            # The incident's objects at the remote latency, the incident's policy against ferry's, both in a
            # container of the incident pod's size (BENCH_INCIDENT_MEMORY).
            spec = [(p.incident_objects, p.size)]
            plan = FaultPlan(latency_ms=p.latency_ms, jitter_ms=p.jitter_ms)
            asked = tools
            tools = [t for t in INCIDENT_TOOLS if t in asked]
            if not tools:
                log(f"incident: none of {', '.join(INCIDENT_TOOLS)} in BENCH_TOOLS; scenario skipped")
                self.notes.append("scenario incident skipped: BENCH_TOOLS names neither of its tools")
                return
        else:
            raise SystemExit(f"bench: unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        self.run_scenario(name, ep, [t for t in tools if t != "ferry-server-side"], spec, plan)

    def run_scenario(
        self,
        name: str,
        ep: S3Endpoint,
        tools: list[str],
        spec: list[tuple[int, int]],
        plan: FaultPlan | None,
    ) -> None:
        """Generate ``spec``'s objects, then run each tool on them behind ``plan``'s proxies (none: on the
        server itself), verifying every copy."""
        p = self.p
        sizes_all = sorted(s for c, s in spec for _ in range(min(c, 10_000)))
        sizes = {"median": sizes_all[len(sizes_all) // 2], "max": sizes_all[-1]}
        src = f"src-{name}"
        log(f"{name}: generating {sum(c for c, _ in spec)} objects {spec} in {src}")
        t = time.monotonic()
        drop_bucket(ep, src)
        data = generate(ep, src, spec, p.workers, self.workdir)
        log(
            f"{name}: generated {len(data.objects)} objects, {data.total_bytes / 1e6:.1f} MB in {time.monotonic() - t:.1f}s"
        )
        self.proxies: list[FaultProxy] = []
        try:
            if plan is not None:
                self.proxies = [
                    FaultProxy(ep.url, plan, seed=1).start(),
                    FaultProxy(ep.url, plan, seed=2).start(),
                ]
                setup = Setup(ep, self.proxies[0].url, self.proxies[1].url, self.proxies[0].url, True)
            else:
                # No proxy: both sides on the server itself; two Secrets make ferry stream GET->PUT.
                setup = Setup(ep, ep.url, ep.url, ep.url, False)
            for tool in tools:
                if self.remaining() < 15:
                    self.skip(name, tool, "total time budget (BENCH_TOTAL_TIMEOUT) used up")
                    continue
                if tool == "incident-policy" and not self.has_policy:
                    self.skip(name, tool, "ferry run has no --policy flag yet")
                    continue
                if tool == "rclone" and not self.rclone:
                    self.skip(name, tool, "rclone binary not found (make testbin)")
                    continue
                if tool == "s5cmd" and not self.s5cmd:
                    self.skip(name, tool, "s5cmd binary not found (make testbin)")
                    continue
                if tool == "aws-cli" and not self.aws:
                    self.skip(name, tool, f"AWS CLI not installed in {CACHE / 'bench-awscli'}")
                    continue
                capped_tool = tool in ("ferry-fixed-1", "incident-policy") and name != "zero-latency"
                if tool == "ferry-server-side":
                    capped_tool = False
                try:
                    row = self.run_tool(name, tool, setup, data, sizes, capped_tool)
                except Exception as exc:  # one broken run must not lose the others
                    log(f"{name}: {tool}: ERROR {exc!r}")
                    row = {"scenario": name, "name": tool, "error": repr(exc), "verified": False}
                row["proxied"] = setup.proxied
                self.results.append(row)
        finally:
            for px in self.proxies:
                px.stop()
            drop_bucket(ep, src)


# -- output -----------------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def mib(v: Any) -> str:
    return fmt(v / 2**20 if v else None, 0)


def runs_in(r: dict[str, Any]) -> str:
    if not str(r.get("runsIn", "")).startswith("container"):
        return "host"
    lim = r.get("containerMemoryLimitBytes")
    return f"container ({mib(lim)} MiB)" if lim else "container"


def incident_table(srows: list[dict[str, Any]]) -> list[str]:
    """The before/after table: the incident's memory manager against ferry's, in the incident pod's size."""
    base = next((r for r in srows if r["name"] == "incident-policy" and r.get("objectsPerSecond")), {})
    out = [
        "| policy | runs in | obj/s | vs incident-policy | hours for 1,000,000 objects (projected) "
        "| cgroup peak MiB | peak RSS MiB | budget MiB | OOMKilled | verified | capped | note |",
        "|" + "---|" * 12,
    ]
    for r in srows:
        if r.get("skipped") or r.get("error"):
            out.append(f"| {r['name']} | | | | | | | | | | | {r.get('note') or r.get('error')} |")
            continue
        oom = r.get("oomKilled")
        out.append(
            f"| {r['name']} | {runs_in(r)} | {fmt(r.get('objectsPerSecond'), 2)} | "
            f"{ratio(r.get('objectsPerSecond'), base.get('objectsPerSecond'))} | "
            f"{fmt(r.get('projectedHoursFor1M'))} | {mib(r.get('cgroupPeakBytes'))} | "
            f"{mib(r.get('peakRssBytes'))} | {mib(r.get('memoryBudgetBytes'))} | "
            f"{'-' if oom is None else ('YES' if oom else 'no')} | {'yes' if r.get('verified') else 'NO'} | "
            f"{'yes' if r.get('capped') else ''} | {r.get('note', '')} |"
        )
    out += [
        "",
        f"Hours for {INCIDENT_OBJECTS:,} objects are a projection: {INCIDENT_OBJECTS:,} / the measured "
        f"objects/s, assuming the rate holds. The incident itself ran at {INCIDENT_RATE} objects/s "
        f"({int(INCIDENT_OBJECTS / INCIDENT_RATE / 3600)} h). The incident policy adds two transfers every "
        "30 s, so its capped rate is the rate of its first minutes.",
    ]
    return out


def markdown(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out = [f"# Ferry benchmark ({header['date']})", ""]
    out.append(
        f"Machine: {header['machine']['nproc']} cores, {header['machine']['memoryGiB']} GiB. "
        f"Server: {header['server']}. Smoke: {header['smoke']}. Total {header['totalSeconds']}s."
    )
    out += [""] + [f"- {n}" for n in header["notes"]] + [""]
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        srows = [r for r in rows if r["scenario"] == sc]
        base = next((r for r in srows if r["name"] == "ferry-adaptive" and r.get("objectsPerSecond")), {})
        out += [f"## {sc}", "", f"Parameters: `{json.dumps(header['scenarios'].get(sc, {}))}`", ""]
        if sc == "incident":
            out += [*incident_table(srows), ""]
            continue
        out.append(
            "| tool | runs in | mode | obj/s | vs ferry-adaptive | MB/s | CPU ms/obj (net of start-up) "
            "| peak RSS MiB | cgroup peak MiB | budget MiB | s to 90% | failed | verified "
            "| 503s injected / seen | retries | capped | note |"
        )
        out.append("|" + "---|" * 17)
        for r in srows:
            if r.get("skipped") or r.get("error"):
                out.append(
                    f"| {r['name']} | | | | | | | | | | | | | | | | {r.get('note') or r.get('error')} |"
                )
                continue
            mode = "server-side" if "server-side" in r.get("copyMode", "") else "GET+PUT"
            s90 = r.get("secondsTo90Percent")
            s90s = fmt(s90) if s90 is not None else fmt(r.get("proxySecondsTo90Percent"))
            if s90 is None and r.get("proxySecondsTo90Percent") is not None:
                s90s += " (proxy)"
            throttles = fmt(r.get("throttles"))
            if r.get("ferryThrottles") is not None:
                throttles += f" / {r['ferryThrottles']}"
            out.append(
                f"| {r['name']} | {runs_in(r)} | {mode} | {fmt(r.get('objectsPerSecond'))} | "
                f"{ratio(r.get('objectsPerSecond'), base.get('objectsPerSecond'))} | {fmt(r.get('mbPerSecond'))} | "
                f"{fmt(r.get('cpuMsPerObject'), 2)} ({fmt(r.get('cpuMsPerObjectNet'), 2)}) | "
                f"{mib(r.get('peakRssBytes'))} | {mib(r.get('cgroupPeakBytes'))} | "
                f"{mib(r.get('memoryBudgetBytes'))} | {s90s} | {fmt(r.get('failedObjects'))} | "
                f"{'yes' if r.get('verified') else 'NO'} | {throttles} | {fmt(r.get('retries'))} | "
                f"{'yes' if r.get('capped') else ''} | {r.get('note', '')} |"
            )
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]]) -> str | None:
    py = CACHE / "bench-plot" / "bin" / "python"
    if not py.is_file():
        return f"plots skipped: no matplotlib venv at {py.parent.parent} (make bench-plot-venv)"
    done = []
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        series = {
            r["name"]: {"timeline": r.get("timeline"), "proxy": r.get("proxyTimeline")}
            for r in rows
            if r["scenario"] == sc
            and r["name"] in ("ferry-adaptive", "ferry-fixed-1", "incident-policy")
            and (r.get("timeline") or r.get("proxyTimeline"))
        }
        if not series:
            continue
        data = RESULTS / f".{sc}-plot.json"
        data.write_text(json.dumps({"scenario": sc, "series": series}))
        png = RESULTS / f"{sc}-ferry.png"
        try:
            subprocess.run([str(py), str(HERE / "plot.py"), str(data), str(png)], check=True, timeout=120)
            done.append(png.name)
        except (subprocess.SubprocessError, OSError) as exc:
            return f"plotting failed: {exc}"
        finally:
            data.unlink(missing_ok=True)
    return None


def main() -> int:
    # `timeout` and CI stop the bench with SIGTERM: unwind, so its containers and servers are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = Params()
    wanted = [s.strip() for s in env("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s.strip()]
    tools = [t.strip() for t in env("BENCH_TOOLS", ",".join(TOOLS)).split(",") if t.strip()]
    unknown = [t for t in tools if t not in ALL_TOOLS]
    if unknown:
        raise SystemExit(f"bench: unknown tools {unknown} (known: {', '.join(ALL_TOOLS)})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    log(f"params {dataclasses.asdict(p)}; scenarios {wanted}; tools {tools}; workdir {workdir}")
    for sc in wanted:
        if sc not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {sc!r} (known: {', '.join(SCENARIOS)})")
    t = time.monotonic()
    engine, why_not = containers.detect(p.containers, REPO, p.engine_timeout, log)
    engine_seconds = time.monotonic() - t
    stack = contextlib.ExitStack()
    stack.callback(containers.release, engine)  # last: the containers go first
    stack.callback(containers.remove_all)
    bench = Bench(p, workdir, engine)
    bench.tools_named = bool(os.environ.get("BENCH_TOOLS"))
    bench.started += engine_seconds  # building the image does not count against BENCH_TOTAL_TIMEOUT
    container_header: dict[str, Any] = {"mode": p.containers, "enabled": engine is not None}
    if engine is not None:
        container_header |= {
            "image": f"{engine.image} ({engine.image_id[:19]})",
            "baseImage": engine.base,
            "cgroup": engine.cgroup,
            "setupSeconds": round(engine_seconds, 1),
        }
        peak_file = "memory.peak" if engine.cgroup == "v2" else "memory.max_usage_in_bytes"
        cpu_file = "cpu.stat usage_usec" if engine.cgroup == "v2" else "cpuacct.usage"
        bench.notes.append(
            f"container mode on (cgroup {engine.cgroup}): ferry in {engine.image} ({engine.image_id[:19]}), "
            f"rclone and s5cmd in {engine.base} with their binary mounted read-only, all --network host, "
            f"--read-only, uid {containers.UID}; the AWS CLI on the host (a venv, not an image). Memory: "
            f"{peak_file} and CPU: {cpu_file} of the container's cgroup, read inside it at exit; "
            "peak RSS: VmHWM of its processes, sampled from the host"
        )
        log(f"containers: on, {engine.image} ({engine.image_id[:19]}), {engine.base}, cgroup {engine.cgroup}")
    else:
        container_header["reason"] = why_not
        bench.notes.append(
            f"container mode off ({why_not}): every tool ran on the host; memory is VmHWM only, "
            "CPU from wait4, and the incident scenario's 1.8 GiB is only ferry's budget, not a cgroup limit"
        )
        log(f"containers: off ({why_not})")
    server_name = ""
    try:
        ep: S3Endpoint | None = None
        vgw = find_binary("versitygw")
        if vgw is not None:
            try:
                from testbed.versitygw import VersityGW

                gw = stack.enter_context(VersityGW(vgw.parent, workdir / "versitygw"))
                ep = gw.endpoint
                server_name = f"versitygw ({vgw})"
            except Exception as exc:
                bench.notes.append(f"versitygw failed to start ({exc}); fell back to moto")
        else:
            bench.notes.append("versitygw not built (make testbin); fell back to moto")
        if ep is None:
            moto = MotoServer()
            moto.start()
            stack.callback(moto.stop)
            ep = moto.endpoint
            server_name = (
                "moto (CPU-bound, ~400 req/s: peers and ferry are all server-bound; ratios understate)"
            )
        log(f"server: {server_name} at {ep.url}")
        for sc in wanted:
            if bench.remaining() < 20:
                bench.notes.append(f"scenario {sc} skipped: total time budget used up")
                continue
            bench.scenario(sc, ep, tools)
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    scen = {
        "small-latency": {
            "objects": p.objects,
            "size": p.size,
            "latencyMs": p.latency_ms,
            "jitterMs": p.jitter_ms,
        },
        "small-throttled": {
            "objects": p.objects,
            "size": p.size,
            "latencyMs": p.latency_ms,
            "jitterMs": p.jitter_ms,
            "throttleRate": p.throttle_rate,
        },
        "mixed-large": {
            "large": [p.large_count, p.large_size],
            "small": [p.mixed_small, p.size],
            "latencyMs": p.mixed_latency_ms,
            "memoryLimit": p.memory_limit,
        },
        "zero-latency": {"objects": p.zero_objects, "size": p.size, "latencyMs": 0, "proxy": False},
        **{
            small_case_name(size, latency): {
                "objects": p.small_objects,
                "size": size,
                "latencyMs": latency,
                "proxy": bool(latency),
                "tools": list(SMALL_TOOLS),
            }
            for size, latency in small_cases(p)
        },
        "incident": {
            "objects": p.incident_objects,
            "size": p.size,
            "latencyMs": p.latency_ms,
            "jitterMs": p.jitter_ms,
            "memoryLimit": p.incident_memory,
            "tools": list(INCIDENT_TOOLS),
            "projectionFor": INCIDENT_OBJECTS,
        },
    }
    header: dict[str, Any] = {
        "header": True,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "memoryGiB": round(mem / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "server": server_name,
        "smoke": SMOKE,
        "params": dataclasses.asdict(p),
        "scenarios": {
            k: v
            for k, v in scen.items()
            if k in wanted or ("small-objects" in wanted and k.startswith("small-objects-"))
        },
        "cappedTools": "ferry-fixed-1 and incident-policy stop at capSeconds (SIGINT) outside zero-latency",
        "containers": container_header,
        "notes": bench.notes,
        "totalSeconds": round(time.monotonic() - T0, 1),
    }
    note = plot(bench.results)
    if note:
        header["notes"].append(note)
    (RESULTS / "latest.json").write_text(json.dumps([header, *bench.results], indent=1) + "\n")
    (RESULTS / "latest.md").write_text(markdown(header, bench.results) + "\n")
    log(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    print(markdown(header, bench.results))
    bad = [r for r in bench.results if not r.get("skipped") and not r.get("verified")]
    return 1 if bad and os.environ.get("BENCH_STRICT") else 0


if __name__ == "__main__":
    sys.exit(main())
