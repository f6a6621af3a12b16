"""The small-object profile's attribution: which sampled stacks are waits, and which operation and layer
every other stack's CPU goes to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _cpuprofile() -> ModuleType:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    path = Path(__file__).resolve().parents[2] / "bench" / "cpuprofile.py"
    spec = importlib.util.spec_from_file_location("bench_cpuprofile", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


cpuprofile = _cpuprofile()

WORKER = (
    "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);"
    "_WorkItem.run (concurrent/futures/thread.py:58);CopyEngine._transfer (worker/engine.py:533);"
    "Copier.copy (worker/copier.py:94)"
)
GET = f"{WORKER};Copier._stream_single (worker/copier.py:175);Copier._call (worker/copier.py:115);Copier._stream_single.<locals>.fetch (worker/copier.py:163);LeanS3.get_object (worker/leans3.py:93)"
PUT = f"{WORKER};Copier._stream_single (worker/copier.py:191);Copier._stream_single.<locals>.put (worker/copier.py:182);LeanS3.put_object (worker/leans3.py:131)"
COPY = f"{WORKER};Copier._server_side_copy (worker/copier.py:240);Copier._call (worker/copier.py:115);Copier._server_side_copy.<locals>.copy (worker/copier.py:230);BaseClient._make_api_call (botocore/client.py:1000)"
LIST = "Thread.run (threading.py:982);prefetch.<locals>.produce (worker/listing.py:60);list_pages (worker/s3.py:120);BaseClient._make_api_call (botocore/client.py:1000)"

# fmt: off
STACKS = [
    # (stack below the thread, waiting, operation, layer)
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPPool.request (worker/leanhttp.py:100)", False, "GET", "lean transport: HTTP"),
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPConnectionPool.urlopen (urllib3/connectionpool.py:773)", False, "GET", "urllib3 + http.client"),
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPConnection.getresponse (http/client.py:1390);parse_headers (http/client.py:242);FeedParser.feed (email/feedparser.py:173)", False, "GET", "urllib3 + http.client"),
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPConnection.getresponse (http/client.py:1390);SocketIO.readinto (socket.py:706)", True, "", ""),
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPPool.request (worker/leanhttp.py:100);_exchange (worker/leanhttp.py:200);_send (worker/leanhttp.py:230)", True, "", ""),
    (f"{GET};LeanS3._send (worker/leans3.py:151);HTTPPool.request (worker/leanhttp.py:100);_exchange (worker/leanhttp.py:200);_read_head (worker/leanhttp.py:280);_recv (worker/leanhttp.py:240)", True, "", ""),
    (f"{PUT};LeanS3._send (worker/leans3.py:151);LeanS3._signed_headers (worker/leans3.py:167)", False, "PUT", "lean transport: signing"),
    (f"{PUT};LeanS3._send (worker/leans3.py:151);LeanS3._signing_key (worker/leans3.py:198);hmac.new (hmac.py:184)", False, "PUT", "lean transport: signing"),
    (f"{PUT}", False, "PUT", "lean transport: headers"),
    (f"{COPY};BaseClient._make_request (botocore/client.py:1020);RequestSigner.sign (botocore/signers.py:200);SigV4Auth.add_auth (botocore/auth.py:420)", False, "CopyObject", "botocore: signing"),
    (f"{COPY};ResponseParser.parse (botocore/parsers.py:250)", False, "CopyObject", "botocore: parsing"),
    (f"{COPY};HierarchicalEmitter.emit (botocore/hooks.py:256)", False, "CopyObject", "botocore: event handlers"),
    (f"{COPY};ParamValidator.validate (botocore/validate.py:300)", False, "CopyObject", "botocore: request building"),
    (f"{WORKER};Copier._stream_single (worker/copier.py:176);Copier._verify_single (worker/copier.py:199);crc32c (worker/checksums.py:17);crc32c (awscrt/checksums.py:25)", False, "verification", "checksums"),
    (f"{WORKER};Copier._stream_single (worker/copier.py:175);Copier._call (worker/copier.py:115);call_with_retry (worker/retry.py:198);Random.__init__ (random.py:125);Random.seed (random.py:163)", False, "retry wrapper", "retry wrapper"),
    (f"{WORKER};Copier._stream_single (worker/copier.py:175);Copier._call (worker/copier.py:115);Copier._call.<locals>.counted (worker/copier.py:106);CopyEngine._count_request (worker/engine.py:247);replace (dataclasses.py:1494)", False, "accounting", "accounting"),
    (f"{LIST};RestXMLParser._parse_body (botocore/parsers.py:900)", False, "listing", "botocore: parsing"),
    ("Thread.run (threading.py:982);ProgressDisplay._loop (worker/display.py:80);format_line (worker/display.py:40)", False, "display", "display"),
    ("Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81)", True, "", ""),
    ("Thread.run (threading.py:982);Condition.wait (threading.py:327)", True, "", ""),
    ("<module> (ferry:8);_find_and_load (<frozen importlib._bootstrap>:1176);<module> (botocore/client.py:10)", False, "start-up and summary", "imports"),
    ("CopyEngine.run (worker/engine.py:280);ThreadPoolExecutor.submit (concurrent/futures/thread.py:172)", False, "engine loop", "thread hand-offs"),
    ("", True, "", ""),
]
# fmt: on


@pytest.mark.parametrize(("stack", "waiting", "operation", "layer"), STACKS)
def test_each_stack_is_a_wait_or_goes_to_one_operation_and_layer(
    stack: str, waiting: bool, operation: str, layer: str
) -> None:
    line = f"thread (123): ferry-copy_0;{stack} 7" if stack else "thread (123) 7"
    (sample,) = cpuprofile.parse_collapsed(line)
    assert sample.count == 7
    assert cpuprofile.is_waiting(sample) is waiting
    if not waiting:
        assert cpuprofile.operation_of(sample) == operation
        assert cpuprofile.layer_of(sample) == layer


def test_attribution_leaves_waits_out_and_its_shares_add_up() -> None:
    text = "\n".join(
        [
            f"thread (1): ferry-copy_0;{GET};LeanS3._send (worker/leans3.py:151);HTTPPool.request (worker/leanhttp.py:100) 30",
            f"thread (1): ferry-copy_0;{PUT} 10",
            "thread (2): ferry-copy_1;Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 60",
            "thread (3): MainThread;<module> (ferry:8);_find_and_load (<frozen importlib._bootstrap>:1176) 5",
            "not a sample line",
        ]
    )
    table = cpuprofile.attribute(cpuprofile.parse_collapsed(text), leave_out=frozenset({cpuprofile.START_UP}))
    assert (table.total, table.waiting, table.left_out, table.busy) == (105, 60, 5, 40)
    assert table.by_operation == {"GET": 30, "PUT": 10}
    rows = cpuprofile.split(table.by_operation, table.busy, 2.0)
    assert rows == [("GET", 0.75, 1.5), ("PUT", 0.25, 0.5)]
    assert "| kernel (system calls: sockets, poll, futex) | | 0.300 |" in cpuprofile.markdown(table, 2.0, 0.3)
