"""The Yjs clients of ``meridian torture``: pycrdt documents speaking the y-websocket protocol
(:mod:`app.sync.protocol`) with ``WS /v1/sync/{id}`` of random nodes.

Each client keeps one pycrdt document for the whole run. It connects to a random node,
synchronises (the node's step 1 answered with a step 2 of what the node lacks, then its own
step 1, answered with the node's step 2), pushes unique tokens into root array ``tokens`` as
sync updates for a few seconds while applying what the node sends, closes, and connects to
another random node; a fault that breaks the connection just makes it reconnect. Its document
keeps every token it made, so each reconnection sends the node whatever it may have missed.

y-websocket acknowledges nothing, so a token is indeterminate until an HTTP read of the
document (through a random node: a holder's copy answers) shows it. After the heal every client
synchronises once more with a random node, within a deadline; its document's tokens, its own
and the ones it received, are then the ``synced`` tokens every holder must have
(:func:`~app.tools.torture_check_workloads.check_yjs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

import httpx
import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from ..sync import protocol
from .torture_check import Op

if TYPE_CHECKING:
    from .torture import Run

__all__ = ["YjsClient"]

logger = logging.getLogger("meridian.torture")

#: Seconds to connect and synchronise with a node.
SYNC_TIMEOUT = 8.0
#: Seconds one session with a node lasts (drawn between these).
SESSION_SECONDS = (2.0, 8.0)
#: Seconds between two tokens (drawn between these).
TOKEN_EVERY = (0.05, 0.3)
#: Share of tokens after which the client reads the document back over HTTP.
READ_BACK = 0.1


class YjsClient:
    """One pycrdt document writing into ``doc`` through random nodes (``urls``: node id ->
    ``http://host:port``). Call :meth:`write` for the run, then :meth:`final_sync`, then
    :meth:`history`."""

    def __init__(self, index: int, doc: str, urls: dict[str, str], run: Run, seed: int) -> None:
        self.index = index
        self.doc_id = doc
        self.urls = urls
        self.run = run
        self.rng = random.Random(f"{seed}/yjs/{index}")
        # The client's own document for the whole run: what it made and what it received.
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=self.rng.randrange(1, 2**31))
        self.tokens: pycrdt.Array[Any] = self.doc.get("tokens", type=pycrdt.Array)
        # token -> (node connected to when it was made, seconds into the run).
        self.made: dict[str, tuple[str, float]] = {}
        # Tokens of this client an HTTP read showed.
        self.observed: set[str] = set()
        self.sessions = 0
        self.failures = 0
        # Whether the sync after the heal completed.
        self.synced = False

    async def write(self, until: float, http: dict[str, httpx.AsyncClient]) -> None:
        """Sessions with random nodes until ``until`` (seconds of the run)."""
        while self.run.now() < until:
            node = self.rng.choice(sorted(self.urls))
            session_end = min(until, self.run.now() + self.rng.uniform(*SESSION_SECONDS))
            try:
                async with self._open(node) as ws:
                    self.sessions += 1
                    await self._session(ws, node, session_end, http)
            except (OSError, TimeoutError, WebSocketException, protocol.SyncProtocolError) as exc:
                self.failures += 1
                logger.debug("> yjs client %d node=%s: %r", self.index, node, exc)
                await asyncio.sleep(self.rng.uniform(0.1, 0.5))  # pacing before reconnecting

    async def final_sync(self, timeout: float) -> bool:
        """Synchronises with random nodes until one completes, or ``timeout`` passes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.synced:
                    node = self.rng.choice(sorted(self.urls))
                    try:
                        async with self._open(node):
                            self.synced = True
                    except (OSError, WebSocketException, protocol.SyncProtocolError) as exc:
                        logger.debug("> yjs final sync %d node=%s: %r", self.index, node, exc)
                        await asyncio.sleep(0.2)  # pacing before the next node
        return self.synced

    def history(self) -> list[Op]:
        """Every token made, acknowledged (``ok``) when an HTTP read showed it, else
        indeterminate."""
        return [
            Op(token, self.doc_id, node, "ok" if token in self.observed else "info", at, at,
               workload="yjs", kind="insert")
            for token, (node, at) in self.made.items()
        ]  # fmt: skip

    def contents(self) -> set[str]:
        """The tokens in the client's document."""
        return {str(token) for token in self.tokens.to_py() or ()}

    # -- one session -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open(self, node: str) -> Any:
        """A connection to ``node``, synchronised both ways; closed on exit."""
        url = self.urls[node].replace("http://", "ws://") + f"/v1/sync/{self.doc_id}"
        async with asyncio.timeout(SYNC_TIMEOUT):
            ws = await connect(url, max_size=None, open_timeout=SYNC_TIMEOUT, close_timeout=2)
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                while not isinstance(message := await self._receive(ws), protocol.SyncStep1):
                    pass
                await ws.send(protocol.encode_sync_step2(self.doc.get_update(message.state_vector)))
                await ws.send(protocol.encode_sync_step1(self.doc.get_state()))
                while not isinstance(await self._receive(ws), protocol.SyncStep2):
                    pass
            yield ws
        finally:
            with contextlib.suppress(OSError, WebSocketException, TimeoutError):
                await ws.close()

    async def _receive(self, ws: ClientConnection) -> protocol.SyncMessage:
        """The node's next message, its updates applied to the client's document."""
        frame = await ws.recv()
        if isinstance(frame, str) or not frame:
            raise protocol.SyncProtocolError("a text or empty frame from the node")
        if frame[0] == protocol.MESSAGE_AUTH:
            raise protocol.SyncProtocolError("the node denied access")
        message = protocol.decode(frame)
        if isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            self.doc.apply_update(message.update)
        return message

    async def _session(
        self,
        ws: ClientConnection,
        node: str,
        until: float,
        http: dict[str, httpx.AsyncClient],
    ) -> None:
        """Tokens until ``until``, while a task applies what the node sends (a broken
        connection ends the session: the next send raises, or the receiver stops)."""
        receiver = asyncio.create_task(self._receive_all(ws), name=f"yjs {self.index} receiver")
        try:
            while self.run.now() < until and not receiver.done():
                token = f"y{self.index}-{len(self.made)}"
                before = self.doc.get_state()
                self.tokens.append(token)
                self.made[token] = (node, self.run.now())
                await ws.send(protocol.encode_update(self.doc.get_update(before)))
                if self.rng.random() < READ_BACK:
                    await self._read_back(http)
                await asyncio.sleep(self.rng.uniform(*TOKEN_EVERY))  # pacing
        finally:
            receiver.cancel()
            await asyncio.wait([receiver])
            if not receiver.cancelled() and (error := receiver.exception()) is not None:
                self.failures += 1
                logger.debug("> yjs client %d node=%s: %r", self.index, node, error)

    async def _receive_all(self, ws: ClientConnection) -> None:
        while True:
            await self._receive(ws)

    async def _read_back(self, http: dict[str, httpx.AsyncClient]) -> None:
        """Marks this client's tokens an HTTP read of the document shows as acknowledged."""
        node = self.rng.choice(sorted(http))
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = await http[node].get(f"/v1/docs/{self.doc_id}")
            if answer.status_code == 200:
                shown = answer.json().get("content", {}).get("tokens") or []
                self.observed.update(str(t) for t in shown if str(t) in self.made)
