"""Manifests: the rows of an S3 Inventory report or of a CSV / JSON-lines key list. Pure parsing.

Where it sits: when `spec.source.manifest` is set, planning (`manifestscan.py`) and the copy engine read
the objects to copy from a manifest instead of listing the source. The adapter (`manifestio.py`) opens
the files (S3 or local) and hands their byte streams here; this module turns them into `ManifestRow`
values, one line (or one columnar batch) at a time, so memory stays constant per data file. Planning reads
the same formats a chunk at a time (`manifestbatch.py`), with these row parsers as its reference.

Every byte is the tenant's: lines, keys, sizes and data files are bounded, and every error names the
file and line (or row group) and what was wrong, without echoing more than a short, escaped excerpt.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast
from urllib.parse import unquote_to_bytes

from ferry.model.copyjob import MAX_KEY_BYTES
from ferry.worker.objects import ObjectInfo

#: One line of a CSV or JSON-lines manifest at most (a URL-encoded 1024-byte key takes up to 3 KiB, and
#: an inventory line carries up to about twenty more short columns).
MAX_LINE_BYTES = 16 * 1024
#: Data files one inventory manifest.json may name, and that file's own size at most.
MAX_DATA_FILES = 100_000
MAX_MANIFEST_JSON_BYTES = 32 * 2**20
#: S3's largest object; sizes above it are not sizes of real objects.
MAX_OBJECT_SIZE = 5 * 2**40
#: Columns one header line or fileSchema may name.
MAX_COLUMNS = 64
_GZIP_MAGIC = b"\x1f\x8b"


class ManifestError(Exception):
    """A manifest cannot be read: the message names the file, the line or row group, and the problem."""


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One object a manifest names. ``etag`` is "" and ``last_modified`` None where the manifest has no
    such column; the copy then reads them from the source object itself."""

    key: str
    size: int
    etag: str = ""
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class DataFile:
    """One data file an inventory manifest.json names."""

    key: str
    size: int | None
    md5: str | None


@dataclass(frozen=True, slots=True)
class Inventory:
    """What an S3 Inventory manifest.json says: the bucket it lists, the format and its files."""

    source_bucket: str
    file_format: str  # CSV, ORC or Parquet
    columns: tuple[str, ...]  # the CSV columns in order (fileSchema); empty for ORC and Parquet
    files: tuple[DataFile, ...]


def excerpt(text: str | bytes, limit: int = 60) -> str:
    """A short, escaped rendering of tenant-written text for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(shown + ("..." if len(text) > limit else ""))


def _where(name: str, line: int | None) -> str:
    return f"{name}, line {line}" if line is not None else name


def check_key(key: str, where: str) -> str:
    if not key:
        raise ManifestError(f"{where}: the key is empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise ManifestError(f"{where}: the key is {size} bytes of UTF-8; S3 keys are at most {MAX_KEY_BYTES}")
    return key


def parse_size(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ManifestError(f"{where}: size {excerpt(str(value))} is not a whole number of bytes")
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 16:
            raise ManifestError(f"{where}: size {excerpt(text)} is not a whole, non-negative number of bytes")
        size = int(text)
    if not 0 <= size <= MAX_OBJECT_SIZE:
        raise ManifestError(f"{where}: size {size} is outside 0..{MAX_OBJECT_SIZE} (S3's largest object)")
    return size


def parse_time(value: Any, where: str) -> datetime | None:
    """An inventory's LastModifiedDate (ISO 8601) or a columnar timestamp; None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ManifestError(f"{where}: last-modified time {excerpt(text)} is not ISO 8601") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _etag(value: Any, where: str) -> str:
    text = "" if value is None else str(value).strip().strip('"')
    if len(text) > 128 or not text.isascii() or not text.isprintable():
        raise ManifestError(f"{where}: ETag {excerpt(text)} is not an S3 ETag")
    return text


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


# -- byte streams -> lines ------------------------------------------------------------------------------


