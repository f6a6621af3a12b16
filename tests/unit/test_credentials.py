"""Credentials of `ferry run` from the Secrets in its file (worker/credentials.py)."""

from __future__ import annotations

import pytest

from ferry.errors import InvalidSpec
from ferry.model import Location
from ferry.model.loading import SecretData
from ferry.worker.credentials import resolve

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret"}


def test_a_named_secret_missing_from_the_file_is_refused_not_replaced_by_the_environment() -> None:
    """Falling back would run the copy under whatever identity the machine holds, not the one named."""
    location = Location.model_validate({"bucket": "src-bucket", "credentialsSecret": "src-creds"})
    with pytest.raises(InvalidSpec) as raised:
        resolve(location, {}, "spec.source", [])
    message = str(raised.value)
    for fragment in (
        "spec.source.credentialsSecret names Secret 'src-creds'",
        "not in the file",
        "add the Secret",
    ):
        assert fragment in message, (fragment, message)


def test_a_secret_in_the_file_is_used() -> None:
    location = Location.model_validate({"bucket": "src-bucket", "credentialsSecret": "src-creds"})
    found = resolve(location, {"src-creds": SecretData("src-creds", KEYS)}, "spec.source", [])
    assert found is not None and found.access_key_id == "AKIAEXAMPLE"


def test_no_credentials_secret_means_the_user_s_own_default_chain() -> None:
    warnings: list[str] = []
    assert resolve(Location.model_validate({"bucket": "src-bucket"}), {}, "spec.source", warnings) is None
    assert warnings == []
