"""The Helm chart, rendered by the real `helm` (built by `make testbin`) and checked object by object.

Two renderings: default values, and testdata/values/full.yaml (watchNamespaces, monitors, NetworkPolicies,
PDB, dashboard). Checked: `helm lint --strict`; the restricted Pod Security Standard on every container;
the worker ServiceAccount mounts no token and is bound to nothing; RBAC without wildcards or versions in
apiGroups; the operator's environment; the values schema refusing unknown keys. Plus the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ferry"
FULL_VALUES = Path(__file__).resolve().parent / "testdata" / "values" / "full.yaml"
RELEASE, NAMESPACE = "ferry", "ferry-system"

OPERATOR_ENV = {
    "FERRY_WATCH_NAMESPACES",
    "FERRY_WORKER_IMAGE",
    "FERRY_WORKER_SERVICE_ACCOUNT",
    "FERRY_DEFAULT_WORKER_MEMORY",
    "FERRY_DEFAULT_WORKER_CPU",
    "FERRY_MAX_PODS_PER_JOB",
    "FERRY_MAX_MEMORY_PER_POD",
    "FERRY_MAX_CPU_PER_POD",
    "FERRY_WORKER_CPU_LIMIT",
    "FERRY_NOTIFY_ALLOW_HTTP",
    "FERRY_MAX_JOBS_PER_NAMESPACE",
    "FERRY_WORKLOAD_IDENTITY_NAMESPACES",
    "FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR",
    "FERRY_ALLOWED_ENDPOINTS",
    "FERRY_CLUSTER_CIDRS",
    "FERRY_MAX_PLANNING_PER_NAMESPACE",
    "FERRY_LISTING_DEADLINE_SECONDS",
    "FERRY_MAX_OBJECTS_PER_COPYJOB",
    "FERRY_PLANNER_PODS",
    "FERRY_PRICES",
    "FERRY_AGGREGATE_INTERVAL_SECONDS",
    "FERRY_RECONCILE_THREADS",
    "MALLOC_ARENA_MAX",
    "FERRY_METRICS_PORT",
    "FERRY_LIVENESS_PORT",
    "FERRY_LISTEN_ADDRESS",
    "FERRY_MAX_COPYJOB_SERIES",
}
METRICS = {
    "ferry_objects_total",
    "ferry_bytes_total",
    "ferry_concurrency",
    "ferry_in_flight",
    "ferry_memory_rss_bytes",
    "ferry_memory_budget_bytes",
    "ferry_throttles_total",
    "ferry_retries_total",
    "ferry_transfer_seconds",
    "ferry_copyjobs",
    "ferry_reconcile_errors_total",
    "ferry_reconcile_duration_seconds",
    "ferry_api_requests_total",
    "ferry_copyjob_progress_ratio",
    "ferry_copyjob_expected_objects",
    "ferry_copyjob_objects",
}


@pytest.fixture(scope="module")
def helm() -> Path:
    bin_dir = os.environ.get("FERRY_TESTBIN")
    if not bin_dir:
        pytest.fail(
            "FERRY_TESTBIN is not set: run `make testbin`, then FERRY_TESTBIN=$(make -s testbin-dir) pytest ...",
            pytrace=False,
        )
    path = Path(bin_dir) / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found in {bin_dir}: run `make testbin` (it builds helm from hack/)", pytrace=False
        )
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, check=False)


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def default_objects(helm: Path) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def full_objects(helm: Path) -> list[dict[str, Any]]:
    return render(helm, "--values", str(FULL_VALUES))


@pytest.fixture(params=["default", "full"])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = request.getfixturevalue(f"{request.param}_objects")
    return rendered


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def the(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


# -- lint and schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm_lint_strict(helm: Path, values: Path | None) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *(["--values", str(values)] if values else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "bogus=1",
        "image.iamge=x",
        "worker.maxPodsPerJob=0",
        "metrics.port=0",
        "listenAddress=localhost",
        "metrics.maxCopyJobSeries=-1",
        # A cloud identity on the shared worker account would be every tenant's.
        "worker.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/x",
        "worker.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=x@y.iam.gserviceaccount.com",
        "workloadIdentity.namespaces={Not_A_Namespace}",
        "workloadIdentity.everywhere=true",
        "endpoints.podCIDRs={10.244.0.0}",
        "endpoints.allow={http://minio:9000}",
        "planning.maxPerNamespace=0",
        "planning.prices.name=Rates",  # a table without its prices
        "planning.prices.putCopyPostListPer1000=-1",
        "worker.maxCpuPerPod=4Gi",
        "worker.cpuLimit=yes",
        "admissionPolicy.enable=false",
        "workloadIdentity.namespaceSelector.matchLabel.tier=gold",
        "workloadIdentity.namespaceSelector.matchLabels.-tier=gold",
        "workloadIdentity.namespaceSelector.matchExpressions[0].key=tier,workloadIdentity.namespaceSelector.matchExpressions[0].operator=Equals",
        # In and NotIn need values; Exists and DoesNotExist take none (as the API server says).
        "workloadIdentity.namespaceSelector.matchExpressions[0].key=tier,workloadIdentity.namespaceSelector.matchExpressions[0].operator=In",
        "workloadIdentity.namespaceSelector.matchExpressions[0].key=tier,workloadIdentity.namespaceSelector.matchExpressions[0].operator=Exists,workloadIdentity.namespaceSelector.matchExpressions[0].values={gold}",
    ],
)
def test_values_schema_refuses_bad_values(helm: Path, setting: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_values_yaml_documents_every_key() -> None:
    text = (CHART / "values.yaml").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaves(node: dict[str, Any], path: str) -> list[str]:
        found = []
        for name, child in node.get("properties", {}).items():
            child_path = f"{path}.{name}" if path else name
            documented = f"# {child_path} --" in text
            if child.get("additionalProperties") is False and child.get("properties") and not documented:
                found.extend(leaves(child, child_path))
            else:
                found.append(child_path)
        return found

    values = yaml.safe_load(text)
    for path in leaves(schema, ""):
        if path == "global":
            continue
        node: Any = values
        for part in path.split("."):
            assert part in node, f"{path} is in values.schema.json but not in values.yaml"
            node = node[part]
        assert f"# {path} --" in text, f"values.yaml has no comment documenting {path}"


# -- security -------------------------------------------------------------------------------------


def test_every_container_is_restricted(objects: list[dict[str, Any]]) -> None:
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job", "DaemonSet")]
    assert pods
    for pod in pods:
        pod_ctx = pod.get("securityContext", {})
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container["securityContext"]
            merged = {**pod_ctx, **ctx}
            assert merged["runAsNonRoot"] is True
            assert merged["runAsUser"] == 10001
            assert merged["seccompProfile"] == {"type": "RuntimeDefault"}
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert not ctx.get("capabilities", {}).get("add")
            assert not ctx.get("privileged")
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_operator_deployment(objects: list[dict[str, Any]]) -> None:
    deployment = the(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert container["command"] == ["ferry", "operator"]
    assert {e["name"] for e in container["env"]} == OPERATOR_ENV
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "healthz": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "readinessProbe" not in container
    assert container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert pod["serviceAccountName"] == f"{RELEASE}" or pod["serviceAccountName"].startswith(RELEASE)


def test_operator_env_defaults(default_objects: list[dict[str, Any]]) -> None:
    env = {e["name"]: e["value"] for e in operator_container(default_objects)["env"]}
    image = operator_container(default_objects)["image"]
    assert env == {
        "FERRY_WATCH_NAMESPACES": "",
        "FERRY_WORKER_IMAGE": image,
        "FERRY_WORKER_SERVICE_ACCOUNT": f"{RELEASE}-worker",
        "FERRY_DEFAULT_WORKER_MEMORY": "auto",
        "FERRY_DEFAULT_WORKER_CPU": "1",
        "FERRY_MAX_PODS_PER_JOB": "50",
        "FERRY_MAX_MEMORY_PER_POD": "8Gi",
        "FERRY_MAX_CPU_PER_POD": "4",
        "FERRY_WORKER_CPU_LIMIT": "false",
        "FERRY_NOTIFY_ALLOW_HTTP": "false",
        "FERRY_MAX_JOBS_PER_NAMESPACE": "10",
        # Secure by default: no workload identity anywhere, only the built-in endpoint refusals.
        "FERRY_WORKLOAD_IDENTITY_NAMESPACES": "",
        "FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR": "{}",
        "FERRY_ALLOWED_ENDPOINTS": "",
        "FERRY_CLUSTER_CIDRS": "",
        "FERRY_MAX_PLANNING_PER_NAMESPACE": "2",
        "FERRY_LISTING_DEADLINE_SECONDS": "7200",
        "FERRY_MAX_OBJECTS_PER_COPYJOB": "20000000",
        "FERRY_PLANNER_PODS": "1",
        "FERRY_PRICES": "",  # the default price table
        "FERRY_AGGREGATE_INTERVAL_SECONDS": "5",
        "FERRY_RECONCILE_THREADS": "32",
        "MALLOC_ARENA_MAX": "2",
        "FERRY_METRICS_PORT": "9090",
        "FERRY_LIVENESS_PORT": "8080",
        # The pod's address: Prometheus and the kubelet's probe reach it (outside a pod the default is loopback).
        "FERRY_LISTEN_ADDRESS": "0.0.0.0",
        "FERRY_MAX_COPYJOB_SERIES": "1000",
    }
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), image


def test_operator_env_from_values(full_objects: list[dict[str, Any]]) -> None:
    env = {e["name"]: e["value"] for e in operator_container(full_objects)["env"]}
    assert env["FERRY_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["FERRY_MAX_PODS_PER_JOB"] == "20"
    assert env["FERRY_DEFAULT_WORKER_MEMORY"] == "2Gi"
    assert "@sha256:" in env["FERRY_WORKER_IMAGE"]
    assert env["FERRY_WORKER_IMAGE"] == operator_container(full_objects)["image"]
    assert env["FERRY_WORKLOAD_IDENTITY_NAMESPACES"] == "team-b"
    assert json.loads(env["FERRY_WORKLOAD_IDENTITY_NAMESPACE_SELECTOR"]) == {
        "matchLabels": {"platform.example.com/workload-identity": "allowed"},
        "matchExpressions": [{"key": "platform.example.com/frozen", "operator": "DoesNotExist"}],
    }
    assert (env["FERRY_MAX_CPU_PER_POD"], env["FERRY_WORKER_CPU_LIMIT"]) == ("2500m", "true")
    assert env["FERRY_ALLOWED_ENDPOINTS"] == "10.20.0.0/16,minio.storage.svc.cluster.local"
    assert env["FERRY_CLUSTER_CIDRS"] == "10.244.0.0/16,10.96.0.0/12,fd00:10:96::/112"
    assert (
        env["FERRY_MAX_PLANNING_PER_NAMESPACE"],
        env["FERRY_LISTING_DEADLINE_SECONDS"],
        env["FERRY_MAX_OBJECTS_PER_COPYJOB"],
        env["FERRY_PLANNER_PODS"],
    ) == ("3", "600", "5000000", "4")


def test_the_operator_reads_the_chart_s_policy(full_objects: list[dict[str, Any]]) -> None:
    """What the chart renders is what the operator's settings parse (a typo in a CIDR fails here, not
    at the operator's start in a cluster)."""
    from ferry.operator.settings import OperatorSettings

    env = {e["name"]: e["value"] for e in operator_container(full_objects)["env"]}
    settings = OperatorSettings.from_env(env)
    assert settings.workload_identity_namespaces == ("team-b",)
    selector = settings.workload_identity_selector
    assert selector is not None
    assert selector.matches({"platform.example.com/workload-identity": "allowed"})
    assert not selector.matches(
        {"platform.example.com/workload-identity": "allowed", "platform.example.com/frozen": ""}
    )
    assert (settings.max_cpu_per_pod, settings.worker_cpu_limit) == (2500, True)
    assert settings.endpoints.allowed_hosts == {"minio.storage.svc.cluster.local"}
    assert [str(n) for n in settings.endpoints.allowed_networks] == ["10.20.0.0/16"]
    assert "10.96.0.0/12" in {str(n) for n, _what in settings.endpoints.refused}
    assert (settings.max_planning_per_namespace, settings.listing_deadline_seconds) == (3, 600.0)
    assert settings.max_objects_per_copyjob == 5_000_000
    assert (settings.listen_address, settings.max_copyjob_series) == ("::", 200)
    assert (settings.prices.name, settings.prices.currency, settings.prices.internet_egress_per_gb) == (
        "Internal rates",
        "EUR",
        0,
    )


