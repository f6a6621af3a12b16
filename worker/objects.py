"""Values that describe objects as listings and copies see them. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as ListObjectsV2 reports it."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    #: The source version to read (spec.versions all); None: the current version.
    version_id: str | None = None
    #: The listing's StorageClass, when it was read (spec.archived asks for it; see archive.py).
    storage_class: str | None = None

    @property
    def is_multipart_etag(self) -> bool:
        """Multipart ETags (``"…-N"``) are not MD5s of the content and compare only by part layout."""
        return "-" in self.etag


@dataclass(frozen=True, slots=True)
class KeyRange:
    """A half-open slice of the source key space: keys after ``start_after`` up to ``end`` inclusive.

    Shards of a planned CopyJob are key ranges; ``ferry run`` uses the whole space.
    """

    start_after: str | None = None
    end: str | None = None

    def contains(self, key: str) -> bool:
        return (self.start_after is None or key > self.start_after) and (self.end is None or key <= self.end)


class Action(StrEnum):
    COPY = "copy"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


class Outcome(StrEnum):
    COPIED = "copied"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FailedObject:
    """An object that could not be copied after every retry; what the report and status show."""

    key: str
    code: str
    message: str
    attempts: int
    size: int
    #: The source version id (spec.versions all); None when the current version was copied.
    version: str | None = None

    def as_json(self) -> dict[str, object]:
        line: dict[str, object] = {
            "key": self.key,
            "size": self.size,
            "code": self.code,
            "message": self.message,
            "attempts": self.attempts,
        }
        if self.version is not None:
            line["version"] = self.version
        return line
