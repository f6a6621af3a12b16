"""The EndpointBudget API (``ferry.dev/v1alpha1``, cluster-scoped): a platform team's limits on the S3
requests and bytes per second that every CopyJob using one endpoint (optionally one bucket, or one prefix of
it) makes together. Validated here with the same rules as ``crds/endpointbudget.yaml``; the operator's
`budgets` module decides which CopyJobs a budget covers and what share each gets.

Tenants cannot create EndpointBudgets (the chart grants them no verb on the resource): the operator reads
them, and writes only their status.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, model_validator

from ferry.model.copyjob import API_GROUP, Bucket, ByteSize, Endpoint, Prefix, _Model

BUDGET_KIND = "EndpointBudget"
BUDGET_PLURAL = "endpointbudgets"
BUDGET_API_VERSION = f"{API_GROUP}/v1alpha1"
#: The same bound as a CopyJob's spec.rateLimit.requestsPerSecond.
MAX_BUDGET_REQUESTS_PER_SECOND = 1_000_000
#: 1 PiB/s: far above any endpoint, small enough that shares stay exact integers in JSON and in floats.
MAX_BUDGET_BYTES_PER_SECOND = 2**50


class EndpointBudgetSpec(_Model):
    """What an EndpointBudget covers and the limits every CopyJob using it shares."""

    endpoint: Endpoint = Field(
        description="The S3 endpoint the budget covers, written as CopyJobs write it (scheme, host and port, "
        "e.g. https://s3.example.com). Compared as the operator compares endpoints: without case and "
        "without the default ports :443 and :80, and every AWS endpoint (*.amazonaws.com) counts as AWS's "
        "one, which CopyJobs without an endpoint use too.",
    )
    bucket: Bucket | None = Field(
        default=None,
        description="Only CopyJobs reading or writing this bucket on the endpoint (default: every bucket).",
    )
    prefix: Prefix | None = Field(
        default=None,
        description="Only CopyJobs whose keys may fall under this prefix of the bucket (needs bucket; "
        "default: the whole bucket). A CopyJob of the whole bucket is covered too: some of its keys are "
        "under the prefix.",
    )
    requests_per_second: Annotated[StrictInt, Field(ge=0, le=MAX_BUDGET_REQUESTS_PER_SECOND)] = Field(
        default=0,
        description="S3 requests per second all CopyJobs covered make at most, together (0: not limited; "
        "at least one of requestsPerSecond and bytesPerSecond is set).",
    )
    bytes_per_second: Annotated[ByteSize, Field(ge=0, le=MAX_BUDGET_BYTES_PER_SECOND)] = Field(
        default=0,
        description="Bytes per second all CopyJobs covered copy at most, together; an integer or a quantity "
        "such as 1Gi (0: not limited).",
    )
    adaptive: StrictBool = Field(
        default=False,
        description="Lower the budget in force when the endpoint throttles the CopyJobs (503 SlowDown, 429), "
        "by 20% at a time down to 5% of the limits, and raise it again by 5% of the limits every 10 s "
        "without throttling, never above them (default false: the limits as written).",
    )

    @model_validator(mode="after")
    def _limits_and_scope(self) -> EndpointBudgetSpec:
        if self.requests_per_second == 0 and self.bytes_per_second == 0:
            raise ValueError("set requestsPerSecond or bytesPerSecond (or both): a budget limits something")
        if self.prefix is not None and self.bucket is None:
            raise ValueError("prefix needs bucket: a prefix is a prefix of one bucket's keys")
        return self


def parse_budget_spec(raw: object) -> EndpointBudgetSpec:
    """An EndpointBudget's spec as the API server stored it; raises pydantic's ValidationError."""
    return EndpointBudgetSpec.model_validate(raw, by_alias=True, by_name=False)
