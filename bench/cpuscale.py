"""How Ferry's objects/s scale with the CPUs a worker is given: `ferry run --processes auto` in the
image, in containers given 1 and 2 CPUs (`docker run --cpus`), as worker pods given that CPU run.

The S3 side is `hack/nulls3`, an endpoint that costs almost no CPU (generated source objects, writes
checked against their Content-MD5 and dropped), so Ferry's own CPU is what bounds the copy: with a real
server on the same 2 cores the server takes the second core and no client scales. Each case runs
`--runs` times, alternating, and the table gives medians and the 2-CPU/1-CPU ratio from the same run.

    .venv/bin/python bench/cpuscale.py --objects 20000 --size 10KB --runs 3
    make bench-cpus

Results: `bench/results/cpu-scaling.{json,md}` (or `--out DIR`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import containers  # noqa: E402  (bench/ is a folder of scripts)
from run import parse_size  # noqa: E402

NULLS3 = ROOT / "hack" / "nulls3"
#: Memory each container is given: room for 512 transfers of small objects and two copy processes.
MEMORY = 1024 * 2**20


def log(message: str) -> None:
    print(f"[cpuscale] {message}", file=sys.stderr, flush=True)


def build_nulls3() -> Path:
    """nulls3 built with the ordinary `go build`, cached by the hash of its sources."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(NULLS3.glob("*")))).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferry" / f"nulls3-{digest}"
    binary = cache / "nulls3"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"go build hack/nulls3 -> {binary}")
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=NULLS3, check=True, timeout=600)
    return binary


def start_nulls3(binary: Path, objects: int, size: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [str(binary), "-objects", str(objects), "-size", str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        server.kill()
        raise SystemExit(f"nulls3 did not start: {line!r}")
    return server, line.removeprefix("listening on ")


def write_job(path: Path, url: str) -> None:
    """Two endpoints' worth of Secrets, so Ferry streams GET -> PUT as between two providers."""
    text = f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: cpuscale}}
spec:
  source: {{bucket: src, endpoint: "{url}", region: us-east-1, addressingStyle: path, credentialsSecret: a}}
  destination: {{bucket: dst, endpoint: "{url}", region: us-east-1, addressingStyle: path, credentialsSecret: b}}
  overwrite: always
"""
    for name in ("a", "b"):
        text += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {{AWS_ACCESS_KEY_ID: bench, AWS_SECRET_ACCESS_KEY: bench-secret}}
"""
    path.write_text(text)
    path.chmod(0o644)


def run_case(
    engine: containers.Engine, job: Path, cpus: float, rundir: Path, timeout: float
) -> dict[str, Any]:
    argv = [
        "ferry",
        "run",
        "-f",
        "/job/copyjob.yaml",
        "--processes",
        "auto",
        "--output",
        "json",
        "--progress",
        "none",
    ]
    spec = containers.Spec(
        engine.pinned or engine.image,
        argv,
        {"HOME": "/tmp"},
        [containers.Mount(job, "/job/copyjob.yaml")],
        MEMORY,
        cpus=cpus,
    )
    ctr = containers.Container(engine, spec, rundir)
    started = time.monotonic()
    done = subprocess.run(
        ctr.argv(), env=ctr.client_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    wall = time.monotonic() - started
    outcome = ctr.finish()
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"ferry gave no summary (exit {done.returncode}): {done.stderr[-2000:]}") from None
    copied = summary["objects"]["copied"]
    cpu = outcome.cpu_seconds
    return {
        "cpus": cpus,
        "exitCode": summary["exitCode"],
        "copied": copied,
        "failed": summary["objects"]["failed"],
        "copyProcesses": summary["memory"]["copyProcesses"],
        "objectsPerSecond": summary["objectsPerSecond"],
        "toolWallSeconds": outcome.tool_wall,
        "containerWallSeconds": round(wall, 2),
        "cpuSeconds": cpu,
        "cpuMsPerObject": round(1000 * cpu / copied, 3) if cpu and copied else None,
        "cgroupPeakBytes": outcome.cgroup_peak,
        "cpuSource": outcome.cpu_source,
    }


def table(rows: list[dict[str, Any]], cpus_list: list[float]) -> list[str]:
    lines = [
        "| CPUs | copy processes | objects/s (median, range) | vs 1 CPU | CPU ms/object | cgroup peak MiB | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    base = None
    for cpus in cpus_list:
        mine = [r for r in rows if r["cpus"] == cpus]
        rates = [r["objectsPerSecond"] for r in mine]
        median = statistics.median(rates)
        base = base or median
        cpu_ms = statistics.median([r["cpuMsPerObject"] for r in mine if r["cpuMsPerObject"]] or [0])
        peak = max((r["cgroupPeakBytes"] or 0) for r in mine) / 2**20
        lines.append(
            f"| {cpus:g} | {mine[0]['copyProcesses']} | {median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
            f"{median / base:.2f}x | {cpu_ms:.2f} | {peak:.0f} | {sum(r['failed'] for r in mine)} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--size", default="10KB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpus", default="1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    size = parse_size(args.size)
    cpus_list = [float(c) for c in args.cpus.split(",")]
    engine, why = containers.detect("1", ROOT, 1800, log)
    assert engine is not None, why
    binary = build_nulls3()
    server, url = start_nulls3(binary, args.objects, size)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-cpuscale-") as tmp:
            work = Path(tmp)
            work.chmod(0o755)
            job = work / "copyjob.yaml"
            write_job(job, url)
            for run in range(args.runs):
                for cpus in cpus_list:
                    row = run_case(engine, job, cpus, work / f"run-{run}-{cpus:g}", args.timeout)
                    log(
                        f"run {run + 1}: {cpus:g} CPU(s), {row['copyProcesses']} copy processes: "
                        f"{row['copied']} copied, {row['objectsPerSecond']:,.0f} objects/s, "
                        f"{row['cpuMsPerObject']} ms CPU/object"
                    )
                    rows.append(row)
    finally:
        server.kill()
        containers.release(engine)
    header = (
        f"# Objects/s by CPUs given ({time.strftime('%Y-%m-%d')})\n\n"
        f"`ferry run --processes auto` in {engine.image}, `docker run --cpus N --memory 1g`, streamed GET -> PUT of "
        f"{args.objects:,} objects of {size:,} bytes from and to hack/nulls3 on 127.0.0.1 (a near-zero-CPU "
        f"endpoint), {args.runs} runs per case alternating; machine: {os.cpu_count()} cores. CPU: the "
        "container's cgroup, start-up included.\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu-scaling.md").write_text(header + "\n" + "\n".join(table(rows, cpus_list)) + "\n")
    (args.out / "cpu-scaling.json").write_text(
        json.dumps({"objects": args.objects, "size": size, "runs": rows}, indent=2) + "\n"
    )
    print("\n".join(table(rows, cpus_list)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
