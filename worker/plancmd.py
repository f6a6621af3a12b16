"""`ferry plan -f copyjob.yaml`: plan a CopyJob on this machine, no cluster needed, and say what its copy
would be: objects and bytes with their size histogram, what the destination already holds (skipped),
shards, worker pods and their memory, the predicted duration and the cost estimate.

It checks the locations and resolves credentials exactly as `ferry run` does, lists the source in
parallel as the operator's planner pods do (and the destination, when its credentials are in the file,
to count what would be skipped) with a progress line on stderr, and computes shards, sizing and cost
with the operator's own rules under its default platform settings: what a CopyJob with
`spec.dryRun: true` shows in status.plan. Nothing is copied.

Exit codes:
    0  planned
    1  an unexpected internal error (a bug: please report it with the log)
    2  invalid input: bad file or price table, unknown field, unreachable endpoint, missing bucket,
       denied access
    4  the source listing broke off (a request kept failing); run again
    130 interrupted (Ctrl-C)

With --output json, stdout holds one JSON document whatever the exit code: the plan, or the error
document `ferry run` writes ({"state": "invalid" | "error" | "interrupted", "exitCode", "error", "field",
"reason"}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ferry.errors import FerryError, InvalidSpec
from ferry.model import CopyJob, Overwrite, format_bytes
from ferry.model.loading import parse_documents
from ferry.operator.caps import cut_shards
from ferry.operator.cost import DEFAULT_PRICES, Prices, PricesInvalid, parse_prices
from ferry.operator.planfile import StoredPlan
from ferry.operator.planning import piece_targets
from ferry.operator.planview import plan_cost, plan_lines, plan_view
from ferry.operator.settings import OperatorSettings
from ferry.worker import planprocs
from ferry.worker.display import PLAIN_INTERVAL, format_duration
from ferry.worker.listingdisplay import ListingDisplay
from ferry.worker.planprocs import MAX_PROCESSES, usable_cores
from ferry.worker.run import (
    EXIT_INCOMPLETE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    RunFailed,
    fail,
    first_field,
    load_job,
    preflight,
    resolve_credentials,
)
from ferry.worker.s3 import ClientOptions, make_client
from ferry.worker.scan import DEFAULT_LISTERS, ListingTracker, PlanningStopped, Scan
from ferry.worker.sourceplan import plan_source

#: Listers one `ferry plan` may run (as a planner pod's FERRY_PLAN_LISTERS).
MAX_LISTERS = 256
#: A price table is a few lines; a larger file is a mistake.
MAX_PRICES_BYTES = 64 * 1024


def _count_between(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _part(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count) <= MAX_PROCESSES):
        raise argparse.ArgumentTypeError(f"{text!r} is not a part I/N")
    return int(index), int(count)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--file", required=True, type=Path, help="CopyJob manifest (may also hold Secrets)"
    )
    parser.add_argument(
        "--prices",
        type=Path,
        metavar="PATH",
        help="price table (YAML) for the cost estimate; default: AWS S3 Standard list prices, us-east-1 "
        f"(taken {DEFAULT_PRICES.date.isoformat()})",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="plan format on stdout: text (default) or json (one document for every exit code, errors "
        "included)",
    )
    parser.add_argument(
        "--listers",
        type=_count_between(1, MAX_LISTERS),
        default=DEFAULT_LISTERS,
        metavar="N",
        help=f"ranges of the source listed at once (default {DEFAULT_LISTERS}, at most {MAX_LISTERS})",
    )
    parser.add_argument(
        "--processes",
        type=_count_between(1, MAX_PROCESSES),
        default=None,
        metavar="N",
        help="processes the listing is divided over, as over planner pods (default 1, at most "
        f"{MAX_PROCESSES}; worth it when the cores are not shared with the endpoint: one process lists at "
        f"about one core); a manifest is read by one. cores usable here: {usable_cores()}",
    )
    # A child of a divided listing: list part I of N and print it (planprocs).
    parser.add_argument("--part", type=_part, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="listing progress on stderr: auto (default; live on a terminal, plain otherwise), live, "
        "plain (a line every --progress-interval seconds) or none",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=PLAIN_INTERVAL,
        metavar="SECONDS",
        help=f"with plain progress: seconds between lines (default {PLAIN_INTERVAL:g})",
    )


def load_prices(path: Path) -> Prices:
    """The price table at ``path``; raises `RunFailed` (exit 2) naming the wrong field."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFailed(f"{path}: cannot read the price table: {exc.strerror}", field="--prices") from exc
    if len(data) > MAX_PRICES_BYTES:
        raise RunFailed(
            f"{path}: larger than {MAX_PRICES_BYTES} bytes; a price table is small", field="--prices"
        )
    try:
        documents = parse_documents(data.decode("utf-8"), str(path))
    except (InvalidSpec, UnicodeDecodeError) as exc:
        raise RunFailed(str(exc), field="--prices") from exc
    if len(documents) != 1:
        raise RunFailed(
            f"{path}: expected one price table, found {len(documents)} documents", field="--prices"
        )
    try:
        return parse_prices(documents[0], str(path))
    except PricesInvalid as exc:
        problem = str(exc).removeprefix(f"{path}: ").split(":", 1)[0]
        raise RunFailed(
            str(exc), field=f"prices.{problem}", stderr=f"error: invalid price table:\n{exc}"
        ) from exc


def main(args: argparse.Namespace) -> int:
    job: CopyJob | None = None
    try:
        prices = load_prices(args.prices) if args.prices else DEFAULT_PRICES
        job_file = load_job(args.file)
        job = job_file.copyjob
        done = _list(args, job, job_file.secrets)
    except RunFailed as exc:
        return fail(args, exc, job.metadata.name if job else None)
    if args.part is not None:
        # A child of a divided listing: its part, for the parent to join (planprocs).
        print(replace(done.result, existing=done.existing, list_requests=done.list_requests).to_json())
        return EXIT_OK
    _report(args, job, done, prices)
    return EXIT_OK


