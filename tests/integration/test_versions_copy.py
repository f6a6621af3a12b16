"""`ferry run` with spec.versions all, against real S3 servers over HTTP on 127.0.0.1.

Histories are copied against moto (the session's `s3` server): it keeps versions and delete markers and
pages through a key's history in its true order. versitygw (started with `--versioning-dir`) does not:
it lists a key's delete markers ahead of its versions, at every page size, and stamps markers with times
out of order, so no client can read its histories in order; it serves the tests that need no order (a
destination without versioning, a source without versioning).

Histories are compared in the order the server pages through them, one entry per request (independently
of Ferry's own listing), version by version: kind and content.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir
from testbed.faultproxy import FaultProxy
from testbed.s3server import S3Endpoint
from testbed.versitygw import VersityGW
from tests.integration.test_ferry_run import ferry, write_job

#: The most entries a history read by `history` may have (every loop here is bounded).
MAX_ENTRIES = 200


@pytest.fixture(scope="module")
def versitygw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    try:
        binaries = TestBinaries(find_bin_dir())
        if not binaries.path("versitygw").is_file():
            pytest.skip("versitygw is not built (make testbin)")
    except (MissingBinariesError, OSError, subprocess.SubprocessError):
        pytest.skip("versitygw is not built (make testbin)")
    with VersityGW(binaries, tmp_path_factory.mktemp("versitygw"), versioning=True) as gateway:
        yield gateway.endpoint


def bucket(client: Any, name: str, *, versioned: bool = True) -> str:
    """A new bucket, with versioning enabled unless told otherwise."""
    name = f"{name}-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def history(client: Any, name: str) -> dict[str, list[tuple[str, str, bytes | None]]]:
    """Every key's history oldest first: (version id, kind, content), as the server pages through it."""
    by_key: dict[str, list[tuple[str, str, bytes | None]]] = {}
    kwargs: dict[str, Any] = {"Bucket": name, "MaxKeys": 1}
    for _ in range(MAX_ENTRIES):
        page = client.list_object_versions(**kwargs)
        for entry, kind in [(e, "Version") for e in page.get("Versions", ())] + [
            (e, "DeleteMarker") for e in page.get("DeleteMarkers", ())
        ]:
            body = None
            if kind == "Version":
                answer = client.get_object(Bucket=name, Key=entry["Key"], VersionId=entry["VersionId"])
                body = answer["Body"].read()
            by_key.setdefault(entry["Key"], []).insert(0, (entry["VersionId"], kind, body))
        if not page.get("IsTruncated"):
            return by_key
        kwargs.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])
    raise AssertionError(f"more than {MAX_ENTRIES} entries in {name}")


def contents(
    by_key: dict[str, list[tuple[str, str, bytes | None]]],
) -> dict[str, list[tuple[str, bytes | None]]]:
    return {key: [(kind, body) for _, kind, body in versions] for key, versions in by_key.items()}


def write_histories(client: Any, name: str) -> None:
    """Histories with object versions and delete markers interleaved, a key deleted at the end, a key
    recreated after a delete, and a version larger than a part (copied in parts)."""
    put = lambda key, body: client.put_object(Bucket=name, Key=key, Body=body)  # noqa: E731
    delete = lambda key: client.delete_object(Bucket=name, Key=key)  # noqa: E731
    put("a", b"a1")
    put("a", b"a2-longer")
    delete("a")
    put("a", b"a3")
    put("b/x", b"b1")
    delete("b/x")
    put("c", b"c1")
    put("d", b"d" * (9 * 2**20))
    put("d", b"d2")
    delete("d")
    delete("d")


