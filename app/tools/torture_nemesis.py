"""The torture run's nemesis: one fault at a time on a :class:`LocalCluster`, each held a few
seconds and healed before the next.

Faults (:data:`FAULTS`):

* ``partition``: a region cut off from the others (its nodes still reach each other);
* ``node-partition``: one node cut off from every other node, its own region's included
  (clients still reach it: what it accepts meanwhile is kept as hints);
* ``bridge``: two regions cut apart, both still reaching the third;
* ``one-way``: the traffic from one region to another cut, the other direction flowing;
* ``kill``: SIGKILL of a node, started again at the heal;
* ``pause``: SIGSTOP of a node, SIGCONT at the heal;
* ``restart``: SIGTERM of a node, started again at the heal;
* ``rolling``: every node in turn stopped with SIGTERM and started again, each healthy
  before the next stops;
* ``upgrade``: a rolling upgrade. Every node starts as the previous release, its peer
  protocol held one version back (``--max-protocol-version``); at a random time early
  enough for it, each node in turn is stopped and started as this release. Once per run,
  in runs of :data:`ROLLING_SECONDS` and more;
* ``disk-full``: one node's data directory, a small filesystem of its own, filled up;
  emptied at the heal.

Node-level cuts need every link between two nodes to pass through the WAN emulator, those
inside a region included (with no added latency): the run opens its cluster so.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..replication import PROTOCOL_VERSIONS
from .demo_cluster import LocalCluster, LocalNode

__all__ = ["FAULTS", "HELD_BACK_VERSION", "Fault", "Nemesis", "held_back", "small_disk"]

#: The faults the nemesis draws from.
FAULTS = (
    "partition", "node-partition", "bridge", "one-way", "kill", "pause", "restart", "rolling",
    "upgrade", "disk-full",
)  # fmt: skip
#: The highest peer protocol version of "the previous release" the ``upgrade`` fault starts
#: from.
HELD_BACK_VERSION = PROTOCOL_VERSIONS[1] - 1
#: Size of the filesystem of the node whose disk the ``disk-full`` fault fills.
SMALL_DISK_MB = 128
#: Seconds of the run a rolling restart needs at least (it is not drawn with less left).
ROLLING_SECONDS = 30.0
#: The seconds at the end of the run in which no fault starts.
LAST_QUIET = 8.0


def held_back(kinds: tuple[str, ...], duration: float) -> list[str]:
    """The arguments every node starts with: with the ``upgrade`` fault in a run long enough
    for it, those of the previous release (its peer protocol held one version back)."""
    if "upgrade" in kinds and duration >= ROLLING_SECONDS + LAST_QUIET:
        return ["--max-protocol-version", str(HELD_BACK_VERSION)]
    return []


@dataclass(slots=True)
class Fault:
    kind: str
    target: str
    start: float
    end: float | None = None


class Nemesis:
    """One fault at a time on ``cluster``, drawn with ``rng`` from ``kinds``; each one is
    appended to ``faults`` with its times by ``clock`` (seconds into the run)."""

    def __init__(
        self,
        cluster: LocalCluster,
        kinds: tuple[str, ...],
        faults: list[Fault],
        clock: Callable[[], float],
        rng: random.Random,
        say: Callable[[str], None],
        small_disk: tuple[str, Path] | None = None,
    ) -> None:
        self.cluster = cluster
        self.faults = faults
        self.clock = clock
        self.rng = rng
        self.say = say
        #: The node whose data directory is a small filesystem of its own, and that directory:
        #: the ``disk-full`` fault fills it.
        self.small_disk = small_disk
        regions = sorted({node.region for node in cluster.nodes.values()})
        self.regions = regions
        # Faults between regions need two of them (a bridge three), between nodes two nodes.
        self.kinds = [
            kind
            for kind in kinds
            if not (kind in ("partition", "one-way") and len(regions) < 2)
            and not (kind == "bridge" and len(regions) < 3)
            and not (kind == "node-partition" and len(cluster.nodes) < 2)
            and not (kind == "disk-full" and small_disk is None)
        ]

    async def loop(self, until: float) -> None:
        """Faults until ``until`` (seconds of the run); each healed before the next."""
        # The rolling upgrade, once, at a time that leaves it room (nodes held back by
        # held_back() for runs this long).
        upgrade = "upgrade" in self.kinds and until >= ROLLING_SECONDS + LAST_QUIET
        upgrade_at = self.rng.uniform(0, until - ROLLING_SECONDS - LAST_QUIET) if upgrade else 0
        kinds = [kind for kind in self.kinds if kind != "upgrade"]
        while (kinds or upgrade) and self.clock() < until - LAST_QUIET:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            if upgrade and self.clock() >= upgrade_at:
                await self.rolling_restart(upgrade=True)
                upgrade = False  # every node runs this release from now on
                continue
            if not kinds:
                continue
            kind = self.rng.choice(kinds)
            hold = self.rng.uniform(3.0, 6.0)
            if kind == "rolling":
                if until - self.clock() >= ROLLING_SECONDS:
                    await self.rolling_restart()
                continue
            await self.inject(kind, hold)

    async def rolling_restart(self, *, upgrade: bool = False) -> None:
        """Every node in turn: SIGTERM, started again (as this release with ``upgrade``),
        healthy before the next one."""
        kind = "upgrade" if upgrade else "rolling"
        fault = Fault(kind, "every node, one at a time", self.clock())
        self.faults.append(fault)
        what = f"upgrade to peer protocol {PROTOCOL_VERSIONS[1]}" if upgrade else "restart"
        self.say(f"  t={fault.start:6.1f}s  rolling {what} of every node")
        for node_id in sorted(self.cluster.nodes):
            node = self.cluster.nodes[node_id]
            await _signal(node, signal.SIGTERM)
            if upgrade:
                node.extra_args = []
            await self._start(node_id)
            await self._healthy(node_id)
        fault.end = self.clock()

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
        elif kind == "node-partition":
            target, heal = node, lambda: wan.rejoin_node(node)
            wan.isolate_node(node)
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
        fault = Fault(kind, target, self.clock())
        self.faults.append(fault)
        self.say(f"  t={fault.start:6.1f}s  {kind} {target} for {hold:.1f} s")
        await asyncio.sleep(hold)
        result = heal()
        if asyncio.iscoroutine(result):
            await result
        fault.end = self.clock()

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
    kinds: tuple[str, ...], seed: int, root: Path, nodes: list[str], say: Callable[[str], None]
) -> Iterator[tuple[str, Path] | None]:
    """For the ``disk-full`` fault: one node's data directory on a filesystem of its own
    (a tmpfs of :data:`SMALL_DISK_MB`), or None when this machine cannot mount one (the
    fault is then not drawn, and the report says so)."""
    if "disk-full" not in kinds or not nodes:
        yield None
        return
    node = random.Random(f"{seed}/disk").choice(sorted(nodes))
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
        # The node's files outlive the filesystem, for a failed run's evidence (the whole
        # data root goes with a passing run); the ballast stays behind.
        kept = directory.with_name(f"{node}.kept")
        with contextlib.suppress(OSError):
            shutil.copytree(directory, kept, ignore=shutil.ignore_patterns("ballast"))
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)
        if kept.exists():
            with contextlib.suppress(OSError):
                directory.rmdir()
                kept.rename(directory)


async def _signal(node: LocalNode, signum: int) -> None:
    process = node.process
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        if signum == signal.SIGKILL:
            await process.wait()
