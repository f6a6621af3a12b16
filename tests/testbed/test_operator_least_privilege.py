"""Least privilege of the operator in cluster-wide mode, proven on the testbed's kube-apiserver with the
chart's RBAC and its ValidatingAdmissionPolicy applied (testbed/install.py).

Every request here is made with the testbed's kubectl as the operator's ServiceAccount, with a token
from the TokenRequest API (`kubectl create token`). `kubectl auth can-i` shows what RBAC grants: create
and patch on every ConfigMap and Job of the cluster, kube-system included. Real requests show what the
policy takes away again: anything that is not a ConfigMap or Job Ferry makes for a CopyJob (its labels
and a controller ownerReference to that CopyJob). Each test is named after the write a compromised or
confused operator would try. Last, the operator's own end-to-end flow under both still copies a CopyJob.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from support.operator import GROUP, PLURAL, VERSION, Jobs, copyjob, events, fill, md5s, spec_for
from support.wait import wait_for
from testbed.binaries import TestBinaries
from testbed.controlplane import write_kubeconfig
from testbed.install import NAMESPACE, RELEASE, OperatorProcess, install

pytestmark = pytest.mark.timeout(240)

POLICY = f"{RELEASE}-operator-writes"
DENIED_BY_POLICY = f"ValidatingAdmissionPolicy '{POLICY}'"
MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COPYJOB = "ferry.dev/copyjob"


@dataclass(frozen=True)
class Kubectl:
    """The testbed's kubectl, as one identity."""

    binary: Path
    kubeconfig: Path

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def can_i(self, verb: str, resource: str, namespace: str | None) -> bool:
        scope = ["-n", namespace] if namespace else []
        proc = self("auth", "can-i", verb, resource, *scope)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"


@pytest.fixture(scope="module")
def admin(cluster: Any, testbin: TestBinaries) -> Kubectl:
    install(cluster.api, testbin.path("helm"))
    return Kubectl(testbin.path("kubectl"), cluster.kubeconfig)


