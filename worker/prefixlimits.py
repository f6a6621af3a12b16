"""Per-prefix throttle handling: an AIMD request rate for each "prefix group" of destination keys.

Pure: keys, times and answers in, groups, delays and decisions out; no clock, no threads (the engine's
`prefixpacer.py` holds the lock and sleeps). Where it sits in the flow: the engine asks `admit` before an
object's transfer takes its permit (so a paced object holds neither a transfer slot nor memory), and
tells `record_throttle` / `record_success` what the destination answered.

S3 serves a fixed request rate per partitioned key prefix (3,500 PUT/COPY, 5,500 GET per second) and
answers 503 SlowDown above it. When throttles concentrate on some prefixes, only the objects written
there should slow down; the pod-wide adaptive manager (`control.py`) keeps its concurrency for the rest.

Why the group is a leading piece of the destination key (`prefix_group`): S3 partitions by key prefix,
and most layouts put what is written together under one top-level "folder" (`logs/`, `2026-11-29/`,
`tenant-7/`). Because the group is a *prefix* of the key, and listings and manifests are walked in key
order, the objects of one group come one after another: waiting for a group's pace at dispatch blocks
other groups only at a group's boundary. A flat layout (no "/" soon after the destination prefix) is
grouped by its first `flat_chars` characters, as S3 would split hashed keys.

Concentrated or spread (`PrefixTable.throttled`): throttles of one group alone are that group's, and
only its pace slows; the pod-wide manager keeps its concurrency for what comes next. Once throttles
come from two groups or more within `spread_window_seconds`, the endpoint as a whole is overloaded, and
the pod-wide manager hears them too. (Telling the pod of every group's first throttle, as a first
version did, left the pod's concurrency cut after a hot group: while that group is paced the objects/s
cannot rise, so the pod-wide manager never grows back, and the next group started at a quarter of its
concurrency — at 100 ms per request it then ran at half its unthrottled rate.)

Bounds against a hostile key layout: a group name is at most `max_group_chars` characters, and at most
`max_groups` groups are tracked (least recently used evicted). An evicted group starts again unlimited;
a layout of endless distinct groups throttled in turn is throttles spread over groups, which the
pod-wide backoff handles, instead of growing memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from ferry.worker.parts import MAX_SINGLE_COPY, part_size_for


@dataclass(frozen=True)
class PrefixConfig:
    #: Key segments (up to and including each "/") after the destination prefix that make a group.
    depth: int = 1
    #: A group name is cut to this many characters (a key of 1,024 characters makes a short group).
    max_group_chars: int = 64
    #: A key with no "/" within `max_group_chars` after the prefix is grouped by this many characters.
    flat_chars: int = 2
    #: Groups tracked at most (LRU): memory stays bounded whatever the key layout.
    max_groups: int = 1024
    #: Multiplicative cut of a group's rate on a throttle (at most once per `cut_every_seconds`).
    decrease: float = 0.7
    #: Additive raise: while a group runs at its rate, its rate grows by this share of the rate it was
    #: throttled at (before its last cut) per second: a 30% cut is made good in about three seconds, then
    #: the group probes above it again.
    increase_share: float = 0.1
    #: One cut per this long: the requests in flight when a cut happens answer 503 too, and are the
    #: same overload, not a new one (a small object's request takes milliseconds to tens of them).
    cut_every_seconds: float = 0.25
    #: A group is never paced below this (requests/s), nor above `max_rate` (the CRD's bound).
    min_rate: float = 1.0
    max_rate: float = 1_000_000.0
    #: The window over which a group's sending rate is measured (where its first cut starts from).
    window_seconds: float = 1.0
    #: Throttles of another group within this many seconds make a throttle the pod's too: the overload
    #: is spread, not one prefix's. Long enough to span the retries of one overload (backoffs of a few
    #: seconds), short enough that a hot group long done does not count against the next.
    spread_window_seconds: float = 5.0


@dataclass(frozen=True)
class GroupState:
    """One group's law. ``rate`` None: not limited (no throttle seen since it was first tracked)."""

    rate: float | None = None
    #: When the next request of this group may go out (a schedule: each admitted request moves it).
    next_at: float = 0.0
    #: The rate the group was throttled at before its last cut: the additive raise is a share of it.
    cut_rate: float = 0.0
    cut_at: float = float("-inf")
    throttles: int = 0
    requests: int = 0
    window_start: float = 0.0
    window_count: float = 0.0
    #: Requests/s sent in the last complete window.
    sent_rate: float = 0.0
    #: Requests of the group that succeeded since its last cut.
    ok_since_cut: float = 0.0


@dataclass(frozen=True)
class GroupView:
    """What /status shows of one group."""

    group: str
    rate: float | None
    throttles: int
    requests: int


def prefix_group(key: str, destination_prefix: str, config: PrefixConfig = PrefixConfig()) -> str:
    """The prefix group of a destination key: its first `depth` segments after the destination prefix
    (each with its "/"), else its first `flat_chars` characters; at most `max_group_chars` long."""
    rest = key[len(destination_prefix) :] if key.startswith(destination_prefix) else key
    head = rest[: config.max_group_chars]
    end = 0
    for _ in range(max(1, config.depth)):
        slash = head.find("/", end)
        if slash < 0:
            break
        end = slash + 1
    return head[:end] if end else head[: config.flat_chars]


def _measured(state: GroupState, now: float, config: PrefixConfig, sent: float) -> GroupState:
    """Count ``sent`` requests into the group's sending-rate window."""
    if now - state.window_start >= config.window_seconds:
        span = max(now - state.window_start, config.window_seconds)
        state = replace(state, window_start=now, window_count=0.0, sent_rate=state.window_count / span)
    return replace(state, window_count=state.window_count + sent, requests=state.requests + int(sent))


