"""This node's view of where every document lives: placement records and the topology.

A :class:`PlacementCatalog` wraps the engine's catalog (``store.catalog``: records as bytes,
durable, all in memory) with the meaning :mod:`app.cluster.placement` gives them. It answers
without I/O — a document's record, its regions and holders, whether its content may be stored
here — and changes records in one way only: by merging (:func:`~app.cluster.placement.merge`),
whether the change was made here (a first write, a ``PUT .../placement``) or received from a
peer, so every node that has seen the same records holds the same ones.

Every change that reaches the file is reported to the ``on_change`` listeners (replication
sends it to every peer); a record received from a peer that changes nothing is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from crdt import DocumentStore

from ..config import ClusterConfig, NodeSettings
from .placement import (
    Member,
    PlacementError,
    PlacementRecord,
    Policy,
    Stamp,
    StampClock,
    Topology,
    allows_content,
    followers,
    holders,
    merge,
    move_target,
    regions_of,
    with_deleted,
    with_follower,
    with_home,
    with_policy,
)

__all__ = ["PlacementCatalog", "decode_record", "encode_record", "topology_of"]

log = logging.getLogger("meridian.placement")


def topology_of(settings: NodeSettings) -> Topology:
    """The topology ``regions.toml`` describes, as placement sees it; a node that is not
    listed (standalone) is a topology of its own region and itself."""
    cluster: ClusterConfig = settings.cluster
    if settings.member() is None:
        return Topology(
            regions=(settings.region,),
            latency_ms={},
            replicas=1,
            members=(Member(settings.node_id, settings.region),),
        )
    members = tuple(Member(m.node_id, m.region) for m in cluster.members())
    regions = tuple(sorted({*cluster.regions, settings.region}))
    return Topology(
        regions=regions,
        latency_ms=dict(cluster.latencies_ms),
        replicas=cluster.replicas,
        nodes_per_region=cluster.nodes_per_region,
        members=members,
    )


def encode_record(record: PlacementRecord) -> bytes:
    return json.dumps(record.to_json(), separators=(",", ":"), sort_keys=True).encode()


def decode_record(data: bytes) -> PlacementRecord:
    """A record from its stored or sent bytes; raises PlacementError when malformed."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PlacementError(f"a placement record must be JSON: {exc}") from None
    return PlacementRecord.from_json(parsed)


