"""Progress accounting rules: what the operator shows for each shard and for the whole job, so that the
counts never go backwards for the same plan and never relabel work, and the rates and ETA say what is
moving now. Pure: values in, values out; the caller passes the time.

Where it sits: `aggregate.totals` gathers the evidence of each shard (a final report, a running pod's
`/status`, or nothing) and applies `account` with the shard's floor, the highest counts shown for it
before, which the progress ledger keeps (`ledger.py`); the status of the next pass comes from
`aggregate.counts_status`, which applies the rate rules below.

Why floors are needed at all: a stopped pod's counts vanish with it, a busy pod's answer may be older than
the last one, and a shard restarted without a resume point lists again and reports what it copied
before as skipped. A restarted shard that has a resume point carries the counts up to it; what it
re-lists after it (objects settled after the last point recorded) is bounded, and the floor keeps them
counted as copied as far as the floor knows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ferry.model.checkpoint import OutcomeCounts

#: Time constant of the smoothed rate: long enough to bridge a shard's pod ending and the next one
#: starting (seconds on a loaded node), short enough to follow a real change within a minute.
SMOOTHING_SECONDS = 20.0
#: No ETA once nothing has been handled for this long: a figure computed from an old rate would freeze.
STALL_SECONDS = 30.0


@dataclass(frozen=True)
class Tally(OutcomeCounts):
    """Objects and bytes of one shard (or all), by outcome."""

    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0

    @classmethod
    def of(cls, counts: Sequence[int]) -> Tally:
        c, s, f, bc, bs, bf = counts
        return cls(c, s, f, bc, bs, bf)

    @classmethod
    def of_report(cls, objects: dict[str, int], data: dict[str, int]) -> Tally:
        """From a worker report's ``objects`` and ``bytes``; negative numbers read as 0."""

        def get(d: dict[str, int], key: str) -> int:
            return max(0, int(d.get(key, 0)))

        return cls(
            get(objects, "copied"),
            get(objects, "skipped"),
            get(objects, "failed"),
            get(data, "copied"),
            get(data, "skipped"),
            get(data, "failed"),
        )


@dataclass(frozen=True)
class ShardCount:
    """What is shown for one shard: its tally and totals, closed (done never above total)."""

    tally: Tally
    total: int
    bytes_total: int


def _floored(
    evidence: tuple[int, int, int], floor: tuple[int, int, int], total: int
) -> tuple[tuple[int, int, int], int]:
    """The rules for one unit (objects or bytes):

    1. copied and failed are never below their floors;
    2. done is the higher of the evidence's and the floor's: a stale answer, or a pod that stopped,
       lowers nothing, and a restarted shard re-counts nothing twice;
    3. skipped is what is left of done, never below its floor: objects counted as copied before and
       re-listed by a restart as present count once, as copied;
    4. the total is never below done, so the accounting closes.
    """
    copied, failed = max(evidence[0], floor[0]), max(evidence[2], floor[2])
    done = max(sum(evidence), sum(floor))
    skipped = max(floor[1], done - copied - failed)
    return (copied, skipped, failed), max(total, copied + skipped + failed)


def account(evidence: Tally, total: int, bytes_total: int, floor: Tally | None) -> ShardCount:
    """One shard's counts from its evidence and its floor (None: nothing shown for it before)."""
    if floor is None:
        return ShardCount(evidence, max(total, evidence.done), max(bytes_total, evidence.bytes_done))
    e, f = evidence.counts(), floor.counts()
    objects, total = _floored((e[0], e[1], e[2]), (f[0], f[1], f[2]), total)
    data, bytes_total = _floored((e[3], e[4], e[5]), (f[3], f[4], f[5]), bytes_total)
    return ShardCount(Tally.of((*objects, *data)), total, bytes_total)


