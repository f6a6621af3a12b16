"""A CopyJob's counts on the testbed while its pods are stopped and started: the status, sampled every
half second through a suspension, its resumption and a parallelism decrease, never shows fewer objects
copied or a lower percent, keeps no frozen ETA, and ends with every object counted as copied, none as
skipped, for an empty destination. Every object is verified at the destination by content."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any

import pytest

from support.operator import Jobs, accounting_closes, fill, md5s, spec_for
from testbed.faultproxy import FaultPlan, FaultProxy

from .conftest import wait_for

pytestmark = pytest.mark.timeout(420)

OBJECTS = 600


class Sampler:
    """Reads the CopyJob's status every `interval` seconds in a thread, for at most `limit` seconds."""

    def __init__(self, jobs: Jobs, name: str, interval: float = 0.5, limit: float = 400.0) -> None:
        self.jobs, self.name, self.interval, self.limit = jobs, name, interval, limit
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            try:
                status = self.jobs.status(self.name)
            except Exception:  # the apiserver busy for a moment: the next sample reads it
                continue
            if status.get("objects"):
                self.samples.append(status)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def copied(jobs: Jobs, name: str) -> int:
    return int((jobs.status(name).get("objects") or {}).get("copied", 0))


def running_pods(cluster: Any, namespace: str, name: str) -> list[Any]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items
    return [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]


def any_pods(cluster: Any, namespace: str, name: str) -> bool:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items
    return any(p.status.phase in ("Pending", "Running") for p in pods)


def stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def never_decreases(samples: list[dict[str, Any]], read: Any) -> list[tuple[int, int]]:
    values = [read(s) for s in samples]
    return [(a, b) for a, b in itertools.pairwise(values) if b < a]


def test_counts_never_go_backwards_through_suspend_and_fewer_pods_and_end_exact(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, OBJECTS, size=1000)
    name = "steady"
    # Slow requests keep every shard open across the suspension and the parallelism decrease; the link
    # speeds up once those are done.
    with (
        FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=300)) as link,
        Sampler(jobs, name) as sampler,
    ):
        jobs.create(
            name,
            spec_for(
                link.url,
                source,
                destination,
                parallelism=3,
                shardSize={"maxObjects": 100},
                concurrency={"max": 4},
            ),
        )
        # Early, so that every first pod is mid-shard when the suspension reaches it, however late the
        # operator's pass runs on a busy machine.
        wait_for("30 objects copied", lambda: copied(jobs, name) >= 30, timeout=180)
        jobs.patch(name, {"suspend": True})
        wait_for(
            "suspended with no pod left",
            lambda: jobs.status(name).get("phase") == "Suspended" and not any_pods(cluster, namespace, name),
            timeout=120,
        )
        suspended_at = len(sampler.samples)
        ledger = cluster.core.read_namespaced_config_map(f"{name}-progress", namespace).data or {}
        resumes = {k: json.loads(v) for k, v in ledger.items() if k.startswith("resume-")}
        time.sleep(3)  # samples while nothing runs
        suspended = sampler.samples[suspended_at:]
        jobs.patch(name, {"suspend": False})
        at_resume = copied(jobs, name)
        wait_for("100 more copied", lambda: copied(jobs, name) >= at_resume + 100, timeout=180)
        jobs.patch(name, {"parallelism": 1})
        wait_for(
            "one pod left",
            lambda: (
                cluster.batch.read_namespaced_job(f"{name}-workers", namespace).spec.parallelism == 1
                and len(running_pods(cluster, namespace, name)) <= 1
            ),
            timeout=120,
        )
        decreased_at = len(sampler.samples)
        link.set_plan(FaultPlan(latency_ms=5))
        status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=240)
        time.sleep(1)  # a last sample of the finished status
    samples = sampler.samples
    assert status["phase"] == "Succeeded", status
    assert md5s(s3, destination) == md5s(s3, source)

    # The interrupted shards' resume points were recorded while suspended: keys inside the source.
    assert resumes, ledger
    assert all(e.get("after", "").startswith("data/") and len(e["carried"]) == 6 for e in resumes.values())

    # The new pods of those shards started from them (process kubelet: logs under its pod directories).
    logs = [
        p.read_text() for p in cluster.kubelet.workdir.glob(f"pods/{namespace}_{name}-workers-*/logs/*.log")
    ]
    assert any("resuming after 'data/" in text for text in logs), logs
    # Each pod stopped mid-shard (at least the three the suspension stopped) exited once the operator had
    # said it recorded its final counts and resume point; none gave up waiting.
    recorded = [text for text in logs if "final counts recorded by the operator" in text]
    assert len(recorded) >= 3, logs
    assert not any("did not record the final counts" in text for text in logs), logs

    # Sampled every half second, nothing shown went backwards.
    assert len(samples) > 20, len(samples)
    assert all(accounting_closes(s) for s in samples)
    for field in ("copied", "skipped", "failed"):
        assert never_decreases(samples, lambda s, f=field: s["objects"][f]) == [], field
    assert never_decreases(samples, lambda s: s["progressPercent"]) == []
    assert never_decreases(samples, lambda s: s["objects"]["total"] - s["objects"]["pending"]) == []

    # Exact at the end. Objects settled after a stopped shard's last recorded resume point would be
    # re-listed as present (skipped); a stopped worker answers /status until its final counts and resume
    # point have been read, so that number is 0 here: every object counts as copied.
    assert status["objects"] == {
        "total": OBJECTS,
        "copied": OBJECTS,
        "skipped": 0,
        "failed": 0,
        "pending": 0,
    }, [line for text in logs for line in text.splitlines() if line.startswith("ferry worker:")]
    assert status["progressPercent"] == 100

    # No ETA while nothing runs; the rate then reads 0.
    idle = [
        s for s in suspended if s.get("phase") == "Suspended" and not (s.get("workers") or {}).get("running")
    ]
    assert idle, [s.get("workers") for s in suspended]
    assert all("eta" not in s and "etaSeconds" not in s for s in idle), [s.get("eta") for s in idle]
    assert all(s["throughput"]["objectsPerSecond"] == 0 for s in idle)

    # With one pod, shard after shard: the rate never drops to 0 between two shards.
    one_pod = [s for s in samples[decreased_at:] if s.get("phase") == "Running"]
    assert one_pod and all(s["throughput"]["objectsPerSecond"] > 0 for s in one_pod), [
        s["throughput"] for s in one_pod
    ]

    # After the finish: the running time and the average are kept, and the rate shown is the average.
    throughput = status["throughput"]
    assert status["durationSeconds"] > 0 and "sampledAt" not in throughput
    assert throughput["averageObjectsPerSecond"] > 0
    assert throughput["objectsPerSecond"] == throughput["averageObjectsPerSecond"]
    assert status.get("etaSeconds") == 0
    # The running time leaves out the suspension (over 3 s): shorter than from start to completion.
    wall = (stamp(status["completionTime"]) - stamp(status["startTime"])).total_seconds()
    assert status["durationSeconds"] <= wall - 2, (status["durationSeconds"], wall)
    # Finished shards keep their final line only: no resume entry is left behind.
    ledger = cluster.core.read_namespaced_config_map(f"{name}-progress", namespace).data or {}
    assert not [k for k in ledger if k.startswith("resume-")], ledger
