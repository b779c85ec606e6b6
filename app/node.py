"""A node: the composition root of one ``meridian serve`` process.

:func:`open_node` builds every long-lived part once, in order, and closes them in reverse: it
takes the data directory's lock (so two processes never share a DuckDB file), opens the
document store and its placement catalog, starts replication with the other nodes (when
there are any), and opens the hub of live clients, wired to replication for presence. The
HTTP app's lifespan (:mod:`app.http`) owns the node; nothing else builds these parts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from crdt import DocumentStore, StorageLocked, open_store

from .cluster.catalog import PlacementCatalog, topology_of
from .cluster.followers import FollowSettings, ReadTracker
from .cluster.handoff import Handoff, open_handoff
from .cluster.joining import join_cluster
from .cluster.members import MEMBERS_FILE, MemberList, listed_entries
from .cluster.placement import Topology
from .config import ConfigError, NodeSettings
from .replication import Replicator, open_replicator
from .sync import Hub
from .version import VERSION

__all__ = ["VERSION", "Node", "lock_data_dir", "open_node"]

log = logging.getLogger("meridian.node")


@dataclass(slots=True)
class Node:
    settings: NodeSettings
    store: DocumentStore
    started_at: float
    #: Where every document lives (placement records, the topology).
    catalog: PlacementCatalog
    #: Live clients (sync and event streams).
    hub: Hub
    #: Replication with the other nodes; None for a standalone node.
    replicator: Replicator | None = None
    #: Moves copies to their holders; None without replication or placement.
    handoff: Handoff | None = None
    #: Reads forwarded and follower copies' accesses: copies follow readers.
    reads: ReadTracker = field(default_factory=lambda: ReadTracker(FollowSettings()))
    #: The member list; None for a standalone node.
    members: MemberList | None = None

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    @property
    def region(self) -> str:
        return self.settings.region


@contextlib.contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[IO[str]]:
    """Holds an exclusive lock on ``data_dir`` (flock on ``meridian.lock``, which records the
    holder's pid); raises StorageLocked when another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "meridian.lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the node's life
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StorageLocked(
                f"data directory {data_dir} is in use by another Meridian process (pid {holder})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield handle
    finally:
        handle.close()


def _base_topology(settings: NodeSettings) -> Topology:
    """Regions, latencies, replicas and nodes per region of ``regions.toml`` (members come
    from the member list)."""
    cluster = settings.cluster
    return Topology(
        regions=tuple(sorted({*cluster.regions, settings.region})),
        latency_ms=dict(cluster.latencies_ms),
        replicas=cluster.replicas,
        nodes_per_region=cluster.nodes_per_region,
    )


def _member_list(settings: NodeSettings) -> MemberList | None:
    """The node's member list: for a listed node, a joining one, or one that joined before
    (its data directory keeps the list); None for a standalone node, and for a node without
    the cluster secret (alone in regions.toml: nobody could join it)."""
    path = settings.data_dir / MEMBERS_FILE
    if not settings.secret:
        return None
    if settings.member() is None and not settings.joins and not path.exists():
        return None
    listed = listed_entries([(m.node_id, m.region, m.address) for m in settings.cluster.members()])
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return MemberList(_base_topology(settings), node_id=settings.node_id, listed=listed, path=path)


@contextlib.asynccontextmanager
async def open_node(settings: NodeSettings) -> AsyncIterator[Node]:
    """Builds the node's parts in order and closes them in reverse on exit; raises
    StorageError subclasses, ConfigError when the node has peers but no cluster secret or
    its data directory belongs to a removed member, and JoinError when it cannot join."""
    if (settings.peers() or settings.joins) and not settings.secret:
        raise ConfigError(
            f"node {settings.node_id} replicates with other nodes but the cluster secret is "
            f"not set: export {settings.cluster.secret_env}"
        )
    with lock_data_dir(settings.data_dir):
        async with contextlib.AsyncExitStack() as stack:
            members = _member_list(settings)
            me = members.me if members is not None else None
            if me is not None and not me.live:
                raise ConfigError(
                    f"node {settings.node_id} was removed from the cluster (incarnation "
                    f"{me.incarnation}): its data directory {settings.data_dir} cannot serve "
                    "again; start a new node with an empty data directory"
                )
            if members is not None and me is None:
                await join_cluster(settings, members)
            store = await stack.enter_async_context(
                open_store(settings.data_dir, settings.cluster.limits)
            )
            topology = members.topology if members is not None else topology_of(settings)
            catalog = PlacementCatalog(
                store, topology, node_id=settings.node_id, region=settings.region
            )
            replicator = None
            if members is not None:
                catalog.incoming = members.incoming()
                replicator = await stack.enter_async_context(
                    open_replicator(store, settings, catalog, members)
                )
                members.on_change.append(
                    lambda _: catalog.set_topology(members.topology, members.incoming())
                )
            hub = Hub(store, node=settings.node_id, region=settings.region)
            stack.push_async_callback(hub.aclose)
            cluster = settings.cluster
            reads = ReadTracker(
                FollowSettings(
                    cluster.followers,
                    cluster.follow_reads,
                    cluster.follow_half_life,
                    cluster.follow_idle,
                    cluster.rehome,
                    cluster.rehome_reads,
                    cluster.rehome_after,
                )
            )
            handoff = None
            if replicator is not None:
                _connect(hub, replicator)
                if replicator.catalog is not None:
                    handoff = await stack.enter_async_context(
                        open_handoff(
                            store,
                            catalog,
                            replicator,
                            hub,
                            reads,
                            members,
                            settings.cluster.move_rate,
                        )
                    )
                    replicator.on_stray = handoff.note
                    replicator.repair_pace = handoff.pace_repair
            node = Node(
                settings, store, time.time(), catalog, hub, replicator, handoff, reads, members
            )
            log.info(
                "node %s (region %s) ready, data in %s",
                settings.node_id,
                settings.region,
                settings.data_dir,
            )
            yield node
            log.info("node %s stopping: finishing queued commits", settings.node_id)


def _connect(hub: Hub, replicator: Replicator) -> None:
    """Awareness travels between the live clients of every node over the peer links."""
    hub.relay_awareness = replicator.send_awareness
    hub.region_of = replicator.region_of
    replicator.on_awareness = hub.apply_awareness
    replicator.on_peer_gone = hub.peer_gone
