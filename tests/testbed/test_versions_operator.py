"""spec.versions all through the operator on the testbed: planner pods, sharded worker pods, status.

S3 is versitygw with bucket versioning (`--versioning-dir`). It pages through object versions in order
but not delete markers (it lists a key's markers ahead of its versions), so the histories here are of
object versions only; delete markers are proven against moto in tests/integration/test_versions_copy.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ferry.operator.reconcile import ledger_name
from ferry.operator.versionstatus import read_ledger
from support.operator import Jobs, accounting_closes, condition, spec_for
from testbed.binaries import TestBinaries
from testbed.versitygw import VersityGW

from .conftest import require

pytestmark = pytest.mark.timeout(240)

#: Versions written per key: key i has i + 1 of them.
KEYS = 6


@pytest.fixture(scope="module")
def versitygw(testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersityGW]:
    """This module's own versitygw, serving bucket versioning (the session's keeps no versions)."""
    require(testbin, "versitygw")
    with VersityGW(testbin, tmp_path_factory.mktemp("versitygw-versions"), versioning=True) as gateway:
        yield gateway


def versioned_bucket(s3: Any, name: str, *, versioned: bool = True) -> str:
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def histories(s3: Any, bucket: str) -> dict[str, list[bytes]]:
    """Each key's object versions' contents, oldest first (one page: the buckets here are small)."""
    listed = s3.list_object_versions(Bucket=bucket)
    assert not listed.get("IsTruncated") and not listed.get("DeleteMarkers")
    found: dict[str, list[bytes]] = {}
    for version in listed.get("Versions", ()):
        body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        found.setdefault(version["Key"], []).insert(0, body)
    return found


def test_a_copyjob_of_every_version_copies_each_history_in_order_across_shards(
    jobs: Jobs, s3: Any, versitygw: VersityGW, cluster: Any
) -> None:
    source = versioned_bucket(s3, "src-versions")
    destination = versioned_bucket(s3, "dst-versions")
    for i in range(KEYS):
        for n in range(i + 1):
            s3.put_object(Bucket=source, Key=f"k{i}", Body=f"key {i} version {n}".encode() * (n + 1))
    versions = KEYS * (KEYS + 1) // 2
    jobs.create(
        "history",
        spec_for(
            versitygw.endpoint.url,
            source,
            destination,
            versions="all",
            parallelism=2,
            shardSize={"maxObjects": 2},
        ),
    )
    status = jobs.wait_phase("history", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    # The plan counts current versions (one per key); the workers count every version they handled.
    assert status["plan"]["objects"] == KEYS and status["plan"]["shards"] >= 2
    assert status["objects"]["copied"] == versions and status["objects"]["failed"] == 0, status["objects"]
    assert accounting_closes(status)
    assert histories(s3, destination) == histories(s3, source)
    # What the objects counts (of versions) do not say: of how many keys, and what else happened.
    assert status["versions"] == {"keys": KEYS, "deleteMarkersCopied": 0, "divergedKeys": 0}
    # The progress ledger keeps each finished shard's counters, so the status keeps them once the
    # finished pods' reports are read from the ledger instead.
    ledger = cluster.core.read_namespaced_config_map(ledger_name("history"), jobs.namespace).data
    kept = read_ledger(ledger, status["plan"]["shards"])
    assert sorted(kept) == list(range(status["plan"]["shards"]))
    assert sum(counts["keys"] for counts in kept.values()) == KEYS


def test_a_diverged_key_is_counted_in_status_and_its_failed_entry_names_the_source_version(
    jobs: Jobs, s3: Any, versitygw: VersityGW, cluster: Any
) -> None:
    source = versioned_bucket(s3, "src-diverged")
    destination = versioned_bucket(s3, "dst-diverged")
    for n in range(2):
        s3.put_object(Bucket=source, Key="a", Body=f"a version {n}".encode())
        s3.put_object(Bucket=source, Key="b", Body=f"b version {n}".encode())
    # Someone wrote "a" at the destination: its history is not a prefix of the source's.
    s3.put_object(Bucket=destination, Key="a", Body=b"written at the destination")
    first_of_a = s3.list_object_versions(Bucket=source, Prefix="a")["Versions"][-1]["VersionId"]
    jobs.create("diverged", spec_for(versitygw.endpoint.url, source, destination, versions="all"))
    status = jobs.wait_phase("diverged", "Succeeded", "Failed")
    assert status["phase"] == "Failed" and condition(status, "Failed")["reason"] == "ObjectsFailed", status
    assert status["objects"]["failed"] == 2 and status["objects"]["copied"] == 2, status["objects"]
    assert status["versions"] == {"keys": 2, "deleteMarkersCopied": 0, "divergedKeys": 1}
    [failed] = status["failedObjects"]
    assert (failed["key"], failed["code"]) == ("a", "DestinationHistoryDiverged")
    assert failed["version"] == first_of_a  # the source version where the histories differ
    assert histories(s3, destination)["a"] == [b"written at the destination"]  # left untouched


def test_a_copyjob_of_every_version_into_a_bucket_without_versioning_stalls_naming_it(
    jobs: Jobs, s3: Any, versitygw: VersityGW
) -> None:
    source = versioned_bucket(s3, "src-unversioned-dst")
    destination = versioned_bucket(s3, "dst-unversioned", versioned=False)
    s3.put_object(Bucket=source, Key="k", Body=b"one")
    jobs.create("noversions", spec_for(versitygw.endpoint.url, source, destination, versions="all"))
    status = jobs.wait_stalled("noversions")
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "DestinationNotVersioned", stalled
    assert repr(destination) in stalled["message"] and "Status=Enabled" in stalled["message"]
    assert s3.list_object_versions(Bucket=destination).get("Versions") is None
