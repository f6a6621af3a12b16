"""Listing version histories (spec.versions all): ListObjectVersions pages, grouped into one history per
key, joined by key with the destination's histories.

Where it sits: the engine (`CopyEngine._version_pairs`) lists the source and destination key ranges
with `version_pages`, groups them with `histories` and pairs them with `join_histories`; each
`HistoryPair` goes to `worker/versioncopy.py`, which copies the key's versions oldest first.

Three things the plain listing does not have to care about:
- Order. The service lists a key's versions newest first, object versions and delete markers
  interleaved; boto3 parses them into two separate lists and loses the interleaving, so a hook reads
  the order of the answer's elements before boto3's parser runs (`_record_order`).
- Memory. A key may have 100,000 versions. A history holds at most `SPILL_VERSIONS` versions in memory;
  beyond that its versions go to a private temporary file in chunks of that many, read back oldest
  first one chunk at a time (`KeyHistory.oldest_first`). So a history costs about 1 MB of memory at
  most whatever its length (tracemalloc: 1.1 MB peak for 100,000 versions with 32-character ids), and
  the disk holds the rest (16 MB for those 100,000).
- Hostile answers. Version ids and keys come from the endpoint: a version id that is empty, longer
  than `MAX_VERSION_ID` or holds characters a header cannot carry stops the listing (`ListingFailed`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from ferry.worker.listing import ListingFailed
from ferry.worker.objects import KeyRange
from ferry.worker.versions import Version

#: Versions of one history held in memory; more are spilled to a temporary file in chunks this long.
SPILL_VERSIONS = 1000
#: The most versions of one key Ferry copies: a longer history (about 160 MB of spill file at this
#: length) is counted, not kept, and its key fails as `TooManyVersions` (an endpoint cannot fill the
#: pod's disk by listing one key without end).
MAX_HISTORY_VERSIONS = 1_000_000
#: The longest version id accepted (AWS's are 32 characters; other services use longer ones).
MAX_VERSION_ID = 1024
#: What a version id may hold: printable ASCII without spaces (it travels in a query and a header).
_VERSION_ID = re.compile(rf"[!-~]{{1,{MAX_VERSION_ID}}}")
#: The key of the answer field the order hook fills in: True for a delete marker, in document order.
_ORDER = "FerryMarkerOrder"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _record_order(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's before-parse hook of ListObjectVersions: note which entries are delete markers, in the
    order the service sent them (boto3 returns `Versions` and `DeleteMarkers` as two lists)."""
    if response_dict.get("status_code") != 200:
        return
    try:
        root = ElementTree.fromstring(response_dict.get("body") or b"")
    except ElementTree.ParseError:
        return  # botocore's parser reports the unreadable answer
    customized_response_dict[_ORDER] = [
        _local(child.tag) == "DeleteMarker"
        for child in root
        if _local(child.tag) in ("Version", "DeleteMarker")
    ]


def watch_order(client: Any) -> None:
    """Make ``client``'s ListObjectVersions answers carry the interleaving of versions and markers
    (registering twice is harmless)."""
    client.meta.events.register(
        "before-parse.s3.ListObjectVersions", _record_order, unique_id="ferry-version-order"
    )


def _version_id(value: object) -> str:
    text = str(value or "")
    if not _VERSION_ID.fullmatch(text):
        raise ListingFailed(
            f"the endpoint listed a version id that is empty, longer than {MAX_VERSION_ID} characters or "
            "holds characters other than printable ASCII; Ferry does not copy such versions"
        )
    return text


#: Finds the entry the service lists right after a key's delete marker: (key, version id), or None at the end.
Successor = Callable[[str, str], tuple[str, str] | None]


