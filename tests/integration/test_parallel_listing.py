"""The parallel listing behind planning (worker/scan.py, worker/parallel_listing.py) against real S3 servers
over HTTP: versitygw (the testbed's S3 server) for deep, wide and flat buckets, moto for key shapes a
posix-backed server cannot hold (a key that is also a "directory" of others). Every plan is checked
against a sequential listing of the same bucket: same histogram, pieces contiguous in key order covering
the whole key space, and every key in exactly one piece, counted there. A listing that breaks off raises
PlanningStopped worth retrying, never a partial plan; the object cap and the deadline hold."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ferry.errors import InvalidSpec
from ferry.model import CopyJobSpec
from ferry.model.plan import Shard
from ferry.operator import planning
from ferry.operator.planning import Planner
from ferry.operator.planresult import merge_parts, parse_plan_result
from ferry.operator.render import fit_shards, shards_budget
from ferry.worker import planpod
from ferry.worker import scan as scan_module
from ferry.worker.leanlist import LeanListing
from ferry.worker.retry import RetryPolicy
from ferry.worker.s3 import list_pages
from ferry.worker.scan import DEFAULT_LISTERS, ListingTracker, PlanningStopped, Scan, scan
from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint
from testbed.versitygw import VersityGW

PREFIX = "data/"
#: Small pages, so that a few thousand keys make many pages and ranges are cut while listing.
PAGE = 50
#: Botocore tries once (Ferry's retry loop is the one under test) and gives up on a silent server fast.
CLIENT = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=2, max_pool_connections=32
)


@pytest.fixture(scope="module")
def versitygw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersityGW]:
    try:
        binaries = TestBinaries(find_bin_dir())
        binaries.require("versitygw")
    except MissingBinariesError as exc:
        pytest.fail(f"testbed binaries missing: {exc}; run `make testbin`", pytrace=False)
    with VersityGW(binaries, tmp_path_factory.mktemp("versitygw")) as gw:
        yield gw


def client(endpoint: S3Endpoint) -> Any:
    return endpoint.client(config=CLIENT)


def bucket_with(endpoint: S3Endpoint, name: str, keys: list[str]) -> str:
    c = client(endpoint)
    c.create_bucket(Bucket=name)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: c.put_object(Bucket=name, Key=k, Body=b"x" * (len(k) * 37 % 5000)), keys))
    return name


def spec_for(endpoint: S3Endpoint, bucket: str, prefix: str = PREFIX, **extra: Any) -> CopyJobSpec:
    raw = {
        "source": {"bucket": bucket, "prefix": prefix, "endpoint": endpoint.url},
        "destination": {"bucket": "ferry-destination", "endpoint": endpoint.url},
        **extra,
    }
    return CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)


def sequential(c: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    return [(o.key, o.size) for page in list_pages(c, bucket, prefix) for o in page]


def contains(piece: Shard, key: str) -> bool:
    return (piece.start_after is None or key > piece.start_after) and (piece.end is None or key <= piece.end)


def assert_plan_covers(found: Scan, listed: list[tuple[str, int]]) -> None:
    """The plan equals the sequential listing's: histogram, cover, and each key counted in one piece."""
    reference = Planner().add_all(listed).histogram()
    assert found.result.histogram == reference
    pieces = found.result.pieces
    assert pieces[0].start_after is None and pieces[-1].end is None
    for before, after in itertools.pairwise(pieces):
        assert before.end is not None and before.end == after.start_after
    ends = [p.end for p in pieces[:-1]]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    counted = [0] * len(pieces)
    for key, _size in listed:
        hits = [i for i, p in enumerate(pieces) if contains(p, key)]
        assert len(hits) == 1, (key, hits)
        counted[hits[0]] += 1
    assert counted == [p.objects for p in pieces]
    # What the operator checks of a planner's answer holds too.
    assert parse_plan_result(found.result.to_json()).histogram == reference


