"""The listing benchmark's key layouts: exact counts, key order, the promised shape, the same keys every time."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _listkeys() -> ModuleType:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    path = Path(__file__).resolve().parents[2] / "bench" / "listkeys.py"
    spec = importlib.util.spec_from_file_location("bench_listkeys", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


listkeys = _listkeys()

SHAPES = {
    "tree": re.compile(r"tenant-\d\d/\d{4}/\d\d/\d\d/object-\d{6}\.parquet"),
    "flat": re.compile(r"object-\d{8}"),
}


@pytest.mark.parametrize(
    ("layout", "count"),
    [
        ("tree", 1),
        ("tree", 23),
        ("tree", 24),
        ("tree", 5_000),
        ("tree", 50_000),
        ("flat", 1),
        ("flat", 5_000),
    ],
)
def test_a_layout_holds_exactly_count_unique_keys_in_key_order_and_of_its_shape(
    layout: str, count: int
) -> None:
    keys = list(listkeys.keys(layout, count))
    names = [k.name for k in keys]
    assert len(names) == count
    assert names == sorted(set(names))
    assert all(SHAPES[layout].fullmatch(n) for n in names)
    assert all(k.size in listkeys.SIZE_PALETTE for k in keys)


@pytest.mark.parametrize("layout", ["tree", "flat"])
def test_a_layout_gives_the_same_keys_and_sizes_every_time(layout: str) -> None:
    assert list(listkeys.keys(layout, 3_000)) == list(listkeys.keys(layout, 3_000))


def test_the_tree_has_uneven_fan_out_and_the_sizes_a_spread() -> None:
    keys = list(listkeys.keys("tree", 50_000))
    per_dir: dict[str, int] = {}
    for k in keys:
        d = k.name.rpartition("/")[0]
        per_dir[d] = per_dir.get(d, 0) + 1
    per_tenant: dict[str, int] = {}
    for d, n in per_dir.items():
        per_tenant[d[:9]] = per_tenant.get(d[:9], 0) + n
    assert len(per_tenant) == 24
    assert max(per_tenant.values()) > 10 * min(per_tenant.values())
    assert max(per_dir.values()) > 20 * sorted(per_dir.values())[len(per_dir) // 2]
    sizes = {k.size for k in keys}
    assert min(sizes) <= 4 * 1024 and max(sizes) >= 8 * 2**20


def test_the_flat_layout_has_no_delimiter_and_an_unknown_layout_is_refused() -> None:
    assert not any("/" in k.name for k in listkeys.keys("flat", 2_000))
    with pytest.raises(ValueError, match="unknown layout"):
        listkeys.keys("deep", 10)
