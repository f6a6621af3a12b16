"""Copying one key's version history (spec.versions all): the versions the destination lacks, oldest
first, one at a time.

Where it sits: the engine hands each `HistoryPair` (worker/versionlisting.py) to `HistoryCopier.copy` in
one of its transfer threads, under one memory permit sized for the key's largest version. Keys are
copied in parallel as objects are; the versions of one key never are, since each version lands on top
of the previous one and the order is the history.

An object version is copied by the engine's `Copier` with its version id (GET or CopyObject with
versionId), and the copy records the source version id in its metadata (`SOURCE_VERSION_METADATA`). A
delete marker is copied as a DeleteObject of the key, which a versioning-enabled destination answers
with a new delete marker; an answer without one means the destination is not versioned (it deleted
the object), and the key stops with `DestinationNotVersioned`.

With spec.report.include all, every version's outcome also goes to `evidence` (worker/versionevidence.py)
as it is known: one line per version, whether copied, skipped, failed or held back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ferry.worker.copier import SOURCE_VERSION_METADATA, Copier
from ferry.worker.evidence import Checksum
from ferry.worker.objects import FailedObject, ObjectInfo
from ferry.worker.progress import Operation
from ferry.worker.retry import RetriesExhausted, classify
from ferry.worker.systematic import Side, side_of
from ferry.worker.versionevidence import VersionEvidence, copied_line, failed_line
from ferry.worker.versionlisting import MAX_HISTORY_VERSIONS, HistoryPair
from ferry.worker.versions import DIVERGED, Copy, Diverged, Skipped, Version, walk

log = logging.getLogger(__name__)

#: The failure code of the versions after one that failed: they wait for it, never overtake it.
EARLIER_VERSION_FAILED = "EarlierVersionFailed"
#: The failure code of a delete marker the destination did not keep (it is not versioned).
NOT_VERSIONED = "DestinationNotVersioned"
#: The failure code of a key with more versions than Ferry keeps track of (MAX_HISTORY_VERSIONS).
TOO_MANY_VERSIONS = "TooManyVersions"


class VersionSink(Protocol):
    """Where a key's outcome is counted (the engine)."""

    def version_copied(self, version: Version) -> None: ...

    def versions_skipped(self, versions: int, nbytes: int) -> None: ...

    def versions_failed(
        self, failure: FailedObject, versions: int, nbytes: int, side: Side | None = None
    ) -> None: ...


class NotVersioned(Exception):
    """A DeleteObject answered without a delete marker: the destination bucket is not versioned."""


