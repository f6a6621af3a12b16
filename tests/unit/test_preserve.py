"""The write arguments a CopyJob adds beside the data (worker/preserve.py), and the spec rules that go
with them (ferry/model/copyjob.py): table-driven, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.model.copyjob import Destination
from ferry.worker import preserve

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)

#: name -> (source head, expected write arguments, expected reason fragment or None)
LOCKS: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {
    "no-lock": ({}, {}, None),
    "governance": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": LATER},
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": LATER},
        None,
    ),
    "compliance-with-legal-hold": (
        {
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": LATER,
            "ObjectLockLegalHoldStatus": "ON",
        },
        {
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": LATER,
            "ObjectLockLegalHoldStatus": "ON",
        },
        None,
    ),
    "legal-hold-only": ({"ObjectLockLegalHoldStatus": "ON"}, {"ObjectLockLegalHoldStatus": "ON"}, None),
    "legal-hold-off-is-not-sent": ({"ObjectLockLegalHoldStatus": "OFF"}, {}, None),
    "legal-hold-unknown-is-not-sent": ({"ObjectLockLegalHoldStatus": "on;x"}, {}, None),
    "expired-retention-dropped-legal-hold-kept": (
        {
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockRetainUntilDate": NOW - timedelta(days=1),
            "ObjectLockLegalHoldStatus": "ON",
        },
        {"ObjectLockLegalHoldStatus": "ON"},
        "expired",
    ),
    "retention-ending-within-the-margin-dropped": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": NOW + timedelta(seconds=30)},
        {},
        "expired",
    ),
    "unknown-mode-dropped": (
        {"ObjectLockMode": "FOREVER\r\nx-amz-acl: public-read", "ObjectLockRetainUntilDate": LATER},
        {},
        "neither GOVERNANCE nor COMPLIANCE",
    ),
    "mode-without-date-dropped": ({"ObjectLockMode": "GOVERNANCE"}, {}, "missing"),
    "date-without-mode-dropped": ({"ObjectLockRetainUntilDate": LATER}, {}, "neither"),
    "header-date-iso": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "2026-07-01T12:00:00.000Z"},
        {
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockRetainUntilDate": datetime(2026, 7, 1, 12, tzinfo=UTC),
        },
        None,
    ),
    "header-date-other-zone-sent-in-utc": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "2026-07-01T14:00:00+02:00"},
        {
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockRetainUntilDate": datetime(2026, 7, 1, 12, tzinfo=UTC),
        },
        None,
    ),
    "header-date-without-zone-dropped": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "2026-07-01T12:00:00"},
        {},
        "time zone",
    ),
    "header-date-garbage-dropped": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "soon"},
        {},
        "not a date",
    ),
    "header-date-too-long-dropped": (
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "2026-07-01T12:00:00Z" + " " * 100},
        {},
        "not a date",
    ),
}


@pytest.mark.parametrize("name", list(LOCKS))
def test_object_lock_arguments(name: str) -> None:
    head, expected, reason = LOCKS[name]
    lock = preserve.object_lock(head, NOW)
    assert dict(lock.args) == expected
    if reason is None:
        assert lock.dropped is None
    else:
        assert lock.dropped is not None and reason in lock.dropped


def test_a_dropped_reason_never_quotes_the_source() -> None:
    hostile = "GOVERNANCE<script>\r\n"
    lock = preserve.object_lock({"ObjectLockMode": hostile, "ObjectLockRetainUntilDate": LATER}, NOW)
    assert lock.dropped is not None and "script" not in lock.dropped


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        ({}, False),
        ({"ObjectLockLegalHoldStatus": "ON"}, True),
        ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": LATER}, True),
        ({"ObjectLockMode": "GOVERNANCE", "ChecksumCRC32C": "AAAAAA=="}, False),
        ({"ObjectLockLegalHoldStatus": "ON", "ContentMD5": "x"}, False),
        ({"ACL": "private"}, False),
    ],
)
def test_a_write_setting_a_lock_needs_an_integrity_header(args: dict[str, Any], needs: bool) -> None:
    assert preserve.needs_content_md5(args) is needs


@pytest.mark.parametrize(
    ("value", "header"),
    [
        (datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=UTC), "2026-07-01T12:00:00.123Z"),
        (datetime(2026, 7, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))), "2026-07-01T12:00:00.000Z"),
        ("GOVERNANCE", "GOVERNANCE"),
        (42, "42"),
    ],
)
def test_header_values(value: Any, header: str) -> None:
    assert preserve.header_value(value) == header


@pytest.mark.parametrize(
    ("acl", "args"),
    [
        (None, {}),
        ("private", {"ACL": "private"}),
        ("bucket-owner-read", {"ACL": "bucket-owner-read"}),
        ("bucket-owner-full-control", {"ACL": "bucket-owner-full-control"}),
    ],
)
def test_acl_arguments(acl: str | None, args: dict[str, str]) -> None:
    assert preserve.acl_args(Destination(bucket="dst-bucket", acl=acl)) == args


def _spec(destination: dict[str, Any], **extra: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket", **destination}, **extra},
        by_alias=True,
        by_name=False,
    )


@pytest.mark.parametrize("acl", ["public-read", "public-read-write", "authenticated-read", "aws-exec-read"])
def test_acls_that_publish_objects_are_refused(acl: str) -> None:
    with pytest.raises(ValidationError, match="acl"):
        _spec({"acl": acl})


@pytest.mark.parametrize(
    ("destination", "extra", "message"),
    [
        ({"acl": "private", "storageClass": "EXPRESS_ONEZONE"}, {}, "directory buckets have no ACLs"),
        (
            {"storageClass": "EXPRESS_ONEZONE"},
            {"preserve": {"objectLock": True}},
            "directory buckets have no Object Lock",
        ),
    ],
)
def test_contradictions_are_refused(destination: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(destination, **extra)


def test_defaults_send_nothing_new() -> None:
    spec = _spec({})
    assert spec.destination.acl is None
    assert spec.preserve.object_lock is False
    assert preserve.acl_args(spec.destination) == {}
