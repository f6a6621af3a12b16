"""Announcing a CopyJob's end (`spec.notify`): when a pass moves a CopyJob into Succeeded or Failed, or
stalls it anew, the operator creates the notify Job (operator/notifyjob.py) that sends the event from the
CopyJob's namespace. Called with the status before and after the pass, before the new status is written:
a pass whose status write fails announces again, and the Job's name (per kind and generation) keeps that
to one pod.

`announcement` is pure; `announce` is the thin adapter that creates the Job.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.operator import conditions as cond
from ferry.operator.kube import Refused
from ferry.operator.notifyjob import notify_event, render_notify_job
from ferry.operator.render import Owner

if TYPE_CHECKING:
    from ferry.operator.reconcile import Context

#: Phases whose reaching is announced (the CopyJob's terminal phases).
ENDS = ("Succeeded", "Failed")


def announcement(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, str | None] | None:
    """What a pass that turned status ``before`` into ``after`` (a merge patch) announces: the phase and
    its reason, or None. Succeeded and Failed once, when reached; Stalled when the Stalled condition turns
    True or changes its reason (the same rule as the stall's Warning Event)."""
    phase = after.get("phase", before.get("phase"))
    if phase in ENDS and before.get("phase") not in ENDS:
        succeeded = cond.get(after.get("conditions") or [], "Succeeded") or {}
        return str(phase), _reason(succeeded.get("reason"))
    stalled = cond.get(after.get("conditions") or [], "Stalled") or {}
    earlier = cond.get(before.get("conditions") or [], "Stalled") or {}
    if stalled.get("status") == "True" and (
        earlier.get("status") != "True" or earlier.get("reason") != stalled.get("reason")
    ):
        return "Stalled", _reason(stalled.get("reason"))
    return None


def _reason(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) and value else None


async def announce(
    ctx: Context,
    owner: Owner,
    spec_raw: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    generation: int,
) -> None:
    """Create the notify Job when this pass announces something and the CopyJob asks for it. A Job the
    API server refuses (a quota, an admission policy) becomes a Warning Event: the pass goes on."""
    if not spec_raw.get("notify"):
        return
    what = announcement(before, after)
    if what is None:
        return
    try:
        spec = CopyJobSpec.model_validate(spec_raw, by_alias=True, by_name=False)
    except ValidationError:
        return  # an invalid spec stalls; its notify field cannot be trusted to name a Secret
    phase, reason = what
    event = notify_event(owner, phase, generation, {**before, **after}, datetime.now(UTC), reason)
    if event is None or spec.notify is None:
        return
    account = ctx.settings.worker_service_account
    if account and not await asyncio.to_thread(ctx.kube.service_account_exists, owner.namespace, account):
        account = ""  # the namespace's default one serves as well: the pod mounts no token
    body = render_notify_job(owner, spec, ctx.settings, event, generation, service_account=account)
    try:
        await asyncio.to_thread(ctx.kube.create_job, body)
    except Refused as exc:
        ctx.post("Warning", "NotifyRefused", f"the completion webhook was not called: {exc}")
