"""Archived source objects (spec.archived), against moto's S3 server over HTTP on 127.0.0.1.

moto is the server here because it is the one that behaves as S3 does with archive tiers: it stores
GLACIER and DEEP_ARCHIVE objects, refuses to read them before a restore (InvalidObjectState, and
ObjectNotInActiveTierError for CopyObject), implements RestoreObject and reports the restore in HEAD's
x-amz-restore. versitygw stores every object as STANDARD and does not implement RestoreObject. How long moto's restores take is set through
its state manager (`restores_take`); a restore that never ends is made by a fault proxy answering every
RestoreObject with 409 RestoreAlreadyInProgress, so the object never becomes readable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.worker.archive import (
    ARCHIVED_ERROR_CODES,
    ARCHIVED_SKIPPED,
    RESTORE_NOT_AWAITED,
    RESTORE_TIMED_OUT,
)
from ferry.worker.run import EXIT_OK, EXIT_RESTORE_PENDING, ending
from support.engine import Run, digest_map, run_engine, spec
from support.restores import NEVER_RESTORED as NEVER
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(120)

#: Source objects: key -> storage class.
CLASSES = {
    "a/standard-0": "STANDARD",
    "a/standard-1": "STANDARD",
    "b/glacier-0": "GLACIER",
    "b/glacier-1": "GLACIER",
    "c/deep-0": "DEEP_ARCHIVE",
    "d/instant-0": "GLACIER_IR",
    "e/standard-2": "STANDARD",
}
ARCHIVED = {key for key, storage in CLASSES.items() if storage in ("GLACIER", "DEEP_ARCHIVE")}
READABLE = set(CLASSES) - ARCHIVED


def fill(s3: Any, name: str = "arch") -> tuple[str, str]:
    src, dst = s3.make_bucket(f"{name}-src"), s3.make_bucket(f"{name}-dst")
    for index, (key, storage) in enumerate(sorted(CLASSES.items())):
        s3.client.put_object(Bucket=src, Key=key, Body=b"x" * (100 + index), StorageClass=storage)
    return src, dst


def job(
    endpoint: S3Endpoint,
    src: str,
    dst: str,
    source_url: str | None = None,
    storage_class: str | None = None,
    **extra: Any,
) -> Any:
    destination = {"bucket": dst, "endpoint": endpoint.url, "region": "us-east-1"}
    if storage_class:
        destination["storageClass"] = storage_class
    return spec(
        {"bucket": src, "endpoint": source_url or endpoint.url, "region": "us-east-1"}, destination, **extra
    )


def report_lines(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(run.summary.report_path).read_text().splitlines()]


def moto_transition(endpoint: S3Endpoint, transition: dict[str, Any] | None) -> None:
    """Set (or with None, unset) how moto's object restores progress (its state manager's API)."""
    name = "set-transition" if transition is not None else "unset-transition"
    body = {"model_name": "s3::keyrestore", **({"transition": transition} if transition else {})}
    request = urllib.request.Request(
        f"{endpoint.url}/moto-api/state-manager/{name}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status in (200, 201)


@pytest.fixture
def restores_take(s3: Any) -> Iterator[None]:
    """Each restore is seen under way by one HEAD, then done by the next (moto's manual progression)."""
    moto_transition(s3.endpoint, {"progression": "manual", "times": 0})
    try:
        yield
    finally:
        moto_transition(s3.endpoint, None)


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_archived_objects_fail_as_unreadable_by_default(s3: Any, transport: str) -> None:
    src, dst = fill(s3)
    run = run_engine(job(s3.endpoint, src, dst), s3.endpoint, transport=transport)
    counts = run.summary.counts
    assert run.failed_keys() == ARCHIVED
    # As before spec.archived existed: the service's own refusal (ObjectNotInActiveTierError from a
    # server-side copy, InvalidObjectState from a GET).
    assert {f.code for f in run.summary.failures} <= ARCHIVED_ERROR_CODES
    assert (counts.copied, counts.failed, counts.archived_skipped) == (len(READABLE), len(ARCHIVED), 0)
    assert set(digest_map(s3.client, dst)) == READABLE


@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_skip_reports_each_archived_object_and_copies_the_rest(s3: Any, transport: str) -> None:
    src, dst = fill(s3)
    run = run_engine(job(s3.endpoint, src, dst, archived="skip"), s3.endpoint, transport=transport)
    summary, counts = run.summary, run.summary.counts
    # GLACIER_IR is read directly: copied with the STANDARD objects.
    assert set(digest_map(s3.client, dst)) == READABLE
    assert (counts.copied, counts.skipped, counts.failed) == (len(READABLE), len(ARCHIVED), 0)
    assert counts.archived_skipped == len(ARCHIVED) and counts.pending == 0
    lines = report_lines(run)
    assert {line["key"] for line in lines} == ARCHIVED
    assert {line["code"] for line in lines} == {ARCHIVED_SKIPPED}
    assert {f.key for f in summary.archived} == ARCHIVED and not summary.failures
    # Intentionally not copied: the run succeeded.
    assert ending(summary).exit_code == EXIT_OK


@pytest.mark.parametrize("archived", ["skip", "restore"])
def test_objects_a_manifest_names_are_found_archived_when_read(
    s3: Any, tmp_path: Path, archived: str, restores_take: None
) -> None:
    """A manifest row carries no storage class (nor does an INTELLIGENT_TIERING archive tier show in a
    listing): such an object is found archived when its copy is refused, and handled as spec.archived
    says all the same."""
    src, dst = fill(s3)
    manifest = tmp_path / "keys.jsonl"
    manifest.write_text("".join(json.dumps({"key": key, "size": 1}) + "\n" for key in sorted(CLASSES)))
    source = {"bucket": src, "endpoint": s3.endpoint.url, "region": "us-east-1"}
    extra: dict[str, Any] = {"archived": archived}
    if archived == "restore":
        extra["restore"] = {"maxWaitSeconds": 60, "checkIntervalSeconds": 1}
    engine_job = spec(
        {**source, "manifest": {"format": "jsonl", "file": str(manifest)}},
        {"bucket": dst, "endpoint": s3.endpoint.url, "region": "us-east-1"},
        **extra,
    )
    run = run_engine(engine_job, s3.endpoint)
    counts = run.summary.counts
    assert not run.summary.failures, run.summary.failures
    if archived == "skip":
        assert counts.archived_skipped == len(ARCHIVED)
        assert set(digest_map(s3.client, dst)) == READABLE
    else:
        assert counts.restored == len(ARCHIVED)
        assert set(digest_map(s3.client, dst)) == set(CLASSES)


@pytest.mark.parametrize("streamed", [False, True], ids=["server-side", "streamed"])
def test_restore_copies_archived_objects_once_restored_with_the_destination_storage_class(
    s3: Any, restores_take: None, streamed: bool
) -> None:
    src, dst = fill(s3)
    with FaultProxy(s3.endpoint.url, FaultPlan()) as proxy:
        source_url = proxy.url if streamed else None
        engine_job = job(
            s3.endpoint,
            src,
            dst,
            source_url=source_url,
            archived="restore",
            restore={"tier": "Bulk", "days": 2, "maxWaitSeconds": 60, "checkIntervalSeconds": 1},
            storage_class="STANDARD_IA",
        )
        run = run_engine(engine_job, s3.endpoint, source_url=source_url)
    counts = run.summary.counts
    assert not run.summary.failures, run.summary.failures
    assert (counts.copied, counts.failed, counts.pending) == (len(CLASSES), 0, 0)
    assert (counts.restored, counts.restore_waiting, counts.restore_timed_out) == (len(ARCHIVED), 0, 0)
    assert set(digest_map(s3.client, dst)) == set(CLASSES)
    for key in ARCHIVED:
        assert s3.client.head_object(Bucket=dst, Key=key)["StorageClass"] == "STANDARD_IA"
        restore = s3.client.head_object(Bucket=src, Key=key)["Restore"]
        assert 'ongoing-request="false"' in restore
    requests = {(op, code): n for op, code, n in run.engine.progress().requests_by}
    assert requests[("RESTORE", "2xx")] == len(ARCHIVED)
    # Each archived object was checked while its restore was under way, then once done.
    assert requests[("HEAD", "2xx")] >= 2 * len(ARCHIVED)
    assert ending(run.summary).exit_code == EXIT_OK


def test_a_restore_that_never_completes_times_out_and_the_rest_is_copied(s3: Any) -> None:
    src, dst = fill(s3)
    with FaultProxy(s3.endpoint.url, NEVER) as proxy:
        engine_job = job(
            s3.endpoint,
            src,
            dst,
            source_url=proxy.url,
            archived="restore",
            restore={"maxWaitSeconds": 3, "checkIntervalSeconds": 1},
        )
        run = run_engine(engine_job, s3.endpoint, source_url=proxy.url)
    summary, counts = run.summary, run.summary.counts
    assert set(digest_map(s3.client, dst)) == READABLE
    assert run.failed_keys() == ARCHIVED
    assert {f.code for f in summary.failures} == {RESTORE_TIMED_OUT}
    assert all("maxWaitSeconds" in f.message for f in summary.failures)
    assert (counts.restore_timed_out, counts.restore_waiting, counts.pending) == (len(ARCHIVED), 0, 0)
    assert 3 <= summary.duration_seconds < 30
    end = ending(summary)
    assert (end.state, end.exit_code) == ("restorePending", EXIT_RESTORE_PENDING)


# -- ferry run: the summary and exit code ---------------------------------------------------------------


def write_job(path: Path, endpoint: S3Endpoint, src: str, dst: str, source_url: str, extra: str) -> Path:
    text = f"""
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: archived}}
spec:
  source: {{bucket: {src}, endpoint: "{source_url}", credentialsSecret: creds}}
  destination: {{bucket: {dst}, endpoint: "{endpoint.url}", credentialsSecret: creds}}
{extra}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
  AWS_ACCESS_KEY_ID: "{endpoint.access_key}"
  AWS_SECRET_ACCESS_KEY: "{endpoint.secret_key}"
"""
    path.write_text(text)
    return path


def ferry_run(job_file: Path, output: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("ferry")), "run", "-f", str(job_file)]
    return subprocess.run(
        [*command, "--output", output, "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_ferry_run_with_skip_exits_0_and_names_the_archived_objects(s3: Any, tmp_path: Path) -> None:
    src, dst = fill(s3)
    job_file = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, s3.endpoint.url, "  archived: skip")
    result = ferry_run(job_file, "json")
    assert result.returncode == EXIT_OK, result.stderr
    summary = json.loads(result.stdout)
    assert summary["state"] == "complete"
    assert summary["objects"]["skipped"] == len(ARCHIVED) and summary["objects"]["failed"] == 0
    archived = summary["archived"]
    assert (archived["skipped"], archived["restored"], archived["restoreTimedOut"]) == (len(ARCHIVED), 0, 0)
    assert {entry["key"] for entry in archived["skippedSample"]} == ARCHIVED
    assert {entry["code"] for entry in archived["skippedSample"]} == {ARCHIVED_SKIPPED}
    assert summary["report"] and summary["failedSample"] == []

    text = ferry_run(job_file, "text")
    assert text.returncode == EXIT_OK, text.stderr
    # The second run finds the readable objects present; the archived ones are skipped again and said so.
    assert f"archived: {len(ARCHIVED)} skipped (spec.archived: skip" in text.stdout


def test_ferry_run_whose_restores_never_complete_exits_restore_pending(s3: Any, tmp_path: Path) -> None:
    src, dst = fill(s3)
    extra = "  archived: restore\n  restore: {maxWaitSeconds: 2, checkIntervalSeconds: 1}"
    with FaultProxy(s3.endpoint.url, NEVER) as proxy:
        job_file = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, proxy.url, extra)
        result = ferry_run(job_file, "text")
    assert result.returncode == EXIT_RESTORE_PENDING, result.stderr
    assert f"RESTORE PENDING: {len(ARCHIVED)} archived objects were not restored" in result.stdout
    assert "spec.restore.maxWaitSeconds" in result.stdout
    assert set(digest_map(s3.client, dst)) == READABLE


