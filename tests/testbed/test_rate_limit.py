"""spec.rateLimit end to end: the operator process splits the job-wide limit over two worker pods run by
the process kubelet, and an edit reaches the running pods within seconds. Rates are measured at the
server side: every S3 request of the workers passes a counting proxy (testbed/faultproxy.py) in front of
versitygw, whatever the workers themselves report."""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.operator import Jobs, fill, md5s, spec_for
from testbed.faultproxy import FaultProxy

from .conftest import wait_for

pytestmark = pytest.mark.timeout(240)

#: Seconds over which a rate is measured: at 20 requests/s one request more or less is 0.8%.
WINDOW = 6.0


def measured_rate(proxy: FaultProxy, seconds: float = WINDOW) -> float:
    before = proxy.stats().requests
    time.sleep(seconds)
    return (proxy.stats().requests - before) / seconds


def rate_limit(jobs: Jobs, name: str) -> dict[str, Any]:
    return dict(jobs.status(name).get("rateLimit") or {})


def test_a_job_wide_request_limit_holds_across_two_pods_and_an_edit_applies_within_seconds(
    jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, destination = fill(s3, 1000, size=500)
    with FaultProxy(versitygw.endpoint.url) as proxy:
        jobs.create(
            "throttled",
            spec_for(
                proxy.url,
                source,
                destination,
                parallelism=2,
                shardSize={"maxObjects": 500},  # one shard per pod: no pod starts mid-measurement
                rateLimit={"requestsPerSecond": 20},
            ),
        )
        # Both pods running and holding their share (10 each), and past their first second's burst.
        wait_for(
            "both workers holding 10 requests/s",
            lambda: (
                (r := rate_limit(jobs, "throttled")).get("applied") == 2
                and r["perPod"]["requestsPerSecond"] == 10
                and r
            ),
            timeout=150,
        )
        time.sleep(2.0)
        before = measured_rate(proxy)

        jobs.patch("throttled", {"rateLimit": {"requestsPerSecond": 50}})
        edited = time.monotonic()
        applied = wait_for(
            "both workers holding 25 requests/s",
            lambda: (
                (r := rate_limit(jobs, "throttled")).get("requestsPerSecond") == 50
                and r.get("applied") == 2
                and r
            ),
            timeout=60,
        )
        took = time.monotonic() - edited
        after = measured_rate(proxy)

        jobs.patch("throttled", {"rateLimit": {"requestsPerSecond": 0}})  # the rest at full speed
        status = jobs.wait_phase("throttled", "Succeeded", "Failed")
    print(
        f"measured {before:.2f} requests/s under 20, {after:.2f} under 50; the edit applied in {took:.1f} s"
    )
    assert 20 * 0.9 <= before <= 20 * 1.1, before
    assert 50 * 0.9 <= after <= 50 * 1.1, after
    assert took < 10, took
    assert applied["perPod"] == {"requestsPerSecond": 25.0, "bytesPerSecond": 0} and applied["pods"] == 2
    assert status["phase"] == "Succeeded", status
    assert status["rateLimit"]["requestsPerSecond"] == 0
    assert md5s(s3, destination) == md5s(s3, source)