LAYOUTS = {
    # 4 levels of prefixes, objects at every level.
    "deep": [
        f"{PREFIX}{a}/l{b}/m{c}/o{d:02d}"
        for a in "abcd"
        for b in range(4)
        for c in range(4)
        for d in range(30)
    ]
    + [f"{PREFIX}{a}/top{d}" for a in "abcd" for d in range(5)]
    + [f"{PREFIX}direct{d}" for d in range(20)],
    # Many sibling prefixes, a few objects each.
    "wide": [f"{PREFIX}user{u:04d}/file{f}" for u in range(600) for f in range(3)],
    # No "/" below the prefix at all: parallel only through cuts.
    "flat": [f"{PREFIX}{i:07d}" for i in range(0, 2500 * 37, 37)],
    # Days of a few objects each, one of which holds most of the bucket: cut where it is dense.
    "hot": [f"{PREFIX}d/2021-01-{day:02d}/o{i:05d}" for day in range(1, 29) for i in range(3)]
    + [f"{PREFIX}d/2021-01-21/object-{i:05d}.x" for i in range(1500)],
}


@pytest.fixture(scope="module")
def layouts(versitygw: VersityGW) -> dict[str, str]:
    made = {}
    for name, keys in LAYOUTS.items():
        # Objects outside the prefix are never planned.
        made[name] = bucket_with(versitygw.endpoint, f"layout-{name}", [*keys, "outside/x", "datb/y", "dat"])
    return made


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("listers", [1, 8])
def test_a_parallel_plan_equals_a_sequential_listing(
    versitygw: VersityGW, layouts: dict[str, str], layout: str, listers: int
) -> None:
    endpoint = versitygw.endpoint
    c = client(endpoint)
    listed = sequential(c, layouts[layout], PREFIX)
    assert len(listed) == len(LAYOUTS[layout])
    tracker = ListingTracker()
    found = scan(spec_for(endpoint, layouts[layout]), c, listers=listers, page_size=PAGE, tracker=tracker)
    assert_plan_covers(found, listed)
    progress = tracker.snapshot()
    assert progress.listed == len(listed) and progress.objects == len(listed)
    assert progress.requests == found.list_requests and progress.ranges_done == progress.ranges_total
    assert progress.keys_per_second > 0 and progress.eta_seconds == 0
    # Listing in parallel costs few requests beyond the pages themselves. A block much denser than its
    # range costs more: each cut into it reads a page twice, and cuts probe the sparse rest.
    pages = -(-len(listed) // PAGE)
    factor = 4 if layout == "hot" else 1.5
    assert found.list_requests <= pages * factor + 40, (found.list_requests, pages)
    # The very pieces one planner fed the sequential listing cuts (with scan's piece sizes): piece ends
    # are functions of the keys, wherever the listers cut the key space.
    one = Planner(piece_objects=1000, piece_bytes=2**30).add_all(listed)
    spec = spec_for(endpoint, layouts[layout])
    assert list(found.result.pieces) == fit_shards(one.pieces(), shards_budget(spec))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("pods", [2, 3])
def test_a_listing_divided_over_planner_pods_joins_into_the_whole_plan(
    versitygw: VersityGW, layouts: dict[str, str], layout: str, pods: int
) -> None:
    endpoint = versitygw.endpoint
    c = client(endpoint)
    listed = sequential(c, layouts[layout], PREFIX)
    spec = spec_for(endpoint, layouts[layout])
    # Each pod lists on its own, as the pods of the planner Job do, and answers its part.
    parts = [scan(spec, c, listers=4, page_size=PAGE, part=(i, pods)) for i in range(pods)]
    answers = [parse_plan_result(p.result.to_json()) for p in parts]
    merged = merge_parts(answers, 8192)
    assert_plan_covers(dataclasses.replace(parts[0], result=merged), listed)
    # The pods' parts join into the pieces one planner of every key cuts, wherever the pods divided.
    one = Planner(piece_objects=1000, piece_bytes=2**30).add_all(listed)
    assert list(merged.pieces) == fit_shards(one.pieces(), shards_budget(spec))
    # The work was divided where the bucket has prefixes to divide it at. A flat bucket is divided at
    # midpoints of the characters discovery saw, which split numbered keys that all begin alike badly.
    if layout != "flat":
        assert sum(1 for a in answers if a.histogram.objects) >= 2, [a.histogram.objects for a in answers]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_large_job_s_pieces_are_the_same_listed_in_parallel_by_pods_or_sequentially(
    versitygw: VersityGW, layouts: dict[str, str], layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs past EXACT_KEYS keys have content-defined piece ends; these buckets pass a lowered limit, and
    # pieces of 20 objects put ends in every range the listers cut.
    monkeypatch.setattr(planning, "EXACT_KEYS", 50)
    endpoint = versitygw.endpoint
    c = client(endpoint)
    listed = sequential(c, layouts[layout], PREFIX)
    spec = spec_for(endpoint, layouts[layout], shardSize={"maxObjects": 20})
    one = Planner(piece_objects=20).add_all(listed)
    assert one.level == 0
    expected = fit_shards(one.pieces(), shards_budget(spec))
    found = scan(spec, c, listers=8, page_size=PAGE)
    assert list(found.result.pieces) == expected
    parts = [scan(spec, c, listers=3, page_size=PAGE, part=(i, 3)) for i in range(3)]
    merged = merge_parts([parse_plan_result(p.result.to_json()) for p in parts], 8192, (20, 2**30))
    assert list(merged.pieces) == one.pieces()


def test_a_flat_bucket_is_listed_by_several_listers_at_once(
    versitygw: VersityGW, layouts: dict[str, str]
) -> None:
    endpoint = versitygw.endpoint
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=20)) as proxy:
        c = client(dataclasses.replace(endpoint, url=proxy.url))
        busiest = 0
        tracker = ListingTracker()
        done = threading.Event()

        def watch() -> None:
            nonlocal busiest
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                busiest = max(busiest, tracker.snapshot().listers)
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            found = scan(spec_for(endpoint, layouts["flat"]), c, listers=8, page_size=PAGE, tracker=tracker)
        finally:
            done.set()
            watcher.join(10)
    assert_plan_covers(found, sequential(client(endpoint), layouts["flat"], PREFIX))
    assert busiest >= 4, busiest


