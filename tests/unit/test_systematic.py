"""The systematic-failure detector (worker/systematic.py): which runs of failed transfers stop a shard,
and which never do. Pure: sequences of transfer outcomes in, the verdict out."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.worker.systematic import (
    ACCESS_DENIED_AFTER_SUCCESS,
    ACCESS_DENIED_FIRST_FAILURES,
    FAILURES_AFTER_SUCCESS,
    FIRST_FAILURES,
    Attempt,
    ErrorClass,
    Side,
    Streak,
    SystematicFailure,
    observe,
    side_of,
)

OK = Attempt(ok=True)
SRC, DST = Side.SOURCE, Side.DESTINATION


def fail(code: str, side: Side | None = DST) -> Attempt:
    return Attempt(ok=False, code=code, side=side)


def run(attempts: list[Attempt]) -> tuple[int, SystematicFailure] | None:
    """The 1-based attempt at which the detector says stop, with its verdict; None if it never does."""
    streak = Streak()
    for number, attempt in enumerate(attempts, start=1):
        streak, verdict = observe(streak, attempt)
        if verdict is not None:
            return number, verdict
    return None


def scattered(code: str, every: int, count: int) -> list[Attempt]:
    """Successes with one failure of ``code`` every ``every`` attempts."""
    return [fail(code) if i % every == 0 else OK for i in range(1, count + 1)]


CASES: list[tuple[str, list[Attempt], tuple[int, SystematicFailure] | None]] = [
    (
        "wrong-region-from-the-start",
        [fail("AuthorizationHeaderMalformed")] * 40,
        (FIRST_FAILURES, SystematicFailure(ErrorClass.REGION, DST, "AuthorizationHeaderMalformed", 10)),
    ),
    (
        "one-short-of-the-threshold",
        [fail("AuthorizationHeaderMalformed")] * (FIRST_FAILURES - 1),
        None,
    ),
    (
        "a-success-restarts-the-count",
        [*[fail("NoSuchBucket")] * (FIRST_FAILURES - 1), OK, *[fail("NoSuchBucket")] * (FIRST_FAILURES - 1)],
        None,
    ),
    (
        "after-a-success-a-longer-run-is-needed",
        [OK, *[fail("InvalidAccessKeyId")] * FAILURES_AFTER_SUCCESS],
        (
            FAILURES_AFTER_SUCCESS + 1,
            SystematicFailure(
                ErrorClass.CREDENTIALS, DST, "InvalidAccessKeyId", FAILURES_AFTER_SUCCESS, True
            ),
        ),
    ),
    (
        "credentials-revoked-mid-run-one-short",
        [OK] * 50 + [fail("InvalidAccessKeyId")] * (FAILURES_AFTER_SUCCESS - 1),
        None,
    ),
    (
        "access-denied-needs-more-evidence",
        [fail("AccessDenied")] * (ACCESS_DENIED_FIRST_FAILURES - 1),
        None,
    ),
    (
        "access-denied-on-every-put",
        [fail("AccessDenied")] * 600,
        (
            ACCESS_DENIED_FIRST_FAILURES,
            SystematicFailure(ErrorClass.ACCESS_DENIED, DST, "AccessDenied", ACCESS_DENIED_FIRST_FAILURES),
        ),
    ),
    (
        "a-denied-prefix-after-successes-stops-only-after-a-long-run",
        [OK] * 10 + [fail("AccessDenied", SRC)] * (ACCESS_DENIED_AFTER_SUCCESS - 1) + [OK] * 10,
        None,
    ),
    (
        "scattered-failures-never-stop",
        scattered("AccessDenied", 2, 2000),
        None,
    ),
    (
        "scattered-region-errors-never-stop",
        scattered("AuthorizationHeaderMalformed", 5, 2000),
        None,
    ),
    (
        "failures-of-other-kinds-never-stop",
        [fail(code) for code in ("NoSuchKey", "InternalError", "SlowDown", "PreconditionFailed") * 300],
        None,
    ),
    (
        "another-kind-of-failure-breaks-the-run",
        [*[fail("NoSuchBucket")] * (FIRST_FAILURES - 1), fail("NoSuchKey"), *[fail("NoSuchBucket")] * 9],
        None,
    ),
    (
        "two-classes-alternating-never-stop",
        [fail("NoSuchBucket"), fail("SignatureDoesNotMatch")] * 100,
        None,
    ),
    (
        "one-class-at-two-sides-alternating-never-stops",
        [fail("AccessDenied", SRC), fail("AccessDenied", DST)] * 100,
        None,
    ),
    (
        "codes-of-one-class-are-one-run-the-last-is-named",
        [fail("InvalidAccessKeyId")] * 5 + [fail("SignatureDoesNotMatch")] * 5,
        (FIRST_FAILURES, SystematicFailure(ErrorClass.CREDENTIALS, DST, "SignatureDoesNotMatch", 10)),
    ),
    (
        "source-side-missing-bucket",
        [fail("NoSuchBucket", SRC)] * 12,
        (FIRST_FAILURES, SystematicFailure(ErrorClass.NO_SUCH_BUCKET, SRC, "NoSuchBucket", 10)),
    ),
    (
        "a-bare-403-of-a-head-counts-as-denied-access",
        [fail("403", SRC)] * ACCESS_DENIED_FIRST_FAILURES,
        (
            ACCESS_DENIED_FIRST_FAILURES,
            SystematicFailure(ErrorClass.ACCESS_DENIED, SRC, "403", ACCESS_DENIED_FIRST_FAILURES),
        ),
    ),
    (
        "failures-whose-side-is-unknown-never-stop",
        [fail("AccessDenied", None)] * 200,
        None,
    ),
]


@pytest.mark.parametrize(("attempts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_when_the_detector_stops_a_shard(
    attempts: list[Attempt], expected: tuple[int, SystematicFailure] | None
) -> None:
    assert run(attempts) == expected


@pytest.mark.parametrize(
    ("operation", "side"),
    [
        ("GET", SRC),
        ("HEAD", SRC),
        ("GET_TAGGING", SRC),
        ("PUT", DST),
        ("COPY", DST),
        ("CREATE_MULTIPART", DST),
        ("UPLOAD_PART", DST),
        ("UPLOAD_PART_COPY", DST),
        ("COMPLETE_MULTIPART", DST),
        (None, None),
    ],
)
def test_side_of_each_operation(operation: str | None, side: Side | None) -> None:
    assert side_of(operation) == side


@pytest.mark.parametrize(
    ("failure", "fragments"),
    [
        (
            SystematicFailure(ErrorClass.REGION, DST, "AuthorizationHeaderMalformed", 10),
            (
                "the first 10 transfers",
                "destination",
                "AuthorizationHeaderMalformed",
                "check spec.destination.region",
            ),
        ),
        (
            SystematicFailure(ErrorClass.CREDENTIALS, SRC, "SignatureDoesNotMatch", 100, True),
            ("100 transfers in a row", "source", "spec.source.credentialsSecret"),
        ),
        (
            SystematicFailure(ErrorClass.ACCESS_DENIED, DST, "AccessDenied", 50),
            ("grant s3:PutObject", "spec.destination.credentialsSecret"),
        ),
        (
            SystematicFailure(ErrorClass.ACCESS_DENIED, SRC, "AccessDenied", 50),
            ("grant s3:GetObject", "spec.source.credentialsSecret"),
        ),
        (
            SystematicFailure(ErrorClass.NO_SUCH_BUCKET, DST, "NoSuchBucket", 10),
            ("create the bucket or fix spec.destination.bucket",),
        ),
    ],
    ids=["region", "credentials", "denied-write", "denied-read", "no-bucket"],
)
def test_the_message_names_the_side_the_code_and_what_to_fix(
    failure: SystematicFailure, fragments: tuple[str, ...]
) -> None:
    message = failure.message()
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_verdict_survives_its_json_form() -> None:
    failure = SystematicFailure(ErrorClass.REGION, DST, "PermanentRedirect", 10)
    assert SystematicFailure.from_json(failure.as_json()) == failure


GOOD = {"class": "region", "side": "destination", "code": "PermanentRedirect", "failures": 10}


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "region",
        [GOOD],
        {**GOOD, "class": "weather"},
        {**GOOD, "side": "both"},
        {**GOOD, "code": "AccessDenied"},  # a code of another class
        {**GOOD, "code": "The region is wrong; expecting us-east-1"},  # a sentence, not a code
        {**GOOD, "code": 301},
        {**GOOD, "failures": 0},
        {**GOOD, "failures": -5},
        {**GOOD, "failures": True},
        {**GOOD, "failures": "10"},
        {**GOOD, "failures": 10**12},
    ],
    ids=[
        "none",
        "string",
        "list",
        "unknown-class",
        "unknown-side",
        "code-of-another-class",
        "sentence-as-code",
        "code-not-a-string",
        "zero-failures",
        "negative",
        "bool",
        "string-count",
        "huge",
    ],
)
def test_what_a_pod_reports_is_checked(raw: Any) -> None:
    assert SystematicFailure.from_json(raw) is None