@pytest.fixture(scope="module")
def as_operator(admin: Kubectl, cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl as the operator's ServiceAccount, once the policy is enforced: a policy takes a moment
    after its creation to reach the admission plugin, so a harmless server-side dry run is repeated
    (bounded) until the policy answers it."""
    proc = admin("create", "token", RELEASE, "-n", NAMESPACE, "--duration=2h")
    assert proc.returncode == 0, proc.stderr
    controlplane = cluster.controlplane
    path = tmp_path_factory.mktemp("operator-identity") / "operator.kubeconfig"
    user = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    operator = Kubectl(
        admin.binary,
        write_kubeconfig(path, controlplane.url, controlplane.pki.ca_cert, proc.stdout.strip(), user),
    )
    assert operator("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == user

    def enforced() -> bool:
        probe = operator("create", "configmap", "policy-probe", "-n", "default", "--dry-run=server")
        return probe.returncode != 0 and DENIED_BY_POLICY in probe.stderr

    wait_for(f"{POLICY} enforced", enforced, timeout=30, interval=0.5)
    return operator


@pytest.fixture
def owner(cluster: Any, namespace: str) -> dict[str, Any]:
    """A real CopyJob to point ownerReferences at; its Secrets do not exist, so an operator running
    meanwhile only stalls it and makes nothing."""
    custom = client.CustomObjectsApi(cluster.api)
    body = copyjob("owner", spec_for("https://s3.example.com", "src-bucket", "dst-bucket"))
    created: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return created


def reference(copyjob_body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    meta = copyjob_body["metadata"]
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CopyJob",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {k: v for k, v in {**ref, **changes}.items() if v is not None}


def ferry_labels(name: str, component: str = "plan") -> dict[str, str]:
    """What operator/render.py labels() puts on every child."""
    return {
        "app.kubernetes.io/name": "ferry",
        "app.kubernetes.io/component": component,
        MANAGED_BY: "ferry-operator",
        LABEL_COPYJOB: name,
    }


def configmap(name: str, namespace: str, labels: dict[str, str], refs: list[dict[str, Any]]) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if refs:
        meta["ownerReferences"] = refs
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}})


def suspended_job(name: str, namespace: str, labels: dict[str, str], refs: list[dict[str, Any]]) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if refs:
        meta["ownerReferences"] = refs
    container = {"name": "c", "image": "example.invalid/none", "command": ["true"]}
    spec = {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}
    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec})


def denied_by_policy(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and DENIED_BY_POLICY in proc.stderr


# -- what RBAC grants ------------------------------------------------------------------------------

CAN_I = [
    # verb, resource, namespace (None: cluster-scoped or all), RBAC says
    ("create", "configmaps", "kube-system", True),
    ("patch", "configmaps", "kube-system", True),
    ("update", "configmaps", "default", False),
    ("create", "jobs.batch", "kube-system", True),
    ("patch", "jobs.batch", "default", True),
    ("delete", "jobs.batch", "kube-system", True),
    ("list", "configmaps", "default", False),
    ("list", "jobs.batch", "default", False),
    ("list", "secrets", "kube-system", False),
    ("create", "pods", "default", False),
    ("create", "events", "default", True),
    ("patch", "events", "default", False),
    ("list", "namespaces", None, True),
    ("watch", "namespaces", None, True),
    ("get", "namespaces", None, False),
    ("patch", "namespaces", None, False),
    ("create", "copyjobs.ferry.dev", "default", False),
    ("patch", "copyjobs.ferry.dev", "default", True),
    ("patch", "copyjobs.ferry.dev/status", "default", True),
    ("create", "validatingadmissionpolicies.admissionregistration.k8s.io", None, False),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io", None, False),
]


def test_kubectl_auth_can_i_shows_rbac_lets_the_operator_write_configmaps_and_jobs_in_every_namespace(
    as_operator: Kubectl,
) -> None:
    """What the chart's ClusterRole grants, asked the way an administrator would; the operator cannot
    touch the policy that holds it either."""
    answers = {(verb, resource, ns): as_operator.can_i(verb, resource, ns) for verb, resource, ns, _ in CAN_I}
    assert answers == {(verb, resource, ns): expected for verb, resource, ns, expected in CAN_I}


# -- what the policy refuses -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["kube-system", "tenant"])
def test_the_operator_creating_an_unlabelled_configmap_is_denied(
    as_operator: Kubectl, admin: Kubectl, namespace: str, where: str
) -> None:
    """The attack: a ConfigMap of the operator's choosing in kube-system (say, one a node agent reads its
    configuration from) or in a tenant's namespace. RBAC allows it; the policy does not."""
    target = "kube-system" if where == "kube-system" else namespace
    name = f"planted-{uuid.uuid4().hex[:8]}"
    assert as_operator.can_i("create", "configmaps", target)
    proc = as_operator("create", "configmap", name, "-n", target, "--from-literal=config=evil")
    assert denied_by_policy(proc), proc.stderr
    for fragment in (
        f"ConfigMap {target}/{name} needs the labels app.kubernetes.io/managed-by=ferry-operator",
        "a controller ownerReference to that CopyJob",
    ):
        assert fragment in proc.stderr, proc.stderr
    assert admin("get", "configmap", name, "-n", target).returncode != 0  # not created


