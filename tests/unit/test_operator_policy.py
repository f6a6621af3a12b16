"""The platform's tenancy policy (operator/policy.py): whose identity a CopyJob may use, and which
addresses its endpoints may reach. Pure decisions, table-driven; names are resolved by a stand-in."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.model import CopyJobSpec
from ferry.operator import netguard
from ferry.operator.policy import (
    CREDENTIALS_REQUIRED,
    WORKLOAD_IDENTITY_NOT_ALLOWED,
    EndpointPolicy,
    Identity,
    LabelSelector,
    PolicyRefusal,
    address_refusal,
    endpoint_refusal,
    host_of,
    identity,
    parse_allow_entry,
    parse_selector,
)

NS = "tenant-a"


def spec(source: dict[str, Any] | None = None, **extra: Any) -> CopyJobSpec:
    raw: dict[str, Any] = {
        "source": {"bucket": "src-bucket", "credentialsSecret": "src", **(source or {})},
        "destination": {"bucket": "dst-bucket", "credentialsSecret": "dst"},
        **extra,
    }
    return CopyJobSpec.model_validate(raw)


NO_SECRET = {"credentialsSecret": None}

# -- credentials ----------------------------------------------------------------------------------

IDENTITY_CASES = [
    # id, spec, namespaces allowed workload identity, expected Identity or (reason, fragments)
    ("secrets-everywhere", spec(), (), Identity()),
    ("secrets-everywhere-allowed-namespace", spec(), (NS,), Identity()),
    (
        "no-secret-not-allowed",
        spec(NO_SECRET),
        (),
        (
            CREDENTIALS_REQUIRED,
            (
                "spec.source has no credentialsSecret",
                f"in namespace {NS}",
                "name it in spec.source.credentialsSecret",
                "never uses its own or the node's cloud identity",
                "workloadIdentity.namespaces",
            ),
        ),
    ),
    (
        "no-secret-other-namespace-allowed",
        spec(NO_SECRET),
        ("tenant-b",),
        (CREDENTIALS_REQUIRED, ("spec.source has no credentialsSecret",)),
    ),
    (
        "no-secret-anywhere",
        CopyJobSpec.model_validate(
            {
                "source": {"bucket": "src-bucket"},
                "destination": {"bucket": "dst-bucket"},
                "report": {"bucket": "rpt"},
            }
        ),
        (),
        (
            CREDENTIALS_REQUIRED,
            ("spec.source and spec.destination and spec.report have no credentialsSecret",),
        ),
    ),
    (
        "report-without-secret",
        spec(report={"bucket": "rpt"}),
        (),
        (CREDENTIALS_REQUIRED, ("spec.report has no credentialsSecret",)),
    ),
    (
        "allowed-but-no-account",
        spec(NO_SECRET),
        (NS,),
        (CREDENTIALS_REQUIRED, ("set spec.serviceAccountName to a ServiceAccount of namespace tenant-a",)),
    ),
    ("allowed-with-account", spec(NO_SECRET, serviceAccountName="copier"), (NS,), Identity("copier")),
    ("allowed-account-and-secrets", spec(serviceAccountName="copier"), (NS,), Identity("copier")),
    (
        "account-where-not-allowed",
        spec(serviceAccountName="copier"),
        (),
        (WORKLOAD_IDENTITY_NOT_ALLOWED, ("remove spec.serviceAccountName",)),
    ),
    (
        "account-without-secret-where-not-allowed",
        spec(NO_SECRET, serviceAccountName="copier"),
        (),
        (CREDENTIALS_REQUIRED, ("spec.source has no credentialsSecret",)),
    ),
]


@pytest.mark.parametrize(
    ("copyjob", "allowed", "expected"), [c[1:] for c in IDENTITY_CASES], ids=[c[0] for c in IDENTITY_CASES]
)
def test_identity(copyjob: CopyJobSpec, allowed: tuple[str, ...], expected: Any) -> None:
    if isinstance(expected, Identity):
        assert identity(copyjob, NS, allowed) == expected
        return
    reason, fragments = expected
    with pytest.raises(PolicyRefusal) as raised:
        identity(copyjob, NS, allowed)
    assert raised.value.reason == reason
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))


def test_only_workload_identity_is_ambient() -> None:
    assert not Identity().ambient and Identity("copier").ambient


# -- endpoints ------------------------------------------------------------------------------------

DEFAULT = EndpointPolicy.build()
PLATFORM = EndpointPolicy.build(
    allow=["10.20.0.0/16", "minio.storage.svc.cluster.local", "127.0.0.1"],
    cluster_cidrs=["10.96.0.0/12", "10.244.0.0/16", "fd00:10:96::/112"],
)

ADDRESS_CASES = [
    # id, address, policy, refused because (fragment) or None
    ("public-v4", "52.216.1.1", DEFAULT, None),
    ("public-v6", "2600:1f18::1", DEFAULT, None),
    ("loopback", "127.0.0.1", DEFAULT, "loopback"),
    ("loopback-other", "127.8.9.10", DEFAULT, "loopback"),
    ("loopback-v6", "::1", DEFAULT, "loopback"),
    ("loopback-v4-mapped", "::ffff:127.0.0.1", DEFAULT, "loopback"),
    ("this-host", "0.0.0.0", DEFAULT, "this host"),
    ("this-host-v6", "::", DEFAULT, "this host"),
    ("metadata", "169.254.169.254", DEFAULT, "link-local"),
    ("metadata-v6", "fd00:ec2::254", DEFAULT, "metadata"),
    ("link-local-v6", "fe80::1%eth0", DEFAULT, "link-local"),
    ("private-not-listed", "10.96.0.1", DEFAULT, None),  # the cluster's ranges are the platform's to name
    ("service-range", "10.96.0.1", PLATFORM, "the cluster's own range"),
    ("pod-range", "10.244.3.7", PLATFORM, "the cluster's own range"),
    ("service-range-v6", "fd00:10:96::a", PLATFORM, "the cluster's own range"),
    ("allowed-cidr", "10.20.5.5", PLATFORM, None),
    ("allowed-address", "127.0.0.1", PLATFORM, None),
    ("allowed-address-only", "127.0.0.2", PLATFORM, "loopback"),
    ("metadata-still-refused", "169.254.169.254", PLATFORM, "link-local"),
    ("not-an-address", "example.com", DEFAULT, "not an IP address"),
]


@pytest.mark.parametrize(
    ("address", "policy", "why"), [c[1:] for c in ADDRESS_CASES], ids=[c[0] for c in ADDRESS_CASES]
)
def test_address_refusal(address: str, policy: EndpointPolicy, why: str | None) -> None:
    refusal = address_refusal(address, policy)
    if why is None:
        assert refusal is None
    else:
        assert refusal is not None and why in refusal, refusal


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("10.20.0.0/16", "10.20.0.0/16"),
        ("10.20.1.2/16", "10.20.0.0/16"),  # not strict: the network the address is in
        ("127.0.0.1", "127.0.0.1/32"),
        (" fd00::/8 ", "fd00::/8"),
        ("MinIO.Storage.svc", "minio.storage.svc"),
    ],
)
def test_allow_entries(entry: str, parsed: str) -> None:
    assert str(parse_allow_entry(entry)) == parsed


@pytest.mark.parametrize(
    "entry", ["http://minio:9000", "minio:9000", "10.0.0.0/33", "under_score.example", ""]
)
def test_bad_allow_entries_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed endpoint"):
        EndpointPolicy.build(allow=[entry])


def test_a_bad_cluster_cidr_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="cluster CIDR"):
        EndpointPolicy.build(cluster_cidrs=["10.96.0.0/40"])


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1"),
        ("https://S3.Example.COM", "s3.example.com"),
        ("http://[::1]:8080", "::1"),
        ("http://[fd00:ec2::254]", "fd00:ec2::254"),
        ("https://minio.local:443", "minio.local"),
    ],
)
def test_host_of(endpoint: str, host: str) -> None:
    assert host_of(endpoint) == host


def test_a_name_is_refused_on_any_address_it_resolves_to() -> None:
    message = endpoint_refusal(
        "spec.source", "https://s3.evil.example", "s3.evil.example", ["52.1.1.1", "169.254.169.254"], DEFAULT
    )
    assert message is not None
    for fragment in (
        "spec.source.endpoint https://s3.evil.example",
        "s3.evil.example resolves to 169.254.169.254",
        "link-local",
        "endpoints.allow",
    ):
        assert fragment in message, (fragment, message)


def test_a_name_the_platform_allowed_is_used_whatever_it_resolves_to() -> None:
    host = "minio.storage.svc.cluster.local"
    assert endpoint_refusal("spec.source", f"http://{host}:9000", host, ["10.96.4.4"], PLATFORM) is None
    assert endpoint_refusal("spec.source", "http://other.svc:9000", "other.svc", ["10.96.4.4"], PLATFORM)


ENDPOINT_CASES = [
    # id, source location, what the stand-in resolver answers, refused field (or None)
    ("aws-default", {}, {}, None),
    (
        "public-name",
        {"endpoint": "https://s3.example.com", "addressingStyle": "path"},
        {"s3.example.com": ["52.1.1.1"]},
        None,
    ),
    ("loopback-address", {"endpoint": "http://127.0.0.1:9090"}, {"127.0.0.1": ["127.0.0.1"]}, "spec.source"),
    ("loopback-v6", {"endpoint": "http://[::1]:9090"}, {"::1": ["::1"]}, "spec.source"),
    (
        "metadata",
        {"endpoint": "http://169.254.169.254"},
        {"169.254.169.254": ["169.254.169.254"]},
        "spec.source",
    ),
    (
        "rebinding-name",
        {"endpoint": "https://s3.evil.example", "addressingStyle": "path"},
        {"s3.evil.example": ["127.0.0.1"]},
        "spec.source",
    ),
    (
        # virtual-host style: the client connects to <bucket>.<host>, which resolves on its own
        "virtual-host-of-bucket",
        {"endpoint": "https://s3.evil.example"},
        {"s3.evil.example": ["52.1.1.1"], "src-bucket.s3.evil.example": ["169.254.169.254"]},
        "spec.source",
    ),
    ("unresolvable", {"endpoint": "https://nowhere.invalid"}, {}, None),
]


@pytest.mark.parametrize(
    ("source", "answers", "refused"), [c[1:] for c in ENDPOINT_CASES], ids=[c[0] for c in ENDPOINT_CASES]
)
def test_endpoint_problem(
    monkeypatch: pytest.MonkeyPatch,
    source: dict[str, Any],
    answers: dict[str, list[str]],
    refused: str | None,
) -> None:
    monkeypatch.setattr(netguard, "resolve", lambda host: answers.get(host, []))
    problem = netguard.endpoint_problem(spec(source), DEFAULT)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(f"{refused}.endpoint"), problem


# -- namespaces selected by their labels ------------------------------------------------------------

TEAM = {"kubernetes.io/metadata.name": NS, "platform.example.com/tier": "gold", "env": "prod"}

SELECTOR_CASES = [
    # id, selector (as the chart gives it), namespace labels, matches
    ("match-labels", {"matchLabels": {"env": "prod"}}, TEAM, True),
    ("match-labels-wrong-value", {"matchLabels": {"env": "dev"}}, TEAM, False),
    ("match-labels-absent", {"matchLabels": {"team": "a"}}, TEAM, False),
    (
        "match-labels-all-of",
        {"matchLabels": {"env": "prod", "platform.example.com/tier": "gold"}},
        TEAM,
        True,
    ),
    (
        "match-labels-one-fails",
        {"matchLabels": {"env": "prod", "platform.example.com/tier": "silver"}},
        TEAM,
        False,
    ),
    ("in", {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "prod"]}]}, TEAM, True),
    (
        "in-other-values",
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]},
        TEAM,
        False,
    ),
    ("in-absent", {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, TEAM, False),
    ("notin", {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, TEAM, True),
    (
        "notin-listed",
        {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
        TEAM,
        False,
    ),
    (
        "notin-absent",
        {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
        TEAM,
        True,
    ),
    (
        "exists",
        {"matchExpressions": [{"key": "platform.example.com/tier", "operator": "Exists"}]},
        TEAM,
        True,
    ),
    ("exists-absent", {"matchExpressions": [{"key": "team", "operator": "Exists"}]}, TEAM, False),
    ("does-not-exist", {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, TEAM, True),
    (
        "does-not-exist-present",
        {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
        TEAM,
        False,
    ),
    (
        "labels-and-expressions",
        {"matchLabels": {"env": "prod"}, "matchExpressions": [{"key": "frozen", "operator": "DoesNotExist"}]},
        {**TEAM, "frozen": "true"},
        False,
    ),
    ("empty-value", {"matchLabels": {"env": ""}}, {"env": ""}, True),
    ("no-labels", {"matchLabels": {"env": "prod"}}, {}, False),
    (
        "by-name",
        {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NS]}]},
        TEAM,
        True,
    ),
    ("empty-selector-matches-all", {}, {}, True),  # Kubernetes' rule; settings turn {} into no selector
]


@pytest.mark.parametrize(
    ("raw", "labels", "matches"), [c[1:] for c in SELECTOR_CASES], ids=[c[0] for c in SELECTOR_CASES]
)
def test_label_selector_matches_as_kubernetes_does(
    raw: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert parse_selector(raw).matches(labels) is matches


SELECTOR_REFUSALS = [
    # id, selector, fragment of the message
    ("not-an-object", ["env=prod"], "must be an object"),
    ("unknown-field", {"matchLabel": {"env": "prod"}}, "unknown field 'matchLabel'"),
    ("labels-not-a-map", {"matchLabels": ["env"]}, "matchLabels must be a map"),
    ("bad-key", {"matchLabels": {"-env": "prod"}}, "is not a label key"),
    ("bad-prefix", {"matchLabels": {"Example.com/env": "prod"}}, "is not a label key"),
    ("bad-value", {"matchLabels": {"env": "prod env"}}, "is not a label value"),
    ("long-value", {"matchLabels": {"env": "v" * 64}}, "is not a label value"),
    ("value-not-a-string", {"matchLabels": {"env": True}}, "is not a label value"),
    ("expressions-not-a-list", {"matchExpressions": {"key": "env"}}, "must be a list"),
    (
        "unknown-operator",
        {"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["a"]}]},
        "'Equals' is not one of",
    ),
    (
        "in-without-values",
        {"matchExpressions": [{"key": "env", "operator": "In"}]},
        "needs at least one value",
    ),
    (
        "exists-with-values",
        {"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]},
        "takes no values",
    ),
    (
        "expression-unknown-field",
        {"matchExpressions": [{"key": "env", "operator": "Exists", "value": "a"}]},
        "key, operator and values",
    ),
    ("expression-without-key", {"matchExpressions": [{"operator": "Exists"}]}, "is not a label key"),
]


@pytest.mark.parametrize(
    ("raw", "fragment"), [c[1:] for c in SELECTOR_REFUSALS], ids=[c[0] for c in SELECTOR_REFUSALS]
)
def test_a_bad_selector_is_refused_naming_what_is_wrong(raw: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"workloadIdentity\.namespaceSelector") as raised:
        parse_selector(raw, "workloadIdentity.namespaceSelector")
    assert fragment in str(raised.value)


GOLD = parse_selector({"matchLabels": {"platform.example.com/tier": "gold"}})
SELECTED_CASES = [
    # id, spec, namespaces by name, selector, namespace labels, expected Identity or (reason, fragments)
    ("selected", spec(NO_SECRET, serviceAccountName="copier"), (), GOLD, TEAM, Identity("copier")),
    ("selected-with-secrets", spec(serviceAccountName="copier"), (), GOLD, TEAM, Identity("copier")),
    ("selected-secrets-only", spec(), (), GOLD, TEAM, Identity()),
    (
        "not-selected",
        spec(NO_SECRET, serviceAccountName="copier"),
        (),
        GOLD,
        {"platform.example.com/tier": "silver"},
        (
            CREDENTIALS_REQUIRED,
            ("spec.source has no credentialsSecret", "workloadIdentity.namespaceSelector"),
        ),
    ),
    (
        "not-selected-account",
        spec(serviceAccountName="copier"),
        (),
        GOLD,
        {},
        (WORKLOAD_IDENTITY_NOT_ALLOWED, ("remove spec.serviceAccountName",)),
    ),
    (
        "labels-unknown",
        spec(NO_SECRET, serviceAccountName="copier"),
        (),
        GOLD,
        None,
        (CREDENTIALS_REQUIRED, ()),
    ),
    (
        "by-name-without-labels",
        spec(NO_SECRET, serviceAccountName="copier"),
        (NS,),
        GOLD,
        None,
        Identity("copier"),
    ),
    ("no-selector", spec(NO_SECRET, serviceAccountName="copier"), (), None, TEAM, (CREDENTIALS_REQUIRED, ())),
]


@pytest.mark.parametrize(
    ("copyjob", "allowed", "selector", "labels", "expected"),
    [c[1:] for c in SELECTED_CASES],
    ids=[c[0] for c in SELECTED_CASES],
)
def test_identity_in_namespaces_selected_by_label(
    copyjob: CopyJobSpec,
    allowed: tuple[str, ...],
    selector: LabelSelector | None,
    labels: dict[str, str] | None,
    expected: Any,
) -> None:
    def decide() -> Identity:
        return identity(copyjob, NS, allowed, selector=selector, namespace_labels=labels)

    if isinstance(expected, Identity):
        assert decide() == expected
        return
    reason, fragments = expected
    with pytest.raises(PolicyRefusal) as raised:
        decide()
    assert raised.value.reason == reason
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))