AWKWARD = [
    "a",
    "a/",
    "a/b",
    "a//",
    "a//b",
    "a///c",
    "a/b/c",
    "a0",
    "b c/d",
    "ü/日本語/🙂",
    "ü/日本語/🙂🙂",
    "z🙂x",
    "\U0010fffd/x",
    "\ud7ff\ue000",
    "percent%20/x",
    "dots/../x",
    "x" * 200 + "/" + "y" * 700,
]


@pytest.mark.parametrize("prefix", ["", "a", "a/"], ids=["no-prefix", "bare-prefix", "prefix"])
def test_awkward_keys_are_each_planned_once(s3: Any, prefix: str) -> None:
    keys = [*AWKWARD, *(f"{k}{i}" for k in ("a/", "a//", "ü/", "") for i in range(40))]
    bucket = s3.make_bucket("awkward")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.client.put_object(Bucket=bucket, Key=k, Body=b"x" * len(k)), keys))
    c = client(s3.endpoint)
    listed = sequential(c, bucket, prefix)
    found = scan(spec_for(s3.endpoint, bucket, prefix), c, listers=6, page_size=7)
    assert_plan_covers(found, listed)


def test_a_filter_plans_only_what_it_accepts(versitygw: VersityGW, layouts: dict[str, str]) -> None:
    endpoint = versitygw.endpoint
    c = client(endpoint)
    spec = spec_for(endpoint, layouts["deep"], filter={"include": ["*/o0*"], "exclude": ["b/*"]})
    found = scan(spec, c, listers=8, page_size=PAGE)
    accepted = [
        (k, s)
        for k, s in sequential(c, layouts["deep"], PREFIX)
        if "/o0" in k and not k.startswith(f"{PREFIX}b/")
    ]
    assert accepted and found.result.histogram == Planner().add_all(accepted).histogram()
    assert sum(p.objects for p in found.result.pieces) == len(accepted)


