"""The pure parts of completion webhooks: URL checks, backoff, what is retried, the CloudEvent, the event a
`ferry run` sends, and where its URL comes from. Sending itself is tested against a real receiver
(tests/integration/test_notify_webhook.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ferry.worker import notify

TOKEN = "s3cr3t-token"


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        pytest.param("https://hooks.example.com/x?token=" + TOKEN, False, None, id="https"),
        pytest.param("http://hooks.example.com/x?token=" + TOKEN, True, None, id="http-allowed"),
        pytest.param("http://hooks.example.com/x?token=" + TOKEN, False, "use https", id="http-refused"),
        pytest.param("ftp://hooks.example.com/" + TOKEN, True, "not an https URL", id="other-scheme"),
        pytest.param("file:///etc/" + TOKEN, True, "not an https URL", id="file"),
        pytest.param("https:///" + TOKEN, False, "no host", id="no-host"),
        pytest.param("https://h.example.com:99999/" + TOKEN, False, "not a valid URL", id="bad-port"),
        pytest.param("https://h.example.com/a b" + TOKEN, False, "whitespace", id="whitespace"),
        pytest.param("https://h.example.com/\n" + TOKEN, False, "whitespace", id="newline"),
        pytest.param("https://h.example.com/" + "a" * 2100 + TOKEN, False, "longer than", id="too-long"),
        pytest.param("", False, "empty", id="empty"),
    ],
)
def test_check_url(url: str, allow_http: bool, problem: str | None) -> None:
    if problem is None:
        assert notify.check_url(url, allow_http=allow_http) == url
        return
    with pytest.raises(notify.NotifyError, match=problem) as caught:
        notify.check_url(url, allow_http=allow_http, origin="Secret 'hooks' key 'url'")
    assert TOKEN not in str(caught.value) and "Secret 'hooks' key 'url'" in str(caught.value)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param(1, [], id="one-attempt-no-wait"),
        pytest.param(5, [1.0, 2.0, 4.0, 8.0], id="default"),
        pytest.param(8, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], id="capped"),
        pytest.param(50, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0], id="attempts-bounded"),
        pytest.param(0, [], id="zero"),
    ],
)
def test_delays(attempts: int, expected: list[float]) -> None:
    assert notify.delays(attempts) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, True), (500, True), (503, True), (429, True), (408, True), (400, False), (404, False),
     (301, False), (307, False)],
)  # fmt: skip
def test_retryable(status: int | None, expected: bool) -> None:
    assert notify.retryable(status) is expected


@pytest.mark.parametrize(
    ("phase", "kind"),
    [("Succeeded", "succeeded"), ("Failed", "failed"), ("Stalled", "stalled"), ("Running", None), ("", None)],
)
def test_event_kind(phase: str, kind: str | None) -> None:
    assert notify.event_kind(phase) == kind


def test_cloud_event_is_structured_cloudevents_1_0_with_counts_only() -> None:
    data = notify.event_data(
        name="job",
        namespace="team",
        phase="Failed",
        objects={"total": 5, "copied": 3, "failed": 2, "pending": True, "skipped": -1},
        bytes_={"total": 10, "copied": "lots"},
        reason="x" * 500,
    )
    event = notify.cloud_event(
        kind="failed",
        source="/apis/ferry.dev/v1alpha1/namespaces/team/copyjobs/job",
        event_id="uid-failed-3",
        time_=datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC),
        subject="job",
        data=data,
    )
    assert event == {
        "specversion": "1.0",
        "type": "dev.ferry.copyjob.failed",
        "source": "/apis/ferry.dev/v1alpha1/namespaces/team/copyjobs/job",
        "id": "uid-failed-3",
        "time": "2026-11-30T01:02:03Z",
        "subject": "job",
        "datacontenttype": "application/json",
        "data": {
            "name": "job",
            "namespace": "team",
            "phase": "Failed",
            "reason": "x" * 128,
            # Only non-negative integers count: anything else is shown as 0.
            "objects": {"total": 5, "copied": 3, "skipped": 0, "failed": 2, "pending": 0},
            "bytes": {"total": 10, "copied": 0, "skipped": 0, "failed": 0},
        },
    }
    assert notify.parse_event(json.dumps(event)) == event


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param("[]", "CloudEvents", id="not-an-object"),
        pytest.param('{"specversion": "0.3"}', "CloudEvents", id="old-version"),
        pytest.param('{"specversion": "1.0", "type": "com.example.x"}', "type", id="foreign-type"),
        pytest.param("[" * 100_000, "longer than", id="too-long"),
    ],
)
def test_parse_event_refuses(text: str, problem: str) -> None:
    with pytest.raises(notify.NotifyError, match=problem):
        notify.parse_event(text)


@pytest.mark.parametrize(
    ("state", "type_"),
    [
        ("complete", "dev.ferry.copyjob.succeeded"),
        ("failed", "dev.ferry.copyjob.failed"),
        ("incomplete", "dev.ferry.copyjob.failed"),
        ("invalid", "dev.ferry.copyjob.failed"),
        ("systematicFailure", "dev.ferry.copyjob.stalled"),
        ("interrupted", None),
    ],
)
def test_run_event(state: str, type_: str | None) -> None:
    event = notify.run_event(
        name="job",
        namespace=None,
        state=state,
        event_id="e",
        time_=datetime(2026, 11, 30, tzinfo=UTC),
        objects={"total": 1},
        bytes_={},
    )
    assert (event["type"] if event else None) == type_


@pytest.mark.parametrize(
    ("flag", "ref", "secrets", "expected_origin", "problem"),
    [
        pytest.param(None, None, {}, None, None, id="none"),
        pytest.param("https://h.example.com/" + TOKEN, ("hooks", "url"), {}, "--notify-url", None,
                     id="flag-wins"),
        pytest.param(None, ("hooks", "url"), {"hooks": {"url": " https://h.example.com/" + TOKEN + "\n"}},
                     "Secret 'hooks' key 'url' (spec.notify.urlSecret)", None, id="from-secret"),
        pytest.param(None, ("hooks", "url"), {}, None, "not in the file", id="secret-absent"),
        pytest.param(None, ("hooks", "url"), {"hooks": {"other": "x"}}, None, "missing or empty",
                     id="key-absent"),
        pytest.param(None, ("hooks", "url"), {"hooks": {"url": "http://h.example.com/" + TOKEN}}, None,
                     "use https", id="http-in-secret"),
    ],
)  # fmt: skip
def test_run_webhook(
    flag: str | None,
    ref: tuple[str, str] | None,
    secrets: dict[str, dict[str, str]],
    expected_origin: str | None,
    problem: str | None,
) -> None:
    if problem is not None:
        with pytest.raises(notify.NotifyError, match=problem) as caught:
            notify.run_webhook(flag, False, ref, secrets)
        assert TOKEN not in str(caught.value)
        return
    webhook = notify.run_webhook(flag, False, ref, secrets)
    assert (webhook.origin if webhook else None) == expected_origin
    if webhook is not None:
        assert TOKEN in webhook.url and TOKEN not in repr(webhook)


def test_send_stops_at_the_first_success_and_never_sleeps_after_the_last_attempt() -> None:
    answers = iter([503, 500, 200])
    waits: list[float] = []
    delivery = notify.send(
        "https://h.example.com/", {"x": 1}, attempts=5, sleep=waits.append, post=lambda *_: next(answers)
    )
    assert delivery == notify.Delivery(True, 3, 200)
    assert waits == [1.0, 2.0]


def test_send_counts_no_answer_as_retryable_and_names_no_url() -> None:
    def refused(url: str, body: bytes, timeout: float) -> int:
        raise ConnectionRefusedError(111, f"refused {url}")

    waits: list[float] = []
    delivery = notify.send("https://h.example.com/" + TOKEN, {}, attempts=3, sleep=waits.append, post=refused)
    assert not delivery.delivered and delivery.attempts == 3 and delivery.status is None
    assert delivery.error == "no answer (ConnectionRefusedError)" and waits == [1.0, 2.0]
