"""The worker's HTTP endpoints on its pod IP: `/status` (JSON for the operator), `/metrics` (Prometheus)
and `/healthz`; `PUT /limits`, where the operator sends this pod's share of spec.rateLimit; and
`PUT /recorded`, where it says it recorded a stopped worker's last `/status` (its counts and resume
point), so the worker may exit. A thin adapter: documents come from `statusdoc`, metrics from the
engine's snapshot, shares go to the engine.

Anything on the pod network can reach these endpoints. The two PUTs answer only a request carrying the
CopyJob's token (which only the operator and the pods of its Job hold), read at most `SHARE_MAX_BYTES`
of body, and take only a share `ratelimit.parse_share` accepts or a name `statusdoc.FINAL_PATTERN`
allows; their answers carry no body.

Metrics follow Prometheus conventions: counters end in `_total` (the client adds it), transfer time is a
histogram (`ferry_transfer_seconds_bucket{le}`: quantiles can be aggregated across pods, which gauges
of per-pod quantiles never can), and every label takes its values from a small fixed set — never a key,
a bucket or a server's free text (see `progress.code_label`).
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ferry.worker.engine import Progress
from ferry.worker.progress import LatencyHistogram
from ferry.worker.ratelimit import SHARE_MAX_BYTES, RateShare, parse_share
from ferry.worker.statusdoc import final_name

#: Seconds a client may take over each read or write of a request: one that stops sending, or sends a
#: byte at a time, ties up its thread no longer.
REQUEST_TIMEOUT = 10.0


def _bound(value: float) -> str:
    """A bucket bound as Prometheus writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if value == float("inf") else repr(float(value))


def latency_family(histogram: LatencyHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "ferry_transfer_seconds",
        "Seconds per successfully copied object, from its first request to its last",
        buckets=[(_bound(bound), count) for bound, count in histogram.cumulative()],
        sum_value=histogram.total_seconds,
    )


def requests_family(requests_by: tuple[tuple[str, str, int], ...]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "ferry_requests",
        "S3 requests answered, by operation and by answer: 2xx, an S3 error code, an HTTP status class "
        "or other",
        labels=["operation", "code"],
    )
    for operation, code, count in requests_by:
        family.add_metric([operation, code], count)
    return family


class EngineCollector(Collector):
    def __init__(self, snapshot: Callable[[], Progress]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        p = self._snapshot()
        c, limiter = p.counts, p.limiter
        objects = CounterMetricFamily("ferry_objects", "Objects finished, by outcome", labels=["outcome"])
        data = CounterMetricFamily("ferry_bytes", "Bytes of finished objects, by outcome", labels=["outcome"])
        for outcome, count, size in (
            ("copied", c.copied, c.bytes_copied),
            ("skipped", c.skipped, c.bytes_skipped),
            ("failed", c.failed, c.bytes_failed),
        ):
            objects.add_metric([outcome], count)
            data.add_metric([outcome], size)
        yield objects
        yield data
        yield GaugeMetricFamily("ferry_objects_discovered", "Objects listed so far", value=c.discovered)
        yield GaugeMetricFamily(
            "ferry_concurrency", "Transfers the limiter admits", value=limiter.concurrency
        )
        yield GaugeMetricFamily("ferry_in_flight", "Transfers in flight", value=limiter.in_flight)
        yield GaugeMetricFamily("ferry_memory_rss_bytes", "Resident memory", value=limiter.rss_bytes or 0)
        yield GaugeMetricFamily("ferry_memory_budget_bytes", "Memory budget", value=limiter.budget_bytes or 0)
        yield GaugeMetricFamily(
            "ferry_memory_reserved_bytes", "Memory reserved by transfers", value=limiter.reserved_bytes
        )
        yield CounterMetricFamily(
            "ferry_throttles", "Throttling answers (503 SlowDown, 429)", value=p.throttles
        )
        yield CounterMetricFamily("ferry_retries", "Retried requests", value=p.retries)
        yield requests_family(p.requests_by)
        yield latency_family(p.latency)
        yield GaugeMetricFamily(
            "ferry_rate_limit_requests_per_second",
            "This pod's share of spec.rateLimit.requestsPerSecond (0: unlimited)",
            value=p.rate_share.requests_per_second,
        )
        yield GaugeMetricFamily(
            "ferry_rate_limit_bytes_per_second",
            "This pod's share of spec.rateLimit.bytesPerSecond (0: unlimited)",
            value=p.rate_share.bytes_per_second,
        )


@dataclass(frozen=True)
class OperatorEndpoints:
    """What the operator sends with ``token`` (`Authorization: Bearer <token>`): `PUT /limits` gives
    ``apply`` each share; `PUT /recorded` gives ``recorded`` the name of the final document it recorded.
    None: this process takes no such thing, and answers 404."""

    token: str
    apply: Callable[[RateShare], None] | None
    recorded: Callable[[str], None] | None = None


class StatusServer:
    """Serves until closed, in a daemon thread."""

    def __init__(
        self,
        address: tuple[str, int],
        document: Callable[[], dict[str, Any]],
        snapshot: Callable[[], Progress] | None,
        operator: OperatorEndpoints | None = None,
    ) -> None:
        """Without ``snapshot`` (a sync's delete pod: no copy engine) there is no `/metrics`."""
        registry = CollectorRegistry()
        if snapshot is not None:
            registry.register(EngineCollector(snapshot))
        expected = f"Bearer {operator.token}".encode() if operator else b""

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT

            def do_GET(self) -> None:
                # The operator names the pod it asks (`?pod=`); workers of earlier releases counted it.
                path = self.path.partition("?")[0]
                if path == "/status":
                    body, kind = json.dumps(document()).encode(), "application/json"
                elif self.path == "/metrics" and snapshot is not None:
                    body, kind = generate_latest(registry), "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    body, kind = b"ok", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                if operator is None or self.path not in ("/limits", "/recorded"):
                    self._answer(404)
                    return
                if (operator.recorded if self.path == "/recorded" else operator.apply) is None:
                    self._answer(404)
                    return
                # Before the body is read: a stranger's request costs its headers only.
                given = self.headers.get("Authorization", "").encode(errors="replace")
                if not hmac.compare_digest(given, expected):
                    self._answer(401)
                    return
                length = self.headers.get("Content-Length", "")
                if not (length.isascii() and length.isdigit()):
                    self._answer(411)
                    return
                if int(length) > SHARE_MAX_BYTES:
                    self._answer(413)
                    return
                try:
                    body = self.rfile.read(int(length))
                except OSError:  # too slow (REQUEST_TIMEOUT) or gone: nothing to answer
                    self.close_connection = True
                    return
                if len(body) != int(length):
                    self._answer(400)
                    return
                if self.path == "/recorded":
                    name = final_name(body.decode("ascii", errors="replace").strip())
                    if name is None or operator.recorded is None:
                        self._answer(400)
                        return
                    operator.recorded(name)
                    self._answer(204)
                    return
                try:
                    share = parse_share(body)
                except ValueError:
                    self._answer(400)
                    return
                if operator.apply is not None:
                    operator.apply(share)
                self._answer(204)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                """Polled every few seconds; access logs would drown the worker's own."""

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="ferry-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
