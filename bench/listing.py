"""Listing benchmark (`make bench-list`): Ferry's planner against rclone, s5cmd and the AWS CLI listing one bucket.

Every tool lists the same bucket (a bench/listkeys.py layout) through a `testbed.faultproxy` adding
`BENCH_LIST_LATENCY_MS` (50 ms) to every request, as a bucket in another region would, on two servers:
versitygw (buckets seeded once and cached by bench/listseed.py) and bench/listserver.py (pages in
constant time, as an S3 service answers them; versitygw's cost per page grows with the directory).
Ferry runs `ferry plan -f copyjob.yaml --output json` (parallel listing); the peers list sequentially:
`rclone lsf -R --fast-list`, `s5cmd ls 's3://b/*'` and `aws s3 ls --recursive`. Per run: wall time,
keys listed (checked against the bucket's count), keys/s, requests counted at the proxy, peak RSS
(VmHWM), CPU of the tool and of the server, and the speed-up against the fastest sequential peer.

Beside Ferry's listing, each case also plans from a manifest (the `ferry-manifest` row): `ferry plan` on the
same CopyJob with `spec.source.manifest.file` a gzipped CSV key list of the very same keys and sizes, in key
order as an inventory sorted by key would be (written once beside the seeded buckets, in the cache). The row
has its wall time and peak RSS, and whether its shards equal the listing's (the `--output json` plans'
`shardRanges`) and a sequential listing's (the listing's own `Planner` fed the same keys in order, here).
Results: bench/results/list-latest.{json,md}.

Run with the project venv's interpreter; bench/README.md ("Listing") lists the variables. The
servers and the proxy listen on 127.0.0.1; every run has a timeout and the whole benchmark a budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import listkeys
import listseed
import run
from run import env, log

from testbed.faultproxy import FaultPlan, FaultProxy
from testbed.s3server import S3Endpoint

SMOKE = os.environ.get("BENCH_LIST_SMOKE", "") not in ("", "0")
PEERS = ("rclone", "s5cmd", "aws-cli")
TOOLS = ("ferry", *PEERS)
SERVERS = ("versitygw", "index")
#: The targets the benchmark reports on (met or not, per layout, at this many keys).
TARGET_KEYS = 1_000_000
TARGET_SPEEDUP = 10.0
TARGET_SECONDS = 30.0


def _smoke(name: str, default: str, smoke: str) -> str:
    return os.environ.get(name) or (smoke if SMOKE else default)


@dataclass(frozen=True)
class Case:
    layout: str
    keys: int
    tools: tuple[str, ...]
    servers: tuple[str, ...] = SERVERS


@dataclass(frozen=True)
class Server:
    """Where one case's bucket is served: `versitygw` (seeded posix files) or `index` (bench/listserver.py)."""

    name: str
    ep: S3Endpoint
    pid: int | None
    data_dir: Path | None  # versitygw's posix root, where the seeder writes


@dataclass(frozen=True)
class Params:
    servers: tuple[str, ...]
    cases: tuple[Case, ...]
    latency_ms: float
    listers: int | None
    tool_timeout: float
    total_timeout: float
    seed_timeout: float
    cache: str
    results: str
    name: str


def _count(text: str) -> int:
    try:
        n = int(text.replace("_", ""))
    except ValueError:
        raise SystemExit(f"bench-list: not a key count: {text[:40]!r}") from None
    if not 1 <= n <= 10_000_000:
        raise SystemExit("bench-list: key counts must be between 1 and 10,000,000")
    return n


def _tools(names: list[str]) -> tuple[str, ...]:
    for tool in names:
        if tool not in TOOLS:
            raise SystemExit(f"bench-list: unknown tool {tool[:40]!r} (known: {', '.join(TOOLS)})")
    return tuple(names)


