"""Per-prefix throttle handling: how keys fall into groups, the AIMD law of one group, the bounded table,
and a simulation of a provider that throttles one group at N requests/s while another is unlimited."""

from __future__ import annotations

import heapq
import json
import threading
import time
from dataclasses import dataclass

import pytest

from ferry.worker.engine import Progress
from ferry.worker.limits import LimiterState
from ferry.worker.parts import MIN_PART
from ferry.worker.prefixlimits import (
    GroupState,
    PrefixConfig,
    PrefixTable,
    admit,
    destination_requests,
    prefix_group,
    record_success,
    record_throttle,
)
from ferry.worker.prefixpacer import STATUS_GROUPS, PrefixPacer
from ferry.worker.progress import Counts
from ferry.worker.statusdoc import status_document

CONFIG = PrefixConfig()


@pytest.mark.parametrize(
    ("key", "prefix", "config", "group"),
    [
        ("logs/2026/a.gz", "", CONFIG, "logs/"),
        ("backup/logs/2026/a.gz", "backup/", CONFIG, "logs/"),
        ("backup/logs/2026/a.gz", "backup/", PrefixConfig(depth=2), "logs/2026/"),
        ("backup/logs/a.gz", "backup/", PrefixConfig(depth=3), "logs/"),  # fewer segments than depth
        ("a3f9c2.bin", "", CONFIG, "a3"),  # flat (hashed) keys: the first characters
        ("x", "", CONFIG, "x"),
        ("", "", CONFIG, ""),
        ("p/" + "z" * 500 + "/k", "p/", CONFIG, "zz"),  # no "/" within 64 chars: flat
        ("y" * 10 + "/k", "", PrefixConfig(max_group_chars=8), "yy"),
        ("other/k", "backup/", CONFIG, "other/"),  # a key outside the prefix is grouped as it is
    ],
)
def test_prefix_group_is_a_short_key_prefix(key: str, prefix: str, config: PrefixConfig, group: str) -> None:
    got = prefix_group(key, prefix, config)
    assert got == group
    assert len(got) <= config.max_group_chars
    assert key[len(prefix) :].startswith(got) or key.startswith(got)


@pytest.mark.parametrize(
    ("size", "part_size", "server_side", "requests"),
    [
        (0, MIN_PART, False, 1),
        (MIN_PART, MIN_PART, False, 1),
        (MIN_PART + 1, MIN_PART, False, 2 + 2),
        (10 * MIN_PART, MIN_PART, False, 10 + 2),
        (MIN_PART, MIN_PART, True, 1),
        (3 * MIN_PART, MIN_PART, True, 3 + 2),
    ],
)
def test_destination_requests_counts_what_the_copy_sends(
    size: int, part_size: int, server_side: bool, requests: int
) -> None:
    assert destination_requests(size, part_size, server_side) == requests


@pytest.mark.parametrize(
    ("state", "now", "requests", "wait", "next_at"),
    [
        (GroupState(), 10.0, 1, 0.0, 0.0),  # unlimited: no wait, no schedule
        (GroupState(rate=10.0, next_at=0.0), 10.0, 1, 0.0, 10.1),  # idle: goes now, no saved burst
        (GroupState(rate=10.0, next_at=10.5), 10.0, 1, 0.5, 10.6),  # behind the schedule
        (GroupState(rate=10.0, next_at=10.0), 10.0, 12, 0.0, 11.2),  # a multipart object: 12 requests
    ],
)
def test_admit_waits_for_the_groups_pace(
    state: GroupState, now: float, requests: float, wait: float, next_at: float
) -> None:
    after, waited = admit(state, now, requests, CONFIG)
    assert waited == pytest.approx(wait)
    assert after.next_at == pytest.approx(next_at)
    assert after.requests == state.requests + requests


@pytest.mark.parametrize(
    ("state", "now", "rate"),
    [
        # First throttle: cut from what the group sent (200 in the last full window).
        (GroupState(sent_rate=200.0, window_start=9.5, window_count=10), 10.0, 140.0),
        # First throttle with no history: the current window's pace over at least a tenth of a window.
        (GroupState(window_start=10.0, window_count=5), 10.0, 35.0),
        # Already limited: cut multiplicatively.
        (GroupState(rate=100.0, cut_at=5.0), 10.0, 70.0),
        # Throttled again soon after a cut: to what the provider served since (60 in 0.5 s)...
        (GroupState(rate=200.0, cut_at=9.5, ok_since_cut=60.0), 10.0, 120.0),
        # ... by half at most...
        (GroupState(rate=200.0, cut_at=9.5, ok_since_cut=10.0), 10.0, 100.0),
        # ... and only soon after: a long quiet time says nothing of the provider's limit.
        (GroupState(rate=200.0, cut_at=1.0, ok_since_cut=50.0), 10.0, 140.0),
        # Within the cut interval: the same overload, not cut twice.
        (GroupState(rate=100.0, cut_at=9.9), 10.0, 100.0),
        # Never below the floor.
        (GroupState(rate=1.2, cut_at=0.0), 10.0, 1.0),
    ],
)
def test_a_throttle_cuts_the_rate_once_per_interval(state: GroupState, now: float, rate: float) -> None:
    after = record_throttle(state, now, CONFIG)
    assert after.rate == pytest.approx(rate)
    assert after.throttles == state.throttles + 1


