"""Planning a CopyJob from its manifest: no listing of the source, one pass over `spec.source.manifest` when
its rows come in key order, two when they do not.

Where it sits: the planner (`ferry planner`, and `ferry plan`/`dryRun`) calls `scan_manifest` instead of
listing when the spec names a manifest. The manifest is read in batches (`manifestio.manifest_batches`).
While its keys come in key order they feed the listing's own `operator.planning.Planner`
(`manifestplan.InOrderPass`), so the plan is the one a sequential listing of the same objects gives, from
one read. Alongside, `manifestplan.FirstPass` keeps the histogram and key samples; if a key comes out of
order, the manifest is read a second time into `manifestplan.SecondPass` (exact counts per sampled piece).

Whether a manifest is in key order is found out, never assumed. AWS documents no row order for S3 Inventory
reports: the user guide's "Amazon S3 Inventory list" section lists the columns and the data files of a
report, and says nothing of how rows are ordered within a file or across files. A key list written by
`sort` or by a listing is in order; one written by a parallel job usually is not.

The result is the same `PlanResult` a listing gives, in the same `scan.Scan`, its pieces merged as the
listing's are to fit the plan ConfigMap, so the operator validates it and cuts shards as it does for a
listing. The destination is not read here: workers compare it by listing their ranges, as always.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ferry.model import CopyJobSpec
from ferry.operator.planning import Planner, piece_targets
from ferry.operator.planresult import PlanResult
from ferry.operator.render import fit_shards, shards_budget
from ferry.worker.manifest import ManifestError
from ferry.worker.manifestio import Call, describe, manifest_batches
from ferry.worker.scan import Scan

#: Objects between two progress reports (at batch granularity).
PROGRESS_OBJECTS = 10_000


class ManifestTooLarge(ManifestError):
    """The manifest names more objects than the platform allows one CopyJob."""


def scan_manifest(
    spec: CopyJobSpec,
    client: Any,
    *,
    call: Call | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_objects: int | None = None,
    destination_checked: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> Scan:
    """Plan from the manifest, in one pass when its keys come in key order, else in two.
    ``progress(objects, bytes)`` hears the first pass about every `PROGRESS_OBJECTS` objects;
    ``max_objects`` is the platform's cap (ManifestTooLarge above it). Raises ManifestError."""
    # NumPy and Arrow (about 50 MiB) load only in a planner that reads a manifest, not in one that lists.
    from ferry.worker.manifestplan import FirstPass, InOrderPass, SecondPass

    started = clock()
    requests = 0
    wrapped = call or (lambda request: request())

    def counted(request: Callable[[], Any]) -> Any:
        nonlocal requests
        requests += 1
        return wrapped(request)

    # Pieces no larger than the user's shard bounds, as the listing planner keeps them (`scan.scan`).
    piece_objects, piece_bytes = piece_targets(spec.shard_size.max_objects, spec.shard_size.max_bytes)
    first = FirstPass()
    ordered = InOrderPass(Planner(piece_objects=piece_objects, piece_bytes=piece_bytes))
    reported = 0
    for batch in manifest_batches(spec, client, counted):
        first.add(batch)
        ordered.add(batch)
        if max_objects is not None and first.objects > max_objects:
            raise ManifestTooLarge(
                f"{describe(spec.source.manifest)}: more than {max_objects} objects, the most one CopyJob "  # type: ignore[arg-type]
                "may copy here; split it by source.prefix or filter"
            )
        if progress is not None and first.objects - reported >= PROGRESS_OBJECTS:
            reported = first.objects
            progress(first.objects, first.bytes)
    if ordered.planner is not None:
        histogram, pieces = ordered.planner.histogram(), ordered.planner.pieces()
    else:
        second = SecondPass(first.boundaries(piece_objects, piece_bytes))
        for batch in manifest_batches(spec, client, counted):
            second.add(batch)
        if second.objects != first.objects:
            raise ManifestError(
                f"{describe(spec.source.manifest)}: {first.objects} objects on the first read, "  # type: ignore[arg-type]
                f"{second.objects} on the second; the manifest changed while it was read, plan again"
            )
        histogram, pieces = first.histogram(), second.pieces()
    if progress is not None:
        progress(first.objects, first.bytes)
    result = PlanResult(
        histogram,
        # Merged until shards cut from them fit beside the spec in the plan ConfigMap, as a listing's are.
        tuple(fit_shards(pieces, shards_budget(spec))),
        datetime.now(UTC).replace(microsecond=0),
        destination_checked=destination_checked,
    )
    # list_requests: GETs of the manifest's files (per pass), where a listing counts ListObjectsV2 calls.
    return Scan(result, requests, None, clock() - started)
