"""A shard stopped on a systematic failure, as its reports say it: the worker's `/status` and termination
message (worker/statusdoc.py, read back by the operator) and `ferry run`'s ending (worker/run.py)."""

from __future__ import annotations

import json

import pytest

from ferry.model.copyjob import CopyJob
from ferry.worker.engine import Progress, Summary
from ferry.worker.limits import LimiterState
from ferry.worker.progress import Counts
from ferry.worker.run import EXIT_INVALID, ending, ending_line, summary_json
from ferry.worker.statusdoc import TERMINATION_LIMIT, parse_report, status_document, termination_message
from ferry.worker.systematic import ErrorClass, Side, SystematicFailure

REGION = SystematicFailure(ErrorClass.REGION, Side.DESTINATION, "AuthorizationHeaderMalformed", 10)
COUNTS = Counts(discovered=74, failed=74, bytes_discovered=7400, bytes_failed=7400, listed=1000)


def summary(systematic: SystematicFailure | None = REGION, interrupted: bool = False) -> Summary:
    return Summary(
        counts=COUNTS,
        duration_seconds=1.5,
        throttles=0,
        retries=0,
        requests=80,
        failures=[],
        report_path="/tmp/failed.jsonl",
        interrupted=interrupted,
        systematic=systematic,
    )


def test_a_stopped_shard_is_never_complete() -> None:
    assert not summary().complete
    assert not summary(interrupted=True).complete


@pytest.mark.parametrize("interrupted", [False, True], ids=["stopped", "stopped-then-sigterm"])
def test_the_termination_message_says_the_shard_stopped_and_why(interrupted: bool) -> None:
    text = termination_message(3, summary(interrupted=interrupted), 100 * 2**20)
    assert len(text.encode()) <= TERMINATION_LIMIT
    report = parse_report(text)
    assert report is not None
    assert (report.shard, report.state, report.systematic) == (3, "systematicFailure", REGION)
    assert report.objects["failed"] == 74


def test_a_status_document_says_so_while_the_last_transfers_end() -> None:
    progress = Progress(
        counts=COUNTS,
        elapsed_seconds=1.0,
        objects_per_second=0.0,
        bytes_per_second=0.0,
        eta_seconds=None,
        limiter=LimiterState(concurrency=8, in_flight=3, reason="fixed", reserved_bytes=0),
        throttles=0,
        retries=0,
        requests=80,
        systematic=REGION,
    )
    report = parse_report(json.dumps(status_document(1, progress)))
    assert report is not None and report.state == "systematicFailure" and report.systematic == REGION
    running = parse_report(
        json.dumps(status_document(1, Progress(**{**progress.__dict__, "systematic": None})))
    )
    assert running is not None and running.state == "running" and running.systematic is None


def job() -> CopyJob:
    return CopyJob.model_validate(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "metadata": {"name": "demo"},
            "spec": {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}},
        }
    )


def test_ferry_run_ends_stopped_with_exit_2_naming_the_field() -> None:
    assert (ending(summary()).state, ending(summary()).exit_code) == ("systematicFailure", EXIT_INVALID)
    line = ending_line(summary())
    assert line is not None and line.startswith("STOPPED: the first 10 transfers failed at the destination")
    assert "check spec.destination.region" in line and "at least 1,000 objects not copied" in line
    document = summary_json(job(), summary())
    assert (document["state"], document["exitCode"], document["complete"]) == ("systematicFailure", 2, False)
    assert document["systematicFailure"] == {
        "class": "region",
        "side": "destination",
        "code": "AuthorizationHeaderMalformed",
        "failures": 10,
        "afterSuccess": False,
        "field": "spec.destination.region",
    }
    assert "systematicFailure" not in summary_json(job(), summary(None))
