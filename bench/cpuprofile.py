"""Attribute sampled CPU of a `ferry run` to operations and layers (bench/smallcopy.py feeds it). Pure.

Input: py-spy's raw (collapsed) output, one line per distinct stack: ``thread (tid): name;frame;...;frame
count`` with frames written ``Qualified.name (path/file.py:line)``, root first.

py-spy's own idle detection counts a thread blocked in ``recv`` or on a lock as busy on this machine,
so the idle samples are recognised here by their innermost frame instead: a thread whose innermost Python
frame is a blocking call (socket read, poll, a lock or condition, a queue's get, an executor worker
waiting for work, sleep) is waiting, not computing, and one whose innermost frame is a socket send is in
the kernel (system CPU, which the caller measures as a whole). What remains is the user CPU of Python
code and the C code it calls; `attribute` splits it two ways:

- **operation**: which request or stage the CPU was spent for (listing, GET, PUT, CopyObject, HEAD,
  verification, accounting, the display, start-up...), from the Ferry frames on the stack;
- **layer**: which code spent it (botocore's request building, signing or parsing, urllib3 and
  http.client, Ferry's lean transport, checksums, the retry wrapper, thread hand-offs...), from the
  innermost frame that belongs to a known library or Ferry module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Frame:
    name: str
    file: str


@dataclass(frozen=True)
class Sample:
    thread: str
    frames: tuple[Frame, ...]
    count: int


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "")
    return Frame(match["name"], match["file"])


def parse_collapsed(text: str) -> list[Sample]:
    """py-spy's raw lines as samples; lines that are not ``stack count`` are skipped."""
    samples: list[Sample] = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        samples.append(Sample(thread, tuple(parse_frame(f) for f in frames), int(count)))
    return samples


#: Innermost frames at which a thread waits rather than computes: (file suffix, function name).
_WAITS = (
    ("socket.py", "SocketIO.readinto"),
    ("worker/leanhttp.py", "_recv"),
    ("threading.py", "Condition.wait"),
    ("threading.py", "Condition.__enter__"),
    ("threading.py", "Event.wait"),
    ("threading.py", "Thread.join"),
    ("threading.py", "Thread._wait_for_tstate_lock"),
    ("queue.py", "Queue.get"),
    ("queue.py", "Queue.put"),
    ("concurrent/futures/thread.py", "_worker"),
    ("concurrent/futures/_base.py", "Future.result"),
    ("urllib3/util/wait.py", "poll_wait_for_socket.<locals>.do_poll"),
    ("selectors.py", "EpollSelector.select"),
    ("worker/ratelimit.py", "TokenBucket._sleep"),
    # In the kernel's send: system CPU, not Python's.
    ("worker/leanhttp.py", "_send"),
    ("http/client.py", "HTTPConnection.send"),
)
_WAIT_NAMES = frozenset({"sleep", "time.sleep"})


def is_waiting(sample: Sample) -> bool:
    if not sample.frames:
        return True  # no Python stack: a thread starting or ending, or the interpreter's own
    leaf = sample.frames[-1]
    if leaf.name in _WAIT_NAMES:
        return True
    # A lock taken with `with lock:` shows as the line of the `with` in the caller; a blocking acquire
    # in Ferry's own limiter waits the same way.
    return any(leaf.file.endswith(suffix) and leaf.name == name for suffix, name in _WAITS)


#: The operation of the process's start and end (imports, clients, preflight, the summary).
START_UP = "start-up and summary"

#: Operations, first match wins, searched from the innermost Ferry frame outwards: (function name
#: fragment, file suffix, operation).
_OPERATIONS = (
    ("_stream_single.<locals>.fetch", "worker/copier.py", "GET"),
    ("_read_range_into", "worker/copier.py", "GET"),
    ("_stream_single.<locals>.put", "worker/copier.py", "PUT"),
    ("_upload_part", "worker/copier.py", "PUT"),
    ("_server_side_copy.<locals>.copy", "worker/copier.py", "CopyObject"),
    ("_copy_part", "worker/copier.py", "CopyObject"),
    ("head_object", "", "HEAD"),
    ("_head", "worker/engine.py", "HEAD"),
    ("_tagging", "worker/copier.py", "GetObjectTagging"),
    ("_verify_single", "worker/copier.py", "verification"),
    ("_check_put", "worker/copier.py", "verification"),
    ("_destination_args", "worker/copier.py", "request arguments"),
    ("_count_request", "worker/engine.py", "accounting"),
    ("_count_error", "worker/engine.py", "accounting"),
    ("_call", "worker/copier.py", "retry wrapper"),
    ("_transfer", "worker/engine.py", "accounting"),
    ("_handle", "worker/engine.py", "accounting"),
    ("prefetch", "worker/listing.py", "listing"),
    ("merge_join", "worker/listing.py", "listing"),
    ("_counted", "worker/engine.py", "listing"),
    ("_list", "worker/engine.py", "listing"),
    ("list_pages", "worker/s3.py", "listing"),
    ("", "worker/leanlist.py", "listing"),
    ("", "worker/display.py", "display"),
    ("", "worker/timeline.py", "timeline"),
    ("progress", "worker/engine.py", "timeline"),
    ("", "worker/adaptive.py", "adaptive limiter"),
    ("", "worker/limits.py", "adaptive limiter"),
    ("CopyEngine.run", "worker/engine.py", "engine loop"),
    ("_run", "worker/run.py", START_UP),
    ("", "ferry/cli.py", START_UP),
)

