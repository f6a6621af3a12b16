"""EndpointBudgets end to end: three CopyJobs aimed at one endpoint share its budget. The operator process
gives each its fair share (one with a lower spec.rateLimit keeps to that, the others share the rest), the
worker pods run by the process kubelet hold those shares (their own /status says so), the requests at the
endpoint stay within the budget, the budget's status counts its CopyJobs, a CopyJob that stops hands its
share to the others, and without the budget each CopyJob is on its own limits again.

The endpoint is a counting proxy (testbed/faultproxy.py) in front of versitygw, on a port of its own: the
budget covers these CopyJobs and no other test's."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from support.operator import Jobs, fill, spec_for
from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.install import NAMESPACE as RELEASE_NAMESPACE
from testbed.install import RELEASE

from .conftest import wait_for

pytestmark = pytest.mark.timeout(360)

BUDGET = 30
#: Seconds over which the endpoint's request rate is measured.
WINDOW = 6.0


def rate_limit(jobs: Jobs, name: str) -> dict[str, Any]:
    return dict(jobs.status(name).get("rateLimit") or {})


def pod_share(cluster: Any, namespace: str, name: str) -> float | None:
    """What the CopyJob's running worker pod says its share is, on its own /status."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"ferry.dev/copyjob={name}").items
    for pod in pods:
        if pod.status.phase == "Running" and pod.status.pod_ip and "worker" in pod.metadata.name:
            try:
                with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/status", timeout=2) as answer:
                    return float(json.loads(answer.read())["rateLimit"]["requestsPerSecond"])
            except (OSError, ValueError, KeyError):
                return None
    return None


