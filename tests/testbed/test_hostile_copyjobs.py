"""Hostile and broken CopyJobs on the testbed (real kube-apiserver, the operator as a process, versitygw).

Proves that CopyJobs which cannot work (an endpoint that is not S3 or not there, Secrets that are
missing, incomplete or wrong, buckets that do not exist), applied at the same moment as a good one in
one namespace, each end Stalled with a specific reason and a message naming the field to fix; that none
of them copies anything or crashes the operator; and that the good CopyJob still copies every object.
A second test proves that awkward keys (control characters, spaces, XML metacharacters, unicode,
1024-byte keys) are copied intact.

Then a tenant's attacks through names and spellings: a plan ConfigMap or a worker Job made before the
CopyJob under its child's name (stalls with NameConflict; never read, patched or deleted; the CopyJob
continues once the name is free), a destination under the source behind a differently spelled endpoint
(refused at apply time), and a plan the API server refuses at run time (one PlanRejected condition, the
source listed once).

Left out here, because other modules cover them:
- a wrong region (versitygw refuses it as AWS does): tests/testbed/test_operator_edits.py;
- spec errors the API server refuses at apply time: tests/testbed/test_crd_apply.py covers those.
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from ferry.model.copyjob import parse_copyjob
from support.operator import Jobs, condition, copyjob, events, fill, md5s, spec_for
from support.wait import wait_for
from testbed.faultproxy import FaultPlan, FaultProxy
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
    # Only the good CopyJob got workers; the others at most a planner, which found the problem.
    jobs_made = [j.metadata.name for j in cluster.batch.list_namespaced_job(namespace).items]
    assert [n for n in jobs_made if not n.endswith("-planner")] == ["good-workers"]
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
    failed = [line for line in log.splitlines() if re.search(r"Handler '[^']*' failed|\[ERROR", line)]
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


# -- children the CopyJob does not own, and what it cannot run ----------------------------------------


def stalled_with(jobs: Jobs, name: str, reason: str) -> dict[str, Any] | None:
    status = stalled(jobs, name)
    return status if status and condition(status, "Stalled")["reason"] == reason else None


def planning_events(cluster: Any, namespace: str, name: str) -> int:
    """How often the operator listed the source for this CopyJob (one Planning Event per listing)."""
    return sum(1 for reason, _m in events(cluster, namespace, name) if reason == "Planning")


def test_a_tenant_made_plan_configmap_stalls_the_copyjob_with_name_conflict_and_is_never_trusted(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    """The attack: a tenant writes `<name>-plan` before the CopyJob, with a pod size above the platform's
    cap and a spec.json (which workers execute) that writes to a bucket the CopyJob never named."""
    source, destination = fill(s3, 30, size=500)
    elsewhere = f"elsewhere-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=elsewhere)
    forged_spec = spec_for(versitygw.endpoint.url, source, elsewhere)
    forged = cluster.core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "victim-plan"},
            "data": {
                "spec.json": json.dumps(forged_spec),
                "shards.json": json.dumps([{"startAfter": None, "end": None, "objects": 30, "bytes": 1}]),
                "summary.json": json.dumps(
                    {"objects": 30, "bytes": 1, "histogram": [], "podMemory": "64Gi", "memoryLimit": "60Gi"}
                ),
            },
        },
    )
    jobs.create("victim", spec_for(versitygw.endpoint.url, source, destination))

    status = wait_for(
        "victim NameConflict", partial(stalled_with, jobs, "victim", "NameConflict"), timeout=60
    )
    message = condition(status, "Stalled")["message"]
    assert f"ConfigMap {namespace}/victim-plan" in message, message
    assert f"kubectl -n {namespace} delete configmap victim-plan" in message, message
    wait_for(
        "a NameConflict event", partial(has_event, cluster, namespace, "victim", "NameConflict"), timeout=30
    )
    time.sleep(4)  # several passes at 1 s: still nothing started, nothing touched
    assert not status.get("plan"), status
    assert cluster.batch.list_namespaced_job(namespace).items == []
    assert planning_events(cluster, namespace, "victim") == 0  # not even listed
    again = cluster.core.read_namespaced_config_map("victim-plan", namespace)
    assert again.metadata.resource_version == forged.metadata.resource_version
    assert again.metadata.owner_references is None

    # The name freed, the CopyJob plans itself and copies where it says, under the platform's sizing.
    cluster.core.delete_namespaced_config_map("victim-plan", namespace)
    done = jobs.wait_phase("victim", "Succeeded", "Failed", timeout=150)
    assert done["phase"] == "Succeeded", done
    assert md5s(s3, destination) == md5s(s3, source)
    assert md5s(s3, elsewhere) == {}
    assert done["plan"]["podMemory"] != "64Gi"
    plan = cluster.core.read_namespaced_config_map("victim-plan", namespace)
    uid = jobs.get("victim")["metadata"]["uid"]
    assert [(r.uid, r.controller) for r in plan.metadata.owner_references] == [(uid, True)]


def test_an_unowned_workers_job_is_never_patched_or_deleted(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    """The attack: a tenant's suspended Job named `<name>-workers`. Adopted, the operator would scale it
    and resume it (running the tenant's pod template) and delete it after ttlSecondsAfterFinished."""
    source, destination = fill(s3, 20, size=500)
    squatter = cluster.batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "squat-workers"},
            "spec": {
                "suspend": True,
                "parallelism": 1,
                "completions": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "tenant", "image": "tenant/anything:1", "command": ["true"]}],
                    }
                },
            },
        },
    )
    jobs.create(
        "squat",
        spec_for(versitygw.endpoint.url, source, destination, parallelism=3, ttlSecondsAfterFinished=0),
    )
    status = wait_for("squat NameConflict", partial(stalled_with, jobs, "squat", "NameConflict"), timeout=60)
    assert f"Job {namespace}/squat-workers" in condition(status, "Stalled")["message"]
    time.sleep(4)
    job = cluster.batch.read_namespaced_job("squat-workers", namespace)
    # Never patched: the generation counts spec changes (the Job controller writes its status only).
    assert job.metadata.generation == squatter.metadata.generation
    assert (job.spec.suspend, job.spec.parallelism) == (True, 1)
    assert job.metadata.owner_references is None
    # Nothing started beside it: no progress ledger, no pods of the CopyJob.
    names = [c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace).items]
    assert "squat-progress" not in names, names

    # The tenant removes it: the CopyJob runs, and removes its own Job (only its own) after the TTL.
    cluster.batch.delete_namespaced_job("squat-workers", namespace, propagation_policy="Background")
    wait_for(
        "the tenant's Job gone",
        lambda: (
            not [
                j
                for j in cluster.batch.list_namespaced_job(namespace).items
                if j.metadata.uid == squatter.metadata.uid
            ]
        ),
        timeout=30,
    )
    done = jobs.wait_phase("squat", "Succeeded", "Failed", timeout=150)
    assert done["phase"] == "Succeeded", done
    assert md5s(s3, destination) == md5s(s3, source)
    removed = wait_for(
        "squat's own Job removed",
        lambda: next(
            (c for c in jobs.status("squat").get("conditions", []) if c["type"] == "WorkersRemoved"), None
        ),
        timeout=30,
    )
    assert removed["reason"] == "TTLExpired", removed


