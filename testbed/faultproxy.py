"""A fault-injecting HTTP/1.1 reverse proxy for S3 traffic.

It sits between the copy engine (or any S3 tool under benchmark) and an S3 server process:
integration tests put it in front of the server to prove the engine loses no object under
throttling, server errors, connection resets, truncated and stalled bodies; benchmarks use it to
add the latency of a remote region or a bandwidth cap.

Requests and responses are relayed byte for byte: request line, headers (Host included) and bodies
are never rewritten, so SigV4 signatures computed by the client for the proxy's host:port still
verify at servers that recompute them from the received Host header. Faults are decided per request
from a `FaultPlan` with a seeded `random.Random`, so a run is reproducible for a given request order.

Library use::

    with FaultProxy(endpoint.url, FaultPlan(throttle_rate=0.1), seed=1) as proxy:
        client = dataclasses.replace(endpoint, url=proxy.url).client()

Command line (for external tools)::

    python -m testbed.faultproxy --upstream http://127.0.0.1:9000 --latency-ms 400 \\
        --jitter-ms 20 --throttle-rate 0.05 --bandwidth 10MB
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import types
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

_CHUNK = 64 * 1024
# Header blocks above this size are refused; S3 requests carry a few KiB at most.
_MAX_HEADER_BYTES = 256 * 1024
_HEADER_END = b"\r\n\r\n"

_SLOW_DOWN = "Please reduce your request rate."
_INTERNAL_ERROR = "We encountered an internal error. Please try again."

FaultKind = Literal["throttle", "error500", "refuse", "reset", "truncate", "stall", "capped"]


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject, how often, and into which requests.

    Rates are probabilities per matching request; one draw per request picks at most one fault, so
    the rates must sum to at most 1. `methods` and `path_regex` (searched in path+query) restrict
    which requests may get a fault; latency, jitter and the bandwidth cap apply to all traffic.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    throttle_rate: float = 0.0
    throttle_status: int = 503
    error500_rate: float = 0.0
    #: Answer with a permanent error instead (revoked credentials: 403 InvalidAccessKeyId; a bucket
    #: deleted under the job: 404 NoSuchBucket).
    refuse_rate: float = 0.0
    refuse_status: int = 403
    refuse_code: str = "AccessDenied"
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 1.0
    bandwidth_bytes_per_s: float | None = None
    #: A provider's request-rate limit: requests above this many per second, all clients together, are
    #: answered 503 SlowDown (counted in `ProxyStats.capped`), whatever `methods` and `path_regex` say.
    #: The allowance is a token bucket holding a fifth of a second's requests.
    max_requests_per_second: float | None = None
    #: The same cap for one part of the key space only (a provider's per-prefix partition): requests whose
    #: path+query matches `capped_path_regex` share a bucket of `capped_path_requests_per_second`; above
    #: it they are answered 503 SlowDown (counted in `ProxyStats.capped`). Other requests are not capped.
    capped_path_regex: str | None = None
    capped_path_requests_per_second: float | None = None
    methods: frozenset[str] | None = None
    path_regex: str | None = None
    only_first_n: int | None = None

    def __post_init__(self) -> None:
        rates = {
            "throttle_rate": self.throttle_rate,
            "error500_rate": self.error500_rate,
            "refuse_rate": self.refuse_rate,
            "reset_rate": self.reset_rate,
            "truncate_rate": self.truncate_rate,
            "stall_rate": self.stall_rate,
        }
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be within [0, 1], got {value}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"FaultPlan rates must sum to at most 1, got {sum(rates.values()):.3f}")
        if self.throttle_status not in (429, 503):
            raise ValueError(f"FaultPlan.throttle_status must be 503 or 429, got {self.throttle_status}")
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.stall_seconds < 0:
            raise ValueError("FaultPlan.latency_ms, jitter_ms and stall_seconds must not be negative")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError("FaultPlan.bandwidth_bytes_per_s must be positive (or None for no cap)")
        if self.max_requests_per_second is not None and self.max_requests_per_second <= 0:
            raise ValueError("FaultPlan.max_requests_per_second must be positive (or None for no cap)")
        if (self.capped_path_regex is None) != (self.capped_path_requests_per_second is None):
            raise ValueError("FaultPlan.capped_path_regex and capped_path_requests_per_second go together")
        if self.capped_path_requests_per_second is not None and self.capped_path_requests_per_second <= 0:
            raise ValueError("FaultPlan.capped_path_requests_per_second must be positive")
        if self.capped_path_regex is not None:
            re.compile(self.capped_path_regex)
        if self.only_first_n is not None and self.only_first_n < 0:
            raise ValueError("FaultPlan.only_first_n must not be negative")
        if self.methods is not None:
            # Accept any iterable of method names but store a normalised frozenset.
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.path_regex is not None:
            re.compile(self.path_regex)

    def matches(self, method: str, target: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_regex is None or re.search(self.path_regex, target) is not None


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started (they survive `set_plan`)."""

    requests: int = 0
    injected_503: int = 0
    injected_429: int = 0
    injected_500: int = 0
    injected_refusals: int = 0
    resets: int = 0
    truncations: int = 0
    stalls: int = 0
    upstream_errors: int = 0
    #: Requests answered 503 SlowDown for exceeding `FaultPlan.max_requests_per_second`.
    capped: int = 0
    bytes_to_upstream: int = 0
    bytes_to_client: int = 0
    by_method: Mapping[str, int] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def faults(self) -> int:
        """All injected faults (latency and bandwidth shaping are not faults)."""
        return (
            self.injected_503
            + self.injected_429
            + self.injected_500
            + self.injected_refusals
            + self.resets
            + self.truncations
            + self.stalls
            + self.capped
        )


