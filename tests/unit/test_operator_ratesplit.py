"""Splitting the job-wide spec.rateLimit over worker pods (operator/ratesplit.py)."""

from __future__ import annotations

import pytest

from ferry.operator.ratesplit import sharing_pods, split, status
from ferry.worker.ratelimit import RateShare

MiB = 2**20


@pytest.mark.parametrize(
    ("limit", "pods", "share"),
    [
        pytest.param(RateShare(20, 0), 2, RateShare(10, 0), id="even"),
        pytest.param(RateShare(10, 0), 3, RateShare(3.333, 0), id="uneven-rounds-down"),
        pytest.param(RateShare(0, 100 * MiB), 3, RateShare(0, 100 * MiB // 3), id="uneven-bytes"),
        pytest.param(RateShare(300, 50 * MiB), 2, RateShare(150, 25 * MiB), id="both-limits"),
        pytest.param(RateShare(1, 0), 4, RateShare(0.25, 0), id="fractional"),
        pytest.param(RateShare(1, 0), 3, RateShare(0.333, 0), id="fractional-uneven"),
        pytest.param(RateShare(1, 0), 5000, RateShare(0.001, 0), id="minimum-requests-share"),
        pytest.param(RateShare(0, 2), 3, RateShare(0, 1), id="minimum-bytes-share"),
        pytest.param(RateShare(20, 5 * MiB), 0, RateShare(20, 5 * MiB), id="zero-pods-is-one"),
        pytest.param(RateShare(0, 0), 7, RateShare(0, 0), id="unlimited-stays-unlimited"),
        pytest.param(RateShare(1_000_000, 2**63 - 1), 1, RateShare(1_000_000, 2**63 - 1), id="largest"),
        pytest.param(RateShare(999_999, 0), 1000, RateShare(999.999, 0), id="many-pods"),
    ],
)
def test_split(limit: RateShare, pods: int, share: RateShare) -> None:
    assert split(limit, pods) == share


@pytest.mark.parametrize("pods", [1, 2, 3, 7, 9, 13, 1000])
@pytest.mark.parametrize("limit", [RateShare(10, 0), RateShare(999, 10**9), RateShare(1_000_000, 3)])
def test_shares_never_add_up_to_more_than_the_limit(limit: RateShare, pods: int) -> None:
    share = split(limit, pods)
    if share.requests_per_second > 0.001:
        assert share.requests_per_second * pods <= limit.requests_per_second + 1e-9
    if share.bytes_per_second > 1:
        assert share.bytes_per_second * pods <= limit.bytes_per_second


@pytest.mark.parametrize(
    ("phases", "parallelism", "unfinished", "pods"),
    [
        pytest.param(["Running", "Running"], 2, 8, 2, id="steady"),
        pytest.param(["Running", "Succeeded"], 2, 7, 2, id="finished-pod-replaced-soon"),
        pytest.param(["Running", "Succeeded"], 2, 1, 1, id="finished-pod-last-shard-left"),
        pytest.param(["Succeeded", "Succeeded"], 2, 0, 0, id="all-finished"),
        pytest.param(["Running", "Failed"], 2, 2, 2, id="failed-pod-retried"),
        pytest.param([], 3, 10, 3, id="no-pods-yet"),
        pytest.param(["Running", "Pending"], 2, 5, 2, id="pending-pod-counts"),
        pytest.param(["Running"] * 4, 2, 10, 4, id="parallelism-lowered-pods-still-stopping"),
        pytest.param(["Running"], 4, 10, 4, id="parallelism-raised-pods-coming"),
        pytest.param([], 2, 8, 2, id="suspended-counts-the-pods-it-resumes-with"),
        pytest.param(["Unknown", "Running"], 1, 0, 1, id="unknown-phase-ignored"),
    ],
)
def test_sharing_pods(phases: list[str], parallelism: int, unfinished: int, pods: int) -> None:
    assert sharing_pods(phases, parallelism, unfinished) == pods


def test_status_shows_job_wide_and_per_pod_limits() -> None:
    limit = RateShare(20, 100 * MiB)
    assert status(limit, 3, split(limit, 3), 2) == {
        "requestsPerSecond": 20,
        "bytesPerSecond": 100 * MiB,
        "perPod": {"requestsPerSecond": 6.666, "bytesPerSecond": 100 * MiB // 3},
        "pods": 3,
        "applied": 2,
    }
