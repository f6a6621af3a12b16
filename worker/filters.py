"""Which listed objects a CopyJob copies: prefix-relative globs, sizes and modification times. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.model import Filter
from ferry.worker.globs import GlobSet
from ferry.worker.objects import ObjectInfo


@dataclass(frozen=True)
class ObjectFilter:
    """A compiled `spec.filter`.

    Globs use shell rules (``*``, ``?``, ``[ab]``) on the key relative to the source prefix; ``*`` also
    crosses ``/``, so ``tmp/*`` excludes everything below ``tmp/``. Exclude wins over include.
    Matching costs one step per character of the key, whatever the patterns (`globs.GlobSet`): a
    tenant's pattern cannot make the listing backtrack.
    """

    spec: Filter
    source_prefix: str
    _include: GlobSet
    _exclude: GlobSet

    @classmethod
    def compile(cls, spec: Filter, source_prefix: str) -> ObjectFilter:
        return cls(spec, source_prefix, GlobSet.compile(spec.include), GlobSet.compile(spec.exclude))

    @property
    def accepts_all(self) -> bool:
        """Whether every object passes (no filter set): the listing then skips asking per object."""
        spec = self.spec
        bounds = (spec.min_size, spec.max_size, spec.modified_after, spec.modified_before)
        return all(b is None for b in bounds) and not self._include and not self._exclude

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
        if self._exclude and self._exclude.matches(relative):
            return False
        return not self._include or self._include.matches(relative)
