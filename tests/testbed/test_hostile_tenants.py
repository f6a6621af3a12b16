"""Hostile tenants against the platform's tenancy policy, end to end on the testbed: the operator under
the chart's ServiceAccount and RBAC, configured as a platform would configure it, with an ambient cloud
identity of its own that no tenant may borrow.

The operator here holds AWS keys in its environment (as IRSA or an instance profile would give it) that
can read every bucket of versitygw, allows exactly 127.0.0.1 as an endpoint (where the testbed's S3
servers listen; every other loopback address, where the testbed's pods and the operator's own ports
also answer, stays refused), and stops a listing after LISTING_DEADLINE seconds. Each test is an attack
named in its title; each fails on the operator before the tenancy policy (it would list with its own
keys, connect to its own loopback, quote what endpoints answered, read a fake worker's endless
`/status`, and list forever), and passes now.

Local HTTP servers play the hostile endpoints; versitygw plays the real S3 service of a tenant doing
nothing wrong, whose CopyJob must finish while the attacks run.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support.operator import Jobs, condition, events, fill, md5s, secret, spec_for
from support.wait import wait_for
from testbed.binaries import TestBinaries
from testbed.install import OperatorProcess, install, operator_process

pytestmark = pytest.mark.timeout(300)

LISTING_DEADLINE = 8
CANARY = "CANARY-" + uuid.uuid4().hex  # random: found anywhere, it can only have leaked


@pytest.fixture(scope="module")
def operator(
    cluster: Any, testbin: TestBinaries, versitygw: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a platform runs it, plus an identity of its own: versitygw's admin keys in its
    environment, where the AWS SDK's default chain would find them."""
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(
        cluster.controlplane,
        tmp_path_factory.mktemp("operator"),
        allowed_endpoints=("127.0.0.1/32",),
        extra_env={
            "AWS_ACCESS_KEY_ID": versitygw.endpoint.access_key,
            "AWS_SECRET_ACCESS_KEY": versitygw.endpoint.secret_key,
            "FERRY_LISTING_DEADLINE_SECONDS": str(LISTING_DEADLINE),
        },
    )


# -- hostile endpoints ----------------------------------------------------------------------------


def xml_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
        f"<Resource>/{CANARY}</Resource><RequestId>{CANARY}</RequestId></Error>"
    ).encode()


def listing(bucket: str, keys: list[str], truncated: bool, token: str = "") -> bytes:
    contents = "".join(
        f"<Contents><Key>{k}</Key><Size>10</Size><ETag>&quot;e&quot;</ETag>"
        "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
        for k in keys
    )
    more = f"<NextContinuationToken>{token}</NextContinuationToken>" if truncated else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{bucket}</Name><Prefix></Prefix>'
        f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>{str(truncated).lower()}"
        f"</IsTruncated>{more}{contents}</ListBucketResult>"
    ).encode()


@dataclass
class Hostile:
    """One S3-looking server whose behaviour depends on the bucket (path-style requests): every bucket
    is one hostile personality. Counts the requests each bucket got."""

    url: str = ""
    requests: dict[str, int] = field(default_factory=dict)
    authorizations: list[str] = field(default_factory=list)  # Authorization headers received

    def count(self, bucket: str) -> int:
        return self.requests.get(bucket, 0)


