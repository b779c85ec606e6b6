"""``meridian demo``: the whole cluster of a ``regions.toml`` on this machine, and a guided tour
of geo-replication with CRDTs, every time in it measured.

The nodes are real ``meridian serve`` processes on their listed loopback addresses; the links
between regions go through the WAN emulator with the configured latencies
(:mod:`app.tools.demo_cluster`). With ``--attach`` the same tour runs against a cluster that is
already running (the Docker Compose one): its nodes at their URLs, the partition made through
the control listener of the WAN emulator service (:mod:`app.tools.demo_attach`). The tour talks to
the nodes over HTTP only, and depends on nothing but :class:`~app.tools.demo_cluster.DemoCluster`:

1. a write in each region (JSON operations, and a binary update from a pycrdt client) and how
   long until every other node shows it; durability=region/all; read-your-writes with after=;
2. a partition: the last region is cut off, both sides keep accepting writes, neither sees
   the other's, and ``/v1/cluster`` shows the link going down and lag growing;
3. the link restored: time until every copy is identical again;
4. the proof: every document's state vector, digest and JSON content on every node.

Then the local cluster keeps running until Ctrl-C or SIGTERM (unless ``--exit``); an attached
one is left as it was found (its WAN healed) when the tour ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pycrdt

from ..auth import create_token
from ..config import ClusterConfig, ConfigError, load_config, parse_listen
from .demo_attach import open_attached, parse_node_url
from .demo_cluster import (
    ACCESS_TOKEN,
    JITTER_MS,
    POLL,
    Copy,
    DemoCluster,
    DemoError,
    DemoNode,
    LocalCluster,
    Observer,
    Response,
    http_request,
    identical,
    open_cluster,
)
from .demo_placement import placement_step

__all__ = ["run_demo"]

#: The repository's topology, used when the current directory has no regions.toml.
_REPO_CONFIG = Path(__file__).resolve().parent.parent / "regions.toml"
#: Deadlines: nodes healthy and linked, one write seen everywhere, convergence after healing.
START_TIMEOUT, SEEN_TIMEOUT, CONVERGE_TIMEOUT = 60.0, 30.0, 60.0


def say(text: str = "") -> None:
    print(text, flush=True)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def ms(seconds: float) -> str:
    """A measured duration, to the precision that means something."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def _answer(response: Response) -> str:
    """A write's answer in one line: status, time, durability reached and where."""
    text = f"-> {response.status} in {ms(response.seconds)}"
    if response.status in (200, 202):
        body = response.json()
        reached = "" if body["durability"] == "local" else f"reached {body['durability']}, "
        text += f" ({reached}durable on {', '.join(body['durable_on'])})"
    return text


def _card(node: DemoNode, marker: str) -> dict[str, Any]:
    return {"op": "append", "path": ["items"], "values": [{"text": marker, "by": node.region}]}


