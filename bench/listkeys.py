"""The key layouts of the listing benchmark (`make bench-list`): which keys a seeded bucket holds.

Pure and deterministic: the same layout and count always give the same keys and sizes, in key
order, so a seeded bucket can be cached (bench/listseed.py) and every tool's listing checked against
the count. Generators, not lists: a million keys never sit in memory at once.

- `tree`: `tenant-NN/yyyy/mm/dd/object-NNNNNN.parquet`, as a data lake partitioned by tenant and day
  looks. Fan-out is uneven on purpose: tenants get Zipf-like shares of the keys, each tenant spans a
  different number of days, and a day's share is heavy-tailed (a few days hold bursts of objects),
  so equal-looking prefixes hold very different numbers of keys.
- `flat`: `object-NNNNNNNN` with no '/': no delimiter structure at all, so a lister can only split
  the key space by probing with StartAfter.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

LAYOUTS = ("tree", "flat")

#: Object sizes come from this palette (1 KiB to 64 MiB in quarter-octave steps), so the seeder needs the
#: MD5 of only a few dozen distinct zero-filled bodies; the histogram still sees a wide spread.
SIZE_PALETTE = tuple(int(1024 * 2 ** (k / 4)) for k in range(0, 65))
_TENANTS = 24
_FIRST_DAY = dt.date(2021, 1, 1)


@dataclass(frozen=True)
class Key:
    name: str
    size: int


def _size(rng: random.Random) -> int:
    # Mode around 64 KiB, a long tail up to 64 MiB: most objects small, a few large.
    return SIZE_PALETTE[min(len(SIZE_PALETTE) - 1, int(rng.triangular(0, len(SIZE_PALETTE), 22)))]


def _shares(total: int, weights: list[float]) -> list[int]:
    """Split `total` into integer shares proportional to `weights` (largest remainders first)."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    out = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def tree_keys(count: int, seed: int = 1) -> Iterator[Key]:
    rng = random.Random(f"tree-{count}-{seed}")
    tenants = min(_TENANTS, max(1, count))
    per_tenant = _shares(count, [1.0 / (i + 1) for i in range(tenants)])
    for t, n in enumerate(per_tenant):
        if n == 0:
            continue
        days = min(n, 180 + (t * 97) % 900)  # 180 to 1079 days, differently per tenant
        start = _FIRST_DAY + dt.timedelta(days=(t * 37) % 365)
        per_day = _shares(n, [rng.paretovariate(1.2) for _ in range(days)])
        for d, m in enumerate(per_day):
            day = start + dt.timedelta(days=d)
            prefix = f"tenant-{t:02d}/{day:%Y/%m/%d}/object-"
            for i in range(m):
                yield Key(f"{prefix}{i:06d}.parquet", _size(rng))


def flat_keys(count: int, seed: int = 1) -> Iterator[Key]:
    rng = random.Random(f"flat-{count}-{seed}")
    for i in range(count):
        yield Key(f"object-{i:08d}", _size(rng))


def keys(layout: str, count: int) -> Iterator[Key]:
    """The keys of `layout` with `count` keys, in key order."""
    if layout == "tree":
        return tree_keys(count)
    if layout == "flat":
        return flat_keys(count)
    raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")


@functools.cache
def zero_md5(size: int) -> str:
    """The MD5 (and so the ETag) of ``size`` zero bytes: every seeded object's content."""
    digest = hashlib.md5()
    block = bytes(min(size, 1 << 20))
    left = size
    while left:
        n = min(left, len(block))
        digest.update(block[:n])
        left -= n
    return digest.hexdigest()
