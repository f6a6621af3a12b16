"""The lean ListObjectsV2 reader (worker/leanlist.py): pages read as boto3 reads them, keys decoded only
when the service says it encoded them."""

from __future__ import annotations

import re
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
        # Unescaped once only: a key that holds the text "&lt;" stays so.
        ("a&amp;lt;b", None, "a&lt;b"),
        ("a&amp;lt;b%2B", "url", "a&lt;b+"),
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


@pytest.mark.parametrize(
    "body",
    [
        # Entries with their fields in another order, as some services write them.
        re.sub(
            rb"<Key>([^<]*)</Key>(.*?)<Size>([0-9]+)</Size>",
            rb"<Size>\3</Size>\2<Key>\1</Key>",
            page(["b1", "b2%2B"], encoding="url"),
        ),
        # Checksum fields between ETag and Size, as S3 writes them for objects uploaded with one.
        page(["k1", "k2"], encoding="url").replace(
            b"</ETag><Size>",
            b"</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType><Size>",
        ),
        # One entry in another order among entries in S3's: every entry is still read.
        re.sub(
            rb"<Key>([^<]*)</Key>(.*?)<Size>([0-9]+)</Size>",
            rb"<Size>\3</Size>\2<Key>\1</Key>",
            page(["m1", "m2", "m3"], encoding=None),
            count=1,
        ),
        # A comment, a CDATA section and an attribute: valid XML the regular expressions leave to the parser.
        page(["c1"], encoding=None).replace(b"<Contents>", b"<!-- x --><Contents>"),
        page(["c1"], encoding=None).replace(b"<Key>c1</Key>", b"<Key><![CDATA[c1]]></Key>"),
        page(["c1"], encoding=None).replace(b"<Contents>", b'<Contents id="1">'),
        # Whitespace between elements, as pretty-printing services write it.
        page(["d1", "d2"], encoding="url", prefixes=("p/",)).replace(b"><", b">\n  <"),
    ],
)
def test_any_layout_of_a_valid_page_reads_as_the_xml_parser_reads_it(body: bytes) -> None:
    from ferry.worker.leanlist import _parse_tree

    assert _parse(body) == _parse_tree(body)


def test_a_page_whose_entries_do_not_line_up_is_left_to_the_xml_parser() -> None:
    from ferry.worker.leanlist import _parse_plain

    body = page(["e1", "e2"], encoding=None).replace(b"<Size>8</Size>", b"", 1)
    assert _parse_plain(body) is None
