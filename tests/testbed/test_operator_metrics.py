"""The operator's own endpoints, on a real `ferry operator` process under the chart's RBAC: /metrics and
/healthz listen only on the documented address (127.0.0.1 outside a pod), and /metrics exports the series
the chart's dashboard queries, by Prometheus conventions: stalled CopyJobs apart from their phase, progress
per CopyJob that goes with the CopyJob and is held to a cap, counters ending in `_total`, a reconcile
duration histogram.

The operator here watches one namespace of its own, so every count below is exact."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from ferry.model.quantity import to_display_quantity
from support.dashboard import OPERATOR_SERIES, dashboard_series
from support.operator import GROUP, PLURAL, VERSION, Jobs, condition, fill, secret, spec_for
from support.sockets import listening
from testbed.binaries import TestBinaries
from testbed.install import OperatorProcess, install, operator_process

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)
#: Per-CopyJob series this operator keeps: small, so that the cap is reached with three CopyJobs.
CAP = 2

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def watched(cluster: Cluster, versitygw: Any) -> str:
    name = cluster.new_namespace("operator-metrics")
    secret(cluster, name, "src", versitygw.endpoint)
    secret(cluster, name, "dst", versitygw.endpoint)
    return name


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, testbin: TestBinaries, watched: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install(cluster.api, testbin.path("helm"))
    yield from operator_process(
        cluster.controlplane,
        tmp_path_factory.mktemp("operator"),
        extra_env={"FERRY_WATCH_NAMESPACES": watched, "FERRY_MAX_COPYJOB_SERIES": str(CAP)},
    )


@pytest.fixture
def jobs(operator: OperatorProcess, custom: client.CustomObjectsApi, watched: str) -> Iterator[Jobs]:
    """CopyJobs in the watched namespace; each test leaves it empty, as the counts below assume."""
    yield Jobs(custom, watched)
    listed: dict[str, Any] = custom.list_namespaced_custom_object(GROUP, VERSION, watched, PLURAL)
    for item in listed["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, item["metadata"]["name"])


def scrape(operator: OperatorProcess) -> tuple[Samples, dict[str, str]]:
    """Every sample of the operator's /metrics, and each family's type."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for one in family.samples:
            samples[(one.name, tuple(sorted(one.labels.items())))] = one.value
    return samples, types


def _scrape_or_none(operator: OperatorProcess) -> Samples | None:
    """The samples, or None while the operator is not listening yet."""
    try:
        return scrape(operator)[0]
    except OSError:
        return None


def counted(operator: OperatorProcess, phase: str, stalled: bool) -> float:
    samples, _ = scrape(operator)
    return samples[("ferry_copyjobs", (("phase", phase), ("stalled", "true" if stalled else "false")))]


def when(value: T, test: Callable[[T], bool]) -> T | None:
    """`value` if it passes `test`, for polling with `wait_for`."""
    return value if test(value) else None


def progress(samples: Samples) -> dict[str, float]:
    return series_of(samples, "ferry_copyjob_progress_ratio")


def all_copyjobs(samples: Samples) -> float:
    return sum(value for (name, _labels), value in samples.items() if name == "ferry_copyjobs")


def series_of(samples: Samples, name: str) -> dict[str, float]:
    """`name`'s value per CopyJob (outcome-labelled series: their sum)."""
    found: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            copyjob = dict(labels)["copyjob"]
            found[copyjob] = found.get(copyjob, 0) + value
    return found


def test_the_metrics_and_liveness_endpoints_listen_only_on_loopback(operator: OperatorProcess) -> None:
    assert operator.process is not None
    pid = operator.process.pid
    metrics, liveness = int(operator.env["FERRY_METRICS_PORT"]), int(operator.env["FERRY_LIVENESS_PORT"])
    sockets = wait_for(
        "/metrics and /healthz listening",
        lambda: when(listening(pid), lambda found: {metrics, liveness} <= {p for _, p in found}),
    )
    # Nothing else, and nothing on 0.0.0.0 or ::, where any host on the network could reach them.
    assert sockets == {("127.0.0.1", metrics), ("127.0.0.1", liveness)}
    assert operator.metrics_url == f"http://127.0.0.1:{metrics}/metrics"
    with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=5) as response:
        assert response.status == 200


