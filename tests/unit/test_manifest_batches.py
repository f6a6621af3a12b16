"""Manifests read in batches for planning (worker/manifestbatch.py) give exactly what the row parser
(worker/manifest.py) gives: the same objects in the same order, or the same error naming file and line.
Pure: byte streams and Arrow batches in, keys and sizes out."""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from ferry.worker import manifestbatch
from ferry.worker.manifest import (
    ManifestError,
    ManifestRow,
    inventory_batch_rows,
    inventory_csv_rows,
    jsonl_rows,
    key_list_csv_rows,
    parse_time,
    to_objects,
)
from ferry.worker.manifestbatch import KeyBatch, Selection, chunks, plain_fields

BUCKET = "src-bucket"
NAME = "m.csv"
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVERYTHING = Selection("", None, False, NAME)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of a few lines: every test crosses chunk boundaries (the largest line here is 20,000 bytes).
    monkeypatch.setattr(manifestbatch, "CHUNK_BYTES", 40_000)


def _pairs(batches: Iterable[KeyBatch]) -> list[tuple[str, int]]:
    return [(k, int(s)) for b in batches for k, s in zip(b.keys.tolist(), b.sizes.tolist(), strict=True)]


def _reference(rows: Iterable[ManifestRow], selection: Selection = EVERYTHING) -> list[tuple[str, int]]:
    accepts = selection.accepts or (lambda _obj: True)
    objects = to_objects(rows, accepts, selection.prefix, selection.needs_time, selection.name)
    return [(o.key, o.size) for o in objects]


def _outcome(read: Callable[[], list[tuple[str, int]]]) -> list[tuple[str, int]] | str:
    """What reading gives: the objects, or the error's message."""
    try:
        return read()
    except ManifestError as exc:
        return f"error: {exc}"


def _same_key_list(data: bytes, selection: Selection = EVERYTHING) -> list[tuple[str, int]] | str:
    expected = _outcome(lambda: _reference(key_list_csv_rows(io.BytesIO(data), NAME, BUCKET), selection))
    found = _outcome(
        lambda: _pairs(manifestbatch.key_list_batches(io.BytesIO(data), NAME, BUCKET, selection))
    )
    assert found == expected
    return found


# -- CSV key lists: table of plain and not-so-plain lists -------------------------------------------------


def _lines(count: int, template: str = "k{i:05d},{i}") -> str:
    return "".join(template.format(i=i) + "\n" for i in range(count))


