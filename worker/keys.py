"""How a source key becomes a destination key. Pure."""

from __future__ import annotations


def destination_key(source_key: str, source_prefix: str, destination_prefix: str) -> str:
    """Replace the source prefix by the destination prefix.

    Replacing one common prefix by another keeps the listing order, which is what lets the engine
    merge-join the source and destination listings instead of asking for each object.
    """
    if not source_key.startswith(source_prefix):
        raise ValueError(f"key {source_key!r} is outside the source prefix {source_prefix!r}")
    return destination_prefix + source_key[len(source_prefix) :]
