"""The operator's CopyJob series (operator/metrics.py): what a status says, which CopyJobs keep their own
series under the cap, and what a scrape shows."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ferry.operator.metrics import (
    PHASES,
    CopyJobCollector,
    CopyJobSample,
    CopyJobSeries,
    Key,
    admit,
    sample,
)


def _status(phase: str | None = None, *, stalled: bool = False, **parts: Any) -> dict[str, Any]:
    status: dict[str, Any] = dict(parts)
    if phase is not None:
        status["phase"] = phase
    status["conditions"] = [
        {"type": "Stalled", "status": "True" if stalled else "False", "reason": "R", "message": ""}
    ]
    return status


COUNTS = {"total": 100, "copied": 40, "skipped": 10, "failed": 2, "pending": 48}
BYTES = {"total": 10_000, "copied": 4_000, "skipped": 1_000, "failed": 200}

SAMPLES = [
    ("no-status", None, CopyJobSample("Pending", False)),
    ("stalled-pending", _status("Pending", stalled=True), CopyJobSample("Pending", True)),
    ("stalled-running", _status("Running", stalled=True), CopyJobSample("Running", True)),
    ("stall-cleared", _status("Running"), CopyJobSample("Running", False)),
    ("unknown-phase", _status("Copying"), CopyJobSample("Unknown", False)),
    (
        "counted",
        _status("Running", objects=COUNTS, bytes=BYTES),
        CopyJobSample("Running", False, (40, 10, 2), 100, (4_000, 1_000, 200), 10_000),
    ),
    (
        "garbage-counts",
        _status("Running", objects={"total": "x", "copied": -5, "skipped": None}, bytes="no"),
        CopyJobSample("Running", False, (0, 0, 0), 0, None, 0),
    ),
]


@pytest.mark.parametrize(("status", "expected"), [c[1:] for c in SAMPLES], ids=[c[0] for c in SAMPLES])
def test_sample(status: dict[str, Any] | None, expected: CopyJobSample) -> None:
    assert sample(status) == expected


@pytest.mark.parametrize(
    ("one", "ratio"),
    [
        (CopyJobSample("Running", False, (40, 10, 2), 100), 0.52),
        (CopyJobSample("Running", False, (0, 0, 0), 0), 0.0),
        (CopyJobSample("Succeeded", False, (0, 0, 0), 0), 1.0),  # an empty source, copied
        (CopyJobSample("Running", False, (90, 20, 0), 100), 1.0),  # never above 1
        (CopyJobSample("Planning", False), 0.0),
    ],
    ids=["half", "nothing-listed", "empty-finished", "capped", "no-counts"],
)
def test_ratio(one: CopyJobSample, ratio: float) -> None:
    assert one.ratio == pytest.approx(ratio)


A, B, C, D = ("ns", "a"), ("ns", "b"), ("ns", "c"), ("ns", "d")
ADMISSIONS = [
    # id, held (oldest first: finished?), key, finished, cap, (admitted, displaced)
    ("room", {}, A, False, 2, (True, None)),
    ("already-held", {A: False, B: False}, A, True, 2, (True, None)),
    ("full-of-running", {A: False, B: False}, C, False, 2, (False, None)),
    ("running-displaces-oldest-finished", {A: False, B: True, C: True}, D, False, 3, (True, B)),
    ("finished-never-displaces", {A: False, B: True}, C, True, 2, (False, None)),
    ("cap-zero", {}, A, False, 0, (False, None)),
]


@pytest.mark.parametrize(
    ("held", "key", "finished", "cap", "expected"),
    [c[1:] for c in ADMISSIONS],
    ids=[c[0] for c in ADMISSIONS],
)
def test_admit(
    held: dict[Key, bool], key: Key, finished: bool, cap: int, expected: tuple[bool, Key | None]
) -> None:
    assert admit(held, key, finished, cap) == expected


def scrape(series: CopyJobSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(CopyJobCollector(series))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def copyjobs_with_series(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {dict(labels)["copyjob"] for name, labels in samples if name == "ferry_copyjob_progress_ratio"}


def test_stalled_copyjobs_are_counted_apart_from_their_phase() -> None:
    series = CopyJobSeries(cap=10)
    series.observe("t", "stuck", _status("Pending", stalled=True))
    series.observe("t", "waiting", _status("Pending"))
    series.observe("t", "broke-mid-run", _status("Running", stalled=True, objects=COUNTS, bytes=BYTES))
    got = scrape(series)
    by_phase = {labels: value for (name, labels), value in got.items() if name == "ferry_copyjobs"}
    assert by_phase[(("phase", "Pending"), ("stalled", "true"))] == 1
    assert by_phase[(("phase", "Pending"), ("stalled", "false"))] == 1
    assert by_phase[(("phase", "Running"), ("stalled", "true"))] == 1
    # Every phase has both series, zeros included: a dashboard's sum never lacks one.
    assert len(by_phase) == 2 * len(PHASES) and sum(by_phase.values()) == 3


def test_per_copyjob_series_say_what_the_status_says() -> None:
    series = CopyJobSeries(cap=10)
    series.observe("team-a", "logs", _status("Running", objects=COUNTS, bytes=BYTES))
    got = scrape(series)
    job = (("copyjob", "logs"), ("namespace", "team-a"))

    def outcome(value: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*job, ("outcome", value))))

    assert got[("ferry_copyjob_objects", outcome("copied"))] == 40
    assert got[("ferry_copyjob_objects", outcome("skipped"))] == 10
    assert got[("ferry_copyjob_objects", outcome("failed"))] == 2
    assert got[("ferry_copyjob_expected_objects", job)] == 100
    assert got[("ferry_copyjob_bytes", outcome("copied"))] == 4_000
    assert got[("ferry_copyjob_expected_bytes", job)] == 10_000
    assert got[("ferry_copyjob_progress_ratio", job)] == pytest.approx(0.52)


def test_a_copyjob_not_yet_counted_has_no_progress_series_but_is_counted_by_phase() -> None:
    series = CopyJobSeries(cap=10)
    series.observe("t", "listing", _status("Planning"))
    got = scrape(series)
    assert copyjobs_with_series(got) == set()
    assert got[("ferry_copyjobs", (("phase", "Planning"), ("stalled", "false")))] == 1


def test_series_are_bounded_and_a_deleted_copyjob_frees_its_place() -> None:
    series = CopyJobSeries(cap=3)
    for i in range(5):
        series.observe("tenant", f"job-{i}", _status("Running", objects=COUNTS))
    got = scrape(series)
    assert copyjobs_with_series(got) == {"job-0", "job-1", "job-2"}
    assert got[("ferry_copyjobs_untracked", ())] == 2
    assert got[("ferry_copyjobs", (("phase", "Running"), ("stalled", "false")))] == 5  # all counted

    series.forget("tenant", "job-1")
    got = scrape(series)
    assert "job-1" not in copyjobs_with_series(got)
    assert not [labels for _name, labels in got if ("copyjob", "job-1") in labels]
    assert got[("ferry_copyjobs", (("phase", "Running"), ("stalled", "false")))] == 4

    series.observe("tenant", "job-4", _status("Running", objects=COUNTS))  # its next pass
    assert copyjobs_with_series(scrape(series)) == {"job-0", "job-2", "job-4"}


def test_a_running_copyjob_takes_the_place_of_a_finished_one() -> None:
    series = CopyJobSeries(cap=2)
    series.observe("t", "done", _status("Succeeded", objects=COUNTS))
    series.observe("t", "busy", _status("Running", objects=COUNTS))
    series.observe("t", "new", _status("Running", objects=COUNTS))
    series.observe("t", "done-too", _status("Failed", objects=COUNTS))
    got = scrape(series)
    assert copyjobs_with_series(got) == {"busy", "new"}
    assert got[("ferry_copyjobs_untracked", ())] == 2


def test_zero_cap_keeps_only_the_phase_counts() -> None:
    series = CopyJobSeries(cap=0)
    series.observe("t", "a", _status("Running", objects=COUNTS))
    got = scrape(series)
    assert copyjobs_with_series(got) == set()
    assert got[("ferry_copyjobs", (("phase", "Running"), ("stalled", "false")))] == 1
