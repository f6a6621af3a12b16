"""Endpoint budgets measured on the testbed (`make bench-budget-fleet`, about 5 minutes on 2 cores).

Not collected by `make test` (the name does not start with test_); run it by path. Five CopyJobs copy
their own buckets of small objects through one endpoint that allows N requests/s in total (versitygw
behind `testbed/faultproxy.py` with `max_requests_per_second=N`, 503 SlowDown above, as a provider's
request-rate limit does). The operator process, the chart's RBAC and the process kubelet's worker pods
run them, twice in one run:

- `budget`: an EndpointBudget of N on the endpoint: the operator splits it over the five CopyJobs and
  pushes each pod its share;
- `alone`: no budget: every CopyJob pushes until the endpoint throttles it, and its pods back off alone.

While all five run, the proxy's counters give the requests served per second (answered by the server)
and the share throttled (503 from the cap). The target: under the budget, >= 90% of N together
with < 2% throttled; alone, > 20% throttled and a lower total. Results go to
bench/results/budget-fleet-n<N>.{json,md} (BENCH_RESULTS_DIR overrides the directory;
BENCH_FLEET_ALLOWS sets N, default 60, and BENCH_FLEET_OBJECTS the objects per CopyJob).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from support.operator import Jobs, fill, spec_for
from support.wait import wait_for
from testbed.faultproxy import FaultPlan, FaultProxy

#: What the endpoint serves, all clients together (requests/s): low enough that the 2 cores running the
#: control plane, five worker pods, the proxy and the server are not the limit.
ENDPOINT_ALLOWS = int(os.environ.get("BENCH_FLEET_ALLOWS", "60"))
JOBS = 5
#: Objects per CopyJob: more than the endpoint lets through while the window is measured.
OBJECTS = int(os.environ.get("BENCH_FLEET_OBJECTS", "1500"))
#: Seconds after every CopyJob has a running pod before measuring (their first bursts and back-offs).
SETTLE = 15.0
WINDOW = 30.0
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", Path(__file__).resolve().parents[2] / "bench" / "results"))


def running_pods(cluster: Any, namespace: str, name: str) -> int:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items
    return sum(1 for p in pods if p.status.phase == "Running" and "worker" in p.metadata.name)


def measure(mode: str, jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(cluster.api)
    names = [f"{mode}-{i}" for i in range(JOBS)]
    buckets = [fill(s3, OBJECTS, size=200) for _ in names]
    with FaultProxy(versitygw.endpoint.url, FaultPlan(max_requests_per_second=ENDPOINT_ALLOWS)) as proxy:
        budget_name = f"fleet-{namespace}"[:63]
        if mode == "budget":
            custom.create_cluster_custom_object(
                "ferry.dev",
                "v1alpha1",
                "endpointbudgets",
                {
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "EndpointBudget",
                    "metadata": {"name": budget_name},
                    "spec": {"endpoint": proxy.url, "requestsPerSecond": ENDPOINT_ALLOWS},
                },
            )
        try:
            for name, (source, destination) in zip(names, buckets, strict=True):
                jobs.create(name, spec_for(proxy.url, source, destination, parallelism=1))
            wait_for(
                "a running worker pod for every CopyJob",
                lambda: all(running_pods(cluster, namespace, n) for n in names),
                timeout=180,
            )
            time.sleep(SETTLE)
            before, start = proxy.stats(), time.monotonic()
            time.sleep(WINDOW)
            after, seconds = proxy.stats(), time.monotonic() - start
            copied = {}
            for name in names:
                status = jobs.status(name)
                copied[name] = int((status.get("objects") or {}).get("copied") or 0)
        finally:
            for name in names:
                jobs.patch(name, {"suspend": True})
            if mode == "budget":
                custom.delete_cluster_custom_object("ferry.dev", "v1alpha1", "endpointbudgets", budget_name)
            for name in names:
                wait_for(
                    f"{name} suspended", lambda n=name: jobs.status(n).get("phase") == "Suspended", timeout=90
                )
    sent = after.requests - before.requests
    throttled = after.capped - before.capped
    served = sent - throttled
    return {
        "mode": mode,
        "endpointAllows": ENDPOINT_ALLOWS,
        "seconds": round(seconds, 1),
        "requestsSent": sent,
        "requestsThrottled": throttled,
        "servedPerSecond": round(served / seconds, 1),
        "servedShareOfN": round(served / seconds / ENDPOINT_ALLOWS, 3),
        "throttledShare": round(throttled / max(sent, 1), 4),
        "copiedAtWindowEnd": copied,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Endpoint budgets on the testbed: {JOBS} CopyJobs, one endpoint allowing {ENDPOINT_ALLOWS} requests/s",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "the operator process and the process kubelet's worker pods, versitygw behind testbed.faultproxy; "
        f"measured over {WINDOW:.0f} s once every CopyJob had a running pod (+{SETTLE:.0f} s). "
        "`make bench-budget-fleet`.",
        "",
        "| run | requests served/s | share of N | requests throttled | sent in the window "
        "| objects copied per CopyJob at the window's end (fewest, most) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        copied = sorted(r["copiedAtWindowEnd"].values())
        lines.append(
            f"| {r['mode']} | {r['servedPerSecond']} | {r['servedShareOfN']:.0%} | "
            f"{r['throttledShare']:.2%} | {r['requestsSent']} | {copied[0]}, {copied[-1]} |"
        )
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    # One pair of files per endpoint limit: the behaviour is shown at more than one N.
    stem = RESULTS / f"budget-fleet-n{ENDPOINT_ALLOWS}"
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


def test_five_copyjobs_share_one_endpoint_budget_against_each_on_its_own(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    rows = [measure(mode, jobs, s3, versitygw, cluster, namespace) for mode in ("budget", "alone")]
    write_results(rows)
    # A benchmark, not a gate: the figures are the result, whatever they are.
    assert all(r["requestsSent"] > 0 for r in rows), rows
