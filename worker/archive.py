"""Archive tiers: which source objects cannot be read until restored, and when a restore is done. Pure:
values in, values out; the S3 calls are `restorer.py`'s.

Where it sits: the engine asks `listed_archived` of each listed object (ListObjectsV2 reports the storage
class) before it takes a transfer slot for it, and `is_archived_error` of a copy that failed, which catches
what a listing cannot show (INTELLIGENT_TIERING's archive access tiers, manifest rows). With
``spec.archived: restore`` the restorer reads `state_of` from each waiting object's HEAD and the wait is
paced by `RestoreWait`.

GLACIER_IR (Glacier Instant Retrieval) is read like STANDARD and is not archived here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

#: Storage classes whose objects cannot be read until restored, as ListObjectsV2 and HEAD name them.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: x-amz-archive-status values of INTELLIGENT_TIERING objects in an archive access tier.
ARCHIVE_STATUSES = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
#: Error codes of reading or copying an object that must be restored first (GET/HEAD say
#: InvalidObjectState; CopyObject and UploadPartCopy may say ObjectNotInActiveTierError).
ARCHIVED_ERROR_CODES = frozenset({"InvalidObjectState", "ObjectNotInActiveTierError"})
#: RestoreObject answers that mean a restore is already under way or done: nothing to request again.
RESTORE_ALREADY_CODES = frozenset({"RestoreAlreadyInProgress"})

#: The failure code of an object skipped because it is archived (`spec.archived: skip`).
ARCHIVED_SKIPPED = "ArchivedObjectSkipped"
#: The failure code of an archived object whose restore was not done within restore.maxWaitSeconds.
RESTORE_TIMED_OUT = "RestoreTimedOut"
#: The failure code of an archived object set aside beyond what one run keeps waiting (`MAX_WAITING`).
RESTORE_NOT_AWAITED = "RestoreNotAwaited"

#: Archived objects one run keeps waiting for their restores at most (about 200 bytes each in memory).
#: Beyond it, restores are still requested and the objects reported, for a later run to copy.
MAX_WAITING = 100_000

#: A header longer than this is not S3's x-amz-restore (which is under 100 characters): not trusted.
MAX_RESTORE_HEADER = 256
_ONGOING = re.compile(r'(?:^|[\s,])ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)


class ArchiveState(StrEnum):
    """Whether an object can be read now."""

    READABLE = "readable"  # not archived, or GLACIER_IR
    ARCHIVED = "archived"  # archived, no restore requested (or the restored copy expired)
    RESTORING = "restoring"  # a restore is under way
    RESTORED = "restored"  # a restored copy is readable


def listed_archived(storage_class: str | None) -> bool:
    """Whether a listing's storage class says the object must be restored before it is read."""
    return storage_class is not None and storage_class in ARCHIVE_CLASSES


def is_archived_error(code: str) -> bool:
    """Whether a failed read or copy failed because the object is archived."""
    return code in ARCHIVED_ERROR_CODES


def restore_ongoing(header: str | None) -> bool | None:
    """The ``ongoing-request`` flag of an x-amz-restore header: True (under way), False (restored), or
    None (no header, or one that is not S3's)."""
    if not header or len(header) > MAX_RESTORE_HEADER:
        return None
    match = _ONGOING.search(header)
    if match is None:
        return None
    return match.group(1).lower() == "true"


def state_of(storage_class: str | None, restore: str | None, archive_status: str | None) -> ArchiveState:
    """What a HEAD answer says of an object: its x-amz-storage-class (absent for STANDARD), x-amz-restore
    and x-amz-archive-status headers."""
    ongoing = restore_ongoing(restore)
    archived = listed_archived(storage_class) or (
        storage_class == "INTELLIGENT_TIERING" and archive_status in ARCHIVE_STATUSES
    )
    if ongoing is True:
        return ArchiveState.RESTORING
    if ongoing is False:
        return ArchiveState.RESTORED
    return ArchiveState.ARCHIVED if archived else ArchiveState.READABLE


@dataclass(frozen=True, slots=True)
class RestoreWait:
    """The pacing of the wait for restores: each object is checked every ``interval`` seconds from when
    its restore was requested, and given up ``max_wait`` seconds after it."""

    interval: float
    max_wait: float

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.max_wait <= 0:
            raise ValueError("restore interval and max wait must be positive")

    def deadline(self, requested_at: float) -> float:
        return requested_at + self.max_wait

    def timed_out(self, requested_at: float, now: float) -> bool:
        return now >= self.deadline(requested_at)

    def next_check(self, requested_at: float, last_check: float | None) -> float:
        """When the object is checked next: an interval after its last check (or its request), never
        later than its deadline, so a timeout is decided on a check made at the deadline."""
        after = last_check if last_check is not None else requested_at
        return min(after + self.interval, self.deadline(requested_at))

    def checks_at_most(self) -> int:
        """The checks one object gets at most: the wait's loops are bounded by this."""
        return int(self.max_wait // self.interval) + 2
