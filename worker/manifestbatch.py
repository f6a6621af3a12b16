"""Manifests read in columnar batches, for planning. Pure: bytes and Arrow record batches in, `KeyBatch` values
(the keys and sizes of the objects a CopyJob copies) out.

Where it sits: planning (`manifestscan.py`, through `manifestio.manifest_batches`) reads a manifest of millions
of rows once or twice, and row by row in Python (`manifest.py`) that costs about 6 µs a row. Here a CSV or
JSON-lines file is cut into chunks of whole lines (`CHUNK_BYTES`); a CSV chunk whose lines are all *plain* -
every field unquoted, or every field quoted with no quote inside, one record per line, sizes written as digits,
flags as true/false, ETags printable - is split and checked with Arrow's compute kernels at once, and an ORC or
Parquet batch is checked by column. Anything else (a quote inside a field, a bad size, an odd flag, a column of
an unexpected type) sends that chunk or batch to the row parser of `manifest.py`, which stays the one
definition of what a manifest may hold: it gives the same rows, or the error naming file and line. The plain
path accepts only what the row parser accepts, with the same keys and sizes, so a plan never depends on which
path read a chunk. JSON lines always take the row parser, chunk by chunk.

Every byte is the tenant's: chunks, lines and batches are bounded, and nothing here echoes them.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ferry.model.copyjob import MAX_KEY_BYTES
from ferry.worker.manifest import (
    BROKEN_STREAM,
    COLUMNAR_COLUMNS,
    EPOCH,
    MAX_LINE_BYTES,
    MAX_OBJECT_SIZE,
    ManifestError,
    ManifestRow,
    broken_off,
    csv_records,
    inventory_batch_rows,
    inventory_csv_records,
    jsonl_records,
    key_list_header,
    key_list_records,
    lines,
    maybe_gunzip,
    missing_time,
    parse_time,
    to_objects,
    unquote_key,
)
from ferry.worker.objects import ObjectInfo

#: Bytes of whole lines parsed at once: a few thousand rows, a few MiB of Arrow and Python values with them.
CHUNK_BYTES = 1 << 20
#: Longest ETag a row may carry (`manifest._etag`).
_MAX_ETAG = 128


def key_array(values: Sequence[str]) -> np.ndarray:
    """A one-dimensional NumPy array of Python strings (never split into characters or rows)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class KeyBatch:
    """The objects of one batch, in the manifest's order: ``keys`` a NumPy array of str (sampled and
    searched without a Python loop per key), ``sizes`` int64."""

    keys: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, int]]) -> KeyBatch:
        keys: list[str] = []
        sizes: list[int] = []
        for key, size in pairs:
            keys.append(key)
            sizes.append(size)
        return cls(key_array(keys), np.array(sizes, dtype=np.int64))


@dataclass(frozen=True)
class Selection:
    """Which rows become objects: under spec.source.prefix and kept by spec.filter (``accepts``; None when
    the filter keeps everything), with a last-modified time where the filter compares times. The same rules
    as `manifest.to_objects`, which the row parser's chunks go through."""

    prefix: str
    accepts: Callable[[ObjectInfo], bool] | None
    needs_time: bool
    #: The manifest as messages name it.
    name: str

    def rows(self, rows: Iterable[ManifestRow]) -> KeyBatch:
        """The objects of rows from the row parser (its errors come in the manifest's order)."""
        accepts = self.accepts or (lambda _obj: True)
        objects = to_objects(rows, accepts, self.prefix, self.needs_time, self.name)
        return KeyBatch.of((obj.key, obj.size) for obj in objects)

    def columns(
        self, keys: np.ndarray, sizes: np.ndarray, times: Sequence[datetime | None] | None
    ) -> KeyBatch:
        """The objects of checked columns; ``times`` None: the manifest holds no times."""
        if self.prefix and len(keys):
            under = np.fromiter((k.startswith(self.prefix) for k in keys), dtype=bool, count=len(keys))
            if not under.all():
                index = np.flatnonzero(under)
                keys, sizes = keys[index], sizes[index]
                times = None if times is None else [times[i] for i in index.tolist()]
        if self.needs_time and len(keys):
            if times is None:
                raise missing_time(self.name, keys[0])
            for key, stamp in zip(keys, times, strict=True):
                if stamp is None:
                    raise missing_time(self.name, key)
        if self.accepts is not None and len(keys):
            stamps: Iterable[datetime | None] = itertools.repeat(None) if times is None else times
            keep = np.fromiter(
                (
                    self.accepts(ObjectInfo(key, size, "", stamp or EPOCH))
                    # stamps repeats None without end when the manifest has no times.
                    for key, size, stamp in zip(keys, sizes.tolist(), stamps, strict=False)
                ),
                dtype=bool,
                count=len(keys),
            )
            keys, sizes = keys[keep], sizes[keep]
        return KeyBatch(keys, sizes)