def maybe_gunzip(stream: IO[bytes]) -> IO[bytes]:
    """The stream itself, or its decompression when it starts with gzip's magic bytes."""
    buffered = io.BufferedReader(cast(Any, stream))  # peek() without consuming: any readable stream will do
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


#: What a stream that breaks off mid-way raises while it is read (a truncated or corrupt gzip member).
BROKEN_STREAM = (EOFError, OSError, zlib.error)


def broken_off(name: str, line: int, exc: BaseException) -> ManifestError:
    """The error for a stream that broke off after ``line`` complete lines."""
    return ManifestError(
        f"{name}: the data breaks off after line {line} ({type(exc).__name__}: the file is "
        "truncated or corrupt); upload it again"
    )


def lines(
    stream: IO[bytes], name: str, limit: int = MAX_LINE_BYTES, *, start: int = 0
) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its end) of a stream, each at most ``limit`` bytes; a truncated or
    corrupt gzip stream is an error naming the line it broke off after. ``start``: lines of the same
    file before this stream (a chunk of it), so that numbers name lines of the file."""
    number = start
    while True:
        try:
            line = stream.readline(limit + 1)
        except BROKEN_STREAM as exc:
            raise broken_off(name, number, exc) from exc
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            raise ManifestError(f"{name}, line {number}: longer than {limit} bytes; is this a manifest?")
        yield number, line.rstrip(b"\r\n")


class Checked(io.RawIOBase):
    """A readable stream that counts its bytes and their MD5, to check them against manifest.json."""

    def __init__(self, raw: IO[bytes], name: str, expected: DataFile | None) -> None:
        self._raw = raw
        self._name = name
        self._expected = expected
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        if not data:
            return 0
        buffer[: len(data)] = data
        self._md5.update(data)
        self._size += len(data)
        return len(data)

    def verify(self) -> None:
        """Raise ManifestError unless the bytes read match the size and MD5 manifest.json gives."""
        while self.read(64 * 1024):  # bytes after what was parsed (a gzip member's end) count too
            pass
        expected = self._expected
        if expected is None:
            return
        if expected.size is not None and expected.size != self._size:
            raise ManifestError(
                f"{self._name}: {self._size} bytes, manifest.json says {expected.size}; the file is "
                "truncated or was replaced"
            )
        if expected.md5 is not None and expected.md5.lower() != self._md5.hexdigest():
            raise ManifestError(
                f"{self._name}: MD5 {self._md5.hexdigest()}, manifest.json says {excerpt(expected.md5)}; "
                "the file is corrupt or was replaced"
            )


# -- S3 Inventory manifest.json -------------------------------------------------------------------------


def _csv_columns(schema: str, name: str) -> tuple[str, ...]:
    columns = tuple(c.strip() for c in schema.split(","))
    if len(columns) > MAX_COLUMNS or not all(c.isascii() and c.isalnum() for c in columns):
        raise ManifestError(f"{name}: fileSchema {excerpt(schema)} is not a list of inventory column names")
    for needed in ("Bucket", "Key", "Size"):
        if needed not in columns:
            raise ManifestError(
                f"{name}: fileSchema has no {needed} column; configure the inventory to include Size"
                if needed == "Size"
                else f"{name}: fileSchema has no {needed} column"
            )
    return columns


def parse_inventory_manifest(data: bytes, name: str, source_bucket: str) -> Inventory:
    """Read an S3 Inventory manifest.json. The inventory must list ``source_bucket``."""
    if len(data) > MAX_MANIFEST_JSON_BYTES:
        raise ManifestError(
            f"{name}: {len(data)} bytes; a manifest.json is at most {MAX_MANIFEST_JSON_BYTES}"
        )
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"{name}: not JSON ({type(exc).__name__}); is this an inventory manifest.json?"
        ) from exc
    if not isinstance(document, dict):
        raise ManifestError(f"{name}: not a JSON object; is this an inventory manifest.json?")
    listed = document.get("sourceBucket")
    if listed != source_bucket:
        shown = excerpt(listed) if isinstance(listed, str) else "no sourceBucket"
        raise ManifestError(
            f"{name}: the inventory lists bucket {shown}, not the source bucket {source_bucket!r}; "
            "use that bucket's inventory"
        )
    file_format = document.get("fileFormat")
    if file_format not in ("CSV", "ORC", "Parquet"):
        shown = excerpt(file_format) if isinstance(file_format, str) else "none"
        raise ManifestError(f"{name}: fileFormat {shown}; Ferry reads CSV, ORC and Parquet inventories")
    schema = document.get("fileSchema")
    if not isinstance(schema, str) or len(schema) > 64 * 1024:
        raise ManifestError(f"{name}: fileSchema is missing or not a string")
    columns = _csv_columns(schema, name) if file_format == "CSV" else ()
    files = document.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestError(f"{name}: files is missing or empty")
    if len(files) > MAX_DATA_FILES:
        raise ManifestError(f"{name}: names {len(files)} data files; at most {MAX_DATA_FILES}")
    found: list[DataFile] = []
    for index, entry in enumerate(files):
        where = f"{name}: files[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ManifestError(f"{where} has no key")
        key = check_key(entry["key"], where)
        size = entry.get("size")
        md5 = entry.get("MD5checksum")
        if md5 is not None and (not isinstance(md5, str) or len(md5) != 32 or not md5.isascii()):
            raise ManifestError(f"{where}: MD5checksum {excerpt(str(md5))} is not 32 hex digits")
        found.append(DataFile(key, None if size is None else parse_size(size, where), md5))
    return Inventory(source_bucket, file_format, columns, tuple(found))


def unquote_key(text: str, where: str) -> str:
    """A CSV inventory's URL-encoded key, decoded (UTF-8)."""
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{where}: the URL-encoded key {excerpt(text)} is not UTF-8") from exc


