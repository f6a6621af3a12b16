"""Failed objects: streamed to a JSON-lines report as they happen, with a capped sample kept in memory
for summaries and status. The report holds keys, sizes and error codes; never credentials.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import IO

from ferry.worker.objects import FailedObject

SAMPLE_LIMIT = 100


class FailureReport:
    def __init__(self, path: Path | None = None) -> None:
        # Without a path the lines still go to a temporary file, so they can be uploaded to spec.report.
        self._file: IO[str] = (
            path.open("w", encoding="utf-8")
            if path
            else tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl", delete=False)  # noqa: SIM115
        )
        self.path = Path(self._file.name)
        self._lock = threading.Lock()
        self.count = 0
        self.sample: list[FailedObject] = []

    def record(self, failure: FailedObject) -> None:
        line = json.dumps(failure.as_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
            if len(self.sample) < SAMPLE_LIMIT:
                self.sample.append(failure)

    def close(self) -> None:
        with self._lock:
            self._file.close()
