"""The request path's first step for a document: serve it here, forward it, or keep a hint.

Every document route calls :func:`dispatch` (HTTP) or :func:`dispatch_websocket` before it
touches the store. The decision is :func:`app.cluster.router.route`'s; this module does its
I/O: it checks a forwarded request's signature (a forged ``X-Meridian-Forwarded`` is a 400),
merges the placement record a forwarding node sent along, forwards to the nearest live holder
(the next one when a holder cannot be reached), and answers 503 when a pin or the holders'
absence leaves no other way. A document's first write stores its placement record (home: this
node's region) before the write itself when it is written here, and sends it with a forwarded
write (``X-Meridian-Placement``), which the holder merges before it routes: the holder stores
it, and replication spreads it from there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from crdt import CrdtError, check_document_id

from ..cluster.catalog import decode_record, encode_record
from ..cluster.placement import PlacementError, PlacementRecord
from ..cluster.router import Route, route
from ..codec import close_reason
from ..errors import ApiError
from ..node import Node
from ..replication.protocol import DELETED_VERSION
from .forward import (
    FORWARDED_HEADER,
    AnswerTooLarge,
    ForgedForward,
    Forwarder,
    ForwardTimeout,
    HolderUnreachable,
    request_target,
    verify_forwarded,
)

__all__ = [
    "PLACEMENT_HEADER",
    "SERVED_BY_HEADER",
    "Forwarding",
    "Plan",
    "ServedBy",
    "dispatch",
    "dispatch_websocket",
    "forwarded_by",
    "note_deleted",
    "refuse_if_removed",
]

log = logging.getLogger("meridian.routing")

#: The placement record a forwarding node sends with a request (JSON), and the node that
#: served an answer.
PLACEMENT_HEADER = "x-meridian-placement"
SERVED_BY_HEADER = "x-meridian-served-by"


@dataclass(slots=True)
class Forwarding:
    """The forwarder of this node's HTTP face and what it counted."""

    #: None for a node with no peers (it holds every document itself).
    forwarder: Forwarder | None
    #: Requests forwarded, by route template and method.
    forwarded: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Requests refused for a forged X-Meridian-Forwarded header.
    forged: int = 0

    def count(self, scope: Scope, method: str) -> None:
        # The router records the route it matched in the scope.
        template = getattr(scope.get("route"), "path_format", "?")
        self.forwarded[(str(template), method)] += 1


def forwarding(connection: Request | WebSocket) -> Forwarding:
    value: Forwarding = connection.app.state.forwarding
    return value


@dataclass(slots=True)
class Plan:
    """What to do with one request for a document, here."""

    route: Route
    #: The document's record, or (a node with no peers) the function that drafts one: such
    #: a node keeps no records, and most requests never look at it.
    placement: PlacementRecord | Callable[[], PlacementRecord]
    #: The record is a draft made for this request (a first write): store it before writing.
    draft: bool
    #: The node that forwarded the request to this one, if any.
    forwarded_by: str | None

    @property
    def record(self) -> PlacementRecord:
        if callable(self.placement):
            self.placement = self.placement()
        return self.placement

    @property
    def hint(self) -> bool:
        return self.route.action == "hint"

    @property
    def floor(self) -> int:
        """The lowest incarnation a client's write may go to here: the one after the highest
        the record knows deleted (0: no floor). A hint written without a copy (none was
        reachable to fetch) would otherwise start a first incarnation, and a copy here that
        has not heard of the last delete yet (a follower, a holder behind) would take it into
        the deleted one: either way the write is discarded once the copies meet, although
        this node knew of the delete before it."""
        if callable(self.placement):
            return 0
        deleted = self.placement.deleted
        return deleted + 1 if deleted else 0


def forwarded_by(node: Node, connection: Request | WebSocket, method: str) -> str | None:
    """The node that forwarded this request, or None when a client sent it; raises ApiError
    (400 ``forged_forward``) for a header that is not a valid signature of this cluster."""
    value = connection.headers.get(FORWARDED_HEADER)
    if value is None:
        return None
    try:
        return verify_forwarded(
            node.settings.secret, value, method, request_target(connection.scope), time.time()
        )
    except ForgedForward as exc:
        forwarding(connection).forged += 1
        raise ApiError(400, "forged_forward", str(exc)) from None


