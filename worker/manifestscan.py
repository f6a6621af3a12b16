"""Planning a CopyJob from its manifest: two passes over `spec.source.manifest`, no listing of the source.

Where it sits: the planner (`ferry planner`, and `ferry plan`/`dryRun`) calls `scan_manifest` instead of
listing when the spec names a manifest. Pass one feeds `manifestplan.FirstPass` (histogram and key
samples), pass two `manifestplan.SecondPass` (exact counts per piece); the result is the same
`PlanResult` a listing gives, in the same `scan.Scan`, so the operator validates it and cuts shards as it
does for a listing. The
destination is not read here: workers compare it by listing their ranges, as always.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ferry.model import CopyJobSpec
from ferry.operator.planresult import PlanResult
from ferry.worker.manifest import ManifestError
from ferry.worker.manifestio import Call, describe, manifest_objects
from ferry.worker.manifestplan import FirstPass, SecondPass
from ferry.worker.scan import Scan


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
    """Plan from the manifest in two passes. ``progress(objects, bytes)`` hears pass one every 10,000
    objects; ``max_objects`` is the platform's cap (ManifestTooLarge above it). Raises ManifestError."""
    started = clock()
    requests = 0
    wrapped = call or (lambda request: request())

    def counted(request: Callable[[], Any]) -> Any:
        nonlocal requests
        requests += 1
        return wrapped(request)

    # Pieces no larger than the user's shard bounds, as the listing planner keeps them.
    piece_objects = min(1000, spec.shard_size.max_objects or 1000)
    piece_bytes = min(2**30, spec.shard_size.max_bytes or 2**30)
    first = FirstPass()
    total_bytes = 0
    for obj in manifest_objects(spec, client, counted):
        first.add(obj.key, obj.size)
        total_bytes += obj.size
        if max_objects is not None and first.objects > max_objects:
            raise ManifestTooLarge(
                f"{describe(spec.source.manifest)}: more than {max_objects} objects, the most one CopyJob "  # type: ignore[arg-type]
                "may copy here; split it by source.prefix or filter"
            )
        if progress is not None and first.objects % 10_000 == 0:
            progress(first.objects, total_bytes)
    second = SecondPass(first.boundaries(piece_objects, piece_bytes))
    for obj in manifest_objects(spec, client, counted):
        second.add(obj.key, obj.size)
    if second.objects != first.objects:
        raise ManifestError(
            f"{describe(spec.source.manifest)}: {first.objects} objects on the first read, "  # type: ignore[arg-type]
            f"{second.objects} on the second; the manifest changed while it was read, plan again"
        )
    if progress is not None:
        progress(first.objects, total_bytes)
    result = PlanResult(
        first.histogram(),
        tuple(second.pieces()),
        datetime.now(UTC).replace(microsecond=0),
        destination_checked=destination_checked,
    )
    # list_requests: GETs of the manifest's files (both passes), where a listing counts ListObjectsV2 calls.
    return Scan(result, requests, None, clock() - started)
