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
    5  the shard was stopped early: its transfers kept failing the same job-wide way (refused
       credentials, a wrong region, denied access, a missing bucket; `systematic.py`). The podFailurePolicy
       fails the whole Job at once, so no other shard meets the same failure; the termination message
       says which side, which S3 code and what to fix
    6  a pod of a sync's census or delete Job stopped by SIGTERM (the CopyJob suspended, an eviction)
       before the end of its range: those Jobs' podFailurePolicy ignores it, so the index runs again
       when the Job may; a delete pod's termination message counts what it deleted

A shard whose archived objects (``spec.archived: restore``) are still being restored once the rest is
copied ends "waitingForRestore" with exit 0 after a short check (`handoff.handoff_window`): the pod does not
hold its memory for hours; the operator checks back and starts a pod for the shard again, which reads
when the restores were first requested from the ledger (`handoff.py`).

A shard the Job lists as finished (`FERRY_FINISHED_SHARDS`: counted in the progress ledger under an
earlier Job of the same CopyJob, re-created after an edit) ends at once with exit 0: only the shards that
did not finish run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec
from ferry.model.checkpoint import MAX_ENTRY_CHARS, Checkpoint, resume_for, resume_key
from ferry.model.copyjob import Mode, ReportInclude, Restore, Versions
from ferry.model.loading import format_validation_error
from ferry.model.plan import FINISHED_SHARDS_ENV, SHARDS_FILE, SPEC_FILE, Shard, in_ranges
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
from ferry.worker.copyprocs import CopierSetup, ProcessTree, parse_processes, start_copy_processes
from ferry.worker.credentials import customer_keys_from_env
from ferry.worker.engine import CopyEngine, Progress, Summary
from ferry.worker.evidence import EvidenceRecorder, lines_per_part, shard_scope, summary_name
from ferry.worker.finaldoc import FinalDocument
from ferry.worker.handoff import RestoreHandoff, handoff_window, requested_before, restore_key
from ferry.worker.leans3 import make_lean
from ferry.worker.lockcheck import check_destination_lock
from ferry.worker.objects import KeyRange
from ferry.worker.parts import DEFAULT_PART
from ferry.worker.preflight import check_location
from ferry.worker.ratelimit import RateShare, limits_token, starting_share
from ferry.worker.report import FailureReport, ReportStore, write_evidence
from ferry.worker.report import upload as report_upload
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.shardsync import (
    ALLOWED_ENV,
    CENSUS_PHASE,
    DELETE_PHASE,
    EXIT_STOPPED,
    IGNORED_ENV,
    MAX_DELETED_TEXT,
    PHASE_ENV,
    RUN_ENV,
    SAMPLE_KEYS,
    DeletedBefore,
    ShardCensus,
    ShardDeletes,
    allowed_for,
    deleted_key,
    phase_message,
    resumed_allowance,
)
from ferry.worker.statusdoc import FORMAT, MemoryFigures, held_state, status_document, termination_message
from ferry.worker.statusserver import OperatorEndpoints, StatusServer
from ferry.worker.syncpod import delete_shard, shard_census
from ferry.worker.versioningcheck import check_destination_versioning

EXIT_DONE = 0
EXIT_INVALID = 2
EXIT_RETRY = 4
EXIT_SYSTEMATIC = 5
STATUS_PORT = 8080
#: A stopped worker exits within this long of SIGTERM, inside the pods' 30 s terminationGracePeriodSeconds
#: (render.py), so that its termination message is written before any SIGKILL. Until then it waits for
#: the operator to say it recorded its final document (`finaldoc.py`).
STOP_WITHIN_SECONDS = 25.0