def test_the_operator_patching_a_configmap_not_made_by_ferry_is_denied_even_to_relabel_it_as_ferrys(
    as_operator: Kubectl, admin: Kubectl, owner: dict[str, Any]
) -> None:
    """The attack: rewrite a ConfigMap the cluster trusts (an aws-auth of kube-system), first plainly,
    then by dressing it up as Ferry's: labels and an ownerReference to a real CopyJob in one patch."""
    name = f"aws-auth-{uuid.uuid4().hex[:8]}"
    created = admin("create", "configmap", name, "-n", "kube-system", "--from-literal=mapRoles=admins-only")
    assert created.returncode == 0, created.stderr
    try:
        assert as_operator.can_i("patch", "configmaps", "kube-system")
        plain = as_operator(
            "patch",
            "configmap",
            name,
            "-n",
            "kube-system",
            "--type=merge",
            "-p",
            '{"data":{"mapRoles":"evil"}}',
        )
        assert denied_by_policy(plain), plain.stderr
        assert f"ConfigMap kube-system/{name} is not one" in plain.stderr, plain.stderr
        disguise = {
            "metadata": {"labels": ferry_labels("owner"), "ownerReferences": [reference(owner)]},
            "data": {"mapRoles": "evil"},
        }
        dressed = as_operator(
            "patch", "configmap", name, "-n", "kube-system", "--type=merge", "-p", json.dumps(disguise)
        )
        assert denied_by_policy(dressed), dressed.stderr
        stored = json.loads(admin("get", "configmap", name, "-n", "kube-system", "-o", "json").stdout)
        assert stored["data"] == {"mapRoles": "admins-only"} and MANAGED_BY not in stored["metadata"].get(
            "labels", {}
        )
        # Deleting it is refused too: by RBAC where the chart grants no ConfigMap deletes, else by the policy.
        deleted = as_operator("delete", "configmap", name, "-n", "kube-system", "--wait=false")
        by_rbac = "cannot delete resource" in deleted.stderr
        assert by_rbac != as_operator.can_i("delete", "configmaps", "kube-system"), deleted.stderr
        assert by_rbac or denied_by_policy(deleted), deleted.stderr
        assert admin("get", "configmap", name, "-n", "kube-system").returncode == 0
    finally:
        admin("delete", "configmap", name, "-n", "kube-system", "--ignore-not-found")


