"""`ferry plan --processes N`: the children's progress added up for the display, and what a child's
progress line may hold (`worker/planprocs.py`), and the hidden --part argument."""

from __future__ import annotations

import argparse

import pytest

from ferry.worker.plancmd import _part
from ferry.worker.planprocs import PROGRESS_TAG, DividedProgress, _Child, _read_progress, progress_line
from ferry.worker.scan import ListingProgress


def child(index: int) -> _Child:
    return _Child(index, None, ListingProgress(), [])  # type: ignore[arg-type]


def test_the_children_s_progress_adds_up_and_ends_with_the_slowest() -> None:
    children = [child(0), child(1)]
    progress = DividedProgress(children)
    progress.update(children[0], ListingProgress(10, 9, 900, 4, 1, 3, 5, 100.0, 20.0))
    assert progress.snapshot().eta_seconds is None  # the other child has not said yet
    progress.update(children[1], ListingProgress(20, 20, 100, 2, 2, 2, 7, 50.5, 60.0))
    assert progress.snapshot() == ListingProgress(30, 29, 1000, 6, 3, 5, 12, 150.5, 60.0)


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '{"listed": 1}',
        '{"listed": 1, "objects": 1, "bytes": 1, "listers": 1, "ranges_done": 0, "ranges_total": 1, '
        '"requests": 1, "keys_per_second": 1.0, "eta_seconds": null, "extra": 1}',
    ],
)
def test_a_progress_line_is_read_only_when_it_is_one(line: str) -> None:
    parsed = _read_progress(line)
    if line.endswith('"extra": 1}'):
        assert parsed == ListingProgress(1, 1, 1, 1, 0, 1, 1, 1.0, None)
    else:
        assert parsed is None


def test_a_child_s_line_reads_back() -> None:
    sent = ListingProgress(5, 4, 3, 2, 1, 2, 9, 12.5, 3.0)
    line = progress_line(sent)
    assert line.startswith(PROGRESS_TAG) and _read_progress(line[len(PROGRESS_TAG) :]) == sent


@pytest.mark.parametrize(("text", "expected"), [("0/2", (0, 2)), ("3/4", (3, 4)), ("15/16", (15, 16))])
def test_a_part_names_an_index_below_its_count(text: str, expected: tuple[int, int]) -> None:
    assert _part(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/17", "0/0", ""])
def test_a_part_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _part(text)
