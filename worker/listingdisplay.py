"""What `ferry plan` shows on stderr while it lists: a redrawn line on a terminal, plain lines otherwise
(logs, CI), in the style of `ferry run`'s display (worker/display.py). `describe_listing` is pure: a
function of one `ListingProgress` snapshot and the time since the listing began; the loop around it owns
the clock and the stream.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ferry.model import format_bytes
from ferry.worker.display import LIVE_INTERVAL, PLAIN_INTERVAL, RATE_MIN_WINDOW, format_duration, spinner
from ferry.worker.scan import ListingProgress


def describe_listing(progress: ListingProgress, elapsed_seconds: float) -> str:
    """One line: keys and objects found, bytes, listers at work, ranges done, rate and ETA. The rate
    once the listing has lasted `RATE_MIN_WINDOW` (before, it is noise); the ETA only when the lister
    can estimate it."""
    found = f"{progress.objects:,} objects ({format_bytes(progress.bytes)})"
    if progress.listed != progress.objects:
        found = f"{progress.listed:,} keys, {found} kept by the filter"
    parts = [f"listing: {found}", f"{progress.listers} listers"]
    if progress.ranges_total:
        parts.append(f"ranges {progress.ranges_done:,}/{progress.ranges_total:,}")
    parts.append(f"{progress.requests:,} requests")
    if elapsed_seconds >= RATE_MIN_WINDOW:
        parts.append(f"{progress.keys_per_second:,.0f} keys/s")
    parts.append(f"ETA {format_duration(progress.eta_seconds)}")
    return " · ".join(parts)


class ListingDisplay:
    """Runs in a daemon thread until stopped; redraws on a terminal, prints a line every
    ``plain_interval`` seconds elsewhere, and a last line when the listing ends."""

    def __init__(
        self,
        snapshot: Callable[[], ListingProgress],
        stream: TextIO = sys.stderr,
        *,
        live: bool | None = None,
        plain_interval: float = PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._plain_interval = max(0.1, plain_interval)
        self._clock = clock
        self._started = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-listing-display", daemon=True)

    def __enter__(self) -> ListingDisplay:
        self._started = self._clock()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        if self._live:
            console = Console(file=self._stream)

            def frame() -> Text:
                elapsed = self._clock() - self._started
                return Text(f"{spinner(elapsed)} {describe_listing(self._snapshot(), elapsed)}")

            with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
                while not self._stop.wait(LIVE_INTERVAL):
                    live.update(frame(), refresh=True)
                live.update(frame(), refresh=True)
            return
        last = self._clock()
        while not self._stop.wait(min(self._plain_interval, 0.5)):
            now = self._clock()
            if now - last >= self._plain_interval:
                self._print(now)
                last = now
        self._print(self._clock())

    def _print(self, now: float) -> None:
        elapsed = now - self._started
        line = describe_listing(self._snapshot(), elapsed)
        print(f"[{format_duration(elapsed)}] {line}", file=self._stream, flush=True)