def test_the_dashboards_operator_series_are_exported_with_each_copyjobs_progress(
    operator: OperatorProcess, jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, destination = fill(s3, 40, size=500)
    jobs.create("counted", spec_for(versitygw.endpoint.url, source, destination))
    status = jobs.wait_phase("counted", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    samples, types = wait_for(
        "the finished CopyJob's series",
        lambda: when(scrape(operator), lambda s: progress(s[0]) == {"counted": 1.0}),
    )
    exported = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name, _ in samples}
    used = dashboard_series() & OPERATOR_SERIES
    assert used and used <= exported, used - exported
    assert exported >= OPERATOR_SERIES, OPERATOR_SERIES - exported
    # Counters end in _total; the reconcile duration is a histogram that saw this CopyJob's passes.
    counters = {name for name, kind in types.items() if kind == "counter"}
    assert {"ferry_reconcile_errors", "ferry_api_requests"} <= counters
    for name, _labels in samples:
        if any(name.startswith(c) for c in counters):
            assert name.endswith(("_total", "_created")), name
    assert types["ferry_reconcile_duration_seconds"] == "histogram"
    assert samples[("ferry_reconcile_duration_seconds_count", ())] >= 2
    # The CopyJob's series say what its status says, labelled by namespace and name only.
    done = sum(status["objects"][k] for k in ("copied", "skipped", "failed"))
    assert done == 40
    assert series_of(samples, "ferry_copyjob_objects") == {"counted": done}
    assert series_of(samples, "ferry_copyjob_expected_objects") == {"counted": 40}
    assert series_of(samples, "ferry_copyjob_expected_bytes") == {"counted": status["bytes"]["total"]}
    labels = {labels for name, labels in samples if name == "ferry_copyjob_objects"}
    assert {tuple(k for k, _ in one) for one in labels} == {("copyjob", "namespace", "outcome")}
    assert counted(operator, "Succeeded", False) == 1

    # A restarted operator never reconciles a finished CopyJob again: it counts it from the watch.
    operator.kill()
    operator.start()
    wait_for(
        "the finished CopyJob counted after a restart",
        lambda: (now := _scrape_or_none(operator)) is not None and progress(now) == {"counted": 1.0},
    )
    assert counted(operator, "Succeeded", False) == 1

    jobs.custom.delete_namespaced_custom_object(GROUP, VERSION, jobs.namespace, PLURAL, "counted")
    samples = wait_for(
        "the deleted CopyJob's series gone",
        lambda: when(scrape(operator)[0], lambda s: not progress(s)),
    )
    assert not [labels for _name, labels in samples if ("copyjob", "counted") in labels]
    assert counted(operator, "Succeeded", False) == 0


def test_a_finished_copyjobs_status_shows_memory_for_people_and_truthful_reasons(
    operator: OperatorProcess, jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, destination = fill(s3, 10)
    jobs.create("truthful", spec_for(versitygw.endpoint.url, source, destination))
    status = jobs.wait_phase("truthful", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    memory = status["memory"]
    assert memory["peakBytes"] > 0 and memory["peak"] == to_display_quantity(memory["peakBytes"])
    reasons = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert reasons["Suspended"] == ("False", "NotSuspended")
    assert reasons["Failed"] == ("False", "AllObjectsCopied")
    assert reasons["Progressing"] == ("False", "Finished")


def test_a_stalled_copyjob_is_counted_as_stalled_not_as_plain_pending(
    operator: OperatorProcess, jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    source, destination = fill(s3, 5)
    spec = spec_for(versitygw.endpoint.url, source, destination)
    spec["destination"]["credentialsSecret"] = "no-such-secret"
    jobs.create("stuck", spec)
    wait_for("Stalled", lambda: (s := jobs.status("stuck")).get("conditions") and condition(s, "Stalled"))
    wait_for("counted as stalled", lambda: counted(operator, "Pending", True) == 1)
    assert counted(operator, "Pending", False) == 0


def test_per_copyjob_series_are_capped_and_a_deleted_copyjob_gives_its_place_up(
    operator: OperatorProcess, jobs: Jobs, s3: Any, versitygw: Any
) -> None:
    # Run first (alone, or in another order), the operator may not listen yet.
    wait_for(
        "no CopyJob left from the other tests",
        lambda: (now := _scrape_or_none(operator)) is not None and all_copyjobs(now) == 0,
    )
    source, destination = fill(s3, 40)
    # CopyJobs planned, then suspended (so they have counts), stay unfinished.
    names = ["held-0", "held-1", "held-2"]
    for name in names:
        jobs.create_planned_suspended(name, spec_for(versitygw.endpoint.url, source, destination))
    samples = wait_for(
        "two CopyJobs with series", lambda: when(scrape(operator)[0], lambda s: len(progress(s)) == CAP)
    )
    held = set(progress(samples))
    assert held < set(names)
    assert samples[("ferry_copyjobs_untracked", ())] == 1
    assert samples[("ferry_copyjobs", (("phase", "Suspended"), ("stalled", "false")))] == 3

    gone = sorted(held)[0]
    jobs.custom.delete_namespaced_custom_object(GROUP, VERSION, jobs.namespace, PLURAL, gone)
    samples = wait_for(
        "the third CopyJob takes the freed place",
        lambda: when(scrape(operator)[0], lambda s: set(progress(s)) == set(names) - {gone}),
    )
    assert samples[("ferry_copyjobs_untracked", ())] == 0
