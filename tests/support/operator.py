"""Helpers for the operator's end-to-end tests: CopyJob bodies, content digests, polling."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ferry.testbed.install import GROUP, PLURAL, VERSION

__all__ = ["GROUP", "PLURAL", "VERSION", "copyjob", "md5s", "wait_for"]


def copyjob(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CopyJob", "metadata": {"name": name}, "spec": spec}


def md5s(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """Key (relative to prefix) -> MD5 of the content as read back."""
    result = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            result[item["Key"][len(prefix) :]] = hashlib.md5(body).hexdigest()
    return result


def wait_for(what: str, predicate: Any, timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
