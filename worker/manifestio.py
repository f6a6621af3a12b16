"""Opening manifests: the thin I/O adapter under `manifest.py`'s parsers.

Where it sits: the copy engine calls `manifest_objects`, and planning (`manifestscan.py`) calls
`manifest_batches` (the same objects, in batches of keys and sizes parsed by `manifestbatch.py`), to read
the objects `spec.source.manifest` names, from the source's S3 service (with the source's client, so with
the source's endpoint and credentials) or, for `ferry run`/`ferry plan`, from a local file. Streams are
read as they arrive; ORC and Parquet files, which need random access, are spooled to a temporary file
(on disk, not in memory) and read one row group or stripe at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from ferry.model.copyjob import CopyJobSpec, Manifest, ManifestFormat
from ferry.worker.filters import ObjectFilter
from ferry.worker.manifest import (
    COLUMNAR_COLUMNS,
    MAX_MANIFEST_JSON_BYTES,
    Checked,
    DataFile,
    Inventory,
    ManifestError,
    ManifestRow,
    inventory_batch_rows,
    inventory_csv_rows,
    jsonl_rows,
    key_list_csv_rows,
    parse_inventory_manifest,
    to_objects,
)
from ferry.worker.objects import ObjectInfo
from ferry.worker.retry import Kind, RetriesExhausted, classify

if TYPE_CHECKING:  # NumPy and Arrow load only where planning reads batches (`manifest_batches`)
    import pyarrow as pa

    from ferry.worker.manifestbatch import KeyBatch, Selection

#: Wraps one S3 request (the engine passes its retry loop and request counting).
Call = Callable[[Callable[[], Any]], Any]


def _direct(request: Callable[[], Any]) -> Any:
    return request()


def describe(manifest: Manifest) -> str:
    """Where the manifest is, as messages name it."""
    return manifest.file if manifest.file is not None else f"s3://{manifest.bucket}/{manifest.key}"


class _Opener:
    """Opens the manifest and, for an inventory, its data files (same bucket, or same local folder)."""

    def __init__(self, manifest: Manifest, client: Any, call: Call) -> None:
        self.manifest = manifest
        self.client = client
        self.call = call

    def name(self, data_key: str | None = None) -> str:
        if data_key is None:
            return describe(self.manifest)
        if self.manifest.file is not None:
            return str(self._local_data_path(data_key))
        return f"s3://{self.manifest.bucket}/{data_key}"

    def _local_data_path(self, data_key: str) -> Path:
        # A local inventory's data files sit beside its manifest.json, by their file name: the key's
        # folders (written by whoever wrote manifest.json) never lead anywhere else.
        base = PurePosixPath(data_key).name
        if base in ("", ".", ".."):
            raise ManifestError(f"{self.name()}: data file key {data_key!r} names no file")
        assert self.manifest.file is not None
        return Path(self.manifest.file).parent / base

    def open(self, data_key: str | None = None) -> IO[bytes]:
        where = self.name(data_key)
        if self.manifest.file is not None:
            path = Path(self.manifest.file) if data_key is None else self._local_data_path(data_key)
            try:
                return path.open("rb")
            except OSError as exc:
                raise ManifestError(f"{where}: cannot open ({exc.strerror or type(exc).__name__})") from exc
        key = self.manifest.key if data_key is None else data_key
        try:
            answer = self.call(lambda: self.client.get_object(Bucket=self.manifest.bucket, Key=key))
        except Exception as exc:  # a refusal or an unreachable service: say which file
            code = getattr(getattr(exc, "last", None), "code", None) or type(exc).__name__
            raise ManifestError(
                f"{where}: cannot read ({code}); check manifest.bucket and manifest.key"
            ) from exc
        body: IO[bytes] = answer["Body"]
        return body


def _read_all(stream: IO[bytes], name: str, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{name}: more than {limit} bytes; is this an inventory manifest.json?")
    return data


@contextmanager
def _guarded(name: str) -> Iterator[None]:
    """A read that breaks off mid-stream (connection reset, timeout) is a manifest error naming the file."""
    try:
        yield
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"{name}: reading failed ({type(exc).__name__}); try again") from exc


def manifest_rows(
    manifest: Manifest, source_bucket: str, client: Any, call: Call = _direct
) -> Iterator[ManifestRow]:
    """Every row of the manifest, file after file, in the manifest's order. Raises ManifestError."""
    opener = _Opener(manifest, client, call)
    name = opener.name()
    if manifest.format is ManifestFormat.INVENTORY:
        with opener.open() as stream, _guarded(name):
            inventory = parse_inventory_manifest(
                _read_all(stream, name, MAX_MANIFEST_JSON_BYTES), name, source_bucket
            )
        for data_file in inventory.files:
            yield from _inventory_file(opener, inventory, data_file)
        return
    parse = key_list_csv_rows if manifest.format is ManifestFormat.CSV else jsonl_rows
    with opener.open() as stream, _guarded(name):
        checked = Checked(stream, name, None)
        yield from parse(checked, name, source_bucket)  # type: ignore[arg-type]


