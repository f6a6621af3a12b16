"""What a CopyJob will cost at its S3 services: requests by kind and bytes leaving the source, times a
price table. Pure: the plan's figures and a price table in, an estimate with every assumption out.

Where it sits: after planning. `ferry plan` (worker/plancmd.py) and a CopyJob with `spec.dryRun: true`
(operator/planview.py, rendered into status.plan.cost) both call `estimate` with the histogram and shards
planning measured. The requests counted are the ones the worker makes (worker/copier.py, worker/engine.py):

- objects the destination already holds are skipped and cost no copy requests (only their listing);
- same service (`Location.same_service`): CopyObject up to the part size, above it CreateMultipartUpload,
  one UploadPartCopy per part and CompleteMultipartUpload after a HeadObject; no bytes leave the service;
- otherwise streamed: GetObject + PutObject up to the part size, above it HeadObject,
  CreateMultipartUpload, one ranged GetObject and one UploadPart per part, CompleteMultipartUpload; the
  bytes read leave the source endpoint and are priced as internet egress;
- with `spec.preserve.tags`, one GetObjectTagging per streamed or multipart object (an upper bound:
  a streamed object without tags needs none; a server-side CopyObject copies tags by itself);
- LIST: the planning listing as measured (or one request per 1,000 keys when not measured), and each
  shard's own range listing of the source and, unless `overwrite: always`, of the destination.

Sizes come from the histogram, whose buckets hold counts, not sizes: each object is taken at its
bucket's upper bound (at most the largest object), so multipart and part counts are upper bounds.
Retries, aborted uploads and DeleteObject are not counted.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ferry.model.loading import format_validation_error
from ferry.model.plan import Shard
from ferry.operator.planning import BUCKET_BOUNDS, Histogram
from ferry.worker.parts import DEFAULT_PART, MAX_SINGLE_COPY, part_size_for

#: Keys a ListObjectsV2 page holds at most (and what Ferry asks for).
KEYS_PER_LIST = 1000
#: AWS bills data transfer per GB of 2^30 bytes.
GB = 2**30
#: Counts and amounts rendered into status are held below these (a hostile plan cannot overflow them).
MAX_COUNT = 2**63 - 1
MAX_AMOUNT = 1e15

_Price = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


class Prices(BaseModel):
    """A price table: what one service charges per 1,000 requests of each tier and per GB out.

    The tiers are AWS's: "PUT, COPY, POST, LIST" (CreateMultipartUpload and CompleteMultipartUpload are
    POSTs, UploadPart and UploadPartCopy PUTs) and "GET, SELECT and all other requests" (HEAD and
    GetObjectTagging among them)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[ -~]+$")] = Field(
        description="What the prices are, for people: service, tier and region."
    )
    date: datetime.date = Field(description="When the prices were taken (YYYY-MM-DD).")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field(
        default="USD", description="ISO 4217 code of every price."
    )
    put_copy_post_list_per1000: _Price = Field(description="Price of 1,000 PUT, COPY, POST or LIST requests.")
    get_and_other_per1000: _Price = Field(description="Price of 1,000 GET, HEAD and all other requests.")
    internet_egress_per_gb: _Price = Field(
        alias="internetEgressPerGB",
        description="Price of one GB (2^30 bytes) read from the source by a streamed copy.",
    )


#: AWS S3 Standard list prices in us-east-1 as published on aws.amazon.com/s3/pricing (taken on the
#: date below): $0.005 per 1,000 PUT, COPY, POST, LIST requests, $0.0004 per 1,000 GET and all other
#: requests, $0.09 per GB for the first 10 TB a month of data transfer out to the internet (the 100 GB
#: free each month and the cheaper tiers beyond 10 TB are left out: the estimate errs high).
DEFAULT_PRICES = Prices.model_validate(
    {
        "name": "AWS S3 Standard, us-east-1 (list prices)",
        "date": datetime.date(2026, 11, 29),
        "currency": "USD",
        "putCopyPostListPer1000": 0.005,
        "getAndOtherPer1000": 0.0004,
        "internetEgressPerGB": 0.09,
    }
)


class PricesInvalid(ValueError):
    """A price table that cannot be used; the message names each wrong field."""


def parse_prices(raw: Any, where: str) -> Prices:
    """A price table from its YAML/JSON form (camelCase fields); raises `PricesInvalid` naming the
    fields, as `where: field: problem` lines."""
    if not isinstance(raw, dict):
        raise PricesInvalid(f"{where}: a price table is a mapping of fields, not a {type(raw).__name__}")
    try:
        return Prices.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        lines = format_validation_error(exc, Prices).splitlines()
        raise PricesInvalid("\n".join(f"{where}: {line}" for line in lines)) from None


