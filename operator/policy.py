"""The platform's tenancy policy: whose identity a CopyJob's requests carry, and which addresses its
endpoints may resolve to. Pure: values in, decisions out; the operator's adapters resolve names and
look ServiceAccounts up.

Credentials. A tenant must never borrow an identity the platform did not give them: the operator's own
(IRSA, an instance profile, its environment) or the node's. So every location needs a Secret of the
tenant's (`credentialsSecret`), except in namespaces the platform allows to run on workload identity (by
name, or by the Namespace's labels); there, a CopyJob names a ServiceAccount of its own namespace (`spec.serviceAccountName`) whose cloud
identity its worker pods use. Anything else stalls the CopyJob before anything is listed or started.

Endpoints. The operator sends requests to the endpoints tenants name, from its own pod. Unless the
platform allows them, addresses that reach the operator itself, the node's metadata service or the
cluster's own pods and Services are refused. The decision is made on every address a name resolves to
(a name can point anywhere), and again on the address each connection is really made to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.model import CopyJobSpec
from ferry.model.copyjob import HOSTNAME_PATTERN

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CREDENTIALS_REQUIRED = "CredentialsRequired"
WORKLOAD_IDENTITY_NOT_ALLOWED = "WorkloadIdentityNotAllowed"
ENDPOINT_NOT_ALLOWED = "EndpointNotAllowed"

#: Refused unless allowed, with what they are, for messages. 0.0.0.0/8 and :: reach the local host on
#: Linux; fd00:ec2::254 is the AWS metadata service's IPv6 address (169.254.169.254 is link-local).
ALWAYS_REFUSED: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("0.0.0.0/8", "this host"),
    ("::/128", "this host"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "the AWS metadata service"),
)
_HOSTNAME = re.compile(HOSTNAME_PATTERN)
CLUSTER_RANGE = "the cluster's own range"


# -- credentials ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """How a CopyJob's worker pods authenticate.

    ``service_account`` is set only when the platform allows workload identity for the namespace and
    some location has no Secret: then the pods run under that account, with the cloud's metadata
    service reachable. Otherwise every location has a Secret and the pods get no ambient identity."""

    service_account: str | None = None

    @property
    def ambient(self) -> bool:
        return self.service_account is not None


class PolicyRefusal(Exception):
    """The policy refuses the CopyJob: ``reason`` for the condition, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def locations(spec: CopyJobSpec) -> list[tuple[str, str | None, str | None]]:
    """(field, endpoint, credentialsSecret) of each location the CopyJob names."""
    found = [
        ("spec.source", spec.source.endpoint, spec.source.credentials_secret),
        ("spec.destination", spec.destination.endpoint, spec.destination.credentials_secret),
    ]
    if spec.report is not None:
        found.append(("spec.report", spec.report.endpoint, spec.report.credentials_secret))
    return found


def identity(
    spec: CopyJobSpec,
    namespace: str,
    workload_identity_namespaces: Sequence[str],
    *,
    selector: LabelSelector | None = None,
    namespace_labels: Mapping[str, str] | None = None,
) -> Identity:
    """The identity the CopyJob's requests may carry; raises `PolicyRefusal` when it has none it may use.

    The namespace may use workload identity when the platform lists it by name, or when `selector` matches
    its labels (``namespace_labels``, those of the Namespace object)."""
    allowed = namespace in workload_identity_namespaces or (
        selector is not None and selector.matches(namespace_labels or {})
    )
    # A dry run reads only the source: its destination is checked when it has credentials, never needs them.
    without = [
        field
        for field, _endpoint, secret in locations(spec)
        if secret is None and not (spec.dry_run and field == "spec.destination")
    ]
    account = spec.service_account_name
    if not without:
        if account is not None and not allowed:
            raise PolicyRefusal(
                WORKLOAD_IDENTITY_NOT_ALLOWED,
                f"spec.serviceAccountName is set, but the platform does not allow workload identity in "
                f"namespace {namespace}; remove spec.serviceAccountName (every location has a credentialsSecret)",
            )
        # Every request is signed with a Secret's keys; the ServiceAccount, if any, adds nothing.
        return Identity(account if allowed else None)
    fields = " and ".join(without)
    if not allowed:
        raise PolicyRefusal(
            CREDENTIALS_REQUIRED,
            f"{fields} {'has' if len(without) == 1 else 'have'} no credentialsSecret: create a Secret with "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in namespace {namespace} and name it in "
            f"{without[0]}.credentialsSecret. Ferry never uses its own or the node's cloud identity; "
            f"workload identity is for namespaces the platform lists in workloadIdentity.namespaces or "
            f"selects by their labels with workloadIdentity.namespaceSelector",
        )
    if account is None:
        raise PolicyRefusal(
            CREDENTIALS_REQUIRED,
            f"{fields} {'has' if len(without) == 1 else 'have'} no credentialsSecret: set "
            f"spec.serviceAccountName to a ServiceAccount of namespace {namespace} that carries the cloud "
            f"identity to use (workload identity is allowed here), or name a Secret in "
            f"{without[0]}.credentialsSecret",
        )
    return Identity(account)


# -- namespaces selected by their labels ----------------------------------------------------------

#: Label keys and values as Kubernetes accepts them: an optional DNS-subdomain prefix and a name of at
#: most 63 characters; values of at most 63 characters, possibly empty.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
)
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str
    operator: str  # one of SELECTOR_OPERATORS
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``, all of them must hold)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """As Kubernetes decides it: a selector without requirements matches every set of labels."""
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


