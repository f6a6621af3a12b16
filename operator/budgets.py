"""EndpointBudgets: which budget a CopyJob is under, its fair share, and the budget in force after the
endpoint throttled. Pure: values in, values out (times are numbers the caller reads from its clock).

Where it sits: every pass of a running CopyJob asks `budgetcontrol` (the adapter) for its job-wide limit;
the adapter computes it here from the budgets it watches and the CopyJobs that use them, and `ratesplit`
then splits that limit over the Job's pods as for `spec.rateLimit` alone. A budget step every few seconds
(`adapt`) turns the throttles the CopyJobs' pods reported into the budget in force.

Which budget. A CopyJob's requests go to its source (lists, GETs) and its destination (HEADs, PUTs); each
of the two locations is under the most specific budget that covers it: same endpoint (compared as
`storage_service` compares them), then the budget naming the location's bucket before one naming none, then
the longest prefix (ties: the name first in order, so every pass decides alike). A budget's prefix covers a
location when one of the two prefixes starts with the other: a CopyJob of the whole bucket sends some
requests under the prefix, so it shares the prefix's budget. A CopyJob may so be under two budgets (source's
and destination's): its limit is the smaller of its two shares. A worker's limiter counts every request it
makes, on either side, so a share is never exceeded on either endpoint.

The fair split is max-min: every CopyJob under a budget gets an equal share, except that one whose own
`spec.rateLimit` (or share of its other budget) is smaller keeps to that, and what it leaves goes to the
others. Requests and bytes are split on their own. Shares are rounded down (milli-requests, bytes), so
they never add up to more than the budget, and are never below `ratesplit`'s smallest share (0 would
mean unlimited).

Adaptive budgets follow AIMD, the worker's backoff one level up: throttles reported since the last step
lower the budget in force multiplicatively (`DECREASE`, no lower than `FLOOR` of the spec's), then hold it
for `HOLD_SECONDS` (what the pods report next was sent before the lower shares arrived); a step without
throttles raises it by `INCREASE` of the spec's per `INCREASE_PERIOD`, never above the spec's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ferry.model import CopyJobSpec, Location
from ferry.model.copyjob import storage_service
from ferry.model.endpointbudget import EndpointBudgetSpec
from ferry.operator.ratesplit import MIN_BYTES_SHARE, MIN_REQUESTS_SHARE
from ferry.worker.ratelimit import RateShare

#: On throttling, the budget in force is multiplied by this...
DECREASE = 0.8
#: ...but never falls below this fraction of the spec's limits.
FLOOR = 0.05
#: Without throttling it rises by this fraction of the spec's limits per INCREASE_PERIOD seconds.
INCREASE = 0.05
INCREASE_PERIOD = 10.0
#: After a decrease, throttles are not acted on for this long: the pods' next reports still count requests
#: sent at the old shares (a pass pushes shares, the next one reads what they did).
HOLD_SECONDS = 10.0
#: Near the level that throttled last (from PROBE_FROM to PROBE_TO of it), the budget rises at PROBE of the
#: pace: the endpoint's limit is most likely there, and overshooting it is what throttles. Past PROBE_TO the
#: endpoint evidently allows more than it did, and the full pace resumes. (The simulation in
#: tests/unit/test_operator_budgets.py: 5 CopyJobs, a budget of 1.2 to 4 times what the endpoint allows:
#: 0.7 and no probing reach 87-92% of it with 0.6-4.4% throttled; these values 93-95% with under 1%.)
PROBE_FROM = 0.85
PROBE_TO = 1.1
PROBE = 0.2
#: A pause longer than this (an operator busy elsewhere) raises the budget no more than this much time.
MAX_STEP_SECONDS = 30.0
#: The window of `status.throttledLastMinute`.
THROTTLE_WINDOW_SECONDS = 60.0
#: Milli-requests per request: shares are integers of these, like `ratesplit`'s.
MILLI = 1000


@dataclass(frozen=True)
class Budget:
    """An EndpointBudget as the operator uses it."""

    name: str
    service: str
    bucket: str | None
    prefix: str | None
    limit: RateShare
    adaptive: bool = False
    generation: int = 0

    @classmethod
    def of(cls, name: str, spec: EndpointBudgetSpec, generation: int = 0) -> Budget:
        return cls(
            name=name,
            service=storage_service(spec.endpoint),
            bucket=spec.bucket,
            prefix=spec.prefix,
            limit=RateShare(float(spec.requests_per_second), int(spec.bytes_per_second)),
            adaptive=spec.adaptive,
            generation=generation,
        )


def covers(budget: Budget, location: Location) -> bool:
    """Whether requests for ``location`` count against ``budget``."""
    if storage_service(location.endpoint) != budget.service:
        return False
    if budget.bucket is not None and budget.bucket != location.bucket:
        return False
    if budget.prefix is None:
        return True
    own = location.prefix or ""
    return own.startswith(budget.prefix) or budget.prefix.startswith(own)


def budget_for(budgets: Iterable[Budget], location: Location) -> Budget | None:
    """The most specific budget covering ``location``, or None."""
    found = [b for b in budgets if covers(b, location)]
    if not found:
        return None
    return min(found, key=lambda b: (b.bucket is None, -len(b.prefix or ""), b.name))


def budgets_for(budgets: Iterable[Budget], spec: CopyJobSpec) -> tuple[str, ...]:
    """Names of the budgets a CopyJob is under (its source's and its destination's), in order, once each."""
    known = list(budgets)
    names = {b.name for loc in (spec.source, spec.destination) if (b := budget_for(known, loc)) is not None}
    return tuple(sorted(names))


# -- the fair split -----------------------------------------------------------------------------------


def max_min(capacity: int, caps: Mapping[str, int], smallest: int = 1) -> dict[str, int]:
    """Max-min fair integer shares of ``capacity`` (0: unlimited) among claimants with ``caps`` (0: no cap
    of their own): the smallest caps are met in full, the rest split what remains evenly. Rounded down,
    so they add up to at most ``capacity``, except that no share is below ``smallest``. With an unlimited
    capacity everyone gets their cap (0 for those without one: unlimited)."""
    if capacity <= 0:
        return dict(caps)
    shares: dict[str, int] = {}
    remaining = capacity
    # Capped claimants first, smallest cap first; uncapped ones last (their cap is infinite).
    order = sorted(caps, key=lambda name: (caps[name] <= 0, caps[name], name))
    for index, name in enumerate(order):
        fair = remaining // (len(order) - index)
        cap = caps[name]
        share = min(cap, fair) if cap > 0 else fair
        shares[name] = max(smallest, share)
        remaining = max(0, remaining - share)
    return shares


@dataclass(frozen=True)
class Claim:
    """A CopyJob under budgets: ``job`` (its uid), the names of its ``budgets``, and its own limits
    (``cap``, `spec.rateLimit`; 0 in either dimension: none)."""

    job: str
    budgets: tuple[str, ...]
    cap: RateShare = RateShare()


@dataclass(frozen=True)
class Allocation:
    """A CopyJob's job-wide limit (its own limit and its budgets' shares, whichever is lower), and the
    budget that limits it most (None when its own limit is lower than every share)."""

    limit: RateShare
    budget: str | None
    shares: dict[str, RateShare] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """What `status.rateLimit` adds under a budget: its name and this CopyJob's share of it."""
        if not self.shares:
            return {}
        name = self.budget if self.budget is not None else min(self.shares)
        return {"budget": name, "budgetShare": self.shares[name].as_json()}


