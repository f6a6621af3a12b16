"""The evidence of spec.versions all (spec.report.include: all): one line per source version, with its
action, its reason and, where the copy verified one, its checksum.

Where it sits: `worker/versioncopy.py` copies a key's history and tells `VersionEvidence` each version's
outcome as it is known; `VersionEvidence` hands the lines to the run's `evidence.EvidenceRecorder` (the
one the engine was given). What a line says is decided by the pure functions here (`copied_line`,
`skipped_line`, `failed_line`); the recorder writes it.

Histories may be spilled to disk (worker/versionlisting.py): versions skipped or failed in bulk are
read back one chunk at a time (`KeyHistory.oldest_first` is read again from its start), never held whole.
A key whose history is longer than Ferry keeps (`TooManyVersions`) has no versions left to name: it gets
one line for the key (version null, the history's bytes).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.worker.evidence import Checksum
from ferry.worker.objects import ObjectInfo, Outcome
from ferry.worker.versions import Version

log = logging.getLogger(__name__)

#: Why an object version was copied (the same words as an object's line).
COPIED = "absent at destination"
#: Why a delete marker was copied.
MARKER_COPIED = "delete marker absent at destination: written there by a delete of the key"
#: Why an object version was skipped when its size and ETag match the destination's at its place.
SAME_ETAG = "same size and ETag"
#: Why it was skipped when the destination version at its place records this source version id.
RECORDED = "same size, and the destination version records this source version id"
#: Why a delete marker was skipped.
MARKER_SAME = "a delete marker at the same place of the destination history"
#: The listing time of a key line (no version to take one from; a line does not show it).
_NO_TIME = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class VersionLine:
    """What one version's evidence line says."""

    version: Version
    action: Outcome
    reason: str
    code: str | None = None
    checksum: Checksum | None = None


def copied_line(version: Version, checksum: Checksum | None) -> VersionLine:
    """A version copied: an object version with the checksum its copy compared, a delete marker without."""
    if version.delete_marker:
        return VersionLine(version, Outcome.COPIED, MARKER_COPIED)
    return VersionLine(version, Outcome.COPIED, COPIED, checksum=checksum)


def skipped_line(source: Version, destination: Version) -> VersionLine:
    """A source version the destination already holds at the same place of its history (``walk`` matched
    them): the ETags the listings showed, and whether they decided or the recorded source version id did
    (a multipart or encrypted copy has an ETag of its own)."""
    if source.delete_marker:
        return VersionLine(source, Outcome.SKIPPED, MARKER_SAME)
    checksum = Checksum("etag", source.etag or None, destination.etag or None)
    same = bool(source.etag) and source.etag == destination.etag
    return VersionLine(source, Outcome.SKIPPED, SAME_ETAG if same else RECORDED, checksum=checksum)


def failed_line(version: Version, code: str, reason: str) -> VersionLine:
    return VersionLine(version, Outcome.FAILED, reason, code=code)


def _object(version: Version) -> ObjectInfo:
    return ObjectInfo(
        key=version.key,
        size=version.size,
        etag=version.etag,
        last_modified=version.last_modified,
        version_id=version.version_id,
    )


class VersionEvidence:
    """Writes version lines to the run's evidence recorder, when it has one (``recorder`` is read at each
    outcome: None means spec.report.include is not all, and nothing is read back for it)."""

    def __init__(self, recorder: Callable[[], Any]) -> None:
        self._recorder = recorder

    @property
    def enabled(self) -> bool:
        return self._recorder() is not None

    def write(self, line: VersionLine) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        recorder.record(
            _object(line.version),
            line.action,
            reason=line.reason,
            code=line.code,
            checksum=line.checksum,
            delete_marker=line.version.delete_marker,
        )

    def skipped(self, sources: Iterable[Version], destinations: Iterable[Version], count: int) -> None:
        """The first ``count`` versions of a history, matched with the destination's in order."""
        if not self.enabled:
            return
        for source, destination in zip(itertools.islice(sources, count), destinations, strict=False):
            self.write(skipped_line(source, destination))

    def failed(self, versions: Iterable[Version], code: str, reason: str, *, after: int = 0) -> None:
        """Every version of ``versions`` past the first ``after``, failed for one reason."""
        if not self.enabled:
            return
        for version in itertools.islice(versions, after, None):
            self.write(failed_line(version, code, reason))

    def failed_key(self, key: str, size: int, code: str, reason: str) -> None:
        """A key whose versions cannot be named one by one: one line for the key (version null)."""
        recorder = self._recorder()
        if recorder is None:
            return
        probe = ObjectInfo(key=key, size=size, etag="", last_modified=_NO_TIME)
        recorder.record(probe, Outcome.FAILED, reason=reason, code=code)

    def failed_history(self, history: Any, code: str, reason: str, *, after: int = 0) -> None:
        """The versions of a `KeyHistory` past the first ``after``, read back from its start; when the
        history cannot be read again (its spill file failed), one line for the key says so."""
        if not self.enabled:
            return
        try:
            self.failed(history.oldest_first(), code, reason, after=after)
        except (OSError, ValueError) as exc:
            log.warning("reading back the history of %r for its evidence failed: %s", history.key, exc)
            self.failed_key(history.key, history.bytes, code, reason)
