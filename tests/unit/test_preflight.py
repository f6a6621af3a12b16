"""Preflight turns what an endpoint answers into a reason and a message naming the field to fix
(worker/preflight.py). The answers are botocore's real exception types, raised by a stand-in client."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ferry.errors import PreflightError
from ferry.model import Location
from ferry.worker.preflight import check_location
from ferry.worker.retry import RetryPolicy

ENDPOINT = "http://s3.example:9000"
NO_WAIT = RetryPolicy(max_attempts=2, base_seconds=0.0, throttle_base_seconds=0.0)


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": f"{code} from the server"}}
    response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "ListObjectsV2")


class Answering:
    """A client whose ListObjectsV2 raises `answer` if it is an exception, else returns it."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def list_objects_v2(self, **_: Any) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


CASES = [
    # id, answer, reason, fragments of the message
    (
        "no-such-bucket",
        client_error("NoSuchBucket", 404),
        "BucketNotFound",
        ("'bkt' does not exist", "spec.source.bucket"),
    ),
    (
        "unknown-access-key-aws",
        client_error("InvalidAccessKeyId", 403),
        "CredentialsInvalid",
        ("access key of spec.source is not known", "spec.source.credentialsSecret"),
    ),
    (
        # versitygw answers an unknown access key with 404 XAdminUserNotFound: not a missing bucket.
        "unknown-access-key-versitygw",
        client_error("XAdminUserNotFound", 404),
        "CredentialsInvalid",
        ("access key of spec.source is not known", "spec.source.credentialsSecret"),
    ),
    (
        "wrong-secret-key",
        client_error("SignatureDoesNotMatch", 403),
        "CredentialsInvalid",
        ("secret key of spec.source is wrong", "spec.source.credentialsSecret"),
    ),
    (
        # AWS answers a request signed for the wrong region with one of these two codes.
        "region-mismatch-redirect",
        client_error("PermanentRedirect", 301),
        "RegionMismatch",
        ("another region", "spec.source.region"),
    ),
    (
        "region-mismatch-signature",
        client_error("AuthorizationHeaderMalformed", 400),
        "RegionMismatch",
        ("another region", "spec.source.region"),
    ),
    (
        "access-denied",
        client_error("AccessDenied", 403),
        "AccessDenied",
        ("was denied", "s3:ListBucket"),
    ),
    (
        "bare-404",
        client_error("404", 404),
        "BucketNotFound",
        ("'bkt' does not exist",),
    ),
    (
        "connection-refused",
        EndpointConnectionError(endpoint_url=ENDPOINT),
        "EndpointUnreachable",
        (f"cannot reach {ENDPOINT}", "spec.source.endpoint"),
    ),
    (
        "html-page",
        {"ResponseMetadata": {"HTTPStatusCode": 200}},
        "NotS3",
        ("not like an S3 service", "spec.source.endpoint"),
    ),
    (
        "unknown-code",
        client_error("SomethingNew", 400),
        "LocationUnusable",
        ("answered SomethingNew",),
    ),
]


@pytest.mark.parametrize(("answer", "reason", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_preflight_reason_and_message(answer: Any, reason: str, fragments: tuple[str, ...]) -> None:
    location = Location.model_validate({"bucket": "bkt", "endpoint": ENDPOINT})
    with pytest.raises(PreflightError) as raised:
        check_location(Answering(answer), location, "spec.source", NO_WAIT)
    assert raised.value.reason == reason
    message = str(raised.value)
    assert message.startswith("spec.source: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_preflight_accepts_an_s3_listing() -> None:
    location = Location.model_validate({"bucket": "bkt", "endpoint": ENDPOINT})
    check_location(Answering({"Name": "bkt", "KeyCount": 0}), location, "spec.source", NO_WAIT)
