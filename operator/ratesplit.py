"""`spec.rateLimit` is job-wide: how the operator splits it over the worker pods. Pure.

Every pass after the workers' `/status` is collected, `ratecontrol` counts the pods that share the limits
(`sharing_pods`), computes one pod's share (`split`) and sends it to the running pods; the same share is
what a pod started from then on begins with. `status` is what `status.rateLimit` shows.

The split is even: pods of one Job run the same code on shards of about the same size. It is rounded
down, so the shares never add up to more than the limit, except that a share is never smaller than
`MIN_REQUESTS_SHARE` / `MIN_BYTES_SHARE` (0 would mean unlimited).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ferry.worker.ratelimit import RateShare

#: Pod phases of pods that hold a share: running, or about to start with one.
SHARING_PHASES = frozenset({"Pending", "Running"})
#: The smallest share of a limit: one request per 1000 s, one byte per second.
MIN_REQUESTS_SHARE = 0.001
MIN_BYTES_SHARE = 1


def sharing_pods(phases: Iterable[str], parallelism: int, unfinished_shards: int) -> int:
    """Pods the limits are split over: the Job's pods that have not finished, and never fewer than the
    Job is about to run (its parallelism, or the shards left when fewer remain), so that the pod that
    replaces a finished one does not find that one's share given away to the others. A suspended Job
    counts as it will run when resumed: the pods it starts then begin with their share."""
    active = sum(1 for phase in phases if phase in SHARING_PHASES)
    return max(active, min(parallelism, unfinished_shards), 0)


def split(limit: RateShare, pods: int) -> RateShare:
    """One pod's share of ``limit`` among ``pods`` (fewer than one counts as one: the share a first
    pod would start with)."""
    pods = max(1, pods)
    requests = 0.0
    if limit.requests_per_second > 0:
        # Milli-requests in integers: 10 over 3 is 3.333 each, never a float that rounds up.
        milli = round(limit.requests_per_second * 1000) // pods
        requests = max(MIN_REQUESTS_SHARE, milli / 1000)
    data = max(MIN_BYTES_SHARE, limit.bytes_per_second // pods) if limit.bytes_per_second > 0 else 0
    return RateShare(requests, data)


def status(limit: RateShare, pods: int, share: RateShare, applied: int) -> dict[str, Any]:
    """`status.rateLimit`: the job-wide limits, one pod's share, the pods sharing, and how many running
    pods have confirmed that share."""
    return {
        "requestsPerSecond": int(limit.requests_per_second),
        "bytesPerSecond": limit.bytes_per_second,
        "perPod": share.as_json(),
        "pods": pods,
        "applied": applied,
    }
