"""The WAN emulator as a process: :class:`~app.wan.LinkProxy` instances until SIGTERM.

    python -m app.wan_service --listen 0.0.0.0:9001=eu-west-1:7000:65 [--listen ...]
                              [--jitter-ms 2]

Each ``--listen LISTEN_HOST:PORT=TARGET_HOST:PORT:LATENCY_MS`` starts one proxy that accepts
on the first address and forwards to the second, every chunk delayed by ``LATENCY_MS`` one way
(see :mod:`app.wan` for the exact semantics). The Docker Compose cluster runs one proxy per
cross-region node pair in a ``wan`` container and has each dialling node reach its peer
through it (``--peer NODE=wan:PORT``). The target is resolved on every new connection, so a
restarted container is found again.

SIGTERM or SIGINT closes every proxy and exits 0. A bad ``--listen`` exits 2; an address
that cannot be bound exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass

from .config import ConfigError, parse_listen
from .wan import LinkProxy

__all__ = ["ProxySpec", "main", "parse_spec", "serve"]

log = logging.getLogger("meridian.wan")


@dataclass(frozen=True, slots=True)
class ProxySpec:
    listen: tuple[str, int]
    target: tuple[str, int]
    latency_ms: float


def parse_spec(value: str) -> ProxySpec:
    """``HOST:PORT=TARGET:PORT:LATENCY_MS`` -> ProxySpec; raises ValueError when malformed."""
    listen, sep, rest = value.partition("=")
    target, sep2, latency = rest.rpartition(":")
    if not sep or not sep2:
        raise ValueError(f"{value!r} must be LISTEN_HOST:PORT=TARGET_HOST:PORT:LATENCY_MS")
    try:
        latency_ms = float(latency)
        spec = ProxySpec(parse_listen(listen), parse_listen(target), latency_ms)
    except (ConfigError, ValueError) as exc:
        raise ValueError(f"{value!r}: {exc}") from exc
    if latency_ms < 0:
        raise ValueError(f"{value!r}: the latency must be >= 0")
    return spec


async def serve(specs: list[ProxySpec], *, jitter_ms: float = 0.0) -> None:
    """Runs one proxy per spec until SIGTERM or SIGINT, then closes them all.

    Raises OSError when an address cannot be bound (the proxies already started are closed).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proxies: list[LinkProxy] = []
    try:
        for spec in specs:
            name = f"{spec.listen[1]}->{spec.target[0]}:{spec.target[1]}"
            proxy = LinkProxy(
                spec.target,
                latency_ms=spec.latency_ms,
                jitter_ms=jitter_ms,
                listen=spec.listen,
                name=name,
            )
            await proxy.start()
            proxies.append(proxy)
            print(f"meridian-wan: {name} +{spec.latency_ms:g} ms", flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(proxy.aclose() for proxy in proxies))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.wan_service", description="TCP proxies adding one-way latency"
    )
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="HOST:PORT=TARGET_HOST:PORT:LATENCY_MS",
        help="one proxy; repeatable",
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform jitter on every link (default 0)"
    )
    args = parser.parse_args(argv)
    try:
        specs = [parse_spec(value) for value in args.listen]
    except ValueError as exc:
        parser.error(str(exc))
    if args.jitter_ms < 0:
        parser.error("--jitter-ms must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(specs, jitter_ms=args.jitter_ms))
    except OSError as exc:
        print(f"meridian-wan: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print("meridian-wan: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
