"""The adaptive manager: a `Limiter` that admits transfers by concurrency and by memory, and a driver
thread that samples throughput, throttles, errors and RSS and applies the control law (`control.py`).

Admission reserves before anything is allocated: a transfer starts only when the measured baseline, the
runtime reserve, every reservation in flight and its own (its part buffer plus per-transfer overhead) fit
the budget (see budget.py for the rules). RSS samples only ever make admission stricter: memory the
process holds beyond its reservations counts as held. A flood of tiny objects and a few GiB objects both
stay inside the budget, and the worker never goes above it to find out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ferry.worker import budget as memory
from ferry.worker.budget import (
    RUNTIME_RESERVE,
    MemoryBudget,
    MemoryPlan,
    TransferTooLarge,
    admits,
    anonymous_rss,
    committed,
    plan_memory,
)
from ferry.worker.control import ControlConfig, ControlState, Sample, initial_state, step
from ferry.worker.limits import LimiterState, Permit, TransferReport
from ferry.worker.parts import DEFAULT_PART, TRANSFER_OVERHEAD_BYTES

#: Held memory this far above the floor makes the driver ask the allocator to hand free pages back.
TRIM_SLACK = 8 * 2**20
TRIM_EVERY_SECONDS = 2.0


class AdaptiveLimiter:
    def __init__(
        self,
        config: ControlConfig,
        budget: MemoryBudget,
        *,
        rss: Callable[[], int] = anonymous_rss,
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 0.5,
        trim: Callable[[], None] = memory.trim,
    ) -> None:
        self.config = config
        self.budget = budget
        self._rss = rss
        self._clock = clock
        self._tick = tick_seconds
        self._trim = trim
        self._cv = threading.Condition()
        self._state: ControlState = initial_state(config)
        self._in_flight = 0
        self._reserved = 0
        self._objects = 0
        self._bytes = 0
        self._throttles = 0
        self._errors = 0
        self._requests = 0
        self._latencies: deque[float] = deque(maxlen=512)
        # Until `plan` measures the baseline with the S3 clients made, what the process holds now.
        self._baseline_rss = rss()
        self._floor = self._baseline_rss + RUNTIME_RESERVE
        self._held = self._floor
        self.memory_plan: MemoryPlan | None = None
        #: Learned cost per transfer beyond its reservation (0 while reservations are right).
        self._extra = 0.0
        self._last_rss = self._baseline_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name="ferry-adaptive", daemon=True)
        self._thread.start()

    def plan(self, preferred_part: int = DEFAULT_PART) -> MemoryPlan:
        """Measure the baseline now (clients made, nothing in flight) and size parts for the budget.

        Raises `BudgetTooSmall` when not even one transfer of a 5 MiB part fits beside the baseline.
        """
        self._trim()
        baseline = self._rss()
        plan = plan_memory(self.budget, baseline, preferred_part)
        with self._cv:
            self.memory_plan = plan
            self._baseline_rss = baseline
            self._floor = plan.floor
            self._held = max(self._held, plan.floor)
            self._cv.notify_all()
        return plan

    # -- Limiter protocol ------------------------------------------------------------------------------

    @property
    def ceiling(self) -> int:
        return self.config.maximum

    def acquire(self, reserve_bytes: int) -> Permit:
        """Block until the transfer fits; raises `TransferTooLarge` when it never can."""
        with self._cv:
            room = self.budget.bytes - self._floor
            if reserve_bytes > room:
                raise TransferTooLarge(reserve_bytes, self.budget, self._floor)
            need = reserve_bytes + min(int(self._extra), room - reserve_bytes)
            self._cv.wait_for(lambda: self._admits(need))
            self._in_flight += 1
            self._reserved += need
            return Permit(need)

    def _admits(self, need: int) -> bool:
        if self._in_flight >= self._state.concurrency:
            return False
        return admits(
            budget=self.budget.bytes,
            floor=self._floor,
            held=self._held,
            reserved=self._reserved,
            need=need,
            in_flight=self._in_flight,
        )

    def release(self, permit: Permit, report: TransferReport) -> None:
        with self._cv:
            self._in_flight -= 1
            self._reserved -= permit.reserved_bytes
            if report.ok:
                self._objects += 1
                self._bytes += report.size
                self._latencies.append(report.seconds)
            else:
                self._errors += 1
            self._cv.notify_all()

    def throttled(self) -> None:
        with self._cv:
            self._throttles += 1

    def count_requests(self, n: int = 1) -> None:
        with self._cv:
            self._requests += n

    def count_error(self) -> None:
        with self._cv:
            self._errors += 1

    def state(self) -> LimiterState:
        with self._cv:
            latencies = sorted(self._latencies)
            return LimiterState(
                concurrency=self._state.concurrency,
                in_flight=self._in_flight,
                reason=self._state.reason,
                reserved_bytes=self._reserved,
                budget_bytes=self.budget.bytes,
                budget_source=self.budget.source,
                rss_bytes=self._last_rss,
                overhead_bytes=TRANSFER_OVERHEAD_BYTES + int(self._extra),
                latency_p50=_percentile(latencies, 0.5),
                latency_p95=_percentile(latencies, 0.95),
                latency_p99=_percentile(latencies, 0.99),
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    # -- driver ----------------------------------------------------------------------------------------

    def _drive(self) -> None:
        last_trim = self._clock()
        while not self._stop.wait(self._tick):
            excess = self.sample()
            now = self._clock()
            if excess > TRIM_SLACK and now - last_trim >= TRIM_EVERY_SECONDS:
                self._trim()
                last_trim = now

    def sample(self) -> int:
        """One tick of the driver: read RSS, update what is held and the control law. Returns how far
        held memory is above the floor (memory the allocator may be keeping after transfers ended)."""
        rss = self._rss()
        with self._cv:
            self._last_rss = rss
            self._held = committed(self._floor, rss, self._reserved)
            if self._in_flight >= 8:
                # Learn what a transfer really costs beyond its reservation.
                payload = self._reserved - self._in_flight * self._extra
                measured = (rss - self._floor - payload) / self._in_flight
                self._extra = max(0.0, 0.9 * self._extra + 0.1 * measured)
            latencies = list(self._latencies)[-64:]
            sample = Sample(
                now=self._clock(),
                objects=self._objects,
                bytes=self._bytes,
                throttles=self._throttles,
                errors=self._errors,
                requests=max(self._requests, self._objects + self._errors),
                rss=rss,
                in_flight=self._in_flight,
                mean_transfer_seconds=sum(latencies) / len(latencies) if latencies else 0.0,
            )
            self._state = step(self._state, sample, self.config, self.budget.bytes)
            self._cv.notify_all()
            return self._held - self._floor


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class IncidentLimiter:
    """The manager of the incident, emulated for benchmarks: starts at one transfer, adds two per step
    (one step every ``step_seconds``), reserves 50 MiB per transfer against 70% of a 1.8 GiB budget."""

    PER_TRANSFER = 50 * 2**20
    BUDGET = int(0.7 * 1.8 * 2**30)

    def __init__(self, step_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._step = step_seconds
        self._cv = threading.Condition()
        self._in_flight = 0

    @property
    def ceiling(self) -> int:
        return self.BUDGET // self.PER_TRANSFER

    def _concurrency(self) -> int:
        steps = int((self._clock() - self._start) // self._step)
        return min(1 + 2 * steps, self.ceiling)

    def acquire(self, reserve_bytes: int) -> Permit:
        with self._cv:
            self._cv.wait_for(lambda: self._in_flight < self._concurrency(), timeout=None)
            self._in_flight += 1
            return Permit(self.PER_TRANSFER)

    def release(self, permit: Permit, report: TransferReport) -> None:
        with self._cv:
            self._in_flight -= 1
            self._cv.notify_all()

    def throttled(self) -> None:
        """The incident's manager ignored throttling."""

    def count_requests(self, n: int = 1) -> None:
        """Not used by the incident's manager."""

    def count_error(self) -> None:
        """Not used by the incident's manager."""

    def close(self) -> None:
        """Nothing runs in the background."""

    def state(self) -> LimiterState:
        with self._cv:
            return LimiterState(
                self._concurrency(),
                self._in_flight,
                "incident policy (+2 per step)",
                self._in_flight * self.PER_TRANSFER,
                budget_bytes=self.BUDGET,
                budget_source="70% of 1.8 GiB (incident)",
            )
