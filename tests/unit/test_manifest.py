"""Manifest readers and planning from unsorted manifests (pure: byte streams in, rows and pieces out)."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import random
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet
import pytest

from ferry.operator.planning import Planner
from ferry.worker.manifest import (
    Checked,
    DataFile,
    ManifestError,
    ManifestRow,
    inventory_batch_rows,
    inventory_csv_rows,
    jsonl_rows,
    key_list_csv_rows,
    parse_inventory_manifest,
    to_objects,
)
from ferry.worker.manifestplan import FirstPass, SecondPass

BUCKET = "src-bucket"
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# Every documented CSV column set: the required Bucket and Key, then each optional field S3 Inventory can
# add, in the order manifest.json's fileSchema names them.
BASIC = ["Bucket", "Key", "Size"]
VERSIONED = ["Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag"]
FULL = [
    "Bucket",
    "Key",
    "VersionId",
    "IsLatest",
    "IsDeleteMarker",
    "Size",
    "LastModifiedDate",
    "ETag",
    "StorageClass",
    "IsMultipartUploaded",
    "ReplicationStatus",
    "EncryptionStatus",
    "ObjectLockRetainUntilDate",
    "ObjectLockMode",
    "ObjectLockLegalHoldStatus",
    "IntelligentTieringAccessTier",
    "BucketKeyStatus",
    "ChecksumAlgorithm",
    "ObjectAccessControlList",
    "ObjectOwner",
]


def _csv_line(columns: list[str], values: dict[str, str]) -> str:
    return ",".join(f'"{values.get(c, "")}"' for c in columns)


def _record(key: str, **more: str) -> dict[str, str]:
    base = {
        "Bucket": BUCKET,
        "Key": key,
        "VersionId": "v1",
        "IsLatest": "true",
        "IsDeleteMarker": "false",
        "Size": "12",
        "LastModifiedDate": "2024-05-01T12:00:00.000Z",
        "ETag": "0123456789abcdef0123456789abcdef",
        "StorageClass": "STANDARD",
        "IsMultipartUploaded": "false",
    }
    base.update(more)
    return base


def _gz(text: str) -> io.BytesIO:
    return io.BytesIO(gzip.compress(text.encode()))


@pytest.mark.parametrize("columns", [BASIC, VERSIONED, FULL], ids=["basic", "versioned", "all-fields"])
def test_inventory_csv_reads_every_documented_column_set(columns: list[str]) -> None:
    text = "\n".join(
        _csv_line(columns, _record(k)) for k in ("a%2Fb.txt", "caf%C3%A9+menu.txt", "x%2C%22quoted%22")
    )
    rows = list(inventory_csv_rows(_gz(text + "\n"), columns, "data/1.csv.gz", BUCKET))
    assert [r.key for r in rows] == ["a/b.txt", "café menu.txt", 'x,"quoted"']
    assert all(r.size == 12 for r in rows)
    if "ETag" in columns:
        assert rows[0].etag == "0123456789abcdef0123456789abcdef"
        assert rows[0].last_modified == T
    else:
        assert (rows[0].etag, rows[0].last_modified) == ("", None)


def test_inventory_csv_keeps_current_versions_only() -> None:
    text = "\n".join(
        [
            _csv_line(VERSIONED, _record("kept")),
            _csv_line(VERSIONED, _record("old", IsLatest="false")),
            _csv_line(VERSIONED, _record("deleted", IsDeleteMarker="true", Size="")),
        ]
    )
    rows = list(inventory_csv_rows(_gz(text), VERSIONED, "f", BUCKET))
    assert [r.key for r in rows] == ["kept"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_csv_line(BASIC, {"Bucket": "other-bucket", "Key": "k", "Size": "1"}), "not of the source bucket"),
        (_csv_line(BASIC, {"Bucket": BUCKET, "Key": "k", "Size": "-1"}), "line 1: size '-1'"),
        (_csv_line(BASIC, {"Bucket": BUCKET, "Key": "k", "Size": "1.5"}), "not a whole"),
        (_csv_line(BASIC, {"Bucket": BUCKET, "Key": "k" * 1025, "Size": "1"}), "1025 bytes"),
        (_csv_line(BASIC, {"Bucket": BUCKET, "Key": "%FF", "Size": "1"}), "not UTF-8"),
        (_csv_line(BASIC, {"Bucket": BUCKET, "Key": "", "Size": "1"}), "the key is empty"),
        ('"src-bucket","k"', "2 columns, fileSchema names 3"),
        ('"src-bucket","k,"1"', "not one CSV record"),
        ("x" * 20_000, "longer than"),
    ],
    ids=[
        "wrong-bucket",
        "negative",
        "fraction",
        "long-key",
        "bad-utf8",
        "empty-key",
        "short",
        "quote",
        "huge",
    ],
)
def test_inventory_csv_errors_name_file_line_and_problem(text: str, message: str) -> None:
    good = _csv_line(BASIC, {"Bucket": BUCKET, "Key": "first", "Size": "1"})
    with pytest.raises(ManifestError) as caught:
        list(inventory_csv_rows(_gz(good + "\n" + text + "\n"), BASIC, "data/f.csv.gz", BUCKET))
    assert "data/f.csv.gz, line 2" in str(caught.value)
    assert message.replace("line 1", "line 2") in str(caught.value)


def test_truncated_gzip_names_the_last_good_line() -> None:
    text = "".join(
        _csv_line(BASIC, {"Bucket": BUCKET, "Key": f"k{i}", "Size": "1"}) + "\n" for i in range(5000)
    )
    data = gzip.compress(text.encode())
    with pytest.raises(ManifestError, match=r"data/t.csv.gz: the data breaks off after line \d+ .*truncated"):
        list(inventory_csv_rows(io.BytesIO(data[: len(data) // 2]), BASIC, "data/t.csv.gz", BUCKET))


def test_checksum_and_size_from_manifest_json_are_verified() -> None:
    data = gzip.compress(_csv_line(BASIC, {"Bucket": BUCKET, "Key": "k", "Size": "1"}).encode())
    good = DataFile("f", len(data), hashlib.md5(data).hexdigest())
    checked = Checked(io.BytesIO(data), "f", good)
    assert [r.key for r in inventory_csv_rows(checked, BASIC, "f", BUCKET)] == ["k"]  # type: ignore[arg-type]
    checked.verify()
    bad = Checked(io.BytesIO(data), "f", DataFile("f", len(data), "0" * 32))
    list(inventory_csv_rows(bad, BASIC, "f", BUCKET))  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"f: MD5 .* manifest.json says"):
        bad.verify()
    short = Checked(io.BytesIO(data), "f", DataFile("f", len(data) + 5, None))
    list(inventory_csv_rows(short, BASIC, "f", BUCKET))  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"bytes, manifest\.json says"):
        short.verify()


def _manifest_json(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "sourceBucket": BUCKET,
        "destinationBucket": "arn:aws:s3:::inventory",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": ", ".join(FULL),
        "files": [{"key": "inv/src-bucket/cfg/data/1.csv.gz", "size": 10, "MD5checksum": "a" * 32}],
    }
    document.update(changes)
    return json.dumps(document).encode()


def test_inventory_manifest_json_is_read() -> None:
    inventory = parse_inventory_manifest(_manifest_json(), "manifest.json", BUCKET)
    assert inventory.columns == tuple(FULL)
    assert inventory.files == (DataFile("inv/src-bucket/cfg/data/1.csv.gz", 10, "a" * 32),)
    parquet = _manifest_json(fileFormat="Parquet", fileSchema="message s3.inventory { required binary key; }")
    assert parse_inventory_manifest(parquet, "m", BUCKET).columns == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_manifest_json(sourceBucket="other-bucket"), "lists bucket 'other-bucket', not the source bucket"),
        (_manifest_json(fileFormat="Avro"), "fileFormat 'Avro'"),
        (_manifest_json(fileSchema="Bucket, Key"), "no Size column"),
        (_manifest_json(files=[]), "files is missing or empty"),
        (_manifest_json(files=[{"size": 1}]), r"files\[0\] has no key"),
        (_manifest_json(files=[{"key": "k", "MD5checksum": "zz"}]), "not 32 hex digits"),
        (_manifest_json(files=[{"key": "k"}] * 100_001), "at most 100000"),
        (b"{not json", "not JSON"),
    ],
    ids=["wrong-bucket", "format", "no-size", "no-files", "no-key", "bad-md5", "too-many-files", "not-json"],
)
def test_inventory_manifest_json_problems_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_inventory_manifest(data, "manifest.json", BUCKET)


def _columnar_table() -> pa.Table:
    return pa.table(
        {
            "bucket": [BUCKET, BUCKET, BUCKET],
            "key": ["a/ü.txt", "b,c", "old"],
            "version_id": ["1", "2", "3"],
            "is_latest": [True, True, False],
            "is_delete_marker": [False, False, False],
            "size": pa.array([5, 7, 9], pa.int64()),
            "last_modified_date": pa.array([T, T, T], pa.timestamp("ms", tz="UTC")),
            "e_tag": ["e1", "e2", "e3"],
            "storage_class": ["STANDARD"] * 3,
        }
    )


def _batches_parquet(data: bytes) -> list[tuple[str, dict[str, list[Any]]]]:
    reader = pyarrow.parquet.ParquetFile(io.BytesIO(data))
    return [
        (f"row group {g + 1}", reader.read_row_group(g).to_pydict()) for g in range(reader.num_row_groups)
    ]


@pytest.mark.parametrize("kind", ["parquet", "orc"])
def test_columnar_inventories_are_read_batch_by_batch(kind: str) -> None:
    sink = io.BytesIO()
    if kind == "parquet":
        pyarrow.parquet.write_table(_columnar_table(), sink, row_group_size=2)
        batches = _batches_parquet(sink.getvalue())
        assert len(batches) == 2
    else:
        pyarrow.orc.write_table(_columnar_table(), sink)
        reader = pyarrow.orc.ORCFile(io.BytesIO(sink.getvalue()))
        batches = [(f"stripe {s + 1}", reader.read_stripe(s).to_pydict()) for s in range(reader.nstripes)]
    rows = list(inventory_batch_rows(batches, "f", BUCKET))
    assert rows == [ManifestRow("a/ü.txt", 5, "e1", T), ManifestRow("b,c", 7, "e2", T)]


def test_columnar_rows_of_another_bucket_are_refused_naming_the_row_group() -> None:
    batches = [("row group 3", {"bucket": ["evil"], "key": ["k"], "size": [1]})]
    with pytest.raises(ManifestError, match="f, row group 3, row 1: a key of bucket 'evil'"):
        list(inventory_batch_rows(batches, "f", BUCKET))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key,size\na,1\nb,2\n", [ManifestRow("a", 1), ManifestRow("b", 2)]),
        ('size,key,etag\n3,"x,""y""",abc\n', [ManifestRow('x,"y"', 3, "abc")]),
        ("key,size,lastModified\nδ/ß,0,2024-05-01T12:00:00Z\n", [ManifestRow("δ/ß", 0, "", T)]),
        (f"bucket,key,size\n{BUCKET},k,1\n\n", [ManifestRow("k", 1)]),
        ("key,size\r\nwin,4\r\n", [ManifestRow("win", 4)]),
    ],
    ids=["plain", "quoted", "unicode-time", "bucket-blank-line", "crlf"],
)
def test_csv_key_lists(text: str, expected: list[ManifestRow]) -> None:
    assert list(key_list_csv_rows(io.BytesIO(text.encode()), "keys.csv", BUCKET)) == expected
    assert list(key_list_csv_rows(_gz(text), "keys.csv.gz", BUCKET)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty; a CSV key list starts with a header line"),
        ("key\na\n", "line 1: the header line must name key and size"),
        ("key,size,colour\n", "line 1: the header line"),
        ("key,size\na\n", "line 2: 1 columns, the header names 2"),
        ("key,size\na,\n", "line 2: no size"),
        ("bucket,key,size\nother-bucket,a,1\n", "line 2: a key of bucket 'other-bucket'"),
        (
            'key,size\n"a\nb",3\nc,4\n',
            "line 2: a quoted field runs over 2 lines; keys with line breaks need jsonl",
        ),
        ('key,size\na,1\nb,2\n"x\ny\nz",5\n', "line 4: a quoted field runs over 3 lines"),
        ('key,size\n"a"x,3\n', "line 2: not one CSV record"),
        ('key,size\na,1\n"b,2\n', "line 3: not one CSV record"),
        ("key,size\na,1\n\udcff,2\n", "line 3: not UTF-8"),
    ],
)
def test_csv_key_list_errors(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        list(key_list_csv_rows(io.BytesIO(text.encode("utf-8", "surrogateescape")), "keys.csv", BUCKET))


def test_jsonl_key_lists() -> None:
    text = '{"key": "a\\nb", "size": 1, "etag": "e"}\n\n{"key": "日本", "size": 2, "versionId": "v"}\n'
    assert list(jsonl_rows(io.BytesIO(text.encode()), "k.jsonl", BUCKET)) == [
        ManifestRow("a\nb", 1, "e"),
        ManifestRow("日本", 2),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1]", "line 2: not a JSON object"),
        ("{bad", "line 2: not a JSON object"),
        ('{"key": "k", "size": -3}', "line 2: size -3 is outside"),
        ('{"key": "k", "size": true}', "line 2: size 'True'"),
        ('{"key": 5, "size": 1}', "line 2: no key"),
        ('{"key": "k", "size": 1, "owner": "x"}', "line 2: unknown field 'owner'"),
        ('{"key": "' + "é" * 513 + '", "size": 1}', "line 2: the key is 1026 bytes"),
    ],
)
def test_jsonl_errors(line: str, message: str) -> None:
    text = '{"key": "ok", "size": 1}\n' + line + "\n"
    with pytest.raises(ManifestError, match=message):
        list(jsonl_rows(io.BytesIO(text.encode()), "k.jsonl", BUCKET))


