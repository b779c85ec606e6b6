"""Elastic membership benchmark of Meridian: a node joins a running cluster under a steady
write load, takes its rendezvous share of the documents, and a node is then killed.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_membership.py                      # 10,000 documents, 3 runs
    .venv/bin/python bench/bench_membership.py --docs 500 --runs 1  # quick check (~30 s)

Every node is a real ``python -m app serve`` process on loopback with a generated
``regions.toml``: regions us-east and eu-west, 20 ms one way (``[latency]``), two listed nodes
each (us-east-1, us-east-2, eu-west-1, eu-west-2), ``[placement]`` replicas = 1,
nodes_per_region = 1, followers = false, rehome = false (each document lives on one node of
its home region), no ``[replication]`` section (every replication setting at its default).
Every node reaches each node of the other region through its own WAN emulator proxy
(app/tools/wan.py, one per ordered pair of nodes, 20 ms, in a thread of this process), given
with ``--peer``: peer links and forwarded requests both cross the emulated WAN. The joiner is
part of that: it is started with ``--join <us-east-1>`` and a node id and port chosen before
the cluster starts (``--node-id us-east-j<hex>``, ``--listen 127.0.0.1:<port>``) so that the
eu-west nodes can be given the proxy in front of it; apart from those it joins exactly as
``meridian serve --join`` does. Each run is a fresh cluster in a fresh temporary directory.

One run:

1. Load: ``--docs`` documents (``m<run>-<i>``), each created by one ``PATCH`` (an append of
   ``"x"`` to ``items``), even ones at us-east-1 and odd ones at eu-west-1 (their home
   regions), 32 at a time. Each node's ``GET /v1/docs`` listing is then checked against
   ``app.cluster.placement.holders`` for the four nodes (details: "agrees").
2. Baseline: a paced, open-loop writer: ``--rate`` appends per second (a unique value each),
   each to a random document through a random one of the four nodes, for ``--seconds``.
   Latency is from when a write was due to its answer (no coordinated omission). Writes go
   on keep-alive connections of their own (hand-written HTTP/1.1, at most 256 in flight);
   nothing is retried, a write not answered 200 within 10 s is not acknowledged.
3. Join, with the same writer running: a fifth node starts in us-east with ``--join``. From
   the process start: the "serving" line; every node (the five) listing it in
   ``GET /v1/cluster/members``; every node listing it ``active``; its share taken: its
   listing equals exactly the us-east documents whose rendezvous top node among the three
   us-east nodes is the joiner (``holders`` over the five members), and neither us-east-1 nor
   us-east-2 lists any of them. Members are polled every 0.1 s per node, listings every
   0.25 s. The writer stops when the share is taken; its writes since the join started are
   the "during the move" sample. Documents moved: the joiner's listing (its share is the
   optimum: HRW moves only documents whose top node becomes the joiner); extra moves:
   documents a node other than the joiner lists after the join but did not before (after
   waiting until no node reports a copy to hand off, a pull pending or a hint, in
   ``/v1/cluster`` ``placement``); copies made and dropped on the way: the nodes'
   ``placement.handoff.handed_off`` counters summed over the join, minus the documents
   moved (only the old holders should hand off, once per document of the share). Bytes
   moved: the peer payload (``/v1/cluster`` ``peers[].bytes_sent``, WebSocket frames) every
   node sent during the join (each byte counted once; Σ sent + received, the two ends of
   each byte, is twice that), with the baseline's background rate (heartbeats, anti-entropy)
   given in the details. Then every document written is read back through a random node
   (``GET /v1/docs/{id}``): each acknowledged value must be in ``content.items`` exactly once,
   served by the holder placement names (``X-Meridian-Served-By``).
4. Balance: documents per us-east node after the join (listings), max/mean.
5. Failover: SIGKILL us-east-2 (a listed node, not the joiner). Through each surviving node
   (us-east-1, the joiner, eu-west-1, eu-west-2), appends to a document us-east-2 held, one
   after the other (5 s timeout each) until one is answered 200; the figure is the slowest
   survivor's time from the kill. Each acknowledged one is read back through the node that
   took it.

Each figure is the median of ``--runs`` runs. The WAN proxies and the load generator run in
this process, the five nodes in theirs: all share the machine's cores, so other load on the
machine (printed with the machine) shows in every figure. Node output lines at WARNING or
above are counted in the details.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_single_node as single  # noqa: E402  (this directory)
from bench_replication import table  # noqa: E402
from progress import Progress  # noqa: E402  (this directory)

from app.cluster.placement import Member, PlacementRecord, Stamp, Topology, holders  # noqa: E402
from tests.cluster import ThreadedWan, free_port  # noqa: E402
from tests.support import NodeProcess  # noqa: E402

HOST = single.HOST
SECRET = "bench-cluster-secret"
LAYOUT = {"us-east": 2, "eu-west": 2}
LATENCY_MS = 20.0
PLACEMENT = {"replicas": 1, "nodes_per_region": 1, "followers": False, "rehome": False}
#: The joiner's region and seed, and the listed node killed in the failover step.
JOIN_REGION, SEED, VICTIM = "us-east", "us-east-1", "us-east-2"
#: Where the documents are created (their home regions), by parity of their number.
WRITERS = ("us-east-1", "eu-west-1")
INITIAL = "x"
LOAD_CONCURRENCY = 32
WRITE_TIMEOUT = 10.0
#: Foreground writes in flight at most (each on its own connection).
MAX_IN_FLIGHT = 256
#: Seconds an idle keep-alive connection is reused for (the node closes them after 5 s).
IDLE_SECONDS = 2.0
FAILOVER_ATTEMPT_TIMEOUT = 5.0
MEMBER_POLL, LISTING_POLL = 0.1, 0.25
Figures = dict[str, single.Figure]
progress = Progress("membership")


def toml_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


# -- the cluster -----------------------------------------------------------------------------------


class MembershipCluster:
    """The four listed nodes and, later, the joiner. Each node reaches every node of the other
    region through a WAN proxy in front of that node (``--peer``); nodes of one region talk
    directly. The joiner's id and port are chosen here, so its proxies exist from the start."""

    def __init__(self, root: Path, joiner_id: str) -> None:
        self.root = root
        self.region_of = {f"{r}-{k}": r for r, n in LAYOUT.items() for k in range(1, n + 1)}
        self.listed = list(self.region_of)
        self.joiner_id = joiner_id
        self.region_of[joiner_id] = JOIN_REGION
        self.ports = {node: free_port() for node in self.region_of}
        self.wan = ThreadedWan()
        self.peers: dict[str, list[str]] = {node: [] for node in self.region_of}
        self.nodes: dict[str, NodeProcess] = {}
        self.config = root / "regions.toml"

    def url(self, node: str) -> str:
        return f"http://{HOST}:{self.ports[node]}"

    def _write_config(self) -> None:
        lines = ['[cluster]\nname = "bench"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n',
                 "[placement]"]  # fmt: skip
        lines += [f"{key} = {toml_value(value)}" for key, value in PLACEMENT.items()]
        for region in LAYOUT:
            nodes = ", ".join(f'"{HOST}:{self.ports[n]}"' for n in self.listed
                              if self.region_of[n] == region)  # fmt: skip
            lines.append(f"\n[regions.{region}]\nnodes = [{nodes}]")
        a, b = LAYOUT
        lines.append(f'\n[latency]\n"{a}:{b}" = {LATENCY_MS:g}')
        self.config.write_text("\n".join(lines) + "\n")

    async def start(self) -> None:
        self.root.mkdir(parents=True)
        self._write_config()
        for dialer, dialer_region in self.region_of.items():
            for target, region in self.region_of.items():
                if region == dialer_region:
                    continue
                link = self.wan.wan.add_link(
                    dialer_region, region, (HOST, self.ports[target]), LATENCY_MS,
                    name=f"{dialer}->{target}",
                )  # fmt: skip
                host, port = self.wan.call(link).address
                self.peers[dialer] += ["--peer", f"{target}={host}:{port}"]
        for node in self.listed:
            self.nodes[node] = self._process(node, [])
        await asyncio.gather(*(asyncio.to_thread(self.nodes[n].start) for n in self.listed))

    def _process(self, node: str, extra: list[str]) -> NodeProcess:
        return NodeProcess(
            self.root / node, region=self.region_of[node], listen=f"{HOST}:{self.ports[node]}",
            config=self.config, env={"MERIDIAN_CLUSTER_SECRET": SECRET},
            extra=[*self.peers[node], *extra],
        )  # fmt: skip

    def joiner(self) -> NodeProcess:
        """The joiner's process, not started: ``--join`` through us-east-1."""
        extra = ["--join", f"{HOST}:{self.ports[SEED]}", "--node-id", self.joiner_id]
        self.nodes[self.joiner_id] = self._process(self.joiner_id, extra)
        return self.nodes[self.joiner_id]

    def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.close()
        self.wan.close()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(root: Path, joiner_id: str) -> Iterator[MembershipCluster]:
    cluster = MembershipCluster(root, joiner_id)
    try:
        yield cluster
    except BaseException:
        for node_id, node in cluster.nodes.items():  # a node that died says why
            if node.process is not None and node.process.poll() is not None:
                progress.log(f"{node_id} exited: {''.join(node.output[-30:])}")
        raise
    finally:
        cluster.close()


