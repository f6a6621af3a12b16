"""Which listed objects a CopyJob copies: prefix-relative globs, sizes and modification times. Pure."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ferry.model import Filter
from ferry.worker.objects import ObjectInfo


@dataclass(frozen=True)
class ObjectFilter:
    """A compiled `spec.filter`.

    Globs use shell rules (``*``, ``?``, ``[ab]``) on the key relative to the source prefix; ``*`` also
    crosses ``/``, so ``tmp/*`` excludes everything below ``tmp/``. Exclude wins over include.
    """

    spec: Filter
    source_prefix: str
    _include: re.Pattern[str] | None
    _exclude: re.Pattern[str] | None

    @classmethod
    def compile(cls, spec: Filter, source_prefix: str) -> ObjectFilter:
        def union(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
            if not patterns:
                return None
            return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.DOTALL)

        return cls(spec, source_prefix, union(spec.include), union(spec.exclude))

    def accepts(self, obj: ObjectInfo) -> bool:
        spec = self.spec
        if spec.min_size is not None and obj.size < spec.min_size:
            return False
        if spec.max_size is not None and obj.size > spec.max_size:
            return False
        if spec.modified_after is not None and obj.last_modified <= spec.modified_after:
            return False
        if spec.modified_before is not None and obj.last_modified >= spec.modified_before:
            return False
        relative = obj.key[len(self.source_prefix) :]
        if self._exclude is not None and self._exclude.match(relative):
            return False
        return self._include is None or bool(self._include.match(relative))