def _to_units(share: RateShare) -> tuple[int, int]:
    return round(share.requests_per_second * MILLI), share.bytes_per_second


def _lowest(values: Iterable[int]) -> int:
    """The lowest positive limit (0: none of them limits)."""
    limits = [v for v in values if v > 0]
    return min(limits) if limits else 0


def _binds(share: int, limit: int, own: int) -> bool:
    """Whether a budget's share is what limits a CopyJob: it is the limit, and lower than the job's own."""
    return 0 < share == limit and (own == 0 or share < own)


#: Rounds of the split for CopyJobs under two budgets: each round caps them at their share of the other.
SPLIT_ROUNDS = 3


def allocate(in_force: Mapping[str, RateShare], claims: Sequence[Claim]) -> dict[str, Allocation]:
    """Each claim's job-wide limit under the budgets in force (by name; a claim naming a budget not in
    ``in_force`` is not limited by it). Safe after any number of rounds: a CopyJob's limit is at most its
    share of each of its budgets, and each budget's shares add up to at most the budget."""
    own = {c.job: _to_units(c.cap) for c in claims}
    users: dict[str, list[str]] = {}
    for claim in claims:
        for name in claim.budgets:
            if name in in_force:
                users.setdefault(name, []).append(claim.job)
    shares: dict[str, dict[str, tuple[int, int]]] = {}
    for _ in range(SPLIT_ROUNDS):
        for name, jobs in users.items():
            capacity = _to_units(in_force[name])
            caps: dict[str, tuple[int, int]] = {}
            for job in jobs:
                others = [s[job] for b, s in shares.items() if b != name and job in s]
                caps[job] = (
                    _lowest([own[job][0], *(o[0] for o in others)]),
                    _lowest([own[job][1], *(o[1] for o in others)]),
                )
            requests = max_min(
                capacity[0], {j: c[0] for j, c in caps.items()}, round(MIN_REQUESTS_SHARE * MILLI)
            )
            data = max_min(capacity[1], {j: c[1] for j, c in caps.items()}, MIN_BYTES_SHARE)
            shares[name] = {j: (requests[j], data[j]) for j in jobs}
    result: dict[str, Allocation] = {}
    for claim in claims:
        mine = {name: shares[name][claim.job] for name in claim.budgets if name in shares}
        limit_requests = _lowest([own[claim.job][0], *(s[0] for s in mine.values())])
        limit_data = _lowest([own[claim.job][1], *(s[1] for s in mine.values())])
        binding = [
            name
            for name, (r, d) in sorted(mine.items())
            if _binds(r, limit_requests, own[claim.job][0]) or _binds(d, limit_data, own[claim.job][1])
        ]
        result[claim.job] = Allocation(
            RateShare(limit_requests / MILLI, limit_data),
            binding[0] if binding else None,
            {name: RateShare(r / MILLI, d) for name, (r, d) in mine.items()},
        )
    return result


