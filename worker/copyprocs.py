"""Copy processes: a worker given N CPUs runs its transfers in N processes, so the copy is not bound by
one interpreter's lock, under the one memory budget and the one adaptive manager of the worker.

Where it sits: the engine (engine.py) lists, decides, takes each transfer's permit from its limiter and
does all the accounting in the worker's own process, exactly as with one process. Only `Copier.copy`
crosses: a transfer thread of the engine hands the object to the copy process with the fewest transfers
in flight and waits for its answer. A copy process builds its own S3 clients and a `Copier` from the
same inputs and runs each transfer on a thread of its own. What the engine counts comes back: a failed
request and its error as they happen (throttles reach the limiter and the prefix pacer while the
transfer still runs), successful requests with the transfer's result. The memory the budget compares is
the anonymous RSS of the whole process tree (`ProcessTree.rss`), measured before the first transfer
like a single process's baseline.

The copy processes are started with "spawn" (the worker has threads; forking it could copy a held
lock), ignore SIGINT and SIGTERM (the worker decides when to stop: in-flight transfers finish, then it
closes their pipes) and exit when their pipe closes, so none outlives its worker. A copy process that
dies (killed, crashed) is started again, a bounded number of times; its transfers in flight are handed
to another one: a copy of an object is idempotent.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ferry.model import Location
from ferry.worker.budget import anonymous_rss, peak_rss
from ferry.worker.copier import Copier, CopyOptions, CopyResult
from ferry.worker.evidence import Checksum
from ferry.worker.objects import ObjectInfo
from ferry.worker.progress import OK_CODE, Operation
from ferry.worker.ratelimit import TokenBucket
from ferry.worker.retry import Classified, Kind, RetriesExhausted, classify
from ferry.worker.s3 import ClientOptions, Credentials

log = logging.getLogger(__name__)

#: The most copy processes a worker runs, whatever its CPUs: past this the worker's own process (listing,
#: decisions, accounting) is the bound.
MAX_PROCESSES = 16
#: What one copy process adds to the budget's baseline: an interpreter with botocore's S3 model and two
#: pairs of clients. Measured 49.6-49.8 MiB of anonymous RSS per copy process in the middle of a copy of
#: 10 KB objects (the parent: 56.6 MiB); rounded up.
PROCESS_BASELINE_BYTES = 52 * 2**20
#: Copy processes may take at most this share of the memory budget, so transfers keep the rest.
PROCESS_SHARE_OF_BUDGET = 0.5
#: How long a copy process may take to start (import, make its clients) before the worker gives up on it.
START_SECONDS = 60.0
#: Restarts of copy processes that died, per process, before the worker stops replacing them.
RESTARTS_PER_PROCESS = 3
#: The code of a transfer that no copy process could finish because they all died.
PROCESS_LOST = "CopyProcessLost"


class CopyProcessesFailed(Exception):
    """The copy processes could not be started (the worker then copies in its own process)."""


def copy_processes_for(requested: int, budget_bytes: int | None) -> int:
    """How many copy processes to run for ``requested`` CPUs under a budget: 0 means copy in the
    worker's own process. One CPU gains nothing from a second process; each copy process costs
    `PROCESS_BASELINE_BYTES`, and together they take at most `PROCESS_SHARE_OF_BUDGET` of the budget."""
    wanted = min(max(0, requested), MAX_PROCESSES)
    if wanted < 2:
        return 0
    if budget_bytes is not None:
        wanted = min(wanted, int(budget_bytes * PROCESS_SHARE_OF_BUDGET) // PROCESS_BASELINE_BYTES)
    return wanted if wanted >= 2 else 0


def cpus_from_cgroup(cpu_max: str | None, quota_us: str | None, period_us: str | None) -> float | None:
    """The CPUs a cgroup's quota allows: cgroup v2's cpu.max ("200000 100000" or "max 100000"), else
    v1's cfs_quota_us and cfs_period_us (-1: none). None without a quota."""
    try:
        if cpu_max is not None:
            fields = cpu_max.split()
            if len(fields) == 2 and fields[0] != "max":
                quota, period = int(fields[0]), int(fields[1])
                return quota / period if quota > 0 and period > 0 else None
            return None
        if quota_us is not None and period_us is not None:
            quota, period = int(quota_us.strip()), int(period_us.strip())
            return quota / period if quota > 0 and period > 0 else None
    except ValueError:
        return None
    return None