# -- the estimate ----------------------------------------------------------------------------------------

#: Request kinds, in the order they are shown, with the tier that prices them (True: PUT/COPY/POST/LIST).
KINDS: tuple[tuple[str, bool], ...] = (
    ("LIST", True),
    ("HEAD", False),
    ("GET", False),
    ("GetObjectTagging", False),
    ("PUT", True),
    ("COPY", True),
    ("CreateMultipartUpload", True),
    ("UploadPart", True),
    ("UploadPartCopy", True),
    ("CompleteMultipartUpload", True),
)


@dataclass(frozen=True)
class RequestCost:
    kind: str
    count: int
    per1000: float
    cost: float


@dataclass(frozen=True)
class CostEstimate:
    #: "server-side" (same service: no bytes leave it) or "streamed" (bytes leave the source endpoint).
    route: str
    copied_objects: int
    copied_bytes: int
    requests: tuple[RequestCost, ...]
    egress_bytes: int
    egress_cost: float
    total: float
    prices: Prices
    part_size: int
    assumptions: tuple[str, ...]

    @property
    def request_total(self) -> int:
        return sum(r.count for r in self.requests)


def _bucket_sizes(histogram: Histogram) -> list[int]:
    """The size each bucket's objects are taken at: the bucket's upper bound, never above the largest."""
    return [min(bound, histogram.largest) for bound in BUCKET_BOUNDS] + [histogram.largest]


