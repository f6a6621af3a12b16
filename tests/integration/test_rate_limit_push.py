"""Changing a running worker's share of spec.rateLimit over HTTP, on real sockets on 127.0.0.0/8: the
worker's `PUT /limits` (worker/statusserver.py) takes a share only with its CopyJob's token and only in a
small, strictly checked body; the operator's push (operator/kube.py) is bounded against any pod; and
`ratecontrol.apply_rate_limits` splits, pushes and re-splits for real worker endpoints. Two tests copy
through a request-counting proxy in front of moto and measure the rate before and after a new share."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from ferry.operator.aggregate import JobView
from ferry.operator.kube import push_worker_limits
from ferry.operator.ratecontrol import apply_rate_limits, job_env, new_token
from ferry.operator.render import Owner, render_job
from ferry.operator.settings import OperatorSettings
from ferry.operator.sizing import Sizing
from ferry.worker import statusserver
from ferry.worker.engine import CopyEngine
from ferry.worker.limits import FixedLimiter
from ferry.worker.ratelimit import LATEST_SHARE_KEY, TOKEN_ENV, RateShare, TokenBucket, parse_share
from ferry.worker.report import FailureReport
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.statusdoc import status_document
from ferry.worker.statusserver import OperatorEndpoints, StatusServer
from support.engine import FAST_RETRY, spec
from testbed.faultproxy import FaultProxy

TOKEN = new_token()


@dataclass
class Bucket:
    """What a worker's `apply` changes: a real token bucket, and every share it was given."""

    requests: TokenBucket = field(default_factory=lambda: TokenBucket(5))
    given: list[RateShare] = field(default_factory=list)

    def apply(self, share: RateShare) -> None:
        self.given.append(share)
        self.requests.set_rate(share.requests_per_second)


@contextmanager
def worker_endpoint(
    bucket: Bucket, host: str = "127.0.0.1", port: int = 0, token: str | None = TOKEN
) -> Iterator[tuple[str, int]]:
    limits = OperatorEndpoints(token, bucket.apply) if token else None
    server = StatusServer((host, port), dict, lambda: None, limits)  # type: ignore[arg-type,return-value]
    try:
        yield server.address[0], server.address[1]
    finally:
        server.close()