def run_json(job: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = ferry("run", "-f", str(job), "--output", "json", "--progress", "none", *extra)
    return result.returncode, json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("path", ["server-side", "streamed"])
def test_every_version_is_copied_oldest_first_with_delete_markers_then_a_rerun_copies_nothing(
    s3: Any, tmp_path: Path, path: str
) -> None:
    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    # Through a proxy the source is another service, so versions are streamed (GET ?versionId, PUT).
    proxy = FaultProxy(s3.endpoint.url) if path == "streamed" else nullcontext()
    with proxy as running:
        source_endpoint = running.url if running is not None else None
        job = write_job(
            tmp_path / "job.yaml",
            s3.endpoint,
            src,
            dst,
            source_endpoint=source_endpoint,
            extra="  versions: all",
        )
        code, first, stderr = run_json(job)
        assert code == 0, stderr
        assert first["objects"] == {"total": 11, "copied": 11, "skipped": 0, "failed": 0, "pending": 0}
        assert first["versions"] == {"keys": 4, "deleteMarkersCopied": 4, "divergedKeys": 0}

        source, copied = history(client, src), history(client, dst)
        assert contents(copied) == contents(source)
        # Each copied object version names the source version it copies.
        for key, versions in copied.items():
            objects = [(v, s) for v, s in zip(versions, source[key], strict=True) if v[1] == "Version"]
            for (version_id, _, _), (source_id, _, _) in objects:
                head = client.head_object(Bucket=dst, Key=key, VersionId=version_id)
                assert head["Metadata"]["ferry-source-version-id"] == source_id

        code, second, stderr = run_json(job)
    assert code == 0, stderr
    assert second["objects"] == {"total": 11, "copied": 0, "skipped": 11, "failed": 0, "pending": 0}
    assert {key: [v for v, _, _ in vs] for key, vs in history(client, dst).items()} == {
        key: [v for v, _, _ in vs] for key, vs in copied.items()
    }


def test_a_destination_holding_the_start_of_a_history_gets_only_the_missing_tail(
    s3: Any, tmp_path: Path
) -> None:
    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    # What an interrupted run leaves: the first versions of "a" (written by hand here: they match by size
    # and ETag), nothing of the other keys.
    client.put_object(Bucket=dst, Key="a", Body=b"a1")
    client.put_object(Bucket=dst, Key="a", Body=b"a2-longer")
    before = [v for v, _, _ in history(client, dst)["a"]]

    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, extra="  versions: all")
    code, summary, stderr = run_json(job)
    assert code == 0, stderr
    assert summary["objects"]["skipped"] == 2 and summary["objects"]["copied"] == 9
    after = history(client, dst)
    assert contents(after) == contents(history(client, src))
    assert [v for v, _, _ in after["a"]][:2] == before  # the versions already there were kept


def test_a_diverged_destination_history_is_reported_and_left_untouched(s3: Any, tmp_path: Path) -> None:
    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    client.put_object(Bucket=dst, Key="a", Body=b"a1")
    client.put_object(Bucket=dst, Key="a", Body=b"written at the destination")
    before = history(client, dst)["a"]

    report = tmp_path / "failed.jsonl"
    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, extra="  versions: all")
    code, summary, _ = run_json(job, "--report", str(report))
    assert code == 3
    # All four versions of "a" are failed; the other keys' seven versions are copied.
    assert summary["objects"] == {"total": 11, "copied": 7, "skipped": 0, "failed": 4, "pending": 0}
    assert summary["versions"]["divergedKeys"] == 1
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(line["key"], line["code"]) for line in lines] == [("a", "DestinationHistoryDiverged")]
    assert lines[0]["version"] == history(client, src)["a"][1][0]  # the source version that differs
    assert "version 2" in lines[0]["message"]
    assert history(client, dst)["a"] == before


def test_a_destination_bucket_without_versioning_is_refused_with_exit_2(
    versitygw: S3Endpoint, tmp_path: Path
) -> None:
    client = versitygw.client()
    src, dst = bucket(client, "src"), bucket(client, "dst", versioned=False)
    write_histories(client, src)
    job = write_job(tmp_path / "job.yaml", versitygw, src, dst, extra="  versions: all")
    code, document, stderr = run_json(job)
    assert code == 2
    assert document["reason"] == "DestinationNotVersioned" and document["field"] == "spec.versions"
    assert f"bucket {dst!r}" in document["error"] and "Status=Enabled" in document["error"]
    assert "DestinationNotVersioned" in stderr
    assert client.list_objects_v2(Bucket=dst).get("KeyCount", 0) == 0


def test_a_source_without_versioning_copies_its_one_null_version_per_key(
    versitygw: S3Endpoint, tmp_path: Path
) -> None:
    client = versitygw.client()
    src, dst = bucket(client, "src", versioned=False), bucket(client, "dst")
    for i in range(3):
        client.put_object(Bucket=src, Key=f"k{i}", Body=b"x" * i)
    job = write_job(tmp_path / "job.yaml", versitygw, src, dst, extra="  versions: all")
    code, summary, stderr = run_json(job)
    assert code == 0, stderr
    assert summary["objects"]["copied"] == 3
    # One version per key, so no order to compare (versitygw cannot page one entry at a time).
    copied = client.list_object_versions(Bucket=dst)
    assert "DeleteMarkers" not in copied
    assert sorted((v["Key"], v["Size"]) for v in copied["Versions"]) == [("k0", 0), ("k1", 1), ("k2", 2)]
    for version in copied["Versions"]:
        head = client.head_object(Bucket=dst, Key=version["Key"], VersionId=version["VersionId"])
        assert head["Metadata"]["ferry-source-version-id"] == "null"
    code, summary, stderr = run_json(job)
    assert code == 0 and summary["objects"]["skipped"] == 3, stderr