def test_the_object_cap_counts_listed_keys_and_stops_the_plan(
    versitygw: VersityGW, layouts: dict[str, str]
) -> None:
    endpoint = versitygw.endpoint
    spec = spec_for(endpoint, layouts["flat"], filter={"include": ["nothing-matches"]})
    with pytest.raises(PlanningStopped) as stopped:
        scan(spec, client(endpoint), listers=8, page_size=PAGE, max_objects=300)
    assert stopped.value.reason == "TooManyObjects" and not stopped.value.retry
    assert "more than 300 objects" in str(stopped.value)


def test_the_deadline_stops_a_slow_listing(versitygw: VersityGW, layouts: dict[str, str]) -> None:
    endpoint = versitygw.endpoint
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=200)) as proxy:
        c = client(dataclasses.replace(endpoint, url=proxy.url))
        started = time.monotonic()
        with pytest.raises(PlanningStopped) as stopped:
            scan(spec_for(endpoint, layouts["flat"]), c, listers=4, page_size=PAGE, deadline_seconds=0.5)
        assert time.monotonic() - started < 5
    assert stopped.value.reason == "ListingTooLong" and "planning.listingDeadlineSeconds" in str(
        stopped.value
    )


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        scan_module,
        "LISTING_RETRY",
        RetryPolicy(max_attempts=3, base_seconds=0.01, throttle_base_seconds=0.01),
    )


@pytest.mark.parametrize(
    "fault",
    [
        FaultPlan(error500_rate=1.0, methods=frozenset({"GET"})),
        FaultPlan(reset_rate=1.0, methods=frozenset({"GET"})),
        FaultPlan(stall_rate=1.0, stall_seconds=5, methods=frozenset({"GET"})),
    ],
    ids=["server-errors", "resets", "stalls"],
)
def test_a_listing_broken_off_midway_is_retried_never_half_planned(
    versitygw: VersityGW, layouts: dict[str, str], quick_retries: None, fault: FaultPlan
) -> None:
    endpoint = versitygw.endpoint
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=5)) as proxy:
        c = client(dataclasses.replace(endpoint, url=proxy.url))
        tracker = ListingTracker()

        def break_off() -> None:
            deadline = time.monotonic() + 30
            while tracker.snapshot().listed < 500 and time.monotonic() < deadline:
                time.sleep(0.005)
            proxy.set_plan(dataclasses.replace(fault, latency_ms=5))

        breaker = threading.Thread(target=break_off)
        breaker.start()
        try:
            with pytest.raises(PlanningStopped) as stopped:
                scan(spec_for(endpoint, layouts["flat"]), c, listers=4, page_size=PAGE, tracker=tracker)
        finally:
            breaker.join(40)
    assert stopped.value.reason == "ListingFailed" and stopped.value.retry
    assert 500 <= tracker.snapshot().listed < len(LAYOUTS["flat"])
    assert "attempt" in str(stopped.value)


