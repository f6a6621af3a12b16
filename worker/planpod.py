"""`ferry planner`: plans one CopyJob inside a pod of its namespace, under the tenant's own credentials.

Where it sits: the operator starts it as the one-pod Job `<copyjob>-planner` when a CopyJob has no plan
yet. It checks the locations (preflight), lists the source in parallel key ranges under the platform's
limits (`worker.scan`) — or reads the manifest the spec names instead (`worker.sourceplan`) — and keeps
only the size histogram and fine contiguous pieces of the key space (memory bounded whatever the number
of keys). It then serves the result on `/plan` (listing progress on `/status`
meanwhile) until the operator has read it and deletes the Job, or until FERRY_PLAN_HOLD_SECONDS pass.
The operator checks the result (`operator.planresult`) and cuts shards and sizes workers itself.

Configured like a worker: the spec from the mounted ConfigMap (FERRY_PLAN_DIR/spec.json), credentials
from the Secrets the CopyJob names (FERRY_SOURCE_ACCESS_KEY_ID, ...), and the platform's limits
(FERRY_LISTING_DEADLINE_SECONDS, FERRY_MAX_OBJECTS_PER_COPYJOB, FERRY_ALLOWED_ENDPOINTS,
FERRY_CLUSTER_CIDRS) from its environment; FERRY_PLAN_LISTERS sets how many listers run at once
(1 to 256). With FERRY_PLAN_PODS above 1 the planner Job is Indexed: this pod lists only part
JOB_COMPLETION_INDEX of the key space (`keyspace.part_cuts`) and its answer says which part it covers
and the level of each piece's end (`operator.planning`); the operator joins the parts into the pieces one
listing of the whole would give (`planresult.merge_parts`).

Exit codes:
    0  the plan was served (read by the operator, or held until FERRY_PLAN_HOLD_SECONDS)
    2  the CopyJob cannot be planned as it is (a location fails its check, a platform limit is hit): the
       termination message is a `planner-failure` document; the Job fails without retries
    4  the listing broke off although every location passed its check: the Job retries the pod
    6  stopped by SIGTERM while listing (the CopyJob suspended, an eviction): the Job's podFailurePolicy
       ignores it, so the listing starts again once the Job may run (a partial listing is not kept)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.exceptions
from pydantic import ValidationError

from ferry.errors import InvalidSpec, PreflightError
from ferry.model import CopyJobSpec
from ferry.model.loading import format_validation_error
from ferry.model.plan import SPEC_FILE
from ferry.operator.netguard import endpoint_problem, guard_client
from ferry.operator.planresult import MAX_PLANNER_PODS, PlannerFailure, PlanResult
from ferry.operator.policy import EndpointPolicy
from ferry.worker.display import format_duration
from ferry.worker.lockcheck import check_destination_lock
from ferry.worker.pod import STATUS_PORT, credentials_from_env
from ferry.worker.preflight import check_location
from ferry.worker.s3 import ClientOptions, Credentials, make_client
from ferry.worker.scan import DEFAULT_LISTERS, ListingTracker, PlanningStopped
from ferry.worker.shardsync import EXIT_STOPPED
from ferry.worker.sourceplan import plan_source
from ferry.worker.versioningcheck import check_destination_versioning

EXIT_SERVED = 0
EXIT_INVALID = 2
EXIT_RETRY = 4
#: How long a finished plan waits for the operator, which reads it within a pass or two.
DEFAULT_HOLD_SECONDS = 900.0
#: Most listers FERRY_PLAN_LISTERS may ask for: each is a thread with one request in flight.
MAX_LISTERS = 256
#: No single read waits longer than this; an endpoint that stops answering fails the page, then the pod.
READ_TIMEOUT_SECONDS = 20.0
STATUS_FORMAT = "ferry.dev/planner-status/v1"


@dataclass(frozen=True)
class PlannerConfig:
    spec: CopyJobSpec
    source: Credentials | None
    destination: Credentials | None
    check_destination: bool
    listing_deadline_seconds: float | None
    max_objects: int | None
    endpoints: EndpointPolicy
    status_address: tuple[str, int]
    termination_path: Path
    hold_seconds: float
    listers: int = DEFAULT_LISTERS
    #: (index, count) when the listing is divided over several planner pods (an Indexed Job).
    part: tuple[int, int] | None = None


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())


def config_from(env: Mapping[str, str]) -> PlannerConfig:
    """The planner's configuration from its environment and mounted spec. Raises InvalidSpec."""
    folder = Path(env.get("FERRY_PLAN_DIR", "/etc/ferry/plan"))
    try:
        raw = json.loads((folder / SPEC_FILE).read_text())
        spec = CopyJobSpec.model_validate(raw, by_alias=True, by_name=False)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise InvalidSpec(f"spec.json is invalid:\n{format_validation_error(exc, CopyJobSpec)}") from exc
        raise InvalidSpec(f"cannot read the spec in {folder}: {type(exc).__name__}") from exc
    try:
        deadline = env.get("FERRY_LISTING_DEADLINE_SECONDS", "").strip()
        max_objects = env.get("FERRY_MAX_OBJECTS_PER_COPYJOB", "").strip()
        hold = env.get("FERRY_PLAN_HOLD_SECONDS", "").strip()
        listers = int(env.get("FERRY_PLAN_LISTERS", "").strip() or DEFAULT_LISTERS)
        if not 1 <= listers <= MAX_LISTERS:
            raise ValueError(f"FERRY_PLAN_LISTERS must be between 1 and {MAX_LISTERS}")
        port = int(env.get("FERRY_STATUS_PORT", STATUS_PORT))
        part = _part(env)
        endpoints = EndpointPolicy.build(
            _names(env, "FERRY_ALLOWED_ENDPOINTS"), _names(env, "FERRY_CLUSTER_CIDRS")
        )
    except ValueError as exc:
        raise InvalidSpec(f"the planner's environment is invalid: {exc}") from exc
    return PlannerConfig(
        spec=spec,
        source=credentials_from_env(env, "SOURCE"),
        destination=credentials_from_env(env, "DESTINATION"),
        check_destination=env.get("FERRY_CHECK_DESTINATION", "true") != "false",
        listing_deadline_seconds=float(deadline) if deadline else None,
        max_objects=int(max_objects) if max_objects else None,
        endpoints=endpoints,
        status_address=(env.get("FERRY_STATUS_HOST") or env.get("FERRY_POD_IP") or "0.0.0.0", port),
        termination_path=Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log")),
        hold_seconds=float(hold) if hold else DEFAULT_HOLD_SECONDS,
        listers=listers,
        part=part,
    )


