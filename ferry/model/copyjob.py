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


class Location(_Model):
    """Where objects are read from or written to."""

    bucket: Bucket
    prefix: Prefix = ""
    endpoint: Endpoint | None = None
    region: Region | None = None
    addressing_style: AddressingStyle = AddressingStyle.AUTO
    credentials_secret: SecretName | None = None

    def same_service(self, other: Location) -> bool:
        """True when both locations are served by the same endpoint with the same credentials."""
        return (
            self.endpoint == other.endpoint
            and (self.region or "") == (other.region or "")
            and self.credentials_secret == other.credentials_secret
        )


class ServerSideEncryption(_Model):
    type: Literal["aws:kms", "AES256"]
    kms_key_id: Annotated[str, Field(min_length=1, max_length=2048)] | None = None

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
    ) = None
    server_side_encryption: ServerSideEncryption | None = None


class Filter(_Model):
    """Which source objects are copied. Patterns match the key relative to the source prefix."""

    include: Annotated[tuple[Glob, ...], Field(max_length=MAX_FILTER_PATTERNS)] = ()
    exclude: Annotated[tuple[Glob, ...], Field(max_length=MAX_FILTER_PATTERNS)] = ()
    min_size: ByteSize | None = None
    max_size: ByteSize | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

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

    median: ByteSize | None = None
    p99: ByteSize | None = None
    max: ByteSize | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ObjectSizes:
        values = [(n, v) for n, v in (("median", self.median), ("p99", self.p99), ("max", self.max)) if v]
        for (name_a, a), (name_b, b) in itertools.pairwise(values):
            if a > b:
                raise ValueError(f"{name_a} ({a} bytes) is larger than {name_b} ({b} bytes)")
        return self


class Preserve(_Model):
    metadata: StrictBool = True
    tags: StrictBool = True


class Concurrency(_Model):
    max: Annotated[StrictInt, Field(ge=1, le=4096)] = 512
    initial: Annotated[StrictInt, Field(ge=1, le=4096)] | None = None

    @model_validator(mode="after")
    def _initial_le_max(self) -> Concurrency:
        if self.initial is not None and self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) is larger than max ({self.max})")
        return self


class RateLimit(_Model):
    requests_per_second: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 0
    bytes_per_second: ByteSize = 0


class Report(Location):
    """Where the list of failed objects is written (JSON lines)."""


class Target(_Model):
    """What the operator sizes parallelism for: a rate, or a time by which the copy should be done."""

    objects_per_second: Annotated[StrictInt, Field(ge=1, le=10_000_000)] | None = None
    deadline: datetime | None = None

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

    memory: Annotated[Literal["auto"] | int, BeforeValidator(_memory)] = "auto"
    cpu: Annotated[str, BeforeValidator(_cpu)] | None = None


class ShardSize(_Model):
    """Upper bounds of one shard (one Indexed Job completion); absent = chosen by planning."""

    max_objects: Annotated[StrictInt, Field(ge=1, le=100_000_000)] | None = None
    max_bytes: ByteSize | None = None


class CopyJobSpec(_Model):
    source: Location
    destination: Destination
    filter: Filter = Filter()
    object_sizes: ObjectSizes = ObjectSizes()
    overwrite: Overwrite = Overwrite.IF_DIFFERENT
    verify: Verify = Verify.CHECKSUM
    preserve: Preserve = Preserve()
    concurrency: Concurrency = Concurrency()
    rate_limit: RateLimit = RateLimit()
    report: Report | None = None
    # Fields the operator acts on; `ferry run` accepts them and uses none but dryRun.
    parallelism: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
    target: Target | None = None
    resources: Resources = Resources()
    dry_run: StrictBool = False
    suspend: StrictBool = False
    ttl_seconds_after_finished: Annotated[StrictInt, Field(ge=0, le=31_536_000)] | None = None
    shard_size: ShardSize = ShardSize()
    #: A ServiceAccount of the CopyJob's namespace for its worker pods, carrying a cloud identity
    #: (workload identity). Only where the platform allows it, and only for locations without
    #: credentialsSecret; `ferry run` ignores it.
    service_account_name: ServiceAccountName | None = None

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
