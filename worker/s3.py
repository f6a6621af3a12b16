"""The S3 adapter: boto3 clients for CopyJob locations and the few calls the engine makes.

Retries are Ferry's, not botocore's (botocore is told to try once), so every throttle reaches the
concurrency limiter and every failed object carries the real error code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config

from ferry.model import Location
from ferry.worker.objects import ObjectInfo


@dataclass(frozen=True)
class Credentials:
    """Static S3 credentials. The repr never shows them."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Credentials(****)"


@dataclass(frozen=True)
class ClientOptions:
    max_pool_connections: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Without credentials, send unsigned (anonymous) requests rather than look for any: the operator
    #: never signs with its own identity, whatever its environment or node offers.
    anonymous: bool = False


def make_client(location: Location, credentials: Credentials | None, options: ClientOptions) -> Any:
    """A thread-safe S3 client for one location; ``credentials=None`` uses the default AWS chain, or
    no credentials at all with ``options.anonymous``."""
    config = Config(
        region_name=location.region or "us-east-1",
        max_pool_connections=options.max_pool_connections,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        # total_max_attempts, not max_attempts: botocore reads the latter as retries *after* the first try.
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": location.addressing_style.value},
        # Ferry sends the checksums it computed itself; don't let botocore compute a second one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    if credentials is None and options.anonymous:
        config = config.merge(Config(signature_version=UNSIGNED))
    kwargs: dict[str, Any] = {}
    if credentials is not None:
        kwargs = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    # One session per process: every session loads and keeps its own copy of the S3 service model
    # (about 12 MB), so a session per client cost the operator 1.2 GB with 50 CopyJobs planning at
    # once. Sessions are not thread-safe; clients made from one are, and creating them is serialised.
    with _SESSION_LOCK:
        client = _shared_session().client("s3", endpoint_url=location.endpoint, config=config, **kwargs)
    # After the redirector has annotated the request, so it finds it "already redirected".
    client.meta.events.register_last("before-parameter-build.s3", _no_region_redirect)
    if getattr(location, "requester_pays", False):
        # Every request signed for this client, the lean listing's too (it signs with this client's
        # signer), says the requester pays: one place, whatever the operation.
        client.meta.events.register("before-sign.s3", _requester_pays)
    return client


def _no_region_redirect(context: dict[str, Any], **_: Any) -> None:
    """Keep every request in the configured region. botocore re-sends a request answered "wrong region"
    (AuthorizationHeaderMalformed, PermanentRedirect, 301) signed for the region the answer names; the lean
    transport (leans3.py) cannot, and so a wrong `region` passed the preflight listing and then failed
    every object. Without the redirect the preflight meets the same answer as the copy and names the field."""
    redirect = context.get("s3_redirect")
    if isinstance(redirect, dict):
        redirect["redirected"] = True


#: The header a request to a Requester Pays bucket must carry (spec.source/destination.requesterPays).
REQUEST_PAYER = ("x-amz-request-payer", "requester")


def _requester_pays(request: Any, **_: Any) -> None:
    request.headers[REQUEST_PAYER[0]] = REQUEST_PAYER[1]


_SESSION_LOCK = threading.Lock()
_SESSION: list[boto3.session.Session] = []


def _shared_session() -> boto3.session.Session:
    if not _SESSION:
        _SESSION.append(boto3.session.Session())
    return _SESSION[0]


def list_pages(
    client: Any,
    bucket: str,
    prefix: str,
    start_after: str | None = None,
    page_size: int = 1000,
    call: Callable[[Callable[[], Any]], Any] = lambda request: request(),
) -> Iterator[list[ObjectInfo]]:
    """Yield ListObjectsV2 pages in key order; one page in memory at a time.

    ``call`` wraps each request (the engine passes its retry loop).
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if start_after:
        kwargs["StartAfter"] = start_after
    while True:
        page = call(lambda: client.list_objects_v2(**kwargs))
        yield [
            ObjectInfo(
                key=item["Key"],
                size=int(item["Size"]),
                etag=str(item.get("ETag", "")).strip('"'),
                last_modified=item["LastModified"],
                # Present when the listing reads it (boto3 always does; the lean reader when asked).
                storage_class=item.get("StorageClass"),
            )
            for item in page.get("Contents", ())
        ]
        if not page.get("IsTruncated"):
            return
        kwargs.pop("StartAfter", None)
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
