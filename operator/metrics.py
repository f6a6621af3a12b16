"""The operator's own Prometheus series about CopyJobs, read from their status.

Where it sits: the kopf wiring (`handlers.py`) hands every CopyJob status it writes or sees on the watch
to `CopyJobSeries`; Prometheus scrapes `/metrics`, where `CopyJobCollector` turns what is held into
metric families at scrape time (a deleted CopyJob leaves no stale series behind).

Names and labels come from tenants, so per-CopyJob series are held for at most `cap` CopyJobs: a CopyJob
still running may take the place of a finished one, never the other way round, and the ones left out are
counted in `ferry_copyjobs_untracked`. `sample` and `admit` are pure; the rest keeps their results.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Every phase the operator writes; anything else (an older operator's, a hand-edited status) is counted
#: as "Unknown", so the phase label keeps a fixed set of values.
PHASES = ("Pending", "Planning", "Planned", "Running", "Suspended", "Succeeded", "Failed")
FINISHED = ("Succeeded", "Failed")
OUTCOMES = ("copied", "skipped", "failed")

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class CopyJobSample:
    """What the series say about one CopyJob, from its status."""

    phase: str
    stalled: bool
    #: Counts by outcome (copied, skipped, failed) and the totals; None before the status has counts.
    objects: tuple[int, int, int] | None = None
    objects_total: int = 0
    bytes: tuple[int, int, int] | None = None
    bytes_total: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def ratio(self) -> float:
        """Share of status.objects.total done (copied, skipped or failed), unrounded."""
        if self.objects is None or self.objects_total <= 0:
            return 1.0 if self.finished else 0.0
        return min(1.0, sum(self.objects) / self.objects_total)


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def sample(status: Mapping[str, Any] | None) -> CopyJobSample:
    """The series' view of a CopyJob status (a dict as the API returns it)."""
    status = dict(status or {})
    phase = str(status.get("phase") or "Pending")
    if phase not in PHASES:
        phase = "Unknown"
    conditions = status.get("conditions") or []
    stalled = any(
        isinstance(c, Mapping) and c.get("type") == "Stalled" and c.get("status") == "True"
        for c in conditions
    )
    objects, objects_total = _counts(status.get("objects"))
    data, bytes_total = _counts(status.get("bytes"))
    return CopyJobSample(phase, stalled, objects, objects_total, data, bytes_total)


def _counts(part: Any) -> tuple[tuple[int, int, int] | None, int]:
    if not isinstance(part, Mapping):
        return None, 0
    copied, skipped, failed = (_int(part.get(k)) for k in OUTCOMES)
    return (copied, skipped, failed), _int(part.get("total"))


def admit(held: Mapping[Key, bool], key: Key, finished: bool, cap: int) -> tuple[bool, Key | None]:
    """Whether `key` gets per-CopyJob series, and which held CopyJob gives up its series for it.

    `held` maps the CopyJobs holding series, oldest first, to whether each has finished. A running
    CopyJob displaces the longest-held finished one when all places are taken; a finished one never
    displaces anything (it would only be displaced back).
    """
    if key in held or len(held) < cap:
        return True, None
    if not finished:
        for other, other_finished in held.items():
            if other_finished:
                return True, other
    return False, None


class CopyJobSeries:
    """The latest sample of every CopyJob this operator knows, and which of them have their own series.

    Written from the event loop, read by the metrics server's thread: every access takes the lock.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._samples: dict[Key, CopyJobSample] = {}
        self._held: dict[Key, bool] = {}

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        key, current = (namespace, name), sample(status)
        with self._lock:
            self._samples[key] = current
            admitted, displaced = admit(self._held, key, current.finished, self.cap)
            if displaced is not None:
                del self._held[displaced]
            if admitted:
                self._held[key] = current.finished

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._samples.pop((namespace, name), None)
            self._held.pop((namespace, name), None)

    def snapshot(self) -> tuple[dict[Key, CopyJobSample], tuple[Key, ...]]:
        """Every CopyJob's sample, and the CopyJobs with their own series (oldest first)."""
        with self._lock:
            return dict(self._samples), tuple(self._held)


class CopyJobCollector(Collector):
    """`ferry_copyjobs{phase,stalled}`, `ferry_copyjobs_untracked` and the per-CopyJob progress gauges."""

    def __init__(self, series: CopyJobSeries) -> None:
        self.series = series

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples, held = self.series.snapshot()
        by_phase = GaugeMetricFamily(
            "ferry_copyjobs",
            'CopyJobs by phase; stalled="true": the Stalled condition is True (the phase stays Pending, '
            "or Running while workers run)",
            labels=["phase", "stalled"],
        )
        counts: dict[tuple[str, bool], int] = {(p, s): 0 for p in PHASES for s in (False, True)}
        for one in samples.values():
            counts[(one.phase, one.stalled)] = counts.get((one.phase, one.stalled), 0) + 1
        for (phase, stalled), count in counts.items():
            by_phase.add_metric([phase, "true" if stalled else "false"], count)
        yield by_phase
        yield GaugeMetricFamily(
            "ferry_copyjobs_untracked",
            "CopyJobs without per-CopyJob series, beyond the operator's cap (FERRY_MAX_COPYJOB_SERIES)",
            value=len(samples) - len(held),
        )
        labels = ["namespace", "copyjob"]
        objects = GaugeMetricFamily(
            "ferry_copyjob_objects", "Objects of the CopyJob done, by outcome", labels=[*labels, "outcome"]
        )
        objects_total = GaugeMetricFamily(
            "ferry_copyjob_expected_objects",
            "Objects the CopyJob copies in all (status.objects.total)",
            labels=labels,
        )
        data = GaugeMetricFamily(
            "ferry_copyjob_bytes", "Bytes of the CopyJob done, by outcome", labels=[*labels, "outcome"]
        )
        data_total = GaugeMetricFamily(
            "ferry_copyjob_expected_bytes",
            "Bytes the CopyJob copies in all (status.bytes.total)",
            labels=labels,
        )
        ratio = GaugeMetricFamily(
            "ferry_copyjob_progress_ratio",
            "Share of the CopyJob's objects copied, skipped or failed (0 to 1)",
            labels=labels,
        )
        for key in held:
            one = samples[key]
            if one.objects is None:
                continue  # nothing measured yet: no series rather than a made-up zero total
            for outcome, count in zip(OUTCOMES, one.objects, strict=True):
                objects.add_metric([*key, outcome], count)
            objects_total.add_metric(list(key), one.objects_total)
            if one.bytes is not None:
                for outcome, count in zip(OUTCOMES, one.bytes, strict=True):
                    data.add_metric([*key, outcome], count)
                data_total.add_metric(list(key), one.bytes_total)
            ratio.add_metric(list(key), one.ratio)
        yield from (objects, objects_total, data, data_total, ratio)
