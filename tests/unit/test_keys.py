"""Source keys mapped to destination keys, preserving listing order."""

from __future__ import annotations

import pytest

from ferry.worker.keys import destination_key


@pytest.mark.parametrize(
    ("key", "src", "dst", "expected"),
    [
        pytest.param("a/b.txt", "a/", "x/", "x/b.txt", id="swap-prefix"),
        pytest.param("a/b.txt", "", "x/", "x/a/b.txt", id="empty-source-prefix"),
        pytest.param("a/b.txt", "a/", "", "b.txt", id="empty-destination-prefix"),
        pytest.param("a/", "a/", "x/", "x/", id="key-equals-prefix"),
        pytest.param("ab", "a", "zz", "zzb", id="non-slash-prefix"),
        pytest.param(
            "p/d\u00e9j\u00e0 vu+%20.txt",
            "p/",
            "q/",
            "q/d\u00e9j\u00e0 vu+%20.txt",
            id="unicode-and-specials",
        ),
    ],
)
def test_destination_key(key: str, src: str, dst: str, expected: str) -> None:
    assert destination_key(key, src, dst) == expected


@pytest.mark.parametrize(
    ("key", "src"),
    [
        pytest.param("b/x", "a/", id="other-prefix"),
        pytest.param("a", "a/", id="shorter-than-prefix"),
        pytest.param("A/x", "a/", id="case-differs"),
    ],
)
def test_outside_prefix_raises(key: str, src: str) -> None:
    with pytest.raises(ValueError, match="outside the source prefix"):
        destination_key(key, src, "x/")


KEYS = sorted(
    [
        "src/",
        "src/ a",
        "src/%41",
        "src/+plus",
        "src/a",
        "src/a b",
        "src/a%2Fb",
        "src/a+b",
        "src/a/b",
        "src/a/b/c",
        "src/a0",
        "src/a~",
        "src/\u00e9",
        "src/\u4e2d\u6587",
        "src/\U0001f600",
        "src/" + "z" * 1000,
        "src/" + "z" * 999 + "a",
    ],
    key=lambda k: k.encode(),
)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        pytest.param("src/", "dst/", id="same-length"),
        pytest.param("src/", "", id="to-root"),
        pytest.param("src/", "a/much/longer/destination/prefix/", id="longer"),
        pytest.param("src/", "\uffff/", id="high-codepoint-prefix"),
        pytest.param("src", "d", id="no-slash"),
    ],
)
def test_mapping_preserves_utf8_order(src: str, dst: str) -> None:
    mapped = [destination_key(k, src, dst) for k in KEYS]
    assert mapped == sorted(mapped, key=lambda k: k.encode())
    assert mapped == sorted(mapped)
    assert len(set(mapped)) == len(mapped)
