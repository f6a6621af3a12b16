"""One error code per cause: a source that changed under a copy is `PreconditionFailed` whichever
transport met it (botocore, or the lean transport's answers) and whichever request (a HEAD's bodiless
412, a GET's or a CopyObject's XML error, Ferry's own grown-object check)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ferry.worker.engine import SOURCE_MISSING, source_changed, source_missing
from ferry.worker.leanhttp import Answer
from ferry.worker.leans3 import _client_error, _error
from ferry.worker.retry import (
    PRECONDITION_FAILED,
    Classified,
    Kind,
    RetriesExhausted,
    SourceChanged,
    classify,
)

_XML_412 = (
    b"<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions</Message></Error>"
)


def botocore_error(code: str, status: int, operation: str) -> ClientError:
    # What botocore raises: a HEAD's error has no body, so its code is the bare status.
    return ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (botocore_error("412", 412, "HeadObject"), PRECONDITION_FAILED),
        (botocore_error("PreconditionFailed", 412, "GetObject"), PRECONDITION_FAILED),
        (botocore_error("PreconditionFailed", 412, "UploadPartCopy"), PRECONDITION_FAILED),
        (_client_error(Answer(412, "Precondition Failed", {}, b""), "GET"), PRECONDITION_FAILED),
        (_client_error(Answer(412, "Precondition Failed", {}, _XML_412), "PUT"), PRECONDITION_FAILED),
        (
            _error(200, "PreconditionFailed", "", Answer(200, "OK", {}, b""), "CopyObject"),
            PRECONDITION_FAILED,
        ),
        (SourceChanged("k"), PRECONDITION_FAILED),
        # Other bare statuses keep their number: a bodiless 404 may be a missing key or a missing bucket.
        (botocore_error("404", 404, "HeadObject"), "404"),
        (_client_error(Answer(404, "Not Found", {}, b""), "GET"), "404"),
    ],
)
def test_both_transports_report_a_changed_source_under_one_code(exc: BaseException, code: str) -> None:
    classified = classify(exc)
    assert classified.code == code
    assert classified.kind is Kind.PERMANENT


def test_a_changed_source_reads_the_same_whichever_request_met_it() -> None:
    messages = {
        classify(exc).message.split(" (HTTP")[0]
        for exc in (
            botocore_error("412", 412, "HeadObject"),
            _client_error(Answer(412, "Precondition Failed", {}, _XML_412), "PUT"),
            SourceChanged("k"),
        )
    }
    assert messages == {"the object changed while it was copied"}


@pytest.mark.parametrize(
    ("code", "operation", "missing"),
    [
        ("404", "HEAD", True),
        ("NoSuchKey", "GET", True),
        ("NoSuchKey", "COPY", True),
        ("NoSuchKey", "GET_TAGGING", True),
        ("NoSuchBucket", "GET", False),
        ("NoSuchKey", "PUT", False),
        (PRECONDITION_FAILED, "GET", False),
    ],
)
def test_a_source_read_that_finds_no_object_means_it_was_deleted_meanwhile(
    code: str, operation: str, missing: bool
) -> None:
    assert source_missing(_gave_up(code, operation)) is missing


def _gave_up(code: str, operation: str | None) -> RetriesExhausted:
    return RetriesExhausted(Classified(Kind.PERMANENT, code, "m"), 1, operation)


@pytest.mark.parametrize(
    ("code", "operation", "changed"),
    [
        (PRECONDITION_FAILED, "HEAD", True),
        (PRECONDITION_FAILED, "GET", True),
        (PRECONDITION_FAILED, "COPY", True),
        (PRECONDITION_FAILED, "UPLOAD_PART_COPY", True),
        # A destination request refused on a precondition is not the source changing.
        (PRECONDITION_FAILED, "PUT", False),
        (PRECONDITION_FAILED, "UPLOAD_PART", False),
        (SOURCE_MISSING, "GET", False),
        ("AccessDenied", "GET", False),
    ],
)
def test_only_source_requests_pinned_to_a_version_count_as_a_changed_source(
    code: str, operation: str, changed: bool
) -> None:
    assert source_changed(_gave_up(code, operation)) is changed
