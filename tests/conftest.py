"""Shared fixtures: one moto S3 server process per test session and clients bound to it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from testbed.s3server import MotoServer, S3Endpoint

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class S3Fixture:
    """An S3 server under test: its endpoint, a client for it, and a unique-bucket factory."""

    endpoint: S3Endpoint
    client: S3Client
    make_bucket: Callable[[str], str]

    # Allow `endpoint, client = s3` in tests that need nothing else.
    def __iter__(self) -> Iterator[object]:
        return iter((self.endpoint, self.client))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3(moto_server: MotoServer) -> S3Fixture:
    endpoint = moto_server.endpoint
    client = endpoint.client()

    def make_bucket(prefix: str = "ferry-test") -> str:
        # Unique names keep tests independent on the session-wide server.
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name

    return S3Fixture(endpoint=endpoint, client=client, make_bucket=make_bucket)
