"""Copy one object: server-side when both sides are the same service, else streaming GET -> PUT, with
multipart above the part size. Memory per transfer is one part; metadata, tags, storage class and
encryption are applied; every transfer is verified as `spec.verify` asks.

A multipart transfer holds exactly one part buffer: it is allocated once, each part is read into it in
small chunks and uploaded from it through a reader that hands botocore slices (no `bytes` copy of the
part, no second part alive while the next one is read). Measured with tracemalloc per 8 MiB part: 16.0
MiB before (the previous part's bytes lived on while the next was read), 8.2 MiB now.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import FlexibleChecksumError

from ferry.model import Verify
from ferry.model.copyjob import Destination, Preserve
from ferry.worker import checksums, preserve, ssec
from ferry.worker.evidence import Checksum
from ferry.worker.objects import ObjectInfo
from ferry.worker.parts import MAX_SINGLE_COPY, part_ranges, part_size_for
from ferry.worker.progress import OK_CODE, Operation
from ferry.worker.ratelimit import TokenBucket
from ferry.worker.retry import (
    Classified,
    Kind,
    RetriesExhausted,
    RetryPolicy,
    SourceChanged,
    TransientCopyError,
    call_with_retry,
)

log = logging.getLogger(__name__)

#: Parts are read into their buffer this much at a time (each read allocates a chunk that is copied in).
READ_CHUNK = 128 * 1024

#: HEAD answers that mean the object is gone (botocore reports a HEAD 404 by its status).
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

#: The user metadata (x-amz-meta-…) in which a copied version records the source version id it copies
#: (spec.versions all): a re-run reads it to tell which source versions the destination holds.
SOURCE_VERSION_METADATA = "ferry-source-version-id"

#: Response headers that describe the content and travel with it.
CONTENT_FIELDS = ("ContentType", "ContentEncoding", "ContentLanguage", "ContentDisposition", "CacheControl")


@dataclass(frozen=True)
class CopyOptions:
    verify: Verify
    preserve: Preserve
    destination: Destination
    server_side: bool
    part_size: int = 8 * 2**20
    retry: RetryPolicy = RetryPolicy()
    #: SSE-C keys of the two sides (spec.source/destination.sseCustomerKey).
    keys: ssec.CustomerKeys = ssec.CustomerKeys()
    #: spec.source.requesterPays: a server-side copy, sent to the destination, pays for the source too.
    source_requester_pays: bool = False


@dataclass
class CopyResult:
    """What one object's copy met on the way: throttling answers, which its limiter report carries.

    Requests, retries and bytes are counted for the whole job through `on_request`/`on_error`."""

    throttles: int = 0
    #: What the copy compared, for the report's evidence (spec.report.include: all); None: nothing.
    checksum: Checksum | None = None


@dataclass
class Copier:
    """Copies objects between two buckets; thread-safe (boto3 clients are), one instance per job."""

    source_client: Any
    destination_client: Any
    source_bucket: str
    destination_bucket: str
    options: CopyOptions
    #: Told of every request when its answer is known, with its operation and `OK_CODE` or the error's
    #: code, and of every error seen (the engine counts, the limiter hears throttles).
    on_request: Callable[[Operation, str], None] = lambda _operation, _code: None
    on_error: Callable[[Classified], None] = lambda _error: None
    #: Lean GET/PUT transports for streamed objects (see leans3.py); None: boto3 for everything.
    source_lean: Any = None
    destination_lean: Any = None
    requests: TokenBucket = field(default_factory=lambda: TokenBucket(0))
    bandwidth: TokenBucket = field(default_factory=lambda: TokenBucket(0))
    #: The backoff jitter of every request: one generator for the job, since seeding a new one from the
    #: system's entropy for each request cost about 4% of the CPU of a small object.
    _jitter: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def copy(self, obj: ObjectInfo, destination_key: str) -> CopyResult:
        """Copy ``obj`` to ``destination_key``. Raises `RetriesExhausted` when it cannot."""
        result = CopyResult()
        if self.options.server_side:
            if obj.size <= min(self.options.part_size, MAX_SINGLE_COPY):
                self._server_side_copy(obj, destination_key, result)
            else:
                self._multipart(obj, destination_key, result, server_side=True)
        elif obj.size <= self.options.part_size:
            self._stream_single(obj, destination_key, result)
        else:
            self._multipart(obj, destination_key, result, server_side=False)
        return result

    def current(self, obj: ObjectInfo) -> ObjectInfo | None:
        """The object as the source holds it now (its size and ETag), read with HEAD after the source
        changed under a copy; None when it no longer exists. Raises `RetriesExhausted` when it cannot be
        read."""
        try:
            head = self._call(
                CopyResult(),
                Operation.HEAD,
                lambda: self.source_client.head_object(
                    Bucket=self.source_bucket, Key=obj.key, **self._source_sse()
                ),
            )
        except RetriesExhausted as exc:
            if exc.last.code in MISSING_CODES:
                return None
            raise
        return ObjectInfo(
            key=obj.key,
            size=int(head.get("ContentLength", 0)),
            etag=str(head.get("ETag", "")).strip('"'),
            last_modified=head.get("LastModified") or obj.last_modified,
        )

    # -- plumbing --------------------------------------------------------------------------------------

    def _call(self, result: CopyResult, name: Operation, operation: Callable[[], Any]) -> Any:
        def counted() -> Any:
            self.requests.take()
            answer = operation()
            self.on_request(name, OK_CODE)
            return answer

        def on_error(error: Classified) -> None:
            self.on_request(name, error.code)
            if error.kind is Kind.THROTTLE:
                result.throttles += 1
            self.on_error(error)

        try:
            return call_with_retry(counted, self.options.retry, on_error=on_error, rng=self._jitter)
        except RetriesExhausted as exc:
            last = exc.last
            hint = ssec.refusal_hint(name.value, last.code, self.options.keys)
            if hint:
                last = Classified(last.kind, last.code, last.message + hint)
            raise RetriesExhausted(last, exc.attempts, name.value) from exc

    def _destination_args(
        self, source_head: dict[str, Any], tagging: str | None, version_id: str | None = None
    ) -> dict[str, Any]:
        """PUT/CreateMultipartUpload arguments: preserved content fields, metadata and tags, overrides;
        with ``version_id``, the source version it copies recorded in the metadata."""
        args: dict[str, Any] = {}
        if self.options.preserve.metadata:
            for name in CONTENT_FIELDS:
                value = source_head.get(name)
                if value and not (name == "ContentEncoding" and value == "aws-chunked"):
                    args[name] = value
            if source_head.get("Expires") is not None:
                args["Expires"] = source_head["Expires"]
            if source_head.get("Metadata"):
                args["Metadata"] = source_head["Metadata"]
        if version_id is not None:
            args["Metadata"] = {**args.get("Metadata", {}), SOURCE_VERSION_METADATA: version_id}
        if tagging:
            args["Tagging"] = tagging
        destination = self.options.destination
        if destination.storage_class:
            args["StorageClass"] = destination.storage_class
        if destination.server_side_encryption:
            args["ServerSideEncryption"] = destination.server_side_encryption.type
            if destination.server_side_encryption.kms_key_id:
                args["SSEKMSKeyId"] = destination.server_side_encryption.kms_key_id
        args.update(preserve.acl_args(destination))
        args.update(ssec.write_args(self.options.keys.destination))
        return args

    def _source_sse(self) -> dict[str, Any]:
        """SSE-C arguments of a request that reads the source (GET, HEAD)."""
        return ssec.read_args(self.options.keys.source)

    def _copy_payer(self) -> dict[str, str]:
        """The argument of a server-side copy out of a Requester Pays source."""
        return {"RequestPayer": "requester"} if self.options.source_requester_pays else {}

    def _opaque_etags(self) -> bool:
        """Whether ETags are no MD5 of the content: with SSE-KMS or SSE-C they are not comparable."""
        keys = self.options.keys
        return bool(self.options.destination.server_side_encryption or keys.source or keys.destination)

    def _lock_args(
        self, obj: ObjectInfo, result: CopyResult, source_head: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The source object's Object Lock as write arguments, when `preserve.objectLock` asks for it.

        Read from a HEAD of the version being copied (``source_head`` when the copy made one already):
        a GET's answer need not carry the lock (versitygw's does not), and CopyObject does not copy it."""
        if not self.options.preserve.object_lock:
            return {}
        if source_head is None:
            source_head = self._call(
                result,
                Operation.HEAD,
                lambda: self.source_client.head_object(
                    Bucket=self.source_bucket,
                    Key=obj.key,
                    IfMatch=f'"{obj.etag}"',
                    **_version(obj.version_id),
                    **self._source_sse(),
                ),
            )
        lock = preserve.object_lock(source_head, datetime.now(UTC))
        if lock.dropped:
            log.warning("retention of %r not copied: %s", obj.key, lock.dropped)
        return dict(lock.args)

    def _tagging(
        self, key: str, tag_count: int | None, result: CopyResult, version_id: str | None = None
    ) -> str | None:
        """The source's tags as a query string; skipped when the GET said there are none."""
        if not self.options.preserve.tags or tag_count == 0:
            return None
        response = self._call(
            result,
            Operation.GET_TAGGING,
            lambda: self.source_client.get_object_tagging(
                Bucket=self.source_bucket, Key=key, **_version(version_id)
            ),
        )
        tags = response.get("TagSet") or []
        return urlencode([(t["Key"], t["Value"]) for t in tags]) if tags else None

    def _checksum_mode(self) -> dict[str, str]:
        return {"ChecksumMode": "ENABLED"} if self.options.verify is Verify.CHECKSUM else {}

    # -- streaming single PUT --------------------------------------------------------------------------

    def _stream_single(self, obj: ObjectInfo, key: str, result: CopyResult) -> None:

        def fetch() -> tuple[dict[str, Any], bytes]:
            if self.source_lean is not None and obj.version_id is None:
                # Bounded by the part size: a single-request object is at most that (the memory model
                # reserved for it), even if it grew since it was listed.
                head, data = self.source_lean.get_object(
                    Bucket=self.source_bucket,
                    Key=obj.key,
                    MaxBytes=self.options.part_size,
                    **self._checksum_mode(),
                    **self._source_sse(),
                )
                return head, data
            response = self.source_client.get_object(
                Bucket=self.source_bucket,
                Key=obj.key,
                **self._checksum_mode(),
                **_version(obj.version_id),
                **self._source_sse(),
            )
            if int(response.get("ContentLength", 0)) > self.options.part_size:
                # Grown past what was reserved for it since it was listed: not read here, but read anew
                # (and its memory reserved anew) as an object that changed during its copy.
                response["Body"].close()
                raise SourceChanged(obj.key)
            try:
                body = response["Body"].read()
            except FlexibleChecksumError as exc:
                # botocore checks the source's checksum itself when asked for it: the same code as the
                # lean transport's check (`_check_crc64nvme`) for the same cause.
                raise TransientCopyError(
                    "ChecksumMismatch", "the bytes read do not match the source's checksum"
                ) from exc
            if len(body) != int(response.get("ContentLength", len(body))):
                raise TransientCopyError("IncompleteBody", f"read {len(body)} of {response['ContentLength']}")
            return response, body

        head, body = self._call(result, Operation.GET, fetch)
        self.bandwidth.take(len(body))
        tagging = self._tagging(obj.key, head.get("TagCount", 0), result, obj.version_id)
        args = self._destination_args(head, tagging, obj.version_id)
        args.update(self._verify_single(obj, head, body))
        args.update(self._lock_args(obj, result))
        if preserve.needs_content_md5(args):
            args["ContentMD5"] = checksums.md5_b64(hashlib.md5(body).digest())

        def put() -> dict[str, Any]:
            if self.destination_lean is not None and obj.version_id is None:
                lean: dict[str, Any] = self.destination_lean.put_object(
                    Bucket=self.destination_bucket, Key=key, Body=body, ContentLength=len(body), **args
                )
                return lean
            response: dict[str, Any] = self.destination_client.put_object(
                Bucket=self.destination_bucket, Key=key, Body=body, ContentLength=len(body), **args
            )
            return response

        response = self._call(result, Operation.PUT, put)
        self._check_put(args, response)
        result.checksum = self._verified(args, response)

    def _verify_single(self, obj: ObjectInfo, head: dict[str, Any], body: bytes) -> dict[str, Any]:
        """Check what arrived from the source and return the headers that make the destination check it."""
        verify = self.options.verify
        if verify is Verify.CHECKSUM:
            value = checksums.crc32c_b64(checksums.crc32c(body))
            source_value = head.get("ChecksumCRC32C")
            if checksums.is_full_object_checksum(source_value) and source_value != value:
                raise TransientCopyError("ChecksumMismatch", f"source CRC32C {source_value}, read {value}")
            self._check_crc64nvme(head, checksums.crc64nvme(body))
            return {"ChecksumCRC32C": value}
        if verify is Verify.ETAG:
            digest = hashlib.md5(body).digest()
            source_etag = str(head.get("ETag", "")).strip('"')
            comparable = "-" not in source_etag and not self.options.keys.source
            if comparable and source_etag and source_etag != digest.hex():
                raise TransientCopyError(
                    "ChecksumMismatch", f"source ETag {source_etag}, read {digest.hex()}"
                )
            return {"ContentMD5": checksums.md5_b64(digest)}
        return {}

    def _check_crc64nvme(self, head: dict[str, Any], value: int) -> None:
        """Compare the bytes read with the source's own full-object CRC64NVME, when it reports one (S3
        computes it for every new object): a body corrupted between the source's disks and Ferry fails
        here, whichever checksum the destination is sent."""
        source_value = checksums.source_crc64nvme(head)
        ours = checksums.crc64nvme_b64(value)
        if source_value is not None and source_value != ours:
            raise TransientCopyError("ChecksumMismatch", f"source CRC64NVME {source_value}, read {ours}")

    def _verified(self, args: dict[str, Any], response: dict[str, Any]) -> Checksum | None:
        """What a single PUT compared: the CRC32C or MD5 of the bytes read (checked against the source's
        own value when it had a comparable one), and what the destination stored, or else the value it
        accepted (it refuses a body that does not match the checksum header sent)."""
        if self.options.verify is Verify.CHECKSUM and args.get("ChecksumCRC32C"):
            sent = str(args["ChecksumCRC32C"])
            return Checksum("crc32c", sent, str(response.get("ChecksumCRC32C") or sent))
        if self.options.verify is Verify.ETAG and args.get("ContentMD5"):
            md5 = base64.b64decode(str(args["ContentMD5"])).hex()
            return Checksum("etag", md5, str(response.get("ETag", "")).strip('"') or md5)
        return None

    def _verified_multipart(
        self, whole_crc: int, digests: list[bytes], completed: dict[str, Any]
    ) -> Checksum | None:
        """What a streamed multipart copy compared: the whole-object CRC32C of the bytes read and the
        destination's value (a composite `…-N` when it keeps one per part, each part checked on upload),
        or the multipart ETag expected and the one the destination gave."""
        if self.options.verify is Verify.CHECKSUM:
            ours = checksums.crc32c_b64(whole_crc)
            return Checksum("crc32c", ours, str(completed.get("ChecksumCRC32C") or "") or None)
        if self.options.verify is Verify.ETAG and not self._opaque_etags():
            etag = str(completed.get("ETag", "")).strip('"') or None
            return Checksum("etag", checksums.multipart_etag(digests), etag)
        return None

    def _check_put(self, args: dict[str, Any], response: dict[str, Any]) -> None:
        sent = args.get("ChecksumCRC32C")
        echoed = response.get("ChecksumCRC32C")
        if sent and echoed and sent != echoed:
            raise TransientCopyError("ChecksumMismatch", f"destination stored CRC32C {echoed}, sent {sent}")

    # -- server-side single copy -------------------------------------------------------------------------

    def _server_side_copy(self, obj: ObjectInfo, key: str, result: CopyResult) -> None:
        if obj.version_id is not None:
            self._server_side_copy_version(obj, key, result)
            return
        args = self._destination_args({}, None)
        args.update(ssec.copy_source_args(self.options.keys.source))
        args.update(self._copy_payer())
        # CopyObject does not carry the source's lock: it is read, and named on the copy.
        args.update(self._lock_args(obj, result))
        args["MetadataDirective"] = "COPY" if self.options.preserve.metadata else "REPLACE"
        args["TaggingDirective"] = "COPY" if self.options.preserve.tags else "REPLACE"
        # No ChecksumAlgorithm: the bytes never leave the service, which checks its own copies; asking
        # for a new algorithm only makes the service recompute (and some S3 servers get it wrong).

        # The same service holds both buckets, so the destination's lean transport (its credentials are
        # the source's too) sends it; boto3 only when the lean transport is off.
        client = self.destination_lean if self.destination_lean is not None else self.destination_client

        def copy() -> dict[str, Any]:
            response: dict[str, Any] = client.copy_object(
                Bucket=self.destination_bucket,
                Key=key,
                CopySource={"Bucket": self.source_bucket, "Key": obj.key},
                CopySourceIfMatch=f'"{obj.etag}"',
                **args,
            )
            return response

        # The service moves the bytes, but they load the source all the same: bytesPerSecond holds.
        self.bandwidth.take(obj.size)
        response = self._call(result, Operation.COPY, copy)
        etag = str(response.get("CopyObjectResult", {}).get("ETag", "")).strip('"')
        if self.options.verify is Verify.ETAG and not self._opaque_etags() and etag and etag != obj.etag:
            raise TransientCopyError("ChecksumMismatch", f"copy has ETag {etag}, source {obj.etag}")
        if self.options.verify is Verify.ETAG and not self._opaque_etags() and etag:
            result.checksum = Checksum("etag", obj.etag, etag)

    def _server_side_copy_version(self, obj: ObjectInfo, key: str, result: CopyResult) -> None:
        """CopyObject of one source version (spec.versions all). The copy records the source version id
        in its metadata, which CopyObject sets only by replacing the metadata: the version's own metadata
        is read with HEAD first and sent along. Without preserve.metadata and preserve.objectLock nothing
        of that HEAD would be sent, so none is made (CopySourceIfMatch still pins the version's ETag)."""
        head: dict[str, Any] = {}
        if self.options.preserve.metadata or self.options.preserve.object_lock:
            head = self._call(
                result,
                Operation.HEAD,
                lambda: self.source_client.head_object(
                    Bucket=self.source_bucket, Key=obj.key, VersionId=obj.version_id, **self._source_sse()
                ),
            )
        args = self._destination_args(head, None, obj.version_id)
        args.update(ssec.copy_source_args(self.options.keys.source))
        args.update(self._copy_payer())
        args.update(self._lock_args(obj, result, head))
        args["MetadataDirective"] = "REPLACE"
        args["TaggingDirective"] = "COPY" if self.options.preserve.tags else "REPLACE"
        self.bandwidth.take(obj.size)
        response = self._call(
            result,
            Operation.COPY,
            lambda: self.destination_client.copy_object(
                Bucket=self.destination_bucket,
                Key=key,
                CopySource={"Bucket": self.source_bucket, "Key": obj.key, "VersionId": obj.version_id},
                CopySourceIfMatch=f'"{obj.etag}"',
                **args,
            ),
        )
        etag = str(response.get("CopyObjectResult", {}).get("ETag", "")).strip('"')
        if (
            self.options.verify is Verify.ETAG
            and not self.options.destination.server_side_encryption
            and etag
            and etag != obj.etag
        ):
            raise TransientCopyError("ChecksumMismatch", f"copy has ETag {etag}, source {obj.etag}")
        if (
            self.options.verify is Verify.ETAG
            and not self.options.destination.server_side_encryption
            and etag
        ):
            result.checksum = Checksum("etag", obj.etag, etag)  # compared above: the evidence shows both

    # -- multipart (streamed parts, or server-side part copies) -----------------------------------------

    def _multipart(self, obj: ObjectInfo, key: str, result: CopyResult, *, server_side: bool) -> None:
        head = self._call(
            result,
            Operation.HEAD,
            lambda: self.source_client.head_object(
                Bucket=self.source_bucket,
                Key=obj.key,
                IfMatch=f'"{obj.etag}"',
                **self._checksum_mode(),
                **_version(obj.version_id),
                **self._source_sse(),
            ),
        )
        size = int(head["ContentLength"])
        tagging = self._tagging(obj.key, None, result, obj.version_id)
        args = self._destination_args(head, tagging, obj.version_id)
        args.update(self._lock_args(obj, result, head))
        if self.options.verify is Verify.CHECKSUM and not server_side:
            args["ChecksumAlgorithm"] = "CRC32C"
        # Parts of an upload that sets a lock need an integrity header, which verify: size does not send.
        locked = any(name in args for name in preserve.LOCK_FIELDS)
        upload = self._call(
            result,
            Operation.CREATE_MULTIPART,
            lambda: self.destination_client.create_multipart_upload(
                Bucket=self.destination_bucket, Key=key, **args
            ),
        )
        upload_id = upload["UploadId"]
        try:
            parts, whole_crc, digests = self._parts(
                obj,
                key,
                upload_id,
                size,
                result,
                server_side,
                locked=locked,
                crc64_of=head if self.options.verify is Verify.CHECKSUM else None,
            )
            completed = self._call(
                result,
                Operation.COMPLETE_MULTIPART,
                lambda: self.destination_client.complete_multipart_upload(
                    Bucket=self.destination_bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    # S3 wants the key again when the upload carries checksums.
                    **ssec.write_args(self.options.keys.destination),
                ),
            )
        except BaseException:
            self._abort(key, upload_id)
            raise
        if not server_side:
            self._verify_multipart(head, whole_crc, digests, completed)
            result.checksum = self._verified_multipart(whole_crc, digests, completed)

    def _parts(
        self,
        obj: ObjectInfo,
        key: str,
        upload_id: str,
        size: int,
        result: CopyResult,
        server_side: bool,
        *,
        locked: bool = False,
        crc64_of: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], int, list[bytes]]:
        """Upload or copy every part. With ``crc64_of`` (the source's HEAD) holding a full-object CRC64NVME,
        the streamed bytes are compared with it before the upload is completed."""
        part_size = part_size_for(size, self.options.part_size)
        source64 = {} if server_side or crc64_of is None else crc64_of
        chain64 = checksums.source_crc64nvme(source64) is not None
        crc64 = 0
        parts: list[dict[str, Any]] = []
        whole_crc = 0
        digests: list[bytes] = []
        # The one buffer of this transfer (its reservation was made before it started); allocated at the
        # first streamed part, reused for every part, freed when the transfer ends.
        buffer: bytearray | None = None
        for number, (first, last) in enumerate(part_ranges(size, part_size), start=1):
            if server_side:
                parts.append(self._copy_part(obj, key, upload_id, number, first, last, result))
                continue
            if buffer is None:
                buffer = bytearray(min(part_size, size))
            body = memoryview(buffer)[: last - first + 1]
            self._call(result, Operation.GET, partial(self._read_range_into, obj, first, last, body))
            part, digest = self._upload_part(key, upload_id, number, body, result, locked=locked)
            parts.append(part)
            if self.options.verify is Verify.CHECKSUM:
                whole_crc = checksums.crc32c(body, whole_crc)
            elif digest is not None:
                digests.append(digest)
            if chain64:
                crc64 = checksums.crc64nvme(body, crc64)
        if chain64:
            self._check_crc64nvme(source64, crc64)
        return parts, whole_crc, digests

    def _upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        body: memoryview,
        result: CopyResult,
        *,
        locked: bool = False,
    ) -> tuple[dict[str, Any], bytes | None]:
        """Upload one part from its buffer; returns the completed-part entry and its MD5 (verify: etag)."""
        self.bandwidth.take(len(body))
        extra: dict[str, Any] = {}
        md5: bytes | None = None
        if self.options.verify is Verify.CHECKSUM:
            extra["ChecksumCRC32C"] = checksums.crc32c_b64(checksums.crc32c(body))
        elif self.options.verify is Verify.ETAG:
            md5 = hashlib.md5(body).digest()
            extra["ContentMD5"] = checksums.md5_b64(md5)
        elif locked:
            extra["ContentMD5"] = checksums.md5_b64(hashlib.md5(body).digest())
        # Every part of an SSE-C upload carries the key the upload was started with.
        extra.update(ssec.write_args(self.options.keys.destination))

        def upload() -> Any:
            # A fresh reader per attempt: a retry starts from the part's first byte.
            return self.destination_client.upload_part(
                Bucket=self.destination_bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=PartReader(body),
                ContentLength=len(body),
                **extra,
            )

        response = self._call(result, Operation.UPLOAD_PART, upload)
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32C" in extra:
            part["ChecksumCRC32C"] = response.get("ChecksumCRC32C") or extra["ChecksumCRC32C"]
        return part, md5

    def _copy_part(
        self,
        obj: ObjectInfo,
        key: str,
        upload_id: str,
        number: int,
        first: int,
        last: int,
        result: CopyResult,
    ) -> dict[str, Any]:
        self.bandwidth.take(last - first + 1)
        response = self._call(
            result,
            Operation.UPLOAD_PART_COPY,
            partial(
                self.destination_client.upload_part_copy,
                Bucket=self.destination_bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.source_bucket, "Key": obj.key, **_version(obj.version_id)},
                CopySourceRange=f"bytes={first}-{last}",
                CopySourceIfMatch=f'"{obj.etag}"',
                **ssec.write_args(self.options.keys.destination),
                **ssec.copy_source_args(self.options.keys.source),
                **self._copy_payer(),
            ),
        )
        copied = response["CopyPartResult"]
        part = {"PartNumber": number, "ETag": copied["ETag"]}
        if copied.get("ChecksumCRC32C"):
            part["ChecksumCRC32C"] = copied["ChecksumCRC32C"]
        return part

    def _read_range_into(self, obj: ObjectInfo, first: int, last: int, into: memoryview) -> None:
        """GET bytes ``first..last`` into ``into`` (exactly that long), a chunk at a time."""
        response = self.source_client.get_object(
            Bucket=self.source_bucket,
            Key=obj.key,
            Range=f"bytes={first}-{last}",
            IfMatch=f'"{obj.etag}"',
            **_version(obj.version_id),
            **self._source_sse(),
        )
        stream = response["Body"]
        filled, wanted = 0, len(into)
        try:
            while filled < wanted:
                chunk = stream.read(min(READ_CHUNK, wanted - filled))
                if not chunk:
                    break
                into[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        finally:
            stream.close()
        if filled != wanted:
            raise TransientCopyError("IncompleteBody", f"range {first}-{last}: read {filled} bytes")

    def _verify_multipart(
        self, head: dict[str, Any], whole_crc: int, digests: list[bytes], completed: dict[str, Any]
    ) -> None:
        if self.options.verify is Verify.CHECKSUM:
            source_value = head.get("ChecksumCRC32C")
            ours = checksums.crc32c_b64(whole_crc)
            if checksums.is_full_object_checksum(source_value) and source_value != ours:
                raise TransientCopyError("ChecksumMismatch", f"source CRC32C {source_value}, read {ours}")
        elif self.options.verify is Verify.ETAG and not self._opaque_etags():
            expected = checksums.multipart_etag(digests)
            etag = str(completed.get("ETag", "")).strip('"')
            if etag and etag != expected:
                raise TransientCopyError("ChecksumMismatch", f"destination ETag {etag}, expected {expected}")

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.requests.take()
            self.destination_client.abort_multipart_upload(
                Bucket=self.destination_bucket, Key=key, UploadId=upload_id
            )
        except Exception as exc:  # best effort: a lifecycle rule for incomplete uploads cleans the rest
            log.warning("could not abort multipart upload of %r: %s", key, exc)


def _version(version_id: str | None) -> dict[str, str]:
    """The VersionId argument of a request that reads one source version (none: the current one)."""
    return {"VersionId": version_id} if version_id is not None else {}


class PartReader(io.RawIOBase):
    """A part buffer as the file botocore reads a request body from, in the slices it asks for, so the
    part is never copied whole (botocore copies a `bytearray` body into `bytes`)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + offset))
        return self._position

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._position)
        buffer[:n] = self._view[self._position : self._position + n]
        self._position += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        data = self._view[self._position : end].tobytes()
        self._position = max(self._position, end)
        return data
