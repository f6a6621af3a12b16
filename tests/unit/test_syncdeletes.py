"""What a sync may delete, and whether: the pure decision, the delete limit and the destination-only join."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from ferry.model.copyjob import CopyJobSpec, Mode
from ferry.worker.objects import ObjectInfo
from ferry.worker.syncdeletes import (
    Census,
    CopyEnd,
    DeleteLimit,
    Refusal,
    decide_deletes,
    destination_only,
    source_form,
)

OK = CopyEnd(complete=True, failed=0)


def census(source: int = 100, destination: int = 100, candidates: int = 3, complete: bool = True) -> Census:
    return Census(source, destination, candidates, complete)


#: name -> (copy end, census, deletes.max, refusal or None, delete?, allowed)
DECISIONS = {
    "within-the-count": (OK, census(), 10, None, True, 10),
    "exactly-the-count": (OK, census(candidates=10), 10, None, True, 10),
    "one-over-the-count": (OK, census(candidates=11), 10, Refusal.LIMIT_EXCEEDED, False, 10),
    "zero-allows-none": (OK, census(candidates=1), 0, Refusal.LIMIT_EXCEEDED, False, 0),
    "zero-with-nothing-to-delete": (OK, census(candidates=0), 0, None, False, 0),
    "percent-within": (OK, census(destination=200, candidates=10), "5%", None, True, 10),
    "percent-over": (OK, census(destination=200, candidates=11), "5%", Refusal.LIMIT_EXCEEDED, False, 10),
    "percent-rounds-down": (
        OK,
        census(destination=150, candidates=2),
        "1%",
        Refusal.LIMIT_EXCEEDED,
        False,
        1,
    ),
    "fraction-of-a-percent": (OK, census(destination=1000, candidates=5), "0.5%", None, True, 5),
    "hundred-percent": (OK, census(destination=7, candidates=7), "100%", None, True, 7),
    "copy-interrupted": (CopyEnd(False, 0), census(), 10, Refusal.COPY_INCOMPLETE, False, 10),
    "copy-with-a-failure": (CopyEnd(True, 1), census(), 10, Refusal.COPY_FAILURES, False, 10),
    "incomplete-beats-failures": (CopyEnd(False, 5), census(), 10, Refusal.COPY_INCOMPLETE, False, 10),
    "listing-broke-off": (OK, census(complete=False), 10, Refusal.LISTING_INCOMPLETE, False, 10),
    "listing-broke-off-before-any-candidate": (
        OK,
        census(candidates=0, complete=False),
        10,
        Refusal.LISTING_INCOMPLETE,
        False,
        10,
    ),
    "source-empty": (OK, census(source=0, candidates=3), 1000, Refusal.SOURCE_EMPTY, False, 1000),
    "source-empty-and-everything-allowed": (
        OK,
        census(source=0, destination=3, candidates=3),
        "100%",
        Refusal.SOURCE_EMPTY,
        False,
        3,
    ),
    "source-empty-nothing-to-delete": (
        OK,
        census(source=0, destination=0, candidates=0),
        10,
        None,
        False,
        10,
    ),
}


@pytest.mark.parametrize("name", list(DECISIONS))
def test_decide_deletes(name: str) -> None:
    copy, counted, limit, refusal, delete, allowed = DECISIONS[name]
    decision = decide_deletes(copy, counted, DeleteLimit.parse(limit))
    assert decision.refusal is refusal
    assert decision.delete is delete
    assert decision.allowed == allowed
    assert decision.candidates == counted.candidates
    if refusal is not None:
        assert decision.message.startswith("nothing deleted: ")


def test_the_limit_message_names_the_counts_and_the_field() -> None:
    decision = decide_deletes(OK, census(destination=2000, candidates=150), DeleteLimit.parse("5%"))
    assert "150" in decision.message and "deletes.max" in decision.message
    assert "5% of 2,000 in scope allows 100" in decision.message


LIMITS = {
    0: DeleteLimit(count=0),
    1000: DeleteLimit(count=1000),
    "5%": DeleteLimit(percent=Decimal(5)),
    "0.25%": DeleteLimit(percent=Decimal("0.25")),
    "100%": DeleteLimit(percent=Decimal(100)),
}


@pytest.mark.parametrize("text", list(LIMITS))
def test_delete_limit_parses(text: int | str) -> None:
    assert DeleteLimit.parse(text) == LIMITS[text]


@pytest.mark.parametrize("text", ["5", "101%", "-1%", "%", "5 %", "1e3%", "0.123%", "50.5.5%", "05%"])
def test_the_model_refuses_a_bad_percentage(text: str) -> None:
    with pytest.raises(ValidationError):
        CopyJobSpec.model_validate(_spec(mode="sync", deletes={"max": text}), by_alias=True, by_name=False)


#: name -> (spec edit, error text or None when valid)
SPECS = {
    "copy-by-default": ({}, None),
    "sync-with-a-count": ({"mode": "sync", "deletes": {"max": 1000}}, None),
    "sync-with-a-percentage": ({"mode": "sync", "deletes": {"max": "5%"}}, None),
    "sync-without-deletes": ({"mode": "sync"}, "needs deletes.max"),
    "deletes-with-copy": ({"mode": "copy", "deletes": {"max": 5}}, "mode is copy"),
    "deletes-without-mode": ({"deletes": {"max": 5}}, "mode is copy"),
    "deletes-without-max": ({"mode": "sync", "deletes": {}}, "max"),
    "negative-count": ({"mode": "sync", "deletes": {"max": -1}}, "max"),
    "count-as-a-bool": ({"mode": "sync", "deletes": {"max": True}}, "max"),
    "sync-from-a-manifest": (
        {
            "mode": "sync",
            "deletes": {"max": 5},
            "source": {"bucket": "src-bucket", "manifest": {"format": "csv", "bucket": "lists", "key": "k"}},
        },
        "manifest",
    ),
    "unknown-mode": ({"mode": "mirror"}, "mode"),
}


def _spec(**edit: object) -> dict[str, object]:
    spec: dict[str, object] = {"source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}
    spec.update(edit)
    return spec


@pytest.mark.parametrize("name", list(SPECS))
def test_the_model_s_sync_rules(name: str) -> None:
    edit, error = SPECS[name]
    raw = _spec(**edit)
    if error is None:
        spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
        assert spec.mode is Mode(edit.get("mode", "copy"))
        return
    with pytest.raises(ValidationError) as raised:
        CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    assert error in str(raised.value)


def _obj(key: str) -> ObjectInfo:
    return ObjectInfo(key, 1, "e", datetime(2024, 1, 1, tzinfo=UTC))


#: name -> (source keys, destination keys, destination keys the source lacks)
JOINS = {
    "nothing-at-the-destination": (["s/a", "s/b"], [], []),
    "everything-in-place": (["s/a", "s/b"], ["d/a", "d/b"], []),
    "source-empty": ([], ["d/a", "d/b"], ["d/a", "d/b"]),
    "gaps-at-both-ends": (["s/b", "s/c"], ["d/a", "d/b", "d/c", "d/d"], ["d/a", "d/d"]),
    "interleaved": (["s/a", "s/c", "s/e"], ["d/b", "d/c", "d/d"], ["d/b", "d/d"]),
    "a-key-and-its-children": (["s/x"], ["d/x", "d/x/", "d/x/y"], ["d/x/", "d/x/y"]),
    # S3's UTF-8 byte order is code-point order, beyond the BMP too (UTF-16 would differ).
    "beyond-the-bmp": (
        ["s/\ufffd", "s/\U00010000"],
        ["d/\ufffd", "d/\U00010000", "d/\U00010001"],
        ["d/\U00010001"],
    ),
}


@pytest.mark.parametrize("name", list(JOINS))
def test_destination_only(name: str) -> None:
    sources, destinations, expected = JOINS[name]
    joined = list(destination_only(sources, map(_obj, destinations), lambda k: source_form(k, "s/", "d/")))
    assert [obj.key for obj, _ in joined] == destinations  # every destination object, once, in order
    assert [obj.key for obj, at_source in joined if not at_source] == expected


def test_source_form_refuses_a_key_outside_the_destination_prefix() -> None:
    assert source_form("d/x", "s/", "d/") == "s/x"
    with pytest.raises(ValueError, match="outside the destination prefix"):
        source_form("e/x", "s/", "d/")
