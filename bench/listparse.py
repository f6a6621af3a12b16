"""CPU to read one 1,000-key ListObjectsV2 page: botocore's parser, the XML parser, and Ferry's lean reader.

The page is the one `bench/listserver.py` answers for the first 1,000 keys of the "tree" layout, so the
figures are those of the pages `make bench-list` lists. Usage::

    .venv/bin/python bench/listparse.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from botocore.parsers import create_parser

sys.path.insert(0, str(Path(__file__).parent))

import listserver

from ferry.worker import leanlist


def cpu_ms(read: Callable[[], object], runs: int) -> float:
    started = time.process_time()
    for _ in range(runs):
        read()
    return (time.process_time() - started) / runs * 1000


def main() -> int:
    index = listserver.Index("tree", 100_000)
    body = listserver.listing_xml(
        index, "list-tree", {"list-type": "2", "max-keys": "1000", "encoding-type": "url"}
    )
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    shape = client.meta.service_model.operation_model("ListObjectsV2").output_shape
    parser = create_parser("rest-xml")
    answer = {"body": body, "headers": {}, "status_code": 200}
    assert len(leanlist._parse(body)["Contents"]) == 1000
    print(
        f"botocore's parser: {cpu_ms(lambda: parser.parse(answer, shape), 30):.1f} ms of CPU per 1,000-key page"
    )
    print(f"ElementTree:       {cpu_ms(lambda: leanlist._parse_tree(body), 200):.1f} ms")
    print(f"Ferry's reader, in boto3's shape:        {cpu_ms(lambda: leanlist._parse(body), 200):.1f} ms")
    print(f"Ferry's reader, as planning reads pages: {cpu_ms(lambda: leanlist._page(body), 200):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
