"""Replication benchmark of Meridian: propagation delay between regions, catch-up after a
partition, and durable-write throughput while deltas stream to other regions.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_replication.py            # full run, 3 runs per figure
    .venv/bin/python bench/bench_replication.py --quick    # smoke run, small sizes

Every node is a real ``python -m app serve`` process on loopback, one per region, on a fresh
data directory, with the default replication settings (the generated regions.toml has no
[replication] section: heartbeat 1 s, link timeout 5 s, anti-entropy every 10 s). Each
cross-region peer link goes through a WAN emulator proxy (app/wan.py, on an event loop in a
thread of this process) adding 50 ms one way. The load generator is this process too (the
asyncio HTTP/1.1 client of bench_single_node.py), on the same cores as the nodes.

Measured, each the median of ``--runs`` runs:

1. propagation: 3 regions; PATCH (a JSON append) at us-east, 300 writes paced at 20/s; as
   each is acknowledged, ``GET /v1/docs/{id}?after=<its state vector>`` at eu-west, which
   answers once eu-west's copy has it. p50/p99 of the delay minus the emulated 50 ms, from
   the write being sent and from its acknowledgement;
2. catch-up: 2 regions hold 10,000 documents; the link is cut (both ways) until both nodes
   drop it, 1% of the documents change at us-east, the link is restored: time until
   eu-west's copies of them have us-east's digests, and the bytes the link carried meanwhile
   against 2 x (the changed updates' bytes) + 32 bytes per stored document;
3. throughput: 16 clients PATCHing 16 documents at us-east for 10 s (closed loop) while it
   streams to two other regions, against a standalone node measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_single_node import (  # noqa: E402  (this directory: the single-node benchmark)
    HOST,
    CpuMeter,
    Figure,
    HttpConnection,
    _cpu_seconds,
    closed_loop,
    get_json,
    get_request,
    log,
    machine_info,
    percentile,
)

from tests.cluster import ThreadedWan, free_port  # noqa: E402
from tests.support import NodeProcess  # noqa: E402

LATENCY_MS = 50.0
CLIENTS = 16
SECRET = "bench-cluster-secret"
A, B, C = "us-east", "eu-west", "ap-south"


@dataclass(frozen=True)
class Sizes:
    writes: int  # propagation: writes per run
    rate: float  # ... paced at this many per second
    documents: int  # catch-up: documents stored on both sides
    changed: int  # ... changed during the partition
    seconds: float  # throughput: length of one closed-loop run
    full: bool


FULL = Sizes(300, 20.0, 10_000, 100, 10.0, True)
QUICK = Sizes(60, 20.0, 1_000, 10, 3.0, False)


# -- a cluster of one node per region ------------------------------------------------------------


class BenchCluster:
    """One ``meridian serve`` per region on loopback; the node with the smaller id dials its
    peer through a WAN proxy adding ``LATENCY_MS`` one way. A single region is a standalone
    node started the same way (a regions.toml listing only it)."""

    def __init__(self, root: Path, regions: Sequence[str]) -> None:
        self.root = root
        self.regions = list(regions)
        self.ports = {region: free_port() for region in regions}
        self.wan = ThreadedWan()
        self.nodes: dict[str, NodeProcess] = {}

    def _toml(self) -> str:
        lines = ['[cluster]\nname = "bench"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
        for region in self.regions:
            lines.append(f'[regions.{region}]\nnodes = ["{HOST}:{self.ports[region]}"]\n')
        pairs = [(a, b) for i, a in enumerate(self.regions) for b in self.regions[i + 1 :]]
        if pairs:
            lines.append("[latency]")
            lines += [f'"{a}:{b}" = {LATENCY_MS:g}' for a, b in pairs]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        config = self.root / "regions.toml"
        config.write_text(self._toml())
        peers: dict[str, list[str]] = {region: [] for region in self.regions}
        for dialer in self.regions:
            for acceptor in self.regions:
                if f"{dialer}-1" < f"{acceptor}-1":
                    link = self.wan.wan.add_link(
                        dialer, acceptor, (HOST, self.ports[acceptor]), LATENCY_MS,
                        name=f"{dialer}->{acceptor}",
                    )  # fmt: skip
                    host, port = self.wan.call(link).address
                    peers[dialer] += ["--peer", f"{acceptor}-1={host}:{port}"]
        for region in self.regions:
            self.nodes[region] = NodeProcess(
                self.root / f"{region}-1", region=region, listen=f"{HOST}:{self.ports[region]}",
                config=config, env={"MERIDIAN_CLUSTER_SECRET": SECRET}, extra=peers[region],
            ).start()  # fmt: skip

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        self.wan.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def pid(self, region: str) -> int:
        process = self.nodes[region].process
        assert process is not None
        return process.pid

    def link_bytes(self) -> int:
        """Bytes every proxy delivered so far, both ways (WebSocket frames and handshakes)."""
        stats = self.wan.do(self.wan.wan.statistics)
        return sum(link.bytes_forward + link.bytes_backward for link in stats.links)

    async def peers(self, region: str) -> list[dict[str, Any]]:
        view = await get_json(self.ports[region], "/v1/cluster")
        return list(view["peers"])

    async def view(self, region: str) -> dict[str, Any]:
        return dict(await get_json(self.ports[region], "/v1/cluster"))


@contextlib.contextmanager
def running(root: Path, regions: Sequence[str]) -> Iterator[BenchCluster]:
    cluster = BenchCluster(root, regions)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.02
) -> float:
    """Polls ``condition`` until true; returns the seconds it took. RuntimeError on timeout."""
    started = time.perf_counter()
    while not await condition():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(poll)
    return time.perf_counter() - started


async def wait_links_up(cluster: BenchCluster) -> None:
    async def up() -> bool:
        for region in cluster.regions:
            if any(p["state"] != "up" for p in await cluster.peers(region)):
                return False
        return True

    await wait_until(up, 30, "every peer link up", poll=0.05)


def drained(peers: list[dict[str, Any]]) -> bool:
    return all(p["buffered"]["deltas"] == 0 and p["buffered"]["in_flight"] == 0 for p in peers)


# -- HTTP helpers ----------------------------------------------------------------------------------


def patch_request(doc_id: str, ops: list[dict[str, Any]]) -> bytes:
    body = json.dumps({"ops": ops}, separators=(",", ":")).encode()
    head = (
        f"PATCH /v1/docs/{doc_id} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def append(doc_id: str, value: Any) -> bytes:
    return patch_request(doc_id, [{"op": "append", "path": ["items"], "values": [value]}])


async def fetch_all(port: int, paths: Sequence[str], connections: int = 8) -> list[bytes]:
    """GETs every path (``connections`` at a time); returns the bodies in order."""
    bodies: list[bytes] = [b""] * len(paths)
    queue = iter(enumerate(paths))

    async def worker() -> None:
        connection = await HttpConnection.open(port)
        try:
            for index, path in queue:
                status, bodies[index] = await connection.send(get_request(path))
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {bodies[index][:200]!r}")
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(min(connections, len(paths)))))
    return bodies


async def digests(port: int, doc_ids: Sequence[str]) -> dict[str, str]:
    bodies = await fetch_all(port, [f"/v1/docs/{d}?digest=true" for d in doc_ids])
    return {d: json.loads(body)["digest"] for d, body in zip(doc_ids, bodies, strict=True)}


def ms(seconds: float) -> float:
    return (seconds - LATENCY_MS / 1000) * 1000


# -- 1. propagation delay --------------------------------------------------------------------------


async def propagation(
    cluster: BenchCluster, doc_id: str, count: int, rate: float
) -> dict[str, Any]:
    """``count`` appends at us-east paced at ``rate``/s, each followed by an after= read at
    eu-west; returns the delays (seconds) from write sent and from write acknowledged."""
    writer = await HttpConnection.open(cluster.ports[A])
    readers: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(8):
        readers.put_nowait(await HttpConnection.open(cluster.ports[B]))
    requests = [append(doc_id, i) for i in range(count)]
    sent_delays: list[float] = []
    ack_delays: list[float] = []
    acks: list[float] = []
    errors: list[str] = []
    clock = time.perf_counter

    async def read(value: int, state_vector: str, sent: float, acked: float) -> None:
        connection = await readers.get()
        try:
            path = f"/v1/docs/{doc_id}?after={quote(state_vector, safe='')}"
            status, body = await connection.send(get_request(path))
            seen = clock()
        finally:
            readers.put_nowait(connection)
        if status != 200 or value not in json.loads(body)["content"]["items"]:
            errors.append(f"write {value}: read answered {status} {body[:120]!r}")
            return
        sent_delays.append(seen - sent)
        ack_delays.append(seen - acked)

    tasks: list[asyncio.Task[None]] = []
    start = clock() + 0.05
    for i, request in enumerate(requests):
        if (wait := start + i / rate - clock()) > 0:
            await asyncio.sleep(wait)
        sent = clock()
        status, body = await writer.send(request)
        acked = clock()
        acks.append(acked - sent)
        if status != 200:
            errors.append(f"write {i}: {status} {body[:120]!r}")
            continue
        state_vector = json.loads(body)["state_vector"]
        tasks.append(asyncio.create_task(read(i, state_vector, sent, acked)))
    await asyncio.gather(*tasks)
    await writer.close()
    while not readers.empty():
        await readers.get_nowait().close()
    return {"sent": sent_delays, "acked": ack_delays, "acks": acks, "errors": errors}


async def bench_propagation(figures: dict[str, Figure], work: Path, sizes: Sizes, run: int) -> None:
    names = {
        "p50s": "propagation overhead p50, from write sent",
        "p99s": "propagation overhead p99, from write sent",
        "p50a": "propagation overhead p50, from write acknowledged",
        "p99a": "propagation overhead p99, from write acknowledged",
    }
    for key, name in names.items():
        target = key.startswith("p99")
        figures.setdefault(key, Figure(
            name, "ms", digits=2, target="<= 10 ms" if target else "",
            check=(lambda v: v <= 10) if target else None,
        ))  # fmt: skip
    with running(work / f"propagation-{run}", [A, B, C]) as cluster:
        await wait_links_up(cluster)
        await propagation(cluster, f"warmup-{run}", 20, sizes.rate)
        result = await propagation(cluster, f"prop-{run}", sizes.writes, sizes.rate)
    if result["errors"]:
        raise RuntimeError(f"propagation run {run + 1}: {result['errors'][:5]}")
    for key in names:
        series, q = "sent" if key.endswith("s") else "acked", int(key[1:3])
        figures[key].values.append(ms(percentile(result[series], q)))
    detail = (
        f"run {run + 1}: {len(result['sent'])} writes at {sizes.rate:g}/s; write ack at us-east "
        f"p50 {percentile(result['acks'], 50) * 1e3:.2f} ms p99 "
        f"{percentile(result['acks'], 99) * 1e3:.2f} ms; delay from sent max "
        f"{max(result['sent']) * 1e3:.1f} ms (50 ms of it emulated)"
    )
    figures["p99s"].details.append(detail)
    log(f"  propagation, {detail}; overhead p99 {figures['p99s'].values[-1]:.2f} ms")


# -- 2. catch-up after a partition -----------------------------------------------------------------


async def wait_round_started_after(cluster: BenchCluster, since: float, timeout: float) -> None:
    """Waits until each node's latest anti-entropy round started after ``since`` (wall
    clock): every change made before then is behind both checkpoints."""

    async def done() -> bool:
        for region in cluster.regions:
            ae = (await cluster.peers(region))[0]["anti_entropy"]
            if ae["last_at"] is None or ae["last_at"] - ae["last_seconds"] <= since:
                return False
        return True

    await wait_until(done, timeout, "an anti-entropy round on both sides", poll=0.2)


async def bench_catchup(figures: dict[str, Figure], work: Path, sizes: Sizes, run: int) -> None:
    seconds = figures.setdefault("ae_time", Figure(
        "catch-up time, restore to changed docs identical", "s", digits=2,
        target="<= 2 s", check=lambda v: v <= 2,
    ))  # fmt: skip
    reconnect = figures.setdefault(
        "ae_reconnect", Figure("... of which restore to link up again", "s", digits=2)
    )
    wire = figures.setdefault("ae_bytes", Figure("catch-up bytes on the link (proxy)", "bytes"))
    bound = figures.setdefault("ae_bound", Figure(
        f"bound: 2 x changed updates + 32 B x {sizes.documents:,} docs", "bytes",
    ))  # fmt: skip
    ratio = figures.setdefault("ae_ratio", Figure(
        "catch-up bytes / bound", "%", digits=1, target="<= 100%", check=lambda v: v <= 100,
    ))  # fmt: skip
    ids = [f"doc-{i:05d}" for i in range(sizes.documents)]
    changed = ids[:: sizes.documents // sizes.changed][: sizes.changed]
    with running(work / f"catchup-{run}", [A, B]) as cluster:
        await wait_links_up(cluster)
        a, b = cluster.ports[A], cluster.ports[B]
        # Populate through HTTP, 16 clients; then both sides hold everything.
        ops = [{"op": "insert_text", "path": ["body"], "index": 0, "text": "buy milk, call Ana"}]
        lanes = [[patch_request(d, ops) for d in ids[k::CLIENTS]] for k in range(CLIENTS)]
        load = await closed_loop(a, lanes, 3600.0, None)
        if load.errors:
            raise RuntimeError(f"populate: {load.errors} writes failed")

        async def replicated() -> bool:
            views = [await cluster.view(A), await cluster.view(B)]
            live = [v["documents"]["live"] for v in views]
            return live == [sizes.documents] * 2 and all(drained(v["peers"]) for v in views)

        replicated_s = await wait_until(replicated, 300, "both sides to hold every document", 0.2)
        await wait_round_started_after(cluster, time.time(), 60)
        # The partition: cut both ways, change 1% at us-east, wait for both to drop the link.
        before = {d: json.loads(body)["state_vector"] for d, body in zip(
            changed, await fetch_all(a, [f"/v1/docs/{d}" for d in changed]), strict=True
        )}  # fmt: skip
        cluster.wan.do(lambda: cluster.wan.wan.cut(A, B))
        cut_at = time.perf_counter()
        edit = [{"op": "insert_text", "path": ["body"], "index": 0, "text": "edited: "}]
        lanes = [[patch_request(d, edit) for d in changed[k::CLIENTS]] for k in range(CLIENTS)]
        if (await closed_loop(a, lanes, 3600.0, None)).errors:
            raise RuntimeError("writes during the partition failed")
        since = [f"/v1/docs/{d}/update?since={quote(before[d], safe='')}" for d in changed]
        update_bytes = sum(map(len, await fetch_all(a, since)))
        expected = await digests(a, changed)

        async def link_down() -> bool:
            return all([(await cluster.peers(r))[0]["state"] != "up" for r in (A, B)])

        await wait_until(link_down, 60, "both sides to drop the cut link", poll=0.1)
        down_s = time.perf_counter() - cut_at
        counters = {r: (await cluster.peers(r))[0] for r in (A, B)}
        wire_before = cluster.link_bytes()
        # Restore; watch for the link coming up and for eu-west's copies to match.
        cluster.wan.do(lambda: cluster.wan.wan.restore(A, B))
        restored = time.perf_counter()

        async def b_link_up() -> bool:
            return bool((await cluster.peers(B))[0]["state"] == "up")

        up_s = await wait_until(b_link_up, 60, "the link to come back", poll=0.01)
        pending = set(changed)

        async def identical() -> bool:
            seen = await digests(b, sorted(pending)) if pending else {}
            pending.difference_update(d for d, digest in seen.items() if digest == expected[d])
            return not pending

        await wait_until(identical, 60, "eu-west's copies to match us-east's", poll=0.005)
        converged_s = time.perf_counter() - restored

        async def quiet() -> bool:
            peers = [(await cluster.peers(r))[0] for r in (A, B)]
            rounds = [p["anti_entropy"]["rounds"] > counters[r]["anti_entropy"]["rounds"]
                      for p, r in zip(peers, (A, B), strict=True)]  # fmt: skip
            return all(rounds) and drained(peers)

        await wait_until(quiet, 60, "the reconnection's anti-entropy rounds", poll=0.05)
        wire_bytes = cluster.link_bytes() - wire_before
        after = {r: (await cluster.peers(r))[0] for r in (A, B)}
        if await digests(a, changed) != expected or await digests(b, changed) != expected:
            raise RuntimeError("the changed documents differ after the catch-up")
        live = [(await cluster.view(r))["documents"]["live"] for r in (A, B)]
    seconds.values.append(converged_s)
    reconnect.values.append(up_s)
    wire.values.append(wire_bytes)
    limit = 2 * update_bytes + 32 * sizes.documents
    bound.values.append(limit)
    ratio.values.append(100 * wire_bytes / limit)
    sent = {r: after[r]["bytes_sent"] - counters[r]["bytes_sent"] for r in (A, B)}
    ae = {r: after[r]["anti_entropy"] for r in (A, B)}
    detail = (
        f"run {run + 1}: populated {sizes.documents:,} docs at {load.rate:,.0f}/s, replicated "
        f"{replicated_s:.1f}s later; link dropped {down_s:.1f}s after the cut; "
        f"{len(changed)} changed updates {update_bytes:,} bytes; peer payload sent us-east "
        f"{sent[A]:,} B, eu-west {sent[B]:,} B; rounds after restore: eu-west checked "
        f"{ae[B]['last_checked']} repaired {ae[B]['last_repaired']} ({ae[B]['last_bytes']:,} B), "
        f"us-east checked {ae[A]['last_checked']} repaired {ae[A]['last_repaired']} "
        f"({ae[A]['last_bytes']:,} B); deltas re-sent by us-east "
        f"{after[A]['deltas']['acked'] - counters[A]['deltas']['acked']}; live {live}"
    )
    seconds.details.append(detail)
    log(f"  catch-up, {detail}; {converged_s:.2f}s, {wire_bytes:,} bytes (bound {limit:,})")


# -- 3. durable-write throughput while streaming ---------------------------------------------------


async def write_run(cluster: BenchCluster, run: int, seconds: float) -> tuple[float, str]:
    """16 closed-loop clients PATCHing 16 documents at us-east; returns (writes/s, details)."""
    port = cluster.ports[A]
    lanes = [[append(f"w{run}-doc{k}", i) for i in range(1000)] for k in range(CLIENTS)]
    warm = [[append(f"warmup-{k}", i) for i in range(30)] for k in range(CLIENTS)]
    await closed_loop(port, warm, 10.0, None)
    others = [r for r in cluster.regions if r != A]
    cpu_before = {r: _cpu_seconds(f"/proc/{cluster.pid(r)}/stat") for r in others}
    lags: list[float] = [0.0]
    done = asyncio.Event()

    async def watch() -> None:  # the peers' backlog at us-east, twice a second
        while not done.is_set():
            lags.extend(p["lag_seconds"] for p in await cluster.peers(A))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    watcher = asyncio.create_task(watch())
    result = await closed_loop(port, lanes, seconds, CpuMeter(cluster.pid(A)), cycle=True)
    ended = time.perf_counter()
    done.set()
    await watcher
    if result.errors:
        raise RuntimeError(f"{result.errors} writes failed")
    elapsed = result.elapsed
    other = result.machine_cpu - result.server_cpu - result.generator_cpu
    text = (
        f"{result.completed:,} ok in {elapsed:.1f}s, p50 {result.percentile(50) * 1e3:.1f} ms "
        f"p99 {result.percentile(99) * 1e3:.1f} ms; CPU us-east {result.server_cpu / elapsed:.0%}"
        f", generator {result.generator_cpu / elapsed:.0%}"
    )
    if others:
        cpu = {r: _cpu_seconds(f"/proc/{cluster.pid(r)}/stat") - cpu_before[r] for r in others}
        text += "".join(f", {r} {cpu[r] / elapsed:.0%}" for r in others)
        other -= sum(cpu.values())

        async def caught_up() -> bool:
            return drained(await cluster.peers(A))

        await wait_until(caught_up, 120, "the peers to acknowledge every delta", poll=0.05)
        text += (
            f"; peers' lag at us-east max {max(lags):.2f}s, all acknowledged "
            f"{time.perf_counter() - ended:.2f}s after the run"
        )
    return result.rate, text + f", rest of machine {max(other, 0) / elapsed:.0%}"


async def bench_throughput(figures: dict[str, Figure], work: Path, sizes: Sizes, run: int) -> None:
    alone = figures.setdefault(
        "tp_alone", Figure("durable writes/s at us-east, standalone node", "writes/s")
    )
    streaming = figures.setdefault(
        "tp_repl", Figure("durable writes/s at us-east, streaming to 2 regions", "writes/s")
    )
    ratio = figures.setdefault("tp_ratio", Figure(
        "streaming / standalone (same run)", "%", digits=1,
        target=">= 80%", check=lambda v: v >= 80,
    ))  # fmt: skip
    # Alternate the order, so that a drift of the machine does not favour one side.
    order = [("alone", [A]), ("streaming", [A, B, C])]
    for label, regions in order if run % 2 == 0 else order[::-1]:
        with running(work / f"throughput-{label}-{run}", regions) as cluster:
            if len(regions) > 1:
                await wait_links_up(cluster)
            rate, detail = await write_run(cluster, run, sizes.seconds)
        figure = alone if label == "alone" else streaming
        figure.values.append(rate)
        figure.details.append(f"run {run + 1}: {detail}")
        log(f"  throughput {label}, run {run + 1}: {rate:,.0f} writes/s ({detail})")
    ratio.values.append(100 * streaming.values[-1] / alone.values[-1])


# -- main ------------------------------------------------------------------------------------------

SECTIONS = {
    "propagation": bench_propagation,
    "catchup": bench_catchup,
    "throughput": bench_throughput,
}


def table(figures: dict[str, Figure], full: bool, markdown: bool = False) -> str:
    rows = [
        [f.name, f"{f.fmt(f.median)} {f.unit}", ", ".join(map(f.fmt, f.values)), f.target,
         "n/a (quick sizes)" if f.check and not full else f.verdict(True)]
        for f in figures.values()
    ]  # fmt: skip
    header = ["measurement", "median", "runs", "target", "result"]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


async def run_all(sections: list[str], sizes: Sizes, runs: int, work: Path) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for section in sections:
        log(f"== {section}")
        for run in range(runs):
            await SECTIONS[section](figures, work, sizes, run)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run by default")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--sections", default="", help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--data-root", default=None, help="where data directories go")
    parser.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    sections = args.sections.split(",") if args.sections else list(SECTIONS)
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-repl-", dir=args.data_root))
    machine = machine_info(work)
    started = time.perf_counter()
    try:
        figures = asyncio.run(run_all(sections, sizes, runs, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["Machine:", *(f"  {key}: {value}" for key, value in machine.items())]
    lines += [
        "  note: the nodes, the WAN proxies and the load generator share the machine's cores",
        "",
        f"Results (median of {runs} run(s){', QUICK sizes' if args.quick else ''}; "
        f"{LATENCY_MS:g} ms one way between regions; took {time.perf_counter() - started:.0f}s):",
        "",
        table(figures, sizes.full),
        "",
        "Details:",
    ]
    lines += [f"  {f.name}: {d}" for f in figures.values() for d in f.details]
    print("\n".join(lines))
    if args.markdown:
        text = "\n".join(f"- {key}: {value}" for key, value in machine.items())
        Path(args.markdown).write_text(f"{text}\n\n{table(figures, sizes.full, True)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
