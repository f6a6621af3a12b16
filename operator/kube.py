"""The Kubernetes adapter: the few API calls the operator makes, with raw bodies as dicts, every call
counted for `/metrics`. Blocking calls (the official client is synchronous); handlers run them in
threads. Nothing outside this module touches the client.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from ferry.errors import FerryError

#: Seconds any API call may take; a hung request must not hold a reconciliation forever.
TIMEOUT = 30
#: Re-sends of a status merge-patch answered 409 Conflict, before the pass fails (and is retried).
CONFLICT_RETRIES = 3
API_REQUESTS = Counter(
    "ferry_api_requests", "Kubernetes API requests made by the operator", ["verb", "resource"]
)
GROUP, VERSION, PLURAL = "ferry.dev", "v1alpha1", "copyjobs"
#: Answers to a create that no retry can change: invalid (a ConfigMap over 1 MiB, a bad label), refused by
#: a quota or an admission policy. 409 (it exists) is no refusal; 401, 404 and 5xx are the operator's
#: or the cluster's problem and stay errors.
REFUSED = (400, 403, 422)
log = logging.getLogger(__name__)


class Refused(FerryError):
    """The API server refused to create an object, with its own explanation."""

    def __init__(self, kind: str, namespace: str, name: str, status: int, reason: str) -> None:
        super().__init__(
            f"the API server refused to create {kind} {namespace}/{name} (HTTP {status}): {reason}"
        )
        self.status = status


def _created(create: Any, kind: str, body: dict[str, Any]) -> bool:
    """Create `body` with `create`; False on 409 (the name is taken), `Refused` when the API server will
    not take it (quota, admission, validation)."""
    try:
        create(body["metadata"]["namespace"], cast(Any, body), _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status in REFUSED:
            raise _refusal(exc, kind, body) from exc
        raise
    return True


def _refusal(exc: ApiException, kind: str, body: dict[str, Any]) -> Refused:
    try:
        reason = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        reason = str(exc.reason)
    meta = body["metadata"]
    return Refused(kind, meta["namespace"], meta["name"], int(exc.status or 0), reason[:1024])


class Kube:
    def __init__(self, threads: int = 32) -> None:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        # One pooled connection per reconcile thread; the default (5 per CPU) made threads queue for one.
        configuration.connection_pool_maxsize = threads
        api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._api = api

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self._api.sanitize_for_serialization(obj))

    def service_account_exists(self, namespace: str, name: str) -> bool:
        API_REQUESTS.labels("get", "serviceaccounts").inc()
        try:
            self.core.read_namespaced_service_account(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get", "configmaps").inc()
        try:
            return self._plain(
                self.core.read_namespaced_config_map(name, namespace, _request_timeout=TIMEOUT)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_configmap(self, body: dict[str, Any]) -> bool:
        """Create; False when an object of that name exists already (whose it is, the caller checks).
        Raises `Refused` when the API server will not take it."""
        API_REQUESTS.labels("create", "configmaps").inc()
        return _created(self.core.create_namespaced_config_map, "ConfigMap", body)

    def patch_configmap_data(self, namespace: str, name: str, uid: str, data: dict[str, str | None]) -> None:
        """Merge `data` into the ConfigMap of that name (a None value removes its key) if it is still the
        object `uid`: a UID in a patch is a precondition (the API server refuses to change it), so an
        object deleted and re-created under the same name since it was read is never written."""
        API_REQUESTS.labels("patch", "configmaps").inc()
        self.core.patch_namespaced_config_map(
            name, namespace, {"metadata": {"uid": uid}, "data": data}, _request_timeout=TIMEOUT
        )

    def delete_configmap(self, namespace: str, name: str, uid: str) -> None:
        """Delete the ConfigMap `uid` (a plan or ledger a spec edit made obsolete); never another of the
        same name (a UID precondition). Gone already is fine."""
        API_REQUESTS.labels("delete", "configmaps").inc()
        try:
            self.core.delete_namespaced_config_map(
                name,
                namespace,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
                _request_timeout=TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get", "jobs").inc()
        try:
            return self._plain(self.batch.read_namespaced_job(name, namespace, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, body: dict[str, Any]) -> bool:
        """As `create_configmap`, for a Job."""
        API_REQUESTS.labels("create", "jobs").inc()
        return _created(self.batch.create_namespaced_job, "Job", body)

    def patch_job(self, namespace: str, name: str, uid: str, patch: dict[str, Any]) -> None:
        """Merge-patch the Job of that name if it is still the object `uid` (see `patch_configmap_data`)."""
        API_REQUESTS.labels("patch", "jobs").inc()
        body = {**patch, "metadata": {**patch.get("metadata", {}), "uid": uid}}
        self.batch.patch_namespaced_job(name, namespace, body, _request_timeout=TIMEOUT)

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Job `uid` and (in the background) its pods; never another Job of the same name
        (a UID precondition). Gone already is fine."""
        API_REQUESTS.labels("delete", "jobs").inc()
        try:
            self.batch.delete_namespaced_job(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid)
                ),
                _request_timeout=TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list", "pods").inc()
        return [
            self._plain(p)
            for p in self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=TIMEOUT
            ).items
        ]

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, best_effort: bool = False
    ) -> bool:
        """Merge-patch the CopyJob's status. A merge patch carries no resourceVersion, so a 409 (another
        writer, a webhook, an apiserver under contention) is safe to send again as it is. With
        `best_effort` (progress notes that the next pass rewrites anyway) a failure returns False."""
        for attempt in range(CONFLICT_RETRIES + 1):
            API_REQUESTS.labels("patch", "copyjobs/status").inc()
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _request_timeout=TIMEOUT
                )
                return True
            except ApiException as exc:
                if exc.status == 409 and attempt < CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                if not best_effort:
                    raise
                failure = f"HTTP {exc.status}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:  # apiserver unreachable
                if not best_effort:
                    raise
                failure = type(exc).__name__
            log.warning("status of %s/%s not written (%s); the next pass will", namespace, name, failure)
            return False
        return False

    def patch_budget_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge-patch an EndpointBudget's status (cluster-scoped; the operator writes nothing else of it).
        Raises on failure: the budget step logs it and writes it again at the next step."""
        API_REQUESTS.labels("patch", "endpointbudgets/status").inc()
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "endpointbudgets", name, {"status": status}, _request_timeout=TIMEOUT
        )


#: Most a worker's `/status` body takes (a real one is a few KiB: counts, and at most 20 sampled
#: failures), and room for the status line and headers.
STATUS_MAX_BYTES = 64 * 1024
HEADER_ALLOWANCE = 8 * 1024


def fetch_worker_status(
    address: str, port: int, timeout: float = 2.0, max_bytes: int = STATUS_MAX_BYTES, pod: str = ""
) -> str | None:
    """GET a running worker's (or planner's) `/status`; None when it does not answer (starting, or gone).
    ``pod`` names the pod asked: stopped workers of earlier releases, still running during an upgrade,
    wait for two reads that name them (today's wait for `PUT /recorded`)."""
    path = f"/status?pod={quote(pod, safe='')}" if pod else "/status"
    return fetch_from_pod(address, port, path, timeout, max_bytes)


def fetch_from_pod(address: str, port: int, path: str, timeout: float, max_bytes: int) -> str | None:
    """GET ``path`` from a pod; the body of a 200 answer, else None.

    Any pod may answer here (a tenant can run one that looks like a worker), so the exchange is bounded
    as a whole, headers included, not per socket read: a pod that sends more than ``max_bytes``, or
    trickles bytes past ``timeout`` seconds, gets the same as one that never answered. HTTP/1.0, so the
    worker closes the connection after its answer (its server speaks 1.0 anyway)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                sock.settimeout(remaining)
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    break
                data += chunk
                if len(data) > max_bytes + HEADER_ALLOWANCE:
                    return None
    except OSError:
        return None
    head, separator, body = bytes(data).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not separator or len(status_line) < 2 or status_line[1] != b"200" or len(body) > max_bytes:
        return None
    try:
        return body.decode()
    except UnicodeDecodeError:
        return None


def push_worker_limits(address: str, port: int, token: str, body: str, timeout: float = 2.0) -> bool:
    """`PUT /limits` to a running worker: its share of spec.rateLimit (``body``, `RateShare.encode`),
    authenticated with its CopyJob's ``token``. True when the worker took it (204)."""
    return put_to_worker(address, port, "/limits", token, body, "application/json", timeout)


def push_recorded(address: str, port: int, token: str, final: str, timeout: float = 2.0) -> bool:
    """`PUT /recorded` to a stopped worker: the name of its final document, whose counts and resume point
    the ledger now holds, so it may exit. True when the worker took it (204)."""
    return put_to_worker(address, port, "/recorded", token, final, "text/plain", timeout)


def push_recorded_all(finals: Sequence[tuple[str, str]], port: int, token: str) -> int:
    """`push_recorded` to each (address, final document's name), in parallel; how many took it (a pod
    that did not is told again at the next pass that finds its document recorded)."""
    if not finals:
        return 0
    with ThreadPoolExecutor(min(16, len(finals))) as pool:
        return sum(pool.map(lambda f: push_recorded(f[0], port, token, f[1]), finals))


def put_to_worker(
    address: str, port: int, path: str, token: str, body: str, content_type: str, timeout: float
) -> bool:
    """PUT ``body`` to ``path`` on a worker, authenticated with its CopyJob's ``token``; True on 204.

    Bounded like `fetch_from_pod`: ``timeout`` seconds for the whole exchange, and only the status line
    of the answer is read (at most 1 KiB of it). Nothing of the exchange is logged: the token is a secret."""
    deadline = time.monotonic() + timeout
    request = (
        f"PUT {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()
    answer = bytearray()
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(request)
            while b"\r\n" not in answer and len(answer) <= 1024:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                chunk = sock.recv(1024)
                if not chunk:
                    break
                answer += chunk
    except (OSError, ValueError):  # unreachable, refused, reset, or an address no socket takes
        return False
    status_line = bytes(answer).split(b"\r\n", 1)[0].split()
    return len(status_line) >= 2 and status_line[0].startswith(b"HTTP/") and status_line[1] == b"204"
