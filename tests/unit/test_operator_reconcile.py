"""Pure helpers of the reconciler: Job index sets and the JobView of a Job (operator/reconcile.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.operator.aggregate import JobView
from ferry.operator.reconcile import job_view, parse_indexes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, set()),
        ("", set()),
        ("0", {0}),
        ("0-2,5,7-8", {0, 1, 2, 5, 7, 8}),
        ("1,3-5,7", {1, 3, 4, 5, 7}),
        ("0-0", {0}),
        ("9999", {9999}),
        ("0-9999", set(range(10_000))),
        ("2,", {2}),
    ],
    ids=["none", "empty", "single", "mixed", "k8s-doc-example", "degenerate-range", "large", "wide", "trailing"],
)  # fmt: skip
def test_parse_indexes(text: str | None, expected: set[int]) -> None:
    assert parse_indexes(text) == frozenset(expected)


def cond(kind: str, status: str = "True", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": "R", "message": message}


CASES = [
    ("empty", {}, JobView(exists=True)),
    (
        "running",
        {
            "spec": {"parallelism": 4, "suspend": False, "completions": 10},
            "status": {"active": 4, "failed": 1, "completedIndexes": "0-2,5"},
        },
        JobView(
            exists=True, parallelism=4, active=4, failed_pods=1, completed_indexes=frozenset({0, 1, 2, 5})
        ),
    ),
    (
        "complete",
        {
            "spec": {"parallelism": 2},
            "status": {
                "completedIndexes": "0-3",
                "conditions": [cond("SuccessCriteriaMet"), cond("Complete")],
            },
        },
        JobView(exists=True, parallelism=2, completed_indexes=frozenset(range(4)), complete=True),
    ),
    (
        "failed",
        {
            "spec": {"parallelism": 2},
            "status": {
                "failed": 8,
                "completedIndexes": "0,2",
                "failedIndexes": "1,3",
                "conditions": [cond("FailureTarget"), cond("Failed", message="Job has failed indexes")],
            },
        },
        JobView(
            exists=True,
            parallelism=2,
            failed_pods=8,
            completed_indexes=frozenset({0, 2}),
            failed_indexes=frozenset({1, 3}),
            failed=True,
            failure_message="Job has failed indexes",
        ),
    ),
    (
        "conditions-false-ignored",
        {"status": {"conditions": [cond("Complete", "False"), cond("Failed", "False", "no")]}},
        JobView(exists=True),
    ),
    (
        "suspended",
        {"spec": {"parallelism": 3, "suspend": True}, "status": {"conditions": [cond("Suspended")]}},
        JobView(exists=True, parallelism=3, suspended=True),
    ),
    (
        "nulls",
        {"spec": None, "status": {"active": None, "conditions": None, "completedIndexes": None}},
        JobView(exists=True),
    ),
]


@pytest.mark.parametrize(("job", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_job_view(job: dict[str, Any], expected: JobView) -> None:
    assert job_view(job) == expected