def test_prefix_and_filter_apply_and_times_are_required_when_filtered() -> None:
    rows = [ManifestRow("p/a", 1), ManifestRow("q/b", 1), ManifestRow("p/c", 50)]
    kept = list(to_objects(rows, lambda obj: obj.size < 10, "p/", False, "m"))
    assert [o.key for o in kept] == ["p/a"]
    with pytest.raises(ManifestError, match="no last-modified time"):
        list(to_objects(rows, lambda obj: True, "p/", True, "m"))


# -- planning from unsorted rows -------------------------------------------------------------------------


def _unsorted(count: int, seed: int = 7) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    items = [(f"dir{rng.randrange(50):02d}/obj-{i:07d}", rng.randrange(1, 200_000)) for i in range(count)]
    rng.shuffle(items)
    return items


@pytest.mark.parametrize(
    ("count", "piece_objects"), [(0, 1000), (1, 1000), (999, 1000), (25_000, 1000), (25_000, 100)]
)
def test_pieces_from_unsorted_rows_are_contiguous_covering_and_exact(count: int, piece_objects: int) -> None:
    items = _unsorted(count)
    first = FirstPass().add_all(items)
    pieces = SecondPass(first.boundaries(piece_objects, 2**30)).add_all(items).pieces()
    assert pieces[0].start_after is None and pieces[-1].end is None
    for before, after in itertools.pairwise(pieces):
        assert before.end == after.start_after and before.end is not None
    assert sum(p.objects for p in pieces) == count
    assert sum(p.bytes for p in pieces) == sum(size for _, size in items)
    for piece in pieces:  # each piece's counts are exactly the keys in its range
        inside = [
            s
            for k, s in items
            if (piece.start_after is None or k > piece.start_after) and (piece.end is None or k <= piece.end)
        ]
        assert (piece.objects, piece.bytes) == (len(inside), sum(inside))
    if count >= 25_000:
        # About one piece per piece_objects objects (the sample's quantiles are estimates).
        assert count / piece_objects / 2 <= len(pieces) <= count / piece_objects * 2
        assert max(p.objects for p in pieces) <= piece_objects * 3


def test_histogram_equals_the_listing_planner_s_and_the_plan_is_deterministic() -> None:
    items = _unsorted(5000)
    assert FirstPass().add_all(items).histogram() == Planner().add_all(sorted(items)).histogram()
    again = FirstPass().add_all(items).boundaries(100, 2**30)
    assert FirstPass().add_all(items).boundaries(100, 2**30) == again


def test_large_objects_get_pieces_of_their_own_bytes() -> None:
    # A few huge objects among many small ones: the byte-weighted sample cuts around them.
    items = [(f"small/{i:06d}", 10) for i in range(20_000)] + [(f"zbig/{i}", 2**30) for i in range(8)]
    random.Random(1).shuffle(items)
    first = FirstPass().add_all(items)
    pieces = SecondPass(first.boundaries(1000, 2**30)).add_all(items).pieces()
    assert max(p.bytes for p in pieces) <= 3 * 2**30
