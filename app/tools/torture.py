"""``meridian torture``: a Jepsen-style run against a local cluster, with a verdict.

It writes a topology of its own (3 regions of 2 nodes by default, loopback ports, the WAN
emulator between regions, placement with 2 regions per document), starts every node as a
real ``meridian serve`` process, and then, for ``--duration`` seconds:

* **workloads** (``--workloads``, :data:`WORKLOADS`; :mod:`app.tools.torture_workloads`):
  HTTP clients draw one workload per request — list-append (``append`` to root array
  ``items``), counters, text inserts, map sets and deletes, deletes of whole documents with
  re-creation — each request to a random node with a random durability level; now and then a
  client reads its acknowledged append back from another node with ``after=``
  (read-your-writes across regions: a 200 without the element is a violation, a 503
  ``after_not_reached`` is not); and a few pycrdt documents push unique tokens over ``WS
  /v1/sync/{id}`` of random nodes (:mod:`app.tools.torture_yjs`);
* **nemesis** (:mod:`app.tools.torture_nemesis`): one fault at a time, held a few seconds,
  then healed — a region or one node cut off, a bridge (two regions cut apart, both reaching
  the third), a one-way cut, SIGKILL of a node (started again at the heal), SIGSTOP of a
  node (SIGCONT at the heal), a graceful restart, a rolling restart of every node (each
  healthy again before the next stops), a rolling upgrade from the previous release's peer
  protocol, a full disk.

Then it heals everything, waits for the peer links, lets every Yjs client synchronise once
more, and polls every holder's copy of every document until they converge; the checks
(:mod:`app.tools.torture_check`, :mod:`app.tools.torture_check_workloads`): for list-append,
every acknowledged element present exactly once on every holder, nothing present that was
refused or never written, indeterminate writes at most once; each other workload's own rules;
every holder's digest equal within ``--converge-target`` seconds of the links being up
again, writes acknowledged on both sides of every partition, no read-your-writes violation,
every peer link at the highest protocol version both its ends speak, every node's memory
under ``--max-rss-mb``. It prints a report (the faults' timeline with the writes
during each, counts, convergence time) and writes the whole history as JSON lines; the exit
status is 0 only when every check held.

``--seed`` replays the same schedule of faults and the same sequence of choices per client;
the interleaving of requests and faults still depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..config import ClusterConfig, load_config
from ..replication import PROTOCOL_VERSIONS
from .demo_cluster import DemoError, LocalCluster, LocalNode, open_cluster
from .torture_check import Op, Verdict, check
from .torture_check_workloads import (
    WORKLOADS,
    Cut,
    Findings,
    check_counters,
    check_deletes,
    check_maps,
    check_text,
    check_yjs,
)
from .torture_nemesis import FAULTS, HELD_BACK_VERSION, Fault, Nemesis, held_back, small_disk
from .torture_report import MEMORY_SAMPLE_SECONDS, Settled, report
from .torture_workloads import ROOT, Workload, read_copies, read_held
from .torture_yjs import YjsClient

__all__ = ["FAULTS", "WORKLOADS", "Fault", "TortureOptions", "run_torture"]

REGION_NAMES = ("us-east", "eu-west", "ap-south", "sa-east", "af-south", "me-central")
#: One-way latency between two regions of the run, in milliseconds.
LATENCY_MS = 20.0
#: Replication settings of the run: faults are detected within ~1.5 s.
REPLICATION = {
    "heartbeat_interval": 0.2,
    "link_timeout": 1.5,
    "reconnect_min": 0.05,
    "reconnect_max": 0.5,
    "anti_entropy_interval": 1.0,
    "durability_timeout": 2.0,
    "after_timeout": 2.0,
}
#: Seconds each Yjs client gets after the heal to synchronise once more.
FINAL_SYNC_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class TortureOptions:
    seed: int
    duration: float = 60.0
    regions: int = 3
    nodes: int = 2
    clients: int = 12
    documents: int = 6
    faults: tuple[str, ...] = FAULTS
    #: The workloads the clients draw from (:data:`WORKLOADS`).
    workloads: tuple[str, ...] = WORKLOADS
    #: Where the nodes' data, the topology and the history go (default: a temporary directory,
    #: removed after a passing run; a failing run keeps it).
    data: Path | None = None
    #: Seconds after the heal for the copies to converge before the run fails.
    converge_timeout: float = 60.0
    #: Seconds the copies may take to converge once every node is up and every link open
    #: again (the Yjs clients' last sync included); longer fails the run.
    converge_target: float = 5.0
    max_rss_mb: float = 1024.0


@dataclass(slots=True)
class Run:
    """What one run saw, for the report."""

    options: TortureOptions
    started: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    read_backs: int = 0
    read_back_violations: list[str] = field(default_factory=list)
    read_back_not_reached: int = 0
    #: The Yjs clients' tokens (after the run), and per document the tokens in their own
    #: documents once they synchronised after the heal.
    yjs_ops: list[Op] = field(default_factory=list)
    synced: dict[str, set[str]] = field(default_factory=dict)
    yjs_notes: list[str] = field(default_factory=list)

    #: Every node's resident memory, every :data:`MEMORY_SAMPLE_SECONDS`.
    memory: list[Sample] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    node: str
    rss_mb: float


def write_topology(root: Path, options: TortureOptions) -> Path:
    """A regions.toml for the run: free loopback ports, equal latencies, fast failure
    detection, 2 regions per document (1 when the run has one region)."""
    names = REGION_NAMES[: options.regions]
    lines = ['[cluster]\nname = "torture"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
    lines.append("[placement]")
    lines.append(f"replicas = {min(2, len(names))}")
    lines.append("nodes_per_region = 1")
    lines.append("forward_timeout = 3.0\n")
    lines.append("[replication]")
    lines += [f"{key} = {value}" for key, value in REPLICATION.items()]
    for name in names:
        nodes = ", ".join(f'"127.0.0.1:{_free_port()}"' for _ in range(options.nodes))
        lines.append(f"\n[regions.{name}]\nnodes = [{nodes}]")
    lines.append("\n[latency]")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lines.append(f'"{a}:{b}" = {LATENCY_MS}')
    path = root / "regions.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- the final state ---------------------------------------------------------------------


@dataclass(slots=True)
class Checked:
    """Every workload's checks on one reading of the copies: the list-append verdict (None
    when that workload did not run) and the others' findings."""

    appends: Verdict | None
    findings: list[Findings]

    @property
    def ok(self) -> bool:
        return (self.appends is None or self.appends.ok) and all(f.ok for f in self.findings)

    @property
    def copies_ok(self) -> bool:
        """Every check on the copies holds (problems in the history alone aside)."""
        appends = self.appends is None or self.appends.ok
        return appends and all(f.copies_ok for f in self.findings)


