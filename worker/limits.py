"""The one interface through which the engine asks for concurrency.

The copier never decides how many transfers run at once: it asks a limiter for a permit before each
object and hands it back with what happened. `FixedLimiter` is the constant policy; the adaptive
manager implements the same protocol, so policies change without touching the copier.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Permit:
    """Admission for one transfer, carrying the memory it reserved."""

    reserved_bytes: int


@dataclass(frozen=True)
class TransferReport:
    """What one finished transfer tells its limiter."""

    ok: bool
    size: int
    seconds: float
    throttles: int


@dataclass(frozen=True)
class LimiterState:
    """What a display or status document shows about concurrency, and why it is what it is."""

    concurrency: int
    in_flight: int
    reason: str
    reserved_bytes: int
    budget_bytes: int | None = None
    budget_source: str | None = None
    rss_bytes: int | None = None
    overhead_bytes: int | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None


class Limiter(Protocol):
    def acquire(self, reserve_bytes: int) -> Permit:
        """Block until one more transfer may start; ``reserve_bytes`` is its memory estimate."""
        ...

    def release(self, permit: Permit, report: TransferReport) -> None:
        """Return a permit once its transfer has finished, successfully or not."""
        ...

    def throttled(self) -> None:
        """Called for each throttling answer (503 SlowDown, 429) as it happens."""
        ...

    def count_requests(self, n: int = 1) -> None:
        """Called for each S3 request made (error rates are computed against it)."""
        ...

    def count_error(self) -> None:
        """Called for each failed request that was not a throttle."""
        ...

    def state(self) -> LimiterState: ...

    def close(self) -> None:
        """Stop any background work."""
        ...

    @property
    def ceiling(self) -> int:
        """The most transfers this limiter will ever admit at once (sizes thread and connection pools)."""
        ...


class FixedLimiter:
    """Admit at most ``concurrency`` transfers at once, whatever happens."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._concurrency = concurrency
        self._lock = threading.Condition()
        self._in_flight = 0
        self._reserved = 0

    @property
    def ceiling(self) -> int:
        return self._concurrency

    def acquire(self, reserve_bytes: int) -> Permit:
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight < self._concurrency)
            self._in_flight += 1
            self._reserved += reserve_bytes
            return Permit(reserve_bytes)

    def release(self, permit: Permit, report: TransferReport) -> None:
        with self._lock:
            self._in_flight -= 1
            self._reserved -= permit.reserved_bytes
            self._lock.notify()

    def throttled(self) -> None:
        """A fixed policy ignores throttling; retries with backoff still apply."""

    def count_requests(self, n: int = 1) -> None:
        """A fixed policy needs no request count."""

    def count_error(self) -> None:
        """A fixed policy ignores errors."""

    def close(self) -> None:
        """Nothing runs in the background."""

    def state(self) -> LimiterState:
        with self._lock:
            return LimiterState(self._concurrency, self._in_flight, "fixed", self._reserved)