def test_a_version_that_fails_holds_back_the_later_ones_and_a_rerun_copies_only_the_rest(
    s3: Any, tmp_path: Path
) -> None:
    from testbed.faultproxy import FaultPlan

    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    second_of_a = history(client, src)["a"][1][0]
    # Reading the second version of "a" is refused: the run stops that key there, as a run cut short would.
    plan = FaultPlan(
        refuse_rate=1.0, methods=frozenset({"GET", "HEAD"}), path_regex=f"versionId={second_of_a}"
    )
    report = tmp_path / "failed.jsonl"
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(
            tmp_path / "job.yaml", s3.endpoint, src, dst, source_endpoint=proxy.url, extra="  versions: all"
        )
        code, summary, _ = run_json(job, "--report", str(report))
    assert code == 3
    assert summary["objects"] == {"total": 11, "copied": 8, "skipped": 0, "failed": 3, "pending": 0}
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(line["key"], line["code"], line["version"]) for line in lines] == [
        ("a", "AccessDenied", second_of_a),
        ("a", "EarlierVersionFailed", history(client, src)["a"][2][0]),
    ]
    assert [body for _, _, body in history(client, dst)["a"]] == [b"a1"]  # nothing landed out of order

    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst, extra="  versions: all")
    code, summary, stderr = run_json(job)
    assert code == 0, stderr
    assert summary["objects"] == {"total": 11, "copied": 3, "skipped": 8, "failed": 0, "pending": 0}
    assert contents(history(client, dst)) == contents(history(client, src))


def test_histories_are_listed_in_the_service_order_at_any_page_size(s3: Any) -> None:
    """moto sends a page's delete markers after its versions: Ferry's listing asks where each falls, and
    the order survives pages that cut a key's history anywhere."""
    from ferry.worker.versionlisting import version_pages

    client = s3.client
    src = bucket(client, "src")
    for key in ("a", "b", "c"):
        client.put_object(Bucket=src, Key=key, Body=b"1")
        client.delete_object(Bucket=src, Key=key)
        client.put_object(Bucket=src, Key=key, Body=b"22")
        client.put_object(Bucket=src, Key=key, Body=b"333")
        client.delete_object(Bucket=src, Key=key)
        client.delete_object(Bucket=src, Key=key)
    expected = [
        (key, version_id) for key, versions in history(client, src).items() for version_id, _, _ in versions
    ]
    for page_size in (1, 2, 3, 5, 1000):
        listed = [
            (v.key, v.version_id)
            for page in version_pages(client, src, "", page_size=page_size)
            for v in page
        ]
        # Listed newest first per key; `history` gives them oldest first.
        by_key: dict[str, list[tuple[str, str]]] = {}
        for key, version_id in listed:
            by_key.setdefault(key, []).insert(0, (key, version_id))
        assert [entry for entries in by_key.values() for entry in entries] == expected, page_size


def test_a_shard_of_every_version_lists_its_key_range_and_ignores_a_resume_point(
    s3: Any, tmp_path: Path
) -> None:
    """A worker pod's shard: only its key range, with a destination prefix; a resume point (which a run
    of current versions may have left) skips nothing, since it says nothing of older versions."""
    from ferry.model.checkpoint import Checkpoint
    from ferry.worker.engine import CopyEngine
    from ferry.worker.limits import FixedLimiter
    from ferry.worker.objects import KeyRange
    from ferry.worker.report import FailureReport
    from ferry.worker.s3 import ClientOptions, Credentials, make_client
    from tests.support.engine import spec

    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    job = spec(
        {"bucket": src, "endpoint": s3.endpoint.url},
        {"bucket": dst, "endpoint": s3.endpoint.url, "prefix": "copy/"},
        versions="all",
    )
    creds = Credentials(s3.endpoint.access_key, s3.endpoint.secret_key)
    engine = CopyEngine(
        spec=job,
        source_client=make_client(job.source, creds, ClientOptions()),
        destination_client=make_client(job.destination, creds, ClientOptions()),
        limiter=FixedLimiter(4),
        report=FailureReport(tmp_path / "failed.jsonl"),
        key_range=KeyRange("a", "c"),  # keys after "a", up to "c": b/x and c
        resume=Checkpoint(after="b/x", copied=2),
    )
    summary = engine.run()
    assert summary.complete and summary.checkpoint is None
    assert (summary.counts.copied, summary.counts.skipped, summary.counts.failed) == (3, 0, 0)
    source = history(client, src)
    assert contents(history(client, dst)) == {f"copy/{key}": contents(source)[key] for key in ("b/x", "c")}


