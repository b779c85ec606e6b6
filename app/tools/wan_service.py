"""The WAN emulator as a process: :class:`~app.tools.wan.LinkProxy` instances until SIGTERM, and a
control listener that cuts and heals them by region.

    python -m app.tools.wan_service --listen ap-south:eu-west@0.0.0.0:9001=eu-west-1:7000:65
                              [--listen ...] [--jitter-ms 2] [--control 0.0.0.0:9000]
    python -m app.tools.wan_service --control 127.0.0.1:9000 --send "isolate ap-south"

Each ``--listen [FROM:TO@]LISTEN_HOST:PORT=TARGET_HOST:PORT:LATENCY_MS`` starts one proxy that
accepts on the first address and forwards to the second, every chunk delayed by ``LATENCY_MS``
one way (see :mod:`app.tools.wan` for the exact semantics). ``FROM:TO`` labels it with its region
pair: the region of the nodes that dial through it, then the region of the node it forwards
to (the ``[latency]`` key syntax of ``regions.toml``). The Docker Compose cluster runs one
proxy per cross-region node pair in a ``wan`` container and has each dialling node reach its
peer through it (``--peer NODE=wan:PORT``). The target is resolved on every new connection, so
a restarted container is found again.

``--control HOST:PORT`` also listens for control commands, one line each (UTF-8, at most
:data:`MAX_COMMAND` bytes), each answered by one line, ``ok ...`` or ``error <why>``:

    isolate REGION      cut every labelled link between REGION and other regions
    rejoin REGION       undo isolate
    cut A B             cut the traffic between regions A and B (both ways)
    restore A B         undo cut
    heal                undo every cut and isolation
    status              ok {JSON: the links, their cuts and counters}

Only labelled proxies obey commands. A malformed command is answered with an error and changes
nothing, and so is a line longer than MAX_COMMAND bytes; the connection goes on with the next
line (blank lines are ignored). The proxies keep forwarding through all of it. The control
listener has no authentication: bind it only where just the cluster's own network reaches it.

SIGTERM or SIGINT closes every proxy and exits 0. A bad ``--listen`` or ``--control`` exits 2;
an address that cannot be bound exits 1. With ``--send``, the reply is printed and the exit
status is 0 for ``ok``, 1 for ``error`` or a listener that cannot be reached.

Errors::

    ControlError   a control command refused (its message is the reply's reason)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from ..config import ConfigError, parse_listen
from .wan import LinkProxy, WanEmulator

__all__ = [
    "COMMANDS",
    "MAX_COMMAND",
    "Command",
    "CommandLines",
    "ControlError",
    "ControlListener",
    "ProxySpec",
    "WanService",
    "main",
    "parse_command",
    "parse_spec",
    "send_command",
    "serve",
]

log = logging.getLogger("meridian.wan")

#: The longest control command line accepted, in bytes (newline included).
MAX_COMMAND: Final = 1024
#: Control verbs and how many region names each takes.
COMMANDS: Final = {"isolate": 1, "rejoin": 1, "cut": 2, "restore": 2, "heal": 0, "status": 0}
_USAGE: Final = "isolate REGION, rejoin REGION, cut A B, restore A B, heal, status"


class ControlError(Exception):
    """A control command was refused; the message says why (it is the ``error`` reply)."""


@dataclass(frozen=True, slots=True)
class ProxySpec:
    listen: tuple[str, int]
    target: tuple[str, int]
    latency_ms: float
    #: (region dialling through the proxy, region of the target), or None: unlabelled.
    regions: tuple[str, str] | None = None


def parse_spec(value: str) -> ProxySpec:
    """``[FROM:TO@]HOST:PORT=TARGET:PORT:LATENCY_MS`` -> ProxySpec; ValueError when malformed."""
    label, at, addresses = value.rpartition("@")
    listen, sep, rest = addresses.partition("=")
    target, sep2, latency = rest.rpartition(":")
    if not sep or not sep2:
        raise ValueError(
            f"{value!r} must be "
            "[FROM_REGION:TO_REGION@]LISTEN_HOST:PORT=TARGET_HOST:PORT:LATENCY_MS"
        )
    regions: tuple[str, str] | None = None
    if at:
        first, colon, second = label.partition(":")
        if not colon or not first or not second or ":" in second or first == second:
            raise ValueError(f"{value!r}: the label must be two different regions, FROM:TO@")
        regions = (first, second)
    try:
        latency_ms = float(latency)
        spec = ProxySpec(parse_listen(listen), parse_listen(target), latency_ms, regions)
    except (ConfigError, ValueError) as exc:
        raise ValueError(f"{value!r}: {exc}") from exc
    if latency_ms < 0:
        raise ValueError(f"{value!r}: the latency must be >= 0")
    return spec


@dataclass(frozen=True, slots=True)
class Command:
    verb: str
    regions: tuple[str, ...]


def parse_command(line: bytes) -> Command | None:
    """One control line -> Command; None for a blank line. Raises ControlError when it is not
    UTF-8, names no known verb, or has the wrong number of regions."""
    try:
        words = line.decode().split()
    except UnicodeDecodeError:
        raise ControlError("the command is not UTF-8 text") from None
    if not words:
        return None
    verb, regions = words[0].lower(), tuple(words[1:])
    if verb not in COMMANDS:
        raise ControlError(f"unknown command {words[0][:40]!r}; commands: {_USAGE}")
    if len(regions) != COMMANDS[verb]:
        usage = next(u for u in _USAGE.split(", ") if u.split()[0] == verb)
        raise ControlError(f"{verb} takes {COMMANDS[verb]} region(s): {usage}")
    return Command(verb, regions)


class WanService:
    """The proxies of one process. Labelled ones are links of a :class:`WanEmulator`, cut and
    healed by region through :meth:`execute`; unlabelled ones just forward.

    Add proxies with :meth:`add`; :meth:`aclose` closes them all.
    """

    def __init__(self, *, jitter_ms: float = 0.0) -> None:
        self.jitter_ms = jitter_ms
        self.wan = WanEmulator()
        self.unlabelled: list[LinkProxy] = []

    async def add(self, spec: ProxySpec) -> LinkProxy:
        """Starts the proxy of ``spec``; raises OSError when its address cannot be bound."""
        target = f"{spec.target[0]}:{spec.target[1]}"
        name = f"{spec.listen[1] or f'#{self.count() + 1}'}->{target}"
        if spec.regions is None:
            proxy = LinkProxy(
                spec.target,
                latency_ms=spec.latency_ms,
                jitter_ms=self.jitter_ms,
                listen=spec.listen,
                name=name,
            )
            await proxy.start()
            self.unlabelled.append(proxy)
            return proxy
        return await self.wan.add_link(
            *spec.regions,
            spec.target,
            spec.latency_ms,
            self.jitter_ms,
            name=name,
            listen=spec.listen,
        )

    def count(self) -> int:
        return len(self.unlabelled) + len(self.wan.links())

    def regions(self) -> list[str]:
        """The regions the labelled proxies name, sorted."""
        return sorted({r for link in self.wan.links() for r in (link.a_region, link.b_region)})

    def execute(self, line: bytes) -> bytes:
        """One control line in, its reply line out (``ok ...`` or ``error ...``); no I/O."""
        try:
            command = parse_command(line)
            if command is None:
                raise ControlError(f"empty command; commands: {_USAGE}")
            reply = "ok " + self.apply(command)
        except ControlError as exc:
            reply = f"error {exc}"
        return reply.encode() + b"\n"

    def apply(self, command: Command) -> str:
        """Carries out ``command``; returns the text after ``ok``. Raises ControlError for a
        region no labelled proxy names."""
        known = self.regions()
        for region in command.regions:
            if region not in known:
                raise ControlError(
                    f"unknown region {region[:64]!r}; the labelled links connect "
                    f"{', '.join(known) or 'no regions'}"
                )
        wan, regions = self.wan, command.regions
        if command.verb == "isolate":
            wan.isolate(regions[0])
        elif command.verb == "rejoin":
            wan.rejoin(regions[0])
        elif command.verb == "cut":
            wan.cut(*regions)
        elif command.verb == "restore":
            wan.restore(*regions)
        elif command.verb == "heal":
            wan.heal()
        else:
            return json.dumps(self.status(), separators=(",", ":"))
        cut = sum(
            link.proxy.is_cut("forward") or link.proxy.is_cut("backward") for link in wan.links()
        )
        done = " ".join([command.verb, *regions])
        return f"{done}: {cut} of {len(wan.links())} labelled links cut"

    def status(self) -> dict[str, Any]:
        stats = self.wan.statistics()
        links = [
            {"regions": [link.a_region, link.b_region], **_link(link.proxy)}
            for link in self.wan.links()
        ]
        links += [{"regions": None, **_link(proxy)} for proxy in self.unlabelled]
        return {
            "isolated": sorted(stats.isolated),
            "cut": sorted([list(flow) for flow in stats.cut_flows]),
            "links": links,
        }

    async def aclose(self) -> None:
        await asyncio.gather(self.wan.aclose(), *(proxy.aclose() for proxy in self.unlabelled))
        self.unlabelled = []


def _link(proxy: LinkProxy) -> dict[str, Any]:
    s = proxy.statistics()
    return {
        "name": s.name,
        "target": f"{proxy.target[0]}:{proxy.target[1]}",
        "latency_ms": s.latency_ms,
        "cut_forward": s.cut_forward,
        "cut_backward": s.cut_backward,
        "open_connections": s.open_connections,
        "bytes_forward": s.bytes_forward,
        "bytes_backward": s.bytes_backward,
        "bytes_dropped_forward": s.bytes_dropped_forward,
        "bytes_dropped_backward": s.bytes_dropped_backward,
    }


class ControlListener:
    """Accepts control connections on ``listen`` and answers each line with
    :meth:`WanService.execute`. :meth:`start`, then :meth:`aclose`."""

    def __init__(self, service: WanService, listen: tuple[str, int]) -> None:
        self.service, self.listen = service, listen
        self._server: asyncio.Server | None = None
        # One task per connection, owned here and cancelled by aclose().
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); raises RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("control listener not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        """Binds; raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._accept, *self.listen)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer), name="wan control connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        lines = CommandLines()
        try:
            while True:
                data = await reader.read(4096)
                for line in lines.receive_data(data) if data else lines.receive_eof():
                    if line is None:
                        log.warning("x control peer=%s: line over %d bytes", peer, MAX_COMMAND)
                        reply = f"error command longer than {MAX_COMMAND} bytes\n".encode()
                    elif not line.strip():
                        continue
                    else:
                        reply = self.service.execute(line)
                        log.info("< control peer=%s %r > %s", peer, line.strip()[:80], reply[:200])
                    writer.write(reply)
                    await writer.drain()
                if not data:
                    return
        except OSError as exc:
            log.info("x control peer=%s: %s", peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class CommandLines:
    """Splits a control connection's bytes into lines, without I/O. A line longer than
    MAX_COMMAND bytes comes out once as None, and the rest of it is skipped, so the next
    line is read as it should be."""

    def __init__(self) -> None:
        # Bytes of the line being received.
        self._buffer = bytearray()
        # True while the rest of an over-long line is being discarded.
        self._skipping = False

    def receive_data(self, data: bytes) -> list[bytes | None]:
        """The lines (newline included) completed by ``data``; None for an over-long one."""
        self._buffer += data
        out: list[bytes | None] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
            else:
                out.append(line if len(line) <= MAX_COMMAND else None)
        if len(self._buffer) >= MAX_COMMAND:
            if not self._skipping:
                out.append(None)
                self._skipping = True
            self._buffer.clear()
        return out

    def receive_eof(self) -> list[bytes | None]:
        """The last line, when the stream ended without a newline."""
        line, self._buffer = bytes(self._buffer), bytearray()
        return [line] if line and not self._skipping else []


async def send_command(address: tuple[str, int], command: str, *, timeout: float = 5.0) -> str:
    """Sends one command to a control listener; returns its reply without the ``ok ``.

    Raises ControlError for an ``error`` reply, OSError when the listener cannot be reached
    or does not answer within ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(*address, limit=1 << 20)
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                reply = (await reader.readline()).decode(errors="replace").rstrip("\n")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise OSError(f"the WAN control at {address[0]}:{address[1]} did not answer") from None
    status, _, text = reply.partition(" ")
    if status == "ok":
        return text
    if status == "error":
        raise ControlError(text)
    raise OSError(f"the WAN control at {address[0]}:{address[1]} answered {reply[:80]!r}")


async def serve(
    specs: list[ProxySpec], *, jitter_ms: float = 0.0, control: tuple[str, int] | None = None
) -> None:
    """Runs one proxy per spec (and the control listener on ``control``) until SIGTERM or
    SIGINT, then closes them all.

    Raises OSError when an address cannot be bound (what already started is closed).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = WanService(jitter_ms=jitter_ms)
    listener = ControlListener(service, control) if control is not None else None
    try:
        for spec in specs:
            proxy = await service.add(spec)
            host, port = proxy.address
            label = f" ({spec.regions[0]} -> {spec.regions[1]})" if spec.regions else ""
            print(
                f"meridian-wan: {host}:{port} -> {proxy.target[0]}:{proxy.target[1]} "
                f"+{spec.latency_ms:g} ms{label}",
                flush=True,
            )
        if listener is not None:
            await listener.start()
            host, port = listener.address
            print(f"meridian-wan: control on {host}:{port}", flush=True)
        await stop.wait()
    finally:
        if listener is not None:
            await listener.aclose()
        await service.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs ``main`` on uvloop where it is installed (it comes with uvicorn[standard]): its
    timers wake up closer to a proxy's release times than asyncio's, which wait in whole
    milliseconds (a delay of 40 ms is 40.35 ms at the median rather than 40.8)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.tools.wan_service", description="TCP proxies adding one-way latency"
    )
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="[FROM:TO@]HOST:PORT=TARGET_HOST:PORT:LATENCY_MS",
        help="one proxy, labelled with its region pair; repeatable",
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform jitter on every link (default 0)"
    )
    parser.add_argument(
        "--control",
        metavar="HOST:PORT",
        help="listen for control commands there (with --send: the listener to send to)",
    )
    parser.add_argument(
        "--send",
        metavar="COMMAND",
        help='send one control command (e.g. "isolate ap-south") to --control and exit',
    )
    args = parser.parse_args(argv)
    try:
        control = parse_listen(args.control) if args.control is not None else None
    except ConfigError as exc:
        parser.error(f"--control: {exc}")
    if args.send is not None:
        if control is None or args.listen:
            parser.error("--send needs --control HOST:PORT, and no --listen")
        return _send(control, args.send)
    if not args.listen:
        parser.error("at least one --listen is required")
    try:
        specs = [parse_spec(value) for value in args.listen]
    except ValueError as exc:
        parser.error(str(exc))
    if args.jitter_ms < 0:
        parser.error("--jitter-ms must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        run(serve(specs, jitter_ms=args.jitter_ms, control=control))
    except OSError as exc:
        print(f"meridian-wan: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print("meridian-wan: stopped", flush=True)
    return 0


def _send(control: tuple[str, int], command: str) -> int:
    try:
        print(asyncio.run(send_command(control, command)), flush=True)
    except (ControlError, OSError) as exc:
        print(f"meridian-wan: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
