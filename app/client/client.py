"""A Python client for a Meridian cluster: HTTP calls to the nearest healthy node, failing over
to the next nearest, with read-your-writes across failovers; and live documents, pycrdt
``Doc`` objects kept in sync over ``/v1/sync/<doc id>`` by pycrdt's own ``Provider``::

    client = MeridianClient(["http://127.0.0.1:7101", "http://127.0.0.1:7201"], token=None)
    client.patch("notes", [{"op": "insert_text", "path": ["body"], "index": 0, "text": "Hi"}])
    client.get("notes")["content"]           # never older than what this client wrote or read

    async with client.live("notes") as live:
        await live.wait_synced()
        live.doc.get("body", type=pycrdt.Text).insert(0, "¡")

Nodes are ranked by the round trip of ``GET /v1/health``, whose answer also names each node
and its region. A node that fails (no connection, a timeout, a 5xx) is tried only after the
others until it answers a probe again, ``retry_after`` seconds later.

A node that does not hold a document forwards its requests to a holder (one more hop), and
every answer names the node that served it (``X-Meridian-Served-By``). The client remembers
that node for each document (the 10,000 used last) and, when it is one of the client's nodes,
healthy and in the region of the nearest healthy node, sends the document's next requests,
live connections included, straight there. A holder in another region is still reached
through the nearest node: going direct would save little (the hop inside a region is short),
and the reads the nearest node forwards are what gains its region a follower copy (PRODUCT.md,
"Placement"), whose answers then name it. When the remembered node fails, it is forgotten and
the request goes on down the ranking as any failover does; the answer that follows names the
document's new node. When a failed node recovers, every document's node is forgotten (a
nearer copy may be back; each costs one hop to learn again). The client does not read
``GET /v1/docs/{id}/placement``: the node that forwarded chose the live copy nearest to it,
which is the nearest to the client. Reads carry ``after=`` wherever they go, so switching
nodes never reads older than the client's writes.

Errors::

    MeridianError          an error answer (status, code, message): a 4xx is never retried
    ├── NoNodeAvailable    no node answered (failures: each node's reason)
    └── OutcomeUnknown     a PATCH whose node failed after receiving it: it may have been
                           applied, and JSON operations repeated elsewhere could apply twice
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import logging
import math
import threading
import time
import urllib.parse
from asyncio import FIRST_COMPLETED
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from crdt import decode_state_vector, encode_state_vector

__all__ = ["LiveDocument", "MeridianClient", "MeridianError", "NoNodeAvailable", "OutcomeUnknown"]

log = logging.getLogger("meridian.client")

#: The header naming the node that served an answer (the holder when it was forwarded).
_SERVED_BY = "X-Meridian-Served-By"
#: Documents whose serving node a client remembers; the least recently used is dropped first.
_PREFERRED_MAX = 10_000

Durability = Literal["local", "region", "quorum", "all"]

#: /v1/sync close codes after which reconnecting cannot help (app/sync/endpoints.py, app/auth.py).
_FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 4400, 4401, 4403, 4404})
#: Live documents reconnect after this delay, doubled after each round of failures.
_RECONNECT_MIN, _RECONNECT_MAX = 0.1, 2.5
#: Seconds a live document leaving ``async with`` takes at most to send its last edits.
_CLOSE_TIMEOUT = 5.0


class MeridianError(Exception):
    """An error answer from a node (``status`` and ``code`` as in docs/api.md); the root of
    the client's errors (``status`` is None when no node answered)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class NoNodeAvailable(MeridianError):
    """No node answered; ``failures`` maps each node URL to why."""

    def __init__(self, failures: dict[str, str]) -> None:
        reasons = "; ".join(f"{url}: {why}" for url, why in failures.items())
        super().__init__(None, "no_node_available", f"no node answered ({reasons})")
        self.failures = failures


class OutcomeUnknown(MeridianError):
    """A PATCH whose node failed after receiving it: its operations may have been applied."""


@dataclass
class _Node:
    url: str
    #: Round trip of the last answered health probe, in seconds (inf until one answers).
    rtt: float = math.inf
    #: Clock time after which a failed node is probed again; 0 while it answers.
    retry_at: float = 0.0
    #: The first request probes every node.
    probed: bool = False
    #: The node's id and region, from its last health answer (None until one names them).
    node_id: str | None = None
    region: str | None = None

    @property
    def healthy(self) -> bool:
        return self.probed and self.retry_at == 0


