"""SSE-C, server-side encryption with customer-provided keys (`source.sseCustomerKey`,
`destination.sseCustomerKey`): the key values and the request arguments that carry them. Pure.

A key comes from a Secret: `ferry run` finds it in its input file (credentials.py), a worker pod in an
environment variable the operator set from the Secret without reading it (render.py). It is checked once
here, then travels as a `CustomerKey`, whose repr never shows it. The copier adds `read_args` to every
request that reads the source (GET, HEAD), `write_args` to every write of the destination (PUT,
CreateMultipartUpload, UploadPart, CopyObject, UploadPartCopy) and `copy_source_args` to every
server-side copy of an SSE-C source; the lean transport turns the same arguments into the same headers
(`headers`), so both transports send the same request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.errors import InvalidSpec

ALGORITHM = "AES256"
KEY_BYTES = 32
#: The longest value read as a key: 32 bytes are 44 characters of base64; some room for line ends.
MAX_KEY_TEXT = 128

#: Request arguments (boto3's names) that hold a key, and the header prefix of each.
_KEY_ARGUMENTS = {
    "SSECustomerKey": "x-amz-server-side-encryption-customer-",
    "CopySourceSSECustomerKey": "x-amz-copy-source-server-side-encryption-customer-",
}
_ALGORITHM_ARGUMENTS = {
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "CopySourceSSECustomerAlgorithm": "x-amz-copy-source-server-side-encryption-customer-algorithm",
}
ARGUMENTS = frozenset(_KEY_ARGUMENTS) | frozenset(_ALGORITHM_ARGUMENTS)

#: A worker pod's environment variables holding the keys, set by the operator from the Secrets the spec
#: names (`render.render_job`) without reading them.
SSE_CUSTOMER_KEY_ENV = {
    "source": "FERRY_SOURCE_SSE_CUSTOMER_KEY",
    "destination": "FERRY_DESTINATION_SSE_CUSTOMER_KEY",
}


@dataclass(frozen=True)
class CustomerKey:
    """A 256-bit SSE-C key. The repr never shows it."""

    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "CustomerKey(****)"

    @property
    def md5(self) -> str:
        """The key's MD5 as S3 wants it beside the key (base64)."""
        return base64.b64encode(hashlib.md5(self.key).digest()).decode()


@dataclass(frozen=True)
class CustomerKeys:
    """The SSE-C keys of a job's two sides; None where a side has none."""

    source: CustomerKey | None = None
    destination: CustomerKey | None = None


def parse_key(text: str, where: str) -> CustomerKey:
    """The key ``text`` holds (base64 of 32 bytes). Raises `InvalidSpec` naming ``where`` (the field and
    the Secret), never the value."""
    stripped = text.strip() if len(text) <= MAX_KEY_TEXT else ""
    try:
        key = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise InvalidSpec(
            f"{where} is not an SSE-C key: it must be {KEY_BYTES} bytes, base64-encoded (44 characters, "
            "e.g. the output of `openssl rand -base64 32`)"
        )
    return CustomerKey(key)


def read_args(key: CustomerKey | None) -> dict[str, Any]:
    """The arguments of a GET or HEAD of an object encrypted with ``key``."""
    if key is None:
        return {}
    return {"SSECustomerAlgorithm": ALGORITHM, "SSECustomerKey": key.key}


def write_args(key: CustomerKey | None) -> dict[str, Any]:
    """The arguments of a write that encrypts with ``key`` (the same names as a read's)."""
    return read_args(key)


def copy_source_args(key: CustomerKey | None) -> dict[str, Any]:
    """The arguments of a CopyObject or UploadPartCopy whose source is encrypted with ``key``."""
    if key is None:
        return {}
    return {"CopySourceSSECustomerAlgorithm": ALGORITHM, "CopySourceSSECustomerKey": key.key}


def headers(args: Mapping[str, Any]) -> dict[str, str]:
    """The HTTP headers of the SSE-C arguments among ``args``, as botocore sends them: the algorithm,
    the key in base64 and the key's MD5."""
    result: dict[str, str] = {}
    for name, value in args.items():
        if name in _ALGORITHM_ARGUMENTS:
            result[_ALGORITHM_ARGUMENTS[name]] = str(value)
        elif name in _KEY_ARGUMENTS:
            key = CustomerKey(value if isinstance(value, bytes) else str(value).encode())
            prefix = _KEY_ARGUMENTS[name]
            result[prefix + "key"] = base64.b64encode(key.key).decode()
            result[prefix + "key-md5"] = key.md5
    return result


#: What S3 answers a request whose SSE-C key does not fit the object: 403 for another key, 400 for a key
#: missing or given for an object stored without one (HEAD answers carry no body: the bare statuses).
REFUSAL_CODES = frozenset(
    {"AccessDenied", "Forbidden", "403", "InvalidRequest", "InvalidArgument", "BadRequest", "400"}
)
#: Requests (`progress.Operation` values) that send the source's key, and those that send the destination's.
_READS_SOURCE = frozenset({"GET", "HEAD", "COPY", "UPLOAD_PART_COPY"})
_WRITES_DESTINATION = frozenset(
    {"PUT", "COPY", "CREATE_MULTIPART", "UPLOAD_PART", "UPLOAD_PART_COPY", "COMPLETE_MULTIPART"}
)


def refusal_hint(operation: str | None, code: str, keys: CustomerKeys) -> str:
    """What to add to the message of a request that gave up with ``code``, when it sent an SSE-C key
    and the answer is the one S3 gives a key that does not fit: the field(s) of the key(s) it sent, so a
    failure names the side to fix. Empty otherwise. Never the key."""
    if code not in REFUSAL_CODES or operation is None:
        return ""
    fields = []
    if operation in _READS_SOURCE and keys.source is not None:
        fields.append("spec.source.sseCustomerKey")
    if operation in _WRITES_DESTINATION and keys.destination is not None:
        fields.append("spec.destination.sseCustomerKey")
    if not fields:
        return ""
    return (
        f" (the request sent the SSE-C key of {' and '.join(fields)}: an object stored with another key, "
        "or without one, is refused so)"
    )
