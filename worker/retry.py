"""Which S3 failures are worth retrying, and how long to wait. Classification and backoff are pure; the
retry loop takes its clock and sleep from the caller so tests control time.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class Kind(StrEnum):
    THROTTLE = "throttle"  # the service asks us to slow down: back off and tell the limiter
    TRANSIENT = "transient"  # network trouble or a server error: retry
    PERMANENT = "permanent"  # retrying cannot help: record the object as failed


_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "BadDigest",
        "IncompleteBody",
        "IncompleteRead",
        "XAmzContentSHA256Mismatch",
        "InvalidDigest",
        "OperationAborted",
        "ChecksumMismatch",
        "PriorRequestNotComplete",
        "ConnectionError",
        "ReadTimeout",
        "Truncated",
    }
)


#: Ferry's words for the codes met most often. A message never quotes what the endpoint answered: an
#: endpoint may be anything (an internal service named by mistake or on purpose), and its words must not
#: reach a status, an Event or a log. Only the HTTP status and the error code (checked to look like one)
#: are kept.
_WORDS = {
    "NoSuchKey": "the object does not exist",
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchUpload": "the multipart upload does not exist",
    "AccessDenied": "access was denied",
    "InvalidAccessKeyId": "the access key is not known",
    "SignatureDoesNotMatch": "the secret key is wrong",
    "ExpiredToken": "the session token has expired",
    "InvalidObjectState": "the object is archived",
    "EntityTooLarge": "the object is too large for the destination",
    "PreconditionFailed": "the object changed while it was copied",
    "SlowDown": "the service asked to slow down",
    "InternalError": "the service failed internally",
    "ServiceUnavailable": "the service is unavailable",
    "RequestTimeout": "the service timed out waiting for the request",
}
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.]{0,63}$")

#: The code a source precondition failure is reported under, whichever transport or request met it.
PRECONDITION_FAILED = "PreconditionFailed"
#: Bare HTTP statuses (an answer without a body: botocore's and the lean transport's HEAD) that name one
#: cause, so the same cause reports the same code whichever request or transport met it. 404 stays as it
#: is: without a body it may mean a missing key or a missing bucket.
_STATUS_CODES = {"412": PRECONDITION_FAILED}


def _code(text: str) -> str:
    """The error code as the service sent it when it looks like one (S3 codes are CamelCase words,
    bare HTTP statuses digits), else a word of Ferry's: a code is shown to users, a sentence is not."""
    return text if _CODE.fullmatch(text) else "UnrecognizedErrorCode"


@dataclass(frozen=True)
class Classified:
    kind: Kind
    code: str
    message: str


def classify(exc: BaseException) -> Classified:
    """Sort an exception raised by an S3 call into throttle, transient or permanent."""
    # botocore is imported lazily so this module stays importable (and testable) without it.
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    from ferry.errors import AddressNotAllowed

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = _code(str(error.get("Code") or "Unknown"))
        code = _STATUS_CODES.get(code, code)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{_WORDS.get(code, 'the service refused the request')} (HTTP {status})"
        if code in _THROTTLE_CODES or status in (429, 503):
            return Classified(Kind.THROTTLE, code, message)
        if code in _TRANSIENT_CODES or status >= 500:
            return Classified(Kind.TRANSIENT, code, message)
        return Classified(Kind.PERMANENT, code, message)
    # The endpoint policy refused the address before connecting (the operator's clients; netguard.py).
    refused = exc if isinstance(exc, AddressNotAllowed) else getattr(exc, "kwargs", {}).get("error")
    if isinstance(refused, AddressNotAllowed):
        return Classified(Kind.PERMANENT, "EndpointNotAllowed", str(refused))
    # botocore's own sentences for these name the endpoint URL only; any other exception text may quote
    # bytes the endpoint sent (a status line, a banner, an unparsable body), so only its type is kept.
    if isinstance(exc, ReadTimeoutError):
        return Classified(Kind.TRANSIENT, "ReadTimeout", str(exc))
    if isinstance(exc, TimeoutError):
        return Classified(Kind.TRANSIENT, "ReadTimeout", "no answer in time")
    if isinstance(exc, IncompleteReadError):
        return Classified(Kind.TRANSIENT, "IncompleteBody", str(exc))
    if isinstance(exc, ResponseStreamingError):
        return Classified(Kind.TRANSIENT, "IncompleteBody", "the answer broke off")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return Classified(Kind.TRANSIENT, "ConnectionError", str(exc))
    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, Urllib3Error)):
        return Classified(Kind.TRANSIENT, "ConnectionError", f"the connection failed ({type(exc).__name__})")
    if isinstance(exc, TransientCopyError):
        return Classified(Kind.TRANSIENT, exc.code, str(exc))
    if isinstance(exc, SourceChanged):
        return Classified(Kind.PERMANENT, PRECONDITION_FAILED, _WORDS[PRECONDITION_FAILED])
    if type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES:
        # e.g. botocore's ResponseParserError, whose text quotes the whole unparsable answer
        return Classified(Kind.PERMANENT, type(exc).__name__, "the answer is not S3's")
    return Classified(Kind.PERMANENT, type(exc).__name__, str(exc))


#: Packages whose exception texts may quote what the endpoint sent.
_TRANSPORT_MODULES = frozenset({"botocore", "urllib3", "http", "xml", "ssl", "json"})


class TransientCopyError(Exception):
    """Raised by the copier for a condition worth retrying (short body, checksum mismatch in transit)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SourceChanged(Exception):
    """Raised by the copier when the source answered for another version than the one it copies (e.g. a
    single GET found the object grown past the memory reserved for it): the same cause as a failed
    If-Match, reported under the same code, and handled the same way (read anew, copied again)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; throttles wait longer than other errors."""

    max_attempts: int = 8
    base_seconds: float = 0.1
    throttle_base_seconds: float = 0.5
    cap_seconds: float = 20.0

    def delay(self, attempt: int, kind: Kind, rng: random.Random) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        base = self.throttle_base_seconds if kind is Kind.THROTTLE else self.base_seconds
        return rng.uniform(0, min(self.cap_seconds, base * 2 ** (attempt - 1)))


class RetriesExhausted(Exception):
    def __init__(self, last: Classified, attempts: int, operation: str | None = None) -> None:
        super().__init__(f"{last.code}: {last.message} (after {attempts} attempts)")
        self.last = last
        self.attempts = attempts
        #: The request that gave up (a `progress.Operation` value) when the caller knows it: it says
        #: which side refused.
        self.operation = operation


def call_with_retry(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_error: Callable[[Classified], None] = lambda _c: None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``operation`` until it succeeds, a permanent error occurs, or attempts run out.

    ``on_error`` sees every failure (the limiter counts throttles through it).
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as exc:  # classified below; anything unknown is permanent
            classified = classify(exc)
            on_error(classified)
            if classified.kind is Kind.PERMANENT or attempt >= policy.max_attempts:
                raise RetriesExhausted(classified, attempt) from exc
            sleep(policy.delay(attempt, classified.kind, rng))
