"""The progress ledger: final counts of finished shards, kept in the owned ConfigMap `<name>-progress`
so they survive pod deletion and operator restarts. Pure encoding.

One short line per shard (a ConfigMap holds at most 1 MiB; 10,000 shards of terabytes each take about
850 KB) plus one
capped sample of failed objects shared by all shards.
"""

from __future__ import annotations

import json
from typing import Any

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
    try:
        failed = list(json.loads(existing.get(FAILED_KEY) or "[]"))
    except ValueError:
        failed = []
    grown = failed + [f for report in new.values() for f in report.failed]
    if len(grown) != len(failed) and len(failed) < FAILED_SAMPLE:
        patch[FAILED_KEY] = json.dumps(grown[:FAILED_SAMPLE])
    return patch
