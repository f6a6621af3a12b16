"""What `spec.suspend` holds (operator/suspension.py) and how a sync's delete pass stays exact across a
suspension (operator/syncphase.py `record_stopped`, `delete_progress`, `sync_conditions`;
worker/shardsync.py `DeletedBefore`, `resumed_allowance`). Pure, table-driven.

Proves: every child Job that speaks S3 is held and the notify Job is not; a finished Job is left alone;
a delete Job resumes only once its stopped pods have ended; stopped pods' counts are added to the ledger
once each and in order, never past a pod that left no report; a resumed pod deletes at most what is
left of its shard's count and nothing when the ledger does not account for every stopped pod; the
status of a suspended delete phase says the deletes are held and counts what was deleted so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.operator.render import Owner, render_census_job, render_delete_job
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing
from ferry.operator.suspension import Child, ChildJob, held, suspend_change
from ferry.operator.syncphase import (
    counted_pods,
    decide_sync,
    delete_progress,
    record_stopped,
    sync_conditions,
)
from ferry.operator.syncstep import _stopped_reports, _stopped_tags
from ferry.worker.pod import read_deleted_before
from ferry.worker.shardsync import (
    EXIT_STOPPED,
    MAX_STOPPED_PODS,
    DeletedBefore,
    ShardCensus,
    ShardDeletes,
    phase_message,
    pod_tag,
    resumed_allowance,
)
from ferry.worker.statusdoc import FORMAT, parse_report
from ferry.worker.syncdeletes import DeleteLimit

RUN = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"


@pytest.mark.parametrize(
    ("child", "suspend", "expected"),
    [
        (Child.WORKERS, True, True),
        (Child.PLANNER, True, True),
        (Child.DELETES, True, True),
        (Child.CENSUS, True, True),
        # A notification of a phase already reached still goes out.
        (Child.NOTIFY, True, False),
        (Child.DELETES, False, False),
        (Child.NOTIFY, False, False),
    ],
)
def test_spec_suspend_holds_every_job_that_speaks_s3_and_not_the_notify_job(
    child: Child, suspend: bool, expected: bool
) -> None:
    assert held(child, suspend) is expected


@pytest.mark.parametrize(
    ("job", "suspend", "expected"),
    [
        # Running, suspend asked: suspend it; already suspended: leave it.
        (ChildJob(Child.DELETES, suspended=False), True, True),
        (ChildJob(Child.DELETES, suspended=True), True, None),
        (ChildJob(Child.CENSUS, suspended=False), True, True),
        (ChildJob(Child.PLANNER, suspended=False), True, True),
        # Suspend lifted: resume it, once every stopped delete pod has ended and is recorded.
        (ChildJob(Child.DELETES, suspended=True), False, False),
        (ChildJob(Child.DELETES, suspended=True, unended_pods=1), False, None),
        (ChildJob(Child.DELETES, suspended=True, unrecorded=2), False, None),
        (ChildJob(Child.CENSUS, suspended=True, unended_pods=1), False, False),
        (ChildJob(Child.PLANNER, suspended=True), False, False),
        # Not running and not asked to: nothing to do.
        (ChildJob(Child.DELETES, suspended=False, unended_pods=3), False, None),
        # A finished Job is never patched, whatever spec.suspend says.
        (ChildJob(Child.DELETES, suspended=False, finished=True), True, None),
        (ChildJob(Child.CENSUS, suspended=True, finished=True), False, None),
        # The notify Job is never suspended; one suspended by hand is let go.
        (ChildJob(Child.NOTIFY, suspended=False), True, None),
        (ChildJob(Child.NOTIFY, suspended=True), True, False),
    ],
)
def test_which_child_jobs_a_pass_suspends_or_resumes(
    job: ChildJob, suspend: bool, expected: bool | None
) -> None:
    assert suspend_change(job, suspend) is expected


def stopped(deleted: int, kept: int = 0, failed: int = 0) -> ShardDeletes:
    return ShardDeletes(deleted, kept, failed, stopped=True)


A, B, C = pod_tag("uid-a"), pod_tag("uid-b"), pod_tag("uid-c")


@pytest.mark.parametrize(
    ("recorded", "pods", "expected"),
    [
        # Nothing recorded yet: the stopped pod is added.
        ({}, {3: {A: stopped(5, 1)}}, {3: DeletedBefore(RUN, 5, 1, 0, (A,))}),
        # Already recorded (read again in a later pass, or by a restarted operator): not added twice.
        ({3: DeletedBefore(RUN, 5, 1, 0, (A,))}, {3: {A: stopped(5, 1)}}, {}),
        # The shard's next stopped pod adds to the first (whose pod is gone by now).
        (
            {3: DeletedBefore(RUN, 5, 1, 0, (A,))},
            {3: {B: stopped(2)}},
            {3: DeletedBefore(RUN, 7, 1, 0, (A, B))},
        ),
        # Two shards at once.
        (
            {},
            {0: {A: stopped(4)}, 1: {C: stopped(0)}},
            {0: DeletedBefore(RUN, 4, 0, 0, (A,)), 1: DeletedBefore(RUN, 0, 0, 0, (C,))},
        ),
        # An entry of another delete Job (an earlier copy Job) counts as none.
        (
            {1: DeletedBefore("aaaa", 90, 0, 0, (B,))},
            {1: {A: stopped(1)}},
            {1: DeletedBefore(RUN, 1, 0, 0, (A,))},
        ),
    ],
)
def test_stopped_delete_pods_are_recorded_once_each(
    recorded: dict[int, DeletedBefore],
    pods: dict[int, dict[str, ShardDeletes]],
    expected: dict[int, DeletedBefore],
) -> None:
    assert record_stopped(RUN, recorded, pods) == expected


def test_an_entry_names_only_its_newest_stopped_pods() -> None:
    tags = [pod_tag(f"uid-{i}") for i in range(MAX_STOPPED_PODS + 3)]
    entry = None
    for tag in tags:
        entry = record_stopped(RUN, {0: entry}, {0: {tag: stopped(1)}})[0]
    assert entry is not None and entry.deleted == len(tags) and entry.pods == tuple(tags[-MAX_STOPPED_PODS:])
    assert DeletedBefore.parse(entry.text()) == entry


@pytest.mark.parametrize(
    ("approved", "evicted", "before", "allowed", "refused"),
    [
        # The first pod of the shard: its whole count.
        (10, 0, None, 10, False),
        # After a suspension stopped a pod that deleted 4 (the Job controller does not count it): what is left.
        (10, 0, DeletedBefore(RUN, 4, 0, 0, (A,)), 6, False),
        (10, 1, DeletedBefore(RUN, 4, 0, 0, (A,)), 6, False),
        # Never below nothing.
        (3, 0, DeletedBefore(RUN, 5, 0, 0, (A, B)), 0, False),
        # An evicted pod the ledger does not record (yet): what it deleted is not known, nothing is deleted.
        (10, 1, None, 0, True),
        (10, 2, DeletedBefore(RUN, 4, 0, 0, (A,)), 0, True),
        # An entry of another delete Job is not this shard's.
        (10, 1, DeletedBefore("beef", 4, 0, 0, (A,)), 0, True),
        (10, 0, DeletedBefore("beef", 4, 0, 0, (A,)), 10, False),
    ],
)
def test_a_resumed_delete_pod_deletes_at_most_what_is_left_of_its_count(
    approved: int, evicted: int, before: DeletedBefore | None, allowed: int, refused: bool
) -> None:
    got, reason = resumed_allowance(approved, RUN, evicted, before)
    assert got == allowed
    assert (reason is not None) is refused
    if refused:
        assert "run the job again" in str(reason)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{RUN},7,1,0,{A}.{B}", DeletedBefore(RUN, 7, 1, 0, (A, B))),
        (f"{RUN},0,0,0,", DeletedBefore(RUN, 0, 0, 0, ())),
        (None, None),
        ("", None),
        (f"{RUN},7,1,0", None),
        (f"{RUN},-7,1,0,{A}", None),
        (f"{RUN},7,1,0,{A},x", None),
        (f"{RUN},7,1,0,not-a-tag", None),
        (f"run with spaces,1,1,1,{A}", None),
        (f"{RUN},{10**14 - 1},0,0,{A}", None),
        ("x" * 2000, None),
    ],
)
def test_a_ledger_entry_of_earlier_deletes_is_read_strictly(
    text: str | None, expected: DeletedBefore | None
) -> None:
    assert DeletedBefore.parse(text) == expected
    if expected is not None:
        assert DeletedBefore.parse(expected.text()) == expected


def test_a_stopped_delete_pod_s_message_says_so_and_reads_back() -> None:
    message = phase_message(FORMAT, 4, "delete", ShardDeletes(3, 1, 0, stopped=True))
    report = parse_report(message)
    assert report is not None and report.state == "stopped"
    assert report.deletes == ShardDeletes(3, 1, 0, stopped=True)
    finished = parse_report(phase_message(FORMAT, 4, "delete", ShardDeletes(3, 1, 0)))
    assert finished is not None and finished.deletes is not None and not finished.deletes.stopped
    assert ShardDeletes.from_json({"deleted": 1, "kept": 0, "failed": 0, "stopped": "yes"}) is None


def test_what_stopped_pods_deleted_counts_and_their_shard_still_waits_for_its_last_pod() -> None:
    allowed = {0: 4, 1: 3}
    progress = delete_progress(
        allowed,
        {1: ShardDeletes(3, 0, 0)},
        complete=False,
        failed=False,
        before={0: ShardDeletes(2, 0, 0), 7: ShardDeletes(50, 0, 0)},  # shard 7 is not approved
        active=1,
    )
    assert (progress.deleted, progress.waiting, progress.active) == (5, (0,), 1)


def test_a_suspended_delete_phase_is_suspended_and_says_the_deletes_are_held() -> None:
    sync = decide_sync(
        2, {0: ShardCensus(4, 50, 50, True), 1: ShardCensus(3, 50, 50, True)}, 0, DeleteLimit.parse(10)
    )
    progress = delete_progress(
        sync.allowed, {}, complete=False, failed=False, before={0: ShardDeletes(2, 0, 0)}
    )
    chosen = sync_conditions(sync, progress, "100 copied", suspended=True)
    assert chosen is not None
    phase, conditions = chosen
    by_type = {c.type: c for c in conditions}
    assert phase == "Suspended"
    assert (by_type["Suspended"].status, by_type["Suspended"].reason) == ("True", "DeletesHeld")
    assert "deletes are held: 2 of 7" in by_type["Suspended"].message
    assert by_type["Progressing"].status == "False" and by_type["Succeeded"].status == "Unknown"
    # Pods still stopping: the suspension is on its way.
    stopping = delete_progress(sync.allowed, {}, complete=False, failed=False, active=2)
    chosen = sync_conditions(sync, stopping, "100 copied", suspended=True)
    assert chosen is not None and {c.type: c for c in chosen[1]}["Suspended"].reason == "SuspendRequested"
    # Before the delete Job exists, and once it ended, suspension changes nothing of the outcome.
    chosen = sync_conditions(sync, None, "100 copied", suspended=True)
    assert chosen is not None and chosen[0] == "Suspended"
    done = delete_progress(
        sync.allowed, {0: ShardDeletes(4, 0, 0), 1: ShardDeletes(3, 0, 0)}, complete=True, failed=False
    )
    chosen = sync_conditions(sync, done, "100 copied", suspended=True)
    assert chosen is not None and chosen[0] == "Succeeded"


def sizing() -> Sizing:
    return Sizing(448 << 20, int((448 << 20) * 0.8), 32, 512, 2, 10_000, "2 pod(s)")


@pytest.mark.parametrize("suspend", [True, False])
def test_delete_and_census_jobs_are_created_as_suspended_as_the_copyjob_and_ignore_a_stopped_pod(
    suspend: bool,
) -> None:
    from ferry.model.copyjob import parse_copyjob

    spec = parse_copyjob(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "metadata": {"name": "m"},
            "spec": {
                "source": {"bucket": "src-a"},
                "destination": {"bucket": "dst-b"},
                "mode": "sync",
                "deletes": {"max": 10},
                "suspend": suspend,
            },
        }
    ).spec
    owner = Owner("m", "ns", "uid-1")
    settings = OperatorSettings()
    deletes = render_delete_job(
        owner,
        spec,
        sizing(),
        3,
        settings,
        2,
        allowed="0:4",
        copy_job_uid=RUN,
        suspend=suspend,
        token="t" * 43,
    )
    census = render_census_job(owner, spec, sizing(), 3, settings, 2, census_of="x", suspend=suspend)
    for job in (deletes, census):
        assert job["spec"]["suspend"] is suspend
        first = job["spec"]["podFailurePolicy"]["rules"][0]
        assert first["action"] == "Ignore" and first["onExitCodes"]["values"] == [EXIT_STOPPED]
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (
            "job-index-ignored-failure-count"
            in env["FERRY_INDEX_IGNORED"]["valueFrom"]["fieldRef"]["fieldPath"]
        )
    env = {e["name"]: e.get("value") for e in deletes["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRY_SYNC_RUN"] == RUN
    # How the operator tells a stopped delete pod that its count is recorded; a census pod has nothing
    # to wait for.
    assert env["FERRY_LIMITS_TOKEN"] == "t" * 43
    census_env = {e["name"] for e in census["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FERRY_LIMITS_TOKEN" not in census_env
    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in deletes["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e and "fieldRef" in e["valueFrom"]
    }
    assert fields["FERRY_INDEX_IGNORED"].endswith("['batch.kubernetes.io/job-index-ignored-failure-count']")
    assert deletes["spec"]["backoffLimitPerIndex"] == 0


def pod(index: int, name: str, ended: dict[str, object] | None, phase: str = "Failed") -> dict[str, object]:
    state = {"terminated": ended} if ended is not None else {"running": {}}
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"state": state}]},
    }


def stopped_message(index: int, deleted: int) -> str:
    return phase_message(FORMAT, index, "delete", ShardDeletes(deleted, 0, 0, stopped=True))


def test_stopped_delete_pods_are_read_from_their_last_answer_or_their_message_and_checked() -> None:
    answer = parse_report(stopped_message(0, 4))
    other = parse_report(stopped_message(1, 9))
    assert answer is not None and other is not None
    pods = [
        # Stopping, still answering /status with what it deleted.
        pod(0, "p0", None, phase="Running"),
        # Already ended, its termination message still there.
        pod(1, "p1", {"exitCode": 6, "message": stopped_message(1, 2)}),
        # A report of another shard at this shard's pod; a shard with nothing approved; a finished pass.
        pod(2, "p2", None, phase="Running"),
        pod(5, "p5", {"exitCode": 6, "message": stopped_message(5, 9)}),
        pod(
            3,
            "p3",
            {"exitCode": 0, "message": phase_message(FORMAT, 3, "delete", ShardDeletes(1, 0, 0))},
            "Succeeded",
        ),
    ]
    found = _stopped_reports(pods, {"p0": answer, "p2": other}, {0: 5, 1: 5, 2: 5, 3: 5})
    assert found == {
        0: {pod_tag("uid-p0"): ShardDeletes(4, 0, 0, stopped=True)},
        1: {pod_tag("uid-p1"): ShardDeletes(2, 0, 0, stopped=True)},
    }


def test_a_stopped_pod_cannot_record_more_deletes_than_its_shard_was_allowed() -> None:
    """A pod's answer is untrusted (a tenant's pod may pass for one): the count stays within the shard's."""
    entry = record_stopped(RUN, {}, {0: {A: stopped(10**12)}}, {0: 7})[0]
    assert entry.deleted == 7
    longest = DeletedBefore(
        RUN, 10**13, 10**13, 10**13, tuple(pod_tag(f"u{i}") for i in range(MAX_STOPPED_PODS))
    )
    assert DeletedBefore.parse(longest.text()) == longest


