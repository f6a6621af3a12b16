"""Version histories (spec.versions all): which versions of one key the destination already holds and
which it lacks. Pure: values in, steps out.

Where it sits: `worker/versionlisting.py` lists both buckets' versions and hands over each key's two
histories oldest first; `worker/versioncopy.py` walks them with `walk` and copies the steps it returns,
one at a time, in order.

The rule: a key's destination history must be a prefix of its source history, compared version by
version (kind, then size and ETag, then the source version id a copy records in its metadata). Destination
version ids are the destination's own, so they are never compared with the source's. Delete markers carry
no metadata: they match by position. What the destination lacks is the tail of the source history, and
it is copied oldest first. A destination history that is not a prefix (someone wrote there, or deleted
versions) is reported as diverged and left untouched: Ferry never deletes destination versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

#: The failure code of a key whose destination history is not a prefix of the source's.
DIVERGED = "DestinationHistoryDiverged"


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of a key's history as ListObjectVersions reports it: an object version or a delete
    marker (size 0, no ETag)."""

    key: str
    version_id: str
    delete_marker: bool
    size: int
    etag: str
    last_modified: datetime

    def describe(self) -> str:
        return "a delete marker" if self.delete_marker else f"an object of {self.size} bytes"


@dataclass(frozen=True, slots=True)
class Skipped:
    """The first versions of the source history, already at the destination."""

    versions: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Copy:
    """A source version the destination lacks; copy it after every earlier step."""

    version: Version


@dataclass(frozen=True, slots=True)
class Diverged:
    """The destination history is not a prefix of the source's: nothing of the key is copied.

    ``versions`` and ``bytes`` are the whole source history's (all of it counts as failed); ``version``
    is the source version id at the first difference (empty when the destination has more versions)."""

    position: int
    reason: str
    version: str
    versions: int
    bytes: int


Step = Skipped | Copy | Diverged


def same_version(source: Version, destination: Version, recorded: Callable[[Version], str | None]) -> bool:
    """Whether ``destination`` is the copy of ``source``.

    Equal size and ETag decide without a request; otherwise (a multipart or encrypted copy has an ETag of
    its own) the source version id recorded in the destination version's metadata decides, read through
    ``recorded`` only then."""
    if source.delete_marker or destination.delete_marker:
        return source.delete_marker == destination.delete_marker
    if source.size != destination.size:
        return False
    if source.etag and source.etag == destination.etag:
        return True
    return recorded(destination) == source.version_id


def walk(
    sources: Iterable[Version],
    destinations: Iterable[Version],
    recorded: Callable[[Version], str | None],
) -> Iterator[Step]:
    """The steps that make the destination history of one key match its source history.

    Both histories arrive oldest first, one version at a time (neither is held whole). Yields one
    `Skipped` (when the destination holds a prefix) and then a `Copy` per missing version, in order; or a
    single `Diverged`, always before any `Copy`: copies start only once the destination history has been
    matched to its end."""
    existing = iter(destinations)
    matched = matched_bytes = 0
    source_iter = iter(sources)
    for position, source in enumerate(source_iter):
        destination = next(existing, None)
        if destination is None:
            if matched:
                yield Skipped(matched, matched_bytes)
                matched = 0
            yield Copy(source)
            yield from (Copy(rest) for rest in source_iter)
            return
        if not same_version(source, destination, recorded):
            versions, nbytes = _rest(source_iter)
            yield Diverged(
                position=position,
                reason=(
                    f"version {position + 1} of the key's history is {destination.describe()} at the "
                    f"destination but {source.describe()} at the source"
                ),
                version=source.version_id,
                versions=matched + 1 + versions,
                bytes=matched_bytes + source.size + nbytes,
            )
            return
        matched += 1
        matched_bytes += source.size
    if next(existing, None) is not None:
        yield Diverged(
            position=matched,
            reason=f"the destination holds more versions of the key than the source's {matched}",
            version="",
            versions=matched,
            bytes=matched_bytes,
        )
        return
    if matched:
        yield Skipped(matched, matched_bytes)


def _rest(versions: Iterator[Version]) -> tuple[int, int]:
    count = nbytes = 0
    for version in versions:
        count += 1
        nbytes += version.size
    return count, nbytes