CHECKS = {"counters": check_counters, "text": check_text, "maps": check_maps}


async def check_copies(
    run: Run, http: dict[str, httpx.AsyncClient], docs: dict[str, list[str]]
) -> Checked:
    """Reads every holder's copy of every document and checks each workload's history."""
    by_workload: dict[str, list[Op]] = {}
    for op in [*run.ops, *run.yjs_ops]:
        by_workload.setdefault(op.workload, []).append(op)
    workloads = run.options.workloads
    appends = None
    if "list-append" in workloads:
        copies = await read_copies(http, docs["list-append"])
        appends = check(by_workload.get("list-append", []), copies)
    findings = []
    for name in workloads:
        if name == "list-append":
            continue
        held = await read_held(http, docs[name], ROOT[name])
        ops = by_workload.get(name, [])
        if name == "yjs":
            findings.append(check_yjs(ops, held, run.synced))
        elif name == "deletes":
            findings.append(check_deletes(ops, held, cuts(run.faults)))
        else:
            findings.append(CHECKS[name](ops, held))
    return Checked(appends, findings)


def cuts(faults: list[Fault]) -> list[Cut]:
    """The faults as the deletes check sees them: whom each could keep from hearing of a
    change (everyone for a cut between regions or a rolling restart)."""
    return [
        Cut(fault.start, fault.end if fault.end is not None else float("inf"),
            fault.target if fault.kind in ("kill", "pause", "restart") else None)
        for fault in faults
    ]  # fmt: skip


