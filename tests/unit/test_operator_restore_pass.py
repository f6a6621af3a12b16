"""Whole operator passes over a CopyJob whose shards ended waiting for restores (spec.archived: restore),
on the fake cluster of `test_operator_pass` (pure: no process, no network). The real pods and operator are
in tests/testbed/test_archived_copyjobs.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.model.plan import SHARDS_FILE
from ferry.operator import reconcile as rc
from ferry.operator.render import job_name, plan_name
from ferry.worker.statusdoc import FORMAT, WAITING_FOR_RESTORE

from . import test_operator_pass as base
from .test_operator_pass import NAME, SPEC, World

#: The fake cluster of `test_operator_pass`, as a fixture of this module.
fake_world = base.world

RESTORE_SPEC = {**SPEC, "archived": "restore", "restore": {"checkIntervalSeconds": 600}}


def ended_pods(
    job_uid: str, shards: list[dict[str, Any]], waiting: set[int], requested_at: int
) -> list[dict[str, Any]]:
    """One Succeeded pod per shard of the plan: those in ``waiting`` ended waiting for 2 restores, the
    rest complete."""
    pods = []
    for index, shard in enumerate(shards):
        held = index in waiting
        total, size = int(shard["objects"]), int(shard["bytes"])
        document: dict[str, Any] = {
            "format": FORMAT,
            "shard": index,
            "state": WAITING_FOR_RESTORE if held else "complete",
            "objects": {
                "total": total,
                "copied": total - 2 * held,
                "skipped": 0,
                "failed": 0,
                "pending": 2 * held,
            },
            "bytes": {"total": size, "copied": size - 2 * held, "skipped": 0, "failed": 0},
            "archived": {"skipped": 0, "restored": 0, "restoreTimedOut": 0, "waitingForRestore": 2 * held},
            "resume": None,
        }
        if held:
            document[WAITING_FOR_RESTORE] = {"objects": 2, "requestedAt": requested_at}
        pods.append(
            {
                "metadata": {
                    "name": f"w-{index}",
                    "labels": {"ferry.dev/copyjob": NAME},
                    "annotations": {rc.INDEX_ANNOTATION: str(index)},
                    "ownerReferences": [{"kind": "Job", "uid": job_uid, "controller": True}],
                },
                "status": {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {"name": "worker", "state": {"terminated": {"message": json.dumps(document)}}}
                    ],
                },
            }
        )
    return pods


def completed(fake_world: World, ago: timedelta, waiting: set[int]) -> int:
    """The worker Job completed ``ago``, its pods ended as `ended_pods` says; returns the shard count."""
    job = fake_world.kube.objects[("Job", job_name(NAME))]
    shards = int(job["spec"]["completions"])
    at = (datetime.now(UTC) - ago).replace(microsecond=0)
    job["status"] = {
        "completedIndexes": f"0-{shards - 1}" if shards > 1 else "0",
        "conditions": [{"type": "Complete", "status": "True"}],
        # As the Kubernetes client turns the Job's time back into text.
        "completionTime": at.isoformat(),
    }
    plan = json.loads(fake_world.kube.objects[("ConfigMap", plan_name(NAME))]["data"][SHARDS_FILE])
    assert len(plan) == shards
    fake_world.kube.pod_list = ended_pods(job["metadata"]["uid"], plan, waiting, int(time.time()) - 30)
    return shards


def restores_pending(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "RestoresPending")


def test_a_job_completed_with_shards_waiting_keeps_the_copyjob_running_with_no_pod(fake_world: World) -> None:
    status = fake_world.until_planned(spec=RESTORE_SPEC)
    shards = completed(fake_world, timedelta(seconds=5), {0})
    status = {**status, **fake_world.run(status, spec=RESTORE_SPEC)}
    assert status["phase"] == "Running" and "completionTime" not in status
    pending = restores_pending(status)
    assert (pending["status"], pending["reason"]) == ("True", "WaitingForRestore")
    assert "2 archived objects of 1 shard(s)" in pending["message"]
    assert "no worker pod runs" in pending["message"] and "checks back at" in pending["message"]
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "WaitingForRestore"
    assert status["objects"]["pending"] == 2 and status["archived"]["waitingForRestore"] == 2
    assert status["concurrency"]["perPod"] == []
    # The ledger keeps when the restores were requested, and counts the other shards as finished.
    ledger = fake_world.kube.objects[("ConfigMap", rc.ledger_name(NAME))]["data"]
    assert ledger["restore-0"].endswith(",2")
    assert all(str(i) in ledger for i in range(1, shards)) and "0" not in ledger
    # Not yet time to check back: the Job stays, nothing is deleted.
    assert ("delete", "Job", job_name(NAME)) not in fake_world.kube.writes


def test_the_operator_checks_back_after_the_interval_by_removing_the_job(
    fake_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    removed: list[str] = []
    monkeypatch.setattr(rc, "remove_job", lambda kube, owner: removed.append(owner.name))
    status = fake_world.until_planned(spec=RESTORE_SPEC)
    completed(fake_world, timedelta(seconds=601), {0})
    status = {**status, **fake_world.run(status, spec=RESTORE_SPEC)}
    assert removed == [NAME]
    assert status["phase"] == "Running"
    assert "running them again now" in restores_pending(status)["message"]
    assert ("Normal", "CheckingRestores") in [e[:2] for e in fake_world.events]


def test_a_suspended_copyjob_waiting_for_restores_is_suspended_not_finished(fake_world: World) -> None:
    status = fake_world.until_planned(spec=RESTORE_SPEC)
    completed(fake_world, timedelta(seconds=601), {0})
    suspended = {**RESTORE_SPEC, "suspend": True}
    fake_world.kube.objects[("Job", job_name(NAME))]["spec"]["suspend"] = True
    status = {**status, **fake_world.run(status, spec=suspended)}
    assert status["phase"] == "Suspended" and "completionTime" not in status
    assert ("delete", "Job", job_name(NAME)) not in fake_world.kube.writes


def test_a_job_whose_shards_all_finished_succeeds_as_before(fake_world: World) -> None:
    status = fake_world.until_planned(spec=RESTORE_SPEC)
    completed(fake_world, timedelta(seconds=601), set())
    status = {**status, **fake_world.run(status, spec=RESTORE_SPEC)}
    assert status["phase"] == "Succeeded"
    assert not [c for c in status["conditions"] if c["type"] == "RestoresPending"]
