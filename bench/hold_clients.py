"""The clients of bench_hold.py, run in its worker processes (``bench_hold.py --worker``):
y-websocket clients that follow one document each, note when each of its updates arrives,
and reconnect when the node ends their connection. They record why it ended: the close
frame's code and reason, or a silent drop.

A worker's task (JSON, from bench_hold.py): ``base`` (the sync URL without the document id),
``docs`` (the document index of each client), ``per_document`` (updates expected per
document). It answers ``ready`` once its clients are synced. The finish command carries when
each update was sent (``sends``, per document), the hold's ``start`` and how long to wait
for the last updates (``drain``); it answers ``done`` with the report.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import bench_live as live  # this directory
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Close, CloseCode
from websockets.protocol import State

__all__ = [
    "BUCKET_SECONDS",
    "HoldClient",
    "close_cause",
    "delivery_report",
    "doc_id",
    "worker_main",
]

clock = live.clock

#: Delivery delays are counted in buckets of 0.1 ms: exact enough, and mergeable over workers.
BUCKET_SECONDS = 1e-4
#: y-websocket's reconnect backoff: 100 ms doubling up to 2.5 s (maxBackoffTime).
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.5
#: Disconnections each worker reports in full (all of them are counted).
DISCONNECTS_LISTED = 200


def doc_id(index: int) -> str:
    return f"hold-{index:04d}"


def doc_index(path: str) -> int:
    """The document index of a sync URL's path (``/v1/sync/hold-0042`` -> 42)."""
    return int(path.rsplit("-", 1)[1])


def close_cause(close: Close | None) -> tuple[int | None, str]:
    """(code, reason) of the close frame the server sent; code None for a silent drop: no
    close frame, or one without a code (1005)."""
    if close is None:
        return None, "connection dropped without a close frame"
    if close.code == CloseCode.NO_STATUS_RCVD:
        return None, "close frame without a code"
    return int(close.code), close.reason


@dataclass
class HoldClient:
    """One y-websocket client following one document, and what it received."""

    doc: int
    websocket: ClientConnection
    last_message: float
    #: Per update number of its document: when it first arrived (0.0: not yet).
    arrivals: array.array[float]
    received: int = 0
    #: Update numbers that first arrived in a resync (a server step 2), not as an update.
    recovered: set[int] = field(default_factory=set)
    duplicates: int = 0
    other_frames: int = 0  # keep-alives (empty awareness) and anything else
    longest_silence: float = 0.0
    reconnects: int = 0

    def receive(self, frame: bytes | str, now: float) -> None:
        self.longest_silence = max(self.longest_silence, now - self.last_message)
        self.last_message = now
        if not isinstance(frame, bytes):
            self.other_frames += 1
            return
        live_update = frame.startswith(live.UPDATE)
        if not live_update and not frame.startswith(live.SERVER_STEP2):
            self.other_frames += 1
            return
        for match in live.FANOUT_MARKER.finditer(frame):
            number = int(match[1])
            if number >= len(self.arrivals):
                self.arrivals.extend([0.0] * (number + 1 - len(self.arrivals)))
            if self.arrivals[number]:
                self.duplicates += live_update  # a resync repeats what it had: no duplicate
                continue
            self.arrivals[number] = now
            self.received += 1
            if not live_update:
                self.recovered.add(number)


async def reconnect(
    url: str, slots: asyncio.Semaphore, failures: collections.Counter[str]
) -> ClientConnection:
    """A new synced connection to ``url``, retried with y-websocket's backoff."""
    delay = BACKOFF_FIRST
    while True:
        await asyncio.sleep(delay)
        try:
            return await live.open_synced(url, False, slots)
        except (OSError, TimeoutError, WebSocketException) as exc:
            failures[type(exc).__name__] += 1
        delay = min(delay * 2, BACKOFF_MAX)


