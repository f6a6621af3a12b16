"""Platform caps: a tenant's CopyJob is held to the operator's limits, and says so."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.model.quantity import parse_cpu, to_cpu_quantity
from ferry.operator.caps import caps_message as _caps_message
from ferry.operator.caps import memory_override as _memory_override
from ferry.operator.caps import parallelism as _parallelism
from ferry.operator.render import worker_cpu
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


# -- CPU ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "millis", "shortest"),
    [
        ("500m", 500, "500m"),
        ("2", 2000, "2"),
        (3, 3000, "3"),
        ("1.5", 1500, "1500m"),
        ("0.25", 250, "250m"),
        ("2000m", 2000, "2"),
        ("0.0001", 1, "1m"),  # below a millicore: rounded up, as the API server does
        ("0", 0, "0"),
    ],
)
def test_cpu_quantities(text: str | int, millis: int, shortest: str) -> None:
    assert parse_cpu(text) == millis
    assert to_cpu_quantity(millis) == shortest


@pytest.mark.parametrize("text", ["", "1.5m", "2Gi", "-1", "1e3", "one", True, "500 m"])
def test_cpu_quantities_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="CPU quantity"):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("extra", "settings", "cpu", "noted"),
    [
        ({}, OperatorSettings(), None, None),
        ({}, OperatorSettings(default_worker_cpu="1"), "1", None),
        ({}, OperatorSettings(default_worker_cpu="8", max_cpu_per_pod=4000), "4", None),
        ({"resources": {"cpu": "2"}}, OperatorSettings(max_cpu_per_pod=4000), "2", None),
        ({"resources": {"cpu": "4"}}, OperatorSettings(max_cpu_per_pod=4000), "4", None),
        (
            {"resources": {"cpu": "4001m"}},
            OperatorSettings(max_cpu_per_pod=4000),
            "4",
            "cpu 4001m capped at 4",
        ),
        (
            {"resources": {"cpu": "16"}},
            OperatorSettings(max_cpu_per_pod=1500),
            "1500m",
            "cpu 16 capped at 1500m",
        ),
        (
            {"resources": {"cpu": "250m"}},
            OperatorSettings(default_worker_cpu="1", max_cpu_per_pod=500),
            "250m",
            None,
        ),
    ],
    ids=[
        "none",
        "default",
        "default-capped",
        "user",
        "user-at-cap",
        "user-over-cap",
        "cap-in-millis",
        "user-wins",
    ],
)
def test_cpu_is_capped_and_the_capping_is_reported(
    extra: dict[str, Any], settings: OperatorSettings, cpu: str | None, noted: str | None
) -> None:
    copyjob = spec(**extra)
    assert worker_cpu(copyjob, settings) == cpu
    message = _caps_message(copyjob, settings)
    if noted is None:
        assert message == ""
    else:
        assert f"{noted} per pod" in message and "platform" in message
