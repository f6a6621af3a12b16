"""A worker pod hands its wait for restores to the operator (spec.archived: restore): `ferry worker` run as
a pod runs it (plan and ledger folders, termination message file), against moto's S3 server on 127.0.0.1.

moto, the `s3` fixture, because it is the server that behaves as S3 does with archive tiers (it refuses to
read GLACIER and DEEP_ARCHIVE objects until restored and implements RestoreObject; versitygw does
neither). Its restores are done at once; a restore still in progress is made by a fault proxy answering
every RestoreObject with 409 RestoreAlreadyInProgress, and switched off when it should complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.model.checkpoint import LedgerEntry, checkpoint_from_json, resume_key
from ferry.worker.archive import RESTORE_TIMED_OUT
from ferry.worker.handoff import RestoreHandoff, restore_key
from ferry.worker.statusdoc import WAITING_FOR_RESTORE
from support.engine import digest_map
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import free_port

from .test_archived_objects import ARCHIVED, CLASSES, NEVER, READABLE
from .test_archived_objects import fill as fill_archived

pytestmark = pytest.mark.timeout(180)
SECONDS = 60


def fill(s3: Any) -> tuple[str, str]:
    return fill_archived(s3, "handoff")


def worker(
    tmp_path: Path, s3: Any, spec: dict[str, Any], ledger: dict[str, str], run: int
) -> tuple[int, dict[str, Any], float]:
    """Run `ferry worker` for the job's one shard as a pod runs it, with ``ledger`` as the mounted
    progress ledger; returns its exit code, its termination message and how long it took."""
    plan, progress = tmp_path / f"plan-{run}", tmp_path / f"progress-{run}"
    plan.mkdir()
    progress.mkdir()
    (plan / "spec.json").write_text(json.dumps(spec))
    (plan / "shards.json").write_text(
        json.dumps([{"startAfter": None, "end": None, "objects": 7, "bytes": 721}])
    )
    for key, value in ledger.items():
        (progress / key).write_text(value)
    termination = tmp_path / f"termination-{run}"
    env = {
        "PATH": os.environ["PATH"],
        "FERRY_PLAN_DIR": str(plan),
        "FERRY_PROGRESS_DIR": str(progress),
        "JOB_COMPLETION_INDEX": "0",
        "FERRY_COPYJOB": "handoff",
        "FERRY_STATUS_HOST": "127.0.0.1",
        "FERRY_STATUS_PORT": str(free_port()),
        "FERRY_TERMINATION_MESSAGE_PATH": str(termination),
        "FERRY_MEMORY_LIMIT": str(512 * 2**20),
        "AWS_EC2_METADATA_DISABLED": "true",
        **{
            f"FERRY_{role}_{name}": value
            for role in ("SOURCE", "DESTINATION")
            for name, value in (
                ("ACCESS_KEY_ID", s3.endpoint.access_key),
                ("SECRET_ACCESS_KEY", s3.endpoint.secret_key),
            )
        },
    }
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS,
        check=False,
    )
    took = time.monotonic() - started
    assert termination.exists(), process.stderr
    return process.returncode, json.loads(termination.read_text()), took


def job_spec(s3: Any, src: str, dst: str, source_url: str, restore: dict[str, int]) -> dict[str, Any]:
    return {
        "source": {"bucket": src, "endpoint": source_url, "region": "us-east-1", "credentialsSecret": "c"},
        "destination": {
            "bucket": dst,
            "endpoint": s3.endpoint.url,
            "region": "us-east-1",
            "credentialsSecret": "c",
        },
        "archived": "restore",
        "restore": restore,
    }


def ledger_after(message: dict[str, Any]) -> dict[str, str]:
    """The ledger entries the operator writes for a shard that ended waiting for restores."""
    handoff = RestoreHandoff.from_json(message[WAITING_FOR_RESTORE])
    assert handoff is not None
    resume = checkpoint_from_json(message["resume"])
    return {resume_key(0): LedgerEntry(None, resume).text(), restore_key(0): handoff.text()}


def test_a_pod_hands_restores_in_progress_off_and_the_next_pod_copies_them_once_restored(
    s3: Any, tmp_path: Path
) -> None:
    src, dst = fill(s3)
    with FaultProxy(s3.endpoint.url, NEVER) as proxy:
        spec = job_spec(s3, src, dst, proxy.url, {"maxWaitSeconds": 3600, "checkIntervalSeconds": 1})
        before = int(time.time())
        code, first, took = worker(tmp_path, s3, spec, {}, 1)
        # Ended, exit 0, after one short check: nowhere near restore.maxWaitSeconds.
        assert code == 0, first
        assert first["state"] == WAITING_FOR_RESTORE, first
        assert took < 30
        handoff = first[WAITING_FOR_RESTORE]
        assert handoff["objects"] == len(ARCHIVED)
        assert before - 1 <= handoff["requestedAt"] <= time.time()
        assert first["objects"]["copied"] == len(READABLE)
        assert first["objects"]["pending"] == len(ARCHIVED) and first["objects"]["failed"] == 0
        assert first["archived"]["waitingForRestore"] == len(ARCHIVED)
        # The resume point stays before the first object still being restored.
        assert first["resume"]["after"] < min(ARCHIVED)
        assert set(digest_map(s3.client, dst)) == READABLE

        proxy.set_plan(FaultPlan())  # the restores complete
        code, second, _ = worker(tmp_path, s3, spec, ledger_after(first), 2)
    assert code == 0, second
    assert second["state"] == "complete", second
    assert second["archived"]["restored"] == len(ARCHIVED)
    objects = second["objects"]
    assert (objects["total"], objects["failed"], objects["pending"]) == (len(CLASSES), 0, 0)
    assert objects["copied"] + objects["skipped"] == len(CLASSES)
    assert digest_map(s3.client, dst) == digest_map(s3.client, src)


def test_a_restore_not_done_max_wait_seconds_after_an_earlier_pod_requested_it_times_out(
    s3: Any, tmp_path: Path
) -> None:
    src, dst = fill(s3)
    with FaultProxy(s3.endpoint.url, NEVER) as proxy:
        spec = job_spec(s3, src, dst, proxy.url, {"maxWaitSeconds": 600, "checkIntervalSeconds": 1})
        # An earlier pod requested the restores 601 s ago (as the ledger says): this pod gives them up.
        requested = RestoreHandoff(len(ARCHIVED), int(time.time()) - 601)
        code, message, took = worker(tmp_path, s3, spec, {restore_key(0): requested.text()}, 1)
    assert code == 0, message
    assert message["state"] == "complete", message
    assert WAITING_FOR_RESTORE not in message
    assert took < 30
    assert {f["key"] for f in message["failed"]} == ARCHIVED
    assert {f["code"] for f in message["failed"]} == {RESTORE_TIMED_OUT}
    assert message["archived"]["restoreTimedOut"] == len(ARCHIVED)
    assert set(digest_map(s3.client, dst)) == READABLE


def test_a_forged_restore_time_in_the_future_does_not_stretch_the_wait(s3: Any, tmp_path: Path) -> None:
    src, dst = fill(s3)
    with FaultProxy(s3.endpoint.url, NEVER) as proxy:
        spec = job_spec(s3, src, dst, proxy.url, {"maxWaitSeconds": 3600, "checkIntervalSeconds": 1})
        forged = RestoreHandoff(1, int(time.time()) + 10**6)
        code, message, _ = worker(tmp_path, s3, spec, {restore_key(0): forged.text()}, 1)
    assert code == 0, message
    assert message["state"] == WAITING_FOR_RESTORE
    # This pod's own request time, not the forged one.
    assert message[WAITING_FOR_RESTORE]["requestedAt"] <= time.time()
