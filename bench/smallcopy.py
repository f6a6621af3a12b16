"""Where the CPU per small object goes: a versitygw with small objects, `ferry run` timed and profiled on it.

`serve` starts versitygw on 127.0.0.1, seeds a source bucket with N objects of one size and writes two
CopyJob files next to it: `streamed.yaml` (two Secrets, so Ferry streams GET -> PUT) and
`server-side.yaml` (one Secret: CopyObject). Both say `overwrite: always`, so every run copies every
object again and runs can be repeated against the same server (an A/B of two builds, say). It stays up
until it is interrupted or `--seconds` have passed.

`profile` runs `ferry run` on one of those files with the adaptive policy and with one transfer at a
time, each also on its `-empty` twin (no objects: start-up, clients, preflight and summary alone), for the
CPU per object (user + sys of the process, from `wait4`) and what each further object costs (the run less
the run without objects); then once more with one transfer at a time under py-spy, whose samples
`bench/cpuprofile.py` attributes to operations (listing, GET, PUT, CopyObject ...) and layers (botocore,
urllib3, signing, checksums, accounting, thread hand-offs ...). The table splits the marginal user CPU
per object in the proportions of the busy samples outside start-up and summary, and gives the marginal
system CPU as one row (a thread in a system call shows a blocking frame, so its kernel time cannot be told
from waiting). py-spy is a development tool:
`.venv/bin/pip install py-spy` (it is not one of Ferry's dependencies).

    .venv/bin/python bench/smallcopy.py serve --dir /tmp/ferry-small --objects 4000 --size 10KB &
    .venv/bin/python bench/smallcopy.py profile --dir /tmp/ferry-small --job streamed
    .venv/bin/python bench/smallcopy.py profile --dir /tmp/ferry-small --job server-side
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cpuprofile  # noqa: E402  (bench/ is a folder of scripts)

from testbed.versitygw import VersityGW  # noqa: E402

SOURCE, DESTINATION = "small-src", "small-dst"
#: The longest `serve` stays up unless told otherwise, and the longest one profiled run may take.
SERVE_SECONDS = 3600
RUN_TIMEOUT = 600


def parse_size(text: str) -> int:
    units = {"KB": 1000, "KIB": 1024, "MB": 1000**2, "MIB": 1024**2, "B": 1}
    upper = text.strip().upper()
    for suffix, factor in units.items():
        if upper.endswith(suffix):
            return int(float(upper[: -len(suffix)]) * factor)
    return int(upper)


def job_document(
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    *,
    streamed: bool,
    size: int,
    prefix: str = "",
) -> str:
    """A CopyJob (JSON is YAML) copying every object of SOURCE under ``prefix`` into DESTINATION, with its
    Secrets."""
    secrets = ("small-src", "small-dst") if streamed else ("small", "small")

    def location(bucket: str, secret: str) -> dict[str, Any]:
        return {
            "bucket": bucket,
            "endpoint": url,
            "region": region,
            "addressingStyle": "path",
            "credentialsSecret": secret,
            **({"prefix": prefix} if prefix else {}),
        }

    doc = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CopyJob",
        "metadata": {"name": "small-objects"},
        "spec": {
            "source": location(SOURCE, secrets[0]),
            "destination": location(DESTINATION, secrets[1]),
            "overwrite": "always",
            "objectSizes": {"median": size, "p99": size, "max": size},
        },
    }
    docs = [doc] + [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        }
        for name in sorted(set(secrets))
    ]
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


#: A prefix that holds no object: the jobs under it measure what a run costs before and after its copies.
EMPTY_PREFIX = "empty/"


def write_jobs(workdir: Path, url: str, access_key: str, secret_key: str, region: str, size: int) -> None:
    """streamed.yaml and server-side.yaml, and each one's -empty twin (the same job over EMPTY_PREFIX)."""
    for name, streamed in (("streamed", True), ("server-side", False)):
        for suffix, prefix in (("", ""), ("-empty", EMPTY_PREFIX)):
            text = job_document(
                url, access_key, secret_key, region, streamed=streamed, size=size, prefix=prefix
            )
            path = workdir / f"{name}{suffix}.yaml"
            path.write_text(text)
            path.chmod(0o600)


def serve(args: argparse.Namespace) -> int:
    from botocore.config import Config

    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir = os.environ.get("FERRY_TESTBIN")
    if not bin_dir:
        print("set FERRY_TESTBIN=$(hack/testbin.sh --print-dir)", file=sys.stderr)
        return 2
    size = parse_size(args.size)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with VersityGW(Path(bin_dir), workdir / "gw") as gw:
        ep = gw.endpoint
        s3 = ep.client(
            config=Config(max_pool_connections=32, retries={"max_attempts": 8, "mode": "standard"})
        )
        s3.create_bucket(Bucket=SOURCE)
        s3.create_bucket(Bucket=DESTINATION)
        body = os.urandom(size)

        def put(i: int) -> None:
            # Distinct bodies would only cost seeding time: the copier never compares objects.
            s3.put_object(Bucket=SOURCE, Key=f"data/{i:07d}.bin", Body=body)

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(args.objects)))
        print(f"seeded {args.objects} x {size} B in {time.monotonic() - started:.1f} s", file=sys.stderr)
        write_jobs(workdir, ep.url, ep.access_key, ep.secret_key, ep.region, size)
        (workdir / "objects").write_text(str(args.objects))
        (workdir / "ready").write_text(ep.url)
        print(f"ready: {workdir}/streamed.yaml, {workdir}/server-side.yaml", file=sys.stderr, flush=True)
        stop.wait(args.seconds)
        (workdir / "ready").unlink(missing_ok=True)
    return 0


