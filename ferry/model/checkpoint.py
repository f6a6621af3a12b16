"""Resume points of a shard, as both sides see them: the worker reports one in `/status` and in its
termination message, the operator keeps the latest one of every unfinished shard in the progress ledger
(the ConfigMap `<copyjob>-progress`, mounted read-only into worker pods), and a new pod for the same
shard reads it back at start. Pure values and their text forms.

A resume point is a low-water mark: the key ``after`` such that every object of the shard up to it is
settled (copied, skipped as present, or failed), with the counts of those objects. A restarted shard
lists after it and starts from those counts, so objects copied before an interruption count as copied,
not as skipped.

Everything read back is untrusted (a tenant can edit ConfigMaps in their namespace; a pod answers what it
likes): every reader bounds the text, checks each field's type and range, and a point outside the shard's
key range is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: S3's longest key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Above any real count of objects or bytes (an exabyte), and exact in a float.
MAX_COUNT = 2**53
#: Longest ledger entry a reader parses: a key of 1,024 bytes escaped as JSON is at most ~6 KiB.
MAX_ENTRY_CHARS = 8 * 1024
#: Ledger keys of resume entries are this prefix and the shard index (a ConfigMap key, a file name when
#: mounted).
RESUME_PREFIX = "resume-"
#: Objects and bytes, each copied, skipped, failed: the order of every count list in the ledger.
COUNT_FIELDS = ("copied", "skipped", "failed")


def resume_key(shard: int) -> str:
    return f"{RESUME_PREFIX}{shard}"


class OutcomeCounts:
    """Objects and bytes by outcome, and their sums: shared by `Checkpoint` and the operator's per-shard
    tally (`operator/accounting.py`), which declare the six fields as dataclasses."""

    copied: int
    skipped: int
    failed: int
    bytes_copied: int
    bytes_skipped: int
    bytes_failed: int

    @property
    def done(self) -> int:
        return self.copied + self.skipped + self.failed

    @property
    def bytes_done(self) -> int:
        return self.bytes_copied + self.bytes_skipped + self.bytes_failed

    def counts(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.copied,
            self.skipped,
            self.failed,
            self.bytes_copied,
            self.bytes_skipped,
            self.bytes_failed,
        )


@dataclass(frozen=True)
class Checkpoint(OutcomeCounts):
    """Every object of the shard with a key up to ``after`` is settled; these are their counts."""

    after: str
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0

    def within(self, start_after: str | None, end: str | None) -> bool:
        """Whether the point lies in the shard's range (keys after ``start_after``, up to ``end``)."""
        return (start_after is None or self.after > start_after) and (end is None or self.after <= end)

    def as_json(self) -> dict[str, Any]:
        """The form in `/status` and termination messages."""
        return {
            "after": self.after,
            "objects": dict(zip(COUNT_FIELDS, self.counts()[:3], strict=True)),
            "bytes": dict(zip(COUNT_FIELDS, self.counts()[3:], strict=True)),
        }


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError("not a count")
    return value


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError("not an S3 key")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # JSON can carry lone surrogates; S3 keys cannot
        raise ValueError("not an S3 key")
    return value


def counts_of(raw: Any) -> tuple[int, int, int, int, int, int] | None:
    """Six counts (objects copied, skipped, failed; the same in bytes), or None if that is not what
    ``raw`` is."""
    if not isinstance(raw, list) or len(raw) != 6:
        return None
    try:
        c, s, f, bc, bs, bf = (_count(v) for v in raw)
    except ValueError:
        return None
    return c, s, f, bc, bs, bf


def from_counts(after: str, counts: Sequence[int]) -> Checkpoint:
    c, s, f, bc, bs, bf = counts
    return Checkpoint(after, c, s, f, bc, bs, bf)


def checkpoint_from_json(raw: Any) -> Checkpoint | None:
    """A checkpoint in its `/status` form, or None when ``raw`` is not one (absent in older workers)."""
    if not isinstance(raw, dict):
        return None
    objects, data = raw.get("objects"), raw.get("bytes")
    if not isinstance(objects, dict) or not isinstance(data, dict):
        return None
    try:
        return from_counts(
            _key(raw.get("after")),
            [_count(objects.get(k, 0)) for k in COUNT_FIELDS]
            + [_count(data.get(k, 0)) for k in COUNT_FIELDS],
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger holds for one unfinished shard: the highest counts the operator has shown for it
    (its floor: objects and bytes copied, skipped, failed) and the shard's latest resume point."""

    floor: tuple[int, int, int, int, int, int] | None
    resume: Checkpoint | None = None

    def text(self) -> str:
        entry: dict[str, Any] = {}
        if self.floor is not None:
            entry["floor"] = list(self.floor)
        if self.resume is not None:
            entry["after"] = self.resume.after
            entry["carried"] = list(self.resume.counts())
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def read_entry(text: Any) -> LedgerEntry:
    """Parse a resume entry of the ledger; each part that is malformed reads as absent."""
    if not isinstance(text, str) or len(text) > MAX_ENTRY_CHARS:
        return LedgerEntry(None)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep, as a forged entry may be
        return LedgerEntry(None)
    if not isinstance(raw, dict):
        return LedgerEntry(None)
    floor = counts_of(raw.get("floor"))
    carried = counts_of(raw.get("carried"))
    resume = None
    if carried is not None:
        try:
            resume = from_counts(_key(raw.get("after")), carried)
        except ValueError:
            resume = None
    return LedgerEntry(floor, resume)


def resume_for(text: Any, start_after: str | None, end: str | None) -> Checkpoint | None:
    """The resume point a worker may use for its shard: from its ledger entry, and only inside the
    shard's key range (a point elsewhere would skip objects of the shard, or count another's)."""
    resume = read_entry(text).resume
    return resume if resume is not None and resume.within(start_after, end) else None
