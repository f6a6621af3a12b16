"""`make bench-list-smoke`: every lister lists the whole bucket through the latency proxy, on both servers.

Runs bench/listing.py as `make bench-list-smoke` does, on small buckets (versitygw's seeded into a
temporary cache, and bench/listserver.py's index), and checks what the benchmark's figures rest on:
each tool listed exactly the bucket's keys, the proxy counted its requests, and Ferry's row is either a
verified run of `ferry plan` or says why it is missing; beside it, `ferry plan` from a key list of the same
keys in key order planned them all into a sequential listing's shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
KEYS = 3000


def _bin_dir() -> Path:
    try:
        bins = TestBinaries(find_bin_dir())
    except (MissingBinariesError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"testbed binaries missing ({exc}); run make testbin")
    for name in ("versitygw", "rclone", "s5cmd"):
        if not bins.path(name).is_file():
            pytest.skip(f"{name} not built; run make testbin")
    return bins.path("versitygw").parent


def test_every_lister_lists_exactly_the_seeded_keys_and_its_requests_are_counted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FERRY_LIST"))}
    env |= {
        "FERRY_TESTBIN": str(_bin_dir()),
        "BENCH_LIST_SMOKE": "1",
        "BENCH_LIST_KEYS": str(KEYS),
        "BENCH_LIST_CACHE": str(tmp_path / "cache"),
        "BENCH_RESULTS_DIR": str(tmp_path / "results"),
        "BENCH_LIST_TOOL_TIMEOUT": "30",
        "BENCH_LIST_TOTAL_TIMEOUT": "100",
    }
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "listing.py")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    header, *rows = json.loads((tmp_path / "results" / "list-smoke.json").read_text())
    assert header["latencyMs"] == 50
    assert (tmp_path / "results" / "list-smoke.md").read_text().startswith("# Listing benchmark")

    by = {(r["server"], r["layout"], r["tool"]): r for r in rows}
    for server, layout in [(s, la) for s in ("versitygw", "index") for la in ("tree", "flat")]:
        for tool in ("rclone", "s5cmd"):
            row = by[(server, layout, tool)]
            assert row["verified"], row
            assert row["keysListed"] == KEYS
            # A sequential lister needs one request per page of at most 1,000 keys.
            assert row["requests"] >= KEYS // 1000
            assert row["requestsByMethod"].get("GET", 0) >= KEYS // 1000
            assert row["peakRssBytes"] > 0
        ferry = by[(server, layout, "ferry")]
        if ferry.get("skipped"):
            assert "plan" in ferry["note"]
        else:
            assert ferry["verified"], ferry
            assert ferry["keysListed"] == KEYS
            # The same keys planned from a CSV key list in key order: the sequential listing's shards.
            manifest = by[(server, layout, "ferry-manifest")]
            assert manifest["verified"], manifest
            assert manifest["keysListed"] == KEYS and manifest["shards"] >= 1
            assert manifest["sameShardsAsSequential"] is True, manifest
            assert manifest["sameShardsAsListing"] is (manifest["shardsDigest"] == ferry["shardsDigest"])
            assert manifest["peakRssBytes"] > 0 and manifest["wallSeconds"] > 0
    for layout in ("tree", "flat"):
        marker = json.loads((tmp_path / "cache" / f"list-{layout}-{KEYS}.seeded.json").read_text())
        assert marker["keys"] == KEYS
    if any(not r.get("skipped") for r in rows if r["tool"] == "ferry"):
        markdown = (tmp_path / "results" / "list-smoke.md").read_text()
        assert markdown.count("manifest planned faster than listing, same shards: ") == 4
