"""A sync's census and delete pass cut to one shard's key range, as the worker pods of the operator's
copy and delete Jobs run them (worker/syncpod.py over worker/deleter.py).

Server: moto (the session-wide `s3` fixture of tests/conftest.py): plain ListObjectsV2 with StartAfter,
HeadObject and DeleteObjects, which moto answers as S3 does; no server-specific listing is in question.

Proves: shards that split the key space count and delete exactly their own destination-only keys (the
destination's keys placed by their source form, under different prefixes), together exactly what one
census of the whole space finds; a shard never deletes past its approved count; a cap of 0 lists nothing;
a pass stopped (a suspension's SIGTERM) counts exactly what it deleted, deletes none of a batch it was
still checking, and the shard's next pass, capped at what is left, never goes past the approved count.
"""

from __future__ import annotations

import threading
from typing import Any

from ferry.model.copyjob import parse_copyjob
from ferry.worker.deleter import SyncSides
from ferry.worker.objects import KeyRange
from ferry.worker.shardsync import DeletedBefore, pod_tag, resumed_allowance
from ferry.worker.syncpod import delete_shard, shard_census


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=bucket).get("Contents", []))


def put(s3: Any, bucket: str, *names: str) -> None:
    for name in names:
        s3.client.put_object(Bucket=bucket, Key=name, Body=b"x" * 10)


def spec(s3: Any, src: str, dst: str) -> Any:
    return parse_copyjob(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "metadata": {"name": "ranges"},
            "spec": {
                "source": {"bucket": src, "prefix": "data/", "endpoint": s3.endpoint.url},
                "destination": {"bucket": dst, "prefix": "mirror/", "endpoint": s3.endpoint.url},
                "mode": "sync",
                "deletes": {"max": 100},
            },
        }
    ).spec


SHARDS = (KeyRange(None, "data/c"), KeyRange("data/c", "data/m"), KeyRange("data/m", None))


def test_shards_count_and_delete_exactly_their_own_destination_only_keys(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "data/a", "data/c", "data/k", "data/x", "other/q")
    put(
        s3,
        dst,
        "mirror/a",
        "mirror/b-gone",  # shard 0
        "mirror/c",
        "mirror/c0-gone",  # shard 1: just after shard 0's end
        "mirror/k",
        "mirror/m",  # shard 1's end, gone at the source
        "mirror/x",
        "mirror/z-gone",  # shard 2
        "elsewhere/keep",  # outside the destination prefix: never the job's
    )
    job = spec(s3, src, dst)
    client = s3.client
    counts = [shard_census(job, client, client, r) for r in SHARDS]
    assert [c.candidates for c in counts] == [1, 2, 1]
    assert [c.source_in_scope for c in counts] == [2, 1, 1]
    assert [c.destination_in_scope for c in counts] == [3, 3, 2]
    assert all(c.listing_complete for c in counts)
    whole = SyncSides(job, client, client).census(sample=0).census
    assert sum(c.candidates for c in counts) == whole.candidates
    assert sum(c.destination_in_scope for c in counts) == whole.destination_objects
    # The middle shard deletes its own two and nothing of its neighbours'.
    done = delete_shard(job, client, client, SHARDS[1], allowed=2)
    assert (done.deleted, done.kept, done.failed, done.error) == (2, 0, 0, None)
    assert "mirror/b-gone" in keys(s3, dst) and "mirror/z-gone" in keys(s3, dst)
    assert "mirror/c0-gone" not in keys(s3, dst) and "mirror/m" not in keys(s3, dst)


def test_a_shard_never_deletes_past_its_approved_count_and_a_cap_of_zero_lists_nothing(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "data/a")
    put(s3, dst, "mirror/a", "mirror/d1", "mirror/d2", "mirror/d3")
    job = spec(s3, src, dst)

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"a shard allowed nothing made a request: {name}")

    nothing = delete_shard(job, Untouchable(), Untouchable(), SHARDS[1], allowed=0)
    assert nothing.deleted == 0
    # Counted 1 (as if the source lost two more objects since): the pass stops at its count.
    done = delete_shard(job, s3.client, s3.client, SHARDS[1], allowed=1)
    assert done.deleted == 1 and done.error is not None and "stopped there" in done.error
    assert len(keys(s3, dst)) == 3


class StopAfterFirstDelete:
    """The real S3 client, which sets ``stop`` once its first DeleteObjects answered (as a suspension's
    SIGTERM arriving while the pass goes on)."""

    def __init__(self, client: Any, stop: threading.Event) -> None:
        self._client, self._stop = client, stop

    def delete_objects(self, **kwargs: Any) -> Any:
        answer = self._client.delete_objects(**kwargs)
        self._stop.set()
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_delete_pass_stopped_between_batches_counts_what_it_deleted_and_its_next_pod_stays_within_the_count(
    s3: Any,
) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "data/a", "data/b", "data/c", "data/d")
    stale = [f"mirror/gone-{i:02d}" for i in range(8)]
    put(s3, dst, "mirror/a", "mirror/b", "mirror/c", "mirror/d", *stale)
    job = spec(s3, src, dst)
    run = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
    stop = threading.Event()
    # Approved: the 8 destination-only keys; batches of 3, stopped once the first batch was deleted.
    first = SyncSides(job, s3.client, StopAfterFirstDelete(s3.client, stop), batch_size=3).delete(8, stop)
    assert (first.deleted, first.stopped, first.error) == (3, True, None)
    assert len(keys(s3, dst)) == 12 - 3
    # Meanwhile the source lost two more objects: 5 left of the count, 7 now missing at the source.
    s3.client.delete_objects(Bucket=src, Delete={"Objects": [{"Key": "data/a"}, {"Key": "data/b"}]})
    recorded = DeletedBefore(run, first.deleted, first.kept, first.failed, (pod_tag("first-pod"),))
    allowed, refused = resumed_allowance(8, run, 0, recorded)
    assert (allowed, refused) == (5, None)
    second = SyncSides(job, s3.client, s3.client, batch_size=3).delete(allowed)
    assert second.deleted == 5 and not second.stopped and "stopped there" in str(second.error)
    # Over both pods exactly the approved count went, never more.
    assert first.deleted + second.deleted == 8
    assert len(keys(s3, dst)) == 12 - 8


def test_a_delete_pass_stopped_while_checking_a_batch_deletes_none_of_it(s3: Any) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    put(s3, src, "data/a")
    put(s3, dst, "mirror/a", "mirror/x1", "mirror/x2")
    job = spec(s3, src, dst)
    stop = threading.Event()

    class StopWhileChecking:
        def head_object(self, **kwargs: Any) -> Any:
            stop.set()
            return s3.client.head_object(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(s3.client, name)

    result = SyncSides(job, StopWhileChecking(), s3.client).delete(2, stop)
    assert (result.deleted, result.stopped) == (0, True)
    assert len(keys(s3, dst)) == 3