# -- chunks of whole lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Whole lines of a file (the last line's end may be missing at the end of the file), and how many
    lines of the file come before them."""

    data: bytes
    start: int


def chunks(stream: IO[bytes], name: str, size: int | None = None) -> Iterator[Chunk]:
    """The stream in chunks of about ``size`` (`CHUNK_BYTES`) bytes cut after a line end. A stream that
    breaks off is an error naming the last whole line read, as the row parser's is."""
    size = size or CHUNK_BYTES
    read = getattr(stream, "read1", None) or stream.read
    start = 0
    parts: list[bytes] = []
    held = 0
    while True:
        try:
            block = read(size)
        except BROKEN_STREAM as exc:
            raise broken_off(name, start + sum(p.count(b"\n") for p in parts), exc) from exc
        if block:
            parts.append(block)
            held += len(block)
            if held < size:
                continue
        data = b"".join(parts)
        if not block:
            if data:
                yield Chunk(data, start)
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            # A whole chunk without a line end: its line is far longer than any manifest line may be.
            raise ManifestError(
                f"{name}, line {start + 1}: longer than {MAX_LINE_BYTES} bytes; is this a manifest?"
            )
        yield Chunk(data[:cut], start)
        start += data.count(b"\n", 0, cut)
        parts = [data[cut:]] if cut < len(data) else []
        held = len(data) - cut


def plain_fields(data: bytes, columns: int, wanted: Sequence[int] | None = None) -> list[pa.Array] | None:
    """The fields of every line of ``data`` (whole lines of ``columns`` fields) as Arrow string arrays, those
    of the columns ``wanted`` (by index; all when None), when each non-empty line is one plain CSV record -
    no quote in the whole chunk, or every field quoted with no quote inside - that Python's csv reader
    (`manifest.csv_records`) reads into exactly these fields; None otherwise. Lines are at most
    `MAX_LINE_BYTES` and UTF-8, ends are LF or CRLF, as the row parser requires."""
    # With one column a line of a lone quote could pass the quote count below; every manifest has two or more.
    # A byte-order mark at the start of a chunk would be dropped by Arrow's reader and kept by Python's.
    if columns < 2 or b"\x00" in data or data.startswith(_BOM):
        return None
    carriage = data.count(b"\r")
    # A carriage return only right before a line feed: Python's csv refuses one anywhere else.
    if carriage and carriage != data.count(b"\r\n"):
        return None
    if _longest_line(data) > MAX_LINE_BYTES:
        return None
    picked = list(range(columns)) if wanted is None else list(wanted)
    quotes = data.count(b'"')
    return _quoted(data, columns, picked, carriage, quotes) if quotes else _unquoted(data, columns, picked)


_BOM = b"\xef\xbb\xbf"


