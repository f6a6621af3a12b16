"""Which objects a CopyJob owns. Pure: object bodies (dicts) in, decisions out.

A child (the plan ConfigMap, the progress ledger, the worker Job, the Job's pods) is the CopyJob's only
when its controller ownerReference carries the CopyJob's UID (the Job's UID, for pods). Names prove
nothing: a tenant may create `<name>-plan` before the CopyJob, or a pod carrying the CopyJob's labels.
An object of the right name that the CopyJob does not control is never read as a plan, patched or
deleted; the CopyJob stalls with reason `NameConflict` until someone removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

NAME_CONFLICT = "NameConflict"

#: The kubectl resource name of each child kind, for the command a message suggests.
_RESOURCE = {"ConfigMap": "configmap", "Job": "job"}


class Ownership(StrEnum):
    MISSING = "missing"  # nothing of that name: create it
    OWNED = "owned"  # controlled by this owner: use it
    FOREIGN = "foreign"  # someone else's: leave it alone and stall


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The UID of the object's controller (the ownerReference with `controller: true`), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") is True:
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def ownership(obj: Mapping[str, Any] | None, owner_uid: str) -> Ownership:
    if obj is None:
        return Ownership.MISSING
    return Ownership.OWNED if controller_uid(obj) == owner_uid else Ownership.FOREIGN


def controlled(objects: Iterable[Mapping[str, Any]], owner_uid: str) -> list[Mapping[str, Any]]:
    """Only the objects `owner_uid` controls (e.g. a Job's pods among those carrying its labels)."""
    return [o for o in objects if controller_uid(o) == owner_uid]


def conflict_message(kind: str, obj: Mapping[str, Any], copyjob: str) -> str:
    """What is in the way, where, and what to do; for a `NameConflict` condition and Event."""
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    other = controller_uid(obj)
    if other is None:
        whose = "has no controller ownerReference"
    else:
        # Most often a deleted CopyJob of the same name whose children the garbage collector has not
        # removed yet: that resolves itself within seconds.
        whose = f"is controlled by another object (UID {other}), e.g. a deleted CopyJob of the same name"
    return (
        f"{kind} {namespace}/{name} already exists and {whose}, not by CopyJob {copyjob}; Ferry never "
        f"reads, changes or deletes an object it does not own. Delete it "
        f"(kubectl -n {namespace} delete {_RESOURCE.get(kind, kind.lower())} {name}) or give the CopyJob "
        "another name; the CopyJob continues once the name is free"
    )
