"""Key-space arithmetic of the parallel listing (worker/keyspace.py): midpoints strictly inside a range,
made of characters S3 keys may hold; the Prefix that lists a range; ranges from discovered prefixes that
cover every key; and pieces of ranges joined into one contiguous cover in key order."""

from __future__ import annotations

import bisect
import itertools
import random

import pytest

from ferry.model.plan import Shard
from ferry.worker.keyspace import (
    CEILING,
    MAX_MIDPOINT_BYTES,
    Alphabet,
    extrapolate,
    join_pieces,
    key_at,
    key_value,
    listing_prefix,
    midpoint,
    numbered_cut,
    probe_directory,
    ranges_from_prefixes,
    remaining_estimate,
    split_point,
)

DIGITS = Alphabet(ord("0"), ord("9"))
ASCII = Alphabet()


def usable(text: str) -> bool:
    """What a midpoint must be: valid UTF-8, no control character, no XML-forbidden non-character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(ord(c) >= 0x20 and ord(c) not in (0xFFFE, 0xFFFF) for c in text)


@pytest.mark.parametrize(
    ("lo", "hi", "alphabet", "expected"),
    [
        pytest.param("00500", None, DIGITS, "5", id="open-end-digits-stays-in-digits"),
        pytest.param("", "5", DIGITS, "2", id="from-the-start"),
        pytest.param("00500", "1", DIGITS, "05", id="adjacent-first-digit-descends"),
        pytest.param("a", "b", DIGITS, "a4", id="neighbours-descend-into-the-alphabet"),
        pytest.param("z", None, ASCII, "|", id="above-the-last-letter"),
        pytest.param("a", "a ", ASCII, None, id="nothing-between-neighbours"),
        pytest.param("", " ", ASCII, None, id="nothing-below-a-space"),
        pytest.param("", "  ", ASCII, " ", id="a-prefix-of-hi"),
        pytest.param("ab", "ab\x00", ASCII, None, id="only-control-characters-between"),
        pytest.param("a", "a/b", ASCII, "a'", id="key-that-is-a-prefix-of-the-other"),
        pytest.param("a//", "a//b", ASCII, "a//@", id="slash-runs"),
        pytest.param("~", None, ASCII, "~O", id="top-of-the-alphabet-descends"),
        pytest.param("b", "a", ASCII, None, id="reversed"),
        pytest.param("a", "a", ASCII, None, id="equal"),
    ],
)
def test_midpoints(lo: str, hi: str | None, alphabet: Alphabet, expected: str | None) -> None:
    mid = midpoint(lo, hi, alphabet)
    assert mid == expected
    if mid is not None:
        assert lo < mid and (hi is None or mid < hi) and usable(mid)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        pytest.param("\ud7ff", "\ue000", id="around-the-surrogates"),
        pytest.param("\ud7fe", "\ue001", id="across-the-surrogates"),
        pytest.param("\ufffd", "\U00010000", id="around-the-non-characters"),
        pytest.param("日本", "日本語", id="cjk"),
        pytest.param("🙂", "🙃", id="astral-neighbours"),
        pytest.param("a", CEILING, id="up-to-the-ceiling"),
    ],
)
def test_midpoints_never_produce_surrogates_or_non_characters(lo: str, hi: str) -> None:
    for alphabet in (ASCII, Alphabet(0x20, 0x10FFFF), Alphabet(0xD000, 0xE100)):
        mid = midpoint(lo, hi, alphabet)
        if mid is not None:
            assert lo < mid < hi and usable(mid), (lo, hi, mid)


def random_key(rng: random.Random) -> str:
    pools = [
        "0123456789",
        "abcdefghijklmnopqrstuvwxyz/",
        "/",
        " !~",
        "äöü日本語🙂\U0010fffd\ud7ff\ue000",
    ]
    pool = rng.choice(pools) + "ab/"
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))


def test_a_midpoint_lies_strictly_between_for_many_random_pairs() -> None:
    rng = random.Random(1234)
    found = 0
    for _ in range(20_000):
        a, b = random_key(rng), random_key(rng)
        lo, hi = min(a, b), max(a, b)
        hi_or_open = None if rng.random() < 0.2 else hi
        alphabet = rng.choice([ASCII, DIGITS, Alphabet(0x20, 0x10FFFF), Alphabet.of([a, b]) or ASCII])
        mid = midpoint(lo, hi_or_open, alphabet)
        if mid is None:
            # Only when nothing usable lies between: hi is lo with characters below the space appended,
            # or the two are equal.
            assert hi_or_open is not None
            assert lo == hi_or_open or (hi_or_open.startswith(lo) and hi_or_open[len(lo)] <= " ")
            continue
        found += 1
        assert lo < mid, (lo, hi_or_open, mid)
        assert hi_or_open is None or mid < hi_or_open, (lo, hi_or_open, mid)
        assert usable(mid) and len(mid.encode()) <= MAX_MIDPOINT_BYTES
    assert found > 15_000


def test_repeated_cuts_converge_within_a_bounded_number_of_steps() -> None:
    """Cutting the lower part again and again (what empty probes do) ends: a gap cannot be cut forever."""
    rng = random.Random(7)
    for _ in range(200):
        lo = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8)))
        hi: str | None = None
        steps = 0
        while (mid := midpoint(lo, hi, DIGITS)) is not None:
            assert lo < mid and (hi is None or mid < hi)
            hi = mid
            steps += 1
            assert steps < 5_000
        assert steps > 0


@pytest.mark.parametrize(
    ("start", "end", "prefix", "expected"),
    [
        pytest.param(None, None, "data/", "data/", id="whole-space"),
        pytest.param("data/a/1", "data/a/9", "data/", "data/a/", id="common-part"),
        pytest.param("data/a/" + CEILING, "data/b/" + CEILING, "data/", "data/", id="sibling-prefixes"),
        pytest.param("data/x", None, "data/", "data/", id="open-end"),
        pytest.param("data/abc", "data/abd", "", "data/ab", id="empty-source-prefix"),
    ],
)
def test_listing_prefix_is_the_common_part_of_the_bounds(
    start: str | None, end: str | None, prefix: str, expected: str
) -> None:
    assert listing_prefix(start, end, prefix) == expected


@pytest.mark.parametrize(
    ("position", "end", "prefix", "expected"),
    [
        pytest.param("data/00500", None, "data/", "data/5", id="open-end"),
        pytest.param(None, "data/5", "data/", "data/2", id="not-started"),
        pytest.param("data/00500", "data/00500 ", "data/", None, id="no-room"),
        pytest.param(None, "data/", "data/", None, id="end-at-the-prefix"),
    ],
)
def test_split_points_lie_under_the_prefix(
    position: str | None, end: str | None, prefix: str, expected: str | None
) -> None:
    assert split_point(position, end, prefix, DIGITS) == expected


KEYS = sorted(
    [
        "a",
        "a/",
        "a/b",
        "a//b",
        "a/b/c",
        "a0",
        "b/x",
        "b/x/y/z",
        "b" + CEILING,
        "c",
        "d/",
        "ü/日本語/🙂",
        "z🙂x",
        "\U0010fffd",
    ]
)


@pytest.mark.parametrize(
    "prefixes",
    [
        pytest.param([], id="none"),
        pytest.param(["a/", "b/", "d/"], id="top-level"),
        pytest.param(["a/", "a//", "a/b/", "b/", "b/x/", "b/x/y/", "d/", "ü/"], id="nested"),
    ],
)
def test_ranges_from_prefixes_put_every_key_in_exactly_one_range(prefixes: list[str]) -> None:
    for most in (1, 2, 3, 100):
        ranges = ranges_from_prefixes(prefixes, most)
        assert len(ranges) <= max(most, 1) or not prefixes
        assert ranges[0][0] is None and ranges[-1][1] is None
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end == start
        for key in KEYS:
            hits = [r for r in ranges if (r[0] is None or key > r[0]) and (r[1] is None or key <= r[1])]
            assert len(hits) == 1, (key, hits)


def test_a_prefix_range_ends_after_every_key_under_it() -> None:
    ranges = ranges_from_prefixes(["a/"], 10)
    assert ranges == [(None, "a/" + CEILING), ("a/" + CEILING, None)]
    first = ranges[0][1]
    assert first is not None and all(k <= first for k in ["a/", "a/zzz", "a/🙂", "a/\U0010fffd"])
    assert first < "a0" and first < "b"  # objects after the prefix fall in the next range


def test_a_folder_with_subfolders_found_adds_no_range_of_its_own() -> None:
    # "t/" holds "t/2021/" and "t/2022/": a range from "t/2022/" to "t/" would hold only keys directly in
    # "t/" after its last subfolder, mostly none; those fall in the next range instead.
    ranges = ranges_from_prefixes(["t/", "t/2021/", "t/2022/", "u/"], 10)
    assert ranges == [
        (None, "t/2021/" + CEILING),
        ("t/2021/" + CEILING, "t/2022/" + CEILING),
        ("t/2022/" + CEILING, "u/" + CEILING),
        ("u/" + CEILING, None),
    ]


DAY = "tenant-00/2022/07/10/object-"


@pytest.mark.parametrize(
    ("position", "end", "prefix", "exhausted", "probe"),
    [
        # The folder holding both ends, after the subfolder the position is in.
        pytest.param(
            DAY + "1.parquet",
            "tenant-00/2022/" + CEILING,
            "",
            None,
            ("tenant-00/2022/", "tenant-00/2022/07/" + CEILING),
            id="months-after-this-one",
        ),
        # That folder's subfolders are used up: one level below it, in the position's subfolder.
        pytest.param(
            DAY + "1.parquet",
            "tenant-00/2022/08/",
            "",
            "tenant-00/2022/",
            ("tenant-00/2022/07/", "tenant-00/2022/07/10/" + CEILING),
            id="days-after-this-one",
        ),
        pytest.param(DAY + "1", None, "", None, ("", "tenant-00/" + CEILING), id="open-end"),
        pytest.param(
            "data/" + DAY + "1",
            None,
            "data/",
            None,
            ("data/", "data/tenant-00/" + CEILING),
            id="source-prefix",
        ),
        # The rest is one folder's own keys, or a bucket without folders: nothing to probe.
        pytest.param(DAY + "1", DAY + "5", "", "tenant-00/2022/07/", None, id="within-one-folder"),
        pytest.param("object-0001", None, "", None, None, id="flat"),
    ],
)
def test_a_probe_lists_the_folders_after_the_position(
    position: str, end: str | None, prefix: str, exhausted: str | None, probe: tuple[str, str] | None
) -> None:
    assert probe_directory(position, end, prefix, exhausted) == probe
    if probe is not None:
        folder, start_after = probe
        assert folder.startswith(prefix) and position.startswith(folder)
        assert start_after > position  # every folder answered lies after the position


@pytest.mark.parametrize(
    ("origin", "first", "position", "end", "cut"),
    [
        # 48,285 keys seen in the folder: it likely holds as many again.
        pytest.param(
            DAY + "000000.p", DAY + "047285.p", DAY + "048284.p", None, DAY + "096568", id="doubles"
        ),
        # Just entered the folder: at least four pages ahead.
        pytest.param(DAY + "047285.p", DAY + "047285.p", DAY + "048284.p", None, DAY + "052280", id="pages"),
        # Halved until the cut lies before the range's end.
        pytest.param(
            DAY + "047285.p", DAY + "047285.p", DAY + "048284.p", DAY + "049", DAY + "048783", id="end"
        ),
        pytest.param(
            DAY + "047285.p", DAY + "047285.p", DAY + "048284.p", DAY + "048285", None, id="no-room"
        ),
        # Capped at the width of the number.
        pytest.param(DAY + "000000.p", DAY + "900000.p", DAY + "990000.p", None, DAY + "999999", id="width"),
        pytest.param("k/abc", "k/abc", "k/abd", None, None, id="not-numbered"),
        pytest.param("k/7", "k/7a", "k/7b", None, None, id="varies-after-the-digits"),
    ],
)
def test_a_folder_of_numbered_keys_is_cut_among_its_own_numbers(
    origin: str, first: str, position: str, end: str | None, cut: str | None
) -> None:
    assert numbered_cut(origin, first, position, end, 4) == cut
    if cut is not None:
        assert cut > position and (end is None or cut < end)


def piece(start: str | None, end: str | None, objects: int) -> Shard:
    return Shard(start, end, objects, objects * 10)


@pytest.mark.parametrize(
    ("parts", "most", "expected"),
    [
        pytest.param([], 10, [piece(None, None, 0)], id="nothing-listed"),
        pytest.param(
            [[piece(None, "m", 0)], [piece("m", None, 0)]], 10, [piece(None, None, 0)], id="all-empty"
        ),
        pytest.param(
            [[piece(None, "c", 2), piece("c", "m", 1)], [piece("m", "q", 0)], [piece("q", None, 3)]],
            10,
            [piece(None, "c", 2), piece("c", "q", 1), piece("q", None, 3)],
            id="empty-range-merges-into-its-neighbour",
        ),
        pytest.param(
            [[piece(None, "b", 0)], [piece("b", "c", 4)], [piece("c", "z", 2)]],
            10,
            [piece(None, "c", 4), piece("c", None, 2)],
            id="leading-empty-merges-forward-and-last-opens",
        ),
        pytest.param(
            [[piece(None, "b", 1), piece("b", "c", 1), piece("c", "d", 1)], [piece("d", None, 1)]],
            2,
            [piece(None, "c", 2), piece("c", None, 2)],
            id="coarsened-to-the-bound",
        ),
    ],
)
def test_join_pieces(parts: list[list[Shard]], most: int, expected: list[Shard]) -> None:
    assert join_pieces(parts, most) == expected


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([[piece(None, "b", 1)], [piece("c", None, 1)]], id="gap"),
        pytest.param([[piece("a", "b", 1)], [piece("b", None, 1)]], id="not-from-the-start"),
        pytest.param([[piece(None, None, 1)], [piece("b", None, 1)]], id="open-in-the-middle"),
    ],
)
def test_join_pieces_refuses_what_would_lose_keys(parts: list[list[Shard]]) -> None:
    with pytest.raises(ValueError, match=r"contiguous|start where"):
        join_pieces(parts, 10)


def test_joined_pieces_hold_every_key_exactly_once() -> None:
    rng = random.Random(99)
    keys = sorted({random_key(rng) for _ in range(3000)} - {""})
    cuts = sorted(set(rng.sample(keys, 40)))
    bounds: list[str | None] = [None, *cuts, None]
    parts = []
    for start, end in itertools.pairwise(bounds):
        lo = 0 if start is None else bisect.bisect_right(keys, start)
        hi = len(keys) if end is None else bisect.bisect_right(keys, end)
        parts.append([Shard(start, end, hi - lo, 0)])
    joined = join_pieces(parts, 16)
    assert len(joined) <= 16 and sum(p.objects for p in joined) == len(keys)
    for key in keys:
        hits = [
            p
            for p in joined
            if (p.start_after is None or key > p.start_after) and (p.end is None or key <= p.end)
        ]
        assert len(hits) == 1


@pytest.mark.parametrize(
    ("first", "position", "end", "listed", "expected"),
    [
        pytest.param("d/000", "d/499", None, 500, float("inf"), id="open-end-unknown"),
        pytest.param("d/000", "d/000", "d/999", 0, float("inf"), id="nothing-listed"),
        pytest.param("d/000", "d/499", "d/999", 499, 500.0, id="half-way"),
        pytest.param("d/000", "d/999", "d/999", 999, 0.0, id="at-the-end"),
    ],
)
def test_remaining_estimate_from_density(
    first: str, position: str, end: str | None, listed: int, expected: float
) -> None:
    estimate = remaining_estimate(first, position, end, listed, "d/", DIGITS)
    assert estimate == pytest.approx(expected, rel=0.02)


def test_key_values_follow_key_order() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        a = "".join(rng.choice("0123456789") for _ in range(6))
        b = "".join(rng.choice("0123456789") for _ in range(6))
        if a < b:
            assert key_value(a, DIGITS) <= key_value(b, DIGITS)


@pytest.mark.parametrize(
    "alphabet", [DIGITS, ASCII, Alphabet(0x20, 0x1F600)], ids=["digits", "ascii", "emoji"]
)
def test_key_at_inverts_key_value_in_key_order(alphabet: Alphabet) -> None:
    values = [i / 97 for i in range(1, 97)]
    keys = [key_at(v, alphabet) for v in values]
    usable_keys = [k for k in keys if k is not None]
    assert usable_keys == sorted(usable_keys)
    base = alphabet.high - alphabet.low + 2
    for value, key in zip(values, keys, strict=True):
        if key is not None:
            assert usable(key)
            assert key_value(key, alphabet) == pytest.approx(value, abs=1 / base)


@pytest.mark.parametrize(
    ("first", "last", "pages", "alphabet", "above", "below"),
    [
        # A dense numbered block: a few pages of 100 keys beyond the last key, still in the block.
        pytest.param("hot/00100", "hot/00199", 4, DIGITS, "hot/00300", "hot/00999", id="numbered"),
        pytest.param(
            "hot/00120", "hot/00139", 4, DIGITS, "hot/00150", "hot/00300", id="carried-past-the-block"
        ),
        # Keys of a wider alphabet: the cut stays near, within the next few blocks.
        pytest.param("hot/00100", "hot/00199", 4, ASCII, "hot/00199", "hot/01", id="wide-alphabet"),
        pytest.param("p/a7285.x", "p/a8284.x", 4, ASCII, "p/a8284.x", "p/b", id="numbered-with-a-suffix"),
        # Far beyond what the page's own characters can say.
        pytest.param("hot/00100", "hot/00199", 10**6, DIGITS, None, None, id="too-far"),
        pytest.param("hot/00100", "hot/00100", 4, DIGITS, None, None, id="one-key-page"),
    ],
)
def test_extrapolate_cuts_a_few_pages_ahead_not_past_the_next_blocks(
    first: str, last: str, pages: float, alphabet: Alphabet, above: str | None, below: str | None
) -> None:
    ahead = extrapolate(first, last, pages, alphabet)
    if above is None or below is None:
        assert ahead is None
    else:
        assert ahead is not None and usable(ahead)
        assert last <= above <= ahead < below
