"""Reading an inventory's ORC and Parquet files from local disk (worker/manifestio.py): in batches of
BATCH_ROWS rows whatever the file's row groups and stripes, and never a file larger than the spool holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet
import pytest

from ferry.model import CopyJobSpec
from ferry.worker import manifestio
from ferry.worker.manifest import ManifestError

ROWS = 20_000


def inventory(folder: Path, file_format: str) -> Path:
    """A local S3 Inventory of ROWS objects in one data file of one row group (or stripe)."""
    keys = [f"data/{i:06d}" for i in range(ROWS)]
    table = pa.table({"bucket": ["src"] * ROWS, "key": keys, "size": list(range(ROWS))})
    # Local data files are found by name beside manifest.json.
    path = folder / ("0.parquet" if file_format == "Parquet" else "0.orc")
    if file_format == "Parquet":
        pyarrow.parquet.write_table(table, path, row_group_size=ROWS)
    else:
        pyarrow.orc.write_table(table, path)
    data = path.read_bytes()
    document = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "fileFormat": file_format,
        "fileSchema": "message s3.inventory { }",
        "files": [
            {
                "key": f"inv/src/cfg/data/{path.name}",
                "size": len(data),
                "MD5checksum": hashlib.md5(data).hexdigest(),
            }
        ],
    }
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(document))
    return manifest


def spec(manifest: Path) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {
            "source": {"bucket": "src", "manifest": {"format": "inventory", "file": str(manifest)}},
            "destination": {"bucket": "dst"},
        },
        by_alias=True,
        by_name=False,
    )


@pytest.mark.parametrize("file_format", ["Parquet", "ORC"])
def test_a_large_row_group_is_read_in_bounded_batches(
    tmp_path: Path, file_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    columns = manifestio._columns

    def counted(table: object) -> dict[str, list[object]]:
        found = columns(table)
        seen.append(len(found["key"]))
        return found

    monkeypatch.setattr(manifestio, "_columns", counted)
    objects = list(manifestio.manifest_objects(spec(inventory(tmp_path, file_format)), None))
    assert [o.key for o in objects] == [f"data/{i:06d}" for i in range(ROWS)]
    assert sum(o.size for o in objects) == sum(range(ROWS))
    assert max(seen) == manifestio.BATCH_ROWS and sum(seen) == ROWS


def test_a_columnar_file_larger_than_the_spool_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manifestio, "MAX_SPOOLED_BYTES", 1024)
    with pytest.raises(ManifestError, match=r"0\.parquet: larger than 0 MiB.*configure the inventory in CSV"):
        list(manifestio.manifest_objects(spec(inventory(tmp_path, "Parquet")), None))


@pytest.mark.parametrize("file_format", ["Parquet", "ORC"])
def test_planning_reads_the_same_objects_in_bounded_batches(tmp_path: Path, file_format: str) -> None:
    found = spec(inventory(tmp_path, file_format))
    batches = list(manifestio.manifest_batches(found, None))
    assert max(len(b) for b in batches) == manifestio.BATCH_ROWS
    planned = [(k, int(s)) for b in batches for k, s in zip(b.keys.tolist(), b.sizes.tolist(), strict=True)]
    assert planned == [(o.key, o.size) for o in manifestio.manifest_objects(found, None)]