class PlacementCatalog:
    """Placement records by document id, merged, durable, and readable without I/O."""

    def __init__(
        self, store: DocumentStore, topology: Topology, *, node_id: str, region: str
    ) -> None:
        self._store = store
        #: Regions, latencies and members: what placement computes holders from.
        self.topology = topology
        #: The topology once the members joining now are active (None: nobody is joining).
        #: They already keep copies of what they will hold, and are sent its changes.
        self.incoming: Topology | None = None
        #: Called with (documents this node now keeps, documents it no longer keeps by
        #: placement) after a change of the topology (a member joined, left or was removed).
        self.on_topology: list[Callable[[list[str], list[str]], None]] = []
        self.node_id = node_id
        self.region = region
        #: Stamps for records made here: later than every stamp seen from a peer.
        self.clock = StampClock(node_id)
        # Decoded records, filled on first use from the engine's catalog (the source of truth).
        self._decoded: dict[str, PlacementRecord] = {}
        # One change at a time per document (a merge reads the record it replaces): the
        # lock and how many hold or wait for it, forgotten at zero.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        #: Called with each record that changed the file (replication sends it on).
        self.on_change: list[Callable[[PlacementRecord], None]] = []
        #: Records received from peers that were malformed, since start.
        self.refused = 0
        #: The documents of which this node holds a follower copy (by the records).
        self.following: set[str] = set()
        #: The documents whose home could move toward a follower copy elsewhere and of which
        #: this node is the home region's first holder (it decides the move).
        self.movable: set[str] = set()
        for data in store.catalog.values():
            try:
                record = decode_record(data)
            except PlacementError:
                continue
            self._observe(record)
            self._note_following(record)

    # -- reading ---------------------------------------------------------------------------

    def get(self, doc_id: str) -> PlacementRecord | None:
        record = self._decoded.get(doc_id)
        if record is not None:
            return record
        data = self._store.catalog.get(doc_id)
        if data is None:
            return None
        try:
            record = decode_record(data)
        except PlacementError as exc:  # only a damaged file holds one: say so, do not fail
            log.error("the stored placement record of %s is unreadable: %s", doc_id, exc)
            return None
        self._decoded[doc_id] = record
        return record

    def __len__(self) -> int:
        return len(self._store.catalog)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.catalog)

    def draft(self, doc_id: str) -> PlacementRecord:
        """``doc_id``'s record, or the one a first write here would create (not stored)."""
        return self.get(doc_id) or PlacementRecord.new(doc_id, self.region, self.clock.now())

    def regions(self, record: PlacementRecord) -> tuple[str, ...]:
        return regions_of(record, self.topology)

    def holders(self, record: PlacementRecord) -> tuple[str, ...]:
        return holders(record, self.topology)

    def followers(self, record: PlacementRecord) -> tuple[str, ...]:
        return followers(record, self.topology)

    def copies(self, record: PlacementRecord) -> tuple[str, ...]:
        """Every node that keeps a copy by the record: holders, then follower copies, then the
        joining members that will hold it (they take their share before they serve it)."""
        copies = holders(record, self.topology) + followers(record, self.topology)
        if self.incoming is None:
            return copies
        return copies + tuple(n for n in holders(record, self.incoming) if n not in copies)

    def copies_now(self, record: PlacementRecord) -> tuple[str, ...]:
        """The nodes that serve the record's document now: holders and follower copies (not
        the joining members that will hold it)."""
        return holders(record, self.topology) + followers(record, self.topology)

    def holds(self, record: PlacementRecord, node: str | None = None) -> bool:
        """Whether ``node`` (this node by default) keeps a copy: a holder or a follower."""
        return (node or self.node_id) in self.copies(record)

    def allows_here(self, record: PlacementRecord) -> bool:
        """Whether this node's region may store the document's content (pins)."""
        return allows_content(record, self.region)

    def region_of(self, node: str) -> str | None:
        return self.topology.region_of(node)

    def set_topology(self, topology: Topology, incoming: Topology | None = None) -> None:
        """Places every document by ``topology`` from now on (``incoming``: the one where the
        joining members are active), and tells the ``on_topology`` listeners which documents
        this node keeps or gives up because of the change."""
        before = {doc_id for doc_id in self if self._keeps(doc_id)}
        self.topology, self.incoming = topology, incoming
        after = set()
        for doc_id in self:
            record = self.get(doc_id)
            if record is not None:
                self._note_following(record)
                if self.holds(record):
                    after.add(doc_id)
        gained, lost = sorted(after - before), sorted(before - after)
        for listener in self.on_topology:
            try:
                listener(gained, lost)
            except Exception:
                log.exception("a topology listener failed")

    def kept(self) -> list[str]:
        """Every document with a record that this node keeps a copy of (joining: that it
        will hold), in id order."""
        return sorted(doc_id for doc_id in self if self._keeps(doc_id))

    def _keeps(self, doc_id: str) -> bool:
        record = self.get(doc_id)
        return record is not None and self.holds(record)

    # -- changing --------------------------------------------------------------------------

    async def ensure(self, record: PlacementRecord) -> PlacementRecord:
        """Stores ``record`` (a :meth:`draft`) unless the document has one already; returns
        the record in force."""
        return await self.merge(record)

    async def change_policy(self, doc_id: str, policy: Policy) -> PlacementRecord:
        """A new policy for ``doc_id`` decided here, stamped later than every change seen."""
        async with self._lock(doc_id):
            current = self.draft(doc_id)
            stamp = self.clock.now()
            if stamp <= current.changed:
                self.clock.observe(current.changed)
                stamp = self.clock.now()
            changed = with_policy(current, policy, stamp)
            return await self._put(doc_id, changed)

    async def follow(self, doc_id: str, region: str, on: bool) -> PlacementRecord | None:
        """Gains (``on``) or drops ``region``'s follower copy of ``doc_id``; None when the
        document has no record (nothing to follow yet)."""
        async with self._lock(doc_id):
            current = self.get(doc_id)
            if current is None:
                return None
            return await self._put(doc_id, with_follower(current, region, on, self.clock.now()))

    async def note_deleted(self, doc_id: str, incarnation: int) -> PlacementRecord | None:
        """Records that ``incarnation`` of ``doc_id`` was deleted (a no-op when the record
        knew it already); None when the document has no record."""
        async with self._lock(doc_id):
            current = self.get(doc_id)
            if current is None:
                return None
            changed = with_deleted(current, incarnation)
            return current if changed is current else await self._put(doc_id, changed)

    async def move_home(self, doc_id: str, region: str) -> PlacementRecord | None:
        """Moves ``doc_id``'s home to ``region`` (toward its readers); None when the document
        has no record."""
        async with self._lock(doc_id):
            current = self.get(doc_id)
            if current is None:
                return None
            return await self._put(doc_id, with_home(current, region, self.clock.now()))

    def _observe(self, record: PlacementRecord) -> None:
        """Moves this node's clock past the record's stamps: its own changes to the record
        must win over what they replace."""
        self.clock.observe(record.born)
        self.clock.observe(record.changed)
        if record.moved is not None:
            self.clock.observe(record.moved[1])
        for _, stamp, _ in record.followers:
            self.clock.observe(stamp)

    async def merge(self, record: PlacementRecord) -> PlacementRecord:
        """Merges ``record`` (made here or received) into the catalog; returns the result.
        Raises StorageError when the commit failed (nothing changed)."""
        self._observe(record)
        async with self._lock(record.doc_id):
            current = self.get(record.doc_id)
            merged = record if current is None else merge(current, record)
            if merged == current:
                return merged
            return await self._put(record.doc_id, merged)

    async def _put(self, doc_id: str, record: PlacementRecord) -> PlacementRecord:
        await self._store.catalog.put(doc_id, encode_record(record))
        self._decoded[doc_id] = record
        self._note_following(record)
        for listener in self.on_change:
            try:
                listener(record)
            except Exception:
                log.exception("a placement listener failed")
        return record

    def _note_following(self, record: PlacementRecord) -> None:
        topology = self.topology
        if self.node_id in followers(record, topology):
            self.following.add(record.doc_id)
        else:
            self.following.discard(record.doc_id)
        first = holders(record, topology)[:1]
        decides = first == (self.node_id,) and self.region == record.current_home
        if decides and move_target(record, topology) is not None:
            self.movable.add(record.doc_id)
        else:
            self.movable.discard(record.doc_id)

    async def adopt(self) -> int:
        """Gives every document held here without a record one (an upgrade from a release
        without placement): home is this node's region, born when this file first held it.
        Every upgraded node does the same, and the merge keeps the earliest: the document's
        home becomes the region that held it first — where it was first written, as far as
        the cluster can tell. Returns how many records were made."""
        made = 0
        after: str | None = None
        while True:
            page = await self._store.list_documents("", after, 500)
            drafts = [
                PlacementRecord.new(
                    doc.id, self.region, Stamp(int(doc.created_at * 1000), self.node_id)
                )
                for doc in page
                if doc.id not in self._store.catalog
            ]
            await asyncio.gather(*(self.merge(draft) for draft in drafts))
            made += len(drafts)
            if len(page) < 500:
                return made
            after = page[-1].id

    @contextlib.asynccontextmanager
    async def _lock(self, doc_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(doc_id) or (asyncio.Lock(), 0)
        self._locks[doc_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[doc_id]
            if users == 1:
                del self._locks[doc_id]
            else:
                self._locks[doc_id] = (lock, users - 1)
