"""spec.versions all, the pure parts: comparing a key's two histories (worker/versions.py), ordering a
ListObjectVersions page and holding long histories (worker/versionlisting.py), and the spec's rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.worker import versionlisting
from ferry.worker.listing import ListingFailed
from ferry.worker.versionlisting import KeyHistory, histories, join_histories, page_versions
from ferry.worker.versions import Copy, Diverged, Skipped, Version, same_version, walk

T = datetime(2026, 1, 1, tzinfo=UTC)


def obj(version_id: str, size: int = 1, etag: str | None = None, key: str = "k") -> Version:
    return Version(key, version_id, False, size, etag if etag is not None else f"e{size}", T)


def marker(version_id: str, key: str = "k") -> Version:
    return Version(key, version_id, True, 0, "", T)


def steps(source: list[Version], destination: list[Version], recorded: dict[str, str] | None = None) -> list:
    return list(walk(source, destination, lambda v: (recorded or {}).get(v.version_id)))


@pytest.mark.parametrize(
    ("source", "destination", "recorded", "expected"),
    [
        pytest.param(
            [obj("1"), marker("2")], [], None, [Copy(obj("1")), Copy(marker("2"))], id="empty destination"
        ),
        pytest.param(
            [obj("1"), marker("2"), obj("3", 3)],
            [obj("d1"), marker("d2"), obj("d3", 3)],
            None,
            [Skipped(3, 4)],
            id="all there",
        ),
        pytest.param(
            [obj("1"), marker("2"), obj("3", 3)],
            [obj("d1")],
            None,
            [Skipped(1, 1), Copy(marker("2")), Copy(obj("3", 3))],
            id="prefix: the tail is copied in order",
        ),
        pytest.param(
            [obj("1", 5, "a-2")],
            [obj("d1", 5, "b-2")],
            {"d1": "1"},
            [Skipped(1, 5)],
            id="multipart ETags differ, recorded source version matches",
        ),
        pytest.param(
            [obj("1", 5, "a-2"), obj("2")],
            [obj("d1", 5, "b-2")],
            {"d1": "other"},
            [Diverged(0, "", "1", 2, 6)],
            id="recorded source version differs",
        ),
        pytest.param(
            [obj("1"), obj("2", 2)],
            [obj("d1"), marker("d2")],
            None,
            [Diverged(1, "", "2", 2, 3)],
            id="a marker where the source has an object",
        ),
        pytest.param(
            [obj("1"), obj("2", 2)],
            [obj("d1"), obj("d2", 7)],
            None,
            [Diverged(1, "", "2", 2, 3)],
            id="sizes differ",
        ),
        pytest.param(
            [obj("1")],
            [obj("d1"), obj("d2")],
            None,
            [Diverged(1, "", "", 1, 1)],
            id="destination longer than the source",
        ),
        pytest.param([], [], None, [], id="nothing"),
    ],
)
def test_walk(
    source: list[Version], destination: list[Version], recorded: dict[str, str] | None, expected: list
) -> None:
    got = steps(source, destination, recorded)
    # Reasons are prose; everything else is compared exactly.
    assert [
        Diverged(s.position, "", s.version, s.versions, s.bytes) if isinstance(s, Diverged) else s
        for s in got
    ] == expected


def test_a_diverged_key_is_reported_before_any_copy_and_names_the_position() -> None:
    got = steps([obj("1"), obj("2"), obj("3")], [obj("d1"), marker("d2")])
    assert len(got) == 1 and isinstance(got[0], Diverged)
    assert "version 2" in got[0].reason and "delete marker at the destination" in got[0].reason


def test_the_recorded_version_is_read_only_when_size_and_etag_do_not_decide() -> None:
    asked: list[str] = []

    def recorded(v: Version) -> str | None:
        asked.append(v.version_id)
        return None

    assert same_version(obj("1"), obj("d1"), recorded)
    assert not same_version(obj("1", 1), obj("d1", 2), recorded)
    assert same_version(marker("1"), marker("d1"), recorded)
    assert not same_version(marker("1"), obj("d1"), recorded)
    assert asked == []
    assert not same_version(obj("1", 1, "x"), obj("d1", 1, "y"), recorded)
    assert asked == ["d1"]


def entry(key: str, version_id: str, size: int = 1) -> dict:
    return {"Key": key, "VersionId": version_id, "Size": size, "ETag": '"e"', "LastModified": T}


def test_a_page_sent_interleaved_keeps_its_order() -> None:
    page = {
        "Versions": [entry("a", "a3"), entry("a", "a1")],
        "DeleteMarkers": [entry("a", "m2")],
        versionlisting._ORDER: [False, True, False],
    }
    assert [v.version_id for v in page_versions(page)] == ["a3", "m2", "a1"]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        pytest.param({"m2": ("a", "a1")}, ["a3", "m2", "a1", "b1"], id="marker between versions"),
        pytest.param({"m2": ("a", "a3")}, ["m2", "a3", "a1", "b1"], id="marker newest"),
        pytest.param({"m2": ("b", "b1")}, ["a3", "a1", "m2", "b1"], id="marker oldest"),
        pytest.param({"m2": None}, ["a3", "a1", "m2", "b1"], id="marker last of the listing"),
    ],
)
def test_a_page_sent_in_two_blocks_asks_where_each_marker_falls(
    after: dict[str, tuple[str, str] | None], expected: list[str]
) -> None:
    page = {
        "Versions": [entry("a", "a3"), entry("a", "a1"), entry("b", "b1")],
        "DeleteMarkers": [entry("a", "m2")],
        versionlisting._ORDER: [False, False, False, True],
    }
    asked: list[tuple[str, str]] = []

    def successor(key: str, version_id: str) -> tuple[str, str] | None:
        asked.append((key, version_id))
        return after[version_id]

    assert [v.version_id for v in page_versions(page, successor)] == expected
    assert asked == [("a", "m2")]  # one question per marker of a key that has both kinds


def test_consecutive_markers_share_their_place() -> None:
    page = {
        "Versions": [entry("a", "a3"), entry("a", "a1")],
        "DeleteMarkers": [entry("a", "m5"), entry("a", "m4"), entry("a", "m2")],
        versionlisting._ORDER: [False, False, True, True, True],
    }
    after = {"m5": ("a", "m4"), "m4": ("a", "a3"), "m2": ("a", "a1")}
    got = page_versions(page, lambda _k, v: after[v])
    assert [v.version_id for v in got] == ["m5", "m4", "a3", "m2", "a1"]


@pytest.mark.parametrize("version_id", ["", "x" * 1025, "has space", "new\nline", None])
def test_version_ids_a_header_cannot_carry_stop_the_listing(version_id: str | None) -> None:
    with pytest.raises(ListingFailed):
        page_versions({"Versions": [entry("a", version_id)]})  # type: ignore[arg-type]


def test_a_long_history_is_spilled_and_read_back_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versionlisting, "SPILL_VERSIONS", 3)
    newest_first = [obj(str(i), size=i) for i in range(10, 0, -1)]
    history = KeyHistory("k")
    for version in newest_first:
        history.add(version)
        assert history.held < 3
    assert (history.versions, history.bytes, history.largest) == (10, 55, 10)
    assert list(history.oldest_first()) == newest_first[::-1]
    assert list(history.oldest_first()) == newest_first[::-1]  # read again (a re-walk)
    history.close()


def test_a_history_past_the_limit_is_counted_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versionlisting, "SPILL_VERSIONS", 3)
    monkeypatch.setattr(versionlisting, "MAX_HISTORY_VERSIONS", 7)
    history = KeyHistory("k")
    for i in range(10, 0, -1):
        history.add(obj(str(i), size=i))
    assert history.overflowed and (history.versions, history.bytes) == (10, 55)
    assert history.held == 0 and history._file is None  # the spill file is gone


def test_histories_group_keys_and_the_join_pairs_mapped_keys() -> None:
    source = list(histories([obj("2", key="a"), obj("1", key="a"), obj("1", key="b"), obj("1", key="c")]))
    assert [(h.key, h.versions) for h in source] == [("a", 2), ("b", 1), ("c", 1)]
    destination = list(histories([obj("x", key="p/a"), obj("y", key="p/c"), obj("z", key="p/d")]))
    pairs = list(join_histories(source, destination, lambda key: f"p/{key}"))
    assert [(p.source.key, p.destination_key, p.existing.key if p.existing else None) for p in pairs] == [
        ("a", "p/a", "p/a"),
        ("b", "p/b", None),
        ("c", "p/c", "p/c"),
    ]


BASE = {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"versions": "all", "overwrite": "always"}, "overwrite ifDifferent"),
        ({"versions": "all", "overwrite": "never"}, "overwrite ifDifferent"),
        ({"versions": "all", "filter": {"minSize": 1}}, "filters by key only"),
        ({"versions": "all", "filter": {"modifiedAfter": "2026-01-01T00:00:00Z"}}, "filters by key only"),
        (
            {
                "versions": "all",
                "source": {"bucket": "src-bucket", "manifest": {"bucket": "m-bucket", "key": "m"}},
            },
            "manifest",
        ),
        ({"versions": "some"}, "versions"),
        ({"versions": "all", "mode": "sync", "deletes": {"max": 10}}, "mode sync"),
    ],
)
def test_contradictory_versions_specs_are_refused(extra: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        CopyJobSpec.model_validate({**BASE, **extra})


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"versions": "current", "overwrite": "always"},
        {"versions": "all", "filter": {"include": ["a/*"]}},
        # Each version has its evidence line.
        {"versions": "all", "report": {"bucket": "reports", "include": "all"}},
    ],
)
def test_versions_specs_accepted(extra: dict) -> None:
    CopyJobSpec.model_validate({**BASE, **extra})


class Sink:
    """Records what a key's copy reports (the engine's side)."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, int, int]] = []

    def version_copied(self, version: Version) -> None:
        raise AssertionError("nothing may be copied")

    def versions_skipped(self, versions: int, nbytes: int) -> None:
        raise AssertionError("nothing may be skipped")

    def versions_failed(self, failure: object, versions: int, nbytes: int, side: object = None) -> None:
        self.failed.append((failure.code, versions, nbytes))  # type: ignore[attr-defined]


