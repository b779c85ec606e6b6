"""The whole cluster of one ``regions.toml`` on this machine, for ``meridian demo``.

Every listed node is a real ``meridian serve`` process on its listed (loopback) address.
Same-region nodes link directly; every cross-region link goes through a
:class:`~app.tools.wan.LinkProxy` of a :class:`~app.tools.wan.WanEmulator` running on the
caller's event loop, with the configured one-way latency: the node with the smaller id dials
the other (``--peer ACCEPTOR=PROXY``), so the proxy stands in front of the accepting node.

What the tour needs of a cluster is small (:class:`DemoCluster`: the topology, the nodes with
their ids, regions and URLs, a way to cut a region off); :class:`LocalCluster` here and
:class:`~app.tools.demo_attach.AttachedCluster` (a cluster already running, e.g. Docker Compose's)
provide it. :class:`Observer` holds what the tour and both clusters measure over HTTP.

Errors: :class:`DemoError` (a problem the user can act on: a port in use, a node that did
not start or exited; its message says which, with the node's output).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http.client
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import ClusterConfig, Member, parse_listen
from .wan import WanEmulator

__all__ = [
    "DemoCluster",
    "DemoNode",
    "Observer",
    "Copy",
    "DemoError",
    "LocalCluster",
    "LocalNode",
    "POLL",
    "PROGRESS_EVERY",
    "Response",
    "ACCESS_TOKEN",
    "http_request",
    "identical",
    "open_cluster",
]

#: Jitter added to every emulated link, in milliseconds.
JITTER_MS = 2.0
#: How often a node is asked whether a write reached it, in seconds.
POLL = 0.005
#: How long a node gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: A slow wait says how it is going this often, in seconds (nothing if it ends sooner).
PROGRESS_EVERY = 2.0


class DemoError(Exception):
    """A problem reported to the user in one message (the demo then stops and exits 1)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    #: Wall time from sending the request to reading the whole answer.
    seconds: float
    #: The answer's headers, names in lower case.
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def _request_blocking(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> Response:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, port = parse_listen(host_port)
    # http.client, not urllib: no proxy from the environment ever sits on a loopback call.
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request(method, "/" + path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Response(response.status, data, time.perf_counter() - started, headers)
    finally:
        connection.close()


#: The access token the demo sends with every request (None: none). Set once per run by
#: :func:`app.tools.demo.run_demo`; a context variable, so the tasks and worker threads that make
#: the requests see it without every call passing it along.
ACCESS_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "meridian_demo_access_token", default=None
)


async def http_request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    binary: bytes | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP request (in a worker thread); raises OSError when the node is unreachable."""
    headers: dict[str, str] = {}
    if token := ACCESS_TOKEN.get():
        headers["Authorization"] = f"Bearer {token}"
    body = binary
    if json_body is not None:
        body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    elif binary is not None:
        headers["Content-Type"] = "application/octet-stream"
    response = await asyncio.to_thread(_request_blocking, method, url, body, headers, timeout)
    if response.status in (401, 403):
        # The demo's token covers every document: a refusal is a setup problem, not a step.
        try:
            reason = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = response.body[:200].decode(errors="replace")
        raise DemoError(
            f"{method} {url} was refused ({response.status}: {reason}); the nodes require an "
            "access token: set MERIDIAN_TOKEN to one for every document with write access, "
            "or the cluster secret, from which the demo signs its own"
        )
    return response


@dataclass(frozen=True, slots=True)
class Copy:
    """One node's copy of one document, as ``GET /v1/docs/{id}?digest=true`` shows it."""

    #: 200, or the status of the refusal (404: this node holds no such document).
    status: int
    state_vector: str = ""
    #: SHA-256 of the canonical state: equal exactly when the copies' content is.
    digest: str = ""
    content: Any = None


def identical(copies: dict[str, Copy]) -> bool:
    """True when every node's copy is a 200 with the same state vector, digest and content."""
    first = next(iter(copies.values()))
    return first.status == 200 and all(copy == first for copy in copies.values())


class DemoNode(Protocol):
    """A node as the tour knows it."""

    @property
    def node_id(self) -> str: ...

    @property
    def region(self) -> str: ...

    #: ``http://host:port``, without a trailing slash.
    @property
    def url(self) -> str: ...


class DemoCluster(Protocol):
    """What the tour needs of a cluster: its topology, its nodes, and a partition control."""

    #: The topology: regions, latencies between them, replication timers.
    @property
    def config(self) -> ClusterConfig: ...

    #: node id -> node, in the topology's order.
    @property
    def nodes(self) -> Mapping[str, DemoNode]: ...

    async def wait_ready(self, timeout: float) -> tuple[float, float]:
        """Waits until every node is healthy, then until every peer link is up; returns the
        seconds each took. DemoError when a deadline passes or a node is not what it should be."""
        ...

    async def isolate(self, region: str) -> None:
        """Cuts every link between ``region`` and the other regions (links inside it stay)."""
        ...

    async def rejoin(self, region: str) -> None:
        """Undoes :meth:`isolate`."""
        ...


class _Ticker:
    """Says how a slow wait is going every PROGRESS_EVERY seconds (nothing if it ends sooner)."""

    def __init__(self, say: Callable[[str], None] | None, what: str) -> None:
        self.say, self.what = say, what
        self.started = self.last = time.perf_counter()

    def update(self, state: str) -> None:
        """Called on each poll with the state so far."""
        now = time.perf_counter()
        if self.say is not None and now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.say(f"  ... {self.what}: {state} ({now - self.started:.0f} s)")


class Observer:
    """What is measured over HTTP on a set of nodes: health, peer links, documents, copies.

    ``say``, when given, hears how each slow wait is going (see PROGRESS_EVERY).
    Every method raises OSError when a node cannot be reached (health waits excepted).
    """

    def __init__(self, nodes: Iterable[DemoNode], say: Callable[[str], None] | None = None) -> None:
        self.nodes = {node.node_id: node for node in nodes}
        self.say = say

    async def wait_healthy(
        self, timeout: float, check: Callable[[DemoNode, Response], None] | None = None
    ) -> None:
        """Waits until every node answers ``GET /v1/health`` with a 200; ``check`` is called
        with each node and its answer (and may raise DemoError). TimeoutError after
        ``timeout``, naming (``args[0]``) the first node still waited for."""
        pending = list(self.nodes.values())
        total = len(pending)
        ticker = _Ticker(self.say, "waiting for GET /v1/health")
        try:
            async with asyncio.timeout(timeout):
                while pending:
                    for node in list(pending):
                        with contextlib.suppress(OSError):
                            answer = await http_request("GET", node.url + "/v1/health", timeout=2)
                            if answer.status == 200:
                                if check is not None:
                                    check(node, answer)
                                pending.remove(node)
                    ticker.update(f"{total - len(pending)} of {total} nodes healthy")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise TimeoutError(pending[0].node_id) from None

    async def peer_states(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(node, peer) -> that node's ``/v1/cluster`` entry for the peer."""
        views = await asyncio.gather(
            *(http_request("GET", n.url + "/v1/cluster") for n in self.nodes.values())
        )
        return {
            (node_id, peer["node"]): peer
            for node_id, view in zip(self.nodes, views, strict=True)
            for peer in view.json()["peers"]
        }

    async def wait_links_up(self, timeout: float) -> None:
        """Waits until every node reports every peer link ``up``; TimeoutError after ``timeout``."""
        ticker = _Ticker(self.say, "waiting for the peer links")
        async with asyncio.timeout(timeout):
            while True:
                states = await self.peer_states()
                up = sum(peer["state"] == "up" for peer in states.values())
                if up == len(states):
                    return
                ticker.update(f"{up} of {len(states)} link ends up")
                await asyncio.sleep(0.05)

    async def wait_seen(
        self, node: DemoNode, doc: str, marker: str, since: float, timeout: float
    ) -> float | None:
        """Seconds from ``since`` (a ``time.perf_counter()``) until ``node``'s copy of ``doc``
        shows the text ``marker`` (polled every POLL); None if it did not within ``timeout``."""
        deadline = since + timeout
        while time.perf_counter() < deadline:
            answer = await http_request("GET", f"{node.url}/v1/docs/{doc}")
            if answer.status == 200 and marker.encode() in answer.body:
                return time.perf_counter() - since
            await asyncio.sleep(POLL)
        return None

    # -- comparing copies -----------------------------------------------------------------

    async def documents(self) -> list[str]:
        """The ids of the live documents any node lists, sorted."""

        async def listing(node: DemoNode) -> set[str]:
            ids: set[str] = set()
            cursor = ""
            while True:
                query = "?limit=1000" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
                page = (await http_request("GET", f"{node.url}/v1/docs{query}")).json()
                ids.update(doc["id"] for doc in page["documents"])
                cursor = page["next_cursor"]
                if not cursor:
                    return ids

        listings = await asyncio.gather(*(listing(node) for node in self.nodes.values()))
        return sorted(set().union(*listings))

    async def snapshot(self) -> dict[str, dict[str, Copy]]:
        """document -> node -> that node's own copy, for every document any node lists, on
        the nodes that hold it by placement (every node, for a document without placement)."""
        doc_ids = await self.documents()
        nodes = list(self.nodes.values())

        async def holders(doc_id: str) -> list[DemoNode]:
            answer = await http_request("GET", f"{nodes[0].url}/v1/docs/{doc_id}/placement")
            if answer.status != 200:
                return nodes
            names = set(answer.json()["holders"])
            return [node for node in nodes if node.node_id in names] or nodes

        async def copy(node: DemoNode, doc_id: str) -> Copy:
            url = f"{node.url}/v1/docs/{doc_id}?digest=true&local=true"
            answer = await http_request("GET", url)
            if answer.status != 200:
                return Copy(answer.status)
            view = answer.json()
            return Copy(200, view["state_vector"], view["digest"], view["content"])

        snapshot: dict[str, dict[str, Copy]] = {}
        for doc_id in doc_ids:
            held = await holders(doc_id)
            copies = await asyncio.gather(*(copy(node, doc_id) for node in held))
            snapshot[doc_id] = {n.node_id: c for n, c in zip(held, copies, strict=True)}
        return snapshot

    async def wait_converged(self, timeout: float) -> dict[str, dict[str, Copy]]:
        """Waits until every node holds identical copies of every document; returns them.
        TimeoutError after ``timeout``."""
        ticker = _Ticker(self.say, "waiting for identical copies")
        async with asyncio.timeout(timeout):
            while True:
                snapshot = await self.snapshot()
                same = sum(identical(copies) for copies in snapshot.values())
                if same == len(snapshot):
                    return snapshot
                ticker.update(f"{same} of {len(snapshot)} documents identical")
                await asyncio.sleep(0.02)

    async def wait_ready(
        self,
        timeout: float,
        *,
        check: Callable[[DemoNode, Response], None] | None = None,
        describe: Callable[[str, str], str] | None = None,
    ) -> tuple[float, float]:
        """:meth:`wait_healthy` (with ``check``), then :meth:`wait_links_up`; returns the
        seconds each took. DemoError when a deadline passes: ``describe(node_id, what)``
        words it for a node that is not healthy (default: "node_id what")."""
        started = time.perf_counter()
        try:
            await self.wait_healthy(timeout, check)
        except TimeoutError as exc:
            what = f"did not answer GET /v1/health within {timeout:g} s"
            node_id = exc.args[0]
            raise DemoError(describe(node_id, what) if describe else f"{node_id} {what}") from None
        healthy = time.perf_counter() - started
        try:
            await self.wait_links_up(timeout)
        except TimeoutError:
            down = [
                f"{a}->{b}: {peer['state']} ({peer['last_error']})"
                for (a, b), peer in (await self.peer_states()).items()
                if peer["state"] != "up"
            ]
            raise DemoError(f"peer links not up after {timeout:g} s: {'; '.join(down)}") from None
        return healthy, time.perf_counter() - started


@dataclass(slots=True)
class LocalNode:
    member: Member
    data_dir: Path
    #: ``--peer NODE=HOST:PORT`` arguments: the WAN proxies this node dials through.
    peer_args: list[str] = field(default_factory=list)
    #: More arguments of ``meridian serve`` (e.g. ``--max-protocol-version``).
    extra_args: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    #: The process's last lines of output (stdout and stderr), shown if it fails.
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    # Reads the process's output until it ends; awaited at stop.
    drain: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str:
        return self.member.node_id

    @property
    def region(self) -> str:
        return self.member.region

    @property
    def url(self) -> str:
        return f"http://{self.member.address}"

    def command(self, config_path: Path) -> list[str]:
        return [
            sys.executable, "-m", "app", "serve", "--region", self.region,
            "--listen", self.member.address, "--data", str(self.data_dir),
            "--config", str(config_path), "--log-level", "warning", *self.peer_args,
            *self.extra_args,
        ]  # fmt: skip

    def exit_failure(self) -> str:
        assert self.process is not None
        return self.describe_failure(f"exited with status {self.process.returncode}")

    def describe_failure(self, what: str) -> str:
        lines = "".join(f"  | {line}" for line in self.output) or "  | (no output)\n"
        return f"{self.node_id} {what}; its output:\n{lines.rstrip()}"


class LocalCluster:
    """The nodes of ``config`` as processes, and the WAN emulator between their regions: a
    :class:`DemoCluster`.

    Use :func:`open_cluster`; it starts everything and stops everything on exit.
    """

    def __init__(
        self,
        config: ClusterConfig,
        config_path: Path,
        data_root: Path,
        secret: str,
        say: Callable[[str], None] | None = None,
        *,
        links_inside_regions: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config, self.config_path = config, config_path.resolve()
        self.nodes = {
            m.node_id: LocalNode(m, data_root.resolve() / m.node_id, extra_args=[*extra_args])
            for m in config.members()
        }
        #: Whether links between two nodes of one region pass through the WAN emulator too
        #: (with no added latency), so that one node can be cut off from every other.
        self.links_inside_regions = links_inside_regions
        self.wan = WanEmulator()
        self.observer = Observer(self.nodes.values(), say)
        self._env = {**os.environ, config.secret_env: secret}

    def check_addresses(self) -> None:
        """Raises DemoError for a non-loopback address or a port already in use."""
        if not self.nodes:
            raise DemoError(f"{self.config.source} lists no nodes under [regions]")
        for node in self.nodes.values():
            host, port = parse_listen(node.member.address)
            try:
                loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise DemoError(
                    f"{node.node_id} is listed at {node.member.address}: the demo runs only on "
                    "loopback addresses (127.0.0.1, ::1)"
                )
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError:
                    raise DemoError(
                        f"port {port} is already in use ({node.member.address}, "
                        f"{node.node_id}): stop what listens there, or pass --config "
                        "with other addresses"
                    ) from None

    async def start(self) -> None:
        """Starts the WAN proxies, then every node process (without waiting for them)."""
        self.check_addresses()
        for dialer in self.nodes.values():
            for acceptor in self.nodes.values():
                inside = dialer.region == acceptor.region
                if (inside and not self.links_inside_regions) or dialer.node_id >= acceptor.node_id:
                    continue
                host, port = parse_listen(acceptor.member.address)
                latency = 0.0 if inside else self.config.latency_ms(dialer.region, acceptor.region)
                proxy = await self.wan.add_link(
                    dialer.region,
                    acceptor.region,
                    (host, port),
                    latency or 0.0,
                    0.0 if inside else JITTER_MS,
                    name=f"{dialer.node_id}->{acceptor.node_id}",
                    nodes=(dialer.node_id, acceptor.node_id),
                )
                proxy_host, proxy_port = proxy.address
                dialer.peer_args += ["--peer", f"{acceptor.node_id}={proxy_host}:{proxy_port}"]
        for node in self.nodes.values():
            await self.spawn(node)

    async def spawn(self, node: LocalNode) -> None:
        """Starts ``node``'s process (again, after it exited), without waiting for it."""
        try:
            node.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"cannot create {node.data_dir}: {exc.strerror}") from exc
        node.process = await asyncio.create_subprocess_exec(
            *node.command(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            # Its own process group: Ctrl-C reaches the demo, which stops the nodes in order.
            process_group=0,
        )
        node.drain = asyncio.create_task(self._drain(node), name=f"{node.node_id} output")

    @staticmethod
    async def _drain(node: LocalNode) -> None:
        assert node.process is not None and node.process.stdout is not None
        async for line in node.process.stdout:
            node.output.append(line.decode(errors="replace"))

    def running(self) -> list[LocalNode]:
        return [n for n in self.nodes.values() if n.process and n.process.returncode is None]

    async def wait_any_exit(self) -> LocalNode:
        """Returns the first node whose process exits (for the caller to report)."""
        waits = {
            asyncio.create_task(node.process.wait()): node
            for node in self.nodes.values()
            if node.process is not None
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        node = waits[done.pop()]
        await self.collect_output(node)
        return node

    async def wait_ready(self, timeout: float) -> tuple[float, float]:
        """See :meth:`DemoCluster.wait_ready`; a node that is not healthy in time is shown
        with its output. (The caller watches for a node exiting: :meth:`wait_any_exit`.)"""
        return await self.observer.wait_ready(
            timeout, describe=lambda node_id, what: self.nodes[node_id].describe_failure(what)
        )

    async def isolate(self, region: str) -> None:
        self.wan.isolate(region)

    async def rejoin(self, region: str) -> None:
        self.wan.rejoin(region)

    @staticmethod
    async def collect_output(node: LocalNode) -> None:
        """Waits (briefly) for the output of a node that exited to be read to its end."""
        if node.drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(node.drain), 2)

    async def aclose(self) -> None:
        """SIGTERM to every node, SIGKILL to those still running after STOP_TIMEOUT, then
        closes the WAN emulator."""

        async def stop(node: LocalNode) -> None:
            process = node.process
            if process is None:
                return
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            if node.drain is not None:
                await node.drain

        await asyncio.gather(*(stop(node) for node in self.nodes.values()))
        await self.wan.aclose()


@contextlib.asynccontextmanager
async def open_cluster(
    config: ClusterConfig,
    config_path: Path,
    data_root: Path,
    secret: str,
    say: Callable[[str], None] | None = None,
    *,
    links_inside_regions: bool = False,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[LocalCluster]:
    """Starts the proxies and processes of ``config``'s nodes; stops them all on exit (also
    when starting failed half-way); ``say`` hears how slow waits go. Raises DemoError (see
    :meth:`LocalCluster.check_addresses`). ``links_inside_regions`` and ``extra_args``: see
    :class:`LocalCluster` and :attr:`LocalNode.extra_args`."""
    cluster = LocalCluster(
        config,
        config_path,
        data_root,
        secret,
        say,
        links_inside_regions=links_inside_regions,
        extra_args=extra_args,
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.aclose()