class Tour:
    """The guided scenario over a started cluster; every step prints what it measured."""

    def __init__(self, cluster: DemoCluster) -> None:
        self.cluster = cluster
        self.nodes = list(cluster.nodes.values())
        self.observer = Observer(self.nodes, say)
        # The first node of each region: where that region's writes go.
        first: dict[str, DemoNode] = {}
        for node in self.nodes:
            first.setdefault(node.region, node)
        self.writers = list(first.values())
        # Makes this run's writes recognisable when --data holds earlier runs' documents.
        self.run = secrets.token_hex(2)

    def link(self, a: DemoNode, b: DemoNode) -> str:
        if a.region == b.region:
            return "direct"
        return f"WAN {self.cluster.config.latency_ms(a.region, b.region) or 0:g} ms"

    async def patch(self, node: DemoNode, doc: str, ops: list[Any], query: str = "") -> Response:
        url = f"{node.url}/v1/docs/{doc}{query}"
        return await http_request("PATCH", url, json_body={"ops": ops})

    async def show_spread(
        self, writer: DemoNode, doc: str, marker: str, since: float, timeout: float
    ) -> dict[str, float | None]:
        others = [n for n in self.nodes if n is not writer]
        times = await asyncio.gather(
            *(self.observer.wait_seen(n, doc, marker, since, timeout) for n in others)
        )
        seen = {n.node_id: t for n, t in zip(others, times, strict=True)}
        reached = [
            f"{n.node_id} {ms(t)} ({self.link(writer, n)})"
            for n, t in zip(others, times, strict=True)
            if t is not None
        ]
        parts = [f"seen on {' · '.join(reached)}"] if reached else []
        if missing := [node_id for node_id, t in seen.items() if t is None]:
            parts.append(f"NOT seen on {', '.join(missing)} within {timeout:g} s")
        say(f"{'':12}" + " · ".join(parts))
        return seen

    # -- healthy cluster: replication times, durability, read-your-writes -------------------

    async def writes(self) -> None:
        say("\n== 1. A write in each region, and how long until every other node shows it")
        say(f"      (GET polled every {ms(POLL)}; times from sending the write)")
        matrix: dict[str, dict[str, float | None]] = {}
        for node in self.writers:
            marker = f"{node.node_id} card {self.run}"
            started = time.perf_counter()
            answer = await self.patch(node, "board", [_card(node, marker)])
            say(f"{node.node_id:<12}PATCH /v1/docs/board append {marker!r} {_answer(answer)}")
            matrix[node.node_id] = await self.show_spread(
                node, "board", marker, started, SEEN_TIMEOUT
            )
        # A Yjs client (pycrdt; JavaScript Yjs works the same) edits its copy, sends the update.
        node = next((n for n in self.nodes if n not in self.writers), self.nodes[0])
        client: pycrdt.Doc[Any] = pycrdt.Doc()
        client.apply_update((await http_request("GET", f"{node.url}/v1/docs/board/update")).body)
        before = client.get_state()
        marker = f"Yjs client at {node.node_id} {self.run}"
        title = client.get("title", type=pycrdt.Text)
        title += marker + "; "
        update = client.get_update(before)
        started = time.perf_counter()
        answer = await http_request("POST", f"{node.url}/v1/docs/board/update", binary=update)
        say(f"{node.node_id:<12}a Yjs client (pycrdt) adds {marker!r} to the board's title:")
        say(f"{'':12}POST /v1/docs/board/update ({len(update)} bytes) {_answer(answer)}")
        matrix[node.node_id] = await self.show_spread(node, "board", marker, started, SEEN_TIMEOUT)
        say("\n  ms until seen  " + "".join(f"{n.node_id:>12}" for n in self.nodes))
        for writer, seen in matrix.items():
            cells = [
                "-" if n.node_id == writer
                else "never" if (t := seen[n.node_id]) is None
                else f"{t * 1000:.0f}"
                for n in self.nodes
            ]  # fmt: skip
            say(f"  from {writer:<10}" + "".join(f"{cell:>12}" for cell in cells))

    async def durability(self) -> None:
        say("\n== 2. Stronger acknowledgements: durability=region and durability=all")
        regions = [n.region for n in self.nodes]
        # durability=region needs two nodes in the writer's region.
        steps = [(n, "region") for n in self.writers if regions.count(n.region) > 1][:1]
        steps.append((self.writers[1 % len(self.writers)], "all"))
        for node, level in steps:
            op = {"op": "set", "path": ["settings", f"{level} {self.run}"], "value": node.node_id}
            answer = await self.patch(node, "settings", [op], f"?durability={level}")
            say(f"{node.node_id:<12}PATCH /v1/docs/settings?durability={level} {_answer(answer)}")

    async def read_your_writes(self) -> None:
        writer, reader = self.writers[0], self.writers[-1]
        say(f"\n== 3. Read-your-writes: write at {writer.node_id}, read at {reader.node_id}")
        marker = f"cart item {self.run}"
        op = {"op": "append", "path": ["items"], "values": [marker]}
        written = await self.patch(writer, "cart", [op])
        say(f"{writer.node_id:<12}PATCH /v1/docs/cart append {marker!r} {_answer(written)}")
        state_vector = written.json()["state_vector"]
        for query in ("", f"?after={urllib.parse.quote(state_vector)}"):
            answer = await http_request("GET", f"{reader.url}/v1/docs/cart{query}")
            has = answer.status == 200 and marker.encode() in answer.body
            shown = "?after=<its state vector>" if query else " (no after=)"
            verdict = "includes the write" if has else "does not include the write (yet)"
            say(f"{reader.node_id:<12}GET /v1/docs/cart{shown} -> {answer.status} in "
                f"{ms(answer.seconds)}: {verdict}")  # fmt: skip

    # -- a partition and its healing --------------------------------------------------------

    async def partition(self) -> None:
        region = self.writers[-1].region
        inside = [n for n in self.nodes if n.region == region]
        outside = [n for n in self.nodes if n.region != region]
        say(f"\n== 5. Partition: {region} is cut off from the other regions (WAN links blackholed)")
        await self.cluster.isolate(region)
        # Both sides notice first: until then a write for a document held across the cut is
        # forwarded into the blackhole and waits for placement.forward_timeout.
        await self.watch_link(outside[0], inside[0])
        watch = max(1.0, 3 * max(self.cluster.config.latencies_ms.values(), default=0) / 1000)
        for node in (inside[0], outside[0]):
            marker = f"{node.node_id} partition card {self.run}"
            started = time.perf_counter()
            answer = await self.patch(node, "board", [_card(node, marker)])
            say(f"{node.node_id:<12}PATCH /v1/docs/board append {marker!r} {_answer(answer)}")
            await self.show_spread(node, "board", marker, started, watch)
        node = outside[0]
        answer = await self.patch(
            node, "board", [_card(node, f"durable {self.run}")], "?durability=all&timeout=1"
        )
        say(f"{node.node_id:<12}PATCH /v1/docs/board?durability=all&timeout=1 {_answer(answer)}")
        say(f"{'':12}(the write stays: a CRDT is not undone; the answer says how far it got)")

    async def watch_link(self, a: DemoNode, b: DemoNode) -> None:
        """Prints both ends' /v1/cluster view of the a-b link each second until both say it is
        not up."""
        say(f"GET /v1/cluster each second: {a.node_id}'s link to {b.node_id} | and back")
        config = self.cluster.config.replication
        started = time.perf_counter()
        deadline = started + 3 * config.link_timeout + 10
        while time.perf_counter() < deadline:
            await asyncio.sleep(1.0)
            states = await self.observer.peer_states()
            views = [states[(a.node_id, b.node_id)], states[(b.node_id, a.node_id)]]
            line = " | ".join(
                f"{p['state']:<10} lag {p['lag_seconds']:4.1f} s, "
                f"deltas waiting: {p['buffered']['deltas'] + p['buffered']['in_flight']}"
                for p in views
            )
            say(f"  t+{time.perf_counter() - started:4.1f} s  {line}")
            if all(p["state"] != "up" for p in views):
                took = ms(time.perf_counter() - started)
                say(f"{'':12}link down on both ends after {took} of watching "
                    f"(replication.link_timeout = {config.link_timeout:g} s)")  # fmt: skip
                return
        say(f"{'':12}the link still reports up after {time.perf_counter() - started:.0f} s")

    async def heal(self) -> None:
        region = self.writers[-1].region
        say(f"\n== 6. Link restored: {region} rejoins")
        started = time.perf_counter()
        await self.cluster.rejoin(region)
        say(f"{'':12}waiting for every peer link up and every copy identical...")

        async def timed(wait: Coroutine[Any, Any, Any]) -> float | None:
            try:
                await wait
            except TimeoutError:
                return None
            return time.perf_counter() - started

        up, converged = await asyncio.gather(
            timed(self.observer.wait_links_up(CONVERGE_TIMEOUT)),
            timed(self.observer.wait_converged(CONVERGE_TIMEOUT)),
        )
        results = [("every copy identical", converged), ("every peer link up", up)]
        for what, took in sorted(results, key=lambda item: item[1] or CONVERGE_TIMEOUT):
            say(f"{what} after {ms(took)}" if took else f"NOT {what} after {CONVERGE_TIMEOUT:g} s")
        states = await self.observer.peer_states()
        for node in (n for n in self.nodes if n.region == region):
            for (owner, peer), view in states.items():
                if owner == node.node_id:
                    ae = view["anti_entropy"]
                    say(
                        f"  {owner} <-> {peer:<12} anti-entropy rounds={ae['rounds']} last "
                        f"checked={ae['last_checked']} repaired={ae['last_repaired']}"
                    )

    # -- the proof ----------------------------------------------------------------------------

    async def proof(self) -> bool:
        say("\n== 7. Proof: every copy of every document on its holders, compared in full")
        snapshot = await self.observer.snapshot()
        say(f"  {'document':<12}{'node':<13}{'state vector':<22}{'digest':<16}JSON content")
        for doc_id, copies in snapshot.items():
            first = next(iter(copies.values()))
            for node_id, copy in copies.items():
                say(f"  {doc_id:<12}{node_id:<13}{_cell(copy, first)}")
        board = next(iter(snapshot.get("board", {}).values()), Copy(404))
        if board.status == 200:
            cards = [item.get("text") for item in board.content.get("items", [])]
            say(f"  board items, the same everywhere: {cards}")
        different = [doc_id for doc_id, copies in snapshot.items() if not identical(copies)]
        total = sum(len(copies) for copies in snapshot.values())
        if different:
            say(f"COPIES DIFFER: {', '.join(different)}")
            return False
        say(f"all {total} copies identical ({len(snapshot)} documents, each on its holders): "
            "same state vectors, digests and JSON content")  # fmt: skip
        return True


