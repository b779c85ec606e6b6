"""Prometheus metrics of one node: ``GET /metrics`` (docs/operations.md, "Metrics").

Each node owns a :class:`Metrics`, made by :func:`app.http.create_app`, with its own
``CollectorRegistry`` (never the process-wide default one: several nodes run in one test
process). Most series are read at scrape time from the ``statistics()`` snapshots of the store,
the storage writer, the replicator and the hub (:class:`NodeCollector`). Only what needs one
observation per event is recorded as it happens:

- HTTP requests by route template, method and status, and their latency: :class:`HttpMetrics`,
  a pure ASGI middleware (WebSocket connections pass through untouched);
- 4xx answers by error code: :func:`app.errors.install_error_handlers` calls
  :meth:`Metrics.rejected`;
- apply and commit latencies and group commit sizes: the ``on_apply`` / ``on_commit`` hooks of
  :class:`crdt.DocumentStore` and :class:`crdt.Storage`, set by :func:`open_node_metrics`.

Counts that need a DuckDB read (live documents, tombstones, stored bytes) are refreshed by a
task of the lifespan every :attr:`Metrics.refresh_seconds`: a scrape never waits for DuckDB.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crdt import Storage, StorageError

from ..cluster.membership import STATES
from ..node import VERSION, Node

if TYPE_CHECKING:
    from .routing import Forwarding

__all__ = [
    "HttpMetrics",
    "Metrics",
    "NodeCollector",
    "RequestRate",
    "open_node_metrics",
    "router",
]

log = logging.getLogger("meridian.metrics")

#: Seconds between two reads of the counts that need DuckDB (a scan of the stored updates).
REFRESH_SECONDS = 30.0
#: HTTP and commit latencies: from half a millisecond to ten seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Applying an update in memory: tens of microseconds for a small one.
APPLY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1, 1)
#: Jobs in one group commit: 1 to 1024 (storage.max_batch), by powers of two.
BATCH_BUCKETS = tuple(float(2**i) for i in range(11))
#: Methods that get their own label value; any other is "other" (bounded label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request that matched no route (never its raw path).
UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class StorageScan:
    """The counts read from DuckDB by the refresh task, and when."""

    live: int
    tombstones: int
    stored_bytes: int
    at: float


class RequestRate:
    """Requests answered over the last :attr:`WINDOW` seconds, in one-second buckets: the
    request rate ``/v1/cluster`` shows per node (load spread over a region's nodes)."""

    WINDOW = 10

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: collections.deque[list[int]] = collections.deque()
        #: Requests answered since start.
        self.total = 0

    def note(self) -> None:
        second = int(self._clock())
        self.total += 1
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])
        self._trim(second)

    def per_second(self) -> float:
        """Requests per second over the last :attr:`WINDOW` whole seconds."""
        now = int(self._clock())
        self._trim(now)
        return sum(n for second, n in self._buckets if second < now) / self.WINDOW

    def _trim(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] < now - self.WINDOW:
            self._buckets.popleft()


