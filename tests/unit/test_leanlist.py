"""The lean ListObjectsV2 reader (worker/leanlist.py): pages read as boto3 reads them, keys decoded only
when the service says it encoded them."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime

import pytest

from ferry.worker.leanlist import _parse

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def page(
    keys: list[str], *, encoding: str | None, prefixes: tuple[str, ...] = (), truncated: bool = False
) -> bytes:
    entries = "".join(
        f"<Contents><Key>{key}</Key><LastModified>2026-11-29T12:00:00.000Z</LastModified>"
        f"<ETag>&quot;abc&quot;</ETag><Size>{7 + i}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for i, key in enumerate(keys)
    )
    common = "".join(f"<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>" for p in prefixes)
    head = f"<EncodingType>{encoding}</EncodingType>" if encoding else ""
    token = "<NextContinuationToken>t1</NextContinuationToken>" if truncated else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {NS}><Name>b</Name>{head}'
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{token}{entries}{common}</ListBucketResult>"
    ).encode()


@pytest.mark.parametrize(
    ("written", "encoding", "read"),
    [
        ("a%2Bb+c", "url", "a+b c"),  # encoded by the service: decoded, as boto3 does
        ("a%2Bb+c", None, "a%2Bb+c"),  # a service that ignored encoding-type: the key as it is
        ("caf%C3%A9/%E2%9C%93", "url", "café/✓"),
        ("x &amp; y &lt;z&gt;", None, "x & y <z>"),
        ("\u00fc\U0001f600", None, "\u00fc\U0001f600"),
    ],
)
def test_keys_are_decoded_only_when_the_service_encoded_them(
    written: str, encoding: str | None, read: str
) -> None:
    parsed = _parse(page([written], encoding=encoding, prefixes=(written + "/",)))
    assert parsed["Contents"][0]["Key"] == read
    assert parsed["CommonPrefixes"] == [{"Prefix": read + "/"}]


def test_a_page_reads_in_boto3_s_shape() -> None:
    parsed = _parse(page(["k1", "k2"], encoding="url", truncated=True))
    assert parsed["IsTruncated"] is True and parsed["NextContinuationToken"] == "t1"
    first = parsed["Contents"][0]
    assert first == {
        "Key": "k1",
        "Size": 7,
        "ETag": '"abc"',
        "LastModified": datetime(2026, 11, 29, 12, tzinfo=UTC),
    }
    assert "CommonPrefixes" not in _parse(page([], encoding=None))


@pytest.mark.parametrize("body", [b"", b"<ListBucketResult>", b"not xml at all", b"<a><b></a>"])
def test_an_answer_that_is_not_xml_is_refused_not_read_as_an_empty_page(body: bytes) -> None:
    with pytest.raises(ElementTree.ParseError):
        _parse(body)