def _longest_line(data: bytes) -> int:
    """Bytes of the longest line without its line feed (a carriage return counted), as `manifest.lines`
    measures lines against `MAX_LINE_BYTES`."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(data)]))
    return int((stops - starts).max())


def _unquoted(data: bytes, columns: int, picked: list[int]) -> list[pa.Array] | None:
    """Fields of lines without any quote: Arrow's CSV reader with quoting off splits at commas and line
    ends, as Python's does (blank lines skipped, a CRLF a line end); the whole chunk is checked as UTF-8,
    the columns not read too."""
    import pyarrow.csv as pcsv

    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    names = [f"c{j}" for j in range(columns)]
    try:
        table = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=len(data) + 1),
            parse_options=pcsv.ParseOptions(
                quote_char=False, double_quote=False, escape_char=False, newlines_in_values=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={names[j]: pa.large_string() for j in picked},
                include_columns=[names[j] for j in picked],
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowException:
        return None  # a line of another number of fields, an empty chunk
    return [table.column(names[j]).combine_chunks() for j in picked]


def _quoted(
    data: bytes, columns: int, picked: list[int], carriage: int, quotes: int
) -> list[pa.Array] | None:
    """Fields of lines quoted field by field: each line is "f1","f2",...,"fn" with no quote inside a field,
    split by Arrow's string kernels and proved so line by line (starts, ends, n fields) and by the count of
    quotes (two per field, so none inside one)."""
    text = data[:-1] if data.endswith(b"\n") else data
    try:
        whole = pa.array([text], pa.large_binary()).cast(pa.large_string())  # refuses what is not UTF-8
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    rows = pc.list_flatten(pc.split_pattern(whole, "\n"))
    if carriage:
        rows = pc.utf8_rtrim(rows, characters="\r")
    filled = pc.greater(pc.binary_length(rows), 0)
    if not _all(filled):
        rows = rows.filter(filled)  # blank lines are skipped, as the row parser skips them
    if quotes != 2 * columns * len(rows):
        return None
    if not (_all(pc.starts_with(rows, '"')) and _all(pc.ends_with(rows, '"'))):
        return None
    parts = pc.split_pattern(pc.utf8_slice_codeunits(rows, 1, -1), '","')
    if not _all(pc.equal(pc.list_value_length(parts), columns)):
        return None
    return [pc.list_element(parts, j) for j in picked]


# -- checks by column: each accepts only what the row parser accepts ------------------------------------

_Columns = tuple[np.ndarray, np.ndarray, list[datetime | None] | None]


def _plainly(read: Callable[..., _Columns | None], *args: object) -> _Columns | None:
    """``read(*args)``, or None (the row parser then reads the chunk) when Arrow refuses what it was given:
    whatever Arrow cannot read, the row parser names, or reads, itself."""
    try:
        return read(*args)
    except pa.ArrowException:
        return None


def _all(values: pa.Array | pa.ChunkedArray) -> bool:
    return bool(pc.all(values).as_py())


def _sizes(text: pa.Array) -> np.ndarray | None:
    """Sizes written as 1 to 16 ASCII digits and at most S3's largest object (`manifest.parse_size`
    also takes surrounding spaces: such a chunk goes to the row parser)."""
    length = pc.binary_length(text)
    if not (_all(pc.ascii_is_decimal(text)) and _all(pc.string_is_ascii(text))):
        return None
    if pc.max(length).as_py() > 16:
        return None
    sizes = pc.cast(text, pa.int64()).to_numpy()
    return sizes if not len(sizes) or sizes.max() <= MAX_OBJECT_SIZE else None


def _etags_ok(text: pa.Array) -> bool:
    """Every ETag empty, or printable ASCII of at most 128 characters (what `manifest._etag` keeps)."""
    length = pc.binary_length(text)
    printable = pc.and_(pc.string_is_ascii(text), pc.ascii_is_printable(text))
    return _all(pc.or_(pc.equal(length, 0), pc.and_(printable, pc.less_equal(length, _MAX_ETAG))))


def _keys_ok(keys: pa.Array) -> bool:
    """Every key non-empty and at most `MAX_KEY_BYTES` of UTF-8 (`manifest.check_key`)."""
    length = pc.binary_length(keys)
    return not len(keys) or (pc.min(length).as_py() >= 1 and pc.max(length).as_py() <= MAX_KEY_BYTES)


def _times(text: pa.Array, name: str) -> list[datetime | None] | None:
    """Last-modified times parsed by the row parser's own rule; None when one is not a time."""
    try:
        return [parse_time(value, name) for value in text.to_numpy(zero_copy_only=False).tolist()]
    except ManifestError:
        return None


#: A time as S3 writes them (2024-05-01T12:00:00.000Z), with a time of day that is one: `datetime.fromisoformat`
#: reads it when its date is a real date.
_S3_TIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{3}|\.[0-9]{6})?(Z|\+00:00)?$"
)


