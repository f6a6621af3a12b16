"""The operator's network adapters against real sockets on 127.0.0.1: reads of a worker's `/status` are
bounded in size and time (operator/kube.py), and its S3 clients connect only where the endpoint policy
allows, to the address that was checked (operator/netguard.py)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ferry.model import Location
from ferry.operator import netguard
from ferry.operator.kube import STATUS_MAX_BYTES, fetch_worker_status
from ferry.operator.policy import EndpointPolicy
from ferry.worker.retry import classify
from ferry.worker.s3 import ClientOptions, make_client

LISTING = (
    b'<?xml version="1.0"?><ListBucketResult><Name>bkt</Name><KeyCount>0</KeyCount>'
    b"<IsTruncated>false</IsTruncated></ListBucketResult>"
)


class Server:
    """A raw TCP server answering each connection with `answer(sock)`; counts connections accepted."""

    def __init__(self, answer: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sent = 0
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.answer(self, conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def serve(answer: Any) -> Iterator[Server]:
    server = Server(answer)
    yield server
    server.close()


def ok_status(server: Server, conn: socket.socket) -> None:
    body = b'{"format": "ferry.dev/worker-report/v1"}'
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def endless(server: Server, conn: socket.socket) -> None:
    """A pod that streams gigabytes: a body with no end."""
    # A fixed send buffer: left to autotuning, the kernel takes up to tcp_wmem's maximum (4 MiB here) from
    # the pod before anyone reads, which says nothing about what the operator read.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)
        server.sent += len(chunk)


def trickle(server: Server, conn: socket.socket) -> None:
    """A pod that answers one byte at a time, each well inside a per-read timeout."""
    for byte in b"HTTP/1.0 200 OK\r\n\r\n" + b"{" * 10_000:
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from serve(request.param)


@pytest.mark.parametrize("server", [ok_status], indirect=True)
def test_a_worker_answer_is_read(server: Server) -> None:
    assert fetch_worker_status("127.0.0.1", server.port) == '{"format": "ferry.dev/worker-report/v1"}'


@pytest.mark.parametrize("server", [endless], indirect=True)
def test_a_pod_streaming_without_end_is_no_answer_and_costs_at_most_the_cap(server: Server) -> None:
    started = time.monotonic()
    assert fetch_worker_status("127.0.0.1", server.port, timeout=2.0) is None
    assert time.monotonic() - started < 2.5
    # The read stopped at the cap: what the pod sent beyond it sits in socket buffers, not in the operator.
    assert server.sent < 64 * STATUS_MAX_BYTES


@pytest.mark.parametrize("server", [trickle], indirect=True)
def test_a_pod_trickling_bytes_is_cut_at_the_overall_deadline(server: Server) -> None:
    started = time.monotonic()
    assert fetch_worker_status("127.0.0.1", server.port, timeout=1.0) is None
    assert time.monotonic() - started < 1.5


def declared_too_large(server: Server, conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * (STATUS_MAX_BYTES + 1))


def not_found(server: Server, conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\nno")


@pytest.mark.parametrize("server", [declared_too_large, not_found], indirect=True)
def test_too_large_or_failed_answers_are_no_answer(server: Server) -> None:
    assert fetch_worker_status("127.0.0.1", server.port) is None


# -- the endpoint policy on every connection ---------------------------------------------------------


class S3Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(LISTING)))
        self.end_headers()
        self.wfile.write(LISTING)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def s3_like() -> Iterator[tuple[int, list[int]]]:
    """An S3-looking server on 127.0.0.1, and how many TCP connections it accepted."""
    accepted: list[int] = []

    class Counting(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            accepted.append(1)
            return super().get_request()

    server = Counting(("127.0.0.1", 0), S3Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], accepted
    server.shutdown()
    server.server_close()


def client(endpoint: str, policy: EndpointPolicy) -> Any:
    location = Location.model_validate({"bucket": "bkt", "endpoint": endpoint, "addressingStyle": "path"})
    return netguard.guard_client(make_client(location, None, ClientOptions(anonymous=True)), policy)


def test_a_refused_address_gets_not_even_a_connection(s3_like: tuple[int, list[int]]) -> None:
    port, accepted = s3_like
    with pytest.raises(Exception) as raised:
        client(f"http://127.0.0.1:{port}", EndpointPolicy.build()).list_objects_v2(Bucket="bkt")
    classified = classify(raised.value)
    assert classified.code == "EndpointNotAllowed" and "loopback" in classified.message, classified
    assert accepted == []  # no TCP handshake: a tenant cannot tell an open port from a closed one


def test_an_allowed_address_is_used(s3_like: tuple[int, list[int]]) -> None:
    port, accepted = s3_like
    answer = client(f"http://127.0.0.1:{port}", EndpointPolicy.build(["127.0.0.0/8"])).list_objects_v2(
        Bucket="bkt"
    )
    assert answer["Name"] == "bkt" and accepted


def test_the_connection_goes_to_the_address_that_was_checked(
    s3_like: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is resolved once per connection, by the guard, and the connection is made to that very
    address (here a name no real resolver knows): a second lookup cannot answer differently."""
    port, _accepted = s3_like
    lookups: list[str] = []

    def resolve(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if host == "s3.rebinding.invalid" else []

    monkeypatch.setattr(netguard, "resolve", resolve)
    allowed = client(f"http://s3.rebinding.invalid:{port}", EndpointPolicy.build(["127.0.0.0/8"]))
    assert allowed.list_objects_v2(Bucket="bkt")["Name"] == "bkt"
    refused = client(f"http://s3.rebinding.invalid:{port}", EndpointPolicy.build())
    with pytest.raises(Exception) as raised:
        refused.list_objects_v2(Bucket="bkt")
    assert "s3.rebinding.invalid resolves to 127.0.0.1" in classify(raised.value).message
