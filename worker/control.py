"""The control law of the adaptive concurrency manager. Pure: samples in, decisions out, no clock.

Where it sits: the worker's adaptive manager (adaptive.py) samples its counters every tick and calls `step`;
the concurrency it returns is what the limiter admits, never past the memory budget.

Growth is multiplicative while objects/s (or bytes/s, for large objects) keeps rising, because a +2 ramp
from one transfer is what kept the incident at 1.14 objects/s. After a plateau the law holds the best
level and probes above it now and then. Throttling, memory pressure and rising error rates back off
multiplicatively, with a cooldown so one burst is not punished twice.

Judging a level costs time: the transfers started before the change drain first (one mean transfer), then
a window of at least 1.5 mean transfers and 8 objects is measured. At 400 ms per request each level costs
about 3 s, so going 64 -> 512 by doubling took 9 s of a run that sits at its plateau only afterwards. Two
rules shorten that where it is safe:

- **x4 while growth is linear.** A step that raised throughput nearly in proportion to the concurrency it
  added (new rate >= `linear_share` x step factor x previous rate) shows a latency-bound regime far from
  any knee, so the next step grows by growth^2 (x4), clamped to `maximum`. A step that rose less goes
  back to x2; one that did not rise is a plateau, as before. 0.85 is chosen from evidence: a latency-bound
  service scales exactly (the simulated service of tests/unit/test_control.py gives 2.00 per doubling),
  and the 400 ms benchmark on 2 cores gave 2.5-2.9x for 64 -> 128 (the first level still pays connection
  set-up) but 1.6-1.8x for 128 -> 256 once the CPU began to take a share; 0.85 takes the first and not
  the second. Counting noise of a 64-object window is ~1/sqrt(64) = 12%, which 0.85 tolerates. The first
  level never grows x4 (there is no previous rate to compare), nor does a level reached by a probe or
  restored after a backoff.
- **A x4 step stands for two doublings** and is judged as a doubling ramp would have judged both. Its
  first doubling can at most double the rate, so a x4 step that raised it less than growth x (1 +
  improvement) may hide a second doubling that did not rise: the law holds the level between (or the
  level it came from, if the x4 level is no better), where doubling would have stopped. Without this the
  law held twice the concurrency doubling holds behind a bandwidth cap, for the same objects/s.
  Backoffs still come first whatever the step: memory pressure at a x4 level cuts it x0.7 as at any
  other, and load-induced throttling at a x4 level backs off to the level between and judges from there
  as if throttling had begun at it; a plain x0.7 from four times a good level left the halving check above
  the knee, where it mistook load-induced throttling for the provider's background rate.
  What x4 costs: when the knee sits just above a level that scaled linearly, the next level can put up to
  four times that level in flight for one judging window (doubling: two times) before the law comes back;
  the limiter's memory admission bounds it as always.
- **A shorter window when many objects finished.** The 1.5 x mean transfer guards against completion
  waves (transfers started together finish together), which skew a window only when few are in flight.
  Once `short_window_objects` (64) objects finished in the window, one mean transfer (and
  `settle_seconds`) is enough to judge the level.

The driver's 0.5 s tick is kept: the simulations show a 0.25 s tick judges throttle shares over too few
requests and collapses concurrency under a 5% background throttle rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ControlConfig:
    initial: int = 8
    minimum: int = 1
    maximum: int = 512
    growth: float = 2.0  # factor while throughput keeps rising
    #: A step whose throughput rose by at least this share of its concurrency factor is linear: the next
    #: step grows by growth**2 (still clamped to `maximum`).
    linear_share: float = 0.85
    probe_growth: float = 1.25  # factor of a probe above a plateau
    backoff: float = 0.7  # factor on throttling, errors, memory pressure
    improvement: float = 0.08  # a step must raise throughput by this share to count as rising
    settle_seconds: float = 1.0  # least time to judge a level (more when transfers are slow)
    #: Objects finished in a window that make one mean transfer time enough to judge a level (else 1.5x).
    short_window_objects: int = 64
    cooldown_seconds: float = 5.0  # no growth this long after a backoff
    probe_every_seconds: float = 15.0
    memory_high: float = 0.85  # share of the budget where RSS triggers a backoff
    error_rate_high: float = 0.05  # share of requests failing (non-throttle) that triggers a backoff


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one instant, as the driver reads them."""

    now: float
    objects: int
    bytes: int
    throttles: int
    errors: int
    requests: int
    rss: int
    in_flight: int
    mean_transfer_seconds: float


