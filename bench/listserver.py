"""A listing-only S3 endpoint for the listing benchmark: ListObjects pages in constant time, on 127.0.0.1.

Why it exists: versitygw's posix backend reads and sorts the whole directory a page starts in, so on a
2-core machine its CPU, not the network, bounds every lister (bench/README.md, "Listing"). A real S3
service answers a page in about the same time whatever the bucket's size. This server holds one
layout's keys (bench/listkeys.py, generated in memory, nothing on disk) in a sorted list and answers
ListObjectsV2 and ListObjects (v1) with Prefix, Delimiter, StartAfter / ContinuationToken / Marker and
MaxKeys by binary search, so a page costs O(page size x log keys) and the proxy's latency is what the
listers wait for. It is not an S3 server: it does not check signatures, and anything other than a
listing, HeadBucket or GetBucketLocation gets 501 NotImplemented.

Command line (the benchmark starts it)::

    python bench/listserver.py --layout tree --keys 1000000

prints `listening http://127.0.0.1:PORT` once ready and serves until SIGTERM/SIGINT.
Buckets: `list-<layout>-<keys>` (the keys) and `list-dst` (empty).
"""

from __future__ import annotations

import argparse
import bisect
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import listkeys

_TOP = "\U0010ffff"  # sorts after every character a key can hold
_MAX_QUERY = 4096  # a listing query is a few hundred bytes
_LAST_MODIFIED = "2024-01-01T00:00:00.000Z"


class Index:
    """The sorted keys of one bucket and the pages of its listings."""

    def __init__(self, layout: str, count: int) -> None:
        self.names: list[str] = []
        self.sizes: list[int] = []
        for key in listkeys.keys(layout, count):
            self.names.append(key.name)
            self.sizes.append(key.size)
        self.etags = {size: listkeys.zero_md5(size) for size in set(self.sizes)}

    def page(
        self, prefix: str, delimiter: str, marker: str, max_keys: int
    ) -> tuple[list[int], list[str], bool, str]:
        """(indexes of keys, common prefixes, truncated, last entry returned) after `marker`, as S3 pages."""
        names = self.names
        i = bisect.bisect_right(names, marker) if marker else 0
        i = max(i, bisect.bisect_left(names, prefix))
        keys: list[int] = []
        prefixes: list[str] = []
        last = ""
        while i < len(names) and len(keys) + len(prefixes) < max_keys:
            name = names[i]
            if not name.startswith(prefix):
                break
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = name[: cut + len(delimiter)]
                if common > marker:
                    prefixes.append(common)
                    last = common
                i = bisect.bisect_right(names, common + _TOP, lo=i)
                continue
            keys.append(i)
            last = name
            i += 1
        more = i < len(names) and names[i].startswith(prefix)
        return keys, prefixes, more, last


class _Server(ThreadingHTTPServer):
    # socketserver's backlog is 5: a parallel lister opening dozens of connections at once would see
    # SYNs dropped and retried a second later, a delay no S3 service adds.
    request_queue_size = 256
    daemon_threads = True


def _xml_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
    ).encode()


def listing_xml(index: Index, bucket: str, query: dict[str, str]) -> bytes:
    """The ListBucketResult body for one request's query (v2 with list-type=2, else v1)."""
    v2 = query.get("list-type") == "2"
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    try:
        max_keys = min(1000, max(0, int(query.get("max-keys", "1000"))))
    except ValueError:
        max_keys = 1000
    url = query.get("encoding-type") == "url"
    if v2:
        start_after = query.get("start-after", "")
        marker = max(start_after, query.get("continuation-token", ""))
    else:
        marker = query.get("marker", "")
    keys, prefixes, more, last = (
        index.page(prefix, delimiter, marker, max_keys) if max_keys else ([], [], False, "")
    )

    def enc(text: str) -> str:
        return escape(urllib.parse.quote(text, safe="/-_.~") if url else text)

    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    ]
    parts.append(f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>")
    if v2:
        parts.append(f"<KeyCount>{len(keys) + len(prefixes)}</KeyCount>")
        if "continuation-token" in query:
            parts.append(f"<ContinuationToken>{escape(query['continuation-token'])}</ContinuationToken>")
        if "start-after" in query:
            parts.append(f"<StartAfter>{enc(query['start-after'])}</StartAfter>")
        if more:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
    else:
        parts.append(f"<Marker>{enc(marker)}</Marker>")
        if more:
            parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
    names, sizes, etags = index.names, index.sizes, index.etags
    for i in keys:
        size = sizes[i]
        parts.append(
            f"<Contents><Key>{enc(names[i])}</Key><LastModified>{_LAST_MODIFIED}</LastModified>"
            f"<ETag>&quot;{etags[size]}&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
    for p in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def make_handler(buckets: dict[str, Index]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 services and versitygw --keep-alive do

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: a million-key listing is thousands of requests

        def _send(self, status: int, body: bytes, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _target(self) -> tuple[str, str, dict[str, str]] | None:
            if len(self.path) > _MAX_QUERY:
                self._send(400, _xml_error("InvalidRequest", "request target too long"))
                return None
            split = urllib.parse.urlsplit(self.path)
            bucket, _, key = urllib.parse.unquote(split.path).lstrip("/").partition("/")
            query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            return bucket, key, query

        def _drain(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= 1 << 20:
                self.rfile.read(length)
            elif length:
                self.close_connection = True

        def do_GET(self) -> None:
            self._drain()
            target = self._target()
            if target is None:
                return
            bucket, key, query = target
            index = buckets.get(bucket)
            if index is None:
                self._send(404, _xml_error("NoSuchBucket", "The specified bucket does not exist"))
            elif key:
                self._send(501, _xml_error("NotImplemented", "this server only lists"))
            elif "location" in query:
                self._send(200, b'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint/>')
            elif set(query) - {
                "list-type",
                "prefix",
                "delimiter",
                "max-keys",
                "encoding-type",
                "start-after",
                "continuation-token",
                "marker",
                "fetch-owner",
            }:
                self._send(501, _xml_error("NotImplemented", "this server only lists"))
            else:
                self._send(200, listing_xml(index, bucket, query))

        def do_HEAD(self) -> None:
            self._drain()
            target = self._target()
            if target is None:
                return
            bucket, key, _ = target
            found = bucket in buckets and not key
            self._send(200 if found else 404, b"", head=True)

        def _refuse(self) -> None:
            self._drain()
            self._send(501, _xml_error("NotImplemented", "this server only lists"))

        def do_PUT(self) -> None:
            self._refuse()

        def do_POST(self) -> None:
            self._refuse()

        def do_DELETE(self) -> None:
            self._refuse()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="listserver", description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=listkeys.LAYOUTS, required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.keys <= 10_000_000:
        parser.error("--keys must be between 1 and 10,000,000")
    buckets = {f"list-{args.layout}-{args.keys}": Index(args.layout, args.keys), "list-dst": Index("flat", 0)}
    server = _Server(("127.0.0.1", args.port), make_handler(buckets))
    server.daemon_threads = True
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="listserver", daemon=True)
    thread.start()
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
