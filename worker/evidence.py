"""Evidence of every object a job considered (`spec.report.include: all`): one JSON line per object with
its action and the checksums the copy compared, streamed into gzipped parts that are handed to a sink
(an upload to `spec.report`) as each one closes, and a summary document naming every part with its line
count and SHA-256. The format is documented, with its stability promise, in docs/report-format.md.

Where it sits: the copy engine calls `EvidenceRecorder.record` at each object's outcome (copied, skipped,
failed); `ferry run` and the worker pod make the recorder, give it the sink, and write the summary when the
run ends. The line and summary renderings are pure; the recorder only writes local part files and calls
the sink. Memory stays bounded whatever the job's size: at most one open part (a gzip stream to a local
file) at a time, and the summary holds one entry per part, never one per object.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ferry.worker.objects import ObjectInfo, Outcome

#: The format of the lines and the summary. Fields may be added within a format; none is removed, renamed
#: or changes meaning or type without a new number (docs/report-format.md).
FORMAT = 1
SUMMARY_KIND = "ferry.dev/evidence-summary"
#: Lines per part. At ~250 bytes per line a part is ~25 MB of JSON and a few MB gzipped: a reader fetches
#: and checks one in seconds, a shard of a million objects has about ten, and a part lost to a failed
#: upload loses a bounded slice of the evidence. The worker's disk holds one part at a time.
LINES_PER_PART = 100_000
#: Bounds of a lines-per-part setting (FERRY_REPORT_LINES_PER_PART, for tests and readers that want
#: smaller parts): a part is never empty, and never so large that the 1 GiB scratch volume of a pod fills.
MAX_LINES_PER_PART = 1_000_000
LINES_PER_PART_ENV = "FERRY_REPORT_LINES_PER_PART"
#: The longest reason or message a line carries (an S3 error message is attacker-influenced text).
MAX_REASON_CHARS = 500
#: Bytes read at a time when a closed part is hashed.
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Checksum:
    """What one copy compared: ``algorithm`` ("crc32c" or "etag"), the value on the source side (computed
    over the bytes read, equal to the source's own value whenever it had a comparable one) and the value
    the destination holds or accepted."""

    algorithm: str
    source: str | None
    destination: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"algorithm": self.algorithm, "source": self.source, "destination": self.destination}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One object as the report shows it."""

    key: str
    size: int
    action: Outcome
    reason: str
    time: datetime
    version: str | None = None
    checksum: Checksum | None = None
    code: str | None = None
    #: With spec.versions all: whether this version is a delete marker (None: not a version's line).
    delete_marker: bool | None = None


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, with a ``Z``: ``2026-11-30T00:07:00.123Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def evidence_line(evidence: Evidence) -> str:
    """The JSON line of one object. ASCII only: keys and messages are escaped, so no byte of a key can end
    a line early or be read as anything but a string (U+2028 included)."""
    document: dict[str, Any] = {
        "key": evidence.key,
        "version": evidence.version,
        "size": evidence.size,
        "action": evidence.action.value,
        "reason": evidence.reason[:MAX_REASON_CHARS],
        "code": evidence.code,
        "checksum": evidence.checksum.as_json() if evidence.checksum else None,
        "time": rfc3339(evidence.time),
    }
    if evidence.delete_marker is not None:  # a version's line (spec.versions all) says its kind
        document["deleteMarker"] = evidence.delete_marker
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Part:
    """A closed part: its object name under the report prefix, lines, size and SHA-256 of the gzip file,
    and whether the sink took it."""

    number: int
    name: str
    lines: int
    bytes: int
    sha256: str
    uploaded: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lines": self.lines,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "uploaded": self.uploaded,
        }


@dataclass(frozen=True, slots=True)
class Tally:
    """Objects and bytes by action, as the lines count them."""

    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0

    @property
    def objects(self) -> int:
        return self.copied + self.skipped + self.failed

    def add(self, action: Outcome, size: int) -> Tally:
        if action is Outcome.COPIED:
            return replace(self, copied=self.copied + 1, bytes_copied=self.bytes_copied + size)
        if action is Outcome.SKIPPED:
            return replace(self, skipped=self.skipped + 1, bytes_skipped=self.bytes_skipped + size)
        return replace(self, failed=self.failed + 1, bytes_failed=self.bytes_failed + size)


def lines_per_part(env: Mapping[str, str]) -> int:
    """The lines-per-part setting of ``env``, within bounds; the default when unset or not a number."""
    raw = env.get(LINES_PER_PART_ENV, "")
    if not raw.isdigit() or len(raw) > 9:
        return LINES_PER_PART
    return max(1, min(MAX_LINES_PER_PART, int(raw)))


def part_name(scope: str, number: int) -> str:
    return f"{scope}/part-{number:05d}.jsonl.gz"


def summary_name(scope: str) -> str:
    return f"{scope}/summary.json"


def evidence_root(job: str) -> str:
    """Where every evidence scope of a job lives, relative to the report prefix."""
    return f"{job}/evidence"


def shard_scope(job: str, shard: int, resumed_after: str | None) -> str:
    """A shard's own scope: a re-run of the shard writes the same names and so replaces its parts. A run
    resumed after a checkpoint considers only the objects after it, so it gets a scope of its own and
    never replaces the evidence of the run that handled the objects before it."""
    scope = f"{evidence_root(job)}/shard-{shard:05d}"
    if resumed_after is not None:
        scope += f"-after-{hashlib.sha256(resumed_after.encode()).hexdigest()[:12]}"
    return scope


