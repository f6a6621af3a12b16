"""The operator's side of completion webhooks, pure: which passes announce what, the event it renders,
and the notify Job that sends it from the CopyJob's namespace (never the operator's)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.model.copyjob import parse_copyjob
from ferry.operator.notifyjob import (
    ACTIVE_DEADLINE_SECONDS,
    BACKOFF_LIMIT,
    notify_event,
    notify_name,
    render_notify_job,
)
from ferry.operator.notifystep import announcement
from ferry.operator.render import Owner
from ferry.operator.settings import OperatorSettings
from ferry.worker import notify

OWNER = Owner("nightly", "team-a", "uid-123")
WHEN = datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC)


def _stalled(reason: str) -> list[dict[str, Any]]:
    return [{"type": "Stalled", "status": "True", "reason": reason, "message": "m"}]


def _succeeded(reason: str) -> list[dict[str, Any]]:
    return [{"type": "Succeeded", "status": "True", "reason": reason, "message": "m"}]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param({"phase": "Running"}, {"phase": "Running"}, None, id="still-running"),
        pytest.param({"phase": "Running"}, {"phase": "Succeeded", "conditions": _succeeded("AllCopied")},
                     ("Succeeded", "AllCopied"), id="succeeded"),
        pytest.param({"phase": "Running"}, {"phase": "Failed", "conditions": _succeeded("ObjectsFailed")},
                     ("Failed", "ObjectsFailed"), id="failed"),
        pytest.param({"phase": "Succeeded"}, {"phase": "Succeeded"}, None, id="already-succeeded"),
        pytest.param({"phase": "Succeeded"}, {}, None, id="after-finish-pass"),
        pytest.param({"phase": "Running"}, {"phase": "Running", "conditions": _stalled("SystematicFailure")},
                     ("Stalled", "SystematicFailure"), id="stalled"),
        pytest.param({"phase": "Running", "conditions": _stalled("SystematicFailure")},
                     {"phase": "Running", "conditions": _stalled("SystematicFailure")}, None,
                     id="still-stalled-same-reason"),
        pytest.param({"conditions": _stalled("InvalidSpec")}, {"conditions": _stalled("NameConflict")},
                     ("Stalled", "NameConflict"), id="stalled-anew"),
        pytest.param({"conditions": _stalled("InvalidSpec")},
                     {"conditions": [{"type": "Stalled", "status": "False", "reason": "ReferencesValid"}]},
                     None, id="stall-cleared"),
        pytest.param({}, {"phase": "Failed", "conditions": _succeeded("x" * 300)}, ("Failed", "x" * 128),
                     id="reason-bounded"),
    ],
)  # fmt: skip
def test_announcement(
    before: dict[str, Any], after: dict[str, Any], expected: tuple[str, str | None] | None
) -> None:
    assert announcement(before, after) == expected


STATUS = {
    "objects": {"total": 10, "copied": 7, "skipped": 2, "failed": 1, "pending": 0},
    "bytes": {"total": 100, "copied": 70, "skipped": 20, "failed": 10},
}


@pytest.mark.parametrize(
    ("phase", "type_", "event_id"),
    [
        ("Succeeded", "dev.ferry.copyjob.succeeded", "uid-123-succeeded-4"),
        ("Failed", "dev.ferry.copyjob.failed", "uid-123-failed-4"),
        ("Stalled", "dev.ferry.copyjob.stalled", "uid-123-stalled-4"),
        ("Running", None, None),
    ],
)
def test_notify_event(phase: str, type_: str | None, event_id: str | None) -> None:
    event = notify_event(OWNER, phase, 4, STATUS, WHEN, "Reason")
    if type_ is None:
        assert event is None
        return
    assert event is not None
    assert (event["type"], event["id"]) == (type_, event_id)
    assert event["source"] == "/apis/ferry.dev/v1alpha1/namespaces/team-a/copyjobs/nightly"
    assert event["data"]["objects"] == STATUS["objects"] and event["data"]["bytes"] == STATUS["bytes"]
    assert event["data"]["phase"] == phase and event["data"]["namespace"] == "team-a"


def _spec() -> Any:
    return parse_copyjob(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "CopyJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "source": {"bucket": "src-bucket", "credentialsSecret": "s"},
                "destination": {"bucket": "dst-bucket", "credentialsSecret": "d"},
                "notify": {"urlSecret": {"name": "hooks", "key": "slack.url"}},
            },
        }
    ).spec


@pytest.mark.parametrize(("allow_http", "flag"), [(False, "false"), (True, "true")])
def test_the_notify_job_reads_the_url_from_the_secret_in_the_copyjob_namespace(
    allow_http: bool, flag: str
) -> None:
    event = notify_event(OWNER, "Failed", 4, STATUS, WHEN, "ObjectsFailed")
    assert event is not None
    settings = OperatorSettings(worker_image="ferry:test", notify_allow_http=allow_http)
    job = render_notify_job(OWNER, _spec(), settings, event, 4, service_account="ferry-worker")
    assert job["metadata"]["name"] == notify_name("nightly", "failed", 4) == "nightly-notify-failed-4"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert job["spec"]["backoffLimit"] == BACKOFF_LIMIT
    assert job["spec"]["activeDeadlineSeconds"] == ACTIVE_DEADLINE_SECONDS
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "ferry-worker"
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["command"] == ["ferry", "notify"] and container["image"] == "ferry:test"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env[notify.URL_ENV] == {
        "name": notify.URL_ENV,
        "valueFrom": {"secretKeyRef": {"name": "hooks", "key": "slack.url"}},
    }
    assert env[notify.ALLOW_HTTP_ENV]["value"] == flag
    assert notify.parse_event(env[notify.EVENT_ENV]["value"]) == event
    # Nothing the operator could not know: no URL, no Secret value anywhere in the manifest.
    assert "valueFrom" not in json.dumps([e for e in container["env"] if e["name"] != notify.URL_ENV])
