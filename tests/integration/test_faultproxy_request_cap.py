"""The fault proxy's request-rate cap (`FaultPlan.max_requests_per_second`): a provider that allows N
requests/s in total, from all clients together, and answers the rest 503 SlowDown. Real processes: an
S3 server (versitygw, else moto) behind the proxy, boto3 clients without retries."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from testbed.faultproxy import FaultPlan, FaultProxy, main
from testbed.s3server import S3Endpoint

pytestmark = pytest.mark.timeout(60)

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=16)
CAP = 40.0
SECONDS = 3.0


def test_requests_above_the_cap_from_all_clients_together_get_slow_down(
    versitygw_or_moto: S3Endpoint,
) -> None:
    setup = versitygw_or_moto.client()
    bucket = f"capped-{time.monotonic_ns()}"
    setup.create_bucket(Bucket=bucket)
    setup.put_object(Bucket=bucket, Key="k", Body=b"x")
    codes: dict[str, int] = {}
    lock = threading.Lock()
    with FaultProxy(versitygw_or_moto.url, FaultPlan(max_requests_per_second=CAP)) as proxy:
        deadline = time.monotonic() + SECONDS

        def hammer() -> None:
            # One client per thread, as separate copy processes would have; bounded by the deadline.
            client = dataclasses.replace(versitygw_or_moto, url=proxy.url).client(config=NO_RETRIES)
            while time.monotonic() < deadline:
                try:
                    client.head_object(Bucket=bucket, Key="k")
                    code = "200"
                except ClientError as exc:
                    code = str(
                        exc.response.get("Error", {}).get("Code")
                        or exc.response["ResponseMetadata"]["HTTPStatusCode"]
                    )
                with lock:
                    codes[code] = codes.get(code, 0) + 1

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 20)
        stats = proxy.stats()
    served = codes.get("200", 0)
    print(f"{codes} in {SECONDS} s under a cap of {CAP}/s")
    # The bucket holds a fifth of a second: at most CAP * SECONDS + CAP / 5 pass.
    assert served <= CAP * SECONDS + CAP / 5 + 1, codes
    assert served >= CAP * SECONDS * 0.8, codes
    assert stats.capped == sum(n for code, n in codes.items() if code != "200") > 0, (codes, stats)
    assert set(codes) <= {"200", "503", "SlowDown"}, codes
    assert stats.faults == stats.capped and stats.requests == sum(codes.values())


def test_a_cap_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="max_requests_per_second"):
        FaultPlan(max_requests_per_second=0)
    assert main(["--upstream", "http://127.0.0.1:9", "--max-requests-per-second", "-1"]) == 2


def test_without_a_cap_nothing_is_capped(versitygw_or_moto: S3Endpoint) -> None:
    with FaultProxy(versitygw_or_moto.url) as proxy:
        client = dataclasses.replace(versitygw_or_moto, url=proxy.url).client(config=NO_RETRIES)
        for _ in range(50):
            client.list_buckets()
        assert proxy.stats().capped == 0 and proxy.stats().requests == 50
