"""Which S3 failures are worth retrying, and how long to wait. Classification and backoff are pure; the
retry loop takes its clock and sleep from the caller so tests control time.
"""

from __future__ import annotations

import random
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
        HTTPClientError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _THROTTLE_CODES or status in (429, 503):
            return Classified(Kind.THROTTLE, code, message)
        if code in _TRANSIENT_CODES or status >= 500:
            return Classified(Kind.TRANSIENT, code, message)
        return Classified(Kind.PERMANENT, code, message)
    if isinstance(exc, (ReadTimeoutError, TimeoutError)):
        return Classified(Kind.TRANSIENT, "ReadTimeout", str(exc))
    if isinstance(exc, (IncompleteReadError, ResponseStreamingError)):
        return Classified(Kind.TRANSIENT, "IncompleteBody", str(exc))
    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, Urllib3Error)):
        return Classified(Kind.TRANSIENT, "ConnectionError", str(exc))
    if isinstance(exc, TransientCopyError):
        return Classified(Kind.TRANSIENT, exc.code, str(exc))
    return Classified(Kind.PERMANENT, type(exc).__name__, str(exc))


class TransientCopyError(Exception):
    """Raised by the copier for a condition worth retrying (short body, checksum mismatch in transit)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    def __init__(self, last: Classified, attempts: int) -> None:
        super().__init__(f"{last.code}: {last.message} (after {attempts} attempts)")
        self.last = last
        self.attempts = attempts


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