OVERLAPS = [
    # (name, source endpoint, destination endpoint); "{url}" is versitygw's http://127.0.0.1:<port>
    ("host-case", "http://localhost:{port}", "http://LocalHost:{port}/"),
    ("http-and-https", "{url}", "https://127.0.0.1:{port}"),
    ("default-port", "http://s3.example.com", "http://s3.example.com:80"),
    ("aws-default-vs-none", None, "https://s3.amazonaws.com"),
    ("aws-regional-vs-none", None, "https://s3.eu-west-1.amazonaws.com:443"),
]


@pytest.mark.parametrize(("source", "destination"), [o[1:] for o in OVERLAPS], ids=[o[0] for o in OVERLAPS])
def test_overlap_is_refused_however_the_endpoint_is_spelled(
    jobs: Jobs, s3: Any, versitygw: Any, source: str | None, destination: str | None
) -> None:
    """The attack: the destination prefix under the source on the same bucket, with the endpoint spelled
    differently on each side, so that every run copies its own output again. Refused at apply time,
    with the model agreeing; nothing is written."""
    url = versitygw.endpoint.url
    port = url.rsplit(":", 1)[1]
    bucket = f"loop-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/one.bin", Body=b"1")
    spec: dict[str, Any] = {
        "source": {"bucket": bucket, "prefix": "data/", "credentialsSecret": "src"},
        "destination": {"bucket": bucket, "prefix": "data/copy/", "credentialsSecret": "dst"},
    }
    for side, endpoint in (("source", source), ("destination", destination)):
        if endpoint is not None:
            spec[side]["endpoint"] = endpoint.format(url=url, port=port)
    with pytest.raises(ValidationError, match="overlap"):
        parse_copyjob(copyjob("loop", spec))
    with pytest.raises(ApiException) as raised:
        jobs.create("loop", spec)
    assert raised.value.status == 422 and "overlap" in raised.value.body
    assert sorted(md5s(s3, bucket)) == ["data/one.bin"]