class Sigterm:
    """SIGTERM's mark, as a `signal.signal` handler: ``event`` is set once it came, ``at`` says when."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at: float | None = None

    def __call__(self, *_: object) -> None:
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()

    def await_recorded(self, final: FinalDocument) -> bool:
        """Whether the operator said it recorded ``final`` before this pod must exit."""
        since = 0.0 if self.at is None else time.monotonic() - self.at
        return final.wait(max(0.0, STOP_WITHIN_SECONDS - since))


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
    #: Where an earlier pod of this shard stopped (from the mounted progress ledger), if anywhere.
    resume: Checkpoint | None = None
    #: This pod's share of spec.rateLimit until the operator sends another (None: the spec's limits).
    rate_share: RateShare | None = None
    #: What the operator's `PUT /limits` carries; None: no such endpoint.
    limits_token: str | None = None
    #: Seconds since an earlier pod of this shard first requested restores (from the ledger); None: none.
    restores_requested_before: float | None = None


def read_resume(directory: str | None, index: int, shard: Shard) -> Checkpoint | None:
    """This shard's resume point in the mounted progress ledger; None when there is none, or it is not
    one this shard can use (the ledger is a ConfigMap its namespace's users can edit)."""
    if not directory:
        return None
    try:
        with (Path(directory) / resume_key(index)).open("rb") as file:
            raw = file.read(4 * MAX_ENTRY_CHARS + 1)
    except OSError:
        return None
    return resume_for(raw.decode("utf-8", "replace"), shard.start_after, shard.end)


def read_handoff(directory: str | None, index: int) -> RestoreHandoff | None:
    """The restores an earlier pod of this shard handed to the operator, from the mounted ledger; None
    when there are none or the entry is not one Ferry wrote (the ledger is editable by the namespace)."""
    if not directory:
        return None
    try:
        with (Path(directory) / restore_key(index)).open("rb") as file:
            raw = file.read(64)
    except OSError:
        return None
    return RestoreHandoff.from_text(raw.decode("utf-8", "replace").strip())


def credentials_from_env(env: Mapping[str, str], role: str) -> Credentials | None:
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
        source=credentials_from_env(env, "SOURCE"),
        destination=credentials_from_env(env, "DESTINATION"),
        report=credentials_from_env(env, "REPORT"),
        status_address=(host, int(env.get("FERRY_STATUS_PORT", STATUS_PORT))),
        termination_path=Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log")),
        initial_concurrency=int(initial) if initial else None,
        # With versions all the engine resumes through the destination's histories and ignores a resume
        # point; the report and evidence then name the whole shard's scope, not one after that point.
        resume=None
        if spec.versions is Versions.ALL
        else read_resume(env.get("FERRY_PROGRESS_DIR"), index, shard),
        rate_share=starting_share(env, env.get("FERRY_PROGRESS_DIR")),
        limits_token=limits_token(env),
        restores_requested_before=requested_before(
            read_handoff(env.get("FERRY_PROGRESS_DIR"), index), time.time()
        ),
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
    phase_stop = Sigterm()
    if env.get(PHASE_ENV) in (DELETE_PHASE, CENSUS_PHASE):
        # A census or delete pod stopped (suspension, eviction) ends its pass between two requests and
        # says how far it got, rather than dying mid-batch with its count unknown.
        signal.signal(signal.SIGTERM, phase_stop)
    try:
        config = config_from(env)
        shard = config.shard_index
        if in_ranges(shard, env.get(FINISHED_SHARDS_ENV)):
            return _already_finished(config)
        budget = detect_budget(cgroup, env)
        processes_asked = parse_processes(env.get("FERRY_PROCESSES", "1"))
        customer_keys = customer_keys_from_env(config.spec, env)
        # Before the S3 clients exist: a budget that cannot hold them and one transfer ends here.
        check_before_clients(budget, anonymous_rss())
    except (InvalidSpec, ValueError) as exc:
        return _invalid(
            Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log")), str(exc), shard
        )
    spec = config.spec
    tree = ProcessTree()
    limiter = AdaptiveLimiter(
        ControlConfig(initial=config.initial_concurrency or 16, maximum=spec.concurrency.max),
        budget,
        rss=tree.rss,
    )
    options = ClientOptions(max_pool_connections=limiter.ceiling + 8)
    source = make_client(spec.source, config.source, options)
    destination = make_client(spec.destination, config.destination, options)
    try:
        check_location(source, spec.source, "spec.source")
        check_location(destination, spec.destination, "spec.destination")
        check_destination_lock(destination, spec)
        check_destination_versioning(destination, spec)
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
    if env.get(PHASE_ENV) == DELETE_PHASE:
        # A pod of a sync's delete Job: its shard was copied and counted; delete what was approved.
        limiter.close()
        return _delete_phase(config, source, destination, env, phase_stop)
    if env.get(PHASE_ENV) == CENSUS_PHASE:
        # A pod of a sync's dry run: count what the sync would delete in this shard; copy nothing.
        limiter.close()
        return _census_phase(config, source, destination, phase_stop.event)
    lean = env.get("FERRY_TRANSPORT", "lean") == "lean"
    source_lean = make_lean(spec.source, config.source, options) if lean else None
    destination_lean = make_lean(spec.destination, config.destination, options) if lean else None
    # A pod given several CPUs copies in as many processes, started before the baseline is measured.
    processes = start_copy_processes(
        processes_asked,
        CopierSetup(
            spec.source, spec.destination, config.source, config.destination, options, lean, limiter.ceiling
        ),
        tree,
        budget_bytes=budget.bytes,
        every_version=spec.versions is Versions.ALL,
    )
    try:
        # The baseline, measured with the clients made, decides the part size or that nothing fits.
        plan = limiter.plan(DEFAULT_PART)
    except BudgetTooSmall as exc:
        limiter.close()
        if processes is not None:
            processes.close()
        return _invalid(config.termination_path, str(exc), config.shard_index)
    evidence = _evidence_recorder(config, env)
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
        resume=config.resume,
        rate_share=config.rate_share,
        evidence=evidence[0] if evidence else None,
        customer_keys=customer_keys,
        processes=processes,
        # Restores still in progress after a short check are handed to the operator, not waited for here.
        restore_handoff_seconds=handoff_window((spec.restore or Restore()).check_interval_seconds),
        restores_requested_at=(
            None
            if config.restores_requested_before is None
            else time.monotonic() - config.restores_requested_before
        ),
    )
    sigterm = Sigterm()
    signal.signal(signal.SIGTERM, sigterm)
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

    pod_name = env.get("FERRY_POD_NAME") or None
    ended: list[str] = []  # how the run ended, once it has
    final = FinalDocument()

    def document() -> dict[str, Any]:
        state = ended[0] if ended else "running"
        name = final.name if ended else None
        return status_document(config.shard_index, snapshot(), figures(), state, pod_name, name)

    operator = (
        OperatorEndpoints(config.limits_token, engine.set_rate_share, final.acknowledge)
        if config.limits_token
        else None
    )
    server = StatusServer(config.status_address, document, snapshot, operator)
    resumed = f", resuming after {config.resume.after!r}" if config.resume else ""
    copying = f", copying in {processes.count} processes" if processes is not None else ""
    print(
        f"ferry worker: {config.name} shard {config.shard_index} "
        f"({config.shard.start_after!r} .. {config.shard.end!r}){resumed}{copying}, "
        f"status on {server.address}",
        flush=True,
    )
    try:
        summary = engine.run(sigterm.event)
    finally:
        limiter.close()
        if processes is not None:
            processes.close()
    # The cgroup's peak under a limit (what the OOM killer compares), else the process's VmHWM.
    memory = figures()
    peak = memory.peak_bytes or max(peak_rss[0], current_rss())
    # Only this run's failures: carried ones are in the report of the run that met them.
    if spec.report is not None and engine.report.count:
        _upload_report(config, summary.report_path)
    pointer = _finish_evidence(config, summary, *evidence) if evidence else None
    census = _sync_census(config, source, destination, summary)
    held = held_state(summary, sigterm.at is not None)
    if held is not None and operator is not None:
        # Stopped (suspend, fewer pods, eviction), whether or not the shard was done by then: what settled
        # since the operator's last read is counted only once it has recorded this last document in its
        # ledger (the shard's next pod resumes from there), so answer `/status` until it says so.
        ended.append(held)
        if sigterm.await_recorded(final):
            print(
                f"ferry worker: shard {config.shard_index}: final counts recorded by the operator", flush=True
            )
        else:
            print(
                f"warning: shard {config.shard_index}: the operator did not record the final counts in time; "
                "the shard's next pod counts as skipped what this pod copied after its last recorded point",
                file=sys.stderr,
                flush=True,
            )
    handoff = _handoff(summary)
    _terminate(
        config.termination_path,
        termination_message(
            config.shard_index, summary, peak, memory, evidence=pointer, sync=census, handoff=handoff
        ),
    )
    server.close()
    c = summary.counts
    print(
        f"ferry worker: shard {config.shard_index}: {c.copied} copied, {c.skipped} skipped, {c.failed} failed"
        + (f"; {summary.error}" if summary.error else ""),
        flush=True,
    )
    if summary.systematic is not None:
        print(f"error: shard {config.shard_index}: {summary.systematic.message()}", file=sys.stderr)
        return EXIT_SYSTEMATIC
    if census is not None and not census.listing_complete:
        print(f"error: shard {config.shard_index}: sync count: {census.error}", file=sys.stderr)
        return EXIT_RETRY  # a count that broke off proves nothing: Kubernetes runs the shard again
    if handoff is not None:
        print(
            f"ferry worker: shard {config.shard_index}: {handoff.waiting} archived objects are still being "
            "restored; the operator checks back and runs the shard again",
            flush=True,
        )
    return EXIT_DONE if summary.complete or handoff is not None else EXIT_RETRY


