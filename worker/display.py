"""What `ferry run` shows while it works: a live frame on a terminal, plain periodic lines otherwise
(logs, CI). Rendering is pure: `describe`, `plain_line` and `frame` are functions of one `Progress`
snapshot (its elapsed time drives the spinner), so they are tested without a terminal. The loop around
them owns the clock and the stream.

What is shown follows what is known:
- while the source is still being listed the total is unknown: a spinner, the objects found and done
  so far and the rate, never a bar (a bar needs a total; a full one would claim the job is done);
- once the listing has ended (`Counts.total`): a bar, percent and ETA;
- a rate only once the run has lasted `RATE_MIN_WINDOW` (over a few milliseconds it is noise), and
  an ETA only while something finishes (the engine's ETA is None otherwise, so it reads `--` rather
  than freezing at its last value).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ferry.model import format_bytes
from ferry.model.quantity import format_duration
from ferry.worker.engine import Progress

if TYPE_CHECKING:
    from rich.console import RenderableType

# rich is imported where a live frame is drawn, not here: `ferry run --progress none|plain` and the worker
# pods never draw one, and importing it costs about 30 ms of start-up CPU.

#: A rate is shown once the run has lasted this long.
RATE_MIN_WINDOW = 1.0
#: Seconds between redraws on a terminal (the spinner advances one step per redraw).
LIVE_INTERVAL = 0.25
#: Seconds between plain lines, unless `--progress-interval` says otherwise.
PLAIN_INTERVAL = 10.0
BAR_WIDTH = 40
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def format_percent(done: int, total: int) -> str:
    """Percent done, rounded down: 99.96% reads 99.9%, so 100.0% means every object is done."""
    if total <= 0:
        return "100.0%"
    return f"{math.floor(1000 * min(done, total) / total) / 10:.1f}%"


def format_rate(progress: Progress) -> str | None:
    """Objects/s and MB/s over the engine's rate window, or None while the run is too young to have one."""
    if progress.elapsed_seconds < RATE_MIN_WINDOW:
        return None
    return f"{progress.objects_per_second:,.1f} obj/s, {format_bytes(int(progress.bytes_per_second))}/s"


def describe(progress: Progress) -> str:
    """One line a person can read at a glance."""
    c = progress.counts
    total, bytes_total = c.total, c.bytes_total
    if total is None or bytes_total is None:
        # `listed` runs ahead of `discovered`; a snapshot without lister counts still shows something true.
        found, found_bytes = max(c.listed, c.discovered), max(c.bytes_listed, c.bytes_discovered)
        parts = [
            f"listing: {found:,} objects ({format_bytes(found_bytes)}) found so far, "
            f"{c.done:,} done ({format_bytes(c.bytes_done)})"
        ]
    else:
        parts = [
            f"{c.done:,}/{total:,} objects ({format_percent(c.done, total)})",
            f"{format_bytes(c.bytes_done)}/{format_bytes(bytes_total)}",
        ]
    rate = format_rate(progress)
    if rate is not None:
        parts.append(rate)
    if total is not None:
        # The ETA comes from the rate: no rate shown, no ETA either.
        parts.append(f"ETA {format_duration(progress.eta_seconds if rate is not None else None)}")
    limiter = progress.limiter
    parts.append(f"concurrency {limiter.concurrency} ({limiter.reason}, {limiter.in_flight} in flight)")
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


def plain_line(progress: Progress) -> str:
    """A log line: the run's elapsed time, then `describe`."""
    return f"[{format_duration(progress.elapsed_seconds)}] {describe(progress)}"


def spinner(elapsed_seconds: float) -> str:
    return SPINNER[int(elapsed_seconds / LIVE_INTERVAL) % len(SPINNER)]


def frame(progress: Progress) -> RenderableType:
    """The live display: a spinner line while the total is unknown, a bar over the line once it is."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    c = progress.counts
    total = c.total
    if total is None:
        return Text(f"{spinner(progress.elapsed_seconds)} {describe(progress)}")
    bar = ProgressBar(total=max(total, 1), completed=min(c.done, total) if total else 1, width=BAR_WIDTH)
    return Group(bar, Text(describe(progress)))


def plain_due(progress: Progress, last_line_at: float | None, total_was_known: bool, interval: float) -> bool:
    """Whether the plain display prints a line now: every ``interval`` seconds, and at once when the
    listing ends (the first line with percent and ETA, rather than up to an interval later)."""
    if not total_was_known and progress.counts.total is not None:
        return True
    since = progress.elapsed_seconds - (last_line_at if last_line_at is not None else 0.0)
    return since >= interval


class ProgressDisplay:
    """Runs in a daemon thread until stopped; redraws on a terminal, prints lines elsewhere."""

    def __init__(
        self,
        snapshot: Callable[[], Progress],
        stream: TextIO = sys.stderr,
        *,
        live: bool | None = None,
        plain_interval: float = PLAIN_INTERVAL,
    ) -> None:
        self._snapshot = snapshot
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._plain_interval = plain_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-display", daemon=True)

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        if self._live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self._stream)
            with Live(frame(self._snapshot()), console=console, auto_refresh=False, transient=False) as live:
                while not self._stop.wait(LIVE_INTERVAL):
                    live.update(frame(self._snapshot()), refresh=True)
                live.update(frame(self._snapshot()), refresh=True)
            return
        # Plain: poll often enough to print the listing's end promptly, print at most once per interval.
        last_line_at: float | None = None
        total_known = False
        while not self._stop.wait(min(self._plain_interval, 0.5)):
            progress = self._snapshot()
            if plain_due(progress, last_line_at, total_known, self._plain_interval):
                print(plain_line(progress), file=self._stream, flush=True)
                last_line_at = progress.elapsed_seconds
            total_known = total_known or progress.counts.total is not None