async def _plan(
    node: Node,
    connection: Request | WebSocket,
    doc_id: str,
    *,
    method: str,
    write: bool,
    exclude: frozenset[str] = frozenset(),
) -> Plan:
    check_document_id(doc_id)
    refuse_if_removed(node)
    source = forwarded_by(node, connection, method)
    catalog = node.catalog
    replicator = node.replicator
    if replicator is None:
        # A node with no peers holds every document and keeps no records: nothing to decide
        # (the hot path of a lone node: no record, no rendezvous hashing, no store lookup).
        return Plan(Route("local", (node.node_id,)), partial(catalog.draft, doc_id), True, source)
    record = catalog.get(doc_id)
    draft = record is None
    if record is None:
        # A forwarded first write carries the forwarding node's draft: place it the same way
        # (stored with the write, once the write is known to be valid).
        sent = connection.headers.get(PLACEMENT_HEADER) if source is not None else None
        try:
            record = decode_record(sent.encode()) if sent is not None else None
        except PlacementError as exc:
            raise ApiError(400, "invalid_placement_record", str(exc)) from None
        if record is None or record.doc_id != doc_id:
            record = catalog.draft(doc_id)

    def live(node_id: str) -> bool:
        if node_id == node.node_id:
            return True
        peer = replicator.peers.get(node_id)
        return peer is not None and peer.state == "up" and not peer.suspected

    local = await node.store.lookup(doc_id)

    def decide() -> Route:
        return route(
            record,
            catalog.topology,
            here=node.node_id,
            region=node.region,
            live=live,
            write=write,
            forwarded=source is not None,
            has_copy=local is not None,
            exclude=exclude,
        )

    decision = decide()
    if decision.action in ("hint", "refuse"):
        # Just started: the peers may not have linked yet (not unreachable).
        await replicator.wait_first_links()
        decision = decide()
    if decision.action == "hint" and (local is None or local.deleted) and not draft:
        await _fetch_before_hint(node, record, live)
    if draft and not write and decision.action != "local":
        # Nobody has written it as far as this node knows: answer here (a 404).
        decision = Route("local", decision.holders)
    if not draft:
        await _follow_readers(node, record, decision, write=write, source=source)
    return Plan(decision, record, draft, source)


def refuse_if_removed(node: Node) -> None:
    """Raises ApiError 503 ``node_removed`` once this node knows it was removed from the
    cluster: whatever it accepted now would stay here, with nobody to hand it to."""
    replicator = node.replicator
    if replicator is not None and replicator.removed is not None:
        raise ApiError(
            503,
            "node_removed",
            f"{node.node_id} was removed from the cluster ({replicator.removed}): send "
            "requests to another node",
        )


async def _fetch_before_hint(
    node: Node, record: PlacementRecord, live: Callable[[str], bool]
) -> None:
    """A hint for a document this node has never seen, or holds only a tombstone of: first
    fetch it from the nearest live copy, so the write lands in its current incarnation.
    Written blind, it would create a first incarnation (or the one after an old tombstone),
    and the holders would discard it as stale once the document has been deleted and
    re-created since (an acknowledged write lost). With no copy reachable, the write is made
    blind (docs/design.md, "Always writable")."""
    replicator = node.replicator
    assert replicator is not None
    catalog = node.catalog
    topology = catalog.topology
    copies = [n for n in catalog.copies_now(record) if n != node.node_id and live(n)]
    copies.sort(key=lambda n: topology.latency(node.region, topology.region_of(n) or node.region))
    if copies:
        await replicator.fetch(record.doc_id, copies, node.settings.cluster.forward_timeout)


async def _follow_readers(
    node: Node, record: PlacementRecord, decision: Route, *, write: bool, source: str | None
) -> None:
    """Copies follow readers: a read this node forwards counts toward a follower copy in its
    region (docs/design.md, "Placement"); an access served from a follower copy here keeps
    it from going idle; an access of this region's clients served here keeps the home from
    moving away."""
    reads = node.reads
    if decision.action == "local":
        if source is None or node.catalog.region_of(source) == node.region:
            reads.access(record.doc_id)
        if record.doc_id in node.catalog.following:
            reads.touch(record.doc_id)
        return
    if write or source is not None or decision.action != "forward" or node.replicator is None:
        return
    if record.pinned or node.region in node.catalog.regions(record):
        return
    if reads.read(record.doc_id):
        log.info(
            "%s is read often from %s: gaining a follower copy there",
            record.doc_id,
            node.region,
            extra={"doc": record.doc_id},
        )
        await node.catalog.follow(record.doc_id, node.region, True)


async def _place(node: Node, record: PlacementRecord) -> None:
    """Stores a first write's record before the write, so the document is placed the same
    way everywhere from its first change on. A node with no peers keeps none: it holds every
    document, and its records would only cost a commit per new document."""
    if node.replicator is not None:
        await node.catalog.ensure(record)


def _forwarder(connection: Request | WebSocket) -> Forwarder:
    forwarder = forwarding(connection).forwarder
    assert forwarder is not None, "a node with no peers forwards nothing"
    return forwarder


def _base_url(node: Node, target: str) -> str:
    replicator = node.replicator
    assert replicator is not None, "a node with no peers forwards nothing"
    return f"http://{replicator.peers[target].address}"


