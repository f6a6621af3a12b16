"""Seeding the listing benchmark's buckets: a million objects on a 2-core machine, once, then cached.

PUTting 1,000,000 objects through versitygw costs hours of CPU here, so the seeder writes the posix
backend's files directly, the way versitygw's own PutObject leaves them (read from its source,
backend/posix/posix.go, and checked by `check_against_put` at every seeding): one file per object at
`<data>/<bucket>/<key>`, directories for the '/' in keys, and the `user.etag` extended attribute
holding the quoted MD5 of the body (plus `user.content-type`). Bodies are sparse files of the key's
size (all zeros): ListObjectsV2 reports the true size and an ETag that matches what a GET returns,
without the disk space. Not written: the `user.checksums` attribute (boto3's CRC32), which only
adds a ChecksumAlgorithm to listings; no lister here uses it.

The bucket itself is created through the S3 API (versitygw keeps its ACL and ownership in the bucket
directory's attributes). A bucket counts as seeded only once its marker file exists, written last,
so an interrupted seeding is wiped and redone, never half-used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import listkeys

#: Bumped whenever the layouts or the file format change, so stale caches are re-seeded.
SEED_VERSION = 1


def bucket_name(layout: str, count: int) -> str:
    return f"list-{layout}-{count}"


def marker_path(cache: Path, layout: str, count: int) -> Path:
    return cache / f"{bucket_name(layout, count)}.seeded.json"


def seeded(cache: Path, layout: str, count: int) -> dict[str, Any] | None:
    """The marker of a finished seeding of this layout and count, or None."""
    path = marker_path(cache, layout, count)
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_text())
        if doc.get("version") == SEED_VERSION and doc.get("keys") == count and doc.get("layout") == layout:
            return dict(doc)
    return None


def seed(
    s3: Any,
    data_dir: Path,
    cache: Path,
    layout: str,
    count: int,
    log: Callable[[str], None],
    deadline: float,
) -> dict[str, Any]:
    """Make bucket `list-<layout>-<count>` hold exactly `listkeys.keys(layout, count)`; reuse a cached one.

    `s3` is a client of the running versitygw whose posix root is `data_dir`. Stops with TimeoutError
    at `deadline` (time.monotonic()), leaving no marker.
    """
    done = seeded(cache, layout, count)
    bucket = bucket_name(layout, count)
    root = data_dir / bucket
    if done is not None and root.is_dir():
        return done
    marker_path(cache, layout, count).unlink(missing_ok=True)
    if root.exists():
        log(f"seed: wiping an unfinished {bucket}")
        shutil.rmtree(root)
    s3.create_bucket(Bucket=bucket)
    t = time.monotonic()
    made: set[str] = set()
    total = n = 0
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    for key in listkeys.keys(layout, count):
        parent, _, _ = key.name.rpartition("/")
        if parent and parent not in made:
            (root / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        fd = os.open(root / key.name, flags, 0o644)
        try:
            os.ftruncate(fd, key.size)  # sparse: the size without the blocks
            os.setxattr(fd, "user.etag", f'"{listkeys.zero_md5(key.size)}"'.encode())
            os.setxattr(fd, "user.content-type", b"application/octet-stream")
        finally:
            os.close(fd)
        n += 1
        total += key.size
        if n % 100_000 == 0:
            log(f"seed: {bucket}: {n:,}/{count:,} files, {n / (time.monotonic() - t):,.0f}/s")
            if time.monotonic() > deadline:
                raise TimeoutError(f"seeding {bucket} ran out of time at {n:,} of {count:,} keys")
    doc = {
        "version": SEED_VERSION,
        "layout": layout,
        "keys": n,
        "bytes": total,
        "directories": len(made),
        "seedSeconds": round(time.monotonic() - t, 1),
        "method": "posix files + user.etag xattr written directly (sparse bodies)",
    }
    marker_path(cache, layout, count).write_text(json.dumps(doc) + "\n")
    log(f"seed: {bucket}: {n:,} keys, {total / 1e9:.1f} GB (sparse) in {doc['seedSeconds']}s")
    return doc


def check_against_put(s3: Any, data_dir: Path, bucket: str) -> None:
    """Prove a seeded file lists and reads back like an object PUT through the server.

    PUTs one object with a zero-filled body next to a directly written one of the same size, then
    compares what ListObjectsV2 and GetObject say of both. Raises AssertionError on any difference.
    """
    size = 3000
    body = bytes(size)
    s3.put_object(Bucket=bucket, Key="zz-check/put", Body=body)
    path = data_dir / bucket / "zz-check" / "direct"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.setxattr(fd, "user.etag", f'"{hashlib.md5(body).hexdigest()}"'.encode())
        os.setxattr(fd, "user.content-type", b"application/octet-stream")
    finally:
        os.close(fd)
    try:
        listed = {
            o["Key"]: (o["Size"], o["ETag"])
            for o in s3.list_objects_v2(Bucket=bucket, Prefix="zz-check/").get("Contents", [])
        }
        assert (
            listed.get("zz-check/put")
            == listed.get("zz-check/direct")
            == (size, f'"{hashlib.md5(body).hexdigest()}"')
        ), listed
        got = s3.get_object(Bucket=bucket, Key="zz-check/direct")
        assert got["Body"].read() == body and got["ETag"] == listed["zz-check/put"][1]
    finally:
        s3.delete_object(Bucket=bucket, Key="zz-check/put")
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (data_dir / bucket / "zz-check").rmdir()