def _cell(copy: Copy, first: Copy) -> str:
    if copy.status != 200:
        return f"(HTTP {copy.status})"
    same = "same" if copy.content == first.content else "DIFFERENT"
    return f"{_prefix(copy.state_vector, 16):<22}{_prefix(copy.digest, 12):<16}{same}"


def _prefix(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length] + "..."


async def _tour(cluster: DemoCluster, wait: bool) -> int:
    """Waits for the cluster, tours, and (with ``wait``) waits forever: the caller cancels it."""
    say(f"\nwaiting for {plural(len(cluster.nodes), 'node')} to be healthy and linked...")
    healthy, linked = await cluster.wait_ready(START_TIMEOUT)
    links = len(cluster.nodes) * (len(cluster.nodes) - 1) // 2
    say(f"{plural(len(cluster.nodes), 'node')} healthy after {healthy:.2f} s; "
        f"{plural(links, 'peer link')} up after {linked:.2f} s")  # fmt: skip
    tour = Tour(cluster)
    await tour.writes()
    await tour.durability()
    await tour.read_your_writes()
    await placement_step(cluster, say)
    if len(tour.writers) > 1:
        await tour.partition()
        await tour.heal()
    same = await tour.proof()
    if not wait:
        return 0 if same else 1
    say("\nThe cluster keeps running. Open a node in a browser for its dashboard:")
    for node in cluster.nodes.values():
        say(f"  {node.node_id:<12}{node.url}/   (API docs: {node.url}/docs)")
    say("Press Ctrl-C to stop it.")
    forever: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    return await forever  # cancelled by _run_tour on a signal or a node's exit


