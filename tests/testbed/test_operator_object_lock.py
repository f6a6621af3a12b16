"""`preserve.objectLock` through the operator on the testbed (versitygw keeps Object Lock per object):
a destination without Object Lock stops the CopyJob before anything is copied, with a reason naming the
bucket; one with Object Lock receives every object's retention and legal hold."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.operator import Jobs, condition, spec_for

pytestmark = pytest.mark.timeout(240)


def _buckets(s3: Any, *, destination_lock: bool) -> tuple[str, str]:
    source, destination = f"lsrc-{uuid.uuid4().hex[:10]}", f"ldst-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=source, ObjectLockEnabledForBucket=True)
    s3.create_bucket(Bucket=destination, ObjectLockEnabledForBucket=destination_lock)
    return source, destination


def test_a_destination_without_object_lock_stalls_the_copyjob_naming_the_bucket(
    jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, destination = _buckets(s3, destination_lock=False)
    s3.put_object(Bucket=source, Key="k", Body=b"data", ObjectLockLegalHoldStatus="ON")
    jobs.create(
        "nolock", spec_for(versitygw.endpoint.url, source, destination, preserve={"objectLock": True})
    )
    stalled = condition(jobs.wait_stalled("nolock"), "Stalled")
    assert stalled["reason"] == "ObjectLockNotEnabled", stalled
    assert repr(destination) in stalled["message"] and "preserve.objectLock" in stalled["message"]
    assert s3.list_objects_v2(Bucket=destination).get("KeyCount", 0) == 0


def test_worker_pods_copy_each_object_s_retention_and_legal_hold(jobs: Jobs, s3: Any, versitygw: Any) -> None:
    source, destination = _buckets(s3, destination_lock=True)
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    locks = {
        "governed": {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until},
        "held": {"ObjectLockLegalHoldStatus": "ON"},
        "plain": {},
    }
    for key, lock in locks.items():
        s3.put_object(Bucket=source, Key=key, Body=os.urandom(500), **lock)
    jobs.create("locks", spec_for(versitygw.endpoint.url, source, destination, preserve={"objectLock": True}))
    status = jobs.wait_phase("locks", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    found = {}
    for key in locks:
        head = s3.head_object(Bucket=destination, Key=key)
        until_found = head.get("ObjectLockRetainUntilDate")
        found[key] = (
            head.get("ObjectLockMode"),
            until_found.astimezone(UTC).replace(microsecond=0) if until_found else None,
            head.get("ObjectLockLegalHoldStatus") if head.get("ObjectLockLegalHoldStatus") == "ON" else None,
        )
    assert found == {
        "governed": ("GOVERNANCE", until, None),
        "held": (None, None, "ON"),
        "plain": (None, None, None),
    }
