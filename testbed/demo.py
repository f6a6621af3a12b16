"""`make demo`: a real copy on this machine. Starts an S3 server (moto) on 127.0.0.1, fills a source
bucket with a few thousand objects of mixed sizes (zero bytes to tens of MiB, with metadata and tags),
runs `ferry run -f examples/demo.yaml` with its progress display, verifies every object at the
destination and stops the server.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testbed.s3server import MotoServer

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "examples" / "demo.yaml"
PORT = 9555
OBJECTS = int(os.environ.get("FERRY_DEMO_OBJECTS", "3000"))


def _sizes(count: int, rng: random.Random) -> list[int]:
    """Mostly small objects, some of a few MiB, three of tens of MiB (multipart), and empty ones."""
    sizes = [0, 0, 24 * 2**20, 20 * 2**20 + 7, 12 * 2**20]
    while len(sizes) < count:
        roll = rng.random()
        sizes.append(rng.randint(1, 64 * 1024) if roll < 0.9 else rng.randint(64 * 1024, 2 * 2**20))
    return sizes


def _fill(client: Any, count: int) -> dict[str, str]:
    rng = random.Random(7)
    blob = os.urandom(25 * 2**20)
    client.create_bucket(Bucket="demo-source")
    client.create_bucket(Bucket="demo-destination")
    digests: dict[str, str] = {}

    def put(item: tuple[int, int]) -> None:
        index, size = item
        key = f"datasets/{index % 17:02d}/part-{index:05d}" + (".json" if index % 3 else ".bin")
        start = (index * 7919) % (len(blob) - size) if size < len(blob) else 0
        body = blob[start : start + size]
        extra: dict[str, Any] = {
            "ContentType": "application/json" if key.endswith(".json") else "application/octet-stream"
        }
        if index % 5 == 0:
            extra["Metadata"] = {"source-system": "demo", "row": str(index)}
        if index % 7 == 0:
            extra["Tagging"] = f"team=data&shard={index % 4}"
        client.put_object(Bucket="demo-source", Key=key, Body=body, **extra)
        digests[key] = hashlib.md5(body).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, enumerate(_sizes(count, rng))))
    return digests


def _verify(client: Any, digests: dict[str, str]) -> None:
    def check(key: str) -> str | None:
        target = "copied/" + key
        body = client.get_object(Bucket="demo-destination", Key=target)["Body"].read()
        if hashlib.md5(body).hexdigest() != digests[key]:
            return f"content differs: {target}"
        source_head = client.head_object(Bucket="demo-source", Key=key)
        head = client.head_object(Bucket="demo-destination", Key=target)
        if (head["ContentType"], head["Metadata"]) != (source_head["ContentType"], source_head["Metadata"]):
            return f"metadata differs: {target}"
        if key.endswith("0.json") or key.endswith("7.bin"):
            tags = client.get_object_tagging(Bucket="demo-source", Key=key)["TagSet"]
            if client.get_object_tagging(Bucket="demo-destination", Key=target)["TagSet"] != tags:
                return f"tags differ: {target}"
        return None

    with ThreadPoolExecutor(16) as pool:
        problems = [p for p in pool.map(check, sorted(digests)) if p]
    if problems:
        raise SystemExit("verification FAILED:\n  " + "\n  ".join(problems[:20]))


def main() -> int:
    print(f"demo: starting an S3 server (moto) on 127.0.0.1:{PORT}", flush=True)
    with MotoServer(port=PORT) as server:
        client = server.endpoint.client()
        started = time.monotonic()
        digests = _fill(client, OBJECTS)
        total = sum(
            o["Size"]
            for p in client.get_paginator("list_objects_v2").paginate(Bucket="demo-source")
            for o in p.get("Contents", [])
        )
        print(
            f"demo: filled demo-source with {len(digests):,} objects, {total / 2**20:.1f} MiB "
            f"in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        ferry = str(Path(sys.executable).with_name("ferry"))
        command = [ferry, "run", "-f", str(MANIFEST)]
        print(f"demo: {' '.join(['ferry', *command[1:]])}", flush=True)
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            print(f"demo: ferry run exited with {result.returncode}", file=sys.stderr)
            return result.returncode
        print("demo: second run (everything is already there, so everything is skipped)", flush=True)
        again = subprocess.run([*command, "--progress", "none"], check=False)
        if again.returncode != 0:
            return again.returncode
        print("demo: verifying every object (content MD5, content type, metadata, tags) ...", flush=True)
        _verify(client, digests)
        print(f"demo: OK: all {len(digests):,} objects verified at demo-destination/copied/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