# -- HTTP helpers ----------------------------------------------------------------------------------


def client(timeout: float = 30.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


def append_body(value: str) -> dict[str, Any]:
    return {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}


def append_request(doc_id: str, value: str) -> bytes:
    body = json.dumps(append_body(value), separators=(",", ":")).encode()
    head = (
        f"PATCH /v1/docs/{doc_id} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class Connection:
    """One keep-alive HTTP/1.1 connection (no pipelining): pre-built request bytes in,
    (status, headers with lower-case names, body) out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True
        self.idle_since = 0.0

    async def send(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        self.reusable = headers.get(b"connection", b"").lower() != b"close"
        return int(head[9:12]), headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class Pool:
    """Keep-alive connections to the nodes, by port: a request takes an idle one or opens a
    new one. Cheaper than an httpx client under a backlog (its pool re-scans every waiting
    request whenever one finishes). A connection idle for :data:`IDLE_SECONDS` is closed
    rather than reused: the node closes idle ones after 5 s, and a write sent into a
    closing connection is neither known applied nor safe to retry. Nothing is retried."""

    def __init__(self) -> None:
        self.idle: dict[int, list[Connection]] = {}

    async def request(
        self, port: int, request: bytes, timeout: float
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        idle = self.idle.setdefault(port, [])
        connection = None
        while idle and connection is None:
            candidate = idle.pop()
            if time.perf_counter() - candidate.idle_since < IDLE_SECONDS:
                connection = candidate
            else:
                await candidate.close()
        try:
            async with asyncio.timeout(timeout):
                if connection is None:
                    connection = Connection(*await asyncio.open_connection(HOST, port))
                answer = await connection.send(request)
        except BaseException:
            if connection is not None:
                await connection.close()
            raise
        if connection.reusable:
            connection.idle_since = time.perf_counter()
            idle.append(connection)
        else:
            await connection.close()
        return answer

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for connections in self.idle.values():
            for connection in connections:
                await connection.close()
        self.idle.clear()


async def listing(http: httpx.AsyncClient, url: str) -> set[str]:
    """The ids of the live documents a node holds (``GET /v1/docs``, every page)."""
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        answer = await http.get(f"{url}/v1/docs", params=params)
        answer.raise_for_status()
        page = answer.json()
        ids |= {d["id"] for d in page["documents"]}
        if not (cursor := page["next_cursor"]):
            return ids


async def members(http: httpx.AsyncClient, url: str) -> dict[str, dict[str, Any]]:
    answer = await http.get(f"{url}/v1/cluster/members")
    answer.raise_for_status()
    return {entry["node"]: entry for entry in answer.json()["members"]}


async def view(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    answer = await http.get(f"{url}/v1/cluster")
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


async def poll(
    condition: Callable[[], Awaitable[bool]], deadline: float, interval: float
) -> float | None:
    """Checks ``condition`` every ``interval`` seconds until it holds (returns the
    ``perf_counter`` time it did) or ``deadline`` (a ``perf_counter`` time) passes (None). A
    node that does not answer yet counts as not holding it."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if await condition():
                return time.perf_counter()
        if time.perf_counter() > deadline:
            return None
        await asyncio.sleep(interval)


async def wait_links_up(http: httpx.AsyncClient, urls: Sequence[str], timeout: float) -> None:
    async def up() -> bool:
        views = [await view(http, url) for url in urls]
        return all(p["state"] == "up" for v in views for p in v["peers"])

    if await poll(up, time.perf_counter() + timeout, 0.1) is None:
        raise RuntimeError(f"timed out after {timeout:g} s waiting for every peer link up")


async def peer_bytes(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> dict[str, tuple[int, int, int]]:
    """Per node: (bytes sent to, bytes received from all its peers (payload frames), bytes of
    the anti-entropy rounds it counted on its links)."""
    out = {}
    for node, url in urls.items():
        peers = (await view(http, url))["peers"]
        out[node] = (
            sum(p["bytes_sent"] for p in peers),
            sum(p["bytes_received"] for p in peers),
            sum(p["anti_entropy"]["bytes_total"] for p in peers),
        )
    return out


async def handoff_counts(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> dict[str, tuple[int, int]]:
    """Per node: (copies handed off and dropped, documents pulled) since it started."""
    out = {}
    for node, url in urls.items():
        handoff = (await view(http, url)).get("placement", {}).get("handoff") or {}
        out[node] = (handoff.get("handed_off", 0), handoff.get("pulled", 0))
    return out


async def handoff_idle(http: httpx.AsyncClient, urls: dict[str, str]) -> bool:
    """Whether no node has a copy to hand off, a pull pending or a hint."""
    for url in urls.values():
        placement = (await view(http, url)).get("placement", {})
        handoff = placement.get("handoff") or {}
        if placement.get("hints") or handoff.get("pending") or handoff.get("pulls_pending"):
            return False
    return True


# -- placement -------------------------------------------------------------------------------------


def topology(nodes: Sequence[str], region_of: dict[str, str]) -> Topology:
    return Topology(
        regions=tuple(LAYOUT),
        latency_ms={(a, b): LATENCY_MS for a in LAYOUT for b in LAYOUT if a < b},
        replicas=PLACEMENT["replicas"],
        nodes_per_region=PLACEMENT["nodes_per_region"],
        members=tuple(Member(n, region_of[n]) for n in nodes),
    )


def holder_of(doc_id: str, home: str, topo: Topology) -> str:
    (node,) = holders(PlacementRecord.new(doc_id, home, Stamp(1, "us-east-1")), topo)
    return node


# -- the paced writer ------------------------------------------------------------------------------


@dataclass
class Write:
    phase: str
    doc: str
    value: str
    node: str
    due: float = 0.0  # perf_counter time
    latency: float = math.nan
    status: int = 0  # 0: no answer (the error says why)
    error: str = ""


@dataclass
class PacedWriter:
    """Open loop: write j of a phase is due ``j / rate`` seconds after the phase started and
    is sent then on a connection of its own (an idle keep-alive one, else a new one), so a
    slow answer delays no other write; at most :data:`MAX_IN_FLIGHT` are in flight (a write
    that waits for one is still timed from when it was due)."""

    pool: Pool
    ports: dict[str, int]  # node -> port, the nodes written through
    ids: Sequence[str]
    rate: float
    rng: random.Random
    writes: list[Write] = field(default_factory=list)

    async def run(self, phase: str, stop: asyncio.Event, count: int | None = None) -> list[Write]:
        """Writes until ``stop`` is set or ``count`` writes were sent; returns them once all
        are answered (or timed out)."""
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        mine: list[Write] = []
        clock = time.perf_counter
        start = clock() + 0.02
        nodes = sorted(self.ports)
        j = 0
        while count is None or j < count:
            due = start + j / self.rate
            delay = due - clock()
            if delay > 0:  # pacing: the next write is not due yet
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
            write = Write(phase, self.rng.choice(self.ids), f"{phase}-{j}", self.rng.choice(nodes))
            mine.append(write)
            task = asyncio.create_task(self._send(write, due, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            j += 1
        await asyncio.gather(*tasks)
        self.writes += mine
        return mine

    async def _send(self, write: Write, due: float, slots: asyncio.Semaphore) -> None:
        async with slots:
            request = append_request(write.doc, write.value)
            try:
                status, _, body = await self.pool.request(
                    self.ports[write.node], request, WRITE_TIMEOUT
                )
                write.status = status
                if status != 200:
                    write.error = body[:200].decode(errors="replace")
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                write.error = f"{type(exc).__name__}: {exc}"[:200]
        write.due = due
        write.latency = time.perf_counter() - due


def latency_ms(writes: Sequence[Write], q: float) -> float:
    return 1000 * single.percentile([w.latency for w in writes if w.status == 200], q)


# -- one run ---------------------------------------------------------------------------------------


def declare(figures: Figures) -> None:
    figure = single.Figure

    def add(key: str, name: str, unit: str, **kw: Any) -> None:
        figures[key] = figure(name, unit, **kw)

    add("serving", "join: process start -> 'serving'", "s", digits=2)
    add("listed", "join: every node lists the joiner (membership converged)", "s", digits=2)
    add("active", "join: every node lists it active", "s", digits=2)
    add("taken", "join: share taken (joiner holds exactly it, old holders dropped it)", "s",
        digits=2)  # fmt: skip
    add("moved", "documents moved (the joiner's share)", "docs")
    add("optimum", "optimum (us-east docs whose HRW top node is the joiner)", "docs")
    add("moved_ratio", "documents moved / optimum", "x", digits=3, target="= 1.000",
        check=lambda v: abs(v - 1) < 1e-9)  # fmt: skip
    add("extra", "extra moves (docs added on a node other than the joiner)", "docs",
        target="0", check=lambda v: v == 0)  # fmt: skip
    add("transient", "copies made and dropped beyond the share (Σ handed off - moved)", "docs",
        target="0", check=lambda v: v == 0)  # fmt: skip
    add("bytes", "bytes moved (peer payload sent, all nodes, during the join)", "KB", digits=1)
    add("bytes_per_doc", "bytes moved per document moved", "B", digits=0)
    add("base_p50", "foreground write p50, baseline", "ms", digits=2)
    add("base_p99", "foreground write p99, baseline", "ms", digits=2)
    add("move_p50", "foreground write p50, during the join", "ms", digits=2)
    add("move_p99", "foreground write p99, during the join", "ms", digits=2)
    add("p99_ratio", "foreground p99 during the join / baseline", "x", digits=2,
        target="<= 1.10", check=lambda v: v <= 1.10)  # fmt: skip
    add("unacked", "foreground writes not acknowledged (baseline + join)", "writes",
        target="0", check=lambda v: v == 0)  # fmt: skip
    add("lost", "acknowledged values not present exactly once after", "values",
        target="0", check=lambda v: v == 0)  # fmt: skip
    add("balance", "us-east documents per node after the join, max/mean", "x", digits=3,
        target="<= 1.05", check=lambda v: v <= 1.05)  # fmt: skip
    add("failover", "failover: kill -> first 200 write via each survivor (slowest)", "s",
        digits=2, target="<= 3 s", check=lambda v: v <= 3.0)  # fmt: skip


class CpuUse:
    """CPU used from now on by each node (the joiner from its start), by this process (the
    load generator, the pollers and the WAN proxies) and by the rest of the machine."""

    def __init__(self, cluster: MembershipCluster) -> None:
        self.cluster = cluster
        self.started = time.perf_counter()
        self.nodes = {n: self._node(n) for n in cluster.nodes}
        self.generator = time.process_time()
        self.machine = single._machine_busy_seconds()

    def _node(self, node: str) -> float:
        process = self.cluster.nodes[node].process
        if process is None:
            return 0.0
        return single._cpu_seconds(f"/proc/{process.pid}/stat")

    def report(self) -> str:
        seconds = time.perf_counter() - self.started
        used = {n: self._node(n) - self.nodes.get(n, 0.0) for n in self.cluster.nodes}
        generator = time.process_time() - self.generator
        rest = single._machine_busy_seconds() - self.machine - generator - sum(used.values())
        parts = [f"{n} {v / seconds:.0%}" for n, v in used.items()]
        parts += [f"generator and proxies {generator / seconds:.0%}",
                  f"rest of machine {max(rest, 0) / seconds:.0%}"]  # fmt: skip
        return ", ".join(parts)


def node_trouble(cluster: MembershipCluster, marks: dict[str, int]) -> tuple[str, str]:
    """Node output lines at WARNING or above (and tracebacks): before ``marks`` (line counts
    taken at the kill) and after."""

    def summary(pick: Callable[[str, list[str]], list[str]]) -> str:
        parts = []
        for node, process in cluster.nodes.items():
            lines = [line.strip() for line in pick(node, process.output)
                     if any(w in line for w in (" WARNING ", " ERROR ", " CRITICAL ",
                                                "Traceback"))]  # fmt: skip
            if lines:
                kinds = Counter(" ".join(line.split()[2:])[:140] for line in lines)
                top = "; ".join(f"{n}x {text}" for text, n in kinds.most_common(4))
                parts.append(f"{node}: {len(lines)} line(s): {top}")
        return " | ".join(parts) or "none"

    before = summary(lambda node, out: out[: marks.get(node, len(out))])
    after = summary(lambda node, out: out[marks.get(node, len(out)) :])
    return before, after


async def load(
    pool: Pool, cluster: MembershipCluster, ids: Sequence[str]
) -> tuple[float, list[str]]:
    """Creates every document at its home region's writer node, 32 at a time; returns the
    rate and the failures."""
    queue = iter(enumerate(ids))
    failures: list[str] = []

    async def worker() -> None:
        for i, doc_id in queue:
            port = cluster.ports[WRITERS[i % 2]]
            try:
                status, _, body = await pool.request(
                    port, append_request(doc_id, INITIAL), WRITE_TIMEOUT
                )
                if status != 200:
                    failures.append(f"{doc_id}: {status} {body[:120]!r}")
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failures.append(f"{doc_id}: {type(exc).__name__}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
    return len(ids) / (time.perf_counter() - started), failures


async def read_back(
    pool: Pool,
    ports: dict[str, int],
    writes: Sequence[Write],
    expected_holder: dict[str, str],
    rng: random.Random,
) -> tuple[int, int, int, int, list[str]]:
    """Reads every written document through a random node; returns (acknowledged values not
    present exactly once, values present more than once, documents served by another node
    than placement names, documents whose initial value is not there once, examples)."""
    by_doc: dict[str, list[Write]] = {}
    for write in writes:
        by_doc.setdefault(write.doc, []).append(write)
    queue = iter(sorted(by_doc))
    lost = duplicated = wrong_holder = initial = 0
    examples: list[str] = []
    nodes = sorted(ports)

    async def worker() -> None:
        nonlocal lost, duplicated, wrong_holder, initial
        for doc_id in queue:
            node = rng.choice(nodes)
            request = single.get_request(f"/v1/docs/{doc_id}")
            try:
                status, headers, body = await pool.request(ports[node], request, 30.0)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                status, headers, body = 0, {}, f"{type(exc).__name__}: {exc}".encode()
            if status != 200:
                lost += sum(w.status == 200 for w in by_doc[doc_id])
                examples.append(f"{doc_id} via {node}: {status} {body[:100]!r}")
                continue
            items = Counter(json.loads(body)["content"].get("items", []))
            served = headers.get(b"x-meridian-served-by", b"").decode()
            if served != expected_holder[doc_id]:
                wrong_holder += 1
                if len(examples) < 10:
                    examples.append(f"{doc_id} served by {served}, not {expected_holder[doc_id]}")
            initial += items[INITIAL] != 1
            duplicated += sum(n > 1 for n in items.values())
            for write in by_doc[doc_id]:
                if write.status == 200 and items[write.value] != 1:
                    lost += 1
                    if len(examples) < 10:
                        examples.append(f"{doc_id}: {write.value} x{items[write.value]}")

    await asyncio.gather(*(worker() for _ in range(16)))
    return lost, duplicated, wrong_holder, initial, examples


async def failover(
    http: httpx.AsyncClient, cluster: MembershipCluster, victim_docs: Sequence[str]
) -> tuple[dict[str, float], list[str], list[tuple[str, str, str]]]:
    """Kills the victim; through each survivor, appends to one of its documents until one is
    answered 200. Returns the seconds per survivor (inf: none within the deadline), what
    failed meanwhile, and the acknowledged (survivor, doc, value)."""
    survivors = [n for n in cluster.nodes if n != VICTIM]
    failures: list[str] = []
    acked: list[tuple[str, str, str]] = []
    took: dict[str, float] = {}
    victim = cluster.nodes[VICTIM]
    assert victim.process is not None
    killed = time.perf_counter()
    victim.process.kill()  # SIGKILL
    deadline = killed + 30.0

    async def through(node: str, doc_id: str) -> None:
        attempt = 0
        while time.perf_counter() < deadline:
            value = f"failover-{node}-{attempt}"
            attempt += 1
            try:
                answer = await http.patch(
                    f"{cluster.url(node)}/v1/docs/{doc_id}",
                    json=append_body(value),
                    timeout=FAILOVER_ATTEMPT_TIMEOUT,
                )
            except httpx.HTTPError as exc:
                failures.append(f"{node}: {type(exc).__name__}")
            else:
                if answer.status_code == 200:
                    took[node] = time.perf_counter() - killed
                    acked.append((node, doc_id, value))
                    return
                failures.append(f"{node}: {answer.status_code} {answer.text[:90]}")
            await asyncio.sleep(0.02)  # retry after a refusal, until the deadline
        took[node] = math.inf

    await asyncio.gather(*(through(n, d) for n, d in zip(survivors, victim_docs, strict=False)))
    await asyncio.to_thread(victim.process.wait, 30)
    return took, failures, acked


async def one_run(figures: Figures, work: Path, args: argparse.Namespace, run: int) -> None:
    rng = random.Random(run)
    joiner_id = f"{JOIN_REGION}-j{rng.getrandbits(24):06x}"
    ids = [f"m{run}-{i:05d}" for i in range(args.docs)]
    home = {d: ("us-east" if i % 2 == 0 else "eu-west") for i, d in enumerate(ids)}
    deadline_s = 60.0 + 0.03 * args.docs
    details: list[str] = []
    with running(work / f"run-{run}", joiner_id) as cluster:
        async with Pool() as pool, client() as watch:
            with progress.step("  starting 4 nodes"):
                await cluster.start()
                listed_urls = {n: cluster.url(n) for n in cluster.listed}
                await wait_links_up(watch, list(listed_urls.values()), 60)
            with progress.step(f"  creating {len(ids):,} documents"):
                rate, failures = await load(pool, cluster, ids)
            if failures:
                raise RuntimeError(f"{len(failures)} creates failed, e.g. {failures[:3]}")
            region_of = cluster.region_of
            before_topo = topology(cluster.listed, region_of)
            after_topo = topology(list(region_of), region_of)
            before_holder = {d: holder_of(d, home[d], before_topo) for d in ids}
            after_holder = {d: holder_of(d, home[d], after_topo) for d in ids}
            share = {d for d in ids if after_holder[d] == joiner_id}
            moved_elsewhere = sum(before_holder[d] != after_holder[d] != joiner_id for d in ids)
            expected_before = {n: {d for d in ids if before_holder[d] == n} for n in cluster.listed}

            async def settled() -> bool:
                for node, url in listed_urls.items():
                    if await listing(watch, url) != expected_before[node]:
                        return False
                return True

            agrees = await poll(settled, time.perf_counter() + 60, LISTING_POLL) is not None
            before = {n: await listing(watch, url) for n, url in listed_urls.items()}
            sizes = {n: len(s) for n, s in before.items()}
            details.append(
                f"{len(ids):,} documents created at {rate:,.0f}/s; per node {sizes}, "
                f"placement.holders {'agrees' if agrees else 'DIFFERS'}; joiner {joiner_id}"
            )

            writer = PacedWriter(
                pool, {n: cluster.ports[n] for n in cluster.listed}, ids, args.rate, rng
            )
            with progress.step(f"  baseline: {args.rate:g} writes/s for {args.seconds:g} s"):
                bytes0 = await peer_bytes(watch, listed_urls)
                count = round(args.rate * args.seconds)
                baseline = await writer.run("base", asyncio.Event(), count)
                bytes1 = await peer_bytes(watch, listed_urls)
            base_seconds = args.seconds
            background = sum(bytes1[n][0] - bytes0[n][0] for n in bytes0) / base_seconds
            handoff0 = await handoff_counts(watch, listed_urls)

            # -- the join
            all_urls = {n: cluster.url(n) for n in cluster.region_of}
            joiner = cluster.joiner()
            stop = asyncio.Event()
            bytes_before = await peer_bytes(watch, listed_urls)
            cpu = CpuUse(cluster)
            move_task = asyncio.create_task(writer.run("join", stop))
            with progress.step(f"  join of {joiner_id} (share {len(share)} documents)"):
                t0 = time.perf_counter()
                deadline = t0 + deadline_s

                async def start_joiner() -> float:
                    await asyncio.to_thread(joiner.start)
                    return time.perf_counter()

                start_task = asyncio.create_task(start_joiner())

                def check_joiner() -> None:
                    if joiner.process is not None and joiner.process.poll() is not None:
                        raise RuntimeError(f"the joiner exited: {''.join(joiner.output[-20:])}")

                async def watch_member(url: str) -> tuple[float | None, float | None]:
                    async def lists() -> bool:
                        check_joiner()
                        return joiner_id in await members(watch, url)

                    async def active() -> bool:
                        check_joiner()
                        entry = (await members(watch, url)).get(joiner_id, {})
                        return entry.get("state") == "active"

                    listed_at = await poll(lists, deadline, MEMBER_POLL)
                    active_at = await poll(active, deadline, MEMBER_POLL)
                    return listed_at, active_at

                async def watch_share() -> tuple[float | None, float | None]:
                    async def holds() -> bool:
                        check_joiner()
                        return await listing(watch, all_urls[joiner_id]) == share

                    async def dropped() -> bool:
                        for node in cluster.listed:
                            if (
                                region_of[node] == JOIN_REGION
                                and await listing(watch, all_urls[node]) & share
                            ):
                                return False
                        return True

                    held_at = await poll(holds, deadline, LISTING_POLL)
                    dropped_at = await poll(dropped, deadline, LISTING_POLL)
                    return held_at, dropped_at

                watched = await asyncio.gather(
                    *(watch_member(url) for url in all_urls.values()), watch_share()
                )
                stop.set()
                moving = await move_task
                serving = await start_task - t0
                bytes_after = await peer_bytes(watch, all_urls)
                join_window = time.perf_counter() - t0
            load_share = cpu.report()
            member_times, (held_at, dropped_at) = watched[:-1], watched[-1]

            def since(at: float | None) -> float:
                return math.inf if at is None else at - t0

            listed_all = max(since(m[0]) for m in member_times)
            active_all = max(since(m[1]) for m in member_times)
            taken = max(since(held_at), since(dropped_at))
            # Copies made on the way (hints, relayed deltas) are handed off within seconds:
            # wait until no node has one left, then count.
            idle_at = await poll(
                lambda: handoff_idle(watch, all_urls), time.perf_counter() + 60, LISTING_POLL
            )
            handoff1 = await handoff_counts(watch, all_urls)
            after = {n: await listing(watch, url) for n, url in all_urls.items()}
            extra_added = {n: len(after[n] - before[n]) for n in cluster.listed}
            extra_dropped = {n: len((before[n] - after[n]) - share) for n in cluster.listed}
            moved = len(after[joiner_id])
            handed = sum(h - handoff0.get(n, (0, 0))[0] for n, (h, _) in handoff1.items())
            pulled = sum(q - handoff0.get(n, (0, 0))[1] for n, (_, q) in handoff1.items())
            delta = {
                n: tuple(b - a for a, b in zip(bytes_before.get(n, (0, 0, 0)), v, strict=True))
                for n, v in bytes_after.items()
            }
            sent = sum(d[0] for d in delta.values())
            received = sum(d[1] for d in delta.values())
            anti_entropy = sum(d[2] for d in delta.values())
            east = [n for n in region_of if region_of[n] == JOIN_REGION]
            counts = {n: len(after[n]) for n in east}
            mean = sum(counts.values()) / len(counts)

            with progress.step("  reading back every written document"):
                lost, duplicated, wrong, initial, examples = await read_back(
                    pool, cluster.ports, writer.writes, after_holder, rng
                )
            base_ok = [w for w in baseline if w.status == 200]
            move_ok = [w for w in moving if w.status == 200]
            unacked = [w for w in writer.writes if w.status != 200]

            # -- failover
            victim_docs = sorted(after[VICTIM])[:4]
            marks = {n: len(p.output) for n, p in cluster.nodes.items()}
            with progress.step(f"  failover: SIGKILL {VICTIM}"):
                took, fail_errors, fail_acked = await failover(watch, cluster, victim_docs)
            fail_check = []
            for node, doc_id, value in fail_acked:
                answer = await watch.get(f"{cluster.url(node)}/v1/docs/{doc_id}")
                got = answer.json()["content"].get("items", []).count(value) if (
                    answer.status_code == 200) else f"status {answer.status_code}"  # fmt: skip
                fail_check.append(f"{node}: {got}")
            trouble_before, trouble_after = node_trouble(cluster, marks)

    f = figures
    f["serving"].values.append(serving)
    f["listed"].values.append(listed_all)
    f["active"].values.append(active_all)
    f["taken"].values.append(taken)
    f["moved"].values.append(moved)
    f["optimum"].values.append(len(share))
    f["moved_ratio"].values.append((moved + sum(extra_added.values())) / len(share)
                                   if share else math.nan)  # fmt: skip
    f["extra"].values.append(sum(extra_added.values()))
    f["transient"].values.append(handed - moved)
    f["bytes"].values.append(sent / 1000)
    f["bytes_per_doc"].values.append(sent / moved if moved else math.nan)
    f["base_p50"].values.append(latency_ms(baseline, 50))
    f["base_p99"].values.append(latency_ms(baseline, 99))
    f["move_p50"].values.append(latency_ms(moving, 50))
    f["move_p99"].values.append(latency_ms(moving, 99))
    f["p99_ratio"].values.append(latency_ms(moving, 99) / latency_ms(baseline, 99))
    f["unacked"].values.append(len(unacked))
    f["lost"].values.append(lost)
    f["balance"].values.append(max(counts.values()) / mean)
    f["failover"].values.append(max(took.values()))

    per_node = ", ".join(
        f"{n}: listed {since(m[0]):.2f} s, active {since(m[1]):.2f} s"
        for n, m in zip(all_urls, member_times, strict=True)
    )
    errors = Counter(w.error.split(":")[0] or str(w.status) for w in unacked)
    bounds = [("before 'serving'", 0.0, serving), ("until every node lists it active", serving,
              active_all), ("until the share is taken", active_all, math.inf)]  # fmt: skip
    windows = "; ".join(
        f"{label} {len(ok)} (p50 {latency_ms(ok, 50):.1f} ms, p99 {latency_ms(ok, 99):.1f} ms)"
        for label, low, high in bounds
        if (ok := [w for w in moving if low <= w.due - t0 < high])
    )
    details += [
        f"join: {per_node}; joiner held its share at {since(held_at):.2f} s, us-east-1/2 had "
        f"dropped it at {since(dropped_at):.2f} s; no hand-off, pull or hint left anywhere at "
        f"{since(idle_at):.2f} s; hand-off counters (handed off, pulled) before {handoff0}, "
        f"after {handoff1}: {handed} copies handed off and dropped, {pulled} pulls; "
        f"documents whose holder changed to a node other than "
        f"the joiner by placement: {moved_elsewhere}; extra drops (docs a listed node stopped "
        f"listing outside the share) {extra_dropped}; CPU during the join (share of a core): "
        f"{load_share}",
        f"bytes: {sent:,} B sent and {received:,} B received by all nodes in {join_window:.1f} s "
        f"(Σ sent + received {sent + received:,} B); background in the baseline "
        f"{background:,.0f} B/s, so ~{background * join_window:,.0f} B of the join's are "
        f"background (net {(sent - background * join_window) / max(moved, 1):,.0f} B per "
        f"document moved); per node (sent, received): "
        f"{ {n: (d[0], d[1]) for n, d in delta.items()} }; bytes of anti-entropy rounds "
        f"(as the nodes count them, Σ) {anti_entropy:,}",
        f"foreground writes during the join by when they were due: {windows}",
        f"writes: baseline {len(baseline)} ({len(base_ok)} ok, p50 {latency_ms(baseline, 50):.2f}"
        f" ms, p99 {latency_ms(baseline, 99):.2f} ms, max "
        f"{max((w.latency for w in base_ok), default=math.nan) * 1000:.1f} ms); during the join "
        f"{len(moving)} ({len(move_ok)} ok, max "
        f"{max((w.latency for w in move_ok), default=math.nan) * 1000:.1f} ms); not "
        f"acknowledged: {dict(errors) or 'none'}"
        + (f", e.g. {unacked[0].node} {unacked[0].doc}: {unacked[0].error}" if unacked else ""),
        f"read back {len({w.doc for w in writer.writes})} documents: acknowledged values not "
        f"present once {lost}, values present more than once {duplicated}, served by a node "
        f"other than the holder {wrong}, initial value not present once {initial}"
        + (f"; e.g. {examples[:5]}" if examples else ""),
        f"balance: us-east documents per node {counts}",
        f"failover: first 200 per survivor "
        f"{ {n: round(t, 3) for n, t in sorted(took.items())} }; failed attempts "
        f"{dict(Counter(fail_errors)) or 'none'}; each acknowledged value read back through its "
        f"node (count): {fail_check}",
        f"node output at WARNING or above: before the kill: {trouble_before}; after: "
        f"{trouble_after}",
    ]
    for line in details:
        figures["serving"].details.append(f"run {run + 1}: {line}")
    progress.log(
        f"  run {run + 1}: listed {listed_all:.2f} s, active {active_all:.2f} s, share taken "
        f"{taken:.2f} s, moved {moved}/{len(share)}, extra {sum(extra_added.values())}, p99 "
        f"{latency_ms(baseline, 99):.1f} -> {latency_ms(moving, 99):.1f} ms, lost {lost}, "
        f"failover {max(took.values()):.2f} s"
    )


# -- main ------------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, work: Path) -> Figures:
    figures: Figures = {}
    declare(figures)
    progress.section(f"membership, {args.docs:,} documents", args.runs)
    for run in progress.runs("join under load and failover", args.runs):
        await one_run(figures, work, args, run)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=10_000, help="documents (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3); medians shown")
    parser.add_argument("--rate", type=float, default=100.0, help="foreground writes/s (100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline seconds (10)")
    parser.add_argument("--data-root", default=None, help="where data directories go")
    args = parser.parse_args(argv)
    if args.docs < 10 or args.runs < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--docs >= 10, --runs >= 1, --rate and --seconds > 0")
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-membership-", dir=args.data_root))
    machine = single.machine_info(work)
    machine["platform"] = platform.platform()
    machine["os.cpu_count"] = str(os.cpu_count())
    machine["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    try:
        figures = asyncio.run(run_all(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["Machine:", *(f"  {key}: {value}" for key, value in machine.items())]
    lines += [
        "  note: the five nodes, the WAN proxies and the load generator share the machine's cores",
        "",
        f"Results (median of {args.runs} run(s); {args.docs:,} documents, {LATENCY_MS:g} ms "
        f"us-east:eu-west, foreground {args.rate:g} writes/s, baseline {args.seconds:g} s; "
        f"took {time.perf_counter() - started:.0f} s):",
        "",
        table(figures, True),
        "",
        "Details:",
    ]
    lines += [f"  {d}" for f in figures.values() for d in f.details]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
