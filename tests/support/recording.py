"""moto's request recorder as a test's witness of what Ferry sent: a moto server of the test's own, on
127.0.0.1, that appends every request it receives (method, URL, headers) to a file.

Used where the S3 servers of the testbed accept a header but keep nothing observable of it (canned ACLs
other than public ones, SSE-C keys): the test then checks the requests themselves.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from testbed.s3server import MotoServer, S3Endpoint


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """The S3 operation, told from method, query and headers (only those Ferry's copies make)."""
        query = self.url.split("?", 1)[1] if "?" in self.url else ""
        copy = "x-amz-copy-source" in self.headers
        if self.method == "GET":
            return (
                "GetObjectTagging"
                if "tagging" in query
                else ("ListObjects" if "list-type" in query else "GetObject")
            )
        if self.method == "HEAD":
            return "HeadObject"
        if self.method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        if "partNumber=" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if self.method == "POST" and "uploadId=" in query:
            return "CompleteMultipartUpload"
        if self.method == "POST" and "uploads" in query:
            return "CreateMultipartUpload"
        return "CopyObject" if copy else "PutObject"

    def of_bucket(self, bucket: str) -> bool:
        path = self.url.split("://", 1)[-1].split("/", 1)[-1]
        return path == bucket or path.startswith((f"{bucket}/", f"{bucket}?"))


@dataclass(frozen=True)
class RecordingMoto:
    endpoint: S3Endpoint
    path: Path

    def start(self) -> None:
        """Forget what was recorded and record from now on."""
        self.path.write_text("")
        self._call("start-recording")

    def stop(self) -> list[Request]:
        """Stop recording and return the requests received since `start`."""
        self._call("stop-recording")
        requests = []
        for line in self.path.read_text().splitlines():
            entry = json.loads(line)
            headers = {k.lower(): str(v) for k, v in entry["headers"].items()}
            requests.append(Request(entry["method"], entry["url"], headers))
        return requests

    def _call(self, action: str) -> None:
        url = f"{self.endpoint.url}/moto-api/recorder/{action}"
        with urllib.request.urlopen(url, data=b"", timeout=10):
            pass


@contextmanager
def recording_moto(directory: Path) -> Iterator[RecordingMoto]:
    """A moto server whose recorder writes to a file in ``directory``; recording is off until `start`."""
    path = directory / "requests.jsonl"
    with mock.patch.dict(os.environ, {"MOTO_RECORDER_FILEPATH": str(path)}), MotoServer() as server:
        yield RecordingMoto(server.endpoint, path)
