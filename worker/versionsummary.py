"""How a run with spec.versions all tells what it did beyond its version counts: keys, delete markers
copied and diverged keys, in a worker's `/status` document and termination message, and read back by
the operator. Pure: counts in, JSON out, and JSON (which a pod may have written) in, checked counts out.

Where it sits: `worker/versionrun.py` counts (`VersionCounts`); `worker/statusdoc.py` renders them with
`versions_report` and parses them with `versions_from_json`; `operator/aggregate.py` sums the shards'
and `operator/reconcile.py` writes them to `status.versions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferry.worker.versionrun import VersionCounts

#: The counters a worker reports, by the names `ferry run`'s summary and the CopyJob status use.
VERSION_KEYS = ("keys", "deleteMarkersCopied", "divergedKeys")
#: A count above this is not one a worker makes; it counts as none.
MAX_COUNT = 10**12


def versions_json(counts: VersionCounts) -> dict[str, int]:
    return {
        "keys": counts.keys,
        "deleteMarkersCopied": counts.delete_markers_copied,
        "divergedKeys": counts.diverged_keys,
    }


def versions_report(counts: VersionCounts | None) -> dict[str, Any]:
    """The `versions` part of a worker's report: absent when the run copies current versions only, so
    the message stays as short as before; present (zeros included) with spec.versions all."""
    return {"versions": versions_json(counts)} if counts is not None else {}


def versions_from_json(value: Any) -> dict[str, int] | None:
    """A worker's `versions` counters as checked values: the known names only, each a non-negative
    integer up to MAX_COUNT (anything else counts as 0); None when there is no such object."""
    if not isinstance(value, dict):
        return None
    checked: dict[str, int] = {}
    for name in VERSION_KEYS:
        count = value.get(name)
        ok = isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_COUNT
        checked[name] = count if ok and isinstance(count, int) else 0
    return checked


def sum_versions(total: dict[str, int] | None, shard: dict[str, int] | None) -> dict[str, int] | None:
    """The job's counters so far plus one shard's (None: no shard reported any)."""
    if shard is None:
        return total
    if total is None:
        return dict(shard)
    return {name: total.get(name, 0) + shard.get(name, 0) for name in VERSION_KEYS}
