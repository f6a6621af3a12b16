"""Where a plan's objects come from: the source's listing, or the manifest the spec names.

Where it sits: the planner pod (`planpod.plan`) and `ferry plan` (`plancmd`) call `plan_source`, which
lists the source in parallel (`scan.scan`) or, when `spec.source.manifest` is set, reads the manifest in
two passes (`manifestscan.scan_manifest`). Either way the caller gets one `scan.Scan` and one error type,
`scan.PlanningStopped`, so the planner's failure document and `ferry plan`'s exit codes are the same for
both inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ferry.model import CopyJobSpec
from ferry.worker.manifest import ManifestError
from ferry.worker.manifestio import manifest_retryable
from ferry.worker.manifestscan import ManifestTooLarge, scan_manifest
from ferry.worker.parallel_listing import ListingCounts
from ferry.worker.retry import call_with_retry
from ferry.worker.scan import (
    DEFAULT_LISTERS,
    LISTING_RETRY,
    ListingTracker,
    PlanningStopped,
    Scan,
    scan,
)


def plan_source(
    spec: CopyJobSpec,
    source: Any,
    *,
    destination: Any | None = None,
    listers: int = DEFAULT_LISTERS,
    deadline_seconds: float | None = None,
    max_objects: int | None = None,
    tracker: ListingTracker | None = None,
    clock: Callable[[], float] = time.monotonic,
    part: tuple[int, int] | None = None,
) -> Scan:
    """The plan's histogram and pieces, from the listing or the manifest. Raises PlanningStopped.

    ``part`` divides a listing over several planner pods (`scan`); a manifest is read by one pod whole,
    so it is ignored there.

    A manifest replaces the source listing only: the destination is compared by the workers as usual,
    so ``destination`` is not read (the Scan's ``existing`` is None)."""
    if spec.source.manifest is None:
        return scan(
            spec,
            source,
            destination=destination,
            listers=listers,
            deadline_seconds=deadline_seconds,
            max_objects=max_objects,
            tracker=tracker,
            clock=clock,
            part=part,
        )
    tracker = tracker or ListingTracker(clock)
    tracker.start()

    def progress(objects: int, size: int) -> None:
        tracker.record(ListingCounts(objects, objects, size, 1, 0, 1, 0, 0))

    try:
        return scan_manifest(
            spec,
            source,
            call=lambda request: call_with_retry(request, LISTING_RETRY),
            progress=progress,
            max_objects=max_objects,
            clock=clock,
        )
    except ManifestTooLarge as exc:
        raise PlanningStopped("TooManyObjects", str(exc)) from exc
    except ManifestError as exc:
        transient = manifest_retryable(exc)
        reason = "ManifestUnreadable" if transient else "ManifestInvalid"
        raise PlanningStopped(reason, str(exc), retry=transient) from exc
