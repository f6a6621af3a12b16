"""`ferry operator`'s liveness endpoint URL (ferry/cli.py): kopf binds to the host it parses from it, so
that host must be exactly the configured listen address, IPv6 included."""

from __future__ import annotations

import urllib.parse

import pytest

from ferry.cli import _http_url


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/healthz"),
        ("0.0.0.0", "http://0.0.0.0:8080/healthz"),
        ("::", "http://[::]:8080/healthz"),
        ("::1", "http://[::1]:8080/healthz"),
    ],
    ids=["loopback", "all-ipv4", "all-ipv6", "loopback-ipv6"],
)
def test_liveness_url_binds_the_listen_address(address: str, url: str) -> None:
    assert _http_url(address, 8080, "/healthz") == url
    parts = urllib.parse.urlsplit(url)  # as kopf reads it
    assert (parts.hostname, parts.port, parts.path) == (address, 8080, "/healthz")