def test_worker_service_account_has_no_token_and_no_rbac(objects: list[dict[str, Any]]) -> None:
    workers = [o for o in of_kind(objects, "ServiceAccount") if o["metadata"]["name"] == f"{RELEASE}-worker"]
    assert workers
    for account in workers:
        assert account["automountServiceAccountToken"] is False
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        names = {s["name"] for s in binding["subjects"]}
        assert f"{RELEASE}-worker" not in names, f"{binding['metadata']['name']} binds the worker account"


def test_worker_service_account_in_every_watched_namespace(full_objects: list[dict[str, Any]]) -> None:
    namespaces = {
        o["metadata"]["namespace"]
        for o in of_kind(full_objects, "ServiceAccount")
        if o["metadata"]["name"] == f"{RELEASE}-worker"
    }
    assert namespaces == {NAMESPACE, "team-a", "team-b"}


# -- RBAC -----------------------------------------------------------------------------------------


def rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for role in of_kind(objects, kind) for rule in role["rules"]]


def grants(rule_list: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rule_list
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


#: What the operator's own API adapter calls (operator/kube.py; checked against its source below).
ADAPTER = {
    ("ferry.dev", "copyjobs/status", "patch"),
    *(("batch", "jobs", v) for v in ("get", "create", "patch", "delete")),
    *(("", "configmaps", v) for v in ("get", "create", "patch", "delete")),
    ("", "pods", "list"),
    ("", "serviceaccounts", "get"),
}
#: What kopf calls: it lists, watches and patches the CopyJobs (never a GET of one), posts core Events
#: (never patches them; not events.k8s.io). `copyjobs/finalizers` is the API server's: children with
#: blockOwnerDeletion need it under the OwnerReferencesPermissionEnforcement admission plugin.
KOPF = {
    *(("ferry.dev", "copyjobs", v) for v in ("list", "watch", "patch")),
    ("ferry.dev", "copyjobs/finalizers", "update"),
    ("", "events", "create"),
}
NAMESPACED = ADAPTER | KOPF
#: Cluster-wide in every mode: EndpointBudgets are cluster-scoped. kopf lists and watches them; the adapter
#: patches their status (Kube.patch_budget_status), and nothing else of them.
BUDGETS = {
    *(("ferry.dev", "endpointbudgets", v) for v in ("list", "watch")),
    ("ferry.dev", "endpointbudgets/status", "patch"),
}
#: Cluster-wide in every mode: kopf's discovery, and the operator's watch of Namespaces' labels when the
#: platform sets workloadIdentity.namespaceSelector (a kopf index; list and watch, never a GET).
DISCOVERY = {
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")),
    *(("", "namespaces", v) for v in ("list", "watch")),
}


def test_rbac_has_no_wildcards_or_versions(objects: list[dict[str, Any]]) -> None:
    for rule in rules(objects, "Role") + rules(objects, "ClusterRole"):
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in value for value in rule[key]), f"wildcard in {rule}"
        assert not any("/" in group for group in rule["apiGroups"]), f"a version in apiGroups: {rule}"
        assert "resourceNames" not in rule or rule["resourceNames"]


