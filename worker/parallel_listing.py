"""The parallel listing behind planning: N lister threads over disjoint key ranges of the source.

Where it sits: `worker/scan.py` (used by the planner pod, `worker/planpod.py`, and by `ferry plan`) runs
one `ParallelListing` per plan. Phase 1 discovers the prefix tree with delimiter ("/") listings of bounded
depth and fan-out and turns the common prefixes into ranges that cover the whole key space under the
source prefix, objects directly at each level included (`keyspace.ranges_from_prefixes`). Phase 2 lists
each range as a stream: ListObjectsV2 with the narrowest Prefix of the range and StartAfter its start,
one page in memory per lister, until a key passes the range's end. A lister with nothing left to take
cuts the rest of a busy range and lists the upper part. In a prefix tree it cuts at a folder known to
follow the busy lister's position: one delimiter listing (a probe) names the folders after it, kept on the
range as its next cut points (`keyspace.probe_directory`), since a midpoint of the key space there mostly
lands between folders, where nothing is. The rest of one folder is cut only when its own pages say it
goes on, among its own numbers for numbered keys (`keyspace.numbered_cut`). A flat bucket without any
"/" is cut at midpoints beyond the position, each cut probing the key space with StartAfter.

Each range feeds its own `operator.planning.Planner` (histogram and fine pieces) that starts at the
range's start; at the end the ranges in key order give contiguous pieces covering the whole key space,
the last open-ended: the very pieces one sequential `Planner` gives, since piece ends are functions of
the keys and the ranges are joined at one level (`keyspace.join_pieces`). Memory does not grow with the
number of keys: ranges are capped (`MAX_RANGES`), pieces over all ranges are capped (`MAX_PIECES`, by
coarsening every range at once, `planning.coarsen_together`), and each lister holds one page.

When a destination client is given, each range is also merge-joined with the destination's mapped range
(listed the same way) and the objects the worker would skip (`worker.decide`) are counted.
"""

from __future__ import annotations

import operator
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ferry.model import Overwrite
from ferry.model.plan import Shard
from ferry.operator.planning import (
    EXACT,
    MAX_PIECES,
    Histogram,
    Planner,
    coarsen_together,
    finished_pieces,
)
from ferry.worker.decide import decide
from ferry.worker.filters import ObjectFilter
from ferry.worker.keyspace import (
    MAX_MIDPOINT_BYTES,
    Alphabet,
    clip,
    common_prefix,
    extrapolate,
    join_levels,
    join_pieces,
    listing_prefix,
    numbered_cut,
    numbered_midpoint,
    part_cuts,
    probe_directory,
    ranges_from_prefixes,
    remaining_estimate,
    split_point,
)
from ferry.worker.leanlist import Page
from ferry.worker.objects import Action, ObjectInfo

#: Listers (threads, each one request in flight) when the caller names no number.
DEFAULT_LISTERS = 32
#: Most listers one listing runs, whatever it is asked for.
MAX_LISTERS = 256
#: Most ranges a listing keeps (finished ones included): bounds memory and the cost of cutting.
MAX_RANGES = 2048
#: Delimiter listings go at most this deep below the source prefix.
DISCOVERY_DEPTH = 3
#: Prefixes listed with a delimiter per level of discovery, at most.
DISCOVERY_FAN_OUT = 64
PAGE_SIZE = 1000
#: Pages ahead of a dense range's position where an idle lister cuts it (`keyspace.extrapolate`).
LOCAL_CUT_PAGES = 4
#: How long an idle lister waits before looking for work again; keeps every wait bounded.
IDLE_WAIT_SECONDS = 0.05
#: Folders one delimiter probe keeps as a range's cut points (spread evenly over those answered).
MAX_MARKS = 64

Call = Callable[[Callable[[], Any]], Any]


class TooManyKeys(Exception):
    """More keys were listed than the limit allows."""

    def __init__(self, listed: int) -> None:
        super().__init__(f"{listed} keys listed")
        self.listed = listed


