"""Accounting and rates for a running copy. Pure: times are passed in, nothing reads a clock.

The accounting always closes: discovered = copied + skipped + failed + pending.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from ferry.worker.objects import Outcome


@dataclass(frozen=True)
class Counts:
    discovered: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_discovered: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0
    listing_done: bool = False

    @property
    def done(self) -> int:
        return self.copied + self.skipped + self.failed

    @property
    def pending(self) -> int:
        return self.discovered - self.done

    @property
    def bytes_done(self) -> int:
        return self.bytes_copied + self.bytes_skipped + self.bytes_failed

    def discover(self, size: int) -> Counts:
        return replace(self, discovered=self.discovered + 1, bytes_discovered=self.bytes_discovered + size)

    def finish(self, outcome: Outcome, size: int) -> Counts:
        if outcome is Outcome.COPIED:
            return replace(self, copied=self.copied + 1, bytes_copied=self.bytes_copied + size)
        if outcome is Outcome.SKIPPED:
            return replace(self, skipped=self.skipped + 1, bytes_skipped=self.bytes_skipped + size)
        return replace(self, failed=self.failed + 1, bytes_failed=self.bytes_failed + size)


class RateWindow:
    """Objects/s and bytes/s over the last ``seconds`` of samples of cumulative done counts."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, objects: int, nbytes: int) -> None:
        self._samples.append((now, objects, nbytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.seconds:
            self._samples.popleft()

    def rates(self) -> tuple[float, float]:
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, o0, b0), (t1, o1, b1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0
        return (o1 - o0) / span, (b1 - b0) / span


def eta_seconds(counts: Counts, objects_per_second: float, bytes_per_second: float) -> float | None:
    """Seconds left, or None when unknown (no rate yet, or the listing has not finished).

    Both the objects and the bytes left are projected and the slower wins, because small objects are
    bound by requests and large ones by bandwidth.
    """
    if not counts.listing_done:
        return None
    if counts.pending == 0:
        return 0.0
    estimates = []
    if objects_per_second > 0:
        estimates.append(counts.pending / objects_per_second)
    bytes_left = counts.bytes_discovered - counts.bytes_done
    if bytes_per_second > 0 and bytes_left > 0:
        estimates.append(bytes_left / bytes_per_second)
    return max(estimates) if estimates else None
