"""Completion webhooks against a real HTTP receiver on 127.0.0.1 (a `http.server` in this process): `ferry
notify` as its pod runs it, `ferry run` with spec.notify or --notify-url (copying on the session's moto
server, the `s3` fixture), retries after a 500, a bounded give-up, and a URL (a secret) never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.worker import notify
from support.webhook import Receiver
from support.webhook import receiver as webhook_receiver

from .test_ferry_run import ferry, write_job

PLANTED = "PLANTED-webhook-token-7d2e"


@contextmanager
def receiver(statuses: list[int]) -> Iterator[tuple[Receiver, str]]:
    with webhook_receiver(statuses, f"/hook?token={PLANTED}") as found:
        yield found


def _event() -> dict[str, Any]:
    data = notify.event_data(
        name="job", namespace="team", phase="Succeeded", objects={"total": 3, "copied": 3}, bytes_={}
    )
    return notify.cloud_event(
        kind="succeeded",
        source="/apis/ferry.dev/v1alpha1/namespaces/team/copyjobs/job",
        event_id="uid-1-succeeded",
        time_=datetime(2026, 11, 30, tzinfo=UTC),
        subject="job",
        data=data,
    )


def _notify_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", "notify"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ferry_notify_delivers_one_cloudevent_and_retries_after_a_500() -> None:
    with receiver([500, 204]) as (state, url):
        result = _notify_process(
            {
                notify.URL_ENV: url,
                notify.EVENT_ENV: json.dumps(_event()),
                notify.ALLOW_HTTP_ENV: "true",
                notify.ORIGIN_ENV: "Secret 'hooks' key 'url'",
            }
        )
    assert result.returncode == notify.EXIT_DELIVERED, result.stderr
    assert len(state.received) == 2  # the 500, then the delivery
    headers, body = state.received[-1]
    assert headers["Content-Type"] == notify.CONTENT_TYPE
    event = json.loads(body)
    assert event["specversion"] == "1.0" and event["type"] == "dev.ferry.copyjob.succeeded"
    assert event["id"] == "uid-1-succeeded" and event["data"]["objects"]["copied"] == 3
    assert "attempt 2" in result.stdout and "Secret 'hooks' key 'url'" in result.stdout
    assert PLANTED not in result.stdout + result.stderr


def test_ferry_notify_refuses_http_unless_allowed_without_printing_the_url() -> None:
    with receiver([204]) as (state, url):
        result = _notify_process({notify.URL_ENV: url, notify.EVENT_ENV: json.dumps(_event())})
    assert result.returncode == notify.EXIT_INVALID
    assert "https" in result.stderr and state.received == []
    assert PLANTED not in result.stdout + result.stderr


def test_sending_gives_up_after_a_bounded_number_of_attempts() -> None:
    waits: list[float] = []
    with receiver([500]) as (state, url):
        delivery = notify.send(url, _event(), attempts=4, sleep=waits.append)
    assert not delivery.delivered and delivery.attempts == 4 and delivery.status == 500
    assert len(state.received) == 4
    assert waits == [1.0, 2.0, 4.0]  # doubling, bounded by the attempts
    assert PLANTED not in str(delivery)


def test_a_4xx_answer_is_final() -> None:
    with receiver([404]) as (state, url):
        delivery = notify.send(url, _event(), sleep=lambda _s: None)
    assert not delivery.delivered and delivery.attempts == 1 and len(state.received) == 1


def test_a_redirect_is_not_followed() -> None:
    with receiver([307]) as (state, url):
        delivery = notify.send(url, _event(), sleep=lambda _s: None)
    assert not delivery.delivered and delivery.status == 307 and len(state.received) == 1


def test_ferry_run_sends_its_completion_event_from_spec_notify_without_printing_the_url(
    s3: Any, tmp_path: Path
) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(3):
        s3.client.put_object(Bucket=src, Key=f"k{i}", Body=b"abc")
    with receiver([204]) as (state, url):
        job = write_job(
            tmp_path / "job.yaml",
            s3.endpoint,
            src,
            dst,
            extra="  notify: {urlSecret: {name: hooks, key: url}}\n",
        )
        job.write_text(
            job.read_text() + f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: hooks}}\n"
            f'stringData: {{url: "{url}"}}\n'
        )
        result = ferry(
            "-v", "run", "-f", str(job), "--output", "json", "--progress", "none", "--notify-allow-http"
        )
    assert result.returncode == 0, result.stderr
    assert len(state.received) == 1
    event = json.loads(state.received[0][1])
    assert event["type"] == "dev.ferry.copyjob.succeeded" and event["subject"] == "cli-test"
    assert event["data"]["objects"] == {"total": 3, "copied": 3, "skipped": 0, "failed": 0, "pending": 0}
    assert json.loads(result.stdout)["notify"]["delivered"] is True
    assert PLANTED not in result.stdout + result.stderr


def test_ferry_run_with_an_http_webhook_not_allowed_exits_2_before_copying(s3: Any, tmp_path: Path) -> None:
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    s3.client.put_object(Bucket=src, Key="k", Body=b"abc")
    job = write_job(tmp_path / "job.yaml", s3.endpoint, src, dst)
    url = f"http://127.0.0.1:9/hook?token={PLANTED}"
    result = ferry("run", "-f", str(job), "--output", "json", "--notify-url", url)
    assert result.returncode == 2
    assert "--notify-url" in result.stderr and PLANTED not in result.stdout + result.stderr
    assert s3.client.list_objects_v2(Bucket=dst).get("KeyCount", 0) == 0
