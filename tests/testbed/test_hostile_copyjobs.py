"""Hostile and broken CopyJobs on the testbed (real kube-apiserver, the operator as a process, versitygw).

Proves that CopyJobs which cannot work (an endpoint that is not S3 or not there, Secrets that are
missing, incomplete or wrong, buckets that do not exist), applied at the same moment as a good one in
one namespace, each end Stalled with a specific reason and a message naming the field to fix; that none
of them copies anything or crashes the operator; and that the good CopyJob still copies every object.
A second test proves that awkward keys (control characters, spaces, XML metacharacters, unicode,
1024-byte keys) are copied intact.

Left out, because the testbed cannot produce them (not because Ferry would pass):
- a region mismatch: versitygw signs and serves requests for any region, so a wrong `region` works;
- spec errors the API server refuses at apply time: tests/testbed/test_crd_apply.py covers those.
"""

from __future__ import annotations

import http.server
import itertools
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from support.operator import Jobs, condition, events, md5s, spec_for
from support.wait import wait_for
from testbed.install import OperatorProcess

pytestmark = pytest.mark.timeout(300)

ACCESS, SECRET = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
# Random so that finding it anywhere in a status or an Event can only mean it leaked.
WRONG_SECRET = "WRONGsecret" + uuid.uuid4().hex
UNKNOWN_KEY = "UNKNOWNkey" + uuid.uuid4().hex[:10].upper()


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    """Any web server that is not S3: a captive portal, a load balancer's default page."""

    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    # Bound but never listening: connections are refused, and no other process can take the port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@dataclass(frozen=True)
