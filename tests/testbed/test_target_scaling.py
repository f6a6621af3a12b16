"""spec.target end to end: the operator process starts the worker Job at one pod, measures the objects/s
the process kubelet's worker pods report, and raises the Job's parallelism towards the target, saying
why in status.scaling and in an Event; when the provider's capacity halves it sheds the pods that no
longer add anything; a lower target then removes the pods it no longer needs. Each
pod's rate is held down by a slow link (a latency proxy in front of versitygw) and a small concurrency
limit, so that one pod cannot meet the target."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from support.operator import Jobs, events, fill, spec_for
from testbed.faultproxy import FaultPlan, FaultProxy

from .conftest import wait_for

pytestmark = pytest.mark.timeout(480)

TARGET = 24


def test_a_target_above_one_pod_raises_the_job_s_parallelism_from_one_and_says_why(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    source, destination = fill(s3, 2400, size=500)
    name = "targeted"
    with FaultProxy(versitygw.endpoint.url, FaultPlan(latency_ms=150)) as slow:
        jobs.create(
            name,
            spec_for(
                slow.url,
                source,
                destination,
                target={"objectsPerSecond": TARGET},
                concurrency={"max": 2, "initial": 2},
                shardSize={"maxObjects": 200},  # 12 shards: more than the pods, each open ~30 s
            ),
        )
        job_name = f"{name}-workers"

        def parallelism() -> int | None:
            found = [
                j for j in cluster.batch.list_namespaced_job(namespace).items if j.metadata.name == job_name
            ]
            return found[0].spec.parallelism if found else None

        first = wait_for("the workers' Job", parallelism, timeout=90)
        assert first == 1, "with a target the Job starts at one pod"
        started = time.monotonic()
        seen: list[tuple[float, int]] = []
        scaling: dict[str, Any] = {}
        # Bounded: at most 120 s of polling for the target to be met.
        while time.monotonic() - started < 120:
            pods = parallelism() or 0
            seen.append((time.monotonic() - started, pods))
            scaling = dict(jobs.status(name).get("scaling") or {})
            if scaling.get("reason") == "TargetMet" and pods > 1:
                break
            time.sleep(0.5)
        met_after = time.monotonic() - started
        one_pod = [h for h in scaling.get("history", []) if h["pods"] == 1]
        print(
            f"parallelism over time: {sorted(set(seen), key=lambda s: s[0])[::4]}; "
            f"scaling: {scaling}; met after {met_after:.0f} s"
        )
        assert scaling.get("reason") == "TargetMet", scaling
        assert scaling["desiredPods"] == parallelism() and scaling["desiredPods"] > 1
        assert scaling["measuredObjectsPerSecond"] >= 0.95 * TARGET
        assert one_pod and one_pod[0]["objectsPerSecond"] < TARGET, "one pod alone is below the target"
        needs = math.ceil(TARGET / one_pod[0]["objectsPerSecond"])
        assert max(p for _t, p in seen) <= needs + 1, (needs, seen)
        rising = [m for r, m in events(cluster, namespace, name) if r == "BelowTargetRising"]
        assert rising and rising[0].startswith("worker pods 1 -> "), rising
        assert "below the target of 24" in rising[0]

        # The provider's capacity halves (the proxy serves half the requests/s the fleet sends, 503 above):
        # more pods cannot help, so the operator sheds those the smaller capacity does not need.
        at_target = parallelism() or 0
        before = slow.stats().requests
        time.sleep(5.0)
        sending = (slow.stats().requests - before) / 5.0
        slow.set_plan(FaultPlan(latency_ms=150, max_requests_per_second=max(1.0, sending / 2)))
        halved = time.monotonic()
        wait_for(
            "fewer pods once the provider's capacity halved",
            lambda: (parallelism() or at_target) < at_target,
            timeout=180,
        )
        shed_after = time.monotonic() - halved
        scaling = dict(jobs.status(name).get("scaling") or {})
        shed = [m for r, m in events(cluster, namespace, name) if r == "NoGainProviderOrNetworkLimit"]
        print(
            f"{sending:.0f} requests/s at {at_target} pods; capacity halved: {parallelism()} pod(s) after "
            f"{shed_after:.0f} s; scaling: {scaling}"
        )
        assert shed and "the provider or the network is the limit" in shed[-1], shed
        assert scaling["desiredPods"] == parallelism() >= 1

        # A target one pod meets: the pods it does not need go, with the reason.
        jobs.patch(name, {"target": {"objectsPerSecond": 2}})

        # The Job's parallelism and status.scaling are two writes: wait until both say one pod, for the target.
        def one_pod_for_the_target() -> bool:
            shown = jobs.status(name).get("scaling") or {}
            return (
                parallelism() == 1
                and shown.get("desiredPods") == 1
                and shown.get("reason") in ("TargetMetWithRoomToSpare", "TargetMet")
            )

        wait_for("one pod again", one_pod_for_the_target, timeout=90)
        scaling = dict(jobs.status(name).get("scaling") or {})
        assert scaling["reason"] in ("TargetMetWithRoomToSpare", "TargetMet"), scaling
        assert any(r == "TargetMetWithRoomToSpare" for r, _m in events(cluster, namespace, name))
        jobs.patch(name, {"suspend": True})  # the rest is not this test's: stop the pods before the proxy
        wait_for("the pods stopped", lambda: jobs.status(name).get("phase") == "Suspended", timeout=60)
