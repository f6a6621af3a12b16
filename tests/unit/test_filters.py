"""spec.filter compiled against listed objects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ferry.model import Filter
from ferry.worker.filters import ObjectFilter
from ferry.worker.objects import ObjectInfo

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 6, 1, tzinfo=UTC)
MID = datetime(2024, 3, 1, tzinfo=UTC)


def obj(key: str, size: int = 100, modified: datetime = MID) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag='"abc"', last_modified=modified)


@pytest.mark.parametrize(
    ("spec", "prefix", "key", "accepted"),
    [
        pytest.param({}, "", "anything", True, id="empty-filter-accepts"),
        pytest.param({"include": ("*.csv",)}, "data/", "data/a.csv", True, id="include-match"),
        pytest.param({"include": ("*.csv",)}, "data/", "data/a.txt", False, id="include-miss"),
        pytest.param({"include": ("*.csv",)}, "data/", "data/deep/dir/a.csv", True, id="star-crosses-slash"),
        pytest.param({"include": ("a.csv",)}, "data/", "data/a.csv", True, id="relative-to-prefix"),
        pytest.param(
            {"include": ("data/a.csv",)}, "data/", "data/a.csv", False, id="not-matched-on-full-key"
        ),
        pytest.param({"include": ("*.csv", "*.json")}, "", "x.json", True, id="any-include-matches"),
        pytest.param({"include": ("?.csv",)}, "", "ab.csv", False, id="question-mark-one-char"),
        pytest.param({"include": ("[ab].csv",)}, "", "b.csv", True, id="char-class"),
        pytest.param({"include": ("a*",)}, "", "xa", False, id="anchored-at-start"),
        pytest.param({"include": ("*.csv",)}, "", "a.csv.bak", False, id="anchored-at-end"),
        pytest.param({"exclude": ("tmp/*",)}, "data/", "data/tmp/x/y.csv", False, id="exclude-below-dir"),
        pytest.param({"exclude": ("tmp/*",)}, "data/", "data/keep/tmp/x", True, id="exclude-relative"),
        pytest.param(
            {"include": ("*.csv",), "exclude": ("tmp/*",)},
            "data/",
            "data/tmp/a.csv",
            False,
            id="exclude-wins",
        ),
        pytest.param(
            {"include": ("*.csv",), "exclude": ("tmp/*",)},
            "data/",
            "data/ok/a.csv",
            True,
            id="include-not-excluded",
        ),
        pytest.param({"include": ("*",)}, "p/", "p/line\nbreak", True, id="star-crosses-newline"),
    ],
)
def test_globs(spec: dict[str, object], prefix: str, key: str, accepted: bool) -> None:
    compiled = ObjectFilter.compile(Filter(**spec), prefix)
    assert compiled.accepts(obj(key)) is accepted


@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        pytest.param(99, False, id="below-min"),
        pytest.param(100, True, id="at-min-inclusive"),
        pytest.param(150, True, id="between"),
        pytest.param(200, True, id="at-max-inclusive"),
        pytest.param(201, False, id="above-max"),
    ],
)
def test_size_bounds_inclusive(size: int, accepted: bool) -> None:
    compiled = ObjectFilter.compile(Filter(min_size=100, max_size=200), "")
    assert compiled.accepts(obj("k", size=size)) is accepted


@pytest.mark.parametrize(
    ("modified", "accepted"),
    [
        pytest.param(datetime(2023, 12, 31, tzinfo=UTC), False, id="before-after-bound"),
        pytest.param(T0, False, id="at-after-bound-exclusive"),
        pytest.param(MID, True, id="inside"),
        pytest.param(T1, False, id="at-before-bound-exclusive"),
        pytest.param(datetime(2024, 7, 1, tzinfo=UTC), False, id="after-before-bound"),
    ],
)
def test_modified_bounds_exclusive(modified: datetime, accepted: bool) -> None:
    compiled = ObjectFilter.compile(Filter(modified_after=T0, modified_before=T1), "")
    assert compiled.accepts(obj("k", modified=modified)) is accepted


def test_size_and_glob_both_apply() -> None:
    compiled = ObjectFilter.compile(Filter(include=("*.csv",), min_size=10), "")
    assert compiled.accepts(obj("a.csv", size=10))
    assert not compiled.accepts(obj("a.csv", size=9))
    assert not compiled.accepts(obj("a.txt", size=10))