class World:
    """What the cases build their CopyJobs from."""

    url: str  # versitygw
    source: str  # exists, holds the good job's objects
    destination: str  # exists, stays empty: no hostile job may write to it
    html: str
    dead: str
    namespace: str

    def spec(
        self, source: dict[str, Any] | None = None, destination: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        spec = spec_for(self.url, self.source, self.destination)
        spec["source"].update(source or {})
        spec["destination"].update(destination or {})
        return spec


@dataclass(frozen=True)
class Case:
    name: str  # also the CopyJob's name and the name of its own Secret, if it has one
    spec: Callable[[World], dict[str, Any]]
    reason: str
    fragments: tuple[str, ...]  # formatted with the World's fields
    secret: Callable[[Any], dict[str, str]] | None = None  # stringData, from versitygw's endpoint


def own_secret(name: str) -> dict[str, Any]:
    return {"credentialsSecret": name}


CASES = [
    Case(
        "not-s3",
        lambda w: w.spec(source={"endpoint": w.html}),
        "NotS3",
        ("spec.source: {html} answered, but not like an S3 service", "check spec.source.endpoint"),
    ),
    Case(
        "unreachable",
        lambda w: w.spec(source={"endpoint": w.dead}),
        "EndpointUnreachable",
        ("spec.source: cannot reach {dead}", "check spec.source.endpoint"),
    ),
    Case(
        "secret-key-missing",
        lambda w: w.spec(source=own_secret("secret-key-missing")),
        "CredentialsKeyMissing",
        (
            "Secret 'secret-key-missing' (spec.source.credentialsSecret) lacks AWS_SECRET_ACCESS_KEY",
            "add the key(s) to the Secret",
        ),
        lambda e: {ACCESS: e.access_key},
    ),
    Case(
        "wrong-secret-key",
        lambda w: w.spec(source=own_secret("wrong-secret-key")),
        "CredentialsInvalid",
        ("the secret key of spec.source is wrong for {url}", "check spec.source.credentialsSecret"),
        lambda e: {ACCESS: e.access_key, SECRET: WRONG_SECRET},
    ),
    Case(
        "unknown-access-key",
        lambda w: w.spec(source=own_secret("unknown-access-key")),
        "CredentialsInvalid",
        ("the access key of spec.source is not known at {url}", "check spec.source.credentialsSecret"),
        lambda e: {ACCESS: UNKNOWN_KEY, SECRET: e.secret_key},
    ),
    Case(
        "no-source-bucket",
        lambda w: w.spec(source={"bucket": "no-such-source-bucket"}),
        "BucketNotFound",
        ("spec.source: bucket 'no-such-source-bucket' does not exist", "fix spec.source.bucket"),
    ),
    Case(
        "no-destination-bucket",
        lambda w: w.spec(destination={"bucket": "no-such-destination-bucket"}),
        "BucketNotFound",
        (
            "spec.destination: bucket 'no-such-destination-bucket' does not exist",
            "fix spec.destination.bucket",
        ),
    ),
    Case(
        "secret-missing",
        lambda w: w.spec(source=own_secret("never-created")),
        "CredentialsSecretMissing",
        (
            "Secret 'never-created' named by spec.source.credentialsSecret does not exist in namespace "
            "{namespace}",
            "create it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
    ),
]


def stalled(jobs: Jobs, name: str) -> dict[str, Any] | None:
    status = jobs.status(name)
    found = [c for c in status.get("conditions") or [] if c["type"] == "Stalled" and c["status"] == "True"]
    return status if found else None


def has_event(cluster: Any, namespace: str, name: str, reason: str) -> bool:
    return any(r == reason for r, _m in events(cluster, namespace, name))


def test_hostile_copyjobs_stall_with_specific_reasons_beside_a_good_one_that_succeeds(
    jobs: Jobs,
    operator: OperatorProcess,
    s3: Any,
    versitygw: Any,
    cluster: Any,
    namespace: str,
    html_server: str,
    dead_endpoint: str,
) -> None:
    source, good_destination = f"src-{uuid.uuid4().hex[:10]}", f"dst-{uuid.uuid4().hex[:10]}"
    untouched = f"untouched-{uuid.uuid4().hex[:10]}"
    for bucket in (source, good_destination, untouched):
        s3.create_bucket(Bucket=bucket)
    # Few and small: the point is the company the good job keeps, not volume.
    for i in range(120):
        s3.put_object(Bucket=source, Key=f"data/{i:04d}.bin", Body=uuid.uuid4().bytes * (i % 7 + 1))
    world = World(versitygw.endpoint.url, source, untouched, html_server, dead_endpoint, namespace)

    for case in CASES:
        if case.secret is not None:
            cluster.core.create_namespaced_secret(
                namespace, {"metadata": {"name": case.name}, "stringData": case.secret(versitygw.endpoint)}
            )
    # Created back to back so the operator works on all of them at once.
    jobs.create(
        "good", spec_for(versitygw.endpoint.url, source, good_destination, shardSize={"maxObjects": 40})
    )
    for case in CASES:
        jobs.create(case.name, case.spec(world))

    wrong = []
    for case in CASES:
        status = wait_for(f"{case.name} Stalled", partial(stalled, jobs, case.name), timeout=60)
        got = condition(status, "Stalled")
        expected = [f.format(**vars(world)) for f in case.fragments]
        if got["reason"] != case.reason or not all(f in got["message"] for f in expected):
            wrong.append((case.name, case.reason, expected, got["reason"], got["message"]))
    assert not wrong, "\n".join(map(repr, wrong))

    good = jobs.wait_phase("good", "Succeeded", "Failed", timeout=180)
    assert good["phase"] == "Succeeded", good
    assert good["objects"] == {"total": 120, "copied": 120, "skipped": 0, "failed": 0, "pending": 0}
    assert md5s(s3, good_destination) == md5s(s3, source)

    # Stalled is not a step on the way to anything: after the good job finished, every hostile one is
    # still Pending with the same reason, has no workers, and wrote nothing.
    for case in CASES:
        status = jobs.status(case.name)
        assert status["phase"] == "Pending", (case.name, status)
        assert condition(status, "Stalled")["reason"] == case.reason, (case.name, status)
        assert not status.get("plan"), (case.name, status)
        # A Warning event carries the same reason to `kubectl describe`.
        wait_for(
            f"a {case.reason} event for {case.name}",
            partial(has_event, cluster, namespace, case.name, case.reason),
            timeout=30,
        )
    assert [j.metadata.name for j in cluster.batch.list_namespaced_job(namespace).items] == ["good-workers"]
    assert md5s(s3, untouched) == {}

    # Wrong credentials are in play: their secret halves must not show up where users read.
    shown = json.dumps([jobs.get(c.name) for c in CASES])
    shown += json.dumps([(e.reason, e.message) for e in cluster.core.list_namespaced_event(namespace).items])
    for value in (WRONG_SECRET, versitygw.endpoint.secret_key):
        assert value not in shown

    assert operator.process is not None and operator.process.poll() is None, operator.log_tail()
    log = operator.log.read_text(errors="replace")
    assert "Traceback" not in log, operator.log_tail(80)
    # Domain errors never reach kopf (reconcile turns them into conditions); anything that does is an
    # unexpected exception, which kopf logs as a failed handler. kopf's lines carry no object name, but
    # this module's operator serves only this module's CopyJobs.
    failed = [line for line in log.splitlines() if " failed" in line or "[ERROR" in line]
    assert not failed, "\n".join(failed[:10])


def long_key(top: str, text: str, size: int = 1024) -> str:
    """A key of exactly `size` UTF-8 bytes (S3's maximum by default) built from `text`, cut into path
    segments of at most 255 bytes: versitygw's posix backend stores a key as a path, and a longer
    segment exceeds NAME_MAX (it answers ExistingObjectIsDirectory)."""
    key, total, segment = top, len(top.encode()), 0
    for char in itertools.cycle(text):
        width = len(char.encode())
        if total + width > size:
            break
        if segment + width > 255:
            key, total, segment = key + "/", total + 1, 0
            continue
        key, total, segment = key + char, total + width, segment + width
    while total < size:
        key, total = key + "x", total + 1
    return key


# Left out, because versitygw's posix backend cannot give them back under the same key:
# - C0 control characters other than TAB, LF and CR (e.g. \x01, \x0b, \x0c, \x1f): stored, but
#   listed as U+FFFD (they are not allowed in XML 1.0), so no copier can find them by listing;
# - "." and ".." segments and "//": the key becomes a path, which the filesystem normalises.
AWKWARD_KEYS = [
    "ctl/tab\there.bin",
    "ctl/new\nline.bin",
    "ctl/carriage\rreturn.bin",
    "ctl/delete\x7fchar.bin",
    " leading space at the top",
    "spaces/ with  spaces and a trailing space ",
    "xml/'quote\"<lt>&amp;.bin",
    "url/100%25 a+b=c&d?e#f.bin",
    "url/back\\slash.bin",
    "uni/ünïcødé-日本語-🚀.bin",
    "uni/e\u0301-decomposed.bin",
    "uni/\u200bzero-width\u200b.bin",
    long_key("long/", "a"),
    long_key("ulong/", "é日🚀"),
]


def test_awkward_keys_are_copied_intact(jobs: Jobs, s3: Any, versitygw: Any) -> None:
    assert all(len(k.encode()) == 1024 for k in AWKWARD_KEYS[-2:])
    source, destination = f"src-{uuid.uuid4().hex[:10]}", f"dst-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    for i, key in enumerate(AWKWARD_KEYS):
        s3.put_object(Bucket=source, Key=key, Body=key.encode() * (i + 1))
    written = md5s(s3, source)
    # Guards the premise: versitygw keeps each of these keys as given.
    assert sorted(written) == sorted(AWKWARD_KEYS)

    jobs.create("awkward", spec_for(versitygw.endpoint.url, source, destination))
    status = jobs.wait_phase("awkward", "Succeeded", "Failed", timeout=150)
    assert status["phase"] == "Succeeded", status
    n = len(AWKWARD_KEYS)
    assert status["objects"] == {"total": n, "copied": n, "skipped": 0, "failed": 0, "pending": 0}
    assert md5s(s3, destination) == written
