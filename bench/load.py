"""Ferry's operator under load: many CopyJobs at once in one namespace (`make bench-load`).

Environment: LOAD_JOBS (50), LOAD_OBJECTS per job (2000), LOAD_WAVES (2), LOAD_INTERVAL, the operator's
reconcile interval in seconds (5, the chart's default). Results go to bench/results/load-latest.json
and load-latest.md. What is measured and how: `testbed.load`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from testbed.binaries import TestBinaries, find_bin_dir
from testbed.load import LoadConfig, LoadResult, percentile, run_load

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", HERE / "results"))
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def markdown(result: LoadResult) -> str:
    cfg = result.config
    lines = [
        f"# Operator load: {cfg.jobs} CopyJobs x {cfg.objects} objects of {cfg.object_bytes} B",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        f" reconcile interval {cfg.interval:g} s; one worker pod per CopyJob (process kubelet), versitygw.",
        "",
        "| wave | wall | all verified | pickup p50 / max | completion lag p50 / p95 / max "
        "| API req/s mean / peak 10 s | API requests | operator RSS before / peak / after | operator CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in result.waves:
        pickup, lag = w.lags("pickup_seconds"), w.lags("completion_lag_seconds")
        lines.append(
            f"| {w.wave} | {w.wall_seconds:.0f} s | {sum(j.verified for j in w.jobs)}/{len(w.jobs)} "
            f"| {percentile(pickup, 0.5):.1f} / {max(pickup):.1f} s "
            f"| {percentile(lag, 0.5):.1f} / {percentile(lag, 0.95):.1f} / {max(lag):.1f} s "
            f"| {w.api_mean_rate:.1f} / {w.api_peak_rate_10s:.1f} | {sum(w.api_requests.values())} "
            f"| {mib(w.rss_before)} / {mib(w.rss_peak)} / {mib(w.rss_after)} | {w.cpu_seconds:.0f} s |"
        )
    lines += ["", "API requests by kind (last wave):", ""]
    lines += [f"- {kind}: {n}" for kind, n in result.waves[-1].api_requests.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every server the harness started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = LoadConfig(
        jobs=int(os.environ.get("LOAD_JOBS", 50)),
        objects=int(os.environ.get("LOAD_OBJECTS", 2000)),
        waves=int(os.environ.get("LOAD_WAVES", 2)),
        interval=float(os.environ.get("LOAD_INTERVAL", 5)),
    )
    log(f"load: {cfg}")
    with tempfile.TemporaryDirectory(prefix="ferry-load-") as work:
        result = run_load(TestBinaries(find_bin_dir()), Path(work), cfg, log)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load-latest.json").write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")
    report = markdown(result)
    (RESULTS / "load-latest.md").write_text(report)
    print(report)
    return 0 if all(w.all_succeeded for w in result.waves) else 1


if __name__ == "__main__":
    raise SystemExit(main())