def answer(hostile: Hostile, bucket: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    probe = query.get("max-keys") == ["1"]  # preflight lists one key; planning lists pages of 1000
    if bucket == "readable":  # what the operator's own keys could list
        return 200, "application/xml", listing(bucket, [f"secret-{i}.bin" for i in range(5)], False)
    if bucket == "writable":
        return 200, "application/xml", listing(bucket, [], False)
    if bucket == "xml-400":
        return 400, "application/xml", xml_error("InvalidArgument", CANARY)
    if bucket == "xml-500":
        return 500, "application/xml", xml_error("InternalError", CANARY)
    if bucket == "code-is-data":
        return 400, "application/xml", xml_error(CANARY, "x")
    if bucket == "html-403":
        return 403, "text/html", f"<html><body><h1>Forbidden</h1><p>{CANARY}</p></body></html>".encode()
    if bucket == "garbage-200":
        return 200, "application/xml", f"<ListBucketResult><Name>{CANARY}</Oops>".encode()
    if bucket == "metrics-text":  # an internal service's plain-text page, as /metrics would be
        return 200, "text/plain", f"# HELP secret_total {CANARY}\nsecret_total 1\n".encode()
    if bucket == "listing-fails":
        if probe:
            return 200, "application/xml", listing(bucket, ["one"], False)
        return 500, "application/xml", xml_error("InternalError", CANARY)
    if bucket == "endless":
        if probe:
            return 200, "application/xml", listing(bucket, ["k"], False)
        n = hostile.count(bucket)
        return 200, "application/xml", listing(bucket, [f"k{n:09d}-{i}" for i in range(10)], True, f"t{n}")
    return 404, "application/xml", xml_error("NoSuchBucket", "no")


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    state = Hostile()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            bucket = parts.path.strip("/").split("/", 1)[0]
            state.requests[bucket] = state.count(bucket) + 1
            state.authorizations.append(self.headers.get("Authorization") or "")
            status, kind, body = answer(state, bucket, parse_qs(parts.query))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def banner() -> Iterator[str]:
    """Not HTTP at all: a service that greets every connection with a banner (SSH, SMTP, Redis...)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(f"SSH-2.0-{CANARY}\r\n".encode())

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def stalled_with(jobs: Jobs, name: str, reason: str | None = None) -> dict[str, Any] | None:
    status = jobs.status(name)
    found = [c for c in status.get("conditions") or [] if c["type"] == "Stalled" and c["status"] == "True"]
    if found and (reason is None or found[0]["reason"] == reason):
        return status
    return None


def other_tenant(cluster: Any, custom: client.CustomObjectsApi, versitygw: Any) -> Jobs:
    """A second namespace, as another team's, with its own Secrets for versitygw."""
    namespace = cluster.new_namespace("bystander")
    secret(cluster, namespace, "src", versitygw.endpoint)
    secret(cluster, namespace, "dst", versitygw.endpoint)
    return Jobs(custom, namespace)


# -- credentials ----------------------------------------------------------------------------------


def test_a_copyjob_without_credentials_stalls_credentials_required_and_nothing_is_listed(
    jobs: Jobs, hostile: Hostile, cluster: Any, namespace: str, operator: OperatorProcess, versitygw: Any
) -> None:
    """The attack: a source without credentialsSecret, so that the operator signs the listing with its
    own identity, and the keys of a bucket only the platform may read land in the tenant's plan."""
    spec = {
        "source": {"bucket": "readable", "endpoint": hostile.url, "addressingStyle": "path"},
        "destination": {
            "bucket": "writable",
            "endpoint": hostile.url,
            "addressingStyle": "path",
            "credentialsSecret": "dst",
        },
    }
    jobs.create("borrow", spec)
    status = wait_for("borrow Stalled", partial(stalled_with, jobs, "borrow"), timeout=60)
    got = condition(status, "Stalled")
    assert got["reason"] == "CredentialsRequired", got
    for fragment in ("spec.source has no credentialsSecret", "name it in spec.source.credentialsSecret"):
        assert fragment in got["message"], got
    time.sleep(3)  # several passes at 1 s
    assert hostile.count("readable") == 0  # not even a preflight request
    assert not [a for a in hostile.authorizations if versitygw.endpoint.access_key in a]
    names = [c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace).items]
    assert "borrow-plan" not in names and not jobs.status("borrow").get("plan")
    assert cluster.batch.list_namespaced_job(namespace).items == []
    assert any(r == "CredentialsRequired" for r, _m in events(cluster, namespace, "borrow"))


def test_a_copyjob_naming_a_service_account_where_workload_identity_is_not_allowed_stalls(
    jobs: Jobs, versitygw: Any, s3: Any
) -> None:
    source, destination = fill(s3, 3, size=100)
    spec = spec_for(versitygw.endpoint.url, source, destination, serviceAccountName="default")
    del spec["source"]["credentialsSecret"]
    jobs.create("ambient", spec)
    status = wait_for("ambient Stalled", partial(stalled_with, jobs, "ambient"), timeout=60)
    assert condition(status, "Stalled")["reason"] == "CredentialsRequired"
    assert md5s(s3, destination) == {}


# -- endpoints ------------------------------------------------------------------------------------


def metrics_port(operator: OperatorProcess) -> str:
    return operator.env["FERRY_METRICS_PORT"]


def test_an_endpoint_on_the_operators_loopback_is_refused_endpoint_not_allowed(
    jobs: Jobs, operator: OperatorProcess, versitygw: Any, s3: Any, cluster: Any, namespace: str
) -> None:
    """The attack: endpoints that reach the operator's own pod (its /metrics on another loopback
    address, IPv6 loopback), the cloud's metadata service, and 'this host', to read them through the
    reasons and messages of the CopyJob's conditions or to map which ports are open."""
    _source, destination = fill(s3, 1, size=100)
    port = metrics_port(operator)
    targets = {
        "own-metrics": f"http://127.0.0.2:{port}",
        "own-metrics-v6": f"http://[::1]:{port}",
        "mapped-v4": f"http://[::ffff:127.0.0.3]:{port}",
        "metadata": "http://169.254.169.254",
        "this-host": f"http://0.0.0.0:{port}",
    }
    for name, endpoint in targets.items():
        spec = spec_for(versitygw.endpoint.url, "probe-bucket", destination)
        spec["source"].update(endpoint=endpoint, addressingStyle="path")
        jobs.create(name, spec)
    for name, endpoint in targets.items():
        status = wait_for(f"{name} Stalled", partial(stalled_with, jobs, name), timeout=60)
        got = condition(status, "Stalled")
        assert got["reason"] == "EndpointNotAllowed", (name, got)
        assert f"spec.source.endpoint {endpoint}" in got["message"], (name, got)
        assert "endpoints.allow" in got["message"], (name, got)
    # The operator never connects to a tenant's endpoint at all (its planner pod refused these); nothing
    # was planned or started.
    names = {c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace).items}
    assert not {f"{name}-plan" for name in targets} & names
    assert not [
        j for j in cluster.batch.list_namespaced_job(namespace).items if j.metadata.name.endswith("-workers")
    ]