class _Ranking:
    """The nodes, nearest healthy first, and the node that served each document last.
    Shared by HTTP calls and live documents, whose probes run in worker threads: hence the
    lock."""

    def __init__(
        self, urls: Sequence[str], http: httpx.Client, clock: Callable[[], float], retry: float
    ) -> None:
        self._nodes = [_Node(url.rstrip("/")) for url in urls]
        self._http, self._clock, self._retry = http, clock, retry
        self._lock = threading.Lock()
        #: Per document, the id of the node that served it last (one of ``_nodes``), most
        #: recently used last: its requests go there first.
        self._preferred: OrderedDict[str, str] = OrderedDict()

    def order(self, doc_id: str | None = None) -> list[str]:
        """Node URLs in the order to try them: the node that served ``doc_id`` last if it is
        healthy and in the nearest healthy node's region, then healthy ones by round trip,
        then failed ones (a last resort). Probes nodes never probed and failed ones due for
        a retry."""
        now = self._clock()
        with self._lock:
            due = [n for n in self._nodes if not n.probed or 0 < n.retry_at <= now]
        if due:
            self.probe(due)
        with self._lock:
            ranked = sorted(self._nodes, key=lambda n: (n.retry_at > 0, n.rtt))
            preferred = self._preferred_node(doc_id, ranked) if doc_id is not None else None
        if preferred is None:
            return [n.url for n in ranked]
        return [preferred.url, *(n.url for n in ranked if n is not preferred)]

    def _preferred_node(self, doc_id: str, ranked: list[_Node]) -> _Node | None:
        """The nearest healthy node with ``doc_id``'s preferred id, if it is in the region of
        the nearest healthy node; a preference for a node that is not healthy is dropped.
        Called with the lock held."""
        node_id = self._preferred.get(doc_id)
        if node_id is None:
            return None
        for node in ranked:
            if node.node_id == node_id and node.healthy:
                self._preferred.move_to_end(doc_id)
                # In another region: through the nearest node, about as fast, whose forwarded
                # reads gain its region a follower copy.
                return node if node.region == ranked[0].region else None
        del self._preferred[doc_id]
        return None

    def prefer(self, doc_id: str, node_id: str | None) -> None:
        """Records that ``node_id`` served ``doc_id`` (ignored unless a node's health answer
        named it)."""
        with self._lock:
            if node_id is None or all(n.node_id != node_id for n in self._nodes):
                return
            self._preferred[doc_id] = node_id
            self._preferred.move_to_end(doc_id)
            if len(self._preferred) > _PREFERRED_MAX:
                self._preferred.popitem(last=False)

    def probe(self, nodes: list[_Node] | None = None) -> None:
        """Measures the round trip of ``GET /v1/health`` to ``nodes`` (all by default) at once."""
        nodes = self._nodes if nodes is None else nodes
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            answers = list(pool.map(self._measure, nodes))
        with self._lock:
            for node, answer in zip(nodes, answers, strict=True):
                node.probed = True
                if answer is None:
                    node.retry_at = self._clock() + self._retry
                else:
                    self._recovered(node)
                    (node.rtt, node.node_id, node.region), node.retry_at = answer, 0.0

    def _measure(self, node: _Node) -> tuple[float, str | None, str | None] | None:
        """The round trip of ``node``'s health probe and the node id and region it names, or
        None when it failed."""
        start = time.perf_counter()
        try:
            response = self._http.get(f"{node.url}/v1/health", timeout=self._http.timeout.connect)
        except httpx.HTTPError as exc:
            log.info("probe %s failed: %s", node.url, _describe(exc))
            return None
        if response.status_code != 200:
            log.info("probe %s answered %d", node.url, response.status_code)
            return None
        rtt = time.perf_counter() - start
        try:
            health = response.json()
            node_id, region = health.get("node"), health.get("region")
        except (ValueError, AttributeError):
            node_id = region = None
        return (
            rtt,
            node_id if isinstance(node_id, str) else None,
            region if isinstance(region, str) else None,
        )

    def mark(self, url: str, *, failed: bool) -> None:
        """Records that ``url`` failed (tried last until probed again) or answered."""
        with self._lock:
            for node in self._nodes:
                if node.url == url:
                    if not failed:
                        self._recovered(node)
                    node.retry_at = self._clock() + self._retry if failed else 0.0

    def _recovered(self, node: _Node) -> None:
        """Called (lock held) when ``node`` answers: if it had failed, the preferences made
        meanwhile may skip a nearer copy, so they are all dropped (each costs a hop once)."""
        if node.retry_at > 0:
            self._preferred.clear()


