"""Replication benchmark of Meridian: propagation delay between regions, catch-up after a
partition, and durable-write throughput while deltas stream to other regions.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_replication.py            # full run, 3 runs per figure
    .venv/bin/python bench/bench_replication.py --quick    # smoke run, small sizes

Every node is a real ``python -m app serve`` process on loopback, one per region, with the
default replication settings (no [replication] section in the generated regions.toml). Each
cross-region peer link goes through a WAN emulator proxy (app/tools/wan.py, in a thread of this
process) adding 50 ms one way. The load generator is this process (the HTTP/1.1 client of
bench_single_node.py), on the same cores as the nodes. Each figure is the median of
``--runs`` runs of:

1. propagation: 3 regions; 300 JSON appends at us-east paced at 20/s, each read at eu-west
   with ``GET ?after=<the write's state vector>``; the delay minus the emulated 50 ms;
2. catch-up: 2 regions, 10,000 documents; a cut long enough for both nodes to drop the
   link, 1% changed at us-east, restore: time until eu-west's copies have us-east's digests,
   and the bytes the link carried, against 2 x the changed updates + 32 bytes per document;
3. throughput: 16 clients PATCHing at us-east for 10 s while it streams to two regions,
   against a standalone node, and with the two replicas at nice 19 (they share the cores).

bench/README.md says how exactly; docs/benchmarks.md has the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

import bench_single_node as single  # noqa: E402  (this directory)
from progress import Progress  # noqa: E402  (this directory)

from tests.cluster import ThreadedWan, free_port  # noqa: E402
from tests.support import NodeProcess  # noqa: E402

HOST = single.HOST
LATENCY_MS = 50.0
CLIENTS = 16
SECRET = "bench-cluster-secret"
A, B, C = "us-east", "eu-west", "ap-south"
Figures = dict[str, single.Figure]
#: Progress on stderr (which section and run, how long each took); results go to stdout.
progress = Progress("replication")


@dataclass(frozen=True)
class Sizes:
    writes: int  # propagation: writes per run, paced at `rate` per second
    rate: float
    documents: int  # catch-up: documents held on both sides, `changed` of them changed
    changed: int
    seconds: float  # throughput: length of one closed-loop run
    full: bool  # the targets are judged on the full sizes only


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

    def start(self) -> None:
        self.root.mkdir(parents=True)
        config = self.root / "regions.toml"
        lines = ['[cluster]\nname = "bench"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
        lines += [f'[regions.{r}]\nnodes = ["{HOST}:{self.ports[r]}"]\n' for r in self.regions]
        pairs = [(a, b) for i, a in enumerate(self.regions) for b in self.regions[i + 1 :]]
        lines += ["[latency]"] if pairs else []
        config.write_text("\n".join(lines + [f'"{a}:{b}" = {LATENCY_MS:g}' for a, b in pairs]))
        peers: dict[str, list[str]] = {region: [] for region in self.regions}
        for dialer, acceptor in pairs:
            if f"{dialer}-1" > f"{acceptor}-1":
                dialer, acceptor = acceptor, dialer
            target = (HOST, self.ports[acceptor])
            link = self.wan.wan.add_link(dialer, acceptor, target, LATENCY_MS)
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

    def pids(self) -> dict[str, int]:
        return {r: n.process.pid for r, n in self.nodes.items() if n.process is not None}

    def link_bytes(self) -> tuple[int, int]:
        """Bytes the proxies delivered so far, both ways (WebSocket frames and handshakes),
        and bytes they discarded (sent into a cut)."""
        links = self.wan.do(self.wan.wan.statistics).links
        delivered = sum(link.bytes_forward + link.bytes_backward for link in links)
        return delivered, sum(x.bytes_dropped_forward + x.bytes_dropped_backward for x in links)

    async def view(self, region: str) -> dict[str, Any]:
        return dict(await single.get_json(self.ports[region], "/v1/cluster"))

    async def peer(self, region: str) -> dict[str, Any]:
        """The node's first (with two regions: only) peer, as /v1/cluster shows it."""
        return dict((await self.view(region))["peers"][0])