def _part(env: Mapping[str, str]) -> tuple[int, int] | None:
    """This pod's part of the listing: FERRY_PLAN_PODS pods, JOB_COMPLETION_INDEX (set by the Indexed
    Job) this one's. None for a single planner pod."""
    count = int(env.get("FERRY_PLAN_PODS", "").strip() or 1)
    if not 1 <= count <= MAX_PLANNER_PODS:
        raise ValueError(f"FERRY_PLAN_PODS must be between 1 and {MAX_PLANNER_PODS}")
    if count == 1:
        return None
    index = int(env.get("JOB_COMPLETION_INDEX", "").strip() or -1)
    if not 0 <= index < count:
        raise ValueError(f"JOB_COMPLETION_INDEX must be between 0 and {count - 1} with {count} planner pods")
    return index, count


def _client(config: PlannerConfig, role: str) -> Any:
    spec = config.spec
    location = spec.source if role == "source" else spec.destination
    credentials = config.source if role == "source" else config.destination
    try:
        client = make_client(
            location,
            credentials,
            ClientOptions(max_pool_connections=max(4, config.listers), read_timeout=READ_TIMEOUT_SECONDS),
        )
    except (ValueError, botocore.exceptions.BotoCoreError) as exc:
        raise PlanningStopped(
            "LocationInvalid",
            f"spec.{role}: the S3 client refuses endpoint {location.endpoint!r} or region {location.region!r} "
            f"({type(exc).__name__}); fix spec.{role}.endpoint or spec.{role}.region",
        ) from exc
    return guard_client(client, config.endpoints)


@dataclass(frozen=True)
class Clients:
    """The checked S3 clients: the destination's only when the plan checks it."""

    source: Any
    destination: Any | None


def preflight(config: PlannerConfig) -> Clients:
    """Check every location the plan needs, all of them before reporting, and return their clients."""
    refusal = endpoint_problem(config.spec, config.endpoints)
    if refusal is not None:
        raise PlanningStopped("EndpointNotAllowed", refusal)
    roles = ["source", "destination"] if config.check_destination else ["source"]
    clients = {role: _client(config, role) for role in roles}
    problems: list[PreflightError] = []
    for role in roles:
        location = config.spec.source if role == "source" else config.spec.destination
        try:
            check_location(clients[role], location, f"spec.{role}")
        except PreflightError as exc:
            problems.append(exc)
    if "destination" in clients and not problems:
        try:
            check_destination_lock(clients["destination"], config.spec)
        except PreflightError as exc:
            problems.append(exc)
        try:
            check_destination_versioning(clients["destination"], config.spec)
        except PreflightError as exc:
            problems.append(exc)
    if problems:
        raise PlanningStopped(problems[0].reason, "; ".join(str(p) for p in problems))
    return Clients(clients["source"], clients.get("destination"))