class NotAListing(ValueError):
    """The endpoint's pages break what S3 guarantees (key order, StartAfter, continuation tokens): it is
    not an S3 service, or not a sane one, and asking again cannot help."""


class DeadlinePassed(Exception):
    """The listing took longer than its deadline."""

    def __init__(self, listed: int) -> None:
        super().__init__(f"deadline passed after {listed} keys")
        self.listed = listed


@dataclass(frozen=True)
class ListingCounts:
    """What the listing has done so far; handed to the progress tracker after every page."""

    listed: int
    objects: int
    bytes: int
    listers: int
    ranges_done: int
    ranges_total: int
    requests: int
    #: Keys listed by ranges that are finished (for the estimate of what is left).
    listed_done: int


@dataclass(frozen=True)
class ListingOutcome:
    histogram: Histogram
    pieces: tuple[Shard, ...]
    requests: int
    #: (objects, bytes) the destination already holds and the worker would skip; None if not compared.
    existing: tuple[int, int] | None
    ranges: int
    #: The part of the key space listed: after the first key up to the second (None: the whole, open).
    span: tuple[str | None, str | None] = (None, None)
    #: A part's pieces are not finished (`planning.finished_pieces`) but joined with the other parts':
    #: the level of each piece's end, and the level of the part (None: a whole listing, or pieces that
    #: fell back to the pairwise merge).
    levels: tuple[int, ...] | None = None
    level: int | None = None


@dataclass(frozen=True)
class DestinationSide:
    """The destination to compare with: its client, bucket and prefix, and the overwrite rule."""

    client: Any
    bucket: str
    prefix: str
    overwrite: Overwrite


@dataclass
class _Range:
    start_after: str | None
    end: str | None
    planner: Planner
    position: str | None
    state: str = "pending"  # pending -> active -> done
    listed: int = 0
    #: Whether the last page said more keys follow (a range about to end is not worth cutting).
    more: bool = True
    paged: bool = False
    #: The first key listed, and the characters that vary between the keys of the last page: where to
    #: cut is estimated from them.
    first: str | None = None
    #: The first key of the last page: with `position`, how far a page reaches where the range is now.
    page_first: str | None = None
    alphabet: Alphabet | None = None
    existing_objects: int = 0
    existing_bytes: int = 0
    pieces: list[Shard] = field(default_factory=list)
    #: Folders known to lie inside the range (common prefixes a delimiter probe answered), in key order:
    #: each holds at least one key, so a cut at one never lands in empty key space.
    marks: list[str] = field(default_factory=list)
    #: The folder whose subfolders gave the marks (or gave none inside the range): the next probe looks
    #: one level below it.
    mark_folder: str | None = None
    #: A lister is probing this range's folders now.
    probing: bool = False
    #: The first key seen in the folder being listed (by this range or the one it was cut from).
    origin: str | None = None
    #: Keys likely left, and the (position, end, listed) it was estimated at.
    estimate: tuple[tuple[str | None, str | None, int], float] | None = None


@dataclass(frozen=True)
class _Probe:
    """A delimiter listing an idle lister makes (outside the lock) to find where to cut ``target``."""

    target: _Range
    folder: str
    start_after: str


def _in_order(keys: list[str]) -> bool:
    """Whether ``keys`` strictly increase (compared by C loops: this runs on every page)."""
    return len(keys) < 2 or all(map(operator.lt, keys, islice(keys, 1, None)))