async def dispatch(
    node: Node,
    request: Request,
    doc_id: str,
    *,
    write: bool,
    body: bytes = b"",
    creates: Callable[[], object] | None = None,
) -> Plan | Response:
    """Routes an HTTP request for ``doc_id``: returns the holder's answer when it was
    forwarded, else the :class:`Plan` to serve it here. A write that may create the document
    passes ``creates``: before a first write's record is stored here, it is called to check
    the write on an empty document (it raises for input that changes nothing, so bad input
    leaves no record behind); a write without it (a delete) never places a document. Raises
    ApiError: 400 for a forged forward, 503 when no holder can serve it, 504 when a holder
    took it but did not answer in time, 502 when the answer was too large to relay."""
    tried: frozenset[str] = frozenset()
    while True:
        plan = await _plan(node, request, doc_id, method=request.method, write=write, exclude=tried)
        if plan.draft and write and creates is None:
            return Plan(Route("local", plan.route.holders), plan.placement, True, plan.forwarded_by)
        decision = plan.route
        if decision.action == "refuse":
            raise ApiError(503, decision.code, decision.reason)
        if decision.action != "forward":
            if plan.draft and write and creates is not None and node.replicator is not None:
                if await node.store.lookup(doc_id) is None:
                    creates()  # a first write: bad input must leave no record behind
                await _place(node, plan.record)
            return plan
        target = decision.node
        assert target is not None
        try:
            answer = await _forwarder(request).forward_http(
                _base_url(node, target),
                request,
                body,
                headers={PLACEMENT_HEADER: encode_record(plan.record).decode()},
                timeout=_hop_timeout(node, request),
            )
        except HolderUnreachable as exc:
            log.info("%s: %s", doc_id, exc, extra={"doc": doc_id})
            tried |= {target}
            continue
        except ForwardTimeout as exc:
            what = "the connection to it was lost" if exc.lost else "it did not answer in time"
            raise ApiError(
                504,
                "forward_timeout",
                f"{target} took the request but {what}; its outcome is unknown ({exc})",
            ) from None
        except AnswerTooLarge as exc:
            raise ApiError(502, "answer_too_large", str(exc)) from None
        forwarding(request).count(request.scope, request.method)
        return answer


def _hop_timeout(node: Node, request: Request) -> float:
    """How long the holder may take: the forwarding budget, plus the waits the request asks
    of it (``after=`` and a durability level's ``timeout=``)."""
    cluster = node.settings.cluster
    wait = cluster.replication.durability_timeout
    with contextlib.suppress(ValueError):  # a timeout= that is no number: the holder refuses it
        wait = max(wait, min(float(request.query_params.get("timeout", wait)), 60.0))
    return cluster.forward_timeout + cluster.replication.after_timeout + wait


async def dispatch_websocket(
    node: Node, websocket: WebSocket, doc_id: str, *, write: bool
) -> Plan | None:
    """Routes a client WebSocket for ``doc_id`` (not accepted yet; ``write``: it may write,
    as ``/v1/sync`` does): None when it was forwarded and has ended, else the :class:`Plan`
    to serve it here. A socket nobody can serve is closed with 1013 (try again later);
    raises ApiError for a forged forward."""
    tried: frozenset[str] = frozenset()
    replicator = node.replicator
    if replicator is not None and replicator.removed is not None:
        # Accepted first: a close before the handshake is an HTTP 403, which reads as "not
        # allowed" rather than "try another node".
        await websocket.accept()
        await websocket.close(1013, close_reason(f"{node.node_id} was removed from the cluster"))
        return None
    while True:
        plan = await _plan(node, websocket, doc_id, method="GET", write=write, exclude=tried)
        decision = plan.route
        if decision.action == "refuse":
            await websocket.close(1013, decision.code)
            return None
        if decision.action != "forward":
            if plan.draft and write:
                await _place(node, plan.record)
            return plan
        target = decision.node
        assert target is not None
        if plan.draft and write:
            await _place(node, plan.record)
        try:
            await _forwarder(websocket).forward_websocket(_base_url(node, target), websocket)
        except HolderUnreachable as exc:
            log.info("%s: %s", doc_id, exc, extra={"doc": doc_id})
            tried |= {target}
            continue
        forwarding(websocket).count(websocket.scope, "WS")
        return None


async def note_deleted(node: Node, doc_id: str, incarnation: int) -> None:
    """After a client's delete: the document's record learns that ``incarnation`` is
    deleted, once every peer reads that field (protocol version 6): an older node refuses a
    record that carries it. A failure to store it is logged: the delete itself is done."""
    replicator = node.replicator
    if replicator is None or not replicator.everyone_spoke(DELETED_VERSION):
        return
    try:
        await node.catalog.note_deleted(doc_id, incarnation)
    except CrdtError as exc:
        log.warning("%s: the record could not note deleted incarnation %d: %s",
                    doc_id, incarnation, exc, extra={"doc": doc_id})  # fmt: skip


class ServedBy:
    """Names the node that served each HTTP answer (``X-Meridian-Served-By``), unless the
    answer was relayed from the holder that served it (which named itself)."""

    def __init__(self, app: ASGIApp, node: str) -> None:
        self.app = app
        self.node = node
        self._header = (SERVED_BY_HEADER.encode(), node.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        name = self._header[0]

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if all(key.lower() != name for key, _ in headers):
                    message["headers"] = [*headers, self._header]
            await send(message)

        await self.app(scope, receive, named)