@pytest.mark.parametrize(
    "text",
    [
        "key,size\na,1\nb,2\n",
        "key,size\n" + _lines(5000),
        "size,key,etag\n" + _lines(3000, "{i},dir/ü-{i},e{i}"),
        'key,size\n"quoted,key",3\nplain,4\n' + _lines(3000),
        'key,size\n"a","1"\n"b","2"\n',
        "key,size\r\nwin,4\r\n" + _lines(3000).replace("\n", "\r\n"),
        "key,size\n" + _lines(2000) + "\n\n" + _lines(2000, "z{i},{i}"),
        "bucket,key,size\n" + _lines(3000, BUCKET + ",k{i},{i}") + ",empty-bucket,5\n",
        "key,size,lastModified\nδ/ß,0,2024-05-01T12:00:00Z\n"
        + _lines(2000, "t{i},1,2024-05-01T12:00:00.000Z"),
        "key,size\n" + _lines(3000, "k{i}, {i} "),  # spaces around a size: the row parser strips them
        "key,size,etag\n" + _lines(3000, 'k{i},{i}," e{i} "'),
        "key,size\n" + _lines(3000, "k{i},00{i}"),
        "key,size\n\ufeffbom-key,1\n",
        "key,size\nlast-line-without-end,7",
        "key,size\n",
    ],
    ids=[
        "tiny",
        "plain",
        "columns-reordered",
        "one-quoted-key",
        "all-quoted",
        "crlf",
        "blank-lines",
        "bucket-column",
        "times",
        "spaced-sizes",
        "quoted-etags",
        "leading-zeros",
        "bom-in-a-key",
        "no-final-newline",
        "header-only",
    ],
)
def test_key_lists_read_in_batches_give_the_row_parser_s_objects(text: str) -> None:
    found = _same_key_list(text.encode())
    assert isinstance(found, list)
    assert _same_key_list(gzip.compress(text.encode())) == found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty; a CSV key list starts with a header line"),
        ("key\na\n", "line 1: the header line must name key and size"),
        ('"key,size\na,1\n', "line 2: not one CSV record"),
        ("key,size\na\n", "line 2: 1 columns, the header names 2"),
        ("key,size\n" + _lines(3000) + "a,\n", "line 3002: no size"),
        ("key,size\n" + _lines(3000) + "a,-1\n", "line 3002: size '-1'"),
        ("key,size\n" + _lines(3000) + f"a,{6 * 2**40}\n", "line 3002: size 6597069766656 is outside"),
        ("key,size\n" + _lines(3000) + ",1\n", "line 3002: the key is empty"),
        ("key,size\n" + _lines(3000) + "k" * 1025 + ",1\n", "line 3002: the key is 1025 bytes"),
        ("bucket,key,size\nother-bucket,a,1\n", "line 2: a key of bucket 'other-bucket'"),
        ('key,size\n"a\nb",3\nc,4\n', "line 2: a quoted field runs over 2 lines"),
        ('key,size\n"a"x,3\n', "line 2: not one CSV record"),
        ("key,size\n" + _lines(3000) + "a,1\rb,2\n", "line 3002: not one CSV record"),
        ("key,size\n" + _lines(3000) + "\udcff,2\n", "line 3002: not UTF-8"),
        ("key,size\n" + _lines(3000) + "x" * 20_000 + ",1\n", "line 3002: longer than 16384 bytes"),
        ("key,size,etag\n" + _lines(3000, "k{i},1,e") + "k,1," + "e" * 129 + "\n", "line 3002: ETag"),
        ("key,size,lastModified\na,1,yesterday\n", "line 2: last-modified time 'yesterday'"),
    ],
)
def test_key_list_errors_are_the_row_parser_s(text: str, message: str) -> None:
    found = _same_key_list(text.encode("utf-8", "surrogateescape"))
    assert isinstance(found, str) and message in found


def test_a_whole_chunk_without_a_line_end_is_refused_naming_its_line() -> None:
    data = b"key,size\na,1\n" + b"x" * 100_000
    with pytest.raises(ManifestError, match=r"m\.csv, line 3: longer than 16384 bytes"):
        list(manifestbatch.key_list_batches(io.BytesIO(data), NAME, BUCKET, EVERYTHING))


