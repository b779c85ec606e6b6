"""What a node does over one open peer link: send its deltas, apply the peer's, answer and run
anti-entropy, and keep the link alive.

With placement (peer protocol 3), a round first pulls the peer's *catalog feed* (placement
records changed since the catalog checkpoint, merged here), then its changes feed; both sides
skip the documents the other does not hold (:meth:`Replicator.shares`), so two nodes compare
only what they should share.

Anti-entropy (docs/design.md, "Anti-entropy"): each node pulls from each peer. It asks for
the peer's changes feed after the checkpoint it saved last time for that peer's storage id;
each page lists the documents changed since, with a 16-byte summary of the peer's copy. The
puller skips the documents whose summary equals its own, repairs the others with Yjs sync
step 1/2, then saves the checkpoint. Traffic grows with what changed since the last round,
not with the number of documents held.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdt import EMPTY_STATE_VECTOR, CrdtError, DocumentNotFound, StorageError
from crdt.storage import SaveCheckpoint

from . import messages as m
from .link import LinkClosed, PeerLink
from .protocol import PLACEMENT_VERSION, Closed, Heartbeat, Received, RoundTrip

if TYPE_CHECKING:
    from .peers import Peer
    from .replicator import Replicator

__all__ = ["PeerOrigin", "PeerSession"]

log = logging.getLogger("meridian.peer")

#: Documents per changes-feed page.
PAGE = 500
#: Document syncs of one anti-entropy round in flight at once.
SYNCS_IN_FLIGHT = 32
#: Requests (ChangesRequest, SyncStep1) of the peer served at once; reading waits beyond it.
SERVING = 64
_MAX_INCARNATION = 2**53


@dataclass(frozen=True, slots=True)
class PeerOrigin:
    """The origin of a change applied from a peer: who sent it, and who was sent it already."""

    node: str
    reached: tuple[str, ...]


def _changes_request(request: int, *, since: int) -> m.ChangesRequest:
    return m.ChangesRequest(request, since, PAGE)


def _catalog_request(request: int, *, since: int) -> m.CatalogRequest:
    return m.CatalogRequest(request, since, PAGE)


def _brief(message: m.Message) -> str:
    doc = getattr(message, "doc_id", None)
    seq = getattr(message, "seq", None)
    return " ".join(
        part
        for part in (f"doc={doc}" if doc else "", f"seq={seq}" if seq is not None else "")
        if part
    )


def _error_code(exc: Exception) -> str:
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class PeerSession:
    """One open link's work; :meth:`run` returns when the link closed."""

    def __init__(self, replicator: Replicator, peer: Peer, link: PeerLink) -> None:
        self.replicator = replicator
        self.peer = peer
        self.link = link
        self.config = replicator.config
        self.store = replicator.store
        # Every task of this session; all are cancelled when the link ends.
        self._tasks: set[asyncio.Task[Any]] = set()
        # Our requests awaiting the peer's answer, by request id.
        self._requests: dict[int, asyncio.Future[m.Message]] = {}
        self._next_request = 1
        # Seqs of the peer's deltas committed here and not acknowledged yet.
        self._acks: list[int] = []
        self._ack_ready = asyncio.Event()
        # Deltas of the peer being applied; reading the link waits when all are taken.
        self._apply_slots = asyncio.Semaphore(self.config.max_in_flight)
        self._serve_slots = asyncio.Semaphore(SERVING)
        # Set to start an anti-entropy round before the interval is over.
        self.anti_entropy_now = asyncio.Event()

    async def run(self) -> Closed:
        self.peer.detector.link_opened()
        for loop in (self._sender, self._acker, self._heartbeat, self._anti_entropy_loop):
            self._spawn(loop())
        closed: Closed | None = None
        try:
            async for event in self.link.events():
                if isinstance(event, Received):
                    await self._dispatch(event.message)
                elif isinstance(event, RoundTrip):
                    self.peer.rtt = event.seconds
                elif isinstance(event, Heartbeat):
                    self.peer.detector.heartbeat(event.at)
                elif isinstance(event, Closed):
                    closed = event
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(LinkClosed("the link closed"))
            self.peer.outbox.link_lost()
            self.peer.suspected = False
        return closed or self.link.closed or Closed("connection_lost", "link ended", True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, LinkClosed):
            # A bug, not the peer's doing: log it, count it, and end the link (it redials).
            log.error("peer %s: %s failed", self.peer.node_id, task.get_coro(), exc_info=exc)
            self.peer.internal_errors += 1
            self._spawn(self.link.close("internal_error", f"{type(exc).__name__}: {exc}"))

    # -- receiving ----------------------------------------------------------------------

    async def _dispatch(self, message: m.Message) -> None:
        peer = self.peer
        if log.isEnabledFor(logging.DEBUG):
            log.debug("< %s peer=%s %s", type(message).__name__, peer.node_id, _brief(message))
        if isinstance(message, m.Update | m.Tombstone):
            await self._apply_slots.acquire()
            self._spawn(self._apply(message))
        elif isinstance(message, m.Ack):
            peer.outbox.acked(message.seqs, peer.node_id)
            peer.wake.set()
        elif isinstance(message, m.Reject):
            delta = peer.outbox.rejected(message.seq)
            doc = delta.doc_id if delta else "?"
            log.warning(
                "> %s refused doc=%s: %s: %s",
                peer.node_id,
                doc,
                message.code,
                message.reason,
                extra={"peer": peer.node_id, "doc": doc},
            )
            peer.wake.set()
        elif isinstance(message, m.ChangesRequest | m.SyncStep1 | m.CatalogRequest):
            await self._serve_slots.acquire()
            self._spawn(self._serve(message))
        elif isinstance(message, m.Changes | m.SyncStep2 | m.Failure | m.CatalogPage):
            future = self._requests.get(message.request)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, m.CaughtUp):
            peer.caught_up(message.seq)
        elif isinstance(message, m.Awareness):
            self.replicator.awareness_received(message.doc_id, message.update, peer.node_id)
        elif isinstance(message, m.Placements):
            self._spawn(self.replicator.records_received(message.records, peer))
        elif isinstance(message, m.Members):
            self.replicator.members_received(message.members, peer)

    async def _apply(self, message: m.Update | m.Tombstone) -> None:
        try:
            if not 1 <= message.incarnation <= _MAX_INCARNATION:
                await self.link.send(
                    m.Reject(message.seq, "invalid_incarnation", "incarnations start at 1")
                )
                return
            origin = PeerOrigin(self.peer.node_id, message.reached)
            if isinstance(message, m.Update) and not self.replicator.may_store(message.doc_id):
                # A pin keeps this document's content out of this region (the sender's view
                # of placement is behind): refused, so the sender drops it from its outbox.
                await self.link.send(
                    m.Reject(message.seq, "pinned_elsewhere", "pinned to other regions")
                )
                return
            try:
                if isinstance(message, m.Update):
                    await self.store.apply_update(
                        message.doc_id, message.data, incarnation=message.incarnation, origin=origin
                    )
                else:
                    await self.store.apply_tombstone(
                        message.doc_id, message.incarnation, origin=origin
                    )
            except CrdtError as exc:
                self.peer.refused_from_peer += 1
                log.warning(
                    "< %s refused doc=%s: %s",
                    self.peer.node_id,
                    message.doc_id,
                    exc,
                    extra={"peer": self.peer.node_id, "doc": message.doc_id},
                )
                await self.link.send(m.Reject(message.seq, _error_code(exc), str(exc)[:1000]))
                return
            self.peer.applied_from_peer += 1
            if not self.replicator.holds(message.doc_id):
                self.replicator.stray(message.doc_id)
            self._acks.append(message.seq)
            self._ack_ready.set()
        finally:
            self._apply_slots.release()

    async def _acker(self) -> None:
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            seqs, self._acks = tuple(self._acks), []
            if seqs:
                await self.link.send(m.Ack(seqs))

    # -- sending ------------------------------------------------------------------------

    async def _sender(self) -> None:
        peer = self.peer
        reached_self = self.replicator.node_id
        while True:
            await peer.wake.wait()
            peer.wake.clear()
            while peer.outbox.ready:
                for delta in list(peer.outbox.take(time.monotonic())):
                    reached = delta.reached or (reached_self,)
                    if delta.data is None:
                        message: m.Message = m.Tombstone(
                            delta.seq, delta.doc_id, delta.incarnation, reached
                        )
                    else:
                        message = m.Update(
                            delta.seq, delta.doc_id, delta.incarnation, reached, delta.data
                        )
                    self.link.send_nowait(message)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug(
                            "> %s peer=%s %s", type(message).__name__, peer.node_id, _brief(message)
                        )
                await self.link.flush()

    def _suspect(self, silence: float) -> None:
        """Suspects the peer after ``silence`` seconds without a frame when its failure
        detector says so (:mod:`app.replication.detector`), and clears it when heard."""
        peer = self.peer
        config = self.config
        silent = peer.detector.suspects(
            silence,
            floor=min(config.suspect_after, config.link_timeout),
            threshold=config.phi_threshold,
        )
        if silent and not peer.suspected:
            peer.suspicions += 1
            log.info(
                "link to %s: nothing received for %.1fs (phi %.1f), suspected "
                "(requests go elsewhere)",
                peer.node_id,
                silence,
                peer.detector.phi(silence),
                extra={"peer": peer.node_id},
            )
        elif peer.suspected and not silent:
            log.info("link to %s: heard again", peer.node_id, extra={"peer": peer.node_id})
        peer.suspected = silent

    async def _heartbeat(self) -> None:
        config = self.config
        protocol = self.link.protocol
        while True:
            await asyncio.sleep(config.heartbeat_interval)
            now = time.monotonic()
            silent = now - protocol.last_received
            self._suspect(silent)
            if silent > config.link_timeout:
                log.warning(
                    "link to %s: nothing received for %.1fs, closing",
                    self.peer.node_id,
                    silent,
                    extra={"peer": self.peer.node_id},
                )
                await self.link.close("heartbeat_timeout", f"nothing received for {silent:.1f}s")
                return
            overdue = self.peer.outbox.oldest_in_flight()
            if overdue is not None and now - overdue > 4 * config.link_timeout:
                # The peer answers pings but not deltas (lost on the way): start over on a
                # new link, which sends them again.
                log.warning(
                    "link to %s: acknowledgements overdue, closing",
                    self.peer.node_id,
                    extra={"peer": self.peer.node_id},
                )
                await self.link.close("ack_timeout", "deltas unacknowledged for too long")
                return
            protocol.ping()
            await self.link.flush()

    # -- serving the peer's requests -----------------------------------------------------

    async def _serve(self, message: m.ChangesRequest | m.SyncStep1 | m.CatalogRequest) -> None:
        try:
            answer: m.Message
            try:
                if isinstance(message, m.ChangesRequest):
                    answer = await self._changes(message)
                elif isinstance(message, m.CatalogRequest):
                    answer = await self._catalog_page(message)
                else:
                    answer = await self._sync_step_2(message)
            except DocumentNotFound as exc:
                answer = m.Failure(message.request, "not_found", str(exc)[:1000])
            except CrdtError as exc:
                answer = m.Failure(message.request, _error_code(exc), str(exc)[:1000])
            await self.link.send(answer)
        finally:
            self._serve_slots.release()

    async def _changes(self, request: m.ChangesRequest) -> m.Changes:
        limit = max(1, min(request.limit, PAGE))
        as_of = time.monotonic()
        records = await self.store.storage.changes_since(request.since, limit)
        entries = []
        for record in records:
            if not self.replicator.shares(record.doc_id, self.peer):
                continue  # the peer does not hold it: nothing to compare
            state = await self.store.lookup(record.doc_id)
            if state is None:
                continue
            summary = b"" if state.deleted else state.document.summary()
            entries.append(m.ChangeEntry(record.doc_id, state.incarnation, state.deleted, summary))
        more = len(records) == limit
        last_seq = records[-1].seq if records else request.since
        if not more:
            self.peer.feed_served = (last_seq, as_of)
        return m.Changes(request.request, tuple(entries), last_seq, more)

    async def _catalog_page(self, request: m.CatalogRequest) -> m.CatalogPage:
        limit = max(1, min(request.limit, PAGE))
        records = await self.store.catalog.since(request.since, limit)
        more = len(records) == limit
        last_seq = records[-1].seq if records else request.since
        return m.CatalogPage(request.request, tuple(r.data for r in records), last_seq, more)

    async def _sync_step_2(self, step1: m.SyncStep1) -> m.SyncStep2:
        state = await self.store.lookup(step1.doc_id)
        if state is None:
            raise DocumentNotFound(f"{step1.doc_id!r} is not held here")
        if state.deleted:
            return m.SyncStep2(step1.request, step1.doc_id, state.incarnation, True, b"")
        update = state.document.encode_state(step1.state_vector)
        return m.SyncStep2(step1.request, step1.doc_id, state.incarnation, False, update)

    # -- anti-entropy (this node pulls) ---------------------------------------------------

    async def _request(self, build: Callable[[int], m.Message]) -> m.Message:
        request = self._next_request
        self._next_request += 1
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._requests[request] = future
        try:
            await self.link.send(build(request))
            async with asyncio.timeout(self.config.link_timeout * 6):
                return await future
        finally:
            self._requests.pop(request, None)

    async def _anti_entropy_loop(self) -> None:
        interval = self.config.anti_entropy_interval
        while True:
            try:
                await self.anti_entropy_round()
            except LinkClosed:
                raise
            except TimeoutError:
                log.warning("anti-entropy with %s: no answer, closing", self.peer.node_id)
                await self.link.close("request_timeout", "anti-entropy request unanswered")
                return
            except Exception as exc:
                self.peer.ae.failures += 1
                log.error(
                    "anti-entropy with %s failed: %s",
                    self.peer.node_id,
                    exc,
                    extra={"peer": self.peer.node_id},
                )
            try:
                async with asyncio.timeout(interval * random.uniform(0.8, 1.2)):
                    await self.anti_entropy_now.wait()
            except TimeoutError:
                pass
            self.anti_entropy_now.clear()

    async def anti_entropy_round(self) -> None:
        """Pulls every change of the peer's feed since the saved checkpoint."""
        peer, storage = self.peer, self.store.storage
        started = time.monotonic()
        traffic = self.link.bytes_sent + self.link.bytes_received
        if self.replicator.catalog is not None and (peer.version or 0) >= PLACEMENT_VERSION:
            await self._catalog_round()
        since = await storage.checkpoint(peer.storage_id)
        checked = 0
        repaired: list[str] = []
        slots = asyncio.Semaphore(SYNCS_IN_FLIGHT)

        async def sync(entry: m.ChangeEntry) -> None:
            async with slots:
                if await self._sync_entry(entry):
                    repaired.append(entry.doc_id)

        while True:
            page = await self._request(functools.partial(_changes_request, since=since))
            if not isinstance(page, m.Changes):
                raise StorageError(f"{peer.node_id} could not list its changes: {page}")
            await asyncio.gather(*(sync(entry) for entry in page.entries))
            checked += len(page.entries)
            if page.last_seq > since:
                await storage.submit(SaveCheckpoint(peer.storage_id, page.last_seq))
                since = page.last_seq
            if not page.more:
                break
        await self.link.send(m.CaughtUp(since))
        peer.ae.record(
            checked=checked,
            repaired=repaired,
            seconds=time.monotonic() - started,
            traffic=self.link.bytes_sent + self.link.bytes_received - traffic,
        )
        if repaired:
            log.info(
                "anti-entropy with %s: %d checked, %d repaired",
                peer.node_id,
                checked,
                len(repaired),
                extra={"peer": peer.node_id},
            )

    async def _catalog_round(self) -> None:
        """Pulls the placement records of the peer's catalog feed since the checkpoint."""
        peer, storage = self.peer, self.store.storage
        key = f"{peer.storage_id}/catalog"
        since = await storage.checkpoint(key)
        while True:
            page = await self._request(functools.partial(_catalog_request, since=since))
            if not isinstance(page, m.CatalogPage):
                raise StorageError(f"{peer.node_id} could not list its placement records: {page}")
            await self.replicator.records_received(page.records, peer)
            if page.last_seq > since:
                await storage.submit(SaveCheckpoint(key, page.last_seq))
                since = page.last_seq
            if not page.more:
                peer.catalog_synced_at = time.time()
                return

    async def _sync_entry(self, entry: m.ChangeEntry) -> bool:
        """Brings this node's copy up to the peer's; True when that changed anything."""
        if not self.replicator.holds(entry.doc_id):
            return False  # not this node's document (its holders compare it)
        local = await self.store.lookup(entry.doc_id)
        if local is not None and (
            local.incarnation > entry.incarnation
            or (local.incarnation == entry.incarnation and local.deleted)
        ):
            return False  # this copy is ahead: the peer pulls from us
        if entry.deleted:
            return await self._apply_tombstone(entry.doc_id, entry.incarnation)
        same = local is not None and local.incarnation == entry.incarnation
        if same and local is not None and local.document.summary() == entry.summary:
            return False
        if self.replicator.repair_pace is not None:
            await self.replicator.repair_pace()
        return await self.pull(
            entry.doc_id, local.document.state_vector() if same and local else None
        )

    def send_nowait(self, message: m.Message) -> None:
        """Queues a message and flushes it soon (for callers outside the event loop's tasks,
        e.g. awareness relays from a listener)."""
        try:
            self.link.send_nowait(message)
        except LinkClosed:
            return
        self._spawn(self.link.flush())

    def request_pull(self, doc_id: str) -> None:
        """Starts pulling ``doc_id`` from the peer (read-your-writes waits use it)."""
        self._spawn(self._pull_current(doc_id))

    async def _pull_current(self, doc_id: str) -> None:
        local = await self.store.lookup(doc_id)
        live = local is not None and not local.deleted
        try:
            await self.pull(doc_id, local.document.state_vector() if local and live else None)
        except (TimeoutError, CrdtError) as exc:
            log.warning(
                "pulling %s from %s failed: %s",
                doc_id,
                self.peer.node_id,
                exc,
                extra={"peer": self.peer.node_id, "doc": doc_id},
            )

    async def pull(
        self,
        doc_id: str,
        state_vector: bytes | None = None,
        received: Callable[[int], None] | None = None,
    ) -> bool:
        """Yjs sync step 1/2 for one document: asks the peer for what this copy lacks
        (``received`` hears the size of the update that came back); True when it changed
        the copy."""
        reply = await self._request(
            lambda r: m.SyncStep1(r, doc_id, state_vector or EMPTY_STATE_VECTOR)
        )
        if received is not None and isinstance(reply, m.SyncStep2):
            received(len(reply.update))
        if isinstance(reply, m.Failure):
            if reply.code != "not_found":
                log.warning(
                    "sync of %s with %s failed: %s", doc_id, self.peer.node_id, reply.reason
                )
            return False
        assert isinstance(reply, m.SyncStep2)
        if reply.doc_id != doc_id:
            raise m.ProtocolError(f"asked for {doc_id}, got {reply.doc_id}")
        if reply.deleted:
            return await self._apply_tombstone(doc_id, reply.incarnation)
        try:
            result = await self.store.apply_update(
                doc_id, reply.update, incarnation=reply.incarnation, origin=self._origin()
            )
        except StorageError:
            raise
        except CrdtError as exc:
            # Permanent for this copy (invalid, too large): counted, and the round goes on.
            self.peer.ae.failures += 1
            log.warning(
                "anti-entropy could not apply %s from %s: %s", doc_id, self.peer.node_id, exc
            )
            return False
        return result.changed

    async def _apply_tombstone(self, doc_id: str, incarnation: int) -> bool:
        return await self.store.apply_tombstone(doc_id, incarnation, origin=self._origin())

    def _origin(self) -> PeerOrigin:
        return PeerOrigin(self.peer.node_id, (self.replicator.node_id, self.peer.node_id))
