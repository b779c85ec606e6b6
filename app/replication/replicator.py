"""Replication of one node: a link to each peer, deltas fanned out as they commit, and the
durability and read-your-writes waits of the HTTP API.

Every listed node links with every other (the one with the smaller id dials; the other
accepts on ``WS /v1/peer``). A committed change goes to each peer's :class:`Outbox`, except
to the node it came from and to nodes it names as already reached; a node that applies a
peer's delta and changes its state relays it onward in the same way, so a cluster whose
A-C link is cut still converges through B. Routing goes through :meth:`Replicator.targets`,
one document at a time, so that placement can later narrow who receives what.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from starlette.websockets import WebSocket

from crdt import Change, DocumentStore, covers

from ..config import Member, NodeSettings
from . import messages as m
from .link import LinkClosed, PeerLink, ServerTransport, dial
from .outbox import Delta, Outbox
from .protocol import PROTOCOL_VERSIONS, Identity, PeerProtocol
from .session import PeerOrigin, PeerSession

__all__ = ["LEVELS", "Peer", "Replicator", "Tracker", "open_replicator"]

log = logging.getLogger("meridian.peer")

#: Durability levels, weakest first.
LEVELS = ("local", "region", "quorum", "all")
#: Seconds between dial attempts to a peer that refused the link.
REFUSED_RETRY_SECONDS = 5.0
#: Refusal codes after which redialling is slow (a configuration problem, not a network one).
_REFUSALS = {"authentication_failed", "incompatible_version", "wrong_cluster", "unknown_node"}


class Tracker:
    """A write waiting for its durability level: the nodes known to have committed it."""

    def __init__(self, node: str) -> None:
        self.nodes = {node}
        # Set whenever a node acknowledges; the waiter re-checks its level.
        self.changed = asyncio.Event()

    def on_ack(self, node: str) -> None:
        self.nodes.add(node)
        self.changed.set()


@dataclass(slots=True)
class AntiEntropyStats:
    rounds: int = 0
    failures: int = 0
    repaired_total: int = 0
    last_at: float | None = None
    last_seconds: float = 0.0
    last_checked: int = 0
    last_repaired: list[str] = field(default_factory=list)
    last_repaired_count: int = 0
    last_bytes: int = 0
    #: Bytes exchanged by every round (listings and the syncs that repaired documents).
    bytes_total: int = 0

    def record(self, *, checked: int, repaired: list[str], seconds: float, traffic: int) -> None:
        self.rounds += 1
        self.repaired_total += len(repaired)
        self.last_at = time.time()
        self.last_seconds = seconds
        self.last_checked = checked
        self.last_repaired = repaired[:20]
        self.last_repaired_count = len(repaired)
        self.last_bytes = traffic
        self.bytes_total += traffic


class Peer:
    """Another node, across its successive links."""

    def __init__(self, member: Member, address: str, *, dialer: bool, outbox: Outbox) -> None:
        self.member = member
        self.address = address
        #: This node dials the peer (its id is smaller); else it waits for the peer to.
        self.dialer = dialer
        self.outbox = outbox
        # Set when the outbox has something to send or its window opened.
        self.wake = asyncio.Event()
        self.session: PeerSession | None = None
        self.state = "down"
        self.storage_id = ""
        self.version: int | None = None
        self.rtt: float | None = None
        self.last_error: str | None = None
        self.up_since: float | None = None
        self.links_opened = 0
        self.applied_from_peer = 0
        self.refused_from_peer = 0
        self.internal_errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        # (last seq, monotonic time) of the last complete changes-feed listing served to it.
        self.feed_served: tuple[int, float] | None = None
        self.ae = AntiEntropyStats()

    @property
    def node_id(self) -> str:
        return self.member.node_id

    def caught_up(self, seq: int) -> None:
        if self.feed_served is not None and seq >= self.feed_served[0]:
            self.outbox.caught_up(self.feed_served[1])

    def statistics(self) -> dict[str, Any]:
        outbox = self.outbox.statistics()
        now = time.monotonic()
        link = self.session.link if self.session is not None else None
        ae = self.ae
        return {
            "node": self.node_id,
            "region": self.member.region,
            "address": self.address,
            "state": self.state,
            "dials": self.dialer,
            "protocol_version": self.version,
            "rtt_ms": round(self.rtt * 1000, 3) if self.rtt is not None else None,
            "up_since": self.up_since,
            "last_error": self.last_error,
            "links_opened": self.links_opened,
            "buffered": {
                "deltas": outbox.queued,
                "bytes": outbox.queued_bytes,
                "in_flight": outbox.in_flight,
            },
            "lag_seconds": round(now - outbox.oldest, 3) if outbox.oldest is not None else 0.0,
            "deltas": {
                "acked": outbox.acked,
                "refused_by_peer": outbox.rejected,
                "left_to_anti_entropy": outbox.dropped,
                "applied_from_peer": self.applied_from_peer,
                "refused_from_peer": self.refused_from_peer,
            },
            "bytes_sent": self.bytes_sent + (link.bytes_sent if link else 0),
            "bytes_received": self.bytes_received + (link.bytes_received if link else 0),
            "anti_entropy": {
                "rounds": ae.rounds,
                "failures": ae.failures,
                "repaired_total": ae.repaired_total,
                "last_at": ae.last_at,
                "last_seconds": round(ae.last_seconds, 4),
                "last_checked": ae.last_checked,
                "last_repaired": ae.last_repaired_count,
                "last_repaired_ids": ae.last_repaired,
                "last_bytes": ae.last_bytes,
                "bytes_total": ae.bytes_total,
            },
        }


class Replicator:
    """The replication of one node. Create with :func:`open_replicator`."""

    def __init__(self, store: DocumentStore, settings: NodeSettings) -> None:
        self.store = store
        self.settings = settings
        self.config = settings.cluster.replication
        self.node_id = settings.node_id
        low, high = PROTOCOL_VERSIONS
        cap = settings.max_protocol_version
        #: The peer protocol versions this node offers (lowest, highest).
        self.versions = (low, min(high, cap) if cap is not None else high)
        self.identity = Identity(
            settings.cluster.name,
            settings.node_id,
            settings.region,
            store.storage.storage_id,
            settings.secret or b"",
        )
        self.peers: dict[str, Peer] = {
            member.node_id: Peer(
                member,
                settings.peer_addresses.get(member.node_id, member.address),
                dialer=settings.node_id < member.node_id,
                outbox=Outbox(
                    max_bytes=self.config.max_outbox_bytes,
                    max_in_flight=self.config.max_in_flight,
                ),
            )
            for member in settings.peers()
        }
        self._regions = {m.node_id: m.region for m in settings.cluster.members()}
        self._regions[self.node_id] = settings.region
        # Dial loops; cancelled at close.
        self._tasks: set[asyncio.Task[Any]] = set()
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
        self._unsubscribe = self.store.subscribe(self._on_change)

    # -- links ----------------------------------------------------------------------------

    def start(self) -> None:
        for peer in self.peers.values():
            if peer.dialer:
                task = asyncio.ensure_future(self._dial_loop(peer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

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
        except LinkClosed as exc:
            log.warning("refused a peer link from %s: %s", where, exc)
            self.refusals.append({"from": where, "reason": str(exc), "at": time.time()})
            self.links_refused += 1
            return
        await self._run(self.peers[opened.peer.node], link)

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
                    # A configuration problem: retry, but not at network-failure pace.
                    delay = max(REFUSED_RETRY_SECONDS, config.reconnect_max)
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
        peer.wake.set()
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

    # -- deltas ---------------------------------------------------------------------------

    def targets(self, doc_id: str) -> list[Peer]:
        """The peers that hold ``doc_id`` (every peer, until placement narrows it)."""
        return list(self.peers.values())

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

    def levels_met(self, nodes: set[str]) -> dict[str, bool]:
        regions = {self._regions.get(n, "") for n in nodes}
        everywhere = set(self.settings.cluster.regions) or {self.settings.region}
        in_region = [n for n in nodes if self._regions.get(n) == self.settings.region]
        return {
            "local": True,
            "region": len(in_region) >= 2,
            "quorum": len(regions & everywhere) * 2 > len(everywhere),
            "all": everywhere <= regions,
        }

    def unreachable_level(self, level: str) -> str | None:
        """Why ``level`` can never be met with this topology, or None."""
        if level == "region":
            nodes = [m for m in self.peers.values() if m.member.region == self.settings.region]
            if not nodes:
                return f"region {self.settings.region} has no other node"
        return None

    async def wait_durable(self, tracker: Tracker, level: str, timeout: float) -> str:
        """Waits until the write is durable at ``level`` or ``timeout``; returns the strongest
        level reached (the requested one when met)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.levels_met(tracker.nodes)[level]:
                    tracker.changed.clear()
                    await tracker.changed.wait()
        met = self.levels_met(tracker.nodes)
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
        }


@contextlib.asynccontextmanager
async def open_replicator(
    store: DocumentStore, settings: NodeSettings
) -> AsyncIterator[Replicator]:
    """Starts replicating ``store`` with the other nodes (dialling peers); stops on exit."""
    replicator = Replicator(store, settings)
    replicator.start()
    try:
        yield replicator
    finally:
        await replicator.aclose()