def test_a_refused_restore_request_fails_that_object_with_the_refusal(s3: Any) -> None:
    src, dst = fill(s3)
    refused = FaultPlan(refuse_rate=1.0, methods=frozenset({"POST"}), path_regex=r"[?&]restore")
    with FaultProxy(s3.endpoint.url, refused) as proxy:
        engine_job = job(s3.endpoint, src, dst, source_url=proxy.url, archived="restore")
        run = run_engine(engine_job, s3.endpoint, source_url=proxy.url)
    counts = run.summary.counts
    assert run.failed_keys() == ARCHIVED
    assert {f.code for f in run.summary.failures} == {"AccessDenied"}
    assert all("refused to restore" in f.message for f in run.summary.failures)
    assert (counts.restore_waiting, counts.restored, counts.pending) == (0, 0, 0)
    assert set(digest_map(s3.client, dst)) == READABLE
    assert ending(run.summary).exit_code == 3  # not a restore still to come: a failure to fix


def test_archived_objects_beyond_what_one_run_waits_for_are_requested_and_reported(
    s3: Any, restores_take: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ferry.worker.engine.MAX_WAITING", 1)
    src, dst = fill(s3)
    engine_job = job(
        s3.endpoint,
        src,
        dst,
        archived="restore",
        restore={"maxWaitSeconds": 60, "checkIntervalSeconds": 1},
    )
    run = run_engine(engine_job, s3.endpoint)
    counts = run.summary.counts
    assert counts.restored == 1
    assert {f.code for f in run.summary.failures} == {RESTORE_NOT_AWAITED}
    assert len(run.summary.failures) == len(ARCHIVED) - 1
    # Their restores were requested all the same: a later run finds them restored.
    for key in run.failed_keys():
        assert "Restore" in s3.client.head_object(Bucket=src, Key=key)
    assert ending(run.summary).state == "restorePending"
