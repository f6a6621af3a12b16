"""The versitygw S3 server (Apache-2.0, built by `make testbin`) as a local process on 127.0.0.1.

Ferry's engine tests and benchmarks need an S3 server that behaves like a real one and is fast:
versitygw's posix backend stores objects as files and implements multipart uploads, CopyObject,
UploadPartCopy, tagging and object-integrity checksums. `VersityGW(bin_dir, workdir)` starts it with
a freshly generated root key, keeps data under `workdir`, and describes it as an `S3Endpoint`.

The posix backend keeps object metadata in user extended attributes; on a filesystem without them
(some tmpfs and overlay set-ups) the gateway is started with `--sidecar`, which keeps metadata in
files of a side directory instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from testbed.binaries import TestBinaries
from testbed.controlplane import ServerProcess, free_port

try:  # One value type for every S3 server the testbed starts.
    from testbed.s3server import S3Endpoint
except ImportError:  # pragma: no cover - only while s3server.py does not exist
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class S3Endpoint:  # type: ignore[no-redef]
        """Where an S3-compatible server answers and the credentials to sign requests for it."""

        url: str
        access_key: str
        secret_key: str
        region: str = "us-east-1"


def supports_user_xattrs(directory: Path) -> bool:
    """Whether files in `directory` accept `user.*` extended attributes."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".xattr-probe-")
    os.close(fd)
    try:
        os.setxattr(name, "user.ferry.probe", b"1")
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return False
        raise
    finally:
        os.unlink(name)


class VersityGW:
    """A versitygw process serving S3 on 127.0.0.1 from a posix directory; a context manager."""

    def __init__(
        self,
        bin_dir: Path | TestBinaries,
        workdir: Path,
        *,
        region: str = "us-east-1",
        port: int | None = None,
        sidecar: bool | None = None,
        start_timeout: float = 20.0,
        versioning: bool = False,
    ):
        self.bins = bin_dir if isinstance(bin_dir, TestBinaries) else TestBinaries(Path(bin_dir))
        self.workdir = Path(workdir)
        self.region = region
        self.port = port
        self.sidecar = sidecar
        self.start_timeout = start_timeout
        #: Serve bucket versioning (PutBucketVersioning, ListObjectVersions, delete markers): versitygw keeps
        #: the older versions of every object under a directory of its own.
        self.versioning = versioning
        self.data_dir = self.workdir / "data"
        self.proc: ServerProcess | None = None
        self._endpoint: S3Endpoint | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        if self._endpoint is None:
            raise RuntimeError("versitygw is not started")
        return self._endpoint

    def __enter__(self) -> VersityGW:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        binary = self.bins.path("versitygw")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sidecar = self.sidecar if self.sidecar is not None else not supports_user_xattrs(self.data_dir)
        port = self.port or free_port()
        access_key = "ferry" + secrets.token_hex(6)
        secret_key = secrets.token_urlsafe(30)
        # versitygw closes every connection unless asked not to; real S3 services keep them alive, and
        # clients' costs are only comparable with connection reuse.
        argv = [
            str(binary),
            "--port",
            f"127.0.0.1:{port}",
            "--region",
            self.region,
            "--quiet",
            "--keep-alive",
        ]
        argv += ["posix"]
        if sidecar:
            argv += ["--sidecar", str(self.workdir / "meta")]
            (self.workdir / "meta").mkdir(parents=True, exist_ok=True)
        if self.versioning:
            argv += ["--versioning-dir", str(self.workdir / "versions")]
            (self.workdir / "versions").mkdir(parents=True, exist_ok=True)
        argv.append(str(self.data_dir))
        # Credentials go through the environment, not argv, so they do not show up in `ps`.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "ROOT_"))}
        env["ROOT_ACCESS_KEY_ID"] = access_key
        env["ROOT_SECRET_ACCESS_KEY"] = secret_key
        self.proc = ServerProcess("versitygw", argv, self.workdir / "versitygw.log", env=env)
        self.proc.start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            self.proc.check_running()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"versitygw did not listen on 127.0.0.1:{port}; see {self.proc.log_path}")
            time.sleep(0.05)
        self._endpoint = S3Endpoint(
            url=f"http://127.0.0.1:{port}", access_key=access_key, secret_key=secret_key, region=self.region
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def wipe(self) -> None:
        """Remove all buckets' data (only while stopped)."""
        if self.proc is not None:
            raise RuntimeError("stop versitygw before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)