def percent(done: int, total: int, previous: int | None = None) -> int:
    """Percent of objects handled, never below what was shown before for the same plan (a total that
    grows while shards list more than planning found must not make the bar move back)."""
    now = 100 if total <= 0 else min(100, 100 * done // total)
    return max(now, min(100, max(0, previous))) if previous is not None else now


# -- rates, running time, ETA ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaceBefore:
    """What the previous status said (None where it said nothing)."""

    objects_per_second: float | None = None
    bytes_per_second: float | None = None
    duration_seconds: float = 0.0
    #: When the running time was last advanced; None while the job was not running.
    sampled_at: datetime | None = None
    last_progress: datetime | None = None


@dataclass(frozen=True)
class PaceNow:
    """What this pass measured."""

    now: datetime
    #: The rates the running pods report, summed.
    objects_per_second: float
    bytes_per_second: float
    #: Workers may run: the Job exists, is not suspended and has not finished.
    running: bool
    #: At least one pod answered this pass.
    reporting: bool
    #: The job finished this pass (Succeeded or Failed).
    finished: bool
    #: Objects and bytes handled so far, and what is left.
    done: int
    bytes_done: int
    pending: int
    #: Whether ``done`` changed since the previous status.
    progressed: bool


@dataclass(frozen=True)
class Pace:
    objects_per_second: float
    bytes_per_second: float
    average_objects_per_second: float | None
    average_bytes_per_second: float | None
    duration_seconds: float
    sampled_at: datetime | None
    eta_seconds: int | None


def smooth(previous: float | None, current: float, seconds: float) -> float:
    """The rate shown: a rise is followed at once (the pods' own rates are already averages over
    seconds), a fall eases with time constant `SMOOTHING_SECONDS`, so a pass without any pod reporting
    (between shards) lowers it a little instead of to 0, and a real slowdown shows within a minute."""
    if previous is None or previous < 0 or not math.isfinite(previous) or current >= previous:
        return current
    weight = 1.0 - math.exp(-max(0.0, seconds) / SMOOTHING_SECONDS)
    return previous + (current - previous) * weight


def pace(before: PaceBefore, now: PaceNow) -> Pace:
    """Rates, running time and ETA of this pass.

    - Running time counts while workers may run (not while planning or suspended), from the previous
      pass's sample time, so it is exact across passes and operator restarts.
    - The instant rate is the pods' sum, smoothed; the average is everything handled over the running
      time. Once finished, the instant rate reads the average: the job's final throughput stays.
    - ETA: 0 when nothing is pending; absent while nothing moves (suspended, no pod reporting, or nothing
      handled for `STALL_SECONDS`); else what is pending over the smoothed rate.
    """
    elapsed = 0.0
    if before.sampled_at is not None:
        elapsed = max(0.0, (now.now - before.sampled_at).total_seconds())
    counting = now.running or now.finished
    duration = max(0.0, before.duration_seconds) + (elapsed if counting and before.sampled_at else 0.0)
    sampled_at = now.now if now.running else None
    average = now.done / duration if duration > 0 else None
    average_bytes = now.bytes_done / duration if duration > 0 else None
    if now.finished:
        rate = average if average is not None else 0.0
        bytes_rate = average_bytes if average_bytes is not None else 0.0
    elif not now.running:
        rate = bytes_rate = 0.0
    elif before.sampled_at is None:
        # The first pass of a run, or after a suspension: nothing to smooth from (the 0 shown while
        # suspended is not a rate of this run).
        rate, bytes_rate = now.objects_per_second, now.bytes_per_second
    else:
        rate = smooth(before.objects_per_second, now.objects_per_second, elapsed)
        bytes_rate = smooth(before.bytes_per_second, now.bytes_per_second, elapsed)
    stalled = (
        not now.progressed
        and before.last_progress is not None
        and (now.now - before.last_progress).total_seconds() >= STALL_SECONDS
    )
    eta: int | None = None
    if now.pending == 0:
        eta = 0
    elif now.running and now.reporting and not stalled and rate > 0:
        eta = int(now.pending / rate)
    return Pace(rate, bytes_rate, average, average_bytes, duration, sampled_at, eta)