async def _run_tour(
    cluster: DemoCluster,
    wait: bool,
    stop: asyncio.Event,
    failure: Coroutine[Any, Any, str] | None,
) -> int:
    """Runs the tour until it ends, ``failure`` (something the demo owns broke) gives the
    message to report, or ``stop`` is set (a signal). Returns the exit status; raises
    DemoError for a failure or a node that stopped answering."""
    tour = asyncio.create_task(_tour(cluster, wait), name="demo tour")
    stopped = asyncio.create_task(stop.wait(), name="demo stop signal")
    tasks: set[asyncio.Task[Any]] = {tour, stopped}
    failed = None
    if failure is not None:
        failed = asyncio.create_task(failure, name="demo failure")
        tasks.add(failed)
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if failed is not None and tour.done() and isinstance(tour.exception(), OSError):
        # A node stopped answering: give its exit a moment to be noticed, to report it.
        await asyncio.wait({failed}, timeout=2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if failed is not None and failed.done() and not failed.cancelled():
        raise DemoError(failed.result())
    if tour.cancelled():
        # Stopped by a signal: a clean stop, unless the proof was still due (--exit).
        return 0 if wait else 130
    try:
        return tour.result()
    except OSError as exc:
        raise DemoError(f"a node stopped answering: {exc}") from exc


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT and SIGTERM set, while the block runs (on the running loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _describe(cluster: LocalCluster, data: str) -> None:
    config = cluster.config
    say(f"Meridian demo: cluster {config.name!r} of {cluster.config_path}")
    _describe_regions(cluster)
    pairs = " · ".join(
        f"{a}<->{b} {latency:g} ms" for (a, b), latency in config.latencies_ms.items()
    )
    say(f"  emulated WAN, one way (±{JITTER_MS:g} ms jitter): {pairs or 'none configured'}")
    say(f"  data: {data}")
    for node in cluster.nodes.values():
        pid = node.process.pid if node.process else "-"
        arguments = " ".join(node.command(cluster.config_path)[4:])
        say(f"  {node.node_id:<12}pid {pid}  $ meridian serve {arguments}")


def _describe_regions(cluster: DemoCluster) -> None:
    nodes = cluster.nodes.values()
    regions = " · ".join(
        f"{name} ({', '.join(n.node_id for n in nodes if n.region == name)})"
        for name in cluster.config.regions
    )
    say(f"  {len(nodes)} nodes in {len(cluster.config.regions)} regions: {regions}")


async def _main(
    config: ClusterConfig, config_path: Path, data: Path, label: str, wait: bool
) -> int:
    """Runs the demo until it ends, a node exits, or SIGINT/SIGTERM; always stops the nodes."""
    secret = os.environ.get(config.secret_env) or secrets.token_urlsafe(32)
    ACCESS_TOKEN.set(access_token(secret))
    try:
        with _stop_on_signals() as stop:
            say(f"starting {plural(len(config.members()), 'node')} and the WAN emulator...")
            async with open_cluster(config, config_path, data, secret, say) as cluster:
                _describe(cluster, label)
                exited = _exit_failure(cluster)
                status = await _run_tour(cluster, wait, stop, exited)
                say(f"\nstopping {len(cluster.running())} nodes...")
    except DemoError as exc:
        print(f"meridian demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    codes = ", ".join(
        f"{n.node_id} {n.process.returncode}" for n in cluster.nodes.values() if n.process
    )
    say(f"all nodes stopped (exit status: {codes}); WAN emulator closed")
    return status


async def _exit_failure(cluster: LocalCluster) -> str:
    return (await cluster.wait_any_exit()).exit_failure()


async def _attach_main(
    config: ClusterConfig, config_path: Path, urls: dict[str, str], wan_control: tuple[str, int]
) -> int:
    """Tours a running cluster once; the WAN is healed however it ends (SIGINT/SIGTERM too)."""
    ACCESS_TOKEN.set(access_token(os.environ.get(config.secret_env)))
    try:
        with _stop_on_signals() as stop:
            async with open_attached(
                config, urls=urls, wan_control=wan_control, say=say
            ) as cluster:
                say(f"Meridian demo: attached to cluster {config.name!r} of {config_path}")
                _describe_regions(cluster)
                for node in cluster.nodes.values():
                    say(f"  {node.node_id:<12}{node.url}")
                host, port = wan_control
                say(f"  WAN emulator control: {host}:{port} (where the partition is made)")
                status = await _run_tour(cluster, False, stop, None)
    except DemoError as exc:
        print(f"meridian demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    say("\nthe cluster is left running, its WAN healed")
    return status


def access_token(secret: str | None) -> str | None:
    """The token the demo sends: ``MERIDIAN_TOKEN`` when set (it must cover every document and
    allow writes); else one for every document signed with the cluster secret when it is
    known (valid for a day); else None. Nodes that require no token ignore it."""
    if token := os.environ.get("MERIDIAN_TOKEN"):
        return token
    if not secret:
        return None
    return create_token(
        secret.encode(), prefix="", rights={"read", "write"}, ttl_seconds=86_400, subject="demo"
    )


def find_config(path: str | None) -> Path:
    """``path``; else ./regions.toml; else the repository's. Raises DemoError if none exists."""
    if path is not None:
        return Path(path)
    for candidate in (Path("regions.toml"), _REPO_CONFIG):
        if candidate.is_file():
            return candidate
    raise DemoError("no regions.toml in the current directory: pass --config FILE")


def run_demo(
    *,
    config: str | None,
    data: str | None,
    wait: bool,
    attach: bool = False,
    nodes: list[str] | None = None,
    wan_control: str | None = None,
) -> int:
    """Runs ``meridian demo``; returns the exit status (0, 1 for a failure, 2 for a bad
    configuration or bad arguments, 130 when interrupted before the proof in ``--exit`` mode
    or in ``attach`` mode).

    ``attach``: tour the running cluster of ``config`` instead of starting one; ``nodes`` are
    ``NODE_ID=URL`` overrides of the listed addresses, ``wan_control`` the ``HOST:PORT`` of
    the WAN emulator service's control listener.
    """
    # The emulator's connection notes (refused while nodes start, reset as they stop) are
    # expected here, not news.
    logging.getLogger("meridian.wan").setLevel(logging.WARNING)
    try:
        if not attach and (nodes or wan_control is not None):
            raise DemoError("--node and --wan-control go with --attach")
        if attach and data is not None:
            raise DemoError("--data is for the local demo: an attached cluster keeps its own")
        if attach and wan_control is None:
            raise DemoError(
                "--attach needs --wan-control HOST:PORT (the control listener of "
                "python -m app.tools.wan_service) for the partition step"
            )
        config_path = find_config(config)
        cluster_config = load_config(config_path)
        if attach:
            assert wan_control is not None
            try:
                control = parse_listen(wan_control)
            except ConfigError as exc:
                raise DemoError(f"--wan-control: {exc}") from None
            try:
                urls = dict(parse_node_url(value) for value in nodes or [])
            except ValueError as exc:
                raise DemoError(f"--node {exc}") from None
    except (DemoError, ConfigError) as exc:
        print(f"meridian demo: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if attach:
        return asyncio.run(_attach_main(cluster_config, config_path, urls, control))
    if data is not None:
        return asyncio.run(_main(cluster_config, config_path, Path(data), data, wait))
    with tempfile.TemporaryDirectory(prefix="meridian-demo-") as temp:
        label = f"{temp} (temporary, deleted at exit)"
        return asyncio.run(_main(cluster_config, config_path, Path(temp), label, wait))