def admit(state: GroupState, now: float, requests: float, config: PrefixConfig) -> tuple[GroupState, float]:
    """Schedule ``requests`` requests of the group; returns the new state and the seconds to wait
    before they go out (0 for an unlimited group). No burst is saved up while a group is idle."""
    requests = max(0.0, requests)
    state = _measured(state, now, config, requests)
    if state.rate is None:
        return state, 0.0
    start = max(now, state.next_at)
    return replace(state, next_at=start + requests / state.rate), start - now


def record_throttle(state: GroupState, now: float, config: PrefixConfig) -> GroupState:
    """A request of the group was throttled: the group's new state (a cut, at most one per interval)."""
    state = replace(state, throttles=state.throttles + 1)
    if now - state.cut_at < config.cut_every_seconds:
        return state
    if state.rate is None:
        # Start from what the group was sending: the current window's pace (over at least a tenth of a
        # window, so a few requests just after a window began do not count as a burst), or the last
        # full window's.
        elapsed = max(now - state.window_start, 0.1 * config.window_seconds)
        base = max(state.sent_rate, state.window_count / elapsed)
        rate = base * config.decrease
    else:
        base = state.rate
        rate = base * config.decrease
        since = now - state.cut_at
        if since <= 4 * config.cut_every_seconds:
            # Throttled again soon after a cut: the provider served about what it allows since then,
            # so the pace goes there instead of a cut per interval from far above; by half at most,
            # since answers of retried and in-flight requests make a short count noisy.
            rate = min(rate, max(state.ok_since_cut / since, 0.5 * base))
    rate = min(config.max_rate, max(config.min_rate, rate))
    return replace(state, rate=rate, cut_rate=max(rate, base), cut_at=now, ok_since_cut=0.0)


def spread(recent: tuple[tuple[str, float], ...], group: str, now: float, config: PrefixConfig) -> bool:
    """Whether a throttle of ``group`` at ``now`` is spread over groups: ``recent`` (group, time of its
    last throttle) shows another group throttled within `spread_window_seconds`."""
    return any(other != group and now - at <= config.spread_window_seconds for other, at in recent)


def remember(recent: tuple[tuple[str, float], ...], group: str, now: float) -> tuple[tuple[str, float], ...]:
    """The last throttle of the two groups throttled last: all `spread` needs to see another group."""
    others = [entry for entry in recent if entry[0] != group]
    return ((group, now), others[0]) if others else ((group, now),)


def record_success(state: GroupState, now: float, requests: float, config: PrefixConfig) -> GroupState:
    """``requests`` requests of the group succeeded: a limited group's rate rises additively, by
    `increase_share` of its last cut rate per second of requests sent at its pace."""
    if state.rate is None or state.rate <= 0:
        return state
    raised = state.rate + config.increase_share * state.cut_rate * requests / state.rate
    return replace(state, rate=min(config.max_rate, raised), ok_since_cut=state.ok_since_cut + requests)


class PrefixTable:
    """The groups of one worker, LRU-bounded. Not thread-safe (the pacer holds a lock); no clock (every
    call takes ``now``)."""

    def __init__(self, config: PrefixConfig = PrefixConfig()) -> None:
        self.config = config
        self._groups: OrderedDict[str, GroupState] = OrderedDict()
        self._recent: tuple[tuple[str, float], ...] = ()

    def __len__(self) -> int:
        return len(self._groups)

    def _get(self, group: str) -> GroupState:
        state = self._groups.get(group)
        if state is None:
            state = GroupState()
            self._groups[group] = state
            while len(self._groups) > self.config.max_groups:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(group)
        return state

    def admit(self, group: str, now: float, requests: float = 1.0) -> float:
        state, wait = admit(self._get(group), now, requests, self.config)
        self._groups[group] = state
        return wait

    def throttled(self, group: str, now: float) -> bool:
        """Record a throttle of ``group``; True when the group explains it (the throttles are concentrated
        on it: its pace slows, the pod need not back off), False when they are spread over groups."""
        self._groups[group] = record_throttle(self._get(group), now, self.config)
        explained = not spread(self._recent, group, now, self.config)
        self._recent = remember(self._recent, group, now)
        return explained

    def succeeded(self, group: str, now: float, requests: float = 1.0) -> None:
        state = self._groups.get(group)
        if state is not None and state.rate is not None:  # an unlimited group has nothing to raise
            self._groups[group] = record_success(state, now, requests, self.config)

    def rate(self, group: str) -> float | None:
        state = self._groups.get(group)
        return None if state is None else state.rate

    def most_throttled(self, n: int) -> tuple[GroupView, ...]:
        """The ``n`` groups with the most throttles (only groups that were throttled), most first."""
        throttled = [(name, s) for name, s in self._groups.items() if s.throttles > 0]
        throttled.sort(key=lambda item: (-item[1].throttles, item[0]))
        return tuple(GroupView(name, s.rate, s.throttles, s.requests) for name, s in throttled[: max(0, n)])


def destination_requests(size: int, part_size: int, server_side: bool) -> int:
    """Requests an object's copy makes to its destination key: one PUT or COPY, or a multipart upload's
    create, parts and complete (how `copier.py` chooses). What its group's pace is charged at dispatch."""
    single = min(part_size, MAX_SINGLE_COPY) if server_side else part_size
    if size <= single:
        return 1
    piece = part_size_for(size, part_size)
    return -(-size // piece) + 2