def cases() -> tuple[Case, ...]:
    """BENCH_LIST_CASES (`[server/]layout:keys[:tool/tool...]`, comma-separated), else every
    BENCH_LIST_LAYOUTS x BENCH_LIST_KEYS with BENCH_LIST_TOOLS."""
    tools = _tools([x.strip() for x in env("BENCH_LIST_TOOLS", ",".join(TOOLS)).split(",") if x.strip()])
    spec = os.environ.get("BENCH_LIST_CASES", "").strip()
    if spec:
        out = []
        for item in spec.split(",")[:50]:
            head, _, rest = item.strip().partition(":")
            server, _, layout = head.rpartition("/")
            if server and server not in SERVERS:
                raise SystemExit(f"bench-list: unknown server {server[:40]!r} in BENCH_LIST_CASES")
            count, _, names = rest.partition(":")
            if layout not in listkeys.LAYOUTS:
                raise SystemExit(f"bench-list: unknown layout {layout[:40]!r} in BENCH_LIST_CASES")
            only = (server,) if server else SERVERS
            out.append(Case(layout, _count(count), _tools(names.split("/")) if names else tools, only))
        return tuple(out)
    keys = [_count(k) for k in _smoke("BENCH_LIST_KEYS", "100000", "20000").split(",")]
    layouts = [x.strip() for x in env("BENCH_LIST_LAYOUTS", ",".join(listkeys.LAYOUTS)).split(",")]
    for layout in layouts:
        if layout not in listkeys.LAYOUTS:
            raise SystemExit(
                f"bench-list: unknown layout {layout[:40]!r} (known: {', '.join(listkeys.LAYOUTS)})"
            )
    return tuple(Case(layout, n, tools) for layout in layouts for n in keys)


def params() -> Params:
    listers = env("BENCH_LIST_LISTERS", "")
    servers = tuple(x.strip() for x in env("BENCH_LIST_SERVERS", ",".join(SERVERS)).split(",") if x.strip())
    for name in servers:
        if name not in SERVERS:
            raise SystemExit(f"bench-list: unknown server {name[:40]!r} (known: {', '.join(SERVERS)})")
    return Params(
        servers=servers,
        cases=cases(),
        latency_ms=float(env("BENCH_LIST_LATENCY_MS", "50")),
        listers=int(listers) if listers else None,
        tool_timeout=float(_smoke("BENCH_LIST_TOOL_TIMEOUT", "900", "60")),
        total_timeout=float(_smoke("BENCH_LIST_TOTAL_TIMEOUT", "5400", "170")),
        seed_timeout=float(env("BENCH_LIST_SEED_TIMEOUT", "900")),
        cache=str(Path(env("BENCH_LIST_CACHE", str(run.CACHE / "bench-list")))),
        results=str(run.RESULTS),
        name="list-smoke" if SMOKE else "list-latest",
    )


def process_cpu(pid: int) -> float:
    """user+sys CPU seconds of a live process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def ferry_command() -> tuple[list[str] | None, str]:
    """The command that plans with Ferry, and a note saying which one; None when there is none."""
    standin = os.environ.get("FERRY_LIST_CMD")
    if standin:
        return shlex.split(standin), f"stand-in FERRY_LIST_CMD={standin!r}, not `ferry plan`"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        probe = subprocess.run(
            [str(run.FERRY), "plan", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [str(run.FERRY), "plan"], f"{run.FERRY} plan"
    return None, f"{run.FERRY} has no `plan` command yet"


def plan_document(stdout: str) -> dict[str, Any] | None:
    """The JSON document `ferry plan --output json` printed (None if there is none)."""
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(stdout[start:])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def planned_objects(doc: dict[str, Any] | None) -> int | None:
    """Objects the plan found: `plan.objects` (a stand-in may answer a bare `objects`)."""
    if doc is None:
        return None
    plan = doc.get("plan")
    value = plan.get("objects") if isinstance(plan, dict) else doc.get("objects")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def counted_lines(stdout: str, tool: str) -> int:
    """Keys in a peer's listing output: one line per object (s5cmd marks directories with DIR)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if tool == "s5cmd":
        return sum(1 for ln in lines if " DIR " not in ln)
    if tool == "aws-cli":
        return sum(1 for ln in lines if not ln.lstrip().startswith("PRE "))
    return len(lines)