def test_a_plan_the_apiserver_refuses_stalls_once_and_the_source_is_listed_once(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    """What the apiserver still refuses at run time (here a ConfigMap quota used up while the planner
    lists) becomes one PlanRejected condition and Event; the source is not listed again every pass while
    it lasts: the planner pod keeps its plan, and it is stored once the quota allows."""
    source, destination = fill(s3, 40, size=500)
    cluster.core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "configmaps"}, "spec": {"hard": {"configmaps": "10"}}}
    )
    # No resourcequota controller runs on the testbed: the quota's usage is what its status says.
    cluster.core.patch_namespaced_resource_quota_status(
        "configmaps", namespace, {"status": {"hard": {"configmaps": "10"}, "used": {"configmaps": "1"}}}
    )
    # A slow listing, so that the quota is used up after the planner started and before its plan is stored.
    slow_listing = FaultPlan(latency_ms=3000, methods=frozenset({"GET"}), path_regex=r"list-type=2&")
    with FaultProxy(versitygw.endpoint.url, slow_listing) as proxy:
        jobs.create("refused", spec_for(proxy.url, source, destination))
        wait_for(
            "the planner's ConfigMap",
            lambda: (
                "refused-planner"
                in {c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace).items}
            ),
            timeout=60,
        )
        cluster.core.patch_namespaced_resource_quota_status(
            "configmaps", namespace, {"status": {"hard": {"configmaps": "10"}, "used": {"configmaps": "10"}}}
        )
        status = wait_for(
            "refused PlanRejected", partial(stalled_with, jobs, "refused", "PlanRejected"), timeout=60
        )
        assert "exceeded quota" in condition(status, "Stalled")["message"], status
        time.sleep(6)  # six passes at 1 s
        assert planning_events(cluster, namespace, "refused") == 1
        assert sum(1 for r, _m in events(cluster, namespace, "refused") if r == "PlanRejected") == 1

        cluster.core.patch_namespaced_resource_quota_status(
            "configmaps", namespace, {"status": {"hard": {"configmaps": "20"}, "used": {"configmaps": "10"}}}
        )
        done = jobs.wait_phase("refused", "Succeeded", "Failed", timeout=150)
    assert done["phase"] == "Succeeded", done
    assert md5s(s3, destination) == md5s(s3, source)
    assert planning_events(cluster, namespace, "refused") == 1