def test_a_delete_pod_reads_the_longest_entry_from_its_mounted_ledger(tmp_path: Path) -> None:
    longest = DeletedBefore(RUN, 10**13, 1, 2, tuple(pod_tag(f"u{i}") for i in range(MAX_STOPPED_PODS)))
    (tmp_path / "deleted-3").write_text(longest.text())
    (tmp_path / "deleted-4").write_text("garbage," * 500)
    assert read_deleted_before(str(tmp_path), 3) == longest
    assert read_deleted_before(str(tmp_path), 4) is None
    assert read_deleted_before(str(tmp_path), 5) is None
    assert read_deleted_before(None, 3) is None


NAMED = "0123456789abcdef0123456789abcdef"


# id, ledger entries (shard → run, pod tags), stopped pods that answered (name → shard, tag), told
COUNTED = [
    ("recorded", {0: (RUN, ("aaaaaaaaaa",))}, {"p0": (0, "aaaaaaaaaa")}, ["p0"]),
    ("not yet", {0: (RUN, ("bbbbbbbbbb",))}, {"p0": (0, "aaaaaaaaaa")}, []),
    ("another run's entry", {0: ("1" * 36, ("aaaaaaaaaa",))}, {"p0": (0, "aaaaaaaaaa")}, []),
    ("another shard's entry", {1: (RUN, ("aaaaaaaaaa",))}, {"p0": (0, "aaaaaaaaaa")}, []),
    ("no entry (the ledger refused)", {}, {"p0": (0, "aaaaaaaaaa")}, []),
    (
        "two of three",
        {0: (RUN, ("aaaaaaaaaa", "cccccccccc")), 2: (RUN, ())},
        {"p0": (0, "aaaaaaaaaa"), "p1": (0, "cccccccccc"), "p2": (2, "dddddddddd")},
        ["p0", "p1"],
    ),
]


@pytest.mark.parametrize(
    ("entries", "stopped", "told"), [c[1:] for c in COUNTED], ids=[c[0] for c in COUNTED]
)
def test_a_stopped_delete_pod_is_told_only_once_the_ledger_holds_its_count(
    entries: dict[int, tuple[str, tuple[str, ...]]], stopped: dict[str, tuple[int, str]], told: list[str]
) -> None:
    written = {i: DeletedBefore(run, 1, 0, 0, tags) for i, (run, tags) in entries.items()}
    assert counted_pods(RUN, written, stopped) == told


def test_only_stopped_delete_pods_with_a_named_final_document_of_their_own_shard_are_told() -> None:
    import json

    def answer(index: int, final: str | None) -> Any:
        document = json.loads(stopped_message(index, 3))
        return parse_report(json.dumps({**document, **({"final": final} if final else {})}))

    pods = [pod(i, f"p{i}", None, phase="Running") for i in range(4)]
    answers = {"p0": answer(0, NAMED), "p1": answer(1, None), "p2": answer(3, NAMED), "p3": answer(3, "x")}
    assert _stopped_tags(pods, answers) == {"p0": (0, pod_tag("uid-p0"))}