async def converge(
    run: Run, http: dict[str, httpx.AsyncClient], docs: dict[str, list[str]], timeout: float
) -> tuple[Checked, float | None]:
    """Polls the copies until the checks on them hold (returns the seconds it took) or
    ``timeout`` passes (returns the last verdict and None)."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            checked = await check_copies(run, http, docs)
            if checked.copies_ok:
                return checked, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return await check_copies(run, http, docs), None
        await asyncio.sleep(0.2)  # the next poll


def rss_mb(node: LocalNode) -> float | None:
    """The node process's resident memory, from /proc (None where there is no /proc)."""
    if node.process is None:
        return None
    try:
        status = Path(f"/proc/{node.process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


async def sample_memory(run: Run, cluster: LocalCluster) -> None:
    """Every node's resident memory into ``run.memory``, every :data:`MEMORY_SAMPLE_SECONDS`
    (until cancelled)."""
    while True:
        await sample_once(run, cluster)
        await asyncio.sleep(MEMORY_SAMPLE_SECONDS)


async def sample_once(run: Run, cluster: LocalCluster) -> None:
    for node_id, node in cluster.nodes.items():
        if (rss := rss_mb(node)) is not None:
            run.memory.append(Sample(run.now(), node_id, rss))


async def link_versions(
    cluster: LocalCluster, http: dict[str, httpx.AsyncClient]
) -> tuple[int, list[str]]:
    """The peer protocol version every link should run (this release's, or the previous
    release's while any node still runs it) and the links that run another one."""
    held_back = any(node.extra_args for node in cluster.nodes.values())
    version = HELD_BACK_VERSION if held_back else PROTOCOL_VERSIONS[1]
    wrong = []
    for node_id in sorted(cluster.nodes):
        try:
            view = (await http[node_id].get("/v1/cluster")).json()
        except (httpx.HTTPError, ValueError) as exc:
            wrong.append(f"{node_id}: /v1/cluster unreadable ({type(exc).__name__})")
            continue
        wrong += [
            f"{node_id}->{peer['node']} at {peer['protocol_version']}"
            for peer in view["peers"]
            if peer["protocol_version"] != version
        ]
    return version, wrong


# -- the run -----------------------------------------------------------------------------


def collect_yjs(run: Run, clients: list[YjsClient]) -> None:
    """The Yjs clients' tokens into the run's history, and the tokens each synced document
    holds into ``run.synced``."""
    for client in clients:
        run.yjs_ops += client.history()
        if client.synced:
            run.synced.setdefault(client.doc_id, set()).update(client.contents())
    if clients:
        run.yjs_notes.append(
            f"  {'':<12} {len(clients)} Yjs clients: "
            f"{sum(c.sessions for c in clients)} sessions, "
            f"{sum(c.failures for c in clients)} broken or refused connections, "
            f"{sum(c.synced for c in clients)} synced after the heal"
        )


async def torture(options: TortureOptions, root: Path, say: Callable[[str], None]) -> bool:
    config_path = write_topology(root, options)
    config = load_config(config_path)
    secret = f"torture-{random.Random(options.seed).getrandbits(64):016x}"
    run = Run(options)
    rng = random.Random(f"{options.seed}/nemesis")
    regions = {member.node_id: member.region for member in config.members()}
    with small_disk(options.faults, options.seed, root, list(regions), say) as disk:
        return await _torture(options, root, say, config, config_path, secret, run, rng, disk)


async def _torture(
    options: TortureOptions,
    root: Path,
    say: Callable[[str], None],
    config: ClusterConfig,
    config_path: Path,
    secret: str,
    run: Run,
    rng: random.Random,
    disk: tuple[str, Path] | None,
) -> bool:
    regions = {member.node_id: member.region for member in config.members()}
    async with (
        open_cluster(
            config,
            config_path,
            root / "nodes",
            secret,
            links_inside_regions=True,
            extra_args=held_back(options.faults, options.duration),
        ) as cluster,
        contextlib.AsyncExitStack() as stack,
    ):
        await cluster.wait_ready(60)
        say(f"{len(cluster.nodes)} nodes up; running for {options.duration:g} s")
        run.started = time.monotonic()
        sampler = asyncio.create_task(sample_memory(run, cluster))
        stack.callback(sampler.cancel)
        nemesis = Nemesis(cluster, options.faults, run.faults, run.now, rng, say, disk)
        async with Workload(cluster, run, options.seed, options.workloads) as workload:
            urls = {node_id: node.url for node_id, node in cluster.nodes.items()}
            yjs_docs = workload.docs["yjs"]
            yjs = [
                YjsClient(index, yjs_docs[index % len(yjs_docs)], urls, run, options.seed)
                for index in range(max(2, options.clients // 4))
                if "yjs" in options.workloads
            ]
            clients = [
                asyncio.create_task(workload.client(index, options.duration))
                for index in range(options.clients)
            ] + [
                asyncio.create_task(client.write(options.duration, workload.http)) for client in yjs
            ]
            try:
                await nemesis.loop(options.duration)
                await asyncio.gather(*clients)
            finally:
                for task in clients:
                    task.cancel()
            say(f"t={run.now():.1f}s: healing everything")
            healed = time.monotonic()
            await nemesis.heal_all()
            await cluster.observer.wait_healthy(60)
            await cluster.observer.wait_links_up(60)
            links_up = time.monotonic()
            await asyncio.gather(*(client.final_sync(FINAL_SYNC_TIMEOUT) for client in yjs))
            collect_yjs(run, yjs)
            checked, converged = await converge(
                run, workload.http, workload.docs, options.converge_timeout
            )
            if converged is not None:
                converged = time.monotonic() - links_up
            version, wrong_versions = await link_versions(cluster, workload.http)
        settled = Settled(links_up - healed, converged, version, wrong_versions)
        await sample_once(run, cluster)
    history = root / "history.jsonl"
    with history.open("w", encoding="utf-8") as out:
        for op in [*run.ops, *run.yjs_ops]:
            out.write(json.dumps(op.to_json()) + "\n")
        for fault in run.faults:
            out.write(json.dumps({"fault": fault.kind, "target": fault.target,
                                  "start": fault.start, "end": fault.end}) + "\n")  # fmt: skip
    lines, passed = report(run, checked, settled, regions, history)
    for line in lines:
        say(line)
    return passed


def run_torture(options: TortureOptions) -> int:
    """Runs ``meridian torture``; returns the exit status (0: every check held; 1: a check
    failed or the cluster could not be run; 2: bad arguments)."""
    logging.getLogger("meridian.wan").setLevel(logging.WARNING)
    if options.regions < 1 or options.regions > len(REGION_NAMES):
        print(f"meridian torture: --regions must be 1 to {len(REGION_NAMES)}")
        return 2
    if unknown := set(options.faults) - set(FAULTS):
        print(f"meridian torture: unknown faults {sorted(unknown)}; choose from {FAULTS}")
        return 2
    if not options.workloads or (unknown := set(options.workloads) - set(WORKLOADS)):
        print(f"meridian torture: unknown or no workloads; choose from {WORKLOADS}")
        return 2
    if options.nodes < 1 or options.clients < 1 or options.documents < 1 or options.duration <= 0:
        print("meridian torture: --nodes, --clients, --documents and --duration must be positive")
        return 2
    root = options.data or Path(tempfile.mkdtemp(prefix="meridian-torture-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"meridian torture: data, topology and history in {root}", flush=True)
    try:
        passed = asyncio.run(torture(options, root, lambda line: print(line, flush=True)))
    except (DemoError, TimeoutError) as exc:
        print(f"meridian torture: the cluster could not be run: {exc or type(exc).__name__}")
        return 1
    if passed and options.data is None:
        shutil.rmtree(root, ignore_errors=True)  # a failed run keeps its evidence
    return 0 if passed else 1
