"""Classification of S3 failures and the retry loop."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError
from urllib3.exceptions import ProtocolError

from ferry.worker.retry import (
    Classified,
    Kind,
    RetriesExhausted,
    RetryPolicy,
    TransientCopyError,
    call_with_retry,
    classify,
)


def client_error(code: str | None, status: int, message: str = "msg") -> ClientError:
    error = {"Message": message}
    if code is not None:
        error["Code"] = code
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        pytest.param(client_error("SlowDown", 503), Kind.THROTTLE, "SlowDown", id="slowdown-503"),
        pytest.param(client_error("TooManyRequests", 429), Kind.THROTTLE, "TooManyRequests", id="429"),
        pytest.param(client_error("Whatever", 429), Kind.THROTTLE, "Whatever", id="429-any-code"),
        pytest.param(
            client_error("ServiceUnavailable", 503), Kind.THROTTLE, "ServiceUnavailable", id="503-any-code"
        ),
        pytest.param(client_error("Throttling", 400), Kind.THROTTLE, "Throttling", id="throttle-code-400"),
        pytest.param(client_error("InternalError", 500), Kind.TRANSIENT, "InternalError", id="internal-500"),
        pytest.param(client_error("BadGateway", 502), Kind.TRANSIENT, "BadGateway", id="502"),
        pytest.param(
            client_error("RequestTimeout", 400), Kind.TRANSIENT, "RequestTimeout", id="request-timeout-400"
        ),
        pytest.param(client_error("NoSuchKey", 404), Kind.PERMANENT, "NoSuchKey", id="no-such-key-404"),
        pytest.param(
            client_error("AccessDenied", 403), Kind.PERMANENT, "AccessDenied", id="access-denied-403"
        ),
        pytest.param(client_error(None, 400), Kind.PERMANENT, "Unknown", id="no-code"),
        pytest.param(
            ReadTimeoutError(endpoint_url="http://s3"),
            Kind.TRANSIENT,
            "ReadTimeout",
            id="botocore-read-timeout",
        ),
        pytest.param(TimeoutError("t"), Kind.TRANSIENT, "ReadTimeout", id="builtin-timeout"),
        pytest.param(
            IncompleteReadError(actual_bytes=1, expected_bytes=2),
            Kind.TRANSIENT,
            "IncompleteBody",
            id="incomplete-read",
        ),
        pytest.param(
            BotoConnectionError(error="reset"), Kind.TRANSIENT, "ConnectionError", id="botocore-connection"
        ),
        pytest.param(
            EndpointConnectionError(endpoint_url="http://s3"),
            Kind.TRANSIENT,
            "ConnectionError",
            id="endpoint-connection",
        ),
        pytest.param(
            ConnectTimeoutError(endpoint_url="http://s3"),
            Kind.TRANSIENT,
            "ConnectionError",
            id="connect-timeout",
        ),
        pytest.param(
            ConnectionResetError("reset"), Kind.TRANSIENT, "ConnectionError", id="builtin-connection-reset"
        ),
        pytest.param(
            TransientCopyError("ShortBody", "short"), Kind.TRANSIENT, "ShortBody", id="transient-copy-error"
        ),
        pytest.param(ValueError("boom"), Kind.PERMANENT, "ValueError", id="unknown-exception"),
        pytest.param(KeyError("k"), Kind.PERMANENT, "KeyError", id="unknown-keyerror"),
    ],
)
def test_classify(exc: BaseException, kind: Kind, code: str) -> None:
    result = classify(exc)
    assert result.kind is kind
    assert result.code == code


CANARY = "CANARY-7f3a9c-internal-secret"


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(client_error("NoSuchKey", 404, CANARY), id="error-message"),
        pytest.param(client_error("InvalidArgument", 400, CANARY), id="unknown-code-message"),
        pytest.param(client_error(f"<b>{CANARY}</b>", 400, "x"), id="code-that-is-no-code"),
        pytest.param(client_error("InternalError", 500, CANARY), id="transient-message"),
        pytest.param(
            ResponseParserError(f"Unable to parse response, invalid XML received:\n{CANARY}"),
            id="parser-error",
        ),
        pytest.param(
            HTTPClientError(error=ProtocolError("Connection aborted.", Exception(f"SSH-2.0-{CANARY}"))),
            id="banner-in-status-line",
        ),
        pytest.param(ResponseStreamingError(error=Exception(CANARY)), id="stream-error"),
    ],
)
def test_classify_never_quotes_what_the_endpoint_sent(exc: BaseException) -> None:
    """Only the HTTP status, the error code and Ferry's words: an endpoint may be an internal service
    whose answers must not reach statuses, Events or logs."""
    result = classify(exc)
    assert CANARY not in result.message and CANARY not in result.code, result


def test_classify_words_keep_the_status_and_code() -> None:
    result = classify(client_error("NoSuchKey", 404, "The key does not exist"))
    assert (result.code, result.message) == ("NoSuchKey", "the object does not exist (HTTP 404)")


@pytest.mark.parametrize(
    ("attempt", "kind", "upper"),
    [
        pytest.param(1, Kind.TRANSIENT, 0.1, id="first-transient"),
        pytest.param(3, Kind.TRANSIENT, 0.4, id="third-transient"),
        pytest.param(1, Kind.THROTTLE, 0.5, id="first-throttle"),
        pytest.param(4, Kind.THROTTLE, 4.0, id="fourth-throttle"),
        pytest.param(30, Kind.TRANSIENT, 20.0, id="capped"),
        pytest.param(30, Kind.THROTTLE, 20.0, id="throttle-capped"),
    ],
)
def test_delay_bounds(attempt: int, kind: Kind, upper: float) -> None:
    policy = RetryPolicy()
    rng = random.Random(1234)
    delays = [policy.delay(attempt, kind, rng) for _ in range(500)]
    assert all(0.0 <= d <= upper for d in delays)
    assert max(delays) > 0.8 * upper  # full jitter reaches toward the bound


class Script:
    """An operation failing with the given exceptions, then returning "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def run(
    operation: Callable[[], str], policy: RetryPolicy
) -> tuple[str | RetriesExhausted, list[float], list[Classified]]:
    sleeps: list[float] = []
    errors: list[Classified] = []
    try:
        result: str | RetriesExhausted = call_with_retry(
            operation, policy, on_error=errors.append, sleep=sleeps.append, rng=random.Random(7)
        )
    except RetriesExhausted as exc:
        result = exc
    return result, sleeps, errors


