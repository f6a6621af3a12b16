"""EndpointBudgets in the operator process: what the watch says of them, which CopyJobs use them now, the
job-wide limit each CopyJob pass gets, and the step that adapts the budgets and writes their status. A thin
adapter: every decision is `budgets`'s.

The flow: kopf's watch of EndpointBudgets feeds `BudgetBook.observe` (no API reads of them, ever). Each
pass of a running CopyJob calls `BudgetBook.job_limit` (from `ratecontrol`) with the throttles its pods
report: the CopyJob claims its share of the budgets it is under, and gets back its job-wide limit, which
`ratesplit` splits over its pods. Every few seconds `run_budget_steps` adapts each budget to the throttles
reported since the last step, drops CopyJobs no pass has claimed for `stale_seconds` (finished, suspended,
deleted), and patches the status of each budget whose status changed. Shares are redistributed at the
next pass of each CopyJob: a CopyJob that starts takes its share at its first pass, the others give it up
at theirs.

All of it is in memory and rebuilt from the cluster after a restart; an adaptive budget's level is read
back from its status (`effectiveRequestsPerSecond`), so a restart does not forget a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.model.endpointbudget import parse_budget_spec
from ferry.operator import budgets
from ferry.operator.budgets import Allocation, Budget, Claim, InForce
from ferry.worker.ratelimit import RateShare

log = logging.getLogger(__name__)

#: Budgets this process keeps; more are ignored (a platform that writes ten thousand of them has a bug).
MAX_BUDGETS = 1000
#: Throttle counts kept per budget for `throttledLastMinute`: one per step, a minute at a step a second.
MAX_EVENTS = 64


@dataclass
class _Entry:
    budget: Budget | None
    problem: str | None
    in_force: InForce
    generation: int
    #: Throttles reported since the last step.
    pending: int = 0
    events: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    written: dict[str, Any] | None = None


@dataclass
class _User:
    claim: Claim
    seen: float
    throttles: dict[str, int]


class BudgetBook:
    """The EndpointBudgets this process watches and the CopyJobs using them. Thread-safe: passes run in
    threads, the watch and the steps in the event loop."""

    def __init__(self, stale_seconds: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._users: dict[str, _User] = {}
        self._allocation: dict[str, Allocation] | None = None
        self._last_step = clock()
        self.stale_seconds = stale_seconds

    # -- the watch -------------------------------------------------------------------------------------

    def observe(
        self, kind: str | None, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], generation: Any
    ) -> None:
        """An EndpointBudget as the watch delivered it (``kind`` "DELETED" removes it)."""
        with self._lock:
            self._allocation = None
            if kind == "DELETED":
                self._entries.pop(name, None)
                return
            if name not in self._entries and len(self._entries) >= MAX_BUDGETS:
                log.warning("more than %d EndpointBudgets; %s is not used", MAX_BUDGETS, name[:253])
                return
            generation = generation if isinstance(generation, int) else 0
            try:
                budget: Budget | None = Budget.of(name, parse_budget_spec(dict(spec)), generation)
                problem = None
            except ValidationError as exc:
                budget = None
                # pydantic's messages quote the input; say only where and what.
                problem = "; ".join(
                    f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:5]
                )[:1000]
            entry = self._entries.get(name)
            if entry is None:
                level = (
                    budgets.resumed(budget, status.get("effectiveRequestsPerSecond")) if budget else InForce()
                )
                self._entries[name] = _Entry(budget, problem, level, generation)
            else:
                entry.budget, entry.problem, entry.generation = budget, problem, generation

    # -- the CopyJob passes ----------------------------------------------------------------------------

    def job_limit(
        self, uid: str, spec: CopyJobSpec, throttles: Mapping[str, int], active: bool
    ) -> Allocation | None:
        """The job-wide limit of CopyJob ``uid`` this pass, and the budget that sets it; None when it is
        under no budget (its own `spec.rateLimit` applies, as without budgets). ``throttles`` are its running
        pods' counts by pod name; an ``active`` CopyJob (pods running or about to) claims its share."""
        with self._lock:
            known = [e.budget for e in self._entries.values() if e.budget is not None]
            names = budgets.budgets_for(known, spec)
            if not names or not active:
                self._release(uid)
                return None
            claim = Claim(uid, names, RateShare.of(spec.rate_limit))
            user = self._users.get(uid)
            if user is None:
                # A CopyJob first seen by this process: its counts so far are from before, not new.
                self._users[uid] = _User(claim, self._clock(), dict(throttles))
                self._allocation = None
            else:
                new = budgets.new_throttles(user.throttles, throttles)
                for name in names:
                    self._entries[name].pending += new
                if user.claim != claim:
                    self._allocation = None
                user.claim, user.seen, user.throttles = claim, self._clock(), dict(throttles)
            return self._allocations().get(uid)

    def forget(self, uid: str) -> None:
        """A CopyJob deleted: its share goes to the others at their next pass."""
        with self._lock:
            self._release(uid)

    def _release(self, uid: str) -> None:
        if self._users.pop(uid, None) is not None:
            self._allocation = None

    def _allocations(self) -> dict[str, Allocation]:
        if self._allocation is None:
            in_force = {
                name: e.in_force.share(e.budget) for name, e in self._entries.items() if e.budget is not None
            }
            self._allocation = budgets.allocate(in_force, [u.claim for u in self._users.values()])
        return self._allocation

    # -- the steps -------------------------------------------------------------------------------------

    def step(self) -> list[tuple[str, dict[str, Any]]]:
        """Adapt every budget to the throttles reported since the last step, drop CopyJobs no pass claimed
        lately, and return the statuses that changed (name, status), to be written."""
        with self._lock:
            now = self._clock()
            elapsed, self._last_step = now - self._last_step, now
            for uid in [u for u, user in self._users.items() if now - user.seen > self.stale_seconds]:
                self._release(uid)
            changed = []
            for name, entry in self._entries.items():
                if entry.budget is None:
                    status: dict[str, Any] = {
                        "observedGeneration": entry.generation,
                        "message": entry.problem,
                    }
                else:
                    before = entry.in_force
                    entry.in_force = budgets.adapt(entry.budget, before, entry.pending, elapsed, now)
                    if entry.in_force.share(entry.budget) != before.share(entry.budget):
                        self._allocation = None
                    entry.events.append((now, entry.pending))
                    entry.pending = 0
                    throttled = sum(n for _, n in budgets.recent(tuple(entry.events), now))
                    jobs = sum(1 for u in self._users.values() if name in u.claim.budgets)
                    status = budgets.budget_status(entry.budget, entry.in_force, jobs, throttled)
                if status != entry.written:
                    entry.written = status
                    changed.append((name, status))
            return changed

    def unwritten(self, name: str) -> None:
        """A status that could not be written: the next step writes it again."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.written = None


async def run_budget_steps(
    book: BudgetBook, patch: Callable[[str, dict[str, Any]], None], interval: float
) -> None:
    """Step the budgets every ``interval`` seconds for as long as the operator runs (cancelled at its
    cleanup); ``patch`` writes one budget's status (blocking: it runs in a thread). A failed write is
    logged and tried again at the next step; it never ends the loop."""
    while True:
        await asyncio.sleep(interval)
        for name, status in book.step():
            try:
                await asyncio.to_thread(patch, name, status)
            except Exception as exc:  # a 404 (deleted meanwhile), an apiserver away: the next step retries
                log.warning("status of EndpointBudget %s not written (%s)", name[:253], type(exc).__name__)
                book.unwritten(name)