def test_the_adapter_calls_exactly_what_rbac_grants_it() -> None:
    """Every API call of operator/kube.py is counted as API_REQUESTS.labels(verb, resource): the set of
    those is the adapter's part of the grants, no more (a verb nothing calls) and no less."""
    source = (REPO / "operator" / "kube.py").read_text()
    called = set(re.findall(r'API_REQUESTS\.labels\("(\w+)", "([\w/]+)"\)', source))
    groups = {"jobs": "batch", "copyjobs/status": "ferry.dev", "endpointbudgets/status": "ferry.dev"}
    assert {(groups.get(r, ""), r, v) for v, r in called} == ADAPTER | {
        g for g in BUDGETS if g[1] == "endpointbudgets/status"
    }


def test_cluster_wide_rbac(default_objects: list[dict[str, Any]]) -> None:
    assert of_kind(default_objects, "Role") == []
    assert grants(rules(default_objects, "ClusterRole")) == NAMESPACED | DISCOVERY | BUDGETS
    binding = the(default_objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_namespaced_rbac(full_objects: list[dict[str, Any]]) -> None:
    assert grants(rules(full_objects, "ClusterRole")) == DISCOVERY | BUDGETS
    roles = of_kind(full_objects, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED
    bindings = of_kind(full_objects, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


# -- optional objects -----------------------------------------------------------------------------


def test_optional_objects_are_off_by_default(default_objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in default_objects}
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        # On by default, like RBAC: least privilege is not an option (admissionPolicy.enabled turns it off).
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }


def test_monitors(full_objects: list[dict[str, Any]]) -> None:
    service_monitor = the(full_objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pod_monitor = the(full_objects, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert pod_monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "status", "path": "/metrics", "interval": "15s"}
    ]
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_network_policies(full_objects: list[dict[str, Any]]) -> None:
    policies = {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p for p in of_kind(full_objects, "NetworkPolicy")
    }
    operator = policies[(NAMESPACE, f"{RELEASE}-operator")]
    assert operator["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in operator["spec"]["egress"] for p in rule["ports"]}
    # The API server (by address) and the pods' status port: never S3, which planner and worker pods
    # speak, and no DNS, which only S3 endpoint names needed.
    assert egress_ports == {443, 6443, 8080}
    pods = next(r for r in operator["spec"]["egress"] if {"port": 8080, "protocol": "TCP"} in r["ports"])
    components = {"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker", "planner"]}
    assert components in pods["to"][0]["podSelector"]["matchExpressions"]
    for namespace in ("team-a", "team-b"):
        worker = policies[(namespace, f"{RELEASE}-workers")]
        assert worker["spec"]["policyTypes"] == ["Ingress"]
        assert components in worker["spec"]["podSelector"]["matchExpressions"]
        (rule,) = worker["spec"]["ingress"]
        assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
        peer = rule["from"][0]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_dashboard(full_objects: list[dict[str, Any]]) -> None:
    config_map = the(full_objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["ferry.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "ferry.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"\bferry_[a-z_]+", exprs))
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert used == METRICS


def test_standard_labels(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{obj['kind']} {obj['metadata']['name']} lacks {key}"
        assert labels["helm.sh/chart"].startswith("ferry-")


def test_pdb_never_blocks_drains(full_objects: list[dict[str, Any]]) -> None:
    pdb = the(full_objects, "PodDisruptionBudget")
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_the_namespace_label_watch_is_granted_in_every_mode(objects: list[dict[str, Any]]) -> None:
    """The operator learns Namespaces' labels from a kopf index (operator/handlers.py), which lists and
    watches them cluster-wide whatever watchNamespaces says; the ClusterRole grants exactly that."""
    source = (REPO / "operator" / "handlers.py").read_text()
    assert re.findall(r"@kopf\.(\w+)\(\"v1\", \"namespaces\"", source) == ["index"]
    granted = grants(rules(objects, "ClusterRole"))
    assert {g for g in granted if g[1] == "namespaces"} == {
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }


# -- the admission policy on the operator's writes ---------------------------------------------------


def policy_and_binding(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return the(objects, "ValidatingAdmissionPolicy"), the(objects, "ValidatingAdmissionPolicyBinding")


def test_the_admission_policy_holds_the_operator_s_own_account_everywhere(
    objects: list[dict[str, Any]],
) -> None:
    policy, binding = policy_and_binding(objects)
    name = policy["metadata"]["name"]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    # Bound in every namespace (no matchResources), denying: a warning or an audit note stops nothing.
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    account = the(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    (condition,) = policy["spec"]["matchConditions"]
    assert (
        condition["expression"]
        == f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{account}'"
    )
    matched = {
        (group, resource, operation)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }
    # What RBAC lets the operator write, less Events (kopf posts them) and CopyJobs (its own resource).
    assert matched == {
        (group, resource, operation)
        for group, resource in (("", "configmaps"), ("batch", "jobs"))
        for operation in ("CREATE", "UPDATE", "DELETE")
    }
    for validation in policy["spec"]["validations"]:
        assert name in validation["messageExpression"] and validation["reason"] == "Forbidden"


def test_the_admission_policy_asks_for_exactly_what_the_operator_puts_on_its_children(
    default_objects: list[dict[str, Any]],
) -> None:
    """The labels and ownerReference the policy requires are those of operator/render.py: a change to
    one without the other fails here, not as a denied write in a cluster."""
    from ferry.operator.render import LABEL_COPYJOB, Owner, labels

    policy, _binding = policy_and_binding(default_objects)
    variables = {v["name"]: " ".join(v["expression"].split()) for v in policy["spec"]["variables"]}
    managed_by = labels("cj", "plan")["app.kubernetes.io/managed-by"]
    reference = Owner("cj", "ns", "uid").reference()
    assert reference["controller"] is True
    for variable, obj in (("writesFerrys", "object"), ("touchesFerrys", "oldObject")):
        expression = variables[variable]
        for fragment in (
            f"{obj}.metadata.labels['app.kubernetes.io/managed-by'] == '{managed_by}'",
            f"'{LABEL_COPYJOB}' in {obj}.metadata.labels",
            f"r.apiVersion == '{reference['apiVersion']}'",
            f"r.kind == '{reference['kind']}'",
            "has(r.controller) && r.controller",
            f"r.name == {obj}.metadata.labels['{LABEL_COPYJOB}']",
        ):
            assert fragment in expression, (variable, fragment)
    rules = [v["expression"] for v in policy["spec"]["validations"]]
    assert rules == [
        "request.operation == 'CREATE' || variables.touchesFerrys",
        "request.operation == 'DELETE' || variables.writesFerrys",
    ]


def test_the_admission_policy_follows_the_operator_s_service_account_name(helm: Path) -> None:
    objects = render(helm, "--set", "serviceAccount.name=copy-operator", "--set", "fullnameOverride=copy")
    policy, binding = policy_and_binding(objects)
    assert policy["metadata"]["name"] == binding["spec"]["policyName"] == "copy-operator-writes"
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"].endswith(f"'system:serviceaccount:{NAMESPACE}:copy-operator'")


def test_the_admission_policy_can_be_left_out_on_clusters_before_1_30(helm: Path) -> None:
    objects = render(helm, "--set", "admissionPolicy.enabled=false")
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert "ClusterRole" in kinds


# -- the image ------------------------------------------------------------------------------------


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a numeric non-root uid"
    # Users get python:3.11-slim; `make image` passes a base made from Debian's packages instead.
    assert re.search(r"^ARG BASE=python:3\.11-slim\s*$", text, flags=re.MULTILINE), "default base changed"
    assert re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)[-1] == "${BASE}", "final stage is not BASE"
    assert re.search(r'^ENTRYPOINT \["ferry"\]', text, flags=re.MULTILINE)
    assert "[dev]" not in text, "the image must not install dev extras"
    assert (REPO / ".dockerignore").is_file()