def _times_ok(text: pa.Array) -> bool:
    """Every time empty, or written as S3 writes them with a real date: then `manifest.parse_time` reads
    each (others may be times too: their chunk goes to the row parser)."""
    written = text.filter(pc.greater(pc.binary_length(text), 0))
    if not len(written):
        return True
    if not _all(pc.match_substring_regex(written, _S3_TIME)):
        return False
    # A chunk holds few distinct days: each is checked once (February 30th, year 0 and the like).
    for day in pc.unique(pc.utf8_slice_codeunits(written, 0, 10)).to_pylist():
        try:
            date.fromisoformat(day)
        except ValueError:
            return False
    return True


def _checked_times(text: pa.Array, name: str, needs_time: bool) -> tuple[bool, list[datetime | None] | None]:
    """Whether every time is one, and the times themselves where the filter compares them."""
    if not needs_time and _times_ok(text):
        return True, None
    times = _times(text, name)
    return times is not None, times


def _flag(text: pa.Array) -> pa.Array | None:
    """True where a CSV flag says true; None unless every value is true, false or empty in ASCII letters
    of any case (`manifest._flag` compares after stripping spaces: such a chunk goes to the row parser)."""
    if not _all(pc.string_is_ascii(text)):
        return None
    lower = pc.ascii_lower(text)
    if not _all(pc.is_in(lower, value_set=pa.array(["true", "false", ""], pa.large_string()))):
        return None
    return pc.equal(lower, "true")


# -- CSV key lists --------------------------------------------------------------------------------------


def key_list_batches(stream: IO[bytes], name: str, bucket: str, selection: Selection) -> Iterator[KeyBatch]:
    """The selected objects of a CSV key list (`manifest.key_list_csv_rows`; gzipped or not), chunk by chunk."""
    header: list[str] | None = None
    for chunk in chunks(maybe_gunzip(stream), name):
        data, start = chunk.data, chunk.start
        if header is None:
            end = data.find(b"\n") + 1 or len(data)
            header = _header(data, end, name, bucket)
            data, start = data[end:], start + 1
        yield _key_list_chunk(Chunk(data, start), header, name, bucket, selection)
    if header is None:
        raise ManifestError(f"{name}: empty; a CSV key list starts with a header line such as key,size")


def _header(data: bytes, end: int, name: str, bucket: str) -> list[str]:
    try:
        number, fields = next(csv_records(io.BytesIO(data[:end]), name), (1, []))
        return key_list_header(fields, f"{name}, line {number}")
    except ManifestError:
        # Whatever is wrong with the first line, the row parser says it as it would of the whole file.
        list(key_list_records(csv_records(io.BytesIO(data), name), name, bucket))
        raise


def _key_list_chunk(
    chunk: Chunk, header: list[str], name: str, bucket: str, selection: Selection
) -> KeyBatch:
    plain = _plainly(_plain_key_list, chunk.data, header, bucket, name, selection.needs_time)
    if plain is not None:
        return selection.columns(*plain)
    records = csv_records(io.BytesIO(chunk.data), name, start=chunk.start)
    return selection.rows(key_list_records(records, name, bucket, header))


def _plain_key_list(
    data: bytes, header: list[str], bucket: str, name: str, needs_time: bool
) -> _Columns | None:
    wanted = [j for j, column_name in enumerate(header) if column_name != "versionId"]
    fields = plain_fields(data, len(header), wanted)
    if fields is None:
        return None
    column = {header[j]: values for j, values in zip(wanted, fields, strict=True)}
    listed = column.get("bucket")
    if listed is not None and not _all(pc.or_(pc.equal(listed, ""), pc.equal(listed, bucket))):
        return None
    keys = column["key"]
    sizes = _sizes(column["size"])
    if sizes is None or not _keys_ok(keys):
        return None
    if "etag" in column and not _etags_ok(column["etag"]):
        return None
    times = None
    if "lastModified" in column:
        ok, times = _checked_times(column["lastModified"], name, needs_time)
        if not ok:
            return None
    return keys.to_numpy(zero_copy_only=False), sizes, times


# -- S3 Inventory CSV data files ------------------------------------------------------------------------