def _row_of(record: Mapping[str, Any], where: str, bucket: str, *, url_encoded: bool) -> ManifestRow | None:
    """One inventory record (column name -> value, names as in CSV fileSchema), or None for a row that is
    no current object (an older version, a delete marker)."""
    row_bucket = record.get("Bucket")
    if row_bucket is not None and row_bucket != bucket:
        raise ManifestError(
            f"{where}: a key of bucket {excerpt(str(row_bucket))}, not of the source bucket {bucket!r}; "
            "the manifest must list the source bucket only"
        )
    if _flag(record.get("IsDeleteMarker", False)) or not _flag(record.get("IsLatest", True)):
        return None
    raw_key = record.get("Key")
    if not isinstance(raw_key, str):
        raise ManifestError(f"{where}: no key")
    key = check_key(unquote_key(raw_key, where) if url_encoded else raw_key, where)
    return ManifestRow(
        key=key,
        size=parse_size(record.get("Size"), where),
        etag=_etag(record.get("ETag"), where),
        last_modified=parse_time(record.get("LastModifiedDate"), where),
    )


def inventory_csv_rows(
    stream: IO[bytes], columns: Sequence[str], name: str, bucket: str
) -> Iterator[ManifestRow]:
    """The current objects of one inventory CSV data file (gzipped or not; no header; URL-encoded keys)."""
    return inventory_csv_records(csv_records(maybe_gunzip(stream), name), columns, name, bucket)


def inventory_csv_records(
    records: Iterable[tuple[int, list[str]]], columns: Sequence[str], name: str, bucket: str
) -> Iterator[ManifestRow]:
    """The current objects of an inventory CSV file's records (`csv_records` of the file or of a chunk
    of it)."""
    for number, fields in records:
        where = _where(name, number)
        if not fields:
            continue
        if len(fields) != len(columns):
            raise ManifestError(
                f"{where}: {len(fields)} columns, fileSchema names {len(columns)}; the file is corrupt or "
                "belongs to another inventory"
            )
        row = _row_of(dict(zip(columns, fields, strict=True)), where, bucket, url_encoded=True)
        if row is not None:
            yield row


