"""Checks that a location can be used before any copying starts: the endpoint answers, speaks S3, the
bucket exists and the credentials may list it. Each failure becomes a `PreflightError` with a reason a
condition or an exit message can carry.

The listing is a real request signed for the location's region, and Ferry's clients never follow
botocore's region redirects (`s3.make_client`): a wrong `region` is refused here exactly as it would
refuse every object of the copy, before any object is tried.
"""

from __future__ import annotations

from typing import Any

from ferry.errors import PreflightError
from ferry.model import Location
from ferry.worker.retry import RetriesExhausted, RetryPolicy, call_with_retry

#: The region in a message is the one Ferry signed with (the spec's), never one an endpoint named.
_REGION = (
    "{endpoint} refused a request signed for region {region!r}: bucket {bucket!r} is in another region; "
    "set {field}.region"
)
_REASONS = {
    "NoSuchBucket": (
        "BucketNotFound",
        "bucket {bucket!r} does not exist at {endpoint}; create it or fix {field}.bucket",
    ),
    "AccessDenied": (
        "AccessDenied",
        "access to bucket {bucket!r} at {endpoint} was denied; grant s3:ListBucket "
        "(and read/write) to the credentials of {field}",
    ),
    "AllAccessDisabled": ("AccessDenied", "all access to bucket {bucket!r} is disabled"),
    "InvalidAccessKeyId": (
        "CredentialsInvalid",
        "the access key of {field} is not known at {endpoint}; check {credentials}",
    ),
    # versitygw's answer (404) to an access key it has no user for, where AWS answers InvalidAccessKeyId.
    "XAdminUserNotFound": (
        "CredentialsInvalid",
        "the access key of {field} is not known at {endpoint}; check {credentials}",
    ),
    "SignatureDoesNotMatch": (
        "CredentialsInvalid",
        "the secret key of {field} is wrong for {endpoint}; check {credentials}",
    ),
    "InvalidToken": ("CredentialsInvalid", "the session token of {field} is invalid"),
    "ExpiredToken": ("CredentialsInvalid", "the session token of {field} has expired"),
    "PermanentRedirect": ("RegionMismatch", _REGION),
    "AuthorizationHeaderMalformed": ("RegionMismatch", _REGION),
    "AuthorizationQueryParametersError": ("RegionMismatch", _REGION),
    "IllegalLocationConstraintException": ("RegionMismatch", _REGION),
    "IncorrectEndpoint": (
        "RegionMismatch",
        "{endpoint} is not the endpoint of bucket {bucket!r} in region {region!r}; set {field}.region "
        "and {field}.endpoint to the bucket's own",
    ),
}


def check_location(
    client: Any,
    location: Location,
    field: str,
    policy: RetryPolicy | None = None,
    *,
    credentials: str | None = None,
) -> None:
    """List at most one key of the location's bucket and prefix; raise `PreflightError` if that fails.

    ``credentials`` says where the credentials came from (a Secret, environment variables, the default
    chain), so a rejected key names what to fix; by default, ``<field>.credentialsSecret``."""
    endpoint = location.endpoint or "AWS S3"
    policy = policy or RetryPolicy(max_attempts=3, base_seconds=0.2)
    try:
        response = call_with_retry(
            lambda: client.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix, MaxKeys=1), policy
        )
    except RetriesExhausted as exc:
        code = exc.last.code
        if code in _REASONS:
            reason, template = _REASONS[code]
            message = template.format(
                bucket=location.bucket,
                endpoint=endpoint,
                region=location.region or "us-east-1",
                field=field,
                credentials=credentials or f"{field}.credentialsSecret",
            )
        elif code == "EndpointNotAllowed":  # Ferry's own words: the address and the platform's policy
            reason = "EndpointNotAllowed"
            message = f"{exc.last.message}; use an endpoint outside the cluster, or ask the platform team to allow it"
        elif code in ("ResponseParserError", "UnrecognizedErrorCode"):
            reason, message = (
                "NotS3",
                f"{endpoint} answered, but not like an S3 service; check {field}.endpoint",
            )
        elif code in ("ConnectionError", "ReadTimeout"):
            reason = "EndpointUnreachable"
            message = f"cannot reach {endpoint}: {exc.last.message}; check {field}.endpoint"
        elif code in ("404", "NotFound"):
            reason, message = "BucketNotFound", f"bucket {location.bucket!r} does not exist at {endpoint}"
        elif code in ("403", "Forbidden"):
            reason, message = "AccessDenied", f"access to bucket {location.bucket!r} at {endpoint} was denied"
        else:
            reason = "LocationUnusable"
            message = f"{field} at {endpoint} answered {code}: {exc.last.message}"
        raise PreflightError(f"{field}: {message}", reason=reason) from exc
    if "Name" not in response and "KeyCount" not in response:
        raise PreflightError(
            f"{field}: {endpoint} answered, but not like an S3 service; check {field}.endpoint",
            reason="NotS3",
        )