@pytest.mark.parametrize(
    ("throttles", "explained"),
    [
        # One group throttled again and again: its own pace handles it, the pod never hears it.
        ([("a/", 0.0), ("a/", 0.1), ("a/", 3.0)], [True, True, True]),
        # A second group throttled within the spread window: the endpoint is overloaded, the pod hears it.
        ([("a/", 0.0), ("b/", 2.0)], [True, False]),
        # ... and the first group's next throttle while the second's is recent is spread too.
        ([("a/", 0.0), ("b/", 2.0), ("a/", 3.0)], [True, False, False]),
        # A hot group long done does not count against the next one.
        ([("a/", 0.0), ("b/", 5.5)], [True, True]),
        # Only the latest throttle of each of the last two groups counts: a third group sees the second.
        ([("a/", 0.0), ("b/", 1.0), ("c/", 5.8)], [True, False, False]),
        # ... and no longer the first once both others are out of the window.
        ([("a/", 0.0), ("b/", 1.0), ("c/", 6.5)], [True, False, True]),
    ],
)
def test_throttles_concentrated_on_one_group_are_its_own_and_spread_ones_the_pod_s(
    throttles: list[tuple[str, float]], explained: list[bool]
) -> None:
    table = PrefixTable(CONFIG)
    assert [table.throttled(group, now) for group, now in throttles] == explained


@pytest.mark.parametrize(
    ("state", "requests", "rate"),
    [
        (GroupState(), 100, None),  # unlimited stays unlimited
        (GroupState(rate=70.0, cut_rate=100.0), 70, 80.0),  # a second at pace: +10% of 100
        (GroupState(rate=70.0, cut_rate=100.0), 7, 71.0),
        (GroupState(rate=999_999.0, cut_rate=1e6), 1e6, 1e6),  # bounded above
    ],
)
def test_success_raises_the_rate_additively(state: GroupState, requests: float, rate: float | None) -> None:
    after = record_success(state, 0.0, requests, CONFIG)
    assert after.rate == (None if rate is None else pytest.approx(rate))


def test_table_tracks_a_bounded_number_of_groups_least_recently_used_first_out() -> None:
    table = PrefixTable(PrefixConfig(max_groups=3))
    table.admit("hot/", 0.0)
    table.throttled("hot/", 0.0)
    for n in range(1000):  # a hostile layout: a new group per key
        table.admit(f"k{n}/", 1.0)
        table.admit("hot/", 1.0)  # the hot group is used all along: it stays
        assert len(table) <= 3
    assert table.rate("hot/") is not None
    assert table.rate("k0/") is None  # evicted long ago
    assert [view.group for view in table.most_throttled(10)] == ["hot/"]


def test_most_throttled_lists_only_throttled_groups_most_first_bounded() -> None:
    table = PrefixTable()
    for n, group in enumerate(["a/", "b/", "c/"]):
        for i in range(n + 1):
            table.throttled(group, float(10 * i))
    table.admit("quiet/", 0.0)
    views = table.most_throttled(2)
    assert [(v.group, v.throttles) for v in views] == [("c/", 3), ("b/", 2)]


def test_pacer_wait_ends_when_the_run_stops() -> None:
    pacer = PrefixPacer("")
    stop = threading.Event()
    pacer.throttled("a/")  # limited now, at the floor of 1 request/s
    assert pacer.pace("a/", 100, stop) == 0.0  # goes at once, and the next request of a/ waits 100 s
    stop.set()
    started = time.monotonic()
    pacer.pace("a/", 1, stop)
    assert time.monotonic() - started < 0.5  # a stopping run does not wait for the pace
    assert pacer.pace("b/", 1, stop) == 0.0  # another group is not paced at all


# -- simulation ------------------------------------------------------------------------------------------


@dataclass
class ProviderBucket:
    """A provider's per-partition limit: `rate` requests/s, a fifth of a second of burst; 503 above."""

    rate: float
    tokens: float = 0.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate * 0.2, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    throttled: int = 0
    pods: int = 0  # throttles the group did not explain (the pod-wide manager hears them)