def _handoff(summary: Summary) -> RestoreHandoff | None:
    """What a shard that ended waiting for restores leaves to the operator: the oldest request's time as
    Unix seconds (the engine's clock is this process's monotonic one)."""
    if not summary.waiting_for_restore or summary.handed_off_since is None:
        return None
    age = max(0.0, time.monotonic() - summary.handed_off_since)
    return RestoreHandoff(summary.handed_off, int(time.time() - age))


def _sync_census(config: WorkerConfig, source: Any, destination: Any, summary: Summary) -> ShardCensus | None:
    """With spec.mode sync, the shard's census once it copied completely without failures (anything
    else deletes nothing, so nothing is spent on counting)."""
    if config.spec.mode is not Mode.SYNC or not summary.complete or summary.counts.failed:
        return None
    if summary.systematic is not None:
        return None
    key_range = KeyRange(config.shard.start_after, config.shard.end)
    return shard_census(config.spec, source, destination, key_range)


def _census_phase(config: WorkerConfig, source: Any, destination: Any, stop: threading.Event) -> int:
    """A dry run's count of one shard: what a sync would delete, with the first few keys."""
    key_range = KeyRange(config.shard.start_after, config.shard.end)
    census = shard_census(config.spec, source, destination, key_range, sample=SAMPLE_KEYS, stop=stop)
    _terminate(config.termination_path, phase_message(FORMAT, config.shard_index, CENSUS_PHASE, census))
    if stop.is_set() and not census.listing_complete:
        print(f"ferry worker: shard {config.shard_index}: stopped; counted again when resumed", flush=True)
        return EXIT_STOPPED
    print(f"ferry worker: shard {config.shard_index}: {census.candidates} would be deleted", flush=True)
    if not census.listing_complete:
        print(f"error: shard {config.shard_index}: sync count: {census.error}", file=sys.stderr)
        return EXIT_RETRY
    return EXIT_DONE


