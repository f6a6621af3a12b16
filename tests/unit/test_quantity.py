"""Kubernetes quantity parsing and formatting of byte sizes."""

from __future__ import annotations

import re

import pytest

from ferry.model.quantity import (
    QUANTITY_SCHEMA_PATTERN,
    format_bytes,
    parse_bytes,
    to_display_quantity,
    to_quantity,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, 0, id="int-zero"),
        pytest.param(1500, 1500, id="int"),
        pytest.param("1500", 1500, id="plain-string"),
        pytest.param("100Ki", 100 * 1024, id="Ki"),
        pytest.param("4Mi", 4 * 2**20, id="Mi"),
        pytest.param("5Gi", 5 * 2**30, id="Gi"),
        pytest.param("2Ti", 2 * 2**40, id="Ti"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("1E6", 10**6, id="exponent-upper"),
        pytest.param("1.5e3", 1500, id="fractional-mantissa-exponent"),
        pytest.param("1.5Ki", 1536, id="fractional-binary"),
        pytest.param(".5Ki", 512, id="leading-dot"),
        pytest.param("10M", 10_000_000, id="decimal-M"),
        pytest.param("3k", 3000, id="decimal-k"),
        pytest.param("2G", 2 * 10**9, id="decimal-G"),
        pytest.param("+5", 5, id="plus-sign"),
        pytest.param("1.0", 1, id="whole-decimal"),
    ],
)
def test_parse_bytes_accepts(value: str | int, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("-1", "not a quantity", id="negative-string"),
        pytest.param(-1, "negative", id="negative-int"),
        pytest.param("1.5", "whole number", id="fractional-bytes"),
        pytest.param("1e-3", "whole number", id="negative-exponent-fraction"),
        pytest.param("abc", "not a quantity", id="letters"),
        pytest.param("5XB", "not a quantity", id="unknown-suffix"),
        pytest.param("5KB", "not a quantity", id="KB-suffix"),
        pytest.param("5ki", "not a quantity", id="lowercase-binary"),
        pytest.param("", "not a quantity", id="empty"),
        pytest.param("Ki", "not a quantity", id="suffix-only"),
        pytest.param("1e3Ki", "not a quantity", id="exponent-and-suffix"),
        pytest.param(True, "not a quantity", id="bool-true"),
        pytest.param(False, "not a quantity", id="bool-false"),
    ],
)
def test_parse_bytes_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_bytes(value)  # type: ignore[arg-type]


def test_parse_bytes_error_shows_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"100Ki.*4Mi"):
        parse_bytes("lots")


def test_parse_bytes_huge_exponent_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_bytes("1e9999999")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\u0661\u0660", id="arabic-indic-digits"),
        pytest.param("\uff15Mi", id="fullwidth-digit"),
    ],
)
def test_parse_bytes_rejects_non_ascii_digits(value: str) -> None:
    assert not re.match(QUANTITY_SCHEMA_PATTERN, value)
    with pytest.raises(ValueError):
        parse_bytes(value)


@pytest.mark.parametrize(
    "value",
    ["0", "1500", "100Ki", "4Mi", "5Gi", "1e3", "1.5Ki", "10M", "+5", ".5Ki", "1E6", "7Ei"],
)
def test_schema_pattern_accepts_what_parse_bytes_accepts(value: str) -> None:
    parse_bytes(value)
    assert re.match(QUANTITY_SCHEMA_PATTERN, value)


@pytest.mark.parametrize("value", ["-1", "abc", "5XB", "5ki", "", "1e3Ki"])
def test_schema_pattern_rejects_what_parse_bytes_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(value)
    assert not re.match(QUANTITY_SCHEMA_PATTERN, value)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1, "1 B", id="one"),
        pytest.param(1023, "1023 B", id="just-below-KiB"),
        pytest.param(1024, "1.0 KiB", id="KiB"),
        pytest.param(1536, "1.5 KiB", id="one-and-a-half-KiB"),
        pytest.param(5 * 2**20, "5.0 MiB", id="MiB"),
        pytest.param(3 * 2**30, "3.0 GiB", id="GiB"),
        pytest.param(2**40, "1.0 TiB", id="TiB"),
        pytest.param(2**50, "1.0 PiB", id="PiB"),
        pytest.param(2**60, "1024.0 PiB", id="stays-PiB"),
        pytest.param(-2048, "-2.0 KiB", id="negative"),
    ],
)
def test_format_bytes(count: float, expected: str) -> None:
    assert format_bytes(count) == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1, "1", id="one"),
        pytest.param(1000, "1000", id="decimal-thousand"),
        pytest.param(1023, "1023", id="not-binary"),
        pytest.param(1024, "1Ki", id="Ki"),
        pytest.param(1536, "1536", id="not-whole-Ki"),
        pytest.param(100 * 2**20, "100Mi", id="Mi"),
        pytest.param(2**30, "1Gi", id="Gi-not-1024Mi"),
        pytest.param(3 * 2**40, "3Ti", id="Ti"),
        pytest.param(2**60, "1Ei", id="Ei"),
        pytest.param(2**70, "1024Ei", id="beyond-Ei"),
    ],
)
def test_to_quantity(count: int, expected: str) -> None:
    assert to_quantity(count) == expected


@pytest.mark.parametrize(
    "count",
    [0, 1, 999, 1024, 1025, 4096, 10**6, 5 * 2**20, 5 * 2**20 + 1, 2**33, 10**15, 2**62 + 1024],
)
def test_to_quantity_round_trips(count: int) -> None:
    quantity = to_quantity(count)
    assert parse_bytes(quantity) == count
    assert re.match(QUANTITY_SCHEMA_PATTERN, quantity)


@pytest.mark.parametrize("text", ["100Ki", "4Mi", "5Gi", "1Ti"])
def test_parse_then_format_round_trips(text: str) -> None:
    assert to_quantity(parse_bytes(text)) == text


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1023, "1023", id="below-Ki"),
        pytest.param(1024, "1Ki", id="Ki"),
        pytest.param(1536, "1.5Ki", id="one-and-a-half-Ki"),
        pytest.param(77_700_000, "74.1Mi", id="a-worker-peak"),
        pytest.param(256 * 2**20, "256Mi", id="exact-stays-exact"),
        pytest.param(256 * 2**20 + 1, "256Mi", id="rounded"),
        pytest.param(3 * 2**30 + 2**29, "3.5Gi", id="Gi"),
        pytest.param(10**15, "909.5Ti", id="Ti"),
        pytest.param(2**70 + 1, "1024Ei", id="beyond-Ei"),
    ],
)
def test_to_display_quantity(count: int, expected: str) -> None:
    assert to_display_quantity(count) == expected
    # Kubernetes notation: a quantity a person can paste into spec.resources.memory, if not always exact.
    assert re.match(QUANTITY_SCHEMA_PATTERN, expected)
