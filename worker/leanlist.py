"""A lean ListObjectsV2 for planning: the request signed and sent by a boto3 client's own signer and
connections, the answer parsed without botocore's model-driven parser.

Where it sits: `worker/scan.py` hands the parallel listing (`worker/parallel_listing.py`) this wrapper
instead of the boto3 client. Measured on a 1,000-key page (`bench/listparse.py`), botocore spends about
56 ms of CPU parsing it (a shape lookup and a timestamp parse per field), which caps a 2-core planner
near 35 pages/s whatever the number of listers; this reader takes about 1.7 ms as planning reads pages
(keys and sizes; an object's ETag and time decoded only when asked for). Everything else stays botocore's:
credentials, SigV4, addressing, timeouts, and the connection pools, so the endpoint policy's checked
connections (`operator.netguard.guard_client`) apply to these requests too. Errors surface as botocore's
ClientError with the service's code (the same classification as every other call), and the answer is
returned as a `Page` of columns (`list_page`; `Page.from_boto` reads boto3's own answers the same way),
or in the shape boto3 returns (`list_objects_v2`).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp

from ferry.worker.objects import ObjectInfo

#: boto3's parameter names -> the query parameters of ListObjectsV2.
_QUERY = {
    "Prefix": "prefix",
    "Delimiter": "delimiter",
    "MaxKeys": "max-keys",
    "StartAfter": "start-after",
    "ContinuationToken": "continuation-token",
}


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        parsed: datetime = parse_timestamp(text)
        return parsed


class LeanListing:
    """ListObjectsV2 on the client's bucket endpoint; `list_objects_v2` takes boto3's arguments."""

    def __init__(self, client: Any, storage_classes: bool = False) -> None:
        self._client = client
        #: Read each object's StorageClass too (spec.archived asks for it; planning does not).
        self._storage_classes = storage_classes
        self._signer = client._request_signer
        self._session = client._endpoint.http_session
        endpoint = urlsplit(client.meta.endpoint_url)
        self._scheme, self._host = endpoint.scheme, endpoint.netloc
        style = (client.meta.config.s3 or {}).get("addressing_style", "auto")
        self._virtual = style == "virtual" or (style == "auto" and self._host.startswith("s3."))

    @property
    def meta(self) -> Any:
        return self._client.meta

    def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        return self.list_page(**params).as_boto()

    def list_page(self, **params: Any) -> Page:
        """ListObjectsV2 with boto3's arguments, answered as a `Page`."""
        bucket = str(params.pop("Bucket"))
        query = {"list-type": "2", "encoding-type": "url"}
        for name, value in params.items():
            if name not in _QUERY:
                raise TypeError(f"LeanListing.list_objects_v2 does not support {name}")
            query[_QUERY[name]] = str(value)
        text = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
        if self._virtual and "." not in bucket:
            url = f"{self._scheme}://{bucket}.{self._host}/?{text}"
        else:
            url = f"{self._scheme}://{self._host}/{_encode(bucket)}?{text}"
        request = AWSRequest(method="GET", url=url, headers={})
        self._signer.sign("ListObjectsV2", request)
        response = self._session.send(request.prepare())
        body = response.content
        if response.status_code >= 300:
            raise _client_error(response.status_code, body, dict(response.headers))
        return _page(body, self._storage_classes)


def _parse(body: bytes) -> dict[str, Any]:
    """The ListBucketResult in boto3's shape (see `_page` for how it is read)."""
    return _page(body).as_boto()


def _page(body: bytes, storage_classes: bool = False) -> Page:
    """The ListBucketResult as a `Page`: read by regular expressions when the page is plainly one (a
    fifth of the XML parser's CPU on 1,000 keys, which decides how fast one planner lists), by the XML
    parser otherwise, which also refuses what is not XML at all. Storage classes are read only when
    asked for (one more scan of the page)."""
    page = _parse_plain(body, storage_classes)
    return page if page is not None else Page.from_boto(_parse_tree(body, storage_classes))


