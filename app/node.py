"""A node: one ``meridian serve`` process's long-lived parts, owned by the app's lifespan.

:func:`open_node` takes the data directory's lock (so two processes never share a DuckDB
file), opens the document store, and on exit closes it after queued commits finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from crdt import DocumentStore, StorageLocked, open_store

from .config import ConfigError, NodeSettings

if TYPE_CHECKING:
    from .replication import Replicator
    from .sync import Hub

__all__ = ["VERSION", "Node", "lock_data_dir", "open_node"]

log = logging.getLogger("meridian.node")

VERSION = "0.1.0"


@dataclass(slots=True)
class Node:
    settings: NodeSettings
    store: DocumentStore
    started_at: float
    #: Replication with the other nodes; None for a standalone node.
    replicator: Replicator | None = None
    #: Live clients (sync and event streams); set by the app's lifespan.
    hub: Hub = None  # type: ignore[assignment]

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


@contextlib.asynccontextmanager
async def open_node(settings: NodeSettings) -> AsyncIterator[Node]:
    """Locks the data directory and opens the store; raises StorageError subclasses, and
    ConfigError when the node has peers but no cluster secret."""
    if settings.peers() and not settings.secret:
        raise ConfigError(
            f"node {settings.node_id} replicates with {len(settings.peers())} other nodes but "
            f"the cluster secret is not set: export {settings.cluster.secret_env}"
        )
    with lock_data_dir(settings.data_dir):
        async with open_store(settings.data_dir, settings.cluster.limits) as store:
            node = Node(settings, store, time.time())
            log.info(
                "node %s (region %s) ready, data in %s",
                settings.node_id,
                settings.region,
                settings.data_dir,
            )
            yield node
            log.info("node %s stopping: finishing queued commits", settings.node_id)
