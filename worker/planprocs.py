"""`ferry plan` on every core: the listing divided over local processes as over planner pods.

Where it sits: `plancmd` calls `list_in_processes` when `--processes` is above 1 and the source is listed
(a manifest is read by one process). One Python process lists at about one core; this starts N copies of
`ferry plan --part I/N` (each discovers the prefix tree, cuts it where the others do and lists its part:
`keyspace.part_cuts`, as the pods of an Indexed planner Job do), shows their combined progress, and joins
their parts with the operator's own check (`planresult.merge_parts`): parts that do not divide the key
space one way (the bucket changed as they started) end the plan with exit 4, to be run again.

A child prints its part (a plan-result document) on stdout and its progress on stderr, one JSON line
every half second, prefixed by `PROGRESS_TAG`; its other stderr lines are kept for the error message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ferry.operator.planning import MAX_PIECES
from ferry.operator.planresult import PlanResultInvalid, merge_parts, parse_plan_result
from ferry.worker.run import EXIT_INCOMPLETE, RunFailed
from ferry.worker.scan import ListingProgress, Scan

PROGRESS_TAG = "ferry-part-progress "
#: Most processes `ferry plan` starts (the operator's planner pods are bounded alike).
MAX_PROCESSES = 16
#: What a child's stderr may hold beyond its progress lines: enough for an error and a traceback.
MAX_STDERR_LINES = 200


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[str]
    progress: ListingProgress
    lines: list[str]


class DividedProgress:
    """The children's progress added up, for `ListingDisplay` (its `snapshot`)."""

    def __init__(self, children: Sequence[_Child]) -> None:
        self._children = children
        self._lock = threading.Lock()

    def update(self, child: _Child, progress: ListingProgress) -> None:
        with self._lock:
            child.progress = progress

    def snapshot(self) -> ListingProgress:
        with self._lock:
            parts = [c.progress for c in self._children]
        etas = [p.eta_seconds for p in parts]
        return ListingProgress(
            listed=sum(p.listed for p in parts),
            objects=sum(p.objects for p in parts),
            bytes=sum(p.bytes for p in parts),
            listers=sum(p.listers for p in parts),
            ranges_done=sum(p.ranges_done for p in parts),
            ranges_total=sum(p.ranges_total for p in parts),
            requests=sum(p.requests for p in parts),
            keys_per_second=sum(p.keys_per_second for p in parts),
            # The listing ends with its slowest part; unknown while any part's is.
            eta_seconds=None if any(e is None for e in etas) else max(e for e in etas if e is not None),
        )


def progress_line(progress: ListingProgress) -> str:
    """What a child prints on stderr for its parent."""
    return PROGRESS_TAG + json.dumps(progress.__dict__)


def _read_progress(text: str) -> ListingProgress | None:
    try:
        raw = json.loads(text)
        return ListingProgress(**{k: raw[k] for k in ListingProgress.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        return None


def _follow(child: _Child, stream: IO[str], progress: DividedProgress) -> None:
    for line in stream:
        if line.startswith(PROGRESS_TAG):
            parsed = _read_progress(line[len(PROGRESS_TAG) :])
            if parsed is not None:
                progress.update(child, parsed)
        elif len(child.lines) < MAX_STDERR_LINES:
            child.lines.append(line.rstrip("\n"))


def start(file: Path, count: int, listers: int) -> tuple[list[_Child], DividedProgress]:
    """Start ``count`` children, each listing its part with ``listers`` listers."""
    children: list[_Child] = []
    for index in range(count):
        argv = [sys.executable, "-m", "ferry.cli", "plan", "-f", str(file), "--output", "json"]
        argv += ["--part", f"{index}/{count}", "--listers", str(listers), "--progress", "none"]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
        )
        children.append(_Child(index, process, ListingProgress(), []))
    progress = DividedProgress(children)
    for child in children:
        assert child.process.stderr is not None
        threading.Thread(
            target=_follow,
            args=(child, child.process.stderr, progress),
            name=f"ferry-part-{child.index}",
            daemon=True,
        ).start()
    return children, progress


def finish(children: Sequence[_Child], started: float, targets: tuple[int, int] = (1000, 2**30)) -> Scan:
    """Wait for every child and join their parts (a small job's keys cut at the piece sizes
    ``targets``, `planning.piece_targets`); raises `RunFailed` with the first failure's exit code and
    words (the others are stopped at once)."""
    outputs: dict[int, list[str]] = {c.index: [] for c in children}
    readers = []
    for child in children:
        assert child.process.stdout is not None
        reader = threading.Thread(
            target=_drain, args=(child.process.stdout, outputs[child.index]), daemon=True
        )
        reader.start()
        readers.append(reader)
    try:
        pending = list(children)
        while pending:  # every child ends: it lists within its own deadline, or fails
            for child in list(pending):
                code = child.process.poll()
                if code is None:
                    continue
                pending.remove(child)
                if code != 0:
                    readers[child.index].join(5)
                    raise _failure(child, "".join(outputs[child.index]), len(children))
            time.sleep(0.05)
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.terminate()
                child.process.wait(10)
    for reader in readers:
        reader.join(10)
    try:
        merged = merge_parts(
            [parse_plan_result("".join(outputs[c.index])) for c in children], MAX_PIECES, targets
        )
    except PlanResultInvalid as exc:
        raise RunFailed(
            f"the processes that listed the source divided it differently ({exc}): the bucket changed as "
            "they started; run again",
            EXIT_INCOMPLETE,
            reason="ListingFailed",
        ) from exc
    return Scan(merged, merged.list_requests or 0, merged.existing, time.monotonic() - started)


def _drain(stream: IO[str], into: list[str]) -> None:
    for chunk in iter(lambda: stream.read(65536), ""):
        into.append(chunk)


def _failure(child: _Child, stdout: str, count: int) -> RunFailed:
    code = child.process.returncode
    try:
        document: Any = json.loads(stdout)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return RunFailed(
            str(document["error"]),
            code if code > 0 else EXIT_INCOMPLETE,
            field=document.get("field") if isinstance(document.get("field"), str) else None,
            reason=document.get("reason") if isinstance(document.get("reason"), str) else None,
        )
    said = "\n".join(child.lines[-20:]) or f"exit code {code}"
    return RunFailed(
        f"the process listing part {child.index + 1} of {count} ended without a plan: {said}",
        code if code > 0 else EXIT_INCOMPLETE,
    )