class ListBench:
    def __init__(self, p: Params, workdir: Path) -> None:
        self.p = p
        self.workdir = workdir
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.results: list[dict[str, Any]] = []
        self.ferry, self.ferry_note = ferry_command()
        self.rclone = run.find_binary("rclone")
        self.s5cmd = run.find_binary("s5cmd")
        aws = run.CACHE / "bench-awscli" / "bin" / "aws"
        self.aws = aws if aws.is_file() else None
        log(f"ferry: {self.ferry_note}")
        for name, path in (("rclone", self.rclone), ("s5cmd", self.s5cmd), ("aws-cli", self.aws)):
            log(f"{name}: {path or 'MISSING - runs skipped'}")

    def remaining(self) -> float:
        return self.p.total_timeout - (time.monotonic() - self.started)

    def missing(self, tool: str) -> str | None:
        if tool == "ferry" and self.ferry is None:
            return self.ferry_note
        if tool == "rclone" and self.rclone is None:
            return "rclone binary not found (make testbin)"
        if tool == "s5cmd" and self.s5cmd is None:
            return "s5cmd binary not found (make testbin)"
        if tool == "aws-cli" and self.aws is None:
            return f"AWS CLI not installed in {run.CACHE / 'bench-awscli'} (make bench-tools)"
        return None

    def command(
        self, tool: str, bucket: str, ep: S3Endpoint, url: str, manifest: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """argv and the tool's own environment (credentials go through the environment or a 0600 file);
        ``manifest``: the key list the manifest row plans from."""
        aws_env = run.Bench.aws_env(ep)
        if tool in ("ferry", MANIFEST_TOOL):
            assert self.ferry is not None
            job = self.workdir / f"{bucket}.{tool}.copyjob.yaml"
            setup = run.Setup(ep, url, url, url, True)
            sizes = {"median": 64 * 1024, "max": listkeys.SIZE_PALETTE[-1]}
            run.ferry_job(job, setup, bucket, "list-dst", sizes)
            if manifest is not None:
                with_manifest(job, manifest)
            job.chmod(0o600)
            argv = [*self.ferry, "-f", str(job), "--output", "json"]
            if self.p.listers and tool == "ferry":
                argv += ["--listers", str(self.p.listers)]
            return argv, {}
        if tool == "rclone":
            assert self.rclone is not None
            cfg = {
                "RCLONE_CONFIG_SRC_TYPE": "s3",
                "RCLONE_CONFIG_SRC_PROVIDER": "Other",
                "RCLONE_CONFIG_SRC_ENDPOINT": url,
                "RCLONE_CONFIG_SRC_ACCESS_KEY_ID": ep.access_key,
                "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY": ep.secret_key,
                "RCLONE_CONFIG_SRC_REGION": ep.region,
                "RCLONE_CONFIG_SRC_FORCE_PATH_STYLE": "true",
                "RCLONE_CONFIG": str(self.workdir / "rclone-none.conf"),
            }
            return [str(self.rclone), "lsf", "-R", "--fast-list", "--files-only", f"src:{bucket}"], cfg
        if tool == "s5cmd":
            assert self.s5cmd is not None
            return [str(self.s5cmd), "--endpoint-url", url, "ls", f"s3://{bucket}/*"], aws_env
        if tool == "aws-cli":
            assert self.aws is not None
            cfg_file = self.workdir / "aws-config"
            cfg_file.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
            extra = aws_env | {
                "AWS_CONFIG_FILE": str(cfg_file),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws-none"),
            }
            return [str(self.aws), "s3", "ls", f"s3://{bucket}", "--recursive", "--endpoint-url", url], extra
        raise AssertionError(tool)

    def run_tool(
        self, server: Server, layout: str, count: int, tool: str, proxy: FaultProxy
    ) -> dict[str, Any]:
        bucket = listseed.bucket_name(layout, count)
        manifest = key_list_file(Path(self.p.cache), layout, count) if tool == MANIFEST_TOOL else None
        argv, extra = self.command(tool, bucket, server.ep, proxy.url, manifest)
        pid = server.pid
        timeout = min(self.p.tool_timeout, max(5.0, self.remaining() - 10))
        before = proxy.stats()
        cpu0 = process_cpu(pid) if pid else 0.0
        log(f"{server.name} {layout}/{count:,}: {tool} ... (timeout {timeout:.0f}s)")
        res = run.run_child(argv, run.base_env() | extra, cap=None, timeout=timeout)
        server_cpu = process_cpu(pid) - cpu0 if pid else None
        after = proxy.stats()
        by_method = {
            m: after.by_method.get(m, 0) - before.by_method.get(m, 0)
            for m in after.by_method
            if after.by_method.get(m, 0) != before.by_method.get(m, 0)
        }
        planned = tool in ("ferry", MANIFEST_TOOL)
        doc = plan_document(res.stdout) if planned else None
        listed = planned_objects(doc) if planned else counted_lines(res.stdout, tool)
        ok = res.code == 0 and not res.timed_out and listed == count
        notes = []
        if res.timed_out:
            notes.append(f"killed at the {timeout:.0f}s timeout")
        if res.code not in (0, None) and not res.timed_out:
            tail = (res.stderr.strip().splitlines() or [""])[-1][:200]
            notes.append(f"exit {res.code}: {tail}")
        if listed != count and not res.timed_out:
            notes.append(f"listed {listed} keys, the bucket holds {count}")
        if tool == "ferry":
            notes.append(self.ferry_note)
        if tool == MANIFEST_TOOL:
            notes.append("ferry plan from a CSV key list of the same keys, in key order")
        row: dict[str, Any] = {
            "server": server.name,
            "layout": layout,
            "keys": count,
            "tool": tool,
            "sequential": tool in PEERS,
            "command": " ".join(shlex.quote(a) for a in argv[1:] if not a.endswith(".yaml")),
            "wallSeconds": round(res.wall, 2),
            "keysListed": listed,
            "verified": ok,
            "keysPerSecond": round(count / res.wall, 1) if ok else None,
            "requests": after.requests - before.requests,
            "requestsByMethod": by_method,
            "peakRssBytes": res.maxrss or None,
            "cpuSeconds": round(res.cpu, 2),
            "serverCpuSeconds": round(server_cpu, 2) if server_cpu is not None else None,
            "exitCode": res.code,
            "timedOut": res.timed_out,
            "note": "; ".join(notes),
        }
        ranges = doc.get("shardRanges") if doc is not None else None
        if isinstance(ranges, list):
            # The shards the plan would run, as a digest: equal plans have equal digests.
            row["shards"] = len(ranges)
            row["shardsDigest"] = shards_digest(ranges)
        listing = doc.get("listing") if doc is not None else None
        if isinstance(listing, dict):
            # What Ferry says of its own listing (seconds, listers, LIST requests, keys/s): numbers only.
            row["ferryListing"] = {
                k: v for k, v in list(listing.items())[:20] if isinstance(v, int | float) and len(k) < 40
            }
        log(
            f"{server.name} {layout}/{count:,}: {tool}: {listed} keys in {res.wall:.1f}s, {row['requests']} requests, "
            f"VmHWM {(res.maxrss or 0) / 2**20:.0f} MiB, cpu {res.cpu:.1f}s, server cpu "
            f"{row['serverCpuSeconds']}s, verified={ok} {row['note']}"
        )
        return row

    def case(self, case: Case, server: Server) -> None:
        layout, count = case.layout, case.keys
        seed: dict[str, Any] = {}
        if server.data_dir is not None:
            seed = listseed.seed(
                run.client(server.ep),
                server.data_dir,
                Path(self.p.cache),
                layout,
                count,
                log,
                time.monotonic() + self.p.seed_timeout,
            )
        bucket = listseed.bucket_name(layout, count)
        plan = FaultPlan(latency_ms=self.p.latency_ms)
        rows: list[dict[str, Any]] = []
        with FaultProxy(server.ep.url, plan, seed=1) as proxy:
            for tool in case.tools:
                why = self.missing(tool)
                if why is None and self.remaining() < 15:
                    why = "total time budget (BENCH_LIST_TOTAL_TIMEOUT) used up"
                if why is not None:
                    log(f"{server.name} {layout}/{count:,}: {tool}: skipped ({why})")
                    rows.append(
                        {
                            "server": server.name,
                            "layout": layout,
                            "keys": count,
                            "tool": tool,
                            "skipped": True,
                            "note": why,
                        }
                    )
                    continue
                try:
                    rows.append(self.run_tool(server, layout, count, tool, proxy))
                    if tool == "ferry":
                        # The same plan from a manifest, through the same proxy, right after the listing.
                        rows.append(self.run_tool(server, layout, count, MANIFEST_TOOL, proxy))
                except Exception as exc:  # one broken run must not lose the others
                    log(f"{server.name} {layout}/{count:,}: {tool}: ERROR {exc!r}")
                    rows.append(
                        {
                            "server": server.name,
                            "layout": layout,
                            "keys": count,
                            "tool": tool,
                            "error": repr(exc),
                        }
                    )
        self.compare_shards(rows, case, server)
        fastest = min(
            (r["wallSeconds"] for r in rows if r.get("sequential") and r.get("verified")), default=None
        )
        for r in rows:
            r["seedSeconds"] = seed.get("seedSeconds")
            r["bucket"] = bucket
            if fastest and r.get("verified"):
                r["vsFastestSequentialPeer"] = round(fastest / r["wallSeconds"], 2)
        self.results += rows

    def compare_shards(self, rows: list[dict[str, Any]], case: Case, server: Server) -> None:
        """On the manifest row: whether its shards equal the listing's and a sequential listing's."""
        listing = next((r for r in rows if r["tool"] == "ferry" and r.get("verified")), None)
        manifest = next((r for r in rows if r["tool"] == MANIFEST_TOOL and r.get("verified")), None)
        if manifest is None:
            return
        manifest["sameShardsAsListing"] = (
            manifest.get("shardsDigest") == listing.get("shardsDigest") if listing is not None else None
        )
        job = self.workdir / f"{listseed.bucket_name(case.layout, case.keys)}.{MANIFEST_TOOL}.copyjob.yaml"
        try:
            reference = sequential_shards(job, case.layout, case.keys)
        except Exception as exc:  # the comparison is lost, not the case's rows
            log(f"{server.name} {case.layout}/{case.keys:,}: sequential shards: ERROR {exc!r}")
            return
        manifest["sequentialShards"] = len(reference)
        manifest["sameShardsAsSequential"] = manifest.get("shardsDigest") == shards_digest(reference)
        log(
            f"{server.name} {case.layout}/{case.keys:,}: manifest shards equal the listing's: "
            f"{manifest['sameShardsAsListing']}, a sequential listing's: {manifest['sameShardsAsSequential']}"
        )


# -- planning from a manifest of the same keys ------------------------------------------------------

MANIFEST_TOOL = "ferry-manifest"


def key_list_file(cache: Path, layout: str, count: int) -> Path:
    """The bucket's keys and sizes as a gzipped CSV key list, in key order (bench/listkeys.py yields them so),
    written once into the cache."""
    path = cache / f"list-{layout}-{count}.keys.csv.gz"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8", compresslevel=1) as out:
        out.write("key,size\n")
        out.writelines(f"{k.name},{k.size}\n" for k in listkeys.keys(layout, count))
    partial.rename(path)
    return path


def with_manifest(job: Path, manifest: Path) -> None:
    """Add spec.source.manifest (a local key list) to a CopyJob file written by `run.ferry_job`."""
    first, *rest = job.read_text().split("\n---\n")
    doc = json.loads(first)
    doc["spec"]["source"]["manifest"] = {"format": "csv", "file": str(manifest)}
    job.write_text("\n---\n".join([json.dumps(doc), *rest]))


def shards_digest(ranges: list[Any]) -> str:
    return hashlib.sha256(json.dumps(ranges, sort_keys=True).encode()).hexdigest()


def sequential_shards(job: Path, layout: str, count: int) -> list[dict[str, Any]]:
    """The shards `ferry plan` would print for a sequential listing of the bucket: the listing's `Planner`
    fed its keys in order, a page at a time, with the pieces and shards cut as `scan.scan` and the operator
    cut them (default platform settings)."""
    from ferry.model import CopyJobSpec
    from ferry.operator.caps import cut_shards
    from ferry.operator.planning import Planner
    from ferry.operator.render import fit_shards, shards_budget
    from ferry.operator.settings import OperatorSettings

    spec = CopyJobSpec.model_validate(
        json.loads(job.read_text().split("\n---\n")[0])["spec"], by_alias=True, by_name=False
    )
    planner = Planner(
        piece_objects=min(1000, spec.shard_size.max_objects or 1000),
        piece_bytes=min(2**30, spec.shard_size.max_bytes or 2**30),
    )
    keys = listkeys.keys(layout, count)
    while page := list(itertools.islice(keys, 1000)):
        planner.add_many([k.name for k in page], [k.size for k in page])
    pieces = fit_shards(planner.pieces(), shards_budget(spec))
    # listed_at matters only to a deadline target, which the bench's CopyJob has none of.
    shards, _ = cut_shards(planner.histogram(), pieces, spec, OperatorSettings(), dt.datetime.now(dt.UTC))
    return [s.as_json() for s in shards]


# -- output -----------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cell(v: Any) -> str:
    """Text from a tool's output, safe in a Markdown table cell."""
    return " ".join(str(v).replace("|", "\\|").split())[:300]


def _mib(v: Any) -> str:
    return _f(v / 2**20, 0) if v else "-"


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r.get("server", ""), r["layout"]) for r in rows))


