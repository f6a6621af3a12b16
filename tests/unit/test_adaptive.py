"""The adaptive limiter's memory admission (worker/adaptive.py): it measures the baseline when asked,
reserves before anything is allocated, never admits past the budget, refuses at once what can never
fit, and counts RSS beyond the reservations. The driver thread is kept idle (a one-hour tick); tests
drive `sample()` themselves with a fake RSS."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ferry.worker.adaptive import AdaptiveLimiter
from ferry.worker.budget import RUNTIME_RESERVE, BudgetTooSmall, MemoryBudget, TransferTooLarge
from ferry.worker.control import ControlConfig
from ferry.worker.limits import Permit, TransferReport
from ferry.worker.parts import DEFAULT_PART, MIN_PART, TRANSFER_OVERHEAD_BYTES

MiB = 2**20
BASELINE = 50 * MiB
OK = TransferReport(ok=True, size=1, seconds=0.01, throttles=0)


class FakeProcess:
    """RSS as a test sets it, and a log of what the limiter asked for."""

    def __init__(self, rss: int = BASELINE) -> None:
        self.value = rss
        self.calls: list[str] = []

    def rss(self) -> int:
        self.calls.append("rss")
        return self.value

    def trim(self) -> None:
        self.calls.append("trim")


@pytest.fixture
def process() -> FakeProcess:
    return FakeProcess()


def limiter_for(process: FakeProcess, room: int, concurrency: int = 64) -> AdaptiveLimiter:
    """A limiter whose budget leaves ``room`` bytes beside the baseline and the runtime reserve."""
    budget = MemoryBudget(BASELINE + RUNTIME_RESERVE + room, "test")
    return AdaptiveLimiter(
        ControlConfig(initial=concurrency, maximum=max(concurrency, 1)),
        budget,
        rss=process.rss,
        trim=process.trim,
        tick_seconds=3600,
    )


@pytest.fixture
def limiters() -> Iterator[list[AdaptiveLimiter]]:
    made: list[AdaptiveLimiter] = []
    yield made
    for limiter in made:
        limiter.close()


def admitted_within(
    limiter: AdaptiveLimiter, reserve: int, seconds: float = 0.3
) -> tuple[bool, list[Permit]]:
    """Whether ``acquire(reserve)`` returns within ``seconds`` (the permit, if it does later, is kept)."""
    permits: list[Permit] = []
    thread = threading.Thread(target=lambda: permits.append(limiter.acquire(reserve)), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), permits


def test_plan_measures_the_baseline_after_trimming_and_sizes_parts(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=100 * MiB)
    limiters.append(limiter)
    process.calls.clear()
    process.value = BASELINE + 6 * MiB  # the clients were made after the limiter
    plan = limiter.plan(DEFAULT_PART)
    assert process.calls == ["trim", "rss"]
    assert plan.baseline == BASELINE + 6 * MiB
    assert plan.floor == BASELINE + 6 * MiB + RUNTIME_RESERVE
    assert plan.part_size == DEFAULT_PART
    assert limiter.memory_plan == plan


@pytest.mark.parametrize(
    ("room", "part"),
    [(4 * (DEFAULT_PART + TRANSFER_OVERHEAD_BYTES), DEFAULT_PART), (12 * MiB, MIN_PART)],
    ids=["four-8MiB-parts", "tight-5MiB"],
)
def test_plan_part_size_follows_the_room(
    process: FakeProcess, limiters: list[AdaptiveLimiter], room: int, part: int
) -> None:
    limiter = limiter_for(process, room=room)
    limiters.append(limiter)
    assert limiter.plan(DEFAULT_PART).part_size == part


def test_plan_refuses_a_budget_without_room_for_one_minimal_transfer(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=MIN_PART)  # the 256 KiB overhead does not fit
    limiters.append(limiter)
    with pytest.raises(BudgetTooSmall, match=r"spec\.resources\.memory to at least \d+Mi"):
        limiter.plan(DEFAULT_PART)


def test_reserves_before_allocating_and_never_admits_past_the_budget(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=20 * MiB)
    limiters.append(limiter)
    limiter.plan()
    first, second = limiter.acquire(8 * MiB), limiter.acquire(8 * MiB)
    assert limiter.state().reserved_bytes == 16 * MiB
    permits: list[Permit] = []
    waiting = threading.Thread(target=lambda: permits.append(limiter.acquire(8 * MiB)), daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not permits  # 24 MiB would cross the budget: it waits, it does not try
    limiter.release(first, OK)
    waiting.join(2)
    assert permits == [Permit(8 * MiB)]  # admitted once the first transfer's reservation was returned
    assert limiter.state().reserved_bytes == 16 * MiB
    limiter.release(second, OK)
    limiter.release(permits[0], OK)
    assert limiter.state().reserved_bytes == 0


def test_a_transfer_that_can_never_fit_is_refused_at_once(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=20 * MiB)
    limiters.append(limiter)
    limiter.plan()
    with pytest.raises(TransferTooLarge, match=r"spec\.resources\.memory"):
        limiter.acquire(21 * MiB)
    assert limiter.state().in_flight == 0


def test_with_nothing_in_flight_a_fitting_transfer_runs_whatever_rss_says(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=20 * MiB)
    limiters.append(limiter)
    limiter.plan()
    process.value = BASELINE + RUNTIME_RESERVE + 18 * MiB  # freed buffers the allocator still holds
    limiter.sample()
    admitted, _ = admitted_within(limiter, 20 * MiB)
    assert admitted  # no deadlock on memory nobody holds a permit for


def test_rss_beyond_the_reservations_makes_admission_stricter(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=20 * MiB)
    limiters.append(limiter)
    limiter.plan()
    held = limiter.acquire(2 * MiB)
    assert admitted_within(limiter, 8 * MiB)[0]  # 10 of 20 MiB reserved
    process.value = BASELINE + RUNTIME_RESERVE + 10 * MiB + 6 * MiB  # 6 MiB nobody reserved
    excess = limiter.sample()
    assert excess == 6 * MiB
    assert not admitted_within(limiter, 5 * MiB)[0]  # 10 reserved + 6 held + 5 > 20
    limiter.release(held, OK)


def test_concurrency_bounds_admission_too(process: FakeProcess, limiters: list[AdaptiveLimiter]) -> None:
    limiter = limiter_for(process, room=100 * MiB, concurrency=2)
    limiters.append(limiter)
    limiter.plan()
    limiter.acquire(1)
    limiter.acquire(1)
    assert not admitted_within(limiter, 1)[0]


def test_state_reports_the_budget_reservations_and_overhead(
    process: FakeProcess, limiters: list[AdaptiveLimiter]
) -> None:
    limiter = limiter_for(process, room=20 * MiB)
    limiters.append(limiter)
    limiter.plan()
    limiter.acquire(3 * MiB)
    limiter.sample()
    state = limiter.state()
    assert state.budget_bytes == BASELINE + RUNTIME_RESERVE + 20 * MiB
    assert state.budget_source == "test"
    assert state.reserved_bytes == 3 * MiB
    assert state.rss_bytes == BASELINE
    assert state.overhead_bytes == TRANSFER_OVERHEAD_BYTES  # nothing learned beyond the reservation


def test_the_driver_trims_when_held_memory_stays_above_the_floor() -> None:
    process = FakeProcess()
    clock = [0.0]
    limiter = AdaptiveLimiter(
        ControlConfig(initial=4, maximum=4),
        MemoryBudget(BASELINE + RUNTIME_RESERVE + 40 * MiB, "test"),
        rss=process.rss,
        trim=process.trim,
        clock=lambda: clock[0],
        tick_seconds=0.01,
    )
    try:
        limiter.plan()
        process.calls.clear()
        process.value = BASELINE + RUNTIME_RESERVE + 20 * MiB
        clock[0] = 10.0
        for _ in range(200):
            if "trim" in process.calls:
                break
            threading.Event().wait(0.01)
        assert "trim" in process.calls
    finally:
        limiter.close()