def inventory_csv_batches(
    stream: IO[bytes], columns: Sequence[str], name: str, bucket: str, selection: Selection
) -> Iterator[KeyBatch]:
    """The selected current objects of one inventory CSV data file (`manifest.inventory_csv_rows`; gzipped
    or not)."""
    for chunk in chunks(maybe_gunzip(stream), name):
        plain = _plainly(_plain_inventory, chunk.data, columns, bucket, name, selection.needs_time)
        if plain is not None:
            yield selection.columns(*plain)
            continue
        records = csv_records(io.BytesIO(chunk.data), name, start=chunk.start)
        yield selection.rows(inventory_csv_records(records, columns, name, bucket))


#: The inventory columns `manifest._row_of` reads; the others are only split off.
_INVENTORY_READ = frozenset(
    {"Bucket", "Key", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag"}
)


def _plain_inventory(
    data: bytes, columns: Sequence[str], bucket: str, name: str, needs_time: bool
) -> _Columns | None:
    wanted = [j for j, column_name in enumerate(columns) if column_name in _INVENTORY_READ]
    fields = plain_fields(data, len(columns), wanted)
    if fields is None:
        return None
    column = {columns[j]: values for j, values in zip(wanted, fields, strict=True)}
    # Every row is of the source bucket, current versions and delete markers alike (`manifest._row_of`).
    if not _all(pc.equal(column["Bucket"], bucket)):
        return None
    deleted = _flag(column["IsDeleteMarker"]) if "IsDeleteMarker" in column else None
    latest = _flag(column["IsLatest"]) if "IsLatest" in column else None
    if ("IsDeleteMarker" in column and deleted is None) or ("IsLatest" in column and latest is None):
        return None
    current = _current(deleted, latest)
    if current is not None:
        column = {c: values.filter(current) for c, values in column.items()}
    keys = _inventory_keys(column["Key"], data, name)
    sizes = _sizes(column["Size"])
    if keys is None or sizes is None:
        return None
    if "ETag" in column and not _etags_ok(column["ETag"]):
        return None
    times = None
    if "LastModifiedDate" in column:
        ok, times = _checked_times(column["LastModifiedDate"], name, needs_time)
        if not ok:
            return None
    return keys, sizes, times


def _current(deleted: pa.Array | None, latest: pa.Array | None) -> pa.Array | None:
    """Which rows are current objects (not a delete marker, the latest version); None: all of them."""
    keep = None
    if deleted is not None:
        keep = pc.invert(deleted)
    if latest is not None:
        keep = latest if keep is None else pc.and_(keep, latest)
    if keep is None or _all(keep):
        return None
    return keep


def _inventory_keys(encoded: pa.Array, data: bytes, name: str) -> np.ndarray | None:
    """Keys URL-decoded as `manifest.unquote_key` decodes them (only those holding % or + change), checked
    as `manifest.check_key` checks them; None when one is not a key. ``data``: the chunk they come from."""
    coded = pc.or_(pc.match_substring(encoded, "%"), pc.match_substring(encoded, "+"))
    if _all(pc.invert(coded)):
        return encoded.to_numpy(zero_copy_only=False) if _keys_ok(encoded) else None
    decoded = _url_decoded(encoded, data)
    if decoded is not None:
        return decoded.to_numpy(zero_copy_only=False) if _keys_ok(decoded) else None
    # Row by row, where decoding all at once could differ from decoding left to right.
    keys: np.ndarray = encoded.to_numpy(zero_copy_only=False)
    lengths = pc.binary_length(encoded).to_numpy().copy()
    for i in np.flatnonzero(coded.to_numpy(zero_copy_only=False)).tolist():
        try:
            keys[i] = unquote_key(keys[i], name)
        except ManifestError:
            return None
        lengths[i] = len(keys[i].encode("utf-8"))
    if len(keys) and (lengths.min() < 1 or lengths.max() > MAX_KEY_BYTES):
        return None
    return keys


#: A URL escape, as `urllib.parse.unquote_to_bytes` reads one.
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
#: Bytes an escape may not decode to here: '%' and hex digits could make, with their neighbours, an
#: escape that only a left-to-right decoder would (rightly) leave as it is.
_ESCAPE_BYTES = frozenset(b"%0123456789ABCDEFabcdef")


def _url_decoded(encoded: pa.Array, data: bytes) -> pa.Array | None:
    """``encoded`` decoded as `manifest.unquote_key` decodes each key ('+' a space, then every escape its
    byte, then the bytes as UTF-8), one replacement over the whole array per escape that ``data`` (the
    chunk, so every escape of every key) holds; None when an escape decodes to a byte that could take part
    in another, or the bytes are not UTF-8."""
    escapes = {escape: int(escape[1:], 16) for escape in set(_ESCAPE.findall(data))}
    if any(value in _ESCAPE_BYTES for value in escapes.values()):
        return None
    binary = pc.replace_substring(encoded.cast(pa.large_binary()), b"+", b" ")
    for escape, value in escapes.items():
        binary = pc.replace_substring(binary, escape, bytes([value]))
    try:
        return binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        return None


# -- S3 Inventory ORC and Parquet batches ---------------------------------------------------------------


def inventory_arrow_batches(
    batches: Iterable[tuple[str, pa.RecordBatch]], name: str, bucket: str, selection: Selection
) -> Iterator[KeyBatch]:
    """The selected current objects of columnar batches (``(label, batch)``, as `manifestio` reads ORC
    stripes and Parquet row groups in slices); a batch the columns do not prove plain goes to
    `manifest.inventory_batch_rows`, which names the row group and row of what is wrong."""
    for label, batch in batches:
        plain = _plainly(_plain_arrow, batch, bucket, selection.needs_time)
        if plain is not None:
            yield selection.columns(*plain)
            continue
        columns = {c: batch.column(c).to_pylist() for c in batch.column_names if c in COLUMNAR_COLUMNS}
        yield selection.rows(inventory_batch_rows([(label, columns)], name, bucket))


def _of_type(batch: pa.RecordBatch, column: str, check: Callable[[pa.DataType], bool]) -> bool:
    return column not in batch.column_names or check(batch.schema.field(column).type)


def _plain_arrow(batch: pa.RecordBatch, bucket: str, needs_time: bool) -> _Columns | None:
    names = batch.column_names

    def text(kind: pa.DataType) -> bool:
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))

    if "key" not in names or "size" not in names:
        return None
    if not (
        text(batch.schema.field("key").type)
        and pa.types.is_integer(batch.schema.field("size").type)
        and _of_type(batch, "bucket", text)
        and _of_type(batch, "e_tag", text)
        and _of_type(batch, "is_latest", pa.types.is_boolean)
        and _of_type(batch, "is_delete_marker", pa.types.is_boolean)
        and _of_type(batch, "last_modified_date", pa.types.is_timestamp)
    ):
        return None
    if "bucket" in names and not _all(pc.fill_null(pc.equal(batch.column("bucket"), bucket), True)):
        return None
    # A missing flag reads as false (`manifest._flag(None)`): no delete marker, and not the latest version.
    deleted = pc.fill_null(batch.column("is_delete_marker"), False) if "is_delete_marker" in names else None
    latest = pc.fill_null(batch.column("is_latest"), False) if "is_latest" in names else None
    current = _current(deleted, latest)
    if current is not None:
        batch = batch.filter(current)
    keys, sizes = batch.column("key"), batch.column("size")
    if keys.null_count or sizes.null_count or not _keys_ok(keys):
        return None
    numbers = sizes.to_numpy().astype(np.int64)
    if len(numbers) and (numbers.min() < 0 or numbers.max() > MAX_OBJECT_SIZE):
        return None
    if "e_tag" in names and not _etags_ok(pc.fill_null(batch.column("e_tag"), "")):
        return None
    times: list[datetime | None] | None = None
    if needs_time and "last_modified_date" in names:
        times = [parse_time(value, "") for value in batch.column("last_modified_date").to_pylist()]
    return keys.to_numpy(zero_copy_only=False), numbers, times


# -- JSON lines -----------------------------------------------------------------------------------------


def jsonl_batches(stream: IO[bytes], name: str, bucket: str, selection: Selection) -> Iterator[KeyBatch]:
    """The selected objects of a JSON-lines key list (`manifest.jsonl_rows`), read chunk by chunk by the row
    parser: a JSON line has no plain form that Arrow's reader is sure to read as `json.loads` does
    (repeated fields, escapes, lone surrogates). Gzipped or not."""
    for chunk in chunks(maybe_gunzip(stream), name):
        yield selection.rows(
            jsonl_records(lines(io.BytesIO(chunk.data), name, start=chunk.start), name, bucket)
        )