class MeridianClient:
    """A client that sends each request to the nearest healthy node of ``urls`` (node base
    URLs such as ``http://127.0.0.1:7201``, one or more per region), or straight to the node
    that served the document last when it is one of them, healthy and in the same region.

    ``token`` is an access token (``meridian token create``). ``timeout`` bounds a request: keep
    it above the nodes' ``replication.after_timeout`` and any write's durability ``timeout``;
    ``connect_timeout`` bounds connecting and health probes; a failed node is probed again
    ``retry_after`` seconds later. ``transport`` and ``clock`` are for tests. Thread-safe.
    Raises ValueError without URLs.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        retry_after: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("MeridianClient needs at least one node URL")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            transport=transport,
        )
        self._ranking = _Ranking(urls, self._http, clock, retry_after)
        self._token, self._connect_timeout = token, connect_timeout
        #: Per document, (incarnation, clocks): the newest state this client wrote or read,
        #: sent as after= on reads.
        self._seen: dict[str, tuple[int, dict[int, int]]] = {}
        self._lock = threading.Lock()
        #: The node that answered the last request (None before the first).
        self.node: str | None = None

    def probe(self) -> builtins.list[str]:
        """Measures the round trip to every node now; returns their URLs in the order requests
        try them (nearest healthy first)."""
        self._ranking.probe()
        return self._ranking.order()

    def get(self, doc_id: str) -> dict[str, Any]:
        """The JSON view ``{"id", "content", "state_vector", ...}``, never older than what this
        client wrote or read of it. Raises MeridianError (404 ``document_not_found``, ...)."""
        body: dict[str, Any] = self._request("GET", _path(doc_id), doc_id, read=True).json()
        self._remember(doc_id, body["state_vector"], body.get("incarnation"))
        return body

    def get_update(self, doc_id: str, since: bytes | None = None) -> bytes:
        """The document as one Yjs update: all of it, or what a copy at state vector ``since``
        lacks; never older than what this client wrote or read. Raises MeridianError."""
        params = {} if since is None else {"since": base64.b64encode(since).decode()}
        response = self._request("GET", _path(doc_id, "/update"), doc_id, read=True, params=params)
        self._remember(doc_id, response.headers["X-State-Vector"], None)
        return response.content

    def patch(
        self,
        doc_id: str,
        ops: Sequence[Mapping[str, Any]],
        durability: Durability = "local",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Applies JSON operations atomically (docs/api.md); returns the write's answer, whose
        ``durability`` is the level reached within ``timeout``. Raises MeridianError (422
        ``invalid_operation``, ...), or OutcomeUnknown instead of repeating the operations."""
        return self._write("PATCH", doc_id, "", durability, timeout, json={"ops": list(ops)})

    def post_update(
        self,
        doc_id: str,
        update: bytes,
        durability: Durability = "local",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Applies a Yjs v1 update (safe to repeat on another node); returns the write's answer.
        Raises MeridianError (400 ``invalid_update``, ...)."""
        headers = {"Content-Type": "application/octet-stream"}
        return self._write(
            "POST", doc_id, "/update", durability, timeout, content=update, headers=headers
        )

    def delete(self, doc_id: str) -> dict[str, Any]:
        """Deletes the document (a tombstone). Raises MeridianError (404 when missing)."""
        body: dict[str, Any] = self._request("DELETE", _path(doc_id), doc_id).json()
        self.forget(doc_id)
        return body

    def list(self, prefix: str = "") -> builtins.list[str]:
        """The ids of the live documents starting with ``prefix``, in order, every page."""
        ids: builtins.list[str] = []
        params = {"prefix": prefix, "limit": "1000"}
        while True:
            page = self._request("GET", "/v1/docs", None, params=params).json()
            ids += [document["id"] for document in page["documents"]]
            if not page["next_cursor"]:
                return ids
            params["cursor"] = page["next_cursor"]

    def forget(self, doc_id: str) -> None:
        """Stops asking reads of ``doc_id`` for the state this client saw (needed after another
        client deleted it: a re-created document starts from an empty state)."""
        with self._lock:
            self._seen.pop(doc_id, None)

    def live(self, doc_id: str, doc: pycrdt.Doc[Any] | None = None) -> LiveDocument:
        """A live document (``async with``), editing ``doc`` or a new ``pycrdt.Doc``."""
        return LiveDocument(self, doc_id, doc)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeridianClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(
        self,
        method: str,
        doc_id: str,
        suffix: str,
        durability: Durability,
        timeout: float | None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        params = {"durability": durability, **({} if timeout is None else {"timeout": timeout})}
        response = self._request(
            method,
            _path(doc_id, suffix),
            doc_id,
            params=params,
            idempotent=method != "PATCH",
            **kwargs,
        )
        body: dict[str, Any] = response.json()
        self._remember(doc_id, body["state_vector"], body.get("incarnation"))
        return body

    def _request(
        self,
        method: str,
        path: str,
        doc_id: str | None,
        *,
        read: bool = False,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Tries each node in turn until one answers, for a request about ``doc_id`` the node
        that served it last first; a ``read`` carries after=."""
        if read and doc_id is not None and (after := self._after(doc_id)) is not None:
            kwargs["params"] = {**kwargs.get("params", {}), "after": after}
        failures: dict[str, str] = {}
        behind: MeridianError | None = None
        for url in self._ranking.order(doc_id):
            try:
                response = self._http.request(method, url + path, **kwargs)
            except httpx.TransportError as exc:
                self._ranking.mark(url, failed=True)
                failures[url] = _describe(exc)
                if not idempotent and not isinstance(exc, _NOT_SENT):
                    raise OutcomeUnknown(
                        None, "outcome_unknown", f"{url}: {failures[url]}"
                    ) from exc
                log.warning("%s %s failed on %s: %s", method, path, url, failures[url])
                continue
            if response.status_code < 400:
                self._answered(url, response, doc_id)
                return response
            error = _error(response)
            if error.code == "after_not_reached":  # healthy but behind: another may have it
                behind, failures[url] = error, str(error)
            elif response.status_code < 500:
                self._answered(url, response, doc_id)
                raise error
            else:
                self._ranking.mark(url, failed=True)
                failures[url] = str(error)
                # storage_unavailable: the write was undone; node_removed: refused before
                # anything was done. Repeating either is safe.
                if not idempotent and error.code not in ("storage_unavailable", "node_removed"):
                    raise OutcomeUnknown(error.status, error.code, error.message) from error
                log.warning("%s %s failed on %s: %s", method, path, url, error)
        raise behind or NoNodeAvailable(failures)

    def _answered(self, url: str, response: httpx.Response, doc_id: str | None) -> None:
        """Records an answer (not a 5xx) from ``url``; the node that served ``doc_id`` (``url``
        or, when ``url`` forwarded the request, a holder) gets its next requests first."""
        self._ranking.mark(url, failed=False)
        self.node = url
        if doc_id is not None:
            self._ranking.prefer(doc_id, response.headers.get(_SERVED_BY))

    def _remember(self, doc_id: str, state_vector: str, incarnation: int | None) -> None:
        clocks = decode_state_vector(base64.b64decode(state_vector))
        with self._lock:
            known_incarnation, known = self._seen.get(doc_id, (0, {}))
            incarnation = known_incarnation if incarnation is None else incarnation
            if incarnation < known_incarnation:
                return
            if incarnation > known_incarnation:
                known = {}
            merged = {**known, **{c: max(k, known.get(c, 0)) for c, k in clocks.items()}}
            self._seen[doc_id] = (incarnation, merged)

    def _after(self, doc_id: str) -> str | None:
        with self._lock:
            _, clocks = self._seen.get(doc_id, (0, {}))
        return base64.b64encode(encode_state_vector(clocks)).decode() if clocks else None

    def _sync_url(self, url: str, doc_id: str) -> str:
        query = f"?token={urllib.parse.quote(self._token, safe='')}" if self._token else ""
        return f"ws{url.removeprefix('http')}/v1/sync/{urllib.parse.quote(doc_id, safe='')}{query}"


class LiveDocument:
    """``doc`` (a ``pycrdt.Doc``) kept in sync with ``doc_id`` over ``/v1/sync`` by pycrdt's
    ``Provider``, on the node that served the document's last HTTP answer when the client
    would send it requests (see :class:`MeridianClient`), else on the nearest node; when the
    connection drops it reconnects with backoff, the next nearest node first.

    Edit ``doc`` from the event loop's thread at any time: edits made while disconnected stay
    in ``doc`` and reach the next node when it connects (its sync step 1 is answered with
    step 2, https://github.com/yjs/y-protocols/blob/master/PROTOCOL.md). Enter with
    ``async with`` (:meth:`MeridianClient.live`); leaving sends the edits not sent yet (for
    up to ``_CLOSE_TIMEOUT`` seconds) and disconnects.
    """

    def __init__(
        self, client: MeridianClient, doc_id: str, doc: pycrdt.Doc[Any] | None = None
    ) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc() if doc is None else doc
        self.doc_id = doc_id
        #: The URL of the node connected to, None while disconnected.
        self.node: str | None = None
        #: Why syncing stopped for good (a node refused the document), else None.
        self.error: MeridianError | None = None
        self._client = client
        #: Set while connected and synced with the node; cleared on disconnect.
        self._synced = asyncio.Event()
        #: Set on leaving ``async with``: the connection flushes its edits and ends.
        self._closing = asyncio.Event()
        #: The reconnect loop: started by __aenter__, ended by __aexit__.
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.node is not None

    async def wait_synced(self) -> None:
        """Waits until connected and synced with a node. Raises MeridianError when a node
        refused the document for good (a token, a deleted document), RuntimeError outside
        ``async with``."""
        if self._task is None or self._closing.is_set():
            raise RuntimeError("wait_synced() is for inside `async with client.live(doc_id)`")
        synced = asyncio.ensure_future(self._synced.wait())
        try:
            await asyncio.wait({synced, self._task}, return_when=FIRST_COMPLETED)
        finally:
            synced.cancel()
        if not self._synced.is_set():
            if self.error is not None:
                raise self.error
            self._task.result()

    async def __aenter__(self) -> LiveDocument:
        self._task = asyncio.create_task(self._run(), name=f"live {self.doc_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._closing.set()
        if not self.connected:
            self._task.cancel()
        if not (await asyncio.wait({self._task}, timeout=_CLOSE_TIMEOUT))[0]:
            self._task.cancel()
            await asyncio.wait({self._task})
        failure = None if self._task.cancelled() else self._task.exception()
        if failure is not None:
            raise failure

    async def _run(self) -> None:
        ranking, delay = self._client._ranking, _RECONNECT_MIN
        while True:
            for url in await asyncio.to_thread(ranking.order, self.doc_id):
                try:
                    synced = await self._session(url)
                except MeridianError as exc:
                    log.warning("live %s: %s", self.doc_id, exc)
                    self.error = exc
                    return
                except (OSError, TimeoutError, WebSocketException) as exc:
                    log.info("live %s: cannot connect to %s: %s", self.doc_id, url, exc)
                    ranking.mark(url, failed=True)
                    continue
                if self._closing.is_set():
                    return
                log.info("live %s: disconnected from %s", self.doc_id, url)
                ranking.mark(url, failed=True)
                if synced:  # it worked until now: ask for the order again, at once
                    delay = _RECONNECT_MIN
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _session(self, url: str) -> bool:
        """Syncs ``doc`` with ``url`` until the connection closes or the document is closing;
        returns whether it synced. Raises MeridianError if the node refused the document for
        good, OSError or a websockets error if it could not connect."""
        try:
            websocket = await connect(
                self._client._sync_url(url, self.doc_id),
                open_timeout=self._client._connect_timeout,
                max_size=None,  # the node bounds its documents
            )
        except InvalidStatus as exc:
            if 400 <= exc.response.status_code < 500:
                raise MeridianError(exc.response.status_code, "sync_refused", str(exc)) from exc
            raise
        channel = _Channel(websocket, self.doc_id)
        # Leaving the provider normally sends the edits it has not sent yet.
        async with websocket, pycrdt.Provider(self.doc, channel, log=log) as provider:
            self.node = url
            log.info("live %s: connected to %s", self.doc_id, url)
            waits = {
                asyncio.ensure_future(websocket.wait_closed()),
                asyncio.ensure_future(self._closing.wait()),
            }
            synced = asyncio.ensure_future(provider.synced.wait())
            try:
                pending = {synced, *waits}
                while waits <= pending:
                    done, pending = await asyncio.wait(pending, return_when=FIRST_COMPLETED)
                    if synced in done:
                        self._synced.set()
            finally:
                self.node = None
                was_synced = self._synced.is_set()
                self._synced.clear()
                for waiter in (synced, *waits):
                    waiter.cancel()
        code = websocket.close_code
        if code in _FINAL_CLOSE_CODES and not self._closing.is_set():
            http_status = code - 4000 if code is not None and code >= 4000 else None
            reason = f"{url} closed /v1/sync/{self.doc_id} with {code}: {websocket.close_reason}"
            raise MeridianError(http_status, "sync_refused", reason)
        return was_synced


class _Channel:
    """pycrdt's Channel over a ``websockets`` connection. A send on a closed connection is
    dropped: the next connection's sync step 1/2 carries whatever it held."""

    def __init__(self, websocket: ClientConnection, path: str) -> None:
        self._websocket = websocket
        self.path = path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._websocket.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._websocket.recv(decode=False))


#: Failures before the request reached a node: repeating it elsewhere is always safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _path(doc_id: str, suffix: str = "") -> str:
    return f"/v1/docs/{urllib.parse.quote(doc_id, safe='')}{suffix}"


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error(response: httpx.Response) -> MeridianError:
    try:
        error = response.json()["error"]
        return MeridianError(response.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.text[:200] or response.reason_phrase
        return MeridianError(response.status_code, f"http_{response.status_code}", text)