@contextlib.contextmanager
def running(root: Path, regions: Sequence[str]) -> Iterator[BenchCluster]:
    cluster = BenchCluster(root, regions)
    try:
        cluster.start()
        yield cluster
    except Exception:
        for region, node in cluster.nodes.items():  # a node that died says why
            if node.process is not None and node.process.poll() is not None:
                progress.log(f"{region} exited: {''.join(node.output[-30:])}")
        raise
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
    """Waits until every node answers and reports every peer link up."""

    async def up() -> bool:
        try:  # a node prints "serving" a moment before it accepts connections
            views = [await cluster.view(region) for region in cluster.regions]
        except ConnectionRefusedError:
            return False
        return all(p["state"] == "up" for view in views for p in view["peers"])

    await wait_until(up, 30, "every node up and every peer link up", poll=0.05)


def drained(peers: Sequence[dict[str, Any]]) -> bool:
    return all(p["buffered"]["deltas"] == 0 and p["buffered"]["in_flight"] == 0 for p in peers)


class OtherLoad:
    """CPU the rest of the machine used since creation (other programs, the kernel's share of
    loopback traffic): all cores' busy time minus this process (generator and WAN proxies)
    and the nodes. A busy machine makes every figure worse."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = pids
        self.start, self.busy = time.perf_counter(), self._others()

    def _others(self) -> float:
        ours = time.process_time() + sum(single._cpu_seconds(f"/proc/{p}/stat") for p in self.pids)
        return single._machine_busy_seconds() - ours

    def share(self) -> str:
        seconds = time.perf_counter() - self.start
        return f"rest of machine {max(self._others() - self.busy, 0) / seconds:.0%} of a core"


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
        connection = await single.HttpConnection.open(port)
        try:
            for index, path in queue:
                status, bodies[index] = await connection.send(single.get_request(path))
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {bodies[index][:200]!r}")
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(min(connections, len(paths)))))
    return bodies


async def digests(port: int, doc_ids: Sequence[str]) -> dict[str, str]:
    bodies = await fetch_all(port, [f"/v1/docs/{d}?digest=true" for d in doc_ids])
    return {d: json.loads(body)["digest"] for d, body in zip(doc_ids, bodies, strict=True)}


def figure(figures: Figures, key: str, name: str, unit: str, **kw: Any) -> single.Figure:
    return figures.setdefault(key, single.Figure(name, unit, **kw))


# -- 1. propagation delay --------------------------------------------------------------------------


async def propagate(cluster: BenchCluster, doc_id: str, count: int, rate: float) -> dict[str, Any]:
    """``count`` appends at us-east paced at ``rate``/s, each followed (once acknowledged) by
    an after= read at eu-west; returns the delays from write sent and from acknowledgement."""
    writer = await single.HttpConnection.open(cluster.ports[A])
    readers: asyncio.Queue[single.HttpConnection] = asyncio.Queue()
    for _ in range(8):
        readers.put_nowait(await single.HttpConnection.open(cluster.ports[B]))
    result: dict[str, list[Any]] = {"sent": [], "acked": [], "acks": [], "errors": []}
    clock = time.perf_counter

    async def read(value: int, state_vector: str, sent: float, acked: float) -> None:
        connection = await readers.get()
        try:
            path = f"/v1/docs/{doc_id}?after={quote(state_vector, safe='')}"
            status, body = await connection.send(single.get_request(path))
            seen = clock()
        finally:
            readers.put_nowait(connection)
        if status != 200 or value not in json.loads(body)["content"]["items"]:
            result["errors"].append(f"read of write {value}: {status} {body[:120]!r}")
            return
        result["sent"].append(seen - sent)
        result["acked"].append(seen - acked)

    requests = [append(doc_id, i) for i in range(count)]
    tasks: list[asyncio.Task[None]] = []
    start = clock() + 0.05
    for i, request in enumerate(requests):
        if (wait := start + i / rate - clock()) > 0:
            await asyncio.sleep(wait)
        sent = clock()
        status, body = await writer.send(request)
        acked = clock()
        result["acks"].append(acked - sent)
        if status != 200:
            result["errors"].append(f"write {i}: {status} {body[:120]!r}")
            continue
        state_vector = json.loads(body)["state_vector"]
        tasks.append(asyncio.create_task(read(i, state_vector, sent, acked)))
    await asyncio.gather(*tasks)
    await writer.close()
    while not readers.empty():
        await readers.get_nowait().close()
    return result


async def bench_propagation(figures: Figures, work: Path, sizes: Sizes, run: int) -> None:
    keys = {"p50s": "sent", "p99s": "sent", "p50a": "acked", "p99a": "acked"}
    for key, start in keys.items():
        name = f"propagation overhead p{key[1:3]}, from write {start}"
        p99 = {"target": "<= 10 ms", "check": lambda v: v <= 10} if key[1:3] == "99" else {}
        figure(figures, key, name, "ms", digits=2, **p99)
    with running(work / f"propagation-{run}", [A, B, C]) as cluster:
        await wait_links_up(cluster)
        await propagate(cluster, f"warmup-{run}", 20, sizes.rate)
        other = OtherLoad(list(cluster.pids().values()))
        result = await propagate(cluster, f"prop-{run}", sizes.writes, sizes.rate)
        load = other.share()
    if result["errors"]:
        raise RuntimeError(f"propagation run {run + 1}: {result['errors'][:5]}")
    for key, start in keys.items():
        delay = single.percentile(result[start], int(key[1:3]))
        figures[key].values.append((delay - LATENCY_MS / 1000) * 1000)
    acks, sent, pct = result["acks"], result["sent"], single.percentile
    detail = (
        f"run {run + 1}: {len(sent)} writes at {sizes.rate:g}/s; write ack at us-east "
        f"p50 {pct(acks, 50) * 1e3:.2f} ms p99 {pct(acks, 99) * 1e3:.2f} ms; delay from sent "
        f"max {max(sent) * 1e3:.1f} ms (50 of it emulated); {load}"
    )
    figures["p99s"].details.append(detail)
    progress.log(f"  propagation, {detail}; overhead p99 {figures['p99s'].values[-1]:.2f} ms")


# -- 2. catch-up after a partition -----------------------------------------------------------------


async def populate(cluster: BenchCluster, ids: Sequence[str]) -> float:
    """Creates the documents at us-east (16 clients) and waits until both sides hold them and
    ran an anti-entropy round since; returns the creation rate."""
    ops = [{"op": "insert_text", "path": ["body"], "index": 0, "text": "buy milk, call Ana"}]
    lanes = [[patch_request(d, ops) for d in ids[k::CLIENTS]] for k in range(CLIENTS)]
    load = await single.closed_loop(cluster.ports[A], lanes, 3600.0, None)
    if load.errors:
        raise RuntimeError(f"populate: {load.errors} writes failed")

    async def replicated() -> bool:
        views = [await cluster.view(A), await cluster.view(B)]
        live = [v["documents"]["live"] for v in views]
        return live == [len(ids)] * 2 and all(drained(v["peers"]) for v in views)

    await wait_until(replicated, 300, "both sides to hold every document", poll=0.2)
    since = time.time()

    async def round_since() -> bool:  # then every change is behind both checkpoints
        rounds = [(await cluster.peer(r))["anti_entropy"] for r in cluster.regions]
        return all(ae["last_at"] and ae["last_at"] - ae["last_seconds"] > since for ae in rounds)

    await wait_until(round_since, 60, "an anti-entropy round on both sides", poll=0.2)
    return load.rate


async def partition(cluster: BenchCluster, changed: Sequence[str]) -> tuple[int, float]:
    """Cuts the link both ways, changes ``changed`` at us-east, and waits until both nodes
    dropped the link and eu-west (the dialer) is redialling into the cut: the usual state of
    a long partition, and the same in every run. Returns (bytes of the changed updates,
    seconds from the cut until both dropped the link)."""
    a = cluster.ports[A]
    views = await fetch_all(a, [f"/v1/docs/{d}" for d in changed])
    old = {d: json.loads(view)["state_vector"] for d, view in zip(changed, views, strict=True)}
    cluster.wan.do(lambda: cluster.wan.wan.cut(A, B))
    cut_at = time.perf_counter()
    edit = [{"op": "insert_text", "path": ["body"], "index": 0, "text": "edited: "}]
    lanes = [[patch_request(d, edit) for d in changed[k::CLIENTS]] for k in range(CLIENTS)]
    if (await single.closed_loop(a, lanes, 3600.0, None)).errors:
        raise RuntimeError("writes during the partition failed")
    since = [f"/v1/docs/{d}/update?since={quote(old[d], safe='')}" for d in changed]
    update_bytes = sum(map(len, await fetch_all(a, since)))

    async def dropped() -> bool:
        return all([(await cluster.peer(r))["state"] != "up" for r in (A, B)])

    await wait_until(dropped, 60, "both sides to drop the cut link", poll=0.1)
    down_s = time.perf_counter() - cut_at
    swallowed = cluster.link_bytes()[1]

    async def redialling() -> bool:  # and the cut swallowed that attempt's handshake
        state = (await cluster.peer(B))["state"]
        return bool(state == "connecting" and cluster.link_bytes()[1] > swallowed)

    await wait_until(redialling, 60, "eu-west to redial into the cut", poll=0.01)
    return update_bytes, down_s


async def bench_catchup(figures: Figures, work: Path, sizes: Sizes, run: int) -> None:
    total = figure(figures, "ae_s", "catch-up: restore to changed docs identical", "s", digits=2,
                   target="<= 2 s", check=lambda v: v <= 2)  # fmt: skip
    redial = figure(figures, "ae_up", "... restore to link up again", "s", digits=2)
    sync = figure(figures, "ae_sync", "... link up to changed docs identical", "s", digits=2)
    bound = figure(
        figures, "ae_bound", f"bound: 2 x changed updates + 32 B x {sizes.documents:,}", "bytes"
    )
    wire = figure(figures, "ae_bytes", "catch-up bytes on the link (proxy, both ways)", "bytes",
                  target="<= bound", check=lambda v: v <= bound.median)  # fmt: skip
    ids = [f"doc-{i:05d}" for i in range(sizes.documents)]
    changed = ids[:: sizes.documents // sizes.changed][: sizes.changed]
    with running(work / f"catchup-{run}", [A, B]) as cluster:
        await wait_links_up(cluster)
        rate = await populate(cluster, ids)
        update_bytes, down_s = await partition(cluster, changed)
        expected = await digests(cluster.ports[A], changed)
        before = {r: await cluster.peer(r) for r in (A, B)}
        wire_before = cluster.link_bytes()[0]
        # Restore; time the link coming back, then eu-west's copies matching us-east's.
        cluster.wan.do(lambda: cluster.wan.wan.restore(A, B))

        async def up() -> bool:
            return bool((await cluster.peer(B))["state"] == "up")

        redial.values.append(await wait_until(up, 60, "the link to come back", poll=0.01))
        pending = set(changed)

        async def identical() -> bool:
            seen = await digests(cluster.ports[B], sorted(pending))
            pending.difference_update(d for d, digest in seen.items() if digest == expected[d])
            return not pending

        sync.values.append(await wait_until(identical, 60, "the changed docs to match", 0.005))
        total.values.append(redial.values[-1] + sync.values[-1])

        async def quiet() -> bool:  # deltas acknowledged; each side ran a round since
            peers = {r: await cluster.peer(r) for r in (A, B)}
            rounds = [peers[r]["anti_entropy"]["rounds"] > before[r]["anti_entropy"]["rounds"]
                      for r in (A, B)]  # fmt: skip
            return all(rounds) and drained(list(peers.values()))

        await wait_until(quiet, 60, "the reconnection's anti-entropy rounds", poll=0.05)
        wire.values.append(cluster.link_bytes()[0] - wire_before)
        after = {r: await cluster.peer(r) for r in (A, B)}
        for region in (A, B):
            if await digests(cluster.ports[region], changed) != expected:
                raise RuntimeError(f"{region}: the changed documents differ after the catch-up")
    bound.values.append(2 * update_bytes + 32 * sizes.documents)
    sent = {r: after[r]["bytes_sent"] - before[r]["bytes_sent"] for r in (A, B)}
    ae = {r: after[r]["anti_entropy"] for r in (A, B)}
    rounds = "; ".join(
        f"{r} pulled: {ae[r]['last_checked']} listed, {ae[r]['last_repaired']} repaired, "
        f"{ae[r]['last_bytes']:,} B" for r in (B, A)
    )  # fmt: skip
    resent = after[A]["deltas"]["acked"] - before[A]["deltas"]["acked"]
    detail = (
        f"run {run + 1}: {sizes.documents:,} docs created at {rate:,.0f}/s; link dropped "
        f"{down_s:.1f}s after the cut; {len(changed)} changed updates: {update_bytes:,} B; "
        f"peer payload sent after restore: us-east {sent[A]:,} B, eu-west {sent[B]:,} B "
        f"(deltas re-sent by us-east: {resent}); first rounds after restore: {rounds}"
    )
    total.details.append(detail)
    progress.log(
        f"  catch-up, {detail}; {total.values[-1]:.2f}s, {wire.values[-1]:,} B on the link"
    )


# -- 3. durable-write throughput while streaming ---------------------------------------------------


async def write_run(cluster: BenchCluster, run: int, seconds: float) -> tuple[float, str]:
    """16 closed-loop clients PATCHing 16 documents at us-east; returns (writes/s, details)."""
    port, pids = cluster.ports[A], cluster.pids()
    lanes = [[append(f"w{run}-doc{k}", i) for i in range(1000)] for k in range(CLIENTS)]
    await single.closed_loop(port, [lane[:30] for lane in lanes], 10.0, None)  # warm-up
    others = {r: single._cpu_seconds(f"/proc/{pid}/stat") for r, pid in pids.items() if r != A}
    other_load = OtherLoad(list(pids.values()))
    result = await single.closed_loop(port, lanes, seconds, single.CpuMeter(pids[A]), cycle=True)
    ended = time.perf_counter()
    if result.errors:
        raise RuntimeError(f"{result.errors} writes failed")
    text = (
        f"{result.completed:,} ok in {result.elapsed:.1f}s, p50 {result.percentile(50) * 1e3:.1f}"
        f" ms p99 {result.percentile(99) * 1e3:.1f} ms; CPU (of a core) us-east "
        f"{result.server_cpu / result.elapsed:.0%}"
    )
    for region, cpu in others.items():
        used = single._cpu_seconds(f"/proc/{pids[region]}/stat") - cpu
        text += f", {region} {used / result.elapsed:.0%}"
    text += f", generator and proxies {result.generator_cpu / result.elapsed:.0%}"
    text += f", {other_load.share()}"
    if others:

        async def caught_up() -> bool:
            return drained((await cluster.view(A))["peers"])

        await wait_until(caught_up, 120, "the peers to acknowledge every delta", poll=0.05)
        text += (
            f"; every delta acknowledged by the peers {time.perf_counter() - ended:.2f}s after "
            "the run"
        )
    return result.rate, text


def renice(pid: int, niceness: int) -> None:
    """Sets the nice value of every thread of a process (Linux: niceness is per thread)."""
    for thread in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(thread.name), niceness)


async def bench_throughput(figures: Figures, work: Path, sizes: Sizes, run: int) -> None:
    name = "durable writes/s at us-east"
    alone = figure(figures, "tp_alone", f"{name}, standalone", "writes/s")
    streaming = figure(figures, "tp_repl", f"{name}, streaming to 2 regions", "writes/s")
    niced = figure(figures, "tp_nice", "... the same, the 2 replicas at nice 19", "writes/s")
    ratio = figure(figures, "tp_ratio", "streaming / standalone, same run", "%", digits=1,
                   target=">= 80%", check=lambda v: v >= 80)  # fmt: skip
    ratio_niced = figure(figures, "tp_ratio_nice", "... replicas at nice 19 / standalone", "%",
                         digits=1)  # fmt: skip
    # The replicas share this machine's cores with us-east; at nice 19 they get what us-east
    # leaves, as if they ran elsewhere. The order alternates so that drift favours no side.
    order = [("standalone", alone), ("streaming", streaming), ("replicas-niced", niced)]
    for label, into in order if run % 2 == 0 else order[::-1]:
        regions = [A] if into is alone else [A, B, C]
        with running(work / f"throughput-{label}-{run}", regions) as cluster:
            await wait_links_up(cluster)
            for region, pid in cluster.pids().items():
                if into is niced and region != A:
                    renice(pid, 19)
            rate, detail = await write_run(cluster, run, sizes.seconds)
        into.values.append(rate)
        into.details.append(f"run {run + 1}: {detail}")
        progress.log(f"  throughput {label}, run {run + 1}: {rate:,.0f} writes/s ({detail})")
    ratio.values.append(100 * streaming.values[-1] / alone.values[-1])
    ratio_niced.values.append(100 * niced.values[-1] / alone.values[-1])


# -- main ------------------------------------------------------------------------------------------

SECTIONS = {
    "propagation": bench_propagation,
    "catchup": bench_catchup,
    "throughput": bench_throughput,
}


def table(figures: Figures, full: bool) -> str:
    header = ["measurement", "median", "runs", "target", "result"]
    rows = [
        [f.name, f"{f.fmt(f.median)} {f.unit}", ", ".join(map(f.fmt, f.values)), f.target,
         "n/a (quick sizes)" if f.check and not full else f.verdict(True)]
        for f in figures.values()
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


async def run_all(sections: list[str], sizes: Sizes, runs: int, work: Path) -> Figures:
    figures: Figures = {}
    for section in sections:
        progress.section(section, runs)
        for run in progress.runs(section, runs):
            await SECTIONS[section](figures, work, sizes, run)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run by default")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--sections", default="", help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--data-root", default=None, help="where data directories go")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    sections = args.sections.split(",") if args.sections else list(SECTIONS)
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-repl-", dir=args.data_root))
    machine = single.machine_info(work)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
