"""Helpers for engine tests: CopyJob specs pointing at test servers, and engines built the way
`ferry run` builds them (but in-process, so tests can look inside)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.model import CopyJobSpec
from ferry.worker.copyprocs import CopierSetup, CopyProcesses, ProcessTree
from ferry.worker.engine import CopyEngine, Summary
from ferry.worker.leans3 import make_lean
from ferry.worker.limits import FixedLimiter
from ferry.worker.report import FailureReport
from ferry.worker.retry import RetryPolicy
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from testbed.s3server import S3Endpoint

#: Small parts so multipart paths run with objects of a few MiB.
TEST_PART = 5 * 2**20
FAST_RETRY = RetryPolicy(max_attempts=8, base_seconds=0.01, throttle_base_seconds=0.02, cap_seconds=0.2)


def spec(source: dict[str, Any], destination: dict[str, Any], **extra: Any) -> CopyJobSpec:
    return CopyJobSpec.model_validate({"source": source, "destination": destination, **extra})


@dataclass
class Run:
    summary: Summary
    engine: CopyEngine
    #: Transfers each copy process answered (empty: copied in the engine's threads).
    answered: list[int] = field(default_factory=list)

    def failed_keys(self) -> set[str]:
        return {f.key for f in self.summary.failures}


def run_engine(
    job: CopyJobSpec,
    endpoint: S3Endpoint,
    *,
    source_url: str | None = None,
    destination_url: str | None = None,
    concurrency: int = 8,
    read_timeout: float = 10.0,
    report: Path | None = None,
    retry: RetryPolicy = FAST_RETRY,
    transport: str = "lean",
    processes: int = 0,
) -> Run:
    """Run ``job`` against ``endpoint`` (or proxies in front of it) and return its summary; with
    ``processes``, its transfers run in that many copy processes."""
    creds = Credentials(endpoint.access_key, endpoint.secret_key)
    options = ClientOptions(
        max_pool_connections=concurrency + 4, read_timeout=read_timeout, connect_timeout=2
    )
    src_loc = job.source.model_copy(update={"endpoint": source_url or job.source.endpoint})
    dst_loc = job.destination.model_copy(update={"endpoint": destination_url or job.destination.endpoint})
    lean = transport == "lean"
    copy_processes = (
        CopyProcesses(
            CopierSetup(src_loc, dst_loc, creds, creds, options, lean, concurrency), processes, ProcessTree()
        )
        if processes
        else None
    )
    engine = CopyEngine(
        spec=job,
        source_client=make_client(src_loc, creds, options),
        destination_client=make_client(dst_loc, creds, options),
        source_lean=make_lean(src_loc, creds, options) if lean else None,
        destination_lean=make_lean(dst_loc, creds, options) if lean else None,
        limiter=FixedLimiter(concurrency),
        report=FailureReport(report),
        part_size=TEST_PART,
        retry=retry,
        processes=copy_processes,
    )
    try:
        summary = engine.run()
    finally:
        if copy_processes is not None:
            copy_processes.close()
    return Run(summary, engine, copy_processes.answered() if copy_processes is not None else [])


def digest_map(client: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """Key (relative to prefix) -> MD5 of the content, read back object by object in 8 MiB chunks (GiB
    objects never sit in the test's memory)."""
    result = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            md5 = hashlib.md5()
            for chunk in client.get_object(Bucket=bucket, Key=item["Key"])["Body"].iter_chunks(8 * 2**20):
                md5.update(chunk)
            result[item["Key"][len(prefix) :]] = md5.hexdigest()
    return result
