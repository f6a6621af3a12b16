"""What the operator says, and how loudly: kopf's per-tick success line is DEBUG, not INFO; Events are the
Ferry operator's; a stalled CopyJob's reason reaches the default `kubectl get` columns."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from ferry.operator import handlers
from ferry.operator.reconcile import _stalled_status


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize("message", ["Timer 'reconcile' succeeded.", "Handler 'observe' succeeded."])
@pytest.mark.parametrize("verbose", [False, True])
def test_per_pass_and_per_event_success_is_demoted_to_debug(verbose: bool, message: str) -> None:
    logger = logging.getLogger("kopf.objects")
    before = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)  # `ferry --verbose operator` or not
    try:
        record = _record(message)
        assert handlers.QuietTicks().filter(record) is verbose
        assert (record.levelno, record.levelname) == (logging.DEBUG, "DEBUG")
    finally:
        logger.setLevel(before)


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("Timer 'reconcile' failed temporarily: apiserver unreachable", logging.ERROR),
        ("Handler 'forget' succeeded.", logging.INFO),
        ("Timer 'reconcile' succeeded. And something else", logging.INFO),
    ],
)
def test_other_lines_pass_unchanged(message: str, level: int) -> None:
    record = _record(message, level)
    assert handlers.QuietTicks().filter(record)
    assert record.levelno == level


def test_startup_names_the_ferry_operator_as_the_source_of_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "ferry-operator-7d9c-abcde")
    monkeypatch.setattr(handlers, "start_http_server", lambda port, address: None)
    monkeypatch.setattr(
        handlers, "Kube", lambda threads: SimpleNamespace(patch_budget_status=lambda *a: None)
    )
    settings = kopf.OperatorSettings()
    asyncio.run(handlers.configure(settings=settings, memo=kopf.Memo()))
    assert settings.posting.reporting_component == "ferry-operator"
    assert settings.posting.reporting_instance == "ferry-operator-7d9c-abcde"
    assert settings.posting.event_name_prefix == "ferry-"
    filters = logging.getLogger("kopf.objects").filters
    assert sum(isinstance(f, handlers.QuietTicks) for f in filters) == 1
    for f in [f for f in filters if isinstance(f, handlers.QuietTicks)]:
        logging.getLogger("kopf.objects").removeFilter(f)


def test_a_stalled_status_carries_its_reason_where_the_reason_column_reads_it() -> None:
    """The REASON column is the Succeeded condition's reason (crds/copyjob.yaml); a stall must set it."""
    status: dict[str, Any] = _stalled_status({"phase": "Running"}, "EndpointUnreachable", "unreachable", 3)
    (succeeded,) = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "EndpointUnreachable")
    assert status["phase"] == "Running"
