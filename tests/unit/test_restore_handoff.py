"""Restores a worker pod hands to the operator (spec.archived: restore): the pure decisions of
`operator/restorewait.py` and the values of `worker/handoff.py`. Table-driven, no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.operator.restorewait import (
    check_back,
    ledger_handoffs,
    ledger_patch,
    parse_time,
    waiting_condition,
    waiting_shards,
)
from ferry.worker.handoff import (
    MAX_HANDOFF_SECONDS,
    RestoreHandoff,
    handoff_window,
    requested_before,
    restore_key,
)
from ferry.worker.statusdoc import FORMAT, WAITING_FOR_RESTORE, parse_report

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EPOCH0 = int(T0.timestamp())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the worker's values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "window"),
    [(1, 1.0), (60, 60.0), (3600, MAX_HANDOFF_SECONDS), (86400, MAX_HANDOFF_SECONDS)],
)
def test_a_pod_checks_for_one_interval_at_most_two_minutes(interval: int, window: float) -> None:
    assert handoff_window(interval) == window


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000,3", RestoreHandoff(3, 1700000000)),
        ("0,1", RestoreHandoff(1, 0)),
        ("1700000000,0", None),  # nothing waits: not an entry Ferry writes
        ("1700000000", None),
        ("-5,3", None),
        ("1700000000,3,9", None),
        ("17e8,3", None),
        ("99999999999,3", None),  # past MAX_EPOCH_SECONDS
        ("1700000000," + "9" * 13, None),  # past MAX_WAITING
        ("\uff11\uff17,3", None),  # non-ASCII (fullwidth) digits
        ("1" * 100, None),
        (None, None),
        (17, None),
    ],
)
def test_ledger_entries_are_read_as_untrusted(text: Any, expected: RestoreHandoff | None) -> None:
    assert RestoreHandoff.from_text(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"objects": 2, "requestedAt": 1700000000}, RestoreHandoff(2, 1700000000)),
        ({"objects": True, "requestedAt": 1700000000}, None),
        ({"objects": 2, "requestedAt": 1.5}, None),
        ({"objects": 2, "requestedAt": "1700000000"}, None),
        ({"objects": -1, "requestedAt": 1700000000}, None),
        ({"objects": 2}, None),
        ([2, 1700000000], None),
        (None, None),
    ],
)
def test_reported_handoffs_are_checked(value: Any, expected: RestoreHandoff | None) -> None:
    assert RestoreHandoff.from_json(value) == expected


def test_a_handoff_round_trips_through_the_ledger_text() -> None:
    handoff = RestoreHandoff(12, 1700000123)
    assert RestoreHandoff.from_text(handoff.text()) == handoff
    assert RestoreHandoff.from_json(handoff.as_json()) == handoff


@pytest.mark.parametrize(
    ("handoff", "now", "before"),
    [
        (None, 1000.0, None),
        (RestoreHandoff(1, 400), 1000.0, 600.0),
        (RestoreHandoff(1, 1000), 1000.0, 0.0),
        (RestoreHandoff(1, 5000), 1000.0, 0.0),  # a time in the future never stretches the wait
    ],
)
def test_how_long_ago_an_earlier_pod_requested(
    handoff: RestoreHandoff | None, now: float, before: float | None
) -> None:
    assert requested_before(handoff, now) == before


@pytest.mark.parametrize(
    ("mine", "earlier", "kept"),
    [
        (RestoreHandoff(3, 200), None, RestoreHandoff(3, 200)),
        (RestoreHandoff(3, 200), RestoreHandoff(5, 100), RestoreHandoff(3, 100)),
        (RestoreHandoff(3, 200), RestoreHandoff(5, 300), RestoreHandoff(3, 200)),
    ],
)
def test_the_oldest_request_time_is_kept(
    mine: RestoreHandoff, earlier: RestoreHandoff | None, kept: RestoreHandoff
) -> None:
    assert mine.earlier(earlier) == kept


# -- the operator's decision ----------------------------------------------------------------------------

NO_WAIT: dict[int, RestoreHandoff] = {}
ONE = {0: RestoreHandoff(3, EPOCH0)}
TWO = {0: RestoreHandoff(3, EPOCH0), 4: RestoreHandoff(2, EPOCH0 - 50)}


@pytest.mark.parametrize(
    ("waiting", "completed", "now", "interval", "max_wait", "expected"),
    [
        # Nothing waits: nothing to decide.
        (NO_WAIT, at(0), at(0), 10, 100, None),
        # Completed at 0: checked back one interval later; not before.
        (ONE, at(0), at(5), 10, 100, ((0,), 3, at(10), False)),
        (ONE, at(0), at(10), 10, 100, ((0,), 3, at(10), True)),
        (ONE, at(0), at(500), 10, 100, ((0,), 3, at(10), True)),
        # The oldest request's deadline comes first: checked then, so the pods give up what is not restored.
        (TWO, at(0), at(1), 3600, 100, ((0, 4), 5, at(50), False)),
        (TWO, at(0), at(50), 3600, 100, ((0, 4), 5, at(50), True)),
        # A deadline already passed (or a forged old time): checked back at once, not sooner than 1 s.
        (ONE, at(200), at(200), 3600, 100, ((0,), 3, at(201), False)),
        (ONE, at(200), at(201), 3600, 100, ((0,), 3, at(201), True)),
        # The Job's completion time not said: checked at once.
        (ONE, None, at(7), 3600, 100_000, ((0,), 3, at(7), True)),
    ],
)
def test_when_the_operator_checks_back(
    waiting: dict[int, RestoreHandoff],
    completed: datetime | None,
    now: datetime,
    interval: int,
    max_wait: int,
    expected: tuple[tuple[int, ...], int, datetime, bool] | None,
) -> None:
    check = check_back(waiting, completed, now, interval, max_wait)
    if expected is None:
        assert check is None
        return
    assert check is not None
    assert (check.shards, check.objects, check.next_check, check.due) == expected


@pytest.mark.parametrize(
    ("now", "says"),
    [(at(5), "checks back at 2026-01-01T12:00:10Z"), (at(10), "running them again now")],
)
def test_the_condition_says_no_pod_runs_and_when_the_operator_checks_back(now: datetime, says: str) -> None:
    check = check_back(TWO, at(0), now, 10, 1000)
    assert check is not None
    condition = waiting_condition(check, "%Y-%m-%dT%H:%M:%SZ")
    assert (condition.type, condition.status, condition.reason) == (
        "RestoresPending",
        "True",
        "WaitingForRestore",
    )
    assert "5 archived objects of 2 shard(s)" in condition.message
    assert "no worker pod runs" in condition.message
    assert says in condition.message


def message(shard: int, state: str = WAITING_FOR_RESTORE, handoff: Any = None) -> str:
    document: dict[str, Any] = {
        "format": FORMAT,
        "shard": shard,
        "state": state,
        "objects": {"total": 5, "copied": 2, "skipped": 0, "failed": 0, "pending": 3},
        "bytes": {"total": 50, "copied": 20, "skipped": 0, "failed": 0},
    }
    if handoff is not None:
        document[WAITING_FOR_RESTORE] = handoff
    return json.dumps(document)


def pod(index: Any, phase: str, text: str, container: str = "worker") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"pod-{index}",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": container, "state": {"terminated": {"message": text}}}],
        },
    }


GOOD = {"objects": 3, "requestedAt": EPOCH0}


@pytest.mark.parametrize(
    ("pods", "finished", "shards", "expected"),
    [
        ([pod(1, "Succeeded", message(1, handoff=GOOD))], (), 4, {1}),
        # Finished in the ledger: not waiting.
        ([pod(1, "Succeeded", message(1, handoff=GOOD))], (1,), 4, set()),
        # Not Succeeded, another state, no hand-off, another shard's message, out of the plan.
        ([pod(1, "Running", message(1, handoff=GOOD))], (), 4, set()),
        ([pod(1, "Failed", message(1, handoff=GOOD))], (), 4, set()),
        ([pod(1, "Succeeded", message(1, state="complete", handoff=GOOD))], (), 4, set()),
        ([pod(1, "Succeeded", message(1))], (), 4, set()),
        ([pod(1, "Succeeded", message(1, handoff={"objects": "3"}))], (), 4, set()),
        ([pod(1, "Succeeded", message(2, handoff=GOOD))], (), 4, set()),
        ([pod(7, "Succeeded", message(7, handoff=GOOD))], (), 4, set()),
        ([pod("x", "Succeeded", message(1, handoff=GOOD))], (), 4, set()),
        ([pod(1, "Succeeded", message(1, handoff=GOOD), container="sidecar")], (), 4, set()),
        ([pod(1, "Succeeded", "not json")], (), 4, set()),
    ],
)
def test_which_shards_ended_waiting_for_restores(
    pods: list[dict[str, Any]], finished: tuple[int, ...], shards: int, expected: set[int]
) -> None:
    found = waiting_shards(pods, finished, shards)
    assert set(found) == expected
    for index, (name, report) in found.items():
        assert name == f"pod-{index}"
        assert report.handoff == RestoreHandoff(3, EPOCH0)
        assert report.objects["pending"] == 3


@pytest.mark.parametrize(
    ("waiting", "finished", "data", "patch"),
    [
        ({1: RestoreHandoff(3, 500)}, (), {}, {"restore-1": "500,3"}),
        # An earlier pod's older request time is kept; the same entry is not written again.
        ({1: RestoreHandoff(3, 500)}, (), {"restore-1": "400,9"}, {"restore-1": "400,3"}),
        ({1: RestoreHandoff(3, 500)}, (), {"restore-1": "500,3"}, {}),
        # A forged entry is replaced by what the pod reported.
        ({1: RestoreHandoff(3, 500)}, (), {"restore-1": "garbage"}, {"restore-1": "500,3"}),
        # A finished shard's entry goes; a shard outside the plan is not written.
        ({}, (1,), {"restore-1": "400,3"}, {"restore-1": None}),
        ({}, (2,), {"restore-1": "400,3"}, {}),
        ({9: RestoreHandoff(3, 500)}, (), {}, {}),
    ],
)
def test_the_ledger_keeps_each_shards_handoff(
    waiting: dict[int, RestoreHandoff],
    finished: tuple[int, ...],
    data: dict[str, str],
    patch: dict[str, str | None],
) -> None:
    assert ledger_patch(waiting, finished, data, 4) == patch


def test_the_ledgers_handoffs_are_read_for_shards_of_the_plan_only() -> None:
    data = {
        restore_key(0): "100,2",
        restore_key(3): "100,1",
        restore_key(4): "100,1",  # outside a plan of 4 shards
        "restore-x": "100,1",
        "restore-01x": "100,1",
        "resume-0": "{}",
        "0": "1,2,3",
    }
    assert ledger_handoffs(data, 4) == {0: RestoreHandoff(2, 100), 3: RestoreHandoff(1, 100)}


def test_a_worker_report_carries_its_handoff() -> None:
    report = parse_report(message(0, handoff=GOOD))
    assert report is not None and report.handoff == RestoreHandoff(3, EPOCH0)
    forged = parse_report(message(0, handoff={"objects": 3, "requestedAt": -1}))
    assert forged is not None and forged.handoff is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("2026-01-01T12:00:00Z", T0),
        ("2026-01-01T12:00:00+00:00", T0),  # as the Kubernetes client writes a datetime back
        ("2026-01-01T13:00:00+01:00", T0),
        (T0, T0),
        ("2026-01-01T12:00:00", None),  # no zone: not the API server's
        ("yesterday", None),
        ("2026-01-01T12:00:00Z" + " " * 40, None),
        (None, None),
        (1767268800, None),
    ],
)
def test_the_jobs_completion_time_is_read_in_either_form(value: Any, parsed: datetime | None) -> None:
    assert parse_time(value) == parsed


@pytest.mark.parametrize(
    ("room", "written"),
    [
        (None, {"restore-1", "restore-2"}),
        (len("restore-1") + len("500,3"), {"restore-1"}),  # the second does not fit
        (0, set()),
    ],
)
def test_handoffs_are_written_within_the_ledgers_room(room: int | None, written: set[str]) -> None:
    waiting = {1: RestoreHandoff(3, 500), 2: RestoreHandoff(4, 500)}
    patch = ledger_patch(waiting, (0,), {"restore-0": "100,1"}, 4, room)
    # A finished shard's entry goes whatever the room: removing never grows the ledger.
    assert patch.pop("restore-0") is None
    assert set(patch) == written