def _delete_phase(
    config: WorkerConfig, source: Any, destination: Any, env: Mapping[str, str], sigterm: Sigterm
) -> int:
    """The delete pass of one shard, capped at the count the operator approved for it less what the
    shard's earlier, stopped pods deleted (the ledger's `DeletedBefore`). Exit 0 whatever it did (the
    delete Job retries no failed shard: a second pass could delete past the approved count), except when
    stopped (SIGTERM: a suspension, an eviction) before its end: it then answers `/status` with what it
    deleted until its operator says it recorded it (the pod of a suspended Job is deleted, and with it its
    termination message), and exits 6, which the Job ignores; the shard's next pod deletes what is left."""
    approved = allowed_for(env.get(ALLOWED_ENV), config.shard_index)
    ignored = env.get(IGNORED_ENV, "")
    evicted = int(ignored) if ignored.isascii() and ignored.isdigit() and len(ignored) <= 6 else 0
    before = read_deleted_before(env.get("FERRY_PROGRESS_DIR"), config.shard_index)
    allowed, refused = resumed_allowance(approved, env.get(RUN_ENV, ""), evicted, before)
    key_range = KeyRange(config.shard.start_after, config.shard.end)
    pod_name = env.get("FERRY_POD_NAME") or None
    final: list[dict[str, Any]] = []
    named = FinalDocument()
    token = limits_token(env)

    def document() -> dict[str, Any]:
        if final:
            return final[0]
        return {"format": FORMAT, "shard": config.shard_index, "state": "running", "phase": DELETE_PHASE}

    operator = OperatorEndpoints(token, None, named.acknowledge) if token else None
    server = StatusServer(config.status_address, document, None, operator)
    if refused is not None:
        done = ShardDeletes(0, 0, 0, refused)
    else:
        done = delete_shard(config.spec, source, destination, key_range, allowed, sigterm.event)
    message = phase_message(FORMAT, config.shard_index, DELETE_PHASE, done)
    if done.stopped:
        final.append({**json.loads(message), **({"pod": pod_name} if pod_name else {}), "final": named.name})
        # Within the grace period, leaving time to exit: a count never recorded is a count lost.
        if sigterm.await_recorded(named):
            print(
                f"ferry worker: shard {config.shard_index}: deleted count recorded by the operator",
                flush=True,
            )
        else:
            print(
                f"warning: shard {config.shard_index}: the operator did not record what this pod deleted in "
                "time; the shard's next pod is bounded by the source re-check only",
                file=sys.stderr,
                flush=True,
            )
    _terminate(config.termination_path, message)
    server.close()
    print(
        f"ferry worker: shard {config.shard_index}: deleted {done.deleted} of {allowed} left of {approved} "
        "approved" + (f"; {done.error}" if done.error else "") + ("; stopped" if done.stopped else ""),
        flush=True,
    )
    return EXIT_STOPPED if done.stopped else EXIT_DONE


