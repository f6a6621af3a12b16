"""How `ferry run` ends, as a person and a script read it (worker/run.py, ferry/cli.py): the text and JSON
summaries, the error document, the field an error names, where credentials came from, and help text."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import pytest

from ferry.cli import _asks_json, build_parser
from ferry.model import CopyJob, Location
from ferry.worker.engine import Progress, Summary
from ferry.worker.limits import LimiterState
from ferry.worker.objects import FailedObject
from ferry.worker.progress import Counts
from ferry.worker.run import (
    EXIT_FAILED_OBJECTS,
    EXIT_INCOMPLETE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    accounted,
    credentials_origin,
    ending,
    error_json,
    first_field,
    not_copied,
    preflight_field,
    summary_json,
    summary_text,
)
from ferry.worker.s3 import Credentials

JOB = CopyJob.model_validate(
    {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "CopyJob",
        "metadata": {"name": "demo"},
        "spec": {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}},
    }
)

COMPLETE = Counts(
    discovered=300,
    copied=290,
    skipped=10,
    bytes_discovered=300_000,
    bytes_copied=290_000,
    bytes_skipped=10_000,
    listed=300,
    bytes_listed=300_000,
    listed_all=True,
    listing_done=True,
)
#: Ctrl-C after the listing ended: the copier took in 280 of the 1,500 listed objects.
INTERRUPTED_LISTED = Counts(
    discovered=280,
    copied=275,
    skipped=5,
    bytes_discovered=280_000,
    bytes_copied=275_000,
    bytes_skipped=5_000,
    listed=1_500,
    bytes_listed=1_500_000,
    listed_all=True,
)
#: Ctrl-C while the source was still being listed: only a lower bound is known.
INTERRUPTED_LISTING = Counts(
    discovered=280, copied=280, bytes_discovered=280_000, bytes_copied=280_000, listed=2_000
)


def summary(counts: Counts, **changes: Any) -> Summary:
    base = Summary(
        counts=counts,
        duration_seconds=2.0,
        throttles=0,
        retries=0,
        requests=10,
        failures=[],
        report_path="/tmp/failed.jsonl",
    )
    return replace(base, **changes)


def final(rate: float) -> Progress:
    return Progress(
        counts=COMPLETE,
        elapsed_seconds=2.0,
        objects_per_second=rate,
        bytes_per_second=rate * 1000,
        eta_seconds=0.0,
        limiter=LimiterState(1, 0, "fixed", 0),
        throttles=0,
        retries=0,
        requests=10,
    )


FAILED = replace(COMPLETE, copied=288, failed=2, bytes_copied=288_000, bytes_failed=2_000)
ONE_FAILURE = [FailedObject("k1", "AccessDenied", "denied", 1, 1000)]

CASES = [
    # id, summary, state, exit code, fragments of the text summary, fragments it must not have
    (
        "complete",
        summary(COMPLETE),
        "complete",
        EXIT_OK,
        (
            "demo: 300 objects (293.0 KiB): 290 copied (283.2 KiB), 10 skipped, 0 failed in 2s",
            "throughput: 150.0 objects/s (141.6 KiB/s) on average, 140.0 objects/s (136.7 KiB/s) at the end",
        ),
        ("INTERRUPTED", "INCOMPLETE", "FAILED", "not done"),
    ),
    (
        "failed-objects",
        summary(FAILED, failures=ONE_FAILURE),
        "failed",
        EXIT_FAILED_OBJECTS,
        (
            "288 copied",
            "2 failed",
            "  failed: 'k1': AccessDenied: denied",
            "FAILED: 2 objects could not be copied (all of them in /tmp/failed.jsonl); run again to retry",
        ),
        ("INTERRUPTED",),
    ),
    (
        "interrupted-after-listing",
        summary(INTERRUPTED_LISTED, interrupted=True),
        "interrupted",
        EXIT_INTERRUPTED,
        (
            "demo: 1,500 objects (1.4 MiB): 275 copied (268.6 KiB), 5 skipped, 0 failed, 1,220 not done in 2s",
            "INTERRUPTED: 1,220 of 1,500 objects not copied; run again to resume",
        ),
        ("INCOMPLETE",),
    ),
    (
        "interrupted-while-listing",
        summary(INTERRUPTED_LISTING, interrupted=True),
        "interrupted",
        EXIT_INTERRUPTED,
        (
            "demo: 280 objects",
            "INTERRUPTED: at least 1,720 objects not copied (the source was still being listed); run again",
        ),
        (),
    ),
    (
        "interrupted-before-anything-was-listed-ahead",
        summary(replace(INTERRUPTED_LISTING, listed=280), interrupted=True),
        "interrupted",
        EXIT_INTERRUPTED,
        ("INTERRUPTED: the objects not listed yet were not copied (the source was still being listed)",),
        (),
    ),
    (
        "incomplete",
        summary(INTERRUPTED_LISTING, error="listing failed: NoSuchBucket"),
        "incomplete",
        EXIT_INCOMPLETE,
        (
            "INCOMPLETE: listing failed: NoSuchBucket; at least 1,720 objects not copied",
            "run again to resume",
        ),
        ("INTERRUPTED",),
    ),
]


@pytest.mark.parametrize(
    ("run", "state", "code", "present", "absent"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_end_of_a_run(
    run: Summary, state: str, code: int, present: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    assert (ending(run).state, ending(run).exit_code) == (state, code)
    text = "\n".join(summary_text("demo", run, final(140.0)))
    for fragment in present:
        assert fragment in text, (fragment, text)
    for fragment in absent:
        assert fragment not in text, (fragment, text)
    document = summary_json(JOB, run, final=final(140.0))
    assert (document["state"], document["exitCode"]) == (state, code)
    objects = document["objects"]
    assert objects["total"] == objects["copied"] + objects["skipped"] + objects["failed"] + objects["pending"]
    assert document["complete"] is (state in ("complete", "failed"))  # ran to the end
    assert (document["message"] is None) is (state == "complete")
    json.dumps(document)  # serialisable as it is


def test_json_summary_has_average_and_final_throughput_and_duration() -> None:
    document = summary_json(JOB, summary(COMPLETE), final=final(140.0))
    assert document["durationSeconds"] == 2.0
    assert document["objectsPerSecond"] == 150.0 and document["bytesPerSecond"] == 145_000.0
    assert document["finalObjectsPerSecond"] == 140.0 and document["finalBytesPerSecond"] == 140_000.0
    assert (document["notCopied"], document["totalKnown"]) == (0, True)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (COMPLETE, (0, True)),  # skipped objects were already there: nothing is missing
        (FAILED, (2, True)),
        (INTERRUPTED_LISTED, (1_220, True)),
        (INTERRUPTED_LISTING, (1_720, False)),
        (Counts(), (0, False)),
    ],
    ids=["complete", "failed", "interrupted-listed", "interrupted-listing", "nothing"],
)
def test_not_copied(counts: Counts, expected: tuple[int, bool]) -> None:
    assert not_copied(counts) == expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (COMPLETE, (300, 300_000, 0)),
        (INTERRUPTED_LISTED, (1_500, 1_500_000, 1_220)),
        (INTERRUPTED_LISTING, (280, 280_000, 0)),
    ],
)
def test_accounted_closes_on_the_best_known_total(counts: Counts, expected: tuple[int, int, int]) -> None:
    assert accounted(counts) == expected


@pytest.mark.parametrize(
    ("code", "state"),
    [(EXIT_INVALID, "invalid"), (EXIT_INTERRUPTED, "interrupted"), (EXIT_INTERNAL, "error")],
)
def test_error_document(code: int, state: str) -> None:
    document = error_json("it broke", code, name="demo", field="spec.source.bucket", reason="BucketNotFound")
    assert document == {
        "name": "demo",
        "state": state,
        "exitCode": code,
        "complete": False,
        "error": "it broke",
        "field": "spec.source.bucket",
        "reason": "BucketNotFound",
    }


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("job.yaml: invalid CopyJob:\nspec.overwirte: unknown field; allowed here: source", "spec.overwirte"),
        (
            "job.yaml: invalid CopyJob:\nspec.source.bucket: required field is missing\nspec.x: y",
            "spec.source.bucket",
        ),
        (
            "memory budget 64 MiB is too small; set spec.resources.memory to at least 80Mi",
            "spec.resources.memory",
        ),
        ("job.yaml: not valid YAML: mapping values are not allowed here", None),
    ],
)
def test_first_field(message: str, field: str | None) -> None:
    assert first_field(message) == field


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ("BucketNotFound", "spec.source.bucket"),
        ("EndpointUnreachable", "spec.source.endpoint"),
        ("NotS3", "spec.source.endpoint"),
        ("RegionMismatch", "spec.source.region"),
        ("CredentialsInvalid", "spec.source"),
        ("AccessDenied", "spec.source"),
    ],
)
def test_preflight_field(reason: str, field: str) -> None:
    assert preflight_field("spec.source", reason) == field


WITH_SECRET = Location.model_validate({"bucket": "src-bucket", "credentialsSecret": "src-creds"})
WITHOUT_SECRET = Location.model_validate({"bucket": "src-bucket"})
KEYS = Credentials("AKIA-PLANTED-ID", "planted-secret-value")


@pytest.mark.parametrize(
    ("location", "found", "environ", "present", "absent"),
    [
        pytest.param(
            WITH_SECRET,
            KEYS,
            {"AWS_ACCESS_KEY_ID": "x"},
            ("Secret 'src-creds' named by spec.source.credentialsSecret",),
            ("environment",),
            id="secret-in-file",
        ),
        pytest.param(
            WITHOUT_SECRET,
            None,
            {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
            ("environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "sets no credentialsSecret"),
            ("Secret '",),
            id="environment",
        ),
        pytest.param(
            WITH_SECRET,
            None,
            {"AWS_ACCESS_KEY_ID": "x"},
            (
                "environment variables",
                "Secret 'src-creds' named by spec.source.credentialsSecret is not in the file",
            ),
            (),
            id="secret-missing-from-file-environment-used",
        ),
        pytest.param(
            WITHOUT_SECRET,
            None,
            {"AWS_PROFILE": "prod"},
            ("the AWS profile 'prod' named by AWS_PROFILE",),
            ("environment variables",),
            id="profile",
        ),
        pytest.param(
            WITHOUT_SECRET,
            None,
            {},
            ("default AWS credential chain", "instance or container role", "sets no credentialsSecret"),
            ("check spec.source.credentialsSecret",),
            id="default-chain",
        ),
    ],
)
def test_credentials_origin_names_the_real_source(
    location: Location,
    found: Credentials | None,
    environ: dict[str, str],
    present: tuple[str, ...],
    absent: tuple[str, ...],
) -> None:
    text = credentials_origin(location, found, "spec.source", environ)
    for fragment in present:
        assert fragment in text, (fragment, text)
    for fragment in absent:
        assert fragment not in text, (fragment, text)
    assert "PLANTED" not in text.upper() and "x" not in text.split(), "names only, never values"


def _actions(parser: argparse.ArgumentParser, path: str = "ferry") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found.append((f"{path} {choice.dest}", choice))
            for name, sub in action.choices.items():
                found += _actions(sub, f"{path} {name}")
        else:
            found.append((path, action))
    return found


def test_every_flag_and_command_has_help_text() -> None:
    actions = _actions(build_parser())
    assert any("--progress" in a.option_strings for _, a in actions)
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in actions if not a.help]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "-f", "x", "--output", "json"], True),
        (["run", "--output=json"], True),
        (["run", "-f", "x", "--output", "text"], False),
        (["run", "-f", "json"], False),
        (["run", "--output"], False),
    ],
)
def test_asks_json(argv: list[str], expected: bool) -> None:
    assert _asks_json(argv) is expected
