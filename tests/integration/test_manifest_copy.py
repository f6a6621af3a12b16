"""Copying and planning from manifests against a real S3 server (versitygw when built, else moto):
`ferry run` with a CSV key list, a JSON-lines list, an S3 Inventory (gzipped CSV, and Parquet), a manifest
naming keys that no longer exist, and plans from a manifest compared with plans from listing (the same
pieces and shards when the manifest is in key order)."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet
import pytest
from integration.test_ferry_run import ferry, write_job

from ferry.model import CopyJobSpec
from ferry.operator.caps import cut_shards
from ferry.operator.planning import Planner, group_pieces
from ferry.operator.settings import OperatorSettings
from ferry.worker.engine import CopyEngine
from ferry.worker.limits import FixedLimiter
from ferry.worker.manifest import ManifestError
from ferry.worker.manifestscan import scan_manifest
from ferry.worker.objects import KeyRange
from ferry.worker.report import FailureReport
from ferry.worker.s3 import ClientOptions, Credentials, list_pages, make_client
from ferry.worker.scan import scan
from support.engine import FAST_RETRY
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(versitygw_or_moto: S3Endpoint) -> S3Endpoint:
    return versitygw_or_moto


def _bucket(client: Any, name: str) -> str:
    bucket = f"{name}-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return bucket


def _fill(client: Any, bucket: str, keys: list[str]) -> dict[str, int]:
    sizes = {}
    for i, key in enumerate(keys):
        body = b"m" * (10 + i)
        client.put_object(Bucket=bucket, Key=key, Body=body)
        sizes[key] = len(body)
    return sizes


def _run(tmp_path: Path, server: S3Endpoint, src: str, dst: str, manifest: str) -> tuple[int, dict[str, Any]]:
    job = write_job(tmp_path / "job.yaml", server, src, dst, extra=manifest)
    # The manifest goes under spec.source: write_job puts source on one line, so add it as a nested key.
    text = job.read_text().replace(
        "credentialsSecret: src-creds}", "credentialsSecret: src-creds, " + manifest + "}", 1
    )
    job.write_text(text.replace("\n" + manifest + "\n", "\n", 1))
    result = ferry("run", "-f", str(job), "--output", "json", "--progress", "none")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _keys(client: Any, bucket: str) -> set[str]:
    return {o.key for page in list_pages(client, bucket, "") for o in page}


def test_ferry_run_copies_exactly_the_keys_of_a_csv_list_in_a_bucket(
    server: S3Endpoint, tmp_path: Path
) -> None:
    client = server.client()
    src, dst, lists = _bucket(client, "src"), _bucket(client, "dst"), _bucket(client, "lists")
    sizes = _fill(client, src, ["a/1", "a/2, with comma", "b/ü", "not-listed"])
    chosen = ["b/ü", "a/2, with comma", "a/1"]  # not in key order
    body = "key,size\n" + "".join(f'"{k}",{sizes[k]}\n' for k in chosen)
    client.put_object(Bucket=lists, Key="keys.csv.gz", Body=gzip.compress(body.encode()))
    code, summary = _run(
        tmp_path, server, src, dst, f"manifest: {{format: csv, bucket: {lists}, key: keys.csv.gz}}"
    )
    assert code == 0, summary
    assert summary["objects"] == {"total": 3, "copied": 3, "skipped": 0, "failed": 0, "pending": 0}
    assert _keys(client, dst) == set(chosen)
    again = _run(tmp_path, server, src, dst, f"manifest: {{format: csv, bucket: {lists}, key: keys.csv.gz}}")[
        1
    ]
    assert again["objects"]["skipped"] == 3 and again["objects"]["copied"] == 0


def test_keys_the_source_no_longer_holds_fail_one_by_one_and_the_rest_is_copied(
    server: S3Endpoint, tmp_path: Path
) -> None:
    client = server.client()
    src, dst = _bucket(client, "src"), _bucket(client, "dst")
    sizes = _fill(client, src, [f"k{i:02d}" for i in range(20)])
    lines = [json.dumps({"key": k, "size": s}) for k, s in sizes.items()]
    lines += [json.dumps({"key": f"gone/{i}", "size": 5}) for i in range(12)]  # more than a failure streak
    manifest = tmp_path / "keys.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    code, summary = _run(tmp_path, server, src, dst, f'manifest: {{format: jsonl, file: "{manifest}"}}')
    assert code == 3, summary  # the manifest promised objects that were not copied
    assert summary["objects"] == {"total": 32, "copied": 20, "skipped": 0, "failed": 12, "pending": 0}
    assert {f["key"] for f in summary["failedSample"]} == {f"gone/{i}" for i in range(12)}
    assert {f["code"] for f in summary["failedSample"]} == {"SourceObjectMissing"}
    assert _keys(client, dst) == set(sizes)


def _inventory(client: Any, inv: str, src: str, sizes: dict[str, int], file_format: str) -> str:
    """An S3 Inventory of ``src`` in ``inv`` as S3 writes one (two data files, rows unsorted)."""
    keys = sorted(sizes, reverse=True)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    files = []
    for n, part in enumerate(halves):
        if file_format == "CSV":
            from urllib.parse import quote

            text = "".join(f'"{src}","{quote(k)}","{sizes[k]}","2024-05-01T12:00:00.000Z"\n' for k in part)
            data = gzip.compress(text.encode())
            key = f"inv/{src}/cfg/data/{n}.csv.gz"
        else:
            table = pa.table({"bucket": [src] * len(part), "key": part, "size": [sizes[k] for k in part]})
            sink = io.BytesIO()
            pyarrow.parquet.write_table(table, sink, row_group_size=7)
            data = sink.getvalue()
            key = f"inv/{src}/cfg/data/{n}.parquet"
        client.put_object(Bucket=inv, Key=key, Body=data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    schema = "Bucket, Key, Size, LastModifiedDate" if file_format == "CSV" else "message s3.inventory { }"
    document = {
        "sourceBucket": src,
        "destinationBucket": f"arn:aws:s3:::{inv}",
        "version": "2016-11-30",
        "fileFormat": file_format,
        "fileSchema": schema,
        "files": files,
    }
    client.put_object(
        Bucket=inv, Key=f"inv/{src}/cfg/2024-05-01T00-00Z/manifest.json", Body=json.dumps(document)
    )
    return f"inv/{src}/cfg/2024-05-01T00-00Z/manifest.json"


@pytest.mark.parametrize("file_format", ["CSV", "Parquet"])
def test_ferry_run_copies_from_an_s3_inventory(server: S3Endpoint, tmp_path: Path, file_format: str) -> None:
    client = server.client()
    src, dst, inv = _bucket(client, "src"), _bucket(client, "dst"), _bucket(client, "inv")
    sizes = _fill(client, src, [f"dir{i % 3}/obj {i:03d}+ü" for i in range(30)] + ["skip/me"])
    key = _inventory(client, inv, src, sizes, file_format)
    extra = f'manifest: {{format: inventory, bucket: {inv}, key: "{key}"}}, prefix: dir'
    code, summary = _run(tmp_path, server, src, dst, extra)
    assert code == 0, summary
    assert summary["objects"]["copied"] == 30
    # destination.prefix ("") replaces source.prefix ("dir") in every key.
    assert _keys(client, dst) == {k.removeprefix("dir") for k in sizes if k.startswith("dir")}


def test_a_corrupted_inventory_file_stops_the_run_naming_the_file(server: S3Endpoint, tmp_path: Path) -> None:
    client = server.client()
    src, dst, inv = _bucket(client, "src"), _bucket(client, "dst"), _bucket(client, "inv")
    sizes = _fill(client, src, [f"k{i}" for i in range(6)])
    key = _inventory(client, inv, src, sizes, "CSV")
    client.put_object(Bucket=inv, Key=f"inv/{src}/cfg/data/1.csv.gz", Body=gzip.compress(b'"x","y","1",""\n'))
    code, summary = _run(
        tmp_path, server, src, dst, f'manifest: {{format: inventory, bucket: {inv}, key: "{key}"}}'
    )
    assert (code, summary["state"]) == (2, "invalid"), (
        summary
    )  # the input is wrong: a re-run alone fails again
    assert f"s3://{inv}/inv/{src}/cfg/data/1.csv.gz" in summary["error"]
    assert _keys(client, dst) == set()  # nothing is copied from a manifest that cannot be read whole


def _spec(server: S3Endpoint, src: str, dst: str, manifest: dict[str, Any] | None) -> CopyJobSpec:
    source: dict[str, Any] = {"bucket": src, "endpoint": server.url}
    if manifest:
        source["manifest"] = manifest
    return CopyJobSpec.model_validate(
        {
            "source": source,
            "destination": {"bucket": dst, "endpoint": server.url},
            "shardSize": {"maxObjects": 40},
        },
        by_alias=True,
        by_name=False,
    )


def test_plans_from_a_manifest_and_from_listing_agree(server: S3Endpoint, tmp_path: Path) -> None:
    """Listing sees keys in order and a manifest does not, so piece boundaries differ; what must hold is
    the same histogram and totals, and pieces that are contiguous, cover the key space and count exactly."""
    client = server.client()
    src, inv = _bucket(client, "src"), _bucket(client, "inv")
    sizes = _fill(client, src, [f"p{i % 7}/{i:04d}" for i in range(300)])
    key = _inventory(client, inv, src, sizes, "CSV")
    ferry_client = make_client(
        _spec(server, src, src + "x", None).source,
        Credentials(server.access_key, server.secret_key),
        ClientOptions(max_pool_connections=4),
    )
    spec = _spec(server, src, src + "x", {"format": "inventory", "bucket": inv, "key": key})
    scan = scan_manifest(spec, ferry_client)
    listed = Planner(piece_objects=40).add_all(
        (o.key, o.size) for page in list_pages(ferry_client, src, "") for o in page
    )
    assert scan.result.histogram == listed.histogram()
    assert scan.list_requests == 2 * 3  # manifest.json and two data files, read twice
    pieces = scan.result.pieces
    assert pieces[0].start_after is None and pieces[-1].end is None
    assert all(a.end == b.start_after for a, b in itertools.pairwise(pieces))
    for piece in pieces:
        inside = [
            s
            for k, s in sizes.items()
            if (piece.start_after is None or k > piece.start_after) and (piece.end is None or k <= piece.end)
        ]
        assert (piece.objects, piece.bytes) == (len(inside), sum(inside))
    assert 300 / 40 / 2 <= len(pieces) <= 300 / 40 * 2

    with pytest.raises(ManifestError, match="not the source bucket"):
        scan_manifest(
            _spec(server, inv, src, {"format": "inventory", "bucket": inv, "key": key}), ferry_client
        )


def test_shards_planned_from_a_manifest_copy_each_object_once_as_it_is_now(
    server: S3Endpoint, tmp_path: Path
) -> None:
    """Each shard's engine copies the manifest's rows in its key range, and only those; an object
    rewritten after the manifest was written is copied with its current content, not skipped by the
    manifest's stale size."""
    client = server.client()
    src, dst, inv = _bucket(client, "src"), _bucket(client, "dst"), _bucket(client, "inv")
    sizes = _fill(client, src, [f"s{i % 5}/{i:04d}" for i in range(120)])
    key = _inventory(client, inv, src, sizes, "CSV")
    client.put_object(Bucket=src, Key="s0/0000", Body=b"rewritten after the inventory")
    client.put_object(Bucket=dst, Key="s0/0000", Body=b"m" * sizes["s0/0000"])  # matches the stale row
    spec = _spec(server, src, dst, {"format": "inventory", "bucket": inv, "key": key})
    creds = Credentials(server.access_key, server.secret_key)
    options = ClientOptions(max_pool_connections=8)
    scan = scan_manifest(spec, make_client(spec.source, creds, options))
    shards = group_pieces(list(scan.result.pieces), 4)
    assert len(shards) >= 2
    copied = 0
    for index, shard in enumerate(shards):
        engine = CopyEngine(
            spec=spec,
            source_client=make_client(spec.source, creds, options),
            destination_client=make_client(spec.destination, creds, options),
            limiter=FixedLimiter(4),
            report=FailureReport(tmp_path / f"report-{index}.jsonl"),
            key_range=KeyRange(shard.start_after, shard.end),
            retry=FAST_RETRY,
        )
        summary = engine.run()
        assert summary.complete and summary.counts.failed == 0, summary
        assert summary.counts.discovered == shard.objects
        copied += summary.counts.copied
    assert copied == 120  # the stale row was not skipped
    assert _keys(client, dst) == set(sizes)
    assert client.get_object(Bucket=dst, Key="s0/0000")["Body"].read() == b"rewritten after the inventory"


