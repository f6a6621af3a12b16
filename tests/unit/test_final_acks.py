"""Which stopped workers the operator tells that their final counts are recorded (operator/finalacks.py),
and how a final document's name is read from an answer (worker/statusdoc.py): only names of the allowed
form, only pods that answered this pass, only once the written ledger holds their resume point; and a pod's shard from its completion index."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.model.checkpoint import Checkpoint, LedgerEntry, resume_key
from ferry.operator.finalacks import FinalAck, recorded_finals
from ferry.operator.stopped import completion_index
from ferry.worker.finaldoc import FinalDocument
from ferry.worker.statusdoc import parse_report

NAME = "0123456789abcdef0123456789abcdef"


def answer(shard: int, after: str | None, final: str | None = NAME, pod: str = "") -> Any:
    document: dict[str, Any] = {
        "format": "ferry.dev/worker-report/v1",
        "shard": shard,
        "state": "interrupted" if final else "running",
        "objects": {"total": 100, "copied": 40},
        "bytes": {},
        "resume": None if after is None else Checkpoint(after, copied=40).as_json(),
        **({"final": final} if final else {}),
        **({"pod": pod} if pod else {}),
    }
    report = parse_report(json.dumps(document))
    assert report is not None
    return report


def written(**points: str) -> dict[str, str]:
    """The ledger as written: shard number (s0, s1, ...) → its resume point's key."""
    return {
        resume_key(int(k[1:])): LedgerEntry((40, 0, 0, 0, 0, 0), Checkpoint(v, copied=40)).text()
        for k, v in points.items()
    }


# id, answered (shard → pod, after, final), fresh pods, finished shards, ledger as written, pods told
CASES = [
    ("recorded", {0: ("p0", "k/050", NAME)}, {"p0"}, set(), written(s0="k/050"), ["p0"]),
    ("ledger passed it", {0: ("p0", "k/050", NAME)}, {"p0"}, set(), written(s0="k/060"), ["p0"]),
    ("ledger behind it", {0: ("p0", "k/050", NAME)}, {"p0"}, set(), written(s0="k/049"), []),
    ("ledger full: no entry", {0: ("p0", "k/050", NAME)}, {"p0"}, set(), {}, []),
    ("nothing settled yet", {0: ("p0", None, NAME)}, {"p0"}, set(), {}, ["p0"]),
    ("shard finished", {0: ("p0", "k/050", NAME)}, {"p0"}, {0}, {}, ["p0"]),
    ("still running", {0: ("p0", "k/050", None)}, {"p0"}, set(), written(s0="k/050"), []),
    ("remembered answer", {0: ("p0", "k/050", NAME)}, set(), set(), written(s0="k/050"), []),
    ("another shard's point", {1: ("p1", "k/050", NAME)}, {"p1"}, set(), written(s0="k/050"), []),
    ("shard outside the plan", {7: ("p7", None, NAME)}, {"p7"}, set(), {}, []),
    (
        "two of three",
        {0: ("p0", "k/010", NAME), 1: ("p1", "k/150", NAME), 2: ("p2", "k/250", None)},
        {"p0", "p1", "p2"},
        set(),
        written(s0="k/010", s1="k/140", s2="k/250"),
        ["p0"],
    ),
]


@pytest.mark.parametrize(
    ("answered", "fresh", "finished", "ledger", "told"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_only_recorded_final_documents_are_acknowledged(
    answered: dict[int, tuple[str, str | None, str | None]],
    fresh: set[str],
    finished: set[int],
    ledger: dict[str, str],
    told: list[str],
) -> None:
    reports = {i: (pod, answer(i, after, final)) for i, (pod, after, final) in answered.items()}
    addresses = {pod: f"10.0.0.{n}" for n, pod in enumerate(sorted(fresh))}
    acks = recorded_finals(reports, addresses, finished, ledger, shard_count=3)
    assert [a.pod for a in acks] == told
    assert all(a == FinalAck(a.pod, addresses[a.pod], NAME) for a in acks)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (NAME, NAME),
        (NAME.upper(), None),
        (NAME + "0", None),
        (NAME[:-1], None),
        ("../../etc/passwd" + "0" * 16, None),
        (12345, None),
        (None, None),
    ],
)
def test_a_final_documents_name_is_read_only_in_its_form(given: Any, read: str | None) -> None:
    document = {"format": "ferry.dev/worker-report/v1", "shard": 0, "state": "interrupted", "final": given}
    report = parse_report(json.dumps(document))
    assert report is not None and report.final == read


def test_a_final_document_is_acknowledged_by_its_own_name_only() -> None:
    final, other = FinalDocument(), FinalDocument()
    assert final.name != other.name and len(final.name) == 32
    final.acknowledge(other.name)
    assert not final.wait(0)
    final.acknowledge(final.name)
    assert final.wait(0)


@pytest.mark.parametrize(
    ("annotation", "index"),
    [("0", 0), ("41", 41), ("9999999", 9999999), ("10000000", None), ("-1", None), ("٣", None), ("", None)],
)
def test_a_pods_shard_is_read_only_from_a_plain_completion_index(annotation: str, index: int | None) -> None:
    pod = {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": annotation}}}
    assert completion_index(pod) == index
