"""Moving copies to where placement says they belong, and dropping the ones left behind.

A node can hold a copy of a document it is not a holder of: a **hint** (a write it accepted
while the holders were unreachable), a copy left by a placement change (a region removed from
the document's policy, a pin moved), or a copy an earlier release kept (every node held
everything). :class:`Handoff` gives each such copy to the document's holders and drops it
only once a holder has confirmed a state that covers it (PRODUCT.md: "a copy is only ever
dropped after a holder's state vector covers it"):

1. the copy's whole state (which carries its delete set) goes to every live holder as a
   delta of the replication outbox;
2. each holder acknowledges it once committed: its copy now covers the state sent;
3. ``store.forget(doc, covered_by=<state vector sent>)`` drops the copy and its hint in one
   transaction, unless a write came in since (then the next round sends that too).

The other direction: a node that becomes a holder (a placement change) pulls the document
from every peer, and asks each peer that was unreachable again until it has answered.
Anti-entropy would not repair that: while this node held no copy, its peers left the document
out of the changes they listed for it, and its checkpoints of their feeds moved past them.

Both directions are driven by changes of placement records, by new hints, plus a slow
periodic pass; a copy followed by a live client here stays until the client leaves.
Tombstones are kept where they are (a hinted delete reaches the holders through the outbox and
anti-entropy, and the tombstone row is small).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from crdt import CrdtError, DocumentStore

from ..replication import Replicator, Tracker
from ..replication.protocol import REHOME_VERSION
from ..sync import Hub
from .catalog import PlacementCatalog
from .followers import ReadTracker
from .members import MemberList
from .membership import activate, remove
from .placement import PlacementRecord, move_target

__all__ = ["Handoff", "HandoffStatistics", "Pace", "open_handoff"]

log = logging.getLogger("meridian.handoff")

#: Seconds between rounds over the hints (held in memory) and idle follower copies.
PASS_INTERVAL = 5.0
#: Seconds between scans of every document held here for copies placement gives to others
#: (record changes find them at once; the scan is the safety net, and it reads the store).
SCAN_INTERVAL = 60.0
#: Seconds to wait for the holders' acknowledgements of one copy.
ACK_TIMEOUT = 10.0
#: Documents moved at once.
CONCURRENCY = 8
#: Moves a pace lets start at once after an idle spell (``placement.move_rate`` spreads the
#: rest evenly).
BURST = 16


class Pace:
    """Spreads moves evenly at ``rate`` per second, allowing a burst of :data:`BURST` after
    an idle spell (a token bucket, without I/O: :meth:`delay` reserves a slot)."""

    def __init__(self, rate: float, burst: int = BURST) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.interval = 1.0 / rate
        self.burst = burst
        self._next = -math.inf

    def delay(self, now: float) -> float:
        """Seconds to wait, from ``now``, before the next move may start."""
        start = max(self._next, now - (self.burst - 1) * self.interval)
        self._next = start + self.interval
        return max(0.0, start - now)


@dataclass(frozen=True, slots=True)
class HandoffStatistics:
    #: Copies this node should not hold, waiting to be handed off (hints among them).
    pending: int
    hints: int
    handed_off: int
    pulled: int
    failures: int
    #: Documents this node newly holds that some peer has not been asked for yet.
    pulls_pending: int
    #: Documents whose home this node moved toward their readers.
    homes_moved: int
    #: Bytes of Yjs updates moved: handed off (once per holder) and pulled.
    bytes_handed_off: int
    bytes_pulled: int


class Handoff:
    """Hands off this node's surplus copies and pulls the documents it newly holds."""

    def __init__(
        self,
        store: DocumentStore,
        catalog: PlacementCatalog,
        replicator: Replicator,
        hub: Hub,
        reads: ReadTracker,
        members: MemberList | None = None,
        move_rate: float = 200.0,
    ) -> None:
        self._store = store
        self._members = members
        self._reads = reads
        self._catalog = catalog
        self._replicator = replicator
        self._hub = hub
        # Documents to look at on the next round (hints, records that changed, ...).
        self._due: set[str] = set()
        # Documents this node newly holds -> the peers not asked yet for what they have.
        self._pulls: dict[str, set[str]] = {}
        # Documents moved at once.
        self._slots = asyncio.Semaphore(CONCURRENCY)
        # ...and at most placement.move_rate per second.
        self._pace = Pace(move_rate)
        # Set when something is due; the loop also wakes every PASS_INTERVAL.
        self._wake = asyncio.Event()
        # Copies found not held here in the last pass, for statistics.
        self._surplus = 0
        self.handed_off = 0
        self.pulled = 0
        #: Bytes of Yjs updates moved: states sent to holders (once per holder) and updates
        #: received by pulls.
        self.bytes_handed_off = 0
        self.bytes_pulled = 0
        self.homes_moved = 0
        self.failures = 0
        #: Called once this node, leaving, has handed off every copy and is removed.
        self.on_removed: list[Callable[[], None]] = []
        catalog.on_change.append(self._record_changed)
        catalog.on_topology.append(self._topology_changed)

    def statistics(self) -> HandoffStatistics:
        return HandoffStatistics(
            pending=max(self._surplus, len(self._due)),
            hints=len(self._store.hints()),
            handed_off=self.handed_off,
            pulled=self.pulled,
            failures=self.failures,
            pulls_pending=len(self._pulls),
            homes_moved=self.homes_moved,
            bytes_handed_off=self.bytes_handed_off,
            bytes_pulled=self.bytes_pulled,
        )

    def note(self, doc_id: str) -> None:
        """Looks at ``doc_id``'s copy on the next round (a hint was added, a link came up)."""
        self._due.add(doc_id)
        self._wake.set()

    def _sources(self, record: PlacementRecord | None) -> set[str]:
        """The peers to pull a document this node newly keeps from: every peer — except for
        a joining node, which asks the document's current copies only (they have every
        write; a hint or stray copy elsewhere is handed off to every copy, this node
        included, by the node that has it)."""
        peers = set(self._replicator.peers)
        if record is None or self._my_state() != "joining":
            return peers
        return peers & set(self._catalog.copies_now(record))

    def _record_changed(self, record: PlacementRecord) -> None:
        if self._catalog.holds(record):
            self._pulls.setdefault(record.doc_id, set()).update(self._sources(record))
        else:
            self._pulls.pop(record.doc_id, None)
            self._due.add(record.doc_id)
        self._wake.set()

    def _topology_changed(self, gained: list[str], lost: list[str]) -> None:
        """A member joined, left or was removed: pull what this node now keeps, hand off what
        it no longer does."""
        for doc_id in gained:
            self._pulls.setdefault(doc_id, set()).update(self._sources(self._catalog.get(doc_id)))
        for doc_id in lost:
            self._pulls.pop(doc_id, None)
            self._due.add(doc_id)
        if gained or lost:
            log.info(
                "the member list changed: %d documents to take, %d to hand off",
                len(gained),
                len(lost),
            )
        self._wake.set()

    async def _step_membership(self) -> None:
        """A joining node becomes active once it has its share; a leaving one is removed
        once it has handed off every copy."""
        members = self._members
        me = members.me if members is not None else None
        if members is None or me is None:
            return
        if me.state == "joining" and not self._pulls and self._caught_up():
            log.info("took this node's share of the documents: now active")
            members.apply(activate(me, members.clock.now()))
        elif me.state == "leaving" and await self._handed_everything():
            log.info("every copy handed off: this node leaves the cluster")
            members.apply(remove(me, members.clock.now()))
            for listener in self.on_removed:
                listener()

    async def _handed_everything(self) -> bool:
        """Whether a leaving node is done: it holds no live document (tombstones stay, as
        they do everywhere), and every change it sent — a delete among them — reached the
        peers it was sent to (nothing queued, in flight, or left to anti-entropy)."""
        live, _ = await self._store.storage.count_documents()
        if live:
            return False
        for doc_id in self._store.hints():
            state = await self._store.lookup(doc_id)
            if state is not None and not state.deleted:
                return False
        for peer in self._replicator.peers.values():
            entry = self._members.get(peer.node_id) if self._members is not None else None
            if entry is None or not entry.live:
                continue
            outbox = peer.outbox.statistics()
            if outbox.queued or outbox.in_flight or peer.outbox.overflow_since is not None:
                return False
        return True

    def _my_state(self) -> str | None:
        return self._members.state if self._members is not None else None

    def _changing_membership(self) -> bool:
        return self._my_state() in ("joining", "leaving")

    def _caught_up(self) -> bool:
        """Whether every live member is linked and this node has read its whole catalog feed
        since the link opened: every record it knows is here, so every document this node
        will hold is among the pulls (each asks the document's current copies)."""
        for peer in self._replicator.peers.values():
            entry = self._members.get(peer.node_id) if self._members is not None else None
            if entry is None or not entry.live:
                continue
            if peer.state != "up" or peer.up_since is None:
                return False
            synced = peer.catalog_synced_at
            if synced is None or synced < peer.up_since:
                return False
        return True

    async def run(self) -> None:
        """Rounds until cancelled: the due documents and pulls at once, the hints and idle
        follower copies every :data:`PASS_INTERVAL` seconds, every copy this node should not
        hold every :data:`SCAN_INTERVAL` seconds."""
        adopted = await self._catalog.adopt()
        if adopted:
            log.info("placement records made for %d documents held here", adopted)
        if self._my_state() == "joining":
            # Restarted while joining (a crash, a kill): ask again for every document of the
            # share; a pull of one taken already costs a state-vector exchange.
            self._topology_changed(self._catalog.kept(), [])
        last_scan = 0.0
        while True:
            if time.monotonic() - last_scan >= SCAN_INTERVAL:
                last_scan = time.monotonic()
                await self._scan()
            self._due |= self._store.hints()
            for step in (
                self._drop_idle_followers,
                self._move_cold_homes,
                self._step_membership,
            ):
                try:
                    await step()
                except Exception:  # a failed commit of a record change: the next pass retries
                    log.exception("placement pass %s failed", step.__name__)
                    self.failures += 1
            due, self._due = self._due, set()
            pulls = list(self._pulls)
            await asyncio.gather(
                *(self._one(doc_id, False) for doc_id in due),
                *(self._one(doc_id, True) for doc_id in pulls),
            )
            with contextlib.suppress(TimeoutError):
                busy = self._due or self._pulls or self._changing_membership()
                async with asyncio.timeout(1.0 if busy else PASS_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()

    async def _one(self, doc_id: str, pull: bool) -> None:
        async with self._slots:
            try:
                done = await (self._pull(doc_id) if pull else self._hand_off(doc_id))
            except Exception:  # a bug: logged and counted, and the document retried
                log.exception("moving %s failed", doc_id, extra={"doc": doc_id})
                self.failures += 1
                done = False
            if not done and not pull:  # a pull stays pending until every peer answered
                self._due.add(doc_id)

    def _received(self, size: int) -> None:
        self.bytes_pulled += size

    async def pace_repair(self) -> None:
        """The replicator's ``repair_pace``: a joining node's anti-entropy repairs (most of
        its share comes that way) count among its moves; other nodes' repairs do not wait."""
        if self._my_state() == "joining":
            await self._paced()

    async def _paced(self) -> None:
        """Waits for this move's slot (``placement.move_rate``): only moves that send or ask
        for something count, not the checks that find nothing to do."""
        await asyncio.sleep(self._pace.delay(time.monotonic()))

    async def _drop_idle_followers(self) -> None:
        """Follower copies here that no client used for ``follow_idle`` are given up (the
        record change makes this copy surplus, and the hand-off drops it once covered)."""
        catalog = self._catalog
        for doc_id in self._reads.idle(sorted(catalog.following)):
            if self._hub.followed(doc_id):
                self._reads.touch(doc_id)  # a live client here is an access
                continue
            log.info("follower copy of %s idle: dropping it", doc_id, extra={"doc": doc_id})
            await catalog.follow(doc_id, catalog.region, False)
            self._reads.forget(doc_id)

    async def _move_cold_homes(self) -> None:
        """Homes move toward readers: a document this node decides for (the first holder of
        its home region) whose home region's clients barely use it, while a follower copy
        elsewhere has been in use for a while, gets that region as its home; this copy is
        then surplus, and the hand-off drops it once the new holders cover it."""
        catalog = self._catalog
        if not catalog.movable or not self._replicator.everyone_speaks(REHOME_VERSION):
            return  # a node of an earlier release would refuse the moved record
        now = time.time()
        for doc_id in sorted(catalog.movable):
            record = catalog.get(doc_id)
            target = move_target(record, catalog.topology) if record is not None else None
            if target is None or self._hub.followed(doc_id):
                continue  # a live client here is a use
            region, since = target
            if not self._reads.cold(doc_id, now - since.millis / 1000):
                continue
            log.info(
                "the home of %s moves to %s, where its readers are",
                doc_id,
                region,
                extra={"doc": doc_id},
            )
            await catalog.move_home(doc_id, region)
            self.homes_moved += 1

    async def _scan(self) -> None:
        """Every copy here that placement gives to others, and every hint, becomes due."""
        surplus = set(self._store.hints())
        after: str | None = None
        while True:
            page = await self._store.list_documents("", after, 1000)
            for document in page:
                record = self._catalog.get(document.id)
                if record is not None and not self._catalog.holds(record):
                    surplus.add(document.id)
            if len(page) < 1000:
                break
            after = page[-1].id
        self._surplus = len(surplus)
        self._due |= surplus

    async def _hand_off(self, doc_id: str) -> bool:
        """True when nothing is left to do for ``doc_id`` here, False to try again later."""
        record = self._catalog.get(doc_id)
        if record is None:
            return False  # its record has not arrived: nobody knows its holders yet
        if self._catalog.holds(record):
            if doc_id in self._store.hints():
                await self._store.drop_hint(doc_id)
            return True
        state = await self._store.lookup(doc_id)
        if state is None:
            if doc_id in self._store.hints():
                await self._store.drop_hint(doc_id)
            return True
        if self._my_state() == "leaving" and self._hub.followed(doc_id):
            # This node leaves: its clients reconnect (to it or another node), and a node
            # that holds nothing forwards them to a holder.
            self._hub.release(doc_id, "this node is leaving the cluster")
        if state.deleted or self._hub.followed(doc_id):
            return False
        replicator = self._replicator
        holders = [peer for peer in replicator.targets(doc_id) if peer.state == "up"]
        if not holders:
            return False
        await self._paced()
        document = state.document
        # Changes still waiting for their dependencies are sent too (encode_state carries
        # them), so the holders' acknowledgement covers them as well.
        covered = document.reach_vector()
        tracker = Tracker(replicator.node_id)
        update = document.encode_state()
        replicator.deliver(doc_id, state.incarnation, update, tracker=tracker)
        self.bytes_handed_off += len(update) * len(holders)
        wanted = {peer.node_id for peer in holders}
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                while not wanted <= tracker.nodes:
                    tracker.changed.clear()
                    await tracker.changed.wait()
        except TimeoutError:
            # Every live holder must have it: one that did not acknowledge may never be
            # repaired by anti-entropy (its checkpoint may be past this document's changes).
            self.failures += 1
            return False
        try:
            dropped = await self._store.forget(doc_id, covered, incarnation=state.incarnation)
        except CrdtError as exc:
            self.failures += 1
            log.warning("handing off %s: %s", doc_id, exc, extra={"doc": doc_id})
            return False
        if dropped:
            self.handed_off += 1
            log.info(
                "handed off %s to %s",
                doc_id,
                ", ".join(sorted(tracker.nodes & wanted)),
                extra={"doc": doc_id},
            )
        return dropped

    async def _pull(self, doc_id: str) -> bool:
        """Asks the linked peers not asked yet for what this node's copy of ``doc_id`` lacks;
        True once every peer has answered."""
        pending = self._pulls.get(doc_id)
        if not pending:
            self._pulls.pop(doc_id, None)
            return True
        peers = self._replicator.peers
        pending.intersection_update(peers)
        asked = [
            (node_id, session)
            for node_id in sorted(pending)
            if (session := peers[node_id].session) is not None
        ]
        if not asked:
            return False
        await self._paced()
        local = await self._store.lookup(doc_id)
        live = local is not None and not local.deleted
        vector = local.document.state_vector() if local is not None and live else None
        results: list[Any] = await asyncio.gather(
            *(session.pull(doc_id, vector, self._received) for _, session in asked),
            return_exceptions=True,
        )
        if any(result is True for result in results):
            self.pulled += 1
        for (node_id, _), result in zip(asked, results, strict=True):
            if not isinstance(result, BaseException):
                pending.discard(node_id)
        if pending:
            return False
        if self._pulls.get(doc_id) is pending:
            del self._pulls[doc_id]
        return True


@contextlib.asynccontextmanager
async def open_handoff(
    store: DocumentStore,
    catalog: PlacementCatalog,
    replicator: Replicator,
    hub: Hub,
    reads: ReadTracker,
    members: MemberList | None = None,
    move_rate: float = 200.0,
) -> AsyncIterator[Handoff]:
    """Runs a :class:`Handoff` until exit (its task is cancelled then)."""
    handoff = Handoff(store, catalog, replicator, hub, reads, members, move_rate)
    task = asyncio.create_task(handoff.run(), name="handoff")
    try:
        yield handoff
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
