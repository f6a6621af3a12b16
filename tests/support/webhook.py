"""A webhook receiver for tests: an HTTP server on 127.0.0.1 in the test's process that answers POSTs with
the statuses given, in turn (the last one from then on), and keeps what came."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Bodies are read up to this many bytes: an event is a few hundred.
MAX_BODY = 1 << 20


class Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.received.append((headers, body))
            return self.statuses[min(len(self.received), len(self.statuses)) - 1]

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [body for _headers, body in self.received]


@contextmanager
def receiver(statuses: list[int], path: str = "/hook") -> Iterator[tuple[Receiver, str]]:
    """The receiver and its URL (``http://127.0.0.1:<port><path>``); stopped on exit."""
    state = Receiver(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            status = state.answer(dict(self.headers.items()), self.rfile.read(length))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