# -- adaptive budgets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InForce:
    """How much of a budget's spec is in force now: ``level`` (from `FLOOR` to 1) of both its limits; until
    when throttles do not lower it again; and the level at which the endpoint last throttled (0: it has
    not), near which the level rises more slowly."""

    level: float = 1.0
    hold_until: float = 0.0
    ceiling: float = 0.0

    def share(self, budget: Budget) -> RateShare:
        """The limits in force: milli-requests and bytes rounded down, never below the smallest share."""
        limit = budget.limit
        requests = 0.0
        if limit.requests_per_second > 0:
            milli = int(limit.requests_per_second * MILLI * self.level)
            requests = max(MIN_REQUESTS_SHARE, milli / MILLI)
        data = max(MIN_BYTES_SHARE, int(limit.bytes_per_second * self.level)) if limit.bytes_per_second else 0
        return RateShare(requests, data)


def _clamp(level: float) -> float:
    return min(1.0, max(FLOOR, level))


def resumed(budget: Budget, requests_per_second: Any) -> InForce:
    """The level a status written before (by this or an earlier operator process) shows, from its
    `effectiveRequestsPerSecond`; the spec's in full when it says nothing usable or the budget is not
    adaptive (or limits bytes only: a restart then starts from the spec's)."""
    limit = budget.limit.requests_per_second
    if (
        not budget.adaptive
        or limit <= 0
        or isinstance(requests_per_second, bool)
        or not isinstance(requests_per_second, int | float)
        or not math.isfinite(requests_per_second)
    ):
        return InForce()
    return InForce(_clamp(requests_per_second / limit))


def adapt(budget: Budget, state: InForce, throttles: int, elapsed: float, now: float) -> InForce:
    """The level in force after a step of ``elapsed`` seconds in which the CopyJobs' pods reported
    ``throttles`` throttled requests, at time ``now``. A budget that is not adaptive is always in full."""
    if not budget.adaptive:
        return InForce()
    if throttles > 0:
        if now < state.hold_until:
            return replace(state, level=_clamp(state.level))
        return InForce(_clamp(state.level * DECREASE), now + HOLD_SECONDS, state.level)
    rise = INCREASE * min(max(elapsed, 0.0), MAX_STEP_SECONDS) / INCREASE_PERIOD
    if state.ceiling * PROBE_FROM <= state.level <= state.ceiling * PROBE_TO:
        rise *= PROBE
    return replace(state, level=_clamp(state.level + rise))


# -- throttles ------------------------------------------------------------------------------------------


#: A pod's count above this is not one a worker reports (a billion throttles); it is ignored.
MAX_THROTTLES = 10**9


def new_throttles(before: Mapping[str, int], now: Mapping[str, int]) -> int:
    """Throttles reported since ``before`` (by pod: the cumulative counts of each pod's `/status`). A pod
    seen for the first time counts in full (it started since); a count that went down (a restarted worker)
    counts from zero."""
    total = 0
    for pod, count in now.items():
        if not 0 <= count <= MAX_THROTTLES:
            continue
        previous = before.get(pod, 0)
        total += count - previous if count >= previous else count
    return total


def recent(events: Sequence[tuple[float, int]], now: float) -> tuple[tuple[float, int], ...]:
    """The (time, throttles) of ``events`` inside the throttle window ending at ``now``."""
    return tuple(e for e in events if now - e[0] <= THROTTLE_WINDOW_SECONDS and e[1] > 0)


def budget_status(budget: Budget, state: InForce, jobs: int, throttled: int) -> dict[str, Any]:
    """An EndpointBudget's `status`."""
    share = state.share(budget)
    return {
        "observedGeneration": budget.generation,
        "effectiveRequestsPerSecond": share.requests_per_second,
        "effectiveBytesPerSecond": share.bytes_per_second,
        "jobs": jobs,
        "throttledLastMinute": throttled,
        "message": None,
    }
