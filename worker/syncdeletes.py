"""What a sync (`spec.mode: sync`) may delete, and whether it may delete at all. Pure.

Where it sits: after the copy phase of `ferry run` (worker/run.py). The deleter (worker/deleter.py)
lists both sides and feeds their keys through `destination_only`, which says which destination objects
the source no longer holds; it counts them into a `Census`. `decide_deletes` then takes that census,
how the copy ended and `spec.deletes.max` and says delete, or refuse and why, before anything is
deleted. Every refusal keeps every object: a wrong delete cannot be undone, a missing one is one re-run
away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ferry.worker.objects import ObjectInfo

__all__ = [
    "Census",
    "CopyEnd",
    "DeleteDecision",
    "DeleteLimit",
    "Refusal",
    "decide_deletes",
    "destination_only",
    "source_form",
]


@dataclass(frozen=True, slots=True)
class DeleteLimit:
    """`spec.deletes.max`: a count, or a percentage of the destination objects in scope."""

    count: int | None = None
    percent: Decimal | None = None

    @classmethod
    def parse(cls, value: int | str) -> DeleteLimit:
        """The limit the model validated: an integer, or text such as "5%" or "0.5%"."""
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"deletes.max is {value}; a count is 0 or more")
            return cls(count=value)
        if not value.endswith("%"):
            raise ValueError(f"deletes.max {value!r} is neither a count nor a percentage")
        percent = Decimal(value[:-1])
        if not Decimal(0) <= percent <= Decimal(100):
            raise ValueError(f"deletes.max {value!r} is not between 0% and 100%")
        return cls(percent=percent)

    def allowed(self, destination_objects: int) -> int:
        """Deletes allowed when ``destination_objects`` destination objects are in scope (rounded down:
        1% of 150 objects allows 1)."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(Decimal(destination_objects) * self.percent / Decimal(100))

    def describe(self) -> str:
        if self.count is not None:
            return f"{self.count:,}"
        return f"{self.percent}%"


@dataclass(frozen=True, slots=True)
class Census:
    """Both listings of a sync, counted: what is in scope on each side and what would be deleted."""

    #: Source objects in scope (spec.filter accepts them).
    source_objects: int
    #: Destination objects in scope (under destination.prefix, spec.filter accepts them).
    destination_objects: int
    #: Destination objects in scope the source no longer holds: what a sync deletes.
    candidates: int
    #: Both listings ran to their end. A listing that broke off proves nothing about what is absent.
    complete: bool


@dataclass(frozen=True, slots=True)
class CopyEnd:
    """How the copy phase ended, as far as deletes care."""

    #: Listed to its end and every listed object settled (not interrupted, not stopped early).
    complete: bool
    failed: int


class Refusal(StrEnum):
    """Why a sync deletes nothing. Each is also the reason of a condition and the JSON summary."""

    COPY_INCOMPLETE = "CopyIncomplete"
    COPY_FAILURES = "CopyFailures"
    LISTING_INCOMPLETE = "ListingIncomplete"
    SOURCE_EMPTY = "SourceEmpty"
    LIMIT_EXCEEDED = "DeleteLimitExceeded"


@dataclass(frozen=True, slots=True)
class DeleteDecision:
    """Delete at most ``allowed`` objects, or (refusal set) nothing at all."""

    refusal: Refusal | None
    message: str
    candidates: int
    allowed: int

    @property
    def delete(self) -> bool:
        return self.refusal is None and self.candidates > 0


def decide_deletes(copy: CopyEnd, census: Census, limit: DeleteLimit) -> DeleteDecision:
    """Whether a sync may delete its candidates. Checked in order of how much each says about the
    listing's truth: a copy that did not finish, then failures, then a listing that broke off, then an
    empty source (rclone's rule: an empty listing is far likelier an error than a wiped bucket), then
    the limit."""
    allowed = limit.allowed(census.destination_objects)
    candidates = census.candidates

    def refuse(refusal: Refusal, why: str) -> DeleteDecision:
        return DeleteDecision(refusal, f"nothing deleted: {why}", candidates, allowed)

    if not copy.complete:
        return refuse(Refusal.COPY_INCOMPLETE, "the copy did not finish; run again to finish it, then sync")
    if copy.failed:
        return refuse(
            Refusal.COPY_FAILURES,
            f"{copy.failed:,} objects failed to copy; a sync deletes only after a copy without failures",
        )
    if not census.complete:
        return refuse(
            Refusal.LISTING_INCOMPLETE,
            "a listing broke off, so what the source no longer holds is not known; run again",
        )
    if candidates == 0:
        return DeleteDecision(
            None, "nothing to delete: the destination holds nothing the source lacks", 0, allowed
        )
    if census.source_objects == 0:
        return refuse(
            Refusal.SOURCE_EMPTY,
            f"the source listing is empty in scope, and {candidates:,} destination objects would go; check "
            "source.bucket, source.prefix, spec.filter and the source's credentials",
        )
    if candidates > allowed:
        return refuse(
            Refusal.LIMIT_EXCEEDED,
            f"{candidates:,} destination objects are not at the source, more than deletes.max "
            f"({limit.describe()} of {census.destination_objects:,} in scope allows {allowed:,}); check "
            "the source, then raise deletes.max if they really must go",
        )
    return DeleteDecision(
        None, f"{candidates:,} destination objects are not at the source", candidates, allowed
    )


def source_form(key: str, source_prefix: str, destination_prefix: str) -> str:
    """The source key a destination key was (or would have been) copied from: the inverse of
    `keys.destination_key`. The key must be under ``destination_prefix``."""
    if not key.startswith(destination_prefix):
        raise ValueError(f"key {key!r} is outside the destination prefix {destination_prefix!r}")
    return source_prefix + key[len(destination_prefix) :]


def destination_only(
    sources: Iterable[str],
    destinations: Iterable[ObjectInfo],
    to_source: Callable[[str], str],
) -> Iterator[tuple[ObjectInfo, bool]]:
    """Each destination object with whether the source holds its key.

    ``sources`` are every source key under the source prefix, filtered or not: a source object the
    filter skips still exists, so its destination copy is not deleted. Both arrive in listing (UTF-8
    binary) order and ``to_source`` (a prefix swap) keeps it, so one forward pass over each suffices.
    """
    source_iter = iter(sources)
    current = next(source_iter, None)
    for obj in destinations:
        wanted = to_source(obj.key)
        # S3 lists in UTF-8 byte order, which is code-point order: Python's own order of str.
        while current is not None and current < wanted:
            current = next(source_iter, None)
        yield obj, current == wanted
