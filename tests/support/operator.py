"""Helpers for the operator's end-to-end tests: source buckets, Secrets, CopyJob bodies, a CopyJob
client that waits for phases, and content digests."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from support.engine import digest_map as md5s  # key -> MD5 of the content as read back
from support.wait import wait_for
from testbed.install import GROUP, PLURAL, VERSION

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "Jobs",
    "accounting_closes",
    "condition",
    "copyjob",
    "events",
    "fill",
    "md5s",
    "secret",
    "spec_for",
]


def copyjob(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CopyJob", "metadata": {"name": name}, "spec": spec}


def fill(s3: Any, count: int, size: int = 2000) -> tuple[str, str]:
    source, destination = f"src-{uuid.uuid4().hex[:10]}", f"dst-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(
                    Bucket=source, Key=f"data/{i:05d}.bin", Body=os.urandom(size + i % 97)
                ),
                range(count),
            )
        )
    return source, destination


def secret(cluster: Any, namespace: str, name: str, endpoint: Any) -> None:
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "stringData": {
                "AWS_ACCESS_KEY_ID": endpoint.access_key,
                "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
            },
        },
    )


def spec_for(endpoint_url: str, source: str, destination: str, **extra: Any) -> dict[str, Any]:
    # Two Secrets of the same keys: the copy streams GET -> PUT as between two providers.
    return {
        "source": {"bucket": source, "endpoint": endpoint_url, "credentialsSecret": "src"},
        "destination": {"bucket": destination, "endpoint": endpoint_url, "credentialsSecret": "dst"},
        **extra,
    }


#: A CopyJob's rate while it is planned and started but meant to stay unfinished: one request a second.
CRAWL = {"requestsPerSecond": 1, "bytesPerSecond": "1Ki"}


class Jobs:
    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace

    def create(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, copyjob(name, spec)
        )

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def wait_phase(self, name: str, *phases: str, timeout: float = 150) -> dict[str, Any]:
        return wait_for(
            f"{name} in phase {phases}",
            lambda: (s := self.status(name)).get("phase") in phases and s,
            timeout,
        )

    def create_planned_suspended(
        self, name: str, spec: dict[str, Any], timeout: float = 120
    ) -> dict[str, Any]:
        """A CopyJob planned, started, then suspended (spec.suspend at creation holds its planner too, so
        it would have no plan): started at a crawl (`CRAWL`), suspended once its worker Job exists.
        Resume it with ``{"suspend": False, "rateLimit": None}``."""
        self.create(name, {**spec, "rateLimit": CRAWL})
        wait_for(f"{name} started", lambda: self.status(name).get("phase") == "Running", timeout)
        self.patch(name, {"suspend": True})
        return self.wait_phase(name, "Suspended", timeout=timeout)

    def wait_stalled(self, name: str, timeout: float = 90) -> dict[str, Any]:
        """The status once the CopyJob is Stalled (planning runs in a pod first, so not at once)."""

        def stalled() -> dict[str, Any] | None:
            s = self.status(name)
            found = [c for c in s.get("conditions", []) if c["type"] == "Stalled" and c["status"] == "True"]
            return s if found else None

        return wait_for(f"{name} Stalled", stalled, timeout)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


def accounting_closes(status: dict[str, Any]) -> bool:
    o = status["objects"]
    return o["total"] == o["copied"] + o["skipped"] + o["failed"] + o["pending"]


def events(cluster: Any, namespace: str, name: str) -> list[tuple[str, str]]:
    items = cluster.core.list_namespaced_event(namespace).items
    return [(e.reason, e.message) for e in items if e.involved_object.name == name]
