"""The resume point of a running shard: the low-water mark of settled objects. Pure; the engine calls it
under its lock.

The engine takes objects in key order (the listing's order), but transfers finish out of order. The mark
is the highest key such that every object taken in up to it is settled (copied, skipped, failed), with
the counts of those objects (`ferry.model.checkpoint.Checkpoint`). Memory is one entry per transfer
still in flight: objects settled after an unsettled one are folded into that entry as counts and a key.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

from ferry.model.checkpoint import Checkpoint, from_counts
from ferry.worker.objects import Outcome

_INDEX = {Outcome.COPIED: 0, Outcome.SKIPPED: 1, Outcome.FAILED: 2}


def _add(counts: list[int], outcome: Outcome, size: int) -> None:
    counts[_INDEX[outcome]] += 1
    counts[3 + _INDEX[outcome]] += size


@dataclass
class _Open:
    """A transfer in flight, and the objects taken in after it that settled before the next one."""

    ticket: int
    key: str
    size: int
    tail_key: str | None = None
    tail: list[int] = field(default_factory=lambda: [0] * 6)


class SettledMark:
    """Tracks the mark from ``base`` (a resumed run's starting point) on; not thread-safe."""

    def __init__(self, base: Checkpoint | None = None) -> None:
        self._after = base.after if base else None
        self._counts = list(base.counts()) if base else [0] * 6
        self._open: list[_Open] = []
        self._tickets = itertools.count()

    @property
    def checkpoint(self) -> Checkpoint | None:
        return from_counts(self._after, self._counts) if self._after is not None else None

    @property
    def open_transfers(self) -> int:
        return len(self._open)

    def settled(self, key: str, outcome: Outcome, size: int) -> None:
        """An object settled as it was taken in (skipped as present, or failed before any transfer)."""
        if not self._open:
            _add(self._counts, outcome, size)
            self._after = key
            return
        last = self._open[-1]
        _add(last.tail, outcome, size)
        last.tail_key = key

    def opened(self, key: str, size: int) -> int:
        """A transfer started for the object ``key``; returns the ticket `closed` takes."""
        ticket = next(self._tickets)
        self._open.append(_Open(ticket, key, size))
        return ticket

    def closed(self, ticket: int, outcome: Outcome) -> None:
        """A transfer ended (copied or failed): fold it and what settled after it into the mark when it
        was the oldest in flight, else into the entry of the transfer before it."""
        # Tickets grow with every transfer opened, so the entries stay sorted by ticket.
        index = bisect.bisect_left(self._open, ticket, key=lambda entry: entry.ticket)
        if index == len(self._open) or self._open[index].ticket != ticket:
            return  # closed already: counting it twice would break the accounting
        entry = self._open.pop(index)
        _add(entry.tail, outcome, entry.size)
        last = entry.tail_key or entry.key
        if index == 0:
            target = self._counts
            self._after = last
        else:
            before = self._open[index - 1]
            target = before.tail
            before.tail_key = last
        for i, value in enumerate(entry.tail):
            target[i] += value
