"""The progress ledger: final counts of finished shards, and the floor and resume point of every
unfinished one, kept in the owned ConfigMap `<name>-progress` so they survive pod deletion and operator
restarts. Pure encoding.

One short line per finished shard (a ConfigMap holds at most 1 MiB; 10,000 shards of terabytes each take
about 850 KB), one capped sample of failed objects shared by all shards, and one `resume-<shard>` entry
per started, unfinished shard (`ferry.model.checkpoint.LedgerEntry`: the highest counts shown for it and
its latest resume point, a key of at most 1 KiB). A shard waiting for restores of archived objects also
has a `restore-<shard>` entry (`restorewait.py`: when its oldest restore was requested, and how many
objects wait), removed once it finishes. The ledger is mounted read-only into worker pods,
where a new pod of a shard reads its resume point. Its contents are read as untrusted (the namespace's
users can edit it): bounded, schema-checked, and a resume point outside its shard's range is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ferry.model.checkpoint import RESUME_PREFIX, Checkpoint, LedgerEntry, read_entry, resume_key
from ferry.model.plan import Shard
from ferry.operator.accounting import ShardCount, Tally
from ferry.worker.shardsync import ShardCensus
from ferry.worker.statusdoc import WorkerReport

FAILED_KEY = "failed"
FAILED_SAMPLE = 20
_OBJECT_FIELDS = ("total", "copied", "skipped", "failed")


def encode(report: WorkerReport) -> str:
    """Nine integers: objects total, copied, skipped, failed; the same in bytes; peak memory in KiB."""
    values = [
        *(report.objects.get(k, 0) for k in _OBJECT_FIELDS),
        *(report.bytes.get(k, 0) for k in _OBJECT_FIELDS),
    ]
    # The peak carries a "c" when the cgroup measured it (what the kernel compares with the limit).
    peak = f"{(report.rss_bytes or 0) // 1024}{'c' if report.peak_source == 'cgroup' else ''}"
    return ",".join([*(str(int(v)) for v in values), peak])


def decode(shard: int, text: str, failed: list[dict[str, Any]] | None = None) -> WorkerReport | None:
    fields = text.split(",")
    cgroup = fields[-1].endswith("c")
    if cgroup:
        fields[-1] = fields[-1][:-1]
    try:
        values = [int(v) for v in fields]
    except ValueError:
        return None
    if len(values) != 9:
        return None
    objects = dict(zip(_OBJECT_FIELDS, values[:4], strict=True))
    data = dict(zip(_OBJECT_FIELDS, values[4:8], strict=True))
    rss = values[8] * 1024
    objects["pending"] = 0
    return WorkerReport(
        shard=shard,
        state="complete",
        objects=objects,
        bytes=data,
        objects_per_second=0.0,
        bytes_per_second=0.0,
        concurrency=0,
        in_flight=0,
        reason="",
        rss_bytes=rss or None,
        failed=list(failed or []),
        error=None,
        peak_source=("cgroup" if cgroup else "rss") if rss else None,
    )


def read(data: dict[str, str]) -> dict[int, WorkerReport]:
    """All finished shards in a ledger ConfigMap's data; the failure sample rides on the first one."""
    try:
        failed = list(json.loads(data.get(FAILED_KEY) or "[]"))
    except ValueError:
        failed = []
    result: dict[int, WorkerReport] = {}
    for key, text in sorted(data.items()):
        if key.isdigit() and (report := decode(int(key), text)) is not None:
            result[int(key)] = report
    if result and failed:
        first = min(result)
        result[first] = WorkerReport(**{**result[first].__dict__, "failed": failed})
    return result


def additions(new: dict[int, WorkerReport], existing: dict[str, str]) -> dict[str, str]:
    """The ConfigMap data to merge for newly finished shards (and the grown failure sample)."""
    patch = {str(index): encode(report) for index, report in new.items()}
    # spec.mode sync: each shard's census, which the decision over the whole job adds up (syncphase.py).
    patch.update({sync_key(i): encode_census(r.sync) for i, r in new.items() if r.sync is not None})
    try:
        failed = list(json.loads(existing.get(FAILED_KEY) or "[]"))
    except ValueError:
        failed = []
    grown = failed + [f for report in new.values() for f in report.failed]
    if len(grown) != len(failed) and len(failed) < FAILED_SAMPLE:
        patch[FAILED_KEY] = json.dumps(grown[:FAILED_SAMPLE])
    return patch


#: A sync's per-shard census: `sync-<shard>` = candidates, destination in scope, source in scope, complete.
SYNC_PREFIX = "sync-"


def sync_key(index: int) -> str:
    return f"{SYNC_PREFIX}{index}"


def encode_census(census: ShardCensus) -> str:
    return ",".join(
        str(v)
        for v in (
            census.candidates,
            census.destination_in_scope,
            census.source_in_scope,
            int(census.listing_complete),
        )
    )