@dataclass(frozen=True, slots=True)
class Page:
    """One ListObjectsV2 page as columns: the n-th key, size, ETag and LastModified belong to the n-th
    object. Planning reads only keys and sizes, so an object's ETag and time are decoded when asked
    for (`object`): decoding them for every key cost a quarter of a planner's CPU.

    ``raw`` pages hold ETags and times as the service wrote them (entity-escaped text); others hold
    them as boto3 returns them.
    """

    keys: list[str]
    sizes: list[int]
    etags: list[str]
    modified: list[Any]
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    token: str | None = None
    raw: bool = False
    #: Each object's StorageClass, when read (None: not read).
    classes: list[str | None] | None = None

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.sizes) == len(self.etags) == len(self.modified):
            raise ValueError("a listing page whose columns differ in length")
        if self.classes is not None and len(self.classes) != len(self.keys):
            raise ValueError("a listing page whose columns differ in length")
        # A size below zero is no object's: a plan from it would be wrong, whoever wrote the page.
        if self.sizes and min(self.sizes) < 0:
            raise ValueError("a listing page with a negative size")

    def object(self, index: int) -> ObjectInfo:
        etag, modified = self.etags[index], self.modified[index]
        if self.raw:
            etag, modified = _text(etag), _time(modified)
        storage_class = self.classes[index] if self.classes is not None else None
        return ObjectInfo(
            self.keys[index], self.sizes[index], str(etag).strip('"'), modified, storage_class=storage_class
        )

    @classmethod
    def from_boto(cls, page: dict[str, Any]) -> Page:
        """A page as boto3 (or `_parse_tree`) returns it."""
        contents = page.get("Contents") or ()
        token = page.get("NextContinuationToken")
        return cls(
            keys=[str(item["Key"]) for item in contents],
            sizes=[int(item["Size"]) for item in contents],
            etags=[str(item.get("ETag", "")) for item in contents],
            modified=[item["LastModified"] for item in contents],
            prefixes=[
                str(p["Prefix"]) for p in page.get("CommonPrefixes") or () if isinstance(p.get("Prefix"), str)
            ],
            truncated=bool(page.get("IsTruncated")),
            token=token if isinstance(token, str) else None,
            classes=[_class(item.get("StorageClass")) for item in contents]
            if any("StorageClass" in item for item in contents)
            else None,
        )

    def as_boto(self) -> dict[str, Any]:
        """The page in boto3's shape (every object decoded)."""
        page: dict[str, Any] = {"IsTruncated": self.truncated}
        if self.token is not None:
            page["NextContinuationToken"] = self.token
        if self.keys:
            objects = [self.object(i) for i in range(len(self.keys))]
            page["Contents"] = [
                {"Key": o.key, "Size": o.size, "ETag": f'"{o.etag}"', "LastModified": o.last_modified}
                for o in objects
            ]
            if self.classes is not None:
                for entry, storage_class in zip(page["Contents"], self.classes, strict=True):
                    if storage_class is not None:
                        entry["StorageClass"] = storage_class
        if self.prefixes:
            page["CommonPrefixes"] = [{"Prefix": p} for p in self.prefixes]
        return page


