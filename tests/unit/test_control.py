"""The control law against a simulated S3 service and a fake clock: no threads, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ferry.worker.budget import choose_budget
from ferry.worker.control import ControlConfig, Sample, initial_concurrency, initial_state, step


@dataclass
class SimulatedService:
    """Objects/s = concurrency / latency up to a ceiling, where a level change shows in completions only
    one transfer time later (transfers in flight finish at the old rate first, and nothing completes
    before the first transfer time); throttles above ``throttle_above`` in flight, plus a background
    throttle share that does not depend on load."""

    latency: float = 0.8
    ceiling: float = 300.0
    throttle_above: int = 10_000
    background_throttle_share: float = 0.0
    rss_per_transfer: int = 200 * 1024

    def run(self, config: ControlConfig, seconds: float, budget: int = 512 * 2**20, tick: float = 0.5):
        state = initial_state(config)
        now = objects = requests = throttles = 0.0
        history = []
        levels: list[tuple[float, int]] = []
        while now < seconds:
            c = state.concurrency
            levels.append((now, c))
            # The level in force one transfer time ago is what completes now.
            past = [level for t, level in levels if t <= now - self.latency]
            rate = min(past[-1] / self.latency, self.ceiling) if past else 0.0
            objects += rate * tick
            new_requests = 2 * rate * tick
            requests += new_requests
            throttles += new_requests * self.background_throttle_share
            if c > self.throttle_above:
                throttles += new_requests * 0.2
            now += tick
            sample = Sample(
                now,
                int(objects),
                int(objects) * 100_000,
                int(throttles),
                0,
                int(requests),
                50 * 2**20 + c * self.rss_per_transfer,
                c,
                self.latency if objects >= 1 else 0.0,
            )
            state = step(state, sample, config, budget)
            history.append((now, state.concurrency, rate, state.reason))
        return state, history


def seconds_to(history, fraction: float, target: float) -> float:
    return next(t for t, _c, rate, _r in history if rate >= fraction * target)


def test_small_objects_at_400ms_per_request_reach_90_percent_within_15_seconds() -> None:
    service = SimulatedService(latency=0.8, ceiling=300)
    config = ControlConfig(initial=initial_concurrency(100_000, 8 * 2**20, 512 * 2**20, 512), maximum=512)
    state, history = service.run(config, 40)
    assert seconds_to(history, 0.9, 300) <= 15
    assert history[-1][2] >= 0.9 * 300
    assert state.concurrency <= 512


def test_small_objects_at_400ms_per_request_reach_the_plateau_in_two_steps() -> None:
    # 64 -> 128 doubles objects/s, so the next step is x4 straight to spec.concurrency.max; doubling
    # alone needed a third level (and 9.5 s in this simulation).
    service = SimulatedService(latency=0.8, ceiling=600)
    _state, history = service.run(ControlConfig(initial=64, maximum=512), 30)
    assert seconds_to(history, 0.9, 600) <= 6.5
    assert [c for c, _why in _levels(history)][:3] == [64, 128, 512]


def test_the_first_level_is_judged_from_its_start_with_nothing_to_drain() -> None:
    service = SimulatedService(latency=0.8, ceiling=600)
    _state, history = service.run(ControlConfig(initial=64, maximum=512), 10)
    first_change = next(t for t, c, _r, _why in history if c != 64)
    # The first completions arrive after one transfer (0.8 s); one mean transfer of 64 objects judges it.
    assert first_change <= 2.0


def test_growth_is_multiplicative_not_plus_two() -> None:
    # 1 -> 2 doubles objects/s (a latency-bound service far from its ceiling), so the law grows x4.
    _state, history = SimulatedService(ceiling=10_000).run(ControlConfig(initial=1, maximum=4096), 20)
    levels = sorted({c for _t, c, _r, _why in history})
    assert levels[:5] == [1, 2, 8, 32, 128]


def _levels(history) -> list[tuple[int, str]]:
    """Each level the law set, in order, with its reason."""
    out: list[tuple[int, str]] = []
    for _t, c, _rate, why in history:
        if not out or out[-1][0] != c:
            out.append((c, why))
    return out


def _sample(now: float, objects: int, in_flight: int) -> Sample:
    """Counters of 100 KB objects, two requests each, no throttles, 60 MiB resident, 0.8 s per transfer."""
    return Sample(now, objects, objects * 100_000, 0, 0, 2 * objects, 60 * 2**20, in_flight, 0.8)


def _judge(concurrency: int, grown_by: float, previous_rate: float, rate: float, maximum: int):
    """One ramp level judged: measured over 2 s at ``rate`` objects/s after one at ``previous_rate``, the
    level reached by a ramp step of factor ``grown_by`` (0: not by a ramp step)."""
    config = ControlConfig(initial=concurrency, maximum=maximum)
    start, now = _sample(10.0, 1000, concurrency), _sample(12.0, 1000 + int(2 * rate), concurrency)
    state = replace(
        initial_state(config),
        level_start=replace(start, now=9.0),
        measure_start=start,
        previous_rate=previous_rate,
        best_rate=previous_rate,
        best_concurrency=max(1, int(concurrency / grown_by)) if grown_by else concurrency,
        grown_by=grown_by,
    )
    return step(state, now, config, 2**30)


@pytest.mark.parametrize(
    ("concurrency", "grown_by", "previous", "rate", "maximum", "expected", "reason"),
    [
        # A doubling that doubled objects/s (or nearly: 0.85 of it) is linear: the next step is x4.
        (64, 2.0, 100, 200, 512, 256, "throughput rising linearly"),
        (64, 2.0, 100, 171, 512, 256, "throughput rising linearly"),
        # Sub-linear: back to x2.
        (64, 2.0, 100, 160, 512, 128, "throughput rising"),
        # The first level, or one reached otherwise than by a ramp step, has nothing to compare: x2.
        (64, 0.0, 0, 200, 512, 128, "throughput rising"),
        # x4 is clamped to spec.concurrency.max, and at the max the law holds.
        (256, 2.0, 100, 200, 512, 512, "throughput rising linearly"),
        (200, 2.0, 100, 200, 300, 300, "throughput rising linearly"),
        (512, 2.0, 100, 200, 512, 512, "at spec.concurrency.max"),
        # After a x4 step: linear again -> x4; at least what two rising doublings give -> x2.
        (256, 4.0, 100, 400, 4096, 1024, "throughput rising linearly"),
        (256, 4.0, 100, 300, 4096, 512, "throughput rising"),
        # The knee lies inside the x4 step: hold the level between, where a doubling ramp would stop.
        (256, 4.0, 100, 200, 4096, 128, "throughput plateau"),
        # No rise worth a doubling: the level between when this one is the best so far, else the level
        # the step came from.
        (256, 4.0, 100, 105, 4096, 128, "throughput plateau"),
        (256, 4.0, 100, 95, 4096, 64, "throughput plateau"),
    ],
)
def test_linear_growth_steps_x4_and_anything_less_x2_or_holds(
    concurrency, grown_by, previous, rate, maximum, expected, reason
) -> None:
    after = _judge(concurrency, grown_by, previous, rate, maximum)
    assert (after.concurrency, after.reason) == (expected, reason)
    assert after.concurrency <= maximum


@pytest.mark.parametrize(
    ("seconds", "objects", "judged"),
    [
        (1.0, 64, True),  # many objects: one mean transfer (0.8 s) and settle_seconds are enough
        (0.9, 200, False),  # never under settle_seconds
        (1.0, 63, False),  # few objects: 1.5 x mean (1.2 s) guards against completion waves
        (1.25, 8, True),
        (1.25, 7, False),
    ],
)
def test_a_level_is_judged_sooner_when_many_objects_finished(
    seconds: float, objects: int, judged: bool
) -> None:
    config = ControlConfig(initial=64, maximum=512)
    start, now = _sample(10.0, 1000, 64), _sample(10.0 + seconds, 1000 + objects, 64)
    state = replace(initial_state(config), level_start=replace(start, now=9.0), measure_start=start)
    after = step(state, now, config, 2**30)
    assert (after.concurrency != 64) is judged


@pytest.mark.parametrize("maximum", [100, 1000])
def test_x4_steps_never_exceed_spec_concurrency_max(maximum: int) -> None:
    _state, history = SimulatedService(ceiling=100_000).run(ControlConfig(initial=16, maximum=maximum), 30)
    assert any(why == "throughput rising linearly" for *_x, why in history)
    assert max(c for _t, c, _r, _why in history) <= maximum
    assert history[-1][1] == maximum


def test_a_knee_inside_a_x4_step_holds_where_doubling_would() -> None:
    # 100 objects/s at 200 ms per object: the knee is at 20 transfers. 8 -> 16 is linear, so the law tries
    # 64; the rate rose only x1.25, so it holds 32 as a doubling ramp would, not 64 or more.
    _state, history = SimulatedService(latency=0.2, ceiling=100).run(
        ControlConfig(initial=8, maximum=4096), 40
    )
    assert any(why == "throughput rising linearly" for *_x, why in history)
    assert max(c for _t, c, _r, _why in history) <= 64
    assert all(c <= 40 for t, c, _r, _why in history if t > 10)
    assert history[-1][2] >= 0.99 * 100


def test_throttling_at_a_x4_level_backs_off_to_the_level_between() -> None:
    # The provider throttles above 200 transfers; 32 -> 128 was linear, so the law jumps to 512.
    service = SimulatedService(ceiling=100_000, throttle_above=200)
    _state, history = service.run(ControlConfig(initial=16, maximum=4096), 60)
    levels = _levels(history)
    assert (512, "throughput rising linearly") in levels
    assert levels[levels.index((512, "throughput rising linearly")) + 1] == (256, "throttling")
    assert all(why != "throttling not load-related" for _c, why in levels)
    assert all(c <= 250 for t, c, _r, _why in history if t > 20)


def test_memory_pressure_during_a_x4_ramp_still_backs_off() -> None:
    # 1 MiB per transfer against a 256 MiB budget: 32 -> 128 is linear, the x4 step to 512 would need
    # ~560 MiB; memory pressure must cut it back under 0.85 x budget.
    service = SimulatedService(ceiling=100_000, rss_per_transfer=2**20)
    budget = 256 * 2**20
    _state, history = service.run(ControlConfig(initial=16, maximum=4096), 40, budget=budget)
    assert any(why == "throughput rising linearly" for *_x, why in history)
    assert any(why == "memory pressure" for *_x, why in history)
    assert all(50 * 2**20 + c * 2**20 <= 0.85 * budget for t, c, _r, _why in history if t > 15)


@pytest.mark.parametrize("maximum", [1, 7, 64])
def test_never_exceeds_spec_concurrency_max(maximum: int) -> None:
    _state, history = SimulatedService(ceiling=10_000).run(ControlConfig(initial=4, maximum=maximum), 30)
    assert max(c for _t, c, _r, _why in history) <= maximum
    assert history[-1][1] == maximum


def test_backs_off_when_load_causes_throttling() -> None:
    service = SimulatedService(ceiling=10_000, throttle_above=40)
    _state, history = service.run(ControlConfig(initial=8, maximum=512), 60)
    late = [c for t, c, _r, _why in history if t > 30]
    assert max(late) <= 64, "must settle near the throttling threshold"
    assert any(why == "throttling" for *_x, why in history)


def test_background_throttling_does_not_collapse_concurrency() -> None:
    service = SimulatedService(ceiling=300, background_throttle_share=0.05)
    _state, history = service.run(ControlConfig(initial=32, maximum=512), 60)
    assert min(c for t, c, _r, _why in history if t > 20) >= 128
    assert history[-1][2] >= 0.9 * 300


def test_memory_pressure_shrinks_concurrency() -> None:
    # 8 MiB per transfer against a 256 MiB budget: the law must stay below ~0.85 * budget.
    service = SimulatedService(ceiling=10_000, rss_per_transfer=8 * 2**20)
    budget = 256 * 2**20
    _state, history = service.run(ControlConfig(initial=4, maximum=512), 40, budget=budget)
    late = [c for t, c, _r, _why in history if t > 10]
    assert all(50 * 2**20 + c * 8 * 2**20 <= budget for c in late)
    assert any(why == "memory pressure" for *_x, why in history)


@pytest.mark.parametrize(
    ("median", "budget", "maximum", "expected"),
    [
        (None, 2**30, 512, 16),
        (100_000, 2**30, 512, 64),
        (100_000, 2**30, 4, 4),
        (2**30, 512 * 2**20, 512, 8),
        (2**30, 16 * 2**20, 512, 1),
    ],
)
def test_initial_concurrency_follows_the_size_distribution(median, budget, maximum, expected) -> None:
    assert initial_concurrency(median, 8 * 2**20, budget, maximum) == expected


@pytest.mark.parametrize(
    ("env", "v2", "v1", "machine", "expected", "source"),
    [
        ("512Mi", "1073741824", None, 2**34, 512 * 2**20, "FERRY_MEMORY_LIMIT"),
        (None, "1073741824\n", None, 2**34, int(0.8 * 2**30), "80% of cgroup v2 memory.max"),
        (None, "max\n", "1073741824", 2**34, int(0.8 * 2**30), "80% of cgroup v1 memory.limit_in_bytes"),
        (None, "max", "9223372036854771712", 2**34, 2**32, "25% of machine memory"),
        (None, None, None, 2**34, 2**32, "25% of machine memory"),
    ],
)
def test_budget_comes_from_env_then_cgroup_then_machine(env, v2, v1, machine, expected, source) -> None:
    budget = choose_budget(env, v2, v1, machine)
    assert (budget.bytes, budget.source) == (expected, source)


def test_bad_memory_limit_names_the_variable() -> None:
    with pytest.raises(ValueError, match="FERRY_MEMORY_LIMIT"):
        choose_budget("lots", None, None, 2**30)