def test_a_truncated_gzip_key_list_names_a_line_it_broke_off_after() -> None:
    data = gzip.compress(("key,size\n" + _lines(20_000)).encode())
    with pytest.raises(ManifestError, match=r"m\.csv: the data breaks off after line \d+ .*truncated"):
        list(manifestbatch.key_list_batches(io.BytesIO(data[: len(data) // 2]), NAME, BUCKET, EVERYTHING))


#: Unusual in a key, yet a key: the row parser reads such lines, quoted or not.
_ODD_KEY = [",", '"', " ", "\t", "é", "+", "%2F", "\ufeff"]
#: Not readable at all, or not as a line of its own: the row parser's errors.
_BROKEN = ["\r", "\x00", "\n", '"x"y']


def _fuzzed_line(rng: random.Random, quoted: bool, odd_rate: float) -> str:
    key = "".join(rng.choice("ab/09éü日 -_.") for _ in range(rng.randrange(1, 12)))
    size = str(rng.randrange(0, 10**7))
    etag = "".join(rng.choice("abcdef0123") for _ in range(rng.randrange(0, 9)))
    if rng.random() < odd_rate:
        odd = rng.random()
        if odd < 0.6:
            key += rng.choice(_ODD_KEY)
        elif odd < 0.75:
            size = f" {size} "  # parse_size strips spaces
        elif odd < 0.9:
            etag = f" {etag} "
        else:
            key += rng.choice(_BROKEN)
        # Written as a CSV writer would, quoted with quotes doubled, or carelessly as it is.
        if rng.random() < 0.9:
            key = '"' + key.replace('"', '""') + '"'
        return ",".join([key, size, etag])
    return f'"{key}","{size}","{etag}"' if quoted else f"{key},{size},{etag}"


@pytest.mark.parametrize("seed", range(16))
def test_random_key_lists_read_in_batches_as_the_row_parser_reads_them(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    quoted, odd_rate = seed % 2 == 1, [0.0, 0.0002, 0.002, 0.02][seed % 4]
    lines = ["key,size,etag"] + [
        _fuzzed_line(rng, quoted, odd_rate) for _ in range(rng.randrange(2000, 12_000))
    ]
    plain: list[bool] = []
    split = manifestbatch.plain_fields

    def counted(data: bytes, columns: int, wanted: list[int] | None = None) -> list[pa.Array] | None:
        fields = split(data, columns, wanted)
        plain.append(fields is not None)
        return fields

    monkeypatch.setattr(manifestbatch, "plain_fields", counted)
    _same_key_list(("\n".join(lines) + "\n").encode())
    if odd_rate == 0.0:
        assert all(plain) and len(plain) > 1  # every chunk split by Arrow


def test_prefix_filter_and_times_select_as_the_row_parser_does() -> None:
    text = "key,size,lastModified\n" + "".join(
        f"{'p' if i % 3 else 'q'}/{i:05d},{i},2024-05-0{1 + i % 5}T00:00:00Z\n" for i in range(6000)
    )
    cut = datetime(2024, 5, 3, tzinfo=UTC)
    selection = Selection("p/", lambda o: o.size % 2 == 0 and o.last_modified >= cut, True, NAME)
    found = _same_key_list(text.encode(), selection)
    assert isinstance(found, list) and 0 < len(found) < 6000
    untimed = "key,size\n" + _lines(3000, "q{i},1") + "p/x,1\n"
    assert "'p/x' has no last-modified time" in str(_same_key_list(untimed.encode(), selection))


# -- plain fields: what goes to Arrow and what to the row parser -----------------------------------------


@pytest.mark.parametrize(
    ("data", "plain"),
    [
        (b"a,1\nb,2\n", [["a", "b"], ["1", "2"]]),
        (b'"a,x","1"\n"b","2"\n', [["a,x", "b"], ["1", "2"]]),
        (b"a,1\r\nb,2\r\n", [["a", "b"], ["1", "2"]]),
        (b"a,1\n\nb,2", [["a", "b"], ["1", "2"]]),
        (b'"a"x,1\n', None),  # quoted, then more: Python's strict csv refuses it
        (b'a"b,1\n', None),  # a quote inside an unquoted field
        (b'"a""b","1"\n', None),  # an escaped quote
        (b'"a","1"\nb,2\n', None),  # quoted and unquoted lines mixed
        (b"a,1\rb,2\n", None),  # a lone carriage return
        (b"a\x00,1\n", None),
        (b"\xef\xbb\xbfa,1\n", None),  # a byte-order mark Arrow would drop
        (b"a,1,2\n", None),
        (b"\xff,1\n", None),
    ],
)
def test_only_plain_lines_are_split_by_arrow(data: bytes, plain: list[list[str]] | None) -> None:
    fields = plain_fields(data, 2)
    assert (None if fields is None else [f.to_pylist() for f in fields]) == plain


def test_chunks_end_at_line_ends_and_count_the_lines_before_them() -> None:
    data = b"".join(b"line %d\n" % i for i in range(10_000))
    found = list(chunks(io.BytesIO(data), NAME, 4096))
    assert b"".join(c.data for c in found) == data
    assert all(c.data.endswith(b"\n") for c in found)
    assert [c.start for c in found] == [
        sum(p.data.count(b"\n") for p in found[:i]) for i in range(len(found))
    ]
    assert found[1].data.split(b"\n", 1)[0] == b"line %d" % found[1].start


# -- S3 Inventory CSV, ORC and Parquet --------------------------------------------------------------------

COLUMNS = ["Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag"]


def _inventory_line(key: str, **more: str) -> str:
    values = {
        "Bucket": BUCKET,
        "Key": key,
        "VersionId": "v",
        "IsLatest": "true",
        "IsDeleteMarker": "false",
        "Size": "12",
        "LastModifiedDate": "2024-05-01T12:00:00.000Z",
        "ETag": "0123456789abcdef",
    } | more
    return ",".join(f'"{values[c]}"' for c in COLUMNS) + "\n"


def _same_inventory(data: bytes) -> list[tuple[str, int]] | str:
    expected = _outcome(lambda: _reference(inventory_csv_rows(io.BytesIO(data), COLUMNS, "d.csv.gz", BUCKET)))
    found = _outcome(
        lambda: _pairs(
            manifestbatch.inventory_csv_batches(io.BytesIO(data), COLUMNS, "d.csv.gz", BUCKET, EVERYTHING)
        )
    )
    assert found == expected
    return found


@pytest.mark.parametrize(
    "odd",
    [
        "",
        _inventory_line("a%2Fb+c%C3%A9.txt"),
        _inventory_line("old", IsLatest="false") + _inventory_line("gone", IsDeleteMarker="TRUE", Size=""),
        _inventory_line("flag", IsLatest=" true "),
        _inventory_line("other", Bucket="other-bucket"),
        _inventory_line("%FF"),
        _inventory_line("big", Size="99999999999999999"),
        _inventory_line("neg", Size="-1"),
        _inventory_line(""),
        _inventory_line("bad-time", LastModifiedDate="soon"),
        '"src-bucket","short"\n',
    ],
    ids=[
        "plain",
        "url-encoded",
        "old-and-deleted",
        "spaced-flag",
        "other-bucket",
        "bad-utf8",
        "huge-size",
        "negative",
        "empty-key",
        "bad-time",
        "short",
    ],
)
def test_inventory_csv_read_in_batches_gives_the_row_parser_s_objects_or_error(odd: str) -> None:
    text = "".join(_inventory_line(f"k/{i:05d}", Size=str(i)) for i in range(1500)) + odd
    text += "".join(_inventory_line(f"m/{i:05d}") for i in range(1500))
    found = _same_inventory(gzip.compress(text.encode()))
    if isinstance(found, str):
        assert "d.csv.gz, line 1501" in found


def _arrow_batches(table: pa.Table) -> Iterator[tuple[str, pa.RecordBatch]]:
    for n, batch in enumerate(table.to_batches(max_chunksize=3)):
        yield f"rows {3 * n + 1}-{3 * n + batch.num_rows}", batch


def _same_arrow(table: pa.Table, selection: Selection = EVERYTHING) -> list[tuple[str, int]] | str:
    def rows() -> list[tuple[str, int]]:
        batches = (
            (label, {c: b.column(c).to_pylist() for c in b.column_names})
            for label, b in _arrow_batches(table)
        )
        return _reference(inventory_batch_rows(batches, "d.parquet", BUCKET), selection)

    found = _outcome(
        lambda: _pairs(
            manifestbatch.inventory_arrow_batches(_arrow_batches(table), "d.parquet", BUCKET, selection)
        )
    )
    assert found == _outcome(rows)
    return found


def _table(**changes: Any) -> pa.Table:
    columns: dict[str, Any] = {
        "bucket": [BUCKET] * 7,
        "key": [f"k{i}" for i in range(7)],
        "is_latest": [True, True, False, None, True, True, True],
        "is_delete_marker": [False, None, False, False, True, False, False],
        "size": pa.array([1, 2, 3, 4, 5, 6, 7], pa.int64()),
        "last_modified_date": pa.array([T] * 7, pa.timestamp("ms", tz="UTC")),
        "e_tag": ["e", None, "e", "e", "e", "e", "e"],
    }
    columns.update(changes)
    return pa.table({k: v for k, v in columns.items() if v is not None})


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"bucket": None, "is_latest": None, "is_delete_marker": None, "e_tag": None},
        {"bucket": [BUCKET, None, BUCKET, BUCKET, BUCKET, BUCKET, "evil"]},
        {"key": ["k0", "k1", "k2", "k3", "k4", "", "k6"]},
        {"key": ["k0", None, "k2", "k3", "k4", "k5", "k6"]},
        {"size": pa.array([1, 2, 3, 4, 5, -6, 7], pa.int64())},
        {"size": pa.array([1, 2, 3, 4, 5, 6, 2**63 - 1], pa.uint64())},
        {"size": ["1", "2", "3", "4", "5", "6", "7"]},
        {"e_tag": ["e", "e", "e", "e", "e", "é", "e"]},
        {"is_latest": ["true"] * 7},
    ],
    ids=[
        "versions",
        "key-and-size-only",
        "other-bucket",
        "empty-key",
        "null-key",
        "negative",
        "huge-unsigned",
        "text-sizes",
        "bad-etag",
        "text-flags",
    ],
)
def test_columnar_batches_give_the_row_parser_s_objects_or_error(changes: dict[str, Any]) -> None:
    _same_arrow(_table(**changes))


def test_columnar_times_are_read_where_the_filter_compares_them() -> None:
    late = Selection("", lambda o: o.last_modified >= T, True, "d.parquet")
    assert _same_arrow(_table(), late) == [("k0", 1), ("k1", 2), ("k5", 6), ("k6", 7)]
    untimed = _table(last_modified_date=None)
    assert "has no last-modified time" in str(_same_arrow(untimed, late))


def test_json_lines_are_read_in_chunks_by_the_row_parser() -> None:
    text = (
        "".join(f'{{"key": "j/{i:05d}", "size": {i}}}\n' for i in range(5000)) + '{"key": "x", "size": -1}\n'
    )
    data = text.encode()
    expected = _outcome(lambda: _reference(jsonl_rows(io.BytesIO(data), NAME, BUCKET)))
    found = _outcome(lambda: _pairs(manifestbatch.jsonl_batches(io.BytesIO(data), NAME, BUCKET, EVERYTHING)))
    assert found == expected and "line 5001: size -1" in str(found)


def test_a_selection_of_columns_keeps_what_to_objects_keeps() -> None:
    rows = [ManifestRow(f"{p}/{i}", i, "", T) for i in range(50) for p in ("a", "b")]
    selection = Selection("a/", lambda o: o.size % 3 == 0, False, NAME)
    keys = manifestbatch.key_array([r.key for r in rows])
    sizes = KeyBatch.of((r.key, r.size) for r in rows).sizes
    found = _pairs([selection.columns(keys, sizes, [r.last_modified for r in rows])])
    assert found == _reference(rows, selection) and found


@pytest.mark.parametrize("length", [16_383, 16_384, 16_385])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_the_longest_line_is_measured_as_the_row_parser_measures_it(length: int, end: str) -> None:
    line = "k" * (length - 2) + ",1"
    text = "key,size" + end + _lines(3000).replace("\n", end) + line + end + "z,2" + end
    _same_key_list(text.encode())


_ESCAPES = [
    "%20",
    "%2F",
    "%2f",
    "%25",
    "%41",
    "%32",
    "%C3%A9",
    "%E6%97%A5",
    "%FF",
    "%C3",
    "%",
    "%4",
    "+",
    "%2B",
]


@pytest.mark.parametrize("seed", range(10))
def test_url_encoded_inventory_keys_decode_as_the_row_parser_decodes_them(seed: int) -> None:
    rng = random.Random(seed)
    pool = (
        _ESCAPES if seed % 2 else ["%20", "%2F", "%C3%A9", "+", "%2B", "%E6%97%A5"]
    )  # even: no risky escape
    keys = []
    for i in range(rng.randrange(500, 4000)):
        parts = [rng.choice(["a", "b/", "x", rng.choice(pool)]) for _ in range(rng.randrange(1, 6))]
        keys.append("".join(parts) + str(i))
    text = "".join(_inventory_line(k) for k in keys)
    _same_inventory(text.encode())


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("2024-05-01T12:00:00.000Z", True),
        ("2024-05-01T12:00:00Z", True),
        ("2024-05-01T12:00:00.123456+00:00", True),
        ("2024-05-01T12:00:00", True),
        ("", True),
        ("2024-02-29T00:00:00Z", True),
        ("2023-02-29T00:00:00Z", False),  # no such day
        ("2024-04-31T00:00:00Z", False),
        ("0000-01-01T00:00:00Z", False),
        ("2024-13-01T00:00:00Z", False),
        ("2024-05-01T24:00:00Z", False),
        ("2024-05-01T12:60:00Z", False),
        ("2024-05-01 12:00:00Z", False),  # a time, but not as S3 writes one: the row parser reads it
        (" 2024-05-01T12:00:00Z", False),
        ("2024-05-01T12:00:00.1Z", False),
    ],
)
def test_times_are_checked_by_column_only_as_s3_writes_them(text: str, plain: bool) -> None:
    column = pa.array([text, "2024-05-01T12:00:00.000Z"], pa.large_string())
    assert manifestbatch._times_ok(column) is plain
    if plain:  # what passes is what the row parser reads
        assert all(parse_time(value, "t") or value == "" for value in column.to_pylist())
