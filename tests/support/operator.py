"""Helpers for the operator's end-to-end tests: CopyJob bodies and content digests."""

from __future__ import annotations

import hashlib
from typing import Any

from ferry.testbed.install import GROUP, PLURAL, VERSION

__all__ = ["GROUP", "PLURAL", "VERSION", "copyjob", "md5s"]


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
