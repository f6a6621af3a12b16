"""A CopyJob's children as one pass handles them: created owned, and trusted only when owned.

Names prove nothing (`ownership.py`): a child of the right name that the CopyJob does not control
stalls it with `NameConflict`; one the API server refuses stalls it with the caller's reason.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ferry.operator.errors import Stalled
from ferry.operator.kube import Refused
from ferry.operator.ownership import NAME_CONFLICT, Ownership, conflict_message, ownership
from ferry.operator.planfile import TIME_FORMAT
from ferry.operator.render import Owner

if TYPE_CHECKING:
    from ferry.operator.reconcile import Context


def now() -> str:
    """The time as conditions and status carry it."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def require_owned(obj: dict[str, Any] | None, kind: str, owner: Owner) -> dict[str, Any] | None:
    """`obj` when it is missing or this CopyJob's; a foreign object stalls the CopyJob."""
    if ownership(obj, owner.uid) is Ownership.FOREIGN:
        assert obj is not None
        raise Stalled(NAME_CONFLICT, conflict_message(kind, obj, owner.name))
    return obj


async def create_owned(
    ctx: Context, owner: Owner, kind: str, body: dict[str, Any], refused_reason: str
) -> dict[str, Any]:
    """Create a child and return it as stored. An object of its name that appeared since it was read
    stalls the CopyJob (`NameConflict`); one the API server refuses stalls it with `refused_reason`."""
    create, read = (
        (ctx.kube.create_job, ctx.kube.job)
        if kind == "Job"
        else (ctx.kube.create_configmap, ctx.kube.configmap)
    )
    meta = body["metadata"]
    try:
        await asyncio.to_thread(create, body)
    except Refused as exc:
        raise Stalled(
            refused_reason, f"{exc}; fix the cause (a quota, an admission policy) and it is retried"
        ) from exc
    stored = require_owned(await asyncio.to_thread(read, meta["namespace"], meta["name"]), kind, owner)
    if stored is None:  # deleted the moment it was made; the next pass creates it again
        raise RuntimeError(f"{kind} {meta['namespace']}/{meta['name']} vanished right after it was created")
    return stored