def test_a_failing_endpoints_response_body_never_reaches_status_events_or_logs(
    jobs: Jobs, hostile: Hostile, banner: str, versitygw: Any, s3: Any, cluster: Any, namespace: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    """The attack: an endpoint whose answers (error messages, pages, unparsable bodies, a banner) carry
    data, read back through the CopyJob's conditions, Events or the operator's log. Only the HTTP
    status, the error code and Ferry's own words may appear there."""
    _source, destination = fill(s3, 1, size=100)
    buckets = [
        "xml-400",
        "xml-500",
        "code-is-data",
        "html-403",
        "garbage-200",
        "metrics-text",
        "listing-fails",
    ]
    for bucket in buckets:
        spec = spec_for(versitygw.endpoint.url, bucket, destination)
        spec["source"].update(endpoint=hostile.url, addressingStyle="path")
        jobs.create(bucket, spec)
    spec = spec_for(versitygw.endpoint.url, "banner-bucket", destination)
    spec["source"].update(endpoint=banner, addressingStyle="path")
    jobs.create("banner", spec)
    names = [*buckets, "banner"]
    reasons = {n: condition(wait_for(f"{n} Stalled", partial(stalled_with, jobs, n), timeout=90), "Stalled")["reason"] for n in names}  # fmt: skip
    assert reasons["xml-400"] == "LocationUnusable" and reasons["listing-fails"] == "ListingFailed", reasons
    assert reasons["code-is-data"] == "NotS3" and reasons["banner"] == "EndpointUnreachable", reasons
    status = jobs.status("xml-500")
    assert "(HTTP 500)" in condition(status, "Stalled")["message"], status  # the status, in Ferry's words
    time.sleep(3)  # a few more passes, each a chance to leak

    shown = json.dumps([jobs.get(n) for n in names])
    shown += json.dumps([(e.reason, e.message) for e in cluster.core.list_namespaced_event(namespace).items])
    assert CANARY not in shown
    assert CANARY not in operator.log.read_text(errors="replace")


# -- fair share -----------------------------------------------------------------------------------

FAKE_WORKER = textwrap.dedent(
    """
    import os, socketserver, time
    # 256 MiB per request at about 50 MiB/s: enough to show, not enough to take the host down when the
    # operator before the fix reads all of it (twice: bytes, then a str).
    LIMIT = 256 << 20

    class Endless(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)
            self.request.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n")
            chunk, sent = b"x" * 1048576, 0
            while sent < LIMIT:
                self.request.sendall(chunk)
                sent += len(chunk)
                time.sleep(0.02)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer((os.environ["FERRY_POD_IP"], 8080), Endless).serve_forever()
    """
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_a_fake_worker_pod_streaming_gigabytes_does_not_stall_the_operator(
    jobs: Jobs, operator: OperatorProcess, versitygw: Any, s3: Any, cluster: Any, namespace: str,
    custom: client.CustomObjectsApi,
) -> None:  # fmt: skip
    """The attack: a pod of the tenant's own that passes for a worker of its CopyJob (the label, the
    index annotation, even an ownerReference naming the Job as controller, put back whenever the Job
    controller releases the pod) and answers `/status` with a body that does not end. The operator reads
    at most 64 KiB for at most 2 s, so its memory stays flat, the CopyJob the pod pretends to serve still
    finishes, and so does another tenant's."""
    assert operator.process is not None
    source, destination = fill(s3, 30, size=500)
    stop = threading.Event()
    jobs.create_planned_suspended("victim", spec_for(versitygw.endpoint.url, source, destination))
    job = wait_for(
        "victim's worker Job",
        lambda: next(
            (
                j
                for j in cluster.batch.list_namespaced_job(namespace).items
                if j.metadata.name == "victim-workers"
            ),
            None,
        ),
        timeout=60,
    )
    baseline = rss_bytes(operator.process.pid)
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
    }
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": "fake-worker",
                "labels": {"ferry.dev/copyjob": "victim"},
                "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
                "ownerReferences": [owner],
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "fake", "image": "tenant/fake:1", "command": [sys.executable, "-c", FAKE_WORKER]}
                ],
            },
        },
    )
    wait_for(
        "the fake worker running",
        lambda: cluster.core.read_namespaced_pod("fake-worker", namespace).status.phase == "Running",
        timeout=60,
    )

    def keep_owned() -> None:
        """The Job controller releases a pod its selector does not match; the tenant's own controller
        names the Job as the pod's owner again at once (a tenant may patch its pods as it likes)."""
        while not stop.wait(0.2):
            try:
                pod = cluster.core.read_namespaced_pod("fake-worker", namespace)
            except ApiException as exc:
                if exc.status == 404:  # the garbage collector removed it with the Job: nothing to keep
                    return
                raise
            if not pod.metadata.owner_references:
                cluster.core.patch_namespaced_pod(
                    "fake-worker", namespace, {"metadata": {"ownerReferences": [owner]}}
                )

    threading.Thread(target=keep_owned, daemon=True).start()
    # Meanwhile another tenant copies, and the victim is resumed: both must finish on time.
    other = other_tenant(cluster, custom, versitygw)
    source_b, destination_b = fill(s3, 30, size=500)
    other.create("bystander", spec_for(versitygw.endpoint.url, source_b, destination_b))
    time.sleep(5)  # several passes reading the fake worker
    jobs.patch("victim", {"suspend": False, "rateLimit": None})
    peak = [baseline]

    def sampled(check: Callable[[], Any]) -> Any:
        assert operator.process is not None
        peak[0] = max(peak[0], rss_bytes(operator.process.pid))
        return check()

    try:
        done = wait_for(
            "victim and bystander done",
            lambda: sampled(
                lambda: (
                    jobs.status("victim").get("phase") in ("Succeeded", "Failed")
                    and other.status("bystander").get("phase") in ("Succeeded", "Failed")
                )
            ),
            timeout=120,
            interval=0.5,
        )
    finally:
        stop.set()
        cluster.core.delete_namespaced_pod("fake-worker", namespace, grace_period_seconds=0)
    assert done
    assert jobs.status("victim")["phase"] == "Succeeded", jobs.status("victim")
    assert other.status("bystander")["phase"] == "Succeeded", other.status("bystander")
    assert md5s(s3, destination) == md5s(s3, source)
    assert peak[0] - baseline < 100 * 2**20, f"operator RSS grew by {(peak[0] - baseline) / 2**20:.0f} MiB"
    assert operator.process.poll() is None, operator.log_tail()


