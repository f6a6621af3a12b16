"""What the model admits, the operator can run (ferry/model/copyjob.py; the CRD carries the same rules).

Endpoints and regions are accepted exactly when botocore accepts them (checked against botocore's own
validators, with the two deliberate differences named), names fit a label value, the filter's patterns
fit the plan ConfigMap, and source/destination overlap is found however the endpoints are spelled.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import InvalidRegionError
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url, validate_region_name
from pydantic import ValidationError

from ferry.model.copyjob import (
    AWS,
    MAX_FILTER_CHARACTERS,
    MAX_NAME_LENGTH,
    CopyJobSpec,
    copyjob_name_problem,
    parse_copyjob,
    storage_service,
)
from ferry.operator.render import shards_budget
from support.spellings import SPELLINGS


def spec(**extra: Any) -> dict[str, Any]:
    return {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}, **extra}


def accepts_endpoint(endpoint: str) -> bool:
    try:
        CopyJobSpec.model_validate(spec(source={"bucket": "src-bucket", "endpoint": endpoint}))
    except ValidationError:
        return False
    return True


def botocore_accepts_endpoint(endpoint: str) -> bool:
    try:
        return bool(is_valid_endpoint_url(endpoint)) or bool(is_valid_ipv6_endpoint_url(endpoint))
    except ValueError:  # urlsplit refuses a bracketed host that is no IP address
        return False


ENDPOINTS = [
    "https://s3.example.com",
    "http://127.0.0.1:9000",
    "https://s3.eu-west-1.amazonaws.com",
    "https://x",
    "https://S3.Example.COM:443/",
    "https://[::1]:9000",
    "https://[2001:db8::1]",
    "http://my_host:9000",  # botocore: '_' is no host character
    "https://-lead.example.com",
    "https://trail-.example.com",
    "https://" + "a" * 64 + ".example.com",  # a label of 64
    "https://" + "a." * 127 + "bc",  # 256 characters of host
    "https://[::g]",
    "https://[1::2::3]",
    "https://exa mple.com",
    "https://example.com\n",
]
#: Accepted by botocore, refused by Ferry on purpose: a trailing '.' (one spelling per host keeps the
#: overlap check exact), and ports no connection can use; also user names and passwords in the URL.
STRICTER = [
    "https://example.com.",
    "https://example.com:0",
    "https://example.com:65536",
    "https://u:p@example.com",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_endpoint_is_accepted_exactly_when_botocore_accepts_it(endpoint: str) -> None:
    assert accepts_endpoint(endpoint) == botocore_accepts_endpoint(endpoint)


@pytest.mark.parametrize("endpoint", STRICTER)
def test_endpoints_refused_on_purpose(endpoint: str) -> None:
    assert botocore_accepts_endpoint(endpoint) and not accepts_endpoint(endpoint)


def test_an_endpoint_with_credentials_says_where_they_belong() -> None:
    with pytest.raises(ValidationError, match="credentialsSecret"):
        CopyJobSpec.model_validate(
            spec(source={"bucket": "src-bucket", "endpoint": "https://u:p@s3.example"})
        )


REGIONS = [
    "eu-west-1",
    "us-gov-west-1",
    "EU-WEST-1",
    "a",
    "a" * 63,
    "eu_west_1",
    "123",
    "-eu",
    "eu-",
    "a" * 64,
    "eu west",
]


@pytest.mark.parametrize("region", REGIONS)
def test_a_region_is_accepted_exactly_when_botocore_accepts_it(region: str) -> None:
    try:
        validate_region_name(region)
        botocore_ok = True
    except InvalidRegionError:
        botocore_ok = False
    try:
        CopyJobSpec.model_validate(spec(destination={"bucket": "dst-bucket", "region": region}))
        ok = True
    except ValidationError:
        ok = False
    assert ok == botocore_ok


def test_a_refused_region_says_what_to_write() -> None:
    with pytest.raises(ValidationError, match="eu-west-1"):
        CopyJobSpec.model_validate(spec(source={"bucket": "src-bucket", "region": "eu_west_1"}))


@pytest.mark.parametrize(
    ("name", "ok"),
    [("a", True), ("x" * MAX_NAME_LENGTH, True), ("x" * (MAX_NAME_LENGTH + 1), False), ("a.b" * 30, False)],
    ids=["short", "63", "64", "dotted-90"],
)
def test_names_fit_a_label_value(name: str, ok: bool) -> None:
    assert (copyjob_name_problem(name) is None) == ok
    body = {"apiVersion": "ferry.dev/v1alpha1", "kind": "CopyJob", "metadata": {"name": name}, "spec": spec()}
    if ok:
        parse_copyjob(body)
    else:
        with pytest.raises(ValidationError, match="at most 63"):
            parse_copyjob(body)


@pytest.mark.parametrize(
    ("include", "exclude", "ok"),
    [
        ([], [], True),
        (["x" * 1024] * 8, ["y" * 1024] * 8, True),
        (["x" * 1024] * 8, ["y" * 1024] * 8 + ["z"], False),
        (["*.parquet"] * 1000, [], True),
        (["é" * 1024] * 17, [], False),  # characters, not bytes, as the CRD's size() counts them
    ],
    ids=["none", "at-the-limit", "one-over", "many-short", "unicode-over"],
)
def test_filter_patterns_fit_the_plan(include: list[str], exclude: list[str], ok: bool) -> None:
    assert sum(map(len, include + exclude)) <= MAX_FILTER_CHARACTERS or not ok
    raw = spec(filter={"include": include, "exclude": exclude})
    if ok:
        CopyJobSpec.model_validate(raw)
    else:
        with pytest.raises(ValidationError, match="plan ConfigMap"):
            CopyJobSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("filter_", "match"),
    [
        ({"include": ["*.csv"] * 1001}, "at most 1000 items"),
        ({"exclude": ["tmp/*"] * 1001}, "at most 1000 items"),
        ({"include": ["x" * 1025]}, "more than 1024"),
    ],
    ids=["too-many-includes", "too-many-excludes", "pattern-too-long"],
)
def test_filter_globs_are_bounded_in_count_and_length(filter_: dict[str, Any], match: str) -> None:
    """The CRD's maxItems and maxLength, in the model too: every listed key meets every pattern."""
    with pytest.raises(ValidationError, match=match):
        CopyJobSpec.model_validate(spec(filter=filter_))


