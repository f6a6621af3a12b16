"""A listing divided over several planner pods, end to end: with the chart's planning.pods at 3 the
operator starts the planner as an Indexed Job of three pods (each under the tenant's credentials, each
listing its part of the key space), reads the three parts, checks that they divide the key space one way,
joins them into one plan, and the copy then moves every object once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from support.operator import Jobs, spec_for
from testbed.binaries import TestBinaries
from testbed.install import OperatorProcess, install, operator_process

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)

PODS = 3
TEAMS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, testbin: TestBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(
        cluster.controlplane, tmp_path_factory.mktemp("operator"), extra_env={"FERRY_PLANNER_PODS": str(PODS)}
    )


def test_three_planner_pods_each_list_a_part_and_the_joined_plan_copies_every_object_once(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Cluster, namespace: str
) -> None:
    source, destination = f"src-{uuid.uuid4().hex[:10]}", f"dst-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    keys = [f"data/{team}/day-{day:02d}/{i:03d}.bin" for team in TEAMS for day in range(4) for i in range(25)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=source, Key=k, Body=os.urandom(700)), keys))
    name = "divided"
    jobs.create(
        name, {**spec_for(versitygw.endpoint.url, source, destination), "shardSize": {"maxObjects": 100}}
    )

    def planner_job() -> Any:
        found = [
            j
            for j in cluster.batch.list_namespaced_job(namespace).items
            if j.metadata.name == f"{name}-planner"
        ]
        return found[0] if found else None

    planner = wait_for("the planner Job", planner_job, timeout=60)
    assert (planner.spec.completions, planner.spec.parallelism, planner.spec.completion_mode) == (
        PODS,
        PODS,
        "Indexed",
    )
    env = {e.name: e.value for e in planner.spec.template.spec.containers[0].env}
    assert env["FERRY_PLAN_PODS"] == str(PODS)

    def planner_pods() -> set[str] | None:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}-planner").items
        indexes = {
            (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") for p in pods
        }
        return indexes if len(indexes) == PODS else None

    assert wait_for("a pod per part", planner_pods, timeout=60) == {str(i) for i in range(PODS)}
    status = jobs.wait_phase(name, "Succeeded", timeout=180)
    assert status["plan"]["objects"] == len(keys)
    copied = sorted(
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=destination)
        for o in page.get("Contents", [])
    )
    assert copied == sorted(keys)
    assert status["objects"] == {
        "total": len(keys),
        "copied": len(keys),
        "skipped": 0,
        "failed": 0,
        "pending": 0,
    }