def exchange(address: tuple[str, int], request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return the raw answer (the server closes after it: HTTP/1.0). A server that
    answers without reading the whole request resets the connection after its answer."""
    answer = b""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # all of the request is sent
        try:
            while len(answer) <= 65536 and (chunk := sock.recv(4096)):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def put(body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"PUT /limits HTTP/1.0\r\n{head}\r\n".encode() + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b"\r\n", 1)[0].split()[1])


GOOD = RateShare(40, 2**20).encode().encode()


# -- the worker's endpoint -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="none"),
        pytest.param("Bearer " + new_token(), id="another-copyjobs-token"),
        pytest.param("Bearer " + TOKEN[:-1], id="a-prefix"),
        pytest.param("Bearer " + TOKEN + "x", id="longer"),
        pytest.param("bearer " + TOKEN, id="other-scheme-spelling"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param("Bearer " + "x" * 60000, id="huge"),
    ],
)
def test_limits_change_only_with_the_copyjobs_token(authorization: str | None) -> None:
    bucket = Bucket()
    with worker_endpoint(bucket) as address:
        headers = {"Content-Length": str(len(GOOD))}
        if authorization is not None:
            headers["Authorization"] = authorization
        answer = exchange(address, put(GOOD, headers))
    assert status_of(answer) == 401
    assert answer.endswith(b"\r\n\r\n")  # no body: nothing of the request comes back
    assert bucket.given == [] and bucket.requests.rate == 5


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        pytest.param(GOOD, {}, 204, id="valid"),
        pytest.param(GOOD, {"Content-Length": None}, 411, id="no-length"),
        pytest.param(GOOD, {"Content-Length": "-1"}, 411, id="negative-length"),
        pytest.param(GOOD, {"Content-Length": "\uff11\uff12"}, 411, id="non-ascii-digits"),
        pytest.param(b"", {"Content-Length": "1025"}, 413, id="over-1KiB-announced"),
        pytest.param(b"{" + b" " * 2000 + b"}", {}, 413, id="over-1KiB-sent"),
        pytest.param(GOOD[:-5], {"Content-Length": str(len(GOOD))}, 400, id="body-ends-early"),
        pytest.param(b'{"requestsPerSecond": 1}', {}, 400, id="missing-field"),
        pytest.param(b'{"requestsPerSecond": -1, "bytesPerSecond": 0}', {}, 400, id="negative"),
        pytest.param(b'{"requestsPerSecond": NaN, "bytesPerSecond": 0}', {}, 400, id="nan"),
        pytest.param(b'{"requestsPerSecond": 1e9, "bytesPerSecond": 0}', {}, 400, id="above-the-crd"),
        pytest.param(b'{"requestsPerSecond": 1, "bytesPerSecond": 0, "x": 1}', {}, 400, id="extra-field"),
        pytest.param(b"\xff\xfe", {}, 400, id="not-utf8"),
    ],
)
def test_a_limits_body_is_bounded_and_checked_strictly(
    body: bytes, headers: dict[str, str | None], status: int
) -> None:
    bucket = Bucket()
    sent = {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(body)), **headers}
    with worker_endpoint(bucket) as address:
        answer = exchange(address, put(body, {k: v for k, v in sent.items() if v is not None}))
    assert status_of(answer) == status
    assert answer.endswith(b"\r\n\r\n")
    if status == 204:
        assert bucket.given == [RateShare(40, 2**20)] and bucket.requests.rate == 40
    else:
        assert bucket.given == [] and bucket.requests.rate == 5


def test_without_a_token_or_at_another_path_there_is_no_limits_endpoint() -> None:
    bucket = Bucket()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(GOOD))}
    with worker_endpoint(bucket, token=None) as address:
        assert status_of(exchange(address, put(GOOD, headers))) == 404
    with worker_endpoint(bucket) as address:
        other = exchange(address, put(GOOD, headers).replace(b"/limits", b"/status", 1))
        assert status_of(other) == 404
    assert bucket.given == []


def test_a_client_that_stops_sending_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statusserver, "REQUEST_TIMEOUT", 0.5)
    bucket = Bucket()
    with worker_endpoint(bucket) as address:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(put(GOOD[:10], {"Authorization": f"Bearer {TOKEN}", "Content-Length": "100"}))
            started = time.monotonic()
            closed = sock.recv(4096)  # the server gives up on the body and closes, answering nothing
            waited = time.monotonic() - started
        # The server still answers others.
        answer = exchange(
            address, put(GOOD, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(GOOD))})
        )
    assert closed == b"" and waited < 3.0
    assert status_of(answer) == 204


# -- the operator's push ------------------------------------------------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1 answering each connection with ``answer(conn)`` after reading once."""

    def __init__(self, answer: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.received += conn.recv(65536)
                self.answer(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def never(conn: socket.socket) -> None:
    time.sleep(10)


def trickle(conn: socket.socket) -> None:
    for _ in range(100):
        conn.sendall(b"H")
        time.sleep(0.1)


def endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 " + b"2" * 1_000_000)


def ok(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")


def refused(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("answer", "taken"),
    [
        pytest.param(never, False, id="never-answers"),
        pytest.param(trickle, False, id="trickles"),
        pytest.param(endless, False, id="endless-status-line"),
        pytest.param(refused, False, id="refuses"),
        pytest.param(ok, True, id="takes-it"),
    ],
)
def test_a_push_is_bounded_in_time_and_size_whatever_the_pod_does(answer: Any, taken: bool) -> None:
    server = RawServer(answer)
    try:
        started = time.monotonic()
        result = push_worker_limits("127.0.0.1", server.port, TOKEN, RateShare(10, 0).encode(), timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert result is taken
    assert elapsed < 2.0
    if taken:
        assert f"Authorization: Bearer {TOKEN}".encode() in server.received


def test_a_push_to_nothing_listening_fails_quietly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert push_worker_limits("127.0.0.1", port, TOKEN, RateShare(1, 0).encode(), timeout=1.0) is False


# -- splitting and pushing for a Job's pods -------------------------------------------------------------


@dataclass
class LedgerKube:
    """The one adapter call `apply_rate_limits` makes besides pushes: a ConfigMap data patch, recorded."""

    patches: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def patch_configmap_data(self, namespace: str, name: str, uid: str, data: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("apiserver unreachable")
        self.patches.append(data)


MiB = 2**20
SIZING = Sizing(448 * MiB, int(448 * MiB * 0.8), 32, 512, 2, 10_000, "2 pod(s)")


def pod(name: str, phase: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase, "podIP": ip}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_shares_are_split_pushed_and_resplit_as_pods_finish(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    job_spec = spec({"bucket": "src"}, {"bucket": "dst"}, rateLimit={"requestsPerSecond": 20}, parallelism=2)
    token = new_token()
    job = render_job(Owner("c", "ns", "uid"), job_spec, SIZING, 2, OperatorSettings(), 2, limits_token=token)
    assert job_env(job, TOKEN_ENV) == token
    ledger = {"metadata": {"name": "c-progress", "namespace": "ns", "uid": "u1"}, "data": {}}
    port = free_port()
    first, second, third = Bucket(), Bucket(), Bucket()
    confirmed: dict[str, RateShare] = {}
    kube = LedgerKube()
    with worker_endpoint(first, "127.0.0.2", port, token), worker_endpoint(second, "127.0.0.3", port, token):
        pods = [
            pod("w-0", "Running", "127.0.0.2"),
            pod("w-1", "Running", "127.0.0.3"),
            pod("w-2", "Pending", ""),
        ]
        view = JobView(exists=True, parallelism=2)
        args = (kube, job_spec, job, view)
        status = apply_rate_limits(*args, pods, 2, ledger, port, confirmed)  # type: ignore[arg-type]
        # Three pods not finished share 20 requests/s; both running ones took their share.
        assert status == {
            "requestsPerSecond": 20,
            "bytesPerSecond": 0,
            "perPod": {"requestsPerSecond": 6.666, "bytesPerSecond": 0},
            "pods": 3,
            "applied": 2,
            # No EndpointBudget covers this CopyJob: its own rateLimit applies.
            "budget": None,
            "budgetShare": None,
        }
        assert first.requests.rate == second.requests.rate == 6.666
        # A pod starting now would begin with 10 (the Job's share): the ledger says 6.666 from now on.
        assert [parse_share(p[LATEST_SHARE_KEY]) for p in kube.patches] == [RateShare(6.666, 0)]
        ledger["data"] = dict(kube.patches[-1])

        # Nothing changed: nothing is pushed or written again.
        again = apply_rate_limits(*args, pods, 2, ledger, port, confirmed)  # type: ignore[arg-type]
        assert again["applied"] == 2 and len(first.given) == len(second.given) == 1 and len(kube.patches) == 1

        # The pending pod never ran and the first one finished its shard, the last one left: the
        # second pod gets the whole limit.
        pods = [pod("w-0", "Succeeded", "127.0.0.2"), pod("w-1", "Running", "127.0.0.3")]
        view = JobView(exists=True, parallelism=2, completed_indexes=frozenset({0}))
        last = apply_rate_limits(kube, job_spec, job, view, pods, 2, ledger, port, confirmed)  # type: ignore[arg-type]
        assert (last["pods"], last["applied"], last["perPod"]["requestsPerSecond"]) == (1, 1, 20.0)
        assert second.requests.rate == 20 and first.requests.rate == 6.666
        assert list(confirmed) == ["w-1"]

    # A running pod that does not answer: not applied, retried at the next pass; the pass goes on, and
    # neither the token nor the share's push appear in any log line.
    kube.fail = True
    pods = [pod("w-3", "Running", "127.0.0.4")]
    status = apply_rate_limits(kube, job_spec, job, view, pods, 2, ledger, port, confirmed)  # type: ignore[arg-type]
    assert status["applied"] == 0 and "w-3" not in confirmed
    with worker_endpoint(third, "127.0.0.4", port, token):
        status = apply_rate_limits(kube, job_spec, job, view, pods, 2, ledger, port, confirmed)  # type: ignore[arg-type]
    assert status["applied"] == 1 and third.given == [RateShare(20, 0)]
    assert all(token not in record.getMessage() for record in caplog.records)


def test_a_job_without_a_token_gets_no_pushes() -> None:
    job_spec = spec({"bucket": "src"}, {"bucket": "dst"}, rateLimit={"requestsPerSecond": 20})
    job = render_job(Owner("c", "ns", "uid"), job_spec, SIZING, 2, OperatorSettings(), 2)
    port = free_port()
    bucket = Bucket()
    with worker_endpoint(bucket, "127.0.0.2", port, TOKEN):
        status = apply_rate_limits(
            LedgerKube(),  # type: ignore[arg-type]
            job_spec,
            job,
            JobView(exists=True, parallelism=2),
            [pod("w-0", "Running", "127.0.0.2")],
            2,
            {"metadata": {}, "data": {}},
            port,
            {},
        )
    assert status["applied"] == 0 and bucket.given == []


# -- a copying worker, measured at the server side --------------------------------------------------


def requests_in(proxy: FaultProxy, seconds: float) -> float:
    before = proxy.stats().requests
    time.sleep(seconds)
    return (proxy.stats().requests - before) / seconds


def test_a_push_changes_a_copying_workers_request_rate_at_once(s3: Any) -> None:
    """Server-side copies through one request-counting proxy: every request the engine makes (listings
    and copies) passes it. 8 requests/s before the push, 24 from half a second after it, each within 10%."""
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    for i in range(250):
        s3.client.put_object(Bucket=src, Key=f"k{i:04d}", Body=os.urandom(100))
    creds = Credentials(s3.endpoint.access_key, s3.endpoint.secret_key)
    options = ClientOptions(max_pool_connections=12, read_timeout=10, connect_timeout=2)
    with FaultProxy(s3.endpoint.url) as proxy:
        job = spec({"bucket": src, "endpoint": proxy.url}, {"bucket": dst, "endpoint": proxy.url})
        engine = CopyEngine(
            spec=job,
            source_client=make_client(job.source, creds, options),
            destination_client=make_client(job.destination, creds, options),
            limiter=FixedLimiter(8),
            report=FailureReport(),
            retry=FAST_RETRY,
            rate_share=RateShare(8, 0),
        )
        token = new_token()
        stop = threading.Event()
        server = StatusServer(
            ("127.0.0.1", 0),
            lambda: status_document(0, engine.progress()),
            engine.progress,
            OperatorEndpoints(token, engine.set_rate_share),
        )
        runner = threading.Thread(target=engine.run, args=(stop,), daemon=True)
        runner.start()
        try:
            time.sleep(1.5)  # past the first second's burst
            before = requests_in(proxy, 4.0)
            host, port = server.address[:2]
            assert push_worker_limits(host, port, token, RateShare(24, 0).encode())
            time.sleep(0.5)
            after = requests_in(proxy, 4.0)
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.sendall(b"GET /status HTTP/1.0\r\n\r\n")
                document = b""
                while chunk := sock.recv(65536):
                    document += chunk
        finally:
            stop.set()
            runner.join(timeout=30)
            server.close()
    assert 8 * 0.9 <= before <= 8 * 1.1, before
    assert 24 * 0.9 <= after <= 24 * 1.1, after
    shown = json.loads(document.partition(b"\r\n\r\n")[2])["rateLimit"]
    assert shown == {"requestsPerSecond": 24.0, "bytesPerSecond": 0}


def puts_in(proxy: FaultProxy, seconds: float) -> float:
    before = proxy.stats().by_method.get("PUT", 0)
    time.sleep(seconds)
    return (proxy.stats().by_method.get("PUT", 0) - before) / seconds


def test_a_new_share_changes_a_server_side_copys_byte_rate_at_once(s3: Any) -> None:
    """bytesPerSecond holds for server-side copies too (the service moves the bytes, the source serves
    them): objects of 10 KiB at 50 KiB/s are 5 copies (PUT with a copy source) a second, at 150 KiB/s 15."""
    src, dst = s3.make_bucket("src"), s3.make_bucket("dst")
    size = 10 * 1024
    for i in range(120):
        s3.client.put_object(Bucket=src, Key=f"k{i:04d}", Body=os.urandom(size))
    creds = Credentials(s3.endpoint.access_key, s3.endpoint.secret_key)
    options = ClientOptions(max_pool_connections=12, read_timeout=10, connect_timeout=2)
    with FaultProxy(s3.endpoint.url) as proxy:
        job = spec({"bucket": src, "endpoint": proxy.url}, {"bucket": dst, "endpoint": proxy.url})
        engine = CopyEngine(
            spec=job,
            source_client=make_client(job.source, creds, options),
            destination_client=make_client(job.destination, creds, options),
            limiter=FixedLimiter(8),
            report=FailureReport(),
            retry=FAST_RETRY,
            rate_share=RateShare(0, 5 * size),
        )
        stop = threading.Event()
        runner = threading.Thread(target=engine.run, args=(stop,), daemon=True)
        runner.start()
        try:
            time.sleep(1.5)  # past the first second's burst
            before = puts_in(proxy, 4.0)
            engine.set_rate_share(RateShare(0, 15 * size))
            time.sleep(0.5)
            after = puts_in(proxy, 4.0)
        finally:
            stop.set()
            runner.join(timeout=30)
    assert 5 * 0.9 <= before <= 5 * 1.1, before
    assert 15 * 0.9 <= after <= 15 * 1.1, after
