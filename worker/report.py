"""Failed objects: streamed to a JSON-lines report as they happen, with a capped sample kept in memory
for summaries and status. The report holds keys, sizes and error codes; never credentials.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

from ferry.model.copyjob import Report
from ferry.worker.objects import FailedObject
from ferry.worker.s3 import ClientOptions, Credentials, make_client

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


def upload(path: Path | str, location: Report, credentials: Credentials | None, name: str) -> str | None:
    """Copy a finished report to ``<prefix><name>`` at `spec.report`; returns its s3:// address.

    A report that cannot be written is a warning, not a failure: the copy it describes is done, and its
    outcome is already in the summary or the status.
    """
    target = f"s3://{location.bucket}/{location.prefix}{name}"
    try:
        client = make_client(location, credentials, ClientOptions(max_pool_connections=2))
        client.upload_file(str(path), location.bucket, f"{location.prefix}{name}")
    except Exception as exc:
        print(f"warning: could not write the report to {target}: {exc}", file=sys.stderr)
        return None
    return target