def run_scope(job: str, stamp: str) -> str:
    """A `ferry run`'s scope: one per run, named after its start (``20261130T000700Z``)."""
    return f"{evidence_root(job)}/run-{stamp}"


def summary_document(
    *,
    job: str,
    scope: str,
    address: str,
    shard: int | None,
    resumed_after: str | None,
    tally: Tally,
    started: datetime,
    ended: datetime,
    parts: list[Part],
    complete: bool,
) -> dict[str, Any]:
    """The summary of one scope: what a reader checks the parts against. ``address`` is the s3:// address
    of the report prefix; every part name is relative to it."""
    ordered = sorted(parts, key=lambda part: part.number)
    return {
        "format": FORMAT,
        "kind": SUMMARY_KIND,
        "job": job,
        "shard": shard,
        "resumedAfter": resumed_after,
        "location": address,
        "scope": scope,
        "objects": {
            "total": tally.objects,
            "copied": tally.copied,
            "skipped": tally.skipped,
            "failed": tally.failed,
        },
        "bytes": {
            "total": tally.bytes_copied + tally.bytes_skipped + tally.bytes_failed,
            "copied": tally.bytes_copied,
            "skipped": tally.bytes_skipped,
            "failed": tally.bytes_failed,
        },
        "start": rfc3339(started),
        "end": rfc3339(ended),
        "complete": complete and all(part.uploaded for part in ordered),
        "parts": [part.as_json() for part in ordered],
    }


def evidence_status(bucket: str, prefix: str, job: str, objects: Mapping[str, int]) -> dict[str, Any]:
    """What the operator's ``status.evidence`` shows: where the shards' scopes are, the name of a shard's
    summary in its scope, and the objects handled so far by action (each has its line in the evidence
    of its shard; the operator reads no tenant bucket, so it counts from the workers' reports)."""
    return {
        "format": FORMAT,
        "location": f"s3://{bucket}/{prefix}{evidence_root(job)}/",
        "summaries": "shard-NNNNN/summary.json",
        "objects": {action: int(objects.get(action, 0)) for action in ("copied", "skipped", "failed")},
    }


#: Takes a closed part file and its object name; True once it is stored.
Sink = Callable[[Path, str], bool]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class EvidenceRecorder:
    """Streams evidence lines into gzipped part files in ``directory`` and hands each full part to ``sink``
    (then deletes it). Thread-safe: the copier's threads record concurrently; a part is uploaded outside
    the lock, so recording goes on into the next part meanwhile."""

    scope: str
    sink: Sink
    lines_per_part: int = LINES_PER_PART
    directory: Path | None = None
    clock: Callable[[], datetime] = _now
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _file: IO[bytes] | None = field(default=None, init=False)
    _gzip: gzip.GzipFile | None = field(default=None, init=False)
    _path: Path | None = field(default=None, init=False)
    _lines: int = field(default=0, init=False)
    _number: int = field(default=0, init=False)
    _parts: list[Part] = field(default_factory=list, init=False)
    _tally: Tally = field(default_factory=Tally, init=False)
    _closed: bool = field(default=False, init=False)
    started: datetime = field(init=False)
    ended: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.lines_per_part = max(1, min(MAX_LINES_PER_PART, self.lines_per_part))
        self.started = self.clock()

    def record(
        self,
        source: ObjectInfo,
        action: Outcome,
        *,
        reason: str,
        code: str | None = None,
        checksum: Checksum | None = None,
        delete_marker: bool | None = None,
    ) -> None:
        """One object's outcome, as it happens (``delete_marker``: set on a version's line)."""
        line = evidence_line(
            Evidence(
                key=source.key,
                version=source.version_id,
                size=source.size,
                action=action,
                reason=reason,
                code=code,
                checksum=checksum,
                time=self.clock(),
                delete_marker=delete_marker,
            )
        )
        full: tuple[int, Path, int] | None = None
        with self._lock:
            if self._closed:
                return
            if self._gzip is None:
                self._open()
            assert self._gzip is not None
            self._gzip.write(line.encode("ascii") + b"\n")
            self._lines += 1
            self._tally = self._tally.add(action, source.size)
            if self._lines >= self.lines_per_part:
                full = self._seal()
        if full is not None:
            self._store(*full)

    def close(self) -> list[Part]:
        """Seal and store the last part; returns every part in order. Later records are ignored."""
        with self._lock:
            self._closed = True
            last = self._seal() if self._gzip is not None else None
        if last is not None:
            self._store(*last)
        self.ended = self.clock()
        with self._lock:
            return sorted(self._parts, key=lambda part: part.number)

    @property
    def tally(self) -> Tally:
        with self._lock:
            return self._tally

    def _open(self) -> None:
        descriptor, name = tempfile.mkstemp(prefix="ferry-evidence-", suffix=".jsonl.gz", dir=self.directory)
        self._file = os.fdopen(descriptor, "wb")
        # mtime 0: the same lines make the same bytes, so a part's SHA-256 depends on its content only.
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0)
        self._path = Path(name)

    def _seal(self) -> tuple[int, Path, int]:
        assert self._gzip is not None and self._file is not None and self._path is not None
        self._gzip.close()
        self._file.close()
        sealed = (self._number, self._path, self._lines)
        self._gzip, self._file, self._path = None, None, None
        self._number += 1
        self._lines = 0
        return sealed

    def _store(self, number: int, path: Path, lines: int) -> None:
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        name = part_name(self.scope, number)
        try:
            uploaded = self.sink(path, name)
        finally:
            path.unlink(missing_ok=True)
        with self._lock:
            self._parts.append(Part(number, name, lines, size, digest.hexdigest(), uploaded))
