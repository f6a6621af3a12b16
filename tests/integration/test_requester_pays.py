"""`source.requesterPays` / `destination.requesterPays` against a real S3 server process: every request to a
Requester Pays side says so, listing included, on both transports and both copy paths.

Server: moto with its request recorder (tests/support/recording.py): moto and versitygw serve a Requester
Pays bucket to anyone (neither charges nor refuses), so the test checks the requests Ferry sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.engine import TEST_PART, run_engine, spec
from support.recording import RecordingMoto, recording_moto

PAYER = "x-amz-request-payer"


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingMoto]:
    with recording_moto(tmp_path_factory.mktemp("moto-recording")) as server:
        yield server


@pytest.mark.parametrize("pays", ["source", "destination"])
@pytest.mark.parametrize("path", ["streamed", "server-side"])
@pytest.mark.parametrize("transport", ["lean", "botocore"])
def test_every_request_to_a_requester_pays_side_says_the_requester_pays(
    recorder: RecordingMoto, transport: str, path: str, pays: str
) -> None:
    endpoint = recorder.endpoint
    client = endpoint.client()
    src, dst = f"rp-src-{transport}-{path}-{pays}", f"rp-dst-{transport}-{path}-{pays}"
    for bucket in (src, dst):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=src, Key="small", Body=os.urandom(1000), Tagging="a=b")
    client.put_object(Bucket=src, Key="big", Body=os.urandom(TEST_PART + 10))
    # Something already at the destination, so that its listing has a page to read.
    client.put_object(Bucket=dst, Key="old", Body=b"x")
    reader, writer = ("same", "same") if path == "server-side" else ("reader", "writer")
    job = spec(
        {
            "bucket": src,
            "endpoint": endpoint.url,
            "credentialsSecret": reader,
            "requesterPays": pays == "source",
        },
        {
            "bucket": dst,
            "endpoint": endpoint.url,
            "credentialsSecret": writer,
            "requesterPays": pays == "destination",
        },
    )
    recorder.start()
    counts = run_engine(job, endpoint, transport=transport).summary.counts
    requests = recorder.stop()
    assert (counts.copied, counts.failed) == (2, 0)

    paying, other = (src, dst) if pays == "source" else (dst, src)
    to_paying = [r for r in requests if r.of_bucket(paying)]
    to_other = [r for r in requests if r.of_bucket(other)]
    operations = {r.operation for r in to_paying}
    assert "ListObjects" in operations
    assert {r.operation for r in to_paying if r.headers.get(PAYER) != "requester"} == set()
    copies = {"CopyObject", "UploadPartCopy"}
    if pays == "source" and path == "server-side":
        # A copy is sent to the destination but reads the paying source: it says so too.
        assert {r.operation for r in to_other if r.headers.get(PAYER) == "requester"} == copies
    else:
        assert [r.operation for r in to_other if PAYER in r.headers] == []
