"""Placement benchmark of Meridian: where reads are served, how fast, and how many copies a
document costs, when every region holds everything, under static placement, and when copies
follow readers; plus how evenly a region's nodes share its documents.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_placement.py            # full run, 3 runs per figure
    .venv/bin/python bench/bench_placement.py --quick    # smoke run, small sizes, 1 run

Every node is a real ``python -m app serve`` process on loopback, one per region (us-east,
eu-west, ap-south), with the [latency] of the issue (us-east:eu-west 40 ms, us-east:ap-south
110 ms, eu-west:ap-south 65 ms one way). Each node dials every other one through a WAN
emulator proxy in front of that node (app/tools/wan.py, one proxy per ordered pair of nodes,
in a process of its own: ``python -m app.tools.wan_service``, so that it shares no event loop
or GIL with the load generator), given with ``--peer``: peer links and forwarded requests both
cross the emulated WAN. Clients sit in a region: they talk to their region's node over
loopback, with no emulated latency. Three placements, each on a fresh cluster:

a. everywhere: ``replicas = 3`` (every region holds every document);
b. static: ``replicas = 1`` (only the home region, where the document was first written);
c. copies follow readers: ``replicas = 1``, ``followers = true``, ``follow_reads = 5``,
   ``rehome = false``;
d. homes follow readers: (c) with ``rehome = true``, ``rehome_reads = 2.5``,
   ``rehome_after = 20`` (a cold home moves to the region of a follower copy in use).

Workload: N documents, document i created at region i % 3 (its home) and "owned" by the next
region (its readers are there). Each region reads at a paced rate, 90% of its reads on the
documents it owns, 10% on the others; a warm-up runs until the share of reads served in
region and the follower copies stop changing, then the measured phase. Reported per
placement: share of reads served in the caller's region (``X-Meridian-Served-By``), read
latency p50/p99 (client side), copies per document (each node's ``GET /v1/docs`` listing) and
stored bytes (``meridian_storage_stored_bytes``, a count the node reads every 30 s: the
benchmark waits for one taken after the measured phase). From (b): forwarding overhead, the
forwarded reads' time minus one emulated round trip. Balance: one region of 4 nodes, 10,000
documents created through all of them, documents per node (listings), max/mean.

bench/README.md says how exactly; docs/benchmarks.md has the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_single_node as single  # noqa: E402  (this directory)
from bench_replication import OtherLoad, patch_request, table, wait_until  # noqa: E402
from progress import Progress  # noqa: E402  (this directory)

from app.cluster.placement import Member, rendezvous  # noqa: E402
from tests.cluster import free_port  # noqa: E402
from tests.support import NodeProcess  # noqa: E402

HOST = single.HOST
SECRET = "bench-cluster-secret"
REGIONS = ("us-east", "eu-west", "ap-south")
#: One-way latency in ms between regions (the issue's regions.toml).
LATENCY_MS = {("us-east", "eu-west"): 40.0, ("us-east", "ap-south"): 110.0,
              ("eu-west", "ap-south"): 65.0}  # fmt: skip
NEAREST = ("us-east", "eu-west")
#: Share of a region's reads that go to the documents it owns.
OWNED_SHARE = 0.9
Figures = dict[str, single.Figure]
#: Progress on stderr (which section and run, how long each took); results go to stdout.
progress = Progress("placement")


@dataclass(frozen=True)
class Placement:
    label: str
    settings: dict[str, Any]  # the [placement] section


FOLLOW = {"follow_reads": 5, "follow_half_life": 60.0, "follow_idle": 600.0}
#: (d): a home whose region reads it less than a third as often as a follower gains a copy,
#: while the follower copy has been in use for 20 s, moves there.
REHOME = {"rehome": True, "rehome_reads": 2.5, "rehome_after": 20.0}
CONFIGS = {
    "a": Placement("everywhere", {"replicas": 3, "followers": False}),
    "b": Placement("static", {"replicas": 1, "followers": False}),
    "c": Placement(
        "copies follow readers", {"replicas": 1, "followers": True, **FOLLOW, "rehome": False}
    ),
    "d": Placement("homes follow readers", {"replicas": 1, "followers": True, **FOLLOW, **REHOME}),
}
#: The placements in which copies follow readers (warm-up until they settle).
FOLLOWING = ("c", "d")


@dataclass(frozen=True)
class Sizes:
    documents: int  # documents of the three-region runs
    reads: int  # measured reads per region, paced at `rate` per second
    rate: float
    lanes: int  # keep-alive connections per region (reads in flight at most)
    round_seconds: float  # one warm-up round
    max_warmup: float  # seconds of warm-up at most
    balance_documents: int
    full: bool  # the targets are judged on the full sizes only


FULL = Sizes(300, 2000, 40.0, 16, 5.0, 180.0, 10_000, True)
QUICK = Sizes(60, 300, 40.0, 16, 3.0, 45.0, 2_000, False)


def latency(a: str, b: str) -> float:
    """One-way milliseconds between two regions (0 within one)."""
    return 0.0 if a == b else LATENCY_MS.get((a, b), LATENCY_MS.get((b, a), 0.0))


def toml_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


# -- the workload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Document i: home region i % 3; owner (the region whose reads go ``owned`` of the time
    to the documents it owns) the next region, for the first ``moved`` share of each home
    region's documents, else the home."""

    ids: tuple[str, ...]
    home: tuple[str, ...]
    owner: tuple[str, ...]
    owned: float = OWNED_SHARE

    @classmethod
    def make(
        cls, count: int, moved: float, prefix: str = "doc", owned: float = OWNED_SHARE
    ) -> Workload:
        per_region = count // len(REGIONS)
        home = [REGIONS[i % 3] for i in range(count)]
        owner = [REGIONS[(i + 1) % 3] if i // 3 < round(moved * per_region) else home[i]
                 for i in range(count)]  # fmt: skip
        ids = tuple(f"{prefix}-{i:05d}" for i in range(count))
        return cls(ids, tuple(home), tuple(owner), owned)

    def plan(self, region: str, count: int, rng: random.Random) -> list[int]:
        """``count`` document indexes read from ``region``: ``owned`` among those it owns."""
        owned = [i for i, owner in enumerate(self.owner) if owner == region]
        others = [i for i, owner in enumerate(self.owner) if owner != region]
        return [rng.choice(owned if rng.random() < self.owned else others) for _ in range(count)]

    def ceiling(self, plans: dict[str, list[int]]) -> float:
        """Share of the planned reads that a copy in the home region and one follower copy
        in the owner region serve in the caller's region."""
        near = [r in (self.home[i], self.owner[i]) for r, plan in plans.items() for i in plan]
        return sum(near) / len(near)


