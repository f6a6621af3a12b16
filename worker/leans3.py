"""A lean S3 transport for the copy hot path: GET and PUT of whole objects, signed with SigV4 and sent
over urllib3 connection pools, with none of botocore's per-request machinery (event hooks, endpoint
rulesets, model validation and parsing), which costs several milliseconds of CPU per request.

Only the two calls that every streamed object makes go through here; everything else (listing,
multipart, tagging, server-side copy) stays on boto3. Errors surface as botocore's ClientError with the
service's code, so retries and classification work the same on both paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.exceptions import ClientError

from ferry.model import Location
from ferry.worker.s3 import ClientOptions, Credentials

#: Response headers -> the field names boto3 uses, so the copier reads both transports alike.
_RESPONSE_FIELDS = {
    "content-type": "ContentType",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
    "content-disposition": "ContentDisposition",
    "cache-control": "CacheControl",
    "etag": "ETag",
    "x-amz-checksum-crc32c": "ChecksumCRC32C",
    "x-amz-checksum-type": "ChecksumType",
}
_REQUEST_HEADERS = {
    "ContentType": "Content-Type",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
    "ContentDisposition": "Content-Disposition",
    "CacheControl": "Cache-Control",
    "Tagging": "x-amz-tagging",
    "StorageClass": "x-amz-storage-class",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "ChecksumCRC32C": "x-amz-checksum-crc32c",
    "ContentMD5": "Content-MD5",
}
_UNSIGNED = "UNSIGNED-PAYLOAD"


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class LeanS3:
    """GET/PUT object for one location; thread-safe. Arguments are named like boto3's on purpose, so
    the copier calls both transports the same way."""

    def __init__(
        self,
        location: Location,
        credentials: Callable[[], Credentials],
        options: ClientOptions,
    ) -> None:
        self.region = location.region or "us-east-1"
        endpoint = location.endpoint or f"https://s3.{self.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        self._scheme, self._host = parts.scheme, parts.netloc
        self._virtual = location.addressing_style.value == "virtual" or (
            location.addressing_style.value == "auto"
            and location.endpoint is None
            and "." not in location.bucket
        )
        self._credentials = credentials
        timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=options.max_pool_connections, block=False, timeout=timeout, retries=False
        )
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------------------

    def get_object(
        self, *, Bucket: str, Key: str, ChecksumMode: str | None = None
    ) -> tuple[dict[str, Any], bytes]:
        headers = {"x-amz-checksum-mode": "ENABLED"} if ChecksumMode == "ENABLED" else {}
        response = self._send("GET", Bucket, Key, headers, None)
        body: bytes = response.data
        head: dict[str, Any] = {"ContentLength": len(body)}
        metadata: dict[str, str] = {}
        for name, value in response.headers.items():
            lower = name.lower()
            if lower in _RESPONSE_FIELDS:
                head[_RESPONSE_FIELDS[lower]] = value
            elif lower.startswith("x-amz-meta-"):
                metadata[lower[len("x-amz-meta-") :]] = value
            elif lower == "x-amz-tagging-count":
                head["TagCount"] = int(value)
            elif lower == "expires":
                # An unparsable Expires is not worth failing the copy for.
                with contextlib.suppress(TypeError, ValueError):
                    head["Expires"] = parsedate_to_datetime(value)
            elif lower == "content-length":
                head["ContentLength"] = int(value)
        head["Metadata"] = metadata
        return head, body

    def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, ContentLength: int | None = None, **args: Any
    ) -> dict[str, Any]:
        headers = {"Content-Length": str(len(Body))}
        for field, value in args.items():
            if field == "Metadata":
                headers.update({f"x-amz-meta-{k}": v for k, v in value.items()})
            elif field == "Expires":
                headers["Expires"] = (
                    format_datetime(value.astimezone(UTC), usegmt=True)
                    if isinstance(value, datetime)
                    else str(value)
                )
            elif field in _REQUEST_HEADERS:
                headers[_REQUEST_HEADERS[field]] = str(value)
            else:
                raise TypeError(f"LeanS3.put_object does not support {field}")
        response = self._send("PUT", Bucket, Key, headers, Body)
        result: dict[str, Any] = {}
        for name, value in response.headers.items():
            lower = name.lower()
            if lower in _RESPONSE_FIELDS:
                result[_RESPONSE_FIELDS[lower]] = value
        return result

    # -- plumbing ------------------------------------------------------------------------------------

    def _send(self, method: str, bucket: str, key: str, headers: dict[str, str], body: bytes | None) -> Any:
        encoded_key = quote(key, safe="/~")
        if self._virtual:
            host, path = f"{bucket}.{self._host}", f"/{encoded_key}"
        else:
            host, path = self._host, f"/{bucket}/{encoded_key}"
        signed = self._signed_headers(method, host, path, headers)
        # The pool's urlopen sends the path as given; a full URL would be normalised (`a/../b` -> `b`),
        # and keys may hold `..` segments.
        pool = self._pool.connection_from_url(f"{self._scheme}://{host}")
        response = pool.urlopen(
            method,
            path,
            body=body,
            headers=signed,
            preload_content=True,
            redirect=False,
            enforce_content_length=True,
        )
        if response.status >= 300:
            raise _client_error(response, method)
        return response

    def _signed_headers(self, method: str, host: str, path: str, headers: dict[str, str]) -> dict[str, str]:
        creds = self._credentials()
        now = datetime.now(UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        all_headers = {k.lower(): v.strip() for k, v in headers.items()}
        all_headers.update({"host": host, "x-amz-date": stamp, "x-amz-content-sha256": _UNSIGNED})
        if creds.session_token:
            all_headers["x-amz-security-token"] = creds.session_token
        names = sorted(all_headers)
        canonical = "\n".join(
            [
                method,
                path,
                "",
                *(f"{n}:{all_headers[n]}" for n in names),
                "",
                ";".join(names),
                _UNSIGNED,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(creds.secret_access_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature}"
        )
        del all_headers["host"]  # urllib3 sets it from the URL
        return all_headers

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = (secret, day)
        with self._lock:
            key = self._keys.get(cache_key)
            if key is None:
                key = _sign(
                    _sign(_sign(_sign(f"AWS4{secret}".encode(), day), self.region), "s3"), "aws4_request"
                )
                self._keys = {cache_key: key}
            return key


def make_lean(location: Location, credentials: Credentials | None, options: ClientOptions) -> LeanS3:
    """A lean transport for ``location``; without static credentials, botocore's default chain (env,
    profile, web identity, instance metadata) supplies and refreshes them."""
    if credentials is not None:
        static = credentials
        return LeanS3(location, lambda: static, options)
    import botocore.session

    resolved = botocore.session.get_session().get_credentials()
    if resolved is None:
        raise ValueError("no AWS credentials found: set credentialsSecret or configure the default chain")

    def current() -> Credentials:
        frozen = resolved.get_frozen_credentials()
        return Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token)

    return LeanS3(location, current, options)


def _client_error(response: Any, method: str) -> ClientError:
    code, message = str(response.status), response.reason or ""
    try:
        root = ElementTree.fromstring(response.data or b"<x/>")
        code = root.findtext("Code") or code
        message = root.findtext("Message") or message
    except ElementTree.ParseError:
        pass  # HEAD-like answers and proxies may carry no XML body
    parsed: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": response.status, "HTTPHeaders": dict(response.headers)},
    }
    return ClientError(parsed, f"{method}Object")
