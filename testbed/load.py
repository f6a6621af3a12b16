"""Many CopyJobs at once against one operator, measured: the load test behind `make bench-load` and the
smaller run in the test suite.

One control plane, the process kubelet, versitygw and the operator (under the chart's RBAC) are started;
the operator reaches the apiserver through `ApiFaultProxy` with no faults, which counts every request it
sends, kopf's watches and Events included. A source bucket is filled once; every CopyJob copies it to
its own prefix of the destination bucket, one worker pod each. While they run, the harness samples the
operator's RSS and CPU time and lists the CopyJobs every half second to see when each status changes.

What it reports, per wave of CopyJobs:
* pickup lag: creation until the operator first wrote the CopyJob's status;
* completion lag: the worker Job's completionTime until the CopyJob's status said Succeeded (the
  Job's timestamps have one-second resolution, so this is an upper bound by up to a second);
* the operator's API requests by kind, their mean rate and the busiest 10-second window;
* the operator's RSS before, at peak and after each wave, and its CPU seconds.
Every copied object is checked against its source by ETag (MD5 for these single-part objects).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from testbed.apiproxy import ApiFaultProxy
from testbed.binaries import TestBinaries
from testbed.controlplane import ControlPlane, wait_until
from testbed.install import GROUP, PLURAL, VERSION, OperatorProcess, install, operator_process
from testbed.kubelet import ProcessKubelet
from testbed.versitygw import VersityGW

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class LoadConfig:
    jobs: int = 50
    objects: int = 2000
    object_bytes: int = 1024
    waves: int = 1
    #: The operator's reconcile interval (FERRY_AGGREGATE_INTERVAL_SECONDS); 5 s is the chart's default.
    interval: float = 5.0
    timeout: float = 1500.0


@dataclass(frozen=True)
class JobOutcome:
    name: str
    phase: str
    objects: dict[str, int]
    pickup_seconds: float | None
    completion_lag_seconds: float | None
    verified: bool


@dataclass(frozen=True)
class WaveResult:
    wave: int
    wall_seconds: float
    jobs: list[JobOutcome]
    api_requests: dict[str, int]
    api_mean_rate: float
    api_peak_rate_10s: float
    rss_before: int
    rss_peak: int
    rss_after: int
    cpu_seconds: float

    @property
    def all_succeeded(self) -> bool:
        return all(j.phase == "Succeeded" and j.verified for j in self.jobs)

    def lags(self, kind: str) -> list[float]:
        values = [getattr(j, kind) for j in self.jobs]
        return sorted(v for v in values if v is not None)


@dataclass(frozen=True)
class LoadResult:
    config: LoadConfig
    waves: list[WaveResult] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 < q <= 1)."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(q * len(values) + 0.5)))
    return values[rank - 1]


def peak_rate(times: list[float], window: float = 10.0) -> float:
    """The most requests seen in any `window` seconds, per second."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best / window


