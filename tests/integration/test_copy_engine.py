"""The copy engine against a real S3 server process (moto, over HTTP): what arrives, what is kept,
what is skipped, and how the accounting closes."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.engine import TEST_PART, digest_map, run_engine, spec

# Every legal shape of key a bucket can hold.
AWKWARD_KEYS = [
    "plain.txt",
    "with space/and+plus",
    "percent%20not-decoded",
    "question?mark",
    "hash#tag",
    "ünïcödé/日本語/🙂",
    "trailing-slash/",
    "a" * 200 + "/" + "b" * 823,  # 1024 bytes: S3's maximum
    "zero-bytes",
    "dots/../not/a/path",
]


def fill(client: Any, bucket: str, keys: list[str], size: int = 3000, **put: Any) -> dict[str, str]:
    digests = {}
    for index, key in enumerate(keys):
        body = b"" if key in ("zero-bytes", "trailing-slash/") else os.urandom(size + index)
        client.put_object(Bucket=bucket, Key=key, Body=body, **put)
        digests[key] = hashlib.md5(body).hexdigest()
    return digests


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_streaming_copy_preserves_bytes_metadata_and_tags_for_every_key_shape(
    s3: Any, transport: str
) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    digests = fill(
        client,
        src,
        AWKWARD_KEYS,
        ContentType="application/x-ferry",
        ContentEncoding="identity",
        ContentLanguage="de",
        ContentDisposition='attachment; filename="x"',
        CacheControl="max-age=60",
        Expires=expires,
        Metadata={"owner": "team-a", "note": "plain ascii"},
        Tagging="tier=gold&team=a%20b",
    )
    big = os.urandom(2 * TEST_PART + 12345)  # three parts
    client.put_object(Bucket=src, Key="big/object.bin", Body=big, Tagging="size=big")
    digests["big/object.bin"] = hashlib.md5(big).hexdigest()

    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "reader"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "writer", "prefix": "copy/"},
    )
    run = run_engine(job, endpoint, transport=transport)

    c = run.summary.counts
    assert (c.discovered, c.copied, c.skipped, c.failed, c.pending) == (len(digests), len(digests), 0, 0, 0)
    assert c.bytes_copied == sum(len(b) for b in [big]) + sum(
        3000 + i for i, k in enumerate(AWKWARD_KEYS) if k not in ("zero-bytes", "trailing-slash/")
    )
    assert digest_map(client, dst, "copy/") == digests
    head = client.head_object(Bucket=dst, Key="copy/" + AWKWARD_KEYS[0])
    assert head["Expires"] == expires
    assert head["ContentType"] == "application/x-ferry"
    assert head["ContentLanguage"] == "de"
    assert head["ContentDisposition"] == 'attachment; filename="x"'
    assert head["CacheControl"] == "max-age=60"
    assert head["Metadata"] == {"owner": "team-a", "note": "plain ascii"}
    tags = client.get_object_tagging(Bucket=dst, Key="copy/" + AWKWARD_KEYS[5])["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("team", "a b"), ("tier", "gold")]
    big_tags = client.get_object_tagging(Bucket=dst, Key="copy/big/object.bin")["TagSet"]
    assert big_tags == [{"Key": "size", "Value": "big"}]


def test_second_run_skips_everything_and_copies_nothing(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(client, src, [f"k/{i:04d}" for i in range(50)])
    client.put_object(Bucket=src, Key="multi", Body=os.urandom(TEST_PART + 1))
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
    )
    first = run_engine(job, endpoint).summary.counts
    second = run_engine(job, endpoint).summary
    assert first.copied == 51
    assert (second.counts.copied, second.counts.skipped, second.counts.failed) == (0, 51, 0)
    # Skipping comes from listing the destination: two list requests, no per-object HEAD.
    assert second.requests == 2


def test_changed_source_object_is_copied_again_with_if_different(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    fill(client, src, ["same", "changes"])
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
    )
    run_engine(job, endpoint)
    client.put_object(Bucket=src, Key="changes", Body=b"new content of another size")
    counts = run_engine(job, endpoint).summary.counts
    assert (counts.copied, counts.skipped) == (1, 1)
    assert client.get_object(Bucket=dst, Key="changes")["Body"].read() == b"new content of another size"


def test_overwrite_never_keeps_and_always_replaces_existing_objects(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    client.put_object(Bucket=src, Key="k", Body=b"source")
    client.put_object(Bucket=dst, Key="k", Body=b"existing destination")
    base = (
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
    )
    never = run_engine(spec(*base, overwrite="never"), endpoint).summary.counts
    assert (never.copied, never.skipped) == (0, 1)
    assert client.get_object(Bucket=dst, Key="k")["Body"].read() == b"existing destination"
    always = run_engine(spec(*base, overwrite="always"), endpoint).summary.counts
    assert (always.copied, always.skipped) == (1, 0)
    assert client.get_object(Bucket=dst, Key="k")["Body"].read() == b"source"


def test_filters_copy_only_matching_objects(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    client.put_object(Bucket=src, Key="in/a.parquet", Body=b"x" * 2048)
    client.put_object(Bucket=src, Key="in/tmp/b.parquet", Body=b"x" * 2048)
    client.put_object(Bucket=src, Key="in/c.csv", Body=b"x" * 2048)
    client.put_object(Bucket=src, Key="in/tiny.parquet", Body=b"x")
    client.put_object(Bucket=src, Key="out/d.parquet", Body=b"x" * 2048)
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "prefix": "in/", "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "prefix": "out/", "credentialsSecret": "b"},
        filter={
            "include": ["*.parquet"],
            "exclude": ["tmp/*"],
            "minSize": "1Ki",
            "modifiedAfter": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        },
    )
    counts = run_engine(job, endpoint).summary.counts
    assert counts.discovered == counts.copied == 1
    assert set(digest_map(client, dst)) == {"out/a.parquet"}


def test_server_side_copy_uses_copy_object_and_upload_part_copy(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    bucket = s3.make_bucket("same")
    digests = fill(client, bucket, ["src/small-1", "src/small-2"], Metadata={"k": "v"}, Tagging="a=1")
    big = os.urandom(TEST_PART + 4096)
    client.put_object(Bucket=bucket, Key="src/big", Body=big, ContentType="application/big")
    digests["src/big"] = hashlib.md5(big).hexdigest()
    job = spec(
        {"bucket": bucket, "endpoint": endpoint.url, "prefix": "src/"},
        {"bucket": bucket, "endpoint": endpoint.url, "prefix": "dst/", "storageClass": "STANDARD_IA"},
    )
    run = run_engine(job, endpoint)
    assert run.engine.server_side
    assert run.summary.counts.copied == 3
    assert digest_map(client, bucket, "dst/") == {k.removeprefix("src/"): v for k, v in digests.items()}
    head = client.head_object(Bucket=bucket, Key="dst/small-1")
    assert head["Metadata"] == {"k": "v"}
    assert head.get("StorageClass") == "STANDARD_IA"
    assert client.get_object_tagging(Bucket=bucket, Key="dst/small-1")["TagSet"] == [
        {"Key": "a", "Value": "1"}
    ]
    assert client.head_object(Bucket=bucket, Key="dst/big")["ContentType"] == "application/big"


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_each_verify_mode_copies_intact_objects(s3: Any, transport: str) -> None:
    endpoint, client = s3.endpoint, s3.client
    for mode in ("checksum", "etag", "size"):
        src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
        digests = fill(client, src, ["a", "b"])
        big = os.urandom(TEST_PART + 10)
        client.put_object(Bucket=src, Key="big", Body=big)
        digests["big"] = hashlib.md5(big).hexdigest()
        job = spec(
            {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
            {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
            verify=mode,
        )
        counts = run_engine(job, endpoint, transport=transport).summary.counts
        assert (counts.copied, counts.failed) == (3, 0), mode
        assert digest_map(client, dst) == digests, mode


def test_listing_spans_pages_and_accounting_closes(s3: Any) -> None:
    endpoint, client = s3.endpoint, s3.client
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    keys = [f"p/{i:05d}" for i in range(1150)]
    for key in keys:
        client.put_object(Bucket=src, Key=key, Body=b"x")
    # A third of them already present: skipped by the merge with the destination listing.
    for key in keys[::3]:
        client.put_object(Bucket=dst, Key=key, Body=b"x")
    job = spec(
        {"bucket": src, "endpoint": endpoint.url, "credentialsSecret": "a"},
        {"bucket": dst, "endpoint": endpoint.url, "credentialsSecret": "b"},
    )
    c = run_engine(job, endpoint, concurrency=16).summary.counts
    assert c.discovered == 1150
    assert (c.copied, c.skipped, c.failed, c.pending) == (1150 - 384, 384, 0, 0)
    assert c.discovered == c.copied + c.skipped + c.failed + c.pending