def parse_selector(raw: Any, where: str = "namespaceSelector") -> LabelSelector:
    """A label selector from its JSON form (``{"matchLabels": {...}, "matchExpressions": [...]}``), checked
    as the API server checks one. Raises ValueError naming ``where`` and what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object with matchLabels and/or matchExpressions")
    unknown = sorted(set(raw) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; allowed: matchLabels, matchExpressions")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise ValueError(f"{where}.matchLabels must be a map of label keys to values")
    for key, value in labels.items():
        _check_label(f"{where}.matchLabels", key, value)
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ValueError(f"{where}.matchExpressions must be a list")
    requirements = []
    for i, entry in enumerate(expressions):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"key", "operator", "values"}:
            raise ValueError(f"{at} must be an object with key, operator and values")
        key, operator, values = entry.get("key"), entry.get("operator"), entry.get("values") or []
        if operator not in SELECTOR_OPERATORS:
            raise ValueError(f"{at}.operator {operator!r} is not one of {', '.join(SELECTOR_OPERATORS)}")
        if not isinstance(values, list):
            raise ValueError(f"{at}.values must be a list of strings")
        for value in values:
            _check_label(at, key, value)
        _check_label(at, key, "")
        if operator in ("In", "NotIn") and not values:
            raise ValueError(f"{at}: operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"{at}: operator {operator} takes no values")
        requirements.append(Requirement(str(key), str(operator), frozenset(values)))
    return LabelSelector(tuple(sorted(labels.items())), tuple(requirements))


def _check_label(where: str, key: Any, value: Any) -> None:
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key) or len(key) > 317:
        raise ValueError(f"{where}: {key!r} is not a label key such as example.com/team or team")
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"{where}: {value!r} for {key} is not a label value (at most 63 letters, digits, -_.)"
        )


# -- endpoints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointPolicy:
    """Which addresses endpoints may reach. ``allowed_networks`` and ``allowed_hosts`` (exact names,
    lowercase) win over ``refused``: the platform allows an internal endpoint by naming it."""

    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    refused: tuple[tuple[Network, str], ...] = ()

    @classmethod
    def build(cls, allow: Sequence[str] = (), cluster_cidrs: Sequence[str] = ()) -> EndpointPolicy:
        """From the platform's lists (chart values). Raises ValueError naming a bad entry."""
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in allow:
            parsed = parse_allow_entry(entry)
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        refused = [(ipaddress.ip_network(cidr), what) for cidr, what in ALWAYS_REFUSED]
        for cidr in cluster_cidrs:
            try:
                refused.append((ipaddress.ip_network(cidr.strip(), strict=False), CLUSTER_RANGE))
            except ValueError as exc:
                raise ValueError(f"cluster CIDR {cidr!r} is not a CIDR such as 10.96.0.0/12") from exc
        return cls(tuple(networks), frozenset(hosts), tuple(refused))

    def as_env(self) -> dict[str, str]:
        """The platform's lists again, as the environment `build` is read from in planner pods."""
        allowed = [*(str(n) for n in self.allowed_networks), *sorted(self.allowed_hosts)]
        cluster = [str(n) for n, what in self.refused if what == CLUSTER_RANGE]
        return {"FERRY_ALLOWED_ENDPOINTS": ",".join(allowed), "FERRY_CLUSTER_CIDRS": ",".join(cluster)}


def parse_allow_entry(entry: str) -> Network | str:
    """An allow-list entry: a CIDR or an address (``10.20.0.0/16``, ``fd00::/8``, ``127.0.0.1``), or a
    host name allowed whatever it resolves to (``minio.storage.svc.cluster.local``)."""
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    host = text.lower()
    if not _HOSTNAME.fullmatch(host) or len(host) > 255:
        raise ValueError(
            f"allowed endpoint {entry!r} is neither a CIDR (10.20.0.0/16), an address, nor a host name"
        )
    return host


def parse_address(text: str) -> Address:
    """An address as the resolver or a socket gives it (an IPv6 zone id dropped); IPv4-mapped IPv6
    addresses are their IPv4 address, so ::ffff:127.0.0.1 is loopback too."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_refusal(address: str, policy: EndpointPolicy) -> str | None:
    """Why ``address`` may not be reached, or None when it may."""
    try:
        parsed = parse_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if any(parsed in network for network in policy.allowed_networks):
        return None
    for network, what in policy.refused:
        if parsed in network:
            return f"{parsed} is {what} ({network})"
    return None


def host_of(endpoint: str) -> str:
    """The host of an endpoint URL the model accepted, lowercase, without brackets or port."""
    netloc = endpoint.split("//", 1)[1].split("/", 1)[0].lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.index("]")]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def endpoint_refusal(
    field: str, endpoint: str, host: str, addresses: Sequence[str], policy: EndpointPolicy
) -> str | None:
    """The message refusing ``field``'s endpoint when ``host`` (the endpoint's, or the bucket's virtual
    host under it) resolves to any address the policy refuses; None when it may be used. A name the
    platform allowed is used whatever it resolves to."""
    if host.lower() in policy.allowed_hosts:
        return None
    for address in addresses:
        why = address_refusal(address, policy)
        if why is not None:
            resolved = "" if _is_address(host) else f"{host} resolves to {address}: "
            return (
                f"{field}.endpoint {endpoint}: {resolved}{why}, which the platform does not allow; use an "
                "endpoint outside the cluster, or ask the platform team to allow it (chart value "
                "endpoints.allow)"
            )
    return None


def _is_address(host: str) -> bool:
    try:
        parse_address(host)
    except ValueError:
        return False
    return True