class ParallelListing:
    """One listing of ``bucket``/``prefix`` by ``listers`` threads; `run` returns its outcome or raises
    (`TooManyKeys`, `DeadlinePassed`, or the listing's error after its retries)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        object_filter: ObjectFilter,
        piece_objects: int,
        piece_bytes: int,
        call: Call,
        clock: Callable[[], float],
        listers: int = DEFAULT_LISTERS,
        page_size: int = PAGE_SIZE,
        max_objects: int | None = None,
        deadline_seconds: float | None = None,
        destination: DestinationSide | None = None,
        report: Callable[[ListingCounts], None] = lambda _c: None,
        part: tuple[int, int] | None = None,
    ) -> None:
        self._client, self._bucket, self._prefix = client, bucket, prefix
        self._filter = object_filter
        self._piece_objects, self._piece_bytes = piece_objects, piece_bytes
        self._call, self._clock = call, clock
        self._listers = max(1, min(MAX_LISTERS, listers))
        self._page_size = max(1, min(1000, page_size))
        self._max_objects, self._deadline = max_objects, deadline_seconds
        self._destination = destination
        self._report = report
        self._lock = threading.Condition()
        self._ranges: list[_Range] = []
        self._listed = 0
        self._requests = 0
        self._active = 0
        # Running totals over the ranges, kept as pages come (summing over up to `MAX_RANGES` ranges on
        # every page cost more CPU than reading the page).
        self._done = 0
        self._listed_done = 0
        self._objects = 0
        self._bytes = 0
        self._pieces = 0
        self._failure: BaseException | None = None
        self._alphabet: Alphabet | None = None
        self._started = clock()
        #: (index, count): list only this pod's part of the key space (`keyspace.part_cuts`).
        self._part = part
        self._span: tuple[str | None, str | None] = (None, None)
        #: Keys directly under the prefix on discovery's first page: their characters steer where
        #: planner pods divide a bucket without prefixes.
        self._root_keys: list[str] = []
        #: The destination held nothing under its prefix when the listing began.
        self._destination_empty = False

    # -- the whole listing ----------------------------------------------------------------------------

    def run(self) -> ListingOutcome:
        self._started = self._clock()
        side = self._destination
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-destination") as pool:
            # An empty destination (a first migration) holds nothing to skip: one request says so,
            # instead of one per range; asked while the prefix tree is discovered, not after.
            empty = None if side is None else pool.submit(self._destination_is_empty, side)
            found = self._discover()
            if empty is not None:
                self._destination_empty = empty.result()
        bounds = ranges_from_prefixes(found, min(MAX_RANGES // 2, self._listers * 4))
        if self._part is not None:
            index, count = self._part
            seen = [*found, *self._root_keys]
            alphabet = Alphabet.of(k[len(self._prefix) :] for k in seen) or Alphabet()
            cuts = part_cuts(bounds, count, self._prefix, alphabet)
            self._span = (cuts[index], cuts[index + 1])
            bounds = clip(bounds, *self._span)
        with self._lock:
            self._ranges = [self._new_range(start, end) for start, end in bounds]
        threads = [
            threading.Thread(target=self._lister, name=f"ferry-lister-{i}", daemon=True)
            for i in range(self._listers)
        ]
        for thread in threads:
            thread.start()
        with self._lock:
            while self._failure is None and not self._all_done():
                try:
                    self._check_deadline()
                except DeadlinePassed as exc:
                    self._failure = exc  # the listers see it and stop
                    self._lock.notify_all()
                    break
                self._lock.wait(IDLE_WAIT_SECONDS * 4)
            failure = self._failure
        if failure is not None:
            # Listers stop at their next page; a request in flight ends within the client's read timeout.
            raise failure
        for thread in threads:
            thread.join(timeout=5)
        return self._outcome()

    def _destination_is_empty(self, side: DestinationSide) -> bool:
        probe = self._request(client=side.client, Bucket=side.bucket, Prefix=side.prefix, MaxKeys=1)
        return not probe.keys and not probe.truncated

    def _outcome(self) -> ListingOutcome:
        ordered = sorted(self._ranges, key=lambda r: (r.start_after is not None, r.start_after or ""))
        parts: list[list[Shard]] = []
        counts = [0] * len(Planner().histogram().counts)
        levels: list[list[int]] | None = []
        objects = total = largest = 0
        # Piece ends are functions of the keys (`operator.planning`): brought to one level, the ranges'
        # pieces join into those one planner of all the keys would give, wherever the ranges were cut;
        # unless a planner fell back to merging pairwise, when they join as they are.
        level = max((r.planner.level for r in ordered), default=EXACT)
        content_defined = not any(r.planner.fell_back for r in ordered)
        for r in ordered:
            h = r.planner.histogram()
            counts = [a + b for a, b in zip(counts, h.counts, strict=True)]
            objects, total, largest = objects + h.objects, total + h.bytes, max(largest, h.largest)
            if content_defined and levels is not None:
                r.planner.raise_to(level)
                pieces, ends = r.planner.range_pieces(r.end)
                levels.append(ends)
            else:
                levels = None
                pieces = r.planner.pieces()
                last = pieces[-1]
                pieces[-1] = Shard(last.start_after, r.end, last.objects, last.bytes)
            parts.append(pieces)
        existing = None
        if self._destination is not None:
            existing = (sum(r.existing_objects for r in ordered), sum(r.existing_bytes for r in ordered))
        answer_levels: tuple[int, ...] | None = None
        if levels is None:
            pieces = join_pieces(parts, MAX_PIECES, *self._span)
        else:
            pieces, ends, level = join_levels(parts, levels, level, MAX_PIECES, *self._span)
            if self._part is not None:
                # A planner pod's part: joined with the other pods' parts by the operator, so its pieces
                # go as they are, with their levels (`planresult.merge_parts`).
                answer_levels = tuple(ends)
            else:
                pieces = finished_pieces(pieces, level, *self._span, self._piece_objects, self._piece_bytes)
        return ListingOutcome(
            Histogram(tuple(counts), objects, total, largest),
            tuple(pieces),
            self._requests,
            existing,
            len(ordered),
            self._span,
            answer_levels,
            level if answer_levels is not None else None,
        )

    def _new_range(self, start: str | None, end: str | None) -> _Range:
        planner = Planner(
            piece_objects=self._piece_objects,
            piece_bytes=self._piece_bytes,
            start_after=start,
            max_pieces=MAX_PIECES,
        )
        # Ranges made later start at the level the others have reached (the bounds doubled as often).
        if self._ranges:
            planner.raise_to(max(r.planner.level for r in self._ranges))
        return _Range(start, end, planner, start)

    def _all_done(self) -> bool:
        return self._done == len(self._ranges)

    def _check_deadline(self) -> None:
        if self._deadline is not None and self._clock() - self._started > self._deadline:
            raise DeadlinePassed(self._listed)

    def _request(self, **kwargs: Any) -> Page:
        client = kwargs.pop("client", self._client)
        # The lean reader answers in columns; any other client (boto3's own) in boto3's shape.
        list_page = getattr(client, "list_page", None)

        def once() -> Any:
            with self._lock:
                self._requests += 1
            return list_page(**kwargs) if list_page is not None else client.list_objects_v2(**kwargs)

        answer = self._call(once)
        return answer if isinstance(answer, Page) else Page.from_boto(answer)

    # -- phase 1: the prefix tree ---------------------------------------------------------------------

    def _discover(self) -> list[str]:
        """Common prefixes down to `DISCOVERY_DEPTH` levels, until there are enough for the listers."""
        found: list[str] = []
        level = [self._prefix]
        # As many ranges as listers is enough to start: busy ranges are cut as listers free up, and
        # each level of discovery costs a request per prefix expanded.
        enough = self._listers * 2
        with ThreadPoolExecutor(max_workers=self._listers, thread_name_prefix="ferry-discover") as pool:
            for _depth in range(DISCOVERY_DEPTH):
                if not level or len(found) >= enough:
                    break
                self._check_deadline()
                children = list(pool.map(self._common_prefixes, level[:DISCOVERY_FAN_OUT]))
                # Each group thinned evenly to its share: only boundaries are needed, never all of them.
                share = max(4, enough // max(1, len(children)))
                level = [p for group in children for p in _evenly(group, share)]
                found = _evenly(sorted({*found, *level}), 2 * enough)
        return found

    def _common_prefixes(self, prefix: str) -> list[str]:
        # One page only: a wider level is cut evenly later, and the rest lies in the last range anyway.
        page = self._request(Bucket=self._bucket, Prefix=prefix, Delimiter="/", MaxKeys=self._page_size)
        if prefix == self._prefix:
            self._root_keys = [k for k in page.keys if k.startswith(prefix)]
        return [p for p in page.prefixes if p.startswith(prefix)]

    # -- phase 2: listers -----------------------------------------------------------------------------

    def _lister(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._failure is not None:
                        return
                    work = self._take()
                    if work is None:
                        if self._all_done():
                            return
                        self._lock.wait(IDLE_WAIT_SECONDS)
                        continue
                    if isinstance(work, _Probe):
                        work.target.probing = True
                    else:
                        work.state = "active"
                        self._active += 1
                if isinstance(work, _Probe):
                    self._probe(work)
                    continue
                try:
                    self._list(work)
                finally:
                    with self._lock:
                        self._active -= 1
                        work.state = "done"
                        self._done += 1
                        self._listed_done += work.listed
                        self._lock.notify_all()
                        self._send_report()
        except BaseException as exc:  # handed to `run`, which raises it
            with self._lock:
                if self._failure is None:
                    self._failure = exc
                self._lock.notify_all()

    def _take(self) -> _Range | _Probe | None:
        """A pending range, else the upper part of a busy range cut at one of its folders or at a
        midpoint, or a probe for its folders (under the lock)."""
        for r in self._ranges:
            if r.state == "pending":
                return r
        if len(self._ranges) >= MAX_RANGES:
            return None
        # The busy range with most keys likely left first; one with less than two pages left is not cut,
        # since each cut costs a request or two (the probe, and the page the cut range reads past it).
        worth = []
        for r in self._ranges:
            # Not before its first page has come: until then nothing says the range holds anything.
            if r.state != "active" or not r.more or not r.paged:
                continue
            alphabet = r.alphabet or self._alphabet or Alphabet()
            # Estimated again only when the range moved: idle listers ask every few milliseconds, under
            # the lock, and the estimate reads characters one by one.
            seen = (r.position, r.end, r.listed)
            if r.estimate is None or r.estimate[0] != seen:
                left = remaining_estimate(r.first, r.position, r.end, r.listed - 1, self._prefix, alphabet)
                r.estimate = (seen, left)
            worth.append((r.estimate[1], r.listed, r, alphabet))
        worth.sort(key=lambda w: (-w[0], -w[1]))
        for left, _listed, r, alphabet in worth:
            if r.probing:
                continue
            # In a prefix tree, cut at a folder known to follow the position: a midpoint of the key
            # space there mostly lands between folders, where nothing is, and costs a request for it.
            marks = [m for m in r.marks if self._cuttable(r, m)]
            r.marks = marks
            if marks:
                at = marks[len(marks) // 2]
                upper = self._cut(r, at)
                r.marks, upper.marks = marks[: len(marks) // 2], marks[len(marks) // 2 + 1 :]
                upper.mark_folder = r.mark_folder
                return upper
            if r.position is None:
                continue  # its pages held no key yet (a server may answer empty truncated pages)
            found = probe_directory(r.position, r.end, self._prefix, r.mark_folder)
            if found is not None:
                return _Probe(r, *found)
            folder = r.position[: r.position.rfind("/") + 1]
            if len(folder) > len(self._prefix) and not (r.end is not None and r.end.startswith(folder)):
                # The rest is one folder's own keys and the range ends past the folder: a midpoint of
                # the key space mostly lands between its last key and the range's end (keys share
                # their endings, ".parquet"); cut only a folder its own pages say goes on.
                ahead = self._ahead(r, alphabet)
                if ahead is not None:
                    upper = self._cut(r, ahead)
                    upper.origin = r.origin
                    return upper
                continue
            if left < 2 * self._page_size:
                # A midpoint is a guess: only where the density so far says pages are left. (A folder
                # or its own pages are evidence, whatever the density of a tree's other folders says.)
                continue
            # Numbered keys are halved by their numbers: a midpoint of the characters would fall on
            # the letters after them, between two blocks of numbers, where no key is.
            mid = numbered_midpoint(r.page_first, r.position, r.end) if r.page_first else None
            if mid is None or not self._cuttable(r, mid):
                mid = split_point(r.position, r.end, self._prefix, alphabet)
            if mid is not None and self._cuttable(r, mid):
                return self._cut(r, mid)
        # Ranges the density of their listed part says are nearly done may be in a dense block (one hot
        # directory among sparse ones): cut a few pages ahead of where they are, if that is still
        # inside them. A cut that finds nothing costs one request.
        # Only when most listers have nothing to do (the listing's tail), and only for ranges whose own
        # pages were dense for a while: elsewhere such cuts would cost requests and gain no time.
        active = sum(1 for r in self._ranges if r.state == "active")
        if active > self._listers // 2:
            return None
        dense = LOCAL_CUT_PAGES * self._page_size
        near = [
            r
            for r in self._ranges
            if r.state == "active" and r.more and r.paged and r.page_first and r.listed >= dense
        ]
        near.sort(key=lambda r: -r.listed)
        for r in near:
            assert r.page_first is not None and r.position is not None
            alphabet = r.alphabet or self._alphabet or Alphabet()
            ahead = extrapolate(r.page_first, r.position, LOCAL_CUT_PAGES, alphabet)
            if ahead is not None and self._cuttable(r, ahead):
                return self._cut(r, ahead)
        return None

    def _ahead(self, r: _Range, alphabet: Alphabet) -> str | None:
        """Where to cut a range whose last page was full and lay in the folder of its position: for
        numbered keys as far ahead as the folder's keys seen so far reach back (`numbered_cut`), else
        `LOCAL_CUT_PAGES` pages ahead; None otherwise, or when that is not inside the range."""
        position, first = r.position, r.page_first
        if position is None or first is None or r.listed < self._page_size:
            return None
        folder = position[: position.rfind("/") + 1]
        if not first.startswith(folder):
            return None
        if r.origin is None or not r.origin.startswith(folder):
            r.origin = r.first if r.first is not None and r.first.startswith(folder) else first
        ahead = numbered_cut(r.origin, first, position, r.end, LOCAL_CUT_PAGES)
        if ahead is None:
            ahead = extrapolate(first, position, LOCAL_CUT_PAGES, alphabet)
        return ahead if self._cuttable(r, ahead) else None

    def _probe(self, probe: _Probe) -> None:
        """List the folders after the probed range's position (one delimiter page) and keep those still
        inside it as its cut points."""
        r = probe.target
        try:
            page = self._request(
                Bucket=self._bucket,
                Prefix=probe.folder,
                Delimiter="/",
                StartAfter=probe.start_after,
                MaxKeys=self._page_size,
            )
        finally:
            with self._lock:
                r.probing = False
        folders = page.prefixes
        if not _in_order(folders):
            raise NotAListing("the listing's common prefixes are not in key order")
        with self._lock:
            # Whatever the endpoint answers: only folders under the one asked for, inside the range, no
            # longer than a cut may be, and no more than `MAX_MARKS` of them are kept.
            inside = [
                f
                for f in folders
                if f.startswith(probe.folder)
                and self._cuttable(r, f)
                and len(f.encode("utf-8", "surrogatepass")) <= MAX_MIDPOINT_BYTES
            ]
            r.marks = _evenly(inside, MAX_MARKS)
            r.mark_folder = probe.folder
            self._lock.notify_all()

    @staticmethod
    def _cuttable(r: _Range, at: str | None) -> bool:
        return at is not None and (r.position is None or at > r.position) and (r.end is None or at < r.end)

    def _cut(self, r: _Range, at: str) -> _Range:
        """Cut ``r`` at ``at``: the upper part becomes a new range (under the lock)."""
        upper = self._new_range(at, r.end)
        r.end = at
        self._ranges.append(upper)
        return upper

    def _list(self, r: _Range) -> None:
        with self._lock:
            start, end = r.position, r.end
        prefix = listing_prefix(start, end, self._prefix)
        if not self._within_prefix(prefix, start, end):
            return
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        if start is not None and start >= prefix:
            kwargs["StartAfter"] = start
        cursor = self._destination_cursor(prefix, start)
        while True:
            with self._lock:
                if self._failure is not None:
                    return
                self._check_deadline()
            page = self._request(**kwargs)
            if not page.truncated:
                with self._lock:
                    r.more, r.paged = False, True
            finished = self._take_page(r, page, cursor)
            if finished or not page.truncated:
                return
            with self._lock:
                r.more, r.paged = True, True
                position, end = r.position, r.end
            narrower = listing_prefix(position, end, self._prefix)
            if position is not None and len(narrower) > len(kwargs["Prefix"]):
                # Every key between the position and the end shares their common prefix: asking for it
                # alone ends the listing at the end of that block, instead of reading a page past it.
                kwargs = {**kwargs, "Prefix": narrower, "StartAfter": position}
                kwargs.pop("ContinuationToken", None)
                continue
            kwargs.pop("StartAfter", None)
            if not page.token:
                raise NotAListing("a truncated listing page carries no continuation token")
            kwargs["ContinuationToken"] = page.token

    def _within_prefix(self, prefix: str, start: str | None, end: str | None) -> bool:
        """Whether any key under ``prefix`` can fall in (start, end]."""
        if end is not None and end < prefix:
            return False
        return not (start is not None and start > prefix and not start.startswith(prefix))

    def _take_page(self, r: _Range, page: Page, cursor: _Cursor | None) -> bool:
        """Feed one page to the range's planner; True when the range's end was passed. Keys and sizes
        go to the planner a page at a time; an object's other fields are decoded only for a filter that
        reads them or a destination that holds the key."""
        keys = page.keys
        if not _in_order(keys):
            # A server that is not S3, or worse: a plan from it could lose keys.
            raise NotAListing("the listing is not in key order")
        # The alphabet of what is seen, for the midpoints of later cuts: of the whole listing, and of
        # the part of this page's keys that varies (digits, for numbered keys).
        # Every 32nd key and the last: the alphabet only steers where later cuts fall (any cut is
        # strictly inside its range), and reading every character of every key costs a fifth of a page's CPU.
        sample = [*keys[::32], *keys[-1:]]
        seen = Alphabet.of(key[len(self._prefix) :] for key in sample)
        varying = None
        if len(keys) > 1:
            shared = len(common_prefix(keys[0], keys[-1]))
            varying = Alphabet.of(key[shared:] for key in sample)
        with self._lock:
            end = r.end
        stop = len(keys) if end is None else bisect_right(keys, end)
        accepted = (
            None
            if self._filter.accepts_all
            else [i for i in range(stop) if self._filter.accepts(page.object(i))]
        )
        skipped: list[tuple[str, int]] = []
        if cursor is not None:
            side = self._destination
            assert side is not None
            for i in range(stop) if accepted is None else accepted:
                existing = cursor.find(side.prefix + keys[i][len(self._prefix) :])
                if (
                    existing is not None
                    and decide(page.object(i), existing, side.overwrite).action is Action.SKIP
                ):
                    skipped.append((keys[i], page.sizes[i]))
        with self._lock:
            self._alphabet = seen if self._alphabet is None else self._alphabet.widen(seen)
            r.alphabet = varying or r.alphabet
            if r.end != end and r.end is not None:
                # Cut while this page was read: the rest is the new range's.
                stop = bisect_right(keys, r.end, 0, stop)
            if stop and r.position is not None and not keys[0] > r.position:
                raise NotAListing("the listing is not in key order")
            self._listed += stop
            r.listed += stop
            if stop:
                r.page_first = keys[0]
                r.position = keys[stop - 1]
                if r.first is None:
                    r.first = keys[0]
                objects, nbytes = r.planner.progress
                pieces = r.planner.piece_count
                if accepted is None:
                    r.planner.add_many(keys[:stop], page.sizes[:stop])
                else:
                    kept = [i for i in accepted if i < stop]
                    r.planner.add_many([keys[i] for i in kept], [page.sizes[i] for i in kept])
                after_objects, after_bytes = r.planner.progress
                self._objects += after_objects - objects
                self._bytes += after_bytes - nbytes
                self._pieces += r.planner.piece_count - pieces
            for key, size in skipped:
                if r.end is None or key <= r.end:
                    r.existing_objects += 1
                    r.existing_bytes += size
            finished = stop < len(keys)
            # Counted as listed, not as accepted: a filter that rejects everything still costs the listing.
            if self._max_objects is not None and self._listed > self._max_objects:
                raise TooManyKeys(self._listed)
            # Past MAX_PIECES over all ranges they coarsen together (a small job's key-by-key pieces
            # too: whether the job is small is decided once the ranges are joined, `join_levels`).
            if self._pieces > MAX_PIECES:
                coarsen_together([x.planner for x in self._ranges], MAX_PIECES)
                self._pieces = sum(x.planner.piece_count for x in self._ranges)
            self._send_report()
            return finished

    def _send_report(self) -> None:
        self._report(
            ListingCounts(
                listed=self._listed,
                objects=self._objects,
                bytes=self._bytes,
                listers=self._active,
                ranges_done=self._done,
                ranges_total=len(self._ranges),
                requests=self._requests,
                listed_done=self._listed_done,
            )
        )

    # -- the destination side -------------------------------------------------------------------------

    def _destination_cursor(self, prefix: str, start: str | None) -> _Cursor | None:
        side = self._destination
        if side is None or self._destination_empty:
            return None
        mapped_prefix = side.prefix + prefix[len(self._prefix) :]
        mapped_start = (
            side.prefix + start[len(self._prefix) :] if start and start.startswith(self._prefix) else None
        )
        return _Cursor(self._pages(side.client, side.bucket, mapped_prefix, mapped_start))

    def _pages(self, client: Any, bucket: str, prefix: str, start: str | None) -> Iterator[Page]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        if start is not None and start >= prefix:
            kwargs["StartAfter"] = start
        while True:
            page = self._request(client=client, **kwargs)
            if not _in_order(page.keys):
                raise NotAListing("the destination's listing is not in key order")
            yield page
            if not page.truncated or not page.token:
                return
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = page.token


def _evenly(items: list[str], most: int) -> list[str]:
    """At most ``most`` of ``items``, spread evenly, in their order."""
    if len(items) <= most:
        return items
    step = len(items) / most
    return [items[int(i * step)] for i in range(most)]


class _Cursor:
    """A forward-only walk over a listing in key order, one page in memory (a merge-join's other side)."""

    def __init__(self, pages: Iterator[Page]) -> None:
        self._pages = pages
        self._page: Page | None = None
        self._index = 0
        self._ended = False

    def find(self, key: str) -> ObjectInfo | None:
        """The object at ``key`` if the listing holds it; keys asked for must not decrease."""
        while not self._ended:
            page = self._page
            if page is not None:
                index = bisect_left(page.keys, key, self._index)
                if index < len(page.keys):
                    self._index = index
                    return page.object(index) if page.keys[index] == key else None
            following = next(self._pages, None)
            if following is None:
                self._ended = True
            else:
                self._page, self._index = following, 0
        return None
