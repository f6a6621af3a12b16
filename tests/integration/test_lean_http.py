"""The lean transport's HTTP/1.1 client against a scripted server on 127.0.0.1: what a real S3 endpoint
sends (lengths, chunks, interim answers, closed keep-alive connections) is read right, and what a broken
or hostile one sends is refused as a retryable connection error, bounded and never quoted."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError

from ferry.model import Location
from ferry.worker.leanhttp import MAX_HEAD, BadAnswer, HTTPPool
from ferry.worker.leans3 import LeanS3
from ferry.worker.retry import Kind, classify
from ferry.worker.s3 import ClientOptions, Credentials

#: What the scripted server does with one request: the bytes to answer, and whether to close after.
Script = Callable[[bytes, int], tuple[bytes, bool]]


@dataclass
class ScriptedServer:
    """Answers each request with ``script(request_head, request_number)``; counts connections."""

    script: Script
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        deadline = 200  # 40 s of accept timeouts at most
        while not self._stop.is_set() and deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                deadline -= 1
                continue
            self.connections += 1
            if self.tls is not None:
                try:
                    conn.settimeout(5)
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()  # the client refused the certificate
                    continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buffer = b""
        with conn:
            for _ in range(50):  # requests on one connection, at most
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests.append(head)
                answer, close = self.script(head, len(self.requests))
                try:
                    conn.sendall(answer)
                except OSError:
                    return
                if close:
                    return

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(timeout=5)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(script, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def pool(server: ScriptedServer, read_timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> HTTPPool:
    scheme = "https" if server.tls is not None else "http"
    return HTTPPool(
        scheme, "127.0.0.1", server.port, connect_timeout=2, read_timeout=read_timeout, max_idle=4, tls=tls
    )


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_answers_are_read_whole_and_the_connection_is_kept_alive(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda head, n: (ok(b"x" * 10_000 + str(n).encode(), 'ETag: "abc"\r\n'), False))
    http = pool(server)
    first = http.request("GET", "/bucket/key", {"x-amz-date": "now"}, b"", 1 << 20)
    second = http.request("PUT", "/bucket/key", {}, b"body" * 1000, 1 << 20)
    assert first.status == 200 and first.data == b"x" * 10_000 + b"1"
    assert first.headers["etag"] == '"abc"'
    assert second.data.endswith(b"2")
    assert server.connections == 1
    assert b"Content-Length: 4000" in server.requests[1]
    assert server.requests[0].startswith(b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1")


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A self-signed certificate for 127.0.0.1 (made by openssl, as on every Debian machine)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_answers_are_read_over_a_verified_kept_alive_connection(serve, certificate) -> None:  # type: ignore[no-untyped-def]
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server = serve(lambda head, n: (ok(b"secret" + str(n).encode()), False), tls=server_side)
    trusting = ssl.create_default_context(cafile=cert)
    http = pool(server, tls=trusting)
    assert [http.request("GET", "/b/k", {}, b"", 100).data for _ in range(2)] == [b"secret1", b"secret2"]
    assert server.connections == 1


def test_an_https_endpoint_with_an_untrusted_certificate_is_refused_for_good(serve, certificate) -> None:  # type: ignore[no-untyped-def]
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server = serve(lambda head, n: (ok(b"x"), False), tls=server_side)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        pool(server).request("GET", "/b/k", {}, b"", 100)  # the system's trust store: no such CA
    assert classify(caught.value).kind is Kind.PERMANENT
    assert server.requests == []


def test_chunked_answers_and_interim_answers_are_read_like_any_other(serve) -> None:  # type: ignore[no-untyped-def]
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server = serve(lambda head, n: (chunked, False))
    http = pool(server)
    for _ in range(2):
        assert http.request("GET", "/b/k", {}, b"", 100).data == b"hello world"
    assert server.connections == 1


def test_a_kept_alive_connection_the_server_closed_is_replaced_once(serve) -> None:  # type: ignore[no-untyped-def]
    # The server closes every connection after one answer without saying so, as an idle timeout does.
    server = serve(lambda head, n: (ok(str(n).encode()), True))
    http = pool(server)
    answers = [http.request("GET", "/b/k", {}, b"", 100).data for _ in range(3)]
    assert answers == [b"1", b"2", b"3"]
    assert server.connections == 3


def test_connection_close_answers_are_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda head, n: (ok(b"a", "Connection: close\r\n"), True))
    http = pool(server)
    http.request("GET", "/b/k", {}, b"", 100)
    http.request("GET", "/b/k", {}, b"", 100)
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "broke off after"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n", "more than the"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "malformed content-length"),
        (b"HTTP/1.1 200 OK\r\nX-Evil: a\r\n folded\r\nContent-Length: 0\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer-encoding"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"A" * (MAX_HEAD + 10) + b"\r\n\r\n", "headers longer than"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "broke off in its headers"),
    ],
)
def test_broken_or_hostile_answers_are_refused_as_retryable_without_quoting_them(
    serve, answer: bytes, why: str
) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda head, n: (answer, True))
    with pytest.raises(BadAnswer, match=why) as caught:
        pool(server).request("GET", "/b/k", {}, b"", 1000)
    text = str(caught.value)
    assert "SSH" not in text and "Evil" not in text and "AAAA" not in text
    classified = classify(caught.value)
    assert classified.kind is Kind.TRANSIENT and classified.code == "ConnectionError"


def test_an_answer_that_never_comes_is_a_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    stalled = threading.Event()

    def stall(head: bytes, n: int) -> tuple[bytes, bool]:
        stalled.wait(3)
        return b"", True

    server = serve(stall)
    with pytest.raises(TimeoutError) as caught:
        pool(server, read_timeout=0.3).request("GET", "/b/k", {}, b"", 100)
    stalled.set()
    assert classify(caught.value).code == "ReadTimeout"


def test_header_values_with_line_breaks_are_refused_before_anything_is_sent(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda head, n: (ok(b""), False))
    with pytest.raises(ValueError, match="line break"):
        pool(server).request("PUT", "/b/k", {"x-amz-meta-a": "v\r\nx-amz-acl: public-read"}, b"", 100)
    assert server.requests == []


def lean(server: ScriptedServer) -> LeanS3:
    location = Location.model_validate(
        {"bucket": "bkt", "endpoint": f"http://127.0.0.1:{server.port}", "addressingStyle": "path"}
    )
    return LeanS3(location, lambda: Credentials("AKIDEXAMPLE", "secret"), ClientOptions())


def test_copy_object_reads_the_result_and_raises_an_error_sent_after_200(serve) -> None:  # type: ignore[no-untyped-def]
    result = b'<?xml version="1.0"?><CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ETag>"e1"</ETag></CopyObjectResult>'
    failed = b"<Error><Code>InternalError</Code><Message>copy failed midway</Message></Error>"
    server = serve(lambda head, n: (ok(result if n == 1 else failed), False))
    transport = lean(server)
    copied = transport.copy_object(
        Bucket="bkt", Key="dst/k", CopySource={"Bucket": "bkt", "Key": "src/a b"}, CopySourceIfMatch='"e0"'
    )
    assert copied == {"CopyObjectResult": {"ETag": '"e1"'}}
    head = server.requests[0].decode()
    assert "x-amz-copy-source: bkt/src/a%20b" in head and 'x-amz-copy-source-if-match: "e0"' in head
    with pytest.raises(ClientError) as caught:
        transport.copy_object(Bucket="bkt", Key="dst/k", CopySource={"Bucket": "bkt", "Key": "src/a"})
    assert classify(caught.value).kind is Kind.TRANSIENT
    assert classify(caught.value).code == "InternalError"


def test_a_get_longer_than_the_memory_reserved_for_it_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda head, n: (ok(b"z" * 5000), False))
    transport = lean(server)
    head, body = transport.get_object(Bucket="bkt", Key="k", MaxBytes=5000)
    assert body == b"z" * 5000 and head["ContentLength"] == 5000
    with pytest.raises(BadAnswer, match="more than the 4999 expected") as caught:
        transport.get_object(Bucket="bkt", Key="k", MaxBytes=4999)
    assert classify(caught.value).kind is Kind.TRANSIENT