# -- a cluster -------------------------------------------------------------------------------------


class PlacementCluster:
    """``meridian serve`` processes on loopback (``layout``: nodes per region) with the
    given [placement]. Every node dials each node of another region through its own WAN
    proxy in front of that node (``--peer``), so peer links and forwarded requests both pay
    the emulated latency; nodes of one region dial each other directly."""

    def __init__(self, root: Path, layout: dict[str, int], placement: dict[str, Any]) -> None:
        self.root = root
        self.region_of = {f"{r}-{k}": r for r, n in layout.items() for k in range(1, n + 1)}
        self.ports = {node: free_port() for node in self.region_of}
        self.placement = placement
        #: The WAN emulator's process (None when no two nodes are in different regions).
        self.wan: subprocess.Popen[str] | None = None
        #: (from node, to node) -> the proxy address the first dials the second at.
        self.proxies: dict[tuple[str, str], tuple[str, int]] = {}
        self.nodes: dict[str, NodeProcess] = {}

    def first(self, region: str) -> str:
        return f"{region}-1"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        regions = sorted(set(self.region_of.values()), key=REGIONS.index)
        lines = ['[cluster]\nname = "bench"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n',
                 "[placement]"]  # fmt: skip
        lines += [f"{key} = {toml_value(value)}" for key, value in self.placement.items()]
        for region in regions:
            nodes = ", ".join(f'"{HOST}:{p}"' for n, p in self.ports.items()
                              if self.region_of[n] == region)  # fmt: skip
            lines.append(f"\n[regions.{region}]\nnodes = [{nodes}]")
        pairs = [(a, b) for a, b in LATENCY_MS if a in regions and b in regions]
        if pairs:
            lines.append("\n[latency]")
            lines += [f'"{a}:{b}" = {LATENCY_MS[a, b]:g}' for a, b in pairs]
        config = self.root / "regions.toml"
        config.write_text("\n".join(lines) + "\n")
        peers: dict[str, list[str]] = {node: [] for node in self.region_of}
        specs: list[str] = []
        for dialer, dialer_region in self.region_of.items():
            for target, region in self.region_of.items():
                if region == dialer_region:
                    continue
                address = (HOST, free_port())
                delay = latency(dialer_region, region)
                specs += ["--listen", f"{dialer_region}:{region}@{address[0]}:{address[1]}="
                          f"{HOST}:{self.ports[target]}:{delay:g}"]  # fmt: skip
                self.proxies[dialer, target] = address
                peers[dialer] += ["--peer", f"{target}={address[0]}:{address[1]}"]
        if specs:
            self.start_wan(specs)
        for node, region in self.region_of.items():
            self.nodes[node] = NodeProcess(
                self.root / node, region=region, listen=f"{HOST}:{self.ports[node]}",
                config=config, env={"MERIDIAN_CLUSTER_SECRET": SECRET}, extra=peers[node],
            ).start()  # fmt: skip

    def start_wan(self, specs: list[str]) -> None:
        """The WAN emulator's process, once it listens on every proxy address."""
        self.wan = subprocess.Popen(
            [sys.executable, "-m", "app.tools.wan_service", *specs],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        output = self.wan.stdout
        assert output is not None
        for _ in range(len(specs) // 2):
            line = output.readline()
            if not line.startswith("meridian-wan: ") or "->" not in line:
                raise RuntimeError(f"the WAN emulator did not start: {line}{output.read()}")
        # Its log goes on (a line per connection): read, so that the pipe never fills.
        threading.Thread(target=output.read, daemon=True).start()

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        if self.wan is not None:
            self.wan.terminate()
            try:
                self.wan.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.wan.kill()
                self.wan.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        """The nodes' processes, and the WAN emulator's."""
        pids = {n: p.process.pid for n, p in self.nodes.items() if p.process is not None}
        if self.wan is not None:
            pids["WAN emulator"] = self.wan.pid
        return pids

    async def wait_links_up(self) -> None:
        async def up() -> bool:
            try:  # a node prints "serving" a moment before it accepts connections
                views = [await single.get_json(p, "/v1/cluster") for p in self.ports.values()]
            except ConnectionRefusedError:
                return False
            return all(p["state"] == "up" for view in views for p in view["peers"])

        await wait_until(up, 60, "every peer link up", poll=0.1)


@contextlib.contextmanager
def running(
    root: Path, layout: dict[str, int], placement: dict[str, Any]
) -> Iterator[PlacementCluster]:
    cluster = PlacementCluster(root, layout, placement)
    try:
        cluster.start()
        yield cluster
    except Exception:
        for node_id, node in cluster.nodes.items():  # a node that died says why
            if node.process is not None and node.process.poll() is not None:
                progress.log(f"{node_id} exited: {''.join(node.output[-30:])}")
        raise
    finally:
        cluster.close()


# -- HTTP ------------------------------------------------------------------------------------------


class ReadConnection:
    """One keep-alive connection; GETs one at a time, answering (status, served by)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> ReadConnection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, request: bytes) -> tuple[int, str]:
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        await self._reader.readexactly(int(headers[b"content-length"]))
        return int(head[9:12]), headers.get(b"x-meridian-served-by", b"").decode()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def metrics_text(port: int) -> str:
    connection = await single.HttpConnection.open(port)
    try:
        status, body = await connection.send(single.get_request("/metrics"))
    finally:
        await connection.close()
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status}")
    return body.decode()


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples (every label set) in a text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            if sample.partition("{")[0] in (name, f"{name}_total"):
                total += float(value)
    return total


async def listing(port: int) -> list[str]:
    """The ids of the documents a node holds (``GET /v1/docs``, every page)."""
    ids: list[str] = []
    cursor = None
    while True:
        path = "/v1/docs?limit=1000" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
        page = await single.get_json(port, path)
        ids += [d["id"] for d in page["documents"]]
        if not (cursor := page["next_cursor"]):
            return ids


async def forwarded_total(cluster: PlacementCluster) -> float:
    texts = [await metrics_text(port) for port in cluster.ports.values()]
    return sum(metric(text, "meridian_forwarded_requests") for text in texts)


async def stored_bytes_after(cluster: PlacementCluster, since: float) -> int:
    """Sum over the nodes of ``meridian_storage_stored_bytes`` once every node has read it
    after ``since`` (unix time): the count is refreshed every 30 s."""
    texts: dict[str, str] = {}

    async def counted() -> bool:
        for node, port in cluster.ports.items():
            if node not in texts:
                text = await metrics_text(port)
                if metric(text, "meridian_storage_counted_timestamp_seconds") > since:
                    texts[node] = text
        return len(texts) == len(cluster.ports)

    await wait_until(counted, 60, "a storage count after the measured phase", poll=1.0)
    return int(sum(metric(text, "meridian_storage_stored_bytes") for text in texts.values()))


async def create(cluster: PlacementCluster, work: Workload) -> None:
    """Writes every document once at its home region's node (8 clients per node)."""

    def write(doc_id: str) -> bytes:
        text = f"{doc_id}: " + "lorem ipsum dolor sit amet, " * 20
        return patch_request(doc_id, [{"op": "insert_text", "path": ["body"], "index": 0,
                                       "text": text}])  # fmt: skip

    async def region(name: str) -> None:
        ids = [d for d, home in zip(work.ids, work.home, strict=True) if home == name]
        lanes = [[write(d) for d in ids[k::8]] for k in range(8)]
        load = await single.closed_loop(cluster.ports[cluster.first(name)], lanes, 600, None)
        if load.errors:
            raise RuntimeError(f"creating documents at {name}: {load.errors} writes failed")

    await asyncio.gather(*(region(name) for name in REGIONS))


async def wait_placed(cluster: PlacementCluster, work: Workload, copies: int) -> None:
    """Waits until every node has every document's placement record and the nodes hold
    ``copies`` copies of each document in all; RuntimeError saying what is missing if not
    within 120 s."""
    seen: dict[str, tuple[float, int]] = {}

    async def placed() -> bool:
        for node, port in cluster.ports.items():
            records = metric(await metrics_text(port), "meridian_placement_records")
            seen[node] = (records, len(await listing(port)))
        known = all(records >= len(work.ids) for records, _ in seen.values())
        return known and sum(held for _, held in seen.values()) == copies * len(work.ids)

    try:
        await wait_until(placed, 120, "every record everywhere and every copy", poll=0.2)
    except RuntimeError as exc:
        unknown = {}
        for node, port in cluster.ports.items():
            connection = await single.HttpConnection.open(port)
            try:
                paths = [single.get_request(f"/v1/docs/{d}/placement") for d in work.ids]
                statuses = [(await connection.send(path))[0] for path in paths]
            finally:
                await connection.close()
            unknown[node] = [
                d for d, status in zip(work.ids, statuses, strict=True) if status != 200
            ]
        raise RuntimeError(
            f"{exc}: (records, documents held) by node {seen}; {len(work.ids)} documents, "
            f"{copies} copies each expected; records unknown: {unknown}"
        ) from None


# -- reads -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    region: str  # the caller's
    doc: int
    latency: float  # from when it was due, or from when it was sent if sent on time
    service: float  # from when it was sent
    served_by: str
    status: int


async def read_phase(
    cluster: PlacementCluster, work: Workload, plans: dict[str, list[int]], sizes: Sizes
) -> list[Read]:
    """Each region's plan read at its node, open loop: read j due at start + j / rate, on
    connection j mod lanes. A read sent late because its connection was busy is timed from
    when it was due (no coordinated omission)."""
    requests = [single.get_request(f"/v1/docs/{doc_id}") for doc_id in work.ids]
    reads: list[Read] = []
    clock = time.perf_counter
    lanes = {r: [await ReadConnection.open(HOST, cluster.ports[cluster.first(r)])
                 for _ in range(min(sizes.lanes, len(plans[r])))] for r in plans}  # fmt: skip

    async def lane(region: str, index: int, connection: ReadConnection, start: float) -> None:
        plan, previous_done, step = plans[region], start, len(lanes[region])
        for j in range(index, len(plan), step):
            due = start + j / sizes.rate
            if (wait := due - clock()) > 0:
                await asyncio.sleep(wait)
            sent = clock()
            status, served_by = await connection.get(requests[plan[j]])
            done = clock()
            since = due if previous_done > due else sent
            reads.append(Read(region, plan[j], done - since, done - sent, served_by, status))
            previous_done = done

    start = clock() + 0.05
    try:
        await asyncio.gather(*(lane(r, k, c, start) for r in lanes for k, c in enumerate(lanes[r])))
    finally:
        for connection in (c for cs in lanes.values() for c in cs):
            await connection.close()
    return reads


def in_region(cluster: PlacementCluster, reads: Sequence[Read]) -> float:
    ok = [r for r in reads if r.status == 200]
    return sum(cluster.region_of.get(r.served_by) == r.region for r in ok) / max(len(ok), 1)


async def placement_records(cluster: PlacementCluster, work: Workload) -> list[dict[str, Any]]:
    """Each document's placement (``GET /v1/docs/{id}/placement``) as us-east-1 sees it."""
    port = cluster.ports[cluster.first(REGIONS[0])]
    connection = await single.HttpConnection.open(port)
    try:
        out = []
        for doc_id in work.ids:
            status, body = await connection.send(single.get_request(f"/v1/docs/{doc_id}/placement"))
            if status != 200:
                raise RuntimeError(f"GET /v1/docs/{doc_id}/placement: {status} {body[:200]!r}")
            out.append(json.loads(body))
        return out
    finally:
        await connection.close()


def follower_regions(cluster: PlacementCluster, records: list[dict[str, Any]]) -> list[set[str]]:
    """Each document's follower regions, from its placement."""
    return [{cluster.region_of[n] for n in record["followers"]} for record in records]


async def warm_up(
    cluster: PlacementCluster,
    work: Workload,
    sizes: Sizes,
    rng: random.Random,
    follows: bool,
    settle: float = 0.0,
) -> str:
    """Rounds of the workload until no copy changed (no follower copy gained, no home moved)
    for ``settle`` seconds and the last round did not raise the share of reads served in
    region beyond its noise (two standard errors); two rounds at least. Returns what it saw."""
    started, seen = time.perf_counter(), []
    count = int(sizes.rate * sizes.round_seconds)
    last_change = started
    while True:
        plans = {region: work.plan(region, count, rng) for region in REGIONS}
        share = in_region(cluster, await read_phase(cluster, work, plans, sizes))
        records = await placement_records(cluster, work) if follows else []
        followers = sum(map(len, follower_regions(cluster, records)))
        copies = await copies_held(cluster) if follows else {}
        seen.append((share, followers, copies))
        now = time.perf_counter()
        elapsed = now - started
        if len(seen) >= 2:
            before, changed = seen[-2][0], (followers, copies) != seen[-2][1:]
            last_change = now if changed else last_change
            noise = 2 * math.sqrt(max(before * (1 - before), 0.01) / (count * len(REGIONS)))
            if not changed and now - last_change >= settle and share <= before + noise:
                break
        if elapsed > sizes.max_warmup + settle:
            progress.log(f"  warm-up not stable after {elapsed:.0f} s; measuring anyway")
            break
    rounds = ", ".join(f"{s:.0%}/{f}/{sum(c.values())}" for s, f, c in seen)
    return (
        f"warm-up {elapsed:.0f} s, {len(seen)} rounds (in-region share/followers/copies: {rounds})"
    )


async def copies_held(cluster: PlacementCluster) -> dict[str, int]:
    """Documents each node holds (its listing)."""
    return {node: len(await listing(port)) for node, port in cluster.ports.items()}


async def direct_reads(cluster: PlacementCluster, work: Workload, count: int) -> list[float]:
    """Reads of eu-west's documents by a us-east client connected straight to the WAN proxy
    in front of eu-west-1 (no forwarding node), 4 connections each reading every 0.1 s:
    their time minus one emulated round trip."""
    a, b = (cluster.first(r) for r in NEAREST)
    host, port = cluster.proxies[a, b]
    ids = [d for d, home in zip(work.ids, work.home, strict=True) if home == NEAREST[1]]
    rtt = 2 * latency(*NEAREST) / 1000
    overheads: list[float] = []

    async def lane(first: int) -> None:
        connection = await ReadConnection.open(host, port)
        try:
            for k in range(first, count, 4):
                await asyncio.sleep(0.1)
                sent = time.perf_counter()
                path = f"/v1/docs/{ids[k % len(ids)]}"
                if (await connection.get(single.get_request(path)))[0] == 200:
                    overheads.append(time.perf_counter() - sent - rtt)
        finally:
            await connection.close()

    await asyncio.gather(*(lane(k) for k in range(4)))
    return overheads


# -- one placement, one run ------------------------------------------------------------------------


def declare(figures: Figures, configs: Sequence[str], balance: bool) -> None:
    """The table's rows, in a fixed order whatever order the runs take."""

    def add(key: str, name: str, unit: str, **kw: Any) -> None:
        figures[key] = single.Figure(name, unit, **kw)

    if set(FOLLOWING) & set(configs):
        add("ceiling", "workload: reads of docs homed or owned in the caller's region", "%",
            digits=1)  # fmt: skip
    for key in configs:
        label = f"({key}) {CONFIGS[key].label}"
        goal = {"target": ">= 95%", "check": lambda v: v >= 95} if key in FOLLOWING else {}
        add(f"{key}_local", f"{label}: reads served in the caller's region", "%", digits=1, **goal)
        add(f"{key}_p50", f"{label}: read latency p50", "ms", digits=2)
        add(f"{key}_p99", f"{label}: read latency p99", "ms", digits=1)
        add(f"{key}_copies", f"{label}: copies per document", "", digits=2)
        add(f"{key}_bytes", f"{label}: stored bytes, all nodes", "bytes")
    for key in FOLLOWING:
        if {"a", key} <= set(configs):
            add(f"{key}_p50_ratio", f"({key}) p50 / (a) p50, same run", "%", digits=1,
                target="<= 110%", check=lambda v: v <= 110)  # fmt: skip
            add(f"{key}_bytes_ratio", f"({key}) stored bytes / (a), same run", "%", digits=1,
                target="<= 50%", check=lambda v: v <= 50)  # fmt: skip
    if "b" in configs:
        pair = f"{NEAREST[0]}<->{NEAREST[1]}"
        add("fwd_p50", f"(b) forwarding overhead over the RTT, {pair}, p50", "ms", digits=2)
        add("fwd_p99", f"(b) forwarding overhead over the RTT, {pair}, p99", "ms", digits=2,
            target="<= 5 ms", check=lambda v: v <= 5)  # fmt: skip
        direct = "(b) reference: us-east client reading at eu-west-1 via the proxy, over the RTT"
        add("direct_p50", f"{direct}, p50", "ms", digits=2)
        add("direct_p99", f"{direct}, p99", "ms", digits=2)
        # Both include the emulator's own delay and the holder's read: their difference is
        # what the forwarding node adds.
        hop = "(b) the forwarding node's own cost: forwarded minus reference"
        add("hop_p50", f"{hop}, p50", "ms", digits=2)
        add("hop_p99", f"{hop}, p99", "ms", digits=2)
    if balance:
        add("balance", "balance: documents per node max/mean, 4 nodes", "", digits=3,
            target="<= 1.05", check=lambda v: v <= 1.05)  # fmt: skip


async def bench_config(
    figures: Figures, work_dir: Path, sizes: Sizes, run: int, key: str, work: Workload,
    plans: dict[str, list[int]],
) -> None:  # fmt: skip
    config = CONFIGS[key]
    layout = dict.fromkeys(REGIONS, 1)
    with running(work_dir / f"{key}-{run}", layout, config.settings) as cluster:
        await cluster.wait_links_up()
        with progress.step(f"  ({key}) creating {len(work.ids)} documents at their homes"):
            await create(cluster, work)
            await wait_placed(cluster, work, len(REGIONS) if key == "a" else 1)
        rng = random.Random(1000 * run + ord(key))
        with progress.step(f"  ({key}) warm-up"):
            # (d): a home moves rehome_after seconds after its follower copy appeared, at
            # the next hand-off pass (every 5 s), and its old copy goes once covered.
            settle = REHOME["rehome_after"] + 10 if key == "d" else 0.0
            warm = await warm_up(cluster, work, sizes, rng, follows=key in FOLLOWING, settle=settle)
        pids = cluster.pids()
        cpu = {n: single._cpu_seconds(f"/proc/{p}/stat") for n, p in pids.items()}
        generator = time.process_time()
        other, forwarded_before = OtherLoad(list(pids.values())), await forwarded_total(cluster)
        with progress.step(f"  ({key}) measuring {sizes.reads} reads per region"):
            started = time.perf_counter()
            reads = await read_phase(cluster, work, plans, sizes)
            elapsed = time.perf_counter() - started
            ended = time.time()
        load = other.share()
        used = {n: (single._cpu_seconds(f"/proc/{p}/stat") - cpu[n]) / elapsed
                for n, p in pids.items()}  # fmt: skip
        generator = (time.process_time() - generator) / elapsed
        forwarded = await forwarded_total(cluster) - forwarded_before
        direct = await direct_reads(cluster, work, 200 if sizes.full else 40) if key == "b" else []
        with progress.step(f"  ({key}) counting copies and stored bytes"):
            held = await copies_held(cluster)
            stored = await stored_bytes_after(cluster, ended)
        records = await placement_records(cluster, work) if key in FOLLOWING else []
        followers = follower_regions(cluster, records)
        homes = [record["home"] for record in records]
    ok = [r for r in reads if r.status == 200]
    errors = Counter(r.status for r in reads if r.status != 200)
    local = in_region(cluster, reads)
    remote = sum(cluster.region_of.get(r.served_by) != r.region for r in ok)
    percentile = single.percentile
    latencies = [r.latency for r in ok]
    figures[f"{key}_local"].values.append(100 * local)
    figures[f"{key}_p50"].values.append(1000 * percentile(latencies, 50))
    figures[f"{key}_p99"].values.append(1000 * percentile(latencies, 99))
    figures[f"{key}_copies"].values.append(sum(held.values()) / len(work.ids))
    figures[f"{key}_bytes"].values.append(stored)
    cpu_text = ", ".join(f"{n} {v:.0%}" for n, v in used.items())
    split = []
    for where, near in (("in region", True), ("in another", False)):
        times = [r.latency for r in ok if (cluster.region_of.get(r.served_by) == r.region) == near]
        if times:
            p50, p99 = percentile(times, 50) * 1e3, percentile(times, 99) * 1e3
            split.append(f"served {where}: p50 {p50:.2f} ms p99 {p99:.1f} ms")
    detail = (
        f"run {run + 1}: {len(reads)} reads in {elapsed:.1f} s, {len(ok)} ok"
        f"{f' (errors: {dict(errors)})' if errors else ''}; {', '.join(split)}; "
        f"served in another region {remote}, forwarded by the nodes "
        f"(meridian_forwarded_requests) {forwarded:.0f}; "
        f"copies per node {held}; {warm}; CPU (of a core) {cpu_text}, generator "
        f"{generator:.0%}, {load}"
    )
    if key == "b":
        by_pair: dict[tuple[str, str], list[float]] = {}
        for r in ok:
            served = cluster.region_of.get(r.served_by, r.region)
            if served != r.region:
                rtt = 2 * latency(r.region, served) / 1000
                by_pair.setdefault((r.region, served), []).append(1000 * (r.service - rtt))
        nearest = by_pair.get(NEAREST, []) + by_pair.get(NEAREST[::-1], [])
        figures["fwd_p50"].values.append(percentile(nearest, 50))
        figures["fwd_p99"].values.append(percentile(nearest, 99))
        figures["direct_p50"].values.append(1000 * percentile(direct, 50))
        figures["direct_p99"].values.append(1000 * percentile(direct, 99))
        for q in (50, 99):
            hop = percentile(nearest, q) - 1000 * percentile(direct, q)
            figures[f"hop_p{q}"].values.append(hop)
        pairs = "; ".join(
            f"{a}->{b} ({len(v)}): p50 {percentile(v, 50):.2f} ms p99 {percentile(v, 99):.2f} ms"
            for (a, b), v in sorted(by_pair.items())
        )
        detail += f"; forwarding overhead by caller->holder region: {pairs}"
    if key in FOLLOWING:
        owned = [i for i, (h, o) in enumerate(zip(work.home, work.owner, strict=True)) if h != o]
        gained = sum(work.owner[i] in followers[i] for i in owned)
        extra = sum(len(f - {work.owner[i]}) for i, f in enumerate(followers))
        detail += (
            f"; follower copies at the end: {gained} of {len(owned)} documents followed in "
            f"their owner region, {extra} follower copies elsewhere"
        )
    if key == "d":
        moved = sum(homes[i] == work.owner[i] != work.home[i] for i in range(len(work.ids)))
        detail += f"; homes moved to their owner region: {moved} of {len(work.ids)} documents"
    figures[f"{key}_local"].details.append(detail)
    progress.log(
        f"  ({key}) run {run + 1}: in region {local:.1%}, p50 "
        f"{figures[f'{key}_p50'].values[-1]:.2f} ms, p99 {figures[f'{key}_p99'].values[-1]:.1f}"
        f" ms, copies/doc {figures[f'{key}_copies'].values[-1]:.2f}, stored {stored:,} B"
    )


# -- balance ---------------------------------------------------------------------------------------


async def bench_balance(figures: Figures, work_dir: Path, sizes: Sizes, run: int) -> None:
    """One region of 4 nodes (``nodes_per_region = 1``): documents created through all of
    them; documents per node from each node's listing, max/mean."""
    settings = {"replicas": 1, "nodes_per_region": 1, "followers": False}
    ids = [f"bal{run}-{i:05d}" for i in range(sizes.balance_documents)]
    with running(work_dir / f"balance-{run}", {"us-east": 4}, settings) as cluster:
        await cluster.wait_links_up()
        ports = list(cluster.ports.values())
        ops = [{"op": "append", "path": ["items"], "values": [1]}]
        with progress.step(f"  creating {len(ids):,} documents through the 4 nodes"):
            started = time.perf_counter()
            lanes = [[patch_request(d, ops) for d in ids[k::16]] for k in range(16)]
            loads = await asyncio.gather(
                *(single.closed_loop(port, lanes[k::4], 3600, None) for k, port in enumerate(ports))
            )
            rate = len(ids) / (time.perf_counter() - started)
        if errors := sum(load.errors for load in loads):
            raise RuntimeError(f"balance: {errors} writes failed")
        held = {node: await listing(port) for node, port in cluster.ports.items()}
    counts = {node: len(docs) for node, docs in held.items()}
    mean = sum(counts.values()) / len(counts)
    figures["balance"].values.append(max(counts.values()) / mean)
    members = [Member(node, "us-east") for node in cluster.region_of]
    expected = Counter(rendezvous(d, members, 1)[0].node for d in ids)
    agree = "agrees" if expected == Counter(counts) else f"DIFFERS: {dict(expected)}"
    detail = (
        f"run {run + 1}: {len(ids):,} documents created at {rate:,.0f}/s; per node {counts} "
        f"(sum {sum(counts.values()):,}); app.cluster.placement.rendezvous on the same ids "
        f"{agree}"
    )
    figures["balance"].details.append(detail)
    progress.log(f"  balance, {detail}")


# -- main ------------------------------------------------------------------------------------------


async def run_all(
    configs: list[str],
    balance: bool,
    sizes: Sizes,
    runs: int,
    moved: float,
    work_dir: Path,
    owned: float = OWNED_SHARE,
) -> Figures:
    figures: Figures = {}
    declare(figures, configs, balance)
    work = Workload.make(sizes.documents, moved, owned=owned)
    if configs:
        progress.section(f"placements {','.join(configs)}", runs)
        for run in progress.runs("placements", runs):
            rng = random.Random(run)
            plans = {region: work.plan(region, sizes.reads, rng) for region in REGIONS}
            if "ceiling" in figures:
                figures["ceiling"].values.append(100 * work.ceiling(plans))
            # The order alternates so that drift over a run favours no placement.
            for key in configs if run % 2 == 0 else configs[::-1]:
                await bench_config(figures, work_dir, sizes, run, key, work, plans)
            for key in FOLLOWING:
                if f"{key}_p50_ratio" in figures:
                    a, x = figures["a_p50"].values[-1], figures[f"{key}_p50"].values[-1]
                    figures[f"{key}_p50_ratio"].values.append(100 * x / a)
                    a, x = figures["a_bytes"].values[-1], figures[f"{key}_bytes"].values[-1]
                    figures[f"{key}_bytes_ratio"].values.append(100 * x / a)
    if balance:
        progress.section("balance", runs)
        for run in progress.runs("balance", runs):
            await bench_balance(figures, work_dir, sizes, run)
    return figures


def shell(*command: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO).stdout.strip()
    return "unknown"


def markdown(figures: Figures, full: bool) -> str:
    lines = ["| measurement | median | runs | target | result |", "|---|---:|---|---|---|"]
    for f in figures.values():
        verdict = "n/a (quick sizes)" if f.check and not full else f.verdict(True)
        runs = ", ".join(map(f.fmt, f.values))
        lines.append(f"| {f.name} | {f.fmt(f.median)} {f.unit} | {runs} | {f.target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run by default")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--configs", default="a,b,c,d", help="placements to run: subset of a,b,c,d")
    parser.add_argument("--no-balance", action="store_true", help="skip the balance figure")
    parser.add_argument(
        "--moved", type=float, default=1.0,
        help="share of documents mostly read outside their home region (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--owned", type=float, default=OWNED_SHARE,
        help="share of a region's reads on the documents it owns (default 0.9)",
    )  # fmt: skip
    parser.add_argument("--data-root", default=None, help="where data directories go")
    parser.add_argument("--markdown", default=None, help="also write the table there")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown placements: {', '.join(sorted(unknown))}")
    if not 0 < args.owned <= 1:
        parser.error("--owned is a share between 0 and 1")
    if not 0 <= args.moved <= 1:
        parser.error("--moved is a share between 0 and 1")
    sizes = QUICK if args.quick else FULL
    work_dir = Path(tempfile.mkdtemp(prefix="meridian-bench-placement-", dir=args.data_root))
    machine = single.machine_info(work_dir)
    dirty = len(shell("git", "status", "--porcelain").splitlines())
    machine["commit"] = f"{shell('git', 'rev-parse', '--short', 'HEAD')} ({dirty} paths changed)"
    machine["uptime at start"] = shell("uptime")
    machine["WAN emulator"] = "python -m app.tools.wan_service, a process of its own"
    started = time.perf_counter()
    try:
        figures = asyncio.run(
            run_all(configs, not args.no_balance, sizes, runs, args.moved, work_dir, args.owned)
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    machine["uptime at end"] = shell("uptime")
    follow = ", ".join(f"{k} = {toml_value(v)}" for k, v in FOLLOW.items())
    rehome = ", ".join(f"{k} = {toml_value(v)}" for k, v in REHOME.items())
    lines = ["Machine:", *(f"  {key}: {value}" for key, value in machine.items())]
    lines += [
        "  note: the nodes, the WAN proxies and the load generator share the machine's cores",
        "",
        f"Results (median of {runs} run(s){', QUICK sizes' if args.quick else ''}; "
        f"{sizes.documents} documents, {sizes.reads} reads per region at {sizes.rate:g}/s, "
        f"{args.owned:.0%} on the region's own, {args.moved:.0%} of documents owned outside "
        f"their home; (c): {follow}; (d): the same and {rehome}; "
        f"took {time.perf_counter() - started:.0f}s):",
        "",
        table(figures, sizes.full),
        "",
        "Details:",
    ]
    lines += [f"  {f.name}: {d}" for f in figures.values() for d in f.details]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text(markdown(figures, sizes.full) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
