"""Completion notifications: a CloudEvents 1.0 JSON document (structured mode) POSTed to the webhook a
CopyJob names (`spec.notify.urlSecret`), retried with a bounded backoff.

Where it sits: the operator renders the event (pure, `cloud_event`) and a short pod in the CopyJob's
namespace (operator/notifyjob.py) that runs `ferry notify` with the URL from the tenant's Secret; `ferry
run` sends the same event itself at its end. The URL is tenant input and a secret (it often carries a
token): it is checked here (https unless the platform allows http), never followed through a redirect
(which could lead into the cluster's network), and never printed — messages name the Secret, not the URL.
The receiver's answers are read with a size cap and never echoed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

#: The event types, by how the CopyJob ended.
EVENT_TYPES = {
    "succeeded": "dev.ferry.copyjob.succeeded",
    "failed": "dev.ferry.copyjob.failed",
    "stalled": "dev.ferry.copyjob.stalled",
}
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SPEC_VERSION = "1.0"
#: The longest URL accepted (a URL is rarely over a few hundred characters; browsers cap near 2,000).
MAX_URL_CHARS = 2048
#: The largest event sent or read from the environment: counts only, a few hundred bytes in practice.
MAX_EVENT_BYTES = 16 * 1024
#: Bytes of a receiver's answer read at most (its body is never used; reading some lets the connection
#: be reused and closed cleanly).
MAX_ANSWER_BYTES = 4096
#: Attempts in all: the first and four retries after 1, 2, 4 and 8 s (about 15 s of waiting, under a
#: minute with timeouts): long enough to ride out a receiver's restart, short enough that a pod that
#: cannot deliver ends soon and says so.
ATTEMPTS = 5
MAX_ATTEMPTS = 10
BASE_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
#: Seconds one request may take (connect and answer).
TIMEOUT_SECONDS = 10.0

#: How `ferry notify` is configured in its pod (the operator renders these; the URL comes from the
#: tenant's Secret through a secretKeyRef).
URL_ENV = "FERRY_NOTIFY_URL"
EVENT_ENV = "FERRY_NOTIFY_EVENT"
ALLOW_HTTP_ENV = "FERRY_NOTIFY_ALLOW_HTTP"
#: Where the URL comes from, as messages name it (e.g. "Secret 'hooks' key 'url'"); never the URL.
ORIGIN_ENV = "FERRY_NOTIFY_ORIGIN"

EXIT_DELIVERED = 0
EXIT_INVALID = 2
EXIT_UNDELIVERED = 3


class NotifyError(Exception):
    """A URL or event that cannot be sent; retrying cannot help. The message never holds the URL."""


def event_kind(phase: str) -> str | None:
    """The event kind of a CopyJob phase (``Succeeded``, ``Failed``, ``Stalled``); None for others."""
    kind = phase.lower()
    return kind if kind in EVENT_TYPES else None


def event_data(
    *,
    name: str,
    namespace: str | None,
    phase: str,
    objects: Mapping[str, Any],
    bytes_: Mapping[str, Any],
    reason: str | None = None,
) -> dict[str, Any]:
    """The event's ``data``: the job, its phase and its counts. Counts only: never a key, an error
    message or anything from a Secret (a receiver may be less trusted than the cluster)."""
    return {
        "name": name,
        "namespace": namespace,
        "phase": phase,
        "reason": reason[:128] if reason else None,
        "objects": {k: _count(objects.get(k)) for k in ("total", "copied", "skipped", "failed", "pending")},
        "bytes": {k: _count(bytes_.get(k)) for k in ("total", "copied", "skipped", "failed")},
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def cloud_event(
    *, kind: str, source: str, event_id: str, time_: datetime, subject: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A CloudEvents 1.0 event in structured mode (the whole event is the JSON body)."""
    if kind not in EVENT_TYPES:
        raise NotifyError(f"unknown event kind {kind!r}; one of {', '.join(EVENT_TYPES)}")
    return {
        "specversion": SPEC_VERSION,
        "type": EVENT_TYPES[kind],
        "source": source,
        "id": event_id,
        "time": time_.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


def check_url(url: str, *, allow_http: bool, origin: str = "the webhook URL") -> str:
    """``url`` when it may be sent to: http(s), a host, no whitespace, bounded. Raises `NotifyError`
    naming ``origin`` (where the URL came from), never the URL itself."""
    if not url or len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise NotifyError(f"{origin} is empty, longer than {MAX_URL_CHARS} characters or holds whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise NotifyError(f"{origin} is not a valid URL") from exc
    if parts.scheme == "http" and not allow_http:
        raise NotifyError(f"{origin} is http; use https (the platform does not allow plain http webhooks)")
    if parts.scheme not in ("http", "https"):
        raise NotifyError(f"{origin} is not an https URL")
    if not parts.hostname:
        raise NotifyError(f"{origin} has no host")
    return url


def parse_event(text: str) -> dict[str, Any]:
    """An event as the operator rendered it into the pod's environment; raises `NotifyError`."""
    if len(text.encode()) > MAX_EVENT_BYTES:
        raise NotifyError(f"the event is longer than {MAX_EVENT_BYTES} bytes")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotifyError("the event is not JSON") from exc
    if not isinstance(event, dict) or event.get("specversion") != SPEC_VERSION:
        raise NotifyError("the event is not a CloudEvents 1.0 document")
    if event.get("type") not in EVENT_TYPES.values():
        raise NotifyError("the event's type is not one Ferry sends")
    return event


def delays(attempts: int, base: float = BASE_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> list[float]:
    """The waits between ``attempts`` attempts: doubling from ``base``, each at most ``cap``."""
    return [min(cap, base * 2**n) for n in range(max(0, min(attempts, MAX_ATTEMPTS) - 1))]


def retryable(status: int | None) -> bool:
    """Whether an answer is worth another attempt: no answer at all, a 5xx, 408 or 429. A 3xx is not
    followed (see the module's docstring) and, like any other 4xx, would only be answered again."""
    return status is None or status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class Delivery:
    """How sending ended: delivered or not, after how many attempts, the last HTTP status (None: no
    answer) and what went wrong, in words that hold no URL and no text of the receiver's."""

    delivered: bool
    attempts: int
    status: int | None
    error: str | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a 3xx ends as an HTTPError with its status


def _post(url: str, body: bytes, timeout: float) -> int:
    """POST ``body``; returns the HTTP status (an error status too). Raises OSError when nothing answers."""
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": CONTENT_TYPE, "User-Agent": "ferry-notify"}
    )
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(MAX_ANSWER_BYTES)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.read(MAX_ANSWER_BYTES)
        exc.close()
        return int(exc.code)


def send(
    url: str,
    event: dict[str, Any],
    *,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT_SECONDS,
    base_delay: float = BASE_DELAY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    post: Callable[[str, bytes, float], int] = _post,
) -> Delivery:
    """POST ``event`` to ``url`` (already checked) until a 2xx, a final answer, or the attempts run out."""
    body = json.dumps(event, ensure_ascii=True, separators=(",", ":")).encode()
    if len(body) > MAX_EVENT_BYTES:
        return Delivery(False, 0, None, f"the event is longer than {MAX_EVENT_BYTES} bytes")
    waits = delays(attempts, base_delay)
    status: int | None = None
    error: str | None = None
    for attempt in range(1, len(waits) + 2):
        try:
            status = post(url, body, timeout)
            error = None if 200 <= status < 300 else f"the receiver answered HTTP {status}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out, no such host
            status = None
            reason = getattr(exc, "reason", None)
            cause = reason if isinstance(reason, BaseException) else exc
            error = f"no answer ({type(cause).__name__})"
        if error is None:
            return Delivery(True, attempt, status)
        if not retryable(status) or attempt > len(waits):
            return Delivery(False, attempt, status, error)
        sleep(waits[attempt - 1])
    return Delivery(False, len(waits) + 1, status, error)  # not reached: the loop returns


def describe(delivery: Delivery, origin: str) -> str:
    if delivery.delivered:
        return f"notified the webhook of {origin} (HTTP {delivery.status}, attempt {delivery.attempts})"
    return f"could not notify the webhook of {origin} after {delivery.attempts} attempt(s): {delivery.error}"


def main(env: Mapping[str, str] | None = None) -> int:
    """`ferry notify`: send the event in FERRY_NOTIFY_EVENT to the URL in FERRY_NOTIFY_URL.

    Exit codes: 0 delivered; 2 the URL or the event cannot be sent (retrying cannot help); 3 not
    delivered after every attempt."""
    env = os.environ if env is None else env
    origin = env.get(ORIGIN_ENV, "spec.notify.urlSecret")[:600]
    allow_http = env.get(ALLOW_HTTP_ENV, "").lower() == "true"
    try:
        url = check_url(env.get(URL_ENV, "").strip(), allow_http=allow_http, origin=f"the URL in {origin}")
        event = parse_event(env.get(EVENT_ENV, ""))
    except NotifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    delivery = send(url, event)
    print(describe(delivery, origin), file=sys.stdout if delivery.delivered else sys.stderr, flush=True)
    return EXIT_DELIVERED if delivery.delivered else EXIT_UNDELIVERED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`ferry notify` takes no arguments: its pod's environment configures it (see `main`)."""
    parser.set_defaults(handler=lambda _args: main())


# -- `ferry run` -------------------------------------------------------------------------------------------

#: The event kind of each way a `ferry run` ends (run.py's states); an interrupted run sends none (its
#: user stopped it and is there to see it).
RUN_KINDS = {
    "complete": "succeeded",
    "failed": "failed",
    "incomplete": "failed",
    "invalid": "failed",
    "systematicFailure": "stalled",
}


@dataclass(frozen=True)
class Webhook:
    """A checked webhook URL and where it came from (what messages name instead of it)."""

    url: str = ""
    origin: str = ""

    def __repr__(self) -> str:
        return f"Webhook(origin={self.origin!r})"


def run_webhook(
    flag: str | None,
    allow_http: bool,
    secret_ref: tuple[str, str] | None,
    secrets: Mapping[str, Mapping[str, str]],
) -> Webhook | None:
    """The webhook of a `ferry run`: ``--notify-url`` when given, else spec.notify's Secret key from the
    file's Secrets (``secrets``: name -> values). Raises `NotifyError` naming the field, never the URL."""
    if flag:
        return Webhook(check_url(flag, allow_http=allow_http, origin="--notify-url"), "--notify-url")
    if secret_ref is None:
        return None
    name, key = secret_ref
    origin = f"Secret {name!r} key {key!r} (spec.notify.urlSecret)"
    values = secrets.get(name)
    if values is None:
        raise NotifyError(
            f"spec.notify.urlSecret names Secret {name!r}, which is not in the file; add it after a '---' line"
        )
    if not values.get(key):
        raise NotifyError(f"{origin} is missing or empty")
    return Webhook(check_url(values[key].strip(), allow_http=allow_http, origin=origin), origin)


def run_event(
    *,
    name: str,
    namespace: str | None,
    state: str,
    event_id: str,
    time_: datetime,
    objects: Mapping[str, Any],
    bytes_: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The event a `ferry run` that ended in ``state`` sends; None when it sends none."""
    kind = RUN_KINDS.get(state)
    if kind is None:
        return None
    phase = {"succeeded": "Succeeded", "failed": "Failed", "stalled": "Stalled"}[kind]
    data = event_data(
        name=name, namespace=namespace, phase=phase, objects=objects, bytes_=bytes_, reason=state
    )
    return cloud_event(
        kind=kind, source=f"/ferry/run/{name}", event_id=event_id, time_=time_, subject=name, data=data
    )


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "delivered": delivery.delivered,
        "attempts": delivery.attempts,
        "status": delivery.status,
        "error": delivery.error,
    }
