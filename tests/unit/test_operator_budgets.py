"""EndpointBudgets (operator/budgets.py, pure, and the in-memory book of operator/budgetcontrol.py): which
budget covers a CopyJob, the max-min fair split, AIMD on throttling, throttle counting, and a simulated
provider that throttles above N requests/s, shared by five CopyJobs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.model import CopyJobSpec
from ferry.model.endpointbudget import parse_budget_spec
from ferry.operator import budgets
from ferry.operator.budgetcontrol import BudgetBook
from ferry.operator.budgets import Allocation, Budget, Claim, InForce
from ferry.worker.ratelimit import RateShare
from ferry.worker.statusdoc import FORMAT, parse_report

ENDPOINT = "http://s3.example.com:9000"


def budget(name: str, endpoint: str = ENDPOINT, **spec: Any) -> Budget:
    spec.setdefault("requestsPerSecond", 100)
    return Budget.of(name, parse_budget_spec({"endpoint": endpoint, **spec}))


def copyjob(
    source: dict[str, Any] | None = None, destination: dict[str, Any] | None = None, **spec: Any
) -> CopyJobSpec:
    return CopyJobSpec.model_validate(
        {
            "source": {"bucket": "src", "endpoint": ENDPOINT, **(source or {})},
            "destination": {"bucket": "dst", "endpoint": "https://other.example.com", **(destination or {})},
            **spec,
        },
        by_alias=True,
        by_name=False,
    )


# -- the model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"endpoint": ENDPOINT}, "set requestsPerSecond or bytesPerSecond"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": 0, "bytesPerSecond": 0}, "set requestsPerSecond"),
        ({"endpoint": ENDPOINT, "prefix": "a/", "requestsPerSecond": 1}, "prefix needs bucket"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": 1_000_001}, "less than or equal"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": -1}, "greater than or equal"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": "5"}, "valid integer"),
        ({"endpoint": ENDPOINT, "bytesPerSecond": "2Pi"}, "less than or equal"),
        ({"endpoint": "ftp://x", "requestsPerSecond": 1}, "not an http(s) URL"),
        ({"endpoint": "http://user:pw@x", "requestsPerSecond": 1}, "user name or password"),
        ({"endpoint": ENDPOINT, "bucket": "Bad_Bucket", "requestsPerSecond": 1}, "not a valid bucket"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": 1, "surprise": 1}, "Extra inputs"),
        ({"endpoint": ENDPOINT, "requestsPerSecond": 1, "adaptive": "yes"}, "valid boolean"),
    ],
)
def test_budget_specs_the_model_refuses(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match="(?s)" + problem.replace("(", r"\(").replace(")", r"\)")):
        parse_budget_spec(spec)


def test_a_budget_spec_reads_quantities_and_normalizes_its_endpoint() -> None:
    spec = parse_budget_spec({"endpoint": "https://S3.Example.com:443/", "bytesPerSecond": "100Mi"})
    made = Budget.of("b", spec)
    assert made.limit == RateShare(0.0, 100 * 2**20)
    assert made.service == "s3.example.com"
    assert (
        Budget.of(
            "aws",
            parse_budget_spec({"endpoint": "https://s3.eu-west-1.amazonaws.com", "requestsPerSecond": 1}),
        ).service
        == "aws"
    )


# -- which budget ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget_spec", "location", "covered"),
    [
        ({}, {}, True),
        ({"endpoint": "http://S3.EXAMPLE.COM:9000/"}, {}, True),  # case and slash do not matter
        ({"endpoint": "http://s3.example.com:9001"}, {}, False),  # another port is another server
        ({"endpoint": "https://s3.example.com"}, {"endpoint": "http://s3.example.com:443"}, True),
        ({"endpoint": "https://s3.amazonaws.com"}, {"endpoint": None}, True),  # AWS is one service
        ({"endpoint": "https://s3.amazonaws.com"}, {"endpoint": "https://s3.us-east-2.amazonaws.com"}, True),
        ({"bucket": "src"}, {}, True),
        ({"bucket": "other"}, {}, False),
        ({"bucket": "src", "prefix": "logs/"}, {"prefix": "logs/2024/"}, True),  # inside the budget's prefix
        ({"bucket": "src", "prefix": "logs/2024/"}, {"prefix": "logs/"}, True),  # some keys under it
        ({"bucket": "src", "prefix": "logs/"}, {}, True),  # the whole bucket: some keys under it
        ({"bucket": "src", "prefix": "logs/"}, {"prefix": "images/"}, False),  # disjoint
    ],
)
def test_which_locations_a_budget_covers(
    budget_spec: dict[str, Any], location: dict[str, Any], covered: bool
) -> None:
    spec = copyjob(source=location)
    assert budgets.covers(budget("b", **budget_spec), spec.source) is covered


def test_the_most_specific_budget_applies_to_a_location() -> None:
    endpoint = budget("a-endpoint")
    bucket = budget("b-bucket", bucket="src")
    prefix = budget("c-prefix", bucket="src", prefix="logs/")
    longer = budget("d-longer", bucket="src", prefix="logs/2024/")
    spec = copyjob(source={"prefix": "logs/2024/x"})
    assert budgets.budget_for([endpoint], spec.source) == endpoint
    assert budgets.budget_for([endpoint, bucket], spec.source) == bucket
    assert budgets.budget_for([prefix, endpoint, bucket], spec.source) == prefix
    assert budgets.budget_for([endpoint, bucket, prefix, longer], spec.source) == longer
    twin = budget("a-twin")
    assert budgets.budget_for([twin, endpoint], spec.source) == endpoint, "a tie goes to the first name"
    assert budgets.budget_for([budget("elsewhere", "http://elsewhere:1")], spec.source) is None


def test_a_copyjob_is_under_its_source_s_and_its_destination_s_budgets() -> None:
    here, there = budget("here"), budget("there", "https://other.example.com")
    spec = copyjob()
    assert budgets.budgets_for([here, there], spec) == ("here", "there")
    assert budgets.budgets_for([here], spec) == ("here",)
    same = copyjob(destination={"endpoint": ENDPOINT})
    assert budgets.budgets_for([here, there], same) == ("here",), "one budget for both sides counts once"
    assert budgets.budgets_for([], spec) == ()


# -- the fair split --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "caps", "shares"),
    [
        (100, {"a": 0, "b": 0}, {"a": 50, "b": 50}),
        (100, {"a": 0, "b": 0, "c": 0}, {"a": 33, "b": 33, "c": 34}),  # the last takes what rounding left
        (100, {"a": 10, "b": 0, "c": 0}, {"a": 10, "b": 45, "c": 45}),  # a's spare goes to the others
        (100, {"a": 10, "b": 20, "c": 0}, {"a": 10, "b": 20, "c": 70}),
        (100, {"a": 60, "b": 60}, {"a": 50, "b": 50}),  # caps above the fair share do not bind
        (100, {"a": 10, "b": 10}, {"a": 10, "b": 10}),  # a budget nobody fills
        (0, {"a": 10, "b": 0}, {"a": 10, "b": 0}),  # no budget in this dimension: own caps only
        (2, {"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 1, "c": 1}),  # never below the smallest share
        (100, {}, {}),
    ],
)
def test_max_min_fair_shares(capacity: int, caps: dict[str, int], shares: dict[str, int]) -> None:
    assert budgets.max_min(capacity, caps) == shares


def test_equal_shares_of_a_budget_and_a_lower_own_limit_gives_its_spare_to_the_others() -> None:
    claims = [
        Claim("a", ("b",)),
        Claim("b", ("b",), RateShare(10.0, 0)),
        Claim("c", ("b",)),
    ]
    got = budgets.allocate({"b": RateShare(100.0, 3000)}, claims)
    assert got["a"] == Allocation(RateShare(45.0, 1000), "b", {"b": RateShare(45.0, 1000)})
    assert got["b"].limit == RateShare(10.0, 1000)
    assert got["b"].budget == "b", "its bytes are limited by the budget"
    assert got["c"].limit == RateShare(45.0, 1000)
    assert got["a"].status() == {
        "budget": "b",
        "budgetShare": {"requestsPerSecond": 45.0, "bytesPerSecond": 1000},
    }


def test_a_copyjob_under_two_budgets_takes_the_lower_share_and_the_other_budget_redistributes() -> None:
    # x is under both; y only under "wide", z only under "narrow".
    claims = [Claim("x", ("narrow", "wide")), Claim("y", ("wide",)), Claim("z", ("narrow",))]
    got = budgets.allocate({"narrow": RateShare(20.0, 0), "wide": RateShare(100.0, 0)}, claims)
    assert got["x"].limit.requests_per_second == 10.0 and got["x"].budget == "narrow"
    assert got["z"].limit.requests_per_second == 10.0
    assert got["y"].limit.requests_per_second == 90.0, "what x cannot use of 'wide' goes to y"
    for name, capacity in (("narrow", 20.0), ("wide", 100.0)):
        used = sum(a.limit.requests_per_second for a in got.values() if name in a.shares)
        assert used <= capacity


def test_fractional_budgets_split_in_milli_requests_and_never_exceed() -> None:
    claims = [Claim(str(i), ("b",)) for i in range(3)]
    got = budgets.allocate({"b": RateShare(1.0, 0)}, claims)
    shares = sorted(a.limit.requests_per_second for a in got.values())
    assert shares == [0.333, 0.333, 0.334]
    assert got["0"].limit.bytes_per_second == 0, "no byte budget: bytes stay unlimited"


def test_an_own_limit_lower_than_the_share_is_the_limit_and_the_budget_still_named() -> None:
    got = budgets.allocate({"b": RateShare(100.0, 0)}, [Claim("a", ("b",), RateShare(5.0, 0))])
    assert got["a"].limit == RateShare(5.0, 0)
    assert got["a"].budget is None
    assert got["a"].status()["budget"] == "b"


# -- adaptive budgets ------------------------------------------------------------------------------------


ADAPTIVE = budget("b", requestsPerSecond=100, bytesPerSecond=1000, adaptive=True)


@pytest.mark.parametrize(
    ("state", "throttles", "elapsed", "now", "level"),
    [
        (InForce(1.0), 5, 5.0, 100.0, 0.8),  # throttled: down multiplicatively
        (InForce(0.8, hold_until=105.0, ceiling=1.0), 5, 5.0, 101.0, 0.8),  # held: reports from before
        (InForce(0.8, hold_until=105.0, ceiling=1.0), 5, 5.0, 106.0, 0.64),  # after the hold: down again
        (InForce(0.06), 5, 5.0, 100.0, 0.05),  # never below the floor
        (InForce(0.5), 0, 10.0, 100.0, 0.55),  # quiet: +5% of the spec per 10 s
        (InForce(0.5), 0, 5.0, 100.0, 0.525),
        (InForce(0.5), 0, 600.0, 100.0, 0.65),  # a long pause counts as 30 s at most
        (InForce(0.98), 0, 10.0, 100.0, 1.0),  # never above the spec
        (InForce(0.9, ceiling=1.0), 0, 10.0, 100.0, 0.91),  # near the level that throttled: slower
        (InForce(0.5, ceiling=1.0), 0, 10.0, 100.0, 0.55),  # far below it: full pace
    ],
)
def test_aimd_steps(state: InForce, throttles: int, elapsed: float, now: float, level: float) -> None:
    assert budgets.adapt(ADAPTIVE, state, throttles, elapsed, now).level == pytest.approx(level)


def test_a_budget_that_is_not_adaptive_stays_as_written_whatever_is_throttled() -> None:
    fixed = budget("b", requestsPerSecond=100)
    assert budgets.adapt(fixed, InForce(0.3), 1000, 5.0, 0.0) == InForce()


def test_a_level_in_force_is_the_spec_s_limits_scaled_and_rounded_down() -> None:
    assert InForce(0.333).share(ADAPTIVE) == RateShare(33.3, 333)
    assert InForce(1.0).share(budget("bytes", requestsPerSecond=0, bytesPerSecond=10)) == RateShare(0.0, 10)


@pytest.mark.parametrize(
    ("written", "level"),
    [
        (50, 0.5),
        (50.0, 0.5),
        (1e9, 1.0),
        (1, 0.05),
        (None, 1.0),
        ("50", 1.0),
        (True, 1.0),
        (float("nan"), 1.0),
    ],
)
def test_a_restarted_operator_resumes_an_adaptive_budget_from_its_status(written: Any, level: float) -> None:
    assert budgets.resumed(ADAPTIVE, written).level == pytest.approx(level)
    assert budgets.resumed(budget("fixed"), 50).level == 1.0


@pytest.mark.parametrize(
    ("before", "now", "new"),
    [
        ({"p": 3}, {"p": 5}, 2),
        ({"p": 3}, {"p": 3}, 0),
        ({}, {"p": 4}, 4),  # a pod that started since counts in full
        ({"p": 9}, {"p": 2}, 2),  # a restarted worker counts from zero
        ({"p": 3}, {}, 0),  # a pod gone
        ({}, {"p": 10**10}, 0),  # not a count a worker makes
        ({"p": 1, "q": 1}, {"p": 2, "q": 4}, 4),
    ],
)
def test_throttles_counted_since_the_last_pass(before: dict[str, int], now: dict[str, int], new: int) -> None:
    assert budgets.new_throttles(before, now) == new


# -- the simulation ------------------------------------------------------------------------------------


def simulate(
    provider: float, configured: int, jobs: int = 5, seconds: int = 900, interval: int = 5
) -> tuple[float, float]:
    """A provider serving ``provider`` requests/s and throttling the rest; ``jobs`` CopyJobs that send as
    fast as their share allows, under one adaptive budget of ``configured``. Every ``interval`` seconds a
    step sees the throttles of the interval before (the pods' reports arrive a pass late) and the shares
    change. Returns the requests served per second over the last two thirds, as a fraction of what the
    provider allows, and the fraction of requests throttled."""
    spec = budget("b", requestsPerSecond=configured, adaptive=True)
    state = InForce()
    claims = [Claim(f"job-{i}", ("b",)) for i in range(jobs)]
    allocation = budgets.allocate({"b": state.share(spec)}, claims)
    reported: list[float] = []
    interval_throttles = served = throttled = sent = 0.0
    for second in range(seconds):
        rate = sum(a.limit.requests_per_second for a in allocation.values())
        interval_throttles += max(0.0, rate - provider)
        if second >= seconds // 3:
            served += min(rate, provider)
            throttled += max(0.0, rate - provider)
            sent += rate
        if second % interval == interval - 1:
            reported.append(interval_throttles)
            interval_throttles = 0.0
            seen = reported.pop(0) if len(reported) > 1 else 0.0
            state = budgets.adapt(spec, state, int(seen), interval, float(second))
            allocation = budgets.allocate({"b": state.share(spec)}, claims)
    measured = seconds - seconds // 3
    return served / measured / provider, throttled / sent


@pytest.mark.parametrize("configured", [120, 200, 400])
def test_five_copyjobs_under_an_adaptive_budget_converge_near_the_provider_s_limit(configured: int) -> None:
    """The budget is set 1.2 to 4 times above what the provider allows: AIMD finds the limit, and the five
    CopyJobs together get >= 90% of it with < 2% of their requests throttled."""
    served, throttled = simulate(100.0, configured)
    assert served >= 0.90, served
    assert throttled < 0.02, throttled


def test_without_a_budget_five_unlimited_copyjobs_are_throttled_far_more() -> None:
    """The comparison: a budget that never adapts (as good as none) at 2x the provider's limit."""
    spec = budget("b", requestsPerSecond=200)
    shares = budgets.allocate({"b": InForce().share(spec)}, [Claim(f"j{i}", ("b",)) for i in range(5)])
    rate = sum(a.limit.requests_per_second for a in shares.values())
    assert (rate - 100.0) / rate >= 0.2


# -- the book of the operator process -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_book_shares_a_budget_redistributes_and_reports_throttles_in_the_status() -> None:
    clock = Clock()
    book = BudgetBook(stale_seconds=15.0, clock=clock)
    book.observe(None, "shared", {"endpoint": ENDPOINT, "requestsPerSecond": 90, "adaptive": True}, {}, 3)
    spec = copyjob()
    first = book.job_limit("a", spec, {"a-0": 0}, active=True)
    assert first is not None and first.limit.requests_per_second == 90.0
    book.job_limit("b", spec, {}, active=True)
    book.job_limit("c", spec, {}, active=True)
    shares = [book.job_limit(u, spec, {}, active=True) for u in "abc"]
    assert [s.limit.requests_per_second for s in shares if s] == [30.0, 30.0, 30.0]

    # a's pod reports 7 throttles: at the next step the adaptive budget goes down.
    book.job_limit("a", spec, {"a-0": 7}, active=True)
    clock.now += 5
    ((name, status),) = book.step()
    assert name == "shared"
    assert status == {
        "observedGeneration": 3,
        "effectiveRequestsPerSecond": 72.0,
        "effectiveBytesPerSecond": 0,
        "jobs": 3,
        "throttledLastMinute": 7,
        "message": None,
    }
    again = book.job_limit("b", spec, {}, active=True)
    assert again is not None and again.limit.requests_per_second == 24.0

    # c finishes (no longer active): its share goes to a and b at their next pass.
    assert book.job_limit("c", spec, {}, active=False) is None
    after = book.job_limit("a", spec, {"a-0": 7}, active=True)
    assert after is not None and after.limit.requests_per_second == 36.0
    # b stops passing (deleted while this process was busy): dropped after stale_seconds.
    clock.now += 16
    book.job_limit("a", spec, {"a-0": 7}, active=True)
    ((_, status),) = book.step()
    assert status["jobs"] == 1
    assert book.step() == [], "an unchanged status is not written again"


def test_a_copyjob_first_seen_does_not_count_its_old_throttles_and_an_unbudgeted_one_is_left_alone() -> None:
    clock = Clock()
    book = BudgetBook(clock=clock)
    book.observe(None, "shared", {"endpoint": ENDPOINT, "requestsPerSecond": 10, "adaptive": True}, {}, 1)
    book.job_limit("a", copyjob(), {"a-0": 500}, active=True)  # after a restart: counted before
    clock.now += 5
    ((_, status),) = book.step()
    assert status["effectiveRequestsPerSecond"] == 10.0 and status["throttledLastMinute"] == 0
    elsewhere = copyjob(
        source={"endpoint": "http://elsewhere:1"}, destination={"endpoint": "http://elsewhere:1"}
    )
    assert book.job_limit("b", elsewhere, {}, active=True) is None


def test_a_budget_the_model_refuses_is_not_used_and_its_status_says_where_without_echoing_it() -> None:
    book = BudgetBook(clock=Clock())
    book.observe(None, "bad", {"endpoint": "http://<script>", "requestsPerSecond": 10}, {}, 2)
    assert book.job_limit("a", copyjob(), {}, active=True) is None
    ((name, status),) = book.step()
    assert name == "bad" and status["observedGeneration"] == 2
    assert status["message"].startswith("spec.endpoint: ") and "<script>" not in status["message"]
    book.observe("DELETED", "bad", {}, {}, 2)
    assert book.step() == []


@pytest.mark.parametrize(
    ("reported", "count"),
    [(7, 7), (0, 0), (-3, 0), (10**12, 0), (True, 0), ("7", 0), (7.5, 0), (None, 0)],
)
def test_a_worker_s_throttle_count_is_read_only_when_it_is_a_sane_count(reported: Any, count: int) -> None:
    """What `budgetcontrol` adds up comes from pods' /status: anything but a plain count counts as none."""
    document = {"format": FORMAT, "shard": 0, "state": "running", "throttles": reported}
    report = parse_report(json.dumps(document))
    assert report is not None and report.throttles == count
