"""Endpoint budgets, measured: five CopyJobs on one endpoint that allows N requests/s in total.

The endpoint is versitygw behind `testbed/faultproxy.py` with `max_requests_per_second=N`: above N
requests/s, all clients together, it answers 503 SlowDown, as a provider's request-rate limit does. Five
`ferry run` processes each copy their own bucket of small objects through it, twice, in one run:

- `budget`: each holds its fair share of an EndpointBudget of N (`spec.rateLimit.requestsPerSecond` =
  N/5, what the operator gives each of five CopyJobs sharing a budget of N; `ferry run` is the engine of a
  worker pod without the operator, so the share is written into each CopyJob);
- `alone`: each on its own policy, no limit: every job pushes until the endpoint throttles it, and backs
  off by itself.

While all five run, the proxy's counters give the requests served per second (answered by the server)
and the share of requests throttled (503 from the cap). The requirement: under the budget, >= 90% of N
together with < 2% throttled; alone, > 20% throttled and a lower total. Results go to
bench/results/budget-latest.{json,md}.

    FERRY_TESTBIN=$(hack/testbin.sh --print-dir) .venv/bin/python bench/budget.py   # `make bench-budget`

Everything listens on 127.0.0.1; every process has a timeout, and the sampling loop ends with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.faultproxy import FaultPlan, FaultProxy  # noqa: E402
from testbed.s3server import S3Endpoint  # noqa: E402
from testbed.versitygw import VersityGW  # noqa: E402

FERRY = Path(sys.executable).with_name("ferry")
RESULTS = ROOT / "bench" / "results"
#: The longest one scenario's processes may take.
RUN_TIMEOUT = 900.0
SAMPLE_SECONDS = 0.5


def job_document(ep: S3Endpoint, url: str, source: str, destination: str, requests_per_second: int) -> str:
    """A CopyJob (JSON is YAML) with its two Secrets: GET from one, PUT with the other, as between two
    accounts; ``requests_per_second`` 0 is no limit."""

    def location(bucket: str, secret: str) -> dict[str, Any]:
        return {
            "bucket": bucket,
            "endpoint": url,
            "region": ep.region,
            "addressingStyle": "path",
            "credentialsSecret": secret,
        }

    spec: dict[str, Any] = {
        "source": location(source, "src"),
        "destination": location(destination, "dst"),
        "objectSizes": {"median": "1Ki", "p99": "1Ki", "max": "1Ki"},
    }
    if requests_per_second:
        spec["rateLimit"] = {"requestsPerSecond": requests_per_second}
    docs = [
        {"apiVersion": "ferry.dev/v1alpha1", "kind": "CopyJob", "metadata": {"name": source}, "spec": spec},
        *(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "stringData": {"AWS_ACCESS_KEY_ID": ep.access_key, "AWS_SECRET_ACCESS_KEY": ep.secret_key},
            }
            for name in ("src", "dst")
        ),
    ]
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


def seed(ep: S3Endpoint, buckets: list[str], objects: int) -> None:
    s3 = ep.client()
    body = os.urandom(1024)
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda item: s3.put_object(Bucket=item[0], Key=f"data/{item[1]:06d}.bin", Body=body),
                [(b, i) for b in buckets for i in range(objects)],
            )
        )


def run_scenario(
    name: str, ep: S3Endpoint, proxy: FaultProxy, sources: list[str], share: int, workdir: Path, objects: int
) -> dict[str, Any]:
    """Run the five copies at once; sample the proxy while all five run."""
    s3 = ep.client()
    processes = []
    for source in sources:
        destination = f"{source}-{name}"
        s3.create_bucket(Bucket=destination)
        path = workdir / f"{destination}.yaml"
        path.write_text(job_document(ep, proxy.url, source, destination, share))
        path.chmod(0o600)
        out = (workdir / f"{destination}.json").open("wb")
        processes.append(
            (
                destination,
                subprocess.Popen(
                    [str(FERRY), "run", "-f", str(path), "--output", "json", "--progress", "none"],
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                ),
                out,
            )
        )
    started = time.monotonic()
    first = proxy.stats()
    samples: list[tuple[float, int, int]] = [(0.0, first.requests, first.capped)]
    all_running_until: float | None = None
    while time.monotonic() - started < RUN_TIMEOUT:
        time.sleep(SAMPLE_SECONDS)
        stats = proxy.stats()
        samples.append((time.monotonic() - started, stats.requests, stats.capped))
        done = [p.poll() is not None for _, p, _ in processes]
        if any(done) and all_running_until is None:
            all_running_until = samples[-1][0]
        if all(done):
            break
    for _, process, out in processes:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        out.close()
    duration = time.monotonic() - started
    end = all_running_until if all_running_until is not None else duration
    # The first seconds are listing and ramp-up; the window is from 5 s in to the first finish.
    window = [s for s in samples if 5.0 <= s[0] <= end] or samples
    (t0, r0, c0), (t1, r1, c1) = window[0], window[-1]
    seconds = max(t1 - t0, 1e-9)
    requests, capped = r1 - r0, c1 - c0
    copied = []
    for destination, process, _ in processes:
        try:
            summary = json.loads((workdir / f"{destination}.json").read_text() or "{}")
        except ValueError:
            summary = {}
        copied.append(
            {
                "job": destination,
                "exitCode": process.returncode,
                "copied": (summary.get("objects") or {}).get("copied") or 0,
                # Why a run stopped early, in Ferry's words (an error document's reason), bounded.
                "stopped": str(summary.get("reason") or summary.get("error") or "")[:300] or None,
            }
        )
    total_requests, total_capped = samples[-1][1] - samples[0][1], samples[-1][2] - samples[0][2]
    return {
        "scenario": name,
        "requestsPerSecondPerJob": share or None,
        "windowSeconds": round(seconds, 1),
        "servedRequestsPerSecond": round((requests - capped) / seconds, 1),
        "throttledPercent": round(100 * capped / max(requests, 1), 2),
        "wholeRunSeconds": round(duration, 1),
        "wholeRunThrottledPercent": round(100 * total_capped / max(total_requests, 1), 2),
        "objectsCopiedPerSecond": round(sum(j["copied"] for j in copied) / duration, 1),
        "objectsPerJob": objects,
        "jobs": copied,
    }


def markdown(result: dict[str, Any]) -> str:
    n = result["providerRequestsPerSecond"]
    lines = [
        f"# Endpoint budgets: five CopyJobs on one endpoint allowing {n:g} requests/s",
        "",
        f"`{result['command']}` — {result['date']}; {result['objectsPerJob']} objects of 1 KiB per CopyJob, "
        "versitygw behind testbed/faultproxy.py with `max_requests_per_second` "
        f"= {n:g} (503 SlowDown above it). Window: from 5 s after the start to the first CopyJob's end.",
        "",
        "| Scenario | Each CopyJob's limit | Served requests/s (all five) | % of N | Throttled | Whole run | "
        "Throttled, whole run | Objects copied/s, whole run | Exit codes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in result["scenarios"]:
        limit = f"{s['requestsPerSecondPerJob']} requests/s" if s["requestsPerSecondPerJob"] else "none"
        codes = ",".join(str(j["exitCode"]) for j in s["jobs"])
        lines.append(
            f"| {s['scenario']} | {limit} | {s['servedRequestsPerSecond']:g} | "
            f"{100 * s['servedRequestsPerSecond'] / n:.0f}% | {s['throttledPercent']:g}% | "
            f"{s['wholeRunSeconds']:g} s | {s['wholeRunThrottledPercent']:g}% | {s['objectsCopiedPerSecond']:g} | "
            f"{codes} |"
        )
    stopped = [(s["scenario"], j) for s in result["scenarios"] for j in s["jobs"] if j["stopped"]]
    if stopped:
        lines += ["", "CopyJobs that stopped early:", ""]
        lines += [
            f"- {scenario}, {j['job']} (exit {j['exitCode']}): {j['stopped']}" for scenario, j in stopped
        ]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", type=float, default=100.0, help="requests/s the endpoint allows (N)")
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--objects", type=int, default=1500, help="objects per CopyJob")
    parser.add_argument("--out", type=Path, default=RESULTS / "budget-latest")
    args = parser.parse_args(argv)
    bin_dir = os.environ.get("FERRY_TESTBIN")
    if not bin_dir:
        print("set FERRY_TESTBIN=$(hack/testbin.sh --print-dir)", file=sys.stderr)
        return 2
    share = int(args.provider // args.jobs)
    with tempfile.TemporaryDirectory(prefix="ferry-bench-budget-") as tmp:
        workdir = Path(tmp)
        with VersityGW(Path(bin_dir), workdir / "gw") as gw:
            ep = gw.endpoint
            sources = [f"budget-src-{i}" for i in range(args.jobs)]
            seed(ep, sources, args.objects)
            scenarios = []
            with FaultProxy(ep.url, FaultPlan(max_requests_per_second=args.provider)) as proxy:
                for name, limit in (("budget", share), ("alone", 0)):
                    print(f"bench-budget: {name} ...", file=sys.stderr, flush=True)
                    scenarios.append(run_scenario(name, ep, proxy, sources, limit, workdir, args.objects))
                    print(json.dumps(scenarios[-1]), file=sys.stderr, flush=True)
    result = {
        "command": "make bench-budget",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "providerRequestsPerSecond": args.provider,
        "objectsPerJob": args.objects,
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