def test_success_first_time_no_sleep() -> None:
    op = Script()
    result, sleeps, errors = run(op, RetryPolicy())
    assert (result, sleeps, errors, op.calls) == ("ok", [], [], 1)


def test_transient_then_success_sleeps_between() -> None:
    op = Script(client_error("InternalError", 500), client_error("SlowDown", 503))
    policy = RetryPolicy()
    result, sleeps, errors = run(op, policy)
    assert result == "ok"
    assert op.calls == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= policy.base_seconds
    assert 0 <= sleeps[1] <= policy.throttle_base_seconds * 2
    assert [e.kind for e in errors] == [Kind.TRANSIENT, Kind.THROTTLE]


def test_permanent_stops_immediately() -> None:
    op = Script(client_error("AccessDenied", 403), client_error("InternalError", 500))
    result, sleeps, errors = run(op, RetryPolicy())
    assert isinstance(result, RetriesExhausted)
    assert (result.attempts, result.last.code, result.last.kind) == (1, "AccessDenied", Kind.PERMANENT)
    assert op.calls == 1
    assert sleeps == []
    assert [e.code for e in errors] == ["AccessDenied"]
    assert isinstance(result.__cause__, ClientError)


@pytest.mark.parametrize("max_attempts", [1, 3, 8])
def test_gives_up_after_max_attempts(max_attempts: int) -> None:
    op = Script(
        *[client_error("InternalError", 500) for _ in range(max_attempts - 1)], client_error("SlowDown", 503)
    )
    result, sleeps, errors = run(op, RetryPolicy(max_attempts=max_attempts))
    assert isinstance(result, RetriesExhausted)
    assert result.attempts == max_attempts
    assert result.last.code == "SlowDown"
    assert f"after {max_attempts} attempts" in str(result)
    assert op.calls == max_attempts
    assert len(sleeps) == max_attempts - 1
    assert len(errors) == max_attempts


def test_sleeps_grow_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=6, base_seconds=1.0, cap_seconds=100.0)
    op = Script(*[client_error("InternalError", 500) for _ in range(6)])
    _, sleeps, _ = run(op, policy)
    assert len(sleeps) == 5
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0 <= slept <= 2 ** (attempt - 1)