def csv_records(stream: IO[bytes], name: str, *, start: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each line of a CSV stream, by one reader for the whole stream (a reader
    per line cost a fifth of planning a manifest). A record is one line: a quoted line break would make
    the line numbers of every later error wrong, and keys with line breaks belong in JSON lines.
    ``start``: lines of the file before this stream."""
    number = start

    def texts() -> Iterator[str]:
        nonlocal number
        for number, raw in lines(stream, name, start=start):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{_where(name, number)}: not UTF-8") from exc

    reader = csv.reader(texts(), strict=True)
    consumed = 0  # physical lines the reader took, counted from start
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            raise ManifestError(
                f"{_where(name, number)}: not one CSV record ({exc}); keys with line breaks need jsonl"
            ) from exc
        if fields is None:
            return
        if reader.line_num - consumed > 1:
            raise ManifestError(
                f"{_where(name, start + consumed + 1)}: a quoted field runs over {reader.line_num - consumed} lines; "
                "keys with line breaks need jsonl"
            )
        consumed = reader.line_num
        yield number, fields


#: Parquet and ORC inventory column names -> the CSV fileSchema names `_row_of` reads.
_COLUMNAR_NAMES = {
    "bucket": "Bucket",
    "key": "Key",
    "version_id": "VersionId",
    "is_latest": "IsLatest",
    "is_delete_marker": "IsDeleteMarker",
    "size": "Size",
    "last_modified_date": "LastModifiedDate",
    "e_tag": "ETag",
}
COLUMNAR_COLUMNS = tuple(_COLUMNAR_NAMES)


def inventory_batch_rows(
    batches: Iterable[tuple[str, Mapping[str, Sequence[Any]]]], name: str, bucket: str
) -> Iterator[ManifestRow]:
    """The current objects of columnar batches (``(label, column -> values)``, one row group or stripe
    each, as `manifestio` reads ORC and Parquet files). Keys in these files are not URL-encoded."""
    for label, columns in batches:
        where = f"{name}, {label}"
        if "key" not in columns or "size" not in columns:
            raise ManifestError(f"{where}: no key or size column; configure the inventory to include Size")
        count = len(columns["key"])
        named = {_COLUMNAR_NAMES[c]: v for c, v in columns.items() if c in _COLUMNAR_NAMES}
        if any(len(values) != count for values in named.values()):
            raise ManifestError(f"{where}: columns of different lengths; the file is corrupt")
        for index in range(count):
            record = {column: values[index] for column, values in named.items()}
            row = _row_of(record, f"{where}, row {index + 1}", bucket, url_encoded=False)
            if row is not None:
                yield row


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def missing_time(name: str, key: str) -> ManifestError:
    """The error for an object without a last-modified time where spec.filter compares times."""
    return ManifestError(
        f"{name}: {excerpt(key)} has no last-modified time, and spec.filter.modifiedAfter/"
        "modifiedBefore need one; add a lastModified column or drop those filters"
    )


def to_objects(
    rows: Iterable[ManifestRow], accepts: Any, prefix: str, needs_time: bool, name: str
) -> Iterator[ObjectInfo]:
    """The rows under ``prefix`` that ``accepts`` (a compiled spec.filter) keeps, as the listing's
    `ObjectInfo` values. ``needs_time``: the filter compares modification times, which every row must then
    carry (a key list without lastModified cannot say)."""
    for row in rows:
        if not row.key.startswith(prefix):
            continue
        if row.last_modified is None and needs_time:
            raise missing_time(name, row.key)
        obj = ObjectInfo(row.key, row.size, row.etag, row.last_modified or EPOCH)
        if accepts(obj):
            yield obj


# -- key lists: CSV with a header line, JSON lines ------------------------------------------------------

#: Columns of a CSV key list (its header line names them, in any order) and JSON-lines fields.
KEY_LIST_COLUMNS = ("bucket", "key", "size", "etag", "lastModified", "versionId")


def _key_list_row(record: Mapping[str, Any], where: str, bucket: str) -> ManifestRow:
    row_bucket = record.get("bucket")
    if row_bucket not in (None, "") and row_bucket != bucket:
        raise ManifestError(
            f"{where}: a key of bucket {excerpt(str(row_bucket))}, not of the source bucket {bucket!r}"
        )
    key = record.get("key")
    if not isinstance(key, str):
        raise ManifestError(f"{where}: no key (a string)")
    if "size" not in record or record["size"] in (None, ""):
        raise ManifestError(f"{where}: no size; planning needs every object's size")
    return ManifestRow(
        key=check_key(key, where),
        size=parse_size(record["size"], where),
        etag=_etag(record.get("etag"), where),
        last_modified=parse_time(record.get("lastModified"), where),
    )


def key_list_header(fields: Sequence[str], where: str) -> list[str]:
    """The columns a CSV key list's header line names, checked: those of `KEY_LIST_COLUMNS`, each once,
    key and size among them."""
    header = [f.strip() for f in fields]
    unknown = [c for c in header if c not in KEY_LIST_COLUMNS]
    if unknown or len(set(header)) != len(header) or "key" not in header or "size" not in header:
        raise ManifestError(
            f"{where}: the header line must name key and size, and only columns of "
            f"{', '.join(KEY_LIST_COLUMNS)}, each once (found {excerpt(','.join(fields))})"
        )
    return header


def key_list_csv_rows(stream: IO[bytes], name: str, bucket: str) -> Iterator[ManifestRow]:
    """Rows of a CSV key list: a header line naming columns of `KEY_LIST_COLUMNS` (key and size
    required), then one object per line; gzipped or not. Keys are written as they are (CSV-quoted
    where they hold a comma or a quote), not URL-encoded."""
    return key_list_records(csv_records(maybe_gunzip(stream), name), name, bucket)


def key_list_records(
    records: Iterable[tuple[int, list[str]]],
    name: str,
    bucket: str,
    header: Sequence[str] | None = None,
) -> Iterator[ManifestRow]:
    """Rows of a CSV key list's records (`csv_records`). With ``header`` (read already and checked by
    `key_list_header`) the records are data lines of a later chunk of the file."""
    columns: list[str] | None = None if header is None else list(header)
    for number, fields in records:
        where = _where(name, number)
        if columns is None:
            columns = key_list_header(fields, where)
            continue
        if not fields:
            continue
        if len(fields) != len(columns):
            raise ManifestError(f"{where}: {len(fields)} columns, the header names {len(columns)}")
        yield _key_list_row(dict(zip(columns, fields, strict=True)), where, bucket)
    if columns is None:
        raise ManifestError(f"{name}: empty; a CSV key list starts with a header line such as key,size")


def jsonl_rows(stream: IO[bytes], name: str, bucket: str) -> Iterator[ManifestRow]:
    """Rows of a JSON-lines key list: one object per line with key and size (etag, lastModified,
    versionId, bucket optional); blank lines are skipped; gzipped or not."""
    return jsonl_records(lines(maybe_gunzip(stream), name), name, bucket)


def jsonl_records(numbered: Iterable[tuple[int, bytes]], name: str, bucket: str) -> Iterator[ManifestRow]:
    """Rows of a JSON-lines key list's numbered lines (`lines` of the file or of a chunk of it)."""
    for number, raw in numbered:
        where = _where(name, number)
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not a JSON object ({type(exc).__name__})") from exc
        if not isinstance(record, dict):
            raise ManifestError(f"{where}: not a JSON object")
        unknown = [k for k in record if k not in KEY_LIST_COLUMNS]
        if unknown:
            raise ManifestError(
                f"{where}: unknown field {excerpt(str(unknown[0]))}; fields are {', '.join(KEY_LIST_COLUMNS)}"
            )
        yield _key_list_row(record, where, bucket)
