"""S3 server processes for Ferry's integration tests, benchmarks and demo.

The copy engine is tested against real S3 servers over HTTP on 127.0.0.1, never against in-process
mocks: this module starts moto's server mode as a subprocess and describes it as an `S3Endpoint`,
the value the tests hand to the engine (directly or behind `testbed.faultproxy`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MOTO_ACCESS_KEY = "testing"
_MOTO_SECRET_KEY = "testing"  # moto accepts any credentials; these are the conventional dummies


@dataclass(frozen=True, repr=False)
class S3Endpoint:
    """Where an S3-compatible server answers and the credentials to sign requests for it."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def __repr__(self) -> str:
        # Secrets never appear in logs or test output, even for throwaway servers: endpoints get
        # printed by pytest on failure and the same type describes real servers in benchmarks.
        return (
            f"S3Endpoint(url={self.url!r}, access_key={self.access_key!r}, secret_key='***', "
            f"region={self.region!r})"
        )

    def client(self, **kwargs: Any) -> S3Client:
        """A boto3 S3 client for this endpoint with path-style addressing.

        `config` in kwargs is merged over the path-addressing config; other kwargs go to
        `boto3.client` as they are.
        """
        import boto3
        from botocore.config import Config

        # Path addressing: bucket names do not resolve as sub-domains of 127.0.0.1.
        config = Config(s3={"addressing_style": "path"})
        extra = kwargs.pop("config", None)
        if extra is not None:
            config = config.merge(extra)
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
            **kwargs,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller must tolerate a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout: float = 5.0) -> None:
    """Block until `url` answers any HTTP response (any status), or raise TimeoutError."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=max(0.1, deadline - time.monotonic()))
        try:
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
            time.sleep(0.05)
        finally:
            conn.close()
    raise TimeoutError(f"{url} did not answer within {timeout:.1f}s (last error: {last_error!r})")


def _moto_command(port: int) -> list[str]:
    # The console script sits next to the interpreter in a venv; fall back to the module so a
    # system-wide install works too.
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


class MotoServer:
    """moto's S3 server as a subprocess on 127.0.0.1; use as a context manager.

    The log goes to a file in a private temp dir whose tail is quoted in every startup error.
    """

    def __init__(self, startup_timeout: float = 10.0, port: int | None = None) -> None:
        self._startup_timeout = startup_timeout
        self._fixed_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._port: int | None = None
        self.log_path: Path | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        if self._port is None:
            raise RuntimeError("MotoServer is not running; use it as a context manager or call start()")
        return S3Endpoint(
            url=f"http://127.0.0.1:{self._port}",
            access_key=_MOTO_ACCESS_KEY,
            secret_key=_MOTO_SECRET_KEY,
        )

    def start(self) -> MotoServer:
        self._tmpdir = tempfile.mkdtemp(prefix="ferry-moto-")
        self.log_path = Path(self._tmpdir) / "moto_server.log"
        # A free port can be taken between probing and binding; a second try makes that race harmless.
        if self._fixed_port is not None:
            self._spawn(self._fixed_port, last_attempt=True)
            self._port = self._fixed_port
            return self
        for attempt in range(3):
            port = free_port()
            if self._spawn(port, last_attempt=attempt == 2):
                self._port = port
                return self
        raise AssertionError("unreachable")

    def _spawn(self, port: int, last_attempt: bool) -> bool:
        assert self.log_path is not None
        env = dict(os.environ)
        # Keep moto from reading the developer's real AWS configuration.
        env.update(AWS_ACCESS_KEY_ID=_MOTO_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=_MOTO_SECRET_KEY)
        env.pop("AWS_PROFILE", None)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                _moto_command(port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        url = f"http://127.0.0.1:{port}/moto-api/"
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                self._proc = None
                if not last_attempt and "address already in use" in tail.lower():
                    return False
                self._cleanup_tmpdir()
                raise RuntimeError(f"moto_server exited with code {code} on port {port}; log tail:\n{tail}")
            try:
                wait_for_http(url, timeout=0.25)
                return True
            except TimeoutError:
                continue
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(
            f"moto_server did not answer on 127.0.0.1:{port} within {self._startup_timeout:.0f}s; "
            f"log tail:\n{tail}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self._port = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self._cleanup_tmpdir()

    def _cleanup_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> MotoServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()
