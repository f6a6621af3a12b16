"""The CopyJob API (``ferry.dev/v1alpha1``): one typed, validated model shared by `ferry run`, the worker
and the operator.

Raw YAML/JSON is validated here, at the edge, with the same rules as the CRD schema; everything past this
module works with frozen values. Field names in messages are the user's (camelCase) names.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ferry.model.quantity import parse_bytes, to_quantity

API_GROUP = "ferry.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "CopyJob"

#: S3's own limit on key length, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
MAX_BUCKET_LENGTH = 63
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
#: ServiceAccount names are DNS subdomains, like Secret names.
_SERVICE_ACCOUNT_NAME = _SECRET_NAME

#: A CopyJob's name is the value of the `ferry.dev/copyjob` label on everything it owns, and label values
#: are at most 63 characters (Kubernetes limits Job names to 63 for the same reason). Child names longer
#: than their kind allows are hashed (`render.child_name`); a label value cannot be.
MAX_NAME_LENGTH = 63

# Endpoints and regions botocore accepts, in patterns both Python's `re` and the API server's RE2 read
# (no look-arounds), so the CRD (crds/copyjob.yaml) carries the very same strings.
# botocore.utils.is_valid_endpoint_url: host labels of letters, digits and '-', neither first nor last,
# at most 63 each, the host at most 255 characters. A trailing '.' (which botocore also takes) is
# refused: one spelling per host keeps the overlap check simple. IPv6 literals are checked in full by
# `ipaddress` here; the CRD checks their characters only.
_HOST_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = f"({_HOST_LABEL}[.])*{_HOST_LABEL}"
MAX_HOSTNAME_LENGTH = 255
PORT_PATTERN = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
ENDPOINT_PATTERN = rf"^https?://({HOSTNAME_PATTERN}|\[[0-9A-Fa-f:.]+\])(:{PORT_PATTERN})?/?$"
#: botocore.utils.validate_region_name: one host label, not all digits.
REGION_PATTERN = f"^{_HOST_LABEL}$"
MAX_REGION_LENGTH = 63
_ENDPOINT = re.compile(ENDPOINT_PATTERN)
_REGION = re.compile(REGION_PATTERN)

#: Characters of filter.include and filter.exclude together. The plan ConfigMap (at most 1 MiB) holds the
#: spec beside the shard boundaries; 16 Ki characters take at most 192 KiB of JSON (12 bytes for an
#: escaped character outside the BMP), which leaves the shards more than 700 KiB (`render.shards_budget`).
MAX_FILTER_CHARACTERS = 16 * 1024
#: Patterns in filter.include, and again in filter.exclude, and characters in one pattern (the CRD's
#: maxItems and maxLength). Every listed key is matched against all of them, in time linear in the key
#: (`worker/globs.py`); these bounds and MAX_FILTER_CHARACTERS keep each step small.
MAX_FILTER_PATTERNS = 1000
MAX_PATTERN_LENGTH = MAX_KEY_BYTES

#: What `storage_service` calls every AWS endpoint, and no endpoint at all.
AWS = "aws"
_AWS_HOST = re.compile(r"(^|[.])amazonaws[.]com([.]cn)?$")


def _bytes(value: Any) -> int:
    return parse_bytes(value)


#: A byte size given as an integer or a Kubernetes quantity; serialised back as a quantity.
ByteSize = Annotated[int, BeforeValidator(_bytes), PlainSerializer(to_quantity, return_type=str)]


def copyjob_name_problem(name: str) -> str | None:
    """Why the operator could not run a CopyJob of this name, or None."""
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"name {name!r} is {len(name)} characters; CopyJob names are at most {MAX_NAME_LENGTH} "
            "(the name is the value of the ferry.dev/copyjob label of its Job and pods); use a shorter name"
        )
    return None


def _copyjob_name(value: str) -> str:
    problem = copyjob_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _endpoint(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL; write it like https://s3.example.com")
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. a bracketed host that is no IP address
        raise ValueError(f"{value!r} is not a URL: {exc}") from exc
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} has a path or query; give only scheme, host and port")
    if "@" in parts.netloc:
        raise ValueError(
            "the endpoint holds a user name or password; give only scheme, host and port, and put "
            "credentials in the Secret named by credentialsSecret"
        )
    if not _ENDPOINT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an endpoint S3 clients accept: the host must be a DNS name (letters, digits, "
            "'-' and '.'; no '_', no trailing '.') or an [IPv6] address, and the port 1-65535"
        )
    host = parts.hostname or ""
    if len(host) > MAX_HOSTNAME_LENGTH:
        raise ValueError(f"the host of {value!r} is {len(host)} characters; at most {MAX_HOSTNAME_LENGTH}")
    if value.split("//", 1)[1].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"{value!r}: [{host}] is not an IPv6 address") from exc
    return value.rstrip("/")


def _region(value: str) -> str:
    if not _REGION.fullmatch(value) or value.isdigit():
        raise ValueError(
            f"{value!r} is not a region name S3 clients accept: letters, digits and '-', not first or last, "
            "not only digits (e.g. eu-west-1)"
        )
    return value


def storage_service(endpoint: str | None) -> str:
    """The S3 service an endpoint reaches, for telling whether two locations may hold the same bucket.

    No endpoint and every AWS endpoint are one service: bucket names are global within AWS, so
    https://s3.eu-west-1.amazonaws.com reaches the bucket the default endpoint does. Any other endpoint
    is its host and port, lowercased, with :80 and :443 dropped: http and https of one host count as one
    service (when in doubt the overlap check must refuse). The CRD's CEL rule computes the same.
    """
    if endpoint is None:
        return AWS
    netloc = urlsplit(endpoint.lower()).netloc
    host = netloc if netloc.endswith("]") else netloc.rsplit(":", 1)[0]
    if _AWS_HOST.search(host):
        return AWS
    for default in (":443", ":80"):
        if netloc.endswith(default):
            return netloc.removesuffix(default)
    return netloc


def _bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value) or ".." in value or _IP_ADDRESS.match(value):
        raise ValueError(
            f"{value!r} is not a valid bucket name: 3-63 characters of lowercase letters, digits, '.', '-'"
        )
    return value


def _prefix(value: str) -> str:
    if len(value.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"prefix is {len(value.encode())} bytes; S3 keys are at most {MAX_KEY_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("prefix contains control characters")
    return value


def _secret_name(value: str) -> str:
    if len(value) > 253 or not _SECRET_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Secret name (lowercase DNS subdomain)")
    return value


def _service_account_name(value: str) -> str:
    if len(value) > 253 or not _SERVICE_ACCOUNT_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid ServiceAccount name (lowercase DNS subdomain)")
    return value


def _glob(value: str) -> str:
    if not value:
        raise ValueError("empty pattern")
    if len(value) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"pattern is {len(value)} characters, more than {MAX_PATTERN_LENGTH} (a key's longest); "
            "shorten it, a '*' stands for any run of characters"
        )
    return value


Endpoint = Annotated[str, Field(max_length=512), AfterValidator(_endpoint)]
Region = Annotated[str, Field(min_length=1, max_length=MAX_REGION_LENGTH), AfterValidator(_region)]
Bucket = Annotated[str, AfterValidator(_bucket)]
Prefix = Annotated[str, AfterValidator(_prefix)]
SecretName = Annotated[str, AfterValidator(_secret_name)]
ServiceAccountName = Annotated[str, AfterValidator(_service_account_name)]
Glob = Annotated[str, AfterValidator(_glob)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        # Python code may build values by field name; user input is validated by alias only
        # (`parse_copyjob`), so a file `ferry run` accepts is one `kubectl apply` accepts.
        validate_by_name=True,
        validate_by_alias=True,
        str_strip_whitespace=False,
    )


class AddressingStyle(StrEnum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class Overwrite(StrEnum):
    IF_DIFFERENT = "ifDifferent"
    NEVER = "never"
    ALWAYS = "always"


class Verify(StrEnum):
    CHECKSUM = "checksum"
    ETAG = "etag"
    SIZE = "size"


class Versions(StrEnum):
    CURRENT = "current"
    ALL = "all"


class Mode(StrEnum):
    COPY = "copy"
    SYNC = "sync"


class Location(_Model):
    """Where objects are read from or written to."""

    bucket: Bucket = Field(description="Bucket name: 3-63 lowercase letters, digits, '.' and '-'.")
    prefix: Prefix = Field(
        default="",
        description='Only keys under this prefix (default "", the whole bucket); at most 1024 bytes of UTF-8. '
        "Matched case-sensitively, as S3 does.",
    )
    endpoint: Endpoint | None = Field(
        default=None,
        description="An S3-compatible endpoint: scheme, host and port only, e.g. https://s3.example.com "
        "(default: AWS's endpoint for the region). The host is a DNS name (no '_', no trailing '.') or an [IPv6] address, as botocore "
        "requires; the platform may refuse endpoints it does not allow (EndpointNotAllowed).",
    )
    region: Region | None = Field(
        default=None,
        description="The region requests are signed for, as botocore spells it: eu-west-1, not eu_west_1 "
        "(default: botocore's default). Use the bucket's region: a wrong one makes every request fail.",
    )
    addressing_style: AddressingStyle = Field(
        default=AddressingStyle.AUTO,
        description="How the bucket is addressed: auto (default; botocore chooses), path "
        "(https://host/bucket/key, what most S3-compatible servers need) or virtual (https://bucket.host/key).",
    )
    credentials_secret: SecretName | None = Field(
        default=None,
        description="Name of a Secret in the CopyJob's namespace with AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (and optionally AWS_SESSION_TOKEN); only worker and planner pods read it. "
        "Required, unless the platform allows workload identity in this namespace and "
        "spec.serviceAccountName is set.",
    )

    def same_service(self, other: Location) -> bool:
        """True when both locations are served by the same endpoint with the same credentials."""
        return (
            self.endpoint == other.endpoint
            and (self.region or "") == (other.region or "")
            and self.credentials_secret == other.credentials_secret
        )


#: A local manifest path (`ferry run`/`ferry plan` only) at most this many characters.
MAX_MANIFEST_PATH = 4096


def _manifest_key(value: str) -> str:
    if len(value.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"key is {len(value.encode())} bytes; S3 keys are at most {MAX_KEY_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("key contains control characters")
    return value


def _manifest_path(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("file contains control characters")
    return value


class ManifestFormat(StrEnum):
    INVENTORY = "inventory"
    CSV = "csv"
    JSONL = "jsonl"


class Manifest(_Model):
    """A list of the source's objects to copy, read instead of listing the source."""

    format: ManifestFormat = Field(
        description="inventory (an S3 Inventory manifest.json naming CSV, ORC or Parquet files), csv (a header "
        "line naming the columns key, size and optionally etag, lastModified, bucket, versionId; keys as "
        "written, quoted as CSV quotes) or jsonl (one JSON object per line with key, size and optionally etag, "
        "lastModified, versionId).",
    )
    bucket: Bucket | None = Field(
        default=None,
        description="The bucket holding the manifest, read with the source's endpoint and credentials; "
        "set with key.",
    )
    key: (
        Annotated[str, Field(min_length=1, max_length=MAX_KEY_BYTES), AfterValidator(_manifest_key)] | None
    ) = Field(
        default=None,
        description="The manifest's key in bucket (for inventory: its manifest.json, whose data files are "
        "read from the same bucket).",
    )
    file: (
        Annotated[str, Field(min_length=1, max_length=MAX_MANIFEST_PATH), AfterValidator(_manifest_path)]
        | None
    ) = Field(
        default=None,
        description="A local manifest file instead of bucket and key, for ferry run and ferry plan only (the "
        "operator refuses it); an inventory's data files are read from the directory of its manifest.json.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> Manifest:
        in_s3 = self.bucket is not None or self.key is not None
        if in_s3 == (self.file is not None):
            raise ValueError("set either bucket and key, or file (ferry run and ferry plan only)")
        if in_s3 and (self.bucket is None or self.key is None):
            raise ValueError("set both bucket and key")
        return self


#: The requester-pays fields' description, the same on both sides.
_REQUESTER_PAYS = (
    "true when the {side} bucket is a Requester Pays bucket (default false): every request to it "
    "({requests}) says the requester pays (x-amz-request-payer: requester), so the CopyJob's credentials "
    "are charged for its requests and transfer."
)
#: The SSE-C key fields' description, the same on both sides.
_SSE_CUSTOMER_KEY = (
    "The Secret value holding the 256-bit key of {what} SSE-C (server-side encryption with a "
    "customer-provided key): 32 bytes, base64-encoded (default: no SSE-C). Only worker pods read it; "
    "it is sent with every request {which} and never printed."
)


class Source(Location):
    """Where objects are read from, and optionally the manifest naming them."""

    # SecretKeySelector is defined further down, beside Notify; the annotation is resolved lazily.
    sse_customer_key: SecretKeySelector | None = Field(
        default=None,
        description=_SSE_CUSTOMER_KEY.format(
            what="the source objects'", which="that reads them (GET, HEAD, CopyObject, UploadPartCopy)"
        ),
    )
    requester_pays: StrictBool = Field(
        default=False,
        description=_REQUESTER_PAYS.format(side="source", requests="listing, reads and server-side copies"),
    )

    manifest: Manifest | None = Field(
        default=None,
        description="Read the objects to copy from this manifest instead of listing the source (default: "
        "list the source). Its keys are filtered by prefix and spec.filter like listed keys; keys that no "
        "longer exist fail as SourceObjectMissing.",
    )


class ServerSideEncryption(_Model):
    type: Literal["aws:kms", "AES256"] = Field(
        description="aws:kms (SSE-KMS) or AES256 (SSE-S3): how the destination encrypts every object written."
    )
    kms_key_id: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        default=None,
        description="The KMS key (id, ARN or alias) for type aws:kms (default: the account's AWS-managed key).",
    )

    @model_validator(mode="after")
    def _key_only_with_kms(self) -> ServerSideEncryption:
        if self.kms_key_id and self.type != "aws:kms":
            raise ValueError("kmsKeyId is only valid with type aws:kms")
        return self


