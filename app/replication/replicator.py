"""Replication of one node: a link to each peer, deltas fanned out as they commit, and the
durability and read-your-writes waits of the HTTP API.

Every listed node links with every other (the one with the smaller id dials; the other
accepts on ``WS /v1/peer``). A committed change goes to each peer's :class:`Outbox`, except
to the node it came from and to nodes it names as already reached; a node that applies a
peer's delta and changes its state relays it onward in the same way, so a cluster whose
A-C link is cut still converges through B.

Placement narrows who receives what: :meth:`Replicator.targets` is, for each document, the
peers that hold it (:mod:`app.cluster.placement`), plus any peer of an earlier release (which
holds everything). Placement records themselves go to every peer (``Placements``) and are
repaired by the catalog feed's anti-entropy (:mod:`app.replication.session`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import websockets
from starlette.websockets import WebSocket

from crdt import Change, CrdtError, DocumentStore, covers

from ..cluster.catalog import decode_record, encode_record
from ..cluster.membership import Membership, MembershipError
from ..cluster.placement import PlacementError, PlacementRecord
from ..config import Member, NodeSettings
from . import messages as m
from .durability import LEVELS, Tracker, levels_met
from .link import LinkClosed, LinkRefused, PeerLink, ServerTransport, dial
from .outbox import Delta, Outbox
from .peers import Peer
from .protocol import (
    MEMBERS_VERSION,
    PLACEMENT_VERSION,
    PROTOCOL_VERSIONS,
    Identity,
    PeerProtocol,
)
from .session import PeerOrigin, PeerSession

if TYPE_CHECKING:
    from ..cluster.catalog import PlacementCatalog
    from ..cluster.members import MemberList

__all__ = ["Replicator", "open_replicator"]

log = logging.getLogger("meridian.peer")

#: Seconds between dial attempts to a peer that refused the link.
REFUSED_RETRY_SECONDS = 5.0
#: Seconds between dial attempts to a peer that does not know this node yet (the member list
#: is still spreading after a join).
JOIN_RETRY_SECONDS = 1.0
#: Refusal codes after which redialling is slow (a configuration problem, not a network one).
_REFUSALS = {"authentication_failed", "incompatible_version", "wrong_cluster", "unknown_node"}


class Replicator:
    """The replication of one node. Create with :func:`open_replicator`."""

    def __init__(
        self,
        store: DocumentStore,
        settings: NodeSettings,
        catalog: PlacementCatalog | None = None,
        members: MemberList | None = None,
    ) -> None:
        self.store = store
        #: When this node started linking, and set when a link opens: see
        #: :meth:`wait_first_links`.
        self.started = time.monotonic()
        self._link_opened = asyncio.Event()
        #: The member list: whom this node links with (None: the nodes regions.toml lists).
        self.members = members
        self.settings = settings
        self.config = settings.cluster.replication
        self.node_id = settings.node_id
        low, high = PROTOCOL_VERSIONS
        cap = settings.max_protocol_version
        #: The peer protocol versions this node offers (lowest, highest).
        self.versions = (low, min(high, cap) if cap is not None else high)
        #: Where documents live; None (or a version held below placement's, standing in for
        #: an earlier release during an upgrade): this node holds and sends everything.
        self.catalog = catalog if self.versions[1] >= PLACEMENT_VERSION else None
        #: Placement records from peers that were malformed.
        self.records_refused = 0
        # Records changed here in this turn of the event loop, sent together.
        self._records_out: list[bytes] = []
        #: Told of each document a peer's delta gave this node a copy of although placement
        #: gives it to others (a peer of an earlier release sends everything): hand it off.
        self.on_stray: Callable[[str], None] | None = None
        #: Awaited before each anti-entropy repair that pulls a document: rebalancing paces
        #: a joining node's repairs (they bring most of its share) with its other moves.
        self.repair_pace: Callable[[], Awaitable[None]] | None = None
        self.identity = Identity(
            settings.cluster.name,
            settings.node_id,
            settings.region,
            store.storage.storage_id,
            settings.secret or b"",
        )
        self.peers: dict[str, Peer] = {}
        self._regions = {m.node_id: m.region for m in settings.cluster.members()}
        self._regions[self.node_id] = settings.region
        # Dial loops; cancelled at close.
        self._tasks: set[asyncio.Task[Any]] = set()
        # The dial loop of each peer this node dials, by node id (stopped when it is removed).
        self._dialers: dict[str, asyncio.Task[Any]] = {}
        self._started = False
        #: Member lists from peers that were malformed, since start.
        self.members_refused = 0
        # The listed nodes first, in the file's order (as /v1/cluster lists them).
        for member in settings.peers():
            entry = members.get(member.node_id) if members is not None else None
            if members is None or entry is None or entry.live:
                self._add_peer(member)
        if members is not None:
            self._sync_peers(members.membership)
            members.on_change.append(self._members_changed)
        # Readers waiting (after=) for a document to change here.
        self._waiters: dict[str, set[asyncio.Event]] = collections.defaultdict(set)
        #: Live clients' awareness receiver (the hub's apply_awareness), when there is one.
        self.on_awareness: Callable[[str, bytes, object], None] | None = None
        #: Called with a peer's node id when its link closes.
        self.on_peer_gone: Callable[[str], None] | None = None
        # Recent refused links (newest last), for /v1/cluster.
        self.refusals: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        # Every refused link since start (the deque above keeps only the recent ones).
        self.links_refused = 0
        #: Why this node knows it was removed from the cluster (None while it does not): it
        #: then serves no document (503 node_removed) so that nothing it would accept stays
        #: stranded here. Set by its own entry in the gossiped member list, by a peer closing
        #: an authenticated link because of it, or by most peers refusing it as removed.
        self.removed: str | None = None
        # The peers that refused this node's handshake as removed (not authenticated: one
        # alone is no proof).
        self._refused_as_removed: set[str] = set()
        self._unsubscribe = self.store.subscribe(self._on_change)
        if self.catalog is not None:
            self.catalog.on_change.append(self.send_record)

    # -- links ----------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for peer in self.peers.values():
            self._start_dialing(peer)

    def _start_dialing(self, peer: Peer) -> None:
        if not (self._started and peer.dialer) or peer.node_id in self._dialers:
            return
        task = asyncio.ensure_future(self._dial_loop(peer))
        self._tasks.add(task)
        self._dialers[peer.node_id] = task

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if self._dialers.get(peer.node_id) is task:
                del self._dialers[peer.node_id]

        task.add_done_callback(done)

    def _add_peer(self, member: Member) -> Peer:
        peer = Peer(
            member,
            self.settings.peer_addresses.get(member.node_id, member.address),
            dialer=self.node_id < member.node_id,
            outbox=Outbox(
                max_bytes=self.config.max_outbox_bytes, max_in_flight=self.config.max_in_flight
            ),
        )
        self.peers[member.node_id] = peer
        self._regions[member.node_id] = member.region
        self._start_dialing(peer)
        return peer

    # -- membership -----------------------------------------------------------------------

    def _sync_peers(self, membership: Membership) -> None:
        """Links with every live member but this node, and with no other node: a member
        that appeared gets a peer (dialled, or awaited); a removed one loses its link."""
        live = {e.node: e for e in membership.live() if e.node != self.node_id}
        for node_id, entry in live.items():
            peer = self.peers.get(node_id)
            member = Member(entry.node, entry.region, entry.address)
            if peer is None:
                self._add_peer(member)
            elif peer.member != member:
                peer.member = member
                peer.address = self.settings.peer_addresses.get(node_id, entry.address)
        for node_id in [n for n in self.peers if n not in live]:
            gone = membership.get(node_id)
            if gone is None or gone.live:
                continue  # a listed node the list does not know yet stays a peer
            peer = self.peers.pop(node_id)
            log.info("member %s removed: its link closes", node_id, extra={"peer": node_id})
            task = self._dialers.pop(node_id, None)
            if task is not None:
                task.cancel()
            if peer.session is not None:
                session = peer.session
                closing = asyncio.ensure_future(
                    session.link.close("removed", f"{node_id} was removed from the cluster")
                )
                self._tasks.add(closing)
                closing.add_done_callback(self._tasks.discard)

    def _members_changed(self, membership: Membership) -> None:
        self._sync_peers(membership)
        self.send_members()
        own = membership.get(self.node_id)
        if own is not None and own.state == "removed":
            self._note_removed(f"the member list says {self.node_id} was removed")

    def _note_removed(self, why: str) -> None:
        if self.removed is None:
            self.removed = why
            log.error(
                "this node was removed from the cluster (%s): it serves no documents any "
                "more; stop it, or start a new node with an empty data directory",
                why,
            )

    def _refused_as_removed_now(self, peer: Peer, refusal: str) -> None:
        """Counts a handshake refusal that names this node's own incarnation removed (a
        node rejoining under a new incarnation is refused for its old one until the peers
        hear of the new one: that is no evidence)."""
        me = self.members.me if self.members is not None else None
        named = re.search(r"\(incarnation (\d+)\)", refusal)
        if me is None or named is None or int(named.group(1)) != me.incarnation:
            return
        self._refused_as_removed.add(peer.node_id)
        if 2 * len(self._refused_as_removed) > len(self.peers):
            self._note_removed(f"most peers refuse it as removed ({refusal})")

    def _joining(self) -> bool:
        return self.members is not None and self.members.state == "joining"

    def send_members(self, peer: Peer | None = None) -> None:
        """Gossips this node's member list to ``peer`` (every linked peer by default) that
        speaks protocol 5."""
        if self.members is None or self.versions[1] < MEMBERS_VERSION:
            return
        data = json.dumps(
            self.members.membership.to_json(), separators=(",", ":"), sort_keys=True
        ).encode()
        for target in [peer] if peer is not None else list(self.peers.values()):
            session = target.session
            if session is not None and (target.version or 0) >= MEMBERS_VERSION:
                session.send_nowait(m.Members(data))

    def members_received(self, data: bytes, peer: Peer) -> None:
        """Merges a peer's member list; a malformed one is logged, counted and ignored."""
        if self.members is None:
            return
        try:
            incoming = Membership.from_json(json.loads(data))
        except (ValueError, RecursionError, MembershipError) as exc:
            self.members_refused += 1
            log.warning(
                "< a malformed member list from %s: %s",
                peer.node_id,
                str(exc)[:200],
                extra={"peer": peer.node_id},
            )
            return
        self.members.merge(incoming, source=peer.node_id)

    async def aclose(self) -> None:
        self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self.peers.values():
            if peer.session is not None:
                await peer.session.link.close("shutdown", f"{self.node_id} is shutting down")

    def _admit(self, node: str, region: str) -> str | None:
        peer = self.peers.get(node)
        entry = self.members.get(node) if self.members is not None else None
        if peer is None and entry is not None and not entry.live:
            return (
                f"{node} was removed from {self.identity.cluster} (incarnation "
                f"{entry.incarnation}); it rejoins only as a new node"
            )
        if peer is None:
            return f"{node} is not a node of {self.identity.cluster} as {self.node_id} knows it"
        if peer.member.region != region:
            return f"{node} is in region {peer.member.region}, not {region}"
        return None

    def _protocol(self, role: str, expected: str | None = None) -> PeerProtocol:
        return PeerProtocol(
            "dialer" if role == "dialer" else "acceptor",
            self.identity,
            versions=self.versions,
            expected_node=expected,
            admit=self._admit,
        )

    async def accept(self, websocket: WebSocket) -> None:
        """Serves one incoming ``WS /v1/peer`` connection until it closes."""
        await websocket.accept()
        client = websocket.client
        where = f"{client.host}:{client.port}" if client else "?"
        link = PeerLink(self._protocol("acceptor"), ServerTransport(websocket))
        try:
            opened = await link.handshake(self.config.link_timeout)
        except LinkRefused as exc:
            log.warning("refused a peer link from %s: %s", where, exc)
            self.refusals.append({"from": where, "reason": str(exc), "at": time.time()})
            self.links_refused += 1
            return
        except LinkClosed as exc:  # the dialer went away mid-handshake (e.g. restarting)
            log.info("a peer link from %s closed during its handshake: %s", where, exc)
            return
        peer = self.peers.get(opened.peer.node)
        if peer is None:  # removed while its handshake ran
            await link.close("unknown_node", f"{opened.peer.node} is no longer a member")
            return
        await self._run(peer, link)

    async def _dial_loop(self, peer: Peer) -> None:
        url = f"ws://{peer.address}/v1/peer"
        config = self.config
        delay = config.reconnect_min
        max_size = self.settings.cluster.limits.max_document_bytes + (1 << 20)
        while True:
            peer.state = "connecting"
            opened_at: float | None = None
            try:
                transport = await dial(url, timeout=config.connect_timeout, max_size=max_size)
                link = PeerLink(self._protocol("dialer", peer.node_id), transport)
                try:
                    await link.handshake(config.link_timeout)
                except LinkClosed:
                    with contextlib.suppress(Exception):
                        await transport.close(1008, "refused")
                    raise
                opened_at = time.monotonic()
                await self._run(peer, link)
            except LinkClosed as exc:
                peer.last_error = str(exc)
                if str(exc).split(":")[0] in _REFUSALS:
                    peer.state = "refused"
                    log.warning("link to %s refused: %s", peer.node_id, exc)
                    self.refusals.append(
                        {"to": peer.node_id, "reason": str(exc), "at": time.time()}
                    )
                    self.links_refused += 1
                    # A configuration problem: retry, but not at network-failure pace —
                    # except a node that has not heard of this one yet (it just joined).
                    delay = max(REFUSED_RETRY_SECONDS, config.reconnect_max)
                    if str(exc).startswith("unknown_node") and "removed" not in str(exc):
                        delay = max(JOIN_RETRY_SECONDS, config.reconnect_max)
                    if str(exc).startswith("unknown_node") and "was removed from" in str(exc):
                        self._refused_as_removed_now(peer, str(exc))
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                peer.last_error = f"cannot connect to {peer.address}: {exc or type(exc).__name__}"
                if peer.state != "refused":
                    peer.state = "down"
            if opened_at is not None and time.monotonic() - opened_at > 10 * config.reconnect_max:
                delay = config.reconnect_min
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, config.reconnect_max)

    async def _run(self, peer: Peer, link: PeerLink) -> None:
        opened = link.protocol.peer
        assert opened is not None
        previous = peer.session
        if previous is not None:
            await previous.link.close("replaced", "a newer link to this node replaced it")
        session = PeerSession(self, peer, link)
        peer.session = session
        peer.state = "up"
        peer.storage_id = opened.storage_id
        peer.version = opened.version
        peer.up_since = time.time()
        peer.last_error = None
        peer.links_opened += 1
        self._link_opened.set()
        peer.wake.set()
        self.send_members(peer)
        log.info(
            "link to %s up (protocol %d)",
            peer.node_id,
            opened.version,
            extra={"peer": peer.node_id},
        )
        try:
            closed = await session.run()
        finally:
            peer.bytes_sent += link.bytes_sent
            peer.bytes_received += link.bytes_received
            if peer.session is session:
                peer.session = None
                peer.state = "down"
                peer.up_since = None
                if self.on_peer_gone is not None:
                    self.on_peer_gone(peer.node_id)
        peer.last_error = f"{closed.code}: {closed.reason}"
        log.info(
            "link to %s closed: %s", peer.node_id, peer.last_error, extra={"peer": peer.node_id}
        )
        if closed.by_peer and closed.code == "removed":  # said over the authenticated link
            self._note_removed(f"{peer.node_id} closed its link: {closed.reason}")

    # -- deltas ---------------------------------------------------------------------------

    def holders_of(self, doc_id: str) -> frozenset[str] | None:
        """The nodes that keep a copy of ``doc_id`` by placement (holders and follower
        copies); None when placement is off or the document has no record yet (then every
        node is sent it)."""
        if self.catalog is None:
            return None
        record = self.catalog.get(doc_id)
        return frozenset(self.catalog.copies(record)) if record is not None else None

    def everyone_speaks(self, version: int) -> bool:
        """Whether this node and every peer, each linked now, speak peer protocol ``version``
        (a peer that is down may run an earlier release: unknown counts as no)."""
        return self.versions[1] >= version and all(
            peer.state == "up" and (peer.version or 0) >= version for peer in self.peers.values()
        )

    def everyone_spoke(self, version: int) -> bool:
        """Whether this node and every peer speak peer protocol ``version``, each peer as its
        last link said (down now or not; a peer never linked since this node started counts
        as no)."""
        return self.versions[1] >= version and all(
            (peer.version or 0) >= version for peer in self.peers.values()
        )

    def holds(self, doc_id: str) -> bool:
        """Whether this node holds ``doc_id`` by placement (every document, without it)."""
        holders = self.holders_of(doc_id)
        return holders is None or self.node_id in holders

    def stray(self, doc_id: str) -> None:
        if self.on_stray is not None:
            self.on_stray(doc_id)

    def shares(self, doc_id: str, peer: Peer) -> bool:
        """Whether ``peer`` should hold ``doc_id``: replication and anti-entropy with it
        concern only the documents this is true of."""
        holders = self.holders_of(doc_id)
        return holders is None or peer.node_id in holders or peer.holds_everything

    def targets(self, doc_id: str) -> list[Peer]:
        """The peers that hold ``doc_id``: its holders, and peers of an earlier release."""
        holders = self.holders_of(doc_id)
        if holders is None:
            return list(self.peers.values())
        return [
            peer for peer in self.peers.values() if peer.node_id in holders or peer.holds_everything
        ]

    async def wait_first_links(self) -> None:
        """Right after start, waits (at most ``connect_timeout + reconnect_max`` plus a
        second from the start) until every peer's link has opened once. A node that has not
        linked with its peers yet would take every peer for unreachable: a write would
        become a hint written blind, without the document's current incarnation."""
        config = self.config
        deadline = self.started + config.connect_timeout + config.reconnect_max + 1.0
        while (remaining := deadline - time.monotonic()) > 0:
            self._link_opened.clear()
            if all(peer.links_opened for peer in self.peers.values()):
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._link_opened.wait()

    async def fetch(self, doc_id: str, nodes: Sequence[str], timeout: float) -> bool:
        """Brings this node's copy of ``doc_id`` (none yet) up to the first of ``nodes`` that
        answers within ``timeout`` — its state, or its tombstone, at its incarnation; True
        when one did. A node about to write a document it has never seen (a hint) asks first,
        so that it writes into the document's current incarnation instead of creating a
        first one, whose writes the holders would discard as stale."""
        for node_id in nodes:
            peer = self.peers.get(node_id)
            if peer is None or peer.state != "up" or peer.suspected:
                continue
            session = peer.session
            if session is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await session.pull(doc_id)
            except (TimeoutError, LinkClosed, CrdtError, m.ProtocolError) as exc:
                log.info("fetching %s from %s before a hint: %s", doc_id, node_id, exc)
                continue
            return True
        return False

    def may_store(self, doc_id: str) -> bool:
        """Whether this node may store ``doc_id``'s content (a pin may forbid its region)."""
        if self.catalog is None:
            return True
        record = self.catalog.get(doc_id)
        return record is None or self.catalog.allows_here(record)

    # -- placement records ----------------------------------------------------------------

    def send_record(self, record: PlacementRecord) -> None:
        """Sends a record that changed here to every peer that knows placement; the records
        changed in one turn of the event loop go in one message."""
        if not self._records_out:
            asyncio.get_running_loop().call_soon(self._flush_records)
        self._records_out.append(encode_record(record))

    def _flush_records(self) -> None:
        records, self._records_out = self._records_out, []
        for start in range(0, len(records), m.MAX_RECORDS):
            message = m.Placements(tuple(records[start : start + m.MAX_RECORDS]))
            for peer in self.peers.values():
                session = peer.session
                if session is not None and (peer.version or 0) >= PLACEMENT_VERSION:
                    session.send_nowait(message)

    async def records_received(self, records: tuple[bytes, ...], peer: Peer) -> None:
        """Merges records sent by ``peer``; a malformed one is logged, counted and skipped."""
        if self.catalog is None:
            return
        decoded = []
        for data in records:
            try:
                decoded.append(decode_record(data))
            except PlacementError as exc:
                self.records_refused += 1
                log.warning(
                    "< a malformed placement record from %s: %s",
                    peer.node_id,
                    exc,
                    extra={"peer": peer.node_id},
                )
        # Merged together: their commits share the storage writer's group commits.
        await asyncio.gather(*(self.catalog.merge(record) for record in decoded))

    def _on_change(self, change: Change) -> None:
        tracker = change.origin if isinstance(change.origin, Tracker) else None
        self.deliver(change.doc_id, change.incarnation, change.update, change.origin, tracker)
        waiters = self._waiters.get(change.doc_id)
        if waiters:
            for event in waiters:
                event.set()

    def deliver(
        self,
        doc_id: str,
        incarnation: int,
        update: bytes | None,
        origin: object = None,
        tracker: Tracker | None = None,
    ) -> None:
        """Queues a committed change for the peers that hold the document, except its origin
        and the nodes the origin says were sent it already."""
        skip: set[str] = set()
        if isinstance(origin, PeerOrigin):
            if self._joining():
                # A joining node relays nothing: it may not have the document's record yet
                # (it would send the delta to every peer), and the sender reached the holders.
                return
            skip = {origin.node, *origin.reached}
        targets = [peer for peer in self.targets(doc_id) if peer.node_id not in skip]
        reached = skip | {self.node_id}
        reached |= {peer.node_id for peer in targets if peer.session is not None}
        names = tuple(sorted(reached))[:64]
        now = time.monotonic()
        for peer in targets:
            on_ack = tracker.on_ack if tracker is not None else None
            peer.outbox.push(Delta(doc_id, incarnation, update, names, now, on_ack))
            peer.wake.set()

    def send_awareness(self, doc_id: str, update: bytes) -> None:
        """Relays a local client's awareness update to the peers that speak version 2."""
        for peer in self.targets(doc_id):
            session = peer.session
            if session is not None and (peer.version or 0) >= 2:
                session.send_nowait(m.Awareness(doc_id, update))

    def awareness_received(self, doc_id: str, update: bytes, node: str) -> None:
        if self.on_awareness is None:
            return
        try:
            self.on_awareness(doc_id, update, node)
        except ValueError as exc:
            log.warning("< awareness from %s doc=%s refused: %s", node, doc_id, exc)

    def replicas(self, doc_id: str) -> list[dict[str, Any]]:
        """This node's view of the other copies of ``doc_id``: for each peer holding it, the
        link and whether this node's changes to it have all reached the peer.

        ``in_sync``: nothing of the document is waiting for the peer; ``sending``: some of
        its changes are queued or in flight (``pending``); ``catching_up``: the outbox
        overflowed, so the peer's next anti-entropy round carries the rest; ``unreachable``:
        the link is not up (the peer holds what it had when the link went down)."""
        replicas = []
        for peer in self.targets(doc_id):
            pending = peer.outbox.pending(doc_id)
            if peer.state != "up":
                state = "unreachable"
            elif pending:
                state = "sending"
            elif peer.outbox.overflow_since is not None:
                state = "catching_up"
            else:
                state = "in_sync"
            replicas.append(
                {
                    "node": peer.node_id,
                    "region": peer.member.region,
                    "link": peer.state,
                    "state": state,
                    "pending": pending,
                }
            )
        return replicas

    def region_of(self, node: str) -> str | None:
        return self._regions.get(node)

    # -- durability and read-your-writes --------------------------------------------------

    def levels_met(self, nodes: set[str], doc_id: str) -> dict[str, bool]:
        record = self.catalog.get(doc_id) if self.catalog is not None else None
        holders: frozenset[str] | None = None
        if record is None or self.catalog is None:
            regions: tuple[str, ...] = tuple(self.settings.cluster.regions) or (
                self.settings.region,
            )
        else:
            regions = self.catalog.regions(record)
            holders = frozenset(self.catalog.holders(record))  # follower copies do not count
        return levels_met(
            nodes,
            region_of=self.region_of,
            region=self.settings.region,
            doc_regions=regions,
            doc_holders=holders,
        )

    def unreachable_level(self, level: str, doc_id: str) -> str | None:
        """Why ``level`` can never be met for ``doc_id`` with this topology, or None."""
        if level != "region":
            return None
        region = self.settings.region
        nodes = [p for p in self.peers.values() if p.member.region == region]
        if not nodes:
            return f"region {region} has no other node"
        holders = self.holders_of(doc_id)
        if holders is not None:
            here = [n for n in holders if self.region_of(n) == region]
            if len(here) < 2 and self.node_id in holders:
                return (
                    f"{doc_id} is held by {len(here)} node(s) of {region} "
                    "(placement.nodes_per_region); durability=region needs two"
                )
        return None

    async def wait_durable(self, tracker: Tracker, doc_id: str, level: str, timeout: float) -> str:
        """Waits until the write is durable at ``level`` or ``timeout``; returns the strongest
        level reached (the requested one when met)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.levels_met(tracker.nodes, doc_id)[level]:
                    tracker.changed.clear()
                    await tracker.changed.wait()
        met = self.levels_met(tracker.nodes, doc_id)
        if met[level]:
            return level
        return max((name for name in LEVELS if met[name]), key=LEVELS.index)

    async def wait_covered(self, doc_id: str, clocks: dict[int, int], timeout: float) -> bool:
        """Waits until this node's copy of ``doc_id`` includes state vector ``clocks``,
        asking the peers for it meanwhile; False on timeout."""
        if await self._covers(doc_id, clocks):
            return True
        changed = asyncio.Event()
        self._waiters[doc_id].add(changed)
        try:
            for peer in self.targets(doc_id):
                if peer.session is not None:
                    peer.session.request_pull(doc_id)
            async with asyncio.timeout(timeout):
                while not await self._covers(doc_id, clocks):
                    changed.clear()
                    await changed.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters[doc_id].discard(changed)
            if not self._waiters[doc_id]:
                del self._waiters[doc_id]

    async def _covers(self, doc_id: str, clocks: dict[int, int]) -> bool:
        state = await self.store.lookup(doc_id)
        if state is None or state.deleted:
            return not clocks
        return covers(state.document.clocks(), clocks)

    # -- statistics -----------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        return {
            "peers": [peer.statistics() for peer in self.peers.values()],
            "refused_links": list(self.refusals),
            "links_refused": self.links_refused,
            "members_refused": self.members_refused
            + (self.members.refused if self.members is not None else 0),
        }


@contextlib.asynccontextmanager
async def open_replicator(
    store: DocumentStore,
    settings: NodeSettings,
    catalog: PlacementCatalog | None = None,
    members: MemberList | None = None,
) -> AsyncIterator[Replicator]:
    """Starts replicating ``store`` with the other nodes (dialling peers); stops on exit."""
    replicator = Replicator(store, settings, catalog, members)
    replicator.start()
    try:
        yield replicator
    finally:
        await replicator.aclose()
