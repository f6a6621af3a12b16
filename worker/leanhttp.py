"""A small HTTP/1.1 client for the lean S3 transport (leans3.py): keep-alive connections to one host, each
request written in one piece, each answer read with a bounded parser into status, headers and body.

Where it sits: under `LeanS3`, which signs the requests and maps the answers to boto3's field names. It
replaces urllib3 and http.client on the hot path: measured on 10 KB objects against versitygw
(bench/README.md, "Where the CPU goes per small object"), those two spent about 0.6 ms of CPU per streamed
object (GET + PUT), more than half of it, mostly building response objects and parsing headers with the
email package. S3 answers need none of that: a status line, a few headers, a body of known length.

An answer is never trusted: the status line and headers are bounded (`MAX_HEAD` bytes, `MAX_HEADERS`
lines), the body by the caller's limit, and an answer that breaks HTTP/1.1's framing raises `BadAnswer`
(a ConnectionError, so it is retried like a dropped connection) whose message never quotes what was sent.
A kept-alive connection the server has closed in the meantime is noticed when the request meets a reset
or an immediate end of stream, and the request is sent once more on a new connection (S3's GET, HEAD, PUT
and CopyObject are idempotent).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass

#: The most bytes a status line and its headers may take, and the most header lines.
MAX_HEAD = 64 * 1024
MAX_HEADERS = 200
#: Interim answers (100 Continue and the like) skipped before the real one, at most.
MAX_INTERIM = 4
#: Bytes asked of the socket at a time while reading an answer, and at most while reading a long body.
RECV_SIZE = 256 * 1024
MAX_RECV = 1024 * 1024
#: Bodies up to this size are sent in the same write as the request's head.
JOIN_BODY = 64 * 1024
#: The longest body read from an answer that is not a success (an S3 error document is under 1 KB).
MAX_ERROR_BODY = 64 * 1024
#: The longest chunk-size line of a chunked answer (hex digits and extensions).
MAX_CHUNK_LINE = 4096

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DECIMAL = re.compile(r"^[0-9]{1,19}$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,15}$")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


class BadAnswer(ConnectionError):
    """The endpoint's answer broke HTTP/1.1's framing or Ferry's bounds; the text is Ferry's own."""


class Unreachable(ConnectionError):
    """No connection could be made to the endpoint (name resolution, refusal, TLS handshake)."""


class _Stale(Exception):
    """A reused connection was closed by the server before any byte of the answer came back."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    #: Header names in lower case; a header sent twice has its values joined with ", ".
    headers: dict[str, str]
    data: bytes


class _Connection:
    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # closing a broken socket tells nothing new
            self.sock.close()


class HTTPPool:
    """Keep-alive HTTP/1.1 connections to one host; thread-safe. At most ``max_idle`` connections are
    kept between requests; as many as there are requests in flight are open."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int,
        host_header: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the context https connections are made with (default: the system's trusted
        certificates, with hostname checks, as urllib3 made them)."""
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}: http or https")
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        self._host_header = host_header or host
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        self._tls = (tls or ssl.create_default_context()) if scheme == "https" else None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, limit: int
    ) -> Answer:
        """Send one request and read its whole answer; the body of a success may be at most ``limit``
        bytes, that of any other answer `MAX_ERROR_BODY`."""
        head = _head(method, target, self._host_header, headers, len(body))
        for attempt in range(2):
            connection = self._take() if attempt == 0 else None
            reused = connection is not None
            if connection is None:
                connection = self._connect()
            try:
                answer, keep = _exchange(connection, head, body, method, limit)
            except _Stale:
                connection.close()
                if reused:
                    continue  # the server had closed the idle connection: once more on a new one
                raise BadAnswer("the connection closed before an answer") from None
            except BaseException:
                connection.close()
                raise
            if keep:
                self._give(connection)
            else:
                connection.close()
            return answer
        raise AssertionError("unreachable: the second attempt uses a new connection")

    def _take(self) -> _Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as exc:  # name resolution, no route: worth another try, as urllib3 treats them
            raise Unreachable(f"could not connect ({type(exc).__name__})") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(sock, server_hostname=self.host)
                except ssl.SSLCertVerificationError:
                    raise  # the endpoint is not who it claims to be: no retry helps
                except ssl.SSLError:
                    raise Unreachable("the TLS handshake failed") from None
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)


def _head(method: str, target: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    given = False
    for name, value in headers.items():
        # A value may come from the source's answer (metadata): a line break in it would end the header.
        if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):
            raise ValueError(f"header {name[:40]!r} holds a line break or NUL; refused")
        if name.lower() == "content-length":
            if value != str(length):
                raise ValueError(f"Content-Length {value[:20]!r} for a body of {length} bytes")
            given = True
        lines.append(f"{name}: {value}")
    if not given and (length or method in ("PUT", "POST")):
        lines.append(f"Content-Length: {length}")
    lines += ["", ""]
    # latin-1 as http.client encodes header values; anything beyond it is refused rather than mangled.
    return "\r\n".join(lines).encode("latin-1")