async def follow(
    client: HoldClient,
    url: str,
    slots: asyncio.Semaphore,
    disconnects: list[dict[str, Any]],
    failures: collections.Counter[str],
) -> None:
    """Reads the client's frames for as long as it runs; when the node ends the connection,
    records why and reconnects, asking for the whole document again."""
    while True:
        with contextlib.suppress(ConnectionClosed):
            async for frame in client.websocket:
                client.receive(frame, clock())
        code, reason = close_cause(client.websocket.protocol.close_rcvd)
        disconnects.append({"doc": client.doc, "at": clock(), "code": code, "reason": reason})
        client.websocket = await reconnect(url, slots, failures)
        client.reconnects += 1
        with contextlib.suppress(ConnectionClosed):
            await client.websocket.send(live.STEP1_EMPTY)  # answered with the whole document


def delivery_report(
    clients: Sequence[HoldClient], sends: Sequence[Sequence[float]], start: float
) -> dict[str, Any]:
    """Updates expected, received live, recovered by a resync and missing; the delays of
    those received live as histograms (overall and by minute of the hold they were sent in)."""
    overall: collections.Counter[int] = collections.Counter()
    by_minute: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    expected = received = recovered = 0
    incomplete: list[list[int]] = []
    for client in clients:
        times = sends[client.doc]
        arrivals = client.arrivals
        expected += len(times)
        got = sum(1 for n in range(min(len(times), len(arrivals))) if arrivals[n])
        received += got
        recovered += len(client.recovered)
        if got < len(times):
            incomplete.append([client.doc, len(times), got])
        for number, sent in enumerate(times[: len(arrivals)]):
            arrived = arrivals[number]
            if arrived and number not in client.recovered:
                bucket = max(0, round((arrived - sent) / BUCKET_SECONDS))
                overall[bucket] += 1
                by_minute[int((sent - start) // 60)][bucket] += 1
    return {
        "expected": expected,
        "received": received,
        "recovered": recovered,
        "complete_clients": len(clients) - len(incomplete),
        "incomplete": incomplete[:20],
        "incomplete_count": len(incomplete),
        "duplicates": sum(c.duplicates for c in clients),
        "delays": overall,
        "delays_by_minute": by_minute,
    }


async def hold_worker(task: dict[str, Any], commands: live.Commands) -> None:
    """Clients connected and synced, then following their documents until told to finish;
    the finish command carries when each update was sent, to time its arrivals."""
    base, per_document = task["base"], int(task["per_document"])
    started = clock()
    connections, errors = await live.open_many(
        [base + doc_id(d) for d in task["docs"]], False, concurrency=200
    )
    now = clock()
    clients = [
        HoldClient(doc_index(c.request.path), c, now, array.array("d", bytes(8 * per_document)))
        for c in connections
        if c.request is not None
    ]
    live.emit("ready", connected=len(clients), failed=len(errors), errors=errors[:5],
              seconds=now - started)  # fmt: skip
    slots = asyncio.Semaphore(50)
    disconnects: list[dict[str, Any]] = []
    failures: collections.Counter[str] = collections.Counter()
    followers = [
        asyncio.ensure_future(follow(c, base + doc_id(c.doc), slots, disconnects, failures))
        for c in clients
    ]
    finish = await commands.next()
    sends: list[list[float]] = finish["sends"]
    deadline = clock() + float(finish["drain"])
    # Polled: a few thousand counters 4 times a second cost nothing, an event would cost a
    # check in every receive.
    while clock() < deadline and any(c.received < len(sends[c.doc]) for c in clients):  # noqa: ASYNC110
        await asyncio.sleep(0.25)
    now = clock()
    open_at_end = sum(c.websocket.protocol.state is State.OPEN for c in clients)
    for follower in followers:
        follower.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    report = delivery_report(clients, sends, float(finish["start"]))
    live.emit(
        "done",
        open=open_at_end,
        disconnects=disconnects[:DISCONNECTS_LISTED],
        disconnect_count=len(disconnects),
        disconnect_causes=collections.Counter(
            f"{d['code']} {d['reason']}" for d in disconnects
        ).most_common(),
        reconnects=sum(c.reconnects for c in clients),
        reconnect_failures=dict(failures),
        longest_silence=max((max(c.longest_silence, now - c.last_message) for c in clients),
                            default=0.0),
        other_frames=sum(c.other_frames for c in clients),
        **report,
    )  # fmt: skip
    await live.close_all([c.websocket for c in clients])


async def worker_main() -> None:
    live.raise_fd_limit()
    commands = await live.Commands.open()
    await hold_worker(await commands.next(), commands)
