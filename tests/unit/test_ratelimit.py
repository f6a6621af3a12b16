"""Token buckets of spec.rateLimit, driven by a fake clock (one test by the real one), and the share
document the operator sends each worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ferry.worker.ratelimit import (
    LATEST_SHARE_KEY,
    SHARE_ENV,
    TOKEN_ENV,
    RateShare,
    TokenBucket,
    limits_token,
    parse_share,
    starting_share,
)


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


# -- live rate changes ------------------------------------------------------------------------------


class ScheduledTime(FakeTime):
    """Fake time in which rate changes happen at given moments, waking a waiter the way `set_rate` wakes
    one waiting on the condition: its sleep ends at the change."""

    def __init__(self, changes: list[tuple[float, float]]) -> None:
        super().__init__()
        self.changes = sorted((100.0 + at, rate) for at, rate in changes)
        self.bucket: TokenBucket | None = None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + seconds
        if self.changes and self.changes[0][0] <= wake:
            at, rate = self.changes.pop(0)
            self.now = max(self.now, at)
            assert self.bucket is not None
            self.bucket.set_rate(rate)
        else:
            self.now = wake


def scheduled(rate: float, changes: list[tuple[float, float]]) -> tuple[TokenBucket, ScheduledTime]:
    fake = ScheduledTime(changes)
    fake.bucket = TokenBucket(rate, clock=fake.clock, sleep=fake.sleep)
    return fake.bucket, fake


@pytest.mark.parametrize(
    ("rate", "first", "change_at", "new_rate", "expected_wait"),
    [
        # 10/s, 30 taken at once: 20 owed. Half a second later 5 are paid; the other 15 go at 100/s.
        pytest.param(10, 30, 0.5, 100, 0.5 + 15 / 100, id="raised-mid-wait-pays-the-rest-faster"),
        # 100/s, 300 taken: 200 owed. After 0.5 s, 150 are still owed, now at 10/s.
        pytest.param(100, 300, 0.5, 10, 0.5 + 150 / 10, id="lowered-mid-wait-keeps-the-debt"),
        # Unlimited releases the waiter at once.
        pytest.param(10, 30, 0.5, 0, 0.5, id="unlimited-mid-wait-releases"),
    ],
)
def test_a_rate_change_reaches_a_waiting_caller(
    rate: float, first: float, change_at: float, new_rate: float, expected_wait: float
) -> None:
    tb, _fake = scheduled(rate, [(change_at, new_rate)])
    assert tb.take(first) == pytest.approx(expected_wait)
    assert tb.rate == new_rate


@pytest.mark.parametrize(
    ("rate", "idle", "new_rate", "takes", "free"),
    [
        # A full bucket of 10 is kept as 10 when the rate rises: no fresh burst of 100.
        pytest.param(10, 60.0, 100, 11, 10, id="raise-after-idle-keeps-the-old-burst"),
        # A full bucket of 100 is cut to one second of the new rate.
        pytest.param(100, 60.0, 10, 11, 10, id="lower-after-idle-cuts-the-burst"),
        # Limited again after unlimited: the bucket starts empty.
        pytest.param(0, 60.0, 10, 3, 0, id="from-unlimited-starts-empty"),
    ],
)
def test_a_rate_change_hands_out_no_fresh_burst(
    rate: float, idle: float, new_rate: float, takes: int, free: int
) -> None:
    tb, fake = bucket(rate)
    fake.now += idle
    tb.set_rate(new_rate)
    waits = [tb.take() for _ in range(takes)]
    assert waits[:free] == [0.0] * free
    assert waits[free:] == pytest.approx([1 / new_rate] * (takes - free))


def test_many_rate_changes_never_raise_the_pace_above_the_highest_rate() -> None:
    tb, fake = bucket(10)
    start = fake.now
    for step in range(200):
        tb.set_rate(10 if step % 2 else 20)
        tb.take()
    # 200 tokens at never more than 20/s, after a burst of 10: at least (200 - 10) / 20 seconds.
    assert fake.now - start >= (200 - 10) / 20 - 1e-9


def test_a_caller_waits_behind_the_tokens_taken_before_it() -> None:
    tb, _ = bucket(10)
    tb.take(10)
    assert tb.take(5) == pytest.approx(0.5)
    assert tb.take(1) == pytest.approx(0.1)


def test_set_rate_wakes_a_real_waiter_at_once() -> None:
    """Real threads and the real clock: a caller facing a 50 s wait is released within a second of the
    rate being raised."""
    tb = TokenBucket(1)
    tb.take(1)  # the burst
    waited: list[float] = []
    waiter = threading.Thread(target=lambda: waited.append(tb.take(50)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    raised = time.monotonic()
    tb.set_rate(1000)
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert time.monotonic() - raised < 1.0
    assert waited[0] < 2.0


# -- the share document ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ('{"requestsPerSecond": 10, "bytesPerSecond": 0}', RateShare(10.0, 0)),
        ('{"bytesPerSecond": 1048576, "requestsPerSecond": 0.25}', RateShare(0.25, 2**20)),
        ('{"requestsPerSecond": 1000000, "bytesPerSecond": 9223372036854775807}', RateShare(1e6, 2**63 - 1)),
        ('{"requestsPerSecond":0,"bytesPerSecond":0}', RateShare()),
    ],
)
def test_parse_share_takes_valid_documents(text: str, share: RateShare) -> None:
    assert parse_share(text) == share
    assert parse_share(share.encode()) == share


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"requestsPerSecond": 1}', id="missing-field"),
        pytest.param('{"requestsPerSecond": 1, "bytesPerSecond": 0, "x": 1}', id="extra-field"),
        pytest.param('{"requestsPerSecond": true, "bytesPerSecond": 0}', id="bool"),
        pytest.param('{"requestsPerSecond": "5", "bytesPerSecond": 0}', id="string"),
        pytest.param('{"requestsPerSecond": -1, "bytesPerSecond": 0}', id="negative"),
        pytest.param('{"requestsPerSecond": NaN, "bytesPerSecond": 0}', id="nan"),
        pytest.param('{"requestsPerSecond": Infinity, "bytesPerSecond": 0}', id="infinity"),
        pytest.param('{"requestsPerSecond": 1e400, "bytesPerSecond": 0}', id="overflow"),
        pytest.param('{"requestsPerSecond": 1000001, "bytesPerSecond": 0}', id="above-the-crd"),
        pytest.param('{"requestsPerSecond": 1' + "0" * 900 + ', "bytesPerSecond": 0}', id="huge-integer"),
        pytest.param("[" * 1024, id="deeply-nested"),
        pytest.param('{"requestsPerSecond": 1, "bytesPerSecond": 1' + "0" * 900 + "}", id="huge-bytes"),
        pytest.param('{"requestsPerSecond": 1, "bytesPerSecond": 1.5}', id="fractional-bytes"),
        pytest.param('{"requestsPerSecond": 1, "bytesPerSecond": 9223372036854775808}', id="bytes-too-big"),
        pytest.param('{"requestsPerSecond": 1, "bytesPerSecond": 0}' + " " * 1024, id="too-long"),
    ],
)
def test_parse_share_refuses_anything_else_without_quoting_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_share(text)
    assert text.strip() == "" or text.strip()[:12] not in str(caught.value)


# -- what a worker pod starts with ------------------------------------------------------------------


SHARE_10 = RateShare(10, 0).encode()
SHARE_5 = RateShare(5, 2**20).encode()


@pytest.mark.parametrize(
    ("ledger", "env", "expected"),
    [
        pytest.param(None, {}, None, id="neither: the spec's limits"),
        pytest.param(None, {SHARE_ENV: SHARE_10}, RateShare(10, 0), id="the-jobs-share"),
        pytest.param(SHARE_5, {SHARE_ENV: SHARE_10}, RateShare(5, 2**20), id="the-latest-share-wins"),
        pytest.param(
            "garbage", {SHARE_ENV: SHARE_10}, RateShare(10, 0), id="a-forged-ledger-entry-is-ignored"
        ),
        pytest.param(SHARE_5 + " " * 2000, {SHARE_ENV: SHARE_10}, RateShare(10, 0), id="an-oversized-entry"),
        pytest.param(None, {SHARE_ENV: "{}"}, None, id="an-invalid-job-share"),
    ],
)
def test_a_pod_starts_with_the_latest_share_it_can_trust(
    tmp_path: Path, ledger: str | None, env: dict[str, str], expected: RateShare | None
) -> None:
    if ledger is not None:
        (tmp_path / LATEST_SHARE_KEY).write_text(ledger)
    assert starting_share(env, str(tmp_path)) == expected


@pytest.mark.parametrize(
    ("token", "accepted"),
    [
        pytest.param("A" * 43, True, id="urlsafe-43"),
        pytest.param("a-b_c" * 9, True, id="dashes-and-underscores"),
        pytest.param("", False, id="none"),
        pytest.param("A" * 31, False, id="too-short"),
        pytest.param("A" * 257, False, id="too-long"),
        pytest.param("A" * 42 + " ", False, id="space"),
        pytest.param("A" * 42 + "é", False, id="not-ascii"),
        pytest.param("A" * 42 + "\n", False, id="newline"),
    ],
)
def test_only_a_token_the_operator_could_have_made_opens_the_limits_endpoint(
    token: str, accepted: bool
) -> None:
    assert limits_token({TOKEN_ENV: token}) == (token if accepted else None)