def read_deleted_before(directory: str | None, index: int) -> DeletedBefore | None:
    """What the stopped pods of this shard's delete pass deleted, from the mounted progress ledger."""
    if not directory:
        return None
    try:
        with (Path(directory) / deleted_key(index)).open("rb") as file:
            raw = file.read(MAX_DELETED_TEXT + 1)
    except OSError:
        return None
    return DeletedBefore.parse(raw.decode("utf-8", "replace"))


def _already_finished(config: WorkerConfig) -> int:
    print(f"ferry worker: shard {config.shard_index} finished in an earlier run; nothing to do", flush=True)
    document = {"format": FORMAT, "shard": config.shard_index, "state": "finishedBefore"}
    _terminate(config.termination_path, json.dumps(document))
    return EXIT_DONE


def _terminate(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        print(f"warning: cannot write termination message to {path}: {exc}", file=sys.stderr)


def report_name(config: WorkerConfig) -> str:
    """The shard's report; a resumed run names its own after its resume point, so it never replaces
    the report of the run before it (whose failures it carries but did not meet)."""
    name = f"{config.name}/shard-{config.shard_index:05d}"
    if config.resume is not None:
        name += f"-after-{hashlib.sha256(config.resume.after.encode()).hexdigest()[:12]}"
    return f"{name}.jsonl"


def _evidence_recorder(
    config: WorkerConfig, env: Mapping[str, str]
) -> tuple[EvidenceRecorder, ReportStore] | None:
    """With spec.report.include: all, the recorder of this shard's objects, writing into the shard's own
    scope (so a re-run of the shard replaces its parts, and pods never write each other's)."""
    location = config.spec.report
    if location is None or location.include is not ReportInclude.ALL:
        return None
    store = ReportStore(location, config.report)
    resumed_after = config.resume.after if config.resume is not None else None
    recorder = EvidenceRecorder(
        scope=shard_scope(config.name, config.shard_index, resumed_after),
        sink=store.put_file,
        lines_per_part=lines_per_part(env),
    )
    return recorder, store


def _finish_evidence(
    config: WorkerConfig, summary: Summary, recorder: EvidenceRecorder, store: ReportStore
) -> dict[str, Any]:
    """Write the shard's evidence summary; returns the compact pointer the termination message carries
    (the summary's name under spec.report.prefix: the operator knows the bucket and prefix)."""
    pointer = write_evidence(
        recorder,
        store,
        job=config.name,
        shard=config.shard_index,
        resumed_after=config.resume.after if config.resume is not None else None,
        complete=summary.complete,
        replaces=True,
    )
    return {
        "summary": summary_name(recorder.scope) if pointer["summary"] else None,
        "parts": pointer["parts"],
        "objects": pointer["objects"]["total"],
        "complete": pointer["complete"],
    }


def _upload_report(config: WorkerConfig, path: str) -> None:
    assert config.spec.report is not None
    report_upload(path, config.spec.report, config.report, report_name(config))