def test_a_key_with_too_many_versions_fails_whole_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.worker.versioncopy import HistoryCopier
    from ferry.worker.versionlisting import HistoryPair

    monkeypatch.setattr(versionlisting, "MAX_HISTORY_VERSIONS", 2)
    source = KeyHistory("k")
    for i in range(3):
        source.add(obj(str(i), size=2))

    def no_request(*_: object) -> None:
        raise AssertionError("no request may be sent")

    copier = HistoryCopier(None, None, "dst-bucket", no_request)  # type: ignore[arg-type]
    sink = Sink()
    assert copier.copy(HistoryPair(source, "k", None), sink) == (0, False)
    assert sink.failed == [("TooManyVersions", 3, 6)]


def test_a_destination_version_that_cannot_be_read_fails_the_key_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ferry.worker.versioncopy import HistoryCopier
    from ferry.worker.versionlisting import HistoryPair

    source, destination = KeyHistory("k"), KeyHistory("k")
    for version in (obj("2", 9), obj("1", 5, "a-2")):  # newest first, as listed
        source.add(version)
    destination.add(obj("d1", 5, "b-2"))  # ETags differ: its recorded source version id must be read

    def refused(*_: object) -> None:
        raise ConnectionError("the destination is gone")

    sink = Sink()
    copier = HistoryCopier(None, None, "dst-bucket", refused)  # type: ignore[arg-type]
    assert copier.copy(HistoryPair(source, "k", destination), sink) == (0, False)
    assert [(versions, nbytes) for _, versions, nbytes in sink.failed] == [(2, 14)]
