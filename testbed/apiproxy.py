"""A fault-injecting TLS proxy in front of kube-apiserver, for the operator's reliability tests.

A real apiserver answers Ferry's status merge-patches without conflicts, yet a production operator
meets 409 Conflict (other writers, admission webhooks, an apiserver under etcd contention) and must
converge anyway. The operator is pointed at this proxy instead of the apiserver; requests pass through
unchanged (watches stream chunk by chunk) except those a rule picks, which get a Kubernetes `Status`
error. Listens on 127.0.0.1 with the apiserver's own serving certificate, so clients trust it as is.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

#: Hop-by-hop and framing headers: the proxy re-frames every message itself.
_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclass(frozen=True)
class ApiFault:
    """Answer `status` to requests of `method` whose path matches `path_regex`, with probability `rate`."""

    method: str
    path_regex: str
    rate: float
    status: int = 409
    reason: str = "Conflict"
    message: str = (
        "the object has been modified; please apply your changes to the latest version and try again"
    )

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.search(self.path_regex, path) is not None


#: Status writes of CopyJobs: what the operator writes every pass.
COPYJOB_STATUS_CONFLICT = ApiFault("PATCH", r"/copyjobs/[^/]+/status$", rate=0.5)


class ApiFaultProxy:
    """Run in a background thread; `url` is what a kubeconfig should point at."""

    def __init__(
        self,
        upstream: str,
        ca_cert: Path,
        serving_cert: Path,
        serving_key: Path,
        faults: tuple[ApiFault, ...] = (),
        seed: int = 0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self._client_ssl = ssl.create_default_context(cafile=str(ca_cert))
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ssl.load_cert_chain(str(serving_cert), str(serving_key))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._injected: dict[str, int] = {}
        self._passed = 0
        self._by_kind: dict[str, int] = {}
        #: Arrival times (monotonic) of passed requests, for rates over windows; bounded by the run.
        self._times: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def injected(self) -> Mapping[str, int]:
        """Injected errors so far, by 'METHOD status'."""
        with self._lock:
            return dict(self._injected)

    def set_faults(self, faults: tuple[ApiFault, ...]) -> None:
        with self._lock:
            self.faults = faults

    def passed(self) -> int:
        with self._lock:
            return self._passed

    def requests_by_kind(self) -> dict[str, int]:
        """Passed requests by 'verb resource[/subresource]', e.g. 'patch copyjobs/status'."""
        with self._lock:
            return dict(self._by_kind)

    def request_times(self) -> list[float]:
        with self._lock:
            return list(self._times)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ApiFaultProxy:
        self._thread = threading.Thread(target=self._run, name="api-fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the API fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> ApiFaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _serve(self) -> None:
        # No timeout: watches stay open as long as the apiserver keeps them.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(lambda _app: self._session.close())
        # Open watches would hold a graceful shutdown for a minute; the test is over by then.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._server_ssl)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    # -- requests --------------------------------------------------------------------------------

    def _pick(self, method: str, path: str, query: Mapping[str, str]) -> ApiFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path) and self._random.random() < fault.rate:
                    key = f"{method} {fault.status}"
                    self._injected[key] = self._injected.get(key, 0) + 1
                    return fault
            self._passed += 1
            kind = classify(method, path, query)
            self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
            self._times.append(time.monotonic())
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._pick(request.method, request.path, request.query)
        if fault is not None:
            return web.json_response(_status_body(fault, request.path), status=fault.status)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + str(request.rel_url),
                headers=headers,
                data=body or None,
                ssl=self._client_ssl,
                allow_redirects=False,
                # Kubernetes clients may send a body without Content-Type (the apiserver then reads
                # JSON); aiohttp would label it application/octet-stream, which the apiserver refuses.
                skip_auto_headers=("Content-Type",),
            )
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"apiserver unreachable: {exc}")
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _DROP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError):
                return response  # the upstream went away mid-stream: the client sees the stream end
            await response.write_eof()
            return response


def classify(method: str, path: str, query: Mapping[str, str]) -> str:
    """'verb resource[/subresource]' of an API request, the way audit logs and apiserver metrics name them."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return f"{method.lower()} {path}"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] if rest else ""
    named = len(rest) >= 2
    subresource = f"/{rest[2]}" if len(rest) >= 3 else ""
    if method == "GET":
        verb = "get" if named else ("watch" if query.get("watch") in ("true", "1") else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method)
    return f"{verb} {resource}{subresource}"


def _status_body(fault: ApiFault, path: str) -> dict[str, Any]:
    name = path.rstrip("/").split("/")[-2] if path.endswith("/status") else path.rsplit("/", 1)[-1]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'Operation cannot be fulfilled on copyjobs.ferry.dev "{name}": {fault.message}',
        "reason": fault.reason,
        "details": {"name": name, "group": "ferry.dev", "kind": "copyjobs"},
        "code": fault.status,
    }