def test_copyjobs_on_one_endpoint_share_its_budget_fairly_and_redistribute_when_one_stops(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    with FaultProxy(versitygw.endpoint.url) as proxy:
        budget_name = f"budget-{namespace}"[:63]
        custom.create_cluster_custom_object(
            "ferry.dev",
            "v1alpha1",
            "endpointbudgets",
            {
                "apiVersion": "ferry.dev/v1alpha1",
                "kind": "EndpointBudget",
                "metadata": {"name": budget_name},
                "spec": {"endpoint": proxy.url, "requestsPerSecond": BUDGET},
            },
        )
        try:
            # Enough objects that no CopyJob finishes before the checks are done, even one that ran alone
            # at 26 requests/s while another's plan came late (as long as the checks wait): 2,000 objects
            # of GET + PUT take a wide CopyJob 154 s at 26 requests/s.
            own = {"wide-a": None, "wide-b": None, "narrow": 4}
            for name, limit in own.items():
                source, destination = fill(s3, 800 if limit else 2000, size=300)
                extra = {"rateLimit": {"requestsPerSecond": limit}} if limit else {}
                jobs.create(name, spec_for(proxy.url, source, destination, parallelism=1, **extra))

            # Max-min: narrow keeps to its own 4, the wide ones share the other 26 of the 30.
            expected = {"wide-a": 13.0, "wide-b": 13.0, "narrow": 4.0}

            def shared() -> dict[str, dict[str, Any]] | None:
                found = {name: rate_limit(jobs, name) for name in own}
                ok = all(
                    r.get("budget") == budget_name
                    and r.get("applied") == 1
                    and r["perPod"]["requestsPerSecond"] == expected[name]
                    for name, r in found.items()
                )
                return found if ok else None

            found = wait_for("three CopyJobs holding their shares of the budget", shared, timeout=150)
            assert found["wide-a"]["budgetShare"]["requestsPerSecond"] == 13.0
            assert found["narrow"]["requestsPerSecond"] == 4
            for name, share in expected.items():
                assert wait_for(
                    f"{name}'s pod holding {share} requests/s",
                    lambda name=name, share=share: pod_share(cluster, namespace, name) == share,
                    timeout=20,
                )
            status = wait_for(
                "the budget's status",
                lambda: (
                    (
                        b := custom.get_cluster_custom_object(
                            "ferry.dev", "v1alpha1", "endpointbudgets", budget_name
                        ).get("status")
                        or {}
                    ).get("jobs")
                    == 3
                    and b
                ),
                timeout=20,
            )
            assert status["effectiveRequestsPerSecond"] == BUDGET
            time.sleep(2.0)  # past the pods' first second's burst
            before = proxy.stats().requests
            time.sleep(WINDOW)
            measured = (proxy.stats().requests - before) / WINDOW
            print(f"three CopyJobs under a budget of {BUDGET} requests/s: {measured:.1f} requests/s measured")
            assert measured <= BUDGET * 1.1, measured
            assert measured >= BUDGET * 0.7, measured

            # narrow stops: its share goes to the two others at their next pass.
            jobs.patch("narrow", {"suspend": True})
            wait_for(
                "the two wide CopyJobs at 15 requests/s each",
                lambda: all(
                    rate_limit(jobs, name).get("perPod", {}).get("requestsPerSecond") == 15.0
                    for name in ("wide-a", "wide-b")
                ),
                timeout=30,
            )
        finally:
            custom.delete_cluster_custom_object("ferry.dev", "v1alpha1", "endpointbudgets", budget_name)

        # Without the budget each CopyJob is on its own spec.rateLimit again: none for wide-a (unlimited), and
        # it finishes soon after.
        unlimited = wait_for(
            "wide-a on its own limits",
            lambda: "budget" not in (r := rate_limit(jobs, "wide-a")) and r,
            timeout=30,
        )
        assert unlimited["requestsPerSecond"] == 0 and unlimited["perPod"]["requestsPerSecond"] == 0
        assert jobs.wait_phase("wide-a", "Succeeded", "Failed", timeout=60)["phase"] == "Succeeded"
        for name in ("wide-b", "narrow"):
            jobs.patch(name, {"suspend": True})


def budget_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "EndpointBudget",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        ({"endpoint": "http://s3.example.com"}, "set requestsPerSecond or bytesPerSecond"),
        (
            {"endpoint": "http://s3.example.com", "requestsPerSecond": 0, "bytesPerSecond": "0"},
            "set requestsPerSecond",
        ),
        (
            {"endpoint": "http://s3.example.com", "prefix": "a/", "requestsPerSecond": 1},
            "prefix needs bucket",
        ),
        ({"endpoint": "http://s3.example.com", "bytesPerSecond": "2Pi"}, "at most 1Pi"),
        (
            {"endpoint": "http://s3.example.com", "requestsPerSecond": 1000001},
            "less than or equal to 1000000",
        ),
        ({"endpoint": "ftp://s3.example.com", "requestsPerSecond": 1}, "should match"),
    ],
)
def test_the_api_server_refuses_budgets_the_model_refuses(
    operator: Any, cluster: Any, spec: dict[str, Any], refusal: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    with pytest.raises(client.ApiException) as caught:
        custom.create_cluster_custom_object(
            "ferry.dev",
            "v1alpha1",
            "endpointbudgets",
            budget_body("refused", spec),
            field_validation="Strict",
        )
    assert caught.value.status == 422 and refusal in str(caught.value.body), caught.value.body


def test_only_the_platform_writes_budgets_and_the_operator_only_their_status(
    operator: Any, cluster: Any, namespace: str
) -> None:
    """A tenant who administers their namespace cannot create, edit or delete a budget; the operator can
    read them and patch their status, nothing more (SubjectAccessReviews against the chart's RBAC)."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "tenant-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    auth = client.AuthorizationV1Api(cluster.api)

    def allowed(user: str, verb: str, subresource: str = "", ns: str = "") -> bool:
        review = auth.create_subject_access_review(
            {
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "resourceAttributes": {
                        "group": "ferry.dev",
                        "resource": "endpointbudgets",
                        "subresource": subresource,
                        "verb": verb,
                        "namespace": ns,
                    },
                }
            }
        )
        return bool(review.status.allowed)

    tenant = f"system:serviceaccount:{namespace}:default"
    assert allowed(tenant, "create", ns=namespace) is False
    for verb in ("create", "update", "patch", "delete", "list"):
        assert allowed(tenant, verb) is False, verb
    assert allowed(tenant, "patch", "status") is False
    operator_user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}"
    assert allowed(operator_user, "list") and allowed(operator_user, "watch")
    assert allowed(operator_user, "patch", "status")
    for verb in ("create", "update", "patch", "delete", "get"):
        assert allowed(operator_user, verb) is False, verb


#: What the throttling endpoint serves (requests/s, all clients together) and what its adaptive budget
#: claims at first: the budget is wrong by a factor of three, as a platform's guess of a provider often is.
ENDPOINT_ALLOWS = 20
ADAPTIVE_BUDGET = 60


def budget_status(custom: Any, name: str) -> dict[str, Any]:
    found = custom.get_cluster_custom_object("ferry.dev", "v1alpha1", "endpointbudgets", name)
    return dict(found.get("status") or {})


def test_an_adaptive_budget_backs_off_while_the_endpoint_throttles_and_rises_again_once_it_stops(
    jobs: Jobs, s3: Any, versitygw: Any, cluster: Any, namespace: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    throttling = FaultPlan(max_requests_per_second=ENDPOINT_ALLOWS)
    with FaultProxy(versitygw.endpoint.url, throttling) as proxy:
        budget_name = f"aimd-{namespace}"[:63]
        custom.create_cluster_custom_object(
            "ferry.dev",
            "v1alpha1",
            "endpointbudgets",
            budget_body(
                budget_name,
                {"endpoint": proxy.url, "requestsPerSecond": ADAPTIVE_BUDGET, "adaptive": True},
            ),
        )
        names = ("aimd-a", "aimd-b")
        try:
            # More objects than the endpoint lets through in the test's minutes: neither finishes.
            for name in names:
                source, destination = fill(s3, 1500, size=200)
                jobs.create(name, spec_for(proxy.url, source, destination, parallelism=1))

            # The operator hears of the 503s through the pods' /status and lowers the budget in force, a
            # step at a time (x0.8, then a hold while the pods' next reports still count the old shares).
            levels: list[float] = []

            def backed_off() -> bool:
                status = budget_status(custom, budget_name)
                effective = status.get("effectiveRequestsPerSecond")
                if isinstance(effective, int | float):
                    levels.append(float(effective))
                return bool(effective) and effective <= ENDPOINT_ALLOWS * 1.25

            wait_for(
                "the budget in force backed off towards what the endpoint allows", backed_off, timeout=150
            )
            status = budget_status(custom, budget_name)
            print(f"budget in force over time: {sorted(set(levels), reverse=True)}; status: {status}")
            assert status["throttledLastMinute"] > 0, status
            assert status["jobs"] == 2, status
            assert levels[0] >= ADAPTIVE_BUDGET * 0.8, "it started from the spec's figure, or one step below"
            for name in names:
                pod_limit = rate_limit(jobs, name)
                assert pod_limit.get("budget") == budget_name, pod_limit
                # Each holds half of a level already lowered (the CopyJob's next pass brings the newest).
                assert pod_limit["budgetShare"]["requestsPerSecond"] <= ADAPTIVE_BUDGET * 0.8 / 2, pod_limit

            # Backed off, the fleet is throttled far less than while it claimed the spec's figure.
            stats = proxy.stats()
            before_capped, before_all = stats.capped, stats.requests
            time.sleep(WINDOW * 2)
            stats = proxy.stats()
            sent = stats.requests - before_all
            capped_share = (stats.capped - before_capped) / max(sent, 1)
            print(f"after backing off: {sent} requests in {WINDOW * 2:.0f} s, {capped_share:.1%} throttled")
            assert sent > 0
            assert capped_share < 0.2, capped_share

            # The endpoint stops throttling: the budget rises again (5% of the spec's per 10 s, slower near
            # the level that throttled).
            # Throttles still in flight when it stops may lower it once more first: it must rise above
            # the lowest level seen since.
            proxy.set_plan(FaultPlan())
            since: list[float] = []

            def rising() -> bool:
                since.append(float(budget_status(custom, budget_name).get("effectiveRequestsPerSecond") or 0))
                return since[-1] > min(since)

            wait_for("the budget in force rising once the throttling stopped", rising, timeout=150)
        finally:
            for name in names:
                jobs.patch(name, {"suspend": True})
            for name in names:
                wait_for(
                    f"{name} suspended",
                    lambda name=name: jobs.status(name).get("phase") == "Suspended",
                    timeout=60,
                )
            custom.delete_cluster_custom_object("ferry.dev", "v1alpha1", "endpointbudgets", budget_name)
