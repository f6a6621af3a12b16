"""Copy or skip: compare a source object with what the destination already holds. Pure.

The destination side comes from listing the destination range, never from one HEAD per object.
"""

from __future__ import annotations

from ferry.model import Overwrite
from ferry.worker.objects import Action, Decision, ObjectInfo


def decide(source: ObjectInfo, existing: ObjectInfo | None, overwrite: Overwrite) -> Decision:
    """Return what to do with ``source`` given the destination's ``existing`` object, if any.

    ``ifDifferent`` treats objects as equal when sizes match and either both ETags are plain MD5s and
    equal, or (when a multipart ETag makes them incomparable) the destination was written after the
    source: the copy is newer than what it copies.
    """
    if existing is None:
        return Decision(Action.COPY, "absent at destination")
    if overwrite is Overwrite.ALWAYS:
        return Decision(Action.COPY, "overwrite: always")
    if overwrite is Overwrite.NEVER:
        return Decision(Action.SKIP, "present at destination (overwrite: never)")
    if existing.size != source.size:
        return Decision(
            Action.COPY, f"size differs ({existing.size} at destination, {source.size} at source)"
        )
    if not source.is_multipart_etag and not existing.is_multipart_etag:
        if existing.etag == source.etag:
            return Decision(Action.SKIP, "same size and ETag")
        return Decision(Action.COPY, "ETag differs")
    if existing.last_modified >= source.last_modified:
        return Decision(Action.SKIP, "same size, multipart ETag, destination newer than source")
    return Decision(Action.COPY, "same size, multipart ETag, source newer than destination")