def test_a_bucket_changing_while_listed_still_gives_a_contiguous_plan(versitygw: VersityGW) -> None:
    endpoint = versitygw.endpoint
    before = [f"{PREFIX}{i:06d}" for i in range(0, 1500)]
    bucket = bucket_with(endpoint, "changing", before)
    added = [f"{PREFIX}{i:06d}x" for i in range(0, 1500, 3)]
    deleted = before[::4]
    after = sorted((set(before) - set(deleted)) | set(added))
    writer = client(endpoint)
    with FaultProxy(endpoint.url, FaultPlan(latency_ms=80)) as proxy:
        c = client(dataclasses.replace(endpoint, url=proxy.url))

        def change() -> None:
            for new, old in itertools.zip_longest(added, deleted):
                if new is not None:
                    writer.put_object(Bucket=bucket, Key=new, Body=b"y")
                if old is not None:
                    writer.delete_object(Bucket=bucket, Key=old)

        changer = threading.Thread(target=change)
        changer.start()
        try:
            found = scan(spec_for(endpoint, bucket), c, listers=4, page_size=PAGE)
        finally:
            changer.join(120)
    stable = set(before) & set(after)
    objects = found.result.histogram.objects
    assert len(stable) <= objects <= len(set(before) | set(after))
    pieces = found.result.pieces
    assert pieces[0].start_after is None and pieces[-1].end is None
    for p, q in itertools.pairwise(pieces):
        assert p.end == q.start_after
    assert sum(p.objects for p in pieces) == objects
    for key in stable:
        assert sum(1 for p in pieces if contains(p, key)) == 1