def simulate(
    seconds: float, cap: float, concurrency: int, latency: float, measure_from: float
) -> dict[str, Tally]:
    """Two groups, each with ``concurrency`` requests in flight of ``latency`` seconds: "hot/" behind a
    provider limit of ``cap`` requests/s, "cold/" unlimited. Counts from ``measure_from`` on."""
    table = PrefixTable()
    providers = {"hot/": ProviderBucket(cap), "cold/": None}
    tallies = {group: Tally() for group in providers}
    events: list[tuple[float, int, str, str, bool]] = []
    order = 0

    def dispatch(group: str, now: float) -> None:
        nonlocal order
        wait = table.admit(group, now)
        order += 1
        heapq.heappush(events, (now + wait, order, "send", group, False))

    for group in providers:
        for _ in range(concurrency):
            dispatch(group, 0.0)
    for _ in range(2_000_000):  # bounded: the simulated time ends long before
        if not events:
            break
        now, _, kind, group, ok = heapq.heappop(events)
        if now > seconds:
            break
        tally = tallies[group]
        if kind == "send":
            provider = providers[group]
            accepted = provider is None or provider.take(now)
            order += 1
            heapq.heappush(events, (now + latency, order, "done", group, accepted))
            if now >= measure_from:
                tally.sent += 1
            continue
        if ok:
            table.succeeded(group, now)
        explained = True if ok else table.throttled(group, now)
        if now >= measure_from:
            tally.ok += ok
            tally.throttled += not ok
        tally.pods += not explained
        dispatch(group, now)
    return tallies


def test_simulation_throttled_group_converges_near_its_limit_while_the_other_keeps_its_pace() -> None:
    cap, concurrency, latency, seconds, measure_from = 100.0, 8, 0.02, 40.0, 10.0
    tallies = simulate(seconds, cap, concurrency, latency, measure_from)
    span = seconds - measure_from
    hot, cold = tallies["hot/"], tallies["cold/"]
    unpaced = concurrency / latency  # 400 requests/s: what a group does unhindered
    # The throttled group settles near the provider's limit with few throttles.
    assert 0.75 * cap <= hot.ok / span <= 1.0 * cap
    assert hot.throttled <= 0.05 * hot.ok
    # The other group keeps its full pace and is never throttled.
    assert cold.ok / span == pytest.approx(unpaced, rel=0.02)
    assert cold.throttled == 0
    # The throttles were concentrated on the hot group: it explained them all, the pod heard none.
    assert hot.pods == 0 and cold.pods == 0


def test_simulation_without_pacing_the_throttled_group_is_mostly_throttled() -> None:
    """The baseline the law improves on: the same provider, every request sent at once."""
    provider, sent, throttled = ProviderBucket(100.0), 0, 0
    for n in range(8000):  # 400 requests/s for 20 s
        sent += 1
        throttled += not provider.take(n / 400)
    assert throttled / sent > 0.7


def test_status_shows_the_most_throttled_groups_bounded_and_escaped() -> None:
    pacer = PrefixPacer("dst/")
    hostile = prefix_group('dst/"}\n\x00' + "x" * 200 + "/k", "dst/")  # a key anyone may have named
    assert hostile == '"}'  # no "/" within 64 characters: the first two
    for n in range(STATUS_GROUPS + 5):
        for _ in range(n + 1):
            pacer.throttled(f"g{n:02d}/")
    for _ in range(3 * STATUS_GROUPS):
        pacer.throttled(hostile)
    progress = Progress(
        counts=Counts(),
        elapsed_seconds=1.0,
        objects_per_second=0.0,
        bytes_per_second=0.0,
        eta_seconds=None,
        limiter=LimiterState(concurrency=8, in_flight=0, reason="initial", reserved_bytes=0),
        throttles=0,
        retries=0,
        requests=0,
        prefix_groups=pacer.groups(),
    )
    shown = status_document(0, progress)["prefixGroups"]
    assert len(shown) == STATUS_GROUPS
    assert shown[0]["group"] == hostile and shown[0]["throttles"] == 3 * STATUS_GROUPS
    assert shown[1]["group"] == f"g{STATUS_GROUPS + 4:02d}/" and shown[1]["throttles"] == STATUS_GROUPS + 5
    assert shown[1]["requestsPerSecond"] == 1.0  # cut to the floor: it never sent anything
    text = json.dumps(status_document(0, progress))
    assert '"group": "\\"}"' in text  # a JSON string, escaped
    assert json.loads(text)["prefixGroups"] == shown
