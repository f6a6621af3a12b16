"""Fixtures of the integration tier: a real S3 server over HTTP on 127.0.0.1."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from testbed.binaries import MissingBinariesError, TestBinaries, find_bin_dir
from testbed.s3server import MotoServer, S3Endpoint
from testbed.versitygw import VersityGW


@pytest.fixture(scope="module")
def versitygw_or_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """versitygw (a real S3 server, fast enough for hundreds of MiB) when `make testbin` built it, else
    moto."""
    try:
        binaries = TestBinaries(find_bin_dir())
        has_versitygw = binaries.path("versitygw").is_file()
    except (MissingBinariesError, OSError, subprocess.SubprocessError):
        has_versitygw = False
    if has_versitygw:
        with VersityGW(binaries, tmp_path_factory.mktemp("versitygw")) as gateway:
            yield gateway.endpoint
    else:
        with MotoServer() as moto:
            yield moto.endpoint
