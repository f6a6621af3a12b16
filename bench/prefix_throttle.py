"""Per-prefix throttle handling, measured (`make bench-prefix`, about a minute on 2 cores).

One copy engine (as `ferry run` makes it: adaptive manager, default retries, lean transport) copies two
prefixes from versitygw to versitygw behind `testbed.faultproxy`, which allows PREFIX_CAP requests/s
under the first prefix ("a-hot/") and answers 503 SlowDown above; "b-cold/" is not limited. Three runs:

- `free`: no limit anywhere (the reference rates);
- `per-prefix`: the limit, with per-prefix pacing (`worker/prefixlimits.py`);
- `pod-wide only`: the limit, with the per-prefix pacing switched off, so every throttle goes to the
  pod-wide adaptive manager (how workers handled throttling before per-prefix pacing).

The hot objects sort first. A prefix's rate is its objects over the time from the run's start (hot) or
from the last hot object's end (cold) to its own last object, read from the engine's counts every 20 ms.
Each latency of PREFIX_LATENCY_MS (a comma-separated list) runs the three. Environment: PREFIX_CAP (100),
PREFIX_HOT (500), PREFIX_COLD (2000), PREFIX_LATENCY_MS (50,150). Results go to
bench/results/prefix-throttle-latest.json and .md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ferry.model import CopyJobSpec
from ferry.worker.credentials import Credentials
from ferry.worker.engine import CopyEngine
from ferry.worker.prefixpacer import PrefixPacer
from ferry.worker.report import FailureReport
from ferry.worker.run import make_limiter
from ferry.worker.s3 import ClientOptions, make_client
from testbed.binaries import TestBinaries, find_bin_dir
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.versitygw import VersityGW

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", HERE / "results"))
CAP = float(os.environ.get("PREFIX_CAP", "100"))
HOT_OBJECTS = int(os.environ.get("PREFIX_HOT", "500"))
COLD_OBJECTS = int(os.environ.get("PREFIX_COLD", "2000"))
#: Latencies the proxy adds to every destination request: a remote destination, where a transfer's pace
#: is its concurrency over the round trip (on a local server the machine's CPU caps every run alike).
LATENCIES_MS = [float(v) for v in os.environ.get("PREFIX_LATENCY_MS", "50,150").split(",") if v.strip()]
HOT, COLD = "a-hot/", "b-cold/"
RUN_TIMEOUT = 120.0


class PodWideOnly(PrefixPacer):
    """Per-prefix pacing switched off: nothing is paced, and every throttle is the pod's."""

    def pace(self, group: str, requests: float, stop: threading.Event) -> float:
        return 0.0

    def throttled(self, group: str) -> bool:
        return False

    def succeeded(self, group: str, requests: float = 1.0) -> None:
        return None


def fill(client: Any, bucket: str) -> None:
    keys = [f"{HOT}{i:06d}" for i in range(HOT_OBJECTS)] + [f"{COLD}{i:06d}" for i in range(COLD_OBJECTS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=key.encode() * 16), keys))


def run(endpoint: Any, src: str, dst: str, plan: FaultPlan, mode: str, latency_ms: float) -> dict[str, Any]:
    client = endpoint.client()
    client.create_bucket(Bucket=dst)
    with FaultProxy(endpoint.url, plan, seed=1) as proxy:
        job = CopyJobSpec.model_validate(
            {
                "source": {"bucket": src, "endpoint": endpoint.url},
                "destination": {"bucket": dst, "endpoint": proxy.url},
            }
        )
        creds = Credentials(endpoint.access_key, endpoint.secret_key)
        limiter = make_limiter(None, None, job)
        options = ClientOptions(max_pool_connections=limiter.ceiling + 8)
        engine = CopyEngine(
            spec=job,
            source_client=make_client(job.source, creds, options),
            destination_client=make_client(job.destination, creds, options),
            limiter=limiter,
            report=FailureReport(None),
        )
        if mode == "pod-wide only":
            engine.pacer = PodWideOnly(job.destination.prefix)
        stop = threading.Event()
        samples: list[tuple[float, int, int]] = []
        started = time.monotonic()

        def watch() -> None:
            while not stop.wait(0.02) and time.monotonic() - started < RUN_TIMEOUT:
                progress = engine.progress()
                samples.append(
                    (time.monotonic() - started, progress.counts.done, progress.limiter.concurrency)
                )

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        timer = threading.Timer(RUN_TIMEOUT, stop.set)
        timer.start()
        summary = engine.run(stop)
        timer.cancel()
        stop.set()
        watcher.join(5)
        limiter.close()
        capped = proxy.stats().capped
    hot_end = next((t for t, done, _ in samples if done >= HOT_OBJECTS), summary.duration_seconds)
    cold_seconds = max(summary.duration_seconds - hot_end, 1e-3)
    return {
        "latencyMs": latency_ms,
        "mode": mode,
        "seconds": round(summary.duration_seconds, 2),
        "copied": summary.counts.copied,
        "failed": summary.counts.failed,
        "hotObjectsPerSecond": round(HOT_OBJECTS / hot_end, 1),
        "coldObjectsPerSecond": round(COLD_OBJECTS / cold_seconds, 1),
        "throttles": summary.throttles,
        "capped": capped,
        "concurrencyAtColdStart": next((c for t, _, c in samples if t >= hot_end), None),
        "minConcurrency": min((c for _, _, c in samples), default=None),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Per-prefix throttling: {HOT_OBJECTS} objects under {HOT} capped at {CAP:g} requests/s, "
        f"{COLD_OBJECTS} under {COLD} not capped, latency added to each destination request",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        " versitygw behind testbed.faultproxy; one engine as `ferry run` makes it. `make bench-prefix`.",
        "",
        "| latency | run | seconds | copied / failed | hot obj/s | cold obj/s | cold vs free | throttles "
        "| concurrency at cold start / min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    free = {r["latencyMs"]: r["coldObjectsPerSecond"] for r in rows if r["mode"] == "free"}
    for r in rows:
        ratio = r["coldObjectsPerSecond"] / free[r["latencyMs"]] if free.get(r["latencyMs"]) else 0.0
        lines.append(
            f"| {r['latencyMs']:g} ms | {r['mode']} | {r['seconds']} | {r['copied']} / {r['failed']} | {r['hotObjectsPerSecond']} "
            f"| {r['coldObjectsPerSecond']} | {ratio:.2f} | {r['throttles']} | {r['concurrencyAtColdStart']} / {r['minConcurrency']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, VersityGW(TestBinaries(find_bin_dir()), Path(tmp)) as gateway:
        endpoint = gateway.endpoint
        client = endpoint.client()
        client.create_bucket(Bucket="src")
        fill(client, "src")
        rows = []
        runs = [
            (latency, mode) for latency in LATENCIES_MS for mode in ("free", "per-prefix", "pod-wide only")
        ]
        for n, (latency, mode) in enumerate(runs):
            dst = f"dst-{n}"
            plan = (
                FaultPlan(latency_ms=latency)
                if mode == "free"
                else FaultPlan(
                    latency_ms=latency,
                    capped_path_regex=f"/{dst}/{HOT}",
                    capped_path_requests_per_second=CAP,
                )
            )
            rows.append(run(endpoint, "src", dst, plan, mode, latency))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prefix-throttle-latest.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "prefix-throttle-latest.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
