"""Key-space arithmetic for the parallel listing (`worker/parallel_listing.py`). Pure.

Where it sits: planning lists the source in disjoint key ranges at once. A range holds the keys after
``start_after`` (exclusive) up to ``end`` (inclusive, ``None`` = open-ended), like a `Shard`. This module
says where to cut a range (a midpoint key strictly inside it), which ``Prefix`` lists it, how discovered
common prefixes become ranges, and how the ranges' pieces join into one contiguous cover in key order.

S3 lists keys in UTF-8 binary order, which is Unicode code-point order for valid strings, and so Python's
own string order. A midpoint is computed digit by digit over code points, within the alphabet of the keys
seen so far: cutting between "data/00500" and the open end by the whole of Unicode would land far beyond
every ASCII key and split nothing. Midpoints are never surrogates (not encodable in UTF-8), never control
characters and never the non-characters U+FFFE/U+FFFF (XML 1.0 cannot carry them), and never longer than
a key may be.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ferry.model.plan import Shard
from ferry.operator.planning import BOUNDARY, finished_pieces, join_levelled, merge_neighbours

#: Lowest code point a midpoint uses: below the space are control characters, which S3's XML answers
#: cannot carry.
FLOOR = 0x20
#: The highest code point; discovered prefixes end ranges at ``prefix + CEILING`` (above every key under
#: the prefix but those that themselves continue with U+10FFFF, which then fall in the next range).
CEILING = "\U0010ffff"
#: S3 keys are at most 1,024 bytes of UTF-8; a midpoint is kept well below.
MAX_MIDPOINT_BYTES = 512
#: Alphabet assumed before any key is seen: printable ASCII.
DEFAULT_ALPHABET = (0x20, 0x7E)


@dataclass(frozen=True)
class Alphabet:
    """The code points keys were seen to use (relative to the source prefix), lowest and highest."""

    low: int = DEFAULT_ALPHABET[0]
    high: int = DEFAULT_ALPHABET[1]

    @classmethod
    def of(cls, keys: Iterable[str]) -> Alphabet | None:
        """The alphabet of ``keys``, or None when they hold no character."""
        text = "".join(keys)
        if not text:
            return None
        low, high = ord(min(text)), ord(max(text))
        return cls(max(FLOOR, low), max(FLOOR, high))

    def widen(self, other: Alphabet | None) -> Alphabet:
        if other is None:
            return self
        return Alphabet(min(self.low, other.low), max(self.high, other.high))


def _valid(cp: int) -> bool:
    return cp >= FLOOR and not 0xD800 <= cp <= 0xDFFF and cp not in (0xFFFE, 0xFFFF) and cp <= 0x10FFFF


def _pick(below: int, above: int, alphabet: Alphabet) -> int | None:
    """A valid code point strictly between ``below`` and ``above``, preferring the middle of the part
    inside the alphabet; None when none lies inside the alphabet."""
    low, high = max(below + 1, alphabet.low), min(above - 1, alphabet.high)
    if low > high:
        return None
    middle = (low + high) // 2
    # Surrogates and the two non-characters are one contiguous run each; step out of them either way.
    for candidate in (middle, 0xD7FF, 0xE000, 0xFFFD, 0x10000):
        if low <= candidate <= high and _valid(candidate):
            return candidate
    return None


def midpoint(lo: str, hi: str | None, alphabet: Alphabet = Alphabet()) -> str | None:
    """A string ``m`` with ``lo < m`` and ``m < hi`` (``hi=None``: no upper bound), made of valid
    characters, preferably of ``alphabet``; None when there is none short enough (``lo`` and ``hi``
    are neighbours, as "a" and "a ").

    Works on strings relative to the source prefix; ``lo=""`` is the start of the space.
    """
    if hi is not None and not lo < hi:
        return None
    out: list[str] = []
    bounded = hi is not None
    i = 0
    # Each step appends one character; the loop ends within the length bound whatever the input.
    while len("".join(out).encode("utf-8", "surrogatepass")) < MAX_MIDPOINT_BYTES:
        if bounded and hi is not None and i >= len(hi):
            return None  # what was built equals hi: nothing lies between
        a = ord(lo[i]) if i < len(lo) else None
        b = ord(hi[i]) if bounded and hi is not None else None
        if a is not None and b is not None and a == b:
            out.append(lo[i])
            i += 1
            continue
        below = a if a is not None else FLOOR - 1
        above = b if b is not None else alphabet.high + 1
        picked = _pick(below, above, alphabet) if below < above else None
        if picked is None and b is not None and a is None:
            # Only characters outside the alphabet fit below hi here.
            picked = _pick(below, above, Alphabet(FLOOR, 0x10FFFF))
        if picked is not None:
            out.append(chr(picked))
            return "".join(out)
        if a is not None:
            # No room here within the alphabet: keep lo's character; anything longer lies below hi.
            out.append(lo[i])
            bounded = False
            i += 1
            continue
        # lo is used up and hi's character is the lowest usable one: hi cut after it lies between.
        if b == FLOOR and hi is not None and i + 1 < len(hi):
            out.append(chr(FLOOR))
            return "".join(out)
        return None
    return None


def key_value(key: str, alphabet: Alphabet, digits: int = 8) -> float:
    """Where ``key`` (relative to the source prefix) lies in [0, 1] when keys are read as fractions whose
    digits are the alphabet's characters: for estimating how much of a range is behind a position."""
    base = alphabet.high - alphabet.low + 2
    value, scale = 0.0, 1.0
    for ch in key[:digits]:
        scale /= base
        value += scale * (min(max(ord(ch), alphabet.low - 1), alphabet.high + 1) - alphabet.low + 1)
    return min(1.0, value)


