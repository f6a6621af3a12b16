"""How long planning from a manifest takes: a gzipped CSV key list of N unsorted keys, planned in its two
passes (`worker/manifestscan.py`) from a local file, with the process's peak RSS. Usage::

    .venv/bin/python bench/manifest_planning.py 1000000

The list is generated once (seeded) and kept in ~/.cache/ferry/bench-manifest/.
"""

from __future__ import annotations

import gzip
import random
import resource
import sys
import time
from pathlib import Path

from ferry.model import CopyJobSpec
from ferry.worker.manifestscan import scan_manifest


def key_list(count: int) -> Path:
    path = Path.home() / ".cache" / "ferry" / "bench-manifest" / f"keys-{count}.csv.gz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    ids = list(range(count))
    rng.shuffle(ids)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt") as out:
        out.write("key,size,etag\n")
        for i in ids:
            out.write(f"dir{i % 97:02d}/sub{i % 13}/object-{i:08d}.bin,{rng.randrange(1, 10**6)},{i:032x}\n")
    partial.rename(path)
    return path


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 1_000_000
    path = key_list(count)
    spec = CopyJobSpec.model_validate(
        {"source": {"bucket": "src-bucket", "manifest": {"format": "csv", "file": str(path)}},
         "destination": {"bucket": "dst-bucket"}},
        by_alias=True,
        by_name=False,
    )  # fmt: skip
    started = time.monotonic()
    found = scan_manifest(spec, None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{found.result.histogram.objects:,} keys planned in {time.monotonic() - started:.1f} s, "
        f"{len(found.result.pieces):,} pieces, peak RSS {peak:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
