"""The preflight check `spec.preserve.objectLock` adds: the destination bucket has Object Lock enabled.

Run beside the location checks (preflight.py) by `ferry run`, the planner pod and every worker pod,
before any object is copied: without it, every object that has a lock at the source would fail alone
with the same refusal, and the others would be copied unlocked.
"""

from __future__ import annotations

import logging
from typing import Any

from ferry.errors import PreflightError
from ferry.model import CopyJobSpec
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry

log = logging.getLogger(__name__)

#: The reason (and condition reason) of a destination that cannot hold the locks.
REASON = "ObjectLockNotEnabled"
#: The answers that mean "no Object Lock on this bucket" (AWS, moto, versitygw say the first).
_NOT_ENABLED = frozenset({"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"})


def check_destination_lock(client: Any, spec: CopyJobSpec, policy: RetryPolicy | None = None) -> None:
    """Raise `PreflightError` when `preserve.objectLock` is set and the destination bucket has no Object
    Lock. An answer that says neither (access denied to GetObjectLockConfiguration, a server without
    the call) lets the copy start: each write that names a lock is then refused or accepted by the
    destination itself, and a refused object is reported as failed."""
    if not spec.preserve.object_lock:
        return
    bucket = spec.destination.bucket
    endpoint = spec.destination.endpoint or "AWS S3"
    policy = policy or RetryPolicy(max_attempts=3, base_seconds=0.2)
    try:
        answer = call_with_retry(lambda: client.get_object_lock_configuration(Bucket=bucket), policy)
    except RetriesExhausted as exc:
        if exc.last.code not in _NOT_ENABLED:
            log.warning(
                "could not read the Object Lock configuration of bucket %r (%s); each write will tell",
                bucket,
                exc.last.code,
            )
            return
        answer = {}
    enabled = (answer.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"
    if not enabled:
        raise PreflightError(
            f"spec.preserve.objectLock: bucket {bucket!r} at {endpoint} does not have Object Lock enabled, "
            "so the source's retention and legal holds cannot be kept; copy into a bucket created with "
            "Object Lock enabled (or enable it on this one), or set preserve.objectLock: false",
            reason=REASON,
        )