def remaining_estimate(
    start: str | None, position: str | None, end: str | None, listed: int, prefix: str, alphabet: Alphabet
) -> float:
    """Keys likely left in a range after ``position``, from the density of the part already listed
    (``listed`` keys between ``start`` and ``position``), spread evenly over the key space; infinite
    when nothing tells (an open end, or nothing listed yet)."""
    if end is None or position is None or listed <= 0:
        return float("inf")
    lo, at, hi = (relative(k, prefix) or "" for k in (start, position, end))
    shared = len(common_prefix(lo, hi))
    v_lo, v_at, v_hi = (key_value(k[shared:], alphabet) for k in (lo, at, hi))
    if v_at <= v_lo:
        return float("inf")
    return listed * max(0.0, v_hi - v_at) / (v_at - v_lo)


def common_prefix(a: str, b: str) -> str:
    """The longest common prefix of two strings."""
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return a[:n]


def relative(key: str | None, prefix: str) -> str | None:
    """A range bound relative to the source prefix; bounds below the prefix count as its start."""
    if key is None:
        return None
    return key[len(prefix) :] if key.startswith(prefix) else ""


def split_point(
    position: str | None, end: str | None, prefix: str, alphabet: Alphabet = Alphabet()
) -> str | None:
    """Where to cut the rest of a range: a key strictly after ``position`` (``None``: the range has not
    started) and strictly before ``end``, under ``prefix``; None when the rest cannot be cut."""
    lo = relative(position, prefix) or ""
    hi = relative(end, prefix)
    if hi is not None and not hi:
        return None
    mid = midpoint(lo, hi, alphabet)
    return None if mid is None else prefix + mid


def listing_prefix(start_after: str | None, end: str | None, prefix: str) -> str:
    """The narrowest ``Prefix`` that lists every key of the range: the source prefix and the longest
    common prefix of the bounds beyond it."""
    lo, hi = relative(start_after, prefix), relative(end, prefix)
    if lo is None or hi is None:
        return prefix
    return prefix + common_prefix(lo, hi)


def ranges_from_prefixes(prefixes: Sequence[str], most: int) -> list[tuple[str | None, str | None]]:
    """Disjoint ranges covering the whole key space, cut after the keys under each common prefix.

    Range ``i`` ends at ``prefixes[i] + CEILING``, above every key under that prefix, so the objects
    between two prefixes (directly at that level) fall in the next range and nothing is left out. A
    prefix with another of the prefixes under it adds no bound of its own: the range after its last
    subfolder would hold only the keys directly in it that sort after that subfolder (mostly none, a
    request for nothing), and those fall in the next range instead. At most ``most`` ranges: beyond
    that, prefixes are taken evenly.
    """
    ordered = sorted({p for p in prefixes if p})
    # In key order a prefix's descendants follow it directly.
    leaves = [
        p
        for p, after in zip(ordered, [*ordered[1:], ""][: len(ordered)], strict=True)
        if not after.startswith(p)
    ]
    bounds = [p + CEILING for p in leaves]
    if len(bounds) >= most:
        step = len(bounds) / max(1, most - 1)
        bounds = sorted({bounds[int(i * step)] for i in range(max(0, most - 1))})
    starts: list[str | None] = [None, *bounds]
    ends: list[str | None] = [*bounds, None]
    return list(zip(starts, ends, strict=True))


