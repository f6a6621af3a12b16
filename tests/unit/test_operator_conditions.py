"""Kubernetes-style conditions: transition times, observedGeneration and order (operator/conditions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.operator.conditions import Condition, get, is_true, set_conditions

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def existing(*items: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "old",
            "lastTransitionTime": T0,
            "observedGeneration": 1,
        }
        for kind, status, reason in items
    ]


CASES = [
    # id, existing, updates, expected [(type, status, reason, lastTransitionTime)]
    (
        "empty-adds",
        [],
        [Condition("Planned", "True", "PlanReady", "m")],
        [("Planned", "True", "PlanReady", T1)],
    ),
    (
        "same-status-keeps-time",
        existing(("Progressing", "True", "Copying")),
        [Condition("Progressing", "True", "Copying", "50% done")],
        [("Progressing", "True", "Copying", T0)],
    ),
    (
        "reason-change-keeps-time",
        existing(("Succeeded", "Unknown", "Planning")),
        [Condition("Succeeded", "Unknown", "Copying")],
        [("Succeeded", "Unknown", "Copying", T0)],
    ),
    (
        "status-change-updates-time",
        existing(("Progressing", "True", "Copying")),
        [Condition("Progressing", "False", "Finished")],
        [("Progressing", "False", "Finished", T1)],
    ),
    (
        "order-kept-new-appended",
        existing(("Planned", "True", "PlanReady"), ("Progressing", "True", "Copying")),
        [
            Condition("Succeeded", "True", "AllObjectsCopied"),
            Condition("Progressing", "False", "Finished"),
            Condition("Failed", "False", "Finished"),
        ],
        [
            ("Planned", "True", "PlanReady", T0),
            ("Progressing", "False", "Finished", T1),
            ("Succeeded", "True", "AllObjectsCopied", T1),
            ("Failed", "False", "Finished", T1),
        ],
    ),
    (
        "untouched-kept-as-is",
        existing(("Stalled", "True", "InvalidSpec"), ("Planned", "Unknown", "Listing")),
        [Condition("Planned", "True", "PlanReady")],
        [("Stalled", "True", "InvalidSpec", T0), ("Planned", "True", "PlanReady", T1)],
    ),
]


@pytest.mark.parametrize(("before", "updates", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_set_conditions(
    before: list[dict[str, Any]], updates: list[Condition], expected: list[tuple[str, str, str, str]]
) -> None:
    snapshot = [dict(c) for c in before]
    after = set_conditions(before, updates, T1, 7)
    assert before == snapshot  # input not mutated
    assert [(c["type"], c["status"], c["reason"], c["lastTransitionTime"]) for c in after] == expected
    updated = {u.type for u in updates}
    for c in after:
        # Untouched conditions keep their words and time, but were evaluated at this generation too.
        assert c["observedGeneration"] == 7
        if c["type"] in updated:
            assert c["message"] == next(u.message for u in updates if u.type == c["type"])
        else:
            assert c["message"] == "old"
        assert set(c) >= {"type", "status", "reason", "message", "lastTransitionTime"}


def test_message_is_bounded() -> None:
    (c,) = set_conditions([], [Condition("Failed", "True", "ShardsFailed", "x" * 100_000)], T1, 1)
    assert len(c["message"]) == 32768


def test_missing_transition_time_is_filled() -> None:
    before = [{"type": "Planned", "status": "True", "reason": "PlanReady"}]
    (c,) = set_conditions(before, [Condition("Planned", "True", "PlanReady")], T1, 2)
    assert c["lastTransitionTime"] == T1


@pytest.mark.parametrize(
    ("before", "updates"),
    [
        ([], [Condition("Failed", "True", "A"), Condition("Failed", "True", "B")]),
        (existing(("Planned", "True", "X"), ("Planned", "True", "Y")), []),
    ],
    ids=["duplicate-update", "duplicate-existing"],
)
def test_one_condition_per_type(before: list[dict[str, Any]], updates: list[Condition]) -> None:
    after = set_conditions(before, updates, T1, 1)
    types = [c["type"] for c in after]
    assert len(types) == len(set(types))


@pytest.mark.parametrize(
    ("kind", "found", "true"),
    [("Planned", True, True), ("Progressing", True, False), ("Failed", False, False)],
    ids=["true", "false", "absent"],
)
def test_get_and_is_true(kind: str, found: bool, true: bool) -> None:
    conditions = existing(("Planned", "True", "PlanReady"), ("Progressing", "False", "Suspended"))
    assert (get(conditions, kind) is not None) is found
    assert is_true(conditions, kind) is true
