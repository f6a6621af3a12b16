"""A JSON-lines timeline of a run, one line per interval: what benchmarks plot and what a user reads to
see how concurrency found its level. The thread owns the clock; each line is a pure rendering of a
`Progress` snapshot."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferry.worker.engine import Progress


def timeline_line(progress: Progress) -> dict[str, Any]:
    limiter = progress.limiter
    return {
        "t": round(progress.elapsed_seconds, 3),
        "done": progress.counts.done,
        "bytes": progress.counts.bytes_done,
        "objectsPerSecond": round(progress.objects_per_second, 2),
        "concurrency": limiter.concurrency,
        "inFlight": limiter.in_flight,
        "reason": limiter.reason,
        "reservedBytes": limiter.reserved_bytes,
        "rssBytes": limiter.rss_bytes,
        "budgetBytes": limiter.budget_bytes,
        "throttles": progress.throttles,
        "retries": progress.retries,
    }


class Timeline:
    def __init__(self, path: Path, snapshot: Callable[[], Progress], interval: float = 1.0) -> None:
        self._file = path.open("w", encoding="utf-8")
        self._snapshot = snapshot
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-timeline", daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._write()
        self._file.close()

    def _write(self) -> None:
        self._file.write(json.dumps(timeline_line(self._snapshot())) + "\n")
        self._file.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._write()
