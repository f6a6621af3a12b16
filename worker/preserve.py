"""What each write carries beside the data because the CopyJob asks for it: the destination's canned ACL
(`spec.destination.acl`) and the source object's Object Lock retention and legal hold
(`spec.preserve.objectLock`).

Pure: the spec and the source object's headers (as boto3 names them; the lean transport reads them into the
same names) go in, request arguments named as boto3 names them come out. The copier (copier.py) adds them
to every PutObject, CopyObject and CreateMultipartUpload; the lean transport (leans3.py) maps the same
names to the same headers, so both transports send the same request.

The source's headers may be written by anyone who can write to the source: only the values S3 defines
are passed on, and a reason never quotes what the source sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from ferry.model.copyjob import Destination

#: Retention modes S3 defines; anything else from a source is not passed on.
LOCK_MODES = frozenset({"GOVERNANCE", "COMPLIANCE"})
#: A retention ending within this margin of now is treated as ended: the write reaches the destination
#: some time after the source was read, and S3 refuses a retain-until date in the past.
RETENTION_MARGIN = timedelta(minutes=1)
#: The longest date string parsed (an ISO 8601 or HTTP date is about 30 characters).
MAX_DATE_TEXT = 64

#: Request arguments (boto3's names) that carry an Object Lock.
LOCK_FIELDS = ("ObjectLockMode", "ObjectLockRetainUntilDate", "ObjectLockLegalHoldStatus")
#: Request arguments that give S3 the integrity check it requires on a write that sets a retention.
INTEGRITY_FIELDS = ("ContentMD5", "ChecksumCRC32C", "ChecksumCRC32", "ChecksumSHA256", "ChecksumCRC64NVME")


@dataclass(frozen=True)
class ObjectLock:
    """The Object Lock arguments of one write, and why a retention the source had was not sent."""

    args: Mapping[str, Any] = field(default_factory=dict)
    dropped: str | None = None


def acl_args(destination: Destination) -> dict[str, str]:
    """The canned ACL of every write to ``destination`` (none when the spec sets none)."""
    return {"ACL": destination.acl} if destination.acl else {}


def retain_until(value: Any) -> datetime | None:
    """A retain-until date as boto3 parses it (a datetime) or as a header carries it (ISO 8601, or an HTTP
    date); None when it is neither or has no time zone."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if not isinstance(value, str) or not value or len(value) > MAX_DATE_TEXT:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo is not None else None


def object_lock(head: Mapping[str, Any], now: datetime) -> ObjectLock:
    """The Object Lock of the source object ``head`` describes, as arguments of the destination write.

    A retention is sent only with a known mode and a retain-until date later than ``now`` plus
    `RETENTION_MARGIN`; otherwise it is dropped and the reason says why. A legal hold is sent when it is
    ON (OFF is what an object has without one)."""
    args: dict[str, Any] = {}
    dropped: str | None = None
    mode = head.get("ObjectLockMode")
    until_value = head.get("ObjectLockRetainUntilDate")
    if mode is not None or until_value is not None:
        until = retain_until(until_value)
        if mode not in LOCK_MODES:
            dropped = "the source's retention mode is neither GOVERNANCE nor COMPLIANCE"
        elif until is None:
            dropped = "the source's retain-until date is missing or not a date with a time zone"
        elif until <= now + RETENTION_MARGIN:
            dropped = "the source's retention has expired (S3 refuses a retain-until date in the past)"
        else:
            args["ObjectLockMode"] = mode
            args["ObjectLockRetainUntilDate"] = until.astimezone(UTC)
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        args["ObjectLockLegalHoldStatus"] = "ON"
    return ObjectLock(args=args, dropped=dropped)


def needs_content_md5(args: Mapping[str, Any]) -> bool:
    """Whether a write with ``args`` must add a Content-MD5: S3 refuses a write that sets an Object Lock
    without an integrity header, and `verify: size` sends none."""
    return any(name in args for name in LOCK_FIELDS) and not any(name in args for name in INTEGRITY_FIELDS)


def header_value(value: Any) -> str:
    """A request argument as its header carries it: dates (a retain-until date) in ISO 8601 UTC, as
    botocore writes them; anything else as its text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return str(value)
