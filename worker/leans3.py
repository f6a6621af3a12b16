"""A lean S3 transport for the copy hot path: GET and PUT of whole objects, and CopyObject, signed with
SigV4 and sent over keep-alive connections of its own (leanhttp.py), with none of botocore's per-request
machinery (event hooks, endpoint rulesets, model validation and parsing).

Only the calls that every small object makes go through here (GET and PUT when streaming, CopyObject when
the service copies); everything else (listing, multipart, tagging) stays on boto3. Measured on 10 KB
objects against versitygw (bench/README.md, "Where the CPU goes per small object"), botocore's CopyObject
cost about 0.45 ms of CPU per object more than this path, and urllib3 with http.client about 0.38 ms per
streamed object more than leanhttp.py. Errors surface as botocore's ClientError with the service's code,
so retries and classification work the same on both paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import ClientError

from ferry.model import Location
from ferry.worker import ssec
from ferry.worker.leanhttp import Answer, HTTPPool
from ferry.worker.preserve import header_value
from ferry.worker.s3 import REQUEST_PAYER, ClientOptions, Credentials

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
    "x-amz-checksum-crc64nvme": "ChecksumCRC64NVME",
    "x-amz-object-lock-mode": "ObjectLockMode",
    "x-amz-object-lock-retain-until-date": "ObjectLockRetainUntilDate",
    "x-amz-object-lock-legal-hold": "ObjectLockLegalHoldStatus",
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
    "MetadataDirective": "x-amz-metadata-directive",
    "TaggingDirective": "x-amz-tagging-directive",
    "CopySourceIfMatch": "x-amz-copy-source-if-match",
    "RequestPayer": "x-amz-request-payer",
    "ACL": "x-amz-acl",
    "ObjectLockMode": "x-amz-object-lock-mode",
    "ObjectLockRetainUntilDate": "x-amz-object-lock-retain-until-date",
    "ObjectLockLegalHoldStatus": "x-amz-object-lock-legal-hold",
}
#: The most of a CopyObject answer that is read: a real one is a few hundred bytes of XML.
MAX_COPY_ANSWER = 64 * 1024
#: The longest answer body read for a request that expects none (a PUT's).
MAX_SMALL_ANSWER = 64 * 1024
#: The longest object body a GET reads when the caller gives no bound: S3's largest single PUT.
MAX_OBJECT = 5 * 1024**3
_UNSIGNED = "UNSIGNED-PAYLOAD"


def _sign(key: bytes, message: str) -> bytes:
    # hmac.digest is OpenSSL's one-shot HMAC: a fraction of the CPU of an hmac.new object.
    return hmac.digest(key, message.encode(), "sha256")


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
        self._hostname, self._port = parts.hostname or "", parts.port
        self._virtual = location.addressing_style.value == "virtual" or (
            location.addressing_style.value == "auto"
            and location.endpoint is None
            and "." not in location.bucket
        )
        self._credentials = credentials
        self._options = options
        #: Headers every request carries: a Requester Pays bucket's acknowledgement.
        self._always = dict([REQUEST_PAYER]) if getattr(location, "requester_pays", False) else {}
        # One connection pool per host (one host per bucket with virtual addressing), made once.
        self._pools: dict[str, HTTPPool] = {}
        self._keys: dict[tuple[str, str], bytes] = {}
        self._stamp: tuple[int, str, str] = (-1, "", "")
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------------------

    def get_object(
        self,
        *,
        Bucket: str,
        Key: str,
        ChecksumMode: str | None = None,
        MaxBytes: int = MAX_OBJECT,
        **sse: Any,
    ) -> tuple[dict[str, Any], bytes]:
        """The object's headers (boto3's names) and body; a body longer than ``MaxBytes`` (the copier
        passes what it reserved memory for) is refused before it is read. ``sse``: SSE-C arguments."""
        headers = {"x-amz-checksum-mode": "ENABLED"} if ChecksumMode == "ENABLED" else {}
        unknown = set(sse) - ssec.ARGUMENTS
        if unknown:
            raise TypeError(f"LeanS3.get_object does not support {sorted(unknown)}")
        headers.update(ssec.headers(sse))
        response = self._send("GET", Bucket, Key, headers, None, MaxBytes)
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
        headers: dict[str, str] = {}
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
                headers[_REQUEST_HEADERS[field]] = header_value(value)
            elif field in ssec.ARGUMENTS:
                headers.update(ssec.headers({field: value}))
            else:
                raise TypeError(f"LeanS3.put_object does not support {field}")
        response = self._send("PUT", Bucket, Key, headers, Body)
        result: dict[str, Any] = {}
        for name, value in response.headers.items():
            lower = name.lower()
            if lower in _RESPONSE_FIELDS:
                result[_RESPONSE_FIELDS[lower]] = value
        return result

    def copy_object(
        self, *, Bucket: str, Key: str, CopySource: dict[str, str], **args: Any
    ) -> dict[str, Any]:
        """CopyObject, answered like boto3's: ``{"CopyObjectResult": {"ETag": ..., ...}}``.

        A copy can fail after the service has sent `200 OK` (the answer is then an `<Error>` document):
        that is raised as the error it names, as botocore does."""
        source = quote(f"{CopySource['Bucket']}/{CopySource['Key']}", safe="/~")
        headers = {"x-amz-copy-source": source}
        for field, value in args.items():
            if field in _REQUEST_HEADERS:
                headers[_REQUEST_HEADERS[field]] = header_value(value)
            elif field in ssec.ARGUMENTS:
                headers.update(ssec.headers({field: value}))
            else:
                raise TypeError(f"LeanS3.copy_object does not support {field}")
        # A longer answer is refused as it is read (leanhttp.BadAnswer, retried like a broken connection).
        response = self._send("PUT", Bucket, Key, headers, b"", MAX_COPY_ANSWER)
        body: bytes = response.data
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            # The service answered 200 but what it sent cannot be read: worth another try.
            raise _error(
                response.status, "InternalError", "unreadable CopyObject answer", response, "CopyObject"
            ) from exc
        if _local(root.tag) == "Error":
            code = root.findtext("Code") or "InternalError"
            message = root.findtext("Message") or ""
            raise _error(response.status, code, message, response, "CopyObject")
        result = {_local(child.tag): child.text or "" for child in root}
        return {"CopyObjectResult": result}

    # -- plumbing ------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        bucket: str,
        key: str,
        headers: dict[str, str],
        body: bytes | None,
        limit: int = MAX_SMALL_ANSWER,
    ) -> Answer:
        encoded_key = quote(key, safe="/~")
        if self._virtual:
            host, path = f"{bucket}.{self._host}", f"/{encoded_key}"
        else:
            host, path = self._host, f"/{bucket}/{encoded_key}"
        if self._always:
            headers = {**self._always, **headers}
        if body is not None:
            # Signed as sent: the pool writes this length for every body, none included.
            headers = {**headers, "Content-Length": str(len(body))}
        signed = self._signed_headers(method, host, path, headers)
        # The path is sent as given, never normalised: keys may hold `..` segments.
        pool = self._pools.get(host) or self._new_pool(host, bucket)
        # A 3xx is not followed: it is an error here like any other (see s3.py, _no_region_redirect).
        response = pool.request(method, path, signed, body or b"", limit)
        if response.status >= 300:
            raise _client_error(response, method)
        return response

    def _new_pool(self, host: str, bucket: str) -> HTTPPool:
        with self._lock:
            pool = self._pools.get(host)
            if pool is None:
                hostname = f"{bucket}.{self._hostname}" if self._virtual else self._hostname
                pool = HTTPPool(
                    self._scheme,
                    hostname,
                    self._port,
                    connect_timeout=self._options.connect_timeout,
                    read_timeout=self._options.read_timeout,
                    max_idle=self._options.max_pool_connections,
                    host_header=host,
                )
                self._pools = {**self._pools, host: pool}
            return pool

    def _signed_headers(self, method: str, host: str, path: str, headers: dict[str, str]) -> dict[str, str]:
        creds = self._credentials()
        stamp, day = self._timestamp()
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
        signature = _sign(self._signing_key(creds.secret_access_key, day), to_sign).hex()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature}"
        )
        del all_headers["host"]  # the pool writes it, the same string
        return all_headers

    def _timestamp(self) -> tuple[str, str]:
        """The request's x-amz-date and its day, formatted once a second rather than for every request."""
        second = int(time.time())
        cached = self._stamp
        if cached[0] != second:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            cached = (second, stamp, stamp[:8])
            self._stamp = cached  # one tuple, replaced whole: threads read either the old or the new
        return cached[1], cached[2]

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = (secret, day)
        # Read without the lock (the dict is replaced whole, never changed): every request asks.
        key = self._keys.get(cache_key)
        if key is not None:
            return key
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


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _error(status: int, code: str, message: str, response: Answer, operation: str) -> ClientError:
    parsed: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(response.headers)},
    }
    return ClientError(parsed, operation)


def _client_error(response: Answer, method: str) -> ClientError:
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