def _inventory_file(opener: _Opener, inventory: Inventory, data_file: DataFile) -> Iterator[ManifestRow]:
    name = opener.name(data_file.key)
    if inventory.file_format == "CSV":
        with opener.open(data_file.key) as stream, _guarded(name):
            checked = Checked(stream, name, data_file)
            yield from inventory_csv_rows(checked, inventory.columns, name, inventory.source_bucket)  # type: ignore[arg-type]
            checked.verify()
        return
    with _spooled(opener, inventory, data_file) as batches:
        rows = ((label, _columns(batch)) for label, batch in batches)
        yield from inventory_batch_rows(rows, name, inventory.source_bucket)


@contextmanager
def _spooled(
    opener: _Opener, inventory: Inventory, data_file: DataFile
) -> Iterator[Iterator[tuple[str, pa.RecordBatch]]]:
    """An ORC or Parquet data file spooled to local disk (checked against manifest.json), and its batches."""
    name = opener.name(data_file.key)
    with tempfile.TemporaryFile(prefix="ferry-inventory-") as spool:
        with opener.open(data_file.key) as stream, _guarded(name):
            checked = Checked(stream, name, data_file)
            _spool(checked, spool, name)
            checked.verify()
        spool.seek(0)
        yield _orc_batches(spool, name) if inventory.file_format == "ORC" else _parquet_batches(spool, name)


#: Rows of a columnar file turned into Python values at once: a few MiB, whatever the file's row groups.
BATCH_ROWS = 8192
#: Largest ORC or Parquet data file spooled to local disk to be read (the planner's and workers' /tmp
#: hold 1 GiB); inventories are written in many files, so a larger one is most likely not an inventory.
MAX_SPOOLED_BYTES = 768 * 2**20


def _spool(source: Checked, spool: IO[bytes], name: str) -> None:
    copied = 0
    while chunk := source.read(2**20):
        copied += len(chunk)
        if copied > MAX_SPOOLED_BYTES:
            raise ManifestError(
                f"{name}: larger than {MAX_SPOOLED_BYTES // 2**20} MiB, the most Ferry reads of one ORC or "
                "Parquet inventory file; configure the inventory in CSV, or split it"
            )
        spool.write(chunk)


def _columns(table: Any) -> dict[str, list[Any]]:
    return {c: table.column(c).to_pylist() for c in table.column_names if c in COLUMNAR_COLUMNS}


def _parquet_batches(spool: IO[bytes], name: str) -> Iterator[tuple[str, pa.RecordBatch]]:
    import pyarrow.parquet  # imported here: a worker that reads no Parquet never loads pyarrow

    try:
        reader = pyarrow.parquet.ParquetFile(spool)
        wanted = [c for c in reader.schema_arrow.names if c in COLUMNAR_COLUMNS]
        batches = reader.iter_batches(batch_size=BATCH_ROWS, columns=wanted)
    except Exception as exc:
        raise ManifestError(f"{name}: not a Parquet file ({type(exc).__name__})") from exc
    start = 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:
            raise ManifestError(f"{name}, after row {start}: unreadable ({type(exc).__name__})") from exc
        if batch is None:
            return
        yield f"rows {start + 1}-{start + batch.num_rows}", batch
        start += batch.num_rows