class Destination(Location):
    storage_class: (
        Literal[
            "STANDARD",
            "REDUCED_REDUNDANCY",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER",
            "DEEP_ARCHIVE",
            "GLACIER_IR",
            "EXPRESS_ONEZONE",
        ]
        | None
    ) = Field(
        default=None,
        description="The storage class of every object written (default: the destination bucket's default).",
    )
    server_side_encryption: ServerSideEncryption | None = Field(
        default=None,
        description="Server-side encryption of every object written (default: the bucket's default).",
    )
    acl: Literal["private", "bucket-owner-read", "bucket-owner-full-control"] | None = Field(
        default=None,
        description="A canned ACL set on every object written: private, bucket-owner-read or "
        "bucket-owner-full-control (what a copy into another account's bucket needs so that its owner can "
        "read the objects); default: none sent, the bucket's default. ACLs that publish objects "
        "(public-read, public-read-write, authenticated-read) are refused: use a bucket policy.",
    )

    sse_customer_key: SecretKeySelector | None = Field(
        default=None,
        description=_SSE_CUSTOMER_KEY.format(
            what="every object written with", which="that writes them (PUT, CopyObject, multipart upload)"
        ),
    )
    requester_pays: StrictBool = Field(
        default=False,
        description=_REQUESTER_PAYS.format(side="destination", requests="listing and writes"),
    )

    @model_validator(mode="after")
    def _one_encryption(self) -> Destination:
        if self.sse_customer_key is not None and self.server_side_encryption is not None:
            raise ValueError(
                "set either sseCustomerKey (SSE-C) or serverSideEncryption: an object has one encryption"
            )
        return self

    @model_validator(mode="after")
    def _directory_bucket_acl(self) -> Destination:
        if self.acl is not None and self.storage_class == "EXPRESS_ONEZONE":
            raise ValueError(
                "acl cannot be set with storageClass EXPRESS_ONEZONE: directory buckets have no ACLs"
            )
        return self


