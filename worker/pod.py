"""`ferry worker`: one shard of a planned CopyJob, run inside a pod of the Indexed Job.

Everything comes from the pod: the plan (mounted ConfigMap: `spec.json`, `shards.json`),
`JOB_COMPLETION_INDEX`, credentials as environment variables from the referenced Secrets, and the
memory budget `FERRY_MEMORY_LIMIT`. The worker serves `/status` and `/metrics` while it runs and leaves
a compact summary as its termination message.

Exit codes (the Job's podFailurePolicy relies on them):
    0  the shard ran to the end (failed objects, if any, are in the summary and the report)
    2  the configuration is invalid: retrying cannot help (the index fails at once); this includes a
       memory budget too small for the worker's baseline plus one transfer, which the termination
       message explains with the `spec.resources.memory` it needs (never a loop of OOM kills)
    4  the shard could not finish (listing broke off): Kubernetes retries the index
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec
from ferry.model.loading import format_validation_error
from ferry.model.plan import SHARDS_FILE, SPEC_FILE, Shard
from ferry.worker.adaptive import AdaptiveLimiter
from ferry.worker.budget import (
    BudgetTooSmall,
    anonymous_rss,
    check_before_clients,
    current_rss,
    detect_budget,
    find_cgroup,
    memory_peak,
    tune_allocator,
)
from ferry.worker.control import ControlConfig
from ferry.worker.engine import CopyEngine, Progress
from ferry.worker.leans3 import make_lean
from ferry.worker.objects import KeyRange
from ferry.worker.parts import DEFAULT_PART
from ferry.worker.preflight import check_location
from ferry.worker.report import FailureReport
from ferry.worker.report import upload as report_upload
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.statusdoc import MemoryFigures, status_document, termination_message
from ferry.worker.statusserver import StatusServer

EXIT_DONE = 0
EXIT_INVALID = 2
EXIT_RETRY = 4
STATUS_PORT = 8080


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    spec: CopyJobSpec
    shard_index: int
    shard: Shard
    source: Credentials | None
    destination: Credentials | None
    report: Credentials | None
    status_address: tuple[str, int]
    termination_path: Path
    initial_concurrency: int | None


def _credentials(env: Mapping[str, str], role: str) -> Credentials | None:
    key, secret = env.get(f"FERRY_{role}_ACCESS_KEY_ID"), env.get(f"FERRY_{role}_SECRET_ACCESS_KEY")
    if not key and not secret:
        return None
    if not key or not secret:
        raise InvalidSpec(f"{role.lower()} credentials: both access key id and secret access key are needed")
    return Credentials(key, secret, env.get(f"FERRY_{role}_SESSION_TOKEN") or None)


def config_from(env: Mapping[str, str]) -> WorkerConfig:
    """Read the worker's configuration from its environment and the mounted plan. Raises InvalidSpec."""
    plan = Path(env.get("FERRY_PLAN_DIR", "/etc/ferry/plan"))
    try:
        spec_raw = json.loads((plan / SPEC_FILE).read_text())
        shards = json.loads((plan / SHARDS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"cannot read the plan in {plan}: {exc}") from exc
    try:
        spec = CopyJobSpec.model_validate(spec_raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidSpec(f"plan spec.json is invalid:\n{format_validation_error(exc, CopyJobSpec)}") from exc
    try:
        index = int(env["JOB_COMPLETION_INDEX"])
        shard = Shard.from_json(shards[index])
    except (KeyError, ValueError, IndexError) as exc:
        raise InvalidSpec(f"JOB_COMPLETION_INDEX {env.get('JOB_COMPLETION_INDEX')!r} names no shard") from exc
    host = env.get("FERRY_STATUS_HOST") or env.get("FERRY_POD_IP") or "0.0.0.0"
    initial = env.get("FERRY_INITIAL_CONCURRENCY")
    return WorkerConfig(
        name=env.get("FERRY_COPYJOB", "copyjob"),
        spec=spec,
        shard_index=index,
        shard=shard,
        source=_credentials(env, "SOURCE"),
        destination=_credentials(env, "DESTINATION"),
        report=_credentials(env, "REPORT"),
        status_address=(host, int(env.get("FERRY_STATUS_PORT", STATUS_PORT))),
        termination_path=Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log")),
        initial_concurrency=int(initial) if initial else None,
    )


def _invalid(path: Path, error: str, shard: int | None = None) -> int:
    """End the shard at once: the podFailurePolicy fails the index on exit 2, without retries."""
    print(f"error: {error}", file=sys.stderr)
    report: dict[str, object] = {"format": "ferry.dev/worker-report/v1", "state": "invalid", "error": error}
    if shard is not None:
        report["shard"] = shard
    _terminate(path, json.dumps(report))
    return EXIT_INVALID


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    tune_allocator()
    cgroup = find_cgroup()
    shard: int | None = None
    try:
        config = config_from(env)
        shard = config.shard_index
        budget = detect_budget(cgroup, env)
        # Before the S3 clients exist: a budget that cannot hold them and one transfer ends here.
        check_before_clients(budget, anonymous_rss())
    except (InvalidSpec, ValueError) as exc:
        return _invalid(
            Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log")), str(exc), shard
        )
    spec = config.spec
    limiter = AdaptiveLimiter(
        ControlConfig(initial=config.initial_concurrency or 16, maximum=spec.concurrency.max), budget
    )
    options = ClientOptions(max_pool_connections=limiter.ceiling + 8)
    source = make_client(spec.source, config.source, options)
    destination = make_client(spec.destination, config.destination, options)
    try:
        check_location(source, spec.source, "spec.source")
        check_location(destination, spec.destination, "spec.destination")
    except PreflightError as exc:
        # Locations were checked when the job was planned; failing now is worth a retry of the index.
        print(f"error: {exc} [{exc.reason}]", file=sys.stderr)
        _terminate(
            config.termination_path,
            json.dumps(
                {
                    "format": "ferry.dev/worker-report/v1",
                    "shard": config.shard_index,
                    "state": "incomplete",
                    "error": f"{exc} [{exc.reason}]",
                }
            ),
        )
        limiter.close()
        return EXIT_RETRY
    lean = env.get("FERRY_TRANSPORT", "lean") == "lean"
    source_lean = make_lean(spec.source, config.source, options) if lean else None
    destination_lean = make_lean(spec.destination, config.destination, options) if lean else None
    try:
        # The baseline, measured with the clients made, decides the part size or that nothing fits.
        plan = limiter.plan(DEFAULT_PART)
    except BudgetTooSmall as exc:
        limiter.close()
        return _invalid(config.termination_path, str(exc), config.shard_index)
    engine = CopyEngine(
        spec=spec,
        source_client=source,
        destination_client=destination,
        source_lean=source_lean,
        destination_lean=destination_lean,
        limiter=limiter,
        report=FailureReport(),
        key_range=KeyRange(config.shard.start_after, config.shard.end),
        part_size=plan.part_size,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    peak_rss = [current_rss()]

    def figures() -> MemoryFigures:
        peak = memory_peak(cgroup, budget)
        return MemoryFigures(
            peak_bytes=peak.bytes,
            peak_source=peak.source,
            limit_bytes=budget.limit_bytes,
            budget_bytes=budget.bytes,
            baseline_bytes=plan.baseline,
            part_size_bytes=plan.part_size,
        )

    def snapshot() -> Progress:
        progress = engine.progress()
        peak_rss[0] = max(peak_rss[0], progress.limiter.rss_bytes or 0)
        return progress

    server = StatusServer(
        config.status_address,
        lambda: status_document(config.shard_index, snapshot(), figures()),
        snapshot,
    )
    print(
        f"ferry worker: {config.name} shard {config.shard_index} "
        f"({config.shard.start_after!r} .. {config.shard.end!r}), status on {server.address}",
        flush=True,
    )
    try:
        summary = engine.run(stop)
    finally:
        limiter.close()
    # The cgroup's peak under a limit (what the OOM killer compares), else the process's VmHWM.
    memory = figures()
    peak = memory.peak_bytes or max(peak_rss[0], current_rss())
    if spec.report is not None and summary.counts.failed:
        _upload_report(config, summary.report_path)
    _terminate(config.termination_path, termination_message(config.shard_index, summary, peak, memory))
    server.close()
    c = summary.counts
    print(
        f"ferry worker: shard {config.shard_index}: {c.copied} copied, {c.skipped} skipped, {c.failed} failed"
        + (f"; {summary.error}" if summary.error else ""),
        flush=True,
    )
    return EXIT_DONE if summary.complete else EXIT_RETRY


def _terminate(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        print(f"warning: cannot write termination message to {path}: {exc}", file=sys.stderr)


def _upload_report(config: WorkerConfig, path: str) -> None:
    assert config.spec.report is not None
    report_upload(
        path, config.spec.report, config.report, f"{config.name}/shard-{config.shard_index:05d}.jsonl"
    )
