"""Resume points of a shard (ferry/model/checkpoint.py, worker/settled.py): the low-water mark of settled
objects, its forms in `/status`, termination messages and the ledger, and how a worker pod reads it back
from the mounted ledger (worker/pod.py) — bounded, checked, and only inside its shard."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from ferry.model.checkpoint import (
    MAX_KEY_BYTES,
    Checkpoint,
    LedgerEntry,
    checkpoint_from_json,
    read_entry,
    resume_for,
    resume_key,
)
from ferry.model.copyjob import CopyJobSpec
from ferry.model.plan import Shard
from ferry.operator.reconcile import ledger_name
from ferry.operator.render import PROGRESS_MOUNT, Owner, progress_name, render_job
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing
from ferry.worker.engine import Summary
from ferry.worker.objects import Outcome
from ferry.worker.pod import STOP_WITHIN_SECONDS, WorkerConfig, read_resume, report_name
from ferry.worker.progress import Counts
from ferry.worker.settled import SettledMark
from ferry.worker.statusdoc import TERMINATION_LIMIT, parse_report, termination_message

C, S, F = Outcome.COPIED, Outcome.SKIPPED, Outcome.FAILED

# id, steps, expected (after, copied, skipped, failed) or None. Steps: ("open", key), ("close", key,
# outcome), ("settle", key, outcome), in the order the engine calls them.
MARKS = [
    ("nothing-yet", [("open", "a"), ("open", "b")], None),
    ("in-order", [("open", "a"), ("close", "a", C), ("open", "b"), ("close", "b", C)], ("b", 2, 0, 0)),
    # b finished before a: nothing is settled up to b until a is.
    ("out-of-order-waits", [("open", "a"), ("open", "b"), ("close", "b", C)], None),
    (
        "out-of-order-folds",
        [("open", "a"), ("open", "b"), ("close", "b", C), ("close", "a", C)],
        ("b", 2, 0, 0),
    ),
    ("skips-with-nothing-in-flight", [("settle", "a", S), ("settle", "b", S)], ("b", 0, 2, 0)),
    # Skips after an unfinished transfer wait for it.
    ("skips-behind-a-transfer", [("open", "a"), ("settle", "b", S), ("settle", "c", S)], None),
    ("skips-folded", [("open", "a"), ("settle", "b", S), ("close", "a", C)], ("b", 1, 1, 0)),
    ("failed-is-settled", [("open", "a"), ("close", "a", F), ("settle", "b", F)], ("b", 0, 0, 2)),
    # The oldest transfer in flight holds the mark, whatever finishes after it.
    (
        "held-by-the-oldest",
        [
            ("open", "a"),
            ("close", "a", C),
            ("open", "b"),
            ("open", "c"),
            ("settle", "d", S),
            ("close", "c", C),
        ],
        ("a", 1, 0, 0),
    ),
    ("closed-twice-counts-once", [("open", "a"), ("close", "a", C), ("close", "a", C)], ("a", 1, 0, 0)),
]


@pytest.mark.parametrize(("steps", "expected"), [m[1:] for m in MARKS], ids=[m[0] for m in MARKS])
def test_the_mark_is_the_highest_key_up_to_which_everything_settled(
    steps: list[tuple[str, ...]], expected: tuple[str, int, int, int] | None
) -> None:
    mark = SettledMark()
    tickets: dict[str, int] = {}
    for step in steps:
        if step[0] == "open":
            tickets[step[1]] = mark.opened(step[1], 10)
        elif step[0] == "close":
            mark.closed(tickets[step[1]], Outcome(step[2]))
        else:
            mark.settled(step[1], Outcome(step[2]), 10)
    point = mark.checkpoint
    if expected is None:
        assert point is None
    else:
        assert point is not None
        assert (point.after, point.copied, point.skipped, point.failed) == expected
        assert point.bytes_done == 10 * point.done


@pytest.mark.parametrize("seed", range(200))
def test_the_mark_agrees_with_a_recount_in_any_order(seed: int) -> None:
    """Random interleavings against the definition: the longest settled prefix of what was taken in."""
    rng = random.Random(seed)
    mark = SettledMark(Checkpoint("k000", copied=3, bytes_copied=30))
    keys = [f"k{i:03d}" for i in range(1, rng.randint(2, 60))]
    taken, outcomes, tickets = 0, {}, {}
    for _ in range(1000):
        if taken == len(keys) and not tickets:
            break
        if taken < len(keys) and (not tickets or rng.random() < 0.5):
            key = keys[taken]
            taken += 1
            if rng.random() < 0.3:
                outcomes[key] = rng.choice([S, F])
                mark.settled(key, outcomes[key], 1)
            else:
                tickets[key] = mark.opened(key, 1)
        else:
            key = rng.choice(sorted(tickets))
            outcomes[key] = rng.choice([C, C, F])
            mark.closed(tickets.pop(key), outcomes[key])
        prefix = list(itertools.takewhile(lambda k: k in outcomes, keys[:taken]))
        point = mark.checkpoint
        assert point is not None
        assert point.after == (prefix[-1] if prefix else "k000")
        counted = [outcomes[k] for k in prefix]
        assert (point.copied, point.skipped, point.failed) == (
            3 + counted.count(C),
            counted.count(S),
            counted.count(F),
        )
    assert mark.open_transfers == 0


CHECKPOINT = Checkpoint("data/00042.bin", 40, 2, 1, 4000, 200, 100)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "data/00042.bin",
        {"after": "", "objects": {}, "bytes": {}},
        {"after": 42, "objects": {}, "bytes": {}},
        {"after": "k", "objects": {"copied": -1}, "bytes": {}},
        {"after": "k", "objects": {"copied": True}, "bytes": {}},
        {"after": "k", "objects": {"copied": 2**60}, "bytes": {}},
        {"after": "k", "objects": {"copied": 1.5}, "bytes": {}},
        {"after": "k", "objects": [], "bytes": {}},
        {"after": "x" * (MAX_KEY_BYTES + 1), "objects": {}, "bytes": {}},
        {"after": "é" * (MAX_KEY_BYTES // 2 + 1), "objects": {}, "bytes": {}},
        {"after": "\ud800", "objects": {}, "bytes": {}},
    ],
    ids=["absent", "string", "empty-key", "number-key", "negative", "bool", "huge", "float", "list", "long-key",
         "long-utf8-key", "lone-surrogate"],
)  # fmt: skip
def test_a_malformed_resume_point_reads_as_none(raw: object) -> None:
    assert checkpoint_from_json(raw) is None


def test_resume_point_round_trips_through_status_and_ledger() -> None:
    assert checkpoint_from_json(json.loads(json.dumps(CHECKPOINT.as_json()))) == CHECKPOINT
    entry = LedgerEntry((41, 2, 1, 4100, 200, 100), CHECKPOINT)
    assert read_entry(entry.text()) == entry
    assert read_entry(LedgerEntry(None, None).text()) == LedgerEntry(None, None)


@pytest.mark.parametrize(
    ("shard", "usable"),
    [
        (Shard(None, None, 1, 1), True),
        (Shard("data/00000.bin", "data/00099.bin", 1, 1), True),
        (Shard("data/00042.bin", "data/00099.bin", 1, 1), False),  # not after the shard's start
        (Shard("data/00050.bin", None, 1, 1), False),
        (Shard(None, "data/00041.bin", 1, 1), False),  # past the shard's end
        (Shard(None, "data/00042.bin", 1, 1), True),
    ],
    ids=["whole-space", "inside", "at-start", "before-start", "past-end", "at-end"],
)
def test_a_worker_uses_only_a_resume_point_inside_its_shard(shard: Shard, usable: bool) -> None:
    text = LedgerEntry((0,) * 6, CHECKPOINT).text()
    assert (resume_for(text, shard.start_after, shard.end) == CHECKPOINT) is usable


def test_a_worker_reads_its_resume_point_from_the_mounted_ledger(tmp_path: Path) -> None:
    shard = Shard(None, None, 100, 1000)
    (tmp_path / resume_key(3)).write_text(LedgerEntry((50,) + (0,) * 5, CHECKPOINT).text())
    (tmp_path / resume_key(4)).write_text('{"after": "data/00042.bin", "carried": [1, 2]}')
    (tmp_path / resume_key(5)).write_bytes(b"{" + b" " * 100_000 + b"}")
    (tmp_path / resume_key(6)).write_bytes(b"\xff\xfe")
    assert read_resume(str(tmp_path), 3, shard) == CHECKPOINT
    assert read_resume(str(tmp_path), 4, shard) is None  # malformed counts
    assert read_resume(str(tmp_path), 5, shard) is None  # too long to be one
    assert read_resume(str(tmp_path), 6, shard) is None  # not text
    assert read_resume(str(tmp_path), 7, shard) is None  # none for this shard
    assert read_resume(None, 3, shard) is None  # no ledger mounted (a Job made by an older operator)


def test_the_ledger_mounted_into_pods_is_the_one_the_operator_writes() -> None:
    assert progress_name("migrate-logs") == ledger_name("migrate-logs")
    assert progress_name("a" * 250) == ledger_name("a" * 250)
    assert PROGRESS_MOUNT.startswith("/etc/ferry/")


def test_a_resumed_run_never_replaces_the_report_of_the_run_before_it() -> None:
    config = WorkerConfig(
        name="logs",
        spec=None,  # type: ignore[arg-type]  # not read by report_name
        shard_index=7,
        shard=Shard(None, None, 1, 1),
        source=None,
        destination=None,
        report=None,
        status_address=("127.0.0.1", 0),
        termination_path=Path("/dev/null"),
        initial_concurrency=None,
    )
    first = report_name(config)
    resumed = report_name(WorkerConfig(**{**config.__dict__, "resume": CHECKPOINT}))
    again = report_name(WorkerConfig(**{**config.__dict__, "resume": Checkpoint("data/00099.bin")}))
    assert first == "logs/shard-00007.jsonl"
    assert len({first, resumed, again}) == 3 and all(
        n.startswith("logs/shard-00007") for n in (resumed, again)
    )


def summary(checkpoint: Checkpoint | None, interrupted: bool = True) -> Summary:
    return Summary(
        counts=Counts(discovered=60, copied=50, skipped=2, failed=1, listing_done=False),
        duration_seconds=3.0,
        throttles=0,
        retries=0,
        requests=100,
        failures=[],
        report_path="/tmp/r.jsonl",
        interrupted=interrupted,
        checkpoint=checkpoint,
    )


def test_the_termination_message_carries_the_resume_point() -> None:
    report = parse_report(termination_message(3, summary(CHECKPOINT), None))
    assert report is not None and report.state == "interrupted" and report.resume == CHECKPOINT


def test_a_resume_point_that_does_not_fit_the_termination_message_is_dropped_not_the_counts() -> None:
    # 1,024 control characters escape to six bytes each in JSON.
    long = Checkpoint("\x01" * MAX_KEY_BYTES, 50, 2, 1)
    text = termination_message(3, summary(long), 2**30)
    assert len(text.encode()) <= TERMINATION_LIMIT
    report = parse_report(text)
    assert report is not None and report.resume is None and report.objects["copied"] == 50


def test_reports_of_workers_without_resume_points_still_parse() -> None:
    old = {
        "format": "ferry.dev/worker-report/v1",
        "shard": 1,
        "state": "running",
        "objects": {"total": 10, "copied": 5, "skipped": 0, "failed": 0, "pending": 5},
        "bytes": {"total": 100, "copied": 50, "skipped": 0, "failed": 0},
    }
    report = parse_report(json.dumps(old))
    assert report is not None and report.resume is None and report.objects["copied"] == 5
    forged = parse_report(json.dumps({**old, "resume": {"after": 7}}))
    assert forged is not None and forged.resume is None and forged.objects["copied"] == 5


@pytest.mark.parametrize(
    ("shard", "pod", "says", "counts"),
    [
        (2, "steady-workers-2-abcde", {"shard": 2, "pod": "steady-workers-2-abcde"}, True),
        # A pod's address, once it stopped, can be another pod's: its answer must not count.
        (2, "steady-workers-2-abcde", {"shard": 2, "pod": "other-workers-2-fghij"}, False),
        (2, "steady-workers-2-abcde", {"shard": 0, "pod": "steady-workers-2-abcde"}, False),
        (2, "steady-workers-2-abcde", {"shard": 0}, False),
        (2, "steady-workers-2-abcde", {"shard": 2}, True),  # a worker that predates pod names
        (2, "steady-workers-2-abcde", {"shard": 2, "pod": 7}, True),  # malformed: read as not said
    ],
    ids=["its-own", "another-pod", "another-shard", "another-shard-unnamed", "unnamed", "malformed-name"],
)
def test_only_the_asked_pods_answer_counts(
    shard: int, pod: str, says: dict[str, object], counts: bool
) -> None:
    document = {
        "format": "ferry.dev/worker-report/v1",
        "state": "running",
        "objects": {"total": 10, "copied": 5},
        "bytes": {},
        **says,
    }
    report = parse_report(json.dumps(document))
    assert report is not None and report.answers_for(shard, pod) is counts


def test_worker_pods_mount_the_ledger_read_only_and_know_their_name() -> None:
    spec = CopyJobSpec.model_validate(
        {
            "source": {"bucket": "src", "credentialsSecret": "s"},
            "destination": {"bucket": "dst", "credentialsSecret": "d"},
        }
    )
    sizing = Sizing(448 * 2**20, int(448 * 2**20 * 0.8), 32, 512, 2, 10_000, "2 pod(s)")
    job = render_job(
        Owner("logs", "tenant-a", "uid-1"), spec, sizing, 4, OperatorSettings(), 2, limits_token="t" * 43
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    ledger = mounts[PROGRESS_MOUNT]
    assert ledger["readOnly"] is True
    assert volumes[ledger["name"]]["configMap"] == {"name": "logs-progress", "optional": True}
    env = {e["name"]: e for e in container["env"]}
    assert env["FERRY_PROGRESS_DIR"]["value"] == PROGRESS_MOUNT
    assert env["FERRY_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # A stopped worker waits for the operator's word (with the token that word carries) inside the grace
    # period, leaving itself 5 s to exit.
    assert env["FERRY_LIMITS_TOKEN"]["value"] == "t" * 43
    assert pod["terminationGracePeriodSeconds"] >= STOP_WITHIN_SECONDS + 5