def page_versions(page: dict[str, Any], successor: Successor | None = None) -> list[Version]:
    """One ListObjectVersions answer as versions in the service's order (by key, newest first).

    AWS sends a page's versions and delete markers interleaved in that order, and the order the answer
    was sent in is kept. Some servers (moto, versitygw) send all of a page's versions, then all its
    delete markers, though they page through them in the right order: when a page's entries come in two
    blocks and a key has both kinds, where each of its delete markers falls is asked of the service
    with ``successor`` (one request of one entry per marker)."""
    objects = [
        Version(
            key=str(item["Key"]),
            version_id=_version_id(item.get("VersionId")),
            delete_marker=False,
            size=int(item.get("Size", 0)),
            etag=str(item.get("ETag", "")).strip('"'),
            last_modified=item["LastModified"],
        )
        for item in page.get("Versions", ())
    ]
    markers = [
        Version(
            key=str(item["Key"]),
            version_id=_version_id(item.get("VersionId")),
            delete_marker=True,
            size=0,
            etag="",
            last_modified=item["LastModified"],
        )
        for item in page.get("DeleteMarkers", ())
    ]
    sent = page.get(_ORDER)
    order: list[bool] = [bool(kind) for kind in sent] if isinstance(sent, list) else []
    recorded = len(order) == len(objects) + len(markers) and sum(order) == len(markers)
    if recorded and (_interleaved(order) or not objects or not markers):
        pending_objects, pending_markers = iter(objects), iter(markers)
        return [next(pending_markers) if is_marker else next(pending_objects) for is_marker in order]
    return _merged(objects, markers, successor)


def _interleaved(order: list[bool]) -> bool:
    """Whether the kinds change more than once along the page: the service sent them interleaved."""
    return sum(1 for before, after in itertools.pairwise(order) if before != after) > 1


def _merged(objects: list[Version], markers: list[Version], successor: Successor | None) -> list[Version]:
    """Versions and markers sent in two blocks, merged into the service's order: keys in order, and in
    each key its markers placed before the entry the service lists after each of them."""
    by_key: dict[str, tuple[list[Version], list[Version]]] = {}
    for version in objects:
        by_key.setdefault(version.key, ([], []))[0].append(version)
    for version in markers:
        by_key.setdefault(version.key, ([], []))[1].append(version)
    merged: list[Version] = []
    for key in sorted(by_key):  # str order is the UTF-8 byte order S3 lists keys in
        versions, deletes = by_key[key]
        if not versions or not deletes:
            merged += versions or deletes
            continue
        if successor is None:
            raise ListingFailed(
                f"the endpoint listed versions and delete markers of a key separately, and their order "
                f"cannot be told apart ({len(versions) + len(deletes)} versions)"
            )
        merged += _placed(key, versions, deletes, successor)
    return merged


def _placed(key: str, versions: list[Version], deletes: list[Version], successor: Successor) -> list[Version]:
    index = {version.version_id: i for i, version in enumerate(versions)}
    marker_ids = {marker.version_id for marker in deletes}
    slots: dict[str, int] = {}
    for marker in reversed(deletes):  # a marker followed by a marker shares its slot
        after = successor(key, marker.version_id)
        if after is None or after[0] != key:
            slots[marker.version_id] = len(versions)
        elif after[1] in index:
            slots[marker.version_id] = index[after[1]]
        elif after[1] in marker_ids and after[1] in slots:
            slots[marker.version_id] = slots[after[1]]
        else:  # the next entry is on the next page: after every version of this one
            slots[marker.version_id] = len(versions)
    placed: list[Version] = []
    for i in range(len(versions) + 1):
        placed += [marker for marker in deletes if slots[marker.version_id] == i]
        if i < len(versions):
            placed.append(versions[i])
    return placed


def version_pages(
    client: Any,
    bucket: str,
    prefix: str,
    key_marker: str | None = None,
    page_size: int = 1000,
    call: Callable[[Callable[[], Any]], Any] = lambda request: request(),
) -> Iterator[list[Version]]:
    """ListObjectVersions pages of the keys after ``key_marker``; one page in memory at a time."""
    watch_order(client)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if key_marker:
        kwargs["KeyMarker"] = key_marker

    def successor(key: str, version_id: str) -> tuple[str, str] | None:
        after = call(
            lambda: client.list_object_versions(
                Bucket=bucket, Prefix=prefix, KeyMarker=key, VersionIdMarker=version_id, MaxKeys=1
            )
        )
        for entry in [*after.get("Versions", ()), *after.get("DeleteMarkers", ())]:
            return str(entry["Key"]), str(entry.get("VersionId") or "")
        return None

    while True:
        page = call(lambda: client.list_object_versions(**kwargs))
        yield page_versions(page, successor)
        if not page.get("IsTruncated"):
            return
        next_key = page.get("NextKeyMarker")
        if not next_key or (next_key, page.get("NextVersionIdMarker")) == (
            kwargs.get("KeyMarker"),
            kwargs.get("VersionIdMarker"),
        ):
            raise ListingFailed("the endpoint's ListObjectVersions answer is truncated but does not move on")
        kwargs["KeyMarker"] = next_key
        if page.get("NextVersionIdMarker"):
            kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
        else:
            kwargs.pop("VersionIdMarker", None)