def join_pieces(
    parts: Sequence[Sequence[Shard]],
    max_pieces: int,
    start_after: str | None = None,
    end: str | None = None,
    levels: Sequence[Sequence[int]] | None = None,
    level: int = 0,
    targets: tuple[int, int] = (1000, 2**30),
) -> list[Shard]:
    """Join the pieces of contiguous ranges, in key order, into one cover of the key space from
    ``start_after`` (None: its beginning) to ``end`` (None: open-ended).

    Empty pieces merge into their neighbour (a range that found nothing adds no piece); neighbours then
    merge pairwise until at most ``max_pieces`` remain. The first piece starts at ``start_after``, the
    last ends at ``end``, as the sequential `Planner.pieces` returns them for the whole key space. Raises
    ValueError when the parts are not contiguous, which would lose keys.

    With ``levels`` (the level of each piece's end, every part's planner at ``level``), the pieces are
    content-defined (`operator.planning`) and join as one planner of all the keys would have cut them:
    the ends of the ranges are dropped, each range's last piece merging with the next range's first,
    and the level is raised while more than ``max_pieces`` closed pieces remain (the last piece is the
    open one), and a small job's keys are cut from its first key at the planner's piece sizes
    ``targets`` (`planning.finished_pieces`). Parts come from `Planner.range_pieces`.
    """
    if levels is not None:
        joined, _, level = join_levels(parts, levels, level, max_pieces, start_after, end)
        return finished_pieces(joined, level, start_after, end, *targets)
    flat = [piece for part in parts for piece in part]
    if not flat:
        return [Shard(start_after, end, 0, 0)]
    for before, after in itertools.pairwise(flat):
        if before.end is None or before.end != after.start_after:
            raise ValueError("the ranges' pieces are not contiguous")
    if flat[0].start_after != start_after:
        raise ValueError("the ranges' pieces do not start where the key space does")
    merged: list[Shard] = []
    for piece in flat:
        if merged and (not piece.objects or not merged[-1].objects):
            last = merged[-1]
            merged[-1] = Shard(
                last.start_after, piece.end, last.objects + piece.objects, last.bytes + piece.bytes
            )
        else:
            merged.append(piece)
    merged = merge_neighbours(merged, max_pieces)
    last = merged[-1]
    merged[-1] = Shard(last.start_after, end, last.objects, last.bytes)
    return merged