def targets(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for server, layout in _groups(rows):
        mine = [
            r
            for r in rows
            if r.get("server", "") == server and r["layout"] == layout and r["tool"] == "ferry"
        ]
        big = next((r for r in mine if r["keys"] == TARGET_KEYS and r.get("verified")), None)
        if big is None:
            out.append(f"- {server}, {layout}: {TARGET_KEYS:,} keys not run (or Ferry's run failed)")
        else:
            speed = big.get("vsFastestSequentialPeer")
            out.append(
                f"- {server}, {layout}, {TARGET_KEYS:,} keys: Ferry {_f(speed, 2)}x the fastest sequential peer "
                f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if speed and speed >= TARGET_SPEEDUP else 'NOT met'}); "
                f"planned in {big['wallSeconds']} s (target <= {TARGET_SECONDS:.0f} s: "
                f"{'met' if big['wallSeconds'] <= TARGET_SECONDS else 'NOT met'})"
            )
        out += manifest_targets(rows, server, layout)
        rss = {r["keys"]: r["peakRssBytes"] for r in mine if r.get("peakRssBytes") and r.get("verified")}
        if len(rss) >= 2:
            parts = ", ".join(f"{k:,} keys: {_mib(v)} MiB" for k, v in sorted(rss.items()))
            out.append(f"- {server}, {layout}: Ferry's peak RSS by bucket size: {parts}")
    return out


