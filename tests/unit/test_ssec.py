"""SSE-C keys (worker/ssec.py, worker/credentials.py) and the worker env the operator renders for them
(operator/render.py): table-driven, pure. The headers are checked against botocore's own computation."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from botocore.handlers import copy_source_sse_md5, sse_md5
from pydantic import ValidationError

from ferry.errors import InvalidSpec
from ferry.model import CopyJobSpec
from ferry.model.loading import SecretData
from ferry.operator.render import customer_key_env
from ferry.worker import credentials, ssec

KEY = bytes(range(32))
KEY_TEXT = base64.b64encode(KEY).decode()


def _spec(source: dict[str, Any] | None = None, destination: dict[str, Any] | None = None) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {
            "source": {"bucket": "src-bucket", **(source or {})},
            "destination": {"bucket": "dst-bucket", **(destination or {})},
        },
        by_alias=True,
        by_name=False,
    )


@pytest.mark.parametrize(
    "text",
    [
        KEY_TEXT,
        KEY_TEXT + "\n",  # as `openssl rand -base64 32 > key` writes it
        f"  {KEY_TEXT}  ",
    ],
)
def test_a_base64_key_of_32_bytes_is_read(text: str) -> None:
    assert ssec.parse_key(text, "spec.source.sseCustomerKey").key == KEY


@pytest.mark.parametrize(
    "text",
    [
        "",
        base64.b64encode(bytes(16)).decode(),  # AES-128: S3 wants 256 bits
        base64.b64encode(bytes(33)).decode(),
        KEY.hex(),  # hex, not base64
        KEY_TEXT[:-1] + "!",
        "A" * 1000,
        KEY_TEXT + "\r\nx-amz-acl: public-read",
    ],
)
def test_anything_else_is_refused_naming_the_field_never_the_value(text: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        ssec.parse_key(text, "spec.destination.sseCustomerKey (Secret 'keys')")
    message = str(refused.value)
    assert "spec.destination.sseCustomerKey" in message and "32 bytes" in message
    assert not text or text.strip() not in message


def test_a_key_never_shows_in_its_repr() -> None:
    keys = ssec.CustomerKeys(source=ssec.CustomerKey(KEY), destination=ssec.CustomerKey(KEY))
    for text in (repr(keys), str(keys), repr(keys.source)):
        assert KEY_TEXT not in text and KEY.hex() not in text and repr(KEY) not in text


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (ssec.read_args(ssec.CustomerKey(KEY)), "x-amz-server-side-encryption-customer-"),
        (ssec.write_args(ssec.CustomerKey(KEY)), "x-amz-server-side-encryption-customer-"),
        (ssec.copy_source_args(ssec.CustomerKey(KEY)), "x-amz-copy-source-server-side-encryption-customer-"),
    ],
)
def test_the_lean_transport_s_headers_are_botocore_s(args: dict[str, Any], prefix: str) -> None:
    headers = ssec.headers(args)
    botocore_params = dict(args)
    copy = prefix.startswith("x-amz-copy-source")
    # botocore's own handlers: the key in base64 and its MD5, as botocore sends them.
    (copy_source_sse_md5 if copy else sse_md5)(botocore_params)
    stem = "CopySourceSSECustomer" if copy else "SSECustomer"
    assert headers == {
        prefix + "algorithm": "AES256",
        prefix + "key": botocore_params[f"{stem}Key"],
        prefix + "key-md5": botocore_params[f"{stem}KeyMD5"],
    }


def test_no_key_no_arguments() -> None:
    assert ssec.read_args(None) == ssec.write_args(None) == ssec.copy_source_args(None) == {}
    assert ssec.headers({}) == {}


REF = {"sseCustomerKey": {"name": "keys", "key": "source.key"}}
DREF = {"sseCustomerKey": {"name": "dkeys", "key": "k"}}


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({}, "spec.source.sseCustomerKey names Secret 'keys', which is not in the file"),
        ({"keys": {"other": KEY_TEXT}}, "Secret 'keys' has no key 'source.key'"),
        (
            {"keys": {"source.key": "not a key"}},
            "spec.source.sseCustomerKey (Secret 'keys', key 'source.key')",
        ),
    ],
)
def test_ferry_run_names_what_is_wrong_with_a_key(secrets: dict[str, dict[str, str]], message: str) -> None:
    found = {name: SecretData(name=name, values=values) for name, values in secrets.items()}
    with pytest.raises(InvalidSpec, match=message.replace("(", r"\(").replace(")", r"\)")):
        credentials.customer_keys(_spec(REF), found)


def test_ferry_run_reads_both_keys_from_the_file() -> None:
    other = os.urandom(32)
    found = {
        "keys": SecretData(name="keys", values={"source.key": KEY_TEXT}),
        "dkeys": SecretData(name="dkeys", values={"k": base64.b64encode(other).decode()}),
    }
    keys = credentials.customer_keys(_spec(REF, DREF), found)
    assert keys.source is not None and keys.source.key == KEY
    assert keys.destination is not None and keys.destination.key == other
    assert credentials.customer_keys(_spec(), {}) == ssec.CustomerKeys()


def test_the_operator_hands_the_secrets_to_the_pod_without_reading_them() -> None:
    env = customer_key_env(_spec(REF, DREF))
    assert env == [
        {
            "name": "FERRY_SOURCE_SSE_CUSTOMER_KEY",
            "valueFrom": {"secretKeyRef": {"name": "keys", "key": "source.key", "optional": False}},
        },
        {
            "name": "FERRY_DESTINATION_SSE_CUSTOMER_KEY",
            "valueFrom": {"secretKeyRef": {"name": "dkeys", "key": "k", "optional": False}},
        },
    ]
    assert customer_key_env(_spec()) == []


def test_the_worker_pod_reads_the_keys_the_operator_handed_it() -> None:
    spec = _spec(REF, DREF)
    env = {item["name"]: KEY_TEXT for item in customer_key_env(spec)}
    keys = credentials.customer_keys_from_env(spec, env)
    assert keys.source is not None and keys.destination is not None
    with pytest.raises(InvalidSpec, match=r"spec\.destination\.sseCustomerKey"):
        credentials.customer_keys_from_env(spec, {"FERRY_SOURCE_SSE_CUSTOMER_KEY": KEY_TEXT})


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ({**DREF, "serverSideEncryption": {"type": "aws:kms"}}, "set either sseCustomerKey"),
        ({**DREF, "serverSideEncryption": {"type": "AES256"}}, "set either sseCustomerKey"),
        ({"sseCustomerKey": {"name": "dkeys"}}, "key"),
        ({"sseCustomerKey": {"name": "dkeys", "key": "a/b"}}, "Secret key"),
        ({"sseCustomerKey": {"name": "Not_A_Name", "key": "k"}}, "Secret name"),
    ],
)
def test_contradictory_or_malformed_key_references_are_refused(
    destination: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(destination=destination)


BOTH = ssec.CustomerKeys(ssec.CustomerKey(KEY), ssec.CustomerKey(KEY))
SOURCE_ONLY = ssec.CustomerKeys(source=ssec.CustomerKey(KEY))


@pytest.mark.parametrize(
    ("operation", "code", "keys", "fields"),
    [
        ("GET", "AccessDenied", BOTH, ["spec.source.sseCustomerKey"]),
        ("HEAD", "403", BOTH, ["spec.source.sseCustomerKey"]),
        ("PUT", "InvalidRequest", BOTH, ["spec.destination.sseCustomerKey"]),
        ("UPLOAD_PART", "400", BOTH, ["spec.destination.sseCustomerKey"]),
        ("COPY", "AccessDenied", BOTH, ["spec.source.sseCustomerKey", "spec.destination.sseCustomerKey"]),
        ("UPLOAD_PART_COPY", "InvalidArgument", SOURCE_ONLY, ["spec.source.sseCustomerKey"]),
        ("PUT", "AccessDenied", SOURCE_ONLY, []),  # no destination key sent: not the key's fault
        ("GET", "AccessDenied", ssec.CustomerKeys(), []),
        ("GET_TAGGING", "AccessDenied", BOTH, []),  # sends no key
        ("GET", "InternalError", BOTH, []),
        ("GET", "NoSuchKey", BOTH, []),
        (None, "AccessDenied", BOTH, []),
    ],
)
def test_a_refusal_names_the_key_fields_the_request_sent(
    operation: str | None, code: str, keys: ssec.CustomerKeys, fields: list[str]
) -> None:
    hint = ssec.refusal_hint(operation, code, keys)
    named = [f for f in ("spec.source.sseCustomerKey", "spec.destination.sseCustomerKey") if f in hint]
    assert named == fields
    assert KEY_TEXT not in hint