@pytest.mark.parametrize(
    ("name", "ok"), [("copier", True), ("team.copier-1", True), ("Copier", False), ("", False)]
)
def test_service_account_name(name: str, ok: bool) -> None:
    if ok:
        assert CopyJobSpec.model_validate(spec(serviceAccountName=name)).service_account_name == name
    else:
        with pytest.raises(ValidationError, match="serviceAccountName"):
            CopyJobSpec.model_validate(spec(serviceAccountName=name))


@pytest.mark.parametrize(
    ("a", "b", "same"), [s[1:] for s in SPELLINGS], ids=[s[0] for s in SPELLINGS]
)  # fmt: skip
def test_storage_service_normalizes_spellings(a: str | None, b: str | None, same: bool) -> None:
    assert (storage_service(a) == storage_service(b)) == same


def test_storage_service_values() -> None:
    assert storage_service(None) == storage_service("https://s3.amazonaws.com") == AWS
    assert storage_service("HTTPS://Minio.Local:9000/") == "minio.local:9000"
    assert storage_service("http://minio.local:80") == storage_service("https://minio.local") == "minio.local"


@pytest.mark.parametrize(
    ("a", "b", "same"), [s[1:] for s in SPELLINGS], ids=[s[0] for s in SPELLINGS]
)  # fmt: skip
def test_overlap_is_refused_however_the_endpoint_is_spelled(a: str | None, b: str | None, same: bool) -> None:
    source = {"bucket": "one-bucket", "prefix": "data/", **({"endpoint": a} if a else {})}
    destination = {"bucket": "one-bucket", "prefix": "data/copy/", **({"endpoint": b} if b else {})}
    if same:
        with pytest.raises(ValidationError, match="overlap"):
            CopyJobSpec.model_validate(spec(source=source, destination=destination))
    else:
        CopyJobSpec.model_validate(spec(source=source, destination=destination))


def test_the_largest_spec_admitted_leaves_its_plan_room_for_shards() -> None:
    """Every field at its longest, in the characters that escape to the most JSON: the plan ConfigMap
    still has room for the shard boundaries (operator/render.py), so no admitted spec fails there."""
    rocket = "\U0001f680"  # 4 bytes of UTF-8, 12 of escaped JSON
    host = "https://" + ".".join(["a" * 63] * 3) + ".example.com:65535"
    location = {"prefix": rocket * 256, "endpoint": host, "region": "r" * 63, "credentialsSecret": "s" * 253}
    worst = CopyJobSpec.model_validate(
        {
            "source": {"bucket": "a" * 63, **location},
            "destination": {
                "bucket": "b" * 63,
                **location,
                "prefix": "other/" + rocket * 250,
                "serverSideEncryption": {"type": "aws:kms", "kmsKeyId": rocket * 2048},
            },
            "report": {"bucket": "c" * 63, **location},
            "filter": {"include": [rocket * 1024] * 8, "exclude": ["\x01" * 1024] * 8},
            "serviceAccountName": "s" * 253,
        }
    )
    assert shards_budget(worst) >= 700 * 1024
