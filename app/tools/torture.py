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
* **nemesis**: one fault at a time, held a few seconds, then healed — a region cut off, a
  bridge (two regions cut apart, both reaching the third), a one-way cut, SIGKILL of a node
  (started again at the heal), SIGSTOP of a node (SIGCONT at the heal), a graceful restart,
  a rolling restart of every node (each healthy again before the next stops).

Then it heals everything, waits for the peer links, lets every Yjs client synchronise once
more, and polls every holder's copy of every document until they converge; the checks
(:mod:`app.tools.torture_check`, :mod:`app.tools.torture_check_workloads`): for list-append,
every acknowledged element present exactly once on every holder, nothing present that was
refused or never written, indeterminate writes at most once; each other workload's own rules;
every holder's digest equal, writes
acknowledged on both sides of every partition, no read-your-writes violation, every node's
memory under ``--max-rss-mb``. It prints a report (the faults' timeline with the writes
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
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..config import ClusterConfig, load_config
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
from .torture_workloads import ROOT, Workload, read_copies, read_held
from .torture_yjs import YjsClient

__all__ = ["FAULTS", "WORKLOADS", "TortureOptions", "run_torture"]

#: The faults the nemesis draws from.
FAULTS = ("partition", "bridge", "one-way", "kill", "pause", "restart", "rolling", "disk-full")
#: Size of the filesystem of the node whose disk the ``disk-full`` fault fills.
SMALL_DISK_MB = 128
#: Seconds of the run a rolling restart needs at least (it is not drawn with less left).
ROLLING_SECONDS = 30.0
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
    max_rss_mb: float = 1024.0


@dataclass(slots=True)
class Fault:
    kind: str
    target: str
    start: float
    end: float | None = None


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

    def now(self) -> float:
        return time.monotonic() - self.started


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


# -- faults ------------------------------------------------------------------------------


class Nemesis:
    """One fault at a time on ``cluster``, drawn with ``rng`` from ``kinds``."""

    def __init__(
        self,
        cluster: LocalCluster,
        run: Run,
        rng: random.Random,
        say: Callable[[str], None],
        small_disk: tuple[str, Path] | None = None,
    ) -> None:
        self.cluster = cluster
        self.run = run
        self.rng = rng
        self.say = say
        #: The node whose data directory is a small filesystem of its own, and that directory:
        #: the ``disk-full`` fault fills it.
        self.small_disk = small_disk
        regions = sorted({node.region for node in cluster.nodes.values()})
        self.regions = regions
        # Faults between regions need two of them (a bridge three).
        self.kinds = [
            kind
            for kind in run.options.faults
            if not (kind in ("partition", "one-way") and len(regions) < 2)
            and not (kind == "bridge" and len(regions) < 3)
            and not (kind == "disk-full" and small_disk is None)
        ]

    async def loop(self, until: float) -> None:
        """Faults until ``until`` (seconds of the run); each healed before the next."""
        while self.kinds and self.run.now() < until - 8:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            kind = self.rng.choice(self.kinds)
            hold = self.rng.uniform(3.0, 6.0)
            if kind == "rolling":
                if until - self.run.now() >= ROLLING_SECONDS:
                    await self.rolling_restart()
                continue
            await self.inject(kind, hold)

    async def rolling_restart(self) -> None:
        """Every node in turn: SIGTERM, started again, healthy before the next one."""
        fault = Fault("rolling", "every node, one at a time", self.run.now())
        self.run.faults.append(fault)
        self.say(f"  t={fault.start:6.1f}s  rolling restart of every node")
        for node_id in sorted(self.cluster.nodes):
            await _signal(self.cluster.nodes[node_id], signal.SIGTERM)
            await self._start(node_id)
            await self._healthy(node_id)
        fault.end = self.run.now()

    async def _healthy(self, node_id: str, timeout: float = 30.0) -> None:
        url = self.cluster.nodes[node_id].url
        async with httpx.AsyncClient(base_url=url, timeout=2, trust_env=False) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/v1/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def inject(self, kind: str, hold: float) -> None:
        cluster, rng = self.cluster, self.rng
        wan = cluster.wan
        node = rng.choice(sorted(cluster.nodes))
        picked = [*rng.sample(self.regions, min(3, len(self.regions))), "", "", ""]
        a, b, c = picked[:3]
        heal: Callable[[], Any]
        if kind == "partition":
            target, heal = a, lambda: wan.rejoin(a)
            wan.isolate(a)
        elif kind == "bridge":
            target, heal = f"{a}|{c} (both reach {b})", lambda: wan.restore(a, c)
            wan.cut(a, c)
        elif kind == "one-way":
            target, heal = f"{a}->{b}", lambda: wan.restore(a, b, one_way=True)
            wan.cut(a, b, one_way=True)
        elif kind == "kill":
            target = node
            await _signal(cluster.nodes[node], signal.SIGKILL)
            heal = lambda: self._start(node)  # noqa: E731
        elif kind == "pause":
            target = node
            await _signal(cluster.nodes[node], signal.SIGSTOP)
            heal = lambda: _signal(cluster.nodes[node], signal.SIGCONT)  # noqa: E731
        elif kind == "disk-full":
            assert self.small_disk is not None
            target, directory = self.small_disk
            ballast = directory / "ballast"
            await asyncio.to_thread(_fill, ballast)
            heal = lambda: ballast.unlink(missing_ok=True)  # noqa: E731
        else:  # restart: a graceful stop now, started again at the heal
            target = node
            await _signal(cluster.nodes[node], signal.SIGTERM)
            heal = lambda: self._start(node)  # noqa: E731
        fault = Fault(kind, target, self.run.now())
        self.run.faults.append(fault)
        self.say(f"  t={fault.start:6.1f}s  {kind} {target} for {hold:.1f} s")
        await asyncio.sleep(hold)
        result = heal()
        if asyncio.iscoroutine(result):
            await result
        fault.end = self.run.now()

    async def _start(self, node_id: str) -> None:
        node = self.cluster.nodes[node_id]
        if node.process is not None and node.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.process.wait(), 30)
        if node.drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.drain, 5)
        await self.cluster.spawn(node)

    async def heal_all(self) -> None:
        """Every cut restored, every paused node resumed, every stopped node started."""
        self.cluster.wan.heal()
        for node_id, node in self.cluster.nodes.items():
            process = node.process
            if process is not None and process.returncode is None:
                await _signal(node, signal.SIGCONT)
            else:
                await self._start(node_id)