def manifest_targets(rows: list[dict[str, Any]], server: str, layout: str) -> list[str]:
    """Per bucket size: is planning from a manifest of the same keys faster than listing, with the same shards?"""
    out = []
    here = [r for r in rows if r.get("server", "") == server and r["layout"] == layout]
    for count in dict.fromkeys(r["keys"] for r in here):
        listing = next((r for r in here if r["keys"] == count and r["tool"] == "ferry"), None)
        manifest = next((r for r in here if r["keys"] == count and r["tool"] == MANIFEST_TOOL), None)
        if listing is None or manifest is None:
            continue
        if not (listing.get("verified") and manifest.get("verified")):
            out.append(
                f"- {server}, {layout}, {count:,} keys: manifest planned faster than listing, same shards: "
                "not measured (a run failed)"
            )
            continue
        faster = manifest["wallSeconds"] < listing["wallSeconds"]
        same = manifest.get("sameShardsAsListing") is True
        out.append(
            f"- {server}, {layout}, {count:,} keys: manifest planned faster than listing, same shards: "
            f"{'met' if faster and same else 'NOT met'} (manifest {manifest['wallSeconds']} s, listing "
            f"{listing['wallSeconds']} s: {'faster' if faster else 'NOT faster'}; {manifest.get('shards')} "
            f"shards, {'equal to' if same else 'NOT equal to'} the listing's {listing.get('shards')}; "
            f"{'equal to' if manifest.get('sameShardsAsSequential') else 'NOT equal to'} a sequential "
            "listing's)"
        )
    return out


