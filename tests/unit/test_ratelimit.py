"""Token buckets of spec.rateLimit, driven by a fake clock."""

from __future__ import annotations

import pytest

from ferry.worker.ratelimit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def bucket(rate: float) -> tuple[TokenBucket, FakeTime]:
    fake = FakeTime()
    return TokenBucket(rate, clock=fake.clock, sleep=fake.sleep), fake


@pytest.mark.parametrize("amount", [1, 1000, 10**12])
def test_rate_zero_never_waits(amount: float) -> None:
    tb, fake = bucket(0)
    for _ in range(100):
        assert tb.take(amount) == 0.0
    assert fake.sleeps == []


def test_burst_then_paced() -> None:
    tb, fake = bucket(10)
    waits = [tb.take() for _ in range(15)]
    assert waits[:10] == [0.0] * 10  # one second of burst
    assert waits[10:] == pytest.approx([0.1] * 5)  # then one token per 1/rate seconds
    assert fake.sleeps == pytest.approx([0.1] * 5)
    assert fake.now - 100.0 == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("rate", "amount", "expected"),
    [
        pytest.param(10, 50, 4.0, id="five-seconds-worth"),
        pytest.param(1000, 1000, 0.0, id="exactly-the-burst"),
        pytest.param(1000, 3000, 2.0, id="three-times-burst"),
        pytest.param(2**20, 8 * 2**20, 7.0, id="8MiB-at-1MiB-per-s"),
    ],
)
def test_big_take_waits_proportionally(rate: float, amount: float, expected: float) -> None:
    tb, _ = bucket(rate)
    assert tb.take(amount) == pytest.approx(expected)


def test_refills_with_time_but_burst_is_capped() -> None:
    tb, fake = bucket(10)
    for _ in range(10):
        tb.take()
    fake.now += 60.0  # idle for a minute: only one second of tokens comes back
    waits = [tb.take() for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(0.1)


def test_long_run_rate_is_respected() -> None:
    tb, fake = bucket(50)
    start = fake.now
    for _ in range(1050):
        tb.take()
    # 50 burst tokens plus 1000 paced at 50/s.
    assert fake.now - start == pytest.approx(20.0)


def test_debt_after_big_take_delays_the_next_caller() -> None:
    tb, fake = bucket(10)
    fake_sleep_calls = len(fake.sleeps)
    assert tb.take(30) == pytest.approx(2.0)
    assert tb.take(1) == pytest.approx(0.1)
    assert len(fake.sleeps) == fake_sleep_calls + 2