def test_an_endless_listing_that_ignores_start_after_stalls_at_once_while_another_tenant_finishes(
    jobs: Jobs, hostile: Hostile, operator: OperatorProcess, versitygw: Any, s3: Any, cluster: Any,
    namespace: str, custom: client.CustomObjectsApi,
) -> None:  # fmt: skip
    """The attack: an endpoint that answers every ListObjectsV2 with IsTruncated and a new continuation
    token, forever, to hold planning (32 such CopyJobs once froze every tenant). Its pages ignore
    StartAfter, so the parallel listing sees keys out of order and stops at once as NotS3, never a
    partial plan; an endless endpoint that keeps S3's order stops at the platform's deadline instead
    (tests/unit/test_operator_pass.py, ListingTooLong). Either way, once; another tenant's CopyJob
    finishes."""
    _source, destination = fill(s3, 1, size=100)
    spec = spec_for(versitygw.endpoint.url, "endless", destination)
    spec["source"].update(endpoint=hostile.url, addressingStyle="path")
    started = time.monotonic()
    jobs.create("endless", spec)
    other = other_tenant(cluster, custom, versitygw)
    source_b, destination_b = fill(s3, 40, size=500)
    other.create("bystander", spec_for(versitygw.endpoint.url, source_b, destination_b))

    status = wait_for(
        "endless NotS3",
        partial(stalled_with, jobs, "endless", "NotS3"),
        timeout=LISTING_DEADLINE + 60,
    )
    assert time.monotonic() - started < LISTING_DEADLINE + 45
    message = condition(status, "Stalled")["message"]
    assert "does not behave as an S3 service" in message and "s3://endless/" in message, message
    assert CANARY not in message
    assert hostile.count("endless") > 2  # it did list past the location check
    done = other.wait_phase("bystander", "Succeeded", "Failed", timeout=120)
    assert done["phase"] == "Succeeded", done
    assert md5s(s3, destination_b) == md5s(s3, source_b)
    # Stalled once: later passes do not list it again.
    requests = hostile.count("endless")
    time.sleep(4)
    assert hostile.count("endless") == requests
    assert sum(1 for r, _m in events(cluster, namespace, "endless") if r == "NotS3") == 1