def _encode(version: Version) -> list[object]:
    return [
        version.key,
        version.version_id,
        version.delete_marker,
        version.size,
        version.etag,
        version.last_modified.isoformat(),
    ]


def _decode(row: list[Any]) -> Version:
    key, version_id, marker, size, etag, modified = row
    return Version(key, version_id, bool(marker), int(size), etag, datetime.fromisoformat(modified))


@dataclass
class KeyHistory:
    """The versions of one key, received newest first, given back oldest first.

    Holds at most `SPILL_VERSIONS` versions in memory; earlier (newer) chunks are in a temporary file
    only this history reads. `close` removes it; a history is closed once its key is done."""

    key: str
    versions: int = 0
    bytes: int = 0
    largest: int = 0
    _recent: list[Version] = field(default_factory=list)
    _file: IO[str] | None = None
    _chunks: list[int] = field(default_factory=list)
    #: More than MAX_HISTORY_VERSIONS versions: counted only, none kept.
    overflowed: bool = False

    def add(self, version: Version) -> None:
        """Append the next (older) version."""
        self.versions += 1
        self.bytes += version.size
        self.largest = max(self.largest, version.size)
        if self.versions > MAX_HISTORY_VERSIONS:
            if not self.overflowed:
                self.overflowed = True
                self.close()
            return
        self._recent.append(version)
        if len(self._recent) >= SPILL_VERSIONS:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            fd, path = tempfile.mkstemp(prefix="ferry-versions-", suffix=".jsonl")
            self._file = os.fdopen(fd, "w+", encoding="utf-8")
            os.unlink(path)  # the open file stays readable; nothing is left behind if the process dies
        self._chunks.append(self._file.tell())
        self._file.write(json.dumps([_encode(v) for v in self._recent]) + "\n")
        self._recent = []

    @property
    def held(self) -> int:
        """Versions held in memory now."""
        return len(self._recent)

    def oldest_first(self) -> Iterator[Version]:
        yield from reversed(self._recent)
        if self._file is None:
            return
        for offset in reversed(self._chunks):
            self._file.flush()
            self._file.seek(offset)
            chunk = [_decode(row) for row in json.loads(self._file.readline())]
            yield from reversed(chunk)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._recent = []


def histories(versions: Iterable[Version]) -> Iterator[KeyHistory]:
    """Consecutive versions of one key grouped into its history (the listing sends them together)."""
    current: KeyHistory | None = None
    for version in versions:
        if current is not None and version.key != current.key:
            yield current
            current = None
        if current is None:
            current = KeyHistory(version.key)
        current.add(version)
    if current is not None:
        yield current


@dataclass(frozen=True, slots=True)
class HistoryPair:
    """A key's source history and the destination history at its mapped key (None: no versions)."""

    source: KeyHistory
    destination_key: str
    existing: KeyHistory | None


def join_histories(
    sources: Iterable[KeyHistory],
    destinations: Iterable[KeyHistory],
    map_key: Callable[[str], str],
    key_range: KeyRange = KeyRange(),
) -> Iterator[HistoryPair]:
    """Pair each source history with the destination's at its mapped key, in one forward pass over
    each (both listings are in key order, which the key mapping keeps). Destination histories passed
    over are closed here; paired ones by whoever copies the key."""
    dest_iter = iter(destinations)
    current = next(dest_iter, None)
    for source in sources:
        if key_range.end is not None and source.key > key_range.end:
            source.close()
            break
        if not key_range.contains(source.key):
            source.close()
            continue
        target = map_key(source.key)
        while current is not None and current.key < target:
            current.close()
            current = next(dest_iter, None)
        existing = None
        if current is not None and current.key == target:
            existing, current = current, next(dest_iter, None)
        yield HistoryPair(source, target, existing)
    if current is not None:
        current.close()