def test_objects_already_at_the_destination_are_counted(
    versitygw: VersityGW, layouts: dict[str, str]
) -> None:
    endpoint = versitygw.endpoint
    c = client(endpoint)
    source = layouts["wide"]
    destination = "existing-destination"
    c.create_bucket(Bucket=destination)
    keys = LAYOUTS["wide"][::5]
    copied = keys[: len(keys) // 2]
    with ThreadPoolExecutor(16) as pool:
        # Half copied as they are (skipped), half with other content (copied again).
        list(
            pool.map(
                lambda k: c.copy_object(
                    Bucket=destination,
                    Key="copy/" + k[len(PREFIX) :],
                    CopySource={"Bucket": source, "Key": k},
                ),
                copied,
            )
        )
        list(
            pool.map(
                lambda k: c.put_object(Bucket=destination, Key="copy/" + k[len(PREFIX) :], Body=b"other"),
                keys[len(keys) // 2 :],
            )
        )
    raw = {
        "source": {"bucket": source, "prefix": PREFIX, "endpoint": endpoint.url},
        "destination": {"bucket": destination, "prefix": "copy/", "endpoint": endpoint.url},
    }
    spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    found = scan(spec, c, destination=c, listers=8, page_size=PAGE)
    sizes = dict(sequential(c, source, PREFIX))
    assert found.existing == (len(copied), sum(sizes[k] for k in copied))
    assert found.result.destination_checked
    assert_plan_covers(found, sequential(c, source, PREFIX))


def test_an_empty_destination_costs_one_request_not_one_per_range(
    versitygw: VersityGW, layouts: dict[str, str]
) -> None:
    endpoint = versitygw.endpoint
    c = client(endpoint)
    c.create_bucket(Bucket="empty-destination")
    raw = {
        "source": {"bucket": layouts["wide"], "prefix": PREFIX, "endpoint": endpoint.url},
        "destination": {"bucket": "empty-destination", "prefix": "copy/", "endpoint": endpoint.url},
    }
    spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    found = scan(spec, c, destination=c, listers=1, page_size=PAGE)
    alone = scan(spec, c, listers=1, page_size=PAGE)
    assert found.existing == (0, 0) and alone.existing is None
    assert found.result.destination_checked
    assert found.list_requests == alone.list_requests + 1
    assert_plan_covers(found, sequential(c, layouts["wide"], PREFIX))


def test_an_empty_prefix_plans_one_open_piece(versitygw: VersityGW, layouts: dict[str, str]) -> None:
    endpoint = versitygw.endpoint
    found = scan(spec_for(endpoint, layouts["wide"], "nothing-here/"), client(endpoint), listers=4)
    assert found.result.pieces == (Shard(None, None, 0, 0),)
    assert found.result.histogram.objects == 0


def test_planning_keeps_no_more_than_bounded_pieces(
    versitygw: VersityGW, layouts: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ferry.worker import parallel_listing

    monkeypatch.setattr(parallel_listing, "MAX_PIECES", 16)
    endpoint = versitygw.endpoint
    c = client(endpoint)
    spec = spec_for(endpoint, layouts["flat"], shardSize={"maxObjects": 10})
    found = scan(spec, c, listers=8, page_size=PAGE)
    assert len(found.result.pieces) <= 16
    assert_plan_covers(found, sequential(c, layouts["flat"], PREFIX))


def test_the_lean_listing_reads_pages_as_boto3_does(s3: Any) -> None:
    bucket = s3.make_bucket("lean")
    keys = [*AWKWARD, "plus+sign", "space and+plus/x", "amp&lt;/y", "tab\tkey", "a" * 1024]
    for k in keys:
        s3.client.put_object(Bucket=bucket, Key=k, Body=b"z" * (len(k) % 17))
    c = client(s3.endpoint)
    lean = LeanListing(c)
    asks: list[dict[str, Any]] = [
        {"Prefix": "", "MaxKeys": 1000},
        {"Prefix": "a", "MaxKeys": 3, "StartAfter": "a/"},
        {"Prefix": "", "Delimiter": "/", "MaxKeys": 1000},
    ]
    for ask in asks:
        expected, got = c.list_objects_v2(Bucket=bucket, **ask), lean.list_objects_v2(Bucket=bucket, **ask)
        fields = ("Key", "Size", "ETag", "LastModified")
        assert [tuple(o[f] for f in fields) for o in got.get("Contents", [])] == [
            tuple(o[f] for f in fields) for o in expected.get("Contents", [])
        ]
        assert got.get("CommonPrefixes") == expected.get("CommonPrefixes")
        assert got["IsTruncated"] == expected["IsTruncated"]
        assert got.get("NextContinuationToken") == expected.get("NextContinuationToken")
    assert sorted(o["Key"] for o in lean.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(keys)
    with pytest.raises(ClientError) as refused:
        lean.list_objects_v2(Bucket="no-such-bucket-for-ferry")
    assert refused.value.response["Error"]["Code"] == "NoSuchBucket"


@pytest.mark.parametrize(
    ("value", "listers"),
    [("", DEFAULT_LISTERS), ("1", 1), ("256", 256), ("0", None), ("257", None), ("x", None)],
)
def test_the_planner_s_listers_come_from_its_environment_within_bounds(
    tmp_path: Path, value: str, listers: int | None
) -> None:
    (tmp_path / "spec.json").write_text(
        '{"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}'
    )
    env = {"FERRY_PLAN_DIR": str(tmp_path), "FERRY_PLAN_LISTERS": value}
    if listers is None:
        with pytest.raises(InvalidSpec, match="environment is invalid"):
            planpod.config_from(env)
    else:
        assert planpod.config_from(env).listers == listers


def test_the_planner_s_status_tells_listers_requests_rate_and_eta(
    versitygw: VersityGW, layouts: dict[str, str]
) -> None:
    tracker = ListingTracker()
    server = planpod.PlanServer(("127.0.0.1", 0), tracker)
    try:
        port = server.address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
            before = json.loads(answer.read())
        assert before["listed"] == 0 and before["etaSeconds"] is None and not before["done"]
        endpoint = versitygw.endpoint
        found = scan(
            spec_for(endpoint, layouts["wide"]), client(endpoint), listers=4, page_size=PAGE, tracker=tracker
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
            after = json.loads(answer.read())
    finally:
        server.close()
    assert after["format"] == planpod.STATUS_FORMAT
    assert (after["listed"], after["objects"]) == (len(LAYOUTS["wide"]), found.result.histogram.objects)
    assert after["requests"] == found.list_requests and after["listers"] == 0
    assert after["keysPerSecond"] > 0 and after["etaSeconds"] == 0