def _evidence_lines(client: Any, audit: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The evidence lines of one `ferry run`, read as an auditor reads them: parts checked against the
    summary (SHA-256, line counts), the summary's totals against the lines."""
    from tests.integration.test_evidence_report import _read_parts, _read_summary

    pointer = document["evidence"]
    reader = type("Reader", (), {"client": client})()
    summary = _read_summary(reader, pointer["summary"])
    assert summary["complete"] is True and summary["objects"] == pointer["objects"]
    lines = [line for part in _read_parts(reader, audit, summary) for line in part]
    assert summary["objects"]["total"] == len(lines)
    return lines


def _with_evidence(s3: Any, audit: str) -> str:
    return (
        "  versions: all\n"
        f'  report: {{bucket: {audit}, prefix: "audit/", endpoint: "{s3.endpoint.url}", '
        "credentialsSecret: dst-creds, include: all}\n"
    )


@pytest.mark.parametrize("path", ["server-side", "streamed"])
def test_include_all_writes_one_evidence_line_per_version_with_delete_markers_then_a_rerun_skips_each(
    s3: Any, tmp_path: Path, path: str
) -> None:
    client = s3.client
    src, dst, audit = bucket(client, "src"), bucket(client, "dst"), bucket(client, "audit", versioned=False)
    write_histories(client, src)
    source = history(client, src)
    expected = {(key, vid): kind for key, versions in source.items() for vid, kind, _ in versions}
    assert len(expected) == 11
    proxy = FaultProxy(s3.endpoint.url) if path == "streamed" else nullcontext()
    with proxy as running:
        extra = _with_evidence(s3, audit) + ("  verify: etag\n" if path == "server-side" else "")
        job = write_job(
            tmp_path / "job.yaml",
            s3.endpoint,
            src,
            dst,
            source_endpoint=running.url if running is not None else None,
            extra=extra,
        )
        code, first, stderr = run_json(job)
        assert code == 0, stderr
        code, second, stderr = run_json(job)
    assert code == 0, stderr

    copied = _evidence_lines(client, audit, first)
    # Exactly one line per source version, named by its source version id, with its kind.
    assert {(line["key"], line["version"]): line["deleteMarker"] for line in copied} == {
        version: kind == "DeleteMarker" for version, kind in expected.items()
    }
    assert len(copied) == 11 and {line["action"] for line in copied} == {"copied"}
    markers = [line for line in copied if line["deleteMarker"]]
    assert len(markers) == 4
    for line in markers:
        assert line["size"] == 0 and line["checksum"] is None and line["code"] is None
        assert line["reason"].startswith("delete marker absent at destination")
    for line in copied:
        if line["deleteMarker"]:
            continue
        assert line["reason"] == "absent at destination"
        checksum = line["checksum"]
        # Streamed: CRC32C computed while reading, checked by the destination; server-side with
        # verify etag: the copy's ETag compared with the source version's.
        assert checksum["algorithm"] == ("etag" if path == "server-side" else "crc32c")
        assert (checksum["source"] and checksum["source"] == checksum["destination"]) or (
            line["key"] == "d" and line["size"] > 8 * 2**20  # a multipart copy has an ETag of its own
        )

    skipped = _evidence_lines(client, audit, second)
    assert second["evidence"]["summary"] != first["evidence"]["summary"]  # a scope per run
    assert {(line["key"], line["version"]) for line in skipped} == set(expected)
    assert len(skipped) == 11 and {line["action"] for line in skipped} == {"skipped"}
    for line in skipped:
        if line["deleteMarker"]:
            assert line["checksum"] is None and "delete marker" in line["reason"]
        else:
            # The ETags the two listings showed; a multipart copy of "d" is matched by its recorded id.
            assert line["checksum"]["algorithm"] == "etag" and line["checksum"]["source"]
            assert line["reason"] in (
                "same size and ETag",
                "same size, and the destination version records this source version id",
            )


def test_include_all_names_every_version_of_a_diverged_key_and_of_one_held_back_by_a_failure(
    s3: Any, tmp_path: Path
) -> None:
    from testbed.faultproxy import FaultPlan

    client = s3.client
    src, dst, audit = bucket(client, "src"), bucket(client, "dst"), bucket(client, "audit", versioned=False)
    write_histories(client, src)
    source = history(client, src)
    # "a" diverged at the destination; the second version of "d" cannot be read at the source.
    client.put_object(Bucket=dst, Key="a", Body=b"written at the destination")
    second_of_d = source["d"][1][0]
    plan = FaultPlan(
        refuse_rate=1.0, methods=frozenset({"GET", "HEAD"}), path_regex=f"versionId={second_of_d}"
    )
    with FaultProxy(s3.endpoint.url, plan) as proxy:
        job = write_job(
            tmp_path / "job.yaml",
            s3.endpoint,
            src,
            dst,
            source_endpoint=proxy.url,
            extra=_with_evidence(s3, audit),
        )
        code, document, stderr = run_json(job)
    assert code == 3, stderr
    assert document["objects"] == {"total": 11, "copied": 4, "skipped": 0, "failed": 7, "pending": 0}
    lines = _evidence_lines(client, audit, document)
    by_version = {(line["key"], line["version"]): line for line in lines}
    assert len(by_version) == len(lines) == 11
    # Every version of the diverged key: failed, with the reason.
    for version_id, _, _ in source["a"]:
        line = by_version[("a", version_id)]
        assert (line["action"], line["code"]) == ("failed", "DestinationHistoryDiverged")
        assert "version 1 of the key's history" in line["reason"]
    # "d": its first version copied, the second refused, the two delete markers after it held back.
    d = [by_version[("d", version_id)] for version_id, _, _ in source["d"]]
    assert [(line["action"], line["code"]) for line in d] == [
        ("copied", None),
        ("failed", "AccessDenied"),
        ("failed", "EarlierVersionFailed"),
        ("failed", "EarlierVersionFailed"),
    ]
    assert [line["deleteMarker"] for line in d] == [False, False, True, True]
    assert {line["action"] for key, line in by_version.items() if key[0] in ("b/x", "c")} == {"copied"}


@pytest.mark.parametrize(("metadata", "heads"), [(True, 8), (False, 1)], ids=["metadata-kept", "no-metadata"])
def test_a_server_side_version_copy_reads_the_version_s_metadata_only_when_it_is_kept(
    s3: Any, tmp_path: Path, metadata: bool, heads: int
) -> None:
    """CopyObject of a version replaces the metadata (to record the source version id): the version's own
    metadata is read first with a HEAD only when preserve.metadata keeps it (or preserve.objectLock
    needs the lock); otherwise the copy goes out alone and records the version id all the same."""
    from tests.support.engine import run_engine, spec

    client = s3.client
    src, dst = bucket(client, "src"), bucket(client, "dst")
    write_histories(client, src)
    client.put_object(Bucket=src, Key="c", Body=b"c2", Metadata={"owner": "team-a"}, ContentType="text/plain")
    client.delete_object(Bucket=src, Key="c")  # the version with metadata is no longer current
    job = spec(
        {"bucket": src, "endpoint": s3.endpoint.url},
        {"bucket": dst, "endpoint": s3.endpoint.url},
        versions="all",
        preserve={"metadata": metadata, "tags": False},
    )
    run = run_engine(job, s3.endpoint, transport="boto3")
    counts = run.summary.counts
    assert (counts.copied, counts.failed) == (13, 0), run.summary.failures
    requests = {(op, code): n for op, code, n in run.engine.progress().requests_by}
    # 8 object versions copied server-side: 7 by CopyObject (with metadata kept, a HEAD each) and the
    # 9 MiB one in parts (its HEAD pins the version's checksum and size whatever is preserved).
    assert requests.get(("COPY", "2xx"), 0) == 7
    assert requests.get(("HEAD", "2xx"), 0) == heads
    copied = history(client, dst)["c"]
    head = client.head_object(Bucket=dst, Key="c", VersionId=copied[1][0])
    assert head["Metadata"].get("ferry-source-version-id") == history(client, src)["c"][1][0]
    assert head["Metadata"].get("owner") == ("team-a" if metadata else None)
