"""The CopyJob status of spec.versions all: `status.versions` (keys, delete markers copied, diverged
keys), beside `status.objects`, which counts versions. Pure: the shards' checked counters in, status and
ledger entries out; `reconcile.py` reads and writes them.

Where it sits: each worker reports its shard's counters (worker/versionsummary.py, parsed by
`statusdoc.parse_report`); `aggregate.totals` sums them over the shards that report. A finished shard's
pod goes away and its report with it, so the counters of a finished shard are kept in the progress
ledger under `versions-<shard>` (as its object counts are under `<shard>`) and read back each pass:
the status never loses a finished shard's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ferry.worker.statusdoc import WorkerReport
from ferry.worker.versionsummary import MAX_COUNT, VERSION_KEYS

#: The ledger key prefix of a finished shard's counters: `versions-<shard>` = "keys,markers,diverged".
LEDGER_PREFIX = "versions-"


def ledger_key(shard: int) -> str:
    return f"{LEDGER_PREFIX}{shard}"


def ledger_patch(reports: Mapping[int, WorkerReport]) -> dict[str, str]:
    """The ledger entries of newly finished shards that reported version counters."""
    return {
        ledger_key(index): ",".join(str(report.versions.get(name, 0)) for name in VERSION_KEYS)
        for index, report in reports.items()
        if report.versions is not None
    }


def read_ledger(data: Mapping[str, Any], shard_count: int) -> dict[int, dict[str, int]]:
    """The counters of this plan's finished shards in the ledger. The ledger is a ConfigMap the
    namespace's users can edit: a malformed entry, or one of a shard the plan does not have, reads as
    none (the shard then shows no keys, never invented ones)."""
    found: dict[int, dict[str, int]] = {}
    limit = len(str(MAX_COUNT))
    for key, text in data.items():
        name = str(key)
        digits = name[len(LEDGER_PREFIX) :]
        if (
            not name.startswith(LEDGER_PREFIX)
            or not (digits.isascii() and digits.isdigit())
            or len(digits) > 7
        ):
            continue
        index = int(digits)
        fields = str(text).split(",")
        if index >= shard_count or len(fields) != len(VERSION_KEYS):
            continue
        if not all(f.isascii() and f.isdigit() and len(f) <= limit for f in fields):
            continue
        values = [int(f) for f in fields]
        if any(v > MAX_COUNT for v in values):
            continue
        found[index] = dict(zip(VERSION_KEYS, values, strict=True))
    return found


def with_ledger(
    finished: Mapping[int, WorkerReport], kept: Mapping[int, dict[str, int]]
) -> dict[int, WorkerReport]:
    """The finished shards' reports, each read from the ledger given back its kept counters (a report a
    pod just wrote has its own)."""
    return {
        index: replace(report, versions=kept[index]) if report.versions is None and index in kept else report
        for index, report in finished.items()
    }


def versions_status(versions: Mapping[str, int] | None, *, every_version: bool) -> dict[str, Any]:
    """`status.versions` with spec.versions all (zeros until a shard reports); absent otherwise, whatever
    a pod says."""
    if not every_version:
        return {}
    counted = versions or {}
    return {"versions": {name: int(counted.get(name, 0)) for name in VERSION_KEYS}}
