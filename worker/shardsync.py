"""What one worker pod reports of its shard's side of a sync (`spec.mode: sync`) on the cluster. Pure.

Where it sits: a worker pod of the copy Job counts, after copying its shard, the destination objects in
its shard's key range that the source no longer holds (worker/deleter.py, `SyncSides.census`) and puts
a `ShardCensus` in its termination message (worker/statusdoc.py); the operator adds them up over the
whole job (operator/syncphase.py) before anything is deleted. A pod of the delete Job then puts a
`ShardDeletes` in its own. Both are read back from what a pod wrote, so every field is checked and
bounded: a malformed one reads as no report at all, which deletes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "ALLOWED_ENV",
    "CENSUS_PHASE",
    "DELETED_PREFIX",
    "DELETE_PHASE",
    "EXIT_STOPPED",
    "IGNORED_ENV",
    "MAX_COUNT",
    "MAX_DELETED_TEXT",
    "MAX_STOPPED_PODS",
    "PHASE_ENV",
    "RUN_ENV",
    "DeletedBefore",
    "ShardCensus",
    "ShardDeletes",
    "allowed_for",
    "clean_text",
    "deleted_key",
    "encode_allowed",
    "phase_message",
    "pod_tag",
    "resumed_allowance",
    "shown_key",
]

#: The worker pod's environment variable that names its phase; DELETE_PHASE runs the delete pass.
PHASE_ENV = "FERRY_PHASE"
DELETE_PHASE = "delete"
#: A dry run's census Job: count the shard and name a few of the keys a sync would delete; copy nothing.
CENSUS_PHASE = "census"
#: Keys a census names (a dry run's sample); shrunk further to fit the termination message.
SAMPLE_KEYS = 10
#: Longest key S3 allows, in characters.
MAX_KEY = 1024
#: The delete Job's environment variable with each shard's approved count: ``"<shard>:<count>,..."``,
#: shards with nothing to delete left out.
ALLOWED_ENV = "FERRY_SYNC_ALLOWED"
#: The delete Job's copy-Job uid (`render.COPY_JOB_ANNOTATION`): what the ledger's `DeletedBefore` entries
#: must name to count for this delete Job's pods.
RUN_ENV = "FERRY_SYNC_RUN"
#: Earlier pods of this index that stopped without failing it, as evicted pods are (the Job controller's
#: `batch.kubernetes.io/job-index-ignored-failure-count` annotation, through the downward API; pods a
#: suspension deletes are not counted there).
IGNORED_ENV = "FERRY_INDEX_IGNORED"

#: A census or delete pod stopped by SIGTERM (a suspension, an eviction) before its end: the Job's
#: podFailurePolicy ignores this exit, so the index runs again once the Job may run.
EXIT_STOPPED = 6
#: Most characters of ALLOWED_ENV read (an approved count per shard of the largest plans fits).
MAX_ALLOWED_TEXT = 512 * 1024
#: No bucket holds more objects than this; a larger count is not one a worker makes.
MAX_COUNT = 10**13
#: Characters kept of an error a pod reports.
MAX_ERROR = 300


def _count(value: Any) -> int:
    """A count a pod reported: a non-negative integer up to MAX_COUNT, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"not a count: {value!r}"[:80])
    return value


def clean_text(value: Any, limit: int = MAX_ERROR) -> str | None:
    """A pod's text, bounded and with control characters replaced (it ends up in conditions)."""
    if value is None:
        return None
    text = str(value)[:limit]
    return "".join(c if c.isprintable() else "?" for c in text)