@dataclass
class HistoryCopier:
    copier: Copier
    destination_client: Any
    destination_bucket: str
    #: Sends one request retried, rate-limited and counted as the engine counts every request.
    request: Callable[[Operation, Callable[[], Any]], Any]
    #: Where each version's evidence line goes (spec.report.include all); writes nothing otherwise.
    evidence: VersionEvidence = field(default_factory=lambda: VersionEvidence(lambda: None))

    def copy(self, pair: HistoryPair, sink: VersionSink) -> tuple[int, bool]:
        """Bring the destination history of ``pair``'s key up to the source's; returns the throttling
        answers met and whether nothing failed. Every version of the key is counted exactly once on
        ``sink``."""
        key = pair.destination_key
        throttles = 0
        if pair.source.overflowed or (pair.existing is not None and pair.existing.overflowed):
            message = (
                f"the key has more than {MAX_HISTORY_VERSIONS:,} versions at the "
                f"{'source' if pair.source.overflowed else 'destination'}; Ferry copies histories up to "
                "that length: copy this key's versions by other means"
            )
            failure = FailedObject(pair.source.key, TOO_MANY_VERSIONS, message, 1, pair.source.bytes)
            sink.versions_failed(failure, pair.source.versions, pair.source.bytes)
            self.evidence.failed_key(pair.source.key, pair.source.bytes, TOO_MANY_VERSIONS, message)
            pair.source.close()
            if pair.existing is not None:
                pair.existing.close()
            return throttles, False
        tally = _Tally(sink)
        try:
            destination = pair.existing.oldest_first() if pair.existing is not None else iter(())
            steps = walk(pair.source.oldest_first(), destination, lambda v: self._recorded(key, v))
            for step in steps:
                if isinstance(step, Skipped):
                    tally.versions_skipped(step.versions, step.bytes)
                    if pair.existing is not None:
                        # Read back from the histories' starts, one chunk at a time, beside the walk.
                        self.evidence.skipped(
                            pair.source.oldest_first(), pair.existing.oldest_first(), step.versions
                        )
                elif isinstance(step, Diverged):
                    message = (
                        f"{step.reason}; the destination's history was left untouched and "
                        f"{step.versions} source versions were not copied"
                    )
                    tally.versions_failed(
                        FailedObject(pair.source.key, DIVERGED, message, 1, step.bytes, step.version or None),
                        step.versions,
                        step.bytes,
                    )
                    self.evidence.failed_history(pair.source, DIVERGED, message)
                    return throttles, False
                elif isinstance(step, Copy):
                    version = step.version
                    try:
                        copied, checksum = self._copy_version(version, key)
                        throttles += copied
                    except Exception as exc:
                        self._stop(version, exc, steps, tally)
                        return throttles, False
                    tally.version_copied(version)
                    self.evidence.write(copied_line(version, checksum))
        except Exception as exc:
            # Reading a recorded version id (or a spilled history) failed: the versions not counted yet
            # fail, so every version is counted once.
            versions, nbytes = pair.source.versions - tally.versions, pair.source.bytes - tally.bytes
            failure, side = _failure(pair.source.key, None, exc, nbytes)
            counted = tally.versions
            tally.versions_failed(failure, versions, nbytes, side)
            # The versions counted so far are a prefix of the history (skips, then copies in order).
            self.evidence.failed_history(pair.source, failure.code, failure.message, after=counted)
            return throttles, False
        finally:
            pair.source.close()
            if pair.existing is not None:
                pair.existing.close()
        return throttles, True

    def _copy_version(self, version: Version, key: str) -> tuple[int, Checksum | None]:
        """Copy one version; returns the throttling answers met and the checksum the copy compared."""
        if version.delete_marker:
            answer = self.request(
                Operation.DELETE,
                lambda: self.destination_client.delete_object(Bucket=self.destination_bucket, Key=key),
            )
            if not answer.get("DeleteMarker"):
                raise NotVersioned(
                    f"bucket {self.destination_bucket!r} answered a delete without a delete marker: it is "
                    "not versioned; enable versioning on it (PutBucketVersioning Status=Enabled)"
                )
            return 0, None
        source = ObjectInfo(
            key=version.key,
            size=version.size,
            etag=version.etag,
            last_modified=version.last_modified,
            version_id=version.version_id,
        )
        result = self.copier.copy(source, key)
        return result.throttles, result.checksum

    def _recorded(self, key: str, destination: Version) -> str | None:
        """The source version id a destination version records (None when it records none)."""
        head = self.request(
            Operation.HEAD,
            lambda: self.destination_client.head_object(
                Bucket=self.destination_bucket, Key=key, VersionId=destination.version_id
            ),
        )
        recorded = (head.get("Metadata") or {}).get(SOURCE_VERSION_METADATA)
        return str(recorded) if recorded else None

    def _stop(self, version: Version, exc: Exception, steps: Any, sink: VersionSink) -> None:
        """A version could not be copied: it fails, and so do the later versions, which must not land
        before it."""
        failure, side = _failure(version.key, version.version_id, exc, version.size)
        sink.versions_failed(failure, 1, version.size, side)
        self.evidence.write(failed_line(version, failure.code, failure.message))
        held_back = (
            f"not copied: versions are copied in order, and version {version.version_id} of the key failed"
        )
        count = nbytes = 0
        first: str | None = None
        for step in steps:  # counted, not held: a history may be long
            if isinstance(step, Copy):
                count += 1
                nbytes += step.version.size
                first = first or step.version.version_id
                self.evidence.write(failed_line(step.version, EARLIER_VERSION_FAILED, held_back))
        if count:
            message = (
                f"{count} later versions of the key were not copied: versions are copied in order, and "
                f"version {version.version_id} failed"
            )
            sink.versions_failed(
                FailedObject(version.key, EARLIER_VERSION_FAILED, message, 0, nbytes, first), count, nbytes
            )


class _Tally:
    """A sink that also counts the versions reported to it."""

    def __init__(self, sink: VersionSink) -> None:
        self.sink = sink
        self.versions = 0
        self.bytes = 0

    def version_copied(self, version: Version) -> None:
        self.sink.version_copied(version)
        self.versions += 1
        self.bytes += version.size

    def versions_skipped(self, versions: int, nbytes: int) -> None:
        self.sink.versions_skipped(versions, nbytes)
        self.versions += versions
        self.bytes += nbytes

    def versions_failed(
        self, failure: FailedObject, versions: int, nbytes: int, side: Side | None = None
    ) -> None:
        self.sink.versions_failed(failure, versions, nbytes, side)
        self.versions += versions
        self.bytes += nbytes


def _failure(key: str, version_id: str | None, exc: Exception, size: int) -> tuple[FailedObject, Side | None]:
    """The report line of a version (or key) that failed, and the side whose request gave up."""
    if isinstance(exc, RetriesExhausted):
        failure = FailedObject(key, exc.last.code, exc.last.message[:500], exc.attempts, size, version_id)
        return failure, side_of(exc.operation)
    if isinstance(exc, NotVersioned):
        return FailedObject(key, NOT_VERSIONED, str(exc), 1, size, version_id), None
    classified = classify(exc)
    log.warning("copying a version of %r failed: %s", key, classified.code, exc_info=True)
    return FailedObject(key, classified.code, classified.message[:500], 1, size, version_id), None