def plan(
    config: PlannerConfig,
    clients: Clients,
    tracker: ListingTracker | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PlanResult:
    """List the source in parallel (or read its manifest), within the platform's limits, and return
    the histogram and pieces.

    A dry run also compares the destination range by range, so that its status says what a copy would
    skip and its cost estimate counts only the rest; a real run leaves that to the workers, which
    compare anyway, rather than list the destination twice."""
    compare = config.spec.dry_run and clients.destination is not None
    found = plan_source(
        config.spec,
        clients.source,
        destination=clients.destination if compare else None,
        listers=config.listers,
        deadline_seconds=config.listing_deadline_seconds,
        max_objects=config.max_objects,
        tracker=tracker,
        clock=clock,
        part=config.part,
    )
    # The destination was checked by the preflight (or not, for a dry run without its credentials).
    return replace(
        found.result,
        destination_checked=config.check_destination,
        existing=found.existing,
        list_requests=found.list_requests,
    )


class PlanServer:
    """`/status` (listing progress) and `/plan` (the result, once there), until closed."""

    def __init__(self, address: tuple[str, int], tracker: ListingTracker) -> None:
        self.result: str | None = None
        self.served = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/status":
                    progress = tracker.snapshot()
                    eta = progress.eta_seconds
                    body = json.dumps(
                        {
                            "format": STATUS_FORMAT,
                            "objects": progress.objects,
                            "bytes": progress.bytes,
                            "listed": progress.listed,
                            "done": server.result is not None,
                            "listers": progress.listers,
                            "requests": progress.requests,
                            "keysPerSecond": round(progress.keys_per_second, 1),
                            "etaSeconds": None if eta is None else round(eta, 1),
                        }
                    ).encode()
                elif self.path == "/plan" and server.result is not None:
                    body = server.result.encode()
                elif self.path == "/healthz":
                    body = b"ok"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if self.path == "/plan":
                    server.served.set()

            def log_message(self, *_args: object) -> None:
                """Polled every few seconds; access logs would say nothing."""

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        threading.Thread(target=self._server.serve_forever, name="ferry-plan", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _fail(path: Path, failure: PlannerFailure, code: int) -> int:
    print(f"error: {failure.message} [{failure.reason}]", file=sys.stderr, flush=True)
    try:
        path.write_text(failure.to_json())
    except OSError as exc:
        print(f"warning: cannot write termination message to {path}: {exc}", file=sys.stderr)
    return code


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    termination = Path(env.get("FERRY_TERMINATION_MESSAGE_PATH", "/dev/termination-log"))
    try:
        config = config_from(env)
    except InvalidSpec as exc:
        return _fail(termination, PlannerFailure("InvalidSpec", str(exc)), EXIT_INVALID)
    stop = threading.Event()
    tracker = ListingTracker()
    server = PlanServer(config.status_address, tracker)

    def on_sigterm(*_: object) -> None:
        stop.set()
        if server.result is None:
            # Still listing: a suspension (or eviction) stops the pod now rather than at the grace
            # period's SIGKILL, with the exit the planner Job ignores (its listing starts again later).
            print("ferry planner: stopped while listing; the listing starts again when resumed", flush=True)
            os._exit(EXIT_STOPPED)

    signal.signal(signal.SIGTERM, on_sigterm)
    spec = config.spec
    print(
        f"ferry planner: listing s3://{spec.source.bucket}/{spec.source.prefix}, status on {server.address}",
        flush=True,
    )
    try:
        started = time.monotonic()
        result = plan(config, preflight(config), tracker)
    except PlanningStopped as exc:
        server.close()
        failure = PlannerFailure(exc.reason, str(exc))
        return _fail(config.termination_path, failure, EXIT_RETRY if exc.retry else EXIT_INVALID)
    server.result = result.to_json()
    h = result.histogram
    print(
        f"ferry planner: {h.objects:,} objects, {h.bytes:,} bytes in {len(result.pieces)} piece(s), listed in "
        f"{format_duration(time.monotonic() - started)}; waiting for the operator",
        flush=True,
    )
    # Until the operator deletes the Job (SIGTERM), or the hold passes; a plan read once is kept
    # available for a while, since the operator may restart before it has stored the plan.
    stop.wait(config.hold_seconds)
    server.close()
    return EXIT_SERVED