def read_sync(data: Mapping[str, Any], shard_count: int) -> dict[int, ShardCensus]:
    """The censuses of this plan's shards in the ledger; malformed entries (the ledger is editable by
    the namespace's users) read as none, which deletes nothing."""
    found: dict[int, ShardCensus] = {}
    for key, text in data.items():
        digits = str(key)[len(SYNC_PREFIX) :]
        if (
            not str(key).startswith(SYNC_PREFIX)
            or not (digits.isascii() and digits.isdigit())
            or len(digits) > 7
        ):
            continue
        index = int(digits)
        fields = str(text).split(",")
        if index >= shard_count or len(fields) != 4 or fields[3] not in ("0", "1"):
            continue
        if not all(f.isascii() and f.isdigit() and len(f) <= 14 for f in fields[:3]):
            continue
        census = ShardCensus.from_json(
            {
                "candidates": int(fields[0]),
                "destinationInScope": int(fields[1]),
                "sourceInScope": int(fields[2]),
                "listingComplete": fields[3] == "1",
            }
        )
        if census is not None:
            found[index] = census
    return found


#: Most the ledger's data may take (keys and values): a ConfigMap holds 1 MiB; the rest is headroom for
#: the finished lines and the failure sample written in the same patch.
LEDGER_BYTES = 1024 * 1024 - 32 * 1024


def _shard_of(key: str, shard_count: int) -> int | None:
    digits = key[len(RESUME_PREFIX) :]
    if not key.startswith(RESUME_PREFIX) or not digits.isdigit() or len(digits) > 7:
        return None
    index = int(digits)
    return index if index < shard_count else None


def entries(data: Mapping[str, Any], shard_count: int) -> dict[int, LedgerEntry]:
    """The resume entries of shards of this plan (others, and malformed parts, are ignored)."""
    found: dict[int, LedgerEntry] = {}
    for key, text in data.items():
        index = _shard_of(str(key), shard_count)
        if index is not None:
            found[index] = read_entry(text)
    return found


def floors(data: Mapping[str, Any], shard_count: int) -> dict[int, Tally]:
    """The highest counts shown for each unfinished shard: no later pass shows less."""
    return {i: Tally.of(e.floor) for i, e in entries(data, shard_count).items() if e.floor is not None}


def _size(data: Mapping[str, Any]) -> int:
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in data.items() if v is not None)


def _further(candidate: Checkpoint | None, current: Checkpoint | None, shard: Shard) -> Checkpoint | None:
    """The resume point to keep: a new one only inside the shard's range and past the current one (a
    late answer of an older pod never moves it back)."""
    if current is not None and not current.within(shard.start_after, shard.end):
        current = None
    if candidate is None or not candidate.within(shard.start_after, shard.end):
        return current
    return candidate if current is None or candidate.after > current.after else current


def progress_patch(
    shards: Sequence[Shard],
    shown: Mapping[int, ShardCount],
    finished: Mapping[int, WorkerReport],
    reports: Mapping[int, WorkerReport],
    data: Mapping[str, Any],
) -> dict[str, str | None]:
    """The ConfigMap data to merge after a pass (None removes a key):

    - a finished shard that had an entry gets its line rewritten with the counts shown for it (its
      worker's own report may count as skipped what an earlier pod copied) and loses its entry;
    - every other shard shown with counts gets its floor and the furthest resume point its pods
      reported (``reports``: this pass's answers), within the ledger's size limit.
    """
    existing = entries(data, len(shards))
    patch: dict[str, str | None] = {}
    for index, report in finished.items():
        key = resume_key(index)
        if key not in data:
            continue
        patch[key] = None
        count = shown.get(index)
        if count is not None:
            tally = count.tally
            patch[str(index)] = encode(
                replace(
                    report,
                    objects={
                        "total": count.total,
                        "copied": tally.copied,
                        "skipped": tally.skipped,
                        "failed": tally.failed,
                    },
                    bytes={
                        "total": count.bytes_total,
                        "copied": tally.bytes_copied,
                        "skipped": tally.bytes_skipped,
                        "failed": tally.bytes_failed,
                    },
                )
            )
    size = _size({**data, **patch})
    for index in sorted(shown):
        if index in finished or index >= len(shards):
            continue
        key = resume_key(index)
        before = existing.get(index, LedgerEntry(None))
        answer = reports.get(index)
        resume = _further(answer.resume if answer else None, before.resume, shards[index])
        text = LedgerEntry(shown[index].tally.counts(), resume).text()
        old = data.get(key)
        if text == old:
            continue
        grown = len(text.encode()) + (len(key) if old is None else -len(str(old).encode()))
        if size + grown > LEDGER_BYTES:
            continue  # full: the entry keeps its older floor and resume point, still true, only older
        patch[key] = text
        size += grown
    return patch
