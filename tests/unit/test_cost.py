"""The cost estimate (operator/cost.py): requests by kind as the worker makes them for each route and
object size, skipped objects costing only their listing, egress on the streamed route only, price tables
checked field by field, and amounts bounded wherever they are rendered."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest

from ferry.model.plan import Shard
from ferry.operator.cost import (
    DEFAULT_PRICES,
    GB,
    MAX_AMOUNT,
    Prices,
    PricesInvalid,
    cost_json,
    cost_lines,
    estimate,
    format_amount,
    parse_prices,
)
from ferry.operator.planning import BUCKET_BOUNDS, Histogram, Planner

MiB = 2**20


def histogram_of(*sizes: int) -> Histogram:
    return Planner().add_all((f"k{i:06d}", size) for i, size in enumerate(sizes)).histogram()


def one_shard(h: Histogram) -> list[Shard]:
    return [Shard(None, None, h.objects, h.bytes)]


def requests(**kwargs: Any) -> dict[str, int]:
    sizes = kwargs.pop("sizes")
    h = histogram_of(*sizes)
    options: dict[str, Any] = {
        "prices": DEFAULT_PRICES,
        "server_side": False,
        "preserve_tags": False,
        "compare_destination": False,
        "planning_list_requests": 0,
        **kwargs,
    }
    result = estimate(h, one_shard(h), **options)
    return {r.kind: r.count for r in result.requests if r.count and r.kind != "LIST"}


@pytest.mark.parametrize(
    ("sizes", "options", "expected"),
    [
        # Streamed, at most one part: one GET and one PUT each.
        ([1000] * 10, {}, {"GET": 10, "PUT": 10}),
        # ... and one GetObjectTagging each when tags are preserved (an upper bound).
        ([1000] * 10, {"preserve_tags": True}, {"GET": 10, "PUT": 10, "GetObjectTagging": 10}),
        # Streamed above the part size: HEAD, create, a ranged GET and an UploadPart per part, complete.
        # 20 MiB sits in the (16 MiB, 64 MiB] bucket, taken at the largest object: 3 parts of 8 MiB.
        (
            [20 * MiB],
            {},
            {"HEAD": 1, "CreateMultipartUpload": 1, "GET": 3, "UploadPart": 3, "CompleteMultipartUpload": 1},
        ),
        (
            [20 * MiB],
            {"preserve_tags": True},
            {
                "HEAD": 1,
                "GetObjectTagging": 1,
                "CreateMultipartUpload": 1,
                "GET": 3,
                "UploadPart": 3,
                "CompleteMultipartUpload": 1,
            },
        ),
        # Same service: CopyObject up to the part size; tags travel with it.
        ([1000] * 7, {"server_side": True, "preserve_tags": True}, {"COPY": 7}),
        # ... above it UploadPartCopy per part, and no GET at all.
        (
            [20 * MiB],
            {"server_side": True},
            {"HEAD": 1, "CreateMultipartUpload": 1, "UploadPartCopy": 3, "CompleteMultipartUpload": 1},
        ),
        # A larger part size moves the multipart threshold.
        ([20 * MiB], {"part_size": 32 * MiB}, {"GET": 1, "PUT": 1}),
        # Empty objects are copied too: one GET and one PUT.
        ([0, 0], {}, {"GET": 2, "PUT": 2}),
        # Nothing found: nothing to copy.
        ([], {}, {}),
    ],
    ids=[
        "streamed-small",
        "streamed-small-tags",
        "streamed-multipart",
        "streamed-multipart-tags",
        "server-side-small",
        "server-side-multipart",
        "large-part-size",
        "empty-objects",
        "empty-source",
    ],
)
def test_requests_by_kind_follow_the_worker_s_route(
    sizes: list[int], options: dict[str, Any], expected: dict[str, int]
) -> None:
    assert requests(sizes=sizes, **options) == expected


def test_objects_in_a_bucket_are_taken_at_its_upper_bound_so_parts_are_an_upper_bound() -> None:
    # 9 MiB and 12 MiB objects share the (4 MiB, 16 MiB] bucket with a 12 MiB largest: each counts as
    # 12 MiB, two parts of 8 MiB, though the 9 MiB one really has two parts as well.
    assert requests(sizes=[9 * MiB, 12 * MiB])["UploadPart"] == 4


@pytest.mark.parametrize(
    ("existing", "copied", "gets"),
    [
        (None, 100, 100),
        ((0, 0), 100, 100),
        ((40, 40_000), 60, 60),
        ((100, 100_000), 0, 0),
        ((500, 10**9), 0, 0),
    ],
    ids=["not-compared", "nothing-there", "some-there", "all-there", "more-than-found-is-held-to-found"],
)
def test_objects_already_at_the_destination_cost_only_their_listing(
    existing: tuple[int, int] | None, copied: int, gets: int
) -> None:
    h = histogram_of(*[1000] * 100)
    result = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=False, preserve_tags=False,
        compare_destination=True, existing=existing, planning_list_requests=3,
    )  # fmt: skip
    by_kind = {r.kind: r.count for r in result.requests}
    assert result.copied_objects == copied and by_kind["GET"] == by_kind["PUT"] == gets
    assert result.egress_bytes == result.copied_bytes == 100_000 - min(100_000, (existing or (0, 0))[1])


@pytest.mark.parametrize(
    ("shards", "compare", "planning", "expected"),
    [
        # Planning as measured, then each shard lists its source range (1 page per 1,000 keys, at least 1).
        ([500, 500], False, 7, 7 + 1 + 1),
        ([2500, 0], False, 7, 7 + 3 + 1),
        # Each shard also lists its destination range, plus a page per 1,000 objects already there.
        ([500, 500], True, 7, 7 + 2 + 2 + 1),
        # Not measured: one planning request per 1,000 keys.
        ([500, 500], False, None, 1 + 2),
    ],
)
def test_list_requests_are_planning_s_and_each_shard_s(
    shards: list[int], compare: bool, planning: int | None, expected: int
) -> None:
    h = histogram_of(*[10] * sum(shards))
    cut = [Shard(None, None, n, 10 * n) for n in shards]
    result = estimate(
        h, cut, prices=DEFAULT_PRICES, server_side=False, preserve_tags=False,
        compare_destination=compare, existing=(300, 3000), planning_list_requests=planning,
    )  # fmt: skip
    assert next(r.count for r in result.requests if r.kind == "LIST") == expected


def test_the_total_is_requests_times_prices_plus_egress_on_the_streamed_route() -> None:
    h = histogram_of(*[GB // 4] * 4)  # 1 GB in 4 objects of 256 MiB: 32 parts each
    streamed = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=False, preserve_tags=False,
        compare_destination=False, planning_list_requests=1,
    )  # fmt: skip
    by_kind = {r.kind: r.count for r in streamed.requests}
    assert by_kind == {
        "LIST": 2, "HEAD": 4, "GET": 128, "GetObjectTagging": 0, "PUT": 0, "COPY": 0,
        "CreateMultipartUpload": 4, "UploadPart": 128, "UploadPartCopy": 0, "CompleteMultipartUpload": 4,
    }  # fmt: skip
    tier1 = (2 + 4 + 128 + 4) / 1000 * 0.005
    tier2 = (4 + 128) / 1000 * 0.0004
    assert streamed.egress_bytes == GB and math.isclose(streamed.egress_cost, 0.09)
    assert math.isclose(streamed.total, tier1 + tier2 + 0.09)
    server_side = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=True, preserve_tags=False,
        compare_destination=False, planning_list_requests=1,
    )  # fmt: skip
    assert server_side.egress_bytes == 0 and server_side.egress_cost == 0
    assert server_side.route == "server-side" and streamed.route == "streamed"


def test_every_assumption_is_stated() -> None:
    h = histogram_of(1000, 2000)
    result = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=False, preserve_tags=True,
        compare_destination=True, existing=None, planning_list_requests=None,
    )  # fmt: skip
    text = "\n".join(result.assumptions)
    for fragment in (
        "AWS S3 Standard, us-east-1",
        "2026-11-29",
        "route: streamed",
        "internet egress",
        "the destination was not compared",
        "parts of 8 MiB",
        "estimated at one per 1,000 keys",
        "retries",
        "GetObjectTagging",
    ):
        assert fragment in text, fragment


def test_the_default_prices_are_aws_s3_standard_list_prices_with_their_date() -> None:
    assert DEFAULT_PRICES.put_copy_post_list_per1000 == 0.005
    assert DEFAULT_PRICES.get_and_other_per1000 == 0.0004
    assert DEFAULT_PRICES.internet_egress_per_gb == 0.09
    assert DEFAULT_PRICES.currency == "USD" and DEFAULT_PRICES.date == datetime.date(2026, 11, 29)


GOOD = {
    "name": "Example storage",
    "date": "2026-10-01",
    "currency": "EUR",
    "putCopyPostListPer1000": 0.0054,
    "getAndOtherPer1000": 0.00043,
    "internetEgressPerGB": 0,
}


def test_a_price_table_reads_with_camel_case_fields() -> None:
    prices = parse_prices(GOOD, "prices.yaml")
    assert prices == Prices(
        name="Example storage",
        date=datetime.date(2026, 10, 1),
        currency="EUR",
        put_copy_post_list_per1000=0.0054,
        get_and_other_per1000=0.00043,
        internet_egress_per_gb=0,
    )
    assert parse_prices({k: v for k, v in GOOD.items() if k != "currency"}, "p").currency == "USD"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"putCopyPostListPer1000": -1}, "prices.yaml: putCopyPostListPer1000: Input should be greater than"),
        ({"getAndOtherPer1000": 1e6}, "prices.yaml: getAndOtherPer1000: Input should be less than"),
        ({"internetEgressPerGB": float("nan")}, "prices.yaml: internetEgressPerGB:"),
        ({"internetEgressPerGB": "cheap"}, "prices.yaml: internetEgressPerGB:"),
        ({"date": "2026-13-01"}, "prices.yaml: date:"),
        ({"currency": "dollars"}, "prices.yaml: currency:"),
        ({"name": "x" * 101}, "prices.yaml: name:"),
        ({"name": "bad\x1b[31mname"}, "prices.yaml: name:"),
        ({"internetEgressPerGb": 0.1}, "prices.yaml: internetEgressPerGb: unknown field"),
        ({"name": None}, "prices.yaml: name:"),
    ],
)
def test_a_bad_price_table_names_the_field(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PricesInvalid) as caught:
        parse_prices({**GOOD, **change}, "prices.yaml")
    assert fragment in str(caught.value)


@pytest.mark.parametrize("raw", [None, [], "0.005", 3])
def test_a_price_table_that_is_not_a_mapping_is_refused(raw: Any) -> None:
    with pytest.raises(PricesInvalid, match="not a"):
        parse_prices(raw, "prices.yaml")


def test_a_missing_price_is_named() -> None:
    with pytest.raises(PricesInvalid, match="getAndOtherPer1000: required field is missing"):
        parse_prices({k: v for k, v in GOOD.items() if k != "getAndOtherPer1000"}, "p")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.00 USD"),
        (1e-9, "0.00 USD"),
        (0.000005, "0.000005 USD"),
        (0.0131, "0.0131 USD"),
        (0.5, "0.50 USD"),
        (1234.567, "1,234.57 USD"),
        (float("inf"), "0.00 USD"),
        (-3, "0.00 USD"),
        (1e30, f"{MAX_AMOUNT:,.2f} USD"),
    ],
)
def test_amounts_read_as_people_read_them(value: float, text: str) -> None:
    assert format_amount(value, "USD") == text


def test_the_json_form_is_bounded_and_lists_only_requests_made() -> None:
    h = histogram_of(*[1000] * 3)
    result = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=True, preserve_tags=False,
        compare_destination=False, planning_list_requests=10**30,
    )  # fmt: skip
    document = cost_json(result)
    assert [r["kind"] for r in document["requests"]] == ["LIST", "COPY"]
    assert document["requests"][0]["count"] == 2**63 - 1  # a count that cannot be stored is held
    assert document["total"] <= MAX_AMOUNT and document["prices"] == {
        "name": DEFAULT_PRICES.name,
        "date": "2026-11-29",
    }
    assert document["egress"] == {"bytes": 0, "perGB": 0.09, "cost": 0.0}
    assert document["currency"] == "USD" and document["route"] == "server-side"


def test_the_text_form_shows_the_total_each_kind_egress_and_assumptions() -> None:
    h = histogram_of(*[1000] * 3)
    result = estimate(
        h, one_shard(h), prices=DEFAULT_PRICES, server_side=False, preserve_tags=False,
        compare_destination=False, planning_list_requests=1,
    )  # fmt: skip
    lines = cost_lines(result)
    assert lines[0].startswith("estimated cost: ") and "(streamed)" in lines[0]
    assert any(line.split()[0] == "GET" and " 3 x 0.0004/1,000" in line for line in lines)
    assert any(line.strip().startswith("egress") for line in lines)
    assert "assuming:" in [line.strip() for line in lines]


def test_bucket_bounds_cover_every_size_the_estimate_is_given() -> None:
    # The last (unbounded) bucket is taken at the largest object.
    big = BUCKET_BOUNDS[-1] + 1  # 64 GiB and a byte: 8,193 parts of 8 MiB (within S3's 10,000)
    assert requests(sizes=[big], server_side=True)["UploadPartCopy"] == -(-big // (8 * MiB)) == 8193
    huge = 200 * GB  # 8 MiB parts would be 25,600: the worker doubles the part size to 32 MiB
    assert requests(sizes=[huge], server_side=True)["UploadPartCopy"] == 6400