def available_cpus() -> int:
    """Whole CPUs this process may use: its cgroup's quota when there is one (a pod's CPU limit),
    else the CPUs it may be scheduled on; at least 1."""

    def read(path: str) -> str | None:
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read()
        except OSError:
            return None

    quota = cpus_from_cgroup(
        read("/sys/fs/cgroup/cpu.max"),
        read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    scheduled = len(os.sched_getaffinity(0))
    return max(1, min(scheduled, int(quota)) if quota is not None else scheduled)


def parse_processes(text: str) -> int:
    """``--processes``/FERRY_PROCESSES: a count of CPUs to copy with (1-16), or "auto" for the CPUs
    available. Raises ValueError with what is accepted."""
    value = text.strip().lower()
    if value == "auto":
        return min(available_cpus(), MAX_PROCESSES)
    if value.isdigit() and 1 <= int(value) <= MAX_PROCESSES:
        return int(value)
    raise ValueError(f"processes must be a whole number from 1 to {MAX_PROCESSES} or auto, not {text[:32]!r}")


class ProcessTree:
    """The anonymous resident memory of the worker and its copy processes, which the budget compares
    (a pod's memory limit holds them all)."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        #: The peak resident sets (VmHWM) of copy processes that ended, read as they were ended.
        self._ended_peaks = 0

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def remove(self, pid: int) -> None:
        peak = peak_rss(pid) or 0
        with self._lock:
            if pid in self._pids:
                self._pids.discard(pid)
                self._ended_peaks += peak

    def peak_of_copy_processes(self) -> int:
        """The copy processes' peak resident sets, summed (an upper bound of their peak together)."""
        with self._lock:
            pids = list(self._pids)
            ended = self._ended_peaks
        return ended + sum(peak_rss(pid) or 0 for pid in pids)

    def rss(self) -> int:
        with self._lock:
            pids = list(self._pids)
        return anonymous_rss() + sum(anonymous_rss(pid) for pid in pids)


@dataclass(frozen=True)
class CopierSetup:
    """What a copy process needs to make its clients (credentials travel in the process's start-up
    pipe, never in its arguments or environment)."""

    source: Location
    destination: Location
    source_credentials: Credentials | None
    destination_credentials: Credentials | None
    client_options: ClientOptions
    lean: bool
    #: Transfers one copy process may run at once (its thread pool): the limiter's ceiling.
    threads: int


# -- the wire ----------------------------------------------------------------------------------------------
# Plain pickle over bytes (multiprocessing's own pickler costs more per message), objects as tuples (a
# frozen dataclass unpickles field by field): about 0.1 ms less CPU per object across the two processes.


def _put(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _get(conn: Connection) -> tuple[Any, ...]:
    message: tuple[Any, ...] = pickle.loads(conn.recv_bytes())
    return message


def _object_fields(obj: ObjectInfo) -> tuple[Any, ...]:
    return (obj.key, obj.size, obj.etag, obj.last_modified, obj.version_id, obj.storage_class)


def _result_fields(result: CopyResult) -> tuple[Any, ...]:
    checksum = result.checksum
    fields = None if checksum is None else (checksum.algorithm, checksum.source, checksum.destination)
    return (result.throttles, fields)


def _result(fields: tuple[Any, ...]) -> CopyResult:
    throttles, checksum = fields
    return CopyResult(throttles, None if checksum is None else Checksum(*checksum))


class _Transfers:
    """A copy process's transfer threads: started as transfers arrive, at most ``limit``, fed from one
    queue (cheaper per transfer than an executor's futures)."""

    def __init__(self, limit: int, run: Callable[[int, ObjectInfo, str], None]) -> None:
        self._limit = max(1, limit)
        self._run = run
        self._queue: queue.SimpleQueue[tuple[int, ObjectInfo, str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy = 0

    def submit(self, call: int, obj: ObjectInfo, key: str) -> None:
        with self._lock:
            self._busy += 1
            start = self._busy > len(self._threads) and len(self._threads) < self._limit
            if start:
                thread = threading.Thread(target=self._serve, name="ferry-copy", daemon=True)
                self._threads.append(thread)
        if start:
            thread.start()
        self._queue.put((call, obj, key))

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._run(*item)
            finally:
                with self._lock:
                    self._busy -= 1

    def close(self) -> None:
        """Let the transfers queued finish, then end the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


# -- the copy process --------------------------------------------------------------------------------------


def serve(conn: Connection, setup: CopierSetup) -> None:
    """A copy process's main: make the clients, then copy what the worker sends until its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ferry.worker.leans3 import make_lean
    from ferry.worker.s3 import make_client

    sources = (setup.source, setup.source_credentials)
    destinations = (setup.destination, setup.destination_credentials)
    source_client = make_client(*sources, setup.client_options)
    destination_client = make_client(*destinations, setup.client_options)
    source_lean = make_lean(*sources, setup.client_options) if setup.lean else None
    destination_lean = make_lean(*destinations, setup.client_options) if setup.lean else None
    sending = threading.Lock()
    local = threading.local()
    requests, bandwidth = TokenBucket(0), TokenBucket(0)

    def send(message: tuple[Any, ...]) -> None:
        with sending:
            _put(conn, message)

    def on_request(operation: Operation, code: str) -> None:
        if code == OK_CODE:
            local.answered.append(operation.value)
        else:
            send(("request", local.call, operation.value, code))

    def on_error(error: Classified) -> None:
        send(("error", local.call, error.kind.value, error.code, error.message))

    copier: Copier | None = None

    def transfer(call: int, obj: ObjectInfo, key: str) -> None:
        local.call, local.answered = call, []
        try:
            assert copier is not None, "a transfer before the copier was configured"
            result = copier.copy(obj, key)
            reply: tuple[Any, ...] = ("done", call, local.answered, _result_fields(result))
        except RetriesExhausted as exc:
            last = exc.last
            reply = (
                "exhausted",
                call,
                local.answered,
                last.kind.value,
                last.code,
                last.message,
                exc.attempts,
                exc.operation,
            )
        except Exception as exc:  # answered, never lost: the engine fails the object as it would in-process
            classified = classify(exc)
            log.exception("unexpected error copying %r", obj.key)
            reply = (
                "unexpected",
                call,
                local.answered,
                classified.kind.value,
                classified.code,
                classified.message,
            )
        send(reply)

    send(("ready", os.getpid()))
    transfers = _Transfers(setup.threads, transfer)
    try:
        while True:
            try:
                message = _get(conn)
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "copy":
                transfers.submit(message[1], ObjectInfo(*message[2]), message[3])
            elif kind == "configure":
                options, requests_rate, bytes_rate = message[1], message[2], message[3]
                requests.set_rate(requests_rate)
                bandwidth.set_rate(bytes_rate)
                copier = Copier(
                    source_client=source_client,
                    destination_client=destination_client,
                    source_bucket=setup.source.bucket,
                    destination_bucket=setup.destination.bucket,
                    options=options,
                    on_request=on_request,
                    on_error=on_error,
                    source_lean=source_lean,
                    destination_lean=destination_lean,
                    requests=requests,
                    bandwidth=bandwidth,
                )
            elif kind == "rates":
                requests.set_rate(message[1])
                bandwidth.set_rate(message[2])
            elif kind == "stop":
                break
    finally:
        transfers.close()


# -- the worker's side -------------------------------------------------------------------------------------


@dataclass
class _Child:
    process: Any
    conn: Connection
    in_flight: int = 0
    alive: bool = True
    restarts: int = 0
    calls: set[int] = field(default_factory=set)
    #: Transfers it answered.
    answered: int = 0
    #: Messages to it are sent whole, one at a time, from many transfer threads.
    sending: threading.Lock = field(default_factory=threading.Lock)


class CopyProcesses:
    """The worker's copy processes. `copy` is called from the engine's transfer threads, many at once."""

    def __init__(
        self,
        setup: CopierSetup,
        count: int,
        tree: ProcessTree,
    ) -> None:
        self._setup = setup
        self._tree = tree
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._calls = itertools.count()
        self._waiting: dict[int, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self._configured: tuple[Any, ...] | None = None
        self._rates: tuple[Any, ...] | None = None
        self._closed = False
        self._children: list[_Child] = []
        started: list[_Child] = []
        try:
            for _ in range(count):
                started.append(self._start())
            for child in started:
                self._await_ready(child)
        except CopyProcessesFailed:
            for child in started:
                self._end(child)
            raise
        self._children = started
        for index in range(len(self._children)):
            threading.Thread(
                target=self._read, args=(index,), name=f"ferry-copy-reader-{index}", daemon=True
            ).start()

    @property
    def count(self) -> int:
        return len(self._children)

    def answered(self) -> list[int]:
        """Transfers each copy process answered (a replaced one's count starts again)."""
        with self._lock:
            return [child.answered for child in self._children]

    def configure(self, options: CopyOptions, requests_per_second: float, bytes_per_second: float) -> None:
        """The copy options and this worker's rate limits, split evenly over the copy processes."""
        share = max(1, self.count)
        message = ("configure", options, requests_per_second / share, bytes_per_second / share)
        with self._lock:
            self._configured = message
            self._rates = None
            children = [c for c in self._children if c.alive]
        for child in children:
            self._send(child, message)

    def set_rates(self, requests_per_second: float, bytes_per_second: float) -> None:
        share = max(1, self.count)
        message = ("rates", requests_per_second / share, bytes_per_second / share)
        with self._lock:
            self._rates = message
            children = [c for c in self._children if c.alive]
        for child in children:
            self._send(child, message)

    def copy(
        self,
        obj: ObjectInfo,
        key: str,
        on_request: Callable[[Operation, str], None],
        on_error: Callable[[Classified], None],
    ) -> CopyResult:
        """Copy ``obj`` in a copy process; what its requests met is told to ``on_request``/``on_error`` in
        this thread, as an in-process copier would. Raises `RetriesExhausted` as `Copier.copy` does."""
        attempts = 0
        while True:
            attempts += 1
            call, answers, child = self._submit(obj, key)
            try:
                while True:
                    message = answers.get()
                    kind = message[0]
                    if kind == "request":
                        on_request(Operation(message[2]), message[3])
                    elif kind == "error":
                        on_error(Classified(Kind(message[2]), message[3], message[4]))
                    elif kind == "lost":
                        break
                    else:
                        with self._lock:
                            child.answered += 1
                        return _answer(message, on_request)
            finally:
                with self._lock:
                    self._waiting.pop(call, None)
                    child.calls.discard(call)
                    child.in_flight -= 1
            if attempts > self.count * (RESTARTS_PER_PROCESS + 1) or not self._any_alive():
                raise RetriesExhausted(
                    Classified(Kind.TRANSIENT, PROCESS_LOST, "every copy process of the worker ended"),
                    attempts,
                )

    def close(self) -> None:
        """End the copy processes once no transfer is in flight (the engine waits for them first)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            self._end(child)

    # -- inside ----------------------------------------------------------------------------------------------

    def _start(self) -> _Child:
        parent, child_end = self._context.Pipe()
        process = self._context.Process(
            target=serve, args=(child_end, self._setup), name="ferry-copy", daemon=True
        )
        process.start()
        child_end.close()
        return _Child(process, parent)

    def _await_ready(self, child: _Child) -> None:
        if not child.conn.poll(START_SECONDS):
            raise CopyProcessesFailed(f"a copy process did not start within {START_SECONDS:.0f} s")
        try:
            message = _get(child.conn)
        except (EOFError, OSError) as exc:
            raise CopyProcessesFailed(
                f"a copy process ended as it started (exit code {child.process.exitcode})"
            ) from exc
        if message[0] != "ready":
            raise CopyProcessesFailed("a copy process answered its start with something else")
        self._tree.add(child.process.pid)

    def _send(self, child: _Child, message: tuple[Any, ...]) -> bool:
        try:
            with child.sending:
                _put(child.conn, message)
            return True
        except (OSError, ValueError):
            return False

    def _submit(self, obj: ObjectInfo, key: str) -> tuple[int, queue.SimpleQueue[tuple[Any, ...]], _Child]:
        answers: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        with self._lock:
            alive = [c for c in self._children if c.alive]
            if not alive:
                raise RetriesExhausted(
                    Classified(Kind.TRANSIENT, PROCESS_LOST, "every copy process of the worker ended"), 1
                )
            child = min(alive, key=lambda c: c.in_flight)
            call = next(self._calls)
            self._waiting[call] = answers
            child.calls.add(call)
            child.in_flight += 1
        # Sent outside the lock: a copy process that died meanwhile gets this call as lost (`_replace`).
        sent = self._send(child, ("copy", call, _object_fields(obj), key))
        if not sent:
            answers.put(("lost",))
        return call, answers, child

    def _any_alive(self) -> bool:
        with self._lock:
            return any(c.alive for c in self._children)

    def _read(self, index: int) -> None:
        while True:
            child = self._children[index]
            try:
                message = _get(child.conn)
            except (EOFError, OSError):
                if not self._replace(index, child):
                    return
                continue
            with self._lock:
                answers = self._waiting.get(message[1])
            if answers is not None:
                answers.put(message)

    def _replace(self, index: int, child: _Child) -> bool:
        """A copy process's pipe closed: hand its transfers to the others, start another in its place
        (bounded). Returns whether there is one to read from."""
        with self._lock:
            child.alive = False
            lost = [self._waiting[c] for c in child.calls if c in self._waiting]
            closing = self._closed
        self._tree.remove(child.process.pid)
        for answers in lost:
            answers.put(("lost",))
        if closing or child.restarts >= RESTARTS_PER_PROCESS:
            if not closing:
                log.error("a copy process ended (exit code %s); not started again", child.process.exitcode)
            return False
        log.warning("a copy process ended (exit code %s); starting another", child.process.exitcode)
        try:
            fresh = self._start()
            self._await_ready(fresh)
        except CopyProcessesFailed as exc:
            log.error("a copy process could not be started again: %s", exc)
            return False
        fresh.restarts = child.restarts + 1
        with self._lock:
            for message in (self._configured, self._rates):
                if message is not None:
                    self._send(fresh, message)
            self._children[index] = fresh
        return True

    def _end(self, child: _Child) -> None:
        self._tree.remove(child.process.pid)  # its peak is read while it still runs
        self._send(child, ("stop",))
        child.process.join(10)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(5)
        child.conn.close()


def _answer(message: tuple[Any, ...], on_request: Callable[[Operation, str], None]) -> CopyResult:
    kind, answered = message[0], message[2]
    for operation in answered:
        on_request(Operation(operation), OK_CODE)
    if kind == "done":
        return _result(message[3])
    if kind == "exhausted":
        _, _, _, error_kind, code, text, attempts, operation = message
        raise RetriesExhausted(Classified(Kind(error_kind), code, text), attempts, operation)
    _, _, _, error_kind, code, text = message
    raise CopyProcessError(Classified(Kind(error_kind), code, text))


class CopyProcessError(Exception):
    """An unexpected error a copy process met copying one object (logged there with its traceback)."""

    def __init__(self, classified: Classified) -> None:
        super().__init__(f"{classified.code}: {classified.message}")
        self.classified = classified


@dataclass
class RemoteCopier:
    """The engine's copier when copies run in copy processes: `copy` crosses, the rest (a HEAD after a
    source changed) is asked in the worker's own process."""

    processes: CopyProcesses
    local: Copier

    def copy(self, obj: ObjectInfo, destination_key: str) -> CopyResult:
        return self.processes.copy(obj, destination_key, self.local.on_request, self.local.on_error)

    def current(self, obj: ObjectInfo) -> ObjectInfo | None:
        return self.local.current(obj)


def start_copy_processes(
    requested: int,
    setup: CopierSetup,
    tree: ProcessTree,
    *,
    budget_bytes: int | None,
    every_version: bool,
) -> CopyProcesses | None:
    """The copy processes for a worker given ``requested`` CPUs, started; None when it copies in its own
    process: one CPU, a budget too small for more processes, spec.versions all (histories are copied
    in order by the worker itself), or copy processes that failed to start (said in the log)."""
    count = 0 if every_version else copy_processes_for(requested, budget_bytes)
    if count == 0:
        if requested > 1 and not every_version:
            log.info(
                "copying in one process: the memory budget leaves no room for %d copy processes", requested
            )
        return None
    try:
        return CopyProcesses(setup, count, tree)
    except CopyProcessesFailed as exc:
        log.warning("copying in one process: %s", exc)
    except RuntimeError as exc:
        # multiprocessing refuses to spawn from a program embedding Ferry whose main module runs its work
        # when imported (no `if __name__ == "__main__"`): such a program copies in one process.
        log.warning(
            "copying in one process: copy processes cannot be started here (%s)",
            str(exc).split(".")[0].strip(),
        )
    return None
