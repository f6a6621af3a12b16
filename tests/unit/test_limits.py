"""FixedLimiter: a constant bound on concurrent transfers."""

from __future__ import annotations

import threading

import pytest

from ferry.worker.limits import FixedLimiter, LimiterState, Permit, TransferReport

REPORT = TransferReport(ok=True, size=1, seconds=0.01, throttles=0)


@pytest.mark.parametrize("concurrency", [0, -1])
def test_rejects_concurrency_below_one(concurrency: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FixedLimiter(concurrency)


@pytest.mark.parametrize("concurrency", [1, 3, 512])
def test_ceiling_and_initial_state(concurrency: int) -> None:
    limiter = FixedLimiter(concurrency)
    assert limiter.ceiling == concurrency
    assert limiter.state() == LimiterState(
        concurrency=concurrency, in_flight=0, reason="fixed", reserved_bytes=0
    )


def test_state_tracks_permits_and_reserved_bytes() -> None:
    limiter = FixedLimiter(3)
    a = limiter.acquire(100)
    b = limiter.acquire(250)
    assert a == Permit(100)
    assert limiter.state() == LimiterState(3, 2, "fixed", 350)
    limiter.release(a, REPORT)
    assert limiter.state() == LimiterState(3, 1, "fixed", 250)
    limiter.throttled()  # ignored by a fixed policy
    limiter.release(b, REPORT)
    assert limiter.state() == LimiterState(3, 0, "fixed", 0)


def test_acquire_blocks_at_the_bound_until_release() -> None:
    limiter = FixedLimiter(2)
    held = [limiter.acquire(1), limiter.acquire(1)]
    admitted = threading.Event()

    def third() -> None:
        limiter.acquire(1)
        admitted.set()

    thread = threading.Thread(target=third, daemon=True)
    thread.start()
    assert not admitted.wait(0.1)  # blocked while two are in flight
    assert limiter.state().in_flight == 2
    limiter.release(held.pop(), REPORT)
    assert admitted.wait(2.0)
    thread.join(2.0)
    assert limiter.state().in_flight == 2


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_never_more_than_concurrency_in_flight(concurrency: int) -> None:
    limiter = FixedLimiter(concurrency)
    lock = threading.Lock()
    active = 0
    peak = 0
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal active, peak
        try:
            for _ in range(20):
                permit = limiter.acquire(10)
                with lock:
                    active += 1
                    peak = max(peak, active)
                    assert limiter.state().in_flight <= concurrency
                with lock:
                    active -= 1
                limiter.release(permit, REPORT)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5.0)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert 1 <= peak <= concurrency
    assert limiter.state() == LimiterState(concurrency, 0, "fixed", 0)


def test_the_bound_is_reached_concurrently() -> None:
    concurrency = 4
    limiter = FixedLimiter(concurrency)
    all_in = threading.Barrier(concurrency + 1, timeout=2.0)
    leave = threading.Event()

    def worker() -> None:
        permit = limiter.acquire(5)
        all_in.wait()
        leave.wait(2.0)
        limiter.release(permit, REPORT)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    all_in.wait()
    assert limiter.state() == LimiterState(concurrency, concurrency, "fixed", 20)
    leave.set()
    for t in threads:
        t.join(2.0)
    assert limiter.state().in_flight == 0
