"""Before a spec.versions all copy starts: the destination bucket must keep versions.

Where it sits: `ferry run` (worker/run.py) and the worker pods call `check_destination_versioning` after
the locations' preflight. Copying a history into a bucket without versioning would leave only the last
version of each key, and a copied delete marker would delete the object, so the run is refused with the
bucket's name and what to do (exit 2, reason `DestinationNotVersioned`).

The source needs no versioning: a bucket that never had it lists each object once, with the version id
"null", and that one version is copied (with its id recorded like any other).
"""

from __future__ import annotations

from typing import Any

from ferry.errors import PreflightError
from ferry.model import CopyJobSpec
from ferry.model.copyjob import Versions
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry

#: The reason of the refusal (a condition's reason, the JSON error document's `reason`).
REASON = "DestinationNotVersioned"


def check_destination_versioning(client: Any, spec: CopyJobSpec, policy: RetryPolicy | None = None) -> None:
    """Raise `PreflightError` when spec.versions is all and the destination bucket's versioning is not
    Enabled (never enabled, or suspended), or cannot be read."""
    if spec.versions is not Versions.ALL:
        return
    bucket = spec.destination.bucket
    endpoint = spec.destination.endpoint or "AWS S3"
    policy = policy or RetryPolicy(max_attempts=3, base_seconds=0.2)
    try:
        answer = call_with_retry(lambda: client.get_bucket_versioning(Bucket=bucket), policy)
    except RetriesExhausted as exc:
        raise PreflightError(
            f"spec.versions: the versioning of bucket {bucket!r} at {endpoint} could not be read "
            f"({exc.last.code}); grant s3:GetBucketVersioning to the credentials of spec.destination",
            reason=REASON,
        ) from exc
    status = answer.get("Status")
    if status != "Enabled":
        state = "suspended" if status == "Suspended" else "not enabled"
        raise PreflightError(
            f"spec.versions: versioning of bucket {bucket!r} at {endpoint} is {state}, so it cannot keep the "
            "source's version histories; enable it (aws s3api put-bucket-versioning --bucket "
            f"{bucket} --versioning-configuration Status=Enabled), or set versions: current",
            reason=REASON,
        )