def markdown(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out = [f"# Listing benchmark ({header['date']})", ""]
    out.append(
        f"Machine: {header['machine']['nproc']} cores, {header['machine']['memoryGiB']} GiB. "
        f"Proxy latency: {header['latencyMs']:g} ms per request. Total {header['totalSeconds']} s."
    )
    out += [""] + [f"- {n}" for n in header["notes"]] + ["", "## Targets", "", *targets(rows), ""]
    for server, layout in _groups(rows):
        here = [r for r in rows if r.get("server", "") == server and r["layout"] == layout]
        for count in dict.fromkeys(r["keys"] for r in here):
            out += [f"## {server}: {layout}, {count:,} keys", ""]
            out.append(
                "| tool | wall s | keys/s | vs fastest sequential peer | requests | peak RSS MiB "
                "| tool CPU s | server CPU s | verified | note |"
            )
            out.append("|" + "---|" * 10)
            for r in here:
                if r["keys"] != count:
                    continue
                if r.get("skipped") or r.get("error"):
                    out.append(f"| {r['tool']} | | | | | | | | | {_cell(r.get('note') or r.get('error'))} |")
                    continue
                note = r["note"]
                fl = r.get("ferryListing") or {}
                if fl and r["tool"] == "ferry":
                    note = f"{fl.get('listers')} listers, {fl.get('requests')} LIST requests; {note}"
                if r["tool"] == MANIFEST_TOOL and "sameShardsAsListing" in r:
                    note = (
                        f"{r.get('shards')} shards: equal to the listing's {r['sameShardsAsListing']}, "
                        f"to a sequential listing's {r.get('sameShardsAsSequential')}; {note}"
                    )
                out.append(
                    f"| {r['tool']} | {_f(r['wallSeconds'], 2)} | {_f(r['keysPerSecond'], 0)} | "
                    f"{_f(r.get('vsFastestSequentialPeer'), 2)}{'x' if r.get('vsFastestSequentialPeer') else ''} | "
                    f"{_f(r['requests'])} | {_mib(r['peakRssBytes'])} | {_f(r['cpuSeconds'], 1)} | "
                    f"{_f(r['serverCpuSeconds'], 1)} | {'yes' if r['verified'] else 'NO'} | {_cell(note)} |"
                )
            out.append("")
    return "\n".join(out)


@contextlib.contextmanager
def index_server(layout: str, count: int, workdir: Path) -> Iterator[Server]:
    """bench/listserver.py for one bucket, as a process on 127.0.0.1; stopped on exit."""
    log_path = workdir / f"listserver-{layout}-{count}.log"
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(run.HERE / "listserver.py"), "--layout", layout, "--keys", str(count)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 180  # generating 10,000,000 keys takes about a minute
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline().decode(errors="replace").strip()
            if line.startswith("listening http://127.0.0.1:"):
                url = line.split(" ", 1)[1]
                break
        if not url:
            raise RuntimeError(f"listserver did not start; see {log_path}")
        # The server checks no signature; the clients still need credentials to sign with.
        ep = S3Endpoint(url=url, access_key="bench-list", secret_key="bench-list-unchecked")
        yield Server("index", ep, proc.pid, None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = params()
    results = Path(p.results)
    results.mkdir(parents=True, exist_ok=True)
    cache = Path(p.cache)
    cache.mkdir(parents=True, exist_ok=True)
    log(f"params {asdict(p)}")
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-list-"))
    bench = ListBench(p, workdir)
    servers: list[str] = []
    try:
        if "versitygw" in p.servers:
            vgw = run.find_binary("versitygw")
            if vgw is None:
                bench.notes.append("versitygw not built (make testbin): its cases were skipped")
            else:
                from testbed.versitygw import VersityGW

                # The server's posix root lives in the cache, so seeded buckets survive between runs.
                with VersityGW(vgw.parent, cache / "gw") as gw:
                    pid = gw.proc.pid if gw.proc is not None else None
                    server = Server("versitygw", gw.endpoint, pid, gw.data_dir)
                    s3 = run.client(gw.endpoint)
                    for bucket in ("list-dst", "list-seed-check"):
                        with contextlib.suppress(Exception):  # already there from an earlier run
                            s3.create_bucket(Bucket=bucket)
                    listseed.check_against_put(s3, gw.data_dir, "list-seed-check")
                    log("seed: a directly written object lists and reads back like a PUT one")
                    servers.append(f"versitygw: posix backend ({vgw.resolve().parent.name}), --keep-alive")
                    for case in (c for c in p.cases if "versitygw" in c.servers):
                        if bench.remaining() < 20:
                            bench.notes.append(
                                f"versitygw {case.layout}/{case.keys}: skipped, time budget used up"
                            )
                            continue
                        bench.case(case, server)
        if "index" in p.servers:
            servers.append(
                "index: bench/listserver.py, ListObjects pages by binary search over keys in memory"
            )
            for case in (c for c in p.cases if "index" in c.servers):
                if bench.remaining() < 20:
                    bench.notes.append(f"index {case.layout}/{case.keys}: skipped, time budget used up")
                    continue
                with index_server(case.layout, case.keys, workdir) as server:
                    bench.case(case, server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    bench.notes += [
        f"every tool lists through testbed.faultproxy adding {p.latency_ms:g} ms to each request; "
        "requests are counted at that proxy",
        "Ferry: " + bench.ferry_note,
        "peers are sequential listers: rclone lsf -R --fast-list --files-only, s5cmd ls 's3://bucket/*', "
        "aws s3 ls --recursive (AWS CLI v1)",
        *[f"server {s}" for s in servers],
        "versitygw buckets are seeded by writing its posix files and user.etag xattrs directly "
        "(bench/listseed.py), checked against a PUT object at every run; cached in " + p.cache,
        "server CPU: user+sys of the server process during the run; versitygw reads and sorts the whole "
        "directory a page starts in, so on 2 cores its CPU bounds every parallel lister; the index server "
        "answers a page in constant time, as an S3 service does, so the proxy's latency is what listers wait for",
    ]
    header = {
        "header": True,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "memoryGiB": round(mem / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "servers": servers,
        "latencyMs": p.latency_ms,
        "params": asdict(p),
        "notes": bench.notes,
        "totalSeconds": round(time.monotonic() - bench.started, 1),
    }
    (results / f"{p.name}.json").write_text(json.dumps([header, *bench.results], indent=1) + "\n")
    md = markdown(header, bench.results)
    (results / f"{p.name}.md").write_text(md + "\n")
    log(f"wrote {results / (p.name + '.json')} and {results / (p.name + '.md')}")
    print(md)
    bad = [r for r in bench.results if not r.get("skipped") and not r.get("verified")]
    return 1 if bad and os.environ.get("BENCH_STRICT") else 0


if __name__ == "__main__":
    sys.exit(main())
