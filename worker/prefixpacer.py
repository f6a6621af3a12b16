"""The engine's adapter of the per-prefix limits (`prefixlimits.py`): a lock, the clock, and the wait.

The engine asks `pace` on its dispatch thread, before an object's transfer takes its permit: a paced
object holds no transfer slot and no memory while it waits (the transfers already running go on). The
transfer threads tell `throttled` / `succeeded` what the destination answered, for the group of the
object they copy (see `CopyEngine._transfer`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ferry.worker.prefixlimits import GroupView, PrefixConfig, PrefixTable

#: Groups /status shows at most (the most throttled first).
STATUS_GROUPS = 10
#: Longest single wait between checks of the stop event (a stop is seen within this).
WAIT_SLICE_SECONDS = 0.5


class PrefixPacer:
    def __init__(
        self,
        destination_prefix: str,
        config: PrefixConfig = PrefixConfig(),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.destination_prefix = destination_prefix
        self._table = PrefixTable(config)
        self._clock = clock
        self._lock = threading.Lock()

    def pace(self, group: str, requests: float, stop: threading.Event) -> float:
        """Wait until ``requests`` requests of ``group`` may go out, or until ``stop`` is set; returns
        the seconds waited."""
        with self._lock:
            wait = self._table.admit(group, self._clock(), requests)
        if wait <= 0:
            return 0.0
        start = self._clock()
        deadline = start + wait
        # Bounded: each slice waits at least a little, and the deadline does not move.
        for _ in range(int(wait / WAIT_SLICE_SECONDS) + 2):
            left = deadline - self._clock()
            if left <= 0 or stop.wait(min(left, WAIT_SLICE_SECONDS)):
                break
        return self._clock() - start

    def throttled(self, group: str) -> bool:
        """A destination request of ``group`` was throttled; True when the group explains it (no other
        group was throttled lately), so the pod-wide manager need not count it."""
        with self._lock:
            return self._table.throttled(group, self._clock())

    def succeeded(self, group: str, requests: float = 1.0) -> None:
        with self._lock:
            self._table.succeeded(group, self._clock(), requests)

    def groups(self, n: int = STATUS_GROUPS) -> tuple[GroupView, ...]:
        with self._lock:
            return self._table.most_throttled(n)