def _list(args: argparse.Namespace, job: CopyJob, secrets: Any) -> Scan:
    """Resolve credentials, check both locations, and list the source (and the destination, when its
    credentials are in the file) with progress on stderr."""
    spec = job.spec
    creds = resolve_credentials(args.file, {"spec.source": spec.source}, secrets)
    compare = spec.overwrite is not Overwrite.ALWAYS
    try:
        creds.update(resolve_credentials(args.file, {"spec.destination": spec.destination}, secrets))
    except RunFailed as exc:
        # A plan needs only the source; without the destination nothing is known to be skipped.
        print(f"warning: {exc}; the destination is not checked or compared", file=sys.stderr)
    options = ClientOptions(max_pool_connections=args.listers + 8)
    source = make_client(spec.source, creds["spec.source"], options)
    preflight(source, spec.source, "spec.source", creds["spec.source"])
    destination = None
    if "spec.destination" in creds:
        destination = make_client(spec.destination, creds["spec.destination"], options)
        preflight(destination, spec.destination, "spec.destination", creds["spec.destination"])
    processes = args.processes or 1
    if args.part is None and processes > 1 and spec.source.manifest is None:
        return _list_divided(
            args, processes, piece_targets(spec.shard_size.max_objects, spec.shard_size.max_bytes)
        )
    tracker = ListingTracker()
    with contextlib.ExitStack() as stack:
        if args.part is not None:
            stack.enter_context(_ProgressLines(tracker))
        if args.progress != "none":
            live = {"auto": None, "live": True, "plain": False}[args.progress]
            stack.enter_context(
                ListingDisplay(tracker.snapshot, live=live, plain_interval=args.progress_interval)
            )
        try:
            return plan_source(
                spec,
                source,
                destination=destination if compare else None,
                listers=args.listers,
                tracker=tracker,
                part=args.part,
            )
        except PlanningStopped as exc:
            raise RunFailed(
                str(exc),
                EXIT_INCOMPLETE if exc.retry else EXIT_INVALID,
                reason=exc.reason,
                stderr=f"error: {exc} [{exc.reason}]",
            ) from exc


def _list_divided(args: argparse.Namespace, processes: int, targets: tuple[int, int]) -> Scan:
    """The listing divided over ``processes`` children of this command (`planprocs`), after the
    locations passed their check here once."""
    started = time.monotonic()
    children, progress = planprocs.start(args.file, processes, -(-args.listers // processes))
    with contextlib.ExitStack() as stack:
        if args.progress != "none":
            live = {"auto": None, "live": True, "plain": False}[args.progress]
            stack.enter_context(
                ListingDisplay(progress.snapshot, live=live, plain_interval=args.progress_interval)
            )
        return planprocs.finish(children, started, targets)


class _ProgressLines:
    """A child's progress on stderr for its parent, every half second and once at the end."""

    def __init__(self, tracker: ListingTracker) -> None:
        self._tracker = tracker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-part-progress", daemon=True)

    def __enter__(self) -> _ProgressLines:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            print(planprocs.progress_line(self._tracker.snapshot()), file=sys.stderr, flush=True)
        print(planprocs.progress_line(self._tracker.snapshot()), file=sys.stderr, flush=True)


def _report(args: argparse.Namespace, job: CopyJob, done: Scan, prices: Prices) -> None:
    """The plan on stdout, computed as the operator computes a dry run's (default platform settings)."""
    spec, result = job.spec, done.result
    shards, sizing = cut_shards(
        result.histogram, list(result.pieces), spec, OperatorSettings(), result.listed_at
    )
    plan = StoredPlan(result.histogram, tuple(shards), result.listed_at)
    cost = plan_cost(plan, spec, prices, existing=done.existing, list_requests=done.list_requests)
    existing = done.existing if spec.overwrite is not Overwrite.ALWAYS else None
    if args.output == "json":
        document = {
            "name": job.metadata.name,
            "state": "planned",
            "exitCode": EXIT_OK,
            "plan": plan_view(plan, sizing, cost),
            "reason": sizing.reason,
            "existing": {"objects": existing[0], "bytes": existing[1]} if existing is not None else None,
            "listing": {
                "seconds": round(done.seconds, 3),
                "listers": args.listers,
                "requests": done.list_requests,
                "keysPerSecond": round(result.histogram.objects / done.seconds, 1)
                if done.seconds > 0
                else None,
            },
            "shardRanges": [s.as_json() for s in shards],
        }
        print(json.dumps(document, indent=2))
        return
    for line in plan_lines(job.metadata.name, plan, sizing, cost, existing=existing):
        print(line)
    h = result.histogram
    print(
        f"listed {h.objects:,} objects ({format_bytes(h.bytes)}) in {format_duration(done.seconds)} "
        f"with {args.listers} listers and {done.list_requests:,} LIST requests"
    )


def plan_cli(args: argparse.Namespace) -> int:
    try:
        return main(args)
    except FerryError as exc:
        return fail(args, RunFailed(str(exc), field=first_field(str(exc))), None)
    except KeyboardInterrupt:
        return fail(args, RunFailed("interrupted while listing; nothing was planned", EXIT_INTERRUPTED), None)
    except Exception as exc:  # a bug: the traceback goes to stderr, scripts still get a document
        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc} (a bug: please report it with the log)"
        return fail(args, RunFailed(message, EXIT_INTERNAL), None)