def _orc_batches(spool: IO[bytes], name: str) -> Iterator[tuple[str, pa.RecordBatch]]:
    import pyarrow.orc  # imported here: a worker that reads no ORC never loads pyarrow

    try:
        reader = pyarrow.orc.ORCFile(spool)
        wanted = [c for c in reader.schema.names if c in COLUMNAR_COLUMNS]
    except Exception as exc:
        raise ManifestError(f"{name}: not an ORC file ({type(exc).__name__})") from exc
    for stripe in range(reader.nstripes):
        try:
            batch = reader.read_stripe(stripe, columns=wanted)
        except Exception as exc:
            raise ManifestError(f"{name}, stripe {stripe + 1}: unreadable ({type(exc).__name__})") from exc
        for offset in range(0, batch.num_rows, BATCH_ROWS):
            part = batch.slice(offset, BATCH_ROWS)
            yield f"stripe {stripe + 1}, rows {offset + 1}-{offset + part.num_rows}", part


def manifest_objects(spec: CopyJobSpec, client: Any, call: Call | None = None) -> Iterator[ObjectInfo]:
    """The objects the manifest names that spec.source.prefix and spec.filter keep, in the manifest's
    order. Raises ManifestError."""
    manifest = spec.source.manifest
    assert manifest is not None, "only for a spec with source.manifest"
    accepts = ObjectFilter.compile(spec.filter, spec.source.prefix).accepts
    needs_time = spec.filter.modified_after is not None or spec.filter.modified_before is not None
    rows = manifest_rows(manifest, spec.source.bucket, client, call or (lambda request: request()))
    return to_objects(rows, accepts, spec.source.prefix, needs_time, describe(manifest))


def manifest_batches(spec: CopyJobSpec, client: Any, call: Call | None = None) -> Iterator[KeyBatch]:
    """The objects `manifest_objects` gives, in the same order, as batches of keys and sizes for planning
    (`manifestbatch`: plain chunks checked by column, anything else by the row parser). Raises
    ManifestError with the same messages."""
    from ferry.worker import manifestbatch  # NumPy and Arrow: planning only

    manifest = spec.source.manifest
    assert manifest is not None, "only for a spec with source.manifest"
    object_filter = ObjectFilter.compile(spec.filter, spec.source.prefix)
    needs_time = spec.filter.modified_after is not None or spec.filter.modified_before is not None
    selection = manifestbatch.Selection(
        spec.source.prefix,
        None if object_filter.accepts_all else object_filter.accepts,
        needs_time,
        describe(manifest),
    )
    opener = _Opener(manifest, client, call or _direct)
    name = opener.name()
    bucket = spec.source.bucket
    if manifest.format is not ManifestFormat.INVENTORY:
        batches = (
            manifestbatch.key_list_batches
            if manifest.format is ManifestFormat.CSV
            else manifestbatch.jsonl_batches
        )
        with opener.open() as stream, _guarded(name):
            yield from batches(Checked(stream, name, None), name, bucket, selection)  # type: ignore[arg-type]
        return
    with opener.open() as stream, _guarded(name):
        inventory = parse_inventory_manifest(_read_all(stream, name, MAX_MANIFEST_JSON_BYTES), name, bucket)
    for data_file in inventory.files:
        yield from _inventory_file_batches(opener, inventory, data_file, selection)


def _inventory_file_batches(
    opener: _Opener, inventory: Inventory, data_file: DataFile, selection: Selection
) -> Iterator[KeyBatch]:
    from ferry.worker import manifestbatch

    name = opener.name(data_file.key)
    bucket = inventory.source_bucket
    if inventory.file_format == "CSV":
        with opener.open(data_file.key) as stream, _guarded(name):
            checked = Checked(stream, name, data_file)
            yield from manifestbatch.inventory_csv_batches(
                checked,  # type: ignore[arg-type]
                inventory.columns,
                name,
                bucket,
                selection,
            )
            checked.verify()
        return
    with _spooled(opener, inventory, data_file) as batches:
        yield from manifestbatch.inventory_arrow_batches(batches, name, bucket, selection)


def manifest_retryable(error: ManifestError) -> bool:
    """Whether the manifest could not be read this time (throttled, a server error, a dropped
    connection), which a later attempt may get past, rather than being unusable as it is (missing,
    refused, corrupt): the first is an incomplete run, the second invalid input."""
    cause = error.__cause__
    if cause is None:
        return False
    kind = cause.last.kind if isinstance(cause, RetriesExhausted) else classify(cause).kind
    return kind is not Kind.PERMANENT