_OPEN = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?<ListBucketResult[\s>]")
_KEY = re.compile(r"<Key>([^<]*)</Key>")
_SIZE = re.compile(r"<Size>([^<]*)</Size>")
_ETAG = re.compile(r"<ETag>([^<]*)</ETag>")
_MODIFIED = re.compile(r"<LastModified>([^<]*)</LastModified>")
_CLASS = re.compile(r"<StorageClass>([^<]*)</StorageClass>")
#: An entry as S3 writes it (Key, LastModified, ETag, checksum fields, Size, in that order): one scan of
#: the page gives all four columns, where a scan per field takes twice the CPU. Pages in any other order
#: are read field by field.
_ENTRY = re.compile(
    r"<Contents><Key>([^<]*)</Key><LastModified>([^<]*)</LastModified><ETag>([^<]*)</ETag>"
    r"(?:<Checksum(?:Algorithm|Type)>[^<]*</Checksum(?:Algorithm|Type)>)*<Size>([^<]*)</Size>"
)
#: A storage class longer than this is no S3 storage class: kept as unknown, never echoed.
MAX_CLASS_LENGTH = 32
_PREFIX = re.compile(r"<CommonPrefixes><Prefix>([^<]*)</Prefix></CommonPrefixes>")
_TRUNCATED = re.compile(r"<IsTruncated>\s*(true|false)\s*</IsTruncated>")
_TOKEN = re.compile(r"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_URL_ENCODED = re.compile(r"<EncodingType>\s*url\s*</EncodingType>")
#: What only the XML parser reads right: CDATA sections, comments (and any other "<!"), attributes.
_NOT_PLAIN = re.compile(r"<!|<Contents ")


def _text(value: str) -> str:
    if "&" not in value:
        return value
    # ETags come quoted as &quot; on every page: the common case without the general unescaping.
    value = value.replace("&quot;", '"')
    return html.unescape(value) if "&" in value else value


def _class(value: object) -> str | None:
    """A storage class as a listing wrote it, or None when it cannot be one."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CLASS_LENGTH else None


def _names(values: list[str], url_encoded: bool) -> list[str]:
    """Keys or prefixes as written in the page: entity-unescaped, then URL-decoded only when the service
    says it encoded them."""
    if url_encoded:
        return [unquote_plus(_text(v)) if "%" in v or "+" in v or "&" in v else v for v in values]
    return [_text(v) if "&" in v else v for v in values]


def _parse_plain(body: bytes, storage_classes: bool = False) -> Page | None:
    """A page as S3 services write it: each entry's fields as plain elements, one of each per entry, so
    the n-th Key, Size, ETag and LastModified belong to the n-th entry. None when the page is not
    plainly that (the counts differ, a CDATA section, a comment), for the XML parser to read."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    if _OPEN.match(text) is None or not text.rstrip().endswith("</ListBucketResult>"):
        return None
    if _NOT_PLAIN.search(text) is not None:
        return None
    entries = text.count("<Contents>")
    # Each of these scans the page once; the common page has no prefixes at all.
    rows = _ENTRY.findall(text) if entries else []
    if len(rows) == entries:
        keys, modified, etags, sizes = (
            (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [], [])
        )
    else:
        keys, sizes = _KEY.findall(text), _SIZE.findall(text)
        etags, modified = _ETAG.findall(text), _MODIFIED.findall(text)
        if not len(keys) == len(sizes) == len(etags) == len(modified) == entries:
            return None
    groups = text.count("<CommonPrefixes>")
    prefixes = _PREFIX.findall(text) if groups else []
    # One IsTruncated, read where it is rather than by a scan of the whole page.
    flag = _TRUNCATED.match(text, text.find("<IsTruncated>")) if text.count("<IsTruncated>") == 1 else None
    truncated = [flag.group(1)] if flag is not None else []
    if len(prefixes) != groups or len(truncated) != 1:
        return None
    classes: list[str | None] | None = None
    if storage_classes:
        found = _CLASS.findall(text)
        if len(found) != entries:  # some entries without one: the XML parser reads them entry by entry
            return None
        classes = [_class(value) for value in found]
    url_encoded = _URL_ENCODED.search(text) is not None
    token = _TOKEN.search(text)
    try:
        return Page(
            keys=_names(keys, url_encoded),
            sizes=list(map(int, sizes)),
            etags=etags,
            modified=modified,
            prefixes=_names(prefixes, url_encoded),
            truncated=truncated[0] == "true",
            token=_text(token.group(1)) if token is not None else None,
            raw=True,
            classes=classes,
        )
    except ValueError:
        return None


def _parse_tree(body: bytes, storage_classes: bool = False) -> dict[str, Any]:
    """The ListBucketResult in boto3's shape, by the XML parser (keys and prefixes URL-decoded when the
    service says it encoded them, as boto3 does)."""
    root = ElementTree.fromstring(body)
    url_encoded = any(_local(c.tag) == "EncodingType" and (c.text or "").strip() == "url" for c in root)
    decode = unquote_plus if url_encoded else (lambda text: text)
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, str]] = []
    page: dict[str, Any] = {"IsTruncated": False}
    for child in root:
        tag = _local(child.tag)
        if tag == "Contents":
            item: dict[str, Any] = {}
            for field in child:
                name, value = _local(field.tag), field.text or ""
                if name == "Key":
                    item["Key"] = decode(value)
                elif name == "Size":
                    item["Size"] = int(value)
                elif name == "ETag":
                    item["ETag"] = value
                elif name == "LastModified":
                    item["LastModified"] = _time(value)
                elif name == "StorageClass" and storage_classes:
                    item["StorageClass"] = value
            contents.append(item)
        elif tag == "CommonPrefixes":
            for field in child:
                if _local(field.tag) == "Prefix":
                    prefixes.append({"Prefix": decode(field.text or "")})
        elif tag == "IsTruncated":
            page["IsTruncated"] = (child.text or "").strip() == "true"
        elif tag == "NextContinuationToken":
            page["NextContinuationToken"] = child.text or ""
        elif tag == "KeyCount":
            page["KeyCount"] = int(child.text or 0)
    if contents:
        page["Contents"] = contents
    if prefixes:
        page["CommonPrefixes"] = prefixes
    return page


def _client_error(status: int, body: bytes, headers: dict[str, str]) -> ClientError:
    code, message = str(status), ""
    try:
        root = ElementTree.fromstring(body or b"<x/>")
        code = root.findtext("Code") or code
        message = root.findtext("Message") or message
    except ElementTree.ParseError:
        pass  # proxies may answer without an XML body
    parsed: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(parsed, "ListObjectsV2")
