"""Platform caps: a tenant's CopyJob is held to the operator's limits, and says so."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.operator.reconcile import _caps_message, _memory_override, _parallelism
from ferry.operator.settings import OperatorSettings

BASE = {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}
PLANNED = 6  # the parallelism sizing computed from the plan


def spec(**extra: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate({**BASE, **extra}, by_alias=True, by_name=False)


@pytest.mark.parametrize(
    ("extra", "settings", "shards", "expected"),
    [
        ({}, OperatorSettings(), 100, 6),
        ({"parallelism": 9}, OperatorSettings(), 100, 9),
        ({"parallelism": 9}, OperatorSettings(max_pods_per_job=4), 100, 4),
        ({}, OperatorSettings(max_pods_per_job=4), 100, 4),
        ({"parallelism": 9}, OperatorSettings(), 3, 3),
    ],
    ids=["plan", "user", "user-capped", "plan-capped", "by-shards"],
)
def test_parallelism_follows_the_user_within_caps_and_shards(
    extra: dict[str, Any], settings: OperatorSettings, shards: int, expected: int
) -> None:
    assert _parallelism(spec(**extra), PLANNED, settings, shards) == expected


@pytest.mark.parametrize(
    ("extra", "settings", "expected"),
    [
        ({}, OperatorSettings(), None),
        ({"resources": {"memory": "2Gi"}}, OperatorSettings(), 2 * 2**30),
        ({"resources": {"memory": "16Gi"}}, OperatorSettings(max_memory_per_pod=8 * 2**30), 8 * 2**30),
        ({}, OperatorSettings(default_worker_memory=2**30), 2**30),
        ({}, OperatorSettings(default_worker_memory=4 * 2**30, max_memory_per_pod=2**30), 2**30),
    ],
    ids=["auto", "user", "user-capped", "default", "default-capped"],
)
def test_memory_override_is_capped(
    extra: dict[str, Any], settings: OperatorSettings, expected: int | None
) -> None:
    assert _memory_override(spec(**extra), settings) == expected


def test_capping_is_reported_not_silent() -> None:
    settings = OperatorSettings(max_pods_per_job=4, max_memory_per_pod=2**30)
    message = _caps_message(spec(parallelism=10, resources={"memory": "4Gi"}), settings)
    assert "parallelism 10 capped at 4" in message and "memory 4Gi capped at 1Gi" in message
    assert "platform" in message
    assert _caps_message(spec(parallelism=2), settings) == ""
