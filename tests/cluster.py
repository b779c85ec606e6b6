"""Test support for clusters: real ``meridian serve`` processes on loopback, their peer links
through the WAN emulator (:mod:`app.tools.wan`), which runs on an event loop in a thread here.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.tools.wan import WanEmulator

from .support import TIMEOUT_FACTOR, NodeProcess, wait_for

T = TypeVar("T")

SECRET = "test-cluster-secret"

#: Replication settings that make tests quick: fast heartbeats, quick redial, frequent
#: anti-entropy (each is a documented key of [replication]).
FAST = {
    "heartbeat_interval": 0.2,
    "link_timeout": 1.5,
    "reconnect_min": 0.05,
    "reconnect_max": 0.5,
    "anti_entropy_interval": 1.0,
    "durability_timeout": 5.0,
    "after_timeout": 5.0,
}


#: Ports free_port() returned in this process: the callers bind them later, all at once,
#: so the same port must never be handed out twice (the kernel may offer it again once the
#: probing socket is closed).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that this process was not given before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class ThreadedWan:
    """A :class:`WanEmulator` on its own event loop in a background thread."""

    def __init__(self, seed: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.wan = WanEmulator(seed=seed)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def do(self, action: Callable[[], T]) -> T:
        async def run() -> T:
            return action()

        return self.call(run())

    def close(self) -> None:
        self.call(self.wan.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Member:
    node_id: str
    region: str
    port: int
    process: NodeProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30 * TIMEOUT_FACTOR)


class Cluster:
    """Nodes of several regions on loopback; cross-region peer links go through the WAN
    emulator (``latency_ms`` one way) so tests can cut and heal them."""

    def __init__(
        self,
        root: Path,
        layout: dict[str, int],
        *,
        latency_ms: float = 5.0,
        replication: dict[str, Any] | None = None,
        storage: dict[str, Any] | None = None,
        seed: int = 0,
        auth: bool = False,
        placement: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.members: dict[str, Member] = {}
        for region, count in layout.items():
            for index in range(1, count + 1):
                node_id = f"{region}-{index}"
                self.members[node_id] = Member(node_id, region, free_port())
        self.config = root / "regions.toml"
        # Every node holds every document unless a test asks for placement.
        everywhere = {"replicas": len(layout), "nodes_per_region": max(layout.values())}
        toml = self._toml(
            layout,
            latency_ms,
            {**FAST, **(replication or {})},
            storage or {},
            everywhere if placement is None else placement,
        )
        # auth: clients need access tokens signed with SECRET.
        self.config.write_text(toml + ("\n[auth]\nrequired = true\n" if auth else ""))
        self.wan = ThreadedWan(seed)
        self.latency_ms = latency_ms
        self.peer_args: dict[str, list[str]] = {node: [] for node in self.members}
        self.rng = random.Random(seed)
        #: Per-node cluster secrets (default: SECRET), to test refusals.
        self.secrets: dict[str, str] = {}
        #: Per-node extra `meridian serve` arguments, for the node's next start.
        self.node_args: dict[str, list[str]] = {node: [] for node in self.members}

    def _toml(
        self,
        layout: dict[str, int],
        latency: float,
        replication: dict[str, Any],
        storage: dict[str, Any],
        placement: dict[str, Any],
    ) -> str:
        lines = ['[cluster]\nname = "test"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
        lines.append("[placement]")
        lines += [f"{key} = {value}" for key, value in placement.items()]
        lines.append("")
        lines.append("[replication]")
        lines += [f"{key} = {value}" for key, value in replication.items()]
        if storage:
            lines.append("\n[storage]")
            lines += [f"{key} = {value}" for key, value in storage.items()]
        for region in layout:
            nodes = [f'"127.0.0.1:{m.port}"' for m in self.members.values() if m.region == region]
            lines.append(f"\n[regions.{region}]\nnodes = [{', '.join(nodes)}]")
        lines.append("\n[latency]")
        regions = list(layout)
        for i, a in enumerate(regions):
            for b in regions[i + 1 :]:
                lines.append(f'"{a}:{b}" = {latency}')
        return "\n".join(lines) + "\n"

    def start(self, *, skip: tuple[str, ...] = ()) -> Cluster:
        # One proxy per cross-region pair of nodes, in front of the node that accepts.
        for dialer in self.members.values():
            for acceptor in self.members.values():
                if dialer.region == acceptor.region or dialer.node_id >= acceptor.node_id:
                    continue
                proxy = self.wan.call(
                    self.wan.wan.add_link(
                        dialer.region,
                        acceptor.region,
                        ("127.0.0.1", acceptor.port),
                        self.latency_ms,
                        name=f"{dialer.node_id}->{acceptor.node_id}",
                    )
                )
                host, port = proxy.address
                self.peer_args[dialer.node_id] += ["--peer", f"{acceptor.node_id}={host}:{port}"]
        for member in self.members.values():
            if member.node_id not in skip:
                self.start_node(member.node_id)
        return self

    def start_node(self, node_id: str) -> NodeProcess:
        member = self.members[node_id]
        process = NodeProcess(
            self.root / node_id,
            region=member.region,
            listen=f"127.0.0.1:{member.port}",
            config=self.config,
            env={"MERIDIAN_CLUSTER_SECRET": self.secrets.get(node_id, SECRET)},
            extra=[*self.peer_args[node_id], *self.node_args[node_id]],
        )
        member.process = process.start()
        return process

    def kill(self, node_id: str) -> None:
        process = self.members[node_id].process
        assert process is not None
        process.kill()

    def close(self) -> None:
        for member in self.members.values():
            if member.process is not None:
                member.process.close()
        self.wan.close()

    def __getitem__(self, node_id: str) -> Member:
        return self.members[node_id]

    def running(self) -> list[Member]:
        return [
            m
            for m in self.members.values()
            if m.process is not None and m.process.process is not None
            if m.process.process.poll() is None
        ]

    # -- observing ----------------------------------------------------------------------

    def cluster_view(self, node_id: str) -> dict[str, Any]:
        with self[node_id].client() as client:
            view: dict[str, Any] = client.get("/v1/cluster").json()
            return view

    def wait_links_up(self, timeout: float = 30) -> None:
        def all_up() -> bool:
            for member in self.running():
                peers = self.cluster_view(member.node_id)["peers"]
                running = {m.node_id for m in self.running()}
                if any(p["state"] != "up" for p in peers if p["node"] in running):
                    return False
            return True

        wait_for(all_up, timeout=timeout, what="every peer link up")

    def documents(self, node_id: str) -> dict[str, int]:
        """id -> incarnation of every live document at a node."""
        result: dict[str, int] = {}
        cursor = None
        with self[node_id].client() as client:
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = client.get("/v1/docs", params=params).json()
                result.update({d["id"]: d["incarnation"] for d in page["documents"]})
                cursor = page["next_cursor"]
                if not cursor:
                    return result

    def snapshot(self, node_id: str, doc_ids: list[str]) -> dict[str, Any]:
        """For each document: (state vector, digest of the canonical state, JSON content)."""
        out: dict[str, Any] = {}
        with self[node_id].client() as client:
            for doc_id in doc_ids:
                view = client.get(f"/v1/docs/{doc_id}", params={"digest": "true"})
                if view.status_code != 200:
                    out[doc_id] = view.status_code
                    continue
                body = view.json()
                out[doc_id] = (body["state_vector"], body["digest"], body["content"])
        return out

    def wait_converged(self, timeout: float = 60) -> dict[str, Any]:
        """Waits until every running node lists the same documents with the same state
        vectors and content; returns that common snapshot."""
        last: list[Any] = []

        def same() -> dict[str, Any] | None:
            members = self.running()
            listings = [self.documents(m.node_id) for m in members]
            if any(listing != listings[0] for listing in listings):
                last[:] = [("listings differ", [len(x) for x in listings])]
                return None
            ids = sorted(listings[0])
            snaps = [self.snapshot(m.node_id, ids) for m in members]
            if any(snap != snaps[0] for snap in snaps):
                diff = [d for d in ids if len({repr(s.get(d)) for s in snaps}) > 1]
                last[:] = [("documents differ", diff[:5])]
                return None
            return snaps[0] or {"": None}

        try:
            return wait_for(same, timeout=timeout, what="the cluster to converge")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