def _fill(path: Path) -> None:
    """Writes ``path`` until its filesystem is full."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb") as ballast, contextlib.suppress(OSError):
        while True:
            ballast.write(chunk)
            ballast.flush()


@contextlib.contextmanager
def small_disk(
    options: TortureOptions, root: Path, nodes: list[str], say: Callable[[str], None]
) -> Iterator[tuple[str, Path] | None]:
    """For the ``disk-full`` fault: one node's data directory on a filesystem of its own
    (a tmpfs of :data:`SMALL_DISK_MB`), or None when this machine cannot mount one (the
    fault is then not drawn, and the report says so)."""
    if "disk-full" not in options.faults or not nodes:
        yield None
        return
    node = random.Random(f"{options.seed}/disk").choice(sorted(nodes))
    directory = root / "nodes" / node
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_MB}m", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        say(f"disk-full: not drawn, no small filesystem can be mounted here (needs root): "
            f"{mounted.stderr.strip() or mounted.returncode}")  # fmt: skip
        yield None
        return
    say(f"disk-full: {node}'s data directory is a {SMALL_DISK_MB} MiB filesystem of its own")
    try:
        yield node, directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


async def _signal(node: LocalNode, signum: int) -> None:
    process = node.process
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        if signum == signal.SIGKILL:
            await process.wait()


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


# -- the report --------------------------------------------------------------------------


def _during(run: Run, fault: Fault) -> list[Op]:
    end = fault.end if fault.end is not None else run.now()
    return [op for op in run.ops if fault.start <= op.start < end]


def partition_sides(fault: Fault, regions: dict[str, str]) -> tuple[set[str], set[str]] | None:
    """The nodes on each side of a partition fault (None for other faults)."""
    if fault.kind == "partition":
        inside = {node for node, region in regions.items() if region == fault.target}
    elif fault.kind == "bridge":
        a = fault.target.split("|")[0]
        inside = {node for node, region in regions.items() if region == a}
    else:
        return None
    return inside, set(regions) - inside


#: What each workload's PASS line says it checked.
PROMISES = {
    "counters": "counters: every holder's value between the acknowledged increments and those "
    "plus the indeterminate ones; every acknowledged key, none refused or unwritten",
    "text": "text: every acknowledged token exactly once on every holder, none refused, "
    "indeterminate ones at most once, nothing else in the text",
    "maps": "maps: acknowledged sets never deleted present with their value, keys of "
    "acknowledged deletes that changed the document absent, nothing refused or unwritten",
    "deletes": "deletes: one final state on every holder, no acknowledged delete undone, every "
    "acknowledged append of the final incarnation exactly once, none of an earlier one, no "
    "acknowledged append into a document re-created in a past incarnation",
    "yjs": "yjs: every token read back over HTTP or synced after the heal on every holder, "
    "none twice, none unwritten",
}


def workload_lines(findings: Findings) -> list[str]:
    """A workload's counts: per kind of request, sent: acknowledged/refused/indeterminate;
    then whatever else it counted."""
    counts = findings.counts
    kinds = [key.removesuffix(" sent") for key in counts if key.endswith(" sent")]
    parts = [
        f"{kind} {counts[kind + ' sent']}: {counts[kind + ' ok']}/{counts[kind + ' fail']}/"
        f"{counts[kind + ' info']}"
        for kind in kinds
    ]
    outcomes = {f"{kind} {suffix}" for kind in kinds for suffix in ("sent", "ok", "fail", "info")}
    parts += [f"{key} {value}" for key, value in counts.items() if key not in outcomes]
    return [f"  {findings.workload:<12} " + ", ".join(parts or ["nothing sent"])]


def report(
    run: Run,
    checked: Checked,
    converged: float | None,
    regions: dict[str, str],
    memory: dict[str, float | None],
    history: Path,
) -> tuple[list[str], bool]:
    """The report's lines, and whether every check held."""
    options = run.options
    lines = [
        f"meridian torture: seed {options.seed}, {options.duration:g} s, {options.regions} "
        f"regions x {options.nodes} nodes, {options.clients} clients, {options.documents} "
        f"documents, faults: {', '.join(options.faults) or 'none'}",
        "",
        "faults (t = seconds into the run; writes sent while each lasted):",
    ]
    one_sided: list[str] = []
    for fault in run.faults:
        during = Counter(op.outcome for op in _during(run, fault))
        end = f"{fault.end:6.1f}" if fault.end is not None else "   -  "
        lines.append(
            f"  {fault.start:6.1f} - {end}  {fault.kind:<9} {fault.target:<32} "
            f"ok {during['ok']}, refused {during['fail']}, indeterminate {during['info']}"
        )
        if fault.kind == "disk-full":
            # The others go on while one node's disk is full.
            elsewhere = [op for op in _during(run, fault) if op.node != fault.target]
            if elsewhere and not any(op.outcome == "ok" for op in elsewhere):
                one_sided.append(f"disk-full {fault.target}: no write acknowledged elsewhere")
        sides = partition_sides(fault, regions)
        if sides is not None:
            for side in sides:
                if not any(op.node in side and op.outcome == "ok" for op in _during(run, fault)):
                    one_sided.append(f"{fault.kind} {fault.target}: none on {sorted(side)}")
    by_node = Counter((op.node, op.outcome) for op in run.ops)
    outcomes = Counter(op.outcome for op in run.ops)
    lines += [
        "",
        f"HTTP writes: {len(run.ops)} sent: {outcomes['ok']} acknowledged, {outcomes['fail']} "
        f"refused, {outcomes['info']} indeterminate",
        "  by node: "
        + ", ".join(
            f"{node} {by_node[node, 'ok']}/{by_node[node, 'fail']}/{by_node[node, 'info']}"
            for node in sorted(regions)
        )
        + " (acknowledged/refused/indeterminate)",
        "  by workload (sent: acknowledged/refused/indeterminate):",
    ]
    verdict = checked.appends
    if verdict is not None:
        sent = verdict.acknowledged + verdict.failed + verdict.indeterminate
        lines.append(
            f"  {'list-append':<12} append {sent}: "
            f"{verdict.acknowledged}/{verdict.failed}/{verdict.indeterminate} "
            f"({verdict.indeterminate_applied} indeterminate applied)"
        )
    for findings in checked.findings:
        lines += workload_lines(findings)
    lines += [*run.yjs_notes]
    lines += [
        f"read-your-writes across nodes: {run.read_backs} read back, "
        f"{run.read_back_not_reached} not reached in time (503), "
        f"{len(run.read_back_violations)} violations",
        "convergence after the heal: "
        + (
            f"{converged:.1f} s"
            if converged is not None
            else f"NOT within {options.converge_timeout:g} s"
        ),
        "memory (RSS): "
        + ", ".join(f"{n} {m:.0f} MB" if m is not None else f"{n} ?" for n, m in memory.items()),
        "",
    ]
    too_big = {n: m for n, m in memory.items() if m is not None and m > options.max_rss_mb}
    checks: list[tuple[str, bool, str]] = []
    if verdict is not None:
        checks.append(
            ("list-append: every acknowledged element exactly once on every holder, nothing "
             "refused or unwritten present", verdict.ok, "; ".join(verdict.problems()))
        )  # fmt: skip
    for findings in checked.findings:
        checks.append((PROMISES[findings.workload], findings.ok, "; ".join(findings.lines())))
    checks += [
        ("copies converged (equal digests on every holder)", converged is not None, ""),
        ("writes acknowledged on both sides of every partition, and elsewhere while a disk "
         "was full", not one_sided, "; ".join(one_sided)),
        ("read-your-writes with after= across nodes", not run.read_back_violations,
         "; ".join(run.read_back_violations[:5])),
        (f"every node under {options.max_rss_mb:g} MB of memory", not too_big, str(too_big)),
    ]  # fmt: skip
    passed = True
    for name, ok, why in checks:
        lines.append(
            f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {why}" if why and not ok else "")
        )
        passed = passed and ok
    lines += ["", f"history: {history}", f"verdict: {'PASS' if passed else 'FAIL'}"]
    return lines, passed


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
    with small_disk(options, root, list(regions), say) as disk:
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
    async with open_cluster(config, config_path, root / "nodes", secret) as cluster:
        await cluster.wait_ready(60)
        say(f"{len(cluster.nodes)} nodes up; running for {options.duration:g} s")
        run.started = time.monotonic()
        nemesis = Nemesis(cluster, run, rng, say, disk)
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
            await nemesis.heal_all()
            await cluster.observer.wait_healthy(60)
            await cluster.observer.wait_links_up(60)
            await asyncio.gather(*(client.final_sync(FINAL_SYNC_TIMEOUT) for client in yjs))
            collect_yjs(run, yjs)
            checked, converged = await converge(
                run, workload.http, workload.docs, options.converge_timeout
            )
        memory = {node_id: rss_mb(node) for node_id, node in cluster.nodes.items()}
    history = root / "history.jsonl"
    with history.open("w", encoding="utf-8") as out:
        for op in [*run.ops, *run.yjs_ops]:
            out.write(json.dumps(op.to_json()) + "\n")
        for fault in run.faults:
            out.write(json.dumps({"fault": fault.kind, "target": fault.target,
                                  "start": fault.start, "end": fault.end}) + "\n")  # fmt: skip
    lines, passed = report(run, checked, converged, regions, memory, history)
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