class Metrics:
    """The metrics of one node: its registry and the instruments observed per event."""

    def __init__(self) -> None:
        #: Requests per second, for /v1/cluster.
        self.requests = RequestRate()
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "meridian_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "meridian_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected_inputs = Counter(
            "meridian_rejected",
            "Requests refused with a 4xx, by error code",
            ["reason"],
            registry=registry,
        )
        self.apply_duration = Histogram(
            "meridian_apply_duration_seconds",
            "Validating and applying a write in memory, before its commit",
            buckets=APPLY_BUCKETS,
            registry=registry,
        )
        self.commit_duration = Histogram(
            "meridian_commit_duration_seconds",
            "A write's time from being queued for the storage writer to committed",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.transaction_duration = Histogram(
            "meridian_commit_transaction_duration_seconds",
            "One group commit's DuckDB transaction",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_batch_size = Histogram(
            "meridian_commit_batch_size",
            "Writes committed together in one transaction (group commit)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        #: Seconds between two refreshes of :attr:`scan` (read when the lifespan starts).
        self.refresh_seconds = REFRESH_SECONDS
        #: The latest DuckDB counts; None until the first refresh.
        self.scan: StorageScan | None = None
        #: Forwarded requests and their failures (set by the app's lifespan).
        self.forwarding: Forwarding | None = None
        #: Refreshes that failed (logged; the previous counts stay).
        self.scan_failures = 0

    def rejected(self, code: str) -> None:
        """A request refused with a 4xx and error ``code``."""
        self.rejected_inputs.labels(code).inc()

    def observe_commit(self, batch_size: int, seconds: float, job_seconds: list[float]) -> None:
        """The storage writer's ``on_commit`` hook (called from its thread)."""
        self.commit_batch_size.observe(batch_size)
        self.transaction_duration.observe(seconds)
        for waited in job_seconds:
            self.commit_duration.observe(waited)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition of every metric (OpenMetrics when ``accept`` asks for it) and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def refresh(self, storage: Storage) -> None:
        """Reads the counts that need DuckDB (on the storage's reader threads)."""
        live, tombstones = await storage.count_documents()
        stored = await storage.stored_bytes()
        self.scan = StorageScan(live, tombstones, stored, time.time())

    async def _refresh_loop(self, storage: Storage) -> None:
        while True:
            try:
                await self.refresh(storage)
            except StorageError as exc:
                self.scan_failures += 1
                log.warning("reading the storage counts for /metrics failed: %s", exc)
            await asyncio.sleep(self.refresh_seconds)


@contextlib.asynccontextmanager
async def open_node_metrics(metrics: Metrics, node: Node) -> AsyncIterator[None]:
    """Connects ``metrics`` to ``node`` while open: the engine's hooks, the collector of its
    statistics, and the task refreshing the DuckDB counts; undone and cancelled on exit."""
    store, storage = node.store, node.store.storage
    store.on_apply = metrics.apply_duration.observe
    storage.on_commit = metrics.observe_commit
    collector = NodeCollector(node, metrics)
    metrics.registry.register(collector)
    # Owned here: cancelled on exit, before the storage closes.
    refresher = asyncio.ensure_future(metrics._refresh_loop(storage))
    try:
        yield
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        metrics.registry.unregister(collector)
        store.on_apply = None
        storage.on_commit = None


class HttpMetrics:
    """Pure ASGI middleware counting HTTP requests by route template (the matched route's
    path format, such as ``/v1/docs/{doc_id}``), method and status, and timing them to the
    end of the answer (streamed bodies included). Other connections pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled children, looked up once per (route, method[, status]): prometheus'
        # labels() validates and hashes its arguments on every call. Bounded: routes, methods
        # and statuses are finite sets.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            # The server error handler outside this middleware answers it with a 500.
            if status is None:
                status = 500
            raise
        finally:
            # None: cancelled before answering; there is no status to count.
            if status is not None:
                self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route_template(scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        count = self._counts.get((route, method, status))
        if count is None:
            count = self.metrics.http_requests.labels(route, method, str(status))
            self._counts[(route, method, status)] = count
        count.inc()
        self.metrics.requests.note()
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = self.metrics.http_duration.labels(route, method)
        timer.observe(seconds)


def _route_template(scope: Scope) -> str:
    # The router records the route it matched in the (shared) scope.
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


NODE_LABELS = ["node", "region", "version"]
PEER_LABELS = ["peer", "region"]

_Family = Callable[..., GaugeMetricFamily | CounterMetricFamily]
_Read = Callable[[dict[str, Any]], float | None]


def _rtt(peer: dict[str, Any]) -> float | None:
    rtt_ms = peer["rtt_ms"]
    return rtt_ms / 1000 if rtt_ms is not None else None


_G, _C = GaugeMetricFamily, CounterMetricFamily
#: Per-peer series: name -> (family, help, its value in Peer.statistics(); None: no sample).
PEER_SERIES: dict[str, tuple[_Family, str, _Read]] = {
    "meridian_peer_up": (_G, "1 when the link to the peer is up", lambda p: p["state"] == "up"),
    "meridian_peer_rtt_seconds": (_G, "Round-trip time measured on the link", _rtt),
    "meridian_peer_lag_seconds": (
        _G,
        "Age of the oldest change not known to be at the peer (0: caught up)",
        lambda p: p["lag_seconds"],
    ),
    "meridian_peer_buffered_deltas": (
        _G,
        "Deltas waiting to be sent",
        lambda p: p["buffered"]["deltas"],
    ),
    "meridian_peer_buffered_bytes": (
        _G,
        "Bytes of deltas waiting or in flight",
        lambda p: p["buffered"]["bytes"],
    ),
    "meridian_peer_in_flight_deltas": (
        _G,
        "Deltas sent and not acknowledged yet",
        lambda p: p["buffered"]["in_flight"],
    ),
    "meridian_peer_deltas_acked": (
        _C,
        "Deltas the peer acknowledged",
        lambda p: p["deltas"]["acked"],
    ),
    "meridian_peer_deltas_refused": (
        _C,
        "Deltas the peer refused",
        lambda p: p["deltas"]["refused_by_peer"],
    ),
    "meridian_peer_deltas_left_to_anti_entropy": (
        _C,
        "Deltas dropped from a full outbox (anti-entropy delivers them)",
        lambda p: p["deltas"]["left_to_anti_entropy"],
    ),
    "meridian_peer_deltas_applied": (
        _C,
        "Deltas received from the peer and applied here",
        lambda p: p["deltas"]["applied_from_peer"],
    ),
    "meridian_peer_deltas_rejected": (
        _C,
        "Deltas received from the peer and refused here",
        lambda p: p["deltas"]["refused_from_peer"],
    ),
    "meridian_peer_sent_bytes": (_C, "Bytes sent to the peer", lambda p: p["bytes_sent"]),
    "meridian_peer_received_bytes": (
        _C,
        "Bytes received from the peer",
        lambda p: p["bytes_received"],
    ),
    "meridian_peer_links_opened": (_C, "Links to the peer opened", lambda p: p["links_opened"]),
    "meridian_peer_anti_entropy_rounds": (
        _C,
        "Anti-entropy rounds completed with the peer",
        lambda p: p["anti_entropy"]["rounds"],
    ),
    "meridian_peer_anti_entropy_failures": (
        _C,
        "Anti-entropy rounds or repairs that failed",
        lambda p: p["anti_entropy"]["failures"],
    ),
    "meridian_peer_anti_entropy_repaired_documents": (
        _C,
        "Documents repaired by anti-entropy",
        lambda p: p["anti_entropy"]["repaired_total"],
    ),
    "meridian_peer_anti_entropy_bytes": (
        _C,
        "Bytes exchanged by anti-entropy rounds (listings and repairs)",
        lambda p: p["anti_entropy"]["bytes_total"],
    ),
}


class NodeCollector:
    """Reads the node's ``statistics()`` snapshots at scrape time (in memory, no I/O)."""

    def __init__(self, node: Node, metrics: Metrics) -> None:
        self.node = node
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily(
            "meridian_node_info", "This node: its id, region and version", labels=NODE_LABELS
        )
        info.add_metric([node.node_id, node.region, VERSION], 1)
        yield info
        yield from self._documents()
        yield from self._storage()
        yield from self._clients()
        yield from self._peers()
        yield from self._placement()

    def _placement(self) -> Iterator[Metric]:
        node = self.node
        store = node.store.statistics()
        yield _gauge(
            "meridian_placement_records",
            "Placement records held (every document's)",
            len(node.catalog),
        )
        yield _gauge(
            "meridian_hints_pending",
            "Copies kept here for holders that were unreachable, not handed off yet",
            store.hinted_documents,
        )
        yield _counter(
            "meridian_copies_dropped",
            "Copies dropped here once their holders covered them (hints, surplus)",
            store.forgotten_copies,
        )
        handoff = node.handoff.statistics() if node.handoff is not None else None
        if handoff is not None:
            yield _gauge(
                "meridian_handoff_pending",
                "Copies here that placement gives to other nodes, waiting to be handed off",
                handoff.pending,
            )
            yield _counter(
                "meridian_copies_handed_off",
                "Copies handed off to their holders",
                handoff.handed_off,
            )
            yield _counter(
                "meridian_copies_gained",
                "Documents fetched because this node became one of their holders",
                handoff.pulled,
            )
            yield _counter(
                "meridian_moved_bytes",
                "Bytes of Yjs updates moved by rebalancing: states handed off (once per "
                "holder) and updates pulled",
                handoff.bytes_handed_off + handoff.bytes_pulled,
            )
            yield _counter(
                "meridian_handoff_failures", "Hand-offs that failed (retried)", handoff.failures
            )
            yield _counter(
                "meridian_homes_moved",
                "Documents whose home this node moved toward their readers",
                handoff.homes_moved,
            )
            yield _gauge(
                "meridian_pulls_pending",
                "Documents this node newly holds that a peer has not been asked for yet",
                handoff.pulls_pending,
            )
        members = node.members
        if members is not None:
            states = GaugeMetricFamily(
                "meridian_members", "Members in the member list, by state", labels=["state"]
            )
            counts = collections.Counter(e.state for e in members.membership.entries())
            for state in STATES:
                states.add_metric([state], counts[state])
            yield states
            transitions = CounterMetricFamily(
                "meridian_member_transitions",
                "Members seen entering a state since start (joins, activations, leaves, removals)",
                labels=["state"],
            )
            for state in STATES:
                transitions.add_metric([state], members.transitions[state])
            yield transitions
        if node.replicator is not None:
            yield _counter(
                "meridian_peer_suspicions",
                "Times a peer became suspected (silent for replication.suspect_after, "
                "phi past replication.phi_threshold)",
                sum(peer.suspicions for peer in node.replicator.peers.values()),
            )
            yield _counter(
                "meridian_members_refused",
                "Member entries and lists from peers that were refused",
                node.replicator.members_refused + (members.refused if members else 0),
            )
            yield _counter(
                "meridian_placement_records_refused",
                "Malformed placement records received from peers",
                node.replicator.records_refused,
            )
        forwarding = self.metrics.forwarding
        if forwarding is None:
            return
        forwarded = CounterMetricFamily(
            "meridian_forwarded_requests",
            "Requests forwarded to a document's holder, by route template and method",
            labels=["route", "method"],
        )
        for (route, method), count in sorted(forwarding.forwarded.items()):
            forwarded.add_metric([route, method], count)
        yield forwarded
        yield _counter(
            "meridian_forged_forwards",
            "Requests refused for a forged X-Meridian-Forwarded header",
            forwarding.forged,
        )
        if forwarding.forwarder is not None:
            stats = forwarding.forwarder.statistics()
            failures = CounterMetricFamily(
                "meridian_forward_failures",
                "Forwards that failed: holder unreachable, no answer in time, answer too large",
                labels=["kind"],
            )
            failures.add_metric(["unreachable"], stats.unreachable)
            failures.add_metric(["timeout"], stats.timeouts)
            failures.add_metric(["too_large"], stats.too_large)
            yield failures
            yield _gauge(
                "meridian_forwarded_websockets_open",
                "Client WebSockets spliced to a holder, open now",
                stats.open_websockets,
            )

    def _documents(self) -> Iterator[Metric]:
        store = self.node.store.statistics()
        yield _gauge("meridian_documents_hot", "Documents held in memory", store.hot_documents)
        yield _gauge(
            "meridian_documents_hot_bytes",
            "Stored bytes (snapshot and log) of the documents held in memory",
            store.hot_bytes,
        )
        yield _counter("meridian_document_loads", "Documents read from disk", store.loads)
        yield _counter(
            "meridian_document_evictions", "Documents dropped from memory", store.evictions
        )
        yield _counter("meridian_writes", "Writes that changed a document", store.writes)
        yield _counter(
            "meridian_compaction_failures", "Compactions that failed", store.compaction_failures
        )
        scan = self.metrics.scan
        if scan is not None:
            yield _gauge(
                "meridian_documents_live", "Live documents stored (periodic count)", scan.live
            )
            yield _gauge(
                "meridian_documents_tombstones",
                "Deleted documents' tombstones stored (periodic count)",
                scan.tombstones,
            )
            yield _gauge(
                "meridian_storage_stored_bytes",
                "Bytes of updates and snapshots in DuckDB (periodic count)",
                scan.stored_bytes,
            )
            yield _gauge(
                "meridian_storage_counted_timestamp_seconds",
                "When the periodic counts were read (Unix time)",
                scan.at,
            )
        yield _counter(
            "meridian_storage_count_failures",
            "Periodic counts that could not be read",
            self.metrics.scan_failures,
        )

    def _storage(self) -> Iterator[Metric]:
        storage = self.node.store.storage.statistics()
        yield _counter("meridian_storage_commits", "Transactions committed", storage.commits)
        yield _counter(
            "meridian_storage_jobs_committed", "Writer jobs committed", storage.jobs_committed
        )
        yield _counter(
            "meridian_storage_failed_jobs", "Writer jobs that failed", storage.failed_jobs
        )
        yield _counter(
            "meridian_storage_compactions", "Snapshots installed by compaction", storage.compactions
        )
        yield _gauge(
            "meridian_storage_queue_depth",
            "Jobs waiting for the storage writer (should stay near 0)",
            storage.queue_depth,
        )

    def _clients(self) -> Iterator[Metric]:
        stats = self.node.hub.statistics()
        clients = GaugeMetricFamily(
            "meridian_websocket_clients", "Connected WebSocket clients", labels=["endpoint"]
        )
        clients.add_metric(["sync"], stats["sync_clients"])
        clients.add_metric(["events"], stats["event_streams"])
        yield clients
        yield _gauge(
            "meridian_websocket_documents_followed",
            "Documents with at least one connected client",
            stats["documents_followed"],
        )
        yield _counter(
            "meridian_websocket_slow_disconnects",
            "Clients disconnected for falling too far behind",
            stats["disconnected_slow"],
        )
        refused = CounterMetricFamily(
            "meridian_websocket_rejected",
            "WebSocket connections closed for bad input, by endpoint and reason",
            labels=["endpoint", "reason"],
        )
        for endpoint, reasons in stats["refused_input"].items():
            for reason, count in reasons.items():
                refused.add_metric([endpoint, reason], count)
        yield refused

    def _peers(self) -> Iterator[Metric]:
        replicator = self.node.replicator
        if replicator is None:
            return
        stats = replicator.statistics()
        yield _counter(
            "meridian_peer_links_refused",
            "Peer links refused (authentication, version, cluster or node unknown)",
            stats["links_refused"],
        )
        families = {
            name: family(name, documentation, labels=PEER_LABELS)
            for name, (family, documentation, _) in PEER_SERIES.items()
        }
        for peer in stats["peers"]:
            labels = [peer["node"], peer["region"]]
            for name, (_, _, read) in PEER_SERIES.items():
                value = read(peer)
                if value is not None:
                    families[name].add_metric(labels, float(value))
        yield from families.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    """Prometheus metrics of this node; open like /v1/health (probes and scrapers)."""
    owner: Metrics = request.app.state.metrics
    body, content_type = owner.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