@dataclass(frozen=True, slots=True)
class ShardCensus:
    """One shard's count of a sync: the objects in scope on each side and the destination-only ones."""

    #: Destination objects in the shard's range and in scope that the source no longer holds.
    candidates: int
    #: Destination objects in the shard's range and in scope (the base of a percentage deletes.max).
    destination_in_scope: int
    #: Source objects in the shard's range that spec.filter accepts (an empty source deletes nothing).
    source_in_scope: int
    #: Both listings of the range ran to their end.
    listing_complete: bool
    #: Why a listing broke off.
    error: str | None = None
    #: A dry run's census: the first destination keys a sync would delete (at most SAMPLE_KEYS).
    sample: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "destinationInScope": self.destination_in_scope,
            "sourceInScope": self.source_in_scope,
            "listingComplete": self.listing_complete,
            **({"error": self.error} if self.error else {}),
            **({"sample": list(self.sample)} if self.sample else {}),
        }

    @classmethod
    def from_json(cls, raw: Any) -> ShardCensus | None:
        """The census a pod wrote; None when absent or malformed."""
        if not isinstance(raw, dict):
            return None
        try:
            complete = raw["listingComplete"]
            if not isinstance(complete, bool):
                return None
            census = cls(
                candidates=_count(raw["candidates"]),
                destination_in_scope=_count(raw["destinationInScope"]),
                source_in_scope=_count(raw["sourceInScope"]),
                listing_complete=complete,
                error=clean_text(raw.get("error")),
                sample=_sample(raw.get("sample")),
            )
        except (KeyError, ValueError):
            return None
        # Candidates are destination objects in scope: more of them than that is not a true count.
        return census if census.candidates <= census.destination_in_scope else None


@dataclass(frozen=True, slots=True)
class ShardDeletes:
    """What the delete pass of one shard did."""

    deleted: int
    #: Candidates the source held again when re-checked just before their delete: kept.
    kept: int
    failed: int
    #: Why the pass stopped early (a listing that kept failing, more candidates than allowed).
    error: str | None = None
    #: The pod was stopped (SIGTERM: the CopyJob suspended, an eviction) before the end of its range:
    #: what it deleted counts, and the shard's next pod deletes at most what is left of its count.
    stopped: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "kept": self.kept,
            "failed": self.failed,
            **({"error": self.error} if self.error else {}),
            **({"stopped": True} if self.stopped else {}),
        }

    @classmethod
    def from_json(cls, raw: Any) -> ShardDeletes | None:
        if not isinstance(raw, dict):
            return None
        stopped = raw.get("stopped", False)
        if not isinstance(stopped, bool):
            return None
        try:
            return cls(
                deleted=_count(raw["deleted"]),
                kept=_count(raw["kept"]),
                failed=_count(raw["failed"]),
                error=clean_text(raw.get("error")),
                stopped=stopped,
            )
        except (KeyError, ValueError):
            return None


#: The progress ledger's entry of what the stopped pods of one shard's delete pass deleted:
#: `deleted-<shard>` = ``<copy Job uid>,<deleted>,<kept>,<failed>,<pod>.<pod>...`` (each pod a short
#: hash of its uid, so that a pod read in several passes counts once).
DELETED_PREFIX = "deleted-"
#: Stopped pods an entry names (one per suspension of the shard's pass); older ones are dropped.
MAX_STOPPED_PODS = 32
#: Longest entry Ferry writes: a uid, three counts, the pods' tags.
MAX_DELETED_TEXT = 64 + 3 * 15 + MAX_STOPPED_PODS * 11 + 4


def deleted_key(index: int) -> str:
    return f"{DELETED_PREFIX}{index}"


def pod_tag(uid: str) -> str:
    """A stopped pod as a ledger entry names it."""
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class DeletedBefore:
    """What the stopped pods of one shard's delete pass deleted, as the operator recorded it in the
    progress ledger (from each pod's last `/status` answer or termination message) for the delete Job of
    copy Job ``run``. The shard's next pod deletes at most its approved count less ``deleted``."""

    run: str
    deleted: int
    kept: int
    failed: int
    #: The stopped pods counted (`pod_tag`), oldest first.
    pods: tuple[str, ...] = ()

    def text(self) -> str:
        return f"{self.run},{self.deleted},{self.kept},{self.failed},{'.'.join(self.pods)}"

    @classmethod
    def parse(cls, text: str | None) -> DeletedBefore | None:
        """The entry as written; None when absent or not one Ferry writes (the ledger is a ConfigMap the
        namespace's users can edit: bounded and checked)."""
        if not text or len(text) > MAX_DELETED_TEXT:
            return None
        fields = text.strip().split(",")
        # The run is a Kubernetes uid: hex digits and dashes.
        if len(fields) != 5 or not 0 < len(fields[0]) <= 64 or set(fields[0]) - set("0123456789abcdef-"):
            return None
        if not all(_digits(field, 14) for field in fields[1:4]):
            return None
        pods = tuple(fields[4].split(".")) if fields[4] else ()
        if len(pods) > MAX_STOPPED_PODS or any(
            len(p) != 10 or set(p) - set("0123456789abcdef") for p in pods
        ):
            return None
        deleted, kept, failed = (int(field) for field in fields[1:4])
        if max(deleted, kept, failed) > MAX_COUNT:
            return None
        return cls(fields[0], deleted, kept, failed, pods)

    def counts(self) -> ShardDeletes:
        return ShardDeletes(self.deleted, self.kept, self.failed)