def _proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _k8s_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class LoadHarness:
    """The running testbed for a load test; `run_wave` creates one wave of CopyJobs and measures it."""

    def __init__(self, testbin: TestBinaries, workdir: Path, cfg: LoadConfig, log: Callable[[str], None]):
        self.testbin, self.workdir, self.cfg, self.log = testbin, workdir, cfg, log
        self._stack = ExitStack()
        self.operator: OperatorProcess | None = None

    def __enter__(self) -> LoadHarness:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        cfg, work = self.cfg, self.workdir
        self.gw = self._stack.enter_context(VersityGW(self.testbin, work / "versitygw"))
        cp = self._stack.enter_context(ControlPlane(self.testbin, work / "controlplane"))
        self._stack.enter_context(ProcessKubelet(cp.admin_kubeconfig, work / "kubelet", max_pods=250))
        assert cp.pki is not None
        self.api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        install(self.api, self.testbin.path("helm"))
        self.proxy = self._stack.enter_context(
            ApiFaultProxy(cp.url, cp.pki.ca_cert, cp.pki.apiserver_cert, cp.pki.apiserver_key)
        )
        operators: Iterator[OperatorProcess] = operator_process(
            cp, work, interval=cfg.interval, server=self.proxy.url
        )
        self.operator = next(operators)
        self._stack.callback(lambda: next(operators, None))
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.s3 = self.gw.endpoint.client()
        self.namespace = "load"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        for name in ("src", "dst"):
            self.core.create_namespaced_secret(
                self.namespace,
                {
                    "metadata": {"name": name},
                    "stringData": {
                        "AWS_ACCESS_KEY_ID": self.gw.endpoint.access_key,
                        "AWS_SECRET_ACCESS_KEY": self.gw.endpoint.secret_key,
                    },
                },
            )
        self.source, self.destination = "load-src", "load-dst"
        self.s3.create_bucket(Bucket=self.source)
        self.s3.create_bucket(Bucket=self.destination)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: self.s3.put_object(
                        Bucket=self.source, Key=f"data/{i:06d}", Body=os.urandom(cfg.object_bytes)
                    ),
                    range(cfg.objects),
                )
            )
        self.source_etags = self._etags(self.source, "data/")
        self.log(f"source filled: {cfg.objects} objects in {time.monotonic() - started:.1f} s")
        # Pods are refused until the serviceaccount controller made the namespace's default one.
        wait_until(
            "the namespace's default ServiceAccount",
            lambda: self.core.list_namespaced_service_account(self.namespace).items,
            60,
        )

    def _etags(self, bucket: str, prefix: str) -> dict[str, str]:
        result: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                result[item["Key"][len(prefix) :]] = item["ETag"]
        return result

    def _operator_pid(self) -> int:
        assert self.operator is not None and self.operator.process is not None
        if self.operator.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{self.operator.log_tail()}")
        return self.operator.process.pid

    def _copyjobs(self) -> list[dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]
        return list(items)

    def run_wave(self, wave: int) -> WaveResult:
        cfg, pid = self.cfg, self._operator_pid()
        names = [f"w{wave}-job-{i:03d}" for i in range(cfg.jobs)]
        rss_before = _proc_rss(pid)
        cpu_before = _proc_cpu(pid)
        requests_before = self.proxy.requests_by_kind()
        times_before = len(self.proxy.request_times())
        created: dict[str, float] = {}
        started = time.monotonic()
        for name in names:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "CopyJob",
                "metadata": {"name": name},
                "spec": {
                    "source": {
                        "bucket": self.source,
                        "prefix": "data/",
                        "endpoint": self.gw.endpoint.url,
                        "credentialsSecret": "src",
                    },
                    "destination": {
                        "bucket": self.destination,
                        "prefix": f"{name}/",
                        "endpoint": self.gw.endpoint.url,
                        "credentialsSecret": "dst",
                    },
                    "parallelism": 1,
                },
            }
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            created[name] = time.time()
        self.log(f"wave {wave}: {cfg.jobs} CopyJobs created in {time.monotonic() - started:.1f} s")

        picked: dict[str, float] = {}
        finished: dict[str, float] = {}
        rss_peak = rss_before
        last_note = time.monotonic()
        deadline = started + cfg.timeout
        while len(finished) < len(names):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"wave {wave}: {len(names) - len(finished)} CopyJobs unfinished after {cfg.timeout:.0f} s"
                )
            now = time.time()
            for item in self._copyjobs():
                name, phase = item["metadata"]["name"], (item.get("status") or {}).get("phase")
                if name not in created:
                    continue
                if phase and name not in picked:
                    picked[name] = now
                if phase in TERMINAL and name not in finished:
                    finished[name] = now
            rss_peak = max(rss_peak, _proc_rss(self._operator_pid()))
            if time.monotonic() - last_note > 30:
                self.log(
                    f"wave {wave}: {len(finished)}/{len(names)} finished, operator RSS {rss_peak / 2**20:.0f} MiB peak"
                )
                last_note = time.monotonic()
            time.sleep(0.5)
        wall = time.monotonic() - started
        self.log(f"wave {wave}: all {len(names)} finished in {wall:.1f} s")
        time.sleep(cfg.interval * 2)  # let the operator settle before the 'after' reading
        rss_after = _proc_rss(self._operator_pid())
        cpu = _proc_cpu(self._operator_pid()) - cpu_before

        completion = self._completion_times()
        statuses = {item["metadata"]["name"]: item.get("status") or {} for item in self._copyjobs()}
        outcomes = []
        for name in names:
            status = statuses.get(name, {})
            done_at = completion.get(name)
            outcomes.append(
                JobOutcome(
                    name=name,
                    phase=str(status.get("phase")),
                    objects=dict(status.get("objects") or {}),
                    pickup_seconds=picked[name] - created[name] if name in picked else None,
                    completion_lag_seconds=finished[name] - done_at if done_at else None,
                    verified=self._etags(self.destination, f"{name}/") == self.source_etags,
                )
            )
        requests_after = self.proxy.requests_by_kind()
        requests = {k: v - requests_before.get(k, 0) for k, v in requests_after.items()}
        times = self.proxy.request_times()[times_before:]
        result = WaveResult(
            wave=wave,
            wall_seconds=wall,
            jobs=outcomes,
            api_requests={k: v for k, v in sorted(requests.items()) if v},
            api_mean_rate=len(times) / max(wall, 1e-9),
            api_peak_rate_10s=peak_rate(times),
            rss_before=rss_before,
            rss_peak=rss_peak,
            rss_after=rss_after,
            cpu_seconds=cpu,
        )
        return result

    def _completion_times(self) -> dict[str, float]:
        """CopyJob name -> its worker Job's completionTime (epoch seconds)."""
        result: dict[str, float] = {}
        for job in self.batch.list_namespaced_job(self.namespace).items:
            owners = job.metadata.owner_references or []
            done = _k8s_time(job.status.completion_time) if job.status else None
            for owner in owners:
                if owner.kind == "CopyJob" and done is not None:
                    result[owner.name] = done
        return result

    def clear(self) -> None:
        """Delete every CopyJob and wait until their Jobs and pods are gone too."""
        for item in self._copyjobs():
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, item["metadata"]["name"]
            )
        deadline = time.monotonic() + 300
        while self._copyjobs() or self.core.list_namespaced_pod(self.namespace).items:
            if time.monotonic() > deadline:
                raise RuntimeError("CopyJobs or their pods were not removed within 300 s")
            time.sleep(1)


def run_load(
    testbin: TestBinaries, workdir: Path, cfg: LoadConfig, log: Callable[[str], None] = print
) -> LoadResult:
    waves: list[WaveResult] = []
    with LoadHarness(testbin, workdir / f"load-{uuid.uuid4().hex[:6]}", cfg, log) as harness:
        for wave in range(1, cfg.waves + 1):
            if wave > 1:
                harness.clear()
            waves.append(harness.run_wave(wave))
    return LoadResult(cfg, waves)