def test_a_csv_key_list_in_key_order_plans_in_one_read_the_shards_its_listing_plans(
    server: S3Endpoint,
) -> None:
    """A key list written in key order (as `sort`, or a listing, writes one) is planned in one pass by the
    listing's own planner: the same pieces, so the same shards, as listing the bucket, under the same prefix
    and filter. The bucket is listed as one range (no "/" to discover, one page to read), so the listing's
    pieces are those of a sequential listing."""
    client = server.client()
    src, inv = _bucket(client, "src"), _bucket(client, "inv")
    sizes = _fill(client, src, [f"item {i:04d}+é" for i in range(260)] + [f"other {i}" for i in range(15)])
    rows = "".join(f"{k},{s}\n" for k, s in sorted(sizes.items()))
    client.put_object(Bucket=inv, Key="keys.csv.gz", Body=gzip.compress(("key,size\n" + rows).encode()))
    document: dict[str, Any] = {
        "source": {"bucket": src, "endpoint": server.url, "prefix": "item"},
        "destination": {"bucket": src + "x", "endpoint": server.url},
        "filter": {"exclude": ["*7*"]},
        "shardSize": {"maxObjects": 40},
    }
    listed_spec = CopyJobSpec.model_validate(document, by_alias=True, by_name=False)
    document["source"]["manifest"] = {"format": "csv", "bucket": inv, "key": "keys.csv.gz"}
    manifest_spec = CopyJobSpec.model_validate(document, by_alias=True, by_name=False)
    creds = Credentials(server.access_key, server.secret_key)
    options = ClientOptions(max_pool_connections=8)
    listed = scan(listed_spec, make_client(listed_spec.source, creds, options), listers=4)
    planned = scan_manifest(manifest_spec, make_client(manifest_spec.source, creds, options))
    assert planned.list_requests == 1  # one GET of the key list: one pass
    assert planned.result.histogram == listed.result.histogram
    assert planned.result.histogram.objects == sum(1 for k in sizes if k.startswith("item") and "7" not in k)
    assert planned.result.pieces == listed.result.pieces
    at = datetime(2026, 1, 1, tzinfo=UTC)
    shards = cut_shards(
        planned.result.histogram, list(planned.result.pieces), manifest_spec, OperatorSettings(), at
    )
    assert len(shards[0]) > 1
    assert shards == cut_shards(
        listed.result.histogram, list(listed.result.pieces), listed_spec, OperatorSettings(), at
    )
