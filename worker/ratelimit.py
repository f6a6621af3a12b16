"""`spec.rateLimit`: token buckets for requests and bytes per second, shared by all transfers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Blocks callers so that, over any second, at most ``rate`` tokens are taken (burst of one second).

    A rate of 0 means unlimited. Taking more tokens than the burst size is allowed: the caller waits
    until the debt is paid, so large parts are paced rather than refused.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, amount: float = 1.0) -> float:
        """Take ``amount`` tokens, sleeping as needed; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