@dataclass(frozen=True)
class ControlState:
    concurrency: int
    reason: str
    phase: str = "ramp"  # ramp -> hold <-> probe
    level_start: Sample | None = None  # counters when the current level began
    #: Counters once the transfers started before the level changed have drained (one mean transfer
    #: time later): the level's own throughput is measured from here.
    measure_start: Sample | None = None
    best_rate: float = 0.0
    best_concurrency: int = 0
    cooldown_until: float = 0.0
    last_probe: float = 0.0
    previous_rate: float = 0.0
    #: Factor of the ramp step that reached this level from the one measured at `previous_rate` (0 when the
    #: level came any other way: the start, a probe, a backoff, a restore, demand below the limit).
    grown_by: float = 0.0
    #: Throttle share that persists whatever the concurrency (a provider's background rate): retries
    #: absorb it, and backing off for it would only collapse throughput.
    background_throttle_share: float = 0.0
    #: Share and level when the last throttling backoff happened, to tell load-induced from background.
    throttle_share_at_backoff: float = 0.0
    concurrency_before_backoff: int = 0
    throttle_checks: int = 0


def initial_concurrency(median_size: int | None, part_size: int, budget_bytes: int, maximum: int) -> int:
    """Where the ramp starts, from the declared (or measured) median object size.

    Small objects are latency-bound, so start wide; large ones start where an eighth of the budget
    holds their part buffers. The control law takes it from there within a few seconds either way.
    """
    if median_size is None:
        start = 16
    elif median_size <= 2**20:
        start = 64
    else:
        start = max(1, budget_bytes // (8 * min(median_size, part_size)))
    return max(1, min(start, 64, maximum))


def initial_state(config: ControlConfig) -> ControlState:
    start = max(config.minimum, min(config.initial, config.maximum))
    return ControlState(concurrency=start, reason="initial")


def _rate(start: Sample, now: Sample) -> tuple[float, float]:
    span = now.now - start.now
    if span <= 0:
        return 0.0, 0.0
    return (now.objects - start.objects) / span, (now.bytes - start.bytes) / span


def _throughput(objects_rate: float, bytes_rate: float, mean_size: float) -> float:
    """One number to compare levels: objects/s, with bytes/s weighing in when objects are large.

    Expressed in "objects of the mean size per second", so a level that moves more bytes of big objects
    counts as faster even when fewer objects finish in the window.
    """
    if mean_size <= 0:
        return objects_rate
    return max(objects_rate, bytes_rate / mean_size)


def _window_judges(seconds: float, objects: int, mean_transfer: float, config: ControlConfig) -> bool:
    """Whether a measuring window of ``seconds`` in which ``objects`` finished is enough to judge a level."""
    if seconds < config.settle_seconds:
        return False
    if objects >= config.short_window_objects:
        return seconds >= mean_transfer
    return objects >= 8 and seconds >= 1.5 * mean_transfer


def step(state: ControlState, sample: Sample, config: ControlConfig, budget_bytes: int) -> ControlState:
    """Advance the law by one sample and return the new state."""
    if state.level_start is None:
        return replace(state, level_start=sample, measure_start=None)
    start = state.level_start
    span = sample.now - start.now

    def clamp(n: int) -> int:
        return max(config.minimum, min(config.maximum, n))

    # Backoffs first: they act on the latest window whatever the phase.
    new_throttles = sample.throttles - start.throttles
    new_requests = max(1, sample.requests - start.requests)
    new_errors = sample.errors - start.errors
    if budget_bytes and sample.rss >= config.memory_high * budget_bytes:
        return _back_off(state, sample, config, clamp, "memory pressure")
    share = new_throttles / new_requests
    if state.throttle_share_at_backoff and span >= config.settle_seconds and new_requests >= 20:
        # A full window after a throttling backoff: did fewer transfers mean fewer throttles?
        if share < 0.7 * state.throttle_share_at_backoff:
            state = replace(state, throttle_share_at_backoff=0.0, throttle_checks=0)
        elif state.throttle_checks == 0:
            # Not yet: halve from where throttling began before judging, a 30% cut may not reach the knee.
            return replace(
                state,
                concurrency=clamp(state.concurrency_before_backoff // 2),
                throttle_checks=1,
                level_start=sample,
                measure_start=None,
                reason="throttling",
            )
        else:
            # Half the load, same share: the provider throttles a fixed share whatever we do.
            return replace(
                state,
                concurrency=state.concurrency_before_backoff,
                phase="ramp",
                throttle_share_at_backoff=0.0,
                throttle_checks=0,
                background_throttle_share=share,
                cooldown_until=sample.now,
                level_start=sample,
                measure_start=None,
                previous_rate=0.0,
                grown_by=0.0,
                reason="throttling not load-related",
            )
    load_induced = share > max(0.01, 1.5 * state.background_throttle_share + 0.01)
    if new_throttles > 0 and load_induced and sample.now >= state.cooldown_until and new_requests >= 10:
        backed = _back_off(state, sample, config, clamp, "throttling")
        if state.phase == "ramp" and state.grown_by > config.growth:
            # A x4 step that throttles skipped the level between, which a doubling ramp would have met
            # first: back off to it and judge from there as if throttling had begun at it (halving, if it
            # still throttles, lands on the level the step came from, which ran without throttling).
            between = min(backed.concurrency, clamp(round(state.concurrency / config.growth)))
            backed = replace(backed, concurrency=between, best_concurrency=between)
            return replace(backed, throttle_share_at_backoff=share, concurrency_before_backoff=between)
        return replace(backed, throttle_share_at_backoff=share, concurrency_before_backoff=state.concurrency)
    if new_errors / new_requests > config.error_rate_high and sample.now >= state.cooldown_until:
        return _back_off(state, sample, config, clamp, "errors rising")

    mean = sample.mean_transfer_seconds
    if sample.objects == 0 or mean <= 0 or sample.now < state.cooldown_until:
        return state  # nothing has finished yet: no level can be judged
    window = state.measure_start
    if window is None:
        if state.reason != "initial":
            return replace(state, measure_start=sample) if span >= min(mean, 5.0) else state
        # The first level has nothing to drain: every transfer in flight started at it, so it is measured
        # from its start (about a second sooner at 400 ms per request).
        window = start
        state = replace(state, measure_start=start)
    if not _window_judges(sample.now - window.now, sample.objects - window.objects, mean, config):
        return state
    objects_rate, bytes_rate = _rate(window, sample)
    mean_size = (sample.bytes / sample.objects) if sample.objects else 0.0
    rate = _throughput(objects_rate, bytes_rate, mean_size)
    saturated = sample.in_flight >= 0.8 * state.concurrency

    if state.phase == "ramp":
        rising = rate > state.previous_rate * (1 + config.improvement)
        if rate > state.best_rate:
            state = replace(state, best_rate=rate, best_concurrency=state.concurrency)
        if not saturated:
            # Work arrives slower than the limit allows (listing, rate limit): growing would change nothing.
            return replace(
                state,
                level_start=sample,
                measure_start=None,
                previous_rate=rate,
                grown_by=0.0,
                reason="demand below limit",
            )
        if (
            state.grown_by > config.growth
            and rate < config.growth * (1 + config.improvement) * state.previous_rate
        ):
            # A x4 step stands for two doublings. The first can at most double the rate, so less than
            # growth x (1 + improvement) means the second may not have risen: a doubling ramp would have
            # held the level between (which gets at least rate / (1 + improvement)), or the level the step
            # came from if this one is no better.
            between = min(
                state.best_concurrency or state.concurrency, clamp(round(state.concurrency / config.growth))
            )
            return replace(
                state,
                phase="hold",
                concurrency=between,
                best_concurrency=between,
                level_start=sample,
                measure_start=None,
                previous_rate=rate,
                grown_by=0.0,
                last_probe=sample.now,
                reason="throughput plateau",
            )
        if rising and state.concurrency < config.maximum:
            linear = state.grown_by > 1 and rate >= config.linear_share * state.grown_by * state.previous_rate
            factor = config.growth**2 if linear else config.growth
            grown = clamp(int(state.concurrency * factor))
            return replace(
                state,
                concurrency=grown,
                level_start=sample,
                measure_start=None,
                previous_rate=rate,
                grown_by=grown / state.concurrency,
                reason="throughput rising linearly" if linear else "throughput rising",
            )
        if state.concurrency >= config.maximum:
            return replace(
                state,
                phase="hold",
                level_start=sample,
                measure_start=None,
                previous_rate=rate,
                last_probe=sample.now,
                reason="at spec.concurrency.max",
            )
        best = state.best_concurrency or state.concurrency
        return replace(
            state,
            phase="hold",
            concurrency=best,
            level_start=sample,
            measure_start=None,
            previous_rate=rate,
            last_probe=sample.now,
            reason="throughput plateau",
        )

    if state.phase == "probe":
        if rate > state.previous_rate * (1 + config.improvement):
            return replace(
                state,
                phase="ramp",
                level_start=sample,
                measure_start=None,
                previous_rate=rate,
                best_rate=rate,
                best_concurrency=state.concurrency,
                grown_by=0.0,
                reason="probe found more throughput",
            )
        return replace(
            state,
            phase="hold",
            concurrency=state.best_concurrency or state.concurrency,
            level_start=sample,
            measure_start=None,
            last_probe=sample.now,
            reason="throughput plateau",
        )

    # hold: refresh the reference rate, and probe above it now and then.
    probe_due = sample.now - state.last_probe >= config.probe_every_seconds and saturated
    if probe_due and state.concurrency < config.maximum:
        probe = clamp(max(state.concurrency + 1, int(state.concurrency * config.probe_growth)))
        return replace(
            state,
            phase="probe",
            concurrency=probe,
            best_concurrency=state.concurrency,
            level_start=sample,
            measure_start=None,
            previous_rate=rate,
            last_probe=sample.now,
            reason="probing",
        )
    return replace(state, level_start=sample, measure_start=None, previous_rate=rate)


def _back_off(
    state: ControlState, sample: Sample, config: ControlConfig, clamp: Callable[[int], int], reason: str
) -> ControlState:
    lowered = clamp(int(state.concurrency * config.backoff))
    return replace(
        state,
        concurrency=lowered,
        phase="hold",
        reason=reason,
        level_start=sample,
        measure_start=None,
        best_concurrency=lowered,
        grown_by=0.0,
        cooldown_until=sample.now + config.cooldown_seconds,
        last_probe=sample.now,
    )
