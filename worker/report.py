"""Failed objects: streamed to a JSON-lines report as they happen, with a capped sample kept in memory
for summaries and status. The report holds keys, sizes and error codes; never credentials.

Also the adapter that writes under `spec.report`: the failures file, and with `include: all` the evidence
parts and summaries that worker/evidence.py renders (`ReportStore`, `write_evidence`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from ferry.model.copyjob import Report
from ferry.worker.evidence import FORMAT, EvidenceRecorder, summary_document, summary_name
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
        #: Objects intentionally not copied (`note`), and a capped sample of them.
        self.notes = 0
        self.noted: list[FailedObject] = []

    def record(self, failure: FailedObject) -> None:
        line = json.dumps(failure.as_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
            if len(self.sample) < SAMPLE_LIMIT:
                self.sample.append(failure)

    def note(self, entry: FailedObject) -> None:
        """A line for an object intentionally not copied (an archived object skipped): in the report
        file beside the failures, but neither counted nor sampled as one."""
        line = json.dumps(entry.as_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.notes += 1
            if len(self.noted) < SAMPLE_LIMIT:
                self.noted.append(entry)

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


#: Stale parts of a re-run shard that are looked for at most (pages of 1,000 keys): far more than a
#: shard writes (a shard of 100 million objects has 1,000 parts), so one listing call bounds the work.
MAX_PRUNE_PAGES = 10


class ReportStore:
    """Objects under `spec.report`'s prefix, written with one client made on first use (the evidence
    parts of a run share it). Failures are warnings: a report that cannot be written never fails the copy
    it describes."""

    def __init__(self, location: Report, credentials: Credentials | None) -> None:
        self.location = location
        self._credentials = credentials
        self._client: Any = None
        self._lock = threading.Lock()

    def address(self, name: str = "") -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix}{name}"

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    self.location, self._credentials, ClientOptions(max_pool_connections=2)
                )
            return self._client

    def put_file(self, path: Path, name: str) -> bool:
        # One PUT streamed from the file: a part is never held whole in a worker whose memory budget
        # reserves only its transfers (measured with tracemalloc against moto: 0.27 MiB peak for a 20 MiB
        # file).
        try:
            with path.open("rb") as body:
                self._get_client().put_object(
                    Bucket=self.location.bucket, Key=f"{self.location.prefix}{name}", Body=body
                )
        except Exception as exc:
            print(f"warning: could not write the report to {self.address(name)}: {exc}", file=sys.stderr)
            return False
        return True

    def put_json(self, document: dict[str, Any], name: str) -> bool:
        body = json.dumps(document, ensure_ascii=True, indent=2).encode()
        try:
            self._get_client().put_object(
                Bucket=self.location.bucket,
                Key=f"{self.location.prefix}{name}",
                Body=body,
                ContentType="application/json",
            )
        except Exception as exc:
            print(f"warning: could not write the report to {self.address(name)}: {exc}", file=sys.stderr)
            return False
        return True

    def prune(self, folder: str, keep: set[str]) -> None:
        """Delete the part objects under ``folder`` that ``keep`` does not name: what an earlier run of the
        same shard wrote beyond this run's parts (a re-run with fewer objects writes fewer parts)."""
        prefix = f"{self.location.prefix}{folder}/part-"
        try:
            client = self._get_client()
            token: str | None = None
            for _ in range(MAX_PRUNE_PAGES):
                page = client.list_objects_v2(
                    Bucket=self.location.bucket,
                    Prefix=prefix,
                    **({"ContinuationToken": token} if token else {}),
                )
                stale = [
                    {"Key": item["Key"]}
                    for item in page.get("Contents", [])
                    if item["Key"][len(self.location.prefix) :] not in keep
                ]
                if stale:
                    client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": stale})
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return
        except Exception as exc:
            where = self.address(folder)
            print(f"warning: could not remove stale report parts under {where}: {exc}", file=sys.stderr)


def write_evidence(
    recorder: EvidenceRecorder,
    store: ReportStore,
    *,
    job: str,
    shard: int | None,
    resumed_after: str | None,
    complete: bool,
    replaces: bool,
) -> dict[str, Any]:
    """Close ``recorder``, write its summary beside its parts (removing a re-run's stale parts first when
    ``replaces``), and return what `ferry run`'s summary and a worker's termination message point at."""
    parts = recorder.close()
    if replaces:
        store.prune(recorder.scope, {part.name for part in parts})
    document = summary_document(
        job=job,
        scope=recorder.scope,
        address=store.address(),
        shard=shard,
        resumed_after=resumed_after,
        tally=recorder.tally,
        started=recorder.started,
        ended=recorder.ended or recorder.started,
        parts=parts,
        complete=complete,
    )
    name = summary_name(recorder.scope)
    written = store.put_json(document, name)
    return {
        "format": FORMAT,
        "summary": store.address(name) if written else None,
        "parts": len(parts),
        "objects": document["objects"],
        "complete": document["complete"] and written,
    }