class Filter(_Model):
    """Which source objects are copied. Patterns match the key relative to the source prefix."""

    include: Annotated[tuple[Glob, ...], Field(max_length=MAX_FILTER_PATTERNS)] = Field(
        default=(),
        description="Copy only keys matching one of these shell globs (default: every key): '*' is any run of "
        "characters, '/' included, '?' one character, [ab] one of a set. The whole key relative to "
        "source.prefix must match.",
    )
    exclude: Annotated[tuple[Glob, ...], Field(max_length=MAX_FILTER_PATTERNS)] = Field(
        default=(), description="Skip keys matching one of these patterns, even when include matches them."
    )
    min_size: ByteSize | None = Field(
        default=None,
        description="Copy only objects of at least this many bytes (an integer or a quantity such as 1Mi).",
    )
    max_size: ByteSize | None = Field(
        default=None,
        description="Copy only objects of at most this many bytes (an integer or a quantity such as 5Gi).",
    )
    modified_after: datetime | None = Field(
        default=None,
        description="Copy only objects last modified after this time (RFC 3339 with a time zone, e.g. "
        "2024-01-01T00:00:00Z).",
    )
    modified_before: datetime | None = Field(
        default=None,
        description="Copy only objects last modified before this time (RFC 3339 with a time zone).",
    )

    @model_validator(mode="after")
    def _ranges(self) -> Filter:
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(
                f"minSize ({self.min_size} bytes) is larger than maxSize ({self.max_size} bytes)"
            )
        for name in ("modified_after", "modified_before"):
            stamp = getattr(self, name)
            if stamp is not None and stamp.tzinfo is None:
                raise ValueError(f"{to_camel(name)} needs a time zone, e.g. 2024-01-01T00:00:00Z")
        if self.modified_after and self.modified_before and self.modified_after >= self.modified_before:
            raise ValueError("modifiedAfter must be earlier than modifiedBefore")
        characters = sum(len(p) for p in (*self.include, *self.exclude))
        if characters > MAX_FILTER_CHARACTERS:
            raise ValueError(
                f"include and exclude hold {characters} characters of patterns together, more than "
                f"{MAX_FILTER_CHARACTERS}: the plan ConfigMap (1 MiB) must hold them beside the shard "
                "boundaries; use fewer, broader patterns or a narrower source.prefix"
            )
        return self