def _exchange(
    connection: _Connection, head: bytes, body: bytes, method: str, limit: int
) -> tuple[Answer, bool]:
    """Write the request, read the answer: (the answer, whether the connection can be reused)."""
    sock = connection.sock
    buffer = connection.buffer
    buffer.clear()
    try:
        _send(sock, head, body)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
        raise _Stale from exc
    for interim in range(MAX_INTERIM + 1):
        status, reason, headers, version = _read_head(sock, buffer, first=interim == 0)
        if not 100 <= status < 200:
            break
    else:
        raise BadAnswer("too many interim answers")
    if status >= 300:
        limit = MAX_ERROR_BODY
    if method == "HEAD" or status in (204, 304):
        data = b""
        framed = True
    elif "transfer-encoding" in headers:
        if headers["transfer-encoding"].lower() != "chunked":
            raise BadAnswer("unsupported transfer-encoding")
        data = _read_chunked(sock, buffer, limit)
        framed = True
    elif "content-length" in headers:
        data = _read_exact(sock, buffer, _length(headers["content-length"], limit))
        framed = True
    else:
        data = _read_to_end(sock, buffer, limit)
        framed = False
    keep = (
        framed
        and not buffer  # bytes beyond the answer: the stream cannot be trusted for the next one
        and version == b"HTTP/1.1"
        and "close" not in headers.get("connection", "").lower()
    )
    return Answer(status, reason, headers, data), keep


def _send(sock: socket.socket, head: bytes, body: bytes) -> None:
    # A function of its own so that a profile can tell time in the kernel's send from Python's work.
    if len(body) <= JOIN_BODY:
        sock.sendall(head + body)
    else:
        sock.sendall(head)
        sock.sendall(body)


def _recv(sock: socket.socket, size: int) -> bytes:
    try:
        return sock.recv(size)
    except ssl.SSLError as exc:
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise
        raise BadAnswer("the TLS stream broke off") from None


def _read_head(
    sock: socket.socket, buffer: bytearray, *, first: bool
) -> tuple[int, str, dict[str, str], bytes]:
    """The next status line and headers. ``first``: nothing of the answer has come yet, so an
    immediate end of stream means the server had closed the connection (`_Stale`)."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buffer) > MAX_HEAD:
            raise BadAnswer(f"answer headers longer than {MAX_HEAD} bytes")
        try:
            chunk = _recv(sock, RECV_SIZE)
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            if first and not buffer:
                raise _Stale from exc
            raise
        if not chunk:
            if first and not buffer:
                raise _Stale
            raise BadAnswer("the answer broke off in its headers")
        first = False
        buffer += chunk
    if end > MAX_HEAD:
        raise BadAnswer(f"answer headers longer than {MAX_HEAD} bytes")
    lines = bytes(buffer[:end]).split(b"\r\n")
    del buffer[: end + 4]
    if len(lines) > MAX_HEADERS + 1:
        raise BadAnswer(f"more than {MAX_HEADERS} answer headers")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise BadAnswer("not an HTTP/1.1 status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise BadAnswer("a malformed answer header")  # obsolete line folding included
        key = name.decode("ascii").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(code), reason.decode("latin-1"), headers, version


def _length(text: str, limit: int) -> int:
    if not _DECIMAL.match(text):
        raise BadAnswer("a malformed content-length")
    length = int(text)
    if length > limit:
        raise BadAnswer(f"an answer of {length} bytes, more than the {limit} expected")
    return length


def _read_exact(sock: socket.socket, buffer: bytearray, length: int) -> bytes:
    while len(buffer) < length:
        # recv allocates what it is asked for before anything arrives: ask for at most MAX_RECV.
        chunk = _recv(sock, min(MAX_RECV, max(RECV_SIZE, length - len(buffer))))
        if not chunk:
            raise BadAnswer(f"the answer broke off after {len(buffer)} of {length} bytes")
        buffer += chunk
    # One copy out of the buffer (a slice of the bytearray would make a second).
    with memoryview(buffer) as view:
        data = bytes(view[:length])
    del buffer[:length]
    return data


def _read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    while True:
        end = buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            return line
        if len(buffer) > MAX_CHUNK_LINE:
            raise BadAnswer("a chunk line too long")
        chunk = _recv(sock, RECV_SIZE)
        if not chunk:
            raise BadAnswer("the answer broke off in a chunk line")
        buffer += chunk


def _read_chunked(sock: socket.socket, buffer: bytearray, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_text = _read_line(sock, buffer).partition(b";")[0].strip()
        if not _HEX.match(size_text):
            raise BadAnswer("a malformed chunk size")
        size = int(size_text, 16)
        if total + size > limit:
            raise BadAnswer(f"a chunked answer longer than the {limit} bytes expected")
        if size == 0:
            break
        parts.append(_read_exact(sock, buffer, size))
        total += size
        if _read_line(sock, buffer):
            raise BadAnswer("a chunk not followed by its line end")
    # Trailers: read and dropped, bounded like headers.
    for _ in range(MAX_HEADERS):
        if not _read_line(sock, buffer):
            return b"".join(parts)
    raise BadAnswer(f"more than {MAX_HEADERS} trailer lines")


def _read_to_end(sock: socket.socket, buffer: bytearray, limit: int) -> bytes:
    while True:
        if len(buffer) > limit:
            raise BadAnswer(f"an answer longer than the {limit} bytes expected")
        chunk = _recv(sock, RECV_SIZE)
        if not chunk:
            data = bytes(buffer)
            buffer.clear()
            return data
        buffer += chunk
