"""Systematic failure: a shard whose transfers keep failing the same job-wide way is stopped early. Pure.

The engine (`engine.py`) feeds every finished transfer to `observe`; when the verdict says stop, it
starts no new transfer, lets the ones in flight end, and reports the `SystematicFailure` in its summary,
the worker's `/status` and termination message (`statusdoc.py`), and `ferry run`'s exit. The operator
reads it back with `SystematicFailure.from_json` and stalls the CopyJob with Ferry's own message.

Only S3 error codes that say the configuration is wrong count: refused credentials, a wrong region,
denied access, a missing bucket. A wrong destination region otherwise fails every object of a
million-object job, one by one. A success in between, or a failure of another kind (a missing object, a
server error that outlived its retries), breaks the streak: a shard with scattered failures runs to its
end and reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorClass(StrEnum):
    CREDENTIALS = "credentials"
    REGION = "region"
    ACCESS_DENIED = "accessDenied"
    NO_SUCH_BUCKET = "noSuchBucket"


class Side(StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"


#: Codes that mean the same thing for every object of the job. Bare HTTP statuses are what botocore
#: reports for HEAD requests, whose answers have no body.
CODES: dict[str, ErrorClass] = {
    "InvalidAccessKeyId": ErrorClass.CREDENTIALS,
    "XAdminUserNotFound": ErrorClass.CREDENTIALS,  # versitygw's answer to an unknown access key
    "SignatureDoesNotMatch": ErrorClass.CREDENTIALS,
    "InvalidToken": ErrorClass.CREDENTIALS,
    "ExpiredToken": ErrorClass.CREDENTIALS,
    "TokenRefreshRequired": ErrorClass.CREDENTIALS,
    "AuthorizationHeaderMalformed": ErrorClass.REGION,
    "AuthorizationQueryParametersError": ErrorClass.REGION,
    "PermanentRedirect": ErrorClass.REGION,
    "IncorrectEndpoint": ErrorClass.REGION,
    "IllegalLocationConstraintException": ErrorClass.REGION,
    "301": ErrorClass.REGION,
    "AccessDenied": ErrorClass.ACCESS_DENIED,
    "AllAccessDisabled": ErrorClass.ACCESS_DENIED,
    "403": ErrorClass.ACCESS_DENIED,
    "NoSuchBucket": ErrorClass.NO_SUCH_BUCKET,
}

#: Requests that go to the source; every other request of a transfer writes to the destination (a
#: server-side copy is sent to the destination too, with the one Secret both sides share).
#: RESTORE: RestoreObject of an archived source object (spec.archived: restore).
SOURCE_OPERATIONS = frozenset({"GET", "HEAD", "GET_TAGGING", "RESTORE"})

#: Failures in a row, before the shard's first success, that stop it. Each code above is job-wide by
#: nature: ten identical refusals are no coincidence, and ten is what a misconfigured job of a million
#: objects then writes to its report instead of a million.
FIRST_FAILURES = 10
#: Once a transfer has succeeded the configuration is known to have worked: a longer streak is needed,
#: but credentials revoked or a bucket deleted mid-run still stop the shard within a hundred objects.
FAILURES_AFTER_SUCCESS = 100
#: AccessDenied may be about single objects (a bucket policy denying one prefix, an object ACL, a KMS
#: key), and objects of one prefix lie together in key order: denied access needs more evidence.
ACCESS_DENIED_FIRST_FAILURES = 50
ACCESS_DENIED_AFTER_SUCCESS = 1000

#: What an error code may look like when read back from a pod (the same rule as `retry._code`).
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.]{0,63}$")
#: Most failures in a row a report may claim; anything larger is not a report Ferry wrote.
_MAX_FAILURES = 10**9


def error_class(code: str) -> ErrorClass | None:
    """The job-wide class of an S3 error code; None for codes that may concern one object alone."""
    return CODES.get(code)


def side_of(operation: str | None) -> Side | None:
    """Which location a request of this operation (a `progress.Operation` value) went to."""
    if operation is None:
        return None
    return Side.SOURCE if operation in SOURCE_OPERATIONS else Side.DESTINATION


def threshold(kind: ErrorClass, succeeded: bool) -> int:
    """Failures in a row of this class that stop a shard (`succeeded`: the shard has had a success)."""
    if kind is ErrorClass.ACCESS_DENIED:
        return ACCESS_DENIED_AFTER_SUCCESS if succeeded else ACCESS_DENIED_FIRST_FAILURES
    return FAILURES_AFTER_SUCCESS if succeeded else FIRST_FAILURES


@dataclass(frozen=True)
class Attempt:
    """One finished transfer: a success, or the code and side of the request that gave up."""

    ok: bool
    code: str = ""
    side: Side | None = None


@dataclass(frozen=True)
class Streak:
    """What the detector remembers: whether the shard ever succeeded, and the current run of failures
    of one class at one side."""

    succeeded: bool = False
    kind: ErrorClass | None = None
    side: Side | None = None
    code: str = ""
    count: int = 0


_FIXES = {
    ErrorClass.CREDENTIALS: "check the keys in the Secret named by spec.{side}.credentialsSecret",
    ErrorClass.REGION: "check spec.{side}.region (and spec.{side}.endpoint)",
    ErrorClass.NO_SUCH_BUCKET: "create the bucket or fix spec.{side}.bucket",
}
_ACCESS_FIXES = {
    Side.SOURCE: "grant s3:GetObject to the credentials of spec.source.credentialsSecret",
    Side.DESTINATION: "grant s3:PutObject (and the multipart upload actions) to the credentials of "
    "spec.destination.credentialsSecret",
}
_WORDS = {
    ErrorClass.CREDENTIALS: "the credentials were refused",
    ErrorClass.REGION: "requests were signed for the wrong region or sent to the wrong endpoint",
    ErrorClass.ACCESS_DENIED: "access was denied",
    ErrorClass.NO_SUCH_BUCKET: "the bucket does not exist",
}


@dataclass(frozen=True)
class SystematicFailure:
    """Why a shard was stopped: every one of its last `failures` transfers failed with `code` (of
    `kind`) at `side`, with no success in between; `after_success` when the shard had succeeded before."""

    kind: ErrorClass
    side: Side
    code: str
    failures: int
    after_success: bool = False

    def words(self) -> str:
        """What the class of error means, in Ferry's words."""
        return _WORDS[self.kind]

    def fix(self) -> str:
        if self.kind is ErrorClass.ACCESS_DENIED:
            return _ACCESS_FIXES[self.side]
        return _FIXES[self.kind].format(side=self.side.value)

    def message(self) -> str:
        """Ferry's own words: the side, the S3 code and what to fix (never what the endpoint said)."""
        which = (
            f"{self.failures} transfers in a row"
            if self.after_success
            else f"the first {self.failures} transfers"
        )
        return (
            f"{which} failed at the {self.side.value} with {self.code} ({self.words()}); "
            f"stopped early instead of failing every object: {self.fix()}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.kind.value,
            "side": self.side.value,
            "code": self.code,
            "failures": self.failures,
            "afterSuccess": self.after_success,
        }

    @classmethod
    def from_json(cls, raw: Any) -> SystematicFailure | None:
        """Read back what a pod reported; None for anything Ferry would not have written."""
        if not isinstance(raw, dict):
            return None
        try:
            kind, side = ErrorClass(str(raw.get("class"))), Side(str(raw.get("side")))
        except ValueError:
            return None
        code, failures = raw.get("code"), raw.get("failures")
        if not isinstance(code, str) or not _CODE.fullmatch(code) or error_class(code) is not kind:
            return None
        if isinstance(failures, bool) or not isinstance(failures, int) or not 0 < failures <= _MAX_FAILURES:
            return None
        return cls(kind, side, code, failures, raw.get("afterSuccess") is True)


def observe(streak: Streak, attempt: Attempt) -> tuple[Streak, SystematicFailure | None]:
    """The detector's next state after one finished transfer, and the verdict once the shard must stop."""
    if attempt.ok:
        return Streak(succeeded=True), None
    kind = error_class(attempt.code)
    if kind is None or attempt.side is None:
        return Streak(succeeded=streak.succeeded), None
    count = streak.count + 1 if (streak.kind, streak.side) == (kind, attempt.side) else 1
    after = Streak(streak.succeeded, kind, attempt.side, attempt.code, count)
    if count < threshold(kind, streak.succeeded):
        return after, None
    return after, SystematicFailure(kind, attempt.side, attempt.code, count, streak.succeeded)