#: Layers, first match wins, searched from the innermost frame outwards: (file fragment, function name
#: fragment, layer). Frames of the standard library that only serve their caller (dataclasses, email
#: header parsing, regular expressions, random) match nothing and so count for the code that called them.
_LAYERS = (
    ("botocore/auth.py", "", "botocore: signing"),
    ("botocore/parsers.py", "", "botocore: parsing"),
    ("botocore/serialize.py", "", "botocore: request building"),
    ("botocore/validate.py", "", "botocore: request building"),
    ("botocore/endpoint_provider.py", "", "botocore: endpoint rules"),
    ("botocore/regions.py", "", "botocore: endpoint rules"),
    ("botocore/handlers.py", "", "botocore: event handlers"),
    ("botocore/hooks.py", "", "botocore: event handlers"),
    ("botocore/httpsession.py", "", "urllib3 + http.client"),
    ("botocore/awsrequest.py", "", "urllib3 + http.client"),
    ("botocore/", "", "botocore: other"),
    ("boto3/", "", "botocore: other"),
    ("urllib3/", "", "urllib3 + http.client"),
    ("http/client.py", "", "urllib3 + http.client"),
    ("socket.py", "", "urllib3 + http.client"),
    ("awscrt/", "", "checksums"),
    ("worker/checksums.py", "", "checksums"),
    ("worker/leanhttp.py", "", "lean transport: HTTP"),
    ("worker/leans3.py", "_sign", "lean transport: signing"),
    ("worker/leans3.py", "", "lean transport: headers"),
    ("worker/leanlist.py", "", "lean listing"),
    ("worker/retry.py", "", "retry wrapper"),
    ("worker/ratelimit.py", "", "accounting"),
    ("worker/progress.py", "", "accounting"),
    ("worker/settled.py", "", "accounting"),
    ("worker/systematic.py", "", "accounting"),
    ("worker/adaptive.py", "", "accounting"),
    ("worker/limits.py", "", "accounting"),
    ("worker/engine.py", "", "accounting"),
    ("worker/display.py", "", "display"),
    ("worker/timeline.py", "", "display"),
    ("worker/copier.py", "", "copier"),
    ("worker/", "", "ferry: other"),
    ("ferry/", "", "ferry: other"),
    ("<frozen importlib", "", "imports"),
    ("concurrent/futures/", "", "thread hand-offs"),
    ("threading.py", "", "thread hand-offs"),
    ("queue.py", "", "thread hand-offs"),
)


def _is_import(sample: Sample) -> bool:
    return any(f.file.startswith("<frozen importlib") for f in sample.frames)


def operation_of(sample: Sample) -> str:
    if _is_import(sample):
        return START_UP
    for frame in reversed(sample.frames):
        for name, suffix, operation in _OPERATIONS:
            if name in frame.name and frame.file.endswith(suffix) and (name or suffix):
                return operation
    return "other"


def layer_of(sample: Sample) -> str:
    if _is_import(sample):
        return "imports"
    for frame in reversed(sample.frames):
        for fragment, name, layer in _LAYERS:
            if fragment in frame.file and name in frame.name:
                return layer
    return "other"


@dataclass(frozen=True)
class Attribution:
    """Busy samples by operation, by layer, and by both; ``waiting`` samples, and those ``left_out`` by
    operation, are in none of the three."""

    total: int
    waiting: int
    left_out: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    by_layer: dict[str, int] = field(default_factory=dict)
    by_both: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def busy(self) -> int:
        return self.total - self.waiting - self.left_out

    def as_json(self) -> dict[str, Any]:
        return {
            "samplesTotal": self.total,
            "samplesWaiting": self.waiting,
            "samplesLeftOut": self.left_out,
            "byOperation": self.by_operation,
            "byLayer": self.by_layer,
            "byOperationAndLayer": [[op, layer, n] for (op, layer), n in sorted(self.by_both.items())],
        }


def attribute(samples: Iterable[Sample], leave_out: frozenset[str] = frozenset()) -> Attribution:
    """Count busy samples by operation and layer, leaving out waits and the operations in ``leave_out``."""
    total = waiting = left_out = 0
    by_operation: dict[str, int] = {}
    by_layer: dict[str, int] = {}
    by_both: dict[tuple[str, str], int] = {}
    for sample in samples:
        total += sample.count
        if is_waiting(sample):
            waiting += sample.count
            continue
        op, layer = operation_of(sample), layer_of(sample)
        if op in leave_out:
            left_out += sample.count
            continue
        by_operation[op] = by_operation.get(op, 0) + sample.count
        by_layer[layer] = by_layer.get(layer, 0) + sample.count
        by_both[(op, layer)] = by_both.get((op, layer), 0) + sample.count
    return Attribution(total, waiting, left_out, by_operation, by_layer, by_both)


def split(counts: dict[str, int], busy: int, user_ms: float) -> list[tuple[str, float, float]]:
    """(name, share of the busy samples, ms of user CPU per object), largest first."""
    rows = []
    for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        share = n / busy if busy else 0.0
        rows.append((name, share, user_ms * share))
    return rows


def markdown(table: Attribution, user_ms: float, system_ms: float) -> str:
    """Two tables (by operation, by layer): user CPU per object in the shares of the busy samples, and
    the system CPU per object as a row of its own."""
    lines = [
        f"busy samples: {table.busy} of {table.total} ({table.left_out} left out); "
        f"user {user_ms:.3f} ms + system {system_ms:.3f} ms per object"
    ]
    for title, counts in (("operation", table.by_operation), ("layer", table.by_layer)):
        lines += ["", f"| {title} | share of user CPU | ms per object |", "|---|---:|---:|"]
        lines += [
            f"| {name} | {100 * share:.1f}% | {ms:.3f} |"
            for name, share, ms in split(counts, table.busy, user_ms)
        ]
        lines.append(f"| kernel (system calls: sockets, poll, futex) | | {system_ms:.3f} |")
    return "\n".join(lines)
