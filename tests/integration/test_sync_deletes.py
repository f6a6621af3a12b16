"""`spec.mode: sync` end to end: `ferry run` copies, then deletes the destination objects the source no
longer holds, and refuses (deleting nothing) whenever the listings cannot be trusted or too much would go.

Server: moto (the session-wide `s3` fixture of tests/conftest.py), behind testbed/faultproxy.py where a
listing or a read must fail. Deletes and listings are plain ListObjectsV2/HeadObject/DeleteObjects calls
moto answers as S3 does; no listing behaviour of versitygw is in question here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ferry.model.copyjob import parse_copyjob
from ferry.worker.deleter import SyncSides, run_sync
from ferry.worker.retry import RetryPolicy
from ferry.worker.syncdeletes import CopyEnd, DeleteLimit, Refusal

FERRY = [str(Path(sys.executable).with_name("ferry"))]
EXIT_DELETES_REFUSED = 5


def write_job(path: Path, endpoint: Any, spec: str, *, source_endpoint: str | None = None) -> Path:
    text = f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: sync-test}}
spec:
{spec}
"""
    text = text.replace("SOURCE_ENDPOINT", source_endpoint or endpoint.url).replace("ENDPOINT", endpoint.url)
    for name in ("src-creds", "dst-creds"):
        text += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