def encode_allowed(allowed: dict[int, int]) -> str:
    """Each shard's approved count as ALLOWED_ENV carries it (shards allowed nothing left out)."""
    return ",".join(f"{shard}:{count}" for shard, count in sorted(allowed.items()) if count > 0)


def allowed_for(text: str | None, shard: int) -> int:
    """The count ``shard`` may delete by ALLOWED_ENV; 0 (delete nothing) when absent or malformed."""
    if not text or len(text) > MAX_ALLOWED_TEXT:
        return 0
    for part in text.split(","):
        index, _, count = part.partition(":")
        if _digits(index, 7) and _digits(count, 14) and int(index) == shard:
            return min(int(count), MAX_COUNT)
    return 0


def _digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _sample(value: Any) -> tuple[str, ...]:
    """A census's sample of keys: a short list of strings of a key's length; anything else is none."""
    if not isinstance(value, list) or len(value) > SAMPLE_KEYS:
        return ()
    if not all(isinstance(key, str) and 0 < len(key) <= MAX_KEY for key in value):
        return ()
    return tuple(value)


def shown_key(key: str) -> str:
    """A key as status shows it: control and other unprintable characters escaped (\\xNN, \\uNNNN), so
    a key cannot rewrite a terminal or forge a line; bounded to a key's length."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in key[:MAX_KEY])


def phase_message(
    format_: str, shard: int, phase: str, result: ShardCensus | ShardDeletes, limit: int = 4096
) -> str:
    """The termination message of a census or delete pod: its result, the sample shrunk to fit."""
    state = (
        ("complete" if result.listing_complete else "incomplete")
        if isinstance(result, ShardCensus)
        else (
            "stopped"
            if result.stopped
            else ("complete" if result.error is None and not result.failed else "incomplete")
        )
    )
    field = "sync" if isinstance(result, ShardCensus) else "deletes"
    while True:
        document = {
            "format": format_,
            "shard": shard,
            "state": state,
            "phase": phase,
            field: result.as_json(),
        }
        text = json.dumps(document, separators=(",", ":"))
        if len(text.encode()) <= limit or not isinstance(result, ShardCensus) or not result.sample:
            return text
        result = replace(result, sample=result.sample[:-1])


def resumed_allowance(
    allowed: int, run: str, evicted_before: int, before: DeletedBefore | None
) -> tuple[int, str | None]:
    """What one pod of a shard's delete pass may delete: its approved count ``allowed`` less what the
    shard's earlier, stopped pods deleted (``before``, as the ledger records it for delete Job ``run``).

    The operator resumes a suspended delete Job only once every stopped pod's count is recorded. An
    evicted pod, though, is replaced at once: ``evicted_before`` is how many earlier pods of the index
    the Job controller ignored as stopped; when the ledger names fewer stopped pods than that, what they
    deleted is not known and nothing is deleted (0, with the reason), so no pass goes past the count."""
    recorded = before if before is not None and before.run == run else None
    known = len(recorded.pods) if recorded else 0
    if evicted_before <= known or (recorded is not None and known >= MAX_STOPPED_PODS):
        return max(0, allowed - (recorded.deleted if recorded else 0)), None
    return 0, (
        f"{evicted_before} earlier pod(s) of this shard were stopped and the ledger records what "
        f"{known} of them deleted; nothing more deleted; run the job again"
    )
