"""A restore of archived objects that never completes, as the fault proxy plays it: every RestoreObject
(POST ...?restore) is answered 409 RestoreAlreadyInProgress. Shared by the archived-object tests of the
engine, of the restore hand-off and of the operator."""

from __future__ import annotations

from testbed.faultproxy import FaultPlan

NEVER_RESTORED = FaultPlan(
    refuse_rate=1.0,
    refuse_status=409,
    refuse_code="RestoreAlreadyInProgress",
    methods=frozenset({"POST"}),
    path_regex=r"[?&]restore",
)