class ObjectSizes(_Model):
    """The object-size distribution the user expects; planning replaces it with the measured one."""

    median: ByteSize | None = Field(
        default=None,
        description="The size half of the objects are below (an integer or a quantity such as 100Ki).",
    )
    p99: ByteSize | None = Field(default=None, description="The size 99% of the objects are below.")
    max: ByteSize | None = Field(default=None, description="The size of the largest object.")

    @model_validator(mode="after")
    def _ordered(self) -> ObjectSizes:
        values = [(n, v) for n, v in (("median", self.median), ("p99", self.p99), ("max", self.max)) if v]
        for (name_a, a), (name_b, b) in itertools.pairwise(values):
            if a > b:
                raise ValueError(f"{name_a} ({a} bytes) is larger than {name_b} ({b} bytes)")
        return self


class Preserve(_Model):
    metadata: StrictBool = Field(
        default=True,
        description="Copy user metadata and the Content-Type, -Encoding, -Language, -Disposition, "
        "Cache-Control and Expires headers (default true).",
    )
    tags: StrictBool = Field(default=True, description="Copy object tags (default true).")
    object_lock: StrictBool = Field(
        default=False,
        description="Copy each object's Object Lock retention (mode and retain-until date) and legal hold "
        "(default false). The destination bucket must have Object Lock enabled. A retention that has "
        "already expired is not sent; COMPLIANCE retention cannot be shortened or removed at the "
        "destination by anyone, the root account included, until it expires. Objects skipped as already "
        "present keep the lock they have.",
    )


