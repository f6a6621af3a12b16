"""The endpoint policy at the network: names resolved and checked before a request, and every connection
of the operator's S3 clients checked again on the address it is really made to. Thin adapter over
`policy` (the decisions) and the resolver.

Checking the name first gives a clear condition before anything else happens; checking each
connection closes the gap a name with a short TTL leaves between the check and the connection (DNS
rebinding): the connection goes to the very address that was checked, or is not made at all. Either
way nothing, not even a TCP handshake, reaches a refused address, so a tenant cannot tell an open port
from a closed one there.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)

from ferry.errors import AddressNotAllowed
from ferry.model import CopyJobSpec
from ferry.operator.policy import EndpointPolicy, address_refusal, endpoint_refusal, host_of


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to; none when it does not resolve (nothing can be reached then)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def endpoint_problem(spec: CopyJobSpec, policy: EndpointPolicy) -> str | None:
    """The first location whose endpoint the policy refuses, as a message; None when all may be used.

    With virtual-host addressing, S3 clients send requests to ``<bucket>.<host>``, which resolves on its
    own: both names are checked. No endpoint means AWS's public one, which is not checked."""
    for field, location in (
        ("spec.source", spec.source),
        ("spec.destination", spec.destination),
        ("spec.report", spec.report),
    ):
        if location is None or location.endpoint is None:
            continue
        host = host_of(location.endpoint)
        hosts = [host]
        if location.addressing_style.value != "path" and not _is_ip(host):
            hosts.append(f"{location.bucket}.{host}")
        for name in hosts:
            refusal = endpoint_refusal(field, location.endpoint, name, resolve(name), policy)
            if refusal is not None:
                return refusal
    return None


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


class _Checked:
    """Mixed into botocore's connection classes, before them: `_new_conn` checks, then connects."""

    policy: EndpointPolicy
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        connect = cast(Any, super())._new_conn
        host = self._dns_host.rstrip(".")
        if host.lower() in self.policy.allowed_hosts:
            return cast(socket.socket, connect())
        addresses = resolve(host.strip("[]"))
        for address in addresses:
            why = address_refusal(address, self.policy)
            if why is not None:
                where = f"{host} resolves to {address}: " if host.strip("[]") != address else ""
                raise AddressNotAllowed(f"{where}{why}, which the platform does not allow")
        if not addresses:
            return cast(socket.socket, connect())  # fails to resolve, as it should
        # Connect to the address just checked, not to whatever the name resolves to next; TLS still
        # verifies the name (urllib3 takes the server name from `host`, restored before the handshake).
        original = self._dns_host
        self._dns_host = addresses[0]
        try:
            return cast(socket.socket, connect())
        finally:
            self._dns_host = original


def guard_client(client: Any, policy: EndpointPolicy) -> Any:
    """Make every connection of a boto3 client pass the policy. botocore has no public hook for how
    connections are made; its session keeps the pool classes in one mapping, replaced here."""
    http = type("CheckedHTTPConnection", (_Checked, AWSHTTPConnection), {"policy": policy})
    https = type("CheckedHTTPSConnection", (_Checked, AWSHTTPSConnection), {"policy": policy})
    pools = {
        "http": type("CheckedHTTPPool", (AWSHTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("CheckedHTTPSPool", (AWSHTTPSConnectionPool,), {"ConnectionCls": https}),
    }
    session = client._endpoint.http_session
    session._pool_classes_by_scheme = pools
    session._manager.pool_classes_by_scheme = pools
    return client
