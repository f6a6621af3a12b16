"""Credentials for each CopyJob location, from Secrets named by ``credentialsSecret``. Pure.

`ferry run` finds the Secrets in its input file; worker pods get them as environment variables from the
same Secrets. A location without ``credentialsSecret`` uses the default AWS credential chain (in `ferry
run`, the user's own machine; the operator allows that only where the platform allows workload identity).
A Secret that is named but absent is an error, never a reason to fall back to whatever identity the
environment holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from ferry.errors import InvalidSpec
from ferry.model import CopyJobSpec, Location
from ferry.model.loading import SecretData
from ferry.worker.s3 import Credentials
from ferry.worker.ssec import SSE_CUSTOMER_KEY_ENV, CustomerKey, CustomerKeys, parse_key

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"


def credentials_from_values(values: Mapping[str, str], where: str) -> Credentials:
    missing = [key for key in (ACCESS_KEY, SECRET_KEY) if not values.get(key)]
    if missing:
        raise InvalidSpec(f"{where} lacks {' and '.join(missing)}; add the key(s) to the Secret")
    return Credentials(values[ACCESS_KEY], values[SECRET_KEY], values.get(SESSION_TOKEN) or None)


def resolve(
    location: Location, secrets: Mapping[str, SecretData], field: str, warn: list[str]
) -> Credentials | None:
    """Credentials for ``location``; ``None`` (no ``credentialsSecret``) means the default chain.
    Raises `InvalidSpec` when the named Secret is not in the file. ``warn`` collects notes for the user
    (none today; kept for callers that print them)."""
    name = location.credentials_secret
    if name is None:
        return None
    secret = secrets.get(name)
    if secret is None:
        raise InvalidSpec(
            f"{field}.credentialsSecret names Secret {name!r}, which is not in the file; add the Secret "
            f"(kind: Secret, metadata.name: {name}) to the file after a '---' line, or remove "
            f"{field}.credentialsSecret to use the default AWS credential chain"
        )
    return credentials_from_values(secret.values, f"Secret {name!r} (used by {field})")


def customer_keys(spec: CopyJobSpec, secrets: Mapping[str, SecretData]) -> CustomerKeys:
    """The SSE-C keys the spec names, from the Secrets in `ferry run`'s input file. Raises `InvalidSpec`
    naming the field and the Secret (never the value) when one is missing or is not a key."""
    found: dict[str, CustomerKey | None] = {}
    for side, location in (("source", spec.source), ("destination", spec.destination)):
        ref = location.sse_customer_key
        found[side] = None
        if ref is None:
            continue
        field = f"spec.{side}.sseCustomerKey"
        secret = secrets.get(ref.name)
        if secret is None:
            raise InvalidSpec(
                f"{field} names Secret {ref.name!r}, which is not in the file; add the Secret (kind: Secret, "
                f"metadata.name: {ref.name}) after a '---' line"
            )
        value = secret.values.get(ref.key)
        if not value:
            raise InvalidSpec(f"{field}: Secret {ref.name!r} has no key {ref.key!r}; add it to the Secret")
        found[side] = parse_key(value, f"{field} (Secret {ref.name!r}, key {ref.key!r})")
    return CustomerKeys(source=found["source"], destination=found["destination"])


def customer_keys_from_env(spec: CopyJobSpec, env: Mapping[str, str]) -> CustomerKeys:
    """The SSE-C keys of a worker pod, from the environment the operator gave it. Raises `InvalidSpec`
    naming the field when the spec names a key the environment lacks or holds no key."""
    found: dict[str, CustomerKey | None] = {}
    for side, location in (("source", spec.source), ("destination", spec.destination)):
        found[side] = None
        if location.sse_customer_key is None:
            continue
        field = f"spec.{side}.sseCustomerKey"
        value = env.get(SSE_CUSTOMER_KEY_ENV[side])
        if not value:
            raise InvalidSpec(f"{field}: the worker pod has no key (its Secret value is empty)")
        found[side] = parse_key(value, f"{field} (Secret {location.sse_customer_key.name!r})")
    return CustomerKeys(source=found["source"], destination=found["destination"])
