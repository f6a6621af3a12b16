"""What `ferry run` shows while it works: a live line with a bar on a terminal, plain periodic lines
otherwise (logs, CI). Rendering is pure (`describe`); the loop around it owns the clock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from ferry.model import format_bytes
from ferry.worker.engine import Progress


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def describe(progress: Progress) -> str:
    """One line a person can read at a glance."""
    c = progress.counts
    total = f"{c.discovered:,}" + ("" if c.listing_done else "+")
    percent = f" ({100 * c.done / c.discovered:.1f}%)" if c.listing_done and c.discovered else ""
    limiter = progress.limiter
    parts = [
        f"{c.done:,}/{total} objects{percent}",
        f"{format_bytes(c.bytes_done)}/{format_bytes(c.bytes_discovered)}",
        f"{progress.objects_per_second:,.1f} obj/s",
        f"{progress.bytes_per_second / 1e6:,.1f} MB/s",
        f"concurrency {limiter.concurrency} ({limiter.reason}, {limiter.in_flight} in flight)",
        f"ETA {format_duration(progress.eta_seconds)}" if c.listing_done else "listing…",
    ]
    if c.skipped:
        parts.append(f"skipped {c.skipped:,}")
    if c.failed:
        parts.append(f"failed {c.failed:,}")
    if progress.throttles:
        parts.append(f"throttled {progress.throttles:,}")
    if limiter.rss_bytes and limiter.budget_bytes:
        parts.append(
            f"memory {format_bytes(limiter.rss_bytes)} of {format_bytes(limiter.budget_bytes)} budget "
            f"({format_bytes(limiter.reserved_bytes)} reserved)"
        )
    return " · ".join(parts)


class ProgressDisplay:
    """Runs in a daemon thread until stopped; redraws on a terminal, prints lines elsewhere."""

    def __init__(
        self,
        snapshot: Callable[[], Progress],
        stream: TextIO = sys.stderr,
        *,
        live: bool | None = None,
        plain_interval: float = 10.0,
    ) -> None:
        self._snapshot = snapshot
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._interval = 0.5 if self._live else plain_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-display", daemon=True)

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _render(self) -> Group:
        progress = self._snapshot()
        c = progress.counts
        bar = ProgressBar(total=max(c.discovered, 1), completed=c.done if c.listing_done else 0, width=40)
        return Group(bar, Text(describe(progress)))

    def _loop(self) -> None:
        if self._live:
            console = Console(file=self._stream)
            with Live(self._render(), console=console, refresh_per_second=4, transient=False) as live:
                while not self._stop.wait(self._interval):
                    live.update(self._render())
                live.update(self._render())
            return
        while not self._stop.wait(self._interval):
            print(describe(self._snapshot()), file=self._stream, flush=True)