def _object_requests(size: int, *, server_side: bool, preserve_tags: bool, part_size: int) -> dict[str, int]:
    """The requests the worker makes to copy one object of ``size`` bytes (worker/copier.py)."""
    tags = 1 if preserve_tags else 0
    if server_side and size <= min(part_size, MAX_SINGLE_COPY):
        return {"COPY": 1}  # TaggingDirective COPY: the tags travel with it
    if not server_side and size <= part_size:
        return {"GET": 1, "PUT": 1, "GetObjectTagging": tags}
    parts = max(1, -(-size // part_size_for(size, part_size)))
    per_part = {"UploadPartCopy": parts} if server_side else {"GET": parts, "UploadPart": parts}
    return {
        "HEAD": 1,
        "GetObjectTagging": tags,
        "CreateMultipartUpload": 1,
        "CompleteMultipartUpload": 1,
        **per_part,
    }


def _pages(objects: int) -> int:
    return max(1, -(-objects // KEYS_PER_LIST))


def estimate(
    histogram: Histogram,
    shards: Sequence[Shard],
    *,
    prices: Prices,
    server_side: bool,
    preserve_tags: bool,
    compare_destination: bool,
    existing: tuple[int, int] | None = None,
    planning_list_requests: int | None = None,
    part_size: int = DEFAULT_PART,
) -> CostEstimate:
    """The cost of copying what planning found. ``existing`` is (objects, bytes) the destination
    already holds (skipped), None when it was not compared; ``planning_list_requests`` the LIST calls
    planning made, None when not measured."""
    found_objects, found_bytes = histogram.objects, histogram.bytes
    skipped_objects, skipped_bytes = existing if existing is not None else (0, 0)
    skipped_objects = min(max(0, skipped_objects), found_objects)
    skipped_bytes = min(max(0, skipped_bytes), found_bytes)
    copied_objects, copied_bytes = found_objects - skipped_objects, found_bytes - skipped_bytes
    # Which objects are skipped is not known by bucket: every bucket is taken to lose the same share.
    share = copied_objects / found_objects if found_objects else 0.0

    counts: dict[str, float] = dict.fromkeys((k for k, _ in KINDS), 0.0)
    for size, count in zip(_bucket_sizes(histogram), histogram.counts, strict=True):
        if not count:
            continue
        per_object = _object_requests(
            size, server_side=server_side, preserve_tags=preserve_tags, part_size=part_size
        )
        for kind, n in per_object.items():
            counts[kind] += n * count * share

    measured = planning_list_requests is not None
    planning_lists = planning_list_requests if measured else _pages(found_objects)
    worker_lists = sum(_pages(s.objects) for s in shards)
    if compare_destination:
        worker_lists += len(shards) + (-(-skipped_objects // KEYS_PER_LIST))
    counts["LIST"] = float(max(0, planning_lists or 0) + worker_lists)

    requests = []
    for kind, first_tier in KINDS:
        count = min(MAX_COUNT, math.ceil(counts[kind]))
        per1000 = prices.put_copy_post_list_per1000 if first_tier else prices.get_and_other_per1000
        requests.append(RequestCost(kind, count, per1000, count / 1000 * per1000))
    egress_bytes = 0 if server_side else copied_bytes
    egress_cost = egress_bytes / GB * prices.internet_egress_per_gb
    total = min(MAX_AMOUNT, sum(r.cost for r in requests) + egress_cost)

    assumptions = [
        f"prices: {prices.name}, taken {prices.date.isoformat()}, in {prices.currency}",
        (
            "route: server-side copies within one service (same endpoint, region and credentials); "
            "no bytes leave it (AWS charges none within a region; a copy between regions would add "
            "inter-region transfer, not counted)"
            if server_side
            else "route: streamed through Ferry; every byte copied is read from the source endpoint and "
            "priced as internet egress (none within the source's AWS region: set internetEgressPerGB: 0 "
            "in the price table when Ferry runs there)"
        ),
        (
            f"copied: the {copied_objects:,} objects not already at the destination (skipped ones cost "
            "only their listing), each histogram bucket losing the same share"
            if existing is not None
            else f"copied: all {copied_objects:,} objects (the destination was not compared)"
        ),
        f"object sizes at their histogram bucket's upper bound, parts of {part_size // 2**20} MiB: "
        "multipart and part counts are upper bounds",
        "planning LIST requests as measured"
        if measured
        else "planning LIST requests estimated at one per 1,000 keys",
        "retries, aborted uploads and storage are not counted",
    ]
    if preserve_tags and not server_side:
        assumptions.append("one GetObjectTagging per object (spec.preserve.tags; untagged objects need none)")
    return CostEstimate(
        route="server-side" if server_side else "streamed",
        copied_objects=copied_objects,
        copied_bytes=copied_bytes,
        requests=tuple(requests),
        egress_bytes=egress_bytes,
        egress_cost=egress_cost,
        total=total,
        prices=prices,
        part_size=part_size,
        assumptions=tuple(assumptions),
    )


# -- renderings --------------------------------------------------------------------------------------------


def _amount(value: float) -> float:
    """An amount as rendered: finite, non-negative, bounded, to a millionth."""
    if not math.isfinite(value):
        return 0.0
    return round(min(MAX_AMOUNT, max(0.0, value)), 6)


def format_amount(value: float, currency: str) -> str:
    """An amount for people: cents from 1 up, else up to six decimals (a small job costs fractions of a
    cent): 12.34 USD, 0.0131 USD, 0.000005 USD, 0.00 USD."""
    value = _amount(value)
    if value >= 1:
        return f"{value:,.2f} {currency}"
    digits = f"{value:.6f}".rstrip("0")
    return f"{digits if len(digits) >= 4 else f'{value:.2f}'} {currency}"


def cost_json(estimate: CostEstimate) -> dict[str, Any]:
    """status.plan.cost and the `cost` of `ferry plan --output json`."""
    return {
        "currency": estimate.prices.currency,
        "total": _amount(estimate.total),
        "route": estimate.route,
        "copiedObjects": min(MAX_COUNT, estimate.copied_objects),
        "copiedBytes": min(MAX_COUNT, estimate.copied_bytes),
        "requests": [
            {"kind": r.kind, "count": r.count, "per1000": _amount(r.per1000), "cost": _amount(r.cost)}
            for r in estimate.requests
            if r.count
        ],
        "egress": {
            "bytes": min(MAX_COUNT, estimate.egress_bytes),
            "perGB": _amount(estimate.prices.internet_egress_per_gb),
            "cost": _amount(estimate.egress_cost),
        },
        "prices": {"name": estimate.prices.name, "date": estimate.prices.date.isoformat()},
        "partSizeBytes": estimate.part_size,
        "assumptions": list(estimate.assumptions),
    }


def cost_lines(estimate: CostEstimate) -> list[str]:
    """The cost estimate as `ferry plan` prints it: total, requests by kind, egress, assumptions."""
    currency = estimate.prices.currency
    lines = [f"estimated cost: {format_amount(estimate.total, currency)} ({estimate.route})"]
    for r in estimate.requests:
        if r.count:
            lines.append(
                f"  {r.kind:<24} {r.count:>15,} x {r.per1000:g}/1,000 = {format_amount(r.cost, currency)}"
            )
    lines.append(
        f"  {'egress':<24} {estimate.egress_bytes / GB:>15,.3f} GB x {estimate.prices.internet_egress_per_gb:g}/GB"
        f" = {format_amount(estimate.egress_cost, currency)}"
    )
    lines.append("  assuming:")
    lines += [f"    - {a}" for a in estimate.assumptions]
    return lines