def ferry_argv(ferry: str, job: Path, extra: list[str]) -> list[str]:
    return [ferry, "run", "-f", str(job), "--output", "json", "--progress", "none", *extra]


def timed_run(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, user and system CPU seconds of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        summary = {"state": "unreadable", "stderr": done.stderr[-2000:]}
    if summary.get("state") != "complete":
        raise SystemExit(f"ferry run did not complete: {json.dumps(summary)[:2000]}")
    return wall, user, system


#: The profiled run copies with one transfer at a time: with one copying thread, a sample whose innermost
#: frame is a blocking call is a wait (with dozens, threads queued for the GIL look the same as threads
#: computing, and the samples pile up on the lines that release it). Concurrency barely changes the CPU
#: per object (the timed runs show both).
PROFILED = ["--policy", "fixed", "--concurrency", "1"]


def profile(args: argparse.Namespace) -> int:
    workdir = Path(args.dir)
    if not (workdir / "ready").is_file():
        print(f"no server ready in {workdir}: start `bench/smallcopy.py serve` first", file=sys.stderr)
        return 2
    objects = int((workdir / "objects").read_text())
    job = workdir / f"{args.job}.yaml"
    ferry = args.ferry or str(ROOT / ".venv" / "bin" / "ferry")
    startup_cpu = measure_startup(ferry)
    empty = workdir / f"{args.job}-empty.yaml"
    runs: dict[str, dict[str, float]] = {}
    for name, extra in (("adaptive", []), ("fixed-1", PROFILED)):
        # The cost of a run without objects (start-up, clients, preflight, summary): the smallest of three.
        fixed = min((timed_run(ferry_argv(ferry, empty, extra)) for _ in range(3)), key=lambda r: r[1] + r[2])
        wall, user, system = timed_run(ferry_argv(ferry, job, extra))
        cpu = user + system
        runs[name] = {
            "wallSeconds": round(wall, 3),
            "cpuSeconds": round(cpu, 3),
            "objectsPerSecond": round(objects / wall, 1),
            "cpuMsPerObject": round(1000 * cpu / objects, 3),
            "cpuMsPerObjectNet": round(1000 * (cpu - startup_cpu) / objects, 3),
            "runWithoutObjectsCpuSeconds": round(fixed[1] + fixed[2], 3),
            # What each further object costs: the run less the same run without objects.
            "userMsPerObjectMarginal": round(1000 * (user - fixed[1]) / objects, 3),
            "systemMsPerObjectMarginal": round(1000 * (system - fixed[2]) / objects, 3),
        }
    raw = workdir / f"{args.job}.pyspy.txt"
    spy = str(Path(sys.executable).parent / "py-spy")
    subprocess.run(
        [
            spy,
            "record",
            "--format",
            "raw",
            "--rate",
            str(args.rate),
            "--threads",
            "-o",
            str(raw),
            "--",
            *ferry_argv(ferry, job, PROFILED),
        ],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    # Start-up and summary are measured whole by the run without objects; the samples split the rest.
    table = cpuprofile.attribute(
        cpuprofile.parse_collapsed(raw.read_text()), leave_out=frozenset({cpuprofile.START_UP})
    )
    result = {
        "job": args.job,
        "ferry": ferry,
        "objects": objects,
        "startupCpuSeconds": round(startup_cpu, 3),
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    one = runs["fixed-1"]
    print(cpuprofile.markdown(table, one["userMsPerObjectMarginal"], one["systemMsPerObjectMarginal"]))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, **table.as_json()}, indent=2) + "\n")
    return 0


def measure_startup(ferry: str) -> float:
    """CPU of the interpreter and Ferry's imports alone (`ferry run --help`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([ferry, "run", "--help"], capture_output=True, check=False, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="versitygw with seeded small objects and two CopyJob files")
    s.add_argument("--dir", required=True)
    s.add_argument("--objects", type=int, default=4000)
    s.add_argument("--size", default="10KB")
    s.add_argument("--seconds", type=float, default=SERVE_SECONDS)
    p = sub.add_parser("profile", help="time and profile `ferry run` on a served job")
    p.add_argument("--dir", required=True)
    p.add_argument("--job", choices=("streamed", "server-side"), default="streamed")
    p.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    p.add_argument("--ferry", help="the ferry executable (default: this checkout's .venv/bin/ferry)")
    p.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    return serve(args) if args.command == "serve" else profile(args)


if __name__ == "__main__":
    sys.exit(main())