class Concurrency(_Model):
    max: Annotated[StrictInt, Field(ge=1, le=4096)] = Field(
        default=512,
        description="Transfers in flight per worker pod at most (default 512); the adaptive manager never "
        "goes above it.",
    )
    initial: Annotated[StrictInt, Field(ge=1, le=4096)] | None = Field(
        default=None,
        description="Transfers in flight per worker pod at start (default: planned from the object sizes); "
        "the adaptive manager moves from there on objects/s, memory and throttling.",
    )

    @model_validator(mode="after")
    def _initial_le_max(self) -> Concurrency:
        if self.initial is not None and self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) is larger than max ({self.max})")
        return self


class RateLimit(_Model):
    requests_per_second: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = Field(
        default=0,
        description="S3 requests per second the whole job makes at most, split over its worker pods "
        "(default 0: unlimited).",
    )
    bytes_per_second: ByteSize = Field(
        default=0,
        description="Bytes per second the whole job copies at most, split over its worker pods; an integer "
        "or a quantity such as 100Mi (default 0: unlimited).",
    )


class ReportInclude(StrEnum):
    FAILURES = "failures"
    ALL = "all"


#: A key of a Secret's data, as Kubernetes allows it.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
_SECRET_KEY = re.compile(SECRET_KEY_PATTERN)


def _secret_key(value: str) -> str:
    if not 1 <= len(value) <= 253 or not _SECRET_KEY.fullmatch(value):
        raise ValueError("a Secret key is 1-253 letters, digits, '-', '_' and '.'")
    return value


class SecretKeySelector(_Model):
    """One value of a Secret in the CopyJob's namespace."""

    name: SecretName = Field(description="The Secret's name, in the CopyJob's namespace.")
    key: Annotated[str, AfterValidator(_secret_key)] = Field(
        description="The key of the value in the Secret's data."
    )


# Source and Destination name SecretKeySelector (sseCustomerKey) before it is defined: complete them now,
# so that every model after this point, and the CRD's comparison with them, sees their full fields.
Source.model_rebuild()
Destination.model_rebuild()


class Notify(_Model):
    """Where a CloudEvent is sent when the CopyJob ends (Succeeded or Failed) or stalls."""

    url_secret: SecretKeySelector = Field(
        description="The Secret key holding the webhook URL (https; http only where the platform allows it). "
        "The URL is sent to from a short pod in the CopyJob's namespace, never from the operator, and is "
        "never shown in status, Events or logs."
    )


class Report(Location):
    """Where the list of failed objects is written (JSON lines), and with include: all the evidence of
    every object (docs/report-format.md)."""

    include: ReportInclude = Field(
        default=ReportInclude.FAILURES,
        description="What the report holds: failures (default; the failed objects as JSON lines) or all (also "
        "a manifest of every object the job considered, with its action and the checksums compared, as "
        "gzipped JSON-lines parts and a summary per shard; see docs/report-format.md).",
    )


