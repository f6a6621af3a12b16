"""A worker pod's part of a sync (`spec.mode: sync`) on the cluster: the census of its shard after the
copy, and the delete pass of the delete Job. The thin S3 side over worker/deleter.py.

Where it sits: worker/pod.py calls `shard_census` once its shard copied completely without failures
(the census goes into its termination message), and `delete_shard` instead of the copy when the pod
belongs to the delete Job the operator starts once it approved the deletes over the whole job
(operator/syncphase.py). A delete pass lists its range again, re-checks each candidate at the source
just before deleting it, and never deletes more than the count the operator approved for the shard.
"""

from __future__ import annotations

import threading
from typing import Any

from ferry.model import CopyJobSpec
from ferry.worker.deleter import SyncSides
from ferry.worker.objects import KeyRange
from ferry.worker.shardsync import ShardCensus, ShardDeletes, clean_text

__all__ = ["delete_shard", "shard_census"]


def shard_census(
    spec: CopyJobSpec,
    source: Any,
    destination: Any,
    key_range: KeyRange,
    sample: int = 0,
    stop: threading.Event | None = None,
) -> ShardCensus:
    """Count the shard's range on both sides: what is in scope and what the source no longer holds
    (with ``sample``, the first so many keys a sync would delete, for a dry run). Stopped (``stop``
    set), the count is incomplete."""
    found = SyncSides(spec, source, destination, key_range=key_range).census(sample=sample, stop=stop)
    census = found.census
    return ShardCensus(
        candidates=census.candidates,
        destination_in_scope=census.destination_objects,
        source_in_scope=census.source_objects,
        listing_complete=census.complete,
        error=clean_text(found.error),
        sample=found.sample[:sample],
    )


def delete_shard(
    spec: CopyJobSpec,
    source: Any,
    destination: Any,
    key_range: KeyRange,
    allowed: int,
    stop: threading.Event | None = None,
) -> ShardDeletes:
    """Delete the shard's destination-only objects, at most ``allowed`` (0: list nothing, delete nothing).
    Stopped (``stop`` set) before the end of the range, the result says so and counts what was deleted."""
    if allowed <= 0:
        return ShardDeletes(0, 0, 0)
    result = SyncSides(spec, source, destination, key_range=key_range).delete(allowed, stop)
    return ShardDeletes(
        result.deleted, result.kept, result.failed, clean_text(result.error), stopped=result.stopped
    )