def part_cuts(
    ranges: Sequence[tuple[str | None, str | None]], count: int, prefix: str, alphabet: Alphabet
) -> list[str | None]:
    """Where ``count`` planner pods divide the key space: ``count + 1`` bounds, None first and last, the
    others keys in order (equal neighbours leave a pod an empty part). Pod ``i`` lists the keys after
    bound ``i`` up to bound ``i + 1``.

    The bounds are ends of the discovered ``ranges``, as even in number per pod as they can be; with
    fewer ranges than pods, the ranges widest in key space are first cut at midpoints (within the
    alphabet of the keys discovery saw). Every pod computes them from its own discovery: pods that saw
    the same prefix tree agree, and the operator refuses parts that do not meet (`planresult`).
    """
    pieces = list(ranges) or [(None, None)]
    for _ in range(4 * count):  # each round cuts one range in two, or stops
        if len(pieces) >= count:
            break
        widths = [_width(start, end, prefix, alphabet) for start, end in pieces]
        widest = max(range(len(pieces)), key=lambda i: widths[i])
        start, end = pieces[widest]
        mid = split_point(start, end, prefix, alphabet)
        if mid is None or (start is not None and not mid > start) or (end is not None and not mid < end):
            break
        pieces[widest : widest + 1] = [(start, mid), (mid, end)]
    n = len(pieces)
    if count > 1 and n < 2:
        raise ValueError("the key space cannot be divided")  # a midpoint of the whole space always exists
    # Range ends in order (only the last range is open-ended); equal bounds leave a pod an empty part.
    inner = [pieces[max(1, j * n // count) - 1][1] for j in range(1, count)]
    return [None, *inner, None]


def _width(start: str | None, end: str | None, prefix: str, alphabet: Alphabet) -> float:
    lo = key_value(relative(start, prefix) or "", alphabet)
    hi = 1.0 if end is None else key_value(relative(end, prefix) or "", alphabet)
    return hi - lo


def clip(
    ranges: Sequence[tuple[str | None, str | None]], start_after: str | None, end: str | None
) -> list[tuple[str | None, str | None]]:
    """The parts of ``ranges`` (contiguous, in key order) after ``start_after`` up to ``end``."""
    kept: list[tuple[str | None, str | None]] = []
    for lo, hi in ranges:
        if start_after is not None and (lo is None or lo < start_after):
            lo = start_after
        if end is not None and (hi is None or hi > end):
            hi = end
        if hi is None or lo is None or lo < hi:
            kept.append((lo, hi))
    return kept


def key_at(value: float, alphabet: Alphabet, digits: int = 8) -> str | None:
    """Roughly the inverse of `key_value`: a key (relative to the source prefix) at ``value`` in [0, 1),
    to at most ``digits`` characters of the alphabet, keys in the order of their values; None when a
    character it needs is not a valid one."""
    base = alphabet.high - alphabet.low + 2
    out: list[str] = []
    for _ in range(digits):
        value *= base
        digit = min(int(value), base - 1)
        value -= digit
        if digit == 0:
            # Below the alphabet's lowest character: the key ends here (shorter sorts first).
            return "".join(out) if out else None
        cp = digit + alphabet.low - 1
        if not _valid(cp):
            return None
        out.append(chr(cp))
    return "".join(out)


def extrapolate(first: str, last: str, pages: float, alphabet: Alphabet) -> str | None:
    """A key about ``pages`` pages beyond ``last``, when a page spans ``first`` to ``last``: where to cut
    a range whose keys are dense where it is being listed (one hot directory among sparse ones), since
    the key-space midpoint of such a range would leave the dense part, and all its pages, below the cut.

    Computed on the characters that vary within the page, widened by up to `EXTRAPOLATE_WIDEN` shared
    characters when the jump carries past them (from "d/0120".."d/0139" to "d/0215"). None when the
    page spans nothing or the jump carries further.
    """
    shared = len(common_prefix(first, last))
    for cut in range(shared, max(-1, shared - EXTRAPOLATE_WIDEN - 1), -1):
        v_first, v_last = key_value(first[cut:], alphabet), key_value(last[cut:], alphabet)
        if not v_last > v_first:
            return None
        target = v_last + pages * (v_last - v_first)
        if target < 1.0:
            ahead = key_at(target, alphabet)
            key = None if ahead is None else first[:cut] + ahead
            return key if key is not None and key > last else None
    return None


#: Shared characters `extrapolate` may count as varying when its jump carries past the page's block.
EXTRAPOLATE_WIDEN = 3


def join_levels(
    parts: Sequence[Sequence[Shard]],
    levels: Sequence[Sequence[int]],
    level: int,
    max_pieces: int,
    start_after: str | None = None,
    end: str | None = None,
) -> tuple[list[Shard], list[int], int]:
    """The content-defined pieces of contiguous ranges (`Planner.range_pieces`, each range's planner at
    ``level`` or below) joined as one planner of all their keys holds them (`planning.join_levelled`):
    the pieces, the level of each end and the level reached; the last piece ends at ``end``. Raises
    ValueError when the parts are not contiguous, which would lose keys."""
    flat = [piece for part in parts for piece in part]
    flat_levels = [value for part in levels for value in part]
    if len(flat) != len(flat_levels):
        raise ValueError("the ranges' pieces and their levels do not match")
    if not flat:
        return [Shard(start_after, end, 0, 0)], [BOUNDARY], level
    for before, after in itertools.pairwise(flat):
        if before.end is None or before.end != after.start_after:
            raise ValueError("the ranges' pieces are not contiguous")
    if flat[0].start_after != start_after:
        raise ValueError("the ranges' pieces do not start where the key space does")
    pieces, kept, level = join_levelled(flat, flat_levels, level, max_pieces)
    last = pieces[-1]
    pieces[-1] = Shard(last.start_after, end, last.objects, last.bytes)
    return pieces, kept, level


def probe_directory(
    position: str, end: str | None, prefix: str, exhausted: str | None = None
) -> tuple[str, str] | None:
    """Where a delimiter ("/") listing finds the folders that follow ``position`` in a range ending at
    ``end``: (its Prefix, its StartAfter), or None when the rest of the range is one folder's own keys
    (nothing to list but those keys; cut it by `split_point` or `extrapolate`).

    The folder listed is the deepest one holding both ``position`` and ``end``; when ``exhausted`` (a
    folder whose subfolders this range has already used up, or found none of) is that folder or deeper,
    the folder of ``position`` one level below it. StartAfter skips the subfolder ``position`` is in, so
    every common prefix answered lies after it and holds at least one key: cutting there never probes
    empty key space.
    """
    shared = listing_prefix(position, end, prefix)
    rel = shared[len(prefix) :]
    folder = prefix + rel[: rel.rfind("/") + 1]
    if exhausted is not None and len(exhausted) >= len(folder) and position.startswith(exhausted):
        below = position.find("/", len(exhausted))
        if below < 0:
            return None
        folder = position[: below + 1]
    below = position.find("/", len(folder))
    if below < 0:
        return None
    return folder, position[: below + 1] + CEILING


_DIGITS = frozenset("0123456789")


def numbered_cut(origin: str, first: str, position: str, end: str | None, pages: float) -> str | None:
    """Where to cut the rest of one folder of numbered keys ("object-048284.parquet"), listed from
    ``position``, whose last page began at ``first``: as far beyond ``position`` as ``origin`` (the
    first key seen in the folder) lies before it, at least ``pages`` pages, halved until the cut lies
    before ``end``. The number is the run of digits where ``first`` and ``position`` first differ, kept
    at its width, so the cut falls among the folder's own keys rather than past them, where a midpoint
    of the key space lands (every key ends alike). None when the keys are not numbered so.
    """
    run = _digit_run(first, position)
    if run is None:
        return None
    start, width = run
    head, number, low = position[:start], int(position[start : start + width]), _number(first, start, width)
    if low is None or not low < number:
        return None
    # The folder's first key, when it is numbered alike: the folder likely holds as many keys again.
    seen = _number(origin, start, width) if origin.startswith(head) else None
    step = max(pages * (number - low), number - (low if seen is None or seen > low else seen))
    while step >= 1:
        target = min(10**width - 1, number + int(step))
        cut = head + str(target).zfill(width)
        if target > number and (end is None or cut < end):
            return cut
        step /= 2
    return None


def _number(key: str, start: int, width: int) -> int | None:
    """The run of ``width`` digits at ``start`` of ``key`` as a number (None when there is none)."""
    run = key[start : start + width]
    if len(run) != width or not _DIGITS.issuperset(run) or key[start + width : start + width + 1] in _DIGITS:
        return None
    return int(run)


def numbered_midpoint(first: str, position: str, end: str | None) -> str | None:
    """A cut halfway between ``position`` and ``end`` by the number of a folder of numbered keys (the run
    of digits where ``first`` and ``position`` first differ, as in `numbered_cut`), when ``end`` lies in
    the same folder: a midpoint of the characters would fall on letters the keys hold after their
    numbers (".parquet"), past every key of that block. None when the keys are not numbered so.
    """
    run = _digit_run(first, position)
    if run is None or end is None:
        return None
    start, width = run
    head = position[:start]
    if not end.startswith(head):
        return None
    digits = end[start : start + width]
    digits = digits[: next((i for i, c in enumerate(digits) if c not in _DIGITS), len(digits))]
    if not digits:
        return None
    # End's digits padded with zeros: at most the end, so the cut stays before it.
    number, last = int(position[start : start + width]), int(digits.ljust(width, "0"))
    middle = (number + last) // 2
    return head + str(middle).zfill(width) if middle > number else None


def _digit_run(first: str, position: str) -> tuple[int, int] | None:
    """(start, width) of the run of digits in ``position`` holding the first character where ``first``
    and ``position`` differ, when ``first`` holds a run of the same width there (None otherwise)."""
    shared = len(common_prefix(first, position))
    if shared >= min(len(first), len(position)) or position[shared] not in _DIGITS:
        return None
    start = shared
    while start > 0 and position[start - 1] in _DIGITS:
        start -= 1
    stop = shared
    while stop < len(position) and position[stop] in _DIGITS:
        stop += 1
    if _number(first, start, stop - start) is None:
        return None
    return start, stop - start
