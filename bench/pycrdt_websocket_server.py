"""pycrdt-websocket's server for the live-client benchmark (bench/bench_live.py).

    python bench/pycrdt_websocket_server.py --db PATH [--host 127.0.0.1] [--port 0]

``ASGIServer(WebsocketServer(...))`` run by uvicorn (the same uvicorn, uvloop, httptools and
WebSocket implementation as a Meridian node), one :class:`YRoom` per URL path, each backed by
pycrdt-store's :class:`SQLiteYStore` in one SQLite file (the store keeps every document's
updates in one database, keyed by the room's path). Rooms are cleaned up when their last
client leaves (``auto_clean_rooms``, the default). Every document of the benchmark is new, so
a room does not load earlier updates from the store.

How pycrdt-websocket stores an update (pycrdt.websocket.yroom): a client's update is applied
to the room's document, which queues it; the room's broadcast task sends it to every client
of the room (the sender included) and then *starts* a task that writes it to the store, one
SQLite transaction per update, serialized by the store's lock. A client is never told when
(or whether) its update is stored; pending writes are cancelled when the room stops.

Prints ``serving PORT`` once it listens; runs until SIGTERM or SIGINT. Exceptions raised in
rooms and stores are logged (``WebsocketServer exception``) instead of stopping the room.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

import anyio
import uvicorn
from pycrdt.store import SQLiteYStore
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom
from pycrdt.websocket.websocket_server import exception_logger


class StoredRoomsServer(WebsocketServer):
    """A WebsocketServer whose rooms persist their updates in one SQLite file."""

    def __init__(self, db_path: str) -> None:
        super().__init__(
            rooms_ready=True, auto_clean_rooms=True, exception_handler=exception_logger
        )
        # pycrdt-store reads the database path from the class, not from an argument.
        self.store_class = type("BenchSQLiteYStore", (SQLiteYStore,), {"db_path": db_path})
        self._room_lock = anyio.Lock()

    async def get_room(self, name: str) -> YRoom:
        # One room is created and started at a time. WebsocketServer.start_room starts a room
        # whose `started` is not set yet; two clients opening a new room at once would both
        # start it, and the second start waits forever for the room's start lock, which the
        # first holds for the room's life (that client never gets a message; the server then
        # cannot shut down).
        async with self._room_lock:
            if name not in self.rooms:
                self.rooms[name] = YRoom(
                    ready=True,
                    ystore=self.store_class(path=name, log=self.log),
                    exception_handler=exception_logger,
                    log=self.log,
                )
            room = self.rooms[name]
            await self.start_room(room)
        return room


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


async def serve(
    websocket_server: StoredRoomsServer, server: uvicorn.Server, sock: socket.socket
) -> None:
    # Create the SQLite schema before any room opens: every room's store checks for the file
    # and creates the tables when it is missing, so rooms opening at once on a new file race
    # ("table yupdates already exists") and the losers' writes are lost.
    async with websocket_server.store_class(path="/") as store:
        assert store.db_initialized is not None
        await store.db_initialized.wait()
    async with websocket_server:
        # The socket listens already: a client connecting now waits in the backlog.
        print(f"serving {sock.getsockname()[1]}", flush=True)
        await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", required=True, help="the SQLite file of the store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    sock = listen(args.host, args.port)
    websocket_server = StoredRoomsServer(args.db)
    config = uvicorn.Config(
        ASGIServer(websocket_server), log_level=args.log_level, access_log=False, lifespan="on"
    )
    # uvicorn's own loop choice (uvloop when installed), as uvicorn.Server.run would make.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve(websocket_server, uvicorn.Server(config), sock))


if __name__ == "__main__":
    main()