class Target(_Model):
    """What the operator scales the worker pods to meet: a rate, or a time by which the copy should be done."""

    objects_per_second: Annotated[StrictInt, Field(ge=1, le=10_000_000)] | None = Field(
        default=None,
        description="Objects per second to copy, all worker pods together; the operator adds pods while "
        "the total is below it and still rising, and removes those it does not need.",
    )
    deadline: datetime | None = Field(
        default=None,
        description="A time to finish by (RFC 3339 with a time zone, e.g. 2026-12-01T00:00:00Z): the "
        "operator aims at the objects left over the time left, computed again every few seconds.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.objects_per_second is None) == (self.deadline is None):
            raise ValueError("set exactly one of objectsPerSecond and deadline")
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline needs a time zone, e.g. 2026-12-01T00:00:00Z")
        return self


_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")


def _memory(value: Any) -> Any:
    return value if value == "auto" else parse_bytes(value)


def _cpu(value: Any) -> str:
    text = str(value)
    if isinstance(value, bool) or not _CPU.fullmatch(text):
        raise ValueError(f"{value!r} is not a CPU quantity; use forms like 500m or 2")
    return text


class Resources(_Model):
    """Worker pod resources. ``memory: auto`` (default) sizes the pod from the object-size histogram."""

    memory: Annotated[Literal["auto"] | int, BeforeValidator(_memory)] = Field(
        default="auto",
        description='Memory limit of each worker pod: "auto" (default) sizes it from the object sizes, or a '
        "byte size such as 2Gi. The platform may cap it.",
    )
    cpu: Annotated[str, BeforeValidator(_cpu)] | None = Field(
        default=None,
        description="CPU request of each worker pod, such as 500m or 2 (default: the platform's). The "
        "platform may cap it.",
    )


class ShardSize(_Model):
    """Upper bounds of one shard (one Indexed Job completion); absent = chosen by planning."""

    max_objects: Annotated[StrictInt, Field(ge=1, le=100_000_000)] | None = Field(
        default=None, description="Objects in one shard at most (default: chosen by planning)."
    )
    max_bytes: ByteSize | None = Field(
        default=None,
        description="Bytes in one shard at most, an integer or a quantity such as 50Gi (default: chosen "
        "by planning).",
    )


#: A delete limit as a share of the destination objects in scope: 0-100 with at most two decimals, then '%'.
DELETE_PERCENT_PATTERN = r"^(100([.]0{1,2})?|[1-9]?[0-9]([.][0-9]{1,2})?)%$"
#: The largest delete limit given as a count.
MAX_DELETE_COUNT = 1_000_000_000
_DELETE_PERCENT = re.compile(DELETE_PERCENT_PATTERN)


def _delete_percent(value: str) -> str:
    if not _DELETE_PERCENT.fullmatch(value):
        raise ValueError(
            f"{value!r} is neither a count nor a percentage; write a whole number such as 1000, or a "
            'percentage of the destination objects in scope from "0%" to "100%" such as "5%" or "0.5%"'
        )
    return value


class Deletes(_Model):
    """How many deletes a sync may make (spec.mode sync only)."""

    max: (
        Annotated[StrictInt, Field(ge=0, le=MAX_DELETE_COUNT)]
        | Annotated[str, Field(max_length=8), AfterValidator(_delete_percent)]
    ) = Field(
        description="The most destination objects a sync deletes: a count such as 1000, or a percentage of "
        'the destination objects in scope such as "5%". Required with mode sync: when more objects would '
        "be deleted, nothing is deleted and the job stops saying how many (ferry run exits 5).",
    )


class Archived(StrEnum):
    FAIL = "fail"
    SKIP = "skip"
    RESTORE = "restore"


class RestoreTier(StrEnum):
    STANDARD = "Standard"
    BULK = "Bulk"
    EXPEDITED = "Expedited"


class Restore(_Model):
    """How archived source objects are restored before they are copied (with ``archived: restore``)."""

    tier: RestoreTier = Field(
        default=RestoreTier.STANDARD,
        description="The retrieval tier of each restore: Standard (default; hours), Bulk (the cheapest and "
        "slowest) or Expedited (minutes; not for DEEP_ARCHIVE).",
    )
    days: Annotated[StrictInt, Field(ge=1, le=365)] = Field(
        default=1,
        description="Days the restored copy stays readable at the source (default 1): long enough to copy "
        "it; the source's owner pays for it meanwhile.",
    )
    max_wait_seconds: Annotated[StrictInt, Field(ge=1, le=604_800)] = Field(
        default=172_800,
        description="Seconds each object's restore is waited for after it was requested (default 172800, 48 "
        "hours: a Bulk restore from DEEP_ARCHIVE). Objects not restored by then fail as RestoreTimedOut; "
        "a later run copies them once restored.",
    )
    check_interval_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = Field(
        default=300,
        description="Seconds between the checks (one HEAD per waiting object) of restores in progress "
        "(default 300).",
    )


class CopyJobSpec(_Model):
    """What to copy, and how. Read when the CopyJob is planned; afterwards only parallelism, target,
    rateLimit, suspend and ttlSecondsAfterFinished take effect on a running job (the plan ConfigMap keeps
    the spec it was planned with). Edited once Failed, or Stalled by a systematic failure, it runs its
    unfinished shards again under the new spec (planned again when source, filter or shardSize changed);
    edited once Succeeded, it is only observed."""

    source: Source = Field(description="Where objects are read from.")
    destination: Destination = Field(
        description="Where objects are written; destination.prefix replaces source.prefix in every key."
    )
    filter: Filter = Field(
        default=Filter(),
        description="Which source objects are copied (default: all under source.prefix); patterns match the "
        "key relative to source.prefix.",
    )
    object_sizes: ObjectSizes = Field(
        default=ObjectSizes(),
        description="The object sizes you expect; sizing uses them until planning has measured the real ones.",
    )
    overwrite: Overwrite = Field(
        default=Overwrite.IF_DIFFERENT,
        description="Which destination objects are written: ifDifferent (default) copies what is missing or "
        "differs (size and ETag or checksum); never copies only what is missing; always copies everything.",
    )
    versions: Versions = Field(
        default=Versions.CURRENT,
        description="Which versions of each key are copied: current (default; the current version, as a "
        "non-versioned bucket holds it) or all (every version, oldest first, delete markers included, so the "
        "destination's version history of each key matches the source's). With all, the destination bucket "
        "must have versioning enabled, each copied version records its source version id in the metadata "
        "x-amz-meta-ferry-source-version-id, a key whose destination history is not a prefix of the source's "
        "is reported (DestinationHistoryDiverged) and left untouched, and overwrite must be ifDifferent.",
    )
    verify: Verify = Field(
        default=Verify.CHECKSUM,
        description="How each copy is checked: checksum (default; CRC32C computed while streaming and compared "
        "end to end, and the bytes read compared with the source's full-object CRC64NVME when it has one), "
        "etag (Content-MD5 and plain MD5 ETags) or size.",
    )
    mode: Mode = Field(
        default=Mode.COPY,
        description="copy (default) writes objects and deletes nothing; sync also deletes, after a copy "
        "without failures, the destination objects the source no longer holds. Only objects in the job's "
        "scope are deleted: under destination.prefix, and whose key relative to destination.prefix, size "
        "and modification time spec.filter accepts (a destination object the filter would not copy is "
        "kept). Nothing is deleted when the source listing was empty or broke off, when any object "
        "failed, or when more than deletes.max would go. Not with source.manifest.",
    )
    deletes: Deletes | None = Field(
        default=None,
        description="Limits on what a sync deletes; required with mode sync, refused with mode copy.",
    )
    preserve: Preserve = Field(
        default=Preserve(), description="What is copied beside the data (default: everything)."
    )
    concurrency: Concurrency = Field(
        default=Concurrency(),
        description="Transfers in flight per worker pod; the adaptive manager chooses the level below max.",
    )
    rate_limit: RateLimit = Field(
        default=RateLimit(),
        description="Limits on the whole job's S3 requests and bytes per second, shared by its worker pods "
        "(default: unlimited). Edits apply to the running job within seconds.",
    )
    report: Report | None = Field(
        default=None,
        description="Where the list of failed objects is written as JSON lines (default: no report; a sample "
        "of 20 stays in status.failedObjects).",
    )
    notify: Notify | None = Field(
        default=None,
        description="A webhook told when the CopyJob succeeds, fails or stalls, as a CloudEvents 1.0 JSON "
        "(type dev.ferry.copyjob.succeeded, .failed or .stalled; data: phase and counts) (default: none).",
    )
    # Fields the operator acts on; `ferry run` accepts them and uses none but dryRun.
    parallelism: Annotated[StrictInt, Field(ge=1, le=1000)] | None = Field(
        default=None,
        description="Worker pods (default: sized by the operator from the plan; never more than the shards, "
        "and the platform may cap it); with target set, the most pods the operator scales to. Edits apply "
        "to the running Job.",
    )
    target: Target | None = Field(
        default=None,
        description="Scale the worker pods to meet this, exactly one of objectsPerSecond and deadline "
        "(default: a fixed pod count). The operator starts one pod, measures every pod's objects/s and "
        "their total, and adds or removes pods within parallelism, the platform's limit and the shards "
        "left; status.scaling says why.",
    )
    resources: Resources = Field(default=Resources(), description="Resources of each worker pod.")
    dry_run: StrictBool = Field(
        default=False,
        description="Plan only (default false): list the source and put the estimate (objects, bytes, "
        "histogram, predicted duration, pod memory) in status.plan; nothing is copied.",
    )
    suspend: StrictBool = Field(
        default=False,
        description="true stops the worker pods (the Job is suspended) and keeps what was copied; false "
        "resumes. It holds the planner, and a sync's delete and census Jobs, the same way (a stopped delete "
        "pass deletes no more than its count when resumed); the notify Job is not held. Edits apply to the "
        "running Job.",
    )
    ttl_seconds_after_finished: Annotated[StrictInt, Field(ge=0, le=31_536_000)] | None = Field(
        default=None,
        description="Seconds after the CopyJob finished (Succeeded or Failed) after which its worker Job and "
        "pods are deleted; the CopyJob and its status are kept (default: never deleted).",
    )
    shard_size: ShardSize = Field(
        default=ShardSize(),
        description="Upper bounds of one shard, a unit of work one worker pod takes at a time (default: "
        "chosen by planning).",
    )
    archived: Archived = Field(
        default=Archived.FAIL,
        description="What happens to source objects in an archive tier (GLACIER, DEEP_ARCHIVE, or an "
        "archive access tier of INTELLIGENT_TIERING), which cannot be read until restored: fail (default; "
        "each fails with the service's refusal, InvalidObjectState or ObjectNotInActiveTierError), skip (each is left out, reported by key as "
        "ArchivedObjectSkipped and counted as archived; the job still succeeds) or restore (a restore of "
        "each is requested, everything else is copied first, then each is copied once restored; see "
        "restore). GLACIER_IR objects are read directly.",
    )
    restore: Restore | None = Field(
        default=None,
        description="With archived: restore, the restore requests and how long they are waited for "
        "(default: Standard tier, 1 day, waited for 48 hours, checked every 5 minutes).",
    )
    #: `ferry run` ignores it.
    service_account_name: ServiceAccountName | None = Field(
        default=None,
        description="A ServiceAccount of this namespace whose cloud identity (workload identity) the worker "
        "pods use for the locations without credentialsSecret. Only in namespaces where the platform allows "
        "workload identity; never a shared account.",
    )

    @model_validator(mode="after")
    def _sync_rules(self) -> CopyJobSpec:
        if self.mode is Mode.COPY and self.deletes is not None:
            raise ValueError(
                "deletes is set but mode is copy, which deletes nothing; set mode: sync or drop deletes"
            )
        if self.mode is Mode.SYNC and self.deletes is None:
            raise ValueError(
                'mode sync needs deletes.max: the most objects it may delete, a count such as 1000 or "5%"'
            )
        if self.mode is Mode.SYNC and self.source.manifest is not None:
            raise ValueError(
                "mode sync cannot read source.manifest: a manifest is a snapshot, and an object missing "
                "from it is not proof the source no longer holds it; list the source instead"
            )
        return self

    @model_validator(mode="after")
    def _versions_rules(self) -> CopyJobSpec:
        # The same rules as the CRD's CEL rules on spec.versions.
        if self.versions is not Versions.ALL:
            return self
        if self.source.manifest is not None:
            raise ValueError(
                "versions all cannot read source.manifest: a manifest names keys, not their version "
                "histories; list the source instead"
            )
        if self.overwrite is not Overwrite.IF_DIFFERENT:
            raise ValueError(
                "versions all needs overwrite ifDifferent: each key's destination history is compared "
                "version by version with the source's and only the missing versions are copied"
            )
        f = self.filter
        if any(b is not None for b in (f.min_size, f.max_size, f.modified_after, f.modified_before)):
            raise ValueError(
                "versions all filters by key only (filter.include, filter.exclude): a size or date filter "
                "would drop versions from the middle of a history"
            )
        if self.mode is Mode.SYNC:
            raise ValueError(
                "versions all cannot be used with mode sync: it never deletes destination versions"
            )
        return self

    @model_validator(mode="after")
    def _no_overlap(self) -> CopyJobSpec:
        # However the endpoints are spelled: a destination under the source would be listed and copied
        # again by every shard that reaches it.
        src, dst = self.source, self.destination
        service = storage_service(src.endpoint)
        same_bucket = service == storage_service(dst.endpoint) and src.bucket == dst.bucket
        if same_bucket and (src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)):
            raise ValueError(
                f"source and destination overlap: bucket {src.bucket!r} with prefixes "
                f"{src.prefix!r} and {dst.prefix!r} on the same endpoint ({service}); use disjoint prefixes"
            )
        return self

    @model_validator(mode="after")
    def _object_lock_needs_a_general_bucket(self) -> CopyJobSpec:
        if self.preserve.object_lock and self.destination.storage_class == "EXPRESS_ONEZONE":
            raise ValueError(
                "preserve.objectLock cannot be kept with destination.storageClass EXPRESS_ONEZONE: "
                "directory buckets have no Object Lock"
            )
        return self

    @model_validator(mode="after")
    def _restore_needs_archived_restore(self) -> CopyJobSpec:
        if self.restore is not None and self.archived is not Archived.RESTORE:
            raise ValueError("restore is only valid with archived: restore")
        return self


class ObjectMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    name: Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_copyjob_name)]
    namespace: str | None = None


class CopyJob(_Model):
    api_version: Literal["ferry.dev/v1alpha1"]
    kind: Literal["CopyJob"]
    metadata: ObjectMeta
    spec: CopyJobSpec
    # The operator owns status; a CopyJob read back from the cluster may carry one, which is ignored here.
    status: dict[str, Any] | None = None


def parse_copyjob(raw: dict[str, Any]) -> CopyJob:
    """Validate a CopyJob as users write it: camelCase names only. Raises pydantic's ValidationError."""
    return CopyJob.model_validate(raw, by_alias=True, by_name=False)