class _Counters:
    """Mutable counters owned by the proxy loop; snapshots are taken from other threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(
            (f.name for f in dataclasses.fields(ProxyStats) if f.name != "by_method"), 0
        )
        self.by_method: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n

    def request(self, method: str) -> None:
        with self.lock:
            self.values["requests"] += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1

    def snapshot(self) -> ProxyStats:
        with self.lock:
            return ProxyStats(**self.values, by_method=types.MappingProxyType(dict(self.by_method)))


class _TokenBucket:
    """Caps the proxy's total byte rate (both directions together).

    Consumers may overdraw and then sleep off the debt, so a 64 KiB chunk works with any rate and
    concurrent consumers queue up behind each other's debt.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * 0.05)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    async def consume(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class _RequestCap:
    """`FaultPlan.max_requests_per_second`: a token bucket of requests, a fifth of a second deep."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * 0.2)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _path_cap(plan: FaultPlan) -> _RequestCap | None:
    rate = plan.capped_path_requests_per_second
    return _RequestCap(rate) if rate else None


class _Request:
    __slots__ = ("body_kind", "close_after", "content_length", "expect_continue", "head", "method", "target")

    def __init__(self, head: bytes) -> None:
        self.head = head
        line_end = head.index(b"\r\n")
        parts = head[:line_end].split(b" ")
        if len(parts) != 3:
            raise _BadRequestError(f"malformed request line {head[:line_end][:200]!r}")
        self.method = parts[0].decode("ascii", "replace")
        self.target = parts[1].decode("ascii", "replace")
        version = parts[2]
        headers = _parse_headers(head, line_end + 2)
        connection = headers.get(b"connection", b"").lower()
        http10_once = version == b"HTTP/1.0" and b"keep-alive" not in connection
        self.close_after = b"close" in connection or http10_once
        self.expect_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        self.body_kind, self.content_length = _body_framing(headers)


class _BadRequestError(Exception):
    pass


class _UpstreamProtocolError(Exception):
    pass


def _parse_headers(head: bytes, start: int) -> dict[bytes, bytes]:
    # Only the framing headers are needed, so only names are lowercased; the raw block is what
    # gets forwarded.
    headers: dict[bytes, bytes] = {}
    for line in head[start:].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            key = name.strip().lower()
            if key in headers and key == b"transfer-encoding":
                headers[key] += b"," + value.strip()
            else:
                headers[key] = value.strip()
    return headers


def _body_framing(headers: dict[bytes, bytes]) -> tuple[str, int]:
    te = headers.get(b"transfer-encoding")
    if te is not None and te.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
        return "chunked", 0
    cl = headers.get(b"content-length")
    if cl is not None:
        try:
            return "length", int(cl)
        except ValueError as exc:
            raise _BadRequestError(f"bad Content-Length {cl[:40]!r}") from exc
    return "none", 0


def _error_response(status: int, code: str, message: str, method: str, close: bool) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>ferry-faultproxy</HostId></Error>"
    ).encode()
    reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Slow Down"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Server: ferry-faultproxy\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    ).encode()
    # Responses to HEAD carry headers only.
    return head if method == "HEAD" else head + body


class _Upstream:
    """One keep-alive connection to the upstream server, owned by one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class _Engine:
    """The proxy's state inside its event loop."""

    def __init__(self, upstream_url: str, plan: FaultPlan, seed: int) -> None:
        parts = urllib.parse.urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream_url!r}")
        if parts.path not in ("", "/") or parts.query:
            # A path prefix would have to be added to every request target, which breaks signatures.
            raise ValueError(f"upstream URL must not have a path or query, got {upstream_url!r}")
        self.up_host = parts.hostname
        self.up_port = parts.port or 80
        self.counters = _Counters()
        self._plan_lock = threading.Lock()
        self._plan = plan
        self._injected = 0
        self._bucket = _TokenBucket(plan.bandwidth_bytes_per_s) if plan.bandwidth_bytes_per_s else None
        self._cap = _RequestCap(plan.max_requests_per_second) if plan.max_requests_per_second else None
        self._path_cap = _path_cap(plan)
        # Separate streams so changing latency settings does not shift which requests get faults.
        self._fault_rng = random.Random(seed)
        self._jitter_rng = random.Random(seed + 1)
        self.writers: set[asyncio.StreamWriter] = set()

    def set_plan(self, plan: FaultPlan) -> None:
        with self._plan_lock:
            self._plan = plan
            self._injected = 0
            rate = plan.bandwidth_bytes_per_s
            self._bucket = _TokenBucket(rate) if rate else None
            cap = plan.max_requests_per_second
            self._cap = _RequestCap(cap) if cap else None
            self._path_cap = _path_cap(plan)

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def _decide(self, req: _Request) -> tuple[FaultPlan, FaultKind | None, float]:
        with self._plan_lock:
            plan = self._plan
            delay = plan.latency_ms
            if plan.jitter_ms:
                delay += self._jitter_rng.uniform(-plan.jitter_ms, plan.jitter_ms)
            delay = max(0.0, delay) / 1000.0
            if self._cap is not None and not self._cap.take():
                return plan, "capped", delay
            if (
                self._path_cap is not None
                and plan.capped_path_regex is not None
                and re.search(plan.capped_path_regex, req.target) is not None
                and not self._path_cap.take()
            ):
                return plan, "capped", delay
            if not plan.matches(req.method, req.target):
                return plan, None, delay
            if plan.only_first_n is not None and self._injected >= plan.only_first_n:
                return plan, None, delay
            u = self._fault_rng.random()
            kind: FaultKind | None = None
            edge = 0.0
            for name, rate in (
                ("throttle", plan.throttle_rate),
                ("error500", plan.error500_rate),
                ("refuse", plan.refuse_rate),
                ("reset", plan.reset_rate),
                ("truncate", plan.truncate_rate),
                ("stall", plan.stall_rate),
            ):
                edge += rate
                if rate and u < edge:
                    kind = name  # type: ignore[assignment]
                    break
            if kind is not None:
                self._injected += 1
            return plan, kind, delay

    async def _shape(self, n: int) -> None:
        bucket = self._bucket
        if bucket is not None:
            await bucket.consume(n)

    # -- client side -----------------------------------------------------------------------------

    async def handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        upstream: _Upstream | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(_HEADER_END)
                except asyncio.IncompleteReadError:
                    return  # client closed between requests
                except asyncio.LimitOverrunError:
                    too_large = _error_response(431, "HeadersTooLarge", "headers too large", "", True)
                    writer.write(too_large)
                    return
                try:
                    req = _Request(head)
                except (_BadRequestError, ValueError) as exc:
                    writer.write(_error_response(400, "BadRequest", str(exc), "", True))
                    return
                keep, upstream = await self._serve(req, reader, writer, upstream)
                if not keep:
                    return
        except (
            ConnectionError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            _BadRequestError,
            _UpstreamProtocolError,
        ):
            # A broken peer on either side ends this client connection; other connections go on.
            pass
        except asyncio.CancelledError:
            # Proxy shutdown. Not re-raised: asyncio's stream server would log a cancelled
            # connection task as an error.
            pass
        finally:
            if upstream is not None:
                upstream.close()
            self.writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _serve(
        self,
        req: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream | None,
    ) -> tuple[bool, _Upstream | None]:
        """Answer one request; returns whether the client connection stays open and its upstream."""
        self.counters.request(req.method)
        plan, fault, delay = self._decide(req)
        if delay:
            await asyncio.sleep(delay)

        if fault in ("throttle", "error500", "refuse", "capped"):
            if fault == "capped":
                payload = _error_response(503, "SlowDown", _SLOW_DOWN, req.method, False)
                self.counters.add("capped")
            elif fault == "throttle":
                status = plan.throttle_status
                payload = _error_response(status, "SlowDown", _SLOW_DOWN, req.method, False)
                self.counters.add("injected_503" if status == 503 else "injected_429")
            elif fault == "refuse":
                payload = _error_response(
                    plan.refuse_status, plan.refuse_code, "refused by ferry-faultproxy", req.method, False
                )
                self.counters.add("injected_refusals")
            else:
                payload = _error_response(500, "InternalError", _INTERNAL_ERROR, req.method, False)
                self.counters.add("injected_500")
            has_body = req.body_kind == "chunked" or req.content_length > 0
            if has_body and req.expect_continue:
                # The client waits for 100 Continue and may or may not send the body after a final
                # answer, so the connection cannot stay in sync: answer and close.
                writer.write(payload.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                await writer.drain()
                return False, upstream
            await self._relay_body(req, reader, None)
            writer.write(payload)
            await writer.drain()
            return not req.close_after, upstream

        # Reuse the upstream connection unless the server closed it while idle.
        reused = upstream is not None and not upstream.reader.at_eof()
        if upstream is not None and not reused:
            upstream.close()
            upstream = None
        if upstream is None:
            try:
                upstream = await self._connect()
            except OSError:
                return await self._bad_gateway(req, writer, "cannot connect to upstream")

        if req.expect_continue:
            # Answer the client's Expect ourselves so it sends the body now; the upstream still sees
            # the header unchanged and its own 100 Continue is skipped below.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        buffered = req.body_kind == "none" or (req.body_kind == "length" and req.content_length <= _CHUNK)
        if buffered:
            body = await reader.readexactly(req.content_length) if req.content_length else b""
            message = req.head + body
            await self._shape(len(message))
            upstream.writer.write(message)
            self.counters.add("bytes_to_upstream", len(message))
        else:
            await self._shape(len(req.head))
            upstream.writer.write(req.head)
            self.counters.add("bytes_to_upstream", len(req.head))
            # The upstream may have answered early (e.g. an auth error) and closed; its response,
            # if any, is still readable below.
            with contextlib.suppress(ConnectionError, OSError):
                await self._relay_body(req, reader, upstream.writer)

        try:
            status_head = await self._read_response_head(upstream)
        except (_UpstreamProtocolError, ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            upstream.close()
            silent = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if reused and buffered and silent:
                # A keep-alive connection the server closed just as it was reused, without a byte of
                # answer: like HTTP clients do, send the request once more on a fresh connection.
                try:
                    upstream = await self._connect()
                    await self._shape(len(message))
                    upstream.writer.write(message)
                    self.counters.add("bytes_to_upstream", len(message))
                    status_head = await self._read_response_head(upstream)
                except (_UpstreamProtocolError, ConnectionError, asyncio.IncompleteReadError, OSError):
                    upstream.close()
                    return await self._bad_gateway(req, writer, "upstream closed the connection")
            else:
                return await self._bad_gateway(req, writer, "upstream closed the connection")

        keep_upstream, keep_client = await self._relay_response(
            req, status_head, upstream, writer, plan, fault
        )
        if not keep_upstream:
            upstream.close()
            upstream = None
        return keep_client and not req.close_after, upstream

    async def _connect(self) -> _Upstream:
        reader, writer = await asyncio.open_connection(self.up_host, self.up_port, limit=_MAX_HEADER_BYTES)
        return _Upstream(reader, writer)

    async def _bad_gateway(
        self,
        req: _Request,
        writer: asyncio.StreamWriter,
        why: str,
    ) -> tuple[bool, _Upstream | None]:
        self.counters.add("upstream_errors")
        writer.write(_error_response(502, "BadGateway", f"ferry-faultproxy: {why}", req.method, True))
        await writer.drain()
        return False, None

    async def _relay_body(
        self, req: _Request, reader: asyncio.StreamReader, out: asyncio.StreamWriter | None
    ) -> None:
        """Copy the request body verbatim to `out` (or discard it when `out` is None)."""
        if req.body_kind == "length":
            await self._relay_exact(reader, out, req.content_length, "bytes_to_upstream")
        elif req.body_kind == "chunked":
            await self._relay_chunked(reader, out, "bytes_to_upstream")

    async def _relay_exact(
        self,
        reader: asyncio.StreamReader,
        out: asyncio.StreamWriter | None,
        remaining: int,
        counter: str,
    ) -> None:
        while remaining > 0:
            data = await reader.read(min(_CHUNK, remaining))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            if out is not None:
                await self._shape(len(data))
                out.write(data)
                self.counters.add(counter, len(data))
                await out.drain()

    async def _relay_chunked(
        self,
        reader: asyncio.StreamReader,
        out: asyncio.StreamWriter | None,
        counter: str,
        stop_after: int | None = None,
    ) -> bool:
        """Copy a chunked body (framing and trailers included) verbatim.

        With `stop_after`, stops once that many bytes were written and returns False (the body is
        then incomplete); returns True when the whole body was copied.
        """
        written = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequestError(f"bad chunk size line {size_line[:40]!r}") from exc
            if size == 0:
                # Last chunk: trailer fields (botocore's aws-chunked uploads may carry checksums
                # there) up to an empty line.
                tail = size_line
                while True:
                    line = await reader.readuntil(b"\r\n")
                    tail += line
                    if line == b"\r\n":
                        break
                if out is not None:
                    await self._shape(len(tail))
                    out.write(tail)
                    self.counters.add(counter, len(tail))
                    await out.drain()
                return True
            if out is not None:
                out.write(size_line)
                written += len(size_line)
            await self._relay_exact(reader, out, size + 2, counter)
            written += size + 2
            if stop_after is not None and written >= stop_after:
                return False

    # -- upstream side -----------------------------------------------------------------------------

    async def _read_response_head(self, upstream: _Upstream) -> bytes:
        while True:
            head = await upstream.reader.readuntil(_HEADER_END)
            # Interim responses (100 Continue for a forwarded Expect) were already answered to the
            # client by the proxy itself.
            if head.startswith(b"HTTP/1.1 1") or head.startswith(b"HTTP/1.0 1"):
                if head[9:12] == b"101":
                    raise _UpstreamProtocolError("protocol upgrades are not supported")
                continue
            return head

    async def _relay_response(
        self,
        req: _Request,
        head: bytes,
        upstream: _Upstream,
        writer: asyncio.StreamWriter,
        plan: FaultPlan,
        fault: FaultKind | None,
    ) -> tuple[bool, bool]:
        """Stream the upstream response to the client, injecting a response fault if chosen.

        Returns (keep upstream connection, keep client connection).
        """
        line_end = head.index(b"\r\n")
        status_line = head[:line_end].split(b" ", 2)
        try:
            status = int(status_line[1])
        except (IndexError, ValueError) as exc:
            raise _UpstreamProtocolError(f"bad status line {head[:line_end][:200]!r}") from exc
        headers = _parse_headers(head, line_end + 2)
        connection = headers.get(b"connection", b"").lower()
        keep = b"close" not in connection and not (
            status_line[0] == b"HTTP/1.0" and b"keep-alive" not in connection
        )
        if req.method == "HEAD" or status in (204, 304):
            kind, length = "none", 0
        else:
            kind, length = _body_framing(headers)
            if kind == "none":
                # No framing: the body runs until the server closes the connection.
                kind, length, keep = "close", 0, False

        if fault is None:
            await self._send(writer, head)
            if kind == "length":
                await self._relay_exact(upstream.reader, writer, length, "bytes_to_client")
            elif kind == "chunked":
                await self._relay_chunked(upstream.reader, writer, "bytes_to_client")
            elif kind == "close":
                await self._relay_to_eof(upstream.reader, writer)
            await writer.drain()
            return keep, keep

        # A response fault: the upstream did process the request (it may have written an object),
        # and the client sees only part of the answer. With no body there is nothing to cut, so
        # resets and truncations then hit before the status line.
        if fault == "stall":
            self.counters.add("stalls")
            if kind in ("none",) or (kind == "length" and length == 0):
                await asyncio.sleep(plan.stall_seconds)
                await self._send(writer, head)
                return keep, keep
            await self._send(writer, head)
            await self._relay_partial(upstream, writer, kind, length)
            await writer.drain()
            await asyncio.sleep(plan.stall_seconds)
            if kind == "length":
                await self._relay_exact(upstream.reader, writer, length - length // 2, "bytes_to_client")
            elif kind == "chunked":
                await self._relay_chunked(upstream.reader, writer, "bytes_to_client")
            else:
                await self._relay_to_eof(upstream.reader, writer)
            await writer.drain()
            return keep, keep

        has_body = kind in ("chunked", "close") or (kind == "length" and length > 0)
        if has_body:
            await self._send(writer, head)
            await self._relay_partial(upstream, writer, kind, length)
            await writer.drain()
        if fault == "reset":
            self.counters.add("resets")
            _abort_with_rst(writer)
        else:
            self.counters.add("truncations")
            writer.close()
        # The rest of the upstream response was not read, so that connection is out of sync.
        return False, False

    async def _relay_partial(
        self, upstream: _Upstream, writer: asyncio.StreamWriter, kind: str, length: int
    ) -> None:
        """Relay roughly the first half of a response body (one read for unframed bodies)."""
        if kind == "length":
            await self._relay_exact(upstream.reader, writer, length // 2, "bytes_to_client")
        elif kind == "chunked":
            await self._relay_chunked(upstream.reader, writer, "bytes_to_client", stop_after=1)
        else:
            data = await upstream.reader.read(_CHUNK)
            await self._send(writer, data)

    async def _relay_to_eof(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            await self._send(writer, data)
            await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        await self._shape(len(data))
        writer.write(data)
        self.counters.add("bytes_to_client", len(data))


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client sees
    # "connection reset by peer", as when a load balancer or server process dies mid-response.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """The proxy on 127.0.0.1 in a background thread with its own event loop; a context manager."""

    def __init__(
        self, upstream_url: str, plan: FaultPlan | None = None, seed: int = 0, port: int = 0
    ) -> None:
        self._engine = _Engine(upstream_url, plan or FaultPlan(), seed)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.upstream_url = upstream_url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._port}"

    @property
    def plan(self) -> FaultPlan:
        return self._engine.plan

    def set_plan(self, plan: FaultPlan) -> None:
        """Swap the fault plan; applies to requests that arrive from now on and resets only_first_n."""
        self._engine.set_plan(plan)

    def stats(self) -> ProxyStats:
        return self._engine.counters.snapshot()

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="ferry-faultproxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._startup_error is not None:
            raise RuntimeError(f"fault proxy failed to start: {self._startup_error}") from self._startup_error
        if self._server is None:
            raise RuntimeError("fault proxy did not start within 10s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._engine.handle_client,
                    "127.0.0.1",
                    self._port,
                    limit=_MAX_HEADER_BYTES,
                    backlog=1024,
                )
            )
            self._port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._engine.writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- command line ----------------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_rate(text: str) -> float:
    """Parse a byte rate such as `10MB`, `512KiB`, `1.5MB/s` or `20000` (bytes per second)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*(/s)?\s*", text)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a byte rate: {text!r} (examples: 10MB, 512KiB, 20000)")
    return float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m testbed.faultproxy",
        description="Fault-injecting HTTP reverse proxy for S3 traffic, listening on 127.0.0.1. "
        "Prints its URL on stdout, serves until SIGINT/SIGTERM, then prints counters on stderr.",
    )
    p.add_argument("--upstream", required=True, help="base URL of the S3 server, e.g. http://127.0.0.1:9000")
    p.add_argument("--port", type=int, default=0, help="listening port (default: a free one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0, help="added before forwarding each request")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- around --latency-ms")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="fraction answered with SlowDown")
    p.add_argument("--throttle-status", type=int, choices=(503, 429), default=503)
    p.add_argument("--error500-rate", type=float, default=0.0)
    p.add_argument("--reset-rate", type=float, default=0.0, help="fraction reset (RST) mid-response")
    p.add_argument("--truncate-rate", type=float, default=0.0, help="fraction closed mid-body")
    p.add_argument("--stall-rate", type=float, default=0.0)
    p.add_argument("--stall-seconds", type=float, default=1.0)
    p.add_argument("--bandwidth", type=parse_rate, default=None, help="total byte rate cap, e.g. 10MB")
    p.add_argument(
        "--max-requests-per-second",
        type=float,
        default=None,
        help="503 SlowDown above this many requests/s in total",
    )
    p.add_argument("--methods", default=None, help="comma-separated methods faults may hit, e.g. GET,PUT")
    p.add_argument("--path-regex", default=None, help="faults only hit requests whose path+query match")
    p.add_argument("--only-first-n", type=int, default=None, help="inject at most N faults")
    return p


def _method_set(text: str | None) -> frozenset[str] | None:
    if not text:
        return None
    return frozenset(m.strip().upper() for m in text.split(",") if m.strip())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = FaultPlan(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            throttle_rate=args.throttle_rate,
            throttle_status=args.throttle_status,
            error500_rate=args.error500_rate,
            reset_rate=args.reset_rate,
            truncate_rate=args.truncate_rate,
            stall_rate=args.stall_rate,
            stall_seconds=args.stall_seconds,
            bandwidth_bytes_per_s=args.bandwidth,
            max_requests_per_second=args.max_requests_per_second,
            methods=_method_set(args.methods),
            path_regex=args.path_regex,
            only_first_n=args.only_first_n,
        )
        proxy = FaultProxy(args.upstream, plan, seed=args.seed, port=args.port)
    except (ValueError, re.error) as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with proxy:
        print(proxy.url, flush=True)
        while not done.wait(1.0):
            pass
        stats = proxy.stats()
    print(f"faultproxy: {stats}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