"""
    path.write_text(text)
    return path


def sync_spec(
    src: str, dst: str, *, max_: str = "100", extra: str = "", src_prefix: str = "", dst_prefix: str = ""
) -> str:
    return f"""  source: {{bucket: {src}, prefix: "{src_prefix}", endpoint: "SOURCE_ENDPOINT", credentialsSecret: src-creds}}
  destination: {{bucket: {dst}, prefix: "{dst_prefix}", endpoint: "ENDPOINT", credentialsSecret: dst-creds}}
  mode: sync
  deletes: {{max: {max_}}}
{extra}"""


def ferry_run(job: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = subprocess.run(
        [*FERRY, "run", "-f", str(job), "--output", "json", "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, json.loads(result.stdout)


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=bucket).get("Contents", []))


def put(s3: Any, bucket: str, *names: str) -> None:
    for name in names:
        s3.client.put_object(Bucket=bucket, Key=name, Body=b"x" * 10)


def test_sync_deletes_exactly_the_destination_objects_the_source_no_longer_holds(
    s3: Any, tmp_path: Path
) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "data/a", "data/b", "data/sub/c", "data/skip.tmp", "elsewhere/z")
    put(
        s3,
        dst,
        "mirror/a",  # the source holds it: overwritten or skipped, never deleted
        "mirror/gone",  # the source no longer holds it: deleted
        "mirror/sub/gone-too",  # deeper: deleted
        "mirror/skip.tmp",  # the source holds it, the filter excludes it: kept
        "mirror/old.tmp",  # the source lacks it, but the filter would never copy it: kept
        "mirror-sibling/x",  # outside destination.prefix "mirror/": kept
        "other/y",  # outside the prefix: kept
    )
    spec = sync_spec(
        src, dst, src_prefix="data/", dst_prefix="mirror/", extra='  filter: {exclude: ["*.tmp"]}'
    )
    result, summary = ferry_run(write_job(tmp_path / "job.yaml", s3.endpoint, spec))

    assert result.returncode == 0, result.stderr
    assert summary["exitCode"] == 0
    # data/a was already there with the same content (skipped); skip.tmp is filtered out.
    assert summary["objects"]["copied"] == 2 and summary["objects"]["skipped"] == 1
    assert summary["objects"]["failed"] == 0
    sync = summary["sync"]
    assert (sync["decision"], sync["candidates"], sync["deleted"]) == ("delete", 2, 2), sync
    assert sync["sourceObjects"] == 3  # data/a, data/b, data/sub/c (skip.tmp is filtered out)
    assert sync["destinationObjects"] == 5  # a, b, sub/c, gone, sub/gone-too (after the copy, in scope)
    assert keys(s3, dst) == [
        "mirror-sibling/x",
        "mirror/a",
        "mirror/b",
        "mirror/old.tmp",
        "mirror/skip.tmp",
        "mirror/sub/c",
        "other/y",
    ]
    # A second sync finds nothing more to delete.
    again, second = ferry_run(write_job(tmp_path / "job.yaml", s3.endpoint, spec))
    assert again.returncode == 0 and second["sync"]["candidates"] == 0 and second["sync"]["deleted"] == 0


def test_a_sync_over_its_delete_limit_deletes_nothing_and_exits_5(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a", "b")
    put(s3, dst, "a", "b", "old1", "old2", "old3")
    result, summary = ferry_run(write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst, max_="2")))

    assert result.returncode == EXIT_DELETES_REFUSED, result.stderr
    assert (summary["exitCode"], summary["state"]) == (EXIT_DELETES_REFUSED, "deletesRefused")
    sync = summary["sync"]
    assert (sync["decision"], sync["reason"], sync["candidates"], sync["deleted"]) == (
        "refused",
        "DeleteLimitExceeded",
        3,
        0,
    )
    assert "3 destination objects are not at the source, more than deletes.max" in result.stderr
    assert "[DeleteLimitExceeded]" in result.stderr
    assert keys(s3, dst) == ["a", "b", "old1", "old2", "old3"]


def test_a_percentage_limit_counts_the_destination_objects_in_scope(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, *(f"k{i:02d}" for i in range(18)))
    put(s3, dst, *(f"k{i:02d}" for i in range(20)))  # k18 and k19 are gone at the source: 2 of 20 = 10%
    refused, document = ferry_run(
        write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst, max_='"9.99%"'))
    )
    assert refused.returncode == EXIT_DELETES_REFUSED and document["sync"]["allowed"] == 1
    assert len(keys(s3, dst)) == 20
    allowed, document = ferry_run(
        write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst, max_='"10%"'))
    )
    assert allowed.returncode == 0, allowed.stderr
    assert document["sync"]["deleted"] == 2 and keys(s3, dst) == [f"k{i:02d}" for i in range(18)]


def test_an_empty_source_deletes_nothing_whatever_the_limit(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, dst, "a", "b", "c")
    job = write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst, max_='"100%"'))
    result, summary = ferry_run(job)
    assert result.returncode == EXIT_DELETES_REFUSED, result.stderr
    assert summary["sync"]["reason"] == "SourceEmpty" and summary["sync"]["deleted"] == 0
    assert "source listing is empty" in result.stderr
    assert keys(s3, dst) == ["a", "b", "c"]


def test_a_copy_with_a_failed_object_deletes_nothing(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "k1", "k2", "k3")
    put(s3, dst, "stale")
    plan = FaultPlan(error500_rate=1.0, methods=frozenset({"GET"}), path_regex=r"/k2")
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst), source_endpoint=proxy.url)
        result, summary = ferry_run(job)
    assert result.returncode == 3, result.stderr  # the copy's own code: objects failed
    assert summary["objects"]["failed"] == 1
    assert summary["sync"]["reason"] == "CopyFailures" and summary["sync"]["deleted"] == 0
    assert "1 objects failed to copy" in summary["sync"]["message"]
    assert "stale" in keys(s3, dst)


def test_a_source_listing_that_breaks_off_during_the_copy_deletes_nothing(s3: Any, tmp_path: Path) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a", "b")
    put(s3, dst, "stale")
    # The preflight's one-key listing passes; the copy's listing (1000 keys a page) is refused for good.
    plan = FaultPlan(
        refuse_rate=1.0,
        methods=frozenset({"GET"}),
        path_regex=r"list-type=2.*max-keys=1000|max-keys=1000.*list-type=2",
    )
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst), source_endpoint=proxy.url)
        result, summary = ferry_run(job)
    assert result.returncode == 4, result.stderr
    assert summary["sync"]["reason"] == "CopyIncomplete" and summary["sync"]["deleted"] == 0
    assert keys(s3, dst) == ["stale"]


def _sides(s3: Any, src: str, dst: str, source_url: str, *, max_: int = 100) -> tuple[SyncSides, DeleteLimit]:
    job = parse_copyjob(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "metadata": {"name": "sides"},
            "spec": {
                "source": {"bucket": src, "endpoint": source_url},
                "destination": {"bucket": dst, "endpoint": s3.endpoint.url},
                "mode": "sync",
                "deletes": {"max": max_},
            },
        }
    )
    source_client = s3.endpoint.client() if source_url == s3.endpoint.url else _client_for(s3, source_url)
    # Two keys a page, so a listing of a few keys has pages to break off between; few quick retries.
    sides = SyncSides(
        job.spec, source_client, s3.client, RetryPolicy(max_attempts=2, base_seconds=0.01), page_size=2
    )
    return sides, DeleteLimit.parse(max_)


def _client_for(s3: Any, url: str) -> Any:
    from dataclasses import replace

    return replace(s3.endpoint, url=url).client()


def test_a_source_listing_that_breaks_off_mid_way_deletes_nothing_and_says_why(s3: Any) -> None:
    from testbed.faultproxy import FaultPlan, FaultProxy

    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a", "b", "c", "d", "e")
    put(s3, dst, "a", "b", "c", "d", "e", "f-stale")
    # The first page of the source listing comes back; every later page is refused.
    plan = FaultPlan(refuse_rate=1.0, methods=frozenset({"GET"}), path_regex=r"continuation-token")
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        sides, limit = _sides(s3, src, dst, proxy.url)
        outcome = run_sync(sides, CopyEnd(complete=True, failed=0), limit)
        assert proxy.stats().faults >= 1
    assert outcome.decision.refusal is Refusal.LISTING_INCOMPLETE
    assert outcome.error is not None and "AccessDenied" in outcome.error
    assert outcome.deleted == 0 and outcome.result is None
    assert "a listing broke off" in outcome.message()
    assert keys(s3, dst) == ["a", "b", "c", "d", "e", "f-stale"]


def test_an_object_back_at_the_source_when_its_batch_is_deleted_is_kept(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a")
    put(s3, dst, "a", "gone", "returns")
    sides, _ = _sides(s3, src, dst, s3.endpoint.url)
    found = sides.census()
    assert (found.census.candidates, found.sample) == (2, ("gone", "returns"))
    # Written back at the source between the census and the delete pass: the delete pass lists again and
    # checks each candidate at the source, so it is kept.
    put(s3, src, "returns")
    result = sides.delete(allowed=2)
    assert (result.deleted, result.error) == (1, None)
    assert keys(s3, dst) == ["a", "returns"]


def test_the_delete_pass_never_deletes_more_than_allowed(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a")
    put(s3, dst, "a", "x1", "x2", "x3", "x4", "x5")
    sides, _ = _sides(s3, src, dst, s3.endpoint.url)
    # As if the source lost objects after the count: the pass stops at what was allowed.
    result = sides.delete(allowed=3)
    assert result.deleted == 3 and result.error is not None and "stopped there" in result.error
    assert len(keys(s3, dst)) == 3


def test_a_dry_run_lists_what_a_sync_would_delete_and_changes_nothing(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a", "new")
    put(s3, dst, "a", "old1", "old2")
    job = write_job(tmp_path / "job.yaml", s3.endpoint, sync_spec(src, dst, max_="1", extra="  dryRun: true"))
    result, document = ferry_run(job)
    assert result.returncode == 0, result.stderr
    sync = document["sync"]
    assert sync["dryRun"] is True and sync["wouldDelete"] == ["old1", "old2"]
    assert (sync["candidates"], sync["deleted"], sync["reason"]) == (2, 0, "DeleteLimitExceeded")
    assert "would refuse" in sync["message"]
    assert keys(s3, dst) == ["a", "old1", "old2"]  # nothing deleted, nothing copied
    text = subprocess.run(
        [*FERRY, "run", "-f", str(job), "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert text.returncode == 0
    assert "would delete: 'old1'" in text.stdout and "would delete: 'old2'" in text.stdout


def test_a_copy_mode_job_deletes_nothing(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "a")
    put(s3, dst, "stale")
    spec = f"""  source: {{bucket: {src}, endpoint: "ENDPOINT", credentialsSecret: src-creds}}
  destination: {{bucket: {dst}, endpoint: "ENDPOINT", credentialsSecret: dst-creds}}
"""
    result, summary = ferry_run(write_job(tmp_path / "job.yaml", s3.endpoint, spec))
    assert result.returncode == 0 and "sync" not in summary
    assert keys(s3, dst) == ["a", "stale"]