def test_the_operator_patching_or_deleting_a_job_not_made_by_ferry_is_denied(
    as_operator: Kubectl, admin: Kubectl, namespace: str
) -> None:
    """The attack: resume a tenant's suspended Job, or delete it. RBAC allows both on every Job."""
    created = admin("create", "-f", "-", stdin=suspended_job("nightly", namespace, {"team": "a"}, []))
    assert created.returncode == 0, created.stderr
    assert as_operator.can_i("patch", "jobs.batch", namespace)
    assert as_operator.can_i("delete", "jobs.batch", namespace)
    resumed = as_operator(
        "patch", "job", "nightly", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    assert denied_by_policy(resumed), resumed.stderr
    assert f"Job {namespace}/nightly is not one" in resumed.stderr, resumed.stderr
    deleted = as_operator("delete", "job", "nightly", "-n", namespace, "--wait=false")
    assert denied_by_policy(deleted), deleted.stderr
    stored = json.loads(admin("get", "job", "nightly", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["suspend"] is True and not stored["metadata"].get("deletionTimestamp")


FORGERIES = [
    # id, labels, ownerReferences (from the CopyJob `owner`)
    ("labels-without-owner", ferry_labels("owner"), lambda cj: []),
    ("owner-without-labels", {"team": "a"}, lambda cj: [reference(cj)]),
    ("owner-not-controller", ferry_labels("owner"), lambda cj: [reference(cj, controller=None)]),
    (
        "owner-another-kind",
        ferry_labels("owner"),
        lambda cj: [reference(cj, kind="Deployment", apiVersion="apps/v1")],
    ),
    ("managed-by-someone-else", {**ferry_labels("owner"), MANAGED_BY: "Helm"}, lambda cj: [reference(cj)]),
    ("label-names-another-copyjob", ferry_labels("other"), lambda cj: [reference(cj)]),
]


@pytest.mark.parametrize(("labels", "refs"), [f[1:] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_the_operator_creating_a_configmap_that_is_only_partly_ferrys_is_denied(
    as_operator: Kubectl,
    admin: Kubectl,
    owner: dict[str, Any],
    namespace: str,
    labels: dict[str, str],
    refs: Any,
) -> None:
    proc = as_operator("create", "-f", "-", stdin=configmap("owner-plan", namespace, labels, refs(owner)))
    assert denied_by_policy(proc), proc.stderr
    assert admin("get", "configmap", "owner-plan", "-n", namespace).returncode != 0


def test_the_operator_may_write_what_it_makes_for_a_copyjob_and_post_events(
    as_operator: Kubectl, admin: Kubectl, owner: dict[str, Any], namespace: str
) -> None:
    """What the operator does write goes through: a ConfigMap and a Job with Ferry's labels and the
    CopyJob as controller, patched and (the Job) deleted; and an Event, which the policy does not match."""
    refs = [reference(owner)]
    made = as_operator(
        "create",
        "-f",
        "-",
        stdin=configmap("owner-progress", namespace, ferry_labels("owner", "progress"), refs),
    )
    assert made.returncode == 0, made.stderr
    patched = as_operator(
        "patch", "configmap", "owner-progress", "-n", namespace, "--type=merge", "-p", '{"data":{"0":"{}"}}'
    )
    assert patched.returncode == 0, patched.stderr
    # Removing Ferry's labels from its own object is a write of an object that is not Ferry's.
    unlabelled = as_operator("label", "configmap", "owner-progress", "-n", namespace, f"{MANAGED_BY}-")
    assert denied_by_policy(unlabelled), unlabelled.stderr

    job = as_operator(
        "create",
        "-f",
        "-",
        stdin=suspended_job("owner-workers", namespace, ferry_labels("owner", "worker"), refs),
    )
    assert job.returncode == 0, job.stderr
    scaled = as_operator(
        "patch", "job", "owner-workers", "-n", namespace, "--type=merge", "-p", '{"spec":{"parallelism":2}}'
    )
    assert scaled.returncode == 0, scaled.stderr
    deleted = as_operator("delete", "job", "owner-workers", "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr

    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"owner.{uuid.uuid4().hex[:8]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CopyJob",
            "name": "owner",
            "namespace": namespace,
        },
        "reason": "Planned",
        "message": "an Event as the operator posts them",
        "type": "Normal",
        "source": {"component": "ferry-operator"},
    }
    posted = as_operator("create", "-f", "-", stdin=yaml.safe_dump(event))
    assert posted.returncode == 0, posted.stderr


# -- the operator's own flow, under the chart's RBAC and the policy --------------------------------


def test_a_copyjob_copies_every_object_with_the_operator_held_to_the_policy(
    as_operator: Kubectl,
    operator: OperatorProcess,
    jobs: Jobs,
    s3: Any,
    versitygw: Any,
    cluster: Any,
    namespace: str,
) -> None:
    source, destination = fill(s3, 120)
    jobs.create(
        "held",
        spec_for(versitygw.endpoint.url, source, destination, parallelism=2, shardSize={"maxObjects": 50}),
    )
    status = jobs.wait_phase("held", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["objects"]["copied"] == 120
    assert md5s(s3, destination) == md5s(s3, source)
    uid = jobs.get("held")["metadata"]["uid"]
    children = [
        *cluster.core.list_namespaced_config_map(namespace, label_selector=f"{LABEL_COPYJOB}=held").items,
        *cluster.batch.list_namespaced_job(namespace, label_selector=f"{LABEL_COPYJOB}=held").items,
    ]
    names = {c.metadata.name for c in children}
    assert {"held-plan", "held-progress", "held-workers"} <= names, names
    for child in children:  # what the policy let through is what it asks for
        assert child.metadata.labels[MANAGED_BY] == "ferry-operator"
        assert [(r.kind, r.uid, r.controller) for r in child.metadata.owner_references] == [
            ("CopyJob", uid, True)
        ]
    assert {"Planned", "Started", "Completed"} <= {r for r, _m in events(cluster, namespace, "held")}
    assert DENIED_BY_POLICY not in operator.log.read_text(errors="replace")
