"""The control law against a simulated S3 service and a fake clock: no threads, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass

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


def test_growth_is_multiplicative_not_plus_two() -> None:
    _state, history = SimulatedService(ceiling=10_000).run(ControlConfig(initial=1, maximum=4096), 20)
    levels = sorted({c for _t, c, _r, _why in history})
    assert levels[:5] == [1, 2, 4, 8, 16]


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
