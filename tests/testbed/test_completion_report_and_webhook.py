"""spec.report.include: all and spec.notify through the operator on the testbed: the real kube-apiserver and
Job controller, worker and notify pods run by the process kubelet, versitygw as S3 (the engine's S3 server
of the testbed), and a webhook receiver on 127.0.0.1 in this process. The operator runs under the chart's
RBAC and never reads the webhook's Secret: the notify pod in the CopyJob's namespace does."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.operator import fill, spec_for
from support.webhook import Receiver
from support.webhook import receiver as webhook_receiver
from testbed.install import OperatorProcess, install, operator_process

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)

PLANTED = "PLANTED-hook-token-91ac"


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, testbin: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with the chart's notify.allowHttp on: the receiver here speaks plain http."""
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(
        cluster.controlplane,
        tmp_path_factory.mktemp("operator"),
        extra_env={"FERRY_NOTIFY_ALLOW_HTTP": "true"},
    )


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with webhook_receiver([204], f"/hook?token={PLANTED}") as found:
        yield found


def test_a_copyjob_writes_evidence_per_shard_and_announces_its_end_from_its_namespace(
    jobs: Any,
    s3: Any,
    versitygw: Any,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    source, destination = fill(s3, 120)
    audit = f"audit-{destination[4:]}"
    s3.create_bucket(Bucket=audit)
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "hooks"}, "stringData": {"url": url}}
    )
    report = {"bucket": audit, "prefix": "r/", "endpoint": versitygw.endpoint.url, "credentialsSecret": "dst",
              "include": "all"}  # fmt: skip
    jobs.create(
        "audited",
        spec_for(
            versitygw.endpoint.url,
            source,
            destination,
            parallelism=2,
            shardSize={"maxObjects": 50},
            report=report,
            notify={"urlSecret": {"name": "hooks", "key": "url"}},
        ),
    )
    status = jobs.wait_phase("audited", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    shards = status["plan"]["shards"]
    assert shards >= 3
    assert status["evidence"]["location"] == f"s3://{audit}/r/audited/evidence/"
    assert status["evidence"]["objects"] == {"copied": 120, "skipped": 0, "failed": 0}

    # One summary per shard, each checked against its parts; together one line per object.
    keys: list[str] = []
    for shard in range(shards):
        summary = json.loads(
            s3.get_object(Bucket=audit, Key=f"r/audited/evidence/shard-{shard:05d}/summary.json")[
                "Body"
            ].read()
        )
        assert summary["shard"] == shard and summary["complete"] is True
        for part in summary["parts"]:
            body = s3.get_object(Bucket=audit, Key=f"r/{part['name']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == part["sha256"]
            lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
            assert len(lines) == part["lines"]
            assert all(
                line["action"] == "copied" and line["checksum"]["algorithm"] == "crc32c" for line in lines
            )
            keys += [line["key"] for line in lines]
    assert sorted(keys) == [f"data/{i:05d}.bin" for i in range(120)]

    # The notify pod delivered one CloudEvent (its Job runs in the CopyJob's namespace).
    wait_for("the completion event", hook.bodies, 90)
    received = hook.bodies()
    event = json.loads(received[0])
    assert event["type"] == "dev.ferry.copyjob.succeeded" and event["subject"] == "audited"
    assert event["data"]["objects"]["copied"] == 120 and event["data"]["namespace"] == namespace
    job = cluster.batch.read_namespaced_job(f"audited-notify-succeeded-{jobs.get('audited')['metadata']['generation']}",
                                            namespace)  # fmt: skip
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env["FERRY_NOTIFY_URL"].value_from.secret_key_ref.name == "hooks"
    assert len(hook.bodies()) == 1
    # The URL is nowhere the operator writes: status, Events, its log.
    assert PLANTED not in json.dumps(jobs.get("audited"))
    assert PLANTED not in Path(operator.log).read_text()
