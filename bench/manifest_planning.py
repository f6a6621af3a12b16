"""How long planning from a manifest takes: a gzipped CSV key list (or S3 Inventory CSV) of N keys planned
from a local file (`worker/manifestscan.py`), with the process's peak RSS and how even the shards cut from the
plan are. Usage::

    .venv/bin/python bench/manifest_planning.py 1000000            # keys in no order: two passes
    .venv/bin/python bench/manifest_planning.py 1000000 --sorted   # keys in key order: one pass
    .venv/bin/python bench/manifest_planning.py 1000000 --inventory [--sorted]

Every list holds the same keys and sizes (seeded), generated once into ~/.cache/ferry/bench-manifest/ by a
child process, so the peak RSS printed is planning's alone. --inventory writes them as an S3 Inventory does:
a manifest.json and one gzipped CSV data file, every field quoted, keys URL-encoded, with LastModifiedDate and
ETag columns. The shard line cuts shards as the operator does (`operator.caps.cut_shards`, default settings)
and compares the largest with the even share (total / shards) in objects and in bytes; with --sorted those
are the shards a sequential listing of the same objects gives.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from ferry.model import CopyJobSpec
from ferry.operator.caps import cut_shards
from ferry.operator.settings import OperatorSettings
from ferry.worker.manifestscan import scan_manifest

CACHE = Path.home() / ".cache" / "ferry" / "bench-manifest"
BUCKET = "src-bucket"


def _rows(count: int, in_order: bool) -> list[tuple[str, int, str]]:
    """(key, size, etag) of the list, in no order (seeded) or in key order."""
    rng = random.Random(1)
    ids = list(range(count))
    rng.shuffle(ids)
    rows = [
        (f"dir{i % 97:02d}/sub{i % 13}/object-{i:08d}.bin", rng.randrange(1, 10**6), f"{i:032x}") for i in ids
    ]
    if in_order:
        rows.sort()
    return rows


def _write(path: Path, count: int, in_order: bool, inventory: bool) -> None:
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt") as out:
        if inventory:
            out.writelines(
                f'"{BUCKET}","{quote(k)}","{s}","2024-05-01T12:00:00.000Z","{e}"\n'
                for k, s, e in _rows(count, in_order)
            )
        else:
            out.write("key,size,etag\n")
            out.writelines(f"{k},{s},{e}\n" for k, s, e in _rows(count, in_order))
    if inventory:
        data = partial.read_bytes()
        document = {
            "sourceBucket": BUCKET,
            "destinationBucket": "arn:aws:s3:::inventories",
            "version": "2016-11-30",
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
            "files": [
                {
                    "key": f"inv/data/{path.name}",
                    "size": len(data),
                    "MD5checksum": hashlib.md5(data).hexdigest(),
                }
            ],
        }
        path.with_name(path.name.replace(".csv.gz", ".manifest.json")).write_text(json.dumps(document))
    partial.rename(path)


def manifest(count: int, in_order: bool, inventory: bool) -> Path:
    """The cached list (an inventory's manifest.json); written by a child process, so that this one's peak
    RSS is planning's."""
    stem = ("inventory-" if inventory else "keys-") + ("sorted-" if in_order else "")
    path = CACHE / f"{stem}{count}.csv.gz"
    named = path.with_name(path.name.replace(".csv.gz", ".manifest.json")) if inventory else path
    if path.exists():
        return named
    path.parent.mkdir(parents=True, exist_ok=True)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child writes the list and leaves at once
        try:
            _write(path, count, in_order, inventory)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    if not path.exists():
        raise SystemExit(f"could not write {path}")
    return named


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--sorted", action="store_true", help="keys in key order (one pass)")
    parser.add_argument(
        "--inventory", action="store_true", help="an S3 Inventory (CSV) instead of a key list"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 50_000_000:
        raise SystemExit("count: between 1 and 50,000,000")
    path = manifest(args.count, args.sorted, args.inventory)
    spec = CopyJobSpec.model_validate(
        {"source": {"bucket": BUCKET, "manifest": {"format": "inventory" if args.inventory else "csv",
                                                   "file": str(path)}},
         "destination": {"bucket": "dst-bucket"}},
        by_alias=True,
        by_name=False,
    )  # fmt: skip
    started = time.monotonic()
    found = scan_manifest(spec, None)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = found.result
    kind = "inventory rows" if args.inventory else "keys"
    print(
        f"{result.histogram.objects:,} {kind} {'in key order' if args.sorted else 'in no order'} planned in "
        f"{seconds:.1f} s, {len(result.pieces):,} pieces, peak RSS {peak:.0f} MiB"
    )
    shards, _ = cut_shards(result.histogram, list(result.pieces), spec, OperatorSettings(), datetime.now(UTC))
    objects = max(s.objects for s in shards) / (result.histogram.objects / len(shards))
    size = max(s.bytes for s in shards) / (result.histogram.bytes / len(shards))
    print(
        f"{len(shards)} shards; the largest holds {objects:.3f}x the even share of objects, the heaviest "
        f"{size:.3f}x the even share of bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
